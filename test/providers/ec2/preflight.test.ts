/**
 * EC2 preflight (`cluster.preflight()`, which `start()` runs first and `dask-cloud doctor`
 * prints): a passing account with proof from the fake's request log that nothing was changed
 * (DryRun requests are the only creates, and explicit), then one failing account per check,
 * each with its fix, and start() on each failing account throwing before any mutating call.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EC2Cluster, type EC2ClusterOptions } from '../../../providers/ec2';
import { DaskCloudError } from '../../../src/errors';
import type { CheckId } from '../../../src/cluster/preflight';
import { checkFakesAndClose } from '../../helpers/fakes';
import { imageIdFor, type FakeEc2 } from '../../fakes/ec2';
import { eventually, fakeOptions, startFake } from './helpers';

/** Loopback slot of this file: see helpers.ts. */
const SLOT = 5;
const fakes: FakeEc2[] = [];
afterEach(() => checkFakesAndClose(fakes, [], async () => vi.unstubAllEnvs()));

async function fake(): Promise<FakeEc2> {
  const f = await startFake(SLOT, { lifecycleMs: { pendingMs: 100, shuttingDownMs: 100 } });
  fakes.push(f);
  return f;
}

function cluster(f: FakeEc2, options: EC2ClusterOptions = {}): EC2Cluster {
  return new EC2Cluster({ ...fakeOptions(f), schedulerTimeoutMs: 1_000, ...options });
}

