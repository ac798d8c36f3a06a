/**
 * A stand-in for what a cluster's VMs run, for measurements at a scale that real Dask processes
 * cannot reach on one machine (a thousand workers). It is a `VmBooter` for the API fakes:
 *
 * - The **scheduler VM**, after a simulated boot delay, listens on its own address and port
 *   (taken from the shipped launch spec, `/etc/dask/launch.json`, and the instance's addresses)
 *   with Node's `tls`, presenting the scheduler certificate from the user-data's `write_files`
 *   and requiring a client certificate signed by the cluster's CA, as `dask scheduler
 *   --tls-ca-file ... --tls-cert ... --tls-key ...` does. It speaks Dask's wire protocol (framing,
 *   handshake written first, msgpack frame 0) and answers the handlers the library uses:
 *   `identity`, `ncores` and `ncores_running` (every stand-in worker runs), `versions`,
 *   `broadcast` of `versions`, `retire_workers`, `adaptive_target`, `terminate`, `close`; any
 *   other op is answered with nil, as Dask answers an unknown op.
 *   Without TLS in the launch spec it listens in plain TCP.
 * - A **worker VM**, after the same kind of delay, "registers": it appears in its scheduler's
 *   worker map as `tls://<privateIp>:<port>` with `host` = its private address and the name its
 *   launch spec gives (`--name`), else its address (Dask's default). A worker whose scheduler is
 *   not up yet registers when it comes up (a real worker keeps retrying). Stopping or deleting
 *   the VM removes it; `retire_workers` removes it for good (its process closed).
 *
 * Nothing runs per VM: one timer while it boots and a small record; user-data is parsed once per
 * distinct content (a batch of workers shares one user-data). Only the scheduler listens.
 *
 * Not modelled: cloud-init itself, Docker, the dashboard and its terminator, firewalls (recorded
 * nowhere, never enforced), worker-to-worker traffic, task execution, worker heartbeats.
 *
 * Safety: like ProcessBooter it only serves VMs whose addresses are on loopback (127/8); the
 * fakes must be configured with loopback address blocks. It never dials anything.
 */
import { createHash, randomUUID } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { gunzipSync } from 'node:zlib';
import { decode, encode } from '@msgpack/msgpack';
import { parse } from 'yaml';
import type { BootRequest, BootedVm, FirewallRule, VmBooter } from '../fakes/core/state';

const LAUNCH_SPEC = '/etc/dask/launch.json';
const DEFAULT_SCHEDULER_PORT = 8786;
/** Where a stand-in worker says it listens (every worker has its own address, so one port does). */
export const STANDIN_WORKER_PORT = 41_000;
/** Largest message accepted from a client (control requests are small). */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
const MAX_FRAMES = 1024;

/** What the server announces first on every connection (the shape Dask's handshake has). */
const SERVER_HANDSHAKE = { compression: null, python: [3, 11, 2], 'pickle-protocol': 5 };

export interface StandInOptions {
  /** Simulated boot: ms from the cloud's "running" until the VM's Dask is up. Default 30 000. A function may vary it per VM. */
  bootMs?: number | ((vm: BootRequest, role: 'scheduler' | 'worker') => number);
  /** The scheduler's answer to `versions` (and each worker's, through `broadcast`). */
  versions?: Record<string, unknown>;
  /** Threads a worker reports when its launch spec has no `--nthreads`. Default 2. */
  defaultNthreads?: number;
  /** Memory limit (bytes) a worker reports without `--memory-limit`. Default 4 GiB. */
  defaultMemoryLimit?: number;
}

/** The parts of a launch spec the stand-in needs; one per distinct user-data. */
interface LaunchInfo {
  role: 'scheduler' | 'worker';
  /** Scheduler: the port it listens on. */
  port: number;
  /** Scheduler: TLS material (absent: plain TCP). */
  tls?: { ca: string; cert: string; key: string };
  /** Worker: `host:port` of the scheduler it joins (the key of that scheduler). */
  schedulerKey?: string;
  schedulerProtocol?: 'tls' | 'tcp';
  name?: string;
  nthreads?: number;
  memoryLimit?: number;
}

