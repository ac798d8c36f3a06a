/**
 * EC2Cluster against FakeEc2, without booting anything: option checks, the exact requests a
 * start makes (security group rules, tags, IMDSv2, shutdown behaviour, base64 user-data,
 * batching), the request pipeline (throttling, 5xx, eventual consistency, attempts), and a clean
 * rollback when any step of start() fails or is aborted. Nothing listens on the instances'
 * addresses here, so starts end in a short scheduler timeout (every address is loopback).
 *
 * The Dask-backed tests (start completes, Python client, scale, close) are in ec2-dask.test.ts.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EC2Cluster, type EC2ClusterOptions } from '../../../providers/ec2';
import { architectureOf, resolveEc2Settings } from '../../../providers/ec2/options';
import { clientToken } from '../../../providers/ec2/adapter';
import { LABELS } from '../../../src/cluster/vm';
import type { ClusterEvent } from '../../../src/cluster/events';
import { CloudApiError, DaskCloudError, DaskCommError, ValidationError } from '../../../src/errors';
import { checkFakesAndClose, failedStart } from '../../helpers/fakes';
import { imageIdFor, OWNERS, type FakeEc2 } from '../../fakes/ec2';
import { authorizeFirst, collapsed, fakeOptions, nonDryRun, PREFLIGHT_OPS, startFake, tagMap, takePreflight } from './helpers';

/** Loopback slot of this file (ec2-dask.test.ts uses another): see helpers.ts. */
const SLOT = 1;
const fakes: FakeEc2[] = [];
afterEach(() => checkFakesAndClose(fakes, [], async () => vi.unstubAllEnvs()));

/** Fast lifecycles: the instance runs after 100 ms, terminates 100 ms after TerminateInstances. */
async function fake(opts: Parameters<typeof startFake>[1] = {}): Promise<FakeEc2> {
  const f = await startFake(SLOT, { lifecycleMs: { pendingMs: 100, shuttingDownMs: 100 }, ...opts });
  fakes.push(f);
  return f;
}

function cluster(f: FakeEc2, options: EC2ClusterOptions = {}): EC2Cluster {
  return new EC2Cluster({ ...fakeOptions(f), schedulerTimeoutMs: 1_000, ...options });
}

function leakedCount(f: FakeEc2): number {
  return Object.values(f.leaked()).flat().length;
}

const UNAUTHORIZED = { status: 400, code: 'UnauthorizedOperation', message: 'You are not authorized to perform this operation.' };

