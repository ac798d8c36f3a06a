/**
 * The stand-in VMs of test/sim/standin.ts, driven by the library's own wire client: the
 * scheduler appears after its boot delay on its loopback address with the cluster's certificate,
 * workers register under their VM's address, retire_workers and VM deletion remove them, and a
 * client of another CA is refused. (Lives here rather than in test/sim/, whose tests belong to the
 * `sim` project: this one needs no root and no image, so it runs in `main`.)
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Security } from '../../src/security';
import { renderUserData } from '../../src/cloud-init';
import { SchedulerClient, waitForScheduler, waitForWorkers } from '../../src/dask';
import { DaskCommError } from '../../src/errors';
import { StandInBooter, STANDIN_WORKER_PORT, readLaunchInfo } from '../sim/standin';
import type { BootRequest, BootedVm } from '../fakes/core/state';

// A /24 of loopback of this file's own, away from the blocks other test files use (127.77-78, 127.80-207).
const NET = `127.241.${process.pid % 250}`;
const PORT = 20_000 + (process.pid % 20_000);

let booter: StandInBooter | undefined;
afterEach(async () => {
  await booter?.stopAll();
  booter = undefined;
});

function vm(id: string, octet: number, userData: Buffer, publicOctet?: number): BootRequest {
  return { id, userData, privateIp: `${NET}.${octet}`, publicIp: publicOctet === undefined ? undefined : `${NET}.${publicOctet}`, firewall: [] };
}

async function cluster(bootMs: number) {
  const security = await Security.temporary();
  const scheduler = renderUserData({ role: 'scheduler', security, schedulerPort: PORT, dashboardTlsPort: 8788, gzip: 'never' });
  const worker = renderUserData({ role: 'worker', security, schedulerAddress: `tls://${NET}.2:${PORT}`, nthreads: 3, gzip: 'auto', limitBytes: 3000 });
  booter = new StandInBooter({ bootMs });
  return { security, scheduler: scheduler.body, worker: worker.body };
}

describe('stand-in scheduler and workers', () => {
  it('reads role, port, TLS files and worker settings from the launch spec (gzip too)', async () => {
    const c = await cluster(0);
    const s = readLaunchInfo(c.scheduler);
    expect(s.role).toBe('scheduler');
    expect(s.port).toBe(PORT);
    expect(s.tls?.cert).toContain('BEGIN CERTIFICATE');
    expect(s.tls?.key).toContain('PRIVATE KEY');
    expect(c.worker[0]).toBe(0x1f); // gzipped: over the 3000-byte limit given
    const w = readLaunchInfo(c.worker);
    expect(w).toMatchObject({ role: 'worker', schedulerKey: `${NET}.2:${PORT}`, schedulerProtocol: 'tls', nthreads: 3 });
  });

  it('listens after the boot delay, with mutual TLS, and registers booted workers by address', async () => {
    const c = await cluster(300);
    const t0 = Date.now();
    await booter!.boot(vm('sched', 2, c.scheduler, 3));
    const vms: BootedVm[] = [];
    for (let i = 0; i < 3; i++) vms.push(await booter!.boot(vm(`w${i}`, 10 + i, c.worker)));
    // Nothing listens yet.
    const early = await SchedulerClient.connect(`tls://${NET}.3:${PORT}`, { security: c.security, timeoutMs: 2_000 }).catch((e: unknown) => e);
    expect(DaskCommError.isInstance(early) && early.code).toBe('E_CONNECT_REFUSED');

    // The public address (what a client dials) and the private one both answer.
    await waitForScheduler(`tls://${NET}.3:${PORT}`, { security: c.security, timeoutMs: 10_000, intervalMs: 50 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(280);
    const client = await SchedulerClient.connect(`tls://${NET}.2:${PORT}`, { security: c.security });
    try {
      const workers = await waitForWorkers(client, 3, { timeoutMs: 10_000, intervalMs: 50 });
      expect(workers.map((w) => w.address).sort()).toEqual([10, 11, 12].map((o) => `tls://${NET}.${o}:${STANDIN_WORKER_PORT}`));
      for (const w of workers) {
        expect(w).toMatchObject({ status: 'running', nthreads: 3, host: w.address.slice(6, -(String(STANDIN_WORKER_PORT).length + 1)) });
        expect(w.name).toBe(w.address); // no --name in a batch's user-data: Dask names a worker by its address
        expect(w.nanny).toMatch(/^tls:\/\//);
      }
      const id = await client.identity();
      expect(id.address).toBe(`tls://${NET}.2:${PORT}`);
      expect(id.type).toBe('Scheduler');

      // retire_workers removes exactly the workers asked for, and returns them.
      const gone = `tls://${NET}.10:${STANDIN_WORKER_PORT}`;
      const retired = await client.retireWorkers({ workers: [gone, 'tls://127.0.0.1:1'] });
      expect(Object.keys(retired)).toEqual([gone]);
      expect(Object.keys((await client.identity()).workers)).toHaveLength(2);

      // Deleting a worker VM unregisters it.
      await vms[1]!.stop();
      expect(Object.keys((await client.identity()).workers)).toEqual([`tls://${NET}.12:${STANDIN_WORKER_PORT}`]);

      // versions, broadcast of versions, unknown ops.
      expect(await client.versions()).toHaveProperty('packages.distributed');
      expect(Object.keys(await client.workerVersions())).toEqual([`tls://${NET}.12:${STANDIN_WORKER_PORT}`]);
      expect(await client.request('no_such_handler')).toBeNull();
      expect(await client.adaptiveTarget()).toBe(1);
    } finally {
      await client.close();
    }
    expect(booter!.errors).toEqual([]);
  });

  it('registers a worker that booted before its scheduler once the scheduler is up', async () => {
    const c = await cluster(0);
    booter = new StandInBooter({ bootMs: (_vm, role) => (role === 'scheduler' ? 400 : 10) });
    await booter.boot(vm('w', 20, c.worker));
    await booter.boot(vm('sched', 2, c.scheduler));
    await new Promise((r) => setTimeout(r, 100));
    expect(booter.registeredWorkers()).toBe(0);
    const client = await (async () => {
      await waitForScheduler(`tls://${NET}.2:${PORT}`, { security: c.security, timeoutMs: 10_000, intervalMs: 50 });
      return SchedulerClient.connect(`tls://${NET}.2:${PORT}`, { security: c.security });
    })();
    try {
      expect(await waitForWorkers(client, 1, { timeoutMs: 5_000, intervalMs: 20 })).toHaveLength(1);
    } finally {
      await client.close();
    }
  });

  it("refuses a client whose certificate is not of the cluster's CA", async () => {
    const c = await cluster(0);
    await booter!.boot(vm('sched', 2, c.scheduler));
    await waitForScheduler(`tls://${NET}.2:${PORT}`, { security: c.security, timeoutMs: 10_000, intervalMs: 20 });
    const other = await Security.temporary();
    // Trust the cluster's CA (so the server is accepted) but present a client certificate of another CA.
    const tls = { ...other.clientTlsOptions(), ca: c.security.clientTlsOptions().ca };
    const err = await SchedulerClient.connect(`tls://${NET}.2:${PORT}`, { tls, timeoutMs: 3_000 }).catch((e: unknown) => e);
    expect(DaskCommError.isInstance(err) && err.code).toBe('E_TLS_REFUSED');
  });

  it('refuses addresses that are not loopback', async () => {
    const c = await cluster(0);
    await expect(booter!.boot({ id: 'x', userData: c.scheduler, privateIp: '10.77.0.5', firewall: [] })).rejects.toThrow(/loopback/);
  });

  it('holds a thousand booting workers in a few MB and registers them all', async () => {
    const c = await cluster(0);
    booter = new StandInBooter({ bootMs: (_vm, role) => (role === 'scheduler' ? 0 : 200) });
    await booter.boot(vm('sched', 2, c.scheduler));
    global.gc?.();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 1000; i++) {
      await booter.boot({ id: `w${i}`, userData: c.worker, privateIp: `127.242.${Math.floor(i / 250)}.${(i % 250) + 2}`, firewall: [] });
    }
    const perVm = (process.memoryUsage().heapUsed - before) / 1000;
    expect(perVm).toBeLessThan(4_096);
    await waitForScheduler(`tls://${NET}.2:${PORT}`, { security: c.security, timeoutMs: 10_000, intervalMs: 20 });
    const client = await SchedulerClient.connect(`tls://${NET}.2:${PORT}`, { security: c.security });
    try {
      expect(await waitForWorkers(client, 1000, { timeoutMs: 10_000, intervalMs: 50 })).toHaveLength(1000);
    } finally {
      await client.close();
    }
    expect(booter.workerVms()).toBe(1000);
  });
});
