/**
 * A small client for the Dask scheduler's RPC handlers that cluster management needs:
 * `identity`, `retire_workers`, `adaptive_target`, `versions`, `terminate`.
 */
import { inspect, type InspectOptions } from 'node:util';
import { createLog } from '../log';
import { DaskCommError, ValidationError } from '../errors';
import {
  abortedError,
  DaskComm,
  DEFAULT_CONNECT_TIMEOUT_MS,
  isRetryableCommError,
  type RequestOptions,
  type TlsClientOptions,
} from './comm';
import { isRemoteError, remoteErrorInfo } from './protocol';

const log = createLog('dask-cloud:comm');

/** Options for connecting to a scheduler. */
export interface ConnectOptions {
  /**
   * The cluster's security: anything with `clientTlsOptions()` (the `Security` class fits).
   * `false` or absent for plain `tcp://`.
   */
  security?: { clientTlsOptions(): TlsClientOptions } | false;
  /** Raw TLS material instead of `security`. */
  tls?: TlsClientOptions;
  /** Budget for TCP connect + TLS handshake + Dask handshake, in ms. Default 10 000. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** One worker as the scheduler's `identity` reports it. */
export interface WorkerIdentity {
  /** The worker's comm address, e.g. `tls://127.0.0.1:40123`. */
  address: string;
  /** `--name`, or the address when none was given. Dask allows ints. */
  name: string | number;
  /** Dask's `Status` name: `running`, `paused`, `closing_gracefully`, ... */
  status: string;
  nthreads: number;
  /** Bytes; 0 means no limit. */
  memoryLimit: number;
  host: string;
  /** Address of the worker's nanny, or null without one. */
  nanny: string | null;
  /** Scheduler clock (seconds since the epoch) of the last heartbeat. */
  lastSeen: number;
  resources: Record<string, number>;
  /** Everything the scheduler sent, untouched (snake_case keys). */
  raw: Record<string, unknown>;
}

/** The scheduler's `identity` reply, with camelCase fields and the raw reply kept. */
export interface SchedulerIdentity {
  /** `'Scheduler'`. */
  type: string;
  id: string;
  /** The address the scheduler believes it has (its listen address). */
  address: string;
  /** Service name → port, e.g. `{ dashboard: 8787 }`. */
  services: Record<string, number>;
  /** Scheduler clock (seconds since the epoch) at start. */
  started: number;
  /** Worker address → identity. */
  workers: Record<string, WorkerIdentity>;
  raw: Record<string, unknown>;
}

/** Options of {@link SchedulerClient.retireWorkers}. */
export interface RetireWorkersOptions {
  /** Worker addresses. Mutually exclusive with `names`. */
  workers?: string[];
  /** Worker names (`--name`). Mutually exclusive with `workers`. */
  names?: Array<string | number>;
  /** Also close the retired workers (and their nannies). Default true. */
  closeWorkers?: boolean;
  /** Time for the data to move off the workers, in ms. Default 120 000. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

const DEFAULT_RETIRE_TIMEOUT_MS = 120_000;
const DEFAULT_TERMINATE_TIMEOUT_MS = 10_000;

function asRecord(value: unknown): Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}
const str = (v: unknown, fallback = ''): string => (typeof v === 'string' ? v : fallback);
const num = (v: unknown, fallback = 0): number => (typeof v === 'number' ? v : fallback);

function numberRecord(value: unknown): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(asRecord(value))) if (typeof v === 'number') out[k] = v;
  return out;
}

/** Normalise one entry of `identity().workers`. */
export function toWorkerIdentity(address: string, value: unknown): WorkerIdentity {
  const raw = asRecord(value);
  return {
    address,
    name: typeof raw.name === 'number' || typeof raw.name === 'string' ? raw.name : address,
    status: str(raw.status, 'unknown'),
    nthreads: num(raw.nthreads),
    memoryLimit: num(raw.memory_limit),
    host: str(raw.host),
    nanny: typeof raw.nanny === 'string' ? raw.nanny : null,
    lastSeen: num(raw.last_seen),
    resources: numberRecord(raw.resources),
    raw,
  };
}

/** Normalise an `identity` reply. */
export function toSchedulerIdentity(value: unknown): SchedulerIdentity {
  const raw = asRecord(value);
  const workers: Record<string, WorkerIdentity> = {};
  for (const [addr, w] of Object.entries(asRecord(raw.workers))) workers[addr] = toWorkerIdentity(addr, w);
  return {
    type: str(raw.type),
    id: str(raw.id),
    address: str(raw.address),
    services: numberRecord(raw.services),
    started: num(raw.started),
    workers,
    raw,
  };
}

/** Resolve the TLS material from `security` or `tls`, refusing contradictory options. */
function tlsOptionsFrom(options: ConnectOptions): TlsClientOptions | undefined {
  if (options.tls && options.security) {
    throw new ValidationError('pass either security or tls, not both', { option: 'tls' });
  }
  const tlsOptions = options.tls ?? (options.security ? options.security.clientTlsOptions() : undefined);
  if (tlsOptions && (typeof tlsOptions.cert !== 'string' || typeof tlsOptions.key !== 'string')) {
    // Dask schedulers always require a client certificate (mutual TLS).
    throw new ValidationError('TLS client options need a client certificate and key (cert, key)', { option: 'tls.cert' });
  }
  return tlsOptions;
}

/**
 * A connection to a Dask scheduler. Create with {@link SchedulerClient.connect}; close with
 * `close()` or `await using`.
 *
 * ```ts
 * await using client = await SchedulerClient.connect('tls://10.0.0.2:8786', { security });
 * const { workers } = await client.identity();
 * ```
 */
export class SchedulerClient implements AsyncDisposable {
  /** The scheduler address this client is connected to, as given. */
  readonly address: string;
  private readonly comm: DaskComm;

