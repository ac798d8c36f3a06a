/**
 * A script that forgets close(): when its process runs out of work, the open cluster is closed
 * with a warning instead of being left running (nothing in a cloud SDK keeps Node alive, so the
 * process would otherwise just exit). The cluster runs on a DigitalOcean fake whose Droplets run
 * their Dask processes locally (test/providers/digitalocean/helpers.ts), so start() completes.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { have, realDask } from '../helpers/prereq';
import { LocalVmBooter, startFake } from '../providers/digitalocean/helpers';

/** Loopback slot of this file among the DigitalOcean test files. */
const DO_SLOT = 6;
const root = path.resolve(__dirname, '../..');

describe.runIf(have(realDask()))('a process that ends with a cluster still open', () => {
  // Built only when the suite runs: it needs a Python with Dask.
  const booter = have(realDask()) ? new LocalVmBooter() : undefined;
  afterAll(async () => booter?.stopAll());

  it('closes it at beforeExit, with a warning, and leaves nothing on the account', async () => {
    await using fake = await startFake(DO_SLOT, { booter });
    // `node --import tsx`: one process, whose exit is the script's.
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'fixtures/forgets-close.ts')], {
      cwd: root,
      env: { ...process.env, FAKE_DO_ENDPOINT: fake.endpoint, DIGITALOCEAN_TOKEN: fake.token },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const code = await Promise.race([
      new Promise<number | null>((r) => child.on('exit', (c) => r(c))),
      new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 90_000)),
    ]);
    if (code === 'timeout') child.kill('SIGKILL');
    expect(code, stderr).toBe(0);
    const { clusterId } = JSON.parse(stdout.trim().split('\n')[0]!) as { clusterId: string };
    expect(stderr).toContain(`cluster ${clusterId} was still open when the process ran out of work: closing it now`);
    expect(stderr).toContain('DASK_CLOUD_UNCLOSED');
    await fake.settle();
    expect(fake.leaked()).toEqual({});
    expect(booter!.pids()).toEqual([]);
  }, 120_000);
});
