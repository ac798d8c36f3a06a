/**
 * The EC2 provider against moto, a third-party EC2 emulator (Debian's python3-moto), through the
 * real library: EC2Cluster from providers/ec2, the real AWS SDK, moto's own answers. Our fake
 * (test/fakes/ec2) is our reading of the docs; moto is someone else's, so where both accept the
 * same requests, in the same order, our assumptions did not leak into the fake alone.
 *
 * Nothing boots on moto: every start ends at the scheduler readiness wait. The addresses moto
 * hands out (54.x public, 172.31.x / 10.x private) are dialled by the library, so this file only
 * runs in a loopback-only network namespace (test/moto/setup.ts checks it; npm test runs the
 * project through scripts/in-loopback-netns.sh), where such a dial fails at once.
 *
 * What moto lacks, and which tests therefore stay on the fake only, is in test/moto/README.md.
 */
import { connect } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AllocateAddressCommand, CreateNatGatewayCommand, CreateRouteCommand, DescribeRouteTablesCommand, EC2Client, CreateSecurityGroupCommand, DeleteSecurityGroupCommand, DescribeInstancesCommand, DescribeInstanceTypeOfferingsCommand, DescribeSecurityGroupsCommand, DescribeVpcsCommand, DescribeSubnetsCommand, RunInstancesCommand, TerminateInstancesCommand } from '@aws-sdk/client-ec2';
import { EC2Cluster, type EC2ClusterOptions } from '../../providers/ec2';
import { CHECK_IDS } from '../../src/cluster/preflight';
import { LABELS } from '../../src/cluster/vm';
import { DaskCloudError, PreflightError, ValidationError } from '../../src/errors';
import { assertNoContractViolations } from '../fakes/core';
import { failedStart } from '../helpers/fakes';
import { have } from '../helpers/prereq';
import { killStartAt } from '../helpers/kill-at-step';
import { authorizeFirst, collapsed, fakeOptions, startFake } from '../providers/ec2/helpers';
import { NEWEST_DEBIAN } from './amis';
import { MotoEc2, motoRoot, type MotoCall } from './moto-ec2';

const RUN = have(motoRoot());
let moto: MotoEc2;

beforeAll(async () => {
  if (RUN) moto = await MotoEc2.start();
});
afterAll(async () => {
  await moto?.stop();
});
afterEach(async () => {
  if (!moto) return;
  try {
    assertNoContractViolations(moto);
    expect(moto.server.handlerErrors, 'moto failed to answer (HTML 500: an unimplemented filter, or a crash)').toEqual([]);
  } finally {
    await moto.reset();
  }
});

/** EC2Cluster options that reach moto through the logging proxy, as fakeOptions() does for FakeEc2. */
function motoOptions(m: MotoEc2, region = m.region): Pick<EC2ClusterOptions, 'region' | 'endpoint' | 'credentials' | 'closeOnSignals' | 'memberWatchIntervalMs'> {
  const cfg = m.clientConfig();
  // The member watch would add lists at random points; the call-sequence tests need none.
  return { region, endpoint: cfg.endpoint, credentials: cfg.credentials, closeOnSignals: false, memberWatchIntervalMs: 0 };
}

function cluster(options: EC2ClusterOptions = {}): EC2Cluster {
  return new EC2Cluster({ ...motoOptions(moto), schedulerTimeoutMs: 2_000, ...options });
}

async function leakedCount(region?: string): Promise<number> {
  return Object.values(await moto.leaked(region)).flat().length;
}

/** What start() threw (it must throw a DaskCloudError). */
async function startError(c: EC2Cluster): Promise<DaskCloudError> {
  const err = await c.start().then(
    () => {
      throw new Error('start() should have failed');
    },
    (e: unknown) => e,
  );
  expect(DaskCloudError.isInstance(err), String(err)).toBe(true);
  return err as DaskCloudError;
}

/** `<name>` values of an XML answer. */
function xmlValues(xml: string | undefined, name: string): string[] {
  return [...(xml ?? '').matchAll(new RegExp(`<${name}>([^<]*)</${name}>`, 'g'))].map((m) => m[1] as string);
}

/** Non-DryRun calls of an operation. */
function real(calls: MotoCall[]): MotoCall[] {
  return calls.filter((c) => c.params.DryRun !== 'true');
}

/** How a TCP connect to addr:port ends, and how long it took. */
function dial(addr: string, port: number, timeoutMs: number): Promise<{ outcome: string; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const socket = connect({ host: addr, port });
    const done = (outcome: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ outcome, ms: Date.now() - t0 });
    };
    const timer = setTimeout(() => done('timeout'), timeoutMs);
    socket.once('connect', () => done('connected'));
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
  });
}

