/**
 * Clusters that outlive the script, through the real CLI on each cloud's fake with process VMs:
 * `up` starts a cluster and exits; later processes find it (`ls`), attach to it (`info`, `scale 3`,
 * `logs`), hand its directory to Python (`env`), and `down` deletes everything it created and its
 * local directory. Each command is its own process, as a user's shell would run them.
 *
 * Network safety: see test/helpers/cli-targets.ts (every address the fakes hand out is loopback).
 * EC2 uses block 6 and DigitalOcean block 5 of their /16s, which no other test file uses.
 */
import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { doTarget, ec2Target, gcpTarget, localTarget, stopTargets, type Target } from '../helpers/cli-targets';
import { chromium, loadPage, screenshotPath } from '../helpers/browser';
import { have, realDask } from '../helpers/prereq';
import { COMPUTE, pythonWithConfig } from '../helpers/python';
import { spawnTsx, type SpawnedScript } from '../helpers/spawn';

const CLI = path.resolve(__dirname, '../../src/cli.ts');
/** A hang guard for one command (each also has the test's own timeout): never a timing claim. */
const COMMAND_MS = 120_000;

const children: SpawnedScript[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
});
afterAll(stopTargets);

/** Runs one CLI command to its end; returns its exit code and output. */
async function cli(t: Target, args: string[]): Promise<{ code: number | null | 'timeout'; stdout: string; stderr: string }> {
  const child = spawnTsx(CLI, args, t.env);
  children.push(child);
  const code = await child.exitWithin(COMMAND_MS);
  return { code, stdout: child.stdout(), stderr: child.stderr() };
}

const TARGETS: Array<[string, () => Promise<Target>]> = [
  ['ec2', () => ec2Target(6, { pendingMs: 300, shuttingDownMs: 300 })],
  ['gcp', () => gcpTarget()],
  ['digitalocean', () => doTarget(5)],
  ['local', () => localTarget()],
];

