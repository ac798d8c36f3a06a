/**
 * The Compute REST client (providers/gcp/rest.ts) against the Compute fake: paths and parameters
 * as Compute's REST reference has them (the fake checks every request against Compute's OpenAPI
 * description), pagination of lists and aggregated lists, headers (field mask, our client name,
 * the auth client's), requestId, deadlines, and errors read the way the pipeline reads them.
 */
import createDebug from 'debug';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { GcpApi, gcpErrorInfo, operationOf } from '../../../providers/gcp/api';
import { resolveConnection } from '../../../providers/gcp/options';
import { ComputeRest, computeOrigin, HttpError, NetworkError, RequestTimeoutError } from '../../../providers/gcp/rest';
import type { Instance } from '../../../providers/gcp/types';
import { CloudApiError, ValidationError } from '../../../src/errors';
import { checkFakesAndClose } from '../../helpers/fakes';
import type { FakeGcp } from '../../fakes/gcp';
import { instanceBody } from '../../fakes/gcp/helpers';
import { fakeOptions, startFake, ZONE } from './helpers';

let fake: FakeGcp | undefined;

afterEach(async () => {
  const f = fake;
  fake = undefined;
  await checkFakesAndClose(f ? [f] : [], []);
});

/** Headers of every request the client sent, by path (what reached the wire, not what was meant). */
type Sent = { method: string; path: string; search: string; headers: Headers }[];

async function setup(): Promise<{ fake: FakeGcp; rest: ComputeRest; sent: Sent }> {
  fake = await startFake();
  const o = fake.clientOptions();
  const sent: Sent = [];
  const recording: typeof fetch = async (input, init) => {
    const url = new URL(String(input));
    sent.push({ method: init?.method ?? 'GET', path: url.pathname, search: url.search, headers: new Headers(init?.headers) });
    return fetch(input, init);
  };
  const rest = new ComputeRest({ apiEndpoint: o.apiEndpoint, port: o.port, protocol: o.protocol, auth: o.authClient, fetch: recording });
  return { fake, rest, sent };
}

/** Inserts `names` in `zone` and waits for their operations. */
async function create(rest: ComputeRest, f: FakeGcp, names: string[], zone = ZONE, over: Partial<Instance> = {}): Promise<void> {
  for (const name of names) {
    const [op] = await rest.instances.insert({ project: f.project, zone, requestId: crypto.randomUUID(), instanceResource: instanceBody(name, { machineType: `zones/${zone}/machineTypes/e2-standard-2`, ...over }) });
    let done = op;
    while (done.status !== 'DONE') [done] = await rest.zoneOperations.wait({ project: f.project, zone, operation: op.name! });
    expect(done.error).toBeUndefined();
  }
}

