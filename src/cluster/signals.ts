/**
 * Best-effort teardown when the process is interrupted: a started cluster registers itself here,
 * and on SIGINT/SIGTERM/SIGHUP every live cluster is closed before the signal is re-raised.
 * Handlers are installed only while at least one cluster is live, so an idle process keeps
 * Node's default signal behaviour.
 *
 * Also, whatever `closeOnSignals` says: a cluster still open when the process runs out of work
 * (`beforeExit`: a script that forgot `close()`) is closed then, with a warning, like Dask
 * closing its clusters at interpreter exit. Cloud SDKs keep no handle that holds the process
 * open, so without this such a script would exit and leave its VMs running.
 */
import createDebug from 'debug';

const log = createDebug('dask-cloud:signals');
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
/** How long teardown may take before the signal is re-raised anyway. */
const TEARDOWN_LIMIT_MS = 30_000;

interface Closable {
  id: string;
  close(): Promise<void>;
  /** Synchronous last resort when the process exits without a signal (e.g. process.exit). */
  killSync?(): void;
}

/**
 * Clusters that need process hooks: the hooks are installed while the set holds at least one
 * cluster and removed when it empties, so an idle process keeps Node's default behaviour.
 */
class HookedSet {
  readonly #members = new Set<Closable>();
  #installed = false;

  constructor(readonly hooks: readonly (readonly [event: string, listener: (...args: any[]) => void])[]) {}

  get size(): number {
    return this.#members.size;
  }

  add(cluster: Closable): void {
    this.#members.add(cluster);
    if (this.#installed) return;
    this.#installed = true;
    for (const [event, listener] of this.hooks) process.on(event, listener);
  }

  delete(cluster: Closable): void {
    this.#members.delete(cluster);
    if (this.#members.size === 0) this.release();
  }

  /** Empties the set (without removing the hooks) and returns what it held. */
  take(): Closable[] {
    const all = [...this.#members];
    this.#members.clear();
    return all;
  }

  values(): Closable[] {
    return [...this.#members];
  }

  release(): void {
    if (!this.#installed) return;
    this.#installed = false;
    for (const [event, listener] of this.hooks) process.off(event, listener);
  }
}

let handling = false;

function onSignal(signal: NodeJS.Signals): void {
  if (handling) return;
  handling = true;
  log('%s: closing %d live cluster(s)', signal, live.size);
  const all = live.values().map((c) => c.close().catch((err) => log('close %s failed: %O', c.id, err)));
  const limit = new Promise((resolve) => setTimeout(resolve, TEARDOWN_LIMIT_MS).unref());
  void Promise.race([Promise.all(all), limit]).then(() => {
    live.release();
    process.kill(process.pid, signal);
  });
}

function onExit(): void {
  for (const c of live.values()) {
    try {
      c.killSync?.();
    } catch {
      // exiting anyway
    }
  }
}

function onBeforeExit(): void {
  if (open.size === 0) return;
  const clusters = open.take();
  for (const c of clusters) {
    process.emitWarning(`cluster ${c.id} was still open when the process ran out of work: closing it now (call close(), or use \`await using\`)`, {
      code: 'DASK_CLOUD_UNCLOSED',
    });
  }
  // The closes are new work: the process stays up until they finish, then beforeExit fires again with nothing open.
  void Promise.all(clusters.map((c) => c.close().catch((err) => log('closing %s at exit failed: %O', c.id, err))));
}

/** Started clusters with `closeOnSignals`: closed on SIGINT/SIGTERM/SIGHUP, killed at `exit`. */
const live = new HookedSet([...SIGNALS.map((s) => [s, onSignal] as const), ['exit', onExit] as const]);
/** Clusters that have begun to start and are not closed yet: closed at `beforeExit`. */
const open = new HookedSet([['beforeExit', onBeforeExit]]);

export function registerLive(cluster: Closable): void {
  live.add(cluster);
}

export function unregisterLive(cluster: Closable): void {
  live.delete(cluster);
}

/** A cluster that has begun to start and is not closed yet. */
export function registerOpen(cluster: Closable): void {
  open.add(cluster);
}

export function unregisterOpen(cluster: Closable): void {
  open.delete(cluster);
}
