/**
 * A local cluster that outlives the process that asked for it (`dask-cloud up --provider local`).
 *
 * A LocalCluster's Dask processes die with the Node process that owns them (./watchdog.ts). So
 * that a cluster can outlive a command or a script, `startDetachedLocal()` starts an owner of its
 * own: the hidden command `dask-cloud __local-supervisor`, in a session of its own, with no
 * terminal. It reads the cluster's options from its stdin (never the command line, which `ps`
 * shows: `env` values may be secrets), starts the cluster with its local directory, writes one
 * JSON line (`ready` or `failed`) to its stdout, which the caller reads and then lets go of, and
 * stays up as the cluster's owner until the cluster ends:
 *
 * - `close()` of a handle from `LocalCluster.attach(id)` (or `dask-cloud down`), through the
 *   control socket (./control.ts);
 * - SIGTERM or SIGINT: it closes the cluster, then exits (SIGHUP is ignored: no terminal is its);
 * - the scheduler exiting on its own, e.g. after `idleTimeout` without tasks: it closes what is
 *   left, then exits. A forgotten cluster therefore ends by itself.
 *
 * Its stderr (warnings; `DEBUG=dask-cloud*` output) goes to `supervisor.log` in a private temporary
 * directory, removed when the supervisor ends normally.
 */
import type { ChildProcessByStdio } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import type { ClusterEvent } from '../../src/cluster/events';
import { checkTimerMs, describeValue, readOptions } from '../../src/config/bounds';
import {
  ClusterStartError,
  DaskCloudError,
  LocalRuntimeError,
  SecurityError,
  ValidationError,
  VersionMismatchError,
  errorSummary,
  type ErrorCode,
} from '../../src/errors';
import type { LocalCluster, LocalClusterOptions } from './index';
import { STOP_GRACE_MS } from './watchdog';
import { loadChildProcess } from '../../src/lazy';

/** The hidden CLI command that runs the supervisor (routed by src/cli.ts). */
export const SUPERVISOR_COMMAND = '__local-supervisor';
/** Name prefix of the supervisor's private log directory under `os.tmpdir()`. */
export const LOG_DIR_PREFIX = 'dask-cloud-up-';
const LOG_FILE = 'supervisor.log';
/** The options are small; anything larger is not ours. */
const MAX_INPUT = 1 << 20;
/** The caller writes the options at once: a supervisor that gets none within this gives up. */
const INPUT_TIMEOUT_MS = 60_000;
/** How long the supervisor waits for its last control replies to go out before it exits. */
const DRAIN_MS = 5_000;
/** A supervisor asked to stop closes its cluster (each process gets STOP_GRACE_MS); then it is killed. */
const STOP_BOUND_MS = 4 * STOP_GRACE_MS + 30_000;
/** Lines of the supervisor's log an error quotes. */
const LOG_TAIL_LINES = 30;

/** Options of {@link startDetachedLocal}: a LocalCluster's, as JSON, and how long to wait for it. */
export interface DetachedLocalOptions extends LocalClusterOptions {
  /**
   * How long to wait for the cluster to be up (default: `schedulerTimeoutMs` + `workersTimeoutMs`
   * + 2 minutes). When it runs out the supervisor is stopped, which deletes what it started.
   */
  timeoutMs?: number;
}

/** A cluster running in a supervisor process of its own. */
export interface DetachedLocalCluster {
  id: string;
  /** Its local directory: `LocalCluster.attach(id)` reads it; `DASK_CONFIG=<stateDir>` makes a Python `Client()` connect. */
  stateDir: string;
  schedulerAddress: string;
  dashboardLink?: string;
  /** The supervisor's process id: SIGTERM closes the cluster. */
  pid: number;
  /** Where the supervisor writes its warnings (removed when it ends normally). */
  logFile: string;
}

/** What the supervisor reads from its stdin. */
interface SupervisorInput {
  options: Record<string, unknown>;
  logDir?: string;
}

/** Options that cannot, or need not, reach another process, and why. */
const NOT_DETACHABLE: Record<string, string> = {
  signal: 'an AbortSignal cannot reach the cluster\'s own process: end the cluster with close() on a handle from LocalCluster.attach(id), or dask-cloud down',
  onEvent: 'a function cannot reach the cluster\'s own process: its warnings go to its log file (logFile)',
  closeOnSignals: 'a detached cluster ends on SIGTERM or SIGINT to its own process (pid), on close() of an attached handle, or on its idleTimeout',
};

