/**
 * The package as a user installs it: `npm pack`, then `npm install <tarball>` into a fresh
 * project. `attw` (are-the-types-wrong) checks the tarball's ESM/CommonJS type entries first.
 * - With the root package alone: the install stays within 30 MB and holds no cloud SDK; a
 *   LocalCluster script type-checks under strict settings (no `skipLibCheck`, only `@types/node`
 *   beside it) and runs; `dask-cloud/gcp` refuses to load with one typed error naming the
 *   install line.
 * - With google-auth-library installed too (GCP's only peer: the provider speaks Compute's REST
 *   API itself): a GCP script runs against the GCP fake, the package's GCP declarations name no
 *   Google SDK, and the LocalCluster script still type-checks without loading a single cloud SDK
 *   declaration.
 *
 * Network safety: the fake and its stand-in VMs are on loopback blocks (test/providers/gcp/helpers).
 * The installs reach the npm registry only for what npm's cache lacks.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packPackage, run } from '../helpers/packed';
import { StandInBooter } from '../sim/standin';
import { loopbackBlocks } from '../providers/gcp/helpers';
import { FakeGcp } from '../fakes/gcp';

const root = path.resolve(__dirname, '../..');
const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
const pkg = require('../../package.json') as { devDependencies: Record<string, string>; peerDependencies: Record<string, string> };
/** The goal for a LocalCluster-only install. */
const MAX_INSTALL_BYTES = 30 * 1024 * 1024;
const SDK_PATH = /node_modules\/(@google-cloud|@aws-sdk|@smithy|dots-wrapper|google-gax|googleapis|google-auth-library)\//;

