/**
 * The one source of truth for how a Dask scheduler or worker process is launched: its `dask`
 * sub-command arguments, its environment, and the TLS files it needs on disk.
 *
 * LocalCluster spawns exactly this; the cloud-init templates ship exactly this (as a launch
 * file run by a tiny launcher), so a local cluster and a VM cluster cannot drift apart.
 */
import * as path from 'node:path';
import type { Security } from '../security/security';
import { ValidationError } from '../errors';

export type ProcessRole = 'scheduler' | 'worker';

export interface DaskProcessOptions {
  role: ProcessRole;
  /** `false` = plain `tcp://`, no TLS material. */
  security: Security | false;
  /** Directory the TLS files live in on the machine that runs the process. */
  tlsDir: string;
  /**
   * Interface to bind (`--host`), for the process's HTTP server too (which `--host` alone does not
   * move: Dask binds it to every interface). Default: all interfaces.
   */
  host?: string;
  /** Scheduler port (default 8786). */
  port?: number;
  /** Scheduler dashboard: `false` → `--no-dashboard`, string → `--dashboard-address`. */
  dashboardAddress?: string | false;
  /** Worker: full scheduler address, e.g. `tls://10.0.0.2:8786`. */
  schedulerAddress?: string;
  /** Worker name (`--name`). */
  name?: string;
  /** Worker threads (`--nthreads`). */
  nthreads?: number;
  /** Worker memory limit (`--memory-limit`), e.g. `'4GB'`, `'auto'`, `0`. */
  memoryLimit?: string | number;
  /** Worker: run without a nanny (`--no-nanny`). */
  noNanny?: boolean;
  /** Worker: address to advertise to the scheduler (`--contact-address`). */
  contactAddress?: string;
  /** Scheduler: shut down after this long without clients or work (Dask duration, e.g. `'2 hours'`). */
  idleTimeout?: string;
  /** Extra arguments appended verbatim to the `dask <role>` command. */
  extraArgs?: string[];
  /** Extra environment for the process (user env vars); values are passed through untouched. */
  env?: Record<string, string>;
}

export interface DaskFile {
  path: string;
  content: string;
  /** Octal string, always quoted in YAML. */
  mode: '0600' | '0644';
}

export interface DaskProcessSpec {
  role: ProcessRole;
  /** Arguments after the `dask` executable, e.g. `['scheduler', '--port', '8786']`. */
  args: string[];
  /** Environment the process needs (TLS config, idle timeout, user env). Never a cloud token. */
  env: Record<string, string>;
  /** TLS files the process needs (CA cert, its own role's cert and key — never the CA key or another role's key). */
  files: DaskFile[];
}

export const DEFAULT_SCHEDULER_PORT = 8786;
export const DEFAULT_DASHBOARD_PORT = 8787;
/** A VM scheduler's dashboard terminator (mutual TLS in front of the dashboard). */
export const DEFAULT_DASHBOARD_TLS_PORT = 8788;

/** The protocol prefix a scheduler address uses for the given security setting. */
export function protocolFor(security: Security | false): 'tls' | 'tcp' {
  return security === false ? 'tcp' : 'tls';
}

/** Build the command line, environment and files for one Dask process. Pure: touches nothing. */
export function daskProcessSpec(options: DaskProcessOptions): DaskProcessSpec {
  const { role, security } = options;
  const args: string[] = [role];
  const env: Record<string, string> = {};
  const files: DaskFile[] = [];

  if (security !== false) {
    files.push(...security.tlsFiles(role, options.tlsDir));
    Object.assign(env, security.env(role, options.tlsDir));
  }

  if (role === 'scheduler') {
    if (options.host !== undefined) args.push('--host', options.host);
    args.push('--port', String(options.port ?? DEFAULT_SCHEDULER_PORT));
    if (options.dashboardAddress === false) {
      args.push('--no-dashboard');
      // Without the pages the scheduler still serves HTTP (health, metrics), by default on every interface at 8787.
      if (options.host !== undefined) args.push('--dashboard-address', `${options.host}:0`);
    } else if (options.dashboardAddress !== undefined) {
      args.push('--dashboard-address', options.dashboardAddress);
    }
    if (options.idleTimeout !== undefined) env.DASK_DISTRIBUTED__SCHEDULER__IDLE_TIMEOUT = options.idleTimeout;
  } else {
    if (!options.schedulerAddress) {
      throw new ValidationError('a worker needs the scheduler address', { option: 'schedulerAddress' });
    }
    const wanted = protocolFor(security);
    if (!options.schedulerAddress.startsWith(`${wanted}://`)) {
      throw new ValidationError(
        `scheduler address ${options.schedulerAddress} does not use ${wanted}:// although security is ${security === false ? 'off' : 'on'}`,
        { option: 'schedulerAddress' },
      );
    }
    args.push(options.schedulerAddress);
    if (options.host !== undefined) args.push('--host', options.host);
    if (options.contactAddress !== undefined) args.push('--contact-address', options.contactAddress);
    if (options.name !== undefined) args.push('--name', options.name);
    if (options.nthreads !== undefined) args.push('--nthreads', String(options.nthreads));
    if (options.memoryLimit !== undefined) args.push('--memory-limit', String(options.memoryLimit));
    if (options.noNanny) args.push('--no-nanny');
    // Worker dashboards are never needed from outside; keep the process lean. The worker still
    // serves HTTP (health, metrics) on a random port of every interface unless told where.
    if (options.host !== undefined) args.push('--dashboard-address', `${options.host}:0`);
    args.push('--no-dashboard');
  }
  if (options.extraArgs) args.push(...options.extraArgs);
  if (options.env) Object.assign(env, options.env);
  return { role, args, env, files };
}

/** Absolute path helper shared by callers that lay TLS files out under one directory. */
export function tlsPath(tlsDir: string, name: string): string {
  return path.posix.join(tlsDir, name);
}