function isJson(v: unknown, depth: number): boolean {
  if (depth > 8) return false;
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return true;
  if (typeof v === 'number') return Number.isFinite(v);
  if (Array.isArray(v)) return v.every((x) => isJson(x, depth + 1));
  if (typeof v === 'object') {
    const proto = Object.getPrototypeOf(v) as unknown;
    return (proto === Object.prototype || proto === null) && Object.values(v as object).every((x) => x === undefined || isJson(x, depth + 1));
  }
  return false;
}

/** Refuses what cannot travel to the supervisor as JSON, naming the option and what to do instead. */
function checkDetachable(options: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(options)) {
    if (v === undefined) continue;
    const why = NOT_DETACHABLE[k];
    if (why !== undefined) throw new ValidationError(`${k}: ${why}`, { option: k });
    if (k === 'saveState' && v !== true) {
      throw new ValidationError('saveState: a detached cluster always writes its local directory: it is how anything reaches it', { option: k });
    }
    if (k === 'security' && typeof v !== 'boolean') {
      throw new ValidationError(
        'security: a Security object cannot be sent to the cluster\'s own process; use security: true (fresh credentials, the default) or false, or start a LocalCluster in your own process',
        { option: k },
      );
    }
    if (!isJson(v, 0)) {
      throw new ValidationError(`${k} cannot be sent to the cluster's own process: only JSON values (strings, finite numbers, booleans, arrays, plain objects) can, got ${describeValue(v)}`, { option: k });
    }
  }
}

/**
 * How to run the dask-cloud command line: the bundled `cli.js` next to this code (the built
 * package: dist/index.js and dist/cli.js are siblings), else the TypeScript source through tsx
 * (a source checkout, the tests).
 */
export function supervisorCommand(): string[] {
  const bundled = path.join(__dirname, 'cli.js');
  if (existsSync(bundled)) return [process.execPath, bundled, SUPERVISOR_COMMAND];
  const source = path.resolve(__dirname, '../../src/cli.ts');
  if (existsSync(source)) {
    let loader: string;
    try {
      loader = createRequire(__filename).resolve('tsx');
    } catch (err) {
      throw new LocalRuntimeError('E_START_FAILED', `running the dask-cloud sources (${source}) needs tsx, which cannot be found: npm install tsx`, { cause: err });
    }
    return [process.execPath, '--import', pathToFileURL(loader).href, source, SUPERVISOR_COMMAND];
  }
  throw new LocalRuntimeError('E_START_FAILED', `the dask-cloud command line is neither at ${bundled} nor at ${source}`);
}

/** The last lines of the supervisor's log, for an error message. */
function logTail(logFile: string): string {
  try {
    return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-LOG_TAIL_LINES).join('\n');
  } catch {
    return '';
  }
}

/** The supervisor's error, as the typed error it was (its code and message). */
function rebuildError(e: unknown, pid: number | undefined): Error {
  const { name, code, message, details } = (typeof e === 'object' && e !== null ? e : {}) as Record<string, unknown>;
  const text = typeof message === 'string' ? message : 'the local cluster failed to start';
  const errCode = (typeof code === 'string' && /^E_[A-Z_]+$/.test(code) ? code : 'E_START_FAILED') as ErrorCode;
  const extra: Record<string, unknown> = { ...(typeof details === 'object' && details !== null ? (details as Record<string, unknown>) : {}), supervisorPid: pid };
  switch (name) {
    case 'ValidationError':
      return new ValidationError(text, { details: extra, option: typeof extra.option === 'string' ? extra.option : undefined });
    case 'VersionMismatchError':
      return new VersionMismatchError(text, { details: extra });
    case 'ClusterStartError':
      return new ClusterStartError(errCode, text, { details: extra });
    case 'LocalRuntimeError':
      return new LocalRuntimeError(errCode, text, { details: extra });
    case 'SecurityError':
      return new SecurityError(errCode, text, { details: extra });
    default:
      return new DaskCloudError(errCode, text, { details: extra });
  }
}

