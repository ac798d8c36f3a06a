/**
 * examples/notebook.ipynb, executed headless as a user's Jupyter would: Debian's
 * `jupyter nbconvert --execute` under tslab (a TypeScript kernel from npm, installed in its own
 * package test/notebook), in a throw-away project where `dask-cloud` is the built package
 * (test/notebook/project.ts). The executed notebook's outputs are then read cell by cell: the
 * cluster's display (text and HTML), the Python computation through the written client config,
 * the scale to 3 workers and the close.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupLocalClusters } from '../../providers/local';
import { STOP_GRACE_MS } from '../../providers/local/watchdog';
import { have, realDask, type Prereq } from '../helpers/prereq';
import { ensureBuilt, notebookPackage, root, tempProject, type TempProject } from '../notebook/project';

const NOTEBOOK = path.join(root, 'examples/notebook.ipynb');
const TSLAB_BIN = path.join(notebookPackage, 'node_modules/tslab/bin/tslab');

/**
 * The start deadlines the kernel's clusters get (through DASK_CLOUD_* variables, as a user's
 * configuration would set them). No cell waits longer than a whole start: each cell's timeout is
 * that, doubled for a loaded machine, and the whole run is bounded by the code cells' timeouts
 * plus the kernel's startup.
 */
const SCHEDULER_MS = 30_000;
const WORKERS_MS = 30_000;
const CELL_MS = 2 * (SCHEDULER_MS + WORKERS_MS);
/** nbclient's default kernel startup_timeout. */
const KERNEL_STARTUP_MS = 60_000;

interface Output {
  output_type: 'stream' | 'display_data' | 'execute_result' | 'error';
  name?: 'stdout' | 'stderr';
  text?: string | string[];
  data?: Record<string, string | string[]>;
  ename?: string;
  evalue?: string;
}
interface Cell {
  cell_type: 'code' | 'markdown';
  source: string | string[];
  execution_count?: number | null;
  outputs?: Output[];
  /** nbclient's record of the cell's run (tslab sends no execution count). */
  metadata?: { execution?: Record<string, string> };
}
interface Notebook {
  cells: Cell[];
  metadata: { kernelspec?: { name: string } };
}

const CODE_CELLS = (JSON.parse(readFileSync(NOTEBOOK, 'utf8')) as Notebook).cells.filter((c) => c.cell_type === 'code').length;
const RUN_MS = CODE_CELLS * CELL_MS + KERNEL_STARTUP_MS;

const joined = (t: string | string[] | undefined): string => (Array.isArray(t) ? t.join('') : (t ?? ''));

const nbconvert = (): Prereq => {
  let ok = false;
  try {
    execFileSync('jupyter', ['nbconvert', '--version'], { stdio: 'ignore', timeout: 30_000 });
    ok = true;
  } catch {
    ok = false;
  }
  return { ok, reason: "jupyter nbconvert is not installed; install it with `apt-get install -y --no-install-recommends jupyter-nbconvert` (Debian)" };
};