  private constructor(comm: DaskComm) {
    this.comm = comm;
    this.address = comm.address;
  }

  /**
   * Connect to `tls://host:port` (needs `security` or `tls`) or `tcp://host:port`.
   * Resolves once the scheduler's Dask handshake has arrived. Failures are `DaskCommError`s:
   * `E_CONNECT_REFUSED`, `E_TLS_REFUSED`, `E_UNTRUSTED_SCHEDULER`, `E_PLAINTEXT_PEER`,
   * `E_TLS_PEER`, `E_TIMEOUT`, `E_ABORTED`, `E_PROTOCOL`; bad options are `ValidationError`s.
   */
  static async connect(address: string, options: ConnectOptions = {}): Promise<SchedulerClient> {
    const comm = await DaskComm.connect(address, {
      tls: tlsOptionsFrom(options),
      timeoutMs: options.timeoutMs,
      signal: options.signal,
    });
    return new SchedulerClient(comm);
  }

  /** TLS version and cipher negotiated, or undefined for tcp://. */
  get tlsInfo(): { protocol: string | null; cipher: string } | undefined {
    return this.comm.tlsInfo;
  }

  /** A safe summary: the address, whether closed, and the TLS version and cipher. Never the socket or its key. */
  toJSON(): { address: string; closed: boolean; tls?: { protocol: string | null; cipher: string } } {
    const tls = this.tlsInfo;
    return { address: this.address, closed: this.closed, ...(tls ? { tls } : {}) };
  }

  /**
   * `console.log(client)` shows {@link SchedulerClient.toJSON}: the TLS socket underneath keeps
   * its connect options, the client key among them.
   */
  [inspect.custom](depth: number, options: InspectOptions, render: typeof inspect): string {
    return depth < 0 ? '[SchedulerClient]' : `SchedulerClient ${render(this.toJSON(), { ...options, depth: 2 })}`;
  }

  /** True once the connection is closed (by us, the scheduler, or an error). */
  get closed(): boolean {
    return this.comm.closed;
  }

  /**
   * Call a scheduler handler: sends `{op, reply: true, ...args}` and returns the decoded reply
   * (an unknown op replies `null`). A handler that raised becomes a `DaskCommError` with code
   * `E_REMOTE` whose message carries the Python exception text and whose details hold the
   * traceback text. A timeout or abort closes this client (see {@link DaskComm}).
   */
  async request<T = unknown>(op: string, args: Record<string, unknown> = {}, options: RequestOptions = {}): Promise<T> {
    if (typeof op !== 'string' || op.length === 0) throw new ValidationError('op must be a non-empty string', { option: 'op' });
    const reply = await this.comm.request({ ...args, op, reply: true }, options);
    if (isRemoteError(reply)) {
      const info = remoteErrorInfo(reply);
      throw new DaskCommError('E_REMOTE', `scheduler ${this.address} failed ${op}: ${info.summary}`, {
        details: {
          address: this.address,
          op,
          exceptionText: info.exceptionText,
          tracebackText: info.tracebackText,
          retryable: false,
        },
      });
    }
    return reply as T;
  }