type Supervisor = ChildProcessByStdio<Writable, Readable, null>;

/** Whether `closed` settles within `ms`. */
async function within(closed: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)))]);
  clearTimeout(timer);
  return settled;
}

/**
 * Ends a supervisor that did not report `ready`: `term` sends SIGTERM first (it then rolls its
 * start back); one that does not exit within STOP_BOUND_MS is killed, and its Dask processes end
 * through their watchdog.
 */
async function stopSupervisor(child: Supervisor, closed: Promise<unknown>, term: boolean): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  if (term) child.kill('SIGTERM');
  if (!(await within(closed, STOP_BOUND_MS))) child.kill('SIGKILL');
}

/**
 * Start a local cluster in a process of its own, which outlives the caller: the caller may exit
 * as soon as this resolves. The cluster's local directory is written (`stateDir`);
 * `LocalCluster.attach(id)` reaches it from any process of this user, and its `close()` ends it.
 * It also ends on SIGTERM to `pid`, and when its scheduler shuts itself down after `idleTimeout`
 * without tasks (give one: a forgotten cluster then ends by itself; `dask-cloud up` does).
 *
 * Options travel as JSON over a pipe (never on a command line): functions (`onEvent`), signals,
 * `Security` objects and `closeOnSignals` cannot, and are refused with a `ValidationError`, as is
 * any invalid option, before anything starts. A failed start throws the cluster's own typed
 * error (e.g. `E_START_FAILED` with its cause), after the supervisor deleted what it had started.
 */
export async function startDetachedLocal(options: DetachedLocalOptions = {}): Promise<DetachedLocalCluster> {
  const { timeoutMs, ...clusterOptions } = readOptions(options, 'startDetachedLocal() options') as DetachedLocalOptions & Record<string, unknown>;
  checkTimerMs(timeoutMs, 'timeoutMs');
  checkDetachable(clusterOptions);
  // Every other check a LocalCluster makes, here, before a process exists (the constructor creates nothing).
  const { LocalCluster } = await import('./index');
  new LocalCluster(clusterOptions);
  const waitMs = timeoutMs ?? (clusterOptions.schedulerTimeoutMs ?? 60_000) + (clusterOptions.workersTimeoutMs ?? 60_000) + 120_000;
  const [command, ...args] = supervisorCommand();

  const logDir = await mkdtemp(path.join(os.tmpdir(), LOG_DIR_PREFIX));
  await chmod(logDir, 0o700);
  const logFile = path.join(logDir, LOG_FILE);
  let child: Supervisor;
  const fd = openSync(logFile, 'a', 0o600);
  try {
    // Its own session (no terminal: Ctrl-C and a closing terminal do not reach it); stdin carries
    // the options, stdout the one line of its outcome, stderr goes to its log only.
    child = loadChildProcess().spawn(command!, args, { detached: true, stdio: ['pipe', 'pipe', fd], cwd: process.cwd(), env: process.env }) as Supervisor;
  } finally {
    closeSync(fd);
  }
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  child.stdin.on('error', () => undefined);
  const input: SupervisorInput = { options: clusterOptions, logDir };
  child.stdin.end(`${JSON.stringify(input)}\n`);

  type Outcome = { line: string } | { exit: { code: number | null; signal: NodeJS.Signals | null } } | { error: Error } | { timeout: true };
  let timer: NodeJS.Timeout | undefined;
  const outcome = await new Promise<Outcome>((resolve) => {
    let buf = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buf += chunk;
      const i = buf.indexOf('\n');
      if (i !== -1) resolve({ line: buf.slice(0, i) });
      else if (buf.length > MAX_INPUT) resolve({ line: '' });
    });
    child.stdout.on('error', () => undefined);
    void closed.then((exit) => resolve({ exit }));
    child.once('error', (error) => resolve({ error }));
    timer = setTimeout(() => resolve({ timeout: true }), waitMs);
  });
  clearTimeout(timer);
  const pid = child.pid;

  /** Ends our side: the supervisor is on its own from here. */
  const letGo = () => {
    child.stdout.destroy();
    child.stdin.destroy();
    child.unref();
  };
  const dropLog = () => rm(logDir, { recursive: true, force: true }).catch(() => undefined);

  if ('line' in outcome) {
    let msg: Record<string, unknown> | undefined;
    try {
      msg = JSON.parse(outcome.line) as Record<string, unknown>;
    } catch {
      msg = undefined;
    }
    if (msg?.type === 'ready' && typeof msg.id === 'string' && typeof msg.stateDir === 'string' && typeof msg.schedulerAddress === 'string' && pid !== undefined) {
      letGo();
      return {
        id: msg.id,
        stateDir: msg.stateDir,
        schedulerAddress: msg.schedulerAddress,
        ...(typeof msg.dashboardLink === 'string' ? { dashboardLink: msg.dashboardLink } : {}),
        pid,
        logFile,
      };
    }
    if (msg?.type === 'failed') {
      // It rolled back and exits by itself; wait for that (bounded) so that nothing is left when this throws.
      await stopSupervisor(child, closed, false);
      letGo();
      await dropLog();
      throw rebuildError(msg.error, pid);
    }
    await stopSupervisor(child, closed, true);
    letGo();
    const tail = logTail(logFile);
    await dropLog();
    throw new LocalRuntimeError('E_START_FAILED', `the local cluster's process (pid ${pid}) wrote something unexpected instead of its status: ${JSON.stringify(outcome.line.slice(0, 200))}${tail ? `\n${tail}` : ''}`);
  }
  if ('timeout' in outcome) {
    await stopSupervisor(child, closed, true);
    letGo();
    const tail = logTail(logFile);
    await dropLog();
    throw new DaskCloudError(
      'E_TIMEOUT',
      `the local cluster was not up within ${waitMs} ms (timeoutMs): its process (pid ${pid}) was stopped, which deletes what it had started` + (tail ? `\n--- its log ---\n${tail}` : ''),
      { details: { supervisorPid: pid } },
    );
  }
  letGo();
  const tail = logTail(logFile);
  await dropLog();
  if ('error' in outcome) {
    throw new LocalRuntimeError('E_START_FAILED', `the local cluster's process could not be started (${command}): ${outcome.error.message}`, { cause: outcome.error });
  }
  const how = outcome.exit.signal ? `signal ${outcome.exit.signal}` : `exit code ${outcome.exit.code}`;
  throw new LocalRuntimeError('E_PROCESS_EXITED', `the local cluster's process (pid ${pid}) ended (${how}) before the cluster was up` + (tail ? `:\n${tail}` : ''), {
    details: { supervisorPid: pid, ...outcome.exit },
  });
}

