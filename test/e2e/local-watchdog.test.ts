/**
 * A LocalCluster's processes and keys never outlive their owner, even a SIGKILLed one: the
 * launchers' stdin watchdog (providers/local/watchdog.ts), and `dask-cloud cleanup --provider
 * local` for strays the watchdog cannot see. Also: every process, HTTP servers included, binds to
 * `host`; a `dask.py` in the caller's working directory is never imported; security off on a
 * non-loopback host warns. Real Dask, real processes, real CLI; Linux (/proc) for the checks.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalCluster, cleanupLocalClusters } from '../../providers/local';
import { CLUSTER_ENV, KEY_DIR_PREFIX, OWNER_ENV, OWNER_FILE, STOP_GRACE_MS, launcherArgs, processIdentity } from '../../providers/local/watchdog';
import type { ClusterEvent } from '../../src/cluster/events';
import { ValidationError } from '../../src/errors';
import { eventually } from '../helpers/eventually';
import { TRIXIE_ROOT, have, pythonWithDask, realDask } from '../helpers/prereq';
import { COMPUTE, pythonWithConfig } from '../helpers/python';
import { spawnTsx } from '../helpers/spawn';
import { killPid, pidAlive } from '../sim/exec';

const enabled = process.platform === 'linux' && have(realDask());
const root = path.resolve(__dirname, '../..');
const tsx = path.join(root, 'node_modules/tsx/dist/cli.mjs');
const cli = path.join(root, 'src/cli.ts');
const FIXTURE = path.join(__dirname, 'fixtures/local-owner.ts');
/**
 * After its owner is gone a launcher stops its group at once, and SIGKILLs it STOP_GRACE_MS later
 * at the latest: twice that is the bound, the rest being margin for loaded machines.
 */
const WATCHDOG_BOUND_MS = 2 * STOP_GRACE_MS;

const dirs: string[] = [];
const started: ChildProcess[] = [];
afterAll(async () => {
  for (const c of started) if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) killPid(-c.pid, 'SIGKILL');
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(prefix: string): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** This user's processes whose environment carries the cluster's marker, read from /proc independently of the library. */
function markedPids(clusterId: string): number[] {
  const needle = `${CLUSTER_ENV}=${clusterId}\0`;
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (`\0${readFileSync(`/proc/${name}/environ`, 'latin1')}`.includes(`\0${needle}`) && pidAlive(Number(name))) pids.push(Number(name));
    } catch {
      // gone or not ours
    }
  }
  return pids.sort((a, b) => a - b);
}

function keyDirsOf(clusterId: string): string[] {
  return readdirSync(os.tmpdir())
    .filter((n) => n.startsWith(`${KEY_DIR_PREFIX}${clusterId}-`))
    .map((n) => path.join(os.tmpdir(), n));
}

/** `address:port` of every TCP socket the processes listen on (from /proc/net/tcp{,6} and their fds). */
function listening(pids: number[]): string[] {
  const byInode = new Map<string, string>();
  for (const [file, v6] of [['/proc/net/tcp', false], ['/proc/net/tcp6', true]] as const) {
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A') continue; // 0A: LISTEN
      const [hex, portHex] = f[1]!.split(':') as [string, string];
      const addr = v6
        ? (hex === '0'.repeat(32) ? '::' : hex === '00000000000000000000000001000000' ? '::1' : `v6:${hex}`)
        : hex.match(/../g)!.reverse().map((b) => parseInt(b, 16)).join('.');
      byInode.set(f[9]!, `${addr}:${parseInt(portHex, 16)}`);
    }
  }
  const out = new Set<string>();
  for (const pid of pids) {
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        const a = m && byInode.get(m[1]!);
        if (a) out.add(a);
      } catch {
        // closed meanwhile
      }
    }
  }
  return [...out].sort();
}

