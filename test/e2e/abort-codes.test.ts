/**
 * Issue 8: an abort by the caller — its `signal`, or `close()` during start — always ends the
 * start with a ClusterStartError coded E_ABORTED, whichever phase it hits and whatever the
 * backend happened to throw on seeing it (an SDK abort, a refused connection, a timeout), with the
 * rollback's outcome in the message and `details.rollback`. Before, the code was E_ABORTED or
 * E_START_FAILED (or a plain Error before anything was created) depending on timing.
 *
 * The aborts land at the start of each phase (credentials, validate, preflight, network,
 * scheduler, ready), while a request of each phase is in flight at the EC2 fake (held HOLD_MS:
 * the first preflight read, the security group create, each RunInstances), after the scheduler
 * and the workers were launched, and while the start waits for the workers to register. Then the
 * same against local processes, whose backend throws other errors.
 *
 * Network safety: the EC2 fake hands out 127.79.112.0/20 and 127.79.240.0/20 only (loopback,
 * no other test file uses them); the scheduler's public address is served on loopback by the
 * fake's NatProcessBooter.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { FakeEc2 } from '../fakes/ec2';
import { have, pythonWithDask, realDask } from '../helpers/prereq';
import { assertLoopbackFake } from '../providers/ec2/helpers';
import { NatProcessBooter } from '../sim/nat-booter';
import { EC2Cluster } from '../../providers/ec2';
import { LocalCluster } from '../../providers/local';
import type { Cluster } from '../../src/cluster/cluster';
import type { ClusterEvent } from '../../src/cluster/events';
import { ClusterStartError } from '../../src/errors';

const HOLD_MS = 300;
type By = 'signal' | 'close';

/** Where an abort lands: on a cluster event, or when the fake receives a request (held meanwhile). */
type Point = { name: string; event: (e: ClusterEvent) => boolean } | { name: string; request: string; nth?: number };

const atPhase = (phase: string): Point => ({ name: `start of ${phase}`, event: (e) => e.type === 'phase-start' && e.phase === phase });

const EC2_POINTS: Point[] = [
  atPhase('credentials'),
  atPhase('validate'),
  atPhase('preflight'),
  { name: 'first preflight read in flight', request: 'DescribeRegions' },
  atPhase('network'),
  { name: 'security group create in flight', request: 'CreateSecurityGroup', nth: 2 }, // #1 is preflight's DryRun
  atPhase('scheduler'),
  { name: 'scheduler RunInstances in flight', request: 'RunInstances', nth: 3 }, // #1, #2: DryRuns
  { name: 'scheduler launched (workers being created)', event: (e) => e.type === 'member-launched' && e.role === 'scheduler' },
  { name: 'workers RunInstances in flight', request: 'RunInstances', nth: 4 },
  { name: 'workers launched (waiting for the scheduler)', event: (e) => e.type === 'member-launched' && e.role === 'worker' },
  { name: 'scheduler ready (waiting for the workers)', event: (e) => e.type === 'scheduler-ready' },
];

const LOCAL_POINTS: Point[] = [
  atPhase('credentials'),
  atPhase('network'),
  atPhase('scheduler'),
  { name: 'scheduler launched', event: (e) => e.type === 'member-launched' && e.role === 'scheduler' },
  { name: 'workers launched (waiting for the scheduler)', event: (e) => e.type === 'member-launched' && e.role === 'worker' },
  { name: 'scheduler ready (waiting for the workers)', event: (e) => e.type === 'scheduler-ready' },
];

const stops: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const s of stops.splice(0).reverse()) await s().catch(() => undefined);
});