let project: string;
let tarball: string;
let packDir: string;
afterAll(async () => {
  for (const d of [project, packDir]) if (d) await rm(d, { recursive: true, force: true });
});
const npm = (args: string[]) => run('npm', [...args, '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], { cwd: project, timeout: 300_000 });
const node = (args: string[]) => run(process.execPath, args, { cwd: project, timeout: 120_000, encoding: 'utf8' });

/** Bytes on disk under `dir` (as `du` counts them). */
async function diskUsage(dir: string): Promise<number> {
  const { stdout } = await run('du', ['-sk', dir]);
  return Number(stdout.split('\t')[0]) * 1024;
}

const LOCAL_SCRIPT = `import { LocalCluster, Security, DaskCloudError, type ClusterEvent } from 'dask-cloud';

const phases: string[] = [];
const cluster = new LocalCluster({ nWorkers: 1, onEvent: (e: ClusterEvent) => { if (e.type === 'phase-end') phases.push(e.phase); } });
try {
  await cluster.start();
  const address: string = cluster.schedulerAddress;
  const workers = (await cluster.workers()).length;
  const secure = cluster.security instanceof Security;
  console.log(JSON.stringify({ address, workers, secure, phases: phases.length > 0, typed: typeof DaskCloudError.isInstance }));
} finally {
  await cluster.close();
}
`;

/** Compiles local.mts strictly (ESM, NodeNext) and lists the declaration files tsc read. */
async function typeCheckLocal(): Promise<string[]> {
  const { stdout } = await run(
    process.execPath,
    [tsc, '--strict', '--skipLibCheck', 'false', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', '--typeRoots', path.join(project, 'node_modules/@types'), '--outDir', 'out', '--listFiles', 'local.mts'],
    { cwd: project, timeout: 180_000, encoding: 'utf8' },
  ).catch((err: { stdout?: string; message: string }) => {
    throw new Error(`tsc failed on a LocalCluster-only script:\n${err.stdout ?? err.message}`);
  });
  return stdout.split('\n').filter((l) => l.endsWith('.d.ts') || l.endsWith('.d.mts') || l.endsWith('.d.cts'));
}

describe('the packed package, installed into a fresh project', () => {
  beforeAll(async () => {
    ({ tarball, dir: packDir } = await packPackage());
    project = await mkdtemp(path.join(os.tmpdir(), 'dc-install-'));
    await writeFile(path.join(project, 'package.json'), JSON.stringify({ name: 'fresh-project', private: true, version: '1.0.0' }));
    await npm(['install', tarball]);
  }, 600_000);

  it('attw finds no problem in the tarball: ESM and CommonJS types match their entries, for every export', async () => {
    const { stdout } = await run(path.join(root, 'node_modules/.bin/attw'), [tarball, '--format', 'json'], { cwd: project, timeout: 180_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' });
    const report = JSON.parse(stdout) as { problems: Record<string, unknown>; analysis: { entrypoints: Record<string, unknown> } };
    expect(Object.keys(report.analysis.entrypoints)).toEqual(expect.arrayContaining(['.', './gcp', './ec2', './digitalocean']));
    expect(report.problems).toEqual({});
  }, 240_000);

  it('the root package alone installs within 30 MB, with no cloud SDK', async () => {
    const bytes = await diskUsage(path.join(project, 'node_modules'));
    console.log(`[install] dask-cloud alone: ${(bytes / 1024 / 1024).toFixed(1)} MB in node_modules`);
    expect(bytes).toBeLessThanOrEqual(MAX_INSTALL_BYTES);
    const { stdout } = await npm(['ls', '--all', '--parseable']);
    expect(stdout.split('\n').filter((l) => SDK_PATH.test(`${l}/`))).toEqual([]);
  });

  it('a LocalCluster script type-checks strictly with only @types/node beside it, and runs', async () => {
    // The user's own @types/node, added after the size was measured: every TypeScript project on Node has it.
    await npm(['install', '--save-dev', `@types/node@${pkg.devDependencies['@types/node']}`]);
    await writeFile(path.join(project, 'local.mts'), LOCAL_SCRIPT);
    const declarations = await typeCheckLocal();
    expect(declarations.some((f) => f.includes('/node_modules/dask-cloud/dist/'))).toBe(true);
    expect(declarations.filter((f) => SDK_PATH.test(f) || f.includes('@types/debug'))).toEqual([]);
    const out = JSON.parse((await node(['out/local.mjs'])).stdout.trim()) as Record<string, unknown>;
    expect(out).toMatchObject({ workers: 1, secure: true, phases: true, typed: 'function' });
    expect(out.address).toMatch(/^tls:\/\/127\.0\.0\.1:\d+$/);
  }, 180_000);

  it("the README's tour runs as it is in plain Node 20", async () => {
    const readme = await readFile(path.join(root, 'README.md'), 'utf8');
    const tour = /```js\n(\/\/ tour\.mjs\n[\s\S]*?)```/.exec(readme)?.[1];
    expect(tour, 'README.md has a tour.mjs sample').toBeDefined();
    await writeFile(path.join(project, 'tour.mjs'), tour!);
    const lines = (await node(['tour.mjs'])).stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^tls:\/\/127\.0\.0\.1:\d+$/);
    expect(lines.slice(1, 3)).toEqual(['45', '1']);
    expect(lines[3]).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/status$/);
  }, 180_000);

  it('dask-cloud/gcp without google-auth-library is one typed error naming the install line, from import and require', async () => {
    const probe = (load: string) => `
      const { DaskCloudError, MissingDependencyError } = require('dask-cloud');
      ${load}.then(() => console.log('{"loaded":true}'), (e) => console.log(JSON.stringify({
        name: e.name, code: e.code, message: e.message, details: e.details,
        typed: MissingDependencyError.isInstance(e) && DaskCloudError.isInstance(e),
      })));`;
    for (const load of ["import('dask-cloud/gcp')", "Promise.resolve().then(() => require('dask-cloud/gcp'))"]) {
      const out = JSON.parse((await node(['-e', probe(load)])).stdout.trim()) as Record<string, unknown>;
      expect(out, load).toEqual({
        name: 'MissingDependencyError',
        code: 'E_MISSING_DEPENDENCY',
        message: `GCPCluster (dask-cloud/gcp) needs google-auth-library, an optional peer dependency that is not installed: run \`npm install google-auth-library@${pkg.peerDependencies['google-auth-library']}\``,
        details: { package: 'google-auth-library', install: `npm install google-auth-library@${pkg.peerDependencies['google-auth-library']}` },
        typed: true,
      });
    }
    // The installed command says the same, as its one line of error.
    const cli = await run(path.join(project, 'node_modules/.bin/dask-cloud'), ['ls', '--provider', 'gcp', '--project', 'p'], { cwd: project, timeout: 60_000, encoding: 'utf8' }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    );
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain(`run \`npm install google-auth-library@${pkg.peerDependencies['google-auth-library']}\``);
    expect(cli.stderr).toContain('[E_MISSING_DEPENDENCY]');
    for (const [entry, sdk] of [['ec2', '@aws-sdk/client-ec2'], ['digitalocean', 'dots-wrapper']] as const) {
      const out = JSON.parse((await node(['-e', probe(`import('dask-cloud/${entry}')`)])).stdout.trim()) as Record<string, unknown>;
      expect(out).toMatchObject({ code: 'E_MISSING_DEPENDENCY', details: { install: `npm install ${sdk}@${pkg.peerDependencies[sdk]}` } });
    }
  });

  describe('with google-auth-library installed', () => {
    let fake: FakeGcp | undefined;
    const booter = new StandInBooter({ bootMs: 200 });
    afterAll(async () => {
      await fake?.stop();
      await booter.stopAll();
    });

    it('a GCP script starts and closes a cluster on the fake, and the LocalCluster script still loads no SDK types', async () => {
      await npm(['install', `google-auth-library@${pkg.devDependencies['google-auth-library']}`]);
      fake = await FakeGcp.start({ ...loopbackBlocks(), booter });
      const o = fake.clientOptions();
      await writeFile(
        path.join(project, 'gcp.mjs'),
        `import { GCPCluster } from 'dask-cloud/gcp';
import { OAuth2Client } from 'google-auth-library';
const authClient = new OAuth2Client();
authClient.setCredentials({ access_token: 'fake-gcp-token', expiry_date: Date.now() + 3_600_000 });
const cluster = new GCPCluster({
  projectId: ${JSON.stringify(fake.project)}, zone: 'us-central1-a', nWorkers: 2,
  endpoint: { apiEndpoint: ${JSON.stringify(o.apiEndpoint)}, port: ${o.port}, protocol: 'http' }, authClient,
  dockerImage: 'ghcr.io/dask/dask:2024.12.1-py3.12', closeOnSignals: false, saveState: false,
});
try {
  await cluster.start();
  console.log(JSON.stringify({ address: cluster.schedulerAddress, workers: (await cluster.workers()).length }));
} finally {
  await cluster.close();
}
`,
      );
      const out = JSON.parse((await node(['gcp.mjs'])).stdout.trim()) as { address: string; workers: number };
      expect(out.workers).toBe(2);
      expect(out.address).toMatch(/^tls:\/\/127\.\d+\.\d+\.\d+:8786$/);
      expect(fake.leaked()).toEqual({});
      expect(booter.errors).toEqual([]);
      const declarations = await typeCheckLocal();
      expect(declarations.filter((f) => SDK_PATH.test(f))).toEqual([]);
      // The GCP entry's declarations are self-contained: no Google SDK types for a user to install.
      const gcpTypes = await readFile(path.join(project, 'node_modules/dask-cloud/dist/types/providers/gcp/options.d.ts'), 'utf8');
      expect(gcpTypes).not.toMatch(/@google-cloud|google-gax/);
      expect(gcpTypes).toMatch(/getRequestHeaders\(url\?: string\)/);
      console.log(`[install] with google-auth-library: ${((await diskUsage(path.join(project, 'node_modules'))) / 1024 / 1024).toFixed(1)} MB in node_modules`);
    }, 300_000);
  });
});
