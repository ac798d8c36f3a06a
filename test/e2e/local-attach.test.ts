/**
 * Local clusters reached from other processes, with real Dask: `LocalCluster.attach(id)` asks the
 * owner (the process whose children the Dask processes are) through its control socket to scale,
 * read logs and close; an owner that dies takes its cluster along, and attach says so;
 * `startDetachedLocal()` starts an owner of its own that outlives the caller and ends with its
 * cluster (close from an attached handle, or the scheduler's idle timeout); `LocalCluster.list()`
 * tells running from gone. Linux (/proc) for the process checks.
 *
 * Bounds: every wait is either a hang guard far above what it guards, or derived from a delay
 * this file injects (the idle timeout) or the library's documented grace period (STOP_GRACE_MS).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalCluster, startDetachedLocal } from '../../providers/local';
import { CONTROL_SOCKET } from '../../providers/local/control';
import { LOG_DIR_PREFIX } from '../../providers/local/supervisor';
import { CLUSTER_ENV, KEY_DIR_PREFIX, STOP_GRACE_MS } from '../../providers/local/watchdog';
import { DaskCloudError, ValidationError } from '../../src/errors';
import { Security } from '../../src/security/security';
import { eventually } from '../helpers/eventually';
import { have, realDask } from '../helpers/prereq';
import { COMPUTE, pythonWithConfig } from '../helpers/python';
import { spawnTsx, type SpawnedScript } from '../helpers/spawn';
import { killPid, pidAlive } from '../sim/exec';

const enabled = process.platform === 'linux' && have(realDask());
const root = path.resolve(__dirname, '../..');
const OWNER_FIXTURE = path.join(__dirname, 'fixtures/local-owner.ts');

/** A hang guard for starting a cluster (normally seconds): never a timing claim. */
const START_GUARD_MS = 120_000;
/** Closing stops each process with SIGTERM and SIGKILLs it after STOP_GRACE_MS; the rest is margin. */
const CLOSE_BOUND_MS = 4 * STOP_GRACE_MS + 20_000;
/** After its owner is gone a launcher stops its group, SIGKILLing it STOP_GRACE_MS later at the latest. */
const WATCHDOG_BOUND_MS = 4 * STOP_GRACE_MS;

const owners: LocalCluster[] = [];
const supervisors: number[] = [];
const scripts: SpawnedScript[] = [];
const children: ChildProcess[] = [];
const dirs: string[] = [];

afterAll(async () => {
  for (const s of scripts) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  // A supervisor closes its cluster on SIGTERM; one that does not is killed (its Dask processes follow through their watchdog).
  for (const pid of supervisors) killPid(pid, 'SIGTERM');
  await eventually(() => supervisors.every((p) => !pidAlive(p)), 'the supervisors to exit', CLOSE_BOUND_MS).catch(() => supervisors.forEach((p) => killPid(p, 'SIGKILL')));
  await Promise.all(owners.map((c) => c.close().catch(() => undefined)));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
}, 2 * CLOSE_BOUND_MS);

async function tempDir(prefix: string): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** A TypeScript script in a private directory, importing the project by absolute path. */
async function script(name: string, code: string): Promise<string> {
  const file = path.join(await tempDir('dc-attach-script-'), name);
  await writeFile(file, code.replaceAll('@root', root));
  return file;
}

function run(file: string, env: NodeJS.ProcessEnv = {}): SpawnedScript {
  const s = spawnTsx(file, [], env);
  scripts.push(s);
  return s;
}

/** This user's live processes carrying the cluster's marker, read from /proc independently of the library. */
function markedPids(clusterId: string): number[] {
  const needle = `\0${CLUSTER_ENV}=${clusterId}\0`;
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (`\0${readFileSync(`/proc/${name}/environ`, 'latin1')}`.includes(needle) && pidAlive(Number(name))) pids.push(Number(name));
    } catch {
      // gone, or not ours
    }
  }
  return pids;
}

function keyDirsOf(clusterId: string): string[] {
  return readdirSync(os.tmpdir()).filter((n) => n.startsWith(`${KEY_DIR_PREFIX}${clusterId}-`));
}

