/**
 * Issue 8, "teardown that finishes": the real `dask-cloud start` process, signalled at every step
 * of a start and once its cluster runs, finishes the teardown by itself and leaves nothing — no
 * fake resource, no Dask process, no key directory — without any manual cleanup.
 *
 * Which signal where (all 3 signals × every step × 4 providers would take a quarter of an hour):
 * - every step with one signal per provider: SIGHUP (the terminal closing, the reported case) on
 *   EC2 and local, SIGTERM on GCP, SIGINT on DigitalOcean. A step is each mutating request the
 *   fake receives (held HOLD_MS, so the signal lands while it is in flight), then "waiting for the
 *   scheduler" (every create made), then "running"; for local, each progress line, then "running".
 * - the two other signals on each provider at the first step and once running.
 * - SIGHUP with the terminal really gone (EC2 and local, during the start and once running): right
 *   after the signal the test closes its ends of the CLI's stdout and stderr, so every later write
 *   fails with EPIPE, as on a closed terminal.
 * - a second signal, to the CLI and to a script using the library's hooks: it exits at once,
 *   naming what is left and the cleanup command, and that command empties the fake.
 * - EC2 instances that take SLOW_TERMINATION_MS (beyond the old 30 s limit) to terminate, SIGTERM
 *   to the CLI and to the library's hooks: both wait, and both security groups are deleted.
 *
 * Exit bound after a signal: 3 × the time the process took to reach that step (which scales with
 * the machine's load) plus 20 × the delays the fake injects (lifecycle steps, held requests).
 *
 * Network safety: the fakes hand out loopback addresses only (127.79/16 for EC2 and 127.76/16 for
 * DigitalOcean, blocks no other test file uses; GCP's helper picks from 127.80-207). The library
 * dials the scheduler's public address, which the fakes' process-VM booters (NatProcessBooter,
 * LocalVmBooter) serve on loopback. The CLI gets its GCP token from a metadata server on
 * 127.0.0.1 (GCE_METADATA_HOST; K_SERVICE makes google-auth-library trust it without probing
 * 169.254.169.254, gcp-metadata 8's `getGCPResidency`), and its AWS credentials from the
 * environment (the instance metadata service is disabled).
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { outputLines, signalAtStep } from '../helpers/kill-at-step';
import { eventually } from '../helpers/eventually';
import { have, realDask } from '../helpers/prereq';
import { spawnTsx, type SpawnedScript } from '../helpers/spawn';
import { doTarget, ec2Target, gcpTarget, HOLD_MS, localTarget, stopTargets, tempDir, type Provider, type Target } from '../helpers/cli-targets';
import { EC2Cluster } from '../../providers/ec2';
import { SAME_PRESS_MS, SignalGate } from '../../src/cli/signals';

const root = path.resolve(__dirname, '../..');
const CLI = path.join(root, 'src/cli.ts');
const FIXTURE = path.join(__dirname, 'fixtures/runs-until-signalled.ts');
/** Beyond the 30 s the library's hooks used to allow. */
const SLOW_TERMINATION_MS = 33_000;
/** The core polls a security group still in use at most this far apart (retry()'s default cap). */
const RETRY_CAP_MS = 10_000;

const children: SpawnedScript[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
});
afterAll(stopTargets);

