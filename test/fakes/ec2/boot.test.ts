/**
 * The EC2 fake's boot hook: instances that reach `running` boot through a VmBooter, with their
 * security groups translated to firewall rules that follow membership and rule changes.
 */
import {
  AuthorizeSecurityGroupIngressCommand,
  CreateSecurityGroupCommand,
  DeleteSecurityGroupCommand,
  GetConsoleOutputCommand,
  RevokeSecurityGroupIngressCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
} from '@aws-sdk/client-ec2';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock, type FirewallRule } from '../core';
import { DEBIAN_12, Harness, RecordingBooter, settle } from './test-helpers';

const h = new Harness();
afterEach(() => h.teardown());

const CLIENT_RANGE = '203.0.113.0/24';

async function cluster(opts: { behaviour?: 'stop' | 'terminate' } = {}) {
  const clock = new ManualClock();
  const booter = new RecordingBooter();
  const { fake, client } = await h.start({ clock, booter });
  const sg = (await client.send(new CreateSecurityGroupCommand({ GroupName: 'dask-abc', Description: 'dask cluster abc' }))).GroupId as string;
  await client.send(
    new AuthorizeSecurityGroupIngressCommand({
      GroupId: sg,
      IpPermissions: [
        { IpProtocol: 'tcp', FromPort: 8786, ToPort: 8786, IpRanges: [{ CidrIp: CLIENT_RANGE }] },
        { IpProtocol: '-1', UserIdGroupPairs: [{ GroupId: sg }] },
      ],
    }),
  );
  const run = (name: string, userData: string) =>
    client.send(
      new RunInstancesCommand({
        ImageId: DEBIAN_12, InstanceType: 't3.small', MinCount: 1, MaxCount: 1, SecurityGroupIds: [sg],
        UserData: Buffer.from(userData).toString('base64'),
        InstanceInitiatedShutdownBehavior: opts.behaviour,
        TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'Name', Value: name }] }],
      }),
    );
  return { clock, booter, fake, client, sg, run };
}

const rules = (peers: string[]): FirewallRule[] => [
  { direction: 'ingress', protocol: 'tcp', fromPort: 8786, toPort: 8786, cidrs: [CLIENT_RANGE] },
  { direction: 'ingress', protocol: 'all', cidrs: [], peerVmIds: peers },
  { direction: 'egress', protocol: 'all', cidrs: ['0.0.0.0/0'] },
];

