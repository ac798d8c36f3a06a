/**
 * The command-line column of the misspelled-option table (issue 11): misspelled flags, and the
 * table's config-file and DASK_CLOUD_* rows (test/helpers/misspelled-options.ts) run through
 * `dask-cloud start`. Each exits 2 (a usage error) with one line on stderr that names where the
 * mistake is and the suggestion, before anything is created.
 *
 * Network safety: every cloud run points --endpoint at a closed loopback port (127.0.0.1:9), so
 * even a start that got past validation could only dial loopback; no credentials are given.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ClusterKind } from '../../src/config';
import { optionSpecs } from '../../src/config/schema';
import { MISSPELLED_OPTIONS, type MisspelledOption } from '../helpers/misspelled-options';

const root = path.resolve(__dirname, '../..');
const tsx = path.join(root, 'node_modules/tsx/dist/cli.mjs');
const cli = path.join(root, 'src/cli.ts');

const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

/** A user with no cloud configuration: no config file, no credentials, nothing but what a row sets. */
const CLEAN: NodeJS.ProcessEnv = {
  PATH: process.env.PATH,
  HOME: '/nonexistent-home',
  XDG_CONFIG_HOME: '/nonexistent-config',
  DASK_CLOUD_CONFIG: '',
  DASK_CLOUD_HOME: process.env.DASK_CLOUD_HOME,
  AWS_EC2_METADATA_DISABLED: 'true',
  AWS_CONFIG_FILE: '/nonexistent/aws-config',
  AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/aws-credentials',
  GOOGLE_APPLICATION_CREDENTIALS: '',
};

/** Where each kind's start would go: a location that validates, and a closed loopback endpoint. */
const LOCATION: Record<ClusterKind, string[]> = {
  local: ['--provider', 'local'],
  gcp: ['--provider', 'gcp', '--project', 'test-project', '--zone', 'us-central1-a', '--endpoint', 'http://127.0.0.1:9'],
  ec2: ['--provider', 'ec2', '--region', 'eu-west-1', '--endpoint', 'http://127.0.0.1:9'],
  digitalocean: ['--provider', 'digitalocean', '--endpoint', 'http://127.0.0.1:9'],
};

