/**
 * Issue 8, "teardown that finishes": every delete operation each provider makes, failing while a
 * cluster is deleted — during the rollback of a failed start, and during close() — against the
 * real fakes. Whatever the first teardown managed, its error (if any) is typed and says what is
 * left and how to delete it, and a second close() deletes the rest: the fake then holds nothing.
 *
 * Operations: EC2 TerminateInstances, DeleteSecurityGroup; GCP instances.delete, firewalls.delete;
 * DigitalOcean droplets_destroy_byTag, firewalls_delete, tags_delete. Faults, each injected once:
 * - 500 on the first call: the request pipelines retry server errors, so the first teardown may
 *   well succeed; either way nothing may be left after the second close();
 * - a hang longer than the request timeout (REQUEST_TIMEOUT_MS) on the first call: the same;
 * - 403 for the whole first teardown (a permission missing until someone grants it): never
 *   retried, so the first teardown must fail with a typed error naming the leftovers and the
 *   cleanup command, and every other deletion must still have been attempted (instances when the
 *   network delete fails, the network when the instance delete fails).
 *
 * The failed start: nothing boots in the rollback fakes and the scheduler timeout is short, so
 * the start fails waiting for the scheduler after every create. The running clusters for close()
 * boot real Dask through the fakes' process-VM booters.
 *
 * Network safety: every fake hands out loopback addresses only (EC2 127.79.80-111/20, DigitalOcean
 * 127.76.16-47/20, GCP 127.80-207 from its helper); the library dials the scheduler's public
 * address, which the booters serve on loopback (and where nothing listens in the rollback fakes).
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { FaultHandle, FailureSpec } from '../fakes/core';
import { FakeEc2 } from '../fakes/ec2';
import { FakeDigitalOcean } from '../fakes/digitalocean';
import type { FakeGcp } from '../fakes/gcp';
import { eventually } from '../helpers/eventually';
import { have, pythonWithDask, realDask } from '../helpers/prereq';
import { assertLoopbackFake } from '../providers/ec2/helpers';
import { fakeOptions as gcpOptions, startFake as startGcp } from '../providers/gcp/helpers';
import { clusterOptions as doOptions, LocalVmBooter } from '../providers/digitalocean/helpers';
import { NatProcessBooter } from '../sim/nat-booter';
import { EC2Cluster } from '../../providers/ec2';
import { GCPCluster } from '../../providers/gcp';
import { DropletCluster } from '../../providers/digitalocean';
import type { VMCluster } from '../../src/cluster/vm';
import { ClusterStartError, TeardownError } from '../../src/errors';

/** Per-request deadline the clusters get; the injected hang is longer. */
const REQUEST_TIMEOUT_MS = 1_500;
const HANG_MS = REQUEST_TIMEOUT_MS + 1_500;
/** Nothing boots in the rollback fakes: the start fails after this wait for the scheduler. */
const SCHEDULER_TIMEOUT_MS = 1_000;

type FaultKind = '500' | '403' | 'timeout';
type Phase = 'rollback' | 'close';

/** One cloud's fake, with or without a booter, and how to point a cluster at it. */
interface Fake {
  faults: { fail(op: string, spec: FailureSpec, when?: { times?: number }): FaultHandle; latency(op: string, ms: () => number): FaultHandle };
  /** Operation names received so far, with their HTTP status. */
  received(): { op: string; status: number }[];
  cluster(): VMCluster;
  leaked(): Promise<Record<string, unknown>>;
}

interface Cloud {
  kind: 'ec2' | 'gcp' | 'digitalocean';
  instanceDeletes: string[];
  networkDeletes: string[];
  /** Network deletions never tried while instances remain (they would hide those from a sweep). */
  waitsForInstances?: string[];
  codes: Record<'500' | '403', string>;
  /** The fake without a booter (failed starts) and the one with (running clusters). */
  make(booted: boolean): Promise<Fake>;
}

const stops: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const s of stops.splice(0).reverse()) await s().catch(() => undefined);
});

function received(server: { received: { operation?: string; status: number }[] }): { op: string; status: number }[] {
  return server.received.map((r) => ({ op: r.operation ?? '?', status: r.status }));
}

