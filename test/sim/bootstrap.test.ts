/**
 * `bootstrap` on simulated VMs (real cloud-init, real Dask; EC2 fake: its RunInstances answers
 * with the private address, so workers boot beside the scheduler and a run is short):
 * - a failing bootstrap never starts Dask, the VM powers itself off (autoShutdown), the member
 *   watch fails start() with the bootstrap's report from the console, and nothing is left;
 * - `exit 0` in the bootstrap ends only the bootstrap: Dask starts and a worker registers;
 * - with autoShutdown off the VM stays up, and the readiness timeout's error carries the report.
 *
 * Network safety (test/sim/README.md): the simulated cloud is 10.77.0.0/16, blackholed in the root
 * namespace; `hostAccess` adds links into this network's bridges only, and both address blocks
 * are checked with `assertHostRoute` before anything is created (SimVmBooter checks each VM's own
 * addresses before it boots). Every wait is bounded.
 *
 * Needs root, systemd-nspawn, nftables and the VM image (`sudo bash scripts/build-vm-image.sh`).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EC2Cluster, type EC2ClusterOptions } from '../../providers/ec2';
import { BOOTSTRAP_FAILED_MARK } from '../../src/cloud-init';
import type { ClusterEvent } from '../../src/cluster/events';
import { ClusterStartError } from '../../src/errors';
import { assertNoContractViolations } from '../fakes/core';
import type { BootRequest } from '../fakes/core/state';
import { FakeEc2 } from '../fakes/ec2';
import { have, trixieDask, trixiePython } from '../helpers/prereq';
import { eventually, fakeOptions } from '../providers/ec2/helpers';
import { SimNetwork, SimVmBooter, simulatedVms } from '.';
import { intToIp, ipToInt } from './net-util';

// The cluster's `python` is the VMs' own Dask (scripts/trixie-python): the client the versions are compared with.
const enabled = have(simulatedVms()) && have(trixieDask());

/** How often the member watch lists the VMs: the test injects it, and bounds detection with it. */
const WATCH_MS = 500;
const LIFECYCLE = { pendingMs: 500, shuttingDownMs: 500 };

/** Records when each VM's init exited (a power-off from inside, or the fake stopping it). */
class TimedBooter extends SimVmBooter {
  readonly exitedAt = new Map<string, number>();
  override async boot(req: BootRequest): ReturnType<SimVmBooter['boot']> {
    const vm = await super.boot(req);
    void vm.exited.then(() => this.exitedAt.set(req.id, Date.now()));
    return vm;
  }
}

