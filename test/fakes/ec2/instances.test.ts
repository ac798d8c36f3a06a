/**
 * The EC2 fake's instances, driven by the real `@aws-sdk/client-ec2`: lifecycle, batching,
 * idempotency, filters and paging, addresses, user-data, launch options, images and networks.
 */
import {
  CreateTagsCommand,
  DescribeImagesCommand,
  DescribeInstanceStatusCommand,
  DescribeInstancesCommand,
  DescribeSubnetsCommand,
  DescribeVpcsCommand,
  EC2Client,
  GetConsoleOutputCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
  paginateDescribeInstances,
  waitUntilInstanceRunning,
  waitUntilInstanceTerminated,
  type Instance,
  type RunInstancesCommandInput,
} from '@aws-sdk/client-ec2';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock, PRIVATE_BLOCK, PUBLIC_BLOCK } from '../core';
import { DEBIAN_12, DEBIAN_12_ARM, Harness, caught, inCidr } from './test-helpers';

const h = new Harness();
afterEach(() => h.teardown());

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
const launch = (over: Partial<RunInstancesCommandInput> = {}) =>
  new RunInstancesCommand({ ImageId: DEBIAN_12, InstanceType: 't3.small', MinCount: 1, MaxCount: 1, ...over });

async function describeOne(client: EC2Client, id: string): Promise<Instance> {
  const out = await client.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
  return out.Reservations?.[0]?.Instances?.[0] as Instance;
}

