/**
 * The dask-cloud command line: user-data without keys, a cleanup sweep against a fake cloud,
 * a local cluster that runs until interrupted and then leaves nothing behind, and `start` on a
 * (fake) DigitalOcean account whose Droplets run their Dask processes locally.
 */
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FakeDigitalOcean } from '../fakes/digitalocean';
import { LOOPBACK_POOLS } from '../sim/process-booter';
import { eventually } from '../helpers/eventually';
import { have, pythonWithDask, realDask } from '../helpers/prereq';
import { chooseDaskImage } from '../../src/dask/images';
import { pythonWithConfig } from '../helpers/python';
import { spawnTsx, type SpawnedScript } from '../helpers/spawn';
import { LocalVmBooter, startFake } from '../providers/digitalocean/helpers';
import { SAME_PRESS_MS } from '../../src/cli/signals';

const root = path.resolve(__dirname, '../..');
const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
const tsx = path.join(root, 'node_modules/tsx/dist/cli.mjs');
const cli = path.join(root, 'src/cli.ts');
const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

function run(args: string[], env: NodeJS.ProcessEnv = {}, entry: string[] = [tsx, cli]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...entry, ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Loopback slot of this file among the DigitalOcean test files (see test/providers/digitalocean/helpers.ts). */
const DO_SLOT = 5;

/** A fresh directory, removed after the file's tests. */
async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

describe('dask-cloud CLI', () => {
  it('prints user-data with the private key elided, and its size', async () => {
    const r = await run(['user-data', '--role', 'worker', '--scheduler-address', 'tls://10.0.0.9:8786']);
    expect(r.code).toBe(0);
    expect(r.stdout.startsWith('#cloud-config')).toBe(true);
    expect(r.stdout).toContain('tls://10.0.0.9:8786');
    expect(r.stdout).toContain('-----BEGIN PRIVATE KEY----- (elided) -----END PRIVATE KEY-----');
    expect(r.stdout).not.toMatch(/PRIVATE KEY-----\\n[A-Za-z0-9+/]{20}/);
    expect(r.stderr).toMatch(/worker user-data: \d+ bytes \(private key elided\)/);
  });

  it("user-data runs the image start would pick: the local client's Dask, a requested release, or the pinned default", async () => {
    const imageLine = (stderr: string): string => /^# image (\S+)/m.exec(stderr)?.[1] ?? stderr;
    // A requested release and Python: that exact published image, in the rendered docker command.
    const asked = await run(['user-data', '--role', 'scheduler', '--dask-version', '2025.3.0', '--python-version', '3.12']);
    expect(asked.code, asked.stderr).toBe(0);
    expect(imageLine(asked.stderr)).toBe('ghcr.io/dask/dask:2025.3.0-py3.12');
    expect(asked.stdout).toContain('ghcr.io/dask/dask:2025.3.0-py3.12');
    // No Python with Dask at the given path: the pinned default, and the stderr says why.
    const none = await run(['user-data', '--role', 'scheduler', '--python', '/nonexistent/python3']);
    expect(none.code, none.stderr).toBe(0);
    expect(imageLine(none.stderr)).toBe('ghcr.io/dask/dask:2025.11.0');
    expect(none.stderr).toContain('no local Python with Dask was found');
    // The native runtime runs the VM's own Dask: no image.
    const native = await run(['user-data', '--role', 'scheduler', '--runtime', 'native']);
    expect(native.code, native.stderr).toBe(0);
    expect(native.stderr).not.toContain('# image');
    expect(native.stdout).not.toContain('ghcr.io/dask/dask');
    // Bad image flags are usage errors that name the flag.
    for (const [args, text] of [
      [['--dask-version', 'latest'], '--dask-version must be'],
      [['--python-version', '3'], '--python-version must be'],
      [['--docker-image', 'x:1', '--dask-version', '2025.3.0'], 'give --docker-image or --dask-version'],
      [['--runtime', 'native', '--dask-version', '2025.3.0'], '--runtime native runs'],
      [['--runtime', 'podman'], '--runtime must be docker or native'],
    ] as const) {
      const r = await run(['user-data', '--role', 'scheduler', ...args]);
      expect([r.code, r.stderr]).toEqual([2, expect.stringContaining(text)]);
    }
  });

  it.runIf(have(realDask()))("user-data follows the local client's Dask and Python to the nearest published image", async () => {
    const r = await run(['user-data', '--role', 'worker', '--python', pythonWithDask()!]);
    expect(r.code, r.stderr).toBe(0);
    const [dask, py] = execFileSync(pythonWithDask()!, ['-c', 'import sys, dask; print(dask.__version__.split("+")[0], "%d.%d" % sys.version_info[:2])'], { encoding: 'utf8' }).trim().split(' ');
    const expected = chooseDaskImage({ dask: dask!, python: py })!;
    expect(r.stderr).toContain(`# image ${expected.image} (matches the local client's Dask and Python)`);
    expect(r.stdout).toContain(expected.image);
    // Bookworm's 2022.12.1 on 3.11 and trixie's 2024.12.1 on 3.13 both have no image of their Python.
    for (const d of expected.differences) expect(r.stderr).toContain(`#   ${d}`);
  });

  it('explains bad usage with exit code 2', async () => {
    const r = await run(['user-data', '--role', 'client']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--role must be scheduler or worker');
    const none = await run(['cleanup', '--provider', 'digitalocean']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('--cluster ID, --expired or --all');
  });

  it('cleanup sweeps a cluster left behind on a (fake) DigitalOcean account', async () => {
    await using fake = await FakeDigitalOcean.start({ privateCidr: LOOPBACK_POOLS.private, publicCidr: LOOPBACK_POOLS.public, lifecycleMs: 50 });
    const res = await fetch(`${fake.endpoint}/droplets`, {
      method: 'POST',
      headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        names: ['dask-abcd1234-scheduler', 'dask-abcd1234-worker-0'],
        region: 'nyc3',
        size: 's-2vcpu-4gb',
        image: 'ubuntu-24-04-x64',
        tags: ['dask-cloud', 'dask-cloud-cluster:dask-abcd1234'],
      }),
    });
    expect(res.status).toBe(202);
    const env = { DIGITALOCEAN_TOKEN: fake.token };
    const dry = await run(['cleanup', '--provider', 'digitalocean', '--endpoint', fake.endpoint, '--cluster', 'dask-abcd1234', '--dry-run'], env);
    expect(dry.stdout).toContain('dask-abcd1234: 2 instance(s) would delete');
    expect(fake.droplets()).toHaveLength(2);
    const real = await run(['cleanup', '--provider', 'digitalocean', '--endpoint', fake.endpoint, '--cluster', 'dask-abcd1234'], env);
    expect(real.code).toBe(0);
    expect(real.stdout).toContain('dask-abcd1234: 2 instance(s) deleted');
    expect(fake.droplets()).toHaveLength(0);
  });

  it('ls lists an account\'s clusters from their tags alone: a table, or JSON', async () => {
    await using fake = await FakeDigitalOcean.start({ privateCidr: LOOPBACK_POOLS.private, publicCidr: LOOPBACK_POOLS.public, lifecycleMs: 50 });
    const expires = Math.floor(Date.now() / 1000) + 3 * 3600;
    const create = async (names: string[], tags: string[]): Promise<void> => {
      const res = await fetch(`${fake.endpoint}/droplets`, {
        method: 'POST',
        headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ names, region: 'fra1', size: 's-2vcpu-4gb', image: 'debian-12-x64', tags: ['dask-cloud', 'dask-cloud-cluster:dask-abcd1234', `dask-cloud-expires:${expires}`, ...tags] }),
      });
      expect(res.status).toBe(202);
    };
    // What a cluster started in another process leaves on the account: a scheduler that says how
    // to reach it, and two workers.
    await create(['dask-abcd1234-scheduler'], ['dask-cloud-role:scheduler', 'dask-cloud-protocol:tls', 'dask-cloud-port:8786']);
    await create(['dask-abcd1234-worker-0', 'dask-abcd1234-worker-1'], ['dask-cloud-role:worker']);
    const env = { DIGITALOCEAN_TOKEN: fake.token };
    await eventually(() => (fake.droplets() as { status: string }[]).every((d) => d.status === 'active'), 'the Droplets to be active');
    const sched = (fake.droplets() as { name: string; networks: { v4: { type: string; ip_address: string }[] } }[]).find((d) => d.name.endsWith('-scheduler'))!;
    const ip = sched.networks.v4.find((n) => n.type === 'public')!.ip_address;

    const mark = fake.server.received.length;
    const table = await run(['ls', '--provider', 'digitalocean', '--endpoint', fake.endpoint], env);
    expect(table.code, table.stderr).toBe(0);
    const [head, row, ...rest] = table.stdout.trim().split('\n');
    expect(rest).toEqual([]);
    expect(head!.split(/\s{2,}/)).toEqual(['ID', 'KIND', 'LOCATION', 'STATE', 'WORKERS', 'ADDRESS', 'CREATED (UTC)', 'EXPIRES (UTC)']);
    expect(row!.split(/\s{2,}/).slice(0, 6)).toEqual(['dask-abcd1234', 'digitalocean', 'fra1', 'running', '2', `tls://${ip}:8786`]);
    expect(row).toMatch(/\(in (2|3) h\)$/);

    const json = await run(['ls', '--provider', 'digitalocean', '--endpoint', fake.endpoint, '--json'], env);
    expect(JSON.parse(json.stdout)).toEqual([
      {
        id: 'dask-abcd1234',
        kind: 'digitalocean',
        location: 'fra1',
        state: 'running',
        counts: { scheduler: 1, workers: 2 },
        address: `tls://${ip}:8786`,
        created: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
        expires: new Date(expires * 1000).toISOString(),
      },
    ]);
    // Only reads: nothing on the account changed.
    expect(fake.server.received.slice(mark).map((r) => r.method)).toEqual(expect.arrayContaining(['GET']));
    expect(fake.server.received.slice(mark).filter((r) => r.method !== 'GET')).toEqual([]);

    // Bad usage exits 2 before any request.
    const before = fake.server.received.length;
    for (const args of [['ls'], ['ls', '--provider', 'local'], ['ls', '--provider', 'digitalocean', '--zone', 'x'], ['ls', '--provider', 'gcp', '--region', 'x']]) {
      const r = await run([...args, '--endpoint', fake.endpoint], env);
      expect([r.code, r.stderr.trim().split('\n')]).toEqual([2, [expect.stringMatching(/^dask-cloud ls: /)]]);
    }
    expect(fake.server.received.length).toBe(before);
    // An account with none says so.
    await run(['cleanup', '--provider', 'digitalocean', '--endpoint', fake.endpoint, '--all'], env);
    expect((await run(['ls', '--provider', 'digitalocean', '--endpoint', fake.endpoint], env)).stdout.trim()).toBe('no dask-cloud clusters on digitalocean');
  });

  it.runIf(have(realDask()))('local runs a TLS cluster until interrupted, then closes it', async () => {
    const dir = await tempDir('dc-cli-');
    const cmd = spawnTsx(cli, ['local', '--workers', '1', '--client-config', dir]);
    await cmd.until('Ctrl-C');
    expect(cmd.output()).toMatch(/scheduler tls:\/\/127\.0\.0\.1:\d+, 1 workers/);
    expect((await stat(path.join(dir, 'client.key'))).mode & 0o777).toBe(0o600);
    cmd.child.kill('SIGINT');
    expect(await cmd.exited).toBe(0);
    expect(cmd.output()).toContain('closed');
  });

  describe.runIf(have(realDask()))('start on a (fake) DigitalOcean account', () => {
    const booter = have(realDask()) ? new LocalVmBooter() : undefined;
    afterAll(async () => booter?.stopAll());
    const env = (token: string) => ({ DIGITALOCEAN_TOKEN: token, DASK_CLOUD_DIGITALOCEAN_POLL_INTERVAL_MS: '50' });

    /** `dask-cloud start` on the fake's account, writing the client config to a fresh directory. */
    async function startOn(fake: FakeDigitalOcean, options: { workers?: number; env?: NodeJS.ProcessEnv } = {}): Promise<{ cmd: SpawnedScript; dir: string }> {
      const dir = await tempDir('dc-cli-do-');
      const args = ['start', '--provider', 'digitalocean', '--workers', String(options.workers ?? 1), '--endpoint', fake.endpoint, '--client-config', dir];
      return { cmd: spawnTsx(cli, args, { ...env(fake.token), ...options.env }), dir };
    }

    /** Once the fake's background work is done, it holds nothing. */
    async function expectAccountEmpty(fake: FakeDigitalOcean): Promise<void> {
      await fake.settle();
      expect(fake.leaked()).toEqual({});
    }

    it('starts a TLS cluster a Python client computes on, shows progress, and deletes everything on Ctrl-C', async () => {
      await using fake = await startFake(DO_SLOT, { booter });
      const { cmd, dir } = await startOn(fake);
      await cmd.until('Ctrl-C');
      expect(cmd.output()).toMatch(/starting dask-[0-9a-f]{8} \(digitalocean, 1 workers\)/);
      expect(cmd.output()).toMatch(/launched scheduler dask-[0-9a-f]{8}-scheduler/);
      expect(cmd.output()).toMatch(/ready done \(\d+ ms\)/);
      expect(cmd.output()).toMatch(/scheduler tls:\/\/127\.78\.[\d.]+:8786, 1 workers/);
      expect(fake.droplets()).toHaveLength(2);
      const sum = await pythonWithConfig(dir, "from distributed import Client\nc = Client(timeout='20s')\nprint(c.submit(lambda: 6 * 7).result())\nc.close()");
      expect(sum.split('\n').pop()).toBe('42');
      cmd.child.kill('SIGINT');
      expect(await cmd.exited).toBe(0);
      expect(cmd.output()).toContain('closed');
      await expectAccountEmpty(fake);
    });

    it('a second Ctrl-C while closing stops waiting: exit 130 with the cleanup command, which empties the account', async () => {
      await using fake = await startFake(DO_SLOT, { booter });
      const { cmd } = await startOn(fake);
      await cmd.until('Ctrl-C');
      fake.faults.latency('droplets_destroy_byTag', 1_500 + 2 * SAME_PRESS_MS); // a slow teardown, to interrupt
      cmd.child.kill('SIGINT');
      await cmd.until('SIGINT: deleting everything');
      // A repeat within SAME_PRESS_MS of the first is the same press (npx delivers one Ctrl-C twice): a person's second press comes later.
      await new Promise((r) => setTimeout(r, 2 * SAME_PRESS_MS));
      expect(cmd.child.exitCode).toBeNull(); // still closing
      cmd.child.kill('SIGINT');
      expect(await cmd.exited).toBe(130);
      const command = /Delete what is left with: dask-cloud (cleanup .*)$/m.exec(cmd.stderr())?.[1];
      expect(command).toMatch(/^cleanup --provider digitalocean --cluster dask-[0-9a-f]{8} --endpoint /);
      await fake.settle();
      // The destroy the CLI stopped waiting for still completes: the cleanup then finds no
      // Droplet to learn the cluster's expiry tag from, and must delete it all the same.
      await eventually(() => fake.droplets().length === 0, 'the Droplets to be destroyed', 30_000);
      const cleanup = await run(command!.split(' '), env(fake.token));
      expect(cleanup.code, cleanup.stdout + cleanup.stderr).toBe(0);
      await expectAccountEmpty(fake);
    });

    it('Ctrl-C during the start rolls it back: exit 1, nothing left on the account', async () => {
      // Droplets take 3 s to become active: the interrupt lands while the start waits for them.
      await using fake = await startFake(DO_SLOT, { booter, lifecycleMs: 3_000 });
      const { cmd } = await startOn(fake, { workers: 2 });
      await cmd.until(/launched scheduler/);
      cmd.child.kill('SIGINT');
      expect(await cmd.exited).toBe(1);
      expect(cmd.output()).toMatch(/dask-cloud start: .*aborted.*\[E_ABORTED\]/s);
      await expectAccountEmpty(fake);
    });

    it('a scheduler that dies while it runs ends the session: exit 1, said why, nothing left on the account', async () => {
      await using fake = await startFake(DO_SLOT, { booter });
      const { cmd } = await startOn(fake, { env: { DASK_CLOUD_MEMBER_WATCH_INTERVAL_MS: '250' } });
      await cmd.until('Ctrl-C');
      const scheduler = fake.droplets().find((d) => String(d.name).endsWith('-scheduler'))!;
      fake.guestPowerOff(scheduler.id as number);
      expect(await cmd.exited).toBe(1);
      expect(cmd.output()).toMatch(/member-failed: .*scheduler VM dask-[0-9a-f]{8}-scheduler stopped on its own \(state off\)/);
      expect(cmd.output()).toMatch(/the scheduler of dask-[0-9a-f]{8} is gone, so the cluster was closed and everything it created deleted/);
      await expectAccountEmpty(fake);
    });

    it('refuses bad input before any API call', async () => {
      await using fake = await startFake(DO_SLOT, { booter });
      const r = await run(['start', '--provider', 'digitalocean', '--workers', 'two', '--endpoint', fake.endpoint], env(fake.token));
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('--workers must be a whole number >= 0, got "two"');
      const p = await run(['start', '--provider', 'local', '--private'], {});
      expect(p.stderr).toContain('--private is for cloud providers, not --provider local');
      expect(fake.server.received).toHaveLength(0);
    });
  });

  describe('help, version and usage errors', () => {
    it('--help of the program and of start and doctor, as committed snapshots; the layout ignores the terminal width', async () => {
      const top = await run(['--help']);
      expect(top.code, top.stderr).toBe(0);
      await expect(top.stdout).toMatchFileSnapshot('./__snapshots__/cli-help.txt');
      const start = await run(['start', '--help'], { COLUMNS: '40' });
      expect(start.code, start.stderr).toBe(0);
      await expect(start.stdout).toMatchFileSnapshot('./__snapshots__/cli-help-start.txt');
      const doctor = await run(['doctor', '--help'], { COLUMNS: '250' });
      expect(doctor.code, doctor.stderr).toBe(0);
      await expect(doctor.stdout).toMatchFileSnapshot('./__snapshots__/cli-help-doctor.txt');
      // On a terminal 40 columns wide (a pseudo-terminal from util-linux `script`), the same text.
      if (have({ ok: hasScript(), reason: 'util-linux script (apt-get install util-linux) gives a pseudo-terminal' })) {
        const onTty = execFileSync('script', ['-qec', `stty cols 40 rows 20; ${process.execPath} ${tsx} ${cli} start --help`, '/dev/null'], { encoding: 'utf8' });
        expect(onTty.replace(/\r\n/g, '\n')).toBe(start.stdout);
      }
      // Every command has its own help.
      for (const command of ['local', 'up', 'info', 'scale', 'logs', 'dashboard', 'env', 'down', 'user-data', 'ls', 'cleanup']) {
        const r = await run([command, '--help']);
        expect([r.code, r.stdout.split('\n')[0]], command).toEqual([0, expect.stringMatching(new RegExp(`^Usage: dask-cloud ${command} `))]);
      }
    });

    it("--version is package.json's, from the source and from a bundle installed as the package lays it out (dist/cli.js)", async () => {
      const fromSource = await run(['--version']);
      expect([fromSource.code, fromSource.stdout.trim()]).toEqual([0, version]);
      // The package as installed: package.json at its root, the bundle in dist/, dependencies in node_modules.
      const pkg = await tempDir('dc-cli-pkg-');
      await mkdir(path.join(pkg, 'dist'));
      await writeFile(path.join(pkg, 'package.json'), readFileSync(path.join(root, 'package.json')));
      await symlink(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'));
      const esbuild = (await import('esbuild')) as typeof import('esbuild');
      await esbuild.build({ entryPoints: [cli], bundle: true, platform: 'node', format: 'cjs', target: 'node20', packages: 'external', outfile: path.join(pkg, 'dist/cli.js'), logLevel: 'warning' });
      const bundled = await run(['--version'], {}, [path.join(pkg, 'dist/cli.js')]);
      expect([bundled.code, bundled.stdout.trim()], bundled.stderr).toEqual([0, version]);
    });

    it('unknown commands and flags: exit 2, one line with a suggestion', async () => {
      const cmd = await run(['strat']);
      expect([cmd.code, cmd.stderr.trim()]).toEqual([2, "dask-cloud: unknown command 'strat' (Did you mean start?)"]);
      const flag = await run(['start', '--wokers', '2']);
      expect([flag.code, flag.stderr.trim()]).toEqual([2, "dask-cloud start: unknown option '--wokers' (Did you mean --workers?)"]);
      const bare = await run([]);
      expect(bare.code).toBe(2);
      expect(bare.stderr).toContain('Usage: dask-cloud');
    });

    it("refuses --workers '' and other bad numbers or durations before anything starts (exit 2)", async () => {
      for (const bad of ['', '-1', '1.5', '0x10']) {
        const r = await run(['start', '--provider', 'local', '--workers', bad]);
        expect([r.code, r.stderr.trim()], JSON.stringify(bad)).toEqual([2, `dask-cloud start: --workers must be a whole number >= 0, got ${JSON.stringify(bad)}`]);
      }
      const duration = await run(['up', '--provider', 'local', '--idle-timeout', 'two hours-ish']);
      expect(duration.code, duration.stderr).toBe(2);
      expect(duration.stderr).toMatch(/^dask-cloud up: .*--idle-timeout/);
      expect(duration.stderr).not.toContain('starting');
    });

    it('library errors name flags, not code: a missing EC2 region says --region', async () => {
      // Network safety: the endpoint is a closed loopback port, and the region check comes before any call.
      const r = await run(['doctor', '--provider', 'ec2', '--endpoint', 'http://127.0.0.1:9'], {
        HOME: '/nonexistent-home',
        AWS_REGION: '',
        AWS_DEFAULT_REGION: '',
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_CONFIG_FILE: '/nonexistent/aws-config',
        AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/aws-credentials',
        DASK_CLOUD_CONFIG: '',
        XDG_CONFIG_HOME: '/nonexistent-config',
      });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain('pass --region eu-west-1');
      expect(r.stderr).not.toContain('{ region');
    });
  });

  describe.runIf(have(realDask()))('start on the local provider', () => {
    it('takes nWorkers from the config file when no --workers is given, and prints a copy-paste line that works with the Python the library found', async () => {
      const dir = await tempDir('dc-cli-cfg-');
      const config = path.join(dir, 'config.yaml');
      await writeFile(config, 'cluster:\n  nWorkers: 3\n');
      const cmd = spawnTsx(cli, ['local', '--client-config', path.join(dir, 'client')], { DASK_CLOUD_CONFIG: config });
      await cmd.until('Ctrl-C');
      expect(cmd.output()).toMatch(/starting dask-[0-9a-f]{8} \(local, 3 workers\)/);
      expect(cmd.output()).toMatch(/ready done \(\d+ ms\): 3 \/ 3 workers registered/);
      expect(cmd.stdout()).toMatch(/^scheduler tls:\/\/127\.0\.0\.1:\d+, 3 workers$/m);
      // The printed line, run as printed by a shell whose PATH is the user's (here `python3` may lack distributed).
      const line = /^client config in .*?: (DASK_CONFIG=.*)$/m.exec(cmd.stdout())?.[1];
      expect(line, cmd.stdout()).toBeDefined();
      expect(line).not.toMatch(/ python3 -c/);
      const env = { ...process.env };
      for (const k of Object.keys(env)) if (k.startsWith('DASK_')) delete env[k];
      const out = await new Promise<string>((resolve, reject) =>
        execFile('sh', ['-c', line!], { env, timeout: 60_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))),
      );
      expect(out).toMatch(/<Client: 'tls:\/\/127\.0\.0\.1:\d+' processes=3/);
      cmd.child.kill('SIGINT');
      expect(await cmd.exited).toBe(0);
    });

    it("up: the idle timeout comes from DASK_CLOUD_IDLE_TIMEOUT when no flag gives it (up's own default of 1 hour does not mask it)", async () => {
      const up = await run(['up', '--provider', 'local', '--workers', '0', '--json'], { DASK_CLOUD_IDLE_TIMEOUT: '2 hours' });
      expect(up.code, up.stderr).toBe(0);
      const started = JSON.parse(up.stdout) as { id: string; kind: string; idleTimeout: string; workers: number; python?: string };
      try {
        expect(started).toMatchObject({ kind: 'local', idleTimeout: '2 hours', workers: 0, python: expect.any(String) });
      } finally {
        const down = await run(['down', started.id, '--json']);
        expect(down.code, down.stderr).toBe(0);
        expect(JSON.parse(down.stdout)).toEqual({ clusters: [{ id: started.id, provider: 'local', deleted: true, message: expect.any(String) }] });
      }
    });

    it('--json: one JSON document on stdout once it runs; progress and "closed" on stderr', async () => {
      const dir = await tempDir('dc-cli-json-');
      const cmd = spawnTsx(cli, ['start', '--provider', 'local', '--workers', '1', '--json', '--client-config', dir]);
      await cmd.until('Ctrl-C');
      const doc = JSON.parse(cmd.stdout()) as Record<string, unknown>;
      expect(doc).toMatchObject({
        id: expect.stringMatching(/^dask-[0-9a-f]{8}$/),
        kind: 'local',
        schedulerAddress: expect.stringMatching(/^tls:\/\/127\.0\.0\.1:\d+$/),
        workers: 1,
        clientConfig: dir,
        env: `DASK_CONFIG=${dir}`,
        python: expect.any(String),
      });
      expect(cmd.stderr()).toMatch(/^ {2}ready done \(\d+ ms\): 1 \/ 1 workers registered$/m);
      cmd.child.kill('SIGINT');
      expect(await cmd.exited).toBe(0);
      expect(JSON.parse(cmd.stdout())).toEqual(doc);
      expect(cmd.stderr()).toMatch(/^closed$/m);
    });
  });
});

function hasScript(): boolean {
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
