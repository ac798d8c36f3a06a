/**
 * Local processes as cluster members: `dask scheduler|worker`, each launched from the same
 * `daskProcessSpec` the cloud-init templates ship, in its own process group so a nanny and its
 * worker die together, through the launcher of ./watchdog.ts so they also die with this process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BackendContext, ClusterBackend, Member, MemberSpec, SchedulerLaunch } from '../../src/cluster/backend';
import { daskProcessSpec, protocolFor, type DaskProcessSpec } from '../../src/dask/command';
import { LocalRuntimeError } from '../../src/errors';
import { findPython } from '../../src/dask/python';
import { CLUSTER_ENV, KEY_DIR_PREFIX, OWNER_ENV, OWNER_FILE, STOP_GRACE_MS, launcherArgs, ownerIdentity } from './watchdog';

export interface LocalBackendOptions {
  /** Python interpreter with `distributed`; default: DASK_CLOUD_PYTHON, then a search. */
  python?: string;
  /** Interface every process binds to (default 127.0.0.1). */
  host?: string;
  /** Scheduler port; default a free port. */
  schedulerPort?: number;
  /** Scheduler dashboard address, or false for none (default: a free port on `host`). */
  dashboardAddress?: string | false;
}

const TAIL_LINES = 40;

interface Proc {
  member: Member;
  child: ChildProcess;
  tail: string[];
  exited: Promise<number | null>;
  stopping: boolean;
}

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** The parent's environment minus Dask settings, so a stray DASK_* of the caller cannot change the cluster. */
function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DASK_') && k !== CLUSTER_ENV && k !== OWNER_ENV) env[k] = v;
  return env;
}

export class LocalBackend implements ClusterBackend {
  readonly kind = 'local';
  readonly #options: LocalBackendOptions;
  readonly #procs = new Map<string, Proc>();
  /** TLS files already written to the cluster's directory. */
  readonly #written = new Set<string>();
  #dir: string | undefined;
  #python: string | undefined;
  #clusterId = '';

  constructor(options: LocalBackendOptions = {}) {
    this.#options = options;
  }

  get host(): string {
    return this.#options.host ?? '127.0.0.1';
  }