describe('EC2 preflight', () => {
  it('a passing account: every check passes (quota warns: vCPU limits are not readable), and nothing is changed', async () => {
    const f = await fake();
    f.routeThroughNat();
    const c = cluster(f, { nWorkers: 3, privateNetworking: true, tags: { team: 'data' } });
    const report = await c.preflight();
    const status = Object.fromEntries(report.checks.map((x) => [x.id, x.status]));
    expect(status).toEqual({
      'user-data': 'pass',
      credentials: 'pass',
      location: 'pass',
      image: 'pass',
      network: 'pass',
      nat: 'pass',
      quota: 'warn',
      permissions: 'pass',
    });
    const msg = (id: CheckId) => report.checks.find((x) => x.id === id)!.message;
    expect(msg('credentials')).toBe('from the credentials option, accepted by EC2');
    expect(msg('location')).toBe(`region ${f.region}, zones ${f.region}a, ${f.region}b, ${f.region}c`);
    expect(msg('image')).toContain(imageIdFor('debian-12-amd64-20250115-1997'));
    expect(msg('network')).toMatch(/^subnet subnet-[0-9a-f]+ in eu-west-1[abc] of vpc-[0-9a-f]+, which offers t3\.medium and m6i\.large$/);
    expect(msg('nat')).toMatch(/routes 0\.0\.0\.0\/0 to nat-[0-9a-f]+/);
    expect(msg('quota')).toMatch(/needs 8 on-demand vCPUs/); // t3.medium 2 + 3 × m6i.large 2
    const quota = report.checks.find((x) => x.id === 'quota')!;
    expect(quota.fix).toContain('L-1216C47A');
    expect(msg('permissions')).toContain('DryRun allowed: RunInstances (scheduler, tagged), RunInstances (worker, tagged), CreateSecurityGroup (tagged)');
    expect(report.format()).toContain('[ok  ] permissions');

    // Proof from the request log: the only creates were DryRuns, each answered DryRunOperation.
    expect(f.mutatingCalls()).toEqual([]);
    const dryRuns = f.server.received.filter((r) => r.params.DryRun === 'true');
    expect(dryRuns.map((r) => [r.operation, r.status])).toEqual([
      ['RunInstances', 412],
      ['RunInstances', 412],
      ['CreateSecurityGroup', 412],
    ]);
    // The DryRuns carry what the real creates will: tags (ec2:CreateTags on create) and the subnet.
    const run = dryRuns[0]!.normalized as { TagSpecification: { Tag: { Key: string }[] }[]; NetworkInterface: { SubnetId: string; AssociatePublicIpAddress: boolean }[] };
    expect(run.TagSpecification[0]!.Tag.map((t) => t.Key)).toContain('team');
    expect(run.NetworkInterface[0]).toMatchObject({ AssociatePublicIpAddress: false });
    expect(f.instances()).toEqual([]);
    expect(f.securityGroups().map((g) => g.groupName)).toEqual(['default']);
    expect(c.state).toBe('new');
  });

  const failing: {
    name: string;
    check: CheckId;
    setup?: (f: FakeEc2) => void;
    options?: EC2ClusterOptions;
    fix: RegExp;
    code: string;
    option?: string;
  }[] = [
    { name: 'credentials refused', check: 'credentials', setup: (f) => f.refuseCredentials(), fix: /aws sts get-caller-identity/, code: 'E_CREDENTIALS' },
    { name: 'an opt-in region not enabled', check: 'location', options: { region: 'af-south-1' }, fix: /aws account enable-region --region-name af-south-1/, code: 'E_INVALID_OPTION', option: 'region' },
    { name: 'a zone the region does not have', check: 'location', options: { availabilityZone: 'eu-west-1z' }, fix: /describe-availability-zones/, code: 'E_INVALID_OPTION', option: 'availabilityZone' },
    { name: 'an image that does not exist', check: 'image', options: { ami: imageIdFor('gone') }, fix: /pass ami of an image that exists in eu-west-1/, code: 'E_INVALID_OPTION', option: 'ami' },
    {
      name: 'a worker type offered in no zone',
      check: 'network',
      setup: (f) => ['a', 'b', 'c'].forEach((z) => f.withholdInstanceTypes(`${f.region}${z}`, ['m6i.large'])),
      fix: /describe-instance-type-offerings/,
      code: 'E_INVALID_OPTION',
      option: 'workerInstanceType',
    },
    { name: 'private mode without a NAT', check: 'nat', options: { privateNetworking: true }, fix: /create-nat-gateway .*create-route --route-table-id rtb-/, code: 'E_PREFLIGHT' },
    { name: 'more VMs than free addresses in the subnet', check: 'quota', options: { nWorkers: 1_100 }, fix: /fewer nWorkers/, code: 'E_PREFLIGHT' },
    { name: 'RunInstances and CreateSecurityGroup denied', check: 'permissions', setup: (f) => f.deny('RunInstances', 'CreateSecurityGroup'), fix: /add ec2:CreateSecurityGroup, ec2:RunInstances to the IAM policy/, code: 'E_PREFLIGHT' },
  ];
  for (const t of failing) {
    it(`a failing account (${t.name}): the ${t.check} check fails with its fix, and start() throws before any mutating call`, async () => {
      const f = await fake();
      t.setup?.(f);
      const report = await cluster(f, { nWorkers: 1, ...t.options }).preflight();
      const result = report.checks.find((x) => x.id === t.check)!;
      expect(result.status, report.format()).toBe('fail');
      expect(result.fix).toMatch(t.fix);
      expect(report.format()).toContain(`fix: ${result.fix}`);
      if (t.check === 'credentials') {
        // Nothing else can be checked: one read was made.
        expect(report.checks.filter((x) => x.id !== 'user-data' && x.id !== 'credentials').every((x) => x.status === 'skip')).toBe(true);
        expect(f.server.operations()).toEqual(['DescribeRegions']);
      }
      expect(f.mutatingCalls()).toEqual([]);

      const c = cluster(f, { nWorkers: 1, ...t.options });
      const err = (await c.start().catch((e: unknown) => e)) as DaskCloudError;
      expect(DaskCloudError.isInstance(err), String(err)).toBe(true);
      expect(err.code).toBe(t.code);
      if (t.option !== undefined) expect(err.details.option).toBe(t.option);
      expect(err.message).toContain('fix:');
      expect(c.state).toBe('failed');
      expect(f.mutatingCalls()).toEqual([]);
      expect(Object.values(f.leaked()).flat()).toEqual([]);
    });
  }

  it('a denied read names its IAM action in both its own check and the permissions check', async () => {
    const f = await fake();
    f.deny('DescribeRouteTables');
    const report = await cluster(f, { privateNetworking: true }).preflight();
    expect(report.status('nat')).toBe('fail');
    expect(report.checks.find((x) => x.id === 'nat')!.fix).toContain('allow ec2:DescribeRouteTables');
    expect(report.status('permissions')).toBe('fail');
    expect(report.checks.find((x) => x.id === 'permissions')!.fix).toContain('add ec2:DescribeRouteTables');
    expect(f.mutatingCalls()).toEqual([]);
  });

  it('credentials from the environment are named as such (the values never appear)', async () => {
    const f = await fake();
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'AKIDFROMENV');
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'env-secret-value');
    vi.stubEnv('AWS_SESSION_TOKEN', '');
    const { credentials: _given, ...options } = fakeOptions(f);
    const report = await new EC2Cluster({ ...options, nWorkers: 1 }).preflight();
    const creds = report.checks.find((x) => x.id === 'credentials')!;
    expect(creds.status).toBe('pass');
    expect(creds.message).toBe('from the environment (AWS_ACCESS_KEY_ID), accepted by EC2');
    expect(JSON.stringify(report.toJSON())).not.toContain('env-secret-value');
    expect(JSON.stringify(report.toJSON())).not.toContain('AKIDFROMENV');
  });

  it('an endpoint that ignores DryRun: the checks’ launches and group are deleted, the permissions check fails, start() leaves nothing', async () => {
    const f = await fake();
    f.ignoreDryRun();
    const report = await cluster(f, { nWorkers: 2 }).preflight();
    const permissions = report.checks.find((x) => x.id === 'permissions')!;
    expect(permissions.status, report.format()).toBe('fail');
    // What the DryRuns made, named and deleted: two launches (one per role) and one group.
    const made = f.instances().map((i) => i.instanceId);
    const groups = f.server.calls('CreateSecurityGroup').length;
    expect(made).toHaveLength(2);
    expect(groups).toBe(1);
    expect(permissions.message).toMatch(/^ec2: the endpoint ignores DryRun: the permission checks launched or created (i-[0-9a-f]+, ){2}sg-[0-9a-f]+; they have been deleted$/);
    for (const id of made) expect(permissions.message).toContain(id);
    expect(permissions.fix).toMatch(/answers DryRun requests without carrying them out/);
    expect(f.instances().every((i) => i.state === 'shutting-down' || i.state === 'terminated')).toBe(true);
    expect(f.securityGroups().map((g) => g.groupName)).toEqual(['default']);

    // start(): the same failure, and once the launches are terminated nothing is left.
    const c = cluster(f, { nWorkers: 2 });
    const err = (await c.start().catch((e: unknown) => e)) as DaskCloudError;
    expect(DaskCloudError.isInstance(err), String(err)).toBe(true);
    expect(err.code).toBe('E_PREFLIGHT');
    expect(err.message).toContain('the endpoint ignores DryRun');
    await eventually(() => f.instances().every((i) => i.state === 'terminated'), 'the launches to terminate', 10_000);
    expect(Object.values(f.leaked()).flat()).toEqual([]);
  });

  it('an endpoint that ignores DryRun, and the launches cannot be terminated: they are named with the cleanup command that deletes them', async () => {
    const f = await fake();
    f.ignoreDryRun();
    f.deny('TerminateInstances');
    const report = await cluster(f, { nWorkers: 1 }).preflight();
    const permissions = report.checks.find((x) => x.id === 'permissions')!;
    expect(permissions.status, report.format()).toBe('fail');
    const made = f.instances().map((i) => i.instanceId).sort();
    expect(made).toHaveLength(2);
    expect(permissions.error!.details.leftovers).toEqual(expect.arrayContaining(made));
    expect((permissions.error!.details.leftovers as string[]).some((x) => x.startsWith('sg-'))).toBe(false); // the group was deleted
    expect(permissions.message).toMatch(/; i-[0-9a-f]+, i-[0-9a-f]+ could not be deleted \(ec2 TerminateInstances failed: UnauthorizedOperation: .*\): delete them with dask-cloud cleanup --provider ec2 --region eu-west-1 --cluster dask-[0-9a-f]+$/);
    // The launches carry the cluster's tags: the cleanup the message names finds and deletes them.
    f.allow('TerminateInstances');
    const clusterId = /--cluster (dask-[0-9a-f]+)$/.exec(permissions.message)![1]!;
    await EC2Cluster.cleanup({ ...fakeOptions(f), clusterIds: [clusterId] });
    await eventually(() => f.instances().every((i) => i.state === 'terminated'), 'the launches to terminate', 10_000);
    expect(Object.values(f.leaked()).flat()).toEqual([]);
  });
});