describe('FakeEc2 boot hook', () => {
  it('boots running instances with decoded user-data, addresses and their security groups as firewall', async () => {
    const { clock, booter, fake, client, run } = await cluster();
    const sched = (await run('dask-abc-scheduler', '#cloud-config\n# scheduler\n')).Instances?.[0];
    const schedId = sched?.InstanceId as string;
    expect(booter.boots).toEqual([]);

    await clock.advance(1_000);
    await settle();
    expect(booter.boots).toHaveLength(1);
    const boot = booter.boots[0];
    expect(boot).toMatchObject({ id: schedId, name: 'dask-abc-scheduler', privateIp: sched?.PrivateIpAddress, publicIp: fake.instance(schedId)?.publicIpAddress });
    expect(boot.publicIp).toBeTruthy();
    expect(boot.userData.toString('utf8')).toBe('#cloud-config\n# scheduler\n');
    expect(boot.firewall).toEqual(rules([schedId]));

    // A worker joins the group: the scheduler's self-referencing rule now admits it too.
    const workerId = (await run('dask-abc-worker-0', '#cloud-config\n# worker\n')).Instances?.[0].InstanceId as string;
    await clock.advance(1_000);
    await settle();
    expect(booter.boots.map((b) => b.id)).toEqual([schedId, workerId]);
    expect(booter.current(workerId)).toEqual(rules([schedId, workerId]));
    expect(booter.current(schedId)).toEqual(rules([schedId, workerId]));

    // GetConsoleOutput with Latest serves the VM's live console, base64-encoded.
    booter.vms.get(schedId)!.console = 'Cloud-init v. 22.4.2 finished\n';
    const out = await client.send(new GetConsoleOutputCommand({ InstanceId: schedId, Latest: true }));
    expect(Buffer.from(out.Output as string, 'base64').toString('utf8')).toBe('Cloud-init v. 22.4.2 finished\n');

    // Terminating the worker stops its VM and takes it out of the scheduler's peers.
    await client.send(new TerminateInstancesCommand({ InstanceIds: [workerId] }));
    await settle();
    expect(booter.stops).toEqual([workerId]);
    expect(booter.current(schedId)).toEqual(rules([schedId]));
  });

  it('pushes security group rule changes to the running VMs that use the group', async () => {
    const { clock, booter, client, sg, run } = await cluster();
    const id = (await run('s', '#cloud-config\n')).Instances?.[0].InstanceId as string;
    await clock.advance(1_000);
    await settle();
    const before = booter.firewalls.length;

    await client.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: sg, IpPermissions: [{ IpProtocol: 'udp', FromPort: 53, ToPort: 53, IpRanges: [{ CidrIp: '10.77.0.0/16' }] }] }));
    await settle();
    expect(booter.firewalls.length).toBe(before + 1);
    expect(booter.current(id)).toContainEqual({ direction: 'ingress', protocol: 'udp', fromPort: 53, toPort: 53, cidrs: ['10.77.0.0/16'] });

    await client.send(new RevokeSecurityGroupIngressCommand({ GroupId: sg, IpPermissions: [{ IpProtocol: 'tcp', FromPort: 8786, ToPort: 8786, IpRanges: [{ CidrIp: CLIENT_RANGE }] }] }));
    await settle();
    expect(booter.current(id)?.some((r) => r.fromPort === 8786)).toBe(false);
    // Rules that change nothing for a VM send nothing.
    const n = booter.firewalls.length;
    await client.send(new CreateSecurityGroupCommand({ GroupName: 'unrelated', Description: 'x' }));
    await settle();
    expect(booter.firewalls.length).toBe(n);
  });

  it('turns a guest power-off into terminated or stopped per InstanceInitiatedShutdownBehavior', async () => {
    const t = await cluster({ behaviour: 'terminate' });
    const tId = (await t.run('t', '#cloud-config\n')).Instances?.[0].InstanceId as string;
    await t.clock.advance(1_000);
    await settle();
    t.booter.vms.get(tId)!.powerOff();
    await settle();
    expect(t.fake.instance(tId)?.state).toBe('shutting-down');
    await t.clock.advance(500);
    expect(t.fake.instance(tId)?.state).toBe('terminated');
    expect(t.fake.instance(tId)?.stateReason?.code).toBe('Client.InstanceInitiatedShutdown');

    const s = await cluster({ behaviour: 'stop' });
    const sId = (await s.run('s', '#cloud-config\n')).Instances?.[0].InstanceId as string;
    await s.clock.advance(1_000);
    await settle();
    s.booter.vms.get(sId)!.powerOff();
    await settle();
    await s.clock.advance(500);
    expect(s.fake.instance(sId)?.state).toBe('stopped');
    expect(s.fake.instance(sId)?.publicIpAddress).toBeUndefined();
    // Stopped still holds its group.
    await expect(s.client.send(new DeleteSecurityGroupCommand({ GroupId: s.sg }))).rejects.toMatchObject({ name: 'DependencyViolation' });
  });

  it('GetConsoleOutput with Latest shows the last console of a VM on its way down, not the buffer still being posted', async () => {
    const t = await cluster({ behaviour: 'terminate' });
    const id = (await t.run('w', '#cloud-config\n')).Instances?.[0].InstanceId as string;
    await t.clock.advance(1_000);
    await settle();
    const vm = t.booter.vms.get(id)!;
    vm.console += 'dask-cloud: bootstrap failed (exit 1)\ndask-cloud: powering off (autoShutdown)\n';
    // The guest powers off while reading its console is slow: the post of shutting-down waits.
    let release!: () => void;
    vm.consoleGate = new Promise((r) => (release = r));
    vm.powerOff();
    await settle();
    expect(t.fake.instance(id)?.state).toBe('shutting-down');
    const latest = t.client.send(new GetConsoleOutputCommand({ InstanceId: id, Latest: true }));
    await settle();
    release();
    expect(Buffer.from(((await latest).Output ?? '') as string, 'base64').toString('utf8')).toBe(vm.console);
    // Terminated, its VM stopped: still the last console.
    await t.clock.advance(500);
    await settle();
    expect(t.fake.instance(id)?.state).toBe('terminated');
    const after = await t.client.send(new GetConsoleOutputCommand({ InstanceId: id, Latest: true }));
    expect(Buffer.from(after.Output as string, 'base64').toString('utf8')).toBe(vm.console);
  });

  it('leaves nothing behind after a full teardown, and stop() stops every VM', async () => {
    const { clock, booter, fake, client, sg, run } = await cluster();
    const ids = [(await run('a', 'x')).Instances?.[0].InstanceId as string, (await run('b', 'y')).Instances?.[0].InstanceId as string];
    await clock.advance(1_000);
    await settle();
    expect(booter.boots).toHaveLength(2);
    await client.send(new TerminateInstancesCommand({ InstanceIds: ids }));
    await clock.advance(500);
    await client.send(new DeleteSecurityGroupCommand({ GroupId: sg }));
    expect(fake.leaked()).toEqual({});
    expect(booter.stops.sort()).toEqual([...ids].sort());

    const other = await cluster();
    const id = (await other.run('c', 'z')).Instances?.[0].InstanceId as string;
    await other.clock.advance(1_000);
    await settle();
    await other.fake.stop();
    expect(other.booter.stops).toEqual([id]);
  });
});