/** SIGKILLs every process whose command line contains `marker`. */
function killByCommandLine(marker: string): void {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (cmdline.includes(marker)) {
      try {
        process.kill(Number(entry), 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
}

describe.runIf(have(realDask()) && have(nbconvert()))('examples/notebook.ipynb under tslab', () => {
  let project: TempProject;

  beforeAll(async () => {
    // The kernel's package: installed from its lockfile when missing, so the test never skips for it.
    if (!existsSync(TSLAB_BIN)) {
      await promisify(execFile)('npm', ['ci', '--prefix', notebookPackage, '--no-audit', '--no-fund'], { cwd: root, timeout: 5 * 60_000 });
    }
    await ensureBuilt(5 * 60_000);
    // The project a user has after `npm install dask-cloud tslab`: tslab's packages (its
    // TypeScript and @types/node among them) beside dask-cloud.
    const links: Record<string, string> = {};
    const modules = path.join(notebookPackage, 'node_modules');
    for (const name of readdirSync(modules)) if (!name.startsWith('.')) links[name] = path.join(modules, name);
    project = await tempProject('dask-cloud-notebook-', links, { 'notebook.ipynb': await readFile(NOTEBOOK, 'utf8') });
  }, 10 * 60_000);

  afterAll(async () => {
    await project?.dispose();
  });

  it('is committed without outputs and names the tslab kernel', async () => {
    const nb = JSON.parse(await readFile(NOTEBOOK, 'utf8')) as Notebook;
    expect(nb.metadata.kernelspec?.name).toBe('tslab');
    for (const cell of nb.cells.filter((c) => c.cell_type === 'code')) {
      expect(cell.outputs).toEqual([]);
      expect(cell.execution_count).toBeNull();
    }
  });

  it('starts, shows, computes from Python, scales, and closes a LocalCluster', async () => {
    const jupyter = path.join(project.dir, 'jupyter');
    // The kernel is registered in this run's own Jupyter directories, never in the user's home.
    await mkdir(path.join(jupyter, 'data/kernels/tslab'), { recursive: true });
    await writeFile(
      path.join(jupyter, 'data/kernels/tslab/kernel.json'),
      // tslab through the project's node_modules, as `npx tslab install` registers it: the path
      // names this run's project, by which a kernel left behind is found (below).
      JSON.stringify({ argv: [process.execPath, path.join(project.dir, 'node_modules/tslab/bin/tslab'), 'kernel', '--config-path', '{connection_file}'], display_name: 'TypeScript', language: 'typescript' }),
    );
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      JUPYTER_PATH: path.join(jupyter, 'data'),
      JUPYTER_DATA_DIR: path.join(jupyter, 'data'),
      JUPYTER_CONFIG_DIR: path.join(jupyter, 'config'),
      JUPYTER_RUNTIME_DIR: path.join(jupyter, 'runtime'),
      DASK_CLOUD_SCHEDULER_TIMEOUT_MS: String(SCHEDULER_MS),
      DASK_CLOUD_WORKERS_TIMEOUT_MS: String(WORKERS_MS),
    };
    const started = Date.now();
    const run = spawn(
      'jupyter',
      ['nbconvert', '--to', 'notebook', '--execute', '--allow-errors', `--ExecutePreprocessor.timeout=${CELL_MS / 1000}`, '--ExecutePreprocessor.kernel_name=tslab', '--output-dir', path.join(project.dir, 'out'), '--output', 'executed', 'notebook.ipynb'],
      { cwd: project.dir, env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let log = '';
    run.stdout.on('data', (b: Buffer) => (log += b.toString()));
    run.stderr.on('data', (b: Buffer) => (log += b.toString()));
    let clusterId: string | undefined;
    try {
      const code = await new Promise<number | null | 'timeout'>((resolve) => {
        const timer = setTimeout(() => resolve('timeout'), RUN_MS);
        run.on('exit', (c) => {
          clearTimeout(timer);
          resolve(c);
        });
      });
      expect(code, `nbconvert:\n${log}`).toBe(0);
      const elapsed = Date.now() - started;

      const executed = JSON.parse(await readFile(path.join(project.dir, 'out/executed.ipynb'), 'utf8')) as Notebook;
      const cells = executed.cells.filter((c) => c.cell_type === 'code');
      expect(cells).toHaveLength(CODE_CELLS);
      // Every cell ran, and none failed or wrote to stderr (tslab reports type errors there).
      for (const cell of cells) {
        expect(cell.metadata?.execution?.['shell.execute_reply'], joined(cell.source)).toBeTypeOf('string');
        const bad = (cell.outputs ?? []).filter((o) => o.output_type === 'error' || o.name === 'stderr');
        expect(bad, joined(cell.source)).toEqual([]);
      }
      const cell = (marker: string): Output[] => {
        const found = cells.find((c) => joined(c.source).includes(marker));
        expect(found, `a code cell containing ${marker}`).toBeDefined();
        return found!.outputs ?? [];
      };
      const stdout = (outputs: Output[]): string => outputs.filter((o) => o.name === 'stdout').map((o) => joined(o.text)).join('');

      // The started cluster as the cell's last value: tslab prints it with util.inspect.
      const shown = stdout(cell('await cluster.start()'));
      clusterId = /id: '([^']+)'/.exec(shown)?.[1];
      expect(shown).toMatch(/^LocalCluster \{/);
      const address = /scheduler: '(tls:\/\/127\.0\.0\.1:\d+)'/.exec(shown)?.[1];
      expect(address, shown).toBeDefined();
      expect(shown).toContain("state: 'running'");
      expect(shown).toContain("workers: '2 registered / 2 asked'");

      // The HTML display: a table naming the same scheduler and workers.
      const html = cell('toHTML()').filter((o) => o.output_type === 'display_data').map((o) => joined(o.data?.['text/html']));
      expect(html).toHaveLength(1);
      expect(html[0]).toContain('<b>LocalCluster</b>');
      expect(html[0]).toContain(`<td style="text-align:left">${address}</td>`);
      expect(html[0]).toContain('2 registered / 2 asked');

      expect(stdout(cell('writeClientConfig'))).toBe('client configuration written\n');
      // Python reached the cluster through DASK_CONFIG alone, over TLS, and computed on it.
      expect(stdout(cell('findPython()'))).toBe(`2 workers at ${address}: sum(range(1000)) = 499500\n`);

      const scaled = stdout(cell('cluster.scale(3)'));
      expect(scaled).toContain("workers: '3 registered / 3 asked'");
      expect(scaled).toContain(`scheduler: '${address}'`);

      expect(stdout(cell('cluster.close()'))).toBe(`cluster ${clusterId} is closed\n`);
      // Closed by the notebook, not by the kernel's shutdown: nothing of it is left.
      const left = await cleanupLocalClusters({ clusterIds: [clusterId!], dryRun: true });
      expect(left.clusters.flatMap((c) => [...c.pids, ...c.dirs])).toEqual([]);
      // No key material in what a user would save.
      expect(JSON.stringify(executed)).not.toContain('PRIVATE KEY');
      console.log(`notebook: ${CODE_CELLS} code cells executed in ${elapsed} ms`);
    } finally {
      if (run.exitCode === null && run.signalCode === null) run.kill('SIGKILL');
      // A kernel left by a killed nbconvert (Jupyter starts it in a session of its own, out of
      // reach of a kill of nbconvert). Its clusters' launchers end with it.
      killByCommandLine(path.join(project.dir, 'node_modules/tslab/'));
      if (clusterId) await cleanupLocalClusters({ clusterIds: [clusterId] });
    }
  }, RUN_MS + STOP_GRACE_MS);
});