interface WorkerVm {
  id: string;
  privateIp: string;
  info: LaunchInfo;
  state: 'booting' | 'waiting' | 'registered' | 'retired' | 'stopped';
  timer?: NodeJS.Timeout;
  bootedAt?: number;
  registeredAt?: number;
}

interface WorkerEntry {
  vm: WorkerVm;
  address: string;
  name: string;
  nthreads: number;
  memoryLimit: number;
  lastSeen: number;
}

export interface StandInScheduler {
  readonly key: string;
  readonly id: string;
  /** The address Dask would report (`tls://<privateIp>:<port>`). */
  readonly address: string;
  /** Addresses listened on. */
  readonly listening: string[];
  readonly workers: ReadonlyMap<string, WorkerEntry>;
  readonly upAt?: number;
}

class SchedulerState implements StandInScheduler {
  readonly id = `Scheduler-${randomUUID()}`;
  readonly workers = new Map<string, WorkerEntry>();
  readonly listening: string[] = [];
  readonly servers: net.Server[] = [];
  readonly sockets = new Set<net.Socket>();
  upAt?: number;
  timer?: NodeJS.Timeout;
  stopped = false;
  readonly started = Date.now() / 1000;
  /** Requests answered, by op (for tests and the harness). */
  readonly ops = new Map<string, number>();

  constructor(
    readonly key: string,
    readonly vmId: string,
    readonly privateIp: string,
    readonly publicIp: string | undefined,
    readonly info: LaunchInfo,
  ) {}

  get address(): string {
    return `${this.info.tls ? 'tls' : 'tcp'}://${this.privateIp}:${this.info.port}`;
  }
}

function decodeUserData(raw: Buffer): string {
  const text = raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw).toString('utf8') : raw.toString('utf8');
  if (!text.startsWith('#cloud-config')) throw new Error('user-data is not a #cloud-config document');
  return text;
}

function fileContent(f: { content?: string; encoding?: string }): string {
  const content = f.content ?? '';
  switch (f.encoding) {
    case undefined:
    case 'text/plain':
      return content;
    case 'b64':
    case 'base64':
      return Buffer.from(content, 'base64').toString('utf8');
    case 'gz+b64':
    case 'gzip+base64':
      return gunzipSync(Buffer.from(content, 'base64')).toString('utf8');
    default:
      throw new Error(`unsupported write_files encoding ${f.encoding}`);
  }
}

function argValue(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  if (i >= 0 && i + 1 < args.length) return args[i + 1];
  const eq = args.find((a) => a.startsWith(`${flag}=`));
  return eq?.slice(flag.length + 1);
}

const UNITS: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };

function parseBytes(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const m = /^\s*([\d.]+)\s*([a-z]*)\s*$/i.exec(text);
  if (!m) return undefined;
  const unit = UNITS[(m[2] || 'b').toLowerCase()];
  return unit === undefined ? undefined : Math.round(Number(m[1]) * unit);
}