/** Starts a cluster, aborts it at `point` by `by`; checks the error and that close() then has nothing to do. */
async function abortAt(
  make: (onEvent: (e: ClusterEvent) => void, signal: AbortSignal) => Cluster,
  point: Point,
  by: By,
  hold?: (request: string, nth: number, then: () => void) => { remove(): void },
): Promise<ClusterStartError> {
  const controller = new AbortController();
  let cluster: Cluster | undefined;
  let closing: Promise<void> | undefined;
  let fired = false;
  const fire = (): void => {
    if (fired) return;
    fired = true;
    if (by === 'signal') controller.abort(new Error(`aborted at ${point.name}`));
    else closing = cluster!.close();
  };
  const hook = 'request' in point ? hold!(point.request, point.nth ?? 1, fire) : undefined;
  cluster = make((e) => {
    if ('event' in point && point.event(e)) fire();
  }, controller.signal);
  try {
    const err = await cluster.start().then(
      () => new Error(`start() completed although aborted at ${point.name}`),
      (e: unknown) => e,
    );
    expect(fired, `the abort point ${point.name} was never reached`).toBe(true);
    expect(ClusterStartError.isInstance(err), `${point.name} by ${by}: ${String(err)}`).toBe(true);
    const e = err as ClusterStartError;
    expect(e.code, `${point.name} by ${by}: ${e.message}`).toBe('E_ABORTED');
    expect(e.details.aborted).toBe(by);
    expect(e.message).toMatch(new RegExp(`^starting cluster ${cluster.id} was aborted by ${by === 'close' ? 'close\\(\\)' : 'its signal'} during \\w+: `));
    if (by === 'signal') {
      expect(e.message).toContain(`aborted at ${point.name}`);
      // The phase the abort hit, not the one where the start noticed it.
      const phase = /^start of (\w+)$/.exec(point.name)?.[1];
      if (phase !== undefined) expect(e.details.phase).toBe(phase);
    }
    expect(['not-needed', 'complete']).toContain(e.details.rollback);
    expect(e.message).toContain(e.details.rollback === 'not-needed' ? 'nothing had been created yet' : 'everything created for this cluster has been deleted');
    await closing;
    await cluster.close();
    expect(cluster.state).toBe(by === 'close' ? 'closed' : 'failed');
    return e;
  } finally {
    hook?.remove();
  }
}

describe.runIf(have(realDask()))('an abort by the caller during start is always E_ABORTED', () => {
  it('EC2: at every phase, by the signal and by close(), with the rollback outcome', async () => {
    const booter = new NatProcessBooter({ python: pythonWithDask()!, ports: [8786] });
    const fake = await FakeEc2.start({ privateCidr: '127.79.112.0/20', publicCidr: '127.79.240.0/20', booter, lifecycleMs: { pendingMs: 200, shuttingDownMs: 100 } });
    assertLoopbackFake(fake);
    stops.push(async () => {
      await fake.stop();
      await booter.stopAll();
    });
    const cfg = fake.clientConfig();
    const make = (onEvent: (e: ClusterEvent) => void, signal: AbortSignal) =>
      new EC2Cluster({ region: cfg.region, endpoint: cfg.endpoint, credentials: cfg.credentials, nWorkers: 2, closeOnSignals: false, memberWatchIntervalMs: 0, signal, onEvent });
    const hold = (request: string, nth: number, then: () => void) => {
      let seen = 0;
      return fake.server.faults.latency(request, () => {
        if (++seen !== nth) return 0;
        then();
        return HOLD_MS;
      });
    };
    const phases: string[] = [];
    for (const point of EC2_POINTS) {
      for (const by of ['signal', 'close'] as const) {
        const err = await abortAt(make, point, by, hold);
        phases.push(`${point.name} by ${by}: ${String(err.details.phase)}, rollback ${String(err.details.rollback)}`);
        expect(fake.leaked(), `${point.name} by ${by}`).toEqual({});
        expect(booter.pids()).toEqual([]);
      }
    }
    // Early aborts had nothing to roll back; later ones deleted what they had created.
    expect(phases.filter((p) => p.endsWith('not-needed')).length).toBeGreaterThan(0);
    expect(phases.filter((p) => p.endsWith('complete')).length).toBeGreaterThan(0);
  }, 300_000);

  it('local processes: at every phase, by the signal and by close()', async () => {
    const make = (onEvent: (e: ClusterEvent) => void, signal: AbortSignal) => new LocalCluster({ nWorkers: 2, closeOnSignals: false, signal, onEvent });
    for (const point of LOCAL_POINTS) {
      for (const by of ['signal', 'close'] as const) {
        const err = await abortAt(make, point, by);
        expect(err.details.phase, point.name).toBeDefined();
      }
    }
  }, 180_000);
});
