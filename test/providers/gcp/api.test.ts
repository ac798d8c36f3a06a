/**
 * The GCP request pipeline (`GcpApi`) against the Compute fake through the real SDK: retries on
 * throttling and server errors (Retry-After honoured), one requestId per logical call that makes
 * a retried insert idempotent, deadlines, bounded concurrency, operation waits and their errors.
 */
import createDebug from 'debug';
import { afterEach, describe, expect, it } from 'vitest';
import { GcpApi, gcpErrorInfo, isRetryable, operationOf } from '../../../providers/gcp/api';
import { resolveConnection } from '../../../providers/gcp/options';
import { CloudApiError, DaskCloudError } from '../../../src/errors';
import { checkFakesAndClose } from '../../helpers/fakes';
import type { FakeGcp } from '../../fakes/gcp';
import { instanceBody } from '../../fakes/gcp/helpers';
import { fakeOptions, startFake, ZONE } from './helpers';

let fake: FakeGcp | undefined;
let api: GcpApi | undefined;

afterEach(async () => {
  const [f, a] = [fake, api];
  [fake, api] = [undefined, undefined];
  await checkFakesAndClose(f ? [f] : [], a ? [a] : []);
});

interface Retry {
  what: string;
  attempt: number;
  delayMs: number;
  reason?: string;
}

async function setup(
  over: Partial<ConstructorParameters<typeof GcpApi>[0]> = {},
  fakeOpts: Parameters<typeof startFake>[0] = {},
): Promise<{ fake: FakeGcp; api: GcpApi; retries: Retry[] }> {
  fake = await startFake(fakeOpts);
  const retries: Retry[] = [];
  api = new GcpApi({
    ...resolveConnection(fakeOptions(fake)),
    log: createDebug('dask-cloud:gcp:test'),
    baseDelayMs: 20,
    maxDelayMs: 200,
    onRetry: (what, err, attempt, delayMs) => retries.push({ what, attempt, delayMs, reason: gcpErrorInfo(err).reason }),
    ...over,
  });
  return { fake, api, retries };
}

const getZone = (a: GcpApi, fake: FakeGcp, signal?: AbortSignal) =>
  a.call('reading the zone', async (c, _id, req) => (await c.networks.get({ project: fake.project, network: 'default' }, req))[0], { signal });