describe('EC2Cluster options (checked before any call)', () => {
  it('needs a region: option, AWS_REGION or AWS_DEFAULT_REGION', () => {
    vi.stubEnv('AWS_REGION', '');
    vi.stubEnv('AWS_DEFAULT_REGION', '');
    expect(() => new EC2Cluster({})).toThrow(ValidationError);
    expect(() => new EC2Cluster({})).toThrow(/region is required/);
    vi.stubEnv('AWS_DEFAULT_REGION', 'us-east-2');
    expect(resolveEc2Settings({}).region).toBe('us-east-2');
    vi.stubEnv('AWS_REGION', 'eu-central-1');
    expect(resolveEc2Settings({}).region).toBe('eu-central-1');
    expect(resolveEc2Settings({ region: 'ap-south-1' }).region).toBe('ap-south-1');
  });

  it('rejects malformed options with the option named', () => {
    const bad: [EC2ClusterOptions, RegExp][] = [
      [{ region: 'Europe' }, /region/],
      [{ region: 'eu-west-1', availabilityZone: 'us-east-1a' }, /availabilityZone/],
      [{ region: 'eu-west-1', ami: 'debian' }, /ami/],
      [{ region: 'eu-west-1', vpc: 'vpc-xyz' }, /vpc/],
      [{ region: 'eu-west-1', subnetId: 'sub-1' }, /subnetId/],
      [{ region: 'eu-west-1', securityGroups: [] }, /securityGroups/],
      [{ region: 'eu-west-1', securityGroups: ['default'] }, /securityGroups/],
      [{ region: 'eu-west-1', rootVolumeSizeGb: 0 }, /rootVolumeSizeGb/],
      [{ region: 'eu-west-1', rootVolumeSizeGb: 8.5 }, /rootVolumeSizeGb/],
      [{ region: 'eu-west-1', maxAttempts: 0 }, /maxAttempts/],
      [{ region: 'eu-west-1', spot: { maxPrice: 'cheap' } }, /spot/],
      [{ region: 'eu-west-1', tags: { Name: 'x' } }, /Name is set by dask-cloud/],
      [{ region: 'eu-west-1', tags: { [LABELS.cluster]: 'x' } }, /set by dask-cloud/],
      [{ region: 'eu-west-1', tags: { 'aws:x': 'y' } }, /aws:/],
      [{ region: 'eu-west-1', instanceType: '' }, /instanceType/],
      [{ region: 'eu-west-1', monitoring: 'yes' as unknown as boolean }, /monitoring/],
      [{ region: 'eu-west-1', ingressCidrs: ['everyone'] }, /ingressCidrs/],
      [{ region: 'eu-west-1', nWorkers: -1 }, /nWorkers/],
    ];
    for (const [options, message] of bad) {
      expect(() => new EC2Cluster(options), JSON.stringify(options)).toThrow(message);
      try {
        new EC2Cluster(options);
      } catch (err) {
        expect(DaskCloudError.isInstance(err)).toBe(true);
      }
    }
  });

  it('resolves defaults: t3.medium scheduler, m6i.large workers, instanceType for both, role options win', () => {
    const d = resolveEc2Settings({ region: 'eu-west-1' });
    expect([d.schedulerInstanceType, d.workerInstanceType, d.spot, d.monitoring, d.rootVolumeSizeGb]).toEqual(['t3.medium', 'm6i.large', false, false, undefined]);
    const both = resolveEc2Settings({ region: 'eu-west-1', instanceType: 'c6i.large', workerInstanceType: 'r6i.large' });
    expect([both.schedulerInstanceType, both.workerInstanceType]).toEqual(['c6i.large', 'r6i.large']);
    expect(resolveEc2Settings({ region: 'eu-west-1', spot: true }).spot).toEqual({});
  });

  it('knows Graviton instance types need arm64 images', () => {
    for (const t of ['m7g.large', 't4g.small', 'c6gn.xlarge', 'm6gd.large', 'a1.large', 'r8g.medium', 'im4gn.large']) expect(architectureOf(t), t).toBe('arm64');
    for (const t of ['m6i.large', 't3.medium', 'g5.xlarge', 'c5n.large', 'inf2.xlarge', 'p4d.24xlarge']) expect(architectureOf(t), t).toBe('x86_64');
  });

  it('derives ClientTokens per batch: deterministic, distinct, at most 64 characters', () => {
    const a = clientToken('dask-0123abcd', 'worker', ['w-0', 'w-1']);
    expect(clientToken('dask-0123abcd', 'worker', ['w-0', 'w-1'])).toBe(a);
    expect(clientToken('dask-0123abcd', 'worker', ['w-2'])).not.toBe(a);
    expect(clientToken('a'.repeat(31) + '-0123abcd', 'scheduler', ['s']).length).toBeLessThanOrEqual(64);
  });

  it('does not load the AWS SDK on import', () => {
    const root = path.resolve(__dirname, '../../..');
    const out = execFileSync(
      process.execPath,
      ['-r', 'tsx/cjs', '-e', "require('./providers/ec2'); console.log(Object.keys(require.cache).filter((k) => k.includes('@aws-sdk')).length)"],
      { cwd: root, encoding: 'utf8', timeout: 60_000 },
    );
    expect(out.trim()).toBe('0');
  });
});

