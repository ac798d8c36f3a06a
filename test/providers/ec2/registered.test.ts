/**
 * While start() waits for its workers, `workers-registered` events give the count so far: the
 * CLI's progress shows it, and a script can. Stand-in VMs (test/sim/standin.ts) whose workers
 * "boot" one after another, 600 ms apart, against a scheduler polled every 500 ms (the VM
 * clusters' readiness poll).
 *
 * Network safety: the fake's addresses are loopback (slot 7 of helpers.ts), and the stand-in
 * refuses any other address.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { EC2Cluster } from '../../../providers/ec2';
import type { ClusterEvent } from '../../../src/cluster/events';
import { StandInBooter } from '../../sim/standin';
import { checkFakesAndClose } from '../../helpers/fakes';
import type { FakeEc2 } from '../../fakes/ec2';
import { fakeOptions, startFake } from './helpers';

const SLOT = 7;
const fakes: FakeEc2[] = [];
const booters: StandInBooter[] = [];
afterEach(() => checkFakesAndClose(fakes, [], async () => Promise.all(booters.splice(0).map((b) => b.stopAll()))));

const N = 10;
/** The i-th worker to boot registers i × this long after its VM runs: far apart against a 500 ms poll. */
const STEP_MS = 600;

describe('workers registered so far', () => {
  it('start() reports the count as workers register: from the first look, rising, each change once, then workers-ready', async () => {
    let booted = 0; // EC2 names a batch's workers alike: they are told apart by boot order
    const booter = new StandInBooter({ bootMs: (_vm, role) => (role === 'scheduler' ? 100 : 100 + STEP_MS * booted++) });
    booters.push(booter);
    const f = await startFake(SLOT, { booter, lifecycleMs: { pendingMs: 100, shuttingDownMs: 100 } });
    fakes.push(f);
    const events: ClusterEvent[] = [];
    const cluster = new EC2Cluster({ ...fakeOptions(f), saveState: false, nWorkers: N, dockerImage: 'ghcr.io/dask/dask:2024.12.1-py3.12', onEvent: (e) => events.push(e) });
    try {
      await cluster.start();
    } finally {
      await cluster.close();
    }
    const registered = events.filter((e): e is Extract<ClusterEvent, { type: 'workers-registered' }> => e.type === 'workers-registered');
    const counts = registered.map((e) => e.count);
    expect(registered.every((e) => e.wanted === N && e.clusterId === cluster.id)).toBe(true);
    // Each change once, never down, ending with all of them.
    expect(counts).toEqual([...new Set(counts)].sort((a, b) => a - b));
    expect(counts.at(-1)).toBe(N);
    // The workers came one by one over 5.4 s: some look saw only part of them.
    expect(counts.some((c) => c > 0 && c < N), counts.join(' ')).toBe(true);
    // All inside the wait for the workers, and before the workers-ready event.
    const ready = events.findIndex((e) => e.type === 'workers-ready');
    expect(ready).toBeGreaterThan(events.lastIndexOf(registered.at(-1)!));
    expect((events[ready] as Extract<ClusterEvent, { type: 'workers-ready' }>).count).toBe(N);
    expect(events.findIndex((e) => e === registered[0])).toBeGreaterThan(events.findIndex((e) => e.type === 'scheduler-ready'));
  });
});