describe.skipIf(!enabled)('bootstrap on simulated VMs (EC2 fake)', () => {
  let net: SimNetwork;
  let fake: FakeEc2 | undefined;
  let booter: TimedBooter;
  let cluster: EC2Cluster | undefined;
  /** How long a clean start took here (test b): the autoShutdown-off test sizes its timeout from it. */
  let cleanStartMs: number | undefined;

  beforeAll(async () => {
    net = await SimNetwork.create({ name: 'boot', hostAccess: true });
    for (const block of [net.privateCidr, net.publicCidr]) {
      await net.assertHostRoute(intToIp(ipToInt(block.split('/')[0] as string) + 4));
    }
  }, 60_000);

  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
    if (fake) {
      expect(Object.values(fake.leaked()).flat()).toEqual([]);
      // Terminated instances' VMs are stopped by the fake as they go (nspawn takes a moment).
      await eventually(() => fake!.instances().every((i) => !(net.vm(i.instanceId)?.running ?? false)), 'the VMs to stop', 30_000);
      assertNoContractViolations(fake);
      expect(fake.bootErrors).toEqual([]);
      await fake.stop();
      fake = undefined;
    }
  }, 60_000);

  afterAll(async () => {
    await fake?.stop();
    await net?.destroy();
  }, 60_000);

  async function newCluster(options: EC2ClusterOptions, events: ClusterEvent[]): Promise<EC2Cluster> {
    booter = new TimedBooter(net);
    fake = await FakeEc2.start({ booter, privateCidr: net.privateCidr, publicCidr: net.publicCidr, lifecycleMs: LIFECYCLE });
    cluster = new EC2Cluster({
      ...fakeOptions(fake),
      runtime: 'native', // the image has Dask (Debian's python3-distributed), no internet for Docker
      python: trixiePython()!,
      onEvent: (e) => events.push(e),
      ...options,
    });
    return cluster;
  }

  it('a failing bootstrap: Dask never starts, the VM powers off, start() fails with the report within the watch interval', async () => {
    const events: ClusterEvent[] = [];
    const readinessMs = 150_000; // far beyond a boot: the failure must come from the watch, not this
    const c = await newCluster(
      { nWorkers: 1, bootstrap: ['echo preparing the VM', 'exit 1'], memberWatchIntervalMs: WATCH_MS, schedulerTimeoutMs: readinessMs, workersTimeoutMs: readinessMs },
      events,
    );
    const t0 = Date.now();
    const err = (await c.start().catch((e: unknown) => e)) as ClusterStartError;
    const ms = Date.now() - t0;
    expect(ClusterStartError.isInstance(err), String(err)).toBe(true);
    expect(err.code).toBe('E_START_FAILED');
    // Whichever VM the watch (or the wait for the scheduler's public address) caught first.
    expect(err.message).toMatch(
      /the (scheduler|worker) VM (dask-[0-9a-f]+-(scheduler|worker-\d+)) (is gone \(terminated, or deleted outside dask-cloud\)|stopped on its own \(state (shutting-down|terminated)\))|instance i-[0-9a-f]+ is (shutting-down|terminated) before it got its address/,
    );
    const failed = String(err.details.member);
    expect(failed).toMatch(/^dask-[0-9a-f]+-(scheduler|worker-\d+)$/);
    // The VM's console tail, in the message and the details: the report and the bootstrap's output.
    for (const text of [err.message, String(err.details.consoleTail)]) {
      expect(text).toContain(`${BOOTSTRAP_FAILED_MARK} (exit 1): Dask is not started`);
      expect(text).toContain('dask-cloud: | preparing the VM');
      expect(text).toContain('dask-cloud: powering off (autoShutdown)');
    }
    expect(ms).toBeLessThan(readinessMs);
    // The VM powered itself off; the rollback began within a few watch intervals of it.
    const id = events.find((e): e is Extract<ClusterEvent, { type: 'member-launched' }> => e.type === 'member-launched' && e.name === failed)!.memberId;
    expect(fake!.instance(id)!.stateReason?.code).toBe('Client.InstanceInitiatedShutdown');
    const exitedAt = booter.exitedAt.get(id);
    const rollbackAt = events.find((e) => e.type === 'rollback')!.at;
    expect(exitedAt).toBeDefined();
    expect(rollbackAt - exitedAt!).toBeGreaterThanOrEqual(0);
    expect(rollbackAt - exitedAt!).toBeLessThan(LIFECYCLE.shuttingDownMs + 10 * WATCH_MS);
    // Dask never ran: nothing listened, nothing registered (the scheduler never got a worker).
    expect(events.some((e) => e.type === 'scheduler-ready')).toBe(false);
  }, 180_000);

  it('`exit 0` ends only the bootstrap: Dask starts, a worker registers, the console shows the bootstrap ran', async () => {
    const events: ClusterEvent[] = [];
    const c = await newCluster(
      { nWorkers: 1, bootstrap: ['echo hi from bootstrap', 'exit 0', 'echo never printed'], memberWatchIntervalMs: WATCH_MS, schedulerTimeoutMs: 90_000, workersTimeoutMs: 90_000 },
      events,
    );
    const t0 = Date.now();
    await c.start();
    cleanStartMs = Date.now() - t0;
    expect(await c.workers()).toHaveLength(1);
    const logs = await c.getLogs();
    const scheduler = c.members.find((m) => m.role === 'scheduler')!;
    expect(logs[scheduler.name]).toMatch(/^hi from bootstrap$/m);
    expect(logs[scheduler.name]).toMatch(/^dask-cloud: bootstrap done$/m);
    expect(logs[scheduler.name]).not.toContain('never printed');
    expect(events.some((e) => e.type === 'member-failed')).toBe(false);
  }, 180_000);

  it('autoShutdown off: the VM stays up without Dask, and the readiness timeout error carries the report', async () => {
    const events: ClusterEvent[] = [];
    // Four clean starts' worth: the VM has long booted and failed its bootstrap by then.
    const readinessMs = 4 * (cleanStartMs ?? 30_000);
    const c = await newCluster(
      { nWorkers: 0, autoShutdown: false, bootstrap: ['echo keep me for inspection', 'false'], memberWatchIntervalMs: WATCH_MS, schedulerTimeoutMs: readinessMs },
      events,
    );
    const starting = c.start().catch((e: unknown) => e);
    // While start() waits, getLogs() already shows why (the way to read a worker's console).
    let seen = '';
    await eventually(
      async () => {
        await new Promise((r) => setTimeout(r, WATCH_MS)); // one console read per watch interval
        const logs = await c.getLogs();
        seen = Object.values(logs).join('\n');
        return seen.includes(BOOTSTRAP_FAILED_MARK);
      },
      'the bootstrap report in getLogs() during start()',
      readinessMs,
    );
    expect(seen).toContain('dask-cloud: | keep me for inspection');
    const err = (await starting) as ClusterStartError;
    expect(ClusterStartError.isInstance(err), String(err)).toBe(true);
    expect(err.code).toBe('E_START_FAILED');
    expect(err.details.phase).toBe('scheduler');
    expect(String(err.details.member)).toMatch(/-scheduler$/);
    expect(err.message).toContain(`${BOOTSTRAP_FAILED_MARK} (exit 1): Dask is not started`);
    expect(err.message).toContain('dask-cloud: | keep me for inspection');
    expect(err.message).toContain('dask-cloud: the VM stays up for inspection (autoShutdown is off)');
    // It did not power itself off: it ran until the rollback deleted it.
    const id = events.find((e): e is Extract<ClusterEvent, { type: 'member-launched' }> => e.type === 'member-launched')!.memberId;
    expect(fake!.instance(id)!.stateReason?.code).not.toBe('Client.InstanceInitiatedShutdown');
    const rollbackAt = events.find((e) => e.type === 'rollback')!.at;
    expect(booter.exitedAt.get(id) ?? Infinity).toBeGreaterThan(rollbackAt);
    expect(events.some((e) => e.type === 'member-failed')).toBe(false);
  }, 300_000);
});
