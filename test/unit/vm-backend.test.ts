/**
 * The cloud-agnostic VM logic, driven through the CloudAdapter seam with an in-memory cloud:
 * batching, one user-data per batch, tracking of everything created (also when a create call
 * fails half way), the label sweep, retried network deletion, the firewall plan and cleanup.
 * Each real cloud is tested through its own fake in test/providers.
 */
import createDebug from 'debug';
import { describe, expect, it } from 'vitest';
import { VMBackend, cleanupClusters, validateVMOptions, LABELS } from '../../src/cluster/vm';
import { MemoryCloud } from '../helpers/memory-cloud';
import type { BackendContext, MemberSpec } from '../../src/cluster/backend';
import type { ClusterEvent } from '../../src/cluster/events';
import { retry, type RetryClock } from '../../src/cluster/retry';
import { PreflightReport } from '../../src/cluster/preflight';
import { DaskCloudError, SecurityError, ValidationError } from '../../src/errors';
import { Security } from '../../src/security';

function context(clusterId: string, security: Security | false, events: ClusterEvent[] = []): BackendContext {
  return {
    clusterId,
    security,
    signal: new AbortController().signal,
    log: createDebug('test'),
    emit: (e) => events.push(e),
    memberFailed: () => undefined,
  };
}

const workerSpecs = (n: number, address: string): MemberSpec[] =>
  Array.from({ length: n }, (_, i) => ({ role: 'worker', name: `c-worker-${i}`, process: { schedulerAddress: address, name: `c-worker-${i}` } }));

