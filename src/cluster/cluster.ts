/**
 * The lifecycle of a Dask cluster, once for every backend: validate → credentials → network →
 * scheduler (workers launched as soon as its address is known) → proven readiness → scale →
 * close. Any failure during start deletes everything created so far before the error is thrown.
 */
import { inspect, type InspectOptions } from 'node:util';
import { createLog } from '../log';
import type { Log } from '../log';
import { loadCrypto } from '../lazy';
import { Security, validateTemporaryOptions } from '../security/security';
import type { TemporaryOptions } from '../security/security';
import { SchedulerClient, waitForScheduler, waitForWorkers } from '../dask';
import type { WorkerIdentity } from '../dask';
import { ClusterStartError, ClusterStateError, DaskCloudError, TeardownError, ValidationError, VersionMismatchError } from '../errors';
import { findPython, type DaskVersions } from '../dask/python';
import { clientVersionSet, compareVersions, describeMismatches, remoteVersionSet, type VersionReport, type VersionSet } from '../dask/versions';
import type { BackendContext, ClusterBackend, Member, MemberSpec } from './backend';
import type { ClusterEvent, ClusterEventListener, ClusterPhase } from './events';
import { registerLive, registerOpen, unregisterLive, unregisterOpen } from './signals';
import { writeClientConfig as writeConfig } from './client-config';
import { freePort } from '../net';
import { checkClusterId, clusterDir, loadClusterState, removeClusterState, saveClusterState, savableOptions, type ClusterRecord } from './state';
import { PreflightReport } from './preflight';
import {
  checkBoolean,
  checkFunction,
  checkInteger,
  checkOptionsObject,
  checkPositive,
  checkSignal,
  readOptions,
  checkTimerMs,
  checkWorkerCount,
  describeValue,
  MAX_WAIT_COUNT,
  MAX_WORKER_NTHREADS,
} from '../config/bounds';
import { parseDaskDuration, parseDaskMemoryLimit } from '../config/dask-format';

/**
 * Options of every cluster kind. Each is also declared in the option table
 * (src/config/option-table.ts, checked against this interface by TypeScript), which makes them
 * strict: an unknown key is a ValidationError with the option probably meant, and the same names
 * work in the config file (`cluster:` section) and as `DASK_CLOUD_<OPTION>` variables.
 */
export interface ClusterOptions {
  /** Workers to start with (default 1; at most the kind's cap: local 1,000, GCP 5,000, EC2 2,000, DigitalOcean 1,000). */
  nWorkers?: number;
  /**
   * `undefined`/`true`: fresh cluster-scoped credentials (`Security.temporary()`);
   * a `Security`: your own material; `false`: plain `tcp://`, no authentication, no encryption.
   */
  security?: Security | boolean;
  /** Options for the generated credentials when `security` is not given. */
  temporarySecurity?: TemporaryOptions;
  /** Cluster name prefix; the id becomes `<name>-<8 hex>` (default `dask`). */
  name?: string;
  /** Threads per worker (`--nthreads`). */
  workerNthreads?: number;
  /**
   * Memory limit per worker (`dask worker --memory-limit`), checked at construction by Dask's own
   * rules: a size such as `'4GiB'` or `'512 MB'`, `'auto'`, a fraction of the machine up to 1, a
   * number of bytes, or 0 for no limit.
   */
  workerMemoryLimit?: string | number;
  /** Extra `dask worker` arguments. */
  workerOptions?: string[];
  /** Extra `dask scheduler` arguments. */
  schedulerOptions?: string[];
  /**
   * The scheduler shuts itself down after this long without tasks: a Dask duration such as
   * `'2 hours'`, `'90m'` or `'3600s'`, checked at construction by Dask's own rules
   * (`dask.utils.parse_timedelta`) and handed to Dask as written.
   */
  idleTimeout?: string;
  /** Environment variables for scheduler and workers. */
  env?: Record<string, string>;
  /** Deadline for the scheduler to answer `identity` over (mutual) TLS (at most 2^31-1 ms, as every `*Ms` option). */
  schedulerTimeoutMs?: number;
  /** Deadline for the initial workers to register (at most 2^31-1 ms). */
  workersTimeoutMs?: number;
  /** Cancels `start()`; everything created so far is deleted. */
  signal?: AbortSignal;
  /** Typed progress events. */
  onEvent?: ClusterEventListener;
  /** Close the cluster on SIGINT/SIGTERM/SIGHUP (default true). */
  closeOnSignals?: boolean;
  /**
   * The local Python you compute from (default: DASK_CLOUD_PYTHON, then `python3` on PATH,
   * `/usr/bin/python3`, `python`). Its Dask and Python pick a VM cluster's image
   * (`daskVersion: 'auto'`), and are compared with the cluster's right after start.
   */
  python?: string;
  /**
   * Fail the start, and delete everything, when the cluster's dask, distributed, Python minor,
   * cloudpickle or msgpack major differ from the local client's (default false: a
   * `DASK_CLOUD_VERSION_MISMATCH` warning).
   */
  strictVersions?: boolean;
  /**
   * Once started, write the cluster's local directory (default true): the client credentials and
   * a record of the cluster (see `stateDir`), so `attach(id)` and the CLI (`dask-cloud info`,
   * `scale`, `logs`, `dashboard`, `env`, `down`) reach it from another process. `close()` removes it.
   */
  saveState?: boolean;
}

/** What a handle built by `attach(id)` starts from: the cluster's record and credentials from its local directory. */
export interface AttachInit {
  record: ClusterRecord;
  security: Security | false;
}

/** Set only while an attaching handle is being constructed (constructors are synchronous). */
let attaching: AttachInit | undefined;

/**
 * Builds a handle for an existing cluster: `make` runs the kind's constructor, which takes the
 * cluster's id and credentials from `init` instead of minting new ones.
 */
export function constructAttached<T extends Cluster>(init: AttachInit, make: () => T): T {
  attaching = init;
  try {
    return make();
  } finally {
    attaching = undefined;
  }
}

export interface AdaptOptions {
  /** Fewest workers (default 0). */
  minimum?: number;
  /** Most workers (required; at most the cluster kind's cap, as for `scale()`). */
  maximum: number;
  /** How often to ask the scheduler (default 1 s; at most 2^31-1 ms). */
  intervalMs?: number;
  /** Consecutive lower targets before scaling down (default 3; a whole number 1-10,000). */
  waitCount?: number;
}

/** Handle of a running adaptive scaling loop. */
export interface Adaptive {
  readonly running: boolean;
  /** Stop adapting (waits for a step in progress). The cluster keeps its current size. */
  stop(): Promise<void>;
}

/**
 * `broken`: the scheduler died after start. Its workers cannot serve clients any more, so
 * `scale()` and `adapt()` refuse and say why; `close()` deletes what is left.
 */
export type ClusterState = 'new' | 'starting' | 'running' | 'broken' | 'closing' | 'closed' | 'failed';

/** Defaults a backend can override (clouds boot slower than local processes). */
export interface ClusterDefaults {
  schedulerTimeoutMs: number;
  workersTimeoutMs: number;
}

function checkStringArray(value: unknown, option: string): void {
  if (value !== undefined && (!Array.isArray(value) || value.some((v) => typeof v !== 'string'))) {
    throw new ValidationError(`${option} must be an array of strings`, { option });
  }
}

function checkText(value: unknown, option: string, example: string): void {
  if (value === undefined) return;
  if (typeof value !== 'string' || value.trim() === '' || value.length > 200 || /[\0-\x1f]/.test(value)) {
    throw new ValidationError(`${option} must be a short non-empty string such as ${JSON.stringify(example)}, got ${describeValue(value)}`, { option });
  }
}

/**
 * Validation shared by every cluster kind; providers add their own before calling `super`.
 * `kind` picks the worker cap (`MAX_WORKERS` in src/config/bounds.ts).
 */
