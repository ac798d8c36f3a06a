/**
 * The dask-cloud command line: user-data without keys, a cleanup sweep against a fake cloud,
 * and a local cluster that runs until interrupted and then leaves nothing behind.
 */
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FakeDigitalOcean } from '../fakes/digitalocean';
import { LOOPBACK_POOLS } from '../sim/process-booter';
import { have, realDask } from '../helpers/prereq';

const root = path.resolve(__dirname, '../..');
const tsx = path.join(root, 'node_modules/tsx/dist/cli.mjs');
const cli = path.join(root, 'src/cli.ts');
const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [tsx, cli, ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
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

  it('explains bad usage with a non-zero exit', async () => {
    const r = await run(['user-data', '--role', 'client']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--role must be scheduler or worker');
    const none = await run(['cleanup', '--provider', 'digitalocean']);
    expect(none.code).toBe(1);
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

  it.runIf(have(realDask()))('local runs a TLS cluster until interrupted, then closes it', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dc-cli-'));
    dirs.push(dir);
    const child = spawn(process.execPath, [tsx, cli, 'local', '--workers', '1', '--client-config', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const deadline = Date.now() + 60_000;
    while (!out.includes('Ctrl-C') && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 100));
    expect(out).toMatch(/scheduler tls:\/\/127\.0\.0\.1:\d+, 1 workers/);
    expect((await stat(path.join(dir, 'client.key'))).mode & 0o777).toBe(0o600);
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(out).toContain('closed');
  });
});