function logDirs(): Set<string> {
  return new Set(readdirSync(os.tmpdir()).filter((n) => n.startsWith(LOG_DIR_PREFIX)));
}

/** Session id of a process (field 6 of /proc/<pid>/stat). */
function sessionOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
}

/** Nothing of the cluster is left: no process, no key directory, no local directory, no entry in list(). */
async function expectNothingLeft(id: string, stateDir: string): Promise<void> {
  expect(markedPids(id)).toEqual([]);
  expect(keyDirsOf(id)).toEqual([]);
  expect(existsSync(stateDir)).toBe(false);
  const report = await LocalCluster.cleanup({ dryRun: true, clusterIds: [id] });
  expect(report.clusters).toEqual([{ clusterId: id, pids: [], dirs: [], killed: [], removedDirs: [] }]);
  expect((await LocalCluster.list()).map((c) => c.id)).not.toContain(id);
}

describe.runIf(enabled)('LocalCluster.attach: another handle acts through the owner', () => {
  it('in-process: the attached handle scales, reads logs, serves a Python client, and its close() ends every process and the directory', async () => {
    const owner = await LocalCluster.start({ nWorkers: 1, closeOnSignals: false });
    owners.push(owner);
    const id = owner.id;
    const stateDir = owner.stateDir!;
    expect(existsSync(path.join(stateDir, 'cluster.record'))).toBe(true);

    const attached = await LocalCluster.attach(id);
    expect(attached.attached).toBe(true);
    expect(attached.schedulerAddress).toBe(owner.schedulerAddress);
    expect(attached.dashboardLink).toBe(owner.dashboardLink);
    expect(attached.members.map((m) => [m.id, m.name])).toEqual(owner.members.map((m) => [m.id, m.name]));
    // The processes are the owner's: the attached handle has none of its own.
    expect(attached.pids()).toEqual([]);

    const [listed] = (await LocalCluster.list()).filter((c) => c.id === id);
    expect(listed).toMatchObject({ kind: 'local', location: 'localhost', state: 'running', counts: { scheduler: 1, workers: 1 }, address: owner.schedulerAddress, ownerPid: process.pid, stateDir });

    await attached.scale(3);
    await attached.waitForWorkers(3);
    expect(attached.members.map((m) => m.name)).toEqual([`${id}-scheduler`, `${id}-worker-0`, `${id}-worker-1`, `${id}-worker-2`]);
    // The owner launched them as its own children.
    expect(owner.pids()).toHaveLength(4);
    expect(await owner.workers()).toHaveLength(3);
    // A new worker's output, read through the owner.
    await eventually(async () => /Registered to:\s+tls:\/\//.test((await attached.getLogs())[`${id}-worker-2`] ?? ''), "the new worker's log", 30_000);

    // A Python client with only the attached handle's config computes.
    const dir = await tempDir('dc-attach-client-');
    await attached.writeClientConfig(dir);
    expect((await pythonWithConfig(dir, COMPUTE)).split('\n').pop()).toBe('90');

    // Scale down through the owner: retired, then stopped.
    await attached.scale(2);
    expect(attached.members.map((m) => m.name)).toEqual([`${id}-scheduler`, `${id}-worker-0`, `${id}-worker-1`]);
    expect(owner.pids()).toHaveLength(3);
    await eventually(async () => (await attached.workers()).length === 2, 'the scheduler to forget the retired worker', 30_000);

    const pids = owner.pids();
    await attached.close();
    expect(attached.state).toBe('closed');
    // The owner closed the whole cluster: its handle, every process, the keys and the directory.
    expect(owner.state).toBe('closed');
    for (const pid of pids) expect(() => process.kill(pid, 0), `pid ${pid}`).toThrow();
    expect(markedPids(id)).toEqual([]);
    expect(keyDirsOf(id)).toEqual([]);
    expect(existsSync(stateDir)).toBe(false);
    await owner.close(); // idempotent, though its directory is gone already
    const again = (await LocalCluster.attach(id).catch((e: unknown) => e)) as DaskCloudError;
    expect(again.code).toBe('E_NO_LOCAL_STATE');
  }, 180_000);

  it('the owner closes first: the attached handle learns the cluster is gone, and its close() is a no-op that succeeds', async () => {
    const owner = await LocalCluster.start({ nWorkers: 0, closeOnSignals: false });
    owners.push(owner);
    const events: string[] = [];
    const attached = await LocalCluster.attach(owner.id, { onEvent: (e) => events.push(e.type) });
    await owner.close();
    expect(existsSync(owner.stateDir ?? path.join(process.env.DASK_CLOUD_HOME!, 'clusters', owner.id))).toBe(false);
    // The owner's "closed" reaches the attached handle over its watching connection.
    await eventually(() => attached.state === 'broken', 'the attached handle to see its cluster gone', 30_000);
    expect(events).toContain('member-failed');
    await expect(attached.scale(1)).rejects.toThrow(/closed the cluster/);
    await attached.close();
    expect(attached.state).toBe('closed');
  }, 120_000);

  it("the owner's control socket answers bad input with an error and keeps serving", async () => {
    const owner = await LocalCluster.start({ nWorkers: 0, closeOnSignals: false });
    owners.push(owner);
    const record = JSON.parse(await readFile(path.join(owner.stateDir!, 'cluster.record'), 'utf8')) as { backend: { control: string; ownerPid: number } };
    expect(path.basename(record.backend.control)).toBe(CONTROL_SOCKET);
    expect(record.backend.ownerPid).toBe(process.pid);
    const talk = (lines: string) =>
      new Promise<string[]>((resolve, reject) => {
        const socket = createConnection(record.backend.control);
        let out = '';
        const want = lines.split('\n').filter(Boolean).length;
        socket.on('data', (b) => {
          out += b.toString();
          if (out.split('\n').filter(Boolean).length >= want) socket.end(() => resolve(out.trim().split('\n')));
        });
        socket.on('error', reject);
        socket.write(lines);
      });
    const replies = (await talk('not json\n{"id":1,"op":"rm -rf"}\n{"id":2,"op":"launchWorkers","specs":[{"role":"scheduler","name":"x"}]}\n{"id":3,"op":"members"}\n')).map(
      (l) => JSON.parse(l) as { id: unknown; error?: { code: string; message: string }; result?: { members: unknown[] } },
    );
    expect(replies.find((r) => r.id === null)?.error?.code).toBe('E_PROTOCOL');
    expect(replies.find((r) => r.id === 1)?.error).toMatchObject({ code: 'E_PROTOCOL', message: expect.stringContaining('unknown op') });
    expect(replies.find((r) => r.id === 2)?.error?.message).toMatch(/only workers/);
    expect(replies.find((r) => r.id === 3)?.result?.members).toHaveLength(1);
    expect(owner.state).toBe('running');
    expect(await owner.workers()).toEqual([]);
    await owner.close();
  }, 120_000);

  it('an owner that exits without closing takes its processes along; attach then fails with E_NOT_FOUND naming it, list() says gone, cleanup removes the directory', async () => {
    const owner = run(OWNER_FIXTURE, { LOCAL_OPTIONS: JSON.stringify({ nWorkers: 1 }) });
    await owner.until(/"clusterId"/, START_GUARD_MS);
    const { clusterId: id, pids } = JSON.parse(owner.stdout().trim().split('\n').pop()!) as { clusterId: string; pids: number[] };
    const stateDir = path.join(process.env.DASK_CLOUD_HOME!, 'clusters', id);
    expect(existsSync(path.join(stateDir, 'cluster.record'))).toBe(true);
    const ownerPid = owner.child.pid!;
    // SIGKILL: nothing of the owner's own runs, not even its exit hooks; only the watchdog acts.
    owner.child.kill('SIGKILL');
    await owner.exited;
    await eventually(() => pids.every((p) => !pidAlive(p)) && markedPids(id).length === 0, 'the processes to die with their owner', WATCHDOG_BOUND_MS);

    const err = (await LocalCluster.attach(id).catch((e: unknown) => e)) as DaskCloudError;
    expect(DaskCloudError.isInstance(err)).toBe(true);
    expect(err.code).toBe('E_NOT_FOUND');
    expect(err.message).toContain(`owner process (pid ${ownerPid}) has exited`);
    expect(err.message).toContain(`dask-cloud cleanup --provider local --cluster ${id}`);

    const [listed] = (await LocalCluster.list()).filter((c) => c.id === id);
    expect(listed).toMatchObject({ state: 'gone', counts: { scheduler: 0, workers: 0 }, ownerPid });
    expect(listed!.address).toBeUndefined();

    const report = await LocalCluster.cleanup({ clusterIds: [id] });
    expect(report.clusters).toEqual([expect.objectContaining({ clusterId: id, stateDir, removedStateDir: true })]);
    expect(existsSync(stateDir)).toBe(false);
  }, 180_000);
});

describe.runIf(enabled)('startDetachedLocal: a cluster in an owner process of its own', () => {
  it('started from a script that exits, it keeps running; list() finds it; an attached handle scales it, reads logs, and close() ends it and its supervisor', async () => {
    const secret = `not-on-a-command-line-${process.pid}`;
    const starter = await script(
      'starter.ts',
      "import { startDetachedLocal } from '@root/providers/local';\n" +
        'startDetachedLocal(JSON.parse(process.env.DETACH_OPTIONS!)).then(\n' +
        '  (r) => console.log(JSON.stringify(r)),\n' +
        '  (e) => { console.error(e); process.exitCode = 1; },\n' +
        ');\n',
    );
    const s = run(starter, { DETACH_OPTIONS: JSON.stringify({ nWorkers: 1, idleTimeout: '1 hour', env: { DC_ATTACH_SECRET: secret } }) });
    // The script ends by itself once the cluster is up: nothing of the supervisor holds it.
    expect(await s.exitWithin(START_GUARD_MS), s.output()).toBe(0);
    const up = JSON.parse(s.stdout().trim()) as { id: string; stateDir: string; schedulerAddress: string; dashboardLink?: string; pid: number; logFile: string };
    supervisors.push(up.pid);
    const { id, stateDir, pid } = up;
    expect(stateDir).toBe(path.join(process.env.DASK_CLOUD_HOME!, 'clusters', id));
    expect(pidAlive(pid)).toBe(true);
    // Its own session (no terminal reaches it), and the env value never on its command line.
    expect(sessionOf(pid)).toBe(pid);
    expect(readFileSync(`/proc/${pid}/cmdline`, 'latin1')).not.toContain(secret);
    expect(existsSync(up.logFile)).toBe(true);

    const [listed] = (await LocalCluster.list()).filter((c) => c.id === id);
    expect(listed).toMatchObject({ state: 'running', counts: { scheduler: 1, workers: 1 }, address: up.schedulerAddress, ownerPid: pid });

    // A script that attaches, looks, and ends without close() leaves the cluster running: an
    // attached handle never closes the cluster at exit (only close() or closeOnSignals: true do).
    const looker = await script(
      'looker.ts',
      "import { LocalCluster } from '@root/providers/local';\n" +
        `LocalCluster.attach(${JSON.stringify(id)}).then(async (c) => console.log('workers', (await c.workers()).length));\n`,
    );
    const look = run(looker);
    expect(await look.exitWithin(START_GUARD_MS), look.output()).toBe(0);
    expect(look.stdout()).toContain('workers 1');
    expect(pidAlive(pid)).toBe(true);
    expect((await LocalCluster.list()).find((c) => c.id === id)).toMatchObject({ state: 'running' });

    // New workers need the env the cluster was started with (never written to disk).
    const attached = await LocalCluster.attach(id, { env: { DC_ATTACH_SECRET: secret } });
    expect(attached.schedulerAddress).toBe(up.schedulerAddress);
    await attached.scale(3);
    await attached.waitForWorkers(3);
    await eventually(async () => /Registered to:\s+tls:\/\//.test((await attached.getLogs())[`${id}-worker-2`] ?? ''), "the new worker's log", 30_000);
    // The cluster's directory alone configures a Python client; the workers carry the env.
    const out = await pythonWithConfig(stateDir, "from distributed import Client\nc = Client(timeout='20s')\nprint(sorted(set(c.run(lambda: __import__('os').environ.get('DC_ATTACH_SECRET')).values())))\nc.close()");
    expect(out.split('\n').pop()).toBe(`['${secret}']`);

    await attached.close();
    expect(attached.state).toBe('closed');
    await eventually(() => !pidAlive(pid), 'the supervisor to exit after close', CLOSE_BOUND_MS);
    await expectNothingLeft(id, stateDir);
    expect(existsSync(path.dirname(up.logFile))).toBe(false);
  }, 300_000);

  it('a supervisor whose scheduler shuts down on its idle timeout closes what is left and exits, leaving nothing', async () => {
    /** Dask exits between 1 and 1.25 idle timeouts after its last activity (it checks every quarter). */
    const IDLE_S = 5;
    const began = Date.now();
    const up = await startDetachedLocal({ nWorkers: 0, idleTimeout: `${IDLE_S}s` }).catch((e: unknown) => e);
    if (up instanceof Error) {
      // Only a start slower than the idle timeout itself may see its scheduler go before it is up:
      // then the supervisor rolled back and exited, and that must leave nothing too.
      expect(Date.now() - began).toBeGreaterThan(IDLE_S * 1000);
      expect((up as DaskCloudError).code).toBe('E_START_FAILED');
      const failedId = /starting cluster (\S+) failed/.exec(up.message)![1]!;
      await expectNothingLeft(failedId, path.join(process.env.DASK_CLOUD_HOME!, 'clusters', failedId));
      return;
    }
    const { id, pid, stateDir } = up as Awaited<ReturnType<typeof startDetachedLocal>>;
    supervisors.push(pid);
    await eventually(() => !pidAlive(pid), 'the supervisor to exit after the idle timeout', 2 * IDLE_S * 1000 + CLOSE_BOUND_MS);
    await expectNothingLeft(id, stateDir);
  }, 180_000);

  it('its supervisor ignores SIGHUP (it has no terminal) and closes the cluster on SIGTERM, then exits, leaving nothing', async () => {
    const up = await startDetachedLocal({ nWorkers: 1, idleTimeout: '1 hour' });
    supervisors.push(up.pid);
    process.kill(up.pid, 'SIGHUP');
    // A request answered after the SIGHUP was handled: the owner is still there, with its cluster.
    const [after] = (await LocalCluster.list()).filter((c) => c.id === up.id);
    expect(after).toMatchObject({ state: 'running', counts: { scheduler: 1, workers: 1 } });
    expect(pidAlive(up.pid)).toBe(true);
    process.kill(up.pid, 'SIGTERM');
    await eventually(() => !pidAlive(up.pid), 'the supervisor to exit after SIGTERM', CLOSE_BOUND_MS);
    await expectNothingLeft(up.id, up.stateDir);
  }, 180_000);

  it('options that cannot travel to another process, or are invalid, are a ValidationError before anything starts', async () => {
    const before = logDirs();
    const bad: Array<[string, Record<string, unknown>, RegExp]> = [
      ['onEvent', { onEvent: () => undefined }, /onEvent: a function cannot reach/],
      ['signal', { signal: new AbortController().signal }, /signal: an AbortSignal cannot reach/],
      ['security', { security: await Security.temporary() }, /a Security object cannot be sent/],
      ['closeOnSignals', { closeOnSignals: true }, /closeOnSignals/],
      ['saveState', { saveState: false }, /always writes its local directory/],
      ['workerOptions', { workerOptions: [new Date()] }, /workerOptions cannot be sent .* only JSON values/],
      ['nWorkers', { nWorkers: -1 }, /nWorkers must be a non-negative integer/],
      ['timeoutMs', { timeoutMs: 0 }, /timeoutMs must be a positive number/],
    ];
    for (const [option, options, message] of bad) {
      const err = await startDetachedLocal(options).catch((e: unknown) => e);
      expect(ValidationError.isInstance(err), `${option}: ${String(err)}`).toBe(true);
      expect((err as Error).message).toMatch(message);
    }
    // No supervisor was started: none made its log directory.
    expect([...logDirs()].filter((d) => !before.has(d))).toEqual([]);
  });

  it("a failed start throws the cluster's own typed error after the supervisor rolled back and exited; a start that outlasts timeoutMs is stopped", async () => {
    const before = logDirs();
    const err = (await startDetachedLocal({ nWorkers: 1, workerOptions: ['--no-such-option'] }).catch((e: unknown) => e)) as DaskCloudError;
    expect(err.name).toBe('ClusterStartError');
    expect(err.code).toBe('E_START_FAILED');
    expect(err.message).toMatch(/failed during workers .*No such option: --no-such-option.*Everything created for this cluster has been deleted/s);
    const pid = err.details.supervisorPid as number;
    expect(pid).toBeGreaterThan(0);
    await eventually(() => !pidAlive(pid), 'the supervisor to exit', CLOSE_BOUND_MS);
    const id = /starting cluster (\S+) failed/.exec(err.message)![1]!;
    await expectNothingLeft(id, path.join(process.env.DASK_CLOUD_HOME!, 'clusters', id));

    // 1 ms is over before the supervisor has even read its options: it is stopped, with nothing started.
    const late = (await startDetachedLocal({ nWorkers: 1, timeoutMs: 1 }).catch((e: unknown) => e)) as DaskCloudError;
    expect(late.code).toBe('E_TIMEOUT');
    expect(late.message).toMatch(/was not up within 1 ms \(timeoutMs\): its process \(pid \d+\) was stopped/);
    await eventually(() => !pidAlive(late.details.supervisorPid as number), 'the stopped supervisor to exit', CLOSE_BOUND_MS);
    // Neither left its log directory behind.
    expect([...logDirs()].filter((d) => !before.has(d))).toEqual([]);
  }, 180_000);

  it('from the built bundle, the supervisor is the cli.js next to it', async () => {
    // A bundle like the package's (scripts/build.mjs: dist/index.js and dist/cli.js side by side),
    // built into a private directory so the project's own dist/ is left alone.
    const dist = path.join(await tempDir('dc-attach-dist-'), 'dist');
    const esbuild = (await import('esbuild')) as typeof import('esbuild');
    for (const [entry, out] of [
      ['providers/local/index.ts', 'index.js'],
      ['src/cli.ts', 'cli.js'],
    ] as const) {
      await esbuild.build({ entryPoints: [path.join(root, entry)], bundle: true, platform: 'node', format: 'cjs', target: 'node20', packages: 'external', outfile: path.join(dist, out), logLevel: 'warning' });
    }
    const code = `require(${JSON.stringify(path.join(dist, 'index.js'))}).startDetachedLocal({ nWorkers: 0, idleTimeout: '1 hour' }).then((r) => console.log(JSON.stringify(r)), (e) => { console.error(e); process.exitCode = 1; })`;
    // Its dependencies stay external: they resolve from the project's node_modules.
    const child = spawn(process.execPath, ['-e', code], { env: { ...process.env, NODE_PATH: path.join(root, 'node_modules') }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exit = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(exit, stderr).toBe(0);
    const up = JSON.parse(stdout.trim()) as { id: string; pid: number; stateDir: string };
    supervisors.push(up.pid);
    expect(readFileSync(`/proc/${up.pid}/cmdline`, 'latin1').split('\0')).toEqual([process.execPath, path.join(dist, 'cli.js'), '__local-supervisor', '']);
    const attached = await LocalCluster.attach(up.id);
    await attached.close();
    await eventually(() => !pidAlive(up.pid), 'the supervisor to exit after close', CLOSE_BOUND_MS);
    await expectNothingLeft(up.id, up.stateDir);
  }, 180_000);
});
