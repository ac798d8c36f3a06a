/**
 * The EC2 rules added for issue 7, each as EC2 documents it (sources in the rules table of test/fakes/README.md): per-zone
 * instance type offerings and RunInstances' `Unsupported`, DryRun and IAM refusals, refused
 * credentials, route tables, regions and zones, instance types, `GetConsoleOutput` with and
 * without `Latest`, instances that fail at launch, ClientToken limits.
 */
import {
  CreateSecurityGroupCommand,
  DescribeAvailabilityZonesCommand,
  DescribeInstancesCommand,
  DescribeInstanceTypeOfferingsCommand,
  DescribeInstanceTypesCommand,
  DescribeRegionsCommand,
  DescribeRouteTablesCommand,
  GetConsoleOutputCommand,
  RunInstancesCommand,
  type RunInstancesCommandInput,
} from '@aws-sdk/client-ec2';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../core';
import { DEBIAN_12, Harness, caught } from './test-helpers';

const h = new Harness();
afterEach(() => h.teardown());

const launch = (over: Partial<RunInstancesCommandInput> = {}) =>
  new RunInstancesCommand({ ImageId: DEBIAN_12, InstanceType: 't3.medium', MinCount: 1, MaxCount: 1, ...over });

describe('FakeEc2 rules', () => {
  it('offers instance types per zone; RunInstances into a zone without the type answers Unsupported', async () => {
    const { fake, client } = await h.start({ region: 'us-east-1' });
    fake.withholdInstanceTypes('us-east-1c', ['t3.medium', 'm6i.large']);
    const offered = await client.send(
      new DescribeInstanceTypeOfferingsCommand({ LocationType: 'availability-zone', Filters: [{ Name: 'instance-type', Values: ['t3.medium', 'm6i.large'] }] }),
    );
    const pairs = (offered.InstanceTypeOfferings ?? []).map((o) => `${o.InstanceType}@${o.Location}`).sort();
    expect(pairs).toEqual(['m6i.large@us-east-1a', 'm6i.large@us-east-1b', 't3.medium@us-east-1a', 't3.medium@us-east-1b']);
    const inC = await client.send(new DescribeInstanceTypeOfferingsCommand({ LocationType: 'availability-zone', Filters: [{ Name: 'location', Values: ['us-east-1c'] }] }));
    expect(inC.InstanceTypeOfferings?.map((o) => o.InstanceType)).not.toContain('t3.medium');
    expect(inC.InstanceTypeOfferings?.map((o) => o.InstanceType)).toContain('t3.small');
    const region = await client.send(new DescribeInstanceTypeOfferingsCommand({ Filters: [{ Name: 'instance-type', Values: ['t3.medium'] }] }));
    expect(region.InstanceTypeOfferings).toEqual([{ InstanceType: 't3.medium', LocationType: 'region', Location: 'us-east-1' }]);

    const subnetC = fake.subnets().find((s) => s.availabilityZone === 'us-east-1c')!;
    const err = await caught(() => client.send(launch({ SubnetId: subnetC.subnetId })));
    expect(err.name).toBe('Unsupported');
    expect(err.message).toBe(
      'Your requested instance type (t3.medium) is not supported in your requested Availability Zone (us-east-1c). Please retry your request by not specifying an Availability Zone or choosing us-east-1a, us-east-1b.',
    );
    expect(fake.instances()).toEqual([]);
    // Without a subnet or zone, EC2 itself picks a zone that offers the type.
    fake.withholdInstanceTypes('us-east-1a', ['t3.medium']);
    const placed = await client.send(launch());
    expect(placed.Instances?.[0]?.Placement?.AvailabilityZone).toBe('us-east-1b');
    expect((await client.send(launch({ InstanceType: 't3.small', SubnetId: subnetC.subnetId }))).Instances).toHaveLength(1);
  });

  it('DryRun: DryRunOperation when allowed, UnauthorizedOperation when the policy denies it; neither creates anything nor counts as mutating', async () => {
    const { fake, client } = await h.start();
    expect((await caught(() => client.send(launch({ DryRun: true })))).name).toBe('DryRunOperation');
    fake.deny('CreateSecurityGroup');
    const denied = await caught(() => client.send(new CreateSecurityGroupCommand({ GroupName: 'x', Description: 'x', DryRun: true })));
    expect([denied.name, denied.$metadata?.httpStatusCode]).toEqual(['UnauthorizedOperation', 403]);
    expect(denied.message).toContain('ec2:CreateSecurityGroup');
    expect((await caught(() => client.send(new CreateSecurityGroupCommand({ GroupName: 'x', Description: 'x' })))).name).toBe('UnauthorizedOperation');
    expect(fake.instances()).toEqual([]);
    expect(fake.securityGroups().map((g) => g.groupName)).toEqual(['default']);
    // The DryRuns are not mutating calls; the real (refused) create is.
    expect(fake.mutatingCalls().map((c) => c.operation)).toEqual(['CreateSecurityGroup']);
  });

  it('refused credentials: every call answers AuthFailure (401)', async () => {
    const { fake, client } = await h.start();
    fake.refuseCredentials();
    const err = await caught(() => client.send(new DescribeRegionsCommand({})));
    expect([err.name, err.$metadata?.httpStatusCode]).toEqual(['AuthFailure', 401]);
    expect((await caught(() => client.send(launch({ DryRun: true })))).name).toBe('AuthFailure');
  });

  it('route tables: the default VPC main table routes 0.0.0.0/0 to its internet gateway; a NAT route per subnet or on the main table', async () => {
    const { fake, client } = await h.start();
    const main = await client.send(new DescribeRouteTablesCommand({ Filters: [{ Name: 'vpc-id', Values: [fake.defaultVpc.vpcId] }, { Name: 'association.main', Values: ['true'] }] }));
    expect(main.RouteTables).toHaveLength(1);
    expect(main.RouteTables?.[0]?.Associations).toEqual([expect.objectContaining({ Main: true, AssociationState: { State: 'associated' } })]);
    const def = main.RouteTables?.[0]?.Routes?.find((r) => r.DestinationCidrBlock === '0.0.0.0/0');
    expect(def?.GatewayId).toMatch(/^igw-/);
    const subnet = fake.subnets()[1]!;
    expect((await client.send(new DescribeRouteTablesCommand({ Filters: [{ Name: 'association.subnet-id', Values: [subnet.subnetId] }] }))).RouteTables).toEqual([]);
    const nat = fake.routeThroughNat({ subnetId: subnet.subnetId });
    const own = await client.send(new DescribeRouteTablesCommand({ Filters: [{ Name: 'association.subnet-id', Values: [subnet.subnetId] }] }));
    expect(own.RouteTables?.[0]?.Associations).toEqual([expect.objectContaining({ Main: false, SubnetId: subnet.subnetId })]);
    expect(own.RouteTables?.[0]?.Routes?.find((r) => r.DestinationCidrBlock === '0.0.0.0/0')).toMatchObject({ NatGatewayId: nat, State: 'active' });
  });

  it('regions (AllRegions shows opt-in regions not enabled), zones and instance types', async () => {
    const { client } = await h.start();
    const enabled = (await client.send(new DescribeRegionsCommand({}))).Regions?.map((r) => r.RegionName);
    expect(enabled).toContain('eu-west-1');
    expect(enabled).not.toContain('af-south-1');
    const all = await client.send(new DescribeRegionsCommand({ AllRegions: true }));
    expect(all.Regions?.find((r) => r.RegionName === 'af-south-1')?.OptInStatus).toBe('not-opted-in');
    const zones = await client.send(new DescribeAvailabilityZonesCommand({}));
    expect(zones.AvailabilityZones?.map((z) => [z.ZoneName, z.State])).toEqual([
      ['eu-west-1a', 'available'],
      ['eu-west-1b', 'available'],
      ['eu-west-1c', 'available'],
    ]);
    const types = await client.send(new DescribeInstanceTypesCommand({ InstanceTypes: ['t2.micro', 'm6i.large'] }));
    expect(types.InstanceTypes?.map((t) => [t.InstanceType, t.VCpuInfo?.DefaultVCpus, t.Hypervisor, t.ProcessorInfo?.SupportedArchitectures])).toEqual([
      ['t2.micro', 1, 'xen', ['x86_64']],
      ['m6i.large', 2, 'nitro', ['x86_64']],
    ]);
    expect((await caught(() => client.send(new DescribeInstanceTypesCommand({ InstanceTypes: ['x9.huge' as 't3.micro'] })))).name).toBe('InvalidInstanceType');
  });

  it('GetConsoleOutput: Latest is refused on a Xen type (UnsupportedOperation); without it the boot-time buffer', async () => {
    const clock = new ManualClock();
    const { client } = await h.start({ clock, lifecycleMs: { pendingMs: 100 } });
    const id = (await client.send(launch({ InstanceType: 't2.micro' }))).Instances?.[0]?.InstanceId as string;
    await clock.advance(100);
    const err = await caught(() => client.send(new GetConsoleOutputCommand({ InstanceId: id, Latest: true })));
    expect(err.name).toBe('UnsupportedOperation');
    const buffered = await client.send(new GetConsoleOutputCommand({ InstanceId: id }));
    expect(Buffer.from(buffered.Output as string, 'base64').toString()).toMatch(/^\[ +0\.000000\] Linux version [^\n]*\n$/);
  });

  it('an instance that fails at launch goes pending → shutting-down → terminated with its state reason', async () => {
    const clock = new ManualClock();
    const { fake, client } = await h.start({ clock, lifecycleMs: { pendingMs: 100, shuttingDownMs: 100 } });
    fake.failLaunches({ code: 'Server.InternalError', message: 'Server.InternalError: Internal error on launch' });
    const [failed, ok] = (await client.send(launch({ MinCount: 2, MaxCount: 2 }))).Instances!.map((i) => i.InstanceId!);
    await clock.advance(100);
    const states = async () =>
      Object.fromEntries(((await client.send(new DescribeInstancesCommand({ InstanceIds: [failed!, ok!] }))).Reservations ?? []).flatMap((r) => r.Instances ?? []).map((i) => [i.InstanceId, [i.State?.Name, i.StateReason?.Code]]));
    expect(await states()).toEqual({ [failed!]: ['shutting-down', 'Server.InternalError'], [ok!]: ['running', undefined] });
    await clock.advance(100);
    expect((await states())[failed!]).toEqual(['terminated', 'Server.InternalError']);
  });

  it('ClientToken: at most 64 ASCII characters', async () => {
    const { client } = await h.start();
    expect((await caught(() => client.send(launch({ ClientToken: 'x'.repeat(65) })))).name).toBe('InvalidParameterValue');
    expect((await caught(() => client.send(launch({ ClientToken: 'tökén' })))).name).toBe('InvalidParameterValue');
    expect((await client.send(launch({ ClientToken: 'x'.repeat(64) }))).Instances).toHaveLength(1);
  });
});