describe.runIf(RUN)('EC2Cluster against moto', () => {
  it('start: fails at scheduler readiness (moto addresses are unreachable here, at once), and the rollback leaves moto empty', async () => {
    const schedulerTimeoutMs = 2_000;
    const c = cluster({ nWorkers: 2, schedulerTimeoutMs });
    const t0 = Date.now();
    const err = await failedStart(c);
    const took = Date.now() - t0;
    expect(err.details.phase).toBe('scheduler');
    expect(c.state).toBe('failed');
    // The readiness wait ends by its own timeout: the bound is that timeout plus room for the
    // calls before and after it on a loaded machine.
    expect(took).toBeGreaterThanOrEqual(schedulerTimeoutMs);
    expect(took).toBeLessThan(schedulerTimeoutMs + 30_000);

    // What moto handed the scheduler, and that the library could not have reached it: in this
    // namespace a dial to it fails at once instead of leaving the machine.
    const schedulerRun = real(moto.calls('RunInstances'))[0]!;
    const [publicIp] = xmlValues(schedulerRun.response, 'ipAddress');
    expect(publicIp, 'moto puts the public address in the RunInstances answer').toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(publicIp!.startsWith('127.')).toBe(false);
    const dialTimeoutMs = 5_000;
    const d = await dial(publicIp!, 8786, dialTimeoutMs);
    expect(d.outcome).toBe('ENETUNREACH');
    // Refused by the kernel, not timed out on a route that leaves the machine.
    expect(d.ms).toBeLessThan(dialTimeoutMs);

    // Rollback: every instance terminated, the group and the volumes gone.
    expect(await moto.leaked()).toEqual({ instances: [], securityGroups: [], volumes: [] });
    const ids = real(moto.calls('RunInstances')).flatMap((r) => xmlValues(r.response, 'instanceId'));
    expect(ids).toHaveLength(3);
    const states = ((await moto.inspector().send(new DescribeInstancesCommand({ InstanceIds: ids }))).Reservations ?? []).flatMap((r) => r.Instances ?? []).map((i) => i.State?.Name);
    expect(states).toEqual(['terminated', 'terminated', 'terminated']);
  });

  it('start: the same calls in the same order as against our fake, every create accepted by moto, and the rollback deletes what it made', async () => {
    const options: EC2ClusterOptions = { nWorkers: 3, ingressCidrs: ['203.0.113.0/24'], tags: { team: 'data' }, schedulerTimeoutMs: 1_000 };
    const err = await failedStart(cluster(options));
    expect(err.details.phase).toBe('scheduler');

    // The same start against FakeEc2 (loopback addresses; this namespace has lo).
    const fake = await startFake(7, { lifecycleMs: { pendingMs: 100, shuttingDownMs: 100 } });
    try {
      const fakeErr = await failedStart(new EC2Cluster({ ...fakeOptions(fake), ...options }));
      expect(fakeErr.details.phase).toBe('scheduler');
      // Polls (DescribeInstances) run concurrently with the worker launch: compare without them.
      const shape = (ops: (string | undefined)[]) => authorizeFirst(collapsed(ops).filter((op) => op !== 'DescribeInstances'));
      expect(shape(moto.operations())).toEqual(shape(fake.server.operations()));
      // The fake refuses DeleteSecurityGroup while the instances shut down (DependencyViolation,
      // then the core retries); moto never refuses it: compare with retries collapsed.
      expect(authorizeFirst(collapsed(moto.mutatingCalls().map((c) => c.operation)))).toEqual(authorizeFirst(collapsed(fake.mutatingCalls().map((c) => c.operation))));
    } finally {
      await fake.stop();
    }

    // Before the first create, only reads and DryRuns; the creates and deletes themselves, in order.
    const all = moto.calls().filter((c) => c.operation !== undefined);
    const firstCreate = all.findIndex((c) => c.operation === 'CreateSecurityGroup' && c.params.DryRun !== 'true');
    expect(firstCreate).toBeGreaterThan(0);
    expect(all.slice(0, firstCreate).every((c) => /^Describe/.test(c.operation!) || c.params.DryRun === 'true')).toBe(true);
    expect(authorizeFirst(moto.mutatingCalls().map((c) => c.operation))).toEqual(['CreateSecurityGroup', 'AuthorizeSecurityGroupIngress', 'RunInstances', 'RunInstances', 'TerminateInstances', 'DeleteSecurityGroup']);
    expect(moto.mutatingCalls().map((c) => c.status)).toEqual([200, 200, 200, 200, 200, 200]);
    // The DryRuns were answered as AWS answers an allowed DryRun.
    const dry = all.filter((c) => c.params.DryRun === 'true');
    expect(dry.map((c) => `${c.operation}:${c.errorCode}`)).toEqual(['RunInstances:DryRunOperation', 'RunInstances:DryRunOperation', 'CreateSecurityGroup:DryRunOperation']);

    // moto's view of what was created: one batch per role, tagged, the newest Debian 12 image.
    const [sched, workers] = real(moto.calls('RunInstances'));
    expect([sched!.params.MinCount, sched!.params.MaxCount, workers!.params.MinCount, workers!.params.MaxCount]).toEqual(['1', '1', '3', '3']);
    expect(sched!.params.ImageId).toBe(NEWEST_DEBIAN.x86_64.ami_id);
    expect(sched!.params.InstanceInitiatedShutdownBehavior).toBe('terminate');
    expect(sched!.params['MetadataOptions.HttpTokens']).toBe('required');
    expect(Buffer.from(sched!.params.UserData!, 'base64').length).toBeGreaterThan(0);
    const workerIds = xmlValues(workers!.response, 'instanceId');
    expect(workerIds).toHaveLength(3);
    const described = ((await moto.inspector().send(new DescribeInstancesCommand({ InstanceIds: workerIds }))).Reservations ?? []).flatMap((r) => r.Instances ?? []);
    for (const i of described) {
      const tags = Object.fromEntries((i.Tags ?? []).map((t) => [t.Key, t.Value]));
      expect(tags[LABELS.role]).toBe('worker');
      expect(tags.team).toBe('data');
      expect(tags[LABELS.cluster]).toMatch(/\S/);
      expect(i.InstanceType).toBe('m6i.large');
      expect(i.State?.Name).toBe('terminated');
    }
    expect(await leakedCount()).toBe(0);
  });

  it('bad ami, subnetId, vpc or securityGroups: moto answers NotFound and start throws ValidationError with the option, before any create', async () => {
    const cases: Array<[EC2ClusterOptions, string, string, string]> = [
      [{ ami: 'ami-0123456789abcdef0' }, 'ami', 'DescribeImages', 'InvalidAMIID.NotFound'],
      [{ subnetId: 'subnet-0123456789abcdef0' }, 'subnetId', 'DescribeSubnets', 'InvalidSubnetID.NotFound'],
      [{ vpc: 'vpc-0123456789abcdef0' }, 'vpc', 'DescribeVpcs', 'InvalidVpcID.NotFound'],
      [{ securityGroups: ['sg-0123456789abcdef0'] }, 'securityGroups', 'DescribeSecurityGroups', 'InvalidGroup.NotFound'],
    ];
    for (const [options, option, operation, code] of cases) {
      moto.server.clearLog();
      const c = cluster({ nWorkers: 1, ...options });
      const err = await startError(c);
      expect(ValidationError.isInstance(err), `${option}: ${String(err)}`).toBe(true);
      expect(err.details.option, String(err)).toBe(option);
      expect(c.state).toBe('failed');
      // The refusal came from moto itself, and nothing was created.
      expect(moto.calls(operation).map((r) => r.errorCode)).toContain(code);
      expect(moto.mutatingCalls(), option).toEqual([]);
    }
    expect(await leakedCount()).toBe(0);
  });

  it('an image of the wrong architecture or an unknown instance type: a typed error naming the option, before any create', async () => {
    moto.server.clearLog();
    const err = await startError(cluster({ ami: NEWEST_DEBIAN.arm64.ami_id, instanceType: 't3.medium' }));
    expect(ValidationError.isInstance(err), String(err)).toBe(true);
    expect(err.details.option).toBe('ami');
    expect(err.message).toMatch(/arm64/);

    // moto's offerings (a copy of AWS's) do not list the type: the network check fails with a
    // ValidationError naming the option (start may report it together with other checks).
    moto.server.clearLog();
    const report = await cluster({ workerInstanceType: 'm6i.enormous' }).preflight();
    expect(report.status('network'), report.format()).toBe('fail');
    const network = report.checks.find((x) => x.id === 'network')!;
    expect(ValidationError.isInstance(network.error), String(network.error)).toBe(true);
    expect(network.error!.details.option).toBe('workerInstanceType');
    expect(network.message).toMatch(/m6i\.enormous/);
    expect(moto.calls('DescribeInstanceTypeOfferings').map((c) => c.status)).toEqual([200]);
    moto.server.clearLog();
    const startErr = await startError(cluster({ workerInstanceType: 'm6i.enormous' }));
    expect(startErr.message).toMatch(/m6i\.enormous/);
    expect(moto.mutatingCalls()).toEqual([]);
    expect(await leakedCount()).toBe(0);
  });

  it('the default image is the newest available Debian 12 of the instance type\'s architecture from Debian\'s account (moto applies the filters)', async () => {
    const x86 = await cluster({ nWorkers: 1 }).preflight();
    expect(x86.status('image')).toBe('pass');
    const x86Message = x86.checks.find((c) => c.id === 'image')!.message;
    expect(x86Message).toContain(NEWEST_DEBIAN.x86_64.ami_id);
    expect(x86Message).toContain(NEWEST_DEBIAN.x86_64.name);
    const arm = await cluster({ nWorkers: 1, instanceType: 'm7g.large' }).preflight();
    expect(arm.status('image')).toBe('pass');
    const armMessage = arm.checks.find((c) => c.id === 'image')!.message;
    expect(armMessage).toContain(NEWEST_DEBIAN.arm64.ami_id);
    expect(armMessage).not.toContain(NEWEST_DEBIAN.x86_64.ami_id);
    const lookups = moto.calls('DescribeImages');
    expect(lookups.every((c) => c.params['Owner.1'] === '136693071363')).toBe(true);
  });

  it('preflight(): a checklist in order, read-only (DryRuns only), passing on moto\'s default VPC in public mode', async () => {
    const c = cluster({ nWorkers: 2 });
    const report = await c.preflight();
    const ids = report.checks.map((x) => x.id);
    // The order of the core's check ids; the EC2 checks that exist now.
    expect(ids).toEqual(CHECK_IDS.filter((id) => ids.includes(id)));
    for (const id of ['credentials', 'location', 'image', 'network', 'nat', 'quota', 'permissions'] as const) expect(ids, id).toContain(id);
    const failed = report.checks.filter((x) => x.status === 'fail');
    expect(failed, report.format()).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.checks.find((x) => x.id === 'credentials')!.message).toMatch(/the credentials option/);
    expect(report.checks.find((x) => x.id === 'location')!.message).toMatch(/eu-west-1/);
    expect(report.status('nat')).toBe('pass'); // public mode needs no NAT
    // Every check that did not pass names its fix.
    for (const x of report.checks.filter((y) => y.status === 'warn' || y.status === 'fail')) expect(x.fix, x.id).toMatch(/\S/);
    expect(typeof report.format()).toBe('string');
    expect(JSON.parse(JSON.stringify(report.toJSON())).checks).toHaveLength(report.checks.length);
    // Read-only: no mutating call reached moto, and nothing exists.
    expect(moto.mutatingCalls()).toEqual([]);
    expect(moto.calls().filter((x) => x.params.DryRun === 'true').every((x) => x.errorCode === 'DryRunOperation')).toBe(true);
    expect(c.state).not.toBe('running');
    expect(await leakedCount()).toBe(0);
  });

  it('preflight(): private mode with the docker runtime fails the nat check on moto\'s default VPC (no 0.0.0.0/0 route), names the fix; start throws it before any create', async () => {
    const report = await cluster({ nWorkers: 1, privateNetworking: true }).preflight();
    expect(report.status('nat'), report.format()).toBe('fail');
    const nat = report.checks.find((x) => x.id === 'nat')!;
    expect(nat.message).toMatch(/NAT/);
    expect(nat.fix).toMatch(/create-nat-gateway/);
    expect(report.ok).toBe(false);
    expect(moto.mutatingCalls()).toEqual([]);

    moto.server.clearLog();
    const c = cluster({ nWorkers: 1, privateNetworking: true });
    const err = await startError(c);
    expect(PreflightError.isInstance(err), String(err)).toBe(true);
    expect(c.state).toBe('failed');
    expect(moto.mutatingCalls()).toEqual([]);

    // The native runtime installs nothing while booting: no NAT needed.
    const native = await cluster({ nWorkers: 1, privateNetworking: true, runtime: 'native' }).preflight();
    expect(native.status('nat')).toBe('pass');
    expect(await leakedCount()).toBe(0);
  });

  it('item 2 on moto\'s copy of AWS offerings: in us-east-1 the default subnet is never in us-east-1e, which lacks t3.medium and m6i.large', async () => {
    const region = 'us-east-1';
    const ec2 = moto.inspector(region);
    // moto's offerings (taken from AWS) leave both types out of us-east-1e.
    const offered = (await ec2.send(new DescribeInstanceTypeOfferingsCommand({ LocationType: 'availability-zone', Filters: [{ Name: 'instance-type', Values: ['t3.medium', 'm6i.large'] }] }))).InstanceTypeOfferings ?? [];
    expect(offered.filter((o) => o.Location === 'us-east-1e')).toEqual([]);
    expect(new Set(offered.map((o) => o.Location)).size).toBeGreaterThanOrEqual(2);
    // Make us-east-1e's subnet the roomiest (the choice before the fix: most free addresses, then
    // id): one instance in every other default subnet.
    const subnets = (await ec2.send(new DescribeSubnetsCommand({ Filters: [{ Name: 'default-for-az', Values: ['true'] }] }))).Subnets ?? [];
    const e = subnets.find((s) => s.AvailabilityZone === 'us-east-1e')!;
    expect(e).toBeDefined();
    const fillers: string[] = [];
    for (const s of subnets.filter((x) => x !== e)) {
      const out = await ec2.send(new RunInstancesCommand({ ImageId: NEWEST_DEBIAN.x86_64.ami_id, InstanceType: 't3.micro', MinCount: 1, MaxCount: 1, SubnetId: s.SubnetId }));
      fillers.push(...(out.Instances ?? []).map((i) => i.InstanceId as string));
    }
    const after = (await ec2.send(new DescribeSubnetsCommand({ SubnetIds: [e.SubnetId as string] }))).Subnets![0]!;
    const others = (await ec2.send(new DescribeSubnetsCommand({ Filters: [{ Name: 'default-for-az', Values: ['true'] }] }))).Subnets!.filter((s) => s.SubnetId !== e.SubnetId);
    expect(others.every((s) => (s.AvailableIpAddressCount ?? 0) < (after.AvailableIpAddressCount ?? 0))).toBe(true);

    const c = new EC2Cluster({ ...motoOptions(moto, region), schedulerTimeoutMs: 1_000, nWorkers: 1 });
    const err = await failedStart(c);
    expect(err.details.phase).toBe('scheduler');
    const runs = real(moto.calls('RunInstances'));
    expect(runs).toHaveLength(2);
    for (const r of runs) expect(r.params['NetworkInterface.1.SubnetId']).not.toBe(e.SubnetId);
    expect(runs.map((r) => xmlValues(r.response, 'availabilityZone')[0])).not.toContain('us-east-1e');

    await ec2.send(new TerminateInstancesCommand({ InstanceIds: fillers }));
    expect(await leakedCount(region)).toBe(0);
  });

  it('private mode (native runtime): moto hands out no public address; the scheduler is dialled on its private address, unreachable here', async () => {
    const err = await failedStart(cluster({ nWorkers: 1, privateNetworking: true, runtime: 'native' }));
    expect(err.details.phase).toBe('scheduler');
    const [sched] = real(moto.calls('RunInstances'));
    expect(sched!.params['NetworkInterface.1.AssociatePublicIpAddress']).toBe('false');
    expect(xmlValues(sched!.response, 'ipAddress')).toEqual([]);
    const [privateIp] = xmlValues(sched!.response, 'privateIpAddress');
    expect(privateIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    // No rule opens anything to the internet.
    const auth = moto.calls('AuthorizeSecurityGroupIngress')[0]!;
    expect(Object.entries(auth.params).filter(([k, v]) => /CidrIp$/.test(k) && v === '0.0.0.0/0')).toEqual([]);
    expect((await dial(privateIp!, 8786, 5_000)).outcome).toBe('ENETUNREACH');
    expect(await leakedCount()).toBe(0);
  });

  it("the user's securityGroups are used as they are: never created, changed or deleted", async () => {
    const ec2 = moto.inspector();
    const vpcId = (await ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: 'is-default', Values: ['true'] }] }))).Vpcs![0]!.VpcId!;
    const g = await ec2.send(new CreateSecurityGroupCommand({ GroupName: 'users-own', Description: 'the user group', VpcId: vpcId }));
    const err = await failedStart(cluster({ nWorkers: 1, securityGroups: [g.GroupId!] }));
    expect(err.details.phase).toBe('scheduler');
    expect(moto.mutatingCalls().map((c) => c.operation)).toEqual(['RunInstances', 'RunInstances', 'TerminateInstances']);
    for (const r of real(moto.calls('RunInstances'))) expect(Object.entries(r.params).filter(([k]) => /SecurityGroupId/.test(k)).map(([, v]) => v)).toEqual([g.GroupId]);
    const still = (await ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [g.GroupId!] }))).SecurityGroups ?? [];
    expect(still.map((x) => [x.GroupId, x.IpPermissions?.length ?? 0])).toEqual([[g.GroupId, 0]]);
    expect(await leakedCount()).toBe(0);
  });

  it('item 7 on moto: a scheduler terminated before the first watch tick fails the start quickly with that cause', async () => {
    const timeoutMs = 20_000;
    // The scheduler dies at once: terminated in moto before its RunInstances answer reaches the library.
    moto.server.onResponse = async (call) => {
      if (call.operation !== 'RunInstances' || call.params.DryRun === 'true' || call.status !== 200) return;
      await moto.inspector().send(new TerminateInstancesCommand({ InstanceIds: xmlValues(call.response, 'instanceId') }));
    };
    // Private + native: the private address comes from RunInstances, so only the watch looks at the instance.
    const c = cluster({ nWorkers: 0, privateNetworking: true, runtime: 'native', memberWatchIntervalMs: 500, schedulerTimeoutMs: timeoutMs });
    const t0 = Date.now();
    const err = await failedStart(c);
    expect(Date.now() - t0).toBeLessThan(timeoutMs / 2);
    expect(err.details.phase).toBe('scheduler');
    expect(err.message).toMatch(/terminated/);
    expect(err.message).not.toMatch(/was not ready within/);
    // (The rollback's TerminateInstances of the terminated scheduler fails on moto with
    // InvalidNetworkInterfaceID.NotFound, so the error lists it as left behind; on AWS the call
    // is idempotent. See README.md, "moto gaps".)
    // The watch found it by an instance-id filter without a state filter (moto lists terminated instances).
    expect(moto.calls('DescribeInstances').some((r) => Object.values(r.params).includes('instance-id'))).toBe(true);
    expect(await leakedCount()).toBe(0);
  });

  it('item 8 on moto: a rollback whose TerminateInstances is refused still throws the real cause, leftovers and the cleanup command; cleanup then empties moto', async () => {
    moto.server.refuse = (call) => (call.operation === 'TerminateInstances' ? { status: 403, code: 'UnauthorizedOperation', message: 'You are not authorized to perform this operation.' } : undefined);
    const c = cluster({ nWorkers: 1 });
    const err = await failedStart(c);
    expect(err.message).toMatch(/was not ready within 2000 ms/); // the real cause, not the rollback's
    expect(err.message).toContain('UnauthorizedOperation');
    expect(err.details.leftovers).toEqual(expect.arrayContaining([expect.stringMatching(/^instances i-/)]));
    expect(err.details.cleanupCommand).toBe(`dask-cloud cleanup --provider ec2 --region ${moto.region} --cluster ${c.id}`);
    expect(c.state).toBe('failed');
    // Every deletion was still tried. (moto deletes a group its instances still use; AWS would refuse.)
    expect(moto.calls('DeleteSecurityGroup').length).toBeGreaterThanOrEqual(1);
    expect((await moto.leaked()).instances).toHaveLength(2);
    // What is left is listed from its tags, as moto returns them (filters, LaunchTime, placement).
    const [listed] = (await EC2Cluster.list(motoOptions(moto))).filter((x) => x.id === c.id);
    expect(listed).toMatchObject({ kind: 'ec2', state: 'running', counts: { scheduler: 1, workers: 1 } });
    expect(listed!.address).toMatch(/^tls:\/\/\S+:8786$/);
    expect(listed!.location).toMatch(new RegExp(`^${moto.region}[a-z]$`));
    expect(listed!.created!.getTime()).toBeLessThanOrEqual(Date.now());

    moto.server.refuse = undefined;
    const report = await EC2Cluster.cleanup({ ...motoOptions(moto), clusterIds: [c.id] });
    expect(report.clusters.map((x) => [x.clusterId, x.deleted])).toEqual([[c.id, true]]);
    expect(await moto.leaked()).toEqual({ instances: [], securityGroups: [], volumes: [] });
  });

  it("item 2 on moto's offerings: an explicit subnetId or availabilityZone in us-east-1e (no t3.medium, no m6i.large) is a ValidationError naming the option, before any create", async () => {
    const region = 'us-east-1';
    const subnets = (await moto.inspector(region).send(new DescribeSubnetsCommand({ Filters: [{ Name: 'availability-zone', Values: ['us-east-1e'] }] }))).Subnets ?? [];
    const subnetId = subnets[0]!.SubnetId!;
    const bySubnet = await startError(new EC2Cluster({ ...motoOptions(moto, region), nWorkers: 1, subnetId }));
    expect(ValidationError.isInstance(bySubnet), String(bySubnet)).toBe(true);
    expect(bySubnet.details.option).toBe('subnetId');
    expect(bySubnet.message).toMatch(/is not offered in us-east-1e/);
    const byZone = await startError(new EC2Cluster({ ...motoOptions(moto, region), nWorkers: 1, availabilityZone: 'us-east-1e' }));
    expect(ValidationError.isInstance(byZone), String(byZone)).toBe(true);
    expect(byZone.details.option).toBe('availabilityZone');
    expect(moto.mutatingCalls()).toEqual([]);
    expect(await leakedCount(region)).toBe(0);
  });

  it("item 5 on moto: private mode with the docker runtime passes once the VPC's main route table sends 0.0.0.0/0 to a NAT gateway made in moto", async () => {
    const ec2 = moto.inspector();
    const vpcId = (await ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: 'is-default', Values: ['true'] }] }))).Vpcs![0]!.VpcId!;
    const subnet = (await ec2.send(new DescribeSubnetsCommand({ Filters: [{ Name: 'vpc-id', Values: [vpcId] }] }))).Subnets![0]!;
    const eip = await ec2.send(new AllocateAddressCommand({ Domain: 'vpc' }));
    const nat = (await ec2.send(new CreateNatGatewayCommand({ SubnetId: subnet.SubnetId, AllocationId: eip.AllocationId }))).NatGateway!;
    const main = (await ec2.send(new DescribeRouteTablesCommand({ Filters: [{ Name: 'vpc-id', Values: [vpcId] }, { Name: 'association.main', Values: ['true'] }] }))).RouteTables![0]!;
    await ec2.send(new CreateRouteCommand({ RouteTableId: main.RouteTableId, DestinationCidrBlock: '0.0.0.0/0', NatGatewayId: nat.NatGatewayId }));

    const report = await cluster({ nWorkers: 1, privateNetworking: true }).preflight();
    expect(report.status('nat'), report.format()).toBe('pass');
    expect(report.checks.find((x) => x.id === 'nat')!.message).toContain(nat.NatGatewayId!);
    const err = await failedStart(cluster({ nWorkers: 1, privateNetworking: true }));
    expect(err.details.phase).toBe('scheduler');
    expect(await leakedCount()).toBe(0);
  });

  it('options reach RunInstances and moto accepts them: ami, subnet, zone, key, root size, spot for workers only, monitoring', async () => {
    const ec2 = moto.inspector();
    const subnet = (await ec2.send(new DescribeSubnetsCommand({ Filters: [{ Name: 'availability-zone', Values: [`${moto.region}b`] }] }))).Subnets![0]!;
    const ami = NEWEST_DEBIAN.x86_64.ami_id;
    const c = cluster({ nWorkers: 2, ami, subnetId: subnet.SubnetId, availabilityZone: subnet.AvailabilityZone, keyName: 'me', rootVolumeSizeGb: 50, spot: { maxPrice: '0.05' }, monitoring: true });
    const err = await failedStart(c);
    expect(err.details.phase).toBe('scheduler');
    const [sched, workers] = real(moto.calls('RunInstances'));
    for (const r of [sched!, workers!]) {
      expect(r.status).toBe(200);
      expect(r.params).toMatchObject({ ImageId: ami, KeyName: 'me', 'Monitoring.Enabled': 'true', 'NetworkInterface.1.SubnetId': subnet.SubnetId, 'BlockDeviceMapping.1.Ebs.VolumeSize': '50' });
      expect(xmlValues(r.response, 'availabilityZone').every((z) => z === subnet.AvailabilityZone)).toBe(true);
    }
    expect(Object.keys(sched!.params).some((k) => k.startsWith('InstanceMarketOptions'))).toBe(false);
    expect(workers!.params).toMatchObject({ 'InstanceMarketOptions.MarketType': 'spot', 'InstanceMarketOptions.SpotOptions.MaxPrice': '0.05' });
    expect(await leakedCount()).toBe(0);
  });

  it('security: false: a warning, tcp:// to the address moto handed out, the scheduler rule marked NO TLS; exposeDashboard opens 8787 to ingressCidrs', async () => {
    const warnings: string[] = [];
    const c = cluster({ nWorkers: 0, security: false, exposeDashboard: true, ingressCidrs: ['198.51.100.7/32'], onEvent: (e) => e.type === 'warning' && warnings.push(e.message) });
    const err = await failedStart(c);
    const [publicIp] = xmlValues(real(moto.calls('RunInstances'))[0]!.response, 'ipAddress');
    expect(err.message).toContain(`tcp://${publicIp}:8786`);
    expect(warnings.join('\n')).toMatch(/security is off/);
    const auth = moto.calls('AuthorizeSecurityGroupIngress')[0]!.normalized as { IpPermissions: { FromPort: number; IpRanges?: { CidrIp: string; Description?: string }[] }[] };
    const publicRules = auth.IpPermissions.flatMap((p) => (p.IpRanges ?? []).filter((r) => r.CidrIp === '198.51.100.7/32').map((r) => `${p.FromPort} ${r.Description}`));
    expect(publicRules.sort()).toEqual(['8786 scheduler (NO TLS)', '8787 dashboard (exposeDashboard)']);
    expect(real(moto.calls('RunInstances'))).toHaveLength(1); // nWorkers: 0
    expect(await leakedCount()).toBe(0);
  });

  it('abort during start (after the workers launched) rolls back with E_ABORTED', async () => {
    const controller = new AbortController();
    const c = cluster({ nWorkers: 2, schedulerTimeoutMs: 30_000, signal: controller.signal, onEvent: (e) => e.type === 'member-launched' && e.role === 'worker' && controller.abort() });
    const t0 = Date.now();
    const err = await failedStart(c);
    expect(err.code).toBe('E_ABORTED');
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(real(moto.calls('RunInstances')).flatMap((r) => xmlValues(r.response, 'instanceId'))).toHaveLength(3);
    expect(await leakedCount()).toBe(0);
  });

  it('close() during start waits for the rollback', async () => {
    const c = cluster({ nWorkers: 1, schedulerTimeoutMs: 30_000 });
    const starting = c.start().catch((e: unknown) => e);
    // Closing once the workers' create went out: the rollback must delete everything.
    for (let i = 0; i < 100 && real(moto.calls('RunInstances')).length < 2; i++) await new Promise((r) => setTimeout(r, 50));
    await c.close();
    expect(DaskCloudError.isInstance(await starting)).toBe(true);
    expect(c.state).toBe('closed');
    expect(real(moto.calls('RunInstances'))).toHaveLength(2);
    expect(await leakedCount()).toBe(0);
  });

  it('cleanup of a cluster that left nothing makes no mutating call', async () => {
    const report = await EC2Cluster.cleanup({ ...motoOptions(moto), clusterIds: ['dask-00000000'] });
    expect(report.clusters.map((x) => x.error ?? 'ok')).toEqual(['ok']);
    expect(moto.mutatingCalls()).toEqual([]);
  });
});

