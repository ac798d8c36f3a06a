/**
 * What a person sees while a cluster starts. On a terminal: a live task list (listr2), one row per
 * phase of the cluster's `onEvent` stream with its elapsed time, workers registered / asked, and
 * the library's pacing notes under the running phase. Elsewhere (a pipe, a log, CI, --json): plain
 * lines on stderr, one when each phase starts and ends and one per pacing note, so a log shows
 * where a start spent its time and a script never has to parse cursor movements.
 */
import type { ClusterEvent, ClusterPhase } from '../cluster/events';
import { IMAGE_BASIS, versionsLine } from './format';

/** The phases of a start, in the order the cluster runs them (some are skipped by some kinds). */
export const START_PHASES: readonly ClusterPhase[] = ['credentials', 'validate', 'preflight', 'network', 'scheduler', 'ready', 'versions'];

/** Row titles of the live list. */
const PHASE_TITLES: Record<ClusterPhase, string> = {
  validate: 'check the user-data',
  credentials: 'credentials',
  preflight: 'read-only checks of the account',
  network: 'network and firewall',
  scheduler: 'launch the scheduler and workers',
  workers: 'workers',
  ready: 'scheduler ready, workers registering',
  versions: 'compare versions',
  scale: 'scale',
  close: 'delete everything created',
};

export interface Progress {
  /** Feed one cluster event. */
  event(e: ClusterEvent): void;
  /** Workers asked for, once known (the flag, the config file or the environment). */
  asked(n: number | undefined): void;
  /** The start is over (`error` when it failed): the live list stops and leaves its rows; later events are plain lines. */
  settle(error?: unknown): Promise<void>;
  /** The process is about to exit: give the terminal back at once (what others wrote meanwhile is printed). */
  abandon(): void;
}

