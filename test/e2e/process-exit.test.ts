/**
 * How a process that owns clusters ends. A script that forgets close(): when its process runs
 * out of work, the open cluster is closed with a warning instead of being left running (nothing
 * in a cloud SDK keeps Node alive, so the process would otherwise just exit). The cluster runs on
 * a DigitalOcean fake whose Droplets run their Dask processes locally
 * (test/providers/digitalocean/helpers.ts), so start() completes. And a script interrupted by a
 * signal closes its clusters (`closeOnSignals`) before the signal ends it.
 */
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually';
import { have, realDask } from '../helpers/prereq';
import { spawnTsx } from '../helpers/spawn';
import { LocalVmBooter, startFake } from '../providers/digitalocean/helpers';
import { pidExists } from '../sim/exec';

/** Loopback slot of this file among the DigitalOcean test files. */
const DO_SLOT = 6;

describe.runIf(have(realDask()))('a process that ends with a cluster still open', () => {
  // Built only when the suite runs: it needs a Python with Dask.
  const booter = have(realDask()) ? new LocalVmBooter() : undefined;
  afterAll(async () => booter?.stopAll());

  it('closes it at beforeExit, with a warning, and leaves nothing on the account', async () => {
    await using fake = await startFake(DO_SLOT, { booter });
    const script = spawnTsx(path.join(__dirname, 'fixtures/forgets-close.ts'), [], { FAKE_DO_ENDPOINT: fake.endpoint, DIGITALOCEAN_TOKEN: fake.token });
    expect(await script.exitWithin(90_000), script.stderr()).toBe(0);
    const { clusterId } = JSON.parse(script.stdout().trim().split('\n')[0]!) as { clusterId: string };
    expect(script.stderr()).toContain(`cluster ${clusterId} was still open when the process ran out of work: closing it now`);
    expect(script.stderr()).toContain('DASK_CLOUD_UNCLOSED');
    await fake.settle();
    expect(fake.leaked()).toEqual({});
    expect(booter!.pids()).toEqual([]);
  }, 120_000);
});

describe.runIf(have(realDask()))('a process that is signalled while a cluster runs', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal}: the cluster is closed, then the signal ends the process`, async () => {
      const script = spawnTsx(path.join(__dirname, 'fixtures/closes-on-signal.ts'));
      try {
        await script.until(/^\{.*\}$/m);
        const { pids } = JSON.parse(script.stdout().split('\n').find((l) => l.startsWith('{'))!) as { pids: number[] };
        expect(pids).toHaveLength(2);
        script.child.kill(signal);
        expect(await script.exitWithin(30_000), script.output()).toBeNull();
        // Re-raised after the close: the process ends by the signal itself, as it would have.
        expect(script.child.signalCode).toBe(signal);
        expect(script.stdout().split('\n')).toContain('closed');
        await eventually(() => pids.every((p) => !pidExists(p)), 'the Dask processes to be gone', 10_000);
      } finally {
        if (script.child.exitCode === null && script.child.signalCode === null) script.child.kill('SIGKILL');
      }
    });
  }
});