describe.runIf(RUN)('SIGKILL at every step of a start against moto, then cleanup by cluster id, leaves moto empty', () => {
  /** Kills the child at the k-th mutating request moto receives (DryRuns change nothing and do not count). */
  function killAt(k: number): Promise<{ clusterId: string; killedAt: string }> {
    const cfg = moto.clientConfig();
    return killStartAt(
      {
        provider: 'ec2',
        options: { region: cfg.region, endpoint: cfg.endpoint, accessKeyId: cfg.credentials.accessKeyId, secretAccessKey: cfg.credentials.secretAccessKey },
        watchMutating: (on) => {
          moto.server.onRequest = (call) => {
            if (call.operation === undefined || !/^(Create|Authorize|Revoke|Run|Terminate|Delete|Modify)/.test(call.operation) || call.params.DryRun === 'true') return;
            on(call.operation);
          };
          return () => {
            moto.server.onRequest = undefined;
          };
        },
      },
      k,
    );
  }

  it('at each mutating request and while waiting; a second cleanup finds nothing to do', async () => {
    const steps: string[] = [];
    for (let k = 1; k <= 12; k++) {
      const { clusterId, killedAt } = await killAt(k);
      steps.push(killedAt);
      const report = await EC2Cluster.cleanup({ ...motoOptions(moto), clusterIds: [clusterId] });
      expect(report.clusters.map((x) => x.error ?? 'ok'), killedAt).toEqual(['ok']);
      expect(await moto.leaked(), `after a kill at ${killedAt} and cleanup`).toEqual({ instances: [], securityGroups: [], volumes: [] });
      moto.server.clearLog();
      const again = await EC2Cluster.cleanup({ ...motoOptions(moto), clusterIds: [clusterId] });
      expect(again.clusters.map((x) => x.error ?? 'ok'), killedAt).toEqual(['ok']);
      expect(moto.mutatingCalls(), `second cleanup after ${killedAt}`).toEqual([]);
      await moto.reset();
      if (killedAt === 'waiting for the scheduler') break;
    }
    // Group, its rules (authorised while the scheduler launches), scheduler, workers, then the wait.
    expect(authorizeFirst(steps.map((s) => s.replace(/^step \d+ \((\w+)\)$/, '$1')))).toEqual([
      'CreateSecurityGroup',
      'AuthorizeSecurityGroupIngress',
      'RunInstances',
      'RunInstances',
      'waiting for the scheduler',
    ]);
  }, 300_000);
});