const EC2: Cloud = {
  kind: 'ec2',
  instanceDeletes: ['TerminateInstances'],
  networkDeletes: ['DeleteSecurityGroup'],
  codes: { 500: 'InternalError', 403: 'UnauthorizedOperation' },
  async make(booted) {
    const booter = booted ? new NatProcessBooter({ python: pythonWithDask()!, ports: [8786] }) : undefined;
    const block = booted ? 5 : 6;
    const fake = await FakeEc2.start({
      privateCidr: `127.79.${16 * block}.0/20`,
      publicCidr: `127.79.${128 + 16 * block}.0/20`,
      booter,
      lifecycleMs: { pendingMs: 100, shuttingDownMs: 100 },
    });
    assertLoopbackFake(fake);
    stops.push(async () => {
      await fake.stop();
      await booter?.stopAll();
    });
    const cfg = fake.clientConfig();
    return {
      faults: fake.server.faults,
      received: () => received(fake.server),
      cluster: () =>
        new EC2Cluster({
          region: cfg.region,
          endpoint: cfg.endpoint,
          credentials: cfg.credentials,
          // The library's own per-attempt deadline cuts the hung request and retries it.
          requestTimeoutMs: REQUEST_TIMEOUT_MS,
          ...common(booted),
        }),
      leaked: async () => ({ ...fake.leaked(), ...pids(booter) }),
    };
  },
};

const GCP: Cloud = {
  kind: 'gcp',
  instanceDeletes: ['compute.instances.delete'],
  networkDeletes: ['compute.firewalls.delete'],
  codes: { 500: 'backendError', 403: 'forbidden' },
  async make(booted) {
    const booter = booted ? new NatProcessBooter({ python: pythonWithDask()!, ports: [8786] }) : undefined;
    const fake: FakeGcp = await startGcp({ booter });
    stops.push(async () => {
      await fake.stop();
      await booter?.stopAll();
    });
    return {
      faults: fake.server.faults,
      received: () => received(fake.server),
      cluster: () => new GCPCluster({ ...gcpOptions(fake), requestTimeoutMs: REQUEST_TIMEOUT_MS, ...common(booted) }),
      leaked: async () => ({ ...fake.leaked(), ...pids(booter) }),
    };
  },
};

const DO: Cloud = {
  kind: 'digitalocean',
  instanceDeletes: ['droplets_destroy_byTag'],
  networkDeletes: ['firewalls_delete', 'tags_delete'],
  // The cluster tag is how a sweep finds its Droplets: it is kept while any carries it.
  waitsForInstances: ['tags_delete'],
  codes: { 500: 'server_error', 403: 'forbidden' },
  async make(booted) {
    const booter = booted ? new LocalVmBooter() : undefined;
    const block = booted ? 1 : 2;
    const fake = await FakeDigitalOcean.start({
      privateCidr: `127.76.${16 * block}.0/20`,
      publicCidr: `127.76.${128 + 16 * block}.0/20`,
      booter,
      lifecycleMs: 200,
      firewallApplyMs: 50,
    });
    expect(fake.pools.private.cidr.startsWith('127.') && fake.pools.public.cidr.startsWith('127.'), 'loopback addresses only').toBe(true);
    stops.push(async () => {
      await fake.stop();
      await booter?.stopAll();
    });
    return {
      faults: fake.server.faults,
      received: () => received(fake.server),
      cluster: () => new DropletCluster({ ...doOptions(fake), requestTimeoutMs: REQUEST_TIMEOUT_MS, ...common(booted) }),
      leaked: async () => {
        await fake.settle();
        return { ...fake.leaked(), ...pids(booter) };
      },
    };
  },
};

function common(booted: boolean) {
  return {
    nWorkers: 1,
    closeOnSignals: false,
    memberWatchIntervalMs: 0,
    schedulerTimeoutMs: booted ? 60_000 : SCHEDULER_TIMEOUT_MS,
    workersTimeoutMs: 60_000,
  };
}

function pids(booter: { pids(): number[] } | undefined): Record<string, unknown> {
  const p = booter?.pids() ?? [];
  return p.length > 0 ? { processes: p } : {};
}

/** Injects the fault on `op`; returns how to tell it fired and how to remove it. */
function inject(fake: Fake, cloud: Cloud, op: string, kind: FaultKind): { fired(): boolean; remove(): void } {
  if (kind === 'timeout') {
    let hung = 0;
    const handle = fake.faults.latency(op, () => (hung++ === 0 ? HANG_MS : 0));
    return { fired: () => hung > 0, remove: () => handle.remove() };
  }
  const status = Number(kind);
  const spec: FailureSpec = { status, code: cloud.codes[kind], message: `injected ${kind} on ${op}` };
  const mark = fake.received().length;
  const handle = fake.faults.fail(op, spec, kind === '500' ? { times: 1 } : {});
  return { fired: () => fake.received().slice(mark).some((r) => r.op === op && r.status === status), remove: () => handle.remove() };
}

/**
 * The first teardown (the rollback of a failed start, or close() of a running cluster) with the
 * fault, then a second close() without it. Returns the first teardown's error, if any.
 */
