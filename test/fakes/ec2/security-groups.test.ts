/** The EC2 fake's VPC security groups, driven by the real `@aws-sdk/client-ec2`. */
import {
  AuthorizeSecurityGroupIngressCommand,
  CreateSecurityGroupCommand,
  DeleteSecurityGroupCommand,
  DescribeSecurityGroupsCommand,
  RevokeSecurityGroupIngressCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type EC2Client,
} from '@aws-sdk/client-ec2';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../core';
import { DEBIAN_12, Harness, caught } from './test-helpers';

const h = new Harness();
afterEach(() => h.teardown());

async function createGroup(client: EC2Client, name: string, cluster = 'abc'): Promise<string> {
  const out = await client.send(
    new CreateSecurityGroupCommand({
      GroupName: name,
      Description: `dask cluster ${cluster}`,
      TagSpecifications: [{ ResourceType: 'security-group', Tags: [{ Key: 'dask-cluster', Value: cluster }] }],
    }),
  );
  return out.GroupId as string;
}

describe('FakeEc2 security groups', () => {
  it('creates, describes, authorizes and revokes like a VPC security group', async () => {
    const { client, fake } = await h.start();
    const created = await client.send(
      new CreateSecurityGroupCommand({ GroupName: 'dask-abc', Description: 'dask cluster abc', TagSpecifications: [{ ResourceType: 'security-group', Tags: [{ Key: 'dask-cluster', Value: 'abc' }] }] }),
    );
    expect(created.GroupId).toMatch(/^sg-[0-9a-f]{17}$/);
    expect(created.Tags).toEqual([{ Key: 'dask-cluster', Value: 'abc' }]);
    expect(created.SecurityGroupArn).toBe(`arn:aws:ec2:eu-west-1:123456789012:security-group/${created.GroupId}`);
    const sg = created.GroupId as string;

    const dup = await caught(() => client.send(new CreateSecurityGroupCommand({ GroupName: 'dask-abc', Description: 'again' })));
    expect(dup.name).toBe('InvalidGroup.Duplicate');
    expect(dup.message).toBe(`The security group 'dask-abc' already exists for VPC '${fake.defaultVpc.vpcId}'`);
    expect((await caught(() => client.send(new CreateSecurityGroupCommand({ GroupName: 'sg-abc', Description: 'x' })))).name).toBe('InvalidParameterValue');

    const auth = await client.send(
      new AuthorizeSecurityGroupIngressCommand({
        GroupId: sg,
        IpPermissions: [
          { IpProtocol: 'tcp', FromPort: 8786, ToPort: 8786, IpRanges: [{ CidrIp: '203.0.113.0/24', Description: 'dask clients' }] },
          { IpProtocol: '-1', UserIdGroupPairs: [{ GroupId: sg, Description: 'cluster members' }] },
        ],
      }),
    );
    expect(auth.Return).toBe(true);
    expect(auth.SecurityGroupRules?.map((r) => [r.IpProtocol, r.FromPort, r.ToPort, r.CidrIpv4, r.ReferencedGroupInfo?.GroupId, r.IsEgress])).toEqual([
      ['tcp', 8786, 8786, '203.0.113.0/24', undefined, false],
      ['-1', -1, -1, undefined, sg, false],
    ]);

    const described = await client.send(new DescribeSecurityGroupsCommand({ GroupIds: [sg] }));
    const g = described.SecurityGroups?.[0];
    expect(g).toMatchObject({ GroupId: sg, GroupName: 'dask-abc', Description: 'dask cluster abc', VpcId: fake.defaultVpc.vpcId, OwnerId: '123456789012', Tags: [{ Key: 'dask-cluster', Value: 'abc' }] });
    expect(g?.IpPermissions).toEqual([
      { IpProtocol: 'tcp', FromPort: 8786, ToPort: 8786, UserIdGroupPairs: [], IpRanges: [{ CidrIp: '203.0.113.0/24', Description: 'dask clients' }], Ipv6Ranges: [], PrefixListIds: [] },
      { IpProtocol: '-1', UserIdGroupPairs: [{ GroupId: sg, UserId: '123456789012', Description: 'cluster members' }], IpRanges: [], Ipv6Ranges: [], PrefixListIds: [] },
    ]);
    expect(g?.IpPermissionsEgress).toEqual([{ IpProtocol: '-1', UserIdGroupPairs: [], IpRanges: [{ CidrIp: '0.0.0.0/0' }], Ipv6Ranges: [], PrefixListIds: [] }]);

    const again = await caught(() =>
      client.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: sg, IpPermissions: [{ IpProtocol: 'tcp', FromPort: 8786, ToPort: 8786, IpRanges: [{ CidrIp: '203.0.113.0/24' }] }] })),
    );
    expect(again.name).toBe('InvalidPermission.Duplicate');
    expect(again.message).toBe('the specified rule "peer: 203.0.113.0/24, TCP, from port: 8786, to port: 8786, ALLOW" already exists');

    const revoked = await client.send(new RevokeSecurityGroupIngressCommand({ GroupId: sg, IpPermissions: [{ IpProtocol: 'tcp', FromPort: 8786, ToPort: 8786, IpRanges: [{ CidrIp: '203.0.113.0/24' }] }] }));
    expect(revoked.Return).toBe(true);
    expect(revoked.UnknownIpPermissions).toBeUndefined();
    const revokeAgain = await client.send(new RevokeSecurityGroupIngressCommand({ GroupId: sg, IpPermissions: [{ IpProtocol: 'tcp', FromPort: 8786, ToPort: 8786, IpRanges: [{ CidrIp: '203.0.113.0/24' }] }] }));
    expect(revokeAgain.Return).toBe(false);
    expect(revokeAgain.UnknownIpPermissions?.[0]).toMatchObject({ IpProtocol: 'tcp', FromPort: 8786, IpRanges: [{ CidrIp: '203.0.113.0/24' }] });
    expect(fake.securityGroup(sg)?.ingress.map((r) => r.groupId)).toEqual([sg]);

    const bad = await caught(() => client.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: sg, IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '10.0.0/8' }] }] })));
    expect([bad.name, bad.message]).toEqual(['InvalidParameterValue', 'CIDR block 10.0.0/8 is malformed']);
    const unknownPeer = await caught(() => client.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: sg, IpPermissions: [{ IpProtocol: '-1', UserIdGroupPairs: [{ GroupId: 'sg-0123456789abcdef0' }] }] })));
    expect(unknownPeer.name).toBe('InvalidGroup.NotFound');
    expect((await caught(() => client.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: 'sg-0123456789abcdef0', IpPermissions: [] })))).name).toBe('InvalidGroup.NotFound');
  });

  it('filters groups by tag, name and vpc, and by name in the default VPC', async () => {
    const { client, fake } = await h.start();
    const a = await createGroup(client, 'dask-abc', 'abc');
    await createGroup(client, 'dask-xyz', 'xyz');
    const byTag = await client.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'tag:dask-cluster', Values: ['abc'] }] }));
    expect(byTag.SecurityGroups?.map((g) => g.GroupId)).toEqual([a]);
    const byName = await client.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'group-name', Values: ['dask-*'] }, { Name: 'vpc-id', Values: [fake.defaultVpc.vpcId] }] }));
    expect(byName.SecurityGroups?.map((g) => g.GroupName)).toEqual(['dask-abc', 'dask-xyz']);
    const legacy = await client.send(new DescribeSecurityGroupsCommand({ GroupNames: ['dask-xyz'] }));
    expect(legacy.SecurityGroups?.map((g) => g.GroupName)).toEqual(['dask-xyz']);
    const all = await client.send(new DescribeSecurityGroupsCommand({}));
    expect(all.SecurityGroups?.map((g) => g.GroupName)).toEqual(['default', 'dask-abc', 'dask-xyz']);
    expect((await caught(() => client.send(new DescribeSecurityGroupsCommand({ GroupIds: ['sg-0123456789abcdef0'] })))).message).toBe("The security group 'sg-0123456789abcdef0' does not exist");
  });

  it('refuses to delete a group while a non-terminated instance uses it, then deletes it', async () => {
    const clock = new ManualClock();
    const { client, fake } = await h.start({ clock });
    const sg = await createGroup(client, 'dask-abc');
    const run = await client.send(new RunInstancesCommand({ ImageId: DEBIAN_12, InstanceType: 't3.small', MinCount: 2, MaxCount: 2, SecurityGroupIds: [sg] }));
    expect(run.Instances?.[0].SecurityGroups).toEqual([{ GroupId: sg, GroupName: 'dask-abc' }]);
    await clock.advance(1_000);

    const busy = await caught(() => client.send(new DeleteSecurityGroupCommand({ GroupId: sg })));
    expect([busy.name, busy.message, busy.$metadata?.httpStatusCode]).toEqual(['DependencyViolation', `resource ${sg} has a dependent object`, 400]);

    await client.send(new TerminateInstancesCommand({ InstanceIds: run.Instances?.map((i) => i.InstanceId as string) }));
    // Still shutting down: its network interface still holds the group (the classic teardown race).
    expect((await caught(() => client.send(new DeleteSecurityGroupCommand({ GroupId: sg })))).name).toBe('DependencyViolation');
    await clock.advance(500);
    const deleted = await client.send(new DeleteSecurityGroupCommand({ GroupId: sg }));
    expect(deleted.Return).toBe(true);
    expect(deleted.GroupId).toBe(sg);
    expect((await caught(() => client.send(new DeleteSecurityGroupCommand({ GroupId: sg })))).name).toBe('InvalidGroup.NotFound');
    expect(fake.leaked()).toEqual({});

    const def = fake.securityGroup('default')?.groupId as string;
    expect((await caught(() => client.send(new DeleteSecurityGroupCommand({ GroupId: def })))).name).toBe('CannotDelete');
  });

  it('refuses to delete a group another group references', async () => {
    const { client } = await h.start();
    const a = await createGroup(client, 'dask-a');
    const b = await createGroup(client, 'dask-b');
    await client.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: b, IpPermissions: [{ IpProtocol: 'tcp', FromPort: 8786, ToPort: 8787, UserIdGroupPairs: [{ GroupId: a }] }] }));
    expect((await caught(() => client.send(new DeleteSecurityGroupCommand({ GroupId: a })))).name).toBe('DependencyViolation');
    await client.send(new DeleteSecurityGroupCommand({ GroupId: b }));
    await client.send(new DeleteSecurityGroupCommand({ GroupName: 'dask-a' }));
  });
});