describe('Compute REST client', () => {
  it('list with autoPaginate follows nextPageToken to the end; without it, one page and the next request', async () => {
    const { fake, rest } = await setup();
    await create(rest, fake, ['p-1', 'p-2', 'p-3', 'p-4', 'p-5']);
    const [all] = await rest.instances.list({ project: fake.project, zone: ZONE, filter: 'labels.dask-cluster = "abc"', maxResults: 2 });
    expect(all.map((i) => i.name).sort()).toEqual(['p-1', 'p-2', 'p-3', 'p-4', 'p-5']);
    const lists = fake.server.calls('compute.instances.list');
    // Three pages of two, the second and third asked for with the token of the one before.
    expect(lists.map((c) => c.params.maxResults)).toEqual(['2', '2', '2']);
    expect(lists[0]!.params.pageToken).toBeUndefined();
    expect(lists[1]!.params.pageToken).toEqual(expect.any(String));
    expect(lists[2]!.params.pageToken).not.toBe(lists[1]!.params.pageToken);
    expect(lists.every((c) => c.params.filter === 'labels.dask-cluster = "abc"')).toBe(true);

    const [page, next] = await rest.instances.list({ project: fake.project, zone: ZONE, maxResults: 3 }, { autoPaginate: false });
    expect(page).toHaveLength(3);
    expect(next).toMatchObject({ project: fake.project, zone: ZONE, maxResults: 3, pageToken: expect.any(String) });
    const [rest2, last] = await rest.instances.list(next!, { autoPaginate: false });
    expect(rest2).toHaveLength(2);
    expect(last).toBeNull();
  });

  it('aggregatedListAsync yields [scope, scopedList] page by page across zones', async () => {
    const { fake, rest } = await setup();
    await create(rest, fake, ['a-1', 'a-2', 'a-3'], 'us-central1-a');
    await create(rest, fake, ['b-1', 'b-2'], 'europe-west1-b');
    const seen: [string, string][] = [];
    let entries = 0;
    for await (const [scope, list] of rest.instances.aggregatedListAsync({ project: fake.project, filter: 'labels.dask-cluster = "abc"', maxResults: 2 })) {
      entries++;
      for (const i of list.instances ?? []) seen.push([scope, i.name!]);
    }
    expect(seen.sort()).toEqual([
      ['zones/europe-west1-b', 'b-1'],
      ['zones/europe-west1-b', 'b-2'],
      ['zones/us-central1-a', 'a-1'],
      ['zones/us-central1-a', 'a-2'],
      ['zones/us-central1-a', 'a-3'],
    ]);
    const pages = fake.server.calls('compute.instances.aggregatedList');
    expect(pages.length).toBe(3);
    expect(pages.slice(1).every((c) => typeof c.params.pageToken === 'string')).toBe(true);
    expect(entries).toBeGreaterThanOrEqual(3);
  });

  it('sends the field mask, our client name and the auth client headers; the answer is the partial response', async () => {
    const { fake, rest, sent } = await setup();
    await create(rest, fake, ['m-1'], ZONE, { description: 'a description the mask leaves out' });
    const mask = 'items(name,status),nextPageToken';
    const [items] = await rest.instances.list({ project: fake.project, zone: ZONE }, { otherArgs: { headers: { 'X-Goog-FieldMask': mask } } });
    expect(items).toEqual([{ name: 'm-1', status: expect.any(String) }]);
    expect(fake.fieldSelections).toContainEqual({ operation: 'compute.instances.list', fields: mask });
    const list = sent.find((s) => s.path.endsWith(`/zones/${ZONE}/instances`) && s.method === 'GET')!;
    expect(list.headers.get('x-goog-fieldmask')).toBe(mask);
    expect(list.headers.get('authorization')).toBe('Bearer fake-gcp-token');
    expect(list.headers.get('user-agent')).toMatch(/^dask-cloud\/\S+$/);
    expect(list.headers.get('x-goog-api-client')).toMatch(/^gl-node\/\d+\.\d+\.\d+ dask-cloud\/\S+$/);
    // A get carries no mask of its own.
    await rest.instances.get({ project: fake.project, zone: ZONE, instance: 'm-1' });
    expect(sent.at(-1)!.headers.get('x-goog-fieldmask')).toBeNull();
  });

  it('mutating calls send requestId as a query parameter and the resource as the JSON body; the operation comes back', async () => {
    const { fake, rest, sent } = await setup();
    const requestId = crypto.randomUUID();
    const [op] = await rest.firewalls.insert({
      project: fake.project,
      requestId,
      firewallResource: { name: 'fw-1', network: 'global/networks/default', sourceRanges: ['10.0.0.0/8'], allowed: [{ IPProtocol: 'tcp', ports: ['8786'] }] },
    });
    expect(op).toMatchObject({ name: expect.stringMatching(/^operation-/), operationType: 'insert' });
    const call = fake.server.calls('compute.firewalls.insert')[0]!;
    expect(call.params.requestId).toBe(requestId);
    expect(call.json).toMatchObject({ name: 'fw-1', sourceRanges: ['10.0.0.0/8'] });
    expect(sent.at(-1)!.search).toBe(`?requestId=${requestId}`);
    expect(sent.at(-1)!.headers.get('content-type')).toBe('application/json');
    let done = op;
    while (done.status !== 'DONE') [done] = await rest.globalOperations.wait({ project: fake.project, operation: op.name! });
    expect(fake.server.calls('compute.globalOperations.wait').length).toBeGreaterThan(0);
    const deleteId = crypto.randomUUID();
    const [del] = await rest.firewalls.delete({ project: fake.project, firewall: 'fw-1', requestId: deleteId });
    expect(fake.server.calls('compute.firewalls.delete')[0]!.params).toMatchObject({ firewall: 'fw-1', requestId: deleteId });
    let deleted = del;
    while (deleted.status !== 'DONE') [deleted] = await rest.globalOperations.wait({ project: fake.project, operation: del.name! });
    expect(fake.leaked()).toEqual({});
  });

  it('getSerialPortOutput passes port and a negative start', async () => {
    const { fake, rest } = await setup();
    await create(rest, fake, ['s-1']);
    const [out] = await rest.instances.getSerialPortOutput({ project: fake.project, zone: ZONE, instance: 's-1', port: 1, start: -65_536 });
    expect(typeof out.contents).toBe('string');
    expect(fake.server.calls('compute.instances.getSerialPortOutput')[0]!.params).toMatchObject({ instance: 's-1', port: '1', start: '-65536' });
  });

  it('a non-2xx answer is an HttpError with the body and Retry-After that gcpErrorInfo reads', async () => {
    const { fake, rest } = await setup();
    fake.faults.fail('compute.zones.get', { status: 403, code: 'rateLimitExceeded', message: 'Quota exceeded', headers: { 'retry-after': '3' } }, { times: 1 });
    const err = await rest.zones.get({ project: fake.project, zone: ZONE }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HttpError);
    expect(gcpErrorInfo(err)).toEqual({ status: 403, reason: 'rateLimitExceeded', message: 'Quota exceeded', retryAfterMs: 3000 });
    const [zone] = await rest.zones.get({ project: fake.project, zone: ZONE });
    expect(zone.status).toBe('UP');
  });

  it('the per-call timeout aborts the request: a RequestTimeoutError, not a request left hanging', async () => {
    const { fake, rest } = await setup();
    fake.faults.latency('compute.projects.get', 3_000);
    const started = Date.now();
    const err = await rest.projects.get({ project: fake.project }, { timeout: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RequestTimeoutError);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect((err as Error).message).toMatch(/GET \/compute\/v1\/projects\/.* no answer within 200 ms/);
  });

  it('a body that stalls after the headers is bounded by the same deadline', async () => {
    // Compute's answer starts, then stops: the deadline covers reading the body too.
    const server = http.createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"name":');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      const rest = new ComputeRest({ apiEndpoint: '127.0.0.1', port, protocol: 'http', auth: { getRequestHeaders: async () => ({ authorization: 'Bearer t' }) } });
      const started = Date.now();
      const err = await rest.zones.get({ project: 'p-123456', zone: ZONE }, { timeout: 200 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RequestTimeoutError);
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('a refused connection is a NetworkError with the system code, and no URL query or token in the message', async () => {
    const { fake: stopped } = await setup();
    const o = stopped.clientOptions();
    await stopped.stop();
    fake = undefined;
    const dead = new ComputeRest({ apiEndpoint: '127.0.0.1', port: o.port, protocol: 'http', auth: o.authClient });
    const err = await dead.instances.delete({ project: 'p-123456', zone: ZONE, instance: 'x', requestId: 'secret-ish' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect((err as NetworkError).code).toBe('ECONNREFUSED');
    expect((err as Error).message).not.toMatch(/secret-ish|fake-gcp-token/);
  });

  it('one base URL for REST paths and the batch endpoint', () => {
    expect(computeOrigin({})).toBe('https://compute.googleapis.com');
    expect(computeOrigin({ apiEndpoint: '127.0.0.1', port: 8080, protocol: 'http' })).toBe('http://127.0.0.1:8080');
    expect(computeOrigin({ apiEndpoint: '::1', port: 8080, protocol: 'http' })).toBe('http://[::1]:8080');
  });
});

describe('through the pipeline (GcpApi)', () => {
  function pipeline(f: FakeGcp, over: Partial<ConstructorParameters<typeof GcpApi>[0]> = {}): GcpApi {
    return new GcpApi({ ...resolveConnection(fakeOptions(f)), log: createDebug('dask-cloud:gcp:test'), baseDelayMs: 20, maxDelayMs: 100, ...over });
  }

  it('an error body becomes a CloudApiError with the status and reason', async () => {
    fake = await startFake();
    const api = pipeline(fake);
    const err = await api
      .call('looking up network nope', async (c, _id, req) => (await c.networks.get({ project: fake!.project, network: 'nope' }, req))[0])
      .catch((e: unknown) => e);
    expect(CloudApiError.isInstance(err)).toBe(true);
    expect((err as CloudApiError).details).toMatchObject({ status: 404, reason: 'notFound', call: 'looking up network nope' });
    expect((err as Error).message).toMatch(/^gcp: looking up network nope failed: HTTP 404 notFound: /);
    await api.close();
  });

  it('requestId is sent, and the same on the retry after a 503', async () => {
    fake = await startFake();
    const api = pipeline(fake);
    fake.faults.fail('compute.instances.insert', { status: 503, code: 'backendError' }, { times: 1 });
    const res = await api.call('creating r-1', (c, requestId, req) => c.instances.insert({ project: fake!.project, zone: ZONE, requestId, instanceResource: instanceBody('r-1') }, req), { mutating: true });
    const calls = fake.server.calls('compute.instances.insert');
    expect(calls.map((c) => c.status)).toEqual([503, 200]);
    expect(calls[0]!.params.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(calls[1]!.params.requestId).toBe(calls[0]!.params.requestId);
    await api.waitOperation('creating r-1', operationOf(res), { project: fake.project, zone: ZONE });
    const del = await api.call('deleting r-1', (c, requestId, req) => c.instances.delete({ project: fake!.project, zone: ZONE, instance: 'r-1', requestId }, req), { mutating: true });
    await api.waitOperation('deleting r-1', operationOf(del), { project: fake.project, zone: ZONE });
    expect(fake.leaked()).toEqual({});
    await api.close();
  });

  it('a batch goes to the batch endpoint of the same origin, signed the same way', async () => {
    fake = await startFake();
    const api = pipeline(fake);
    const answers = await api.batch('two reads', [
      { method: 'GET', path: `/compute/v1/projects/${fake.project}/zones/${ZONE}` },
      { method: 'GET', path: `/compute/v1/projects/${fake.project}/global/networks/nope` },
    ]);
    expect(answers.map((a) => a.status)).toEqual([200, 404]);
    expect(JSON.parse(answers[0]!.body)).toMatchObject({ name: ZONE });
    await api.close();
  });

  it('close() is idempotent and refuses later calls; toJSON shows the endpoint and no credentials', async () => {
    fake = await startFake();
    const api = pipeline(fake);
    expect(JSON.stringify(api)).toBe(`{"endpoint":"http://127.0.0.1:${fake.clientOptions().port}","closed":false}`);
    await api.close();
    await api.close();
    await expect(api.rest()).rejects.toThrow(/closed/);
  });
});

describe('clientOptions', () => {
  const base = { projectId: 'my-project-1', zone: ZONE };

  it('unknown keys are refused with a ValidationError naming them (and the closest known key)', () => {
    const err = (() => {
      try {
        resolveConnection({ ...base, clientOptions: { apiEndpont: 'x', fallback: true } as never });
      } catch (e) {
        return e;
      }
    })();
    expect(ValidationError.isInstance(err)).toBe(true);
    expect((err as Error).message).toMatch(/unknown keys "apiEndpont" \(did you mean "apiEndpoint"\?\), "fallback"/);
  });

  it('known keys are type-checked: port, protocol, authClient, scopes', () => {
    expect(() => resolveConnection({ ...base, clientOptions: { port: 0 } })).toThrow(/clientOptions\.port/);
    expect(() => resolveConnection({ ...base, clientOptions: { protocol: 'ftp' as never } })).toThrow(/clientOptions\.protocol/);
    expect(() => resolveConnection({ ...base, clientOptions: { authClient: {} as never } })).toThrow(/getRequestHeaders/);
    expect(() => resolveConnection({ ...base, authClient: 'token' as never })).toThrow(/authClient must be a google-auth-library client/);
    expect(() => resolveConnection({ ...base, clientOptions: { scopes: [1] as never } })).toThrow(/clientOptions\.scopes/);
    const ok = resolveConnection({ ...base, clientOptions: { keyFilename: '/k.json', scopes: 'https://www.googleapis.com/auth/compute' } });
    expect(ok.clientOptions).toEqual({ keyFilename: '/k.json', scopes: 'https://www.googleapis.com/auth/compute', projectId: 'my-project-1' });
  });
});