describe('FakeEc2 instances', () => {
  it('goes pending → running → shutting-down → terminated, and terminated instances stay listed for a while', async () => {
    const clock = new ManualClock();
    const { fake, client } = await h.start({ clock, lifecycleMs: { pendingMs: 1_000, shuttingDownMs: 500, terminatedVisibleMs: 60_000 } });

    const run = await client.send(launch({ TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'Name', Value: 'sched' }] }] }));
    expect(run.ReservationId).toMatch(/^r-[0-9a-f]{17}$/);
    expect(run.OwnerId).toBe('123456789012');
    const [started] = run.Instances ?? [];
    expect(started.InstanceId).toMatch(/^i-[0-9a-f]{17}$/);
    expect(started.State).toEqual({ Code: 0, Name: 'pending' });
    // The private address is known at once (workers can be launched with it); no public IP yet.
    expect(inCidr(started.PrivateIpAddress as string, PRIVATE_BLOCK)).toBe(true);
    expect(started.PublicIpAddress).toBeUndefined();
    expect(started.ImageId).toBe(DEBIAN_12);
    expect(started.InstanceType).toBe('t3.small');
    expect(started.Tags).toEqual([{ Key: 'Name', Value: 'sched' }]);
    expect(started.LaunchTime?.getTime()).toBe(clock.now());
    const id = started.InstanceId as string;

    await clock.advance(999);
    expect((await describeOne(client, id)).State?.Name).toBe('pending');
    await clock.advance(1);
    const running = await describeOne(client, id);
    expect(running.State).toEqual({ Code: 16, Name: 'running' });
    expect(inCidr(running.PublicIpAddress as string, PUBLIC_BLOCK)).toBe(true);
    expect(running.PrivateIpAddress).toBe(started.PrivateIpAddress);
    expect(running.PrivateDnsName).toBe(`ip-${started.PrivateIpAddress?.replace(/\./g, '-')}.eu-west-1.compute.internal`);
    expect(running.NetworkInterfaces?.[0]).toMatchObject({ PrivateIpAddress: started.PrivateIpAddress, Association: { PublicIp: running.PublicIpAddress } });
    expect(fake.leaked().instances).toHaveLength(1);

    const term = await client.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    expect(term.TerminatingInstances).toEqual([{ InstanceId: id, CurrentState: { Code: 32, Name: 'shutting-down' }, PreviousState: { Code: 16, Name: 'running' } }]);
    // Terminating again is fine and changes nothing.
    const again = await client.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    expect(again.TerminatingInstances?.[0].PreviousState?.Name).toBe('shutting-down');
    await clock.advance(500);
    const gone = await describeOne(client, id);
    expect(gone.State).toEqual({ Code: 48, Name: 'terminated' });
    expect(gone.StateReason).toEqual({ Code: 'Client.UserInitiatedShutdown', Message: 'Client.UserInitiatedShutdown: User initiated shutdown' });
    expect(gone.StateTransitionReason).toMatch(/^User initiated \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d GMT\)$/);
    expect(gone.PublicIpAddress).toBeUndefined();

    // State filters see it; it is no longer a leak.
    const byState = await client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'instance-state-name', Values: ['terminated'] }] }));
    expect(byState.Reservations?.flatMap((r) => r.Instances ?? []).map((i) => i.InstanceId)).toEqual([id]);
    const live = await client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'instance-state-name', Values: ['pending', 'running'] }] }));
    expect(live.Reservations).toEqual([]);
    expect(fake.leaked()).toEqual({});

    // After the visibility window it is gone entirely.
    await clock.advance(60_000);
    expect((await caught(() => client.send(new DescribeInstancesCommand({ InstanceIds: [id] })))).name).toBe('InvalidInstanceID.NotFound');
    expect(Object.keys(fake.resources()).sort()).toEqual(['images', 'routeTables', 'securityGroups', 'subnets', 'vpcs']);
    expect(fake.securityGroups().map((g) => g.groupName)).toEqual(['default']);
  });

  it('works on real time with the SDK waiters (running, terminated)', async () => {
    const { client } = await h.start({ lifecycleMs: 100 });
    const id = (await client.send(launch())).Instances?.[0].InstanceId as string;
    const waiter = { client, maxWaitTime: 10, minDelay: 1, maxDelay: 1 };
    expect((await waitUntilInstanceRunning(waiter, { InstanceIds: [id] })).state).toBe('SUCCESS');
    await client.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    expect((await waitUntilInstanceTerminated(waiter, { InstanceIds: [id] })).state).toBe('SUCCESS');
  });

  it('launches MinCount..MaxCount instances in one reservation with the same user-data', async () => {
    const { fake, client } = await h.start({ clock: new ManualClock() });
    const userData = '#cloud-config\nruncmd:\n  - echo worker\n';
    const run = await client.send(launch({ MinCount: 3, MaxCount: 3, UserData: b64(userData) }));
    const insts = run.Instances ?? [];
    expect(insts).toHaveLength(3);
    expect(insts.map((i) => i.AmiLaunchIndex)).toEqual([0, 1, 2]);
    expect(new Set(insts.map((i) => i.PrivateIpAddress)).size).toBe(3);
    for (const i of insts) expect(fake.instance(i.InstanceId as string)?.userData.toString('utf8')).toBe(userData);
    expect(new Set(insts.map((i) => fake.instance(i.InstanceId as string)?.reservationId))).toEqual(new Set([run.ReservationId]));

    const all = await client.send(new DescribeInstancesCommand({}));
    expect(all.Reservations).toHaveLength(1);
    expect(all.Reservations?.[0].Instances).toHaveLength(3);

    const bad = await caught(() => client.send(launch({ MinCount: 3, MaxCount: 2 })));
    expect(bad.name).toBe('InvalidParameterValue');
  });

  it('makes RunInstances idempotent by ClientToken', async () => {
    const { fake, client } = await h.start({ clock: new ManualClock() });
    const first = await client.send(launch({ MinCount: 2, MaxCount: 2, ClientToken: 'cluster-abc-workers-1' }));
    const second = await client.send(launch({ MinCount: 2, MaxCount: 2, ClientToken: 'cluster-abc-workers-1' }));
    expect(second.ReservationId).toBe(first.ReservationId);
    expect(second.Instances?.map((i) => i.InstanceId)).toEqual(first.Instances?.map((i) => i.InstanceId));
    expect(second.Instances?.map((i) => i.PrivateIpAddress)).toEqual(first.Instances?.map((i) => i.PrivateIpAddress));
    expect(fake.instances()).toHaveLength(2);

    const mismatch = await caught(() => client.send(launch({ MinCount: 3, MaxCount: 3, ClientToken: 'cluster-abc-workers-1' })));
    expect(mismatch.name).toBe('IdempotentParameterMismatch');
    expect(fake.instances()).toHaveLength(2);
    const filtered = await client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'client-token', Values: ['cluster-abc-workers-1'] }] }));
    expect(filtered.Reservations?.[0].Instances).toHaveLength(2);
  });

  it('filters by tag, tag-key, state, vpc and subnet, and pages with MaxResults / NextToken', async () => {
    const { client } = await h.start({ clock: new ManualClock() });
    const tagged = (cluster: string, n: number) =>
      launch({ MinCount: n, MaxCount: n, TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'dask-cluster', Value: cluster }, { Key: 'role', Value: 'worker' }] }] });
    const a = await client.send(tagged('abc', 7));
    await client.send(tagged('xyz', 2));
    await client.send(launch());
    const aIds = a.Instances?.map((i) => i.InstanceId);

    const page1 = await client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:dask-cluster', Values: ['abc'] }], MaxResults: 5 }));
    const ids1 = page1.Reservations?.flatMap((r) => r.Instances ?? []).map((i) => i.InstanceId);
    expect(ids1).toHaveLength(5);
    expect(page1.NextToken).toBeTruthy();
    const page2 = await client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:dask-cluster', Values: ['abc'] }], MaxResults: 5, NextToken: page1.NextToken }));
    const ids2 = page2.Reservations?.flatMap((r) => r.Instances ?? []).map((i) => i.InstanceId);
    expect(ids2).toHaveLength(2);
    expect(page2.NextToken).toBeUndefined();
    expect([...(ids1 ?? []), ...(ids2 ?? [])]).toEqual(aIds);

    // The SDK's paginator walks the same pages.
    const seen: string[] = [];
    for await (const page of paginateDescribeInstances({ client, pageSize: 5 }, { Filters: [{ Name: 'tag-key', Values: ['dask-cluster'] }] })) {
      for (const r of page.Reservations ?? []) for (const i of r.Instances ?? []) seen.push(i.InstanceId as string);
    }
    expect(seen).toHaveLength(9);

    const wild = await client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:dask-cluster', Values: ['x*', 'nope'] }] }));
    expect(wild.Reservations?.flatMap((r) => r.Instances ?? [])).toHaveLength(2);
    const subnetId = a.Instances?.[0].SubnetId as string;
    const vpcId = a.Instances?.[0].VpcId as string;
    const both = await client.send(
      new DescribeInstancesCommand({
        Filters: [
          { Name: 'vpc-id', Values: [vpcId] },
          { Name: 'subnet-id', Values: [subnetId] },
          { Name: 'instance-state-name', Values: ['pending'] },
          { Name: 'tag:dask-cluster', Values: ['abc'] },
        ],
      }),
    );
    expect(both.Reservations?.flatMap((r) => r.Instances ?? [])).toHaveLength(7);

    expect((await caught(() => client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'colour', Values: ['red'] }] })))).name).toBe('InvalidParameterValue');
    expect((await caught(() => client.send(new DescribeInstancesCommand({ MaxResults: 3 })))).name).toBe('InvalidParameterValue');
    expect((await caught(() => client.send(new DescribeInstancesCommand({ MaxResults: 5, NextToken: 'garbage' })))).name).toBe('InvalidPaginationToken');
    expect((await caught(() => client.send(new DescribeInstancesCommand({ InstanceIds: aIds as string[], MaxResults: 5 })))).name).toBe('InvalidParameterCombination');
    expect((await caught(() => client.send(new DescribeInstancesCommand({ InstanceIds: ['i-0123456789abcdef0'] })))).message).toBe("The instance ID 'i-0123456789abcdef0' does not exist");
    expect((await caught(() => client.send(new DescribeInstancesCommand({ InstanceIds: ['bogus'] })))).name).toBe('InvalidInstanceID.Malformed');
  });

  it('assigns a public IP on running only when requested or mapped by the subnet', async () => {
    const clock = new ManualClock();
    const { client } = await h.start({ clock });
    const subnets = await client.send(new DescribeSubnetsCommand({}));
    const subnetId = subnets.Subnets?.[1].SubnetId as string;
    const priv = await client.send(launch({ NetworkInterfaces: [{ DeviceIndex: 0, SubnetId: subnetId, AssociatePublicIpAddress: false }] }));
    const pub = await client.send(launch({ NetworkInterfaces: [{ DeviceIndex: 0, SubnetId: subnetId, AssociatePublicIpAddress: true }] }));
    const mapped = await client.send(launch({ SubnetId: subnetId }));
    await clock.advance(1_000);
    const privI = await describeOne(client, priv.Instances?.[0].InstanceId as string);
    expect(privI.State?.Name).toBe('running');
    expect(privI.PublicIpAddress).toBeUndefined();
    expect(privI.PublicDnsName).toBe('');
    expect(privI.SubnetId).toBe(subnetId);
    expect(inCidr(privI.PrivateIpAddress as string, subnets.Subnets?.[1].CidrBlock as string)).toBe(true);
    expect(privI.Placement?.AvailabilityZone).toBe('eu-west-1b');
    const pubI = await describeOne(client, pub.Instances?.[0].InstanceId as string);
    expect(inCidr(pubI.PublicIpAddress as string, PUBLIC_BLOCK)).toBe(true);
    expect(pubI.PublicDnsName).toBe(`ec2-${pubI.PublicIpAddress?.replace(/\./g, '-')}.eu-west-1.compute.amazonaws.com`);
    expect((await describeOne(client, mapped.Instances?.[0].InstanceId as string)).PublicIpAddress).toBeTruthy();

    const both = await caught(() => client.send(launch({ SubnetId: subnetId, NetworkInterfaces: [{ DeviceIndex: 0, AssociatePublicIpAddress: false }] })));
    expect(both.name).toBe('InvalidParameterCombination');
    expect((await caught(() => client.send(launch({ SubnetId: 'subnet-0123456789abcdef0' })))).name).toBe('InvalidSubnetID.NotFound');
  });

  it('decodes base64 user-data and enforces the 16 KB raw limit with EC2 error', async () => {
    const { fake, client } = await h.start({ clock: new ManualClock() });
    const exact = Buffer.alloc(16_384, 'a');
    const ok = await client.send(launch({ UserData: b64(exact) }));
    expect(fake.instance(ok.Instances?.[0].InstanceId as string)?.userData.equals(exact)).toBe(true);

    const tooBig = await caught(() => client.send(launch({ UserData: b64(Buffer.alloc(16_385, 'a')) })));
    expect(tooBig.name).toBe('InvalidParameterValue');
    expect(tooBig.message).toBe('User data is limited to 16384 bytes');
    expect(tooBig.$metadata?.httpStatusCode).toBe(400);

    // The SDK does not encode UserData: plain text reaches EC2 as-is and is rejected.
    const plain = await caught(() => client.send(launch({ UserData: '#cloud-config\nruncmd: [ls]\n' })));
    expect(plain.name).toBe('InvalidParameterValue');
    expect(plain.message).toBe('Invalid BASE64 encoding of user data.');
    expect(fake.instances()).toHaveLength(1);
  });

  it('stores IMDSv2, shutdown behaviour and the other launch options, and returns them', async () => {
    const clock = new ManualClock();
    const { fake, client } = await h.start({ clock });
    const run = await client.send(
      launch({
        MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled' },
        InstanceInitiatedShutdownBehavior: 'terminate',
        IamInstanceProfile: { Name: 'dask-worker' },
        KeyName: 'my-key',
        BlockDeviceMappings: [
          { DeviceName: '/dev/xvda', Ebs: { VolumeSize: 30, VolumeType: 'gp3', DeleteOnTermination: true } },
          { DeviceName: '/dev/xvdb', Ebs: { VolumeSize: 100, DeleteOnTermination: false } },
        ],
        InstanceMarketOptions: { MarketType: 'spot', SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate' } },
        TagSpecifications: [
          { ResourceType: 'instance', Tags: [{ Key: 'dask-cluster', Value: 'abc' }] },
          { ResourceType: 'volume', Tags: [{ Key: 'dask-cluster', Value: 'abc' }] },
        ],
      }),
    );
    const id = run.Instances?.[0].InstanceId as string;
    expect(run.Instances?.[0].MetadataOptions).toMatchObject({ State: 'pending', HttpTokens: 'required', HttpEndpoint: 'enabled', HttpPutResponseHopLimit: 1 });
    const stored = fake.instance(id);
    expect(stored?.instanceInitiatedShutdownBehavior).toBe('terminate');
    expect(stored?.metadataOptions).toMatchObject({ httpTokens: 'required', httpEndpoint: 'enabled' });
    expect(fake.volumes().map((v) => [v.deviceName, v.sizeGb, v.deleteOnTermination, v.tags])).toEqual([
      ['/dev/xvda', 30, true, [{ key: 'dask-cluster', value: 'abc' }]],
      ['/dev/xvdb', 100, false, [{ key: 'dask-cluster', value: 'abc' }]],
    ]);

    await clock.advance(1_000);
    const i = await describeOne(client, id);
    expect(i.MetadataOptions).toMatchObject({ State: 'applied', HttpTokens: 'required' });
    expect(i.IamInstanceProfile?.Arn).toBe('arn:aws:iam::123456789012:instance-profile/dask-worker');
    expect(i.KeyName).toBe('my-key');
    expect(i.InstanceLifecycle).toBe('spot');
    expect(i.SpotInstanceRequestId).toMatch(/^sir-/);
    expect(i.BlockDeviceMappings?.map((b) => [b.DeviceName, b.Ebs?.DeleteOnTermination])).toEqual([['/dev/xvda', true], ['/dev/xvdb', false]]);
    expect(i.SecurityGroups?.map((g) => g.GroupName)).toEqual(['default']);

    // Defaults: IMDS optional on Debian, `stop` on shutdown.
    const plain = await client.send(launch());
    expect(fake.instance(plain.Instances?.[0].InstanceId as string)?.instanceInitiatedShutdownBehavior).toBe('stop');
    expect(plain.Instances?.[0].MetadataOptions?.HttpTokens).toBe('optional');

    // A volume kept on termination is what leaks.
    await client.send(new TerminateInstancesCommand({ InstanceIds: [id, plain.Instances?.[0].InstanceId as string] }));
    await clock.advance(500);
    expect(fake.leaked()).toEqual({ volumes: [expect.objectContaining({ value: expect.objectContaining({ deviceName: '/dev/xvdb', state: 'available' }) })] });
  });

  it('honours InstanceInitiatedShutdownBehavior when the guest powers off', async () => {
    const clock = new ManualClock();
    const { fake, client } = await h.start({ clock });
    const [t, s] = await Promise.all([
      client.send(launch({ InstanceInitiatedShutdownBehavior: 'terminate' })),
      client.send(launch({ InstanceInitiatedShutdownBehavior: 'stop' })),
    ]);
    const tId = t.Instances?.[0].InstanceId as string;
    const sId = s.Instances?.[0].InstanceId as string;
    await clock.advance(1_000);
    fake.guestShutdown(tId);
    fake.guestShutdown(sId);
    expect((await describeOne(client, tId)).State?.Name).toBe('shutting-down');
    expect((await describeOne(client, sId)).State?.Name).toBe('stopping');
    await clock.advance(500);
    const ti = await describeOne(client, tId);
    const si = await describeOne(client, sId);
    expect(ti.State?.Name).toBe('terminated');
    expect(ti.StateReason?.Code).toBe('Client.InstanceInitiatedShutdown');
    expect(si.State).toEqual({ Code: 80, Name: 'stopped' });
    expect(si.PublicIpAddress).toBeUndefined();
    expect(si.PrivateIpAddress).toBeTruthy();
    // A stopped instance still costs money: it is a leak until terminated.
    expect(fake.leaked().instances?.map((e) => e.id)).toEqual([sId]);
  });

  it('validates images and instance types like EC2', async () => {
    const { client } = await h.start({ clock: new ManualClock() });
    const noImage = await caught(() => client.send(launch({ ImageId: 'ami-0123456789abcdef0' })));
    expect([noImage.name, noImage.message]).toEqual(['InvalidAMIID.NotFound', "The image id '[ami-0123456789abcdef0]' does not exist"]);
    expect((await caught(() => client.send(launch({ ImageId: 'debian-12' })))).name).toBe('InvalidAMIID.Malformed');
    expect((await caught(() => client.send(launch({ InstanceType: 'x9.huge' as never })))).name).toBe('InvalidParameterValue');
    const arch = await caught(() => client.send(launch({ ImageId: DEBIAN_12_ARM, InstanceType: 't3.small' })));
    expect(arch.name).toBe('InvalidParameterValue');
    expect(arch.message).toMatch(/architecture 'x86_64' of the specified instance type does not match the architecture 'arm64'/);
    expect((await client.send(launch({ ImageId: DEBIAN_12_ARM, InstanceType: 't4g.small' }))).Instances?.[0].Architecture).toBe('arm64');
    expect((await caught(() => client.send(launch({ SecurityGroupIds: ['sg-0123456789abcdef0'] })))).name).toBe('InvalidGroup.NotFound');
  });

  it('finds the latest image of an owner by name and architecture', async () => {
    const { client } = await h.start();
    const out = await client.send(
      new DescribeImagesCommand({
        Owners: ['136693071363'],
        Filters: [
          { Name: 'name', Values: ['debian-12-amd64-*'] },
          { Name: 'architecture', Values: ['x86_64'] },
          { Name: 'state', Values: ['available'] },
        ],
      }),
    );
    const images = out.Images ?? [];
    expect(images.map((i) => i.Name).sort()).toEqual(['debian-12-amd64-20240717-1811', 'debian-12-amd64-20250115-1997']);
    const latest = [...images].sort((a, b) => (b.CreationDate as string).localeCompare(a.CreationDate as string))[0];
    expect(latest).toMatchObject({ ImageId: DEBIAN_12, Architecture: 'x86_64', OwnerId: '136693071363', State: 'available', RootDeviceType: 'ebs' });
    const amazon = await client.send(new DescribeImagesCommand({ Owners: ['amazon'] }));
    expect(amazon.Images?.map((i) => i.ImageOwnerAlias)).toEqual(['amazon']);
    const ubuntu = await client.send(new DescribeImagesCommand({ Owners: ['099720109477'], Filters: [{ Name: 'name', Values: ['ubuntu/images/*noble*'] }, { Name: 'architecture', Values: ['arm64'] }] }));
    expect(ubuntu.Images).toHaveLength(1);
    expect((await caught(() => client.send(new DescribeImagesCommand({ ImageIds: ['ami-0123456789abcdef0'] })))).name).toBe('InvalidAMIID.NotFound');
  });

  it('describes the default VPC and one default subnet per AZ', async () => {
    const { client } = await h.start();
    const vpcs = await client.send(new DescribeVpcsCommand({ Filters: [{ Name: 'is-default', Values: ['true'] }] }));
    expect(vpcs.Vpcs).toHaveLength(1);
    const vpc = vpcs.Vpcs?.[0];
    expect(vpc).toMatchObject({ IsDefault: true, CidrBlock: '10.77.0.0/16', State: 'available', OwnerId: '123456789012' });
    expect(vpc?.VpcId).toMatch(/^vpc-[0-9a-f]{17}$/);
    const subnets = await client.send(new DescribeSubnetsCommand({ Filters: [{ Name: 'vpc-id', Values: [vpc?.VpcId as string] }, { Name: 'default-for-az', Values: ['true'] }] }));
    expect(subnets.Subnets?.map((s) => s.AvailabilityZone)).toEqual(['eu-west-1a', 'eu-west-1b', 'eu-west-1c']);
    for (const s of subnets.Subnets ?? []) {
      expect(s).toMatchObject({ MapPublicIpOnLaunch: true, DefaultForAz: true, VpcId: vpc?.VpcId, State: 'available' });
      expect(inCidr((s.CidrBlock as string).split('/')[0], PRIVATE_BLOCK)).toBe(true);
      expect(s.AvailableIpAddressCount).toBe(1019);
    }
    const inB = await client.send(new DescribeSubnetsCommand({ Filters: [{ Name: 'availability-zone', Values: ['eu-west-1b'] }] }));
    expect(inB.Subnets).toHaveLength(1);
    expect((await caught(() => client.send(new DescribeVpcsCommand({ VpcIds: ['vpc-0123456789abcdef0'] })))).name).toBe('InvalidVpcID.NotFound');
  });

  it('serves console output (base64) once running, and instance status checks', async () => {
    const clock = new ManualClock();
    const { client } = await h.start({ clock, lifecycleMs: { pendingMs: 1_000, statusChecksMs: 2_000 } });
    const id = (await client.send(launch())).Instances?.[0].InstanceId as string;
    const before = await client.send(new GetConsoleOutputCommand({ InstanceId: id }));
    expect(before.InstanceId).toBe(id);
    expect(before.Output).toBeUndefined();
    expect((await client.send(new DescribeInstanceStatusCommand({ InstanceIds: [id] }))).InstanceStatuses).toEqual([]);
    const all = await client.send(new DescribeInstanceStatusCommand({ InstanceIds: [id], IncludeAllInstances: true }));
    expect(all.InstanceStatuses?.[0]).toMatchObject({ InstanceState: { Name: 'pending' }, InstanceStatus: { Status: 'not-applicable' } });

    await clock.advance(1_000);
    // Without Latest: the buffer posted at the transition to running (the kernel's first line);
    // with Latest (a Nitro type): the live console.
    const posted = Buffer.from((await client.send(new GetConsoleOutputCommand({ InstanceId: id }))).Output as string, 'base64').toString('utf8');
    expect(posted).toMatch(/Linux version/);
    expect(posted).not.toMatch(/Cloud-init/);
    const after = await client.send(new GetConsoleOutputCommand({ InstanceId: id, Latest: true }));
    expect(Buffer.from(after.Output as string, 'base64').toString('utf8')).toMatch(/Cloud-init v\. 22\.4\.2 finished/);
    const init = await client.send(new DescribeInstanceStatusCommand({ InstanceIds: [id] }));
    expect(init.InstanceStatuses?.[0]).toMatchObject({
      InstanceId: id,
      AvailabilityZone: 'eu-west-1a',
      InstanceState: { Code: 16, Name: 'running' },
      InstanceStatus: { Status: 'initializing', Details: [{ Name: 'reachability', Status: 'initializing' }] },
      SystemStatus: { Status: 'initializing' },
    });
    await clock.advance(2_000);
    const ok = await client.send(new DescribeInstanceStatusCommand({ Filters: [{ Name: 'instance-status.status', Values: ['ok'] }] }));
    expect(ok.InstanceStatuses?.map((s) => [s.InstanceId, s.InstanceStatus?.Status, s.InstanceStatus?.Details?.[0].Status])).toEqual([[id, 'ok', 'passed']]);
    expect((await caught(() => client.send(new GetConsoleOutputCommand({ InstanceId: 'i-0123456789abcdef0' })))).name).toBe('InvalidInstanceID.NotFound');
  });

  it('tags instances (CreateTags), with eventual consistency when configured', async () => {
    const clock = new ManualClock();
    const { client } = await h.start({ clock, lifecycleMs: { consistencyDelayMs: 300 } });
    const id = (await client.send(launch())).Instances?.[0].InstanceId as string;
    // Like EC2 right after RunInstances: the new id is not known yet.
    const early = await caught(() => client.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'Name', Value: 'w1' }] })));
    expect(early.name).toBe('InvalidInstanceID.NotFound');
    await clock.advance(300);
    await client.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'Name', Value: 'w1' }, { Key: 'dask-cluster', Value: 'abc' }] }));
    await client.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'Name', Value: 'w2' }] }));
    const i = await describeOne(client, id);
    expect(i.Tags).toEqual([{ Key: 'Name', Value: 'w2' }, { Key: 'dask-cluster', Value: 'abc' }]);
    const reserved = await caught(() => client.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'aws:x', Value: 'y' }] })));
    expect(reserved.name).toBe('InvalidParameterValue');
    expect((await caught(() => client.send(new CreateTagsCommand({ Resources: ['x-1'], Tags: [{ Key: 'a', Value: 'b' }] })))).name).toBe('InvalidID');
  });
});
