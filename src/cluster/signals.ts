/**
 * Teardown when the process is interrupted: a started cluster registers itself here, and on
 * SIGINT/SIGTERM/SIGHUP (SIGHUP: the terminal closed) every live cluster is closed before the
 * signal is re-raised. The close takes as long as the cloud needs to confirm each deletion (EC2
 * instances can take minutes to terminate, and their security group can only go after them):
 * there is no time limit. A second signal stops waiting: it prints, for each cluster not yet
 * closed, the `dask-cloud cleanup` command that deletes what it left, and re-raises at once.
 * Handlers are installed only while at least one cluster is live, so an idle process keeps
 * Node's default signal behaviour.
 *
 * Also, whatever `closeOnSignals` says: a cluster still open when the process runs out of work
 * (`beforeExit`: a script that forgot `close()`) is closed then, with a warning, like Dask
 * closing its clusters at interpreter exit. Cloud SDKs keep no handle that holds the process
 * open, so without this such a script would exit and leave its VMs running.
 */
import { createLog } from '../log';

const log = createLog('dask-cloud:signals');
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

interface Closable {
  id: string;
  /** `local`, `gcp`, `ec2`, `digitalocean`: for messages. */
  kind?: string;
  close(): Promise<void>;
  /** Synchronous last resort when the process exits without a signal (e.g. process.exit). */
  killSync?(): void;
  /** The command that deletes what the cluster left in its cloud; undefined for local clusters. */
  cleanupCommand?(): string | undefined;
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

/** Whether a signal is being handled (the live clusters are closing). */
let handling = false;
/** Clusters the first signal is closing whose close has not finished yet. */
const closing = new Set<Closable>();

function onSignal(signal: NodeJS.Signals): void {
  if (handling) {
    giveUp(signal);
    return;
  }
  handling = true;
  log('%s: closing %d live cluster(s)', signal, live.size);
  const all = live.values().map(async (c) => {
    closing.add(c);
    try {
      await c.close();
    } catch (err) {
      // The process is about to end: this is the last chance to say what is left and how to delete it.
      console.error(`dask-cloud: ${signal}: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      closing.delete(c);
    }
  });
  void Promise.all(all).then(() => reraise(signal));
}

/**
 * A second signal: the user will not wait. Local processes are killed now (they would outlive
 * this process); for cloud clusters the cleanup command is printed. Synchronously, because the
 * signal ends the process right after: a warning event would never be printed.
 */
function giveUp(signal: NodeJS.Signals): void {
  for (const c of closing) {
    try {
      c.killSync?.();
    } catch {
      // exiting anyway
    }
    const command = c.cleanupCommand?.();
    const what = `cluster ${c.id}${c.kind ? ` (${c.kind})` : ''}`;
    console.error(
      `dask-cloud: second ${signal}: stopped waiting for ${what} to close; ` +
        (c.kind === 'local' ? 'its processes were killed' : 'what it created may be left') +
        (command ? `. Delete it with: ${command}` : ''),
    );
  }
  reraise(signal);
}

/** Ends the process by the signal it received, as it would have without these hooks. */
function reraise(signal: NodeJS.Signals): void {
  live.release();
  closing.clear();
  handling = false;
  process.kill(process.pid, signal);
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
