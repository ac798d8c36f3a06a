/**
 * EC2Cluster.cleanup: what a killed process leaves behind (tagged instances and a security
 * group, no running library to close them) is found by tag and deleted — by id, or because its
 * expiry tag has passed — against the EC2 fake.
 */
import { CreateSecurityGroupCommand, EC2Client, RunInstancesCommand } from '@aws-sdk/client-ec2';
import { afterEach, describe, expect, it } from 'vitest';
import { EC2Cluster } from '../../../providers/ec2';
import { LABELS } from '../../../src/cluster/vm';
import { assertNoContractViolations } from '../../fakes/core';
import type { FakeEc2 } from '../../fakes/ec2';
import type { Ec2Instance } from '../../fakes/ec2/model';
import { fakeOptions, startFake } from './helpers';

/** Loopback slot of this file: see helpers.ts. */
const SLOT = 3;
let fake: FakeEc2 | undefined;

afterEach(async () => {
  if (fake) {
    assertNoContractViolations(fake.server);
    await fake.stop();
    fake = undefined;
  }
});

/** Leave resources behind as a process killed mid-cluster would. */
async function leftovers(f: FakeEc2, clusterId: string, expiresAt: Date): Promise<void> {
  const client = new EC2Client(f.clientConfig());
  const tags = [
    { Key: LABELS.cluster, Value: clusterId },
    { Key: LABELS.expires, Value: String(Math.floor(expiresAt.getTime() / 1000)) },
  ];
  const vpc = f.defaultVpc.vpcId;
  const group = await client.send(
    new CreateSecurityGroupCommand({ GroupName: clusterId, Description: 'left behind', VpcId: vpc, TagSpecifications: [{ ResourceType: 'security-group', Tags: tags }] }),
  );
  const image = f.images()[0]!.imageId;
  await client.send(
    new RunInstancesCommand({
      ImageId: image,
      InstanceType: 't3.medium',
      MinCount: 2,
      MaxCount: 2,
      SecurityGroupIds: [group.GroupId!],
      TagSpecifications: [{ ResourceType: 'instance', Tags: tags }],
    }),
  );
  client.destroy();
}

describe('EC2Cluster.cleanup', () => {
  it('deletes expired clusters only, then named ones, and a dry run deletes nothing', async () => {
    fake = await startFake(SLOT, { lifecycleMs: { pendingMs: 50, shuttingDownMs: 50, terminatedVisibleMs: 50 } });
    const hourAgo = new Date(Date.now() - 3600_000);
    await leftovers(fake, 'dask-0ld0ld00', hourAgo);
    await leftovers(fake, 'dask-f4e5h000', new Date(Date.now() + 3600_000));
    const opts = { ...fakeOptions(fake), maxAttempts: 2 };

    const dry = await EC2Cluster.cleanup({ ...opts, expired: true, dryRun: true });
    expect(dry.clusters.map((c) => [c.clusterId, c.instances.length, c.deleted])).toEqual([['dask-0ld0ld00', 2, false]]);
    expect(fake.leaked().instances ?? []).toHaveLength(4);

    const expired = await EC2Cluster.cleanup({ ...opts, expired: true });
    expect(expired.clusters.map((c) => [c.clusterId, c.deleted, c.error])).toEqual([['dask-0ld0ld00', true, undefined]]);
    const left = (fake.leaked().instances ?? []).map((e) => e.value as Ec2Instance);
    expect(left.map((i) => i.tags.find((t) => t.key === LABELS.cluster)?.value)).toEqual(['dask-f4e5h000', 'dask-f4e5h000']);
    expect(fake.securityGroups().filter((g) => g.groupName === 'dask-0ld0ld00')).toEqual([]);

    await EC2Cluster.cleanup({ ...opts, clusterIds: ['dask-f4e5h000'] });
    expect(fake.leaked().instances ?? []).toEqual([]);
    expect(fake.securityGroups().filter((g) => g.groupName.startsWith('dask-'))).toEqual([]);
  });

  it('refuses to run without saying which clusters', async () => {
    await expect(EC2Cluster.cleanup({ region: 'eu-west-1' })).rejects.toThrow(/clusterIds, expired: true or all: true/);
  });

  it('a TerminateInstances that never answers is cut after requestTimeoutMs and retried: the cleanup finishes', async () => {
    fake = await startFake(SLOT, { lifecycleMs: { pendingMs: 50, shuttingDownMs: 50, terminatedVisibleMs: 50 } });
    await leftovers(fake, 'dask-hun9hun9', new Date(Date.now() + 3600_000));
    // The first TerminateInstances is held far longer than this test may run; later ones answer.
    let terminates = 0;
    fake.server.faults.latency('TerminateInstances', () => (++terminates === 1 ? 10 * 60_000 : 0));
    const report = await EC2Cluster.cleanup({ ...fakeOptions(fake), requestTimeoutMs: 300, clusterIds: ['dask-hun9hun9'] });
    expect(report.clusters.map((c) => c.error ?? 'ok')).toEqual(['ok']);
    expect(terminates).toBeGreaterThanOrEqual(2);
    expect(fake.leaked()).toEqual({});
  }, 60_000);

  it('requestTimeoutMs is checked before any request', async () => {
    for (const bad of [0, -1, Number.NaN, 2 ** 31, '1000']) {
      await expect(EC2Cluster.cleanup({ region: 'eu-west-1', endpoint: 'http://127.0.0.1:9', requestTimeoutMs: bad as number, clusterIds: ['dask-00000000'] })).rejects.toMatchObject({
        code: 'E_INVALID_OPTION',
        details: { option: 'requestTimeoutMs' },
      });
    }
  });
});
