/**
 * Compute's batch endpoint (`POST /batch/compute/v1`, multipart/mixed), driven with raw `fetch`:
 * the wire format is what is under test. Instances are made with the real SDK.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { checkFakesAndClose } from '../../helpers/fakes';
import { ManualClock } from '../core';
import { BATCH_MAX_CALLS } from './batch';
import { FakeGcp, type FakeGcpOptions } from './fake-gcp';
import { closeClients, sdkClients } from './helpers';

const PROJECT = 'dask-fake-project';
const ZONE = 'us-central1-a';
const ZONE_PATH = `/compute/v1/projects/${PROJECT}/zones/${ZONE}`;

const fakes: FakeGcp[] = [];

async function setup(opts: FakeGcpOptions = {}): Promise<FakeGcp> {
  const fake = await FakeGcp.start({ lifecycleMs: 5, ...opts });
  fakes.push(fake);
  return fake;
}

// No contract violation, handler crash or boot error; then stop.
afterEach(() => checkFakesAndClose(fakes, []));

/** `vm-001` … `vm-NNN`, RUNNING, made with one SDK bulkInsert. */
async function createInstances(fake: FakeGcp, count: number): Promise<string[]> {
  const c = sdkClients(fake);
  try {
    const [lro] = await c.instances.bulkInsert({
      project: PROJECT,
      zone: ZONE,
      bulkInsertInstanceResourceResource: {
        count,
        namePattern: 'vm-###',
        instanceProperties: {
          machineType: 'e2-standard-2',
          disks: [{ boot: true, autoDelete: true, initializeParams: { sourceImage: 'projects/debian-cloud/global/images/family/debian-12' } }],
          networkInterfaces: [{ network: 'global/networks/default' }],
        },
      },
    });
    await c.zoneOps.wait({ project: PROJECT, zone: ZONE, operation: (lro.latestResponse as { name: string }).name });
  } finally {
    await closeClients(c);
  }
  return Array.from({ length: count }, (_, i) => `vm-${String(i + 1).padStart(3, '0')}`);
}

interface Call {
  id?: string;
  method: string;
  /** Path (and query) as the request line carries it. */
  target: string;
  headers?: Record<string, string>;
  json?: unknown;
}

/** A batch body as the page describes it, with CRLF line ends. */
function multipart(calls: Call[], boundary = 'batch_test_boundary'): string {
  const parts = calls.map((c) => {
    const headers = { ...(c.json === undefined ? {} : { 'Content-Type': 'application/json' }), ...(c.headers ?? {}) };
    return [
      `--${boundary}`,
      'Content-Type: application/http',
      ...(c.id === undefined ? [] : [`Content-ID: ${c.id}`]),
      '',
      `${c.method} ${c.target} HTTP/1.1`,
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
      '',
      c.json === undefined ? '' : JSON.stringify(c.json),
    ].join('\r\n');
  });
  return `${parts.join('\r\n')}\r\n--${boundary}--\r\n`;
}

interface PartAnswer {
  contentId?: string;
  statusLine: string;
  status: number;
  json: any;
}

interface BatchAnswer {
  status: number;
  contentType: string;
  json?: any;
  parts: PartAnswer[];
}

/** POSTs a batch body to the fake and takes the multipart answer apart (independently of batch.ts). */
async function post(fake: FakeGcp, body: string, opts: { headers?: Record<string, string>; query?: string } = {}): Promise<BatchAnswer> {
  const res = await fetch(`${fake.batchEndpoint}${opts.query ?? ''}`, {
    method: 'POST',
    headers: { 'Content-Type': 'multipart/mixed; boundary=batch_test_boundary', Authorization: 'Bearer fake-gcp-token', ...(opts.headers ?? {}) },
    body,
  });
  const contentType = res.headers.get('content-type') ?? '';
  const text = await res.text();
  if (!contentType.startsWith('multipart/mixed')) return { status: res.status, contentType, json: JSON.parse(text), parts: [] };
  const boundary = /boundary=(\S+)/.exec(contentType)![1];
  const segments = text.split(`--${boundary}`);
  expect(segments.at(-1)).toBe('--\r\n');
  const parts = segments.slice(1, -1).map((seg): PartAnswer => {
    const [mimeHead, ...after] = seg.replace(/^\r\n/, '').split('\r\n\r\n');
    const [httpHead, ...body] = after.join('\r\n\r\n').split('\r\n\r\n');
    expect(mimeHead).toMatch(/^Content-Type: application\/http(\r\n|$)/);
    const statusLine = httpHead.split('\r\n')[0];
    return {
      contentId: /^Content-ID: (.*)$/m.exec(mimeHead)?.[1],
      statusLine,
      status: Number(statusLine.split(' ')[1]),
      json: JSON.parse(body.join('\r\n\r\n').replace(/\r\n$/, '')),
    };
  });
  return { status: res.status, contentType, parts };
}

