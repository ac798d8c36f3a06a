/**
 * Signalling a starting process at a chosen step. `signalAtStep` is the general form: it sends
 * a signal the moment the k-th step event happens (a mutating request reaching a cloud fake, or a
 * progress line of the process), or, when the start has fewer than k, as soon as a marker line
 * shows (e.g. every create was made and the start waits for the scheduler). `killStartAt` is
 * the crashed laptop: the child (test/e2e/fixtures/start-until-killed.ts) is SIGKILLed at the
 * k-th mutating request (the request still takes effect, the child never learns of it).
 * test/e2e/cli-signals.test.ts sends SIGHUP, SIGINT and SIGTERM to the real CLI the same way.
 */
import { expect } from 'vitest';
import { spawnTsx, type SpawnedScript } from './spawn';

const FIXTURE = 'test/e2e/fixtures/start-until-killed.ts';

/** Calls `on(what)` for every step event from now until the returned function is called. */
export type StepWatch = (on: (what: string) => void) => () => void;

export interface KillTarget {
  provider: 'gcp' | 'ec2' | 'digitalocean';
  /** FAKE_OPTIONS of the fixture. */
  options: Record<string, string | number>;
  /**
   * Calls `onMutating(what)` for every mutating request the cloud receives, from now until the
   * returned function is called.
   */
  watchMutating: StepWatch;
}

export interface SignalAtStepOptions {
  child: SpawnedScript;
  signal: NodeJS.Signals;
  /** The k-th step event (1-based) gets the signal; undefined: only the marker does. */
  k?: number;
  /** The step events: mutating requests (a fake's latency hook), or output lines (`outputLines`). */
  steps: StepWatch;
  /** Output after which the signal is sent if the k-th step has not come by then. */
  marker: RegExp;
  /** How that moment is named in the result (e.g. `waiting for the scheduler`, `running`). */
  markerLabel: string;
  /** How long to wait for the marker (default 60 s). */
  timeoutMs?: number;
}

export interface SignalledAt {
  /** Where the signal landed, e.g. `step 3 (CreateSecurityGroup)`. */
  at: string;
  /** Whether it landed at the marker (the start had fewer than k steps). */
  atMarker: boolean;
  /** ms from the call to the signal. */
  afterMs: number;
}

/**
 * Sends `signal` to the child at its k-th step event, else at the marker; resolves once it is sent
 * (or the child ended without either: `at` says so). The child is not waited for.
 */
export async function signalAtStep(o: SignalAtStepOptions): Promise<SignalledAt> {
  const t0 = Date.now();
  let seen = 0;
  let result: SignalledAt | undefined;
  const send = (at: string, atMarker: boolean): void => {
    if (result !== undefined || o.child.child.exitCode !== null || o.child.child.signalCode !== null) return;
    result = { at, atMarker, afterMs: Date.now() - t0 };
    o.child.child.kill(o.signal);
  };
  const unwatch = o.steps((what) => {
    if (o.k !== undefined && ++seen === o.k) send(`step ${o.k}${what ? ` (${what})` : ''}`, false);
  });
  try {
    const marked = o.child.until(o.marker, o.timeoutMs ?? 60_000).then(
      () => true,
      () => false,
    );
    const ended = await Promise.race([o.child.exited.then(() => false), marked]);
    if (ended) send(o.markerLabel, true);
    return result ?? { at: 'never: the process ended first', atMarker: false, afterMs: Date.now() - t0 };
  } finally {
    unwatch();
  }
}

/** Step events from the child's output: every complete line (stdout or stderr) matching `pattern`. */
export function outputLines(child: SpawnedScript, pattern: RegExp): StepWatch {
  return (on) => {
    const partial = { stdout: '', stderr: '' };
    const listeners = (['stdout', 'stderr'] as const).map((name) => {
      const listener = (b: Buffer): void => {
        const lines = (partial[name] + b.toString()).split('\n');
        partial[name] = lines.pop() ?? '';
        for (const line of lines) if (pattern.test(line)) on(line.trim());
      };
      child.child[name].on('data', listener);
      return () => child.child[name].off('data', listener);
    });
    return () => listeners.forEach((off) => off());
  };
}

/** Runs the child until it is killed; says where. */
export async function killStartAt(t: KillTarget, k: number): Promise<{ clusterId: string; killedAt: string }> {
  const child = spawnTsx(FIXTURE, [], { FAKE_PROVIDER: t.provider, FAKE_OPTIONS: JSON.stringify(t.options), DEBUG: '' });
  try {
    const { at } = await signalAtStep({
      child,
      signal: 'SIGKILL',
      k,
      steps: t.watchMutating,
      marker: /"type":"member-launched","clusterId":"[^"]+","role":"worker"/,
      markerLabel: 'waiting for the scheduler',
    });
    const code = await child.exited;
    expect(code, `the child must die by SIGKILL, not end on its own:\n${child.output()}`).toBeNull();
    const clusterId = (JSON.parse(child.stdout().split('\n')[0]!) as { clusterId: string }).clusterId;
    return { clusterId, killedAt: at };
  } finally {
    if (child.child.exitCode === null && child.child.signalCode === null) child.child.kill('SIGKILL');
  }
}
