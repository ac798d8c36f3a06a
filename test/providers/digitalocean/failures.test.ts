/**
 * DropletCluster failure paths against the DigitalOcean fake with real Dask: a failure injected
 * at each API step of start(), Droplets that never become active, lost create answers (no
 * idempotency tokens: reconciled by listing by tag), batching of 12 workers into 10 + 2, and
 * console output in the error when a member fails. After each: the fake holds nothing.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { checkFakesAndClose, failedStart } from '../../helpers/fakes';
import type { FailureSpec } from '../../fakes/core';
import type { FakeDigitalOcean } from '../../fakes/digitalocean';
import { have, realDask } from '../../helpers/prereq';
import { createApiClient } from 'dots-wrapper';
import { DropletCluster } from '../../../providers/digitalocean';
import { ClusterStartError, ValidationError } from '../../../src/errors';
import type { ClusterEvent } from '../../../src/cluster/events';
import { LocalVmBooter, NETWORK_TEARDOWN, networkThenScheduler, newCluster, opsSince, PREFLIGHT, sequenceAfterPreflight, sequenceSince, startFake } from './helpers';

const SLOT = 1;
const enabled = have(realDask());
const booter = enabled ? new LocalVmBooter() : undefined;
const schedulerOnly = enabled ? new LocalVmBooter({ roles: ['scheduler'] }) : undefined;
const fakes: FakeDigitalOcean[] = [];
const clusters: DropletCluster[] = [];

afterEach(() => checkFakesAndClose(fakes, clusters));

afterAll(async () => {
  await booter?.stopAll();
  await schedulerOnly?.stopAll();
});

async function fake(options: Parameters<typeof startFake>[1] = {}): Promise<FakeDigitalOcean> {
  const f = await startFake(SLOT, { booter, ...options });
  fakes.push(f);
  return f;
}

function track(c: DropletCluster): DropletCluster {
  clusters.push(c);
  return c;
}

async function expectNothingLeft(f: FakeDigitalOcean): Promise<void> {
  expect(f.leaked()).toEqual({});
  await f.settle();
  expect(booter!.pids()).toEqual([]);
}

const FORBIDDEN: FailureSpec = { status: 403, code: 'forbidden', message: 'You do not have access for the attempted action.' };

describe.runIf(enabled)('DropletCluster start failures roll back everything', () => {
  // Every API call start() makes after the read-only preflight (whose failures preflight.test.ts
  // covers: they are typed errors before anything exists), in order, with the phase the error must name.
  // `creates`: the Droplet creates sent by then. No worker's is sent before the scheduler's
  // address and the firewall's answer are known, so a refusal before costs no worker.
  const steps: { op: string; nth: number; phase: string; what: string; creates: number }[] = [
    { op: 'tags_create', nth: 1, phase: 'network', what: 'creating the cluster tag', creates: 0 },
    // The scheduler's create goes out right behind the firewall's, and the scheduler phase waits
    // for the firewall's answer before it looks for the scheduler's address.
    { op: 'firewalls_create', nth: 1, phase: 'scheduler', what: 'creating the firewall', creates: 1 },
    { op: 'droplets_create', nth: 1, phase: 'scheduler', what: 'creating the scheduler Droplet', creates: 1 },
    { op: 'droplets_get', nth: 1, phase: 'scheduler', what: "polling the scheduler's address", creates: 1 },
    { op: 'droplets_create', nth: 2, phase: 'workers', what: 'creating the worker Droplets', creates: 2 },
    // #1 is preflight's Droplet count.
    { op: 'droplets_list', nth: 2, phase: 'workers', what: 'polling the workers', creates: 2 },
  ];

  for (const step of steps) {
    it(`a failure at ${step.op} #${step.nth} (${step.what}) fails start() naming it, and nothing is left`, async () => {
      const f = await fake();
      f.faults.fail(step.op, FORBIDDEN, { nth: step.nth });
      const cluster = track(newCluster(f, { nWorkers: 2 }));
      const err = await failedStart(cluster);
      expect(err.code).toBe('E_START_FAILED');
      expect(err.details.phase).toBe(step.phase);
      expect(err.message).toContain(`DigitalOcean ${step.op} failed (HTTP 403 forbidden: You do not have access`);
      expect(err.message).toContain('Everything created for this cluster has been deleted');
      expect(err.message).not.toContain(f.token);
      expect(f.server.calls(step.op)[step.nth - 1]!.rejectedBy).toBe('fault');
      expect(f.server.calls('droplets_create')).toHaveLength(step.creates);
      await expectNothingLeft(f);
    });
  }

  it('a scheduler Droplet that never becomes active fails after activeTimeoutMs, saying what it saw', async () => {
    const f = await fake();
    f.faults.slowBoot(600_000, 1);
    const cluster = track(newCluster(f, { nWorkers: 1, activeTimeoutMs: 600 }));
    const started = Date.now();
    const err = await failedStart(cluster);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(err.details.phase).toBe('scheduler');
    expect(err.message).toMatch(/did not become active with their addresses within 600 ms .*-scheduler \(\d+\): new/);
    // The scheduler never became a member: the rollback deletes its Droplet by the cluster tag.
    expect(sequenceAfterPreflight(f)).toEqual(['tags_create', 'firewalls_create', 'droplets_create', 'droplets_get', 'droplets_destroy_byTag', ...NETWORK_TEARDOWN]);
    await expectNothingLeft(f);
  });

  it('worker Droplets that never become active fail the workers phase after activeTimeoutMs', async () => {
    const f = await fake();
    const cluster = track(
      newCluster(f, {
        nWorkers: 2,
        activeTimeoutMs: 1_500,
        onEvent: (e) => {
          if (e.type === 'member-launched' && e.role === 'scheduler') f.faults.slowBoot(600_000);
        },
      }),
    );
    const err = await failedStart(cluster);
    expect(err.details.phase).toBe('workers');
    expect(err.message).toMatch(/within 1500 ms .*worker-0 \(\d+\): new, .*worker-1 \(\d+\): new/);
    await expectNothingLeft(f);
  });

  it('a scheduler whose Dask process fails: the error carries its console output (consoleOutput option)', async () => {
    const f = await fake();
    const cluster = track(newCluster(f, { nWorkers: 1, schedulerOptions: ['--bogus-option'], schedulerTimeoutMs: 4_000 }));
    const err = await failedStart(cluster);
    expect(err.details.phase).toBe('scheduler');
    expect(err.message).toContain(`--- last output of ${cluster.id}-scheduler ---`);
    expect(err.message).toMatch(/bogus-option/);
    await expectNothingLeft(f);
  });

  it('without a consoleOutput fetcher the error says where to find the console instead', async () => {
    const f = await fake();
    const cluster = track(newCluster(f, { nWorkers: 0, schedulerOptions: ['--bogus-option'], schedulerTimeoutMs: 3_000, consoleOutput: undefined }));
    const err = await failedStart(cluster);
    expect(err.message).toMatch(/console output unavailable: DigitalOcean's API offers no console output.*cloud-init-output\.log/);
    await expectNothingLeft(f);
  });

  it('12 workers are created in 2 requests (10 + 2); a workers-phase failure deletes all 13 Droplets in one call by tag', async () => {
    const f = await startFake(SLOT, { booter: schedulerOnly });
    fakes.push(f);
    const cluster = track(newCluster(f, { nWorkers: 12, workersTimeoutMs: 1_000 }));
    const err = await failedStart(cluster);
    expect(err.details.phase).toBe('workers');
    // None registered: the error names all 12 and shows the consoles of the first 3.
    expect(err.details.unregistered).toEqual(Array.from({ length: 12 }, (_, i) => `${cluster.id}-worker-${i}`));
    expect(err.message.match(/--- last output of \S+-worker-\d+ \(not registered\) ---/g)).toHaveLength(3);
    expect(err.message).toContain('(9 more workers did not register; cluster.getLogs() shows any member)');
    expect(err.message).toContain('worker not booted in this test');
    const creates = f.server.calls('droplets_create').map((c) => (c.json as { names: string[] }).names);
    expect(creates[0]).toEqual([`${cluster.id}-scheduler`]);
    expect(creates.slice(1).map((n) => n.length).sort()).toEqual([10, 2]);
    expect(creates.slice(1).flat().sort()).toEqual(Array.from({ length: 12 }, (_, i) => `${cluster.id}-worker-${i}`).sort());
    // All 13 in one delete by the cluster tag.
    expect(opsSince(f, 0).filter((o) => o.startsWith('droplets_destroy'))).toEqual(['droplets_destroy_byTag']);
    expect(f.leaked()).toEqual({});
    await f.settle();
    expect(schedulerOnly!.pids()).toEqual([]);
  });

  it('a workers-phase timeout shows the console of the one worker that never registered, not of those that did', async () => {
    const twoOfThree = new LocalVmBooter({ maxWorkers: 2 });
    try {
      const f = await startFake(SLOT, { booter: twoOfThree });
      fakes.push(f);
      // Long enough for two real Dask workers to register on a loaded machine.
      const cluster = track(newCluster(f, { nWorkers: 3, workersTimeoutMs: 25_000 }));
      const err = await failedStart(cluster);
      expect(err.details.phase).toBe('workers');
      const silent = err.details.unregistered as string[];
      expect(silent).toHaveLength(1);
      expect(err.message).toContain(`--- last output of ${silent[0]} (not registered) ---\n[empty vm `);
      expect(err.message.match(/\(not registered\)/g)).toHaveLength(1);
      expect(err.message).not.toContain('more workers did not register');
      await expectNothingLeft(f);
    } finally {
      await twoOfThree.stopAll();
    }
  });

  it('a create whose answer is lost (5xx after the work was done) is reconciled by tag, not repeated: no duplicate Droplet', async () => {
    const f = await fake();
    f.failAfterEffect('droplets_create'); // the scheduler's create
    const cluster = track(
      newCluster(f, {
        nWorkers: 2,
        onEvent: (e) => {
          if (e.type === 'member-launched' && e.role === 'scheduler') f.failAfterEffect('droplets_create'); // the workers' create
        },
      }),
    );
    await cluster.start();
    expect(f.server.calls('droplets_create').map((c) => c.status)).toEqual([500, 500]);
    expect(sequenceAfterPreflight(f)).toEqual(['tags_create', 'firewalls_create', 'droplets_create', 'droplets_list', 'droplets_get', 'droplets_create', 'droplets_list']);
    const names = (f.droplets() as { name: string }[]).map((d) => d.name).sort();
    expect(names).toEqual([`${cluster.id}-scheduler`, `${cluster.id}-worker-0`, `${cluster.id}-worker-1`]);
    expect(cluster.members.map((m) => m.name)).toEqual([`${cluster.id}-scheduler`, `${cluster.id}-worker-0`, `${cluster.id}-worker-1`]);
    expect(await cluster.workers()).toHaveLength(2);
    await cluster.close();
    await expectNothingLeft(f);
  });

  it('a firewall create whose answer is lost is found by name and adopted, and deleted on close', async () => {
    const f = await fake();
    f.failAfterEffect('firewalls_create');
    const cluster = track(newCluster(f, { nWorkers: 0 }));
    await cluster.start();
    expect(networkThenScheduler(sequenceSince(f, PREFLIGHT.length)).slice(0, 4)).toEqual(['tags_create', 'firewalls_create', 'firewalls_list', 'droplets_create']);
    expect(f.resources().firewalls).toHaveLength(1);
    await cluster.close();
    await expectNothingLeft(f);
  });

  it('close() during start waits for the rollback and leaves nothing', async () => {
    const f = await fake();
    const events: ClusterEvent[] = [];
    const cluster = track(newCluster(f, { nWorkers: 2, onEvent: (e) => events.push(e) }));
    const starting = cluster.start().catch((e: unknown) => e);
    while (!events.some((e) => e.type === 'member-launched')) await new Promise((r) => setTimeout(r, 20));
    await cluster.close();
    const result = await starting;
    expect(ClusterStartError.isInstance(result) && result.code === 'E_ABORTED').toBe(true);
    expect(cluster.state).toBe('closed');
    await expectNothingLeft(f);
  });
});

describe.runIf(enabled)('DropletCluster.cleanup: what a killed process left behind', () => {
  it('finds a cluster by its tags and deletes it: dryRun reports, expired waits for the expiry tag, then everything goes', async () => {
    const f = await fake();
    const left = newCluster(f, { nWorkers: 1 }); // never closed: its process "died"
    await left.start();
    const conn = { token: f.token, endpoint: f.endpoint };
    const ids = (f.droplets() as { id: number }[]).map((d) => String(d.id)).sort();

    const dry = await DropletCluster.cleanup({ ...conn, all: true, dryRun: true });
    expect(dry.clusters.map((c) => ({ ...c, instances: [...c.instances].sort() }))).toEqual([{ clusterId: left.id, instances: ids, deleted: false }]);
    expect(f.droplets()).toHaveLength(2);
    expect((await DropletCluster.cleanup({ ...conn, expired: true })).clusters).toEqual([]);

    const mark = f.server.received.length;
    const report = await DropletCluster.cleanup({ ...conn, expired: true, now: new Date(Date.now() + 25 * 3_600_000) });
    expect(report.clusters.map((c) => [c.clusterId, c.deleted, c.error])).toEqual([[left.id, true, undefined]]);
    // Found by the dask-cloud tag, firewall names and cluster tags; then the cluster's Droplets by
    // its tag, its firewall by name, and its own tags.
    expect(sequenceSince(f, mark)).toEqual(['droplets_list', 'firewalls_list', 'tags_list', 'droplets_list', 'droplets_destroy_byTag', 'firewalls_list', ...NETWORK_TEARDOWN]);
    await expectNothingLeft(f);
    await left.close(); // still fine: everything is "not found", which counts as done
  });

  it('an orphan firewall (its Droplets gone) is found by name and counts as expired a day after its creation', async () => {
    const f = await fake();
    const dots = createApiClient(f.clientOptions());
    await dots.tag.createTag({ name: 'dask-cloud-cluster:dask-0badcafe' });
    await dots.firewall.createFirewall({
      name: 'dask-cloud-dask-0badcafe',
      tags: ['dask-cloud-cluster:dask-0badcafe'],
      inbound_rules: [{ protocol: 'tcp', ports: '8786', sources: { addresses: ['0.0.0.0/0'] } }],
      outbound_rules: [],
    });
    const conn = { token: f.token, endpoint: f.endpoint };
    expect((await DropletCluster.cleanup({ ...conn, expired: true })).clusters).toEqual([]);
    const report = await DropletCluster.cleanup({ ...conn, expired: true, now: new Date(Date.now() + 25 * 3_600_000) });
    expect(report.clusters).toEqual([{ clusterId: 'dask-0badcafe', instances: [], deleted: true }]);
    expect(f.leaked()).toEqual({});
  });

  it('needs something to select', async () => {
    await expect(DropletCluster.cleanup({ token: 'x' })).rejects.toBeInstanceOf(ValidationError);
  });
});