  /** The scheduler's identity, including every registered worker. */
  async identity(options: RequestOptions = {}): Promise<SchedulerIdentity> {
    return toSchedulerIdentity(await this.request('identity', {}, options));
  }

  /** The registered workers (any status), from {@link identity}. */
  async workers(options: RequestOptions = {}): Promise<WorkerIdentity[]> {
    return Object.values((await this.identity(options)).workers);
  }

  /**
   * How many workers are registered (with `running`, only those whose status is `running`):
   * Dask's `ncores` (`ncores_running`) answers one number per worker, where `identity` carries
   * each worker's whole record, its metrics included (736 bytes a worker with Dask 2022.12,
   * against 23): about 0.7 MB at a thousand workers for the scheduler to build and send on every
   * look. A scheduler that answers `ncores` with nil (an unknown op) is counted through `identity`.
   */
  async workerCount(options: RequestOptions & { running?: boolean } = {}): Promise<number> {
    const { running, ...request } = options;
    const reply = await this.request(running ? 'ncores_running' : 'ncores', {}, request);
    if (reply !== null && typeof reply === 'object' && !Array.isArray(reply)) return Object.keys(reply).length;
    return countedWorkers(await this.workers(request), running ?? false).length;
  }

  /**
   * Gracefully retire workers: the scheduler moves their data elsewhere first, then (with
   * `closeWorkers`, the default) closes them. Resolves with `{address: info}` of the workers
   * actually retired; a worker holding the only copy of data that cannot move is left alone
   * and missing from the result. With neither `workers` nor `names`, Dask picks the workers.
   */
  async retireWorkers(options: RetireWorkersOptions): Promise<Record<string, unknown>> {
    if (options.workers !== undefined && options.names !== undefined) {
      throw new ValidationError('retireWorkers takes workers or names, not both', { option: 'workers' });
    }
    const args: Record<string, unknown> = { close_workers: options.closeWorkers ?? true };
    if (options.workers !== undefined) args.workers = options.workers;
    if (options.names !== undefined) args.names = options.names;
    const reply = await this.request('retire_workers', args, {
      timeoutMs: options.timeoutMs ?? DEFAULT_RETIRE_TIMEOUT_MS,
      signal: options.signal,
    });
    return asRecord(reply);
  }

  /** How many workers the scheduler would like (`adaptive_target`). */
  async adaptiveTarget(options: RequestOptions = {}): Promise<number> {
    const reply = await this.request('adaptive_target', {}, options);
    if (typeof reply !== 'number') {
      throw new DaskCommError('E_PROTOCOL', `scheduler ${this.address} answered adaptive_target with ${typeof reply}, not a number`, {
        details: { address: this.address },
      });
    }
    return reply;
  }

  /** Package versions of the scheduler (`versions`): `{host, packages: {python, dask, distributed, ...}}`. */
  async versions(options: RequestOptions = {}): Promise<Record<string, unknown>> {
    return asRecord(await this.request('versions', {}, options));
  }

  /** Every worker's answer to `versions`, by worker address (the scheduler asks them; a worker that fails to answer is left out). */
  async workerVersions(options: RequestOptions = {}): Promise<Record<string, unknown>> {
    return asRecord(await this.request('broadcast', { msg: { op: 'versions' }, on_error: 'ignore' }, options));
  }

  /**
   * Stop the scheduler, which also closes its workers. Dask never replies to `terminate`: this
   * resolves when the scheduler closes the connection, and throws `E_TIMEOUT` if it has not
   * within `timeoutMs` (default 10 000). The client is closed afterwards either way.
   */
  async terminate(options: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TERMINATE_TIMEOUT_MS;
    this.comm.send({ op: 'terminate', reply: false });
    log('%s terminate sent', this.address);
    const closed = await this.comm.waitForClose(timeoutMs);
    if (!closed) {
      this.comm.destroy('terminate timed out');
      throw new DaskCommError(
        'E_TIMEOUT',
        `scheduler ${this.address} did not close the connection within ${timeoutMs} ms after terminate: it may still be running`,
        { details: { address: this.address, timeoutMs } },
      );
    }
    await this.comm.close();
  }