/** Everything on stdin, up to MAX_INPUT, within INPUT_TIMEOUT_MS. */
function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => reject(new ValidationError(`no options on stdin within ${INPUT_TIMEOUT_MS} ms`)), INPUT_TIMEOUT_MS);
    process.stdin.on('data', (b: Buffer) => {
      size += b.length;
      if (size > MAX_INPUT) {
        clearTimeout(timer);
        process.stdin.destroy();
        reject(new ValidationError(`the options on stdin exceed ${MAX_INPUT} bytes`));
        return;
      }
      chunks.push(b);
    });
    process.stdin.once('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    process.stdin.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function parseInput(text: string): SupervisorInput {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new ValidationError('the options on stdin are not JSON');
  }
  const { options, logDir } = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw new ValidationError('stdin must carry {"options": {...}}');
  // Only a directory startDetachedLocal made is ever removed.
  const ownLog = typeof logDir === 'string' && path.dirname(logDir) === os.tmpdir() && path.basename(logDir).startsWith(LOG_DIR_PREFIX) ? logDir : undefined;
  return { options: options as Record<string, unknown>, ...(ownLog === undefined ? {} : { logDir: ownLog }) };
}

/**
 * The supervisor itself (`dask-cloud __local-supervisor`, started by {@link startDetachedLocal}):
 * starts the cluster from the options on stdin, reports on stdout, and owns the cluster until it
 * ends. Resolves with the exit code once the cluster is closed.
 */
