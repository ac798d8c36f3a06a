/**
 * What `idleTimeout` really does, with real Dask: the scheduler counts only tasks (queued,
 * running or changing state) as activity. A task running longer than the timeout keeps it up;
 * once the last task has ended it exits after the timeout, even though a client is still
 * connected. (Dask checks every quarter of the timeout, so it exits between 1 and about 1.5
 * timeouts after the last task.)
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../providers/local';
import { eventually } from '../helpers/eventually';
import { clientEnv } from '../helpers/python';
import { have, pythonWithDask, realDask } from '../helpers/prereq';

const IDLE_S = 3;
/** The task outlasts the timeout three times over. */
const TASK_S = 3 * IDLE_S;

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe.runIf(have(realDask()))('idleTimeout: Dask counts tasks, not connected clients', () => {
  it(`a ${TASK_S} s task keeps a scheduler with idleTimeout ${IDLE_S} s up; after it, the scheduler exits while the client stays connected`, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dc-idle-'));
    dirs.push(dir);
    // The client imports Dask first (seconds on a loaded machine), then waits for a line on stdin:
    // the scheduler's idle clock starts at its own start, so the client must be quick once told.
    // It submits one long task, says when it has its result, then stays connected without
    // submitting anything. Dask reads its config at import: the client reads it again once told.
    const code = [
      'import sys, time, dask',
      'from distributed import Client',
      "print('imported', flush=True)",
      'sys.stdin.readline()',
      // Dask read its config at import, before the cluster's was written: read it again.
      'dask.config.refresh()',
      "c = Client(timeout='30s')",
      `f = c.submit(time.sleep, ${TASK_S}, pure=False)`,
      "print('submitted', flush=True)",
      'print(f.result() is None, flush=True)',
      'del f',
      "print('done', flush=True)",
      'time.sleep(600)',
    ].join('\n');
    const client = spawn(pythonWithDask()!, ['-c', code], { env: clientEnv(dir), stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let doneAt: number | undefined;
    client.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (doneAt === undefined && /^done$/m.test(out)) doneAt = Date.now();
    });
    client.stderr.on('data', (b: Buffer) => (err += b.toString()));
    let schedulerGoneAt: number | undefined;
    let cluster: LocalCluster | undefined;
    try {
      await eventually(() => out.includes('imported') || client.exitCode !== null, 'the client to import Dask', 120_000);
      expect(out, err).toContain('imported');
      // No worker yet: the scheduler is up at once, and the task waits in its queue (a queued task
      // counts as activity too), so a loaded machine's slow worker start cannot idle it.
      cluster = await LocalCluster.start({
        nWorkers: 0,
        idleTimeout: `${IDLE_S}s`,
        closeOnSignals: false,
        onEvent: (e) => {
          if (e.type === 'member-failed' && e.role === 'scheduler') schedulerGoneAt ??= Date.now();
        },
      });
      await cluster.writeClientConfig(dir);
      client.stdin.write('go\n');
      await eventually(() => out.includes('submitted') || client.exitCode !== null, 'the task to be submitted', 60_000);
      expect(out, err).toContain('submitted');
      await cluster.scale(1);
      // The task took longer than the timeout and completed: the scheduler stayed up for it.
      await eventually(() => doneAt !== undefined || client.exitCode !== null, 'the task to finish', TASK_S * 1000 * 10);
      expect(out, err).toBe('imported\nsubmitted\nTrue\ndone\n');
      expect(schedulerGoneAt, 'the scheduler stayed up while the task ran').toBeUndefined();
      // Then, idle, it exits although the client is still connected.
      await eventually(() => schedulerGoneAt !== undefined, 'the idle scheduler to exit', IDLE_S * 1000 * 20);
      expect(client.exitCode, 'the client was still connected').toBeNull();
      expect(schedulerGoneAt! - doneAt!).toBeGreaterThanOrEqual(IDLE_S * 1000 * 0.9);
      expect(cluster.state).toBe('broken');
    } finally {
      client.kill('SIGKILL');
      await cluster?.close();
    }
  }, 240_000);
});
