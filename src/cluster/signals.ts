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

const live = new Set<Closable>();
let installed = false;
let handling = false;

function onSignal(signal: NodeJS.Signals): void {
  if (handling) return;
  handling = true;
  log('%s: closing %d live cluster(s)', signal, live.size);
  const all = [...live].map((c) => c.close().catch((err) => log('close %s failed: %O', c.id, err)));
  const limit = new Promise((resolve) => setTimeout(resolve, TEARDOWN_LIMIT_MS).unref());
  void Promise.race([Promise.all(all), limit]).then(() => {
    uninstall();
    process.kill(process.pid, signal);
  });
}

function onExit(): void {
  for (const c of live) {
    try {
      c.killSync?.();
    } catch {
      // exiting anyway
    }
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  for (const s of SIGNALS) process.on(s, onSignal);
  process.on('exit', onExit);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  for (const s of SIGNALS) process.off(s, onSignal);
  process.off('exit', onExit);
}

export function registerLive(cluster: Closable): void {
  live.add(cluster);
  install();
}

export function unregisterLive(cluster: Closable): void {
  live.delete(cluster);
  if (live.size === 0) uninstall();
}

const open = new Set<Closable>();
let exitHookInstalled = false;

function onBeforeExit(): void {
  if (open.size === 0) return;
  const clusters = [...open];
  open.clear();
  for (const c of clusters) {
    process.emitWarning(`cluster ${c.id} was still open when the process ran out of work: closing it now (call close(), or use \`await using\`)`, {
      code: 'DASK_CLOUD_UNCLOSED',
    });
  }
  // The closes are new work: the process stays up until they finish, then beforeExit fires again with nothing open.
  void Promise.all(clusters.map((c) => c.close().catch((err) => log('closing %s at exit failed: %O', c.id, err))));
}

/** A cluster that has begun to start and is not closed yet. */
export function registerOpen(cluster: Closable): void {
  open.add(cluster);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('beforeExit', onBeforeExit);
  }
}

export function unregisterOpen(cluster: Closable): void {
  open.delete(cluster);
  if (open.size === 0 && exitHookInstalled) {
    exitHookInstalled = false;
    process.off('beforeExit', onBeforeExit);
  }
}