describe('VMBackend', () => {
  it('launches the scheduler, then workers in batches of maxBatch sharing one user-data that names no worker', async () => {
    const cloud = new MemoryCloud(10);
    const backend = new VMBackend(cloud, {});
    const ctx = context('c1', false);
    await backend.preflight(ctx, new PreflightReport('memory'));
    await backend.prepare(ctx);
    const launch = await backend.launchScheduler(ctx, { role: 'scheduler', name: 'c1-scheduler', process: {} });
    expect(launch.workerAddress).toBe('tcp://127.77.0.2:8786');
    expect(await launch.clientAddress).toBe('tcp://127.77.128.2:8786');
    const members = await backend.launchWorkers(ctx, workerSpecs(23, launch.workerAddress));
    expect(members).toHaveLength(23);
    expect(cloud.calls).toEqual(['preflight', 'ensureNetwork', 'create:scheduler:1', 'create:worker:10', 'create:worker:10', 'create:worker:3']);
    const bodies = new Set([...cloud.instances.values()].filter((i) => i.role === 'worker').map((i) => i.userData.toString()));
    expect(bodies.size).toBe(1);
    const [body] = [...bodies];
    expect(body).not.toContain('c-worker-');
    expect(body).toContain('tcp://127.77.0.2:8786');
    for (const i of cloud.instances.values()) {
      expect(i.labels[LABELS.cluster]).toBe('c1');
      expect(Number(i.labels[LABELS.expires])).toBeGreaterThan(Date.now() / 1000);
    }
    await backend.teardown(ctx);
    expect(cloud.instances.size).toBe(0);
    expect(cloud.network).toBeUndefined();
  });

  it('a failed batch: the other batches are deleted at once, the failed call\'s instances by the label sweep', async () => {
    const cloud = new MemoryCloud(2);
    cloud.failCreateAfterCreating = 3; // the second worker batch
    const backend = new VMBackend(cloud, {});
    const ctx = context('c2', false);
    await backend.prepare(ctx);
    const launch = await backend.launchScheduler(ctx, { role: 'scheduler', name: 's', process: {} });
    await expect(backend.launchWorkers(ctx, workerSpecs(5, launch.workerAddress))).rejects.toThrow(/timed out/);
    // The batches that succeeded are deleted at once (all or nothing); the failed call's
    // instances, whose ids never came back, are found by the label sweep.
    expect(cloud.calls.slice(-4)).toEqual(['create:worker:2', 'create:worker:2', 'create:worker:1', 'delete:3']);
    expect(cloud.instances.size).toBe(3);
    await backend.teardown(ctx);
    expect(cloud.instances.size).toBe(0);
    // The scheduler, which this process created, goes at once; the sweep by label then finds the
    // two whose create answer was lost, and deletes only those.
    expect(cloud.calls.slice(-4)).toEqual(['delete:1', 'list', 'delete:2', 'deleteNetwork']);
  });

  it('retries network deletion while the cloud says it is still in use', async () => {
    const cloud = new MemoryCloud(10);
    cloud.networkBusy = 2;
    const backend = new VMBackend(cloud, {});
    const ctx = context('c3', false);
    await backend.prepare(ctx);
    await backend.teardown(ctx);
    expect(cloud.calls.filter((c) => c === 'deleteNetwork')).toHaveLength(3);
    expect(cloud.network).toBeUndefined();
  });

  it('plans the firewall: public mode opens only the scheduler port and the dashboard terminator to ingressCidrs; private mode nothing public', () => {
    const cloud = new MemoryCloud(10);
    const pub = new VMBackend(cloud, { ingressCidrs: ['203.0.113.0/24'] }).plan('c', undefined);
    expect(pub.ingress.map((r) => [r.ports, r.cidrs])).toEqual([
      [[8786, 8786], 'network'],
      [[8788, 8788], 'network'],
      [[8786, 8786], ['203.0.113.0/24']],
      [[8788, 8788], ['203.0.113.0/24']],
    ]);
    expect(pub.dashboardTlsPort).toBe(8788);
    // Without TLS there is no terminator: the plain dashboard stays inside the network.
    const plain = new VMBackend(cloud, { ingressCidrs: ['203.0.113.0/24'] }).plan('c', false);
    expect(plain.ingress.map((r) => [r.ports, r.cidrs])).toEqual([
      [[8786, 8786], 'network'],
      [[8787, 8787], 'network'],
      [[8786, 8786], ['203.0.113.0/24']],
    ]);
    expect(plain.dashboardTlsPort).toBeUndefined();
    const dash = new VMBackend(cloud, { exposeDashboard: true }).plan('c', undefined);
    expect(dash.ingress.at(-1)).toMatchObject({ ports: [8787, 8787], cidrs: ['0.0.0.0/0'] });
    const priv = new VMBackend(cloud, { privateNetworking: true, exposeDashboard: true }).plan('c', undefined);
    expect(priv.ingress.every((r) => r.cidrs === 'network')).toBe(true);
    expect(priv.privateNetworking).toBe(true);
  });

  it('the dashboard tunnel dials the terminator on the address clients use: public, or private in private mode; none without TLS', async () => {
    const sec = await Security.temporary();
    const scheduler = { id: 'i-1', role: 'scheduler' as const, name: 'c-scheduler', privateHost: '10.0.0.2', publicHost: '203.0.113.7' };
    const pub = new VMBackend(new MemoryCloud(10), {});
    await pub.prepare(context('d1', sec));
    expect(pub.dashboardTarget(scheduler)).toEqual({ host: '203.0.113.7', port: 8788 });
    const priv = new VMBackend(new MemoryCloud(10), { privateNetworking: true });
    await priv.prepare(context('d2', sec));
    expect(priv.dashboardTarget(scheduler)).toEqual({ host: '10.0.0.2', port: 8788 });
    const plain = new VMBackend(new MemoryCloud(10), { privateNetworking: true });
    await plain.prepare(context('d3', false));
    expect(plain.dashboardTarget(scheduler)).toBeUndefined();
  });

  it('warns loudly when security is off and the scheduler is publicly reachable', async () => {
    const events: ClusterEvent[] = [];
    await new VMBackend(new MemoryCloud(10), {}).prepare(context('c4', false, events));
    expect(events.find((e) => e.type === 'warning')).toMatchObject({ message: expect.stringMatching(/security is off.*anyone there can run code/) });
    const quiet: ClusterEvent[] = [];
    await new VMBackend(new MemoryCloud(10), { privateNetworking: true }).prepare(context('c5', false, quiet));
    expect(quiet.filter((e) => e.type === 'warning')).toEqual([]);
  });

  it('uses the private address for clients in private mode and reports console output for diagnostics', async () => {
    const cloud = new MemoryCloud(10);
    const backend = new VMBackend(cloud, { privateNetworking: true });
    const ctx = context('c6', await Security.temporary());
    await backend.prepare(ctx);
    const launch = await backend.launchScheduler(ctx, { role: 'scheduler', name: 's', process: {} });
    expect(await launch.clientAddress).toBe('tls://127.77.0.2:8786');
    expect(await backend.diagnostics(launch.member)).toContain('console of i-1');
    await backend.teardown(ctx);
  });
});