async function scenario(cloud: Cloud, fake: Fake, op: string, kind: FaultKind, phase: Phase): Promise<unknown> {
  const cluster = fake.cluster();
  let fault: ReturnType<typeof inject> | undefined;
  let first: unknown;
  const mark = fake.received().length;
  try {
    if (phase === 'rollback') {
      fault = inject(fake, cloud, op, kind);
      first = await cluster.start().then(
        () => new Error('start() should have failed: nothing boots'),
        (e: unknown) => e,
      );
      expect(ClusterStartError.isInstance(first), String(first)).toBe(true);
      const err = first as ClusterStartError;
      expect(err.code).toBe('E_START_FAILED');
      if (err.details.leftovers === undefined) {
        expect(err.message).toContain('Everything created for this cluster has been deleted.');
        first = undefined;
      } else {
        // The rollback's own error, in the start's: what is left, and the command that deletes it.
        expect(err.details.leftovers, err.message).toEqual(expect.arrayContaining([expect.any(String)]));
        expect(err.details.cleanupCommand).toMatch(new RegExp(`^dask-cloud cleanup --provider ${cloud.kind} .*--cluster ${cluster.id}$`));
        expect(err.message).toContain(`Delete it with: ${String(err.details.cleanupCommand)}`);
      }
    } else {
      await cluster.start();
      fault = inject(fake, cloud, op, kind);
      first = await cluster.close().then(
        () => undefined,
        (e: unknown) => e,
      );
      if (first !== undefined) {
        expect(TeardownError.isInstance(first), String(first)).toBe(true);
        const err = first as TeardownError;
        expect(err.code).toBe('E_TEARDOWN');
        expect(err.leftovers.length, err.message).toBeGreaterThan(0);
        expect(err.details.cleanupCommand).toMatch(new RegExp(`^dask-cloud cleanup --provider ${cloud.kind} .*--cluster ${cluster.id}$`));
        expect(err.message).toContain('close() again retries what is left');
        expect(cluster.state).toBe('closing');
      }
    }
    expect(fault.fired(), `the ${kind} fault on ${op} never fired`).toBe(true);
    if (kind === '403') {
      expect(first, `a 403 on ${op} must fail the first teardown`).toBeDefined();
      // Every deletion was still attempted: instances and network alike.
      const ops = fake.received().slice(mark).map((r) => r.op);
      expect(ops.some((o) => cloud.instanceDeletes.includes(o)), ops.join(' ')).toBe(true);
      // Each network deletion, too (DigitalOcean's tags even when its firewall delete is refused),
      // except those that must wait for the instances to be gone.
      const instancesStay = cloud.instanceDeletes.includes(op);
      for (const d of cloud.networkDeletes) {
        if (instancesStay && cloud.waitsForInstances?.includes(d)) continue;
        expect(ops, `${d} after a 403 on ${op}`).toContain(d);
      }
    }
  } finally {
    fault?.remove();
  }
  // The second close() deletes what is left.
  await cluster.close();
  // A start whose rollback deleted everything stays `failed` (close() has nothing to do).
  expect(cluster.state).toBe(phase === 'rollback' && first === undefined ? 'failed' : 'closed');
  await eventually(async () => Object.keys(await fake.leaked()).length === 0, 'the fake to hold nothing', HANG_MS + 5_000).catch(() => undefined);
  expect(await fake.leaked(), `${cloud.kind} ${op} ${kind} during ${phase}`).toEqual({});
  return first;
}

describe.runIf(have(realDask()))('a delete that fails during teardown: typed error, and a second close() leaves nothing', () => {
  for (const cloud of [EC2, GCP, DO]) {
    for (const phase of ['rollback', 'close'] as const) {
      it(`${cloud.kind}, during ${phase === 'rollback' ? 'the rollback of a failed start' : 'close()'}: ${[...cloud.instanceDeletes, ...cloud.networkDeletes].join(', ')} × 500, 403, timeout`, async () => {
        const fake = await cloud.make(phase === 'close');
        const outcomes: string[] = [];
        for (const op of [...cloud.instanceDeletes, ...cloud.networkDeletes]) {
          for (const kind of ['500', '403', 'timeout'] as const) {
            const first = await scenario(cloud, fake, op, kind, phase);
            outcomes.push(`${op} ${kind}: ${first === undefined ? 'absorbed' : 'typed error, retried'}`);
          }
        }
        // Say what happened: which faults the pipelines absorbed and which the second close() cleaned up.
        console.log(`${cloud.kind} ${phase}:\n  ${outcomes.join('\n  ')}`);
      }, 300_000);
    }
  }
});