describe('GcpApi request pipeline', () => {
  it('retries 403 rateLimitExceeded, 429 and 503, then succeeds', async () => {
    const { fake, api, retries } = await setup();
    fake.faults.fail('compute.networks.get', { status: 403, code: 'rateLimitExceeded', message: "Quota exceeded for quota metric 'Queries'" }, { times: 1 });
    fake.faults.fail('compute.networks.get', { status: 429, code: 'rateLimitExceeded' }, { nth: 2 });
    fake.faults.fail('compute.networks.get', { status: 503, code: 'backendError' }, { nth: 3 });
    const net = await getZone(api, fake);
    expect(net.name).toBe('default');
    expect(retries.map((r) => r.reason)).toEqual(['rateLimitExceeded', 'rateLimitExceeded', 'backendError']);
    expect(fake.server.calls('compute.networks.get').map((c) => c.status)).toEqual([403, 429, 503, 200]);
  });

  it('per-minute quota (the fake throttle) is waited out', async () => {
    const { fake, api, retries } = await setup({ baseDelayMs: 200, maxDelayMs: 2_000 });
    // 60 calls a minute: one token a second.
    fake.throttle({ perMinute: 60, match: 'compute.networks.get' });
    const results = await Promise.all(Array.from({ length: 62 }, () => getZone(api, fake)));
    expect(results).toHaveLength(62);
    expect(fake.server.calls().filter((c) => c.rejectedBy === 'throttle').length).toBeGreaterThan(0);
    expect(retries.every((r) => r.reason === 'rateLimitExceeded')).toBe(true);
  });

  it('honours Retry-After', async () => {
    const { fake, api, retries } = await setup();
    fake.faults.fail('compute.networks.get', { status: 503, code: 'backendError', headers: { 'retry-after': '1' } }, { times: 1 });
    const t = Date.now();
    await getZone(api, fake);
    expect(retries).toEqual([expect.objectContaining({ delayMs: 1000 })]);
    expect(Date.now() - t).toBeGreaterThanOrEqual(950);
  });

  it('does not retry what a retry cannot fix; the CloudApiError names the call and keeps the reason', async () => {
    const { fake, api, retries } = await setup();
    const err = await api
      .call('looking up network nope', async (c, _id, req) => (await c.networks.get({ project: fake.project, network: 'nope' }, req))[0])
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CloudApiError);
    const e = err as CloudApiError;
    expect(e.code).toBe('E_CLOUD_API');
    expect(e.message).toBe(`gcp: looking up network nope failed: HTTP 404 notFound: The resource 'projects/${fake.project}/global/networks/nope' was not found`);
    expect(e.details).toMatchObject({ status: 404, reason: 'notFound', call: 'looking up network nope' });
    expect(retries).toEqual([]);
    // A 403 that is not a quota (permissions) is final too.
    fake.faults.fail('compute.networks.get', { status: 403, code: 'forbidden', message: "Required 'compute.networks.get' permission" }, { times: 1 });
    expect(((await getZone(api, fake).catch((x: unknown) => x)) as CloudApiError).details).toMatchObject({ status: 403, reason: 'forbidden' });
    expect(retries).toEqual([]);
  });

  it('gives up at the retry deadline with the attempts and the last error', async () => {
    const { fake, api } = await setup({ retryTimeoutMs: 300 });
    fake.faults.fail('compute.networks.get', { status: 503, code: 'backendError' }, { always: true });
    const err = (await getZone(api, fake).catch((e: unknown) => e)) as CloudApiError;
    expect(err).toBeInstanceOf(CloudApiError);
    expect(err.message).toMatch(/^gcp: reading the zone: gave up after \d+ attempts in 300 ms; last error: /);
    expect(err.details).toMatchObject({ status: 503, reason: 'backendError' });
  });

  it('one requestId per logical call, the same on every retry: a retried insert creates once', async () => {
    const { fake, api, retries } = await setup({ requestTimeoutMs: 300 });
    let n = 0;
    // The first insert is processed, but its answer comes too late: the client retries.
    fake.faults.latency('compute.instances.insert', () => (n++ === 0 ? 700 : 0));
    const [first, second] = await Promise.all([
      api.call('creating vm-a', (c, requestId, req) => c.instances.insert({ project: fake.project, zone: ZONE, requestId, instanceResource: instanceBody('vm-a') }, req), { mutating: true }),
      new Promise((r) => setTimeout(r, 50)).then(() =>
        api!.call('creating vm-b', (c, requestId, req) => c.instances.insert({ project: fake.project, zone: ZONE, requestId, instanceResource: instanceBody('vm-b') }, req), { mutating: true }),
      ),
    ]);
    const inserts = fake.server.calls('compute.instances.insert');
    const ids = inserts.map((c) => c.params.requestId as string);
    // vm-a twice with one requestId, vm-b once with another.
    expect(ids).toHaveLength(3);
    expect(new Set(ids).size).toBe(2);
    expect(ids.every((id) => /^[0-9a-f-]{36}$/.test(id))).toBe(true);
    expect(retries).toEqual([expect.objectContaining({ what: 'creating vm-a', reason: 'DEADLINE_EXCEEDED' })]);
    await new Promise((r) => setTimeout(r, 800)); // let the slow first attempt land
    expect(fake.resources().instances!.map((i) => i.id).sort()).toEqual([`zones/${ZONE}/instances/vm-a`, `zones/${ZONE}/instances/vm-b`]);
    // Both attempts got the same operation; without the requestId the retry would be a 409.
    const op = operationOf(first);
    expect(op.name).toMatch(/^operation-/);
    expect(operationOf(second).name).not.toBe(op.name);
    await api.waitOperation('creating vm-a', op, { project: fake.project, zone: ZONE });
    for (const name of ['vm-a', 'vm-b']) {
      const del = operationOf(await api.call(`deleting ${name}`, (c, requestId, req) => c.instances.delete({ project: fake.project, zone: ZONE, instance: name, requestId }, req), { mutating: true }));
      await api.waitOperation(`deleting ${name}`, del, { project: fake.project, zone: ZONE });
    }
    expect(fake.leaked()).toEqual({});
  });

  it('an operation that ends with error.errors[] becomes a CloudApiError naming the operation', async () => {
    const { fake, api } = await setup();
    fake.failOperations({ operationType: 'insert' });
    const op = operationOf(
      await api.call('creating vm-x', (c, requestId, req) => c.instances.insert({ project: fake.project, zone: ZONE, requestId, instanceResource: instanceBody('vm-x') }, req), { mutating: true }),
    );
    const err = (await api.waitOperation('creating vm-x', op, { project: fake.project, zone: ZONE }).catch((e: unknown) => e)) as CloudApiError;
    expect(err).toBeInstanceOf(CloudApiError);
    expect(err.message).toContain(`gcp: creating vm-x failed: operation ${op.name} (insert) ended with ZONE_RESOURCE_POOL_EXHAUSTED: The zone`);
    expect(err.details).toMatchObject({ operation: op.name, operationType: 'insert', httpStatus: 503, errors: [{ code: 'ZONE_RESOURCE_POOL_EXHAUSTED' }] });
    expect(fake.leaked()).toEqual({});
  });

  it('operation waits are bounded', async () => {
    // Staging takes longer than the operation deadline: the wait gives up, saying what it saw.
    const { fake, api } = await setup({ operationTimeoutMs: 400 }, { lifecycleMs: { provisioningMs: 100, stagingMs: 5_000 } });
    const op = operationOf(await api.call('creating slow', (c, requestId, req) => c.instances.insert({ project: fake.project, zone: ZONE, requestId, instanceResource: instanceBody('slow') }, req), { mutating: true }));
    const t = Date.now();
    const err = (await api.waitOperation('creating slow', op, { project: fake.project, zone: ZONE }).catch((e: unknown) => e)) as CloudApiError;
    expect(err.message).toMatch(/operation operation-\S+ not done after 400 ms \(last status (PENDING|RUNNING)\)/);
    expect(Date.now() - t).toBeLessThan(3_000);
    const del = operationOf(await api.call('deleting slow', (c, requestId, req) => c.instances.delete({ project: fake.project, zone: ZONE, instance: 'slow', requestId }, req), { mutating: true }));
    await api.waitOperation('deleting slow', del, { project: fake.project, zone: ZONE });
  });

  it('bounds concurrency', async () => {
    const { fake, api } = await setup({ maxConcurrentRequests: 3 });
    fake.faults.latency('compute.networks.get', 100);
    let inFlight = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 10 }, () =>
        api.call('reading', async (c, _id, req) => {
          inFlight++;
          peak = Math.max(peak, inFlight);
          try {
            return await c.networks.get({ project: fake.project, network: 'default' }, req);
          } finally {
            inFlight--;
          }
        }),
      ),
    );
    expect(peak).toBe(3);
  });

  it('a read stops at once when the signal aborts; retries stop too', async () => {
    const { fake, api } = await setup();
    const injectedMs = 10_000;
    fake.faults.latency('compute.networks.get', injectedMs);
    const controller = new AbortController();
    const t = Date.now();
    setTimeout(() => controller.abort(new DaskCloudError('E_ABORTED', 'stop')), 100);
    const err = await getZone(api, fake, controller.signal).catch((e: unknown) => e);
    expect((err as DaskCloudError).message).toBe('stop');
    // Without the abort the read would take the injected latency at least.
    expect(Date.now() - t).toBeLessThan(injectedMs);
  });

  it('classifies errors', () => {
    const gaxios = (status: number, reason: string) => Object.assign(new Error(JSON.stringify({ error: { code: status, message: 'm', errors: [{ reason }] } })), { status });
    expect(isRetryable(gaxios(403, 'rateLimitExceeded'))).toBe(true);
    expect(isRetryable(gaxios(403, 'userRateLimitExceeded'))).toBe(true);
    expect(isRetryable(gaxios(403, 'forbidden'))).toBe(false);
    expect(isRetryable(gaxios(429, 'rateLimitExceeded'))).toBe(true);
    expect(isRetryable(gaxios(500, 'backendError'))).toBe(true);
    expect(isRetryable(gaxios(400, 'invalid'))).toBe(false);
    expect(isRetryable(gaxios(404, 'notFound'))).toBe(false);
    expect(isRetryable(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))).toBe(true);
    expect(gcpErrorInfo(Object.assign(new Error('x'), { status: 503, response: { headers: { 'retry-after': '7' } } })).retryAfterMs).toBe(7000);
  });
});
