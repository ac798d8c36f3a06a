/**
 * The ts-node REPL session the README shows, typed line by line into a real `ts-node -i`
 * (CommonJS, type-checked) in a throw-away project where `dask-cloud` is the built package
 * (test/notebook/project.ts): import, start with top-level await (the REPL prints the started
 * cluster through its util.inspect display), close, `.exit`.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupLocalClusters } from '../../providers/local';
import { have, realDask } from '../helpers/prereq';
import { ensureBuilt, root, tempProject, type TempProject } from '../notebook/project';

/**
 * The start deadlines the session's cluster gets (through DASK_CLOUD_* variables). No step takes
 * longer than a whole start; each step's wait (ts-node's own start and type-checking included)
 * is that, doubled for a loaded machine.
 */
const SCHEDULER_MS = 30_000;
const WORKERS_MS = 30_000;
const STEP_MS = 2 * (SCHEDULER_MS + WORKERS_MS);

/** The session, as documented: each line is sent once the REPL prompts again. */
const SESSION = [
  "import { LocalCluster } from 'dask-cloud'",
  'const cluster = new LocalCluster({ nWorkers: 1 })',
  'await cluster.start()',
  'await cluster.close()',
  'cluster.state',
  '.exit',
];
const PROMPT = '> ';

describe.runIf(have(realDask()))('a ts-node REPL session', () => {
  let project: TempProject;

  beforeAll(async () => {
    await ensureBuilt(5 * 60_000);
    // A CommonJS TypeScript project as `npm install dask-cloud` and `npm install -D ts-node
    // typescript @types/node` leave it (those three linked from the root's node_modules).
    const modules = path.join(root, 'node_modules');
    project = await tempProject(
      'dask-cloud-repl-',
      { typescript: path.join(modules, 'typescript'), 'ts-node': path.join(modules, 'ts-node'), '@types/node': path.join(modules, '@types/node') },
      {
        'package.json': `${JSON.stringify({ name: 'repl-session', private: true })}\n`,
        'tsconfig.json': `${JSON.stringify({ compilerOptions: { module: 'commonjs', target: 'es2022', strict: true } })}\n`,
      },
    );
  }, 10 * 60_000);

  afterAll(async () => {
    await project?.dispose();
  });

  it('imports, starts with top-level await, shows the cluster, closes and exits', async () => {
    // -i: stdin is a pipe here, and without it ts-node would run stdin as a script (in a
    // terminal, plain `npx ts-node` opens the REPL).
    const repl = spawn(path.join(root, 'node_modules/.bin/ts-node'), ['-i'], {
      cwd: project.dir,
      env: {
        ...process.env,
        // The REPL's history goes to the project, not to ~/.ts_node_repl_history.
        TS_NODE_HISTORY: path.join(project.dir, '.ts_node_repl_history'),
        DASK_CLOUD_SCHEDULER_TIMEOUT_MS: String(SCHEDULER_MS),
        DASK_CLOUD_WORKERS_TIMEOUT_MS: String(WORKERS_MS),
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    repl.stdout.on('data', (b: Buffer) => (out += b.toString()));
    repl.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((r) => repl.on('exit', (code) => r(code)));

    /** Waits (at most STEP_MS) for the REPL to prompt again after `from`; returns what it printed before the prompt. */
    const prompted = async (from: number): Promise<string> => {
      const deadline = Date.now() + STEP_MS;
      while (!out.slice(from).endsWith(PROMPT)) {
        if (repl.exitCode !== null || Date.now() > deadline) throw new Error(`no prompt within ${STEP_MS} ms; the session so far:\n${out}\nstderr:\n${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return out.slice(from, out.length - PROMPT.length);
    };

    const replies: string[] = [];
    let clusterId: string | undefined;
    const started = Date.now();
    try {
      await prompted(0);
      for (const line of SESSION.slice(0, -1)) {
        const from = out.length;
        repl.stdin.write(`${line}\n`);
        replies.push(await prompted(from));
        if (line === 'await cluster.start()') clusterId = /id: '([^']+)'/.exec(replies.at(-1)!)?.[1];
      }
      repl.stdin.write(`${SESSION.at(-1)}\n`);
      const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), STEP_MS).unref())]);
      expect(code, `${out}\n${err}`).toBe(0);
      const elapsed = Date.now() - started;

      const [imported, constructed, start, close, state] = replies;
      // ts-node type-checks each line: an error would be printed instead of `undefined`.
      expect(imported).toBe('undefined\n');
      expect(constructed).toBe('undefined\n');
      // start() resolves to the cluster, which the REPL prints through its util.inspect display.
      expect(start).toMatch(/^LocalCluster \{\n/);
      expect(start).toContain(`id: '${clusterId}'`);
      expect(start).toContain("state: 'running'");
      expect(start).toMatch(/scheduler: 'tls:\/\/127\.0\.0\.1:\d+'/);
      expect(start).toContain("workers: '1 registered / 1 asked'");
      expect(start).toMatch(/dashboard: 'http:\/\/127\.0\.0\.1:\d+\/status'/);
      expect(close).toBe('undefined\n');
      expect(state).toBe("'closed'\n");
      expect(err).toBe('');
      const left = await cleanupLocalClusters({ clusterIds: [clusterId!], dryRun: true });
      expect(left.clusters.flatMap((c) => [...c.pids, ...c.dirs])).toEqual([]);
      console.log(`ts-node REPL session: ${elapsed} ms`);
    } finally {
      if (repl.exitCode === null && repl.signalCode === null) repl.kill('SIGKILL');
      if (clusterId) await cleanupLocalClusters({ clusterIds: [clusterId] });
    }
  }, (SESSION.length + 1) * STEP_MS);
});