/** Reads role, port, TLS files and worker settings from a cloud-config's launch spec. */
export function readLaunchInfo(userData: Buffer): LaunchInfo {
  const doc = parse(decodeUserData(userData)) as { write_files?: { path: string; content?: string; encoding?: string }[] };
  const files = new Map((doc.write_files ?? []).map((f) => [f.path, f]));
  const specFile = files.get(LAUNCH_SPEC);
  if (!specFile) throw new Error(`no ${LAUNCH_SPEC} in the user-data`);
  const spec = JSON.parse(fileContent(specFile)) as { args?: string[]; env?: Record<string, string> };
  const args = spec.args ?? [];
  const env = spec.env ?? {};
  const role = args[0];
  if (role !== 'scheduler' && role !== 'worker') throw new Error(`launch spec runs ${JSON.stringify(role)}, not scheduler or worker`);
  const read = (path: string | undefined): string | undefined => {
    if (path === undefined) return undefined;
    const f = files.get(path);
    if (!f) throw new Error(`launch spec names ${path}, which the user-data does not write`);
    return fileContent(f);
  };
  if (role === 'scheduler') {
    const ca = read(env.DASK_DISTRIBUTED__COMM__TLS__CA_FILE);
    const cert = read(env.DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT);
    const key = read(env.DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY);
    const port = Number(argValue(args, '--port') ?? DEFAULT_SCHEDULER_PORT);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad scheduler port in the launch spec: ${argValue(args, '--port')}`);
    return { role, port, ...(ca && cert && key ? { tls: { ca, cert, key } } : {}) };
  }
  const target = args[1] ?? '';
  const m = /^(tls|tcp):\/\/\[?([^\]]+?)\]?:(\d+)$/.exec(target);
  if (!m) throw new Error(`worker launch spec has no scheduler address (got ${JSON.stringify(target)})`);
  const nthreads = argValue(args, '--nthreads');
  return {
    role,
    port: STANDIN_WORKER_PORT,
    schedulerProtocol: m[1] as 'tls' | 'tcp',
    schedulerKey: `${m[2]}:${m[3]}`,
    name: argValue(args, '--name'),
    nthreads: nthreads === undefined ? undefined : Number(nthreads),
    memoryLimit: parseBytes(argValue(args, '--memory-limit')),
  };
}

// ---------------------------------------------------------------------------------------------
// Framing (written for the stand-in, independently of the library's own codec)

function frameMessage(value: unknown): Buffer {
  const body = Buffer.from(encode(value, { ignoreUndefined: true }));
  const head = Buffer.alloc(24);
  head.writeBigUInt64LE(BigInt(16 + body.length), 0); // L: everything after itself
  head.writeBigUInt64LE(1n, 8);
  head.writeBigUInt64LE(BigInt(body.length), 16);
  return Buffer.concat([head, body]);
}

/** Splits a byte stream into messages (lists of frames); the end is computed from the lengths, not from L. */
class FrameReader {
  private chunks: Buffer[] = [];
  private size = 0;

  push(chunk: Buffer): Buffer[][] {
    this.chunks.push(chunk);
    this.size += chunk.length;
    const out: Buffer[][] = [];
    for (;;) {
      if (this.size < 16) return out;
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
      this.chunks = [all];
      const n = all.readBigUInt64LE(8);
      if (n > BigInt(MAX_FRAMES)) throw new Error(`message declares ${n} frames`);
      const prelude = 16 + 8 * Number(n);
      if (this.size < prelude) return out;
      let end = prelude;
      const lengths: number[] = [];
      for (let i = 0; i < Number(n); i++) {
        const len = all.readBigUInt64LE(16 + 8 * i);
        if (len > BigInt(MAX_MESSAGE_BYTES)) throw new Error('frame too large');
        lengths.push(Number(len));
        end += Number(len);
      }
      if (end > MAX_MESSAGE_BYTES) throw new Error('message too large');
      if (this.size < end) return out;
      const frames: Buffer[] = [];
      let at = prelude;
      for (const len of lengths) {
        frames.push(all.subarray(at, at + len));
        at += len;
      }
      out.push(frames);
      const rest = all.subarray(end);
      this.chunks = rest.length ? [rest] : [];
      this.size = rest.length;
    }
  }
}

// ---------------------------------------------------------------------------------------------

/** The default `versions` answer: Dask's shape, `{host: {python, ...}, packages: {...}}`. */
export const DEFAULT_VERSIONS = Object.freeze({
  host: { python: '3.11.2.final.0', 'python-bits': 64, OS: 'Linux', machine: 'x86_64' },
  packages: { python: '3.11.2.final.0', dask: '2022.12.1', distributed: '2022.12.1', msgpack: '1.0.3', cloudpickle: '2.2.0', tornado: '6.2', toolz: '0.12.0', numpy: null, pandas: null, lz4: null },
});

/** Dask-style versions answer from a local client's versions (so the library's comparison passes). */
export function versionsLike(v: { python: string; packages: Record<string, string | null> }): Record<string, unknown> {
  const py = `${v.python}.final.0`;
  return { host: { python: py, 'python-bits': 64, OS: 'Linux', machine: 'x86_64' }, packages: { python: py, ...v.packages } };
}

export class StandInBooter implements VmBooter {
  /** Firewalls are not enforced: the fakes need not keep every VM's rules current (see VmBooter). */
  readonly ignoresFirewalls = true;
  readonly #bootMs: StandInOptions['bootMs'];
  readonly #versions: Record<string, unknown>;
  readonly #nthreads: number;
  readonly #memoryLimit: number;
  readonly #infoCache = new Map<string, LaunchInfo>();
  readonly #schedulers = new Map<string, SchedulerState>();
  readonly #workers = new Map<string, WorkerVm>();
  /** Workers booted whose scheduler is not up yet, by scheduler key. */
  readonly #waiting = new Map<string, Set<WorkerVm>>();
  /** Errors of scheduler listeners and boots (a test asserts it is empty). */
  readonly errors: { id: string; error: unknown }[] = [];

  constructor(options: StandInOptions = {}) {
    this.#bootMs = options.bootMs ?? 30_000;
    this.#versions = options.versions ?? (DEFAULT_VERSIONS as unknown as Record<string, unknown>);
    this.#nthreads = options.defaultNthreads ?? 2;
    this.#memoryLimit = options.defaultMemoryLimit ?? 4 * 1024 ** 3;
  }

  #info(userData: Buffer): LaunchInfo {
    const hash = createHash('sha1').update(userData).digest('hex');
    let info = this.#infoCache.get(hash);
    if (!info) {
      info = readLaunchInfo(userData);
      this.#infoCache.set(hash, info);
    }
    return info;
  }

  #delay(vm: BootRequest, role: 'scheduler' | 'worker'): number {
    const b = this.#bootMs;
    return Math.max(0, typeof b === 'function' ? b(vm, role) : (b ?? 0));
  }

  async boot(vm: BootRequest): Promise<BootedVm> {
    for (const ip of [vm.privateIp, vm.publicIp]) {
      if (ip !== undefined && !ip.startsWith('127.')) {
        throw new Error(`the stand-in only serves VMs on loopback addresses; ${ip} is not (configure the fake with loopback blocks)`);
      }
    }
    const info = this.#info(vm.userData);
    return info.role === 'scheduler' ? this.#bootScheduler(vm, info) : this.#bootWorker(vm, info);
  }

  #bootScheduler(vm: BootRequest, info: LaunchInfo): BootedVm {
    const key = `${vm.privateIp}:${info.port}`;
    if (this.#schedulers.has(key)) throw new Error(`a stand-in scheduler already runs at ${key}`);
    const s = new SchedulerState(key, vm.id, vm.privateIp, vm.publicIp, info);
    this.#schedulers.set(key, s);
    s.timer = setTimeout(() => {
      s.timer = undefined;
      this.#listen(s).then(
        () => {
          if (s.stopped) return;
          s.upAt = Date.now();
          for (const w of this.#waiting.get(key) ?? []) this.#register(w);
          this.#waiting.delete(key);
        },
        (error) => this.errors.push({ id: vm.id, error }),
      );
    }, this.#delay(vm, 'scheduler'));
    return {
      consoleOutput: async () =>
        `[stand-in scheduler ${vm.id}] ${s.upAt ? `listening on ${s.listening.join(', ')} since ${new Date(s.upAt).toISOString()}; ${s.workers.size} workers` : 'booting'}`,
      stop: async () => this.#stopScheduler(s),
    };
  }

  #bootWorker(vm: BootRequest, info: LaunchInfo): BootedVm {
    const w: WorkerVm = { id: vm.id, privateIp: vm.privateIp, info, state: 'booting' };
    this.#workers.set(vm.id, w);
    w.timer = setTimeout(() => {
      w.timer = undefined;
      w.bootedAt = Date.now();
      const s = this.#schedulers.get(info.schedulerKey!);
      if (s?.upAt !== undefined && !s.stopped) this.#register(w);
      else {
        w.state = 'waiting';
        let set = this.#waiting.get(info.schedulerKey!);
        if (!set) this.#waiting.set(info.schedulerKey!, (set = new Set()));
        set.add(w);
      }
    }, this.#delay(vm, 'worker'));
    return {
      consoleOutput: async () => `[stand-in worker ${vm.id}] ${w.state}${w.state === 'registered' ? ` with ${info.schedulerKey}` : ''}`,
      stop: async () => this.#stopWorker(w),
    };
  }

  #register(w: WorkerVm): void {
    if (w.state === 'stopped' || w.state === 'retired') return;
    const s = this.#schedulers.get(w.info.schedulerKey!);
    if (!s) return;
    const address = `${w.info.schedulerProtocol}://${w.privateIp}:${STANDIN_WORKER_PORT}`;
    w.state = 'registered';
    w.registeredAt = Date.now();
    s.workers.set(address, {
      vm: w,
      address,
      name: w.info.name ?? address,
      nthreads: w.info.nthreads ?? this.#nthreads,
      memoryLimit: w.info.memoryLimit ?? this.#memoryLimit,
      lastSeen: Date.now() / 1000,
    });
  }

  #unregister(w: WorkerVm): void {
    const s = this.#schedulers.get(w.info.schedulerKey!);
    s?.workers.delete(`${w.info.schedulerProtocol}://${w.privateIp}:${STANDIN_WORKER_PORT}`);
    this.#waiting.get(w.info.schedulerKey!)?.delete(w);
  }

  async #stopWorker(w: WorkerVm): Promise<void> {
    if (w.timer) clearTimeout(w.timer);
    w.timer = undefined;
    this.#unregister(w);
    w.state = 'stopped';
    this.#workers.delete(w.id);
  }

  async #stopScheduler(s: SchedulerState): Promise<void> {
    if (s.stopped) return;
    s.stopped = true;
    if (s.timer) clearTimeout(s.timer);
    for (const sock of s.sockets) sock.destroy();
    s.sockets.clear();
    await Promise.all(s.servers.map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))));
    s.workers.clear();
    if (this.#schedulers.get(s.key) === s) this.#schedulers.delete(s.key);
  }

  async #listen(s: SchedulerState): Promise<void> {
    // What clients dial: the public address (public mode), and the private one (workers, private mode).
    const hosts = [...new Set([s.privateIp, ...(s.publicIp ? [s.publicIp] : [])])];
    for (const host of hosts) {
      if (s.stopped) return;
      const onConnection = (sock: net.Socket) => this.#serve(s, sock);
      const server = s.info.tls
        ? tls.createServer(
            {
              ca: s.info.tls.ca,
              cert: s.info.tls.cert,
              key: s.info.tls.key,
              requestCert: true,
              rejectUnauthorized: true,
              minVersion: 'TLSv1.2',
            },
            onConnection,
          )
        : net.createServer(onConnection);
      // A refused client certificate surfaces here (the socket is closed by Node).
      server.on('tlsClientError', () => undefined);
      server.on('error', (error) => this.errors.push({ id: s.vmId, error }));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(s.info.port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      s.servers.push(server);
      s.listening.push(`${host}:${s.info.port}`);
    }
  }

  #serve(s: SchedulerState, sock: net.Socket): void {
    if (s.stopped) {
      sock.destroy();
      return;
    }
    s.sockets.add(sock);
    sock.on('close', () => s.sockets.delete(sock));
    sock.on('error', () => undefined);
    sock.setNoDelay(true);
    const reader = new FrameReader();
    let handshaken = false;
    sock.write(frameMessage(SERVER_HANDSHAKE));
    sock.on('data', (chunk: Buffer) => {
      let messages: Buffer[][];
      try {
        messages = reader.push(chunk);
      } catch {
        sock.destroy();
        return;
      }
      for (const frames of messages) {
        if (!handshaken) {
          handshaken = true; // the client's handshake: nothing to answer
          continue;
        }
        let msg: unknown;
        try {
          msg = decode(frames[0]!);
        } catch {
          sock.destroy();
          return;
        }
        for (const m of Array.isArray(msg) ? msg : [msg]) {
          if (!this.#handle(s, sock, m as Record<string, unknown>)) return;
        }
      }
    });
  }

  /** Answers one request; false when the connection is finished. */
  #handle(s: SchedulerState, sock: net.Socket, msg: Record<string, unknown>): boolean {
    const op = typeof msg?.op === 'string' ? msg.op : '';
    s.ops.set(op, (s.ops.get(op) ?? 0) + 1);
    if (op === 'close') {
      sock.end();
      return false;
    }
    if (op === 'terminate') {
      // Dask stops the scheduler (and its workers) and never replies.
      void this.#stopScheduler(s);
      return false;
    }
    let reply: unknown;
    try {
      reply = this.#answer(s, op, msg);
    } catch (err) {
      reply = { status: 'uncaught-error', exception_text: `${(err as Error).name}('${(err as Error).message}')`, traceback_text: '' };
    }
    if (msg.reply !== false) sock.write(frameMessage(reply ?? null));
    return true;
  }

  #answer(s: SchedulerState, op: string, msg: Record<string, unknown>): unknown {
    switch (op) {
      case 'identity': {
        const workers: Record<string, unknown> = {};
        for (const w of s.workers.values()) workers[w.address] = this.#workerInfo(w);
        return {
          type: 'Scheduler',
          id: s.id,
          address: s.address,
          services: { dashboard: 8787 },
          started: s.started,
          workers,
        };
      }
      // Dask's get_ncores / get_ncores_running: {worker address: nthreads}.
      case 'ncores':
      case 'ncores_running': {
        const out: Record<string, number> = {};
        for (const w of s.workers.values()) out[w.address] = w.nthreads;
        return out;
      }
      case 'versions':
        return this.#versions;
      case 'broadcast': {
        const inner = msg.msg as Record<string, unknown> | undefined;
        const out: Record<string, unknown> = {};
        if (inner?.op === 'versions') for (const addr of s.workers.keys()) out[addr] = this.#versions;
        else for (const addr of s.workers.keys()) out[addr] = null;
        return out;
      }
      case 'adaptive_target':
        return s.workers.size;
      case 'retire_workers': {
        const wanted = new Set<string>();
        const addrs = Array.isArray(msg.workers) ? (msg.workers as unknown[]).map(String) : [];
        const names = Array.isArray(msg.names) ? new Set((msg.names as unknown[]).map(String)) : undefined;
        for (const a of addrs) if (s.workers.has(a)) wanted.add(a);
        if (names) for (const w of s.workers.values()) if (names.has(String(w.name))) wanted.add(w.address);
        const out: Record<string, unknown> = {};
        for (const a of wanted) {
          const w = s.workers.get(a)!;
          out[a] = this.#workerInfo(w);
          s.workers.delete(a);
          // With close_workers the worker and its nanny exit for good; without, a nanny would restart it.
          if (msg.close_workers !== false) w.vm.state = 'retired';
          else setTimeout(() => this.#register(w.vm), 2_000).unref();
        }
        return out;
      }
      default:
        return null;
    }
  }

  #workerInfo(w: WorkerEntry): Record<string, unknown> {
    return {
      type: 'Worker',
      id: w.name,
      host: w.vm.privateIp,
      resources: {},
      local_directory: '/tmp/dask-scratch-space',
      name: w.name,
      nthreads: w.nthreads,
      memory_limit: w.memoryLimit,
      last_seen: w.lastSeen,
      services: {},
      metrics: {},
      status: 'running',
      nanny: `${w.vm.info.schedulerProtocol}://${w.vm.privateIp}:${STANDIN_WORKER_PORT + 1}`,
    };
  }

  setFirewall(_id: string, _rules: FirewallRule[]): void {
    // Not enforced (see the file comment).
  }

  /** The stand-in schedulers (up or booting). */
  schedulers(): StandInScheduler[] {
    return [...this.#schedulers.values()];
  }

  /** Workers registered with any scheduler. */
  registeredWorkers(): number {
    let n = 0;
    for (const s of this.#schedulers.values()) n += s.workers.size;
    return n;
  }

  /** Worker VMs held (booting, waiting, registered or retired but not deleted). */
  workerVms(): number {
    return this.#workers.size;
  }

  /** Requests each scheduler answered, by op, summed. */
  opCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.#schedulers.values()) for (const [op, n] of s.ops) out[op] = (out[op] ?? 0) + n;
    return out;
  }

  /** Stops every VM and listener (safety net). */
  async stopAll(): Promise<void> {
    for (const w of [...this.#workers.values()]) await this.#stopWorker(w);
    for (const s of [...this.#schedulers.values()]) await this.#stopScheduler(s);
    this.#waiting.clear();
  }
}