  /** Close the connection (the scheduler keeps running). Idempotent. */
  close(): Promise<void> {
    return this.comm.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Options of {@link waitForScheduler}. */
export interface WaitForSchedulerOptions extends ConnectOptions {
  /** Overall deadline, in ms. */
  timeoutMs: number;
  /** First pause between attempts, in ms; grows ×1.5 with jitter up to `maxIntervalMs`. Default 500. */
  intervalMs?: number;
  /** Longest pause between attempts, in ms. Default 5 000. */
  maxIntervalMs?: number;
  /** Budget of one connect attempt, in ms. Default min(10 000, what is left). */
  attemptTimeoutMs?: number;
  /** Keep retrying even failures that waiting cannot cure (untrusted certificate, refused TLS). */
  retryAll?: boolean;
  /** Called with each failed attempt's error. */
  onAttempt?: (err: unknown) => void;
}

/** Sleep that an abort signal interrupts; leaves no timer behind. */
function sleep(ms: number, signal: AbortSignal | undefined, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortedError(address, 'waiting for', signal));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortedError(address, 'waiting for', signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const MAX_INTERVAL_MS = 5_000;

function nextInterval(current: number, max = MAX_INTERVAL_MS): number {
  // Jitter keeps many waiters (one per cluster) from polling in lockstep.
  return Math.min(max, current * 1.5) * (0.8 + 0.4 * Math.random());
}

/**
 * Retry connect + `identity` until the scheduler answers or `timeoutMs` passes. Proves
 * readiness end to end: TCP, TLS with our client certificate, Dask handshake, a handler reply.
 * Fails fast on errors that waiting will not cure (untrusted scheduler certificate, our
 * certificate refused, TLS/plaintext mismatch) unless `retryAll`. On timeout the `E_TIMEOUT`
 * error names the last failure seen (also its `cause`) and the number of attempts.
 */
export async function waitForScheduler(address: string, options: WaitForSchedulerOptions): Promise<SchedulerIdentity> {
  const { timeoutMs, signal } = options;
  if (typeof timeoutMs !== 'number' || !(timeoutMs > 0)) {
    throw new ValidationError(`timeoutMs must be a positive number, got ${String(timeoutMs)}`, { option: 'timeoutMs' });
  }
  const started = Date.now();
  const deadline = started + timeoutMs;
  let interval = options.intervalMs ?? 500;
  let attempts = 0;
  let last: unknown;
  for (;;) {
    if (signal?.aborted) throw abortedError(address, 'waiting for', signal);
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    attempts++;
    try {
      const attemptMs = Math.min(options.attemptTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, remaining);
      const client = await SchedulerClient.connect(address, { ...options, timeoutMs: attemptMs });
      try {
        const identity = await client.identity({ timeoutMs: Math.max(1, Math.min(attemptMs, deadline - Date.now())), signal });
        log('%s ready after %d attempt(s), %d ms', address, attempts, Date.now() - started);
        return identity;
      } finally {
        await client.close();
      }
    } catch (err) {
      if (DaskCommError.isInstance(err) && err.code === 'E_ABORTED') throw err;
      if (!DaskCommError.isInstance(err)) throw err; // ValidationError and bugs: retrying cannot help
      last = err;
      options.onAttempt?.(err);
      log('%s attempt %d failed: %s', address, attempts, err.code);
      if (!options.retryAll && !isRetryableCommError(err)) throw err;
    }
    const pause = Math.min(interval, deadline - Date.now());
    if (pause <= 0) break;
    await sleep(pause, signal, address);
    interval = nextInterval(interval, options.maxIntervalMs);
  }
  const lastText = last instanceof Error ? last.message : 'no attempt completed';
  throw new DaskCommError(
    'E_TIMEOUT',
    `scheduler ${address} was not ready within ${timeoutMs} ms (${attempts} attempt${attempts === 1 ? '' : 's'}); last failure: ${lastText}`,
    {
      cause: last,
      details: {
        address,
        timeoutMs,
        attempts,
        lastCode: DaskCommError.isInstance(last) ? last.code : undefined,
        retryable: true,
      },
    },
  );
}

/** Options of {@link waitForWorkers}. */
export interface WaitForWorkersOptions {
  /** Overall deadline, in ms. */
  timeoutMs: number;
  /** Pause between polls, in ms. Default 500. */
  intervalMs?: number;
  /** Count only workers whose status is `running`. Default false: any registered worker counts. */
  requireRunning?: boolean;
  signal?: AbortSignal;
  /**
   * Opens a new connection when the scheduler drops this one (`E_CONNECTION_CLOSED`), so the wait
   * goes on within its deadline. A scheduler that is really gone then fails the reconnect
   * (`E_CONNECT_REFUSED`, a timeout). Without it a dropped connection ends the wait. Connections
   * it opens are closed before the wait returns; the one passed in stays the caller's.
   */
  reconnect?: () => Promise<SchedulerClient>;
  /** Called with the number of workers counted, at the first poll and whenever it changes. */
  onCount?: (count: number) => void;
}

/** Reconnections in a row (no successful poll between them) before a dropped connection ends the wait. */
export const MAX_RECONNECTS = 3;

/** The workers that count: all of them, or with `running` only those whose status is `running`. */
function countedWorkers(all: WorkerIdentity[], running: boolean): WorkerIdentity[] {
  return running ? all.filter((w) => w.status === 'running') : all;
}

/** After a wait for workers timed out: how long the look at their statuses (for the message) may take. */
const TIMEOUT_LOOK_MS = 2_000;

/**
 * Poll the worker count (`ncores`, see {@link SchedulerClient.workerCount}) until at least `n`
 * workers are registered (or `running`, with `requireRunning`), then resolve with their records
 * (one `identity`). On timeout, `E_TIMEOUT` says how many were seen and their statuses.
 */
export async function waitForWorkers(
  client: SchedulerClient,
  n: number,
  options: WaitForWorkersOptions,
): Promise<WorkerIdentity[]> {
  const { timeoutMs, signal } = options;
  if (!Number.isInteger(n) || n < 0) throw new ValidationError(`n must be a non-negative integer, got ${String(n)}`, { option: 'n' });
  if (typeof timeoutMs !== 'number' || !(timeoutMs > 0)) {
    throw new ValidationError(`timeoutMs must be a positive number, got ${String(timeoutMs)}`, { option: 'timeoutMs' });
  }
  const interval = options.intervalMs ?? 500;
  const deadline = Date.now() + timeoutMs;
  const running = options.requireRunning ?? false;
  let seen: WorkerIdentity[] | undefined;
  let current = client;
  let drops = 0;
  let reported: number | undefined;
  try {
    for (;;) {
      if (signal?.aborted) throw abortedError(client.address, 'waiting for workers of', signal);
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      let count: number;
      let all: WorkerIdentity[] | undefined;
      try {
        count = await current.workerCount({ timeoutMs: remaining, signal, running });
        // Enough by the count: the whole records, once, are what the caller gets.
        all = count >= n ? await current.workers({ timeoutMs: Math.max(1, deadline - Date.now()), signal }) : undefined;
        drops = 0;
      } catch (err) {
        if (!options.reconnect || !DaskCommError.isInstance(err) || err.code !== 'E_CONNECTION_CLOSED' || signal?.aborted) throw err;
        if (++drops > MAX_RECONNECTS) {
          throw new DaskCommError('E_CONNECTION_CLOSED', `${err.message}, ${MAX_RECONNECTS} times in a row while waiting for workers`, { cause: err, details: { address: client.address, drops: MAX_RECONNECTS + 1 } });
        }
        log('%s dropped the connection while waiting for workers; reconnecting (%d)', client.address, drops);
        const dropped = current;
        current = client; // until the new connection exists: the finally closes only ours
        if (dropped !== client) await dropped.close().catch(() => undefined);
        current = await options.reconnect();
        continue;
      }
      if (all !== undefined) seen = all;
      // A worker may have left between the count and the records: the records decide.
      const records = all !== undefined ? countedWorkers(all, running) : undefined;
      const now = records?.length ?? count;
      if (now !== reported) {
        reported = now;
        options.onCount?.(reported);
      }
      if (records !== undefined && now >= n) return records;
      const pause = Math.min(interval, deadline - Date.now());
      if (pause <= 0) break;
      await sleep(pause, signal, client.address);
    }
    // For the message: the statuses of what is there, in one bounded look.
    seen = await current.workers({ timeoutMs: TIMEOUT_LOOK_MS, signal }).catch(() => seen);
  } finally {
    if (current !== client) await current.close().catch(() => undefined);
  }
  const statuses: Record<string, number> = {};
  for (const w of seen ?? []) statuses[w.status] = (statuses[w.status] ?? 0) + 1;
  const had = seen?.length ?? reported ?? 0;
  const statusText = Object.entries(statuses)
    .map(([s, c]) => `${c} ${s}`)
    .join(', ');
  throw new DaskCommError(
    'E_TIMEOUT',
    `scheduler ${client.address} had ${had} of ${n} ${options.requireRunning ? 'running ' : ''}workers after ${timeoutMs} ms${statusText ? ` (${statusText})` : ''}`,
    { details: { address: client.address, wanted: n, seen: had, statuses, timeoutMs, retryable: true } },
  );
}
