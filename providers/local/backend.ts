/**
 * Local processes as cluster members: `dask scheduler|worker`, each launched from the same
 * `daskProcessSpec` the cloud-init templates ship, in its own process group so a nanny and its
 * worker die together, through the launcher of ./watchdog.ts so they also die with this process.
 *
 * The process that starts a cluster owns its processes, and serves a control socket
 * (./control.ts) through which other processes act on them. A backend made by `attach` (adopt)
 * owns nothing: it asks the owner to launch, stop, read and close.
 */
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { AdoptedCluster, BackendContext, ClusterBackend, Member, MemberSpec, SchedulerLaunch } from '../../src/cluster/backend';
import type { ClusterRecord } from '../../src/cluster/state';
import { clusterDir } from '../../src/cluster/state';
import { daskProcessSpec, protocolFor, type DaskProcessSpec } from '../../src/dask/command';
import { DaskCloudError, LocalRuntimeError, TeardownError } from '../../src/errors';
import { findPython } from '../../src/dask/python';
import { freePort } from '../../src/net';
import { CONTROL_SOCKET, ControlServer, MAX_SOCKET_PATH, controlRequest, controlWatch, isUnreachable, type ControlEvent, type ControlWatch } from './control';
import { CLUSTER_ENV, KEY_DIR_PREFIX, OWNER_ENV, OWNER_FILE, STOP_GRACE_MS, identityAlive, launcherArgs, ownerIdentity } from './watchdog';
import { loadChildProcess } from '../../src/lazy';

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

/** The parent's environment minus Dask settings, so a stray DASK_* of the caller cannot change the cluster. */
function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DASK_') && k !== CLUSTER_ENV && k !== OWNER_ENV) env[k] = v;
  return env;
}

/** How long an attached handle waits for the owner's answer to a quick request (members, logs). */
const REQUEST_MS = 15_000;
/** How long it waits for `count` workers to be launched (spawning is quick; the margin is for loaded machines). */
const launchMs = (count: number): number => 30_000 + 500 * count;
/** Stopping waits for each process's grace period (in parallel). */
const STOP_MS = 2 * STOP_GRACE_MS + 30_000;
/** Closing stops every member, then removes the keys. */
const CLOSE_MS = 4 * STOP_GRACE_MS + 60_000;
/** Polling interval while waiting for an owner that is closing to let go of its socket. */
const CLOSE_POLL_MS = 250;

/** What an attached backend knows of the owner it delegates to. */
interface Remote {
  clusterId: string;
  socket: string;
  /** `<pid>:<start time>` of the owner (or its pid alone), when recorded. */
  owner: string | undefined;
  ownerPid: number | undefined;
  scheduler: Member;
  watch: ControlWatch | undefined;
  /** The owner said it closed the cluster (an event before the watch ended). */
  ownerClosed: boolean;
  /** This handle is closing it, so the watch ending is expected. */
  closing: boolean;
  closed: boolean;
}

export class LocalBackend implements ClusterBackend {
  readonly kind = 'local';
  /** Processes on this machine: check readiness every 50 ms (a refused local connect is free). */
  readonly readinessPollMs = 50;
  readonly #options: LocalBackendOptions;
  readonly #procs = new Map<string, Proc>();
  /** TLS files already written to the cluster's directory. */
  readonly #written = new Set<string>();
  #dir: string | undefined;
  #python: string | undefined;
  #clusterId = '';
  /** The scheduler's address, which workers launched for another process dial. */
  #workerAddress: string | undefined;
  /** Owner: the control socket other processes reach this cluster through. */
  #control: ControlServer | undefined;
  /** Owner: the context requests from other processes run in (the cluster's, with a signal of their own). */
  #ownerCtx: BackendContext | undefined;
  /** Owner: false once teardown began, so no launch races it. */
  #serving = false;
  /** Attached: the owner this backend delegates to. */
  #remote: Remote | undefined;
  /**
   * Owner: how a `close` request from another process closes the whole cluster (the Cluster's
   * `close()`, so its state, events and local directory follow). Without it only this backend's
   * processes and keys are removed.
   */
  onRemoteClose: (() => Promise<void>) | undefined;