describe('EC2 preflight: independent reads are made together', () => {
  /** The fake's delay before it answers each of these: a request received within it of another overlapped it. */
  const DELAY_MS = 300;

  it('zones, image, VPC, subnets and offerings in one round; the DryRuns together, beside the quota', async () => {
    const f = await fake();
    f.faults.latency(/^(DescribeAvailabilityZones|DescribeImages|DescribeVpcs|DescribeSubnets|DescribeInstanceTypeOfferings|DescribeInstanceTypes|RunInstances)$/, DELAY_MS);
    const report = await cluster(f, { nWorkers: 1 }).preflight();
    expect(report.failures, report.format()).toEqual([]);
    const at = (op: string) => f.server.calls(op)[0]!.at;
    /** Received within DELAY_MS of each other: each came before the answer to any other could have. */
    const overlap = (...ops: string[]) => Math.max(...ops.map(at)) - Math.min(...ops.map(at));
    // The subnets are listed beside the default VPC (and picked from it once it is known), where
    // they used to be asked for its subnets only after its answer.
    expect(overlap('DescribeAvailabilityZones', 'DescribeImages', 'DescribeVpcs', 'DescribeSubnets', 'DescribeInstanceTypeOfferings')).toBeLessThan(DELAY_MS);
    expect(f.server.calls('DescribeSubnets')).toHaveLength(1);
    // The DryRuns need the network and the image, not the quota: the first went out beside it.
    expect(overlap('DescribeInstanceTypes', 'RunInstances')).toBeLessThan(DELAY_MS);
    // And all together among themselves.
    const dryRuns = f.server.received.filter((r) => r.params.DryRun === 'true');
    expect(dryRuns.map((r) => r.operation).sort()).toEqual(['CreateSecurityGroup', 'RunInstances', 'RunInstances']);
    expect(Math.max(...dryRuns.map((r) => r.at)) - Math.min(...dryRuns.map((r) => r.at))).toBeLessThan(DELAY_MS);
    expect(f.mutatingCalls()).toEqual([]);
  });

  it('the subnets listed beside the VPC read: the subnet is one of the VPC the instances go into', async () => {
    const f = await fake();
    // Another VPC of the account (preflight launches nothing: its addresses are never dialled).
    const other = f.addVpc('127.77.250.0/24');
    const network = async (options: EC2ClusterOptions) => {
      f.server.clearLog();
      const report = await cluster(f, { nWorkers: 1, ...options }).preflight();
      expect(report.failures, report.format()).toEqual([]);
      expect(f.server.calls('DescribeSubnets')).toHaveLength(1);
      return report.checks.find((c) => c.id === 'network')!.message;
    };
    // A given VPC: its own (non-default) subnet, though the default VPC's default subnets sort first.
    expect(await network({ vpc: other.vpcId })).toMatch(new RegExp(`^subnet ${other.subnetId} in \\S+ of ${other.vpcId}`));
    // The default VPC: one of its subnets, though the listing holds the other VPC's too.
    const defaults = f.subnets().filter((x) => x.vpcId !== other.vpcId);
    const chosen = /^subnet (\S+) in/.exec(await network({}))?.[1];
    expect(defaults.map((x) => x.subnetId)).toContain(chosen);
  });

  it('a subnetId: its VPC is read after it, the offerings beside it', async () => {
    const f = await fake();
    f.faults.latency(/^(DescribeSubnets|DescribeVpcs|DescribeInstanceTypeOfferings)$/, DELAY_MS);
    const subnet = f.subnets()[0]!;
    const report = await cluster(f, { nWorkers: 1, subnetId: subnet.subnetId }).preflight();
    expect(report.failures, report.format()).toEqual([]);
    const at = (op: string) => f.server.calls(op)[0]!.at;
    expect(Math.abs(at('DescribeSubnets') - at('DescribeInstanceTypeOfferings'))).toBeLessThan(DELAY_MS);
    expect(at('DescribeVpcs')).toBeGreaterThan(at('DescribeSubnets'));
    expect(f.server.calls('DescribeSubnets')).toHaveLength(1);
  });

  // The network's reads go out together but count in the order they are used: the failure is
  // the first a read after the other would meet, and a read whose answer is not used (denied
  // here) is missing from no check, the permissions included.
  const first: { name: string; options: EC2ClusterOptions; deny: string[]; option: string; message: RegExp }[] = [
    { name: 'a subnet that does not exist, the offerings denied', options: { subnetId: 'subnet-0123456789abcdef0' }, deny: ['DescribeInstanceTypeOfferings', 'DescribeVpcs'], option: 'subnetId', message: /InvalidSubnetID\.NotFound/ },
    { name: 'a VPC that does not exist, the offerings and groups denied', options: { vpc: 'vpc-0123456789abcdef0', securityGroups: ['sg-0123456789abcdef0'] }, deny: ['DescribeInstanceTypeOfferings', 'DescribeSecurityGroups'], option: 'vpc', message: /InvalidVpcID\.NotFound/ },
    { name: 'a security group that does not exist', options: { securityGroups: ['sg-0123456789abcdef0'] }, deny: [], option: 'securityGroups', message: /InvalidGroup\.NotFound/ },
  ];
  for (const t of first) {
    it(`the network's first failure as before (${t.name})`, async () => {
      const f = await fake();
      f.deny(...t.deny);
      const report = await cluster(f, { nWorkers: 1, ...t.options }).preflight();
      const network = report.checks.find((x) => x.id === 'network')!;
      expect(network.status, report.format()).toBe('fail');
      expect(network.error!.details.option).toBe(t.option);
      expect(network.message).toMatch(t.message);
      expect(report.checks.find((x) => x.id === 'permissions')).toMatchObject({ status: 'skip', message: 'creates not tried: the network check did not pass' });
      expect(f.server.received.filter((r) => r.status === 0)).toEqual([]);
    });
  }

  // A failed location skips the network as it always has: whatever the network's reads answered
  // (they may have been made beside the location's) changes no check, the permissions included.
  const skipped: { name: string; options?: EC2ClusterOptions; deny?: string[]; permissions: string | RegExp; networkRead: boolean }[] = [
    { name: 'a region EC2 does not list', options: { region: 'eu-west-9' }, permissions: 'creates not tried: the network check did not pass', networkRead: false },
    { name: 'an opt-in region not enabled, the VPCs denied', options: { region: 'af-south-1' }, deny: ['DescribeVpcs'], permissions: 'creates not tried: the network check did not pass', networkRead: false },
    { name: 'a zone the region does not have, the VPCs and offerings denied', options: { availabilityZone: 'eu-west-1z' }, deny: ['DescribeVpcs', 'DescribeInstanceTypeOfferings'], permissions: 'creates not tried: the network check did not pass', networkRead: true },
    { name: 'the zones denied, the subnets denied too', options: { subnetId: 'subnet-0123456789abcdef0' }, deny: ['DescribeAvailabilityZones', 'DescribeSubnets'], permissions: /^ec2: these credentials may not call ec2:DescribeAvailabilityZones$/, networkRead: true },
  ];
  for (const t of skipped) {
    it(`a failed location (${t.name}): the network is reported skipped, and the permissions as before`, async () => {
      const f = await fake();
      if (t.deny) f.deny(...t.deny);
      f.faults.latency(/^(DescribeVpcs|DescribeSubnets|DescribeInstanceTypeOfferings)$/, DELAY_MS);
      const report = await cluster(f, { nWorkers: 1, ...t.options }).preflight();
      expect(report.status('location'), report.format()).toBe('fail');
      expect(report.checks.find((x) => x.id === 'network')).toMatchObject({ status: 'skip', message: 'not checked: the location check failed' });
      expect(report.checks.find((x) => x.id === 'nat')).toMatchObject({ status: 'pass' });
      expect(report.checks.find((x) => x.id === 'quota')!.message).toMatch(/^addresses not checked \(the network check failed\)/);
      expect(report.checks.find((x) => x.id === 'permissions')!.message).toMatch(t.permissions);
      // Nothing the region alone rules out is asked; no read is left in flight (the network's are delayed).
      const networkOps = f.server.operations().filter((op) => op === 'DescribeVpcs' || op === 'DescribeSubnets' || op === 'DescribeInstanceTypeOfferings');
      if (!t.networkRead) expect(networkOps).toEqual([]);
      expect(f.server.received.filter((r) => r.status === 0)).toEqual([]);
      expect(f.mutatingCalls()).toEqual([]);
    });
  }
});