  async prepare(ctx: BackendContext): Promise<void> {
    this.#python = (await findPython(this.#options.python)).path;
    ctx.log('using %s', this.#python);
    this.#clusterId = ctx.clusterId;
    // Role keys live here while the cluster runs; removed on teardown, or by the launchers'
    // watchdog if this process dies. The name and the owner file let a cleanup sweep find it.
    this.#dir = await mkdtemp(path.join(os.tmpdir(), `${KEY_DIR_PREFIX}${ctx.clusterId}-`));
    await chmod(this.#dir, 0o700);
    await writeFile(path.join(this.#dir, OWNER_FILE), `${JSON.stringify({ clusterId: ctx.clusterId, owner: ownerIdentity() })}\n`, { mode: 0o600 });
  }

  async launchScheduler(ctx: BackendContext, spec: MemberSpec): Promise<SchedulerLaunch> {
    const port = this.#options.schedulerPort ?? (await freePort(this.host));
    const dashboardAddress =
      this.#options.dashboardAddress ?? (spec.process.dashboardAddress ?? `${this.host}:${await freePort(this.host)}`);
    const member = await this.#launch(ctx, spec, { host: this.host, port, dashboardAddress });
    const address = `${protocolFor(ctx.security)}://${this.host}:${port}`;
    return { member, workerAddress: address, clientAddress: address, dashboardLink: dashboardAddress === false ? undefined : dashboardUrl(dashboardAddress, this.host) };
  }

  async launchWorkers(ctx: BackendContext, specs: MemberSpec[]): Promise<Member[]> {
    const members: Member[] = [];
    for (const spec of specs) members.push(await this.#launch(ctx, spec, { host: this.host }));
    return members;
  }

  async #launch(ctx: BackendContext, spec: MemberSpec, extra: { host: string; port?: number; dashboardAddress?: string | false }): Promise<Member> {
    if (!this.#dir || !this.#python) throw new LocalRuntimeError('E_CLUSTER_STATE', 'local backend used before prepare()');
    if (ctx.signal.aborted) throw ctx.signal.reason;
    const processSpec: DaskProcessSpec = daskProcessSpec({
      ...spec.process,
      ...extra,
      role: spec.role,
      security: ctx.security,
      tlsDir: this.#dir,
    });
    for (const f of processSpec.files) {
      // Every worker gets the same files: write them once.
      if (this.#written.has(f.path)) continue;
      await writeFile(f.path, f.content, { mode: parseInt(f.mode, 8) });
      await chmod(f.path, parseInt(f.mode, 8));
      this.#written.add(f.path);
    }
    // stdin is the watchdog's pipe: only this process holds its other end (see ./watchdog.ts).
    const child = spawn(this.#python, launcherArgs(this.#clusterId, this.#dir, processSpec.args), {
      env: { ...baseEnv(), ...processSpec.env, [CLUSTER_ENV]: this.#clusterId, [OWNER_ENV]: ownerIdentity() },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    // Nothing is ever written; a pipe error after the launcher exits means nothing.
    child.stdin?.on('error', () => undefined);
    const member: Member = { id: `pid-${child.pid ?? 'none'}`, role: spec.role, name: spec.name, privateHost: this.host };
    const tail: string[] = [];
    const procLog = ctx.log.extend(spec.name);
    const collect = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        procLog('%s', line);
        tail.push(line);
        if (tail.length > TAIL_LINES) tail.shift();
      }
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    const proc: Proc = {
      member,
      child,
      tail,
      stopping: false,
      exited: new Promise((resolve) => {
        child.on('exit', (code, signal) => resolve(code ?? (signal ? -1 : null)));
        child.on('error', () => resolve(null));
      }),
    };
    this.#procs.set(member.id, proc);
    child.on('error', (err) => {
      ctx.memberFailed(member, new LocalRuntimeError('E_PROCESS_EXITED', `could not start ${spec.name}: ${err.message}`, { cause: err }));
    });
    child.on('exit', (code, signal) => {
      if (proc.stopping) return;
      const how = signal ? `signal ${signal}` : `exit code ${code}`;
      ctx.memberFailed(
        member,
        new LocalRuntimeError('E_PROCESS_EXITED', `${spec.role} ${spec.name} exited unexpectedly (${how}); last output:\n${tail.slice(-15).join('\n')}`, {
          details: { code, signal },
        }),
      );
    });
    ctx.log('started %s (%s) pid %d', spec.name, spec.role, child.pid);
    return member;
  }

  async stopMembers(_ctx: BackendContext, members: Member[]): Promise<void> {
    await Promise.all(members.map((m) => this.#stop(m.id)));
  }

  async #stop(id: string): Promise<void> {
    const proc = this.#procs.get(id);
    if (!proc) return; // already gone: done
    proc.stopping = true;
    const pid = proc.child.pid;
    if (pid !== undefined && proc.child.exitCode === null && proc.child.signalCode === null) {
      signalGroup(pid, 'SIGTERM');
      const timer = setTimeout(() => signalGroup(pid, 'SIGKILL'), STOP_GRACE_MS);
      await proc.exited;
      clearTimeout(timer);
    }
    // A nanny's worker child may outlive its parent by a moment: make sure the group is gone.
    if (pid !== undefined) signalGroup(pid, 'SIGKILL');
    proc.child.stdin?.destroy();
    this.#procs.delete(id);
  }

  async teardown(ctx: BackendContext): Promise<void> {
    await this.stopMembers(ctx, [...this.#procs.values()].map((p) => p.member));
    if (this.#dir) {
      await rm(this.#dir, { recursive: true, force: true });
      this.#dir = undefined;
      this.#written.clear();
    }
  }

  async diagnostics(member: Member): Promise<string> {
    return this.#procs.get(member.id)?.tail.join('\n') ?? '';
  }

  /** Process ids of the live members' launchers, each the leader of its member's process group. */
  pids(): number[] {
    return [...this.#procs.values()].map((p) => p.child.pid).filter((p): p is number => p !== undefined);
  }

  /** Process exit without a close: kill every group now and remove the keys (the watchdog would too, a moment later). */
  killSync(): void {
    for (const p of this.#procs.values()) if (p.child.pid !== undefined) signalGroup(p.child.pid, 'SIGKILL');
    try {
      if (this.#dir) rmSync(this.#dir, { recursive: true, force: true });
    } catch {
      // exiting anyway: the watchdog, or `cleanup --provider local`, removes it
    }
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // group already gone
  }
}

/**
 * The browser URL of a dashboard bound at `address` (`host:port` or `:port`, which binds every
 * interface): a wildcard host is opened on loopback.
 */
export function dashboardUrl(address: string, host: string): string {
  const i = address.lastIndexOf(':');
  let h = i <= 0 ? host : address.slice(0, i);
  const port = address.slice(i + 1);
  if (h === '' || h === '0.0.0.0') h = '127.0.0.1';
  if (h === '::' || h === '[::]') h = '[::1]';
  if (h.includes(':') && !h.startsWith('[')) h = `[${h}]`;
  return `http://${h}:${port}/status`;
}