  constructor(options: LocalBackendOptions = {}) {
    this.#options = options;
  }

  get host(): string {
    return this.#options.host ?? '127.0.0.1';
  }

  /** Whether this backend acts through another process that owns the cluster (made by `adopt`). */
  get attached(): boolean {
    return this.#remote !== undefined;
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
    // Requests from other processes must not be cancelled by the end of start().
    this.#ownerCtx = { ...ctx, signal: new AbortController().signal };
    this.#serving = true;
    await this.#listen(ctx);
  }

  /**
   * The control socket, in the key directory: only this user can reach it, and it disappears with
   * the keys when this process dies. Without it the cluster works, but only from this process.
   */
  async #listen(ctx: BackendContext): Promise<void> {
    const socketPath = path.join(this.#dir!, CONTROL_SOCKET);
    const warn = (why: string) =>
      ctx.emit({ type: 'warning', code: 'DASK_CLOUD_STATE', clusterId: ctx.clusterId, message: `no control socket for other processes (${why}): attach() and the CLI cannot reach this local cluster; it works from this process`, at: Date.now() });
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
      warn(`${socketPath} is longer than ${MAX_SOCKET_PATH} bytes: set TMPDIR to a shorter directory`);
      return;
    }
    try {
      this.#control = await ControlServer.listen(socketPath, this.#controlHandlers(), ctx.log.extend('control'));
    } catch (err) {
      warn((err as Error).message);
    }
  }

  /** What other processes may ask the owner (see ./control.ts for the protocol). */
  #controlHandlers(): Record<string, (params: Record<string, unknown>) => Promise<unknown>> {
    return {
      watch: async () => this.#describe(),
      members: async () => this.#describe(),
      launchWorkers: async (p) => {
        if (!this.#serving || !this.#ownerCtx) throw new LocalRuntimeError('E_CLUSTER_STATE', `cluster ${this.#clusterId} is closing`);
        const members = await this.launchWorkers(this.#ownerCtx, this.#remoteSpecs(p.specs));
        return { members };
      },
      stopMembers: async (p) => {
        const ids = p.ids;
        if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string')) throw new DaskCloudError('E_PROTOCOL', 'stopMembers needs ids: an array of member ids');
        const scheduler = [...this.#procs.values()].find((x) => x.member.role === 'scheduler' && ids.includes(x.member.id));
        // The cluster's own close() must see the scheduler go, or nothing would end the cluster.
        if (scheduler) throw new DaskCloudError('E_PROTOCOL', 'the scheduler stops with the cluster: send close');
        await Promise.all((ids as string[]).map((id) => this.#stop(id)));
        return {};
      },
      diagnostics: async (p) => {
        if (typeof p.memberId !== 'string') throw new DaskCloudError('E_PROTOCOL', 'diagnostics needs a memberId');
        return { text: this.#procs.get(p.memberId)?.tail.join('\n') ?? '' };
      },
      close: async () => {
        const ctx = this.#ownerCtx;
        await (this.onRemoteClose ?? (() => (ctx ? this.teardown(ctx) : Promise.resolve())))();
        return {};
      },
    };
  }

  /** The cluster as other processes see it: its live members, scheduler first. */
  #describe(): { clusterId: string; ownerPid: number; members: Member[] } {
    const live = [...this.#procs.values()].filter((p) => !p.stopping && p.child.exitCode === null && p.child.signalCode === null);
    return { clusterId: this.#clusterId, ownerPid: process.pid, members: live.map((p) => p.member) };
  }

  /**
   * Worker specs sent by another process, checked: workers only, named as this cluster names
   * them, never twice, and always joining this cluster's scheduler. (Whoever reaches the socket
   * is this user already, so the options themselves are theirs to choose.)
   */
  #remoteSpecs(value: unknown): MemberSpec[] {
    if (!Array.isArray(value) || value.length === 0 || value.length > 1_000) throw new DaskCloudError('E_PROTOCOL', 'launchWorkers needs specs: an array of 1 to 1,000 worker specs');
    const names = new Set([...this.#procs.values()].filter((p) => !p.stopping && p.child.exitCode === null).map((p) => p.member.name));
    return value.map((s: unknown) => {
      const { role, name, process: proc } = (typeof s === 'object' && s !== null ? s : {}) as Record<string, unknown>;
      if (role !== 'worker') throw new DaskCloudError('E_PROTOCOL', 'only workers can be launched for another process');
      if (typeof name !== 'string' || !name.startsWith(`${this.#clusterId}-worker-`) || !/^[a-z0-9-]{1,80}$/.test(name)) {
        throw new DaskCloudError('E_PROTOCOL', `a worker of cluster ${this.#clusterId} is named ${this.#clusterId}-worker-<n>, got ${JSON.stringify(name)}`);
      }
      if (names.has(name)) throw new DaskCloudError('E_PROTOCOL', `a worker named ${name} already runs`);
      names.add(name);
      if (typeof proc !== 'object' || proc === null || Array.isArray(proc)) throw new DaskCloudError('E_PROTOCOL', `worker ${name} has no process options`);
      return { role: 'worker', name, process: { ...(proc as MemberSpec['process']), name, schedulerAddress: this.#workerAddress } };
    });
  }

  async launchScheduler(ctx: BackendContext, spec: MemberSpec): Promise<SchedulerLaunch> {
    const port = this.#options.schedulerPort ?? (await freePort(this.host));
    const dashboardAddress =
      this.#options.dashboardAddress ?? (spec.process.dashboardAddress ?? `${this.host}:${await freePort(this.host)}`);
    const member = await this.#launch(ctx, spec, { host: this.host, port, dashboardAddress });
    const address = `${protocolFor(ctx.security)}://${this.host}:${port}`;
    this.#workerAddress = address;
    return { member, workerAddress: address, clientAddress: address, dashboardLink: dashboardAddress === false ? undefined : dashboardUrl(dashboardAddress, this.host) };
  }

  async launchWorkers(ctx: BackendContext, specs: MemberSpec[]): Promise<Member[]> {
    if (this.#remote) {
      const reply = await this.#ask('launchWorkers', { specs }, launchMs(specs.length));
      return parseMembers((reply as { members?: unknown })?.members);
    }
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
    const child = loadChildProcess().spawn(this.#python, launcherArgs(this.#clusterId, this.#dir, processSpec.args), {
      env: { ...baseEnv(), ...processSpec.env, [CLUSTER_ENV]: this.#clusterId, [OWNER_ENV]: ownerIdentity() },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    // Nothing is ever written; a pipe error after the launcher exits means nothing.
    child.stdin?.on('error', () => undefined);
    // The cluster alone must not keep this process running: a script that forgets close() would
    // hang for ever, and the close at exit (beforeExit, ../../src/cluster/signals.ts) would never
    // come. Unref'd handles still deliver output and exit events while anything else keeps the
    // loop alive; #stop refs the process again while it waits for it to end.
    child.unref();
    for (const stream of [child.stdin, child.stdout, child.stderr]) unrefStream(stream);
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
      const message = `${spec.role} ${spec.name} exited unexpectedly (${how}); last output:\n${tail.slice(-15).join('\n')}`;
      // Attached handles hear of it too, as the owner's own handle does.
      this.#control?.broadcast({ event: 'member-exited', memberId: member.id, role: member.role, name: member.name, message });
      ctx.memberFailed(member, new LocalRuntimeError('E_PROCESS_EXITED', message, { details: { code, signal } }));
    });
    ctx.log('started %s (%s) pid %d', spec.name, spec.role, child.pid);
    return member;
  }

  async stopMembers(_ctx: BackendContext, members: Member[]): Promise<void> {
    if (this.#remote) {
      // The scheduler goes only with the whole cluster, which its owner closes.
      if (members.some((m) => m.role === 'scheduler')) return this.#remoteClose();
      if (members.length === 0 || this.#remote.closed) return;
      await this.#ask('stopMembers', { ids: members.map((m) => m.id) }, STOP_MS);
      return;
    }
    await Promise.all(members.map((m) => this.#stop(m.id)));
  }

  async #stop(id: string): Promise<void> {
    const proc = this.#procs.get(id);
    if (!proc) return; // already gone: done
    proc.stopping = true;
    const pid = proc.child.pid;
    if (pid !== undefined && proc.child.exitCode === null && proc.child.signalCode === null) {
      // A close at beforeExit has nothing else keeping the loop alive: wait for the exit itself.
      proc.child.ref();
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
    if (this.#remote) return this.#remoteClose();
    // No new requests from now on; watchers hear that the cluster is closed.
    this.#serving = false;
    this.#control?.close({ event: 'closed', clusterId: this.#clusterId });
    await this.stopMembers(ctx, [...this.#procs.values()].map((p) => p.member));
    if (this.#dir) {
      await rm(this.#dir, { recursive: true, force: true });
      this.#dir = undefined;
      this.#written.clear();
    }
  }

  async diagnostics(member: Member): Promise<string> {
    if (this.#remote) {
      try {
        const reply = await this.#ask('diagnostics', { memberId: member.id }, REQUEST_MS);
        const text = (reply as { text?: unknown })?.text;
        return typeof text === 'string' ? text : '';
      } catch (err) {
        return `(the output of ${member.name} could not be read from the cluster's owner: ${(err as Error).message})`;
      }
    }
    return this.#procs.get(member.id)?.tail.join('\n') ?? '';
  }

  /**
   * Process ids of the live members' launchers, each the leader of its member's process group.
   * Empty for an attached backend: the processes are its owner's.
   */
  pids(): number[] {
    return [...this.#procs.values()].map((p) => p.child.pid).filter((p): p is number => p !== undefined);
  }

  /**
   * Process exit without a close: kill every group now and remove the keys (the watchdog would too, a moment later).
   * An attached backend owns nothing: a script that attached and exits leaves the cluster running.
   */
  killSync(): void {
    if (this.#remote) return;
    this.#control?.closeSync();
    for (const p of this.#procs.values()) if (p.child.pid !== undefined) signalGroup(p.child.pid, 'SIGKILL');
    try {
      if (this.#dir) rmSync(this.#dir, { recursive: true, force: true });
    } catch {
      // exiting anyway: the watchdog, or `cleanup --provider local`, removes it
    }
  }

  /** What `attach` needs to reach this cluster from another process: the owner's socket and identity. */
  recordState(): Record<string, unknown> {
    return { ...(this.#control ? { control: this.#control.path } : {}), ownerPid: process.pid, owner: ownerIdentity() };
  }

  /**
   * Resolves once the control socket has answered its last request and every connection has
   * ended (at most `ms`): the owner's process may exit then without cutting a reply short.
   */
  async controlDrained(ms: number): Promise<void> {
    await this.#control?.drained(ms);
  }

  /**
   * Attach: reach the cluster's owner through the socket its record names, and from now on ask it
   * to launch, stop, read and close. A watching connection (never keeping this process alive)
   * reports members that exit on their own, and the owner's end.
   */
  async adopt(ctx: BackendContext, record: ClusterRecord): Promise<AdoptedCluster> {
    const saved = record.backend as { control?: unknown; ownerPid?: unknown; owner?: unknown };
    const ownerPid = typeof saved.ownerPid === 'number' && Number.isInteger(saved.ownerPid) && saved.ownerPid > 0 ? saved.ownerPid : undefined;
    const owner = typeof saved.owner === 'string' ? saved.owner : ownerPid === undefined ? undefined : String(ownerPid);
    const id = ctx.clusterId;
    const pidText = ownerPid === undefined ? 'its owner process' : `its owner process (pid ${ownerPid})`;
    const tidy = `Tidy up with: dask-cloud cleanup --provider local --cluster ${id} (or remove ${clusterDir(id)})`;
    const gone = (extra?: unknown) =>
      new DaskCloudError('E_NOT_FOUND', `local cluster ${id} is gone: ${pidText} has exited, and its Dask processes ended with it. ${tidy}`, {
        ...(extra === undefined ? {} : { cause: extra }),
        details: { clusterId: id, ownerPid },
      });
    const closed = (extra?: unknown) =>
      new DaskCloudError('E_NOT_FOUND', `local cluster ${id} is closed: ${pidText} still runs but no longer serves it. ${tidy}`, {
        ...(extra === undefined ? {} : { cause: extra }),
        details: { clusterId: id, ownerPid },
      });
    if (typeof saved.control !== 'string') {
      if (owner !== undefined && !identityAlive(owner)) throw gone();
      throw new DaskCloudError('E_NOT_FOUND', `local cluster ${id} cannot be reached from another process: ${pidText} serves no control socket (see its DASK_CLOUD_STATE warning). ${tidy}`, {
        details: { clusterId: id, ownerPid },
      });
    }
    const socket = saved.control;
    if (owner !== undefined && !identityAlive(owner)) throw gone();
    const remote: Remote = { clusterId: id, socket, owner, ownerPid, scheduler: { id: '', role: 'scheduler', name: `${id}-scheduler` }, watch: undefined, ownerClosed: false, closing: false, closed: false };
    let watch: ControlWatch;
    try {
      watch = await controlWatch(socket, REQUEST_MS, (e) => this.#onOwnerEvent(ctx, remote, e), () => this.#onOwnerEnd(ctx, remote));
    } catch (err) {
      if (isUnreachable(err)) throw owner !== undefined && !identityAlive(owner) ? gone(err) : closed(err);
      throw new DaskCloudError(DaskCloudError.isInstance(err) ? err.code : 'E_REMOTE', `local cluster ${id}: ${pidText} did not answer: ${(err as Error).message}`, { cause: err, details: { clusterId: id, ownerPid } });
    }
    try {
      const described = watch.result as { clusterId?: unknown; members?: unknown };
      if (described?.clusterId !== id) throw new DaskCloudError('E_PROTOCOL', `the socket ${socket} serves cluster ${String(described?.clusterId)}, not ${id}`);
      const members = parseMembers(described.members);
      const scheduler = members.find((m) => m.role === 'scheduler');
      if (!scheduler) throw closed();
      remote.scheduler = scheduler;
      remote.watch = watch;
      this.#remote = remote;
      this.#clusterId = id;
      return {
        scheduler,
        workers: members.filter((m) => m.role === 'worker').sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true })),
        clientAddress: record.schedulerAddress,
        workerAddress: record.schedulerAddress,
        ...(record.dashboardLink === undefined ? {} : { dashboardLink: record.dashboardLink }),
      };
    } catch (err) {
      watch.close();
      throw err;
    }
  }

  #onOwnerEvent(ctx: BackendContext, remote: Remote, event: ControlEvent): void {
    if (event.event === 'closed') {
      remote.ownerClosed = true;
      return;
    }
    if (event.event !== 'member-exited' || remote.closing) return;
    const { memberId, role, name, message } = event;
    if (typeof memberId !== 'string' || (role !== 'scheduler' && role !== 'worker') || typeof name !== 'string') return;
    ctx.memberFailed({ id: memberId, role, name, privateHost: this.host }, new LocalRuntimeError('E_PROCESS_EXITED', typeof message === 'string' ? message : `${role} ${name} exited`));
  }

  /** The owner ended the watch: it closed the cluster, or died (and the cluster with it). */
  #onOwnerEnd(ctx: BackendContext, remote: Remote): void {
    if (remote.closing || remote.closed) return;
    const who = remote.ownerPid === undefined ? "the cluster's owner" : `the cluster's owner (pid ${remote.ownerPid})`;
    const why = remote.ownerClosed
      ? `${who} closed the cluster`
      : remote.owner !== undefined && !identityAlive(remote.owner)
        ? `${who} exited, and the cluster's processes ended with it`
        : `${who} stopped serving the cluster (it is exiting, and the cluster's processes end with it)`;
    ctx.memberFailed(remote.scheduler, new LocalRuntimeError('E_PROCESS_EXITED', why));
  }

  /** One request to the owner; an owner that is no longer there is `E_NOT_FOUND`. */
  async #ask(op: string, params: Record<string, unknown>, timeoutMs: number): Promise<unknown> {
    const remote = this.#remote!;
    try {
      return await controlRequest(remote.socket, op, params, timeoutMs);
    } catch (err) {
      if (!isUnreachable(err)) throw err;
      const who = remote.ownerPid === undefined ? 'its owner' : `its owner (pid ${remote.ownerPid})`;
      throw new DaskCloudError('E_NOT_FOUND', `local cluster ${remote.clusterId} is no longer served by ${who}: it was closed, or its owner exited`, { cause: err, details: { clusterId: remote.clusterId } });
    }
  }

  /**
   * Close through the owner, which stops every process and removes its keys. An owner that no
   * longer serves the socket has closed the cluster already, or died with it: done either way.
   */
  async #remoteClose(): Promise<void> {
    const remote = this.#remote!;
    if (remote.closed) return;
    remote.closing = true;
    const deadline = Date.now() + CLOSE_MS;
    try {
      await controlRequest(remote.socket, 'close', {}, CLOSE_MS);
    } catch (err) {
      // Another close is under way (the owner's own, or another handle's): the owner then ends
      // new connections at once. Wait for it to let go of the socket.
      const busy = DaskCloudError.isInstance(err) && (err.code === 'E_CONNECTION_CLOSED' || err.code === 'E_CLUSTER_STATE');
      if (!isUnreachable(err) && !(busy && (await this.#ownerGoneBy(deadline)))) {
        remote.closing = false;
        const who = remote.ownerPid === undefined ? 'its owner' : `its owner (pid ${remote.ownerPid})`;
        throw new TeardownError(`local cluster ${remote.clusterId}: ${who} did not confirm the close: ${(err as Error).message}`, [`the Dask processes of local cluster ${remote.clusterId}, owned by ${who}`], {
          cause: err,
        });
      }
    }
    remote.closed = true;
    remote.watch?.close();
  }

  /** Polls until the owner's socket is unreachable or the owner is dead, at most until `deadline`. */
  async #ownerGoneBy(deadline: number): Promise<boolean> {
    const remote = this.#remote!;
    while (Date.now() < deadline) {
      if (remote.owner !== undefined && !identityAlive(remote.owner)) return true;
      try {
        await controlRequest(remote.socket, 'members', {}, Math.max(1, Math.min(REQUEST_MS, deadline - Date.now())));
      } catch (err) {
        if (isUnreachable(err)) return true;
      }
      await new Promise((r) => setTimeout(r, CLOSE_POLL_MS));
    }
    return false;
  }
}

/** Members as the owner sends them, checked. */
function parseMembers(value: unknown): Member[] {
  if (!Array.isArray(value)) throw new DaskCloudError('E_PROTOCOL', "the cluster's owner sent no member list");
  return value.map((m: unknown) => {
    const { id, role, name, privateHost } = (typeof m === 'object' && m !== null ? m : {}) as Record<string, unknown>;
    if (typeof id !== 'string' || (role !== 'scheduler' && role !== 'worker') || typeof name !== 'string') {
      throw new DaskCloudError('E_PROTOCOL', "the cluster's owner sent a malformed member");
    }
    return { id, role, name, ...(typeof privateHost === 'string' ? { privateHost } : {}) };
  });
}

/** A child's stdio pipe (a net.Socket, though typed as a plain stream) stops holding the event loop. */
function unrefStream(stream: unknown): void {
  (stream as { unref?: () => void } | null)?.unref?.();
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
