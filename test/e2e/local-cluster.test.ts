/**
 * LocalCluster against real Dask: lifecycle, computation from a Python client that only gets the
 * written config, scaling through retire_workers, and clean rollback when start fails.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { inspect } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../providers/local';
import { ClusterStartError, ClusterStateError, DaskCloudError, LocalRuntimeError, ValidationError } from '../../src/errors';
import type { ClusterEvent } from '../../src/cluster/events';
import { eventually } from '../helpers/eventually';
import { TEST_CLIENT, have, pythonWithDask, realDask } from '../helpers/prereq';
import { pythonWithConfig } from '../helpers/python';
import { pidExists } from '../sim/exec';

const enabled = have(realDask());
const opened: LocalCluster[] = [];
const dirs: string[] = [];

afterAll(async () => {
  await Promise.all(opened.map((c) => c.close()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

function track(c: LocalCluster): LocalCluster {
  opened.push(c);
  return c;
}

async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), 'dc-local-test-'));
  dirs.push(d);
  return d;
}

/** Processes whose command line mentions the cluster id (workers carry it in --name). */
function processesOf(clusterId: string): string[] {
  try {
    return execFileSync('pgrep', ['-f', clusterId], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

describe.runIf(enabled)('LocalCluster with real Dask', () => {
  it('starts 2 workers over mutual TLS, a Python client computes with only the written config, close leaves nothing', async () => {
    const events: ClusterEvent[] = [];
    const cluster = track(new LocalCluster({ nWorkers: 2, onEvent: (e) => events.push(e) }));
    expect(cluster.state).toBe('new');
    await cluster.start();
    expect(cluster.state).toBe('running');
    expect(cluster.schedulerAddress).toMatch(/^tls:\/\/127\.0\.0\.1:\d+$/);
    expect(await cluster.workers()).toHaveLength(2);
    const pids = cluster.pids();
    expect(pids).toHaveLength(3);

    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    expect((await stat(path.join(dir, 'client.key'))).mode & 0o777).toBe(0o600);
    const out = await pythonWithConfig(
      dir,
      "from distributed import Client\nc = Client(timeout='20s')\nprint(sum(c.gather(c.map(lambda x: x * 2, range(10)))))\nc.close()",
    );
    expect(out.split('\n').pop()).toBe('90');

    const phases = events.filter((e) => e.type === 'phase-end').map((e) => (e as { phase: string }).phase);
    expect(phases).toEqual(['credentials', 'network', 'scheduler', 'ready', 'versions']);
    // The Dask this project runs against is the one the cluster ran, on both sides, with no mismatch.
    const v = cluster.versions!;
    expect(v.mismatches).toEqual([]);
    expect(v.scheduler.distributed).toBe(v.client!.distributed);
    expect(v.scheduler.distributed).toBe(execFileSync(pythonWithDask()!, ['-c', 'import distributed; print(distributed.__version__)'], { encoding: 'utf8' }).trim());
    if (TEST_CLIENT === 'trixie') expect([v.scheduler.distributed, v.scheduler.python?.slice(0, 5)]).toEqual(['2024.12.1', '3.13.']);
    for (const w of Object.values(v.workers)) expect(w.distributed).toBe(v.scheduler.distributed);

    // Each member's own output, by name.
    const logs = await cluster.getLogs();
    expect(Object.keys(logs)).toEqual(cluster.members.map((m) => m.name));
    const [sched, ...workers] = cluster.members;
    expect(logs[sched!.name]).toMatch(/Scheduler at:\s+tls:\/\/127\.0\.0\.1:/);
    for (const w of workers) expect(logs[w.name]).toMatch(/Registered to:\s+tls:\/\/127\.0\.0\.1:/);

    await cluster.close();
    await cluster.close(); // idempotent
    expect(cluster.state).toBe('closed');
    expect(pids.filter(pidExists)).toEqual([]);
    expect(processesOf(cluster.id)).toEqual([]);
  });

  it("the dashboard link: on the cluster, in its display, in the written config (Python's dashboard_link), and it serves the status page", async () => {
    for (const security of [undefined, false] as const) {
      await using cluster = track(await LocalCluster.start({ nWorkers: 1, security }));
      const link = cluster.dashboardLink!;
      expect(link).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/status$/);
      // Dask's dashboard server answers there: the status page, or, where Bokeh is not installed
      // (Debian packages no Bokeh that these Dask releases accept), Dask's page saying so.
      const page = await fetch(link, { signal: AbortSignal.timeout(20_000) });
      expect(page.status).toBe(200);
      expect(await page.text()).toMatch(/<title>[^<]*Dask[^<]*<\/title>|Dask needs bokeh/i);
      const dir = await tempDir();
      await cluster.writeClientConfig(dir);
      const out = await pythonWithConfig(dir, "from distributed import Client\nc = Client(timeout='20s')\nprint(c.dashboard_link)\nc.close()");
      expect(out.split('\n').pop()).toBe(link);
      // What a REPL and a notebook show.
      await cluster.waitForWorkers(1);
      const shown = inspect(cluster);
      expect(shown).toMatch(/^LocalCluster \{/);
      for (const part of [`id: '${cluster.id}'`, "state: 'running'", `scheduler: '${cluster.schedulerAddress}'`, "workers: '1 registered / 1 asked'", `dashboard: '${link}'`]) expect(shown).toContain(part);
      const html = cluster.toHTML();
      expect(html).toContain(`<a href="${link}" target="_blank" rel="noopener">${link}</a>`);
      expect(html).toContain('<td style="text-align:left">1 registered / 1 asked</td>');
      expect(cluster[Symbol.for('Jupyter.display') as unknown as keyof LocalCluster]).toBeTypeOf('function');
      expect(cluster.toJSON()).toMatchObject({ dashboardLink: link, workers: 1, workersRegistered: 1 });
    }
    // No dashboard, no link: the written config then has none either.
    await using bare = track(await LocalCluster.start({ nWorkers: 0, dashboardAddress: false }));
    expect(bare.dashboardLink).toBeUndefined();
    expect(inspect(bare)).not.toContain('dashboard');
  });

  it('works with security: false over plain tcp', async () => {
    await using cluster = track(await LocalCluster.start({ nWorkers: 1, security: false }));
    expect(cluster.schedulerAddress).toMatch(/^tcp:\/\//);
    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    const out = await pythonWithConfig(dir, "from distributed import Client\nc = Client(timeout='20s')\nprint(c.submit(lambda: 41 + 1).result())\nc.close()");
    expect(out.split('\n').pop()).toBe('42');
  });

  it('scales up, then down through retire_workers, deleting only retired workers', async () => {
    const events: ClusterEvent[] = [];
    await using cluster = track(await LocalCluster.start({ nWorkers: 1, onEvent: (e) => events.push(e) }));
    await cluster.scale(3);
    await cluster.waitForWorkers(3, { timeoutMs: 60_000 });
    expect(await cluster.workers()).toHaveLength(3);
    const before = cluster.pids();
    await cluster.scale(1);
    const workers = await cluster.workers();
    expect(workers).toHaveLength(1);
    expect(workers[0]!.name).toBe(`${cluster.id}-worker-0`);
    const retired = events.find((e) => e.type === 'workers-retired') as Extract<ClusterEvent, { type: 'workers-retired' }>;
    expect(retired.retired.sort()).toEqual([`${cluster.id}-worker-1`, `${cluster.id}-worker-2`]);
    expect(retired.notRetired).toEqual([]);
    expect(before.filter(pidExists)).toHaveLength(2);
  });

  it('a worker that dies after start is reported as a member-failed event', async () => {
    const events: ClusterEvent[] = [];
    await using cluster = track(await LocalCluster.start({ nWorkers: 2, onEvent: (e) => events.push(e) }));
    const victim = cluster.members.find((m) => m.role === 'worker')!;
    process.kill(-Number(victim.id.replace('pid-', '')), 'SIGKILL');
    await eventually(() => events.some((e) => e.type === 'member-failed'), 'a member-failed event', 20_000);
    expect(events.find((e) => e.type === 'member-failed')).toMatchObject({ role: 'worker', name: victim.name, message: expect.stringMatching(/exited unexpectedly \(signal SIGKILL\)/) });
    // It no longer counts: scaling back to 2 replaces it.
    await cluster.scale(2);
    expect(cluster.members.filter((m) => m.role === 'worker').map((m) => m.name)).not.toContain(victim.name);
    await cluster.waitForWorkers(2, { timeoutMs: 60_000 });
  });

  it('a scheduler that dies after start breaks the cluster: adapt and scale refuse and say why, close leaves nothing', async () => {
    const events: ClusterEvent[] = [];
    const cluster = track(await LocalCluster.start({ nWorkers: 1, onEvent: (e) => events.push(e) }));
    const adaptive = cluster.adapt({ minimum: 1, maximum: 3, intervalMs: 200 });
    const pids = cluster.pids();
    const scheduler = cluster.members.find((m) => m.role === 'scheduler')!;
    process.kill(-Number(scheduler.id.replace('pid-', '')), 'SIGKILL');
    await eventually(() => cluster.state !== 'running', 'the cluster to leave running', 20_000);
    expect(cluster.state).toBe('broken');
    expect(events.filter((e) => e.type === 'member-failed')).toEqual([
      expect.objectContaining({ role: 'scheduler', name: scheduler.name, message: expect.stringMatching(/exited unexpectedly \(signal SIGKILL\)/) }),
    ]);
    // Adaptive scaling stopped by itself; nothing launches workers for a scheduler that is gone.
    await eventually(() => !adaptive.running, 'adaptive scaling to stop', 5_000);
    for (const attempt of [() => cluster.scale(2), async () => cluster.adapt({ maximum: 2 })]) {
      const err = await attempt().then(() => undefined, (e: unknown) => e);
      expect(ClusterStateError.isInstance(err), String(err)).toBe(true);
      expect((err as Error).message).toMatch(/cannot (scale|adapt) cluster dask-[0-9a-f]+: its scheduler is gone \(.*exited unexpectedly \(signal SIGKILL\).*\); close\(\) it and start a new cluster/s);
    }
    await cluster.close();
    expect(cluster.state).toBe('closed');
    expect(pids.filter(pidExists)).toEqual([]);
    expect(processesOf(cluster.id)).toEqual([]);
  });

  it('adapt() follows the scheduler: up under load, back down to the minimum when idle', async () => {
    await using cluster = track(await LocalCluster.start({ nWorkers: 1, workerNthreads: 1 }));
    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    const adaptive = cluster.adapt({ minimum: 1, maximum: 3, intervalMs: 300, waitCount: 2 });
    const workersOf = () => cluster.members.filter((m) => m.role === 'worker').length;
    // 24 one-second tasks: Dask's adaptive_target asks for more workers than the maximum.
    const load = pythonWithConfig(
      dir,
      "import time\nfrom distributed import Client\nc = Client(timeout='20s')\nfs = c.map(lambda i: time.sleep(1) or i, range(24))\nprint(sum(c.gather(fs)))\nc.close()",
    );
    let peak = 0;
    const until = async (cond: () => boolean, ms: number) => {
      const end = Date.now() + ms;
      for (;;) {
        peak = Math.max(peak, workersOf());
        if (cond() || Date.now() > end) return;
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await until(() => workersOf() === 3, 40_000);
    expect(peak).toBe(3);
    expect((await load).split('\n').pop()).toBe(String((23 * 24) / 2));
    await until(() => workersOf() === 1, 40_000);
    expect(workersOf()).toBe(1);
    await adaptive.stop();
    expect(adaptive.running).toBe(false);
    expect(() => cluster.adapt({ minimum: 3, maximum: 2 })).toThrow(/maximum must be at least minimum/);
    // An explicit scale() ends adaptive scaling, as in Dask.
    const again = cluster.adapt({ minimum: 1, maximum: 2 });
    await cluster.scale(1);
    expect(again.running).toBe(false);
  }, 120_000);

  it('a worker that cannot start fails start() with its output, and nothing is left behind', async () => {
    const cluster = track(new LocalCluster({ nWorkers: 2, workerOptions: ['--no-such-flag'] }));
    const err = await cluster.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(ClusterStartError.isInstance(err)).toBe(true);
    const e = err as ClusterStartError;
    expect(e.code).toBe('E_START_FAILED');
    expect(e.message).toContain('no-such-flag');
    expect(e.message).toMatch(/worker/);
    expect(e.message).toContain('Everything created for this cluster has been deleted');
    expect(cluster.state).toBe('failed');
    expect(cluster.pids()).toEqual([]);
    expect(processesOf(cluster.id)).toEqual([]);
    await cluster.close(); // still fine
  });

  it('a scheduler that cannot start fails during the scheduler phase with its output', async () => {
    const cluster = track(new LocalCluster({ nWorkers: 1, schedulerOptions: ['--bogus-option'] }));
    const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
    expect(err.code).toBe('E_START_FAILED');
    expect(err.details.phase).toBe('scheduler');
    expect(err.message).toContain('bogus-option');
    expect(processesOf(cluster.id)).toEqual([]);
  });

  it('abort during start rolls back and reports E_ABORTED', async () => {
    const controller = new AbortController();
    const cluster = track(
      new LocalCluster({
        nWorkers: 2,
        signal: controller.signal,
        onEvent: (e) => {
          if (e.type === 'member-launched' && e.role === 'worker') controller.abort();
        },
      }),
    );
    const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
    expect(err.code).toBe('E_ABORTED');
    expect(cluster.pids()).toEqual([]);
    expect(processesOf(cluster.id)).toEqual([]);
  });

  it('close() during start waits for the rollback and leaves nothing', async () => {
    const cluster = track(new LocalCluster({ nWorkers: 2 }));
    const starting = cluster.start().catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 300));
    await cluster.close();
    const result = await starting;
    expect(result === cluster || DaskCloudError.isInstance(result)).toBe(true);
    expect(cluster.state).toBe('closed');
    expect(processesOf(cluster.id)).toEqual([]);
  });
});

describe('LocalCluster input checks (before anything runs)', () => {
  it('rejects bad options with a ValidationError', () => {
    expect(() => new LocalCluster({ nWorkers: -1 })).toThrow(ValidationError);
    expect(() => new LocalCluster({ nWorkers: 1.5 })).toThrow(/nWorkers/);
    expect(() => new LocalCluster({ schedulerPort: 70000 })).toThrow(/schedulerPort/);
    expect(() => new LocalCluster({ env: { 'BAD NAME': 'x' } })).toThrow(/env/);
    expect(() => new LocalCluster({ security: 'yes' as unknown as boolean })).toThrow(/security/);
    expect(() => new LocalCluster({ name: 'Bad_Name' })).toThrow(/name/);
  });

  it('says how to install Dask when the interpreter cannot import distributed', async () => {
    const cluster = new LocalCluster({ nWorkers: 0, python: '/nonexistent/python3' });
    const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
    expect(err.code).toBe('E_START_FAILED');
    expect(LocalRuntimeError.isInstance(err.cause)).toBe(true);
    expect((err.cause as LocalRuntimeError).code).toBe('E_PYTHON_NOT_FOUND');
    expect(err.message).toMatch(/apt-get install python3-distributed|pip install distributed/);
  });

  it('refuses scale and schedulerAddress before start', async () => {
    const cluster = new LocalCluster();
    expect(() => cluster.schedulerAddress).toThrow(/not started/);
    await expect(cluster.scale(2)).rejects.toThrow(/cannot scale/);
  });
});