function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [tsx, cli, ...args], { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Whatever a failed test left of a cluster: its processes (by marker) and key directories. */
async function sweep(clusterId: string): Promise<void> {
  for (const p of markedPids(clusterId)) killPid(p, 'SIGKILL');
  await Promise.all(keyDirsOf(clusterId).map((d) => rm(d, { recursive: true, force: true })));
}

/** Starts the owner fixture; resolves with it and what it printed once its cluster runs. */
async function owner(env: NodeJS.ProcessEnv) {
  const script = spawnTsx(FIXTURE, [], env);
  started.push(script.child);
  await script.until(/^\{.*\}$/m, 90_000);
  const info = JSON.parse(script.stdout().split('\n').find((l) => l.startsWith('{'))!) as { clusterId: string; pids: number[] };
  return { script, ...info };
}

/**
 * A process's working directory as the process itself sees it. A Python run by
 * scripts/trixie-python lives in a private root whose / is the trixie root's /mnt, so from here its
 * cwd reads with that prefix.
 */
function processCwd(pid: string | number): string {
  const cwd = readlinkSync(`/proc/${pid}/cwd`);
  const prefix = existsSync(TRIXIE_ROOT) ? path.join(realpathSync(TRIXIE_ROOT), 'mnt') : null;
  return prefix && cwd.startsWith(`${prefix}/`) ? cwd.slice(prefix.length) : cwd;
}

describe.runIf(enabled)('a LocalCluster whose owner is SIGKILLed', () => {
  it('loses every process and its key directory, by the watchdog alone', async () => {
    const { script, clusterId, pids } = await owner({ LOCAL_OPTIONS: JSON.stringify({ nWorkers: 2 }) });
    try {
      const all = markedPids(clusterId);
      // 3 launchers, the scheduler, 2 nannies and their 2 workers (at least).
      expect(all.length, `processes of ${clusterId}`).toBeGreaterThanOrEqual(8);
      expect(all).toEqual(expect.arrayContaining(pids));
      const keyDirs = keyDirsOf(clusterId);
      expect(keyDirs).toHaveLength(1);
      expect(readdirSync(keyDirs[0]!)).toEqual(expect.arrayContaining([OWNER_FILE, 'ca.pem', 'scheduler.key', 'worker.key']));

      script.child.kill('SIGKILL');
      await script.exited;
      await eventually(() => all.every((p) => !pidAlive(p)) && !existsSync(keyDirs[0]!), `the processes ${all.join(' ')} and ${keyDirs[0]} to be gone`, WATCHDOG_BOUND_MS);
      expect(markedPids(clusterId)).toEqual([]);
    } finally {
      if (script.child.exitCode === null && script.child.signalCode === null) script.child.kill('SIGKILL');
      await sweep(clusterId);
    }
  }, 120_000);
});

describe.runIf(enabled)('dask-cloud cleanup --provider local', () => {
  /** A process identity that no longer runs: a `sleep` started and killed. */
  async function deadOwner(): Promise<string> {
    const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
    const id = processIdentity(sleeper.pid!)!;
    sleeper.kill('SIGKILL');
    await new Promise((r) => sleeper.once('exit', r));
    return id;
  }

  async function keyDir(clusterId: string, ownerId: string): Promise<string> {
    const d = await mkdtemp(path.join(os.tmpdir(), `${KEY_DIR_PREFIX}${clusterId}-`));
    dirs.push(d);
    await writeFile(path.join(d, OWNER_FILE), JSON.stringify({ clusterId, owner: ownerId }));
    return d;
  }

  function track<T extends ChildProcess>(c: T): T {
    started.push(c);
    return c;
  }

  it('kills the strays of clusters whose owner is gone, removes their keys, and touches nothing else', async () => {
    const python = pythonWithDask()!;
    const suffix = Math.floor(Math.random() * 0xffffff).toString(16).padStart(6, '0');
    const stray = `dask-5a${suffix}`;
    const kept = `dask-6b${suffix}`;
    const dead = await deadOwner();
    const strayDir = await keyDir(stray, dead);
    const keptDir = await keyDir(kept, processIdentity(process.pid)!);
    const marker = (id: string, who: string) => ({ ...process.env, [CLUSTER_ENV]: id, [OWNER_ENV]: who });
    const port = 20_000 + Math.floor(Math.random() * 20_000);

    // Strays of a dead owner: a launcher whose watchdog this test keeps fed (it holds the pipe),
    // running a real scheduler, and a real worker (nanny + worker process) started directly.
    const launcher = track(spawn(python, launcherArgs(stray, strayDir, ['scheduler', '--host', '127.0.0.1', '--port', String(port), '--dashboard-address', '127.0.0.1:0']), {
      env: marker(stray, dead),
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true,
    }));
    const worker = track(spawn(python, ['-m', 'dask', 'worker', `tcp://127.0.0.1:${port}`, '--host', '127.0.0.1', '--dashboard-address', '127.0.0.1:0'], {
      env: marker(stray, dead),
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
    }));
    let workerLog = '';
    worker.stderr!.on('data', (b: Buffer) => (workerLog += b.toString()));
    // A cluster whose owner (this process) runs, and a process that is not ours at all.
    const keptProc = track(spawn(python, ['-c', 'import time; time.sleep(120)'], { env: marker(kept, processIdentity(process.pid)!), stdio: 'ignore', detached: true }));
    const unrelated = track(spawn(python, ['-c', 'import time; time.sleep(120)'], { stdio: 'ignore', detached: true }));

    // Once the worker registered, every process is there: launcher + scheduler, nanny + its worker process (+ helpers).
    await eventually(() => workerLog.includes('Registered to'), 'the stray worker to register', 60_000);
    const strayPids = markedPids(stray);
    expect(strayPids.length).toBeGreaterThanOrEqual(4);
    expect(strayPids).toEqual(expect.arrayContaining([launcher.pid, worker.pid]));

    const dry = await cleanupLocalClusters({ dryRun: true });
    const dryEntry = dry.clusters.find((c) => c.clusterId === stray)!;
    expect(dryEntry).toMatchObject({ pids: strayPids, dirs: [strayDir], killed: [], removedDirs: [] });
    expect(dryEntry.skipped).toBeUndefined();
    expect(dry.clusters.find((c) => c.clusterId === kept)).toMatchObject({ pids: [keptProc.pid], dirs: [keptDir], skipped: expect.stringContaining(`pid ${process.pid}`) });
    expect(strayPids.every(pidAlive)).toBe(true);
    const dryCli = await runCli(['cleanup', '--provider', 'local', '--cluster', stray, '--dry-run']);
    expect(dryCli.stdout).toContain(`${stray}: would kill ${strayPids.length} process(es) (pids ${strayPids.join(' ')}) and remove 1 key dir(s)`);
    expect(strayPids.every(pidAlive)).toBe(true);

    const r = await runCli(['cleanup', '--provider', 'local', '--cluster', stray, '--cluster', kept]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`${stray}: killed ${strayPids.length} process(es) (pids ${strayPids.join(' ')}), removed 1 key dir(s)`);
    expect(r.stdout).toContain(`${kept}: left alone, its owner (pid ${process.pid}) is still running`);
    expect(strayPids.filter(pidAlive)).toEqual([]);
    expect(existsSync(strayDir)).toBe(false);
    expect(launcher.exitCode !== null || launcher.signalCode !== null || !pidAlive(launcher.pid!)).toBe(true);
    expect(worker.pid !== undefined && !pidAlive(worker.pid)).toBe(true);
    // Untouched: the live owner's process and keys, and the unrelated process.
    expect(pidAlive(keptProc.pid!)).toBe(true);
    expect(existsSync(keptDir)).toBe(true);
    expect(pidAlive(unrelated.pid!)).toBe(true);
    for (const c of [keptProc, unrelated]) c.kill('SIGKILL');
    await sweep(stray);
  }, 120_000);

  it('refuses --expired (a usage error, exit 2): local clusters are found by their dead owner, not by an expiry', async () => {
    const r = await runCli(['cleanup', '--provider', 'local', '--expired']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('local clusters have no expiry');
  });
});

describe.runIf(enabled)('LocalCluster bind address', () => {
  it('binds every listening socket, worker and scheduler HTTP included, to host (127.0.0.1)', async () => {
    // No dashboard: Dask would still open the scheduler's HTTP server on 0.0.0.0:8787.
    await using cluster = await LocalCluster.start({ nWorkers: 2, dashboardAddress: false, closeOnSignals: false });
    const workers = await cluster.workers();
    const httpPorts = workers.map((w) => (w.raw.services as { dashboard?: number } | undefined)?.dashboard);
    expect(httpPorts.every((p) => typeof p === 'number')).toBe(true);
    const sockets = listening(markedPids(cluster.id));
    // Scheduler comm + HTTP, and per worker: nanny, worker comm, worker HTTP.
    expect(sockets.length).toBeGreaterThanOrEqual(2 + 3 * 2);
    for (const p of httpPorts) expect(sockets).toContain(`127.0.0.1:${p}`);
    expect(sockets.filter((s) => !s.startsWith('127.0.0.1:'))).toEqual([]);
  }, 120_000);
});

describe.runIf(enabled)('a dask.py in the working directory', () => {
  it('is never imported: the cluster starts from that directory and computes', async () => {
    const cwd = await tempDir('dc-shadow-');
    for (const mod of ['dask', 'distributed']) {
      await writeFile(path.join(cwd, `${mod}.py`), `open(__file__ + '.imported', 'w').close()\nraise SystemExit('the planted ${mod}.py was imported')\n`);
    }
    // The plant works: plain `python -m dask` from there runs it.
    const control = await new Promise<string>((resolve) =>
      execFile(pythonWithDask()!, ['-m', 'dask', 'scheduler', '--help'], { cwd, timeout: 30_000 }, (_e, out, err) => resolve(out + err)),
    );
    expect(control).toContain('the planted dask.py was imported');
    await rm(path.join(cwd, 'dask.py.imported'));

    const config = path.join(await tempDir('dc-shadow-client-'), 'client');
    await mkdir(config);
    const { script, clusterId } = await owner({ CHDIR: cwd, CLIENT_CONFIG: config });
    try {
      expect((await pythonWithConfig(config, COMPUTE)).split('\n').pop()).toBe('90');
      expect(readdirSync(cwd).sort()).toEqual(['dask.py', 'distributed.py']);
      // The working directory is still the caller's: relative paths in tasks keep their meaning.
      const pids = markedPids(clusterId);
      expect(pids.length).toBeGreaterThanOrEqual(4);
      expect(new Set(pids.map(processCwd))).toEqual(new Set([cwd]));
    } finally {
      script.child.kill('SIGKILL');
      await sweep(clusterId);
    }
  }, 120_000);
});

describe('LocalCluster with security off on a non-loopback host', () => {
  function warningsDuring(fn: () => Promise<unknown>): Promise<Array<{ code?: string; message: string }>> {
    const seen: Array<{ code?: string; message: string }> = [];
    const listener = (w: Error & { code?: string }) => seen.push({ code: w.code, message: w.message });
    process.on('warning', listener);
    return fn()
      .catch(() => undefined)
      // Warnings are delivered on the next tick.
      .then(() => new Promise((r) => setImmediate(r)))
      .then(() => {
        process.off('warning', listener);
        return seen;
      });
  }

  it('warns with DASK_CLOUD_INSECURE_BIND as start() begins, as an event and through process.emitWarning', async () => {
    const events: ClusterEvent[] = [];
    // Aborted from the outset: the warning comes before anything is launched, so nothing binds 0.0.0.0 here.
    const cluster = new LocalCluster({ host: '0.0.0.0', security: false, signal: AbortSignal.abort(), onEvent: (e) => events.push(e), closeOnSignals: false });
    const seen = await warningsDuring(() => cluster.start());
    expect(cluster.state).toBe('failed');
    expect(events.filter((e) => e.type === 'warning')).toEqual([
      expect.objectContaining({ code: 'DASK_CLOUD_INSECURE_BIND', message: expect.stringContaining('listens on 0.0.0.0') }),
    ]);
    expect(seen).toEqual([expect.objectContaining({ code: 'DASK_CLOUD_INSECURE_BIND', message: expect.stringContaining(cluster.id) })]);
    expect(events.some((e) => e.type === 'member-launched')).toBe(false);
  });

  it('does not warn with security on, or on loopback', async () => {
    for (const options of [{ host: '0.0.0.0' }, { host: 'localhost', security: false }, { host: '127.0.0.2', security: false }]) {
      const seen = await warningsDuring(() => new LocalCluster({ ...options, signal: AbortSignal.abort(), closeOnSignals: false }).start());
      expect(seen.filter((w) => w.code === 'DASK_CLOUD_INSECURE_BIND'), JSON.stringify(options)).toEqual([]);
    }
  });

  it.runIf(enabled)('a real security: false cluster on the default host runs without the warning', async () => {
    let cluster: LocalCluster | undefined;
    const seen = await warningsDuring(async () => {
      cluster = await LocalCluster.start({ nWorkers: 1, security: false, closeOnSignals: false });
    });
    try {
      expect(cluster?.state).toBe('running');
      expect(seen.filter((w) => w.code === 'DASK_CLOUD_INSECURE_BIND')).toEqual([]);
    } finally {
      await cluster?.close();
    }
  }, 60_000);

  it('refuses a host Dask cannot take (IPv6, spaces) before anything starts', () => {
    for (const host of ['::1', '127.0.0.1 ', '']) {
      let caught: unknown;
      try {
        new LocalCluster({ host });
      } catch (err) {
        caught = err;
      }
      expect(caught, host).toBeInstanceOf(ValidationError);
      expect((caught as ValidationError).details).toMatchObject({ option: 'host' });
    }
  });
});
