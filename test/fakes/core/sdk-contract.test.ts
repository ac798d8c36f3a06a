/**
 * The contracts must accept what the real SDKs send for the calls we make (otherwise every cloud
 * fake would reject correct providers). One representative request per tricky shape.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FakeServer } from './server';
import { assertNoContractViolations } from './contract';

const servers: FakeServer[] = [];
afterEach(async () => {
  try {
    assertNoContractViolations(...servers);
  } finally {
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  }
});

async function fake(s: FakeServer): Promise<FakeServer> {
  servers.push(s);
  await s.start();
  return s;
}

describe('real SDK requests pass the contracts', () => {
  it('EC2 (@aws-sdk/client-ec2): RunInstances, AuthorizeSecurityGroupIngress, DescribeInstances, CreateTags', async () => {
    const ec2 = await import('@aws-sdk/client-ec2');
    const xml = (action: string, inner = '') =>
      `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId>${inner}</${action}Response>`;
    const s = await fake(new FakeServer({ name: 'ec2', contract: 'ec2', dispatch: (req) => ({ operation: req.form?.Action ?? '' }) }));
    for (const action of ['RunInstances', 'AuthorizeSecurityGroupIngress', 'DescribeInstances', 'CreateTags']) {
      s.handle(action, () => ({ headers: { 'content-type': 'text/xml;charset=UTF-8' }, body: xml(action, action === 'AuthorizeSecurityGroupIngress' || action === 'CreateTags' ? '<return>true</return>' : '') }));
    }
    const client = new ec2.EC2Client({ endpoint: s.endpoint, region: 'eu-west-1', maxAttempts: 1, credentials: { accessKeyId: 'AKIDFAKE', secretAccessKey: 'fake' } });
    try {
      await client.send(
        new ec2.RunInstancesCommand({
          ImageId: 'ami-1', InstanceType: 't3.small', MinCount: 2, MaxCount: 2, UserData: Buffer.from('#cloud-config\n').toString('base64'),
          ClientToken: 'tok', InstanceInitiatedShutdownBehavior: 'terminate',
          NetworkInterfaces: [{ DeviceIndex: 0, SubnetId: 'subnet-1', Groups: ['sg-1'], AssociatePublicIpAddress: false }],
          TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'dask-cluster', Value: 'abc' }] }],
          MetadataOptions: { HttpTokens: 'required' },
        }),
      );
      await client.send(
        new ec2.AuthorizeSecurityGroupIngressCommand({
          GroupId: 'sg-1',
          IpPermissions: [
            { IpProtocol: 'tcp', FromPort: 8786, ToPort: 8786, IpRanges: [{ CidrIp: '203.0.113.0/24', Description: 'dask' }] },
            { IpProtocol: '-1', UserIdGroupPairs: [{ GroupId: 'sg-1' }] },
          ],
        }),
      );
      await client.send(new ec2.DescribeInstancesCommand({ Filters: [{ Name: 'tag:dask-cluster', Values: ['abc'] }], MaxResults: 100 }));
      await client.send(new ec2.CreateTagsCommand({ Resources: ['i-1', 'sg-1'], Tags: [{ Key: 'k', Value: 'v' }] }));
    } finally {
      client.destroy();
    }
    expect(s.operations()).toEqual(['RunInstances', 'AuthorizeSecurityGroupIngress', 'DescribeInstances', 'CreateTags']);
    expect(s.calls('RunInstances')[0].normalized).toMatchObject({
      MinCount: 2,
      NetworkInterface: [{ DeviceIndex: 0, SubnetId: 'subnet-1', SecurityGroupId: ['sg-1'], AssociatePublicIpAddress: false }],
      TagSpecification: [{ ResourceType: 'instance', Tag: [{ Key: 'dask-cluster', Value: 'abc' }] }],
    });
    expect(s.calls('AuthorizeSecurityGroupIngress')[0].normalized).toMatchObject({
      IpPermissions: [{ IpProtocol: 'tcp', FromPort: 8786, IpRanges: [{ CidrIp: '203.0.113.0/24' }] }, { IpProtocol: '-1', Groups: [{ GroupId: 'sg-1' }] }],
    });
  });

  it('DigitalOcean (dots-wrapper): create droplets, list by tag, create firewall', async () => {
    const { createApiClient } = await import('dots-wrapper');
    const s = await fake(
      new FakeServer({ name: 'digitalocean', contract: 'digitalocean' })
        .route('POST', '/v2/droplets', 'droplets_create', () => ({ status: 202, body: { droplets: [], links: {} } }))
        .route('GET', '/v2/droplets', 'droplets_list', () => ({ body: { droplets: [], links: {}, meta: { total: 0 } } }))
        .route('POST', '/v2/firewalls', 'firewalls_create', (req) => ({ status: 202, body: { firewall: req.json } })),
    );
    const dots = createApiClient({ token: 'fake', endpoint: `${s.endpoint}/v2` });
    // dots-wrapper: createDroplet sends only `name`; multi-create is createDroplets. Both pass a fixed
    // field list (unknown fields such as public_networking are dropped client-side).
    await dots.droplet.createDroplet({ name: 'sched', region: 'nyc3', size: 's-2vcpu-4gb', image: 'debian-12-x64', tags: ['dask-abc'], vpc_uuid: 'u' });
    await dots.droplet.createDroplets({
      names: ['w1', 'w2'], region: 'nyc3', size: 's-2vcpu-4gb', image: 'debian-12-x64', tags: ['dask-abc'], user_data: '#cloud-config\n', monitoring: true,
    } as never);
    await dots.droplet.listDroplets({ tag_name: 'dask-abc', page: 1, per_page: 200 });
    await dots.firewall.createFirewall({
      name: 'dask-abc', tags: ['dask-abc'],
      inbound_rules: [{ protocol: 'tcp', ports: '8786', sources: { addresses: ['203.0.113.0/24'], tags: ['dask-abc'] } }],
      outbound_rules: [{ protocol: 'tcp', ports: 'all', destinations: { addresses: ['0.0.0.0/0'] } }],
    } as never);
    expect(s.operations()).toEqual(['droplets_create', 'droplets_create', 'droplets_list', 'firewalls_create']);
    expect(s.calls('droplets_create')[1].json).toMatchObject({ names: ['w1', 'w2'] });
  });

  it('GCP (@google-cloud/compute REST): instances.insert, firewalls.insert, zoneOperations.wait', async () => {
    const compute = await import('@google-cloud/compute');
    const { OAuth2Client } = await import('google-auth-library');
    const op = { kind: 'compute#operation', id: '1', name: 'operation-1', status: 'DONE', zone: 'us-central1-a' };
    const s = await fake(
      new FakeServer({ name: 'gcp', contract: 'gcp', basePath: '/compute/v1' })
        .route('POST', '/projects/:project/zones/:zone/instances', 'compute.instances.insert', () => ({ body: op }))
        .route('POST', '/projects/:project/global/firewalls', 'compute.firewalls.insert', () => ({ body: op }))
        .route('POST', '/projects/:project/zones/:zone/operations/:operation/wait', 'compute.zoneOperations.wait', () => ({ body: op })),
    );
    const authClient = new OAuth2Client();
    authClient.setCredentials({ access_token: 'fake-token', expiry_date: Date.now() + 3_600_000 });
    const opts = { apiEndpoint: '127.0.0.1', port: Number(new URL(s.endpoint).port), protocol: 'http', authClient } as never;
    const instances = new compute.InstancesClient(opts);
    const firewalls = new compute.FirewallsClient(opts);
    const zoneOps = new compute.ZoneOperationsClient(opts);
    try {
      await instances.insert({
        project: 'p1', zone: 'us-central1-a', requestId: '6f6c2a2e-0000-4000-8000-000000000001',
        instanceResource: {
          name: 'dask-abc-scheduler', machineType: 'zones/us-central1-a/machineTypes/e2-standard-2',
          disks: [{ boot: true, autoDelete: true, initializeParams: { sourceImage: 'projects/debian-cloud/global/images/family/debian-12', diskSizeGb: 20 } }],
          networkInterfaces: [{ network: 'global/networks/default', accessConfigs: [{ name: 'External NAT', type: 'ONE_TO_ONE_NAT' }] }],
          metadata: { items: [{ key: 'user-data', value: '#cloud-config\n' }] },
          labels: { 'dask-cluster': 'abc' }, tags: { items: ['dask-abc'] },
          scheduling: { maxRunDuration: { seconds: 86_400 }, instanceTerminationAction: 'DELETE' },
        },
      });
      await firewalls.insert({
        project: 'p1',
        firewallResource: { name: 'dask-abc', network: 'global/networks/default', direction: 'INGRESS', targetTags: ['dask-abc'], sourceTags: ['dask-abc'], allowed: [{ IPProtocol: 'tcp', ports: ['8786', '8787'] }] },
      });
      await zoneOps.wait({ project: 'p1', zone: 'us-central1-a', operation: 'operation-1' });
    } finally {
      await Promise.all([instances.close(), firewalls.close(), zoneOps.close()]);
    }
    expect(s.operations()).toEqual(['compute.instances.insert', 'compute.firewalls.insert', 'compute.zoneOperations.wait']);
    expect(s.calls('compute.instances.insert')[0].json).toMatchObject({ scheduling: { maxRunDuration: { seconds: '86400' } } });
  });
});