export async function runLocalSupervisor(argv: string[]): Promise<number> {
  if (argv.length > 0) {
    console.error(`dask-cloud ${SUPERVISOR_COMMAND}: an internal command that takes no arguments (it reads its options from stdin; see startDetachedLocal)`);
    return 2;
  }
  const say = (text: string) => console.error(`${new Date().toISOString()} dask-cloud supervisor (pid ${process.pid}): ${text}`);
  // Nobody reads stdout once the caller has its line, and no terminal is ours.
  let reported = false;
  const report = (msg: Record<string, unknown>) => {
    if (reported) return;
    reported = true;
    process.stdout.write(`${JSON.stringify(msg)}\n`);
  };
  process.stdout.on('error', () => undefined);
  process.on('SIGPIPE', () => undefined);
  process.on('SIGHUP', () => say('SIGHUP ignored: this process has no terminal'));
  // The control socket is unref'd (it must not keep an ordinary owner alive); this process lives for its cluster.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  let cluster: LocalCluster | undefined;
  let logDir: string | undefined;
  const fatal = (err: unknown) => {
    say(`internal error, killing the cluster's processes: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    report({ type: 'failed', error: errorSummary(err) });
    cluster?.killSync();
    process.exit(70);
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
  // Processes would die with this one anyway (their watchdog); at exit they go at once.
  process.on('exit', () => cluster?.killSync());
  try {
    let done!: () => void;
    const ended = new Promise<void>((resolve) => (done = resolve));
    let stopping = false;
    const stop = (why: string) => {
      if (stopping) return;
      stopping = true;
      say(why);
      if (!cluster) {
        done();
        return;
      }
      cluster
        .close()
        .catch((err: unknown) => say(`closing failed: ${err instanceof Error ? err.message : String(err)}`))
        .finally(done);
    };
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.on(signal, () => {
        if (!stopping) return stop(`${signal}: closing the cluster`);
        // A second signal: stop waiting. The processes go with this one.
        say(`second ${signal}: exiting now`);
        cluster?.killSync();
        process.exit(128 + (os.constants.signals[signal] ?? 15));
      });
    }
    const onEvent = (e: ClusterEvent) => {
      if (e.type === 'closed') {
        say('the cluster is closed');
        done();
      }
      // Idle timeout, or a crash: without its scheduler the cluster serves nobody.
      if (e.type === 'member-failed' && e.role === 'scheduler') setImmediate(() => stop(`the scheduler exited (${e.message.split('\n')[0]}): closing the cluster`));
    };

    let input: SupervisorInput;
    try {
      input = parseInput(await readStdin());
      logDir = input.logDir;
      const { LocalCluster: Local } = await import('./index');
      cluster = new Local({ ...(input.options as LocalClusterOptions), closeOnSignals: false, saveState: true, onEvent });
    } catch (err) {
      say(`bad input: ${err instanceof Error ? err.message : String(err)}`);
      report({ type: 'failed', error: errorSummary(err) });
      return 2;
    }
    if (stopping) {
      report({ type: 'failed', error: errorSummary(new DaskCloudError('E_ABORTED', 'the local cluster was stopped by a signal before it started')) });
      return 1;
    }
    say(`starting cluster ${cluster.id}`);
    try {
      await cluster.start();
      if (cluster.stateDir === undefined) throw new LocalRuntimeError('E_START_FAILED', `cluster ${cluster.id} started, but its local directory could not be written: nothing could reach it, so it was closed`);
      if (stopping) throw new DaskCloudError('E_ABORTED', `cluster ${cluster.id} was stopped by a signal as it started`);
    } catch (err) {
      say(`start failed: ${err instanceof Error ? err.message : String(err)}`);
      await cluster.close().catch(() => undefined);
      report({ type: 'failed', error: errorSummary(err) });
      if (logDir) await rm(logDir, { recursive: true, force: true }).catch(() => undefined);
      return 1;
    }
    report({ type: 'ready', id: cluster.id, stateDir: cluster.stateDir, schedulerAddress: cluster.schedulerAddress, ...(cluster.dashboardLink ? { dashboardLink: cluster.dashboardLink } : {}), pid: process.pid });
    say(`cluster ${cluster.id} is up at ${cluster.schedulerAddress}`);
    await ended;
    // The `close` request that ended it (if one did) gets its answer before this process goes.
    await cluster.controlDrained(DRAIN_MS);
    const ok = cluster.state === 'closed';
    if (ok && logDir) await rm(logDir, { recursive: true, force: true }).catch(() => undefined);
    return ok ? 0 : 1;
  } finally {
    clearInterval(keepAlive);
  }
}
