/**
 * The DigitalOcean request pipeline (providers/digitalocean/api.ts) against the fake: throttling
 * retried as DigitalOcean asks, 5xx retried only where repeating is safe, errors mapped to
 * CloudApiError with DigitalOcean's {id, message} and the operation, bounded concurrency, and
 * the token never in an error.
 */
import { inspect } from 'node:util';
import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { checkFakesAndClose } from '../../helpers/fakes';
import type { FakeDigitalOcean } from '../../fakes/digitalocean';
import { DoApi, isAmbiguous, type DoApiOptions } from '../../../providers/digitalocean/api';
import { CloudApiError, DaskCloudError } from '../../../src/errors';
import { startFake } from './helpers';

const fakes: FakeDigitalOcean[] = [];
afterEach(() => checkFakesAndClose(fakes, []));

async function setup(options: Partial<DoApiOptions> = {}) {
  const fake = await startFake(2);
  fakes.push(fake);
  const api = new DoApi({ token: fake.token, endpoint: fake.endpoint, random: () => 0, ...options });
  return { fake, api };
}

const list = (api: DoApi, options = { idempotent: true }) => api.call('droplets_list', (c) => c.droplet.listDroplets({ tag_name: 'x' }), options);
const create = (api: DoApi) =>
  api.call('droplets_create', (c) => c.droplet.createDroplets({ names: ['a'], region: 'nyc3', size: 's-2vcpu-4gb', image: 'debian-12-x64', tags: ['x'] }), {
    idempotent: false,
  });

async function rejection(p: Promise<unknown>): Promise<CloudApiError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(DaskCloudError.isInstance(err) && (err as DaskCloudError).code === 'E_CLOUD_API').toBe(true);
  return err as CloudApiError;
}

