import { afterEach, describe, expect, it } from 'vitest';
import { FakeApiError, FakeServer } from './server';
import { raw } from './http';

const servers: FakeServer[] = [];
async function started(s: FakeServer): Promise<FakeServer> {
  servers.push(s);
  await s.start();
  return s;
}
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

describe('FakeServer routing', () => {
  it('listens on loopback and routes by method + pattern with decoded params', async () => {
    const s = await started(
      new FakeServer({ name: 'gcp', basePath: '/compute/v1' })
        .route('GET', '/projects/:project/zones/:zone/instances/:instance', 'compute.instances.get', (req) => ({
          body: { name: req.params.instance, zone: req.params.zone, fields: req.query.fields },
        }))
        .route('POST', '/projects/:project/zones/:zone/instances/bulkInsert', 'compute.instances.bulkInsert', (req) => ({
          body: { got: req.json },
        }))
        .route('POST', '/projects/:project/zones/:zone/instances', 'compute.instances.insert', () => ({ body: { kind: 'insert' } })),
    );
    expect(s.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/compute\/v1$/);
    const r = await raw(`${s.endpoint}/projects/p/zones/us-central1-a/instances/vm%2D1?fields=name`);
    expect(r.status).toBe(200);
    expect(r.json()).toEqual({ name: 'vm-1', zone: 'us-central1-a', fields: 'name' });

    // A literal segment wins over a parameter.
    const b = await raw(`${s.endpoint}/projects/p/zones/z/instances/bulkInsert`, { body: { count: '2' } });
    expect(b.json()).toEqual({ got: { count: '2' } });
    expect((await raw(`${s.endpoint}/projects/p/zones/z/instances`, { body: {} })).json()).toEqual({ kind: 'insert' });

    expect(s.operations()).toEqual(['compute.instances.get', 'compute.instances.bulkInsert', 'compute.instances.insert']);
    expect(s.calls('compute.instances.get')[0].params).toMatchObject({ project: 'p', zone: 'us-central1-a', instance: 'vm-1', fields: 'name' });
    expect(s.calls('compute.instances.bulkInsert')[0]).toMatchObject({ method: 'POST', status: 200, json: { count: '2' } });
  });

  it('routes with a custom dispatcher (EC2 Action) and parses forms', async () => {
    const s = await started(
      new FakeServer({ name: 'ec2', dispatch: (req) => (req.form?.Action ? { operation: req.form.Action } : undefined) }).handle(
        'DescribeVpcs',
        (req) => ({ headers: { 'content-type': 'text/xml' }, body: `<DescribeVpcsResponse><requestId>${req.id}</requestId></DescribeVpcsResponse>` }),
      ),
    );
    const r = await raw(`${s.endpoint}/`, { form: { Action: 'DescribeVpcs', Version: '2016-11-15', 'VpcId.1': 'vpc-1' } });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('text/xml');
    expect(s.received[0]).toMatchObject({ operation: 'DescribeVpcs', params: { Action: 'DescribeVpcs', 'VpcId.1': 'vpc-1' } });
    expect(r.text).toContain(s.received[0].requestId);
  });

  it('shapes errors with the cloud function: thrown FakeApiError, unknown route, handler crash', async () => {
    const s = await started(
      new FakeServer({
        name: 'do',
        errorShape: (e) => ({ status: e.status, headers: { 'x-shaped': e.source }, body: { id: e.code, message: e.message, request_id: e.request.id } }),
      })
        .route('GET', '/v2/droplets/:id', 'droplets_get', (req) => {
          throw new FakeApiError(404, 'not_found', `droplet ${req.params.id} not found`);
        })
        .route('GET', '/v2/account', 'account_get', () => {
          throw new Error('boom');
        }),
    );
    const nf = await raw(`${s.endpoint}/v2/droplets/7`);
    expect(nf.status).toBe(404);
    expect(nf.headers['x-shaped']).toBe('handler');
    expect(nf.json()).toMatchObject({ id: 'not_found', message: 'droplet 7 not found' });

    const none = await raw(`${s.endpoint}/v2/nothing`);
    expect(none.status).toBe(404);
    expect(none.headers['x-shaped']).toBe('no-route');
    expect(s.received[1]).toMatchObject({ operation: undefined, rejectedBy: 'no-route' });

    const crash = await raw(`${s.endpoint}/v2/account`);
    expect(crash.status).toBe(500);
    expect(s.handlerErrors).toHaveLength(1);
  });

  it('stop() is idempotent and closes the port', async () => {
    const s = await started(new FakeServer({ name: 'x' }).route('GET', '/a', 'a', () => ({ body: 'ok' })));
    const url = `${s.endpoint}/a`;
    expect((await raw(url)).text).toBe('ok');
    await s.stop();
    await s.stop();
    await expect(raw(url)).rejects.toThrow(/ECONNREFUSED/);
  });
});
