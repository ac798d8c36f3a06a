/**
 * The request pipeline's limiter (src/cluster/limiter.ts) and the shared abort listener
 * (src/cluster/abort.ts): bounded concurrency in FIFO order, pacing to a request budget, a hold
 * after a throttled answer, and one abort listener per signal however many calls wait.
 */
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { Limiter } from '../../src/cluster/limiter';
import { realClock } from '../../src/cluster/retry';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** Collects Node warnings emitted while `fn` runs (and one turn after). */
async function warningsDuring(fn: () => Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  const onWarning = (w: Error) => seen.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  try {
    await fn();
    await new Promise((r) => setImmediate(r));
  } finally {
    process.off('warning', onWarning);
  }
  return seen;
}

describe('Limiter', () => {
  it('runs at most `max` calls at once, the rest in the order they came', async () => {
    const limiter = new Limiter(2);
    const gates = Array.from({ length: 5 }, () => deferred());
    const started: number[] = [];
    const runs = gates.map((g, i) =>
      limiter.run(async () => {
        started.push(i);
        await g.promise;
      }),
    );
    await new Promise((r) => setImmediate(r));
    expect(started).toEqual([0, 1]);
    expect(limiter.inFlight).toBe(2);
    expect(limiter.queued).toBe(3);
    gates[1]!.resolve();
    await new Promise((r) => setImmediate(r));
    expect(started).toEqual([0, 1, 2]);
    for (const g of gates) g.resolve();
    await Promise.all(runs);
    expect(started).toEqual([0, 1, 2, 3, 4]);
    expect(limiter.inFlight).toBe(0);
  });

  it('a thousand calls queued on one signal add one abort listener, print no warning, and all leave on abort', async () => {
    const controller = new AbortController();
    const limiter = new Limiter(1);
    const gate = deferred();
    const warnings = await warningsDuring(async () => {
      const first = limiter.run(() => gate.promise, controller.signal);
      const queued = Array.from({ length: 1000 }, () => limiter.run(async () => 'ran', controller.signal).catch((e: unknown) => e));
      expect(limiter.queued).toBe(1000);
      expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
      controller.abort(new Error('stop'));
      const results = await Promise.all(queued);
      expect(results.every((r) => r instanceof Error && r.message === 'stop')).toBe(true);
      expect(limiter.queued).toBe(0);
      gate.resolve();
      await first;
      expect(limiter.inFlight).toBe(0);
    });
    expect(warnings).toEqual([]);
  });

  it('a waiter that leaves takes no slot: the next one runs', async () => {
    const limiter = new Limiter(1);
    const gate = deferred();
    const first = limiter.run(() => gate.promise);
    const controller = new AbortController();
    const leaving = limiter.run(async () => 'never', controller.signal).catch((e: unknown) => e);
    const staying = limiter.run(async () => 'ran');
    controller.abort(new Error('gone'));
    expect(await leaving).toBeInstanceOf(Error);
    gate.resolve();
    await first;
    expect(await staying).toBe('ran');
  });

  it('paces to its rate: the burst at once, then one call per 1/perSecond', async () => {
    const perSecond = 20;
    const burst = 3;
    const calls = 10;
    const limiter = new Limiter(100, { rate: { burst, perSecond } });
    const t0 = performance.now();
    const at: number[] = [];
    await Promise.all(Array.from({ length: calls }, () => limiter.run(async () => void at.push(performance.now() - t0))));
    // The burst needs no waiting; the other 7 need 7/20 s of refill at least (a loaded machine only adds).
    const refillMs = ((calls - burst) / perSecond) * 1000;
    expect(at[calls - 1]!).toBeGreaterThanOrEqual(refillMs - 5);
    for (let i = burst; i < calls; i++) expect(at[i]!).toBeGreaterThanOrEqual(((i - burst + 1) / perSecond) * 1000 - 5);
  });

  it('hold(ms) keeps every queued call waiting for that long, and empties the bucket', async () => {
    const limiter = new Limiter(4, { rate: { burst: 10, perSecond: 50 } });
    const holdMs = 200;
    limiter.hold(holdMs);
    const t0 = performance.now();
    const at = await Promise.all(Array.from({ length: 3 }, () => limiter.run(async () => performance.now() - t0)));
    expect(Math.min(...at)).toBeGreaterThanOrEqual(holdMs - 5);
    // Emptied: the 3 calls waited for tokens at 50/s after the hold, not for the 10-call burst.
    expect(Math.max(...at)).toBeGreaterThanOrEqual(holdMs + (3 / 50) * 1000 - 5);
  });
});

describe('backoff sleeps', () => {
  it('share one abort listener per signal', async () => {
    const controller = new AbortController();
    const warnings = await warningsDuring(async () => {
      const sleeps = Array.from({ length: 200 }, () => realClock.sleep(60_000, controller.signal).catch((e: unknown) => e));
      expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
      controller.abort(new Error('stop'));
      expect((await Promise.all(sleeps)).every((e) => e instanceof Error)).toBe(true);
    });
    expect(warnings).toEqual([]);
  });
});