const instance = (name: string) => `${ZONE_PATH}/instances/${name}`;

describe('batch requests (POST /batch/compute/v1)', () => {
  it('runs each part as its own call: results per part in order, state changed, inner calls recorded with the batch id', async () => {
    const fake = await setup();
    const [a, b, c] = await createInstances(fake, 3);
    fake.server.clearLog();

    const r = await post(
      fake,
      multipart([
        { id: 'item1', method: 'DELETE', target: instance(a) },
        { id: '<item2:12930812@dask.example.com>', method: 'DELETE', target: instance(b) },
        { id: 'item3', method: 'GET', target: instance(c) },
        { id: 'item4', method: 'DELETE', target: instance('no-such-vm') },
        { method: 'POST', target: `${ZONE_PATH}/instances`, json: {
          name: 'batched',
          machineType: `zones/${ZONE}/machineTypes/e2-standard-2`,
          disks: [{ boot: true, autoDelete: true, initializeParams: { sourceImage: 'projects/debian-cloud/global/images/family/debian-12' } }],
          networkInterfaces: [{ network: 'global/networks/default' }],
        } },
      ]),
    );
    expect(r.status).toBe(200);
    expect(r.contentType).toMatch(/^multipart\/mixed; boundary=\S+$/);
    expect(r.parts.map((p) => [p.contentId, p.statusLine])).toEqual([
      ['response-item1', 'HTTP/1.1 200 OK'],
      ['<response-item2:12930812@dask.example.com>', 'HTTP/1.1 200 OK'],
      ['response-item3', 'HTTP/1.1 200 OK'],
      ['response-item4', 'HTTP/1.1 404 Not Found'],
      [undefined, 'HTTP/1.1 200 OK'],
    ]);
    expect(r.parts[0].json).toMatchObject({ kind: 'compute#operation', operationType: 'delete' });
    expect(r.parts[1].json.targetLink).toMatch(new RegExp(`/instances/${b}$`));
    expect(r.parts[2].json).toMatchObject({ kind: 'compute#instance', name: c });
    // The failed call's part carries Compute's error body; the batch itself succeeded.
    expect(r.parts[3].json.error).toMatchObject({ code: 404, status: 'NOT_FOUND', errors: [{ reason: 'notFound' }] });
    expect(r.parts[4].json).toMatchObject({ kind: 'compute#operation', operationType: 'insert' });

    const names = () => (fake.resources().instances ?? []).map((i) => i.id).sort();
    await expect.poll(names).toEqual([`zones/${ZONE}/instances/batched`, `zones/${ZONE}/instances/${c}`]);

    // One HTTP request, five API calls.
    const [outer] = fake.server.calls('compute.batch');
    expect(outer).toMatchObject({ method: 'POST', path: '/batch/compute/v1', status: 200 });
    expect(outer.batch).toBeUndefined();
    const inner = fake.server.received.filter((x) => x.batch === outer.requestId);
    expect(inner.map((x) => [x.operation, x.params.instance, x.status])).toEqual([
      ['compute.instances.delete', a, 200],
      ['compute.instances.delete', b, 200],
      ['compute.instances.get', c, 200],
      ['compute.instances.delete', 'no-such-vm', 404],
      ['compute.instances.insert', undefined, 200],
    ]);
    expect(fake.server.received.filter((x) => x.batch === undefined)).toEqual([outer]);
  });

  it("applies the outer request's headers and query to every part unless the part sets its own; takes the page's LF form", async () => {
    const fake = await setup();
    const [a] = await createInstances(fake, 1);
    const get = (over: Partial<Call> = {}): Call => ({ method: 'GET', target: instance(a), ...over });

    const byHeader = await post(fake, multipart([get(), get({ headers: { 'X-Goog-FieldMask': 'status' } })]), { headers: { 'X-Goog-FieldMask': 'name' } });
    expect(byHeader.parts.map((p) => p.json)).toEqual([{ name: a }, { status: 'RUNNING' }]);

    const byQuery = await post(fake, multipart([get(), get({ target: `${instance(a)}?fields=status` })]), { query: '?fields=name' });
    expect(byQuery.parts.map((p) => p.json)).toEqual([{ name: a }, { status: 'RUNNING' }]);

    // The documentation's example: LF line ends, no HTTP version on the request line.
    const lf = `--batch_test_boundary\nContent-Type: application/http\nContent-ID: <item1:1@x>\n\nGET ${instance(a)}?fields=name\n\n--batch_test_boundary--\n`;
    const r = await post(fake, lf);
    expect(r.parts).toEqual([{ contentId: '<response-item1:1@x>', statusLine: 'HTTP/1.1 200 OK', status: 200, json: { name: a } }]);
  });

  it(`takes up to ${BATCH_MAX_CALLS} calls; a malformed batch is a 400 in Compute's error shape and runs nothing`, async () => {
    const fake = await setup();
    const zonesGet: Call = { method: 'GET', target: `/compute/v1/projects/${PROJECT}/zones/${ZONE}` };
    const full = await post(fake, multipart(Array.from({ length: BATCH_MAX_CALLS }, () => zonesGet)));
    expect(full.status).toBe(200);
    expect(full.parts).toHaveLength(BATCH_MAX_CALLS);
    expect(full.parts.every((p) => p.status === 200 && p.json.name === ZONE)).toBe(true);
    fake.server.clearLog();

    const bad: [string, string, Record<string, string>?][] = [
      ['too many calls', multipart(Array.from({ length: BATCH_MAX_CALLS + 1 }, () => zonesGet))],
      ['full URL', multipart([{ method: 'GET', target: `https://compute.googleapis.com/compute/v1/projects/${PROJECT}/zones/${ZONE}` }])],
      ['part not application/http', multipart([zonesGet]).replace('Content-Type: application/http', 'Content-Type: text/plain')],
      ['no boundary', multipart([zonesGet]), { 'Content-Type': 'multipart/mixed' }],
      ['invalid boundary', multipart([zonesGet]), { 'Content-Type': `multipart/mixed; boundary=${'x'.repeat(71)}` }],
      ['not multipart', multipart([zonesGet]), { 'Content-Type': 'application/json' }],
      ['no closing delimiter', multipart([zonesGet]).replace('--batch_test_boundary--', '')],
      ['no request line', multipart([{ method: 'GET', target: '' }])],
    ];
    for (const [what, body, headers] of bad) {
      const r = await post(fake, body, { headers });
      expect(r.status, what).toBe(400);
      expect(r.contentType, what).toMatch(/^application\/json/);
      expect(r.json.error, what).toMatchObject({ code: 400, status: 'INVALID_ARGUMENT', errors: [{ domain: 'global', reason: 'badRequest' }] });
    }
    expect(fake.server.operations()).toEqual(bad.map(() => 'compute.batch'));
    expect(fake.server.received.map((x) => x.status)).toEqual(bad.map(() => 400));

    // A call that breaks the published contract is checked like any call: its part is the 400.
    const r = await post(fake, multipart([zonesGet, { ...zonesGet, target: `${zonesGet.target}?bogus=1` }]));
    expect(r.status).toBe(200);
    expect(r.parts.map((p) => p.status)).toEqual([200, 400]);
    expect(r.parts[1].json.error.errors[0].reason).toBe('badRequest');
    expect(fake.contractViolations.map((v) => v.kind)).toEqual(['unknown-parameter']);
    fake.server.contractViolations.length = 0;
  });

  it('throttles each inner call, not the batch request: parts answer 403 rateLimitExceeded while the batch is 200', async () => {
    const clock = new ManualClock(); // stands still: the bucket does not refill
    const fake = await setup({ clock });
    fake.throttle({ perMinute: 5 });
    const zonesGet: Call = { method: 'GET', target: `/compute/v1/projects/${PROJECT}/zones/${ZONE}` };

    // Five calls in one request use the five tokens: the request itself takes none.
    const first = await post(fake, multipart(Array.from({ length: 5 }, () => zonesGet)));
    expect(first.parts.map((p) => p.status)).toEqual([200, 200, 200, 200, 200]);

    const second = await post(fake, multipart(Array.from({ length: 3 }, (_, i) => ({ ...zonesGet, id: `z${i}` }))));
    expect(second.status).toBe(200);
    expect(second.parts.map((p) => [p.contentId, p.statusLine])).toEqual(
      ['response-z0', 'response-z1', 'response-z2'].map((id) => [id, 'HTTP/1.1 403 Forbidden']),
    );
    for (const p of second.parts) {
      expect(p.json.error).toMatchObject({ code: 403, status: 'PERMISSION_DENIED', errors: [{ domain: 'usageLimits', reason: 'rateLimitExceeded' }] });
    }
    const [, outer] = fake.server.calls('compute.batch');
    expect(fake.server.calls().filter((x) => x.rejectedBy === 'throttle').map((x) => x.batch)).toEqual([outer.requestId, outer.requestId, outer.requestId]);
  });

  it('runs the inner calls concurrently: 50 deletes each delayed X take about X, not 50·X', async () => {
    const fake = await setup();
    const names = await createInstances(fake, 50);
    const X = 300;
    fake.faults.latency(/instances\.delete/, () => X);

    const started = performance.now();
    const r = await post(fake, multipart(names.map((n) => ({ method: 'DELETE', target: instance(n) }))));
    const took = performance.now() - started;

    expect(r.parts.map((p) => p.status)).toEqual(names.map(() => 200));
    expect(took).toBeGreaterThanOrEqual(X - 5);
    expect(took).toBeLessThan(10 * X); // serial would be 50·X
    await expect.poll(() => fake.resources().instances ?? []).toEqual([]);
  });
});
