/**
 * A script that starts a LocalCluster and ends without close() must not hang: the cluster's
 * processes and pipes do not hold Node's event loop, so the process runs out of work, the
 * close-at-exit (beforeExit, src/cluster/signals.ts) closes the cluster with a warning, and the
 * process exits by itself with nothing left running.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupLocalClusters } from '../../providers/local';
import { STOP_GRACE_MS } from '../../providers/local/watchdog';
import { have, realDask } from '../helpers/prereq';
import { spawnTsx } from '../helpers/spawn';
import { pidAlive } from '../sim/exec';

const root = path.resolve(__dirname, '../..');
/** The start deadlines the script gives its cluster: the wait for its first line follows from them. */
const SCHEDULER_MS = 30_000;
const WORKERS_MS = 30_000;

/**
 * The script under test, written to a temporary file (it imports the library by absolute path).
 * It prints one JSON line once the cluster runs, then its last statement has run: no close(), no
 * timer, nothing pending. Its onEvent tells the test what the close at exit did.
 */
const script = (libPath: string): string => `
import { LocalCluster } from ${JSON.stringify(libPath)};

(async () => {
  const cluster = await LocalCluster.start({
    nWorkers: 2,
    schedulerTimeoutMs: ${SCHEDULER_MS},
    workersTimeoutMs: ${WORKERS_MS},
    onEvent: (e) => {
      if (e.type === 'phase-end' && e.phase === 'close') process.stdout.write(JSON.stringify({ closeMs: e.durationMs }) + '\\n');
      if (e.type === 'closed') process.stdout.write('closed\\n');
    },
  });
  // The processes' output is still read while this script runs (the pipes are only unref'd).
  const logs = await cluster.getLogs();
  process.stdout.write(JSON.stringify({
    clusterId: cluster.id,
    pids: cluster.pids(),
    members: cluster.members.map((m) => m.id),
    stateDir: cluster.stateDir,
    schedulerLog: logs[cluster.members[0].name].includes('Scheduler at'),
  }) + '\\n');
  // ...and forgets \`await cluster.close()\`.
})();
`;

describe.runIf(have(realDask()))('a script that leaves a LocalCluster open', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dask-cloud-left-open-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('exits by itself: the cluster is closed at exit with a warning, and no process is left', async () => {
    const file = path.join(dir, 'left-open.ts');
    await writeFile(file, script(path.join(root, 'providers/local')));
    const run = spawnTsx(file);
    let started: { clusterId: string; pids: number[]; members: string[]; stateDir: string; schedulerLog: boolean } | undefined;
    try {
      // Both start phases at their deadline, plus the same again for tsx and Python imports on a loaded machine.
      await run.until(/^\{"clusterId".*\}$/m, 2 * (SCHEDULER_MS + WORKERS_MS));
      started = JSON.parse(run.stdout().split('\n').find((l) => l.startsWith('{"clusterId"'))!);
      expect(started!.pids).toHaveLength(3);
      expect(started!.members).toEqual(started!.pids.map((p) => `pid-${p}`));
      expect(started!.schedulerLog).toBe(true);
      expect(existsSync(started!.stateDir)).toBe(true);

      // The close stops every member in parallel, each within STOP_GRACE_MS (SIGTERM, then
      // SIGKILL): the process must be gone one grace period after its last statement, plus as
      // much again for Node and Python to wind down on a loaded machine. Before the fix it never
      // exits: any bound tells the two apart.
      const t0 = Date.now();
      const code = await run.exitWithin(2 * STOP_GRACE_MS);
      const exitMs = Date.now() - t0;
      expect(code, `did not exit by itself within ${2 * STOP_GRACE_MS} ms:\n${run.output()}`).toBe(0);

      // A real close(), not the exit handler's kill: it ran to its end and reported its duration.
      const lines = run.stdout().split('\n');
      expect(lines).toContain('closed');
      // (Its duration is not compared with exitMs: the close can begin before this test has read
      // the line that started that clock.)
      const closeLine = lines.find((l) => l.startsWith('{"closeMs"'));
      expect(closeLine, 'the close at exit reported its end').toBeDefined();
      const closeMs = (JSON.parse(closeLine!) as { closeMs: number }).closeMs;
      expect(run.stderr()).toContain(`cluster ${started!.clusterId} was still open when the process ran out of work: closing it now`);
      expect(run.stderr()).toContain('DASK_CLOUD_UNCLOSED');

      // Nothing left: not the launchers the cluster reported, nor any process carrying the
      // cluster's marker (nannies' workers included), nor its key or state directories.
      expect(started!.pids.filter(pidAlive)).toEqual([]);
      const left = await cleanupLocalClusters({ clusterIds: [started!.clusterId], dryRun: true });
      expect(left.clusters.flatMap((c) => [...c.pids, ...c.dirs])).toEqual([]);
      expect(existsSync(started!.stateDir)).toBe(false);
      console.log(`left-open script: exited ${exitMs} ms after its last statement (close took ${closeMs} ms)`);
    } finally {
      if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
      // Whatever happened, no Dask process of this test outlives it.
      if (started) await cleanupLocalClusters({ clusterIds: [started.clusterId] });
    }
  }, 4 * (SCHEDULER_MS + WORKERS_MS));
});