export function validateClusterOptions(options: ClusterOptions, kind = 'cluster'): void {
  checkOptionsObject(options, 'options');
  checkWorkerCount(options.nWorkers, 'nWorkers', kind);
  checkInteger(options.workerNthreads, 'workerNthreads', 1, MAX_WORKER_NTHREADS);
  const mem = options.workerMemoryLimit;
  // 0 is Dask's "no limit"; up to 1, a fraction of the machine's memory; above, bytes.
  if (typeof mem === 'number') checkPositive(mem, 'workerMemoryLimit', Number.MAX_SAFE_INTEGER, 'bytes', { allowZero: true });
  else {
    checkText(mem, 'workerMemoryLimit', '4GiB');
    // Read as the worker will read it, so a typo fails here rather than when Dask starts on a VM.
    if (mem !== undefined && parseDaskMemoryLimit(mem) === undefined) {
      throw new ValidationError(
        `workerMemoryLimit must be what dask worker --memory-limit reads: a size such as '4GiB' or '512 MB', 'auto', a fraction up to 1, or 0 for no limit, got ${describeValue(mem)}`,
        { option: 'workerMemoryLimit' },
      );
    }
  }
  checkText(options.idleTimeout, 'idleTimeout', '2 hours');
  if (options.idleTimeout !== undefined && parseDaskDuration(options.idleTimeout) === undefined) {
    throw new ValidationError(
      `idleTimeout must be a Dask duration: a number and a unit such as '2 hours', '90 minutes', '30m' or '3600s' (s, m, h, d, w, ms and their long names), got ${describeValue(options.idleTimeout)}`,
      { option: 'idleTimeout' },
    );
  }
  checkTimerMs(options.schedulerTimeoutMs, 'schedulerTimeoutMs');
  checkTimerMs(options.workersTimeoutMs, 'workersTimeoutMs');
  checkStringArray(options.workerOptions, 'workerOptions');
  checkStringArray(options.schedulerOptions, 'schedulerOptions');
  checkSignal(options.signal);
  checkFunction(options.onEvent, 'onEvent');
  checkBoolean(options.closeOnSignals, 'closeOnSignals');
  checkBoolean(options.strictVersions, 'strictVersions');
  checkBoolean(options.saveState, 'saveState');
  checkText(options.python, 'python', '/usr/bin/python3');
  const sec = options.security;
  if (sec !== undefined && typeof sec !== 'boolean' && !Security.isSecurity(sec)) {
    throw new ValidationError(
      `security must be true, false or a Security object (from Security.temporary(), fromFiles() or fromPem()), got ${describeValue(sec)}`,
      { option: 'security' },
    );
  }
  if (options.temporarySecurity !== undefined) {
    if (sec !== undefined && sec !== true) {
      throw new ValidationError('temporarySecurity configures generated credentials: it has no effect with security false or a Security object', { option: 'temporarySecurity' });
    }
    validateTemporaryOptions(options.temporarySecurity as TemporaryOptions, 'temporarySecurity');
  }
  if (options.name !== undefined && (typeof options.name !== 'string' || !/^[a-z][a-z0-9-]{0,30}$/.test(options.name))) {
    throw new ValidationError(
      `name must start with a lowercase letter and hold only lowercase letters, digits and '-' (at most 31 characters), got ${describeValue(options.name)}`,
      { option: 'name' },
    );
  }
  if (options.env !== undefined) {
    if (typeof options.env !== 'object' || options.env === null || Array.isArray(options.env)) {
      throw new ValidationError('env must be an object of strings', { option: 'env' });
    }
    for (const [k, v] of Object.entries(options.env)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new ValidationError(`env name ${JSON.stringify(k)} is not a valid variable name`, { option: 'env' });
      if (typeof v !== 'string') throw new ValidationError(`env ${k} must be a string`, { option: 'env' });
      // The value itself is never quoted back: it may be a secret.
      if (v.includes('\0')) throw new ValidationError(`env ${k} contains a NUL character, which no environment can carry`, { option: 'env' });
    }
  }
}

export class Cluster implements AsyncDisposable {
  /** Unique cluster id; every resource carries it. */
  readonly id: string;
  /**
   * The caller's options, in a private field: they can hold `env` values (and, before a provider
   * strips them, cloud credentials), so `util.inspect` and `JSON.stringify` must never see them.
   */
  readonly #options: ClusterOptions;
  protected readonly backend: ClusterBackend;
  protected readonly log: Log;
  readonly #defaults: ClusterDefaults;
  #state: ClusterState = 'new';
  /** Why the scheduler is gone, once the cluster is `broken`. */
  #lostScheduler: string | undefined;
  #security: Security | false | undefined;
  #scheduler: Member | undefined;
  #workerAddress: string | undefined;
  #clientAddress: string | undefined;
  #dashboardLink: string | undefined;
  /** Workers the scheduler listed at the last look (waitForWorkers(), workers()); undefined before any. */
  #registered: number | undefined;
  #workers: Member[] = [];
  #workerSeq = 0;
  #closing: Promise<void> | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #startAbort: AbortController | undefined;
  #starting: Promise<this> | undefined;
  #adaptive: Adaptive | undefined;
  /**
   * Who ended start(), when the caller did: its `signal`, or `close()`. Set only when that abort
   * came first, so the start's error is E_ABORTED whatever the backend happened to throw.
   */
  #callerAbort: 'signal' | 'close' | undefined;
  /** The phase start() was in when the caller aborted it (reported, rather than where it noticed). */
  #abortedDuring: ClusterPhase | undefined;
  /** The phase start() is in, while it runs. */
  #startPhase: (() => ClusterPhase) | undefined;
  /** A rollback or close could not delete everything: the next close() tries again. */
  #leftBehind = false;
  /** The local client's versions (undefined: no local Python with distributed), read once per start. */
  #local: DaskVersions | undefined;
  #versions: VersionReport | undefined;
  /** Set for a handle made by `attach(id)`: the record it was made from. */
  readonly #attached: ClusterRecord | undefined;
  /** The cluster's local directory, once written (or, when attached, read). */
  #stateDir: string | undefined;

  protected constructor(options: ClusterOptions, backend: ClusterBackend, defaults: ClusterDefaults) {
    validateClusterOptions(options, backend.kind);
    this.#options = { ...options };
    this.backend = backend;
    this.#defaults = defaults;
    const attach = attaching;
    attaching = undefined;
    this.#attached = attach?.record;
    this.id = attach?.record.id ?? `${options.name ?? 'dask'}-${loadCrypto().randomBytes(4).toString('hex')}`;
    if (attach) this.#security = attach.security;
    this.log = createLog(`dask-cloud:cluster:${backend.kind}`);
    if (options.security instanceof Security) this.#security = options.security;
    if (options.security === false) this.#security = false;
  }

  /** The options for subclasses: a prototype getter, so no rendering of the cluster reaches them. */
  protected get options(): ClusterOptions {
    return this.#options;
  }

  get state(): ClusterState {
    return this.#state;
  }

  /**
   * The versions of client, scheduler and workers compared right after start, with any
   * mismatches. Undefined before that (and when the comparison could not be made).
   */
  get versions(): VersionReport | undefined {
    return this.#versions;
  }

