/**
 * One simulated VM: `systemd-nspawn --boot` of an overlay (tmpfs upper layer over the shared,
 * never-written base image) inside the VM's network namespace. cloud-init's real systemd units run
 * the user-data from a NoCloud seed written into the upper layer.
 *
 * Process tree (all torn down by PID):
 *   setpriv --pdeathsig KILL   the launcher dies with the test process, even on SIGKILL
 *    └ unshare --mount --pid --fork --kill-child --mount-proc
 *        └ sh → exec systemd-nspawn   PID 1 of a private PID namespace: if it dies, everything in it
 *             └ systemd (the VM)     dies; the overlay mount lives in the private mount namespace
 *                                    and disappears with it (no mounts in the root namespace)
 * `shutdown -h now` inside the VM halts its systemd, nspawn exits, only that VM ends.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { SimError, debug, killPid, pidAlive, run as runCmd, sleep, waitFor, type RunOptions, type RunResult } from './exec';
import { ensureBaseImage } from './image';
import { forgetVmPid, netShmDir, recordVmPid, PREFIX } from './state';
import type { FirewallRule } from './firewall';

export interface BootVmOptions {
  /** The cloud's instance id / name (letters, digits, `.`, `_`, `-`). */
  id: string;
  /** User-data exactly as the cloud would hand it over (gzip allowed: cloud-init unpacks it). */
  userData: Buffer | string;
  /** NoCloud meta-data. Default: instance-id = id, hostname = id. */
  metaData?: { instanceId?: string; hostname?: string };
  privateIp: string;
  /** No public IP = private-only VM (no interface on the internet bridge). */
  publicIp?: string;
  /** Ingress rules in force from the first packet. Default: deny all ingress. */
  firewall?: FirewallRule[];
  /** How long the VM may take to get its init running (default 15 s, at most 60 s). */
  startTimeoutMs?: number;
  /**
   * Let the VM run Docker containers, as a cloud VM can: cgroup v2 inside (runc cannot use the
   * read-only v1 controllers nspawn gives a container), every capability, the keyring and bpf
   * syscalls runc needs, and a tmpfs /var/lib/docker so overlay2 works (not on overlayfs).
   * Default off: the other VMs boot as lean as before.
   */
  containers?: boolean;
}

export interface CloudInitResult {
  /** Errors cloud-init recorded in /var/lib/cloud/data/result.json (empty = clean run). */
  errors: string[];
  datasource: string;
  /** From launch to cloud-init's final stage done. */
  elapsedMs: number;
}

interface StartContext {
  options: BootVmOptions;
  netId: string;
  vmKey: string;
  netns: string;
  onBaseExtracted(ms: number): void;
  release(): Promise<void>;
}

let basePromise: Promise<{ dir: string; extractMs: number }> | undefined;

/** Extract the base image once per process (and reuse across processes via its hash). */
function baseImage(): Promise<{ dir: string; extractMs: number }> {
  basePromise ??= ensureBaseImage().catch((e: unknown) => {
    basePromise = undefined;
    throw e;
  });
  return basePromise;
}

/** A running simulated VM. Created by `SimNetwork.bootVm`. */
export class SimVm {
  readonly id: string;
  readonly privateIp: string;
  readonly publicIp: string | undefined;
  /** PID of the launcher (`unshare`) that owns the VM's PID namespace. */
  readonly pid: number;
  /** The VM's network namespace. */
  readonly netns: string;
  /** Resolves with nspawn's exit code when the VM is gone (0 after a clean `shutdown -h now`). */
  readonly exited: Promise<number>;
  /** When the VM was launched (ms since epoch). */
  readonly launchedAt: number;

  private exitCode: number | null = null;
  private stopped = false;
  private stopping: Promise<void> | undefined;
  private cachedConsole: string | undefined;

  /** @internal */
  constructor(
    options: BootVmOptions,
    pid: number,
    exited: Promise<number>,
    readonly dir: string,
    netns: string,
    launchedAt: number,
    private readonly ctx: StartContext,
  ) {
    this.id = options.id;
    this.privateIp = options.privateIp;
    this.publicIp = options.publicIp;
    this.pid = pid;
    this.netns = netns;
    this.launchedAt = launchedAt;
    this.exited = exited.then((code) => {
      this.exitCode = code;
      return code;
    });
  }

  private get upper(): string {
    return path.join(this.dir, 'upper');
  }

  /** True while the VM's process tree exists. */
  get running(): boolean {
    return this.exitCode === null && !this.stopped;
  }

  /** Reads a file of the VM's filesystem (its own writes; the base image is not consulted). */
  async readFile(vmPath: string): Promise<string | null> {
    const p = path.join(this.upper, path.posix.normalize(`/${vmPath}`));
    try {
      return await fs.promises.readFile(p, 'utf8');
    } catch {
      return null;
    }
  }