describe.runIf(have(realDask()))('up, then ls, info, scale, logs, env and down from later processes', () => {
  it.each(TARGETS)('%s', { timeout: 600_000 }, async (provider, makeTarget) => {
    const t = await makeTarget();

    // 1. up: the cluster starts, its directory is written, the command exits and leaves it running.
    const up = await cli(t, ['up', ...t.args, '--workers', '1', '--json']);
    expect(up.code, up.stderr).toBe(0);
    const started = JSON.parse(up.stdout) as { id: string; kind: string; schedulerAddress: string; stateDir: string; idleTimeout: string; env: string };
    const id = started.id;
    expect(started).toMatchObject({ kind: provider, idleTimeout: '1 hour', env: `DASK_CONFIG=${started.stateDir}` });
    expect(started.stateDir).toBe(path.join(process.env.DASK_CLOUD_HOME!, 'clusters', id));
    expect((await stat(started.stateDir)).mode & 0o777).toBe(0o700);
    // A VM cluster also keeps the workers' pair, for a later scale-up; a local one's owner has it.
    const worker = provider === 'local' ? [] : ['worker.key', 'worker.pem'];
    expect((await readdir(started.stateDir)).sort()).toEqual(['ca.pem', 'client.key', 'client.pem', 'cluster.record', 'dask.yaml', ...worker]);
    expect(await t.leftovers(id), 'the cluster keeps running after up exits').not.toEqual({});

    // 2. ls lists it from the cloud's labels; scale 3 attaches and registers 3 workers; logs reads them.
    const ls = await cli(t, ['ls', ...t.args, '--json']);
    expect(ls.code, ls.stderr).toBe(0);
    const listed = (JSON.parse(ls.stdout) as Array<{ id: string; state: string; counts: { workers: number }; address: string }>).find((c) => c.id === id);
    expect(listed).toMatchObject({ state: 'running', counts: { workers: 1 }, address: started.schedulerAddress });

    const scaled = await cli(t, ['scale', id, '3']);
    expect(scaled.code, scaled.stderr).toBe(0);
    expect(scaled.stdout).toContain(`${id}: 3 workers asked (was 1), 3 registered`);

    const info = await cli(t, ['info', id, '--json']);
    expect(info.code, info.stderr).toBe(0);
    expect(JSON.parse(info.stdout)).toMatchObject({ id, kind: provider, state: 'running', schedulerAddress: started.schedulerAddress, workers: 3, workersRegistered: 3 });

    const logs = await cli(t, ['logs', id, 'worker-2']);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toContain(`==> ${id}-worker-2 <==`);
    // DigitalOcean's API has no console output: the command says so, and where to look instead.
    expect(logs.stdout).toMatch(provider === 'digitalocean' ? /offers no console output: open the Droplet console/ : /Registered to|Start worker/i);

    if (provider === 'local' && have(chromium())) {
      // A local cluster's dashboard is its own: the command prints the link, and a real browser
      // shows the three workers there.
      const dash = await cli(t, ['dashboard', id]);
      expect(dash.code, dash.stderr).toBe(0);
      const link = dash.stdout.trim();
      expect(link).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/status$/);
      const shot = screenshotPath(`${id}-workers`);
      const page = await loadPage(link.replace('/status', '/info/main/workers.html'), { screenshot: shot, timeoutMs: 90_000 });
      for (const n of [0, 1, 2]) expect(page.dom).toContain(`${id}-worker-${n}`);
      expect(page.dom.match(/<a href="\.\.\/worker\/tls%3A%2F%2F127\.0\.0\.1%3A\d+\.html">/g) ?? []).toHaveLength(3);
      // eslint-disable-next-line no-console
      console.log(`[dashboard, local] ${link}: screenshot ${shot}`);
    }

    // env: Python computes on the cluster with nothing but that line.
    const env = await cli(t, ['env', id]);
    expect(env.stdout.trim()).toBe(`export DASK_CONFIG=${started.stateDir}`);
    expect((await pythonWithConfig(started.stateDir, COMPUTE)).split('\n').pop()).toBe('90');

    // 3. down deletes everything by label and removes the directory.
    const down = await cli(t, ['down', id]);
    expect(down.code, down.stderr).toBe(0);
    expect(await t.leftovers(id)).toEqual({});
    expect(existsSync(started.stateDir)).toBe(false);
    const after = await cli(t, ['ls', ...t.args, '--json']);
    expect((JSON.parse(after.stdout) as Array<{ id: string }>).map((c) => c.id)).not.toContain(id);

    // Without the directory, attaching commands say what they need; down still works from the flags.
    const lost = await cli(t, ['info', id]);
    expect(lost.code).toBe(1);
    expect(lost.stderr).toMatch(/no local directory for cluster .*never leave the machine that started the cluster.*E_NO_LOCAL_STATE/s);
  });

  it('down --all asks (or takes --yes); down without a directory takes --provider; bad usage exits 2 with one line', { timeout: 600_000 }, async () => {
    const t = await doTarget(4);
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const up = await cli(t, ['up', ...t.args, '--workers', '0', '--json']);
      expect(up.code, up.stderr).toBe(0);
      ids.push((JSON.parse(up.stdout) as { id: string }).id);
    }
    // Without a terminal and without --yes, nothing is deleted.
    const refused = await cli(t, ['down', '--all', ...t.args]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/down --all would delete 2 cluster\(s\): pass --yes/);
    for (const id of ids) expect(await t.leftovers(id)).not.toEqual({});

    // A cluster whose directory is gone: down needs to be told where it lives.
    const { removeClusterState } = await import('../../src/cluster/state');
    await removeClusterState(ids[0]!);
    const lost = await cli(t, ['down', ids[0]!]);
    expect(lost.code).toBe(2);
    expect(lost.stderr).toMatch(/no local directory for .*--provider/);
    const byFlags = await cli(t, ['down', ids[0]!, ...t.args]);
    expect(byFlags.code, byFlags.stderr).toBe(0);
    const listed = await cli(t, ['ls', ...t.args, '--json']);
    expect((JSON.parse(listed.stdout) as Array<{ id: string }>).map((c) => c.id)).toEqual([ids[1]]);

    const all = await cli(t, ['down', '--all', ...t.args, '--yes']);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toContain(ids[1]!);
    // Both are gone: nothing is left on the account (the fake's whole state).
    expect(await t.leftovers(ids[1]!)).toEqual({});
    expect(existsSync(path.join(process.env.DASK_CLOUD_HOME!, 'clusters', ids[1]!))).toBe(false);

    for (const args of [['scale', ids[1]!], ['scale', ids[1]!, 'x'], ['info'], ['info', '../etc'], ['logs', ids[1]!, 'a', 'b'], ['down'], ['down', '--all'], ['down', ids[1]!, '--all']]) {
      const r = await cli(t, args);
      expect([r.code, r.stderr.trim().split('\n').filter((l) => !/NodeVersionSupportWarning|AWS SDK|node >=22|upgrade|a\.co\/|trace-warnings|^$|versions published|To continue|More information/.test(l))], args.join(' ')).toEqual([2, [expect.stringMatching(new RegExp(`^dask-cloud ${args[0]}: `))]]);
    }
  });
});