describe('EC2Cluster requests (FakeEc2, nothing booted)', () => {
  it('public mode: exact calls, one RunInstances per role with MinCount=MaxCount, tags, IMDSv2, terminate on shutdown, base64 user-data, SG rules', async () => {
    const f = await fake();
    const events: ClusterEvent[] = [];
    const c = cluster(f, { nWorkers: 3, ingressCidrs: ['203.0.113.0/24'], tags: { team: 'data' }, onEvent: (e) => events.push(e) });
    const err = await failedStart(c);
    expect(err.details.phase).toBe('scheduler'); // nothing listens: the scheduler never answers

    const ops = authorizeFirst(collapsed(f.server.operations()));
    expect(takePreflight(ops)).toEqual([...PREFLIGHT_OPS]);
    expect(f.mutatingCalls()[0]?.operation).toBe('CreateSecurityGroup'); // nothing before preflight ended
    const diag = ops.indexOf('GetConsoleOutput');
    expect(ops.slice(0, 3)).toEqual([
      'CreateSecurityGroup',
      'AuthorizeSecurityGroupIngress', // sent while the scheduler launches (authorizeFirst)
      'RunInstances', // scheduler
    ]);
    // Then, concurrently: all 3 workers in one RunInstances, and polling for the scheduler's public address.
    expect(ops.slice(3, diag).filter((op) => op !== 'DescribeInstances')).toEqual(['RunInstances']);
    expect(ops.slice(3, diag)).toContain('DescribeInstances');
    expect(ops.slice(diag)).toEqual([
      'GetConsoleOutput', // the scheduler's console, for the error
      'TerminateInstances',
      'DescribeInstances', // sweep by tag
      'DeleteSecurityGroup', // retried while DependencyViolation
    ]);

    const images = f.server.calls('DescribeImages')[0]!.normalized as { Owner: string[]; Filter: { Name: string; Value: string[] }[] };
    expect(images.Owner).toEqual([OWNERS.debian]);
    expect(images.Filter).toContainEqual({ Name: 'name', Value: ['debian-12-amd64-*'] });

    // Security group: created tagged, then all rules in one call.
    const sgCall = f.server.calls('CreateSecurityGroup')[0]!.normalized as { GroupName: string; VpcId: string; TagSpecification: { ResourceType: string; Tag: { Key: string; Value: string }[] }[] };
    expect(sgCall.GroupName).toBe(c.id);
    expect(sgCall.VpcId).toBe(f.defaultVpc.vpcId);
    const sgTags = Object.fromEntries(sgCall.TagSpecification[0]!.Tag.map((t) => [t.Key, t.Value]));
    expect(sgCall.TagSpecification[0]!.ResourceType).toBe('security-group');
    expect(sgTags).toMatchObject({ Name: c.id, [LABELS.cluster]: c.id, team: 'data' });
    expect(Number(sgTags[LABELS.expires])).toBeGreaterThan(Date.now() / 1000);
    const auth = f.server.calls('AuthorizeSecurityGroupIngress')[0]!.normalized as { GroupId: string; IpPermissions: { IpProtocol: string; FromPort: number; ToPort: number; IpRanges?: { CidrIp: string }[]; Groups?: { GroupId: string }[] }[] };
    const rules = auth.IpPermissions.flatMap((p) => [
      ...(p.Groups ?? []).map((g) => `${p.FromPort}-${p.ToPort} ${g.GroupId === auth.GroupId ? 'self' : g.GroupId}`),
      ...(p.IpRanges ?? []).map((r) => `${p.FromPort}-${p.ToPort} ${r.CidrIp}`),
    ]);
    const vpcCidr = f.defaultVpc.cidrBlock;
    expect(rules.sort()).toEqual(['0-65535 self', `8786-8786 ${vpcCidr}`, '8786-8786 203.0.113.0/24', `8788-8788 ${vpcCidr}`, '8788-8788 203.0.113.0/24'].sort());

    // Instances: scheduler batch of 1, workers one batch of 3.
    const [sched, workers] = f.server.calls('RunInstances').filter((r) => r.params.DryRun === undefined).map((r) => r.normalized as Record<string, any>);
    expect([sched!.MinCount, sched!.MaxCount, sched!.InstanceType]).toEqual([1, 1, 't3.medium']);
    expect([workers!.MinCount, workers!.MaxCount, workers!.InstanceType]).toEqual([3, 3, 'm6i.large']);
    expect(sched!.ImageId).toBe(imageIdFor('debian-12-amd64-20250115-1997')); // the newest Debian 12 amd64
    expect(sched!.ClientToken).not.toBe(workers!.ClientToken);
    for (const run of [sched!, workers!]) {
      expect(run.NetworkInterface).toEqual([{ DeviceIndex: 0, SubnetId: expect.any(String), SecurityGroupId: [auth.GroupId], AssociatePublicIpAddress: true, DeleteOnTermination: true }]);
      expect(run.MetadataOptions).toMatchObject({ HttpTokens: 'required' });
      expect(run.InstanceInitiatedShutdownBehavior).toBe('terminate');
      expect(run.BlockDeviceMapping).toEqual([{ DeviceName: '/dev/xvda', Ebs: { VolumeSize: 20, VolumeType: 'gp3', DeleteOnTermination: true } }]);
      expect(run.TagSpecification.map((t: { ResourceType: string }) => t.ResourceType)).toEqual(['instance', 'volume']);
      expect(run.InstanceMarketOptions).toBeUndefined();
    }
    const stored = f.instances();
    expect(stored).toHaveLength(4);
    for (const inst of stored) {
      // What EC2 keeps: IMDSv2 only, terminate on guest shutdown, user-data = our base64 decoded.
      expect(inst.metadataOptions.httpTokens).toBe('required');
      expect(inst.instanceInitiatedShutdownBehavior).toBe('terminate');
      const role = inst.reservationId === stored[0]!.reservationId ? 'scheduler' : 'worker';
      const sent = f.server.calls('RunInstances').filter((r) => r.params.DryRun === undefined)[role === 'scheduler' ? 0 : 1]!.params.UserData as string;
      expect(Buffer.from(sent, 'base64').equals(Buffer.from(inst.userData))).toBe(true);
      const text = Buffer.from(inst.userData);
      expect(text.subarray(0, 13).toString() === '#cloud-config' || (text[0] === 0x1f && text[1] === 0x8b)).toBe(true);
      expect(tagMap(inst.tags)).toEqual({
        Name: role === 'scheduler' ? `${c.id}-scheduler` : `${c.id}-worker`,
        [LABELS.cluster]: c.id,
        [LABELS.role]: role,
        [LABELS.expires]: expect.stringMatching(/^\d+$/),
        team: 'data',
        // The scheduler also says how clients reach it, so a listing can give its address.
        ...(role === 'scheduler' ? { [LABELS.protocol]: 'tls', [LABELS.port]: '8786' } : {}),
      });
      expect(inst.state).toBe('terminated');
    }
    // The core keeps distinct member names for the workers.
    const launched = events.filter((e): e is Extract<ClusterEvent, { type: 'member-launched' }> => e.type === 'member-launched');
    expect(launched.map((e) => e.name)).toEqual([`${c.id}-scheduler`, `${c.id}-worker-0`, `${c.id}-worker-1`, `${c.id}-worker-2`]);
    expect(leakedCount(f)).toBe(0);
    expect(f.securityGroup(c.id)).toBeUndefined();
  });

  it('private mode: no public address, no public ingress, the scheduler is dialled on its private address', async () => {
    const f = await fake();
    f.routeThroughNat(); // the docker runtime needs egress
    const c = cluster(f, { nWorkers: 1, privateNetworking: true });
    const err = await failedStart(c);
    expect(err.message).toMatch(/tls:\/\/127\.77\.\d+\.\d+:8786/);
    const run = f.server.calls('RunInstances').filter((r) => r.params.DryRun === undefined).map((r) => r.normalized as Record<string, any>);
    for (const r of run) expect(r.NetworkInterface[0].AssociatePublicIpAddress).toBe(false);
    for (const inst of f.instances()) expect(inst.associatePublicIp).toBe(false);
    const sched = f.instances().find((i) => tagMap(i.tags)[LABELS.role] === 'scheduler')!;
    expect(err.message).toContain(`tls://${sched.privateIpAddress}:8786`);
    const auth = f.server.calls('AuthorizeSecurityGroupIngress')[0]!.normalized as { IpPermissions: { IpRanges?: { CidrIp: string }[] }[] };
    const cidrs = auth.IpPermissions.flatMap((p) => (p.IpRanges ?? []).map((r) => r.CidrIp));
    expect(new Set(cidrs)).toEqual(new Set([f.defaultVpc.cidrBlock]));
    // The private address comes from RunInstances: no DescribeInstances before the readiness wait.
    const real = authorizeFirst(collapsed(nonDryRun(f)));
    expect(real.slice(real.indexOf('AuthorizeSecurityGroupIngress') + 1)).toEqual(['RunInstances', 'RunInstances', 'GetConsoleOutput', 'TerminateInstances', 'DescribeInstances', 'DeleteSecurityGroup']);
    expect(f.server.operations()).toContain('DescribeRouteTables');
    expect(leakedCount(f)).toBe(0);
  });

  it('security: false: a warning, tcp:// and the scheduler rule marked NO TLS; exposeDashboard opens 8787 to ingressCidrs', async () => {
    const f = await fake();
    const warnings: string[] = [];
    const c = cluster(f, { nWorkers: 0, security: false, exposeDashboard: true, ingressCidrs: ['198.51.100.7/32'], onEvent: (e) => e.type === 'warning' && warnings.push(e.message) });
    const err = await failedStart(c);
    expect(err.message).toMatch(/tcp:\/\/127\.77\./);
    expect(warnings.join('\n')).toMatch(/security is off/);
    const auth = f.server.calls('AuthorizeSecurityGroupIngress')[0]!.normalized as { IpPermissions: { FromPort: number; IpRanges?: { CidrIp: string; Description?: string }[] }[] };
    const publicRules = auth.IpPermissions.flatMap((p) => (p.IpRanges ?? []).filter((r) => r.CidrIp === '198.51.100.7/32').map((r) => `${p.FromPort} ${r.Description}`));
    expect(publicRules.sort()).toEqual(['8786 scheduler (NO TLS)', '8787 dashboard (exposeDashboard)']);
    expect(nonDryRun(f).filter((op) => op === 'RunInstances')).toHaveLength(1); // nWorkers: 0
  });

  it('user securityGroups are used as they are and never created, changed or deleted', async () => {
    const f = await fake();
    const { EC2Client, CreateSecurityGroupCommand } = await import('@aws-sdk/client-ec2');
    const client = new EC2Client(f.clientConfig());
    const { GroupId } = await client.send(new CreateSecurityGroupCommand({ GroupName: 'mine', Description: 'user group', VpcId: f.defaultVpc.vpcId }));
    f.server.clearLog();
    const c = new EC2Cluster({ ...fakeOptions(f), client, nWorkers: 1, securityGroups: [GroupId!], schedulerTimeoutMs: 1_000 });
    await failedStart(c);
    const ops = f.server.operations();
    expect(ops).toContain('DescribeSecurityGroups');
    for (const op of ['CreateSecurityGroup', 'AuthorizeSecurityGroupIngress', 'DeleteSecurityGroup']) expect(ops).not.toContain(op);
    for (const r of f.server.calls('RunInstances')) expect((r.normalized as any).NetworkInterface[0].SecurityGroupId).toEqual([GroupId]);
    expect(f.securityGroup(GroupId!)).toBeDefined();
    expect(f.instances().every((i) => i.state === 'terminated' || i.state === 'shutting-down')).toBe(true);
    await c.close();
    client.destroy(); // ours, not the cluster's: close() left it usable
  });

  it('options reach RunInstances: ami, subnet, zone, key, IAM profile, root size, spot for workers only, monitoring', async () => {
    const f = await fake();
    const subnet = f.subnets().find((s) => s.availabilityZone.endsWith('b'))!;
    const ami = imageIdFor('ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250115');
    const c = cluster(f, {
      nWorkers: 2,
      ami,
      subnetId: subnet.subnetId,
      availabilityZone: subnet.availabilityZone,
      keyName: 'me',
      iamInstanceProfile: 'arn:aws:iam::123456789012:instance-profile/dask',
      rootVolumeSizeGb: 50,
      spot: { maxPrice: '0.05' },
      monitoring: true,
    });
    await failedStart(c);
    const ops = collapsed(f.server.operations());
    // The given subnet beside the zones, the image and the offerings; its VPC once it is known.
    expect(takePreflight(ops.slice(0, 6))).toEqual(['DescribeRegions', 'DescribeAvailabilityZones', 'DescribeImages', 'DescribeInstanceTypeOfferings', 'DescribeSubnets', 'DescribeVpcs']);
    expect(ops.indexOf('DescribeVpcs')).toBeGreaterThan(ops.indexOf('DescribeSubnets'));
    expect((f.server.calls('DescribeImages')[0]!.normalized as any).ImageId).toEqual([ami]);
    const [sched, workers] = f.server.calls('RunInstances').filter((r) => r.params.DryRun === undefined).map((r) => r.normalized as Record<string, any>);
    for (const r of [sched!, workers!]) {
      expect(r).toMatchObject({ ImageId: ami, KeyName: 'me', IamInstanceProfile: { Arn: 'arn:aws:iam::123456789012:instance-profile/dask' }, Monitoring: { Enabled: true } });
      expect(r.NetworkInterface[0].SubnetId).toBe(subnet.subnetId);
      expect(r.BlockDeviceMapping).toEqual([{ DeviceName: '/dev/sda1', Ebs: { VolumeSize: 50, VolumeType: 'gp3', DeleteOnTermination: true } }]);
    }
    expect(sched!.InstanceMarketOptions).toBeUndefined();
    expect(workers!.InstanceMarketOptions).toEqual({ MarketType: 'spot', SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate', MaxPrice: '0.05' } });
    expect(workers!.TagSpecification.map((t: { ResourceType: string }) => t.ResourceType)).toEqual(['instance', 'volume', 'spot-instances-request']);
    expect(f.instances().every((i) => i.availabilityZone === subnet.availabilityZone)).toBe(true);
    expect(leakedCount(f)).toBe(0);
  });

  it('Graviton workers get the arm64 Debian image; an ami of the wrong architecture fails before anything is created', async () => {
    const f = await fake();
    await failedStart(cluster(f, { nWorkers: 1, workerInstanceType: 'm7g.large' }));
    const filters = f.server.calls('DescribeImages').map((r) => (r.normalized as any).Filter.find((x: { Name: string }) => x.Name === 'name').Value[0]);
    expect(filters).toEqual(['debian-12-amd64-*', 'debian-12-arm64-*']);
    const [sched, workers] = f.server.calls('RunInstances').filter((r) => r.params.DryRun === undefined).map((r) => r.normalized as Record<string, any>);
    expect(sched!.ImageId).toBe(imageIdFor('debian-12-amd64-20250115-1997'));
    expect(workers!.ImageId).toBe(imageIdFor('debian-12-arm64-20250115-1997'));

    f.server.clearLog();
    const c = cluster(f, { nWorkers: 1, ami: imageIdFor('debian-12-amd64-20250115-1997'), workerInstanceType: 'm7g.large' });
    const err = (await c.start().catch((e: unknown) => e)) as ValidationError;
    expect(ValidationError.isInstance(err), String(err)).toBe(true);
    expect(err.details.option).toBe('ami');
    expect(err.message).toMatch(/x86_64 but the instance types need x86_64 and arm64/);
    expect(c.state).toBe('failed');
    expect(f.mutatingCalls()).toEqual([]); // preflight only: nothing to sweep
    expect(leakedCount(f)).toBe(0);
  });
});

describe('EC2Cluster start() failing at each step leaves nothing behind', () => {
  // Refused reads in preflight: the typed error at once, no mutating call, nothing to roll back.
  for (const op of ['DescribeRegions', 'DescribeImages', 'DescribeVpcs', 'DescribeSubnets', 'DescribeInstanceTypeOfferings']) {
    it(`${op} refused → PreflightError naming the IAM action, before anything is created`, async () => {
      const f = await fake();
      f.faults.fail(op, UNAUTHORIZED);
      const c = cluster(f, { nWorkers: 2 });
      const err = (await c.start().catch((e: unknown) => e)) as DaskCloudError;
      expect(DaskCloudError.isInstance(err), String(err)).toBe(true);
      expect(err.code).toBe('E_PREFLIGHT');
      expect(err.message).toContain(`ec2:${op}`);
      expect(c.state).toBe('failed');
      expect(f.mutatingCalls()).toEqual([]);
      expect(leakedCount(f)).toBe(0);
    });
  }

  // nth counts DryRun requests too: preflight makes one CreateSecurityGroup and two RunInstances DryRuns.
  const steps: { op: string; nth?: number; phase: string; created: string[]; console: boolean }[] = [
    { op: 'CreateSecurityGroup', nth: 2, phase: 'network', created: [], console: false },
    // Authorised while the scheduler launches: its failure is seen before the scheduler is dialled.
    { op: 'AuthorizeSecurityGroupIngress', phase: 'scheduler', created: ['sg', 'instances'], console: false },
    { op: 'RunInstances', nth: 3, phase: 'scheduler', created: ['sg'], console: false },
    { op: 'DescribeInstances', nth: 1, phase: 'scheduler', created: ['sg', 'instances'], console: true },
  ];
  for (const step of steps) {
    it(`${step.op}${step.nth ? ` (request ${step.nth})` : ''} → ClusterStartError naming it, during ${step.phase}`, async () => {
      // pendingMs 0: the scheduler runs at once, so its console has output for the error.
      const f = await fake({ lifecycleMs: { pendingMs: 0, shuttingDownMs: 100 } });
      f.faults.fail(step.op, UNAUTHORIZED, step.nth ? { nth: step.nth } : {});
      const c = cluster(f, { nWorkers: 2 });
      const err = await failedStart(c);
      expect(err.code).toBe('E_START_FAILED');
      expect(err.details.phase).toBe(step.phase);
      expect(err.message).toContain(`failed during ${step.phase}`);
      expect(err.message).toContain(`ec2 ${step.op} failed: UnauthorizedOperation`);
      expect(err.message).toContain('Everything created for this cluster has been deleted');
      const cause = err.cause as CloudApiError;
      expect(cause.code).toBe('E_CLOUD_API');
      expect(cause.details).toMatchObject({ provider: 'ec2', operation: step.op, ec2Code: 'UnauthorizedOperation', httpStatus: 400, attempts: 1 });
      if (step.console) {
        expect(err.message).toContain(`--- last output of ${c.id}-scheduler ---`);
        expect(err.message).toContain('Cloud-init v. 22.4.2 finished');
        expect(f.server.operations()).toContain('GetConsoleOutput');
      }
      expect(c.state).toBe('failed');
      expect(leakedCount(f)).toBe(0);
      const ops = f.server.operations();
      expect(ops.includes('DeleteSecurityGroup')).toBe(step.created.includes('sg'));
      if (step.op === 'CreateSecurityGroup') {
        // Its id was never learnt: teardown looks for a group carrying the cluster tag.
        expect(ops.slice(-1)).toEqual(['DescribeSecurityGroups']);
      }
      await c.close(); // a no-op now
    });
  }

  it('the scheduler launches while the rules are authorised, the workers once they are: a refused authorisation launches no worker, and rolls back the group last', async () => {
    const f = await fake();
    const DELAY_MS = 3_000;
    f.faults.latency('AuthorizeSecurityGroupIngress', DELAY_MS);
    f.faults.fail('AuthorizeSecurityGroupIngress', UNAUTHORIZED);
    const c = cluster(f, { nWorkers: 200, schedulerTimeoutMs: 60_000 });
    const err = await failedStart(c);
    expect(err.details.phase).toBe('scheduler');
    expect(err.message).toContain('ec2 AuthorizeSecurityGroupIngress failed: UnauthorizedOperation');
    const real = f.server.received.filter((r) => String(r.params.DryRun) !== 'true');
    const at = (op: string) => real.filter((r) => r.operation === op).map((r) => r.at);
    const [authorizeAt] = at('AuthorizeSecurityGroupIngress');
    const answeredAt = authorizeAt! + DELAY_MS;
    // The scheduler's RunInstances went out before the authorisation was answered; the 200
    // workers were never launched (no preflight can try an authorisation ahead) ...
    expect(real.filter((r) => r.operation === 'RunInstances').map((r) => r.params.MaxCount)).toEqual(['1']);
    expect(at('RunInstances')[0]).toBeLessThan(answeredAt);
    // ... and the group was deleted only after it was.
    expect(at('DeleteSecurityGroup').length).toBeGreaterThan(0);
    for (const t of at('DeleteSecurityGroup')) expect(t).toBeGreaterThanOrEqual(answeredAt);
    expect(c.state).toBe('failed');
    expect(leakedCount(f)).toBe(0);
  });

  it('an authorisation answered after the scheduler’s launch: the workers launch once it is, and the start completes its launches', async () => {
    const f = await fake();
    const DELAY_MS = 1_500;
    f.faults.latency('AuthorizeSecurityGroupIngress', DELAY_MS);
    // Nothing listens on the loopback addresses: the start ends in the scheduler timeout, after both launches.
    const c = cluster(f, { nWorkers: 2, schedulerTimeoutMs: 500 });
    await failedStart(c);
    const real = f.server.received.filter((r) => String(r.params.DryRun) !== 'true');
    const at = (op: string) => real.filter((r) => r.operation === op).map((r) => r.at);
    const [authorizeAt] = at('AuthorizeSecurityGroupIngress');
    const [schedulerAt, workersAt] = at('RunInstances');
    expect(schedulerAt).toBeLessThan(authorizeAt! + DELAY_MS);
    expect(workersAt).toBeGreaterThanOrEqual(authorizeAt! + DELAY_MS);
    expect(leakedCount(f)).toBe(0);
  });

  it('the scheduler is looked for every 250 ms until the deadline: the pause does not grow', async () => {
    const f = await fake();
    // Nothing listens on the loopback addresses: every look is refused until the deadline.
    const TIMEOUT_MS = 4_000;
    const err = await failedStart(cluster(f, { nWorkers: 0, schedulerTimeoutMs: TIMEOUT_MS }));
    const timeout = err.cause as DaskCommError;
    expect(timeout.code, String(timeout)).toBe('E_TIMEOUT');
    // Pauses of 250 ms (with jitter) give about 16 looks; a pause grown to a second gave 5.
    expect(timeout.details.attempts).toBeGreaterThanOrEqual(TIMEOUT_MS / 500);
    expect(leakedCount(f)).toBe(0);
  });

  it('a paced launch sends each step once the launch budget holds it, not after the previous step is answered, in steps no larger than the burst', async () => {
    // A bucket of 6 (smaller than a paced step of 10, which used to wait forever) refilled at
    // 20/s: the scheduler, then steps of 6 about every 300 ms. Every RunInstances takes
    // LATENCY_MS, five times a step's refill.
    const launchRate = { burst: 6, perSecond: 20 };
    const LATENCY_MS = 1_500;
    const f = await fake({ runInstancesRate: launchRate });
    f.faults.latency('RunInstances', LATENCY_MS);
    const events: ClusterEvent[] = [];
    // Nothing listens on the loopback addresses: the start ends in the scheduler timeout, after every launch.
    const c = cluster(f, { nWorkers: 35, launchRate, schedulerTimeoutMs: 8_000, onEvent: (e) => events.push(e) });
    await failedStart(c);
    const runs = f.server.calls('RunInstances').filter((r) => String(r.params.DryRun) !== 'true');
    // The scheduler, then the workers in steps of the burst (a step sent again after a refusal
    // may be answered after a later one).
    expect(runs[0]).toMatchObject({ status: 200, params: { MaxCount: '1' } });
    expect(runs.slice(1).filter((r) => r.status === 200).map((r) => String(r.params.MaxCount)).sort()).toEqual(['5', '6', '6', '6', '6', '6']);
    // The library counts its budget from when a step is sent, the fake (as EC2) from when it
    // arrives: on a loaded machine a step can arrive early and be refused. The pipeline then
    // sends it again (same ClientToken), and no error reaches the caller.
    const refused = runs.filter((r) => r.status !== 200);
    expect(refused.map((r) => r.status)).toEqual(refused.map(() => 503));
    expect(refused.length).toBeLessThanOrEqual(2);
    expect(events.some((e) => e.type === 'pacing')).toBe(true);
    // Each step used to wait for the previous one's answer, which comes LATENCY_MS after its
    // request at the earliest: no step was ever sent while another was in flight.
    const paced = runs.slice(1).map((r) => r.at);
    const sentInFlight = paced.slice(1).filter((at, k) => at < paced[k]! + LATENCY_MS);
    expect(sentInFlight.length, paced.map((at) => at - paced[0]!).join(' ')).toBeGreaterThan(0);
    expect(f.instances()).toHaveLength(36);
    expect(leakedCount(f)).toBe(0);
  });

  it('a launch refused while the rules are being authorised: the group is deleted only once the authorisation is answered', async () => {
    const f = await fake();
    const DELAY_MS = 3_000;
    f.faults.latency('AuthorizeSecurityGroupIngress', DELAY_MS);
    f.faults.fail('RunInstances', UNAUTHORIZED, { nth: 3 }); // after the two DryRuns: the scheduler's
    const c = cluster(f, { nWorkers: 2 });
    const err = await failedStart(c);
    expect(err.message).toContain('ec2 RunInstances failed: UnauthorizedOperation');
    const real = f.server.received.filter((r) => String(r.params.DryRun) !== 'true');
    const at = (op: string) => real.filter((r) => r.operation === op).map((r) => r.at);
    const [authorizeAt] = at('AuthorizeSecurityGroupIngress');
    // The refusal came while the authorisation was held; the rollback waited for its answer.
    expect(at('RunInstances')[0]).toBeLessThan(authorizeAt! + DELAY_MS);
    expect(at('DeleteSecurityGroup').length).toBeGreaterThan(0);
    for (const t of at('DeleteSecurityGroup')) expect(t).toBeGreaterThanOrEqual(authorizeAt! + DELAY_MS);
    expect(leakedCount(f)).toBe(0);
  });

  it('a scheduler that never answers → timeout error with its console output; everything deleted', async () => {
    const f = await fake({ lifecycleMs: { pendingMs: 0, shuttingDownMs: 100 } });
    const c = cluster(f, { nWorkers: 2, schedulerTimeoutMs: 800 });
    const err = await failedStart(c);
    expect(err.details.phase).toBe('scheduler');
    expect(err.message).toMatch(/was not ready within 800 ms/);
    expect(err.message).toContain('Cloud-init v. 22.4.2 finished');
    expect(err.details.consoleTail).toContain('Linux version');
    expect(leakedCount(f)).toBe(0);
  });

  it('abort during start (after the scheduler launched) rolls back with E_ABORTED', async () => {
    const f = await fake();
    const controller = new AbortController();
    const c = cluster(f, {
      nWorkers: 2,
      schedulerTimeoutMs: 30_000,
      signal: controller.signal,
      onEvent: (e) => e.type === 'member-launched' && e.role === 'worker' && controller.abort(),
    });
    const t0 = Date.now();
    const err = await failedStart(c);
    expect(err.code).toBe('E_ABORTED');
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(leakedCount(f)).toBe(0);
    expect(f.instances()).toHaveLength(3);
  });

  it('close() during start waits for the rollback', async () => {
    const f = await fake();
    const c = cluster(f, { nWorkers: 1, schedulerTimeoutMs: 30_000 });
    const starting = c.start().catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 300));
    await c.close();
    expect(DaskCloudError.isInstance(await starting)).toBe(true);
    expect(c.state).toBe('closed');
    expect(leakedCount(f)).toBe(0);
  });
});