  /** The VM's cloud-init output (/var/log/cloud-init-output.log), what a cloud's console shows. */
  async consoleOutput(): Promise<string> {
    if (this.cachedConsole !== undefined) return this.cachedConsole;
    return (await this.readFile('/var/log/cloud-init-output.log')) ?? '';
  }

  /** cloud-init's own debug log (/var/log/cloud-init.log). */
  async cloudInitLog(): Promise<string> {
    return (await this.readFile('/var/log/cloud-init.log')) ?? '';
  }

  /** What systemd-nspawn printed (the container's console). */
  async bootLog(): Promise<string> {
    try {
      return await fs.promises.readFile(path.join(this.dir, 'console.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** Waits for cloud-init's final stage to finish (bounded; fails early if the VM exits). */
  async waitForCloudInit(options: { timeoutMs?: number } = {}): Promise<CloudInitResult> {
    const result = await waitFor(
      `cloud-init to finish on VM ${this.id}`,
      async () => {
        const text = await this.readFile('/var/lib/cloud/data/result.json');
        if (text) {
          try {
            return JSON.parse(text) as { v1: { errors: string[]; datasource: string } };
          } catch {
            return undefined; // being written
          }
        }
        if (this.exitCode !== null) throw new SimError(`VM ${this.id} exited with ${this.exitCode} before cloud-init finished`);
        return undefined;
      },
      {
        timeoutMs: options.timeoutMs ?? 60_000,
        intervalMs: 100,
        describe: async () => `console output of ${this.id}:\n${(await this.consoleOutput()).slice(-3000)}`,
      },
    );
    const st = await fs.promises.stat(path.join(this.upper, 'var/lib/cloud/data/result.json'));
    return { errors: result.v1.errors, datasource: result.v1.datasource, elapsedMs: Math.max(0, st.mtimeMs - this.launchedAt) };
  }

  /** PID (in the root PID namespace) of the VM's init, or null. */
  initPid(): number | null {
    const nspawn = childrenOf(this.pid)[0];
    if (nspawn === undefined) return null;
    // nspawn's first child is an "outer child" that forks the VM's init into a new PID namespace
    // and exits: only a process in another PID namespace than nspawn's is the init (the outer child
    // mistaken for it would be dead a moment later).
    const ns = pidNamespace(nspawn);
    if (ns === null) return null;
    for (const child of childrenOf(nspawn)) {
      for (const pid of [child, ...childrenOf(child)]) {
        const own = pidNamespace(pid);
        if (own !== null && own !== ns) return pid;
      }
    }
    return null;
  }

  /**
   * Runs a command inside the VM (all its namespaces, via nsenter), bounded. For checks such as
   * `ss -ltn`; the VM's own processes are better observed through files they write.
   */
  async exec(cmd: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
    const init = this.initPid();
    if (init === null || !this.running) throw new SimError(`VM ${this.id} is not running`);
    return runCmd('nsenter', ['-t', String(init), '-m', '-u', '-i', '-n', '-p', '--', cmd, ...args], options);
  }

  /**
   * Stops the VM and releases its namespace and disk. Graceful (default): SIGTERM to nspawn, which
   * halts the VM's systemd; after 10 s (or at once when not graceful) SIGKILL to the launcher, which
   * takes the VM's whole PID namespace with it. Idempotent. Console output stays readable.
   */
  stop(options: { graceful?: boolean } = {}): Promise<void> {
    this.stopping ??= this.doStop(options.graceful ?? true);
    return this.stopping;
  }

  private async doStop(graceful: boolean): Promise<void> {
    if (this.exitCode === null) {
      if (graceful) {
        const nspawn = childrenOf(this.pid)[0];
        if (nspawn !== undefined) killPid(nspawn, 'SIGTERM');
        await Promise.race([this.exited, sleep(10_000)]);
      }
      if (this.exitCode === null) {
        killPid(this.pid, 'SIGKILL');
        await Promise.race([this.exited, sleep(10_000)]);
      }
      if (this.exitCode === null && pidAlive(this.pid)) {
        throw new SimError(`VM ${this.id}: launcher ${this.pid} did not exit after SIGKILL`);
      }
    }
    this.cachedConsole = (await this.readFile('/var/log/cloud-init-output.log')) ?? '';
    this.stopped = true;
    forgetVmPid(this.ctx.netId, this.ctx.vmKey);
    await this.ctx.release();
    await fs.promises.rm(this.dir, { recursive: true, force: true });
    debug('vm %s: stopped', this.id);
  }
}

function pidNamespace(pid: number): string | null {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return null;
  }
}

function childrenOf(pid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

function metaDataYaml(options: BootVmOptions): string {
  // JSON is YAML: no quoting pitfalls for ids.
  return `${JSON.stringify({
    'instance-id': options.metaData?.instanceId ?? options.id,
    'local-hostname': options.metaData?.hostname ?? options.id,
  })}\n`;
}

/** @internal Used by SimNetwork.bootVm once the VM's namespace and firewall are in place. */
export async function startVm(ctx: StartContext): Promise<SimVm> {
  const { options } = ctx;
  const base = await baseImage();
  if (base.extractMs > 0) ctx.onBaseExtracted(base.extractMs);
  const dir = path.join(netShmDir(ctx.netId), ctx.vmKey);
  const upper = path.join(dir, 'upper');
  const work = path.join(dir, 'work');
  const merged = path.join(dir, 'merged');
  const seed = path.join(upper, 'var/lib/cloud/seed/nocloud');
  await fs.promises.rm(dir, { recursive: true, force: true });
  for (const d of [seed, work, merged]) await fs.promises.mkdir(d, { recursive: true });
  await fs.promises.writeFile(path.join(seed, 'user-data'), options.userData);
  await fs.promises.writeFile(path.join(seed, 'meta-data'), metaDataYaml(options));
  // The cloud's internal DNS, reduced to what a VM asks about itself: its own name resolves to its
  // private address. Dask needs that: with no default route (network safety) its "which address
  // reaches 8.8.8.8" probe fails and it falls back to resolving the hostname.
  await fs.promises.mkdir(path.join(upper, 'etc'), { recursive: true });
  await fs.promises.writeFile(
    path.join(upper, 'etc/hosts'),
    `127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n${options.privateIp}\t${options.metaData?.hostname ?? options.id}\n`,
  );
  const startedMarker = path.join(dir, 'started');

  const nspawnArgs = [
    '--quiet',
    '--boot',
    `--directory=${merged}`,
    `--machine=${PREFIX}-${ctx.netId}-${ctx.vmKey}`,
    '--register=no', // the host has no machined / systemd as PID 1
    '--keep-unit',
    `--network-namespace-path=/run/netns/${ctx.netns}`,
    '--resolv-conf=off',
    '--timezone=off',
    '--link-journal=no',
    '--settings=no',
    '--console=pipe',
    ...(options.containers ? ['--capability=all', '--system-call-filter=add_key keyctl bpf', '--tmpfs=/var/lib/docker:mode=0711'] : []),
  ];
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const script =
    `mount -t overlay overlay -o ${q(`lowerdir=${base.dir},upperdir=${upper},workdir=${work}`)} ${q(merged)} && ` +
    `: > ${q(startedMarker)} && ${options.containers ? 'SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 ' : ''}exec systemd-nspawn ${nspawnArgs.map(q).join(' ')}`;
  const consoleFd = fs.openSync(path.join(dir, 'console.log'), 'a');
  const launchedAt = Date.now();
  const child = spawn(
    'setpriv',
    ['--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--pid', '--fork', '--kill-child', '--mount-proc', '--propagation', 'private', '--', '/bin/sh', '-c', script],
    { stdio: ['ignore', consoleFd, consoleFd] },
  );
  fs.closeSync(consoleFd);
  const pid = child.pid;
  if (pid === undefined) {
    await new Promise((r) => child.once('error', r));
    throw new SimError(`VM ${options.id}: cannot spawn setpriv/unshare`);
  }
  recordVmPid(ctx.netId, ctx.vmKey, pid);
  const exited = new Promise<number>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
  let exitCode: number | null = null;
  void exited.then((c) => {
    exitCode = c;
  });
  const vm = new SimVm(options, pid, exited, dir, ctx.netns, launchedAt, ctx);
  try {
    // Bounded start: the overlay is mounted and nspawn has the VM's init running.
    await waitFor(
      `VM ${options.id} to start`,
      () => {
        if (exitCode !== null) throw new SimError(`VM ${options.id}: launcher exited with ${exitCode}`);
        return fs.existsSync(startedMarker) && vm.initPid() !== null ? true : undefined;
      },
      { timeoutMs: options.startTimeoutMs ?? 15_000, intervalMs: 20 },
    );
  } catch (e) {
    const log = await vm.bootLog();
    await vm.stop({ graceful: false }).catch(() => undefined);
    throw new SimError(`${(e as Error).message}\n${log.slice(-2000)}`);
  }
  debug('vm %s: launched (pid %d, ns %s, private %s, public %s)', options.id, pid, ctx.netns, options.privateIp, options.publicIp ?? '-');
  return vm;
}