  /** The address clients dial, e.g. `tls://10.128.0.7:8786`. Only after `start()`. */
  get schedulerAddress(): string {
    if (this.#clientAddress === undefined) throw new ClusterStateError(`cluster ${this.id} has not started`);
    return this.#clientAddress;
  }

  /**
   * Where a browser opens the Dask dashboard: a local cluster's own dashboard. Undefined before
   * start, and for a cluster whose dashboard is not reachable from here.
   */
  get dashboardLink(): string | undefined {
    return this.#dashboardLink;
  }

  /** The scheduler's private address, which workers use. */
  get schedulerPrivateAddress(): string {
    if (this.#workerAddress === undefined) throw new ClusterStateError(`cluster ${this.id} has not started`);
    return this.#workerAddress;
  }

  /** The credentials in use (`false` when security is off). Only after `start()` for generated ones. */
  get security(): Security | false {
    if (this.#security === undefined) throw new ClusterStateError(`cluster ${this.id} has no credentials yet: call start() first`);
    return this.#security;
  }

  /** Members currently launched (scheduler first). */
  get members(): readonly Member[] {
    return this.#scheduler ? [this.#scheduler, ...this.#workers] : [...this.#workers];
  }

  /**
   * The recent output of each member (default: every current member), by member name: a VM's
   * console (GCP serial port, EC2 console output, DigitalOcean through its `consoleOutput` option)
   * or a local process's output, the last 40 lines. Like Dask's `get_logs`, for finding out why a
   * member misbehaves. Never throws for one member: its entry says why nothing could be read.
   */
  async getLogs(members: readonly Member[] = this.members): Promise<Record<string, string>> {
    const entries = await Promise.all(members.map(async (m) => [m.name, await this.backend.diagnostics(m)] as const));
    return Object.fromEntries(entries);
  }

  /**
   * The cluster's local directory (client credentials, `dask.yaml`, the record `attach` reads),
   * once `start()` wrote it or `attach()` read it; `DASK_CONFIG=<stateDir>` makes a Python
   * `Client()` connect. Undefined with `saveState: false`, and after `close()` removed it.
   */
  get stateDir(): string | undefined {
    return this.#stateDir;
  }

  /** Whether this handle was made by `attach()` rather than by `start()`. */
  get attached(): boolean {
    return this.#attached !== undefined;
  }

  /**
   * The options a record keeps so a handle can be rebuilt elsewhere: the cluster's own, minus
   * secrets (env values, bootstrap commands, credentials) and what belongs to this process.
   * Providers add where the cluster lives (project and zone, region), as resolved.
   */
  protected savedOptions(): Record<string, unknown> {
    return savableOptions(this.#options);
  }

  #record(): ClusterRecord {
    const sec = this.security;
    const o = this.#options as ClusterOptions & { bootstrap?: string[] };
    return {
      format: 1,
      id: this.id,
      kind: this.backend.kind,
      startedAt: new Date().toISOString(),
      schedulerAddress: this.schedulerAddress,
      ...(this.#dashboardLink === undefined ? {} : { dashboardLink: this.#dashboardLink }),
      tls:
        sec === false
          ? false
          : {
              requireEncryption: sec.requireEncryption,
              ...(sec.tlsMinVersion === undefined ? {} : { tlsMinVersion: sec.tlsMinVersion }),
              ...(sec.tlsMaxVersion === undefined ? {} : { tlsMaxVersion: sec.tlsMaxVersion }),
              ...(sec.tlsCiphers === undefined ? {} : { tlsCiphers: sec.tlsCiphers }),
              worker: this.backend.savesWorkerCredentials === true,
            },
      options: this.savedOptions(),
      envNames: Object.keys(o.env ?? {}),
      bootstrap: (o.bootstrap?.length ?? 0) > 0,
      backend: this.backend.recordState?.() ?? {},
    };
  }

  /** After a start: the local directory, so the cluster can be reached from another process. A failure is a warning. */
  async #saveState(): Promise<void> {
    if (this.options.saveState === false) return;
    try {
      this.#stateDir = await saveClusterState(this.#record(), this.security);
    } catch (err) {
      this.emit({
        type: 'warning',
        code: 'DASK_CLOUD_STATE',
        clusterId: this.id,
        message: `the cluster runs, but its local directory could not be written (${errorMessage(err)}): attach() and the CLI cannot reach it from another process; writeClientConfig(dir) still works`,
        at: Date.now(),
      });
    }
  }

  /**
   * The body of each kind's static `attach(id, options)`: reads the cluster's local directory
   * (kind, options, credentials), builds a handle with `make` from the saved options under the
   * caller's, and takes the running cluster over.
   */
  protected static async attachKind<T extends Cluster>(kind: string, id: string, options: object, make: (options: Record<string, unknown>) => T): Promise<T> {
    checkClusterId(id);
    const given = readOptions(options, 'attach() options') as Record<string, unknown>;
    if (given.security !== undefined || given.temporarySecurity !== undefined) {
      throw new ValidationError("attach() uses the credentials in the cluster's local directory: security cannot be given", { option: given.security !== undefined ? 'security' : 'temporarySecurity' });
    }
    const { record, security } = await loadClusterState(id, kind);
    const cluster = constructAttached({ record, security }, () => make({ ...record.options, ...given }));
    return cluster.#attachExisting({ signal: given.signal as AbortSignal | undefined });
  }

  /**
   * Take over the running cluster this handle was built for (each kind's static `attach(id)`):
   * the backend finds its members (cloud labels, or the local cluster's owner), and the scheduler
   * must answer with the saved credentials. Makes read calls only.
   */
  async #attachExisting(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<this> {
    const record = this.#attached;
    if (record === undefined) throw new ClusterStateError(`cluster ${this.id} was not made by attach()`);
    if (this.#state !== 'new') throw new ClusterStateError(`cluster ${this.id} is ${this.#state}; a handle attaches once`);
    const adopt = this.backend.adopt;
    if (!adopt) throw new ValidationError(`${this.backend.kind} clusters cannot be attached to`, { option: 'id' });
    this.#state = 'starting';
    const signal = options.signal ?? new AbortController().signal;
    try {
      const found = await adopt.call(this.backend, this.#context(signal), record);
      this.#scheduler = found.scheduler;
      this.#workers = [...found.workers];
      this.#clientAddress = found.clientAddress;
      this.#workerAddress = found.workerAddress;
      this.#dashboardLink = found.dashboardLink ?? record.dashboardLink;
      // New workers continue the numbering, so names stay unique within the cluster.
      const seqs = found.workers.map((m) => Number(/-worker-(\d+)$/.exec(m.name)?.[1] ?? -1));
      this.#workerSeq = Math.max(-1, ...seqs) + 1;
      try {
        await waitForScheduler(this.#clientAddress, { security: this.#security, timeoutMs: options.timeoutMs ?? ATTACH_TIMEOUT_MS, signal });
      } catch (err) {
        const cleanup = this.backend.cleanupCommand?.(this.id) ?? `dask-cloud down ${this.id}`;
        throw new ClusterStateError(
          `cluster ${this.id} exists, but its scheduler at ${this.#clientAddress} does not answer (${errorMessage(err)}): it may have shut down (idleTimeout) or be unreachable from here. Delete what is left with: ${cleanup}`,
          { cause: err, details: { clusterId: this.id, address: this.#clientAddress } },
        );
      }
    } catch (err) {
      this.#state = 'failed';
      this.#scheduler = undefined;
      this.#workers = [];
      throw err;
    }
    this.#stateDir = clusterDir(this.id);
    this.#state = 'running';
    // An attached handle deletes the cluster on a signal only when asked to (closeOnSignals: true),
    // and never because the script that attached ends without close(): the cluster outlives it.
    if (this.options.closeOnSignals === true) registerLive(this);
    await this.workers().catch(() => undefined);
    return this;
  }

  /**
   * How long the cluster is meant to live, in hours, when the backend knows (VM clusters:
   * `expiresAfterHours`). Generated certificates are valid exactly that long.
   */
  protected lifetimeHours(): number | undefined {
    return undefined;
  }

  /** The credentials for start(): generated ones live as long as the cluster; a mismatch is warned about. */
  async #credentials(): Promise<void> {
    const hours = this.lifetimeHours();
    const temp = this.options.temporarySecurity;
    if (this.#security === undefined) {
      // An hour beyond the cluster's expiry, so the expiry sweep (not a TLS failure) ends it.
      const validityDays = hours === undefined ? undefined : (hours + 1) / 24;
      this.#security = await Security.temporary({ ...(validityDays === undefined ? {} : { validityDays }), ...temp });
    }
    if (hours === undefined || this.#security === false) return;
    const clusterEnds = Date.now() + hours * 3_600_000;
    const certsEnd = this.#security.expiresAt.getTime();
    if (certsEnd < clusterEnds) {
      this.emit({
        type: 'warning',
        code: 'DASK_CLOUD_CERT_LIFETIME',
        clusterId: this.id,
        message:
          `the cluster's certificates expire at ${new Date(certsEnd).toISOString()}, before the cluster does (expiresAfterHours: ${hours}, at ${new Date(clusterEnds).toISOString()}): ` +
          'from then on no client or worker can connect. Shorten expiresAfterHours or issue longer-lived certificates',
        at: Date.now(),
      });
    } else if (temp?.validityDays !== undefined && certsEnd > clusterEnds + 2 * 3_600_000) {
      this.emit({
        type: 'warning',
        code: 'DASK_CLOUD_CERT_LIFETIME',
        clusterId: this.id,
        message: `temporarySecurity.validityDays (${temp.validityDays}) outlives the cluster (expiresAfterHours: ${hours}): the certificates stay valid after its resources count as expired`,
        at: Date.now(),
      });
    }
  }

  #schedulerSpec(): MemberSpec {
    return {
      role: 'scheduler',
      name: `${this.id}-scheduler`,
      process: {
        idleTimeout: this.options.idleTimeout,
        extraArgs: this.options.schedulerOptions,
        env: this.options.env,
      },
    };
  }

  /**
   * Read-only checks of the account against this cluster's options, exactly those `start()` runs
   * first: user-data renders and fits, credentials (and where they came from), location, image,
   * network and instance types, NAT for private mode, quota headroom, permissions. Creates
   * nothing and never throws for a failed check: the report holds each result with its fix.
   */
  async preflight(options: { signal?: AbortSignal } = {}): Promise<PreflightReport> {
    checkSignal(readOptions(options, 'preflight() options').signal);
    if (this.#state !== 'new') throw new ClusterStateError(`cluster ${this.id} is ${this.#state}; preflight() runs before start()`);
    const report = new PreflightReport(this.backend.kind);
    await this.#credentials();
    const ctx = this.#context(options.signal ?? new AbortController().signal);
    const { validate } = this.backend;
    if (validate) {
      await report.check('user-data', () => {
        validate.call(this.backend, ctx, { scheduler: this.#schedulerSpec(), worker: this.#workerSpecs(1, false)[0]! });
        return "both roles' user-data render within the cloud's limit";
      });
    }
    await this.backend.preflight?.(ctx, report);
    report.skipRest(report.ok ? `not needed on ${this.backend.kind}` : 'not checked: an earlier check failed');
    return report;
  }

  protected emit(event: ClusterEvent): void {
    this.log('%s %o', event.type, event);
    // Warnings also go where a script without a listener sees them (stderr, by Node's default).
    if (event.type === 'warning') process.emitWarning(`${event.clusterId}: ${event.message}`, { code: event.code ?? 'DASK_CLOUD_WARNING' });
    try {
      this.options.onEvent?.(event);
    } catch (err) {
      this.log('onEvent listener threw: %O', err);
    }
  }

  #context(signal: AbortSignal): BackendContext {
    return {
      clusterId: this.id,
      security: this.#security ?? false,
      signal,
      log: this.log,
      emit: (e) => this.emit(e),
      memberFailed: (member, error) => {
        this.log('member %s (%s) failed: %s', member.id, member.name, error.message);
        if (this.#startAbort) {
          this.#startAbort.abort(new MemberFailure(member, error));
        } else if (this.#state === 'running') {
          // After start nobody is waiting on it: say so rather than fail silently, stop counting
          // it as a worker (so scale() replaces it), and delete what is left of it.
          this.emit({ type: 'member-failed', clusterId: this.id, role: member.role, memberId: member.id, name: member.name, message: error.message, at: Date.now() });
          if (member.role === 'scheduler') {
            // Without its scheduler the cluster serves nobody: stop adapting and refuse to
            // scale, rather than launch workers that have nothing to join. close() still works.
            this.#state = 'broken';
            this.#lostScheduler = error.message;
            void this.#adaptive?.stop();
          } else if (this.#workers.some((m) => m.id === member.id)) {
            void this.#serialize(async () => {
              this.#workers = this.#workers.filter((m) => m.id !== member.id);
              await this.backend.stopMembers(this.#context(new AbortController().signal), [member]);
            }).catch((err) => this.log('deleting failed member %s: %s', member.name, errorMessage(err)));
          }
        }
      },
    };
  }

  async #phase<T>(phase: ClusterPhase, fn: () => Promise<T>): Promise<T> {
    const start = Date.now();
    this.emit({ type: 'phase-start', clusterId: this.id, phase, at: start });
    const result = await fn();
    const end = Date.now();
    this.emit({ type: 'phase-end', clusterId: this.id, phase, at: end, durationMs: end - start });
    return result;
  }

  #workerSpecs(count: number, consume = true): MemberSpec[] {
    const specs: MemberSpec[] = [];
    for (let i = 0; i < count; i++) {
      const name = `${this.id}-worker-${consume ? this.#workerSeq++ : this.#workerSeq + i}`;
      specs.push({
        role: 'worker',
        name,
        process: {
          schedulerAddress: this.#workerAddress,
          name,
          nthreads: this.options.workerNthreads,
          memoryLimit: this.options.workerMemoryLimit,
          extraArgs: this.options.workerOptions,
          env: this.options.env,
        },
      });
    }
    return specs;
  }

  /** Provision and wait until the scheduler answers over (mutual) TLS and the workers registered. */
  async start(): Promise<this> {
    if (this.#state !== 'new') throw new ClusterStateError(`cluster ${this.id} is ${this.#state}; start() runs once`);
    this.#state = 'starting';
    this.#starting = this.#start();
    return this.#starting;
  }

  async #start(): Promise<this> {
    const abort = new AbortController();
    this.#startAbort = abort;
    const userSignal = this.options.signal;
    let phase: ClusterPhase = 'credentials';
    this.#startPhase = () => phase;
    const onUserAbort = () => {
      if (!abort.signal.aborted) {
        this.#callerAbort = 'signal';
        this.#abortedDuring = phase;
      }
      abort.abort(userSignal?.reason ?? new Error('aborted'));
    };
    if (userSignal?.aborted) onUserAbort();
    userSignal?.addEventListener('abort', onUserAbort, { once: true });
    if (this.options.closeOnSignals !== false) registerLive(this);
    registerOpen(this);
    let workersLaunched: Promise<Member[]> | undefined;
    /** Until the network phase nothing exists in the cloud: a failure is thrown as it is, with no rollback. */
    let creating = false;
    // The local client's versions (one interpreter probe, a child process that imports
    // distributed): they pick a VM cluster's image and are compared with the cluster after start.
    // The options were checked in the constructor, and the probe only reads, so it runs while
    // the credentials are made rather than after: most of each is waiting on the other core.
    const probe = findPython(this.options.python).then(
      (p) => p.versions,
      () => undefined,
    );
    try {
      await this.#phase('credentials', () => this.#credentials());
      // Made once the credentials exist: every backend call gets them through it.
      const ctx = this.#context(abort.signal);
      const schedulerSpec = this.#schedulerSpec();
      phase = 'validate';
      const { validate, preflight } = this.backend;
      if (validate) await this.#phase('validate', async () => validate.call(this.backend, ctx, { scheduler: schedulerSpec, worker: this.#workerSpecs(1, false)[0]! }));
      throwIfAborted(abort.signal);
      const resolved = (async () => {
        this.#local = await probe;
        if (this.options.strictVersions && this.#local === undefined) {
          throw new ValidationError(
            `strictVersions compares the cluster with the local client, but no Python that imports distributed was found${this.options.python ? ` at ${this.options.python}` : ''}: install Dask locally, set the python option or DASK_CLOUD_PYTHON, or drop strictVersions`,
            { option: 'strictVersions' },
          );
        }
        await this.backend.resolve?.(ctx, this.#local);
      })();
      resolved.catch(() => undefined); // awaited below; this only keeps a rejection from counting as unhandled meanwhile
      // The probe (a Python importing distributed) takes longer than the credentials: preflight's
      // reads go out meanwhile, since only the creates need the image it picks. strictVersions
      // can refuse the start for want of a local Dask, and that refusal comes before any request.
      if (this.options.strictVersions) await resolved;
      throwIfAborted(abort.signal);
      phase = 'preflight';
      try {
        if (preflight) {
          await this.#phase('preflight', async () => {
            const report = new PreflightReport(this.backend.kind);
            await preflight.call(this.backend, ctx, report);
            report.throwIfFailed();
          });
        }
      } finally {
        // Nothing of the start runs on after it failed (the image event included).
        await resolved.catch(() => undefined);
      }
      await resolved;
      throwIfAborted(abort.signal);
      creating = true;
      phase = 'network';
      await this.#phase('network', () => this.backend.prepare(ctx));
      phase = 'scheduler';
      // Backend calls are awaited (never raced): they honour ctx.signal, so nothing they create
      // can appear after the rollback below has run.
      const launch = await this.#phase('scheduler', () => this.backend.launchScheduler(ctx, schedulerSpec));
      this.#scheduler = launch.member;
      this.#workerAddress = launch.workerAddress;
      this.#dashboardLink = launch.dashboardLink;
      if (this.#security !== false && this.backend.dashboardTarget) {
        // The dashboard is reached through a local tunnel (openDashboard): its port is fixed now,
        // so the link in the written dask.yaml (Python's client.dashboard_link) stays right.
        this.#dashboardLink = `http://127.0.0.1:${await freePort()}${DASHBOARD_PATH}`;
      }
      this.emit({ type: 'member-launched', clusterId: this.id, role: 'scheduler', memberId: launch.member.id, name: launch.member.name, at: Date.now() });

      // Workers boot in parallel with the scheduler: they only need its address, not its readiness.
      phase = 'workers';
      const nWorkers = this.options.nWorkers ?? 1;
      const launched = this.#launchWorkers(ctx, nWorkers);
      workersLaunched = launched;
      // A refused worker create fails the start at once, with the cloud's message, rather than
      // after the scheduler's readiness timeout.
      launched.catch((err: unknown) => {
        if (!abort.signal.aborted) abort.abort(new LaunchFailure(err));
      });

      phase = 'scheduler';
      await this.#phase('ready', async () => {
        this.#clientAddress = await launch.clientAddress;
        await waitForScheduler(this.#clientAddress, {
          security: this.#security,
          timeoutMs: this.options.schedulerTimeoutMs ?? this.#defaults.schedulerTimeoutMs,
          signal: abort.signal,
          intervalMs: this.backend.readinessPollMs,
          // The pause does not grow: every pause is time the user waits once the scheduler is
          // up, and the workers are counted only after it answers. A local scheduler is up in
          // about a second, a VM's after a boot nothing predicts; a look before then is one
          // refused connection.
          maxIntervalMs: this.backend.readinessPollMs ?? 500,
        });
        this.emit({ type: 'scheduler-ready', clusterId: this.id, address: this.#clientAddress, at: Date.now() });
        phase = 'workers';
        await launched;
        if (nWorkers > 0) {
          await this.waitForWorkers(nWorkers, {
            timeoutMs: this.options.workersTimeoutMs ?? this.#defaults.workersTimeoutMs,
            signal: abort.signal,
          });
        }
      });
      phase = 'versions';
      await this.#phase('versions', () => this.#checkVersions(abort.signal));
      // An abort that landed while the last wait was already ending still rolls back.
      if (this.#callerAbort) throwIfAborted(abort.signal);
      await this.#saveState();
      this.#state = 'running';
      return this;
    } catch (err) {
      if (!creating) {
        // Bad input, missing credentials or a failed preflight check: nothing exists to roll
        // back, so no cloud call is made and the typed error is the caller's.
        this.#state = 'failed';
        unregisterLive(this);
        unregisterOpen(this);
        if (this.#callerAbort) throw this.#abortError(phase, abort.signal.reason, 'nothing had been created yet');
        const reason = abort.signal.reason;
        if (abort.signal.aborted && !DaskCloudError.isInstance(err)) throw reason instanceof Error ? reason : new DaskCloudErrorAborted('aborted');
        throw err;
      }
      const reason = abort.signal.reason;
      const failure = reason instanceof MemberFailure ? reason : undefined;
      const launchFailure = reason instanceof LaunchFailure ? reason : undefined;
      // The caller's abort is the cause, whatever the backend threw on seeing it.
      const callerAbort = this.#callerAbort !== undefined;
      const cause = callerAbort ? abort.signal.reason : (failure?.error ?? launchFailure?.error ?? err);
      if (launchFailure) phase = 'workers';
      // No console output after an abort: nothing failed, and the rollback should not wait for it.
      const failed = callerAbort ? undefined : (failure?.member ?? (phase === 'scheduler' ? this.#scheduler : undefined));
      if (failure) phase = failure.member.role === 'scheduler' ? 'scheduler' : 'workers';
      let consoleTail = failed ? await this.backend.diagnostics(failed) : '';
      // The workers' wait ran out: show what the workers that never registered printed (the
      // first few; their VMs are still up, so their consoles can be read before the rollback).
      let silent: Member[] = [];
      if (!failed && !callerAbort && !launchFailure && phase === 'workers' && DaskCloudError.isInstance(cause) && cause.code === 'E_TIMEOUT' && this.#workers.length > 0) {
        silent = await this.#silentWorkers();
        const shown = silent.slice(0, SILENT_WORKERS_SHOWN);
        const tails = await Promise.all(shown.map(async (m) => `--- last output of ${m.name} (not registered) ---\n${await this.backend.diagnostics(m)}`));
        consoleTail = tails.join('\n') + (silent.length > shown.length ? `\n(${silent.length - shown.length} more workers did not register; cluster.getLogs() shows any member)` : '');
      }
      this.emit({ type: 'rollback', clusterId: this.id, reason: errorMessage(cause), at: Date.now() });
      abort.abort(cause);
      // A worker create still in flight must finish (it honours the abort) before the rollback,
      // or what it creates after the sweep would be left behind.
      await workersLaunched?.catch(() => undefined);
      let leftovers: string[] = [];
      let rollbackError: unknown;
      try {
        await this.#teardown('failed');
      } catch (e) {
        // The start's own cause stays the error; what the rollback could not delete is added.
        rollbackError = e;
        this.#leftBehind = true;
        leftovers = TeardownError.isInstance(e) ? e.leftovers : [`resources of cluster ${this.id} (${errorMessage(e)})`];
        this.#state = 'failed';
        unregisterLive(this);
        unregisterOpen(this);
      }
      const where = failed ? ` (${failed.role} ${failed.name})` : '';
      const cleanup = this.backend.cleanupCommand?.(this.id) ?? `dask-cloud cleanup --provider ${this.backend.kind} --cluster ${this.id}`;
      const message = `starting cluster ${this.id} failed during ${phase}${where}: ${errorMessage(cause)}` +
        (consoleTail ? (failed ? `\n--- last output of ${failed.name} ---\n${consoleTail}` : `\n${consoleTail}`) : '') +
        (rollbackError === undefined
          ? '\nEverything created for this cluster has been deleted.'
          : `\nThe rollback could not delete everything (${errorMessage(rollbackError)}). Left behind: ${leftovers.join('; ')}.\nDelete it with: ${cleanup}`);
      if (callerAbort) {
        throw this.#abortError(
          phase,
          cause,
          rollbackError === undefined
            ? 'everything created for this cluster has been deleted'
            : `the rollback could not delete everything (${errorMessage(rollbackError)}). Left behind: ${leftovers.join('; ')}.\nDelete it with: ${cleanup}`,
          rollbackError === undefined ? { rollback: 'complete' } : { rollback: 'incomplete', leftovers, cleanupCommand: cleanup },
        );
      }
      const code = DaskCloudError.isInstance(cause) && cause.code === 'E_ABORTED' ? 'E_ABORTED' : 'E_START_FAILED';
      throw new ClusterStartError(code, message, {
        cause,
        details: { phase, member: failed?.name, consoleTail, ...(silent.length > 0 ? { unregistered: silent.map((m) => m.name) } : {}), ...(rollbackError === undefined ? {} : { leftovers, cleanupCommand: cleanup }) },
      });
    } finally {
      userSignal?.removeEventListener('abort', onUserAbort);
      this.#startAbort = undefined;
    }
  }

  /**
   * The error of a start the caller ended (its `signal`, or `close()`): always E_ABORTED,
   * whichever phase the abort hit and whatever the backend threw, with what the rollback did.
   */
  #abortError(phase: ClusterPhase, reason: unknown, outcome: string, rollback: Record<string, unknown> = { rollback: 'not-needed' }): ClusterStartError {
    const by = this.#callerAbort === 'close' ? 'close()' : 'its signal';
    phase = this.#abortedDuring ?? phase;
    return new ClusterStartError('E_ABORTED', `starting cluster ${this.id} was aborted by ${by} during ${phase}: ${errorMessage(reason)}; ${outcome}`, {
      cause: reason,
      details: { phase, aborted: this.#callerAbort, ...rollback },
    });
  }

  async #launchWorkers(ctx: BackendContext, count: number): Promise<Member[]> {
    if (count === 0) return [];
    const launched = await this.backend.launchWorkers(ctx, this.#workerSpecs(count));
    this.#workers.push(...launched);
    for (const m of launched) {
      this.emit({ type: 'member-launched', clusterId: this.id, role: 'worker', memberId: m.id, name: m.name, at: Date.now() });
    }
    return launched;
  }

  /** Open a connection to the scheduler with the client credentials. Close it when done. */
  async connect(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<SchedulerClient> {
    checkCallOptions(options, 'connect');
    return SchedulerClient.connect(this.schedulerAddress, { security: this.security, ...options });
  }

  /**
   * Asks the scheduler and its workers for their versions and compares them with the local
   * client's. A mismatch is a warning, or with `strictVersions` the start's failure. A cluster
   * that cannot be asked is a warning too (strict: a failure): the comparison is advice, the
   * cluster itself is up.
   */
  async #checkVersions(signal: AbortSignal): Promise<void> {
    let scheduler: VersionSet;
    let workers: Record<string, VersionSet>;
    const read = async (): Promise<[VersionSet, Record<string, VersionSet>]> => {
      const client = await this.connect({ signal, timeoutMs: VERSIONS_TIMEOUT_MS });
      try {
        const own = remoteVersionSet(await client.versions({ signal, timeoutMs: VERSIONS_TIMEOUT_MS }));
        const raw = await client.workerVersions({ signal, timeoutMs: VERSIONS_TIMEOUT_MS });
        return [own, Object.fromEntries(Object.entries(raw).map(([address, v]) => [address, remoteVersionSet(v)]))];
      } finally {
        await client.close();
      }
    };
    try {
      // A dropped connection is not a dead scheduler: one more connection tells which it is.
      [scheduler, workers] = await read().catch((err: unknown) => {
        if (signal.aborted || !DaskCloudError.isInstance(err) || err.code !== 'E_CONNECTION_CLOSED') throw err;
        this.log('the scheduler dropped the connection while its versions were read; reading again');
        return read();
      });
    } catch (err) {
      if (signal.aborted) throw err;
      if (this.options.strictVersions) throw new VersionMismatchError(`strictVersions: the cluster's versions could not be read: ${errorMessage(err)}`, { cause: err });
      this.emit({ type: 'warning', code: 'DASK_CLOUD_VERSION_MISMATCH', clusterId: this.id, message: `the cluster's versions could not be compared with the client's: ${errorMessage(err)}`, at: Date.now() });
      return;
    }
    const report = compareVersions(this.#local === undefined ? undefined : clientVersionSet(this.#local), scheduler, workers);
    this.#versions = report;
    this.emit({ type: 'versions', clusterId: this.id, report, at: Date.now() });
    if (report.mismatches.length === 0) return;
    const text = `client and cluster run different versions: ${describeMismatches(report)}`;
    const fix = this.#local === undefined
      ? 'the cluster mixes versions: give every member the same image'
      : `install the cluster's versions in the client (${this.options.python ?? 'the Python found'}), or start the cluster with an image of the client's (dockerImage, or daskVersion/pythonVersion)`;
    if (this.options.strictVersions) {
      throw new VersionMismatchError(`${text}. Fix: ${fix}`, { details: { mismatches: report.mismatches } });
    }
    this.emit({ type: 'warning', code: 'DASK_CLOUD_VERSION_MISMATCH', clusterId: this.id, message: `${text}. Computations can fail; ${fix}`, at: Date.now() });
  }

  /**
   * The scheduler-side addresses of each of `members`: matched by name (local processes) or by
   * host (VMs, whose shared user-data names no worker).
   */
  #matchWorkers(members: readonly Member[], known: readonly WorkerIdentity[]): Map<Member, string[]> {
    const memberNames = new Set(this.#workers.map((m) => m.name));
    const byMember = new Map<Member, string[]>();
    for (const m of members) {
      const byName = known.filter((w) => String(w.name) === m.name);
      const byHost = known.filter((w) => !memberNames.has(String(w.name)) && m.privateHost !== undefined && w.host === m.privateHost);
      byMember.set(m, (byName.length > 0 ? byName : byHost).map((w) => w.address));
    }
    return byMember;
  }

  /**
   * After the workers' wait of a start ran out: the worker members the scheduler does not know,
   * so that the error can show why (their console). Bounded: one short connection; when the
   * scheduler cannot be asked, every worker counts as silent.
   */
  async #silentWorkers(): Promise<Member[]> {
    try {
      const client = await this.connect({ timeoutMs: SILENT_WORKERS_TIMEOUT_MS });
      try {
        const matched = this.#matchWorkers(this.#workers, await client.workers({ timeoutMs: SILENT_WORKERS_TIMEOUT_MS }));
        return this.#workers.filter((m) => (matched.get(m) ?? []).length === 0);
      } finally {
        await client.close();
      }
    } catch {
      return [...this.#workers];
    }
  }

  /** Wait until at least `n` workers are registered with the scheduler. */
  async waitForWorkers(n: number, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<WorkerIdentity[]> {
    if (n === undefined) throw new ValidationError('waitForWorkers(n) needs the number of workers to wait for', { option: 'n' });
    checkWorkerCount(n, 'n', this.backend.kind);
    checkCallOptions(options, 'waitForWorkers');
    const client = await this.connect({ signal: options.signal });
    try {
      const workers = await waitForWorkers(client, n, {
        timeoutMs: options.timeoutMs ?? this.#defaults.workersTimeoutMs,
        signal: options.signal,
        intervalMs: this.backend.readinessPollMs,
        // A dropped connection is not a dead scheduler: a new one tells which it is.
        reconnect: () => this.connect({ signal: options.signal }),
        onCount: (count) => this.emit({ type: 'workers-registered', clusterId: this.id, count, wanted: n, at: Date.now() }),
      });
      this.#registered = workers.length;
      this.emit({ type: 'workers-ready', clusterId: this.id, count: workers.length, at: Date.now() });
      return workers;
    } finally {
      await client.close();
    }
  }

  /** Workers the scheduler knows about right now. */
  async workers(): Promise<WorkerIdentity[]> {
    const client = await this.connect();
    try {
      const workers = await client.workers();
      this.#registered = workers.length;
      return workers;
    } finally {
      await client.close();
    }
  }

  /**
   * Scale to `n` workers. Up: launches new members (call `waitForWorkers` to wait for them).
   * Down: the scheduler retires the newest workers first (moving their data), then their
   * members are deleted. `n` is a whole number up to the cluster kind's cap (`MAX_WORKERS`:
   * local 1,000, GCP 5,000, EC2 2,000, DigitalOcean 1,000); anything else is a ValidationError.
   */
  async scale(n: number): Promise<void> {
    if (n === undefined) throw new ValidationError('scale(n) needs the number of workers to scale to', { option: 'n' });
    checkWorkerCount(n, 'n', this.backend.kind);
    // An explicit size ends adaptive scaling, as in Dask.
    await this.#adaptive?.stop();
    return this.#scale(n);
  }

  /**
   * Adaptive scaling: every `intervalMs` ask the scheduler how many workers its current load
   * wants (Dask's `adaptive_target`), clamp it to `[minimum, maximum]` and scale. Up at once;
   * down only after `waitCount` consecutive lower targets, so a pause between two bursts does not
   * tear workers down. `scale()` or `close()` stops it; so does `stop()` on the returned handle.
   */
  adapt(options: AdaptOptions): Adaptive {
    options = readOptions(options, 'adapt() options');
    for (const key of Object.keys(options)) {
      if (!ADAPT_KEYS.has(key)) throw new ValidationError(`adapt(): unknown option ${JSON.stringify(key)} (expected ${[...ADAPT_KEYS].join(', ')})`, { option: key });
    }
    if (options.maximum === undefined) {
      throw new ValidationError('adapt() needs a maximum: the most workers adaptive scaling may start (e.g. adapt({ maximum: 10 }))', { option: 'maximum' });
    }
    const kind = this.backend.kind;
    const minimum = options.minimum ?? 0;
    checkWorkerCount(minimum, 'minimum', kind);
    checkWorkerCount(options.maximum, 'maximum', kind);
    if (options.maximum < minimum) throw new ValidationError('maximum must be at least minimum', { option: 'maximum' });
    checkTimerMs(options.intervalMs, 'intervalMs');
    checkInteger(options.waitCount, 'waitCount', 1, MAX_WAIT_COUNT);
    this.#requireRunning('adapt');
    void this.#adaptive?.stop();
    // Read once: the caller's object cannot change the loop later.
    const maximum = options.maximum;
    const intervalMs = options.intervalMs ?? 1_000;
    const waitCount = options.waitCount ?? 3;
    let lower = 0;
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    let tick: Promise<void> = Promise.resolve();
    const step = async () => {
      try {
        const client = await this.connect({ timeoutMs: 10_000 });
        let target: number;
        try {
          target = await client.adaptiveTarget();
        } finally {
          await client.close();
        }
        const wanted = Math.min(maximum, Math.max(minimum, target));
        const current = this.#workers.length;
        if (wanted > current) {
          lower = 0;
          await this.#scale(wanted);
        } else if (wanted < current) {
          if (++lower >= waitCount) {
            lower = 0;
            await this.#scale(wanted);
          }
        } else {
          lower = 0;
        }
      } catch (err) {
        if (!stopped) this.emit({ type: 'warning', code: 'DASK_CLOUD_ADAPT', clusterId: this.id, message: `adaptive scaling: ${errorMessage(err)}`, at: Date.now() });
      }
    };
    const schedule = () => {
      if (stopped) return;
      timer = setTimeout(() => {
        tick = step().finally(schedule);
      }, intervalMs);
      timer.unref();
    };
    const handle: Adaptive = {
      get running() {
        return !stopped;
      },
      stop: async () => {
        stopped = true;
        if (timer) clearTimeout(timer);
        await tick;
        if (this.#adaptive === handle) this.#adaptive = undefined;
      },
    };
    this.#adaptive = handle;
    schedule();
    return handle;
  }

  #requireRunning(what: string): void {
    if (this.#state === 'running') return;
    const why =
      this.#state === 'broken'
        ? `its scheduler is gone (${this.#lostScheduler ?? 'no reason given'}); close() it and start a new cluster`
        : `it is ${this.#state}`;
    throw new ClusterStateError(`cannot ${what} cluster ${this.id}: ${why}`);
  }

  async #scale(n: number): Promise<void> {
    return this.#serialize(async () => {
      this.#requireRunning('scale');
      const current = this.#workers.length;
      const ctx = this.#context(new AbortController().signal);
      if (n > current) {
        this.#checkAttachedScaleUp();
        await this.#phase('scale', () => this.#launchWorkers(ctx, n - current));
        return;
      }
      if (n === current) return;
      const victims = this.#workers.slice(n);
      await this.#phase('scale', async () => {
        const names = victims.map((m) => m.name);
        let retiredNames: string[] = [];
        try {
          const client = await this.connect();
          try {
            // Match scheduler-side workers to members by name (local processes) or by host (VMs,
            // whose shared user-data names no worker), then retire them by address.
            const byMember = this.#matchWorkers(victims, await client.workers());
            const addresses = [...byMember.values()].flat();
            const retired = addresses.length > 0 ? await client.retireWorkers({ workers: addresses, closeWorkers: true }) : {};
            const retiredAddresses = new Set(Object.keys(retired));
            retiredNames = victims.filter((m) => (byMember.get(m) ?? []).some((a) => retiredAddresses.has(a))).map((m) => m.name);
          } finally {
            await client.close();
          }
        } catch (err) {
          this.emit({ type: 'warning', code: 'DASK_CLOUD_RETIRE', clusterId: this.id, message: `retire_workers failed, deleting workers anyway: ${errorMessage(err)}`, at: Date.now() });
        }
        const notRetired = names.filter((x) => !retiredNames.includes(x));
        this.emit({ type: 'workers-retired', clusterId: this.id, retired: retiredNames, notRetired, at: Date.now() });
        await this.backend.stopMembers(ctx, victims);
        this.#workers = this.#workers.filter((m) => !victims.includes(m));
        for (const m of victims) {
          this.emit({ type: 'member-stopped', clusterId: this.id, role: 'worker', memberId: m.id, name: m.name, at: Date.now() });
        }
      });
    });
  }

  /**
   * Opens the Dask dashboard for a browser on this machine. A VM cluster's dashboard is reached
   * only through its scheduler's terminator, with the cluster's client certificate: this listens
   * on 127.0.0.1 (by default on the port of {@link Cluster.dashboardLink}, which the written
   * `dask.yaml` names) and carries every connection, websockets included, over mutual TLS. A
   * local cluster's dashboard needs no tunnel: its own link is returned. `close()` ends the tunnel.
   */
  async openDashboard(options: { localPort?: number; signal?: AbortSignal } = {}): Promise<{ url: string; tunnel: boolean; close(): Promise<void> }> {
    const o = readOptions(options, 'openDashboard() options');
    if (o.localPort !== undefined && (!Number.isInteger(o.localPort) || o.localPort < 0 || o.localPort > 65535)) {
      throw new ValidationError(`localPort must be a port number 0-65535 (0: any free port), got ${describeValue(o.localPort)}`, { option: 'localPort' });
    }
    checkSignal(o.signal);
    this.#requireRunning('open the dashboard of');
    const target = this.#scheduler === undefined ? undefined : this.backend.dashboardTarget?.(this.#scheduler);
    if (target === undefined || this.#security === undefined || this.#security === false) {
      if (this.backend.dashboardTarget !== undefined) {
        throw new ClusterStateError(
          `cluster ${this.id} runs without TLS, so its dashboard has no mutual-TLS door: start it with security on, or with exposeDashboard (plain HTTP to ingressCidrs)`,
        );
      }
      // A local cluster's dashboard is on this machine already.
      if (this.#dashboardLink === undefined) throw new ClusterStateError(`cluster ${this.id} runs no dashboard (dashboardAddress: false)`);
      return { url: this.#dashboardLink, tunnel: false, close: async () => undefined };
    }
    const { openDashboardTunnel } = await import('../dashboard');
    const linked = this.#dashboardLink === undefined ? undefined : Number(new URL(this.#dashboardLink).port);
    const open = (localPort: number) => openDashboardTunnel({ host: target.host, port: target.port, security: this.#security as Security, localPort, signal: o.signal });
    let tunnel;
    try {
      tunnel = await open(o.localPort ?? linked ?? 0);
    } catch (err) {
      if (o.localPort !== undefined || linked === undefined || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      tunnel = await open(0);
      this.emit({ type: 'warning', code: 'DASK_CLOUD_DASHBOARD_PORT', clusterId: this.id, message: `port ${linked} of the dashboard link is taken: the tunnel listens on ${tunnel.port} instead (${tunnel.url}), which dask.yaml does not name`, at: Date.now() });
    }
    return { url: tunnel.url, tunnel: true, close: () => tunnel.close() };
  }

  /**
   * New workers of an attached handle need what the record could not keep: the env values and the
   * bootstrap commands the cluster was started with.
   */
  #checkAttachedScaleUp(): void {
    const record = this.#attached;
    if (record === undefined) return;
    const o = this.#options as ClusterOptions & { bootstrap?: string[] };
    const missingEnv = record.envNames.filter((k) => o.env?.[k] === undefined);
    if (missingEnv.length > 0) {
      throw new ValidationError(
        `cluster ${this.id} was started with env ${missingEnv.join(', ')}, whose values are never written to disk: attach with the same env to add workers`,
        { option: 'env' },
      );
    }
    if (record.bootstrap && !(o.bootstrap?.length ?? 0)) {
      throw new ValidationError(`cluster ${this.id} was started with bootstrap commands, which are never written to disk: attach with the same bootstrap to add workers`, { option: 'bootstrap' });
    }
  }

  /**
   * Write `ca.pem`, the client certificate and key (0600) and a Dask config (`dask.yaml`) into
   * `dir` (0700), so that `DASK_CONFIG=dir` makes a Python `Client()` connect with no arguments.
   */
  async writeClientConfig(dir: string): Promise<{ dir: string; configFile: string }> {
    return writeConfig(this.security, dir, this.schedulerAddress, this.#dashboardLink);
  }

  /**
   * Delete every resource the cluster created. Idempotent; safe after a failed or partial start.
   * Waits as long as the cloud takes to confirm each deletion. When something could not be
   * deleted it throws a `TeardownError` naming what is left (and the cleanup command); calling
   * `close()` again retries what is left, also after a start whose rollback failed.
   */
  async close(): Promise<void> {
    if (this.#state === 'closed' || (this.#state === 'failed' && !this.#leftBehind)) return;
    await this.#adaptive?.stop();
    if (this.#state === 'new') {
      // Never started: nothing was created, so there is nothing to ask the cloud about.
      this.#state = 'closed';
      return;
    }
    if (this.#closing) return this.#closing;
    this.#closing = (async () => {
      if (this.#state === 'starting') {
        // start() rolls back by itself once aborted; wait for that instead of racing it.
        if (this.#startAbort && !this.#startAbort.signal.aborted) {
          this.#callerAbort = 'close';
          this.#abortedDuring = this.#startPhase?.();
        }
        this.#startAbort?.abort(new DaskCloudErrorAborted('cluster closed during start'));
        await this.#starting?.catch(() => undefined);
        // A rollback that left something behind is retried below.
        if ((this.#state as ClusterState) === 'failed' && !this.#leftBehind) {
          this.#state = 'closed';
          return;
        }
      }
      await this.#serialize(() => this.#teardown('closed'));
    })();
    // A failed close can be retried: the next close() tries every deletion again.
    this.#closing.catch(() => {
      this.#closing = undefined;
    });
    return this.#closing;
  }

  async #teardown(final: 'closed' | 'failed'): Promise<void> {
    this.#state = final === 'closed' ? 'closing' : this.#state;
    const ctx = this.#context(new AbortController().signal);
    try {
      await this.#phase('close', async () => {
        const members = this.members;
        try {
          if (members.length > 0 && !this.backend.teardownDeletesMembers) await this.backend.stopMembers(ctx, [...members]);
        } catch (err) {
          // The backend's sweep below deletes them again (and says what is left if that fails too).
          this.log('stopping members failed, the teardown sweep retries: %s', errorMessage(err));
        }
        await this.backend.teardown(ctx);
      });
    } catch (err) {
      // Members and backend state are kept, so the next close() retries exactly what is left.
      this.#leftBehind = true;
      // A rollback's error is folded into the start's own error (which adds the cleanup command).
      if (final === 'failed') throw err;
      const cleanup = this.cleanupCommand();
      const leftovers = TeardownError.isInstance(err) ? err.leftovers : [`resources of cluster ${this.id}`];
      throw new TeardownError(
        `closing cluster ${this.id} failed: ${errorMessage(err)}; close() again retries what is left` + (cleanup ? `, or delete it with: ${cleanup}` : ''),
        leftovers,
        { cause: err, details: cleanup ? { cleanupCommand: cleanup } : {} },
      );
    }
    this.#leftBehind = false;
    for (const m of this.members) {
      this.emit({ type: 'member-stopped', clusterId: this.id, role: m.role, memberId: m.id, name: m.name, at: Date.now() });
    }
    this.#workers = [];
    this.#scheduler = undefined;
    this.#state = final;
    unregisterLive(this);
    unregisterOpen(this);
    if (this.#stateDir !== undefined) {
      // Nothing is left to reach: the credentials go with the cluster.
      await removeClusterState(this.id).catch((err: unknown) => this.log('removing %s failed: %s', this.#stateDir, errorMessage(err)));
      this.#stateDir = undefined;
    }
    this.emit({ type: 'closed', clusterId: this.id, at: Date.now() });
  }

  /** The backend's kind: `local`, `gcp`, `ec2`, `digitalocean`. */
  get kind(): string {
    return this.backend.kind;
  }

  /**
   * The `dask-cloud cleanup` command that deletes whatever this cluster may have left in its
   * cloud (after a failed or interrupted close); undefined for local clusters, whose processes
   * and files belong to this machine.
   */
  cleanupCommand(): string | undefined {
    return this.backend.cleanupCommand?.(this.id);
  }

  /** Last-resort synchronous cleanup on process exit; backends that can, override `killSync`. */
  killSync(): void {
    (this.backend as { killSync?: () => void }).killSync?.();
  }

  #serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * A safe summary for logs and `JSON.stringify`: kind, id, state, the scheduler address once
   * started, and the members. Never options, env values, credentials or keys.
   */
  toJSON(): {
    kind: string;
    id: string;
    state: ClusterState;
    schedulerAddress?: string;
    dashboardLink?: string;
    workers: number;
    workersRegistered?: number;
    members: string[];
  } {
    return {
      kind: this.backend.kind,
      id: this.id,
      state: this.#state,
      ...(this.#clientAddress === undefined ? {} : { schedulerAddress: this.#clientAddress }),
      ...(this.#dashboardLink === undefined ? {} : { dashboardLink: this.#dashboardLink }),
      workers: this.#workers.length,
      ...(this.#registered === undefined ? {} : { workersRegistered: this.#registered }),
      members: this.members.map((m) => m.name),
    };
  }

  /** What a person looks at: the summary's fields, with workers as `registered / asked`. */
  #display(): Array<[string, string]> {
    const asked = this.#workers.length;
    const workers = this.#registered === undefined ? `${asked} asked` : `${this.#registered} registered / ${asked} asked`;
    const rows: Array<[string, string]> = [
      ['kind', this.backend.kind],
      ['id', this.id],
      ['state', this.#state],
    ];
    if (this.#clientAddress !== undefined) rows.push(['scheduler', this.#clientAddress]);
    rows.push(['workers', workers]);
    if (this.#dashboardLink !== undefined) rows.push(['dashboard', this.#dashboardLink]);
    return rows;
  }

  /** `console.log(cluster)` and a REPL show kind, id, state, address, workers (registered / asked) and the dashboard. */
  [inspect.custom](depth: number, options: InspectOptions, render: typeof inspect): string {
    const name = this.constructor.name;
    return depth < 0 ? `[${name}]` : `${name} ${render(Object.fromEntries(this.#display()), { ...options, depth: 1 })}`;
  }

  /** A small HTML table of the same, for notebooks; the dashboard is a link. */
  toHTML(): string {
    const esc = (t: string): string => t.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
    const cell = (k: string, v: string): string =>
      k === 'dashboard' ? `<a href="${esc(v)}" target="_blank" rel="noopener">${esc(v)}</a>` : esc(v);
    const rows = this.#display()
      .map(([k, v]) => `<tr><th style="text-align:left">${esc(k)}</th><td style="text-align:left">${cell(k, v)}</td></tr>`)
      .join('');
    return `<table><caption style="text-align:left"><b>${esc(this.constructor.name)}</b></caption>${rows}</table>`;
  }

  /**
   * The Jupyter display protocol of JavaScript kernels that look for it (Deno's): a notebook cell
   * that ends with a cluster shows {@link Cluster.toHTML}.
   */
  [Symbol.for('Jupyter.display')](): Record<string, string> {
    return { 'text/html': this.toHTML(), 'text/plain': inspect(this) };
  }
}

/** The dashboard page a link names. */
const DASHBOARD_PATH = '/status';

/** How long attach() waits for the scheduler to answer. */
const ATTACH_TIMEOUT_MS = 30_000;
/** How long the version check waits for each answer. */
const VERSIONS_TIMEOUT_MS = 30_000;
/** How long a failed start waits for the scheduler's list of workers (connect, then the request). */
const SILENT_WORKERS_TIMEOUT_MS = 10_000;
/** How many unregistered workers' consoles a failed start's error shows. */
const SILENT_WORKERS_SHOWN = 3;

const ADAPT_KEYS = new Set(['minimum', 'maximum', 'intervalMs', 'waitCount']);

/** `{ timeoutMs?, signal? }` of connect() and waitForWorkers(), checked before any connection. */
function checkCallOptions(options: { timeoutMs?: number; signal?: AbortSignal }, what: string): void {
  const o = readOptions(options, `${what}() options`);
  checkTimerMs(o.timeoutMs, 'timeoutMs');
  checkSignal(o.signal);
}

/** A worker launch (create call) was refused during start. */
class LaunchFailure extends Error {
  readonly error: unknown;
  constructor(error: unknown) {
    super(errorMessage(error));
    this.error = error;
  }
}

class MemberFailure extends Error {
  constructor(readonly member: Member, readonly error: Error) {
    super(error.message);
  }
}

class DaskCloudErrorAborted extends DaskCloudError {
  constructor(message: string) {
    super('E_ABORTED', message);
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new DaskCloudErrorAborted('aborted');
}