/** `1.2 s`, `850 ms`, `2 min 5 s`. */
export function elapsed(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** What the events have said so far: shared by both displays. */
class StartState {
  asked: number | undefined;
  launched = 0;
  registered: number | undefined;
  readonly started = new Map<ClusterPhase, number>();
  readonly ended = new Map<ClusterPhase, number>();

  take(e: ClusterEvent): void {
    if (e.type === 'phase-start') this.started.set(e.phase, e.at);
    if (e.type === 'phase-end') this.ended.set(e.phase, e.durationMs);
    if (e.type === 'member-launched' && e.role === 'worker') this.launched++;
    if (e.type === 'workers-ready' || e.type === 'workers-registered') this.registered = e.count;
  }

  /** `2 / 3 workers registered (3 launched)`. */
  workers(): string {
    const asked = this.asked ?? this.launched;
    return `${this.registered ?? 0} / ${asked} workers registered${this.launched < asked ? ` (${this.launched} launched)` : ''}`;
  }
}

/** The plain line for an event, or undefined when it is not worth one. */
export function plainLine(e: ClusterEvent, state: { workers(): string }): string | undefined {
  switch (e.type) {
    case 'phase-start':
      return `  ${e.phase} ...`;
    case 'phase-end':
      return `  ${e.phase} done (${Math.round(e.durationMs)} ms)${e.phase === 'ready' ? `: ${state.workers()}` : ''}`;
    case 'member-launched':
      return e.role === 'worker' ? launchedLine([e.name]) : `  launched scheduler ${e.name}`;
    case 'workers-ready':
    case 'workers-registered':
      return `  workers: ${state.workers()}`;
    case 'pacing':
      return `  pacing ${e.operation}: ${e.message}`;
    case 'warning':
    case 'member-failed':
      return `  ${e.type}: ${e.message}`;
    case 'rollback':
      return '  rolling back: deleting what was created';
    case 'image':
      return `  image ${e.image} (${IMAGE_BASIS[e.basis]})`;
    case 'versions':
      return `  versions: ${versionsLine(e.report)}`;
    default:
      return undefined;
  }
}

/** At most one plain line of workers registered so far per this many ms (`workers-ready` gives the final count). */
export const REGISTERED_LINE_MS = 5_000;

/**
 * One line for workers launched together: `launched worker a`, `launched 3 workers: a, b, c`,
 * `launched 250 workers: a … z` (the core reports a create call's members one after another).
 */
export function launchedLine(names: string[]): string {
  if (names.length === 1) return `  launched worker ${names[0]}`;
  const shown = names.length <= 3 ? names.join(', ') : `${names[0]} … ${names[names.length - 1]}`;
  return `  launched ${names.length} workers: ${shown}`;
}

/**
 * Plain lines on `out`. Workers launched by one create come as one line; workers registered so
 * far, at most once every {@link REGISTERED_LINE_MS}: a log of a thousand workers stays readable.
 */
class PlainProgress implements Progress {
  readonly #state = new StartState();
  /** Workers launched whose line is not written yet: written with the next event, or after this tick. */
  #launched: string[] = [];
  #registeredLineAt = -Infinity;
  constructor(private readonly out: NodeJS.WritableStream) {}

  event(e: ClusterEvent): void {
    this.#state.take(e);
    if (e.type === 'member-launched' && e.role === 'worker') {
      if (this.#launched.push(e.name) === 1) queueMicrotask(() => this.#flushLaunched());
      return;
    }
    this.#flushLaunched();
    if (e.type === 'workers-registered') {
      // All of them: the `workers-ready` line that follows says so.
      if (e.count >= e.wanted || e.at - this.#registeredLineAt < REGISTERED_LINE_MS) return;
      this.#registeredLineAt = e.at;
    }
    const line = plainLine(e, this.#state);
    if (line !== undefined) this.out.write(`${line}\n`);
  }

  #flushLaunched(): void {
    if (this.#launched.length === 0) return;
    const names = this.#launched;
    this.#launched = [];
    this.out.write(`${launchedLine(names)}\n`);
  }

  asked(n: number | undefined): void {
    this.#state.asked = n;
  }

  async settle(): Promise<void> {}

  abandon(): void {}
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A phase nobody awaits yet must not be an unhandled rejection.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

/** How often a running row's elapsed time is redrawn. */
const TICK_MS = 200;

/**
 * The live list: one listr2 task per phase of START_PHASES, run in order. A task waits for its
 * phase to start, shows the time running, and ends with the phase. A phase that never starts is
 * "not needed" when a later one starts or the start succeeds, "not reached" when it failed first.
 */
export class LiveProgress implements Progress {
  readonly #state = new StartState();
  readonly #begun = new Map<ClusterPhase, Deferred<'started' | 'skipped' | 'unreached'>>();
  readonly #done = new Map<ClusterPhase, Deferred<void>>();
  #pacing: string | undefined;
  /** Lines worth keeping that have no row (image, versions, warnings): printed under the list when it ends. */
  readonly #notes: string[] = [];
  readonly #out: NodeJS.WriteStream;
  #over = false;
  #settled: Promise<void> | undefined;
  readonly #run: Promise<unknown>;
  readonly #plain: PlainProgress;
  readonly #output: import('listr2').ProcessOutput;

  /** `out` is where the list is drawn (a terminal); `other` is hijacked meanwhile, so nothing else writes over the list. */
  constructor(out: NodeJS.WriteStream, other: NodeJS.WriteStream) {
    this.#plain = new PlainProgress(out);
    this.#out = out;
    for (const p of START_PHASES) {
      this.#begun.set(p, deferred());
      this.#done.set(p, deferred());
    }
    // Loaded only for a terminal: scripts and logs never pay for it.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { DefaultRenderer, Listr, ListrLogger, ProcessOutput } = require('listr2') as typeof import('listr2');
    // listr2 falls back to line output unless process.stdout is a terminal; the list is drawn on
    // `out` (stderr), whose terminal the caller has checked, so stdout may be a pipe or a file.
    class StderrRenderer extends DefaultRenderer {
      static override nonTTY = true;
    }
    this.#output = new ProcessOutput(out, other);
    const tasks = START_PHASES.map((phase) => ({
      title: PHASE_TITLES[phase],
      // Workers registered and the pacing note, under the running row.
      rendererOptions: { outputBar: 2 },
      task: async (_ctx: unknown, task: { title: string; output: string; skip(message?: string): void }) => {
        const begun = await this.#begun.get(phase)!.promise;
        if (begun !== 'started') {
          task.skip(`${PHASE_TITLES[phase]}: ${begun === 'skipped' ? 'not needed' : 'not reached'}`);
          return;
        }
        const t0 = this.#state.started.get(phase) ?? Date.now();
        const draw = (): void => {
          task.title = `${PHASE_TITLES[phase]} (${elapsed(Date.now() - t0)})${this.#detail(phase)}`;
          const notes = [phase === 'ready' || phase === 'scheduler' ? this.#state.workers() : undefined, this.#pacing].filter((x) => x !== undefined);
          if (notes.length > 0) task.output = notes.join('\n');
        };
        draw();
        const tick = setInterval(draw, TICK_MS);
        try {
          await this.#done.get(phase)!.promise;
        } finally {
          clearInterval(tick);
        }
        task.title = `${PHASE_TITLES[phase]} (${elapsed(this.#state.ended.get(phase) ?? Date.now() - t0)})${this.#detail(phase)}`;
      },
    }));
    const listr = new Listr(tasks, {
      renderer: StderrRenderer,
      concurrent: false,
      exitOnError: true,
      // The command handles signals itself (a first one rolls back, a second one gives up).
      registerSignalListeners: false,
      rendererOptions: {
        logger: new ListrLogger({ processOutput: this.#output, useIcons: true, toStderr: [] }),
        collapseSkips: true,
        showSkipMessage: true,
        // The row keeps its title when the start fails: the command prints the error after the list.
        showErrorMessage: false,
      },
    });
    this.#run = listr.run().catch(() => undefined);
  }

  #detail(phase: ClusterPhase): string {
    return phase === 'ready' && this.#state.registered !== undefined ? `: ${this.#state.workers()}` : '';
  }

  event(e: ClusterEvent): void {
    if (this.#over) {
      this.#plain.event(e);
      return;
    }
    this.#state.take(e);
    if (e.type === 'image' || e.type === 'versions' || e.type === 'warning' || e.type === 'member-failed' || e.type === 'rollback') this.#notes.push(plainLine(e, this.#state)!);
    // A rollback can take as long as the cloud takes to delete: the list ends now, and what the
    // rollback does shows as lines.
    if (e.type === 'rollback') void this.settle(new Error(e.reason));
    if (e.type === 'pacing') this.#pacing = `pacing ${e.operation}: ${e.message}`;
    if (e.type === 'phase-start') {
      this.#pacing = undefined;
      const at = START_PHASES.indexOf(e.phase);
      // Every earlier phase that never started was not needed.
      for (const p of START_PHASES.slice(0, Math.max(at, 0))) this.#begun.get(p)!.resolve('skipped');
      this.#begun.get(e.phase)?.resolve('started');
    }
    if (e.type === 'phase-end') this.#done.get(e.phase)?.resolve();
  }

  asked(n: number | undefined): void {
    this.#state.asked = n;
    this.#plain.asked(n);
  }

  settle(error?: unknown): Promise<void> {
    // Once: a signal may end the list before the start's own error does; both wait for the same end.
    this.#settled ??= this.#end(error);
    return this.#settled;
  }

  async #end(error: unknown): Promise<void> {
    if (this.#over) return;
    this.#over = true;
    const why = error ?? new Error('stopped');
    for (const p of START_PHASES) {
      // A running phase fails with the start; one that never ran was not needed, or (after a failure) not reached.
      this.#begun.get(p)!.resolve(error === undefined ? 'skipped' : 'unreached');
      if (error !== undefined) this.#done.get(p)!.reject(why);
      else this.#done.get(p)!.resolve();
    }
    await this.#run;
    // Under the list, once the terminal is given back (what listr2 held back meanwhile comes first, trimmed).
    for (const line of this.#notes.splice(0)) this.#out.write(`${line}\n`);
  }

  abandon(): void {
    if (this.#over) return;
    this.#over = true;
    try {
      // Synchronous: restores the streams' writes and prints what they held back.
      this.#output.release();
    } catch {
      // Not hijacked yet: nothing to give back.
    }
  }
}

/** Whether `stream` is a terminal worth drawing on: one with a width (a pty nobody sized has none), not in CI, not a dumb terminal. */
export function isLiveTerminal(stream: { isTTY?: boolean; columns?: number }, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && (stream.columns ?? 0) > 0 && env.CI !== 'true' && env.CI !== '1' && env.TERM !== 'dumb';
}

/**
 * The progress display for a start: the live list when stderr (where it is drawn) is a terminal
 * and no JSON was asked for; plain lines on stderr otherwise.
 */
export function createProgress(options: { json: boolean; stdout?: NodeJS.WriteStream; stderr?: NodeJS.WriteStream; env?: NodeJS.ProcessEnv }): Progress {
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const env = options.env ?? process.env;
  if (!options.json && isLiveTerminal(stderr, env)) return new LiveProgress(stderr, stdout);
  return new PlainProgress(stderr);
}