function run(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [tsx, cli, ...args], { env: { ...CLEAN, ...env }, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** The flag of the option a row meant, from the option table. */
function flagOf(kind: ClusterKind, option: string): string {
  const spec = optionSpecs(kind).find((s) => s.name === option);
  if (spec?.flag === undefined) throw new Error(`${option} has no flag on ${kind}`);
  return `--${spec.flag}`;
}

/** The CLI's rows: misspelled flags, in the table's shape. `meant` is the option; its flag is the suggestion. */
const CLI_ROWS: readonly MisspelledOption[] = [
  { name: '--nworkers', kind: 'local', source: 'cli', args: ['--nworkers', '2'], message: ["unknown option '--nworkers'"], option: '--nworkers', meant: 'nWorkers' },
  { name: '--n_workers (dask-cloudprovider)', kind: 'gcp', source: 'cli', args: ['--n_workers', '2'], message: ["unknown option '--n_workers'"], option: '--n_workers', meant: 'nWorkers' },
  { name: '--n-workers', kind: 'ec2', source: 'cli', args: ['--n-workers', '2'], message: ["unknown option '--n-workers'"], option: '--n-workers', meant: 'nWorkers' },
  { name: '--machine_type on GCP', kind: 'gcp', source: 'cli', args: ['--machine_type', 'e2-standard-4'], message: ["unknown option '--machine_type'"], option: '--machine_type', meant: 'machineType' },
  { name: '--machine_type on EC2 is an instance type', kind: 'ec2', source: 'cli', args: ['--machine_type', 'm6i.large'], message: ["unknown option '--machine_type'"], option: '--machine_type', meant: 'instanceType' },
  { name: '--machine_type on DigitalOcean is a size', kind: 'digitalocean', source: 'cli', args: ['--machine_type', 's-2vcpu-4gb'], message: ["unknown option '--machine_type'"], option: '--machine_type', meant: 'size' },
  { name: "--machine-type (GCP's flag) on EC2", kind: 'ec2', source: 'cli', args: ['--machine-type', 'm6i.large'], message: ['--machine-type is for --provider gcp, not --provider ec2'], option: '--machine-type', meant: 'instanceType' },
  { name: '--worker_mem (dask-cloudprovider ECS)', kind: 'ec2', source: 'cli', args: ['--worker_mem', '4GiB'], message: ["unknown option '--worker_mem'"], option: '--worker_mem', meant: 'workerMemoryLimit' },
  { name: '--filesystem_size on GCP', kind: 'gcp', source: 'cli', args: ['--filesystem_size', '100'], message: ["unknown option '--filesystem_size'"], option: '--filesystem_size', meant: 'diskSizeGb' },
  { name: '--ngpus on EC2', kind: 'ec2', source: 'cli', args: ['--ngpus', '1'], message: ["unknown option '--ngpus'"], option: '--ngpus', meant: 'gpu' },
  { name: '--idle-timeout two hours', kind: 'local', source: 'cli', args: ['--idle-timeout', 'two hours'], message: ['--idle-timeout must be a Dask duration'], option: '--idle-timeout' },
  { name: "--workers ''", kind: 'local', source: 'cli', args: ['--workers', ''], message: ['--workers must be a whole number >= 0, got ""'], option: '--workers' },
];

describe('misspelled options through the CLI: exit 2, one line naming the place and the suggestion', () => {
  for (const row of CLI_ROWS) {
    it(`flag: ${row.name} (${row.kind})`, async () => {
      const r = await run(['start', ...LOCATION[row.kind], ...row.args!]);
      const lines = r.stderr.trim().split('\n');
      expect([r.code, lines.length], r.stderr).toEqual([2, 1]);
      expect(lines[0]).toMatch(/^dask-cloud start: /);
      for (const m of row.message) expect(lines[0]).toMatch(typeof m === 'string' ? new RegExp(m.replace(/[$^.*+?()[\]{}|\\]/g, '\\$&')) : m);
      if (row.meant !== undefined) expect(lines[0]).toContain(`(Did you mean ${flagOf(row.kind, row.meant)}?)`);
      expect(r.stdout).toBe('');
      expect(r.stderr).not.toMatch(/starting /);
    });
  }

  // The table's rows for the config file and the environment, through `dask-cloud start`: the
  // library's message and suggestion reach the user unchanged (they name the file or variable).
  for (const row of MISSPELLED_OPTIONS.filter((r) => r.source === 'file' || r.source === 'env')) {
    it(`${row.source}: ${row.name} (${row.kind})`, async () => {
      let env: NodeJS.ProcessEnv = { ...row.env };
      if (row.source === 'file') {
        const dir = await mkdtemp(path.join(os.tmpdir(), 'dc-cli-options-'));
        dirs.push(dir);
        const file = path.join(dir, 'config.yaml');
        await writeFile(file, row.file!);
        env = { DASK_CLOUD_CONFIG: file };
      }
      const r = await run(['start', ...LOCATION[row.kind]], env);
      const lines = r.stderr.trim().split('\n').filter((l) => !/NodeVersionSupportWarning|AWS SDK|node >=22|upgrade|a\.co\/|trace-warnings|versions published|To continue|More information/.test(l));
      expect([r.code, lines.length], r.stderr).toEqual([2, 1]);
      expect(lines[0]).toMatch(/^dask-cloud start: .*\[E_INVALID_OPTION\]$/);
      for (const m of row.message) expect(lines[0]).toMatch(typeof m === 'string' ? new RegExp(m.replace(/[$^.*+?()[\]{}|\\]/g, '\\$&')) : m);
      if (row.suggestion !== undefined) expect(lines[0]).toContain(row.suggestion);
      expect(r.stderr).not.toMatch(/starting /);
    });
  }
});