/** Progress lines of a local start: each is a step. */
const LOCAL_STEPS = /^ {2}(\w+ done \(|launched )/;
/** `launched worker x-worker-1`, or `launched 2 workers: x-worker-0, x-worker-1` (one create). */
const WORKER_1_LAUNCHED = /launched (worker|\d+ workers:) .*\S+-worker-1\b/;
const RUNNING = /Ctrl-C stops the cluster/;

function spawnCli(t: Target, dir: string): SpawnedScript {
  const child = spawnTsx(CLI, ['start', ...t.args, '--workers', '2', '--client-config', dir], t.env);
  children.push(child);
  return child;
}

type Step = number | 'waiting' | 'running';

/**
 * One start of the CLI, signalled at `step`; it must exit on its own within the bound, with the
 * documented code, and leave nothing. `hangUp`: the terminal goes away with the signal.
 */
async function round(t: Target, signal: NodeJS.Signals, step: Step, options: { hangUp?: boolean } = {}): Promise<{ at: string; atMarker: boolean }> {
  const child = spawnCli(t, await tempDir('dc-sig-cfg-'));
  const signalled = await signalAtStep({
    child,
    signal,
    k: typeof step === 'number' ? step : undefined,
    steps: t.mutating ?? outputLines(child, LOCAL_STEPS),
    marker: step === 'waiting' ? WORKER_1_LAUNCHED : RUNNING,
    markerLabel: step === 'waiting' ? 'waiting for the scheduler' : 'running',
  });
  const seenBefore = child.output();
  if (options.hangUp) {
    // The terminal is gone: nobody reads the CLI's output any more.
    child.child.stdout.destroy();
    child.child.stderr.destroy();
  }
  const bound = 3 * signalled.afterMs + 20 * t.injectedMs;
  const code = await child.exitWithin(bound);
  const context = `${t.provider}, ${signal} at ${signalled.at}:\n${child.output()}`;
  expect(code, `the CLI must exit on its own within ${bound} ms (${context})`).not.toBe('timeout');
  const clusterId = /starting (\S+) \(/.exec(seenBefore)?.[1];
  expect(clusterId, context).toBeDefined();
  // Running once the CLI said so; the signal may also land while the last wait was ending.
  const running = child.output().includes('Ctrl-C stops the cluster');
  expect(code, context).toBe(running ? 0 : 1);
  if (!options.hangUp) {
    if (running) {
      expect(child.stdout(), context).toContain('closed');
    } else {
      expect(child.stderr(), context).toMatch(/dask-cloud start: starting cluster \S+ was aborted by its signal during \w+: interrupted by SIG\w+; (everything created for this cluster has been deleted|nothing had been created yet) \[E_ABORTED\]/);
    }
  }
  // What the CLI could not see (the fake's background work, a VM process ending) settles within the bound.
  await eventually(async () => Object.keys(await t.leftovers(clusterId!)).length === 0, `nothing left of ${clusterId} (${context})`, bound).catch(() => undefined);
  expect(await t.leftovers(clusterId!), context).toEqual({});
  return signalled;
}

/** Every step with `signal`: k = 1, 2, ... until the signal lands at "running"; plus "waiting" for fakes. */
async function everyStep(t: Target, signal: NodeJS.Signals): Promise<string[]> {
  const steps: string[] = [];
  for (let k = 1; k <= 25; k++) {
    const { at, atMarker } = await round(t, signal, k);
    steps.push(at);
    if (atMarker) {
      if (t.mutating) steps.push((await round(t, signal, 'waiting')).at);
      return steps;
    }
  }
  throw new Error(`a start had more than 25 steps: ${steps.join(', ')}`);
}

const OTHERS: Record<NodeJS.Signals, NodeJS.Signals[]> = {
  SIGHUP: ['SIGINT', 'SIGTERM'],
  SIGTERM: ['SIGHUP', 'SIGINT'],
  SIGINT: ['SIGHUP', 'SIGTERM'],
} as Record<NodeJS.Signals, NodeJS.Signals[]>;

describe.runIf(have(realDask()))('dask-cloud start: a signal at any step deletes everything, and the CLI exits on its own', () => {
  const cases: Array<{ provider: Provider; signal: NodeJS.Signals; target: () => Promise<Target>; minSteps: number }> = [
    // security group (DryRun and real), its rules, scheduler, workers (with DryRuns in preflight)
    { provider: 'ec2', signal: 'SIGHUP', target: () => ec2Target(0, { pendingMs: 500, shuttingDownMs: 500 }), minSteps: 4 },
    // firewall rules, scheduler insert, workers bulkInsert
    { provider: 'gcp', signal: 'SIGTERM', target: gcpTarget, minSteps: 3 },
    // tags, firewall, scheduler, workers
    { provider: 'digitalocean', signal: 'SIGINT', target: () => doTarget(0), minSteps: 4 },
    // credentials, network, scheduler, workers, ready: progress lines
    { provider: 'local', signal: 'SIGHUP', target: localTarget, minSteps: 5 },
  ];
  for (const c of cases) {
    it(`${c.provider}: ${c.signal} at every step, then ${OTHERS[c.signal].join(' and ')} at the first step and once running`, async () => {
      const t = await c.target();
      const steps = await everyStep(t, c.signal);
      expect(steps.length, steps.join(', ')).toBeGreaterThanOrEqual(c.minSteps + 1);
      expect(steps).toContain('running');
      for (const other of OTHERS[c.signal]) {
        expect((await round(t, other, 1)).at).toMatch(/^step 1/);
        expect((await round(t, other, 'running')).at).toBe('running');
      }
      if (c.provider === 'gcp') expect((t as Target & { tokenRequests(): number }).tokenRequests(), 'the CLI took its token from the loopback metadata server').toBeGreaterThan(0);
    }, 600_000);
  }

  for (const provider of ['ec2', 'local'] as const) {
    it(`${provider}: SIGHUP with the terminal gone (every write fails) still deletes everything, during the start and once running`, async () => {
      const t = provider === 'ec2' ? await ec2Target(1, { pendingMs: 500, shuttingDownMs: 500 }) : await localTarget();
      await round(t, 'SIGHUP', 2, { hangUp: true });
      await round(t, 'SIGHUP', 'running', { hangUp: true });
    }, 180_000);
  }
});

describe.runIf(have(realDask()))('a second signal stops waiting, says what is left and how to delete it', () => {
  it('the CLI: exits at once with 128 + the signal, names the instances and the cleanup command, which then empties the fake', async () => {
    // Instances take long to terminate: the close is still waiting when the second signal comes.
    const shuttingDownMs = 8_000;
    const t = await ec2Target(2, { pendingMs: 300, shuttingDownMs });
    const child = spawnCli(t, await tempDir('dc-sig-cfg-'));
    await child.until(RUNNING, 90_000);
    const clusterId = /starting (\S+) \(/.exec(child.output())![1]!;
    child.child.kill('SIGTERM');
    await child.until(/SIGTERM: deleting everything/);
    await eventually(() => t.fake.instances().some((i) => i.state === 'shutting-down'), 'the terminations to begin', 20 * t.injectedMs);
    const sentAt = Date.now();
    child.child.kill('SIGINT');
    // Long before the instances could be gone.
    expect(await child.exitWithin(shuttingDownMs / 2), child.output()).toBe(128 + os.constants.signals.SIGINT);
    expect(Date.now() - sentAt).toBeLessThan(shuttingDownMs / 2);
    const out = child.stderr();
    expect(out).toContain(`dask-cloud: second SIGINT: exiting before every deletion was confirmed.`);
    const ids = t.fake.instances().map((i) => i.instanceId);
    expect(out).toMatch(new RegExp(`Cluster ${clusterId} \\(ec2\\) may have left: scheduler ${clusterId}-scheduler \\(i-[0-9a-f]+\\), worker .*its firewall / security group and tags\\.`));
    for (const id of ids) expect(out).toContain(`(${id})`);
    const command = /Delete what is left with: (dask-cloud cleanup .*)$/m.exec(out)?.[1];
    expect(command).toBe(`dask-cloud cleanup --provider ec2 --region ${t.fake.region} --cluster ${clusterId} --endpoint ${t.fake.endpoint}`);
    expect(await t.leftovers(clusterId)).not.toEqual({}); // the security group at least
    // The printed command, run as printed: it deletes what is left.
    const cleanup = spawnTsx(CLI, command!.split(' ').slice(1), t.env);
    children.push(cleanup);
    expect(await cleanup.exitWithin(shuttingDownMs + RETRY_CAP_MS + 20 * t.injectedMs), cleanup.output()).toBe(0);
    expect(cleanup.stdout()).toContain(`${clusterId}: `);
    expect(await t.leftovers(clusterId)).toEqual({});
  }, 120_000);

  it("the library's hooks: re-raise at once after printing the cleanup command; the command empties the fake", async () => {
    const shuttingDownMs = 8_000;
    const t = await ec2Target(3, { pendingMs: 300, shuttingDownMs });
    const cfg = t.fake.clientConfig();
    const script = spawnTsx(FIXTURE, [], {
      ...t.env,
      FAKE_OPTIONS: JSON.stringify({ region: cfg.region, endpoint: cfg.endpoint, accessKeyId: cfg.credentials.accessKeyId, secretAccessKey: cfg.credentials.secretAccessKey }),
    });
    children.push(script);
    await script.until(/"running"/, 90_000);
    const clusterId = (JSON.parse(script.stdout().split('\n').find((l) => l.includes('"running"'))!) as { running: string }).running;
    script.child.kill('SIGTERM');
    await script.until(/"type":"phase-start","clusterId":"[^"]+","phase":"close"/);
    await eventually(() => t.fake.instances().some((i) => i.state === 'shutting-down'), 'the terminations to begin', 20 * t.injectedMs);
    script.child.kill('SIGTERM');
    expect(await script.exitWithin(shuttingDownMs / 2), script.output()).toBeNull();
    expect(script.child.signalCode).toBe('SIGTERM');
    expect(script.stderr()).toContain(
      `dask-cloud: second SIGTERM: stopped waiting for cluster ${clusterId} (ec2) to close; what it created may be left. Delete it with: dask-cloud cleanup --provider ec2 --region ${cfg.region} --cluster ${clusterId}`,
    );
    expect(await t.leftovers(clusterId)).not.toEqual({});
    const report = await EC2Cluster.cleanup({ region: cfg.region, endpoint: cfg.endpoint, credentials: cfg.credentials, clusterIds: [clusterId] });
    expect(report.clusters.map((c) => c.error ?? 'ok')).toEqual(['ok']);
    expect(await t.leftovers(clusterId)).toEqual({});
  }, 120_000);
});

describe.runIf(have(realDask()))(`EC2 instances that take ${SLOW_TERMINATION_MS / 1000} s to terminate, SIGTERM`, () => {
  it('the CLI and the library hooks both wait (no time limit), delete the security groups, and end as documented', async () => {
    const t = await ec2Target(4, { pendingMs: 300, shuttingDownMs: SLOW_TERMINATION_MS });
    const cfg = t.fake.clientConfig();
    const t0 = Date.now();
    const cli = spawnCli(t, await tempDir('dc-sig-cfg-'));
    const script = spawnTsx(FIXTURE, [], {
      ...t.env,
      FAKE_OPTIONS: JSON.stringify({ region: cfg.region, endpoint: cfg.endpoint, accessKeyId: cfg.credentials.accessKeyId, secretAccessKey: cfg.credentials.secretAccessKey }),
    });
    children.push(script);
    await Promise.all([cli.until(RUNNING, 90_000), script.until(/"running"/, 90_000)]);
    const toRunning = Date.now() - t0;
    expect(t.fake.resources().securityGroups?.filter((g) => !(g.value as { isDefault: boolean }).isDefault)).toHaveLength(2);
    const sentAt = Date.now();
    cli.child.kill('SIGTERM');
    script.child.kill('SIGTERM');
    const bound = SLOW_TERMINATION_MS + RETRY_CAP_MS + 3 * toRunning;
    const [cliCode, scriptCode] = await Promise.all([cli.exitWithin(bound), script.exitWithin(bound)]);
    // The CLI: exit 0 once everything is deleted. The script: ended by the re-raised signal.
    expect(cliCode, cli.output()).toBe(0);
    expect(cli.stdout()).toContain('closed');
    expect(scriptCode, script.output()).toBeNull();
    expect(script.child.signalCode).toBe('SIGTERM');
    expect(script.stdout()).toMatch(/"type":"closed"/);
    // They waited for the terminations, past the old 30 s cut, and left nothing.
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(SLOW_TERMINATION_MS);
    expect(t.fake.leaked()).toEqual({});
    expect(t.fake.resources().securityGroups?.filter((g) => !(g.value as { isDefault: boolean }).isDefault) ?? []).toEqual([]);
  }, 180_000);
});

/** The gap between the two deliveries of one Ctrl-C under npx that the test reproduces (npx forwards within milliseconds). */
const NPX_GAP_MS = 10;

describe('one Ctrl-C delivered twice (npx forwards it, and the terminal sends it to the process group)', () => {
  it('SignalGate: a repeat of the first signal within SAME_PRESS_MS is the same press; later, or another signal, is a second', () => {
    let now = 1_000;
    const gate = new SignalGate(() => now);
    expect(gate.classify('SIGINT')).toBe('first');
    now += NPX_GAP_MS;
    expect(gate.classify('SIGINT')).toBe('same-press');
    now += SAME_PRESS_MS;
    expect(gate.classify('SIGINT')).toBe('second');
    const other = new SignalGate(() => now);
    expect(other.classify('SIGTERM')).toBe('first');
    expect(other.classify('SIGINT')).toBe('second');
    expect(NPX_GAP_MS).toBeLessThan(SAME_PRESS_MS / 4);
  });

  it.runIf(have(realDask()))(`the CLI: two SIGINTs ${NPX_GAP_MS} ms apart while it runs close the cluster normally, with no second-signal warning`, async () => {
    const t = await localTarget();
    const child = spawnCli(t, await tempDir('dc-sig-cfg-'));
    const t0 = Date.now();
    await child.until(RUNNING, 90_000);
    const toRunning = Date.now() - t0;
    const clusterId = /starting (\S+) \(/.exec(child.output())![1]!;
    child.child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, NPX_GAP_MS));
    child.child.kill('SIGINT');
    const code = await child.exitWithin(3 * toRunning);
    expect(code, child.output()).toBe(0);
    expect(child.stdout()).toContain('closed');
    expect(child.stderr()).not.toMatch(/second SIGINT/);
    expect(child.stderr().match(/SIGINT: deleting everything/g) ?? []).toHaveLength(1);
    expect(await t.leftovers(clusterId)).toEqual({});
  }, 120_000);

  const works = (cmd: string, args: string[]): boolean => {
    try {
      execFileSync(cmd, args, { stdio: 'ignore', timeout: 30_000 });
      return true;
    } catch {
      return false;
    }
  };
  const npxOnTty = { ok: works('script', ['--version']) && works('npx', ['--version']) && works('bash', ['--version']), reason: 'npx, bash and util-linux script (a pseudo-terminal to press Ctrl-C on)' };

  it.runIf(have(realDask()) && have(npxOnTty))('under real npx on a terminal (bash as its script shell, which execs the CLI): one Ctrl-C closes normally, with no second-signal warning', async () => {
    const t = await localTarget();
    const dir = await tempDir('dc-sig-npx-');
    // A package whose bin is this checkout's CLI, run by npx from its folder (no registry).
    await mkdir(path.join(dir, 'pkg/bin'), { recursive: true });
    await writeFile(path.join(dir, 'pkg/package.json'), JSON.stringify({ name: 'dask-cloud-npx-check', version: '0.0.0', bin: { 'dask-cloud': 'bin/dask-cloud' } }));
    await writeFile(path.join(dir, 'pkg/bin/dask-cloud'), `#!/bin/sh\ncd '${root}' && exec '${process.execPath}' --import tsx '${CLI}' "$@"\n`);
    await chmod(path.join(dir, 'pkg/bin/dask-cloud'), 0o755);
    const inner = `stty cols 100 rows 40; exec npx --yes --offline --script-shell=/bin/bash '${path.join(dir, 'pkg')}' start --provider local --workers 1 --client-config '${path.join(dir, 'client')}'`;
    const script = spawn('script', ['-qfec', inner, '/dev/null'], { cwd: dir, env: { ...t.env, HOME: process.env.HOME, PATH: process.env.PATH }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    script.stdout.on('data', (b: Buffer) => (out += b.toString()));
    script.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<void>((r) => script.on('exit', () => r()));
    try {
      const t0 = Date.now();
      await eventually(() => out.includes('Ctrl-C stops the cluster'), 'the cluster to run under npx', 90_000);
      const toRunning = Date.now() - t0;
      const clusterId = /starting (\S+) \(/.exec(out)![1]!;
      // Ctrl-C on the terminal: SIGINT to its foreground process group (npm, and the CLI), which npm also forwards.
      script.stdin.write('\x03');
      let timer: NodeJS.Timeout | undefined;
      const ended = await Promise.race([exited.then(() => 'exited'), new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 3 * toRunning)))]);
      clearTimeout(timer);
      expect(ended, out).toBe('exited');
      expect(out).toContain('closed');
      expect(out).not.toMatch(/second SIGINT/);
      expect(out.match(/SIGINT: deleting everything/g) ?? []).toHaveLength(1);
      expect(await t.leftovers(clusterId)).toEqual({});
    } finally {
      if (script.exitCode === null) script.kill('SIGKILL');
    }
  }, 120_000);
});

