import { afterEach, describe, expect, it } from 'vitest';
import { FakeServer } from './server';
import { Faults, Lifecycle, ManualClock, TokenBucket } from './faults';
import { raw } from './http';

const servers: FakeServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function fake(opts: { clock?: ManualClock } = {}): Promise<FakeServer> {
  const s = new FakeServer({
    name: 'test',
    clock: opts.clock,
    errorShape: (e) => ({ status: e.status, body: { code: e.code, message: e.message, source: e.source } }),
  })
    .route('GET', '/a', 'opA', () => ({ body: { ok: 'a' } }))
    .route('GET', '/b', 'opB', () => ({ body: { ok: 'b' } }));
  servers.push(s);
  await s.start();
  return s;
}

describe('fault injection', () => {
  it('adds latency to the matched operation only', async () => {
    const s = await fake();
    // Wide margins: a loaded machine may take a while for a loopback request, never 600 ms.
    s.faults.latency('opA', 600);
    let t = Date.now();
    await raw(`${s.endpoint}/a`);
    expect(Date.now() - t).toBeGreaterThanOrEqual(590);
    t = Date.now();
    await raw(`${s.endpoint}/b`);
    expect(Date.now() - t).toBeLessThan(500);
  });

  it('fails exactly the k-th call, shaped by the cloud', async () => {
    const s = await fake();
    s.faults.fail('opA', { status: 503, code: 'Unavailable', message: 'try later' }, { nth: 2 });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await raw(`${s.endpoint}/a`)).status);
    expect(statuses).toEqual([200, 503, 200, 200]);
    expect(s.received[1]).toMatchObject({ rejectedBy: 'fault', status: 503 });
    expect((await raw(`${s.endpoint}/b`)).status).toBe(200);
  });

  it('fails the next n calls, or every call, and can be removed', async () => {
    const s = await fake();
    s.faults.fail(['opA', 'opB'], { response: { status: 500, body: 'raw' } }, { times: 2 });
    const a1 = await raw(`${s.endpoint}/a`);
    expect([a1.status, a1.text]).toEqual([500, 'raw']);
    expect((await raw(`${s.endpoint}/b`)).status).toBe(500);
    expect((await raw(`${s.endpoint}/a`)).status).toBe(200);

    const h = s.faults.fail(/op/, { status: 418, code: 'Teapot' });
    expect((await raw(`${s.endpoint}/a`)).json()).toMatchObject({ code: 'Teapot', source: 'fault' });
    expect((await raw(`${s.endpoint}/b`)).status).toBe(418);
    h.remove();
    expect((await raw(`${s.endpoint}/b`)).status).toBe(200);
  });

  it('throttles through a token bucket with the cloud\'s headers and refills with the clock', async () => {
    const clock = new ManualClock();
    const s = await fake({ clock });
    const bucket = new TokenBucket({ capacity: 3, refill: 3, intervalMs: 60_000, clock });
    s.faults.throttle('*', {
      bucket,
      headers: (st) => ({
        'ratelimit-limit': String(st.limit),
        'ratelimit-remaining': String(st.remaining),
        'ratelimit-reset': String(Math.ceil(st.resetAt / 1000)),
      }),
      reject: () => ({ status: 429, code: 'too_many_requests', message: 'API Rate limit exceeded.' }),
    });
    const seen = [];
    for (let i = 0; i < 4; i++) {
      const r = await raw(`${s.endpoint}/${i % 2 ? 'b' : 'a'}`);
      seen.push([r.status, r.headers['ratelimit-remaining']]);
    }
    expect(seen).toEqual([[200, '2'], [200, '1'], [200, '0'], [429, '0']]);
    expect(s.received[3].rejectedBy).toBe('throttle');
    await clock.advance(20_000); // one token back (3 per minute)
    expect((await raw(`${s.endpoint}/a`)).status).toBe(200);
    expect((await raw(`${s.endpoint}/a`)).status).toBe(429);
  });

  it('token bucket reports retry-after and reset', () => {
    const clock = new ManualClock(0);
    const b = new TokenBucket({ capacity: 250, refill: 250, intervalMs: 60_000, clock });
    for (let i = 0; i < 250; i++) expect(b.take().allowed).toBe(true);
    const st = b.take();
    expect(st).toMatchObject({ allowed: false, limit: 250, remaining: 0, retryAfterMs: 240, resetAt: 60_000 });
  });

  it('slow boots apply to the next n VMs', () => {
    const f = new Faults();
    f.slowBoot(5_000, 2);
    expect([f.takeBootDelay(), f.takeBootDelay(), f.takeBootDelay()]).toEqual([5_000, 5_000, 0]);
  });
});

describe('lifecycle on a manual clock', () => {
  it('moves PROVISIONING → STAGING → RUNNING without sleeping, and can be cut short', async () => {
    const clock = new ManualClock();
    const entered: string[] = [];
    const lc = new Lifecycle(clock, 'PROVISIONING', [
      { state: 'STAGING', afterMs: 500 },
      { state: 'RUNNING', afterMs: 1_500 },
    ], (s) => entered.push(s));
    expect(lc.state).toBe('PROVISIONING');
    const running = lc.until('RUNNING');
    await clock.advance(499);
    expect(lc.state).toBe('PROVISIONING');
    await clock.advance(1);
    expect(lc.state).toBe('STAGING');
    await clock.advance(1_500);
    await running;
    expect(entered).toEqual(['STAGING', 'RUNNING']);

    const lc2 = new Lifecycle(clock, 'PROVISIONING', [{ state: 'RUNNING', afterMs: 100 }]);
    lc2.set('TERMINATED' as 'RUNNING');
    await clock.advance(1_000);
    expect(lc2.state).toBe('TERMINATED');
  });

  it('latency follows the injected clock', async () => {
    const clock = new ManualClock();
    const s = await fake({ clock });
    s.faults.latency('opA', 10_000);
    let done = false;
    const p = raw(`${s.endpoint}/a`).then((r) => ((done = true), r));
    await new Promise((r) => setTimeout(r, 50));
    expect(done).toBe(false);
    await clock.advance(10_000);
    expect((await p).status).toBe(200);
  });
});
