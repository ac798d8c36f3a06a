/**
 * The member watch of a large EC2 cluster: beyond 100 members it lists the cluster by its tag (a
 * page per thousand instances) instead of looking the ids up a hundred at a time, and still
 * reports a worker whose VM went away. Stand-in VMs (test/sim/standin.ts): a scheduler speaking
 * Dask's wire protocol with the cluster's certificates, workers that register as they "boot".
 *
 * Network safety: the fake's addresses are loopback (slot 6 of helpers.ts), and the stand-in
 * refuses any other address.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { EC2Cluster } from '../../../providers/ec2';
import { LABELS } from '../../../src/cluster/vm';
import type { ClusterEvent } from '../../../src/cluster/events';
import { StandInBooter } from '../../sim/standin';
import { checkFakesAndClose } from '../../helpers/fakes';
import type { FakeEc2 } from '../../fakes/ec2';
import { eventually, fakeOptions, startFake } from './helpers';

const SLOT = 6;
const fakes: FakeEc2[] = [];
const booters: StandInBooter[] = [];
afterEach(() => checkFakesAndClose(fakes, [], async () => Promise.all(booters.splice(0).map((b) => b.stopAll()))));

/** The watch's interval: the test waits for a few of them. */
const WATCH_MS = 250;

describe('EC2 member watch', () => {
  it('over 100 members: one DescribeInstances by the cluster tag per tick, and a worker that went away is reported', async () => {
    const booter = new StandInBooter({ bootMs: 200 });
    booters.push(booter);
    const f = await startFake(SLOT, { booter, lifecycleMs: { pendingMs: 100, shuttingDownMs: 100 } });
    fakes.push(f);
    const events: ClusterEvent[] = [];
    const cluster = new EC2Cluster({
      ...fakeOptions(f),
      saveState: false,
      nWorkers: 150,
      memberWatchIntervalMs: WATCH_MS,
      // The stand-in runs no image; naming one keeps the image choice out of this test.
      dockerImage: 'ghcr.io/dask/dask:2024.12.1-py3.12',
      onEvent: (e) => events.push(e),
    });
    try {
      await cluster.start();
      const from = f.server.received.length;
      const victim = cluster.members.find((m) => m.role === 'worker')!;
      f.guestShutdown(victim.id);
      await eventually(() => events.some((e) => e.type === 'member-failed'), 'a member-failed event', 20 * WATCH_MS + 10_000);
      expect(events.filter((e) => e.type === 'member-failed')).toEqual([
        expect.objectContaining({ role: 'worker', memberId: victim.id, message: expect.stringMatching(/stopped on its own \(state (shutting-down|terminated)\)/) }),
      ]);
      // Every look of the watch was one request by the cluster's tag, without a state filter (a
      // terminated VM must show), and none by instance ids (a request per hundred).
      const looks = f.server.received.slice(from).filter((r) => r.operation === 'DescribeInstances');
      expect(looks.length).toBeGreaterThan(0);
      for (const r of looks) {
        const values = Object.values(r.params);
        expect(values).toContain(`tag:${LABELS.cluster}`);
        expect(values).toContain(cluster.id);
        expect(values).not.toContain('instance-id');
        expect(values).not.toContain('instance-state-name');
        expect(r.params.NextToken).toBeUndefined(); // 151 instances: one page
      }
      await eventually(() => cluster.members.filter((m) => m.role === 'worker').length === 149, '149 workers left', 10_000);
    } finally {
      await cluster.close();
    }
    expect(Object.values(f.leaked()).flat()).toEqual([]);
  });
});