describe('DigitalOcean request pipeline', () => {
  it('429 with retry-after: waits as told, then succeeds', async () => {
    const { fake, api } = await setup();
    fake.faults.fail('droplets_list', { status: 429, code: 'too_many_requests', message: 'API Rate limit exceeded.', headers: { 'retry-after': '1' } }, { times: 1 });
    const started = Date.now();
    const r = await list(api);
    expect(r.droplets).toEqual([]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    expect(fake.server.calls('droplets_list').map((c) => c.status)).toEqual([429, 200]);
  });

  it('429 without retry-after but with ratelimit-remaining 0: waits until ratelimit-reset', async () => {
    const { fake, api } = await setup();
    const reset = Math.ceil(Date.now() / 1000) + 1;
    fake.faults.fail(
      'droplets_create',
      { status: 429, code: 'too_many_requests', message: 'API Rate limit exceeded.', headers: { 'ratelimit-remaining': '0', 'ratelimit-reset': String(reset) } },
      { times: 1 },
    );
    await create(api); // a create is retried after a 429: it was refused, not done
    expect(Date.now()).toBeGreaterThanOrEqual(reset * 1000);
    expect(fake.server.calls('droplets_create').map((c) => c.status)).toEqual([429, 202]);
  });

  it("the fake's own DigitalOcean rate limiter (burst 429 + retry-after) is ridden out", async () => {
    const { fake, api } = await setup();
    fake.throttle({ perMinute: 60 }); // one request a second once the burst is spent
    const results = await Promise.all(Array.from({ length: 62 }, () => list(api)));
    expect(results).toHaveLength(62);
    const statuses = fake.server.calls('droplets_list').map((c) => c.status);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
    expect(statuses.filter((s) => s === 200)).toHaveLength(62);
  });

  it('requests are started no faster than the request budget: past the burst, none is answered 429', async () => {
    const perMinute = 120;
    // A little under the budget, as DO_REQUEST_RATE is: the two buckets' clocks differ by the request's travel time.
    const rate = { burst: perMinute - 4, perSecond: (0.95 * perMinute) / 60 };
    const { fake, api } = await setup({ rate });
    fake.throttle({ perMinute });
    const extra = 8;
    const started = Date.now();
    await Promise.all(Array.from({ length: perMinute + extra }, () => list(api)));
    // The burst goes at once; the rest wait for the budget to refill.
    expect(Date.now() - started).toBeGreaterThanOrEqual(((perMinute + extra - rate.burst) / rate.perSecond) * 1000 - 50);
    const statuses = fake.server.calls('droplets_list').map((c) => c.status);
    expect(statuses).toHaveLength(perMinute + extra);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
  });

  it('a 429 holds every queued request for as long as DigitalOcean asks, instead of each being refused in turn', async () => {
    const { fake, api } = await setup({ maxConcurrentRequests: 1 });
    fake.faults.fail('droplets_list', { status: 429, code: 'too_many_requests', message: 'API Rate limit exceeded.', headers: { 'retry-after': '1' } }, { times: 1 });
    await Promise.all(Array.from({ length: 5 }, () => list(api)));
    expect(fake.server.calls('droplets_list').map((c) => c.status)).toEqual([429, 200, 200, 200, 200, 200]);
  });

  it('5xx is retried for reads, not for creates (no idempotency token: the caller reconciles)', async () => {
    const { fake, api } = await setup();
    fake.faults.fail('droplets_list', { status: 503, code: 'service_unavailable' }, { times: 2 });
    await list(api);
    expect(fake.server.calls('droplets_list').map((c) => c.status)).toEqual([503, 503, 200]);

    fake.faults.fail('droplets_create', { status: 500, code: 'server_error', message: 'Unexpected server-side error' }, { times: 1 });
    const err = await rejection(create(api));
    expect(isAmbiguous(err)).toBe(true);
    expect(fake.server.calls('droplets_create')).toHaveLength(1);
  });

  it("maps errors to CloudApiError with DigitalOcean's id, message, request id and the operation", async () => {
    const { fake, api } = await setup();
    const err = await rejection(
      api.call('droplets_create', (c) => c.droplet.createDroplets({ names: ['a'], region: 'nyc3', size: 'no-such-size', image: 'debian-12-x64' }), { idempotent: false }),
    );
    expect(err.message).toMatch(/^DigitalOcean droplets_create failed \(HTTP 422 unprocessable_entity: Size "no-such-size" is not a valid size\) \[request [0-9a-f-]+\]$/);
    expect(err.details).toMatchObject({ provider: 'digitalocean', operation: 'droplets_create', status: 422, id: 'unprocessable_entity' });
    expect(err.details.requestId).toBe(fake.server.calls('droplets_create')[0]!.requestId);
    expect(isAmbiguous(err)).toBe(false);
  });

  it('the raw request (public_networking: false) goes through the same pipeline and error mapping', async () => {
    const { fake, api } = await setup();
    fake.faults.fail('droplets_create', { status: 429, code: 'too_many_requests', headers: { 'retry-after': '0' } }, { times: 1 });
    const body = { names: ['p'], region: 'nyc3', size: 's-2vcpu-4gb', image: 'debian-12-x64', public_networking: false };
    const r = await api.post<{ droplets: { name: string }[] }>('droplets_create', '/droplets', body, { idempotent: false });
    expect(r.droplets.map((d) => d.name)).toEqual(['p']);
    expect(fake.server.calls('droplets_create').map((c) => c.status)).toEqual([429, 202]);
    const err = await rejection(api.post('droplets_create', '/droplets', { ...body, image: 'nope' }, { idempotent: false }));
    expect(err.message).toMatch(/DigitalOcean droplets_create failed \(HTTP 422 unprocessable_entity: You specified an invalid image/);
  });

  it('gives up within the operation deadline and says why', async () => {
    const { fake, api } = await setup({ operationTimeoutMs: 1_500 });
    fake.faults.fail('droplets_list', { status: 429, code: 'too_many_requests', headers: { 'retry-after': '3600' } });
    const started = Date.now();
    const err = await rejection(list(api));
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(err.message).toMatch(/HTTP 429 too_many_requests.*gave up after 1 attempts within 1500 ms/);
  });

  it('a refused connection is retried (it never reached the API) until the deadline', async () => {
    // A loopback port nobody listens on.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const api = new DoApi({ token: 'dop_v1_secret-token-for-test', endpoint: `http://127.0.0.1:${port}/v2`, operationTimeoutMs: 400, random: () => 0 });
    const err = await rejection(list(api, { idempotent: false }));
    expect(err.message).toMatch(/ECONNREFUSED/);
    expect(err.details.attempts).toBeGreaterThan(1);
    expect(inspect(err, { depth: null })).not.toContain('secret-token-for-test');
  });

  it('bounds requests in flight', async () => {
    const { fake, api } = await setup({ maxConcurrentRequests: 3 });
    fake.faults.latency('droplets_list', 40);
    let inFlight = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 12 }, () =>
        api.call(
          'droplets_list',
          async (c) => {
            peak = Math.max(peak, ++inFlight);
            try {
              return await c.droplet.listDroplets({});
            } finally {
              inFlight--;
            }
          },
          { idempotent: true },
        ),
      ),
    );
    expect(peak).toBe(3);
    expect(api.inFlight).toBe(0);
  });

  it('an aborted signal stops before any request', async () => {
    const { fake, api } = await setup();
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    await expect(list(api, { idempotent: true, signal: controller.signal } as never)).rejects.toThrow('stop');
    expect(fake.server.received).toHaveLength(0);
  });

  it('never keeps the token: not in errors (even deep), not in inspect/JSON of the pipeline', async () => {
    const { fake, api } = await setup();
    fake.faults.fail('droplets_list', { status: 403, code: 'forbidden' }, { times: 1 });
    const err = await rejection(list(api));
    expect(err.cause).toBeUndefined();
    expect(inspect(err, { depth: null, showHidden: true })).not.toContain(fake.token);
    expect(JSON.stringify(err.details)).not.toContain(fake.token);
    expect(inspect(api, { depth: null })).not.toContain(fake.token);
    expect(JSON.stringify(api)).not.toContain(fake.token);
  });
});