describe.runIf(RUN)('what moto (this Debian version) lacks: checked, so a newer moto that gains it is noticed', () => {
  it('instances run at once with their public address in the RunInstances answer; ClientToken is not idempotent; no 16 KB user-data limit', async () => {
    const ec2 = moto.inspector();
    const input = { ImageId: NEWEST_DEBIAN.x86_64.ami_id, InstanceType: 't3.medium' as const, MinCount: 1, MaxCount: 1, ClientToken: 'same-token', UserData: Buffer.alloc(20_000, 'x').toString('base64') };
    const first = await ec2.send(new RunInstancesCommand(input));
    const again = await ec2.send(new RunInstancesCommand(input));
    const a = first.Instances![0]!;
    expect(a.PublicIpAddress).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    // AWS: the same token returns the same instance. moto: a second instance.
    expect(again.Instances![0]!.InstanceId).not.toBe(a.InstanceId);
    const now = ((await ec2.send(new DescribeInstancesCommand({ InstanceIds: [a.InstanceId!] }))).Reservations ?? [])[0]!.Instances![0]!;
    expect(now.State?.Name).toBe('running');
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [a.InstanceId!, again.Instances![0]!.InstanceId!] }));
    const gone = ((await ec2.send(new DescribeInstancesCommand({ InstanceIds: [a.InstanceId!] }))).Reservations ?? [])[0]!.Instances![0]!;
    expect(gone.State?.Name).toBe('terminated');
  });

  it('DeleteSecurityGroup of a group an instance still uses succeeds (AWS: DependencyViolation)', async () => {
    const ec2 = moto.inspector();
    const vpcSubnet = (await ec2.send(new DescribeSubnetsCommand({}))).Subnets![0]!;
    const g = await ec2.send(new CreateSecurityGroupCommand({ GroupName: 'in-use', Description: 'in use', VpcId: vpcSubnet.VpcId }));
    const run = await ec2.send(new RunInstancesCommand({ ImageId: NEWEST_DEBIAN.x86_64.ami_id, InstanceType: 't3.medium', MinCount: 1, MaxCount: 1, SubnetId: vpcSubnet.SubnetId, SecurityGroupIds: [g.GroupId!] }));
    await expect(ec2.send(new DeleteSecurityGroupCommand({ GroupId: g.GroupId! }))).resolves.toBeDefined();
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [run.Instances![0]!.InstanceId!] }));
  });

  it('TerminateInstances of a terminated instance launched with a network interface fails with InvalidNetworkInterfaceID.NotFound (AWS: idempotent)', async () => {
    const ec2 = moto.inspector();
    const subnet = (await ec2.send(new DescribeSubnetsCommand({}))).Subnets![0]!;
    const run = await ec2.send(
      new RunInstancesCommand({
        ImageId: NEWEST_DEBIAN.x86_64.ami_id,
        InstanceType: 't3.medium',
        MinCount: 1,
        MaxCount: 1,
        NetworkInterfaces: [{ DeviceIndex: 0, SubnetId: subnet.SubnetId, DeleteOnTermination: true, AssociatePublicIpAddress: true }],
      }),
    );
    const id = run.Instances![0]!.InstanceId!;
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    const again = await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] })).then(
      () => 'ok',
      (err: { name?: string }) => err.name,
    );
    expect(again).toBe('InvalidNetworkInterfaceID.NotFound');
  });

  it('an unimplemented filter gives an HTML 500 once there is a resource to filter, not an EC2 error (the proxy records it as a moto failure)', async () => {
    // moto evaluates filters per resource: with none to look at, even an unknown filter answers.
    const run = await moto.inspector().send(new RunInstancesCommand({ ImageId: NEWEST_DEBIAN.x86_64.ami_id, InstanceType: 't3.medium', MinCount: 1, MaxCount: 1 }));
    const ec2 = new EC2Client(moto.clientConfig());
    try {
      await expect(ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: 'no-such-filter', Values: ['x'] }] }))).rejects.toThrow();
    } finally {
      ec2.destroy();
    }
    expect(moto.server.handlerErrors.map((h) => [h.operation, h.status, /<html/i.test(h.body)])).toEqual([['DescribeInstances', 500, true]]);
    moto.server.handlerErrors.length = 0; // expected here: the afterEach check is for unexpected ones
    await moto.inspector().send(new TerminateInstancesCommand({ InstanceIds: [run.Instances![0]!.InstanceId!] }));
  });
});