describe('EC2 request pipeline', () => {
  it('retries RequestLimitExceeded and 5xx, reusing the ClientToken: no duplicate instances', async () => {
    const f = await fake();
    f.faults.fail('DescribeImages', { status: 503, code: 'RequestLimitExceeded', message: 'Request limit exceeded.' }, { times: 2 });
    // Requests 1 and 2 are preflight's DryRuns: the scheduler's create is request 3.
    f.faults.fail('RunInstances', { status: 500, code: 'InternalError', message: 'An internal error has occurred' }, { nth: 3 });
    f.faults.fail('RunInstances', { status: 503, code: 'RequestLimitExceeded', message: 'Request limit exceeded.' }, { nth: 4 });
    const c = cluster(f, { nWorkers: 2 });
    const err = await failedStart(c);
    expect(err.details.phase).toBe('scheduler'); // got as far as the readiness wait
    expect(f.server.calls('DescribeImages').map((r) => r.rejectedBy ?? r.status)).toEqual(['fault', 'fault', 200]);
    const runs = f.server.calls('RunInstances').filter((r) => r.params.DryRun === undefined);
    expect(runs.filter((r) => r.rejectedBy === undefined)).toHaveLength(2);
    // The rejected attempts used the token of the call they retried.
    const tokens = runs.map((r) => r.params.ClientToken);
    expect(runs.map((r) => r.rejectedBy ?? r.status)).toEqual(['fault', 'fault', 200, 200]);
    expect(tokens[1]).toBe(tokens[0]);
    expect(tokens[2]).toBe(tokens[0]); // the scheduler's create, three times with one token
    expect(tokens[3]).not.toBe(tokens[0]); // the workers' batch
    expect(f.instances()).toHaveLength(3);
    expect(leakedCount(f)).toBe(0);
  });

  it('gives up after maxAttempts with the EC2 code, operation and attempts in the error', async () => {
    const f = await fake();
    f.faults.fail('DescribeVpcs', { status: 503, code: 'RequestLimitExceeded', message: 'Request limit exceeded.' });
    // A preflight read: its own error, thrown before anything is created.
    const err = (await cluster(f, { maxAttempts: 3 }).start().catch((e: unknown) => e)) as CloudApiError;
    expect(CloudApiError.isInstance(err), String(err)).toBe(true);
    expect(f.server.calls('DescribeVpcs')).toHaveLength(3);
    expect(err.message).toContain('ec2 DescribeVpcs failed after 3 attempts: RequestLimitExceeded');
    expect(f.mutatingCalls()).toEqual([]);
    expect(err.details).toMatchObject({ operation: 'DescribeVpcs', ec2Code: 'RequestLimitExceeded', httpStatus: 503, attempts: 3 });
  });

  it('eventual consistency: NotFound for fresh ids is retried by DescribeInstances and TerminateInstances', async () => {
    const f = await fake({ lifecycleMs: { pendingMs: 100, shuttingDownMs: 100, consistencyDelayMs: 1_500 } });
    f.routeThroughNat(); // private mode with the docker runtime needs egress
    const controller = new AbortController();
    // Abort as soon as the scheduler exists: the rollback terminates an id EC2 does not show yet.
    const c = cluster(f, { nWorkers: 0, privateNetworking: true, signal: controller.signal, onEvent: (e) => e.type === 'member-launched' && controller.abort() });
    const err = await failedStart(c);
    expect(err.code).toBe('E_ABORTED');
    const terminates = f.server.calls('TerminateInstances').map((r) => r.status);
    expect(terminates[0]).toBe(400);
    expect(terminates.at(-1)).toBe(200);
    expect(leakedCount(f)).toBe(0);

    f.server.clearLog();
    const c2 = cluster(f, { nWorkers: 0, schedulerTimeoutMs: 500 });
    await failedStart(c2);
    const describes = f.server.calls('DescribeInstances').filter((r) => r.params['InstanceId.1'] !== undefined).map((r) => r.status);
    expect(describes[0]).toBe(400); // InvalidInstanceID.NotFound right after RunInstances
    expect(describes.at(-1)).toBe(200);
    expect(leakedCount(f)).toBe(0);
  });
});