describe('member watch', () => {
  const until = async (what: string, check: () => boolean): Promise<void> => {
    const end = Date.now() + 5_000;
    while (!check()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const lists = (cloud: MemoryCloud) => cloud.calls.filter((c) => c === 'list' || c === 'describe').length;

  it('reports once each member whose VM stopped on its own or vanished after it was listed; not those it deletes, not unlisted new ones', async () => {
    const cloud = new MemoryCloud(10);
    const failed: Array<{ name: string; role: string; message: string; state?: unknown }> = [];
    const backend = new VMBackend(cloud, { memberWatchIntervalMs: 20 });
    const ctx: BackendContext = {
      ...context('w1', false),
      memberFailed: (m, e) => failed.push({ name: m.name, role: m.role, message: e.message, state: (e as DaskCloudError).details.state }),
    };
    await backend.prepare(ctx);
    const launch = await backend.launchScheduler(ctx, { role: 'scheduler', name: 'w1-scheduler', process: {} });
    const [powersOff, scaledDown, vanishes, late] = await backend.launchWorkers(ctx, workerSpecs(4, launch.workerAddress));
    cloud.unlisted.add(late!.id); // not in any list yet: never counts as gone
    await until('two lists', () => lists(cloud) >= 2);

    cloud.instances.get(powersOff!.id)!.stoppedState = 'TERMINATED';
    await backend.stopMembers(ctx, [scaledDown!]);
    cloud.instances.delete(vanishes!.id);
    await until('two reports', () => failed.length >= 2);
    const seen = lists(cloud);
    await until('three more lists', () => lists(cloud) >= seen + 3);
    expect(failed).toEqual([
      { name: powersOff!.name, role: 'worker', message: expect.stringMatching(/worker VM c-worker-0 stopped on its own \(state TERMINATED\): when its Dask process exits, autoShutdown powers the VM off/), state: 'TERMINATED' },
      { name: vanishes!.name, role: 'worker', message: expect.stringMatching(/worker VM c-worker-2 is gone \(terminated, or deleted outside dask-cloud\)/), state: undefined },
    ]);

    await backend.teardown(ctx);
    const after = lists(cloud);
    await new Promise((r) => setTimeout(r, 100));
    expect(lists(cloud)).toBe(after); // the watch stopped with the cluster
  });

  it('0 turns it off; a failing list is only logged and tried again', async () => {
    const off = new MemoryCloud(10);
    const quiet = new VMBackend(off, { memberWatchIntervalMs: 0 });
    const ctx = context('w2', false);
    await quiet.prepare(ctx);
    await quiet.launchScheduler(ctx, { role: 'scheduler', name: 's', process: {} });
    await new Promise((r) => setTimeout(r, 100));
    expect(lists(off)).toBe(0);
    await quiet.teardown(ctx);

    const flaky = new MemoryCloud(10);
    flaky.describes = false; // the fallback: an adapter without describeInstances is watched by listing
    let failures = 2;
    const list = flaky.listInstances.bind(flaky);
    flaky.listInstances = async (c) => {
      if (failures-- > 0) {
        flaky.calls.push('list');
        throw new Error('503 from the API');
      }
      return list(c);
    };
    const reports: string[] = [];
    const backend = new VMBackend(flaky, { memberWatchIntervalMs: 20 });
    const ctx2: BackendContext = { ...context('w3', false), memberFailed: (m) => reports.push(m.name) };
    await backend.prepare(ctx2);
    const launch = await backend.launchScheduler(ctx2, { role: 'scheduler', name: 'w3-scheduler', process: {} });
    await until('a good list', () => lists(flaky) >= 4);
    flaky.instances.get(launch.member.id)!.stoppedState = 'off';
    await until('the report', () => reports.length === 1);
    expect(reports).toEqual(['w3-scheduler']);
    await backend.teardown(ctx2);
  });
});

describe('VM option validation', () => {
  it('rejects bad networking options before anything is created', () => {
    expect(() => validateVMOptions({ ingressCidrs: ['10.0.0.0/33'] })).toThrow(ValidationError);
    expect(() => validateVMOptions({ ingressCidrs: ['0.0.0.0'] })).toThrow(/CIDR/);
    expect(() => validateVMOptions({ ingressCidrs: [] })).toThrow(/non-empty/);
    expect(() => validateVMOptions({ schedulerPort: 0 })).toThrow(/schedulerPort/);
    expect(() => validateVMOptions({ runtime: 'podman' as 'docker' })).toThrow(/runtime/);
    expect(() => validateVMOptions({ bootstrap: 'apt-get update' as unknown as string[] })).toThrow(/bootstrap/);
    expect(() => validateVMOptions({ memberWatchIntervalMs: -1 })).toThrow(/memberWatchIntervalMs/);
    expect(() => validateVMOptions({ memberWatchIntervalMs: Number.NaN })).toThrow(/memberWatchIntervalMs/);
    expect(() => validateVMOptions({ ingressCidrs: ['203.0.113.0/24'], schedulerPort: 8786, runtime: 'native' })).not.toThrow();
  });

  it('refuses a Security whose VMs would need the client key', async () => {
    const t = await Security.temporary();
    const clientOnly = Security.fromPem({ tlsCa: t.caCertPem, tlsClientCert: t.certPem('client'), tlsClientKey: t.clientTlsOptions().key });
    expect(() => validateVMOptions({ security: clientOnly })).toThrow(SecurityError);
    expect(() => validateVMOptions({ security: clientOnly })).toThrow(/never ships the client key/);
    expect(() => validateVMOptions({ security: t })).not.toThrow();
  });
});

describe('cleanupClusters', () => {
  it('deletes given clusters, or every expired one, and can dry-run', async () => {
    const cloud = new MemoryCloud(10);
    const old = new VMBackend(cloud, { expiresAfterHours: 1 });
    const fresh = new VMBackend(cloud, { expiresAfterHours: 48 });
    for (const [b, id] of [[old, 'old'], [fresh, 'fresh']] as const) {
      const ctx = context(id, false);
      await b.prepare(ctx);
      const l = await b.launchScheduler(ctx, { role: 'scheduler', name: `${id}-s`, process: {} });
      await b.launchWorkers(ctx, workerSpecs(2, l.workerAddress));
    }
    const log = createDebug('test');
    const inTwoHours = new Date(Date.now() + 2 * 3600_000);
    const dry = await cleanupClusters(cloud, { expired: true, dryRun: true, now: inTwoHours }, log);
    expect(dry.clusters).toEqual([{ clusterId: 'old', instances: expect.any(Array), deleted: false }]);
    expect(cloud.instances.size).toBe(6);
    const real = await cleanupClusters(cloud, { expired: true, now: inTwoHours }, log);
    expect(real.clusters.map((c) => [c.clusterId, c.instances.length, c.deleted])).toEqual([['old', 3, true]]);
    expect([...cloud.instances.values()].every((i) => i.labels[LABELS.cluster] === 'fresh')).toBe(true);
    await cleanupClusters(cloud, { clusterIds: ['fresh'] }, log);
    expect(cloud.instances.size).toBe(0);
  });
});

describe('retry', () => {
  class ManualClock implements RetryClock {
    t = 0;
    sleeps: number[] = [];
    now() {
      return this.t;
    }
    async sleep(ms: number) {
      this.sleeps.push(ms);
      this.t += ms;
    }
  }

  it('backs off exponentially with jitter, honours a suggested delay, and stops at the deadline saying what failed', async () => {
    const clock = new ManualClock();
    let n = 0;
    const result = await retry(
      async () => {
        if (++n < 4) throw new Error(`busy ${n}`);
        return 'ok';
      },
      { retryable: () => true, timeoutMs: 60_000, what: 'x', clock, random: () => 1, baseDelayMs: 100, maxDelayMs: 250 },
    );
    expect(result).toBe('ok');
    expect(clock.sleeps).toEqual([100, 200, 250]);

    const suggested = new ManualClock();
    await retry(async (a) => (a === 1 ? Promise.reject(new Error('429')) : 'ok'), {
      retryable: () => true, timeoutMs: 60_000, what: 'x', clock: suggested, retryAfterMs: () => 7_000,
    });
    expect(suggested.sleeps).toEqual([7_000]);

    const err = await retry(async () => Promise.reject(new Error('throttled')), {
      retryable: () => true, timeoutMs: 1_000, what: 'creating things', clock: new ManualClock(), random: () => 1, baseDelayMs: 300,
    }).catch((e: unknown) => e);
    expect(DaskCloudError.isInstance(err)).toBe(true);
    expect((err as DaskCloudError).code).toBe('E_TIMEOUT');
    expect((err as Error).message).toMatch(/creating things: gave up after \d+ attempts.*last error: throttled/);
  });

  it('does not retry what is not retryable', async () => {
    let n = 0;
    await expect(retry(async () => Promise.reject(new Error(`fatal ${++n}`)), { retryable: () => false, timeoutMs: 1000, what: 'x' })).rejects.toThrow('fatal 1');
  });
});
