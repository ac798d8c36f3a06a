/**
 * The sweep for local clusters whose owner is gone: the launchers' watchdog (./watchdog.ts)
 * normally takes their processes and keys down with the owner, but a launcher can itself be
 * killed, or the owner can die between creating the key directory and the first launch.
 *
 * Only the current user's processes and directories are looked at. A process belongs to a
 * cluster when its environment carries the cluster marker (readable from /proc/<pid>/environ for
 * one's own processes: Linux only); a key directory is `dask-cloud-local-<clusterId>-XXXXXX`
 * under the temporary directory. A cluster whose owner still runs is left alone, whatever was asked.
 *
 * The cluster's local directory (DASK_CLOUD_HOME/clusters/<id>, see src/cluster/state.ts) goes
 * too once its record's owner is gone: it can only reach a cluster that no longer exists.
 */
import { readFileSync } from 'node:fs';
import { lstat, readFile, readdir, rm, stat } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { clusterDir, listClusterStates } from '../../src/cluster/state';
import { CLUSTER_ENV, KEY_DIR_PREFIX, OWNER_ENV, OWNER_FILE, STOP_GRACE_MS, identityAlive } from './watchdog';

export interface LocalCleanupOptions {
  /** Only these clusters (default: every local cluster of this user whose owner is gone). */
  clusterIds?: string[];
  /** Only report what would be killed and removed. */
  dryRun?: boolean;
  /** Where key directories are looked for (default `os.tmpdir()`, where LocalCluster makes them). */
  tmpDir?: string;
}

export interface LocalCleanupEntry {
  clusterId: string;
  /** The cluster's processes found: launchers, Dask processes and their children. */
  pids: number[];
  /** Its key directories found. */
  dirs: string[];
  /** Why nothing was touched (its owner still runs, or its directory is being set up). */
  skipped?: string;
  /** Processes signalled (SIGTERM, then SIGKILL after a grace period). */
  killed: number[];
  /** Key directories removed. */
  removedDirs: string[];
  /** The cluster's local directory (credentials and record), when this machine has one. */
  stateDir?: string;
  /** Whether `stateDir` was removed. */
  removedStateDir?: boolean;
  /** What could not be done. */
  error?: string;
}

export interface LocalCleanupReport {
  clusters: LocalCleanupEntry[];
  /** False where there is no /proc to find processes by their marker (macOS): only directories were swept. */
  processesSearched: boolean;
}

/** A key directory without an owner file younger than this may be a cluster being set up right now. */
const UNOWNED_DIR_AGE_MS = 60_000;
const POLL_MS = 50;
const DIR_NAME = new RegExp(`^${KEY_DIR_PREFIX}(.+)-[A-Za-z0-9]{6}$`);
const HAS_PROC = process.platform === 'linux';

interface Marked {
  pid: number;
  clusterId: string;
  owner?: string;
}

/** The cluster marker in a process's environment, when the process is ours and carries one. */
async function markerOf(pid: number, uid: number | undefined): Promise<Marked | undefined> {
  try {
    if (uid !== undefined && (await stat(`/proc/${pid}`)).uid !== uid) return undefined;
    const env = (await readFile(`/proc/${pid}/environ`)).toString('utf8').split('\0');
    const value = (name: string) => env.find((e) => e.startsWith(`${name}=`))?.slice(name.length + 1);
    const clusterId = value(CLUSTER_ENV);
    return clusterId ? { pid, clusterId, owner: value(OWNER_ENV) } : undefined;
  } catch {
    return undefined; // gone, or not readable
  }
}

async function markedProcesses(): Promise<Marked[]> {
  const uid = process.getuid?.();
  const pids = (await readdir('/proc')).filter((n) => /^\d+$/.test(n)).map(Number).filter((p) => p !== process.pid);
  const found = await Promise.all(pids.map((p) => markerOf(p, uid)));
  return found.filter((m): m is Marked => m !== undefined);
}

interface KeyDir {
  dir: string;
  clusterId: string;
  owner?: string;
  mtimeMs: number;
}

async function keyDirs(tmpDir: string): Promise<KeyDir[]> {
  const uid = process.getuid?.();
  const out: KeyDir[] = [];
  for (const name of await readdir(tmpDir)) {
    const m = DIR_NAME.exec(name);
    if (!m) continue;
    const dir = path.join(tmpDir, name);
    try {
      const st = await lstat(dir);
      if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
      let owner: string | undefined;
      try {
        const parsed = JSON.parse(await readFile(path.join(dir, OWNER_FILE), 'utf8')) as { owner?: unknown };
        if (typeof parsed.owner === 'string') owner = parsed.owner;
      } catch {
        // no owner file (yet): judged by age below
      }
      out.push({ dir, clusterId: m[1]!, owner, mtimeMs: st.mtimeMs });
    } catch {
      // removed meanwhile
    }
  }
  return out;
}

/** The owner identity a local cluster's record names (`<pid>:<start time>`, or its pid alone), if any. */
export function recordOwner(backend: Record<string, unknown>): string | undefined {
  if (typeof backend.owner === 'string') return backend.owner;
  return typeof backend.ownerPid === 'number' && Number.isInteger(backend.ownerPid) && backend.ownerPid > 0 ? String(backend.ownerPid) : undefined;
}

/** Local clusters' directories whose record names their owner (a directory that names none cannot be judged). */
async function stateDirs(): Promise<Array<{ clusterId: string; dir: string; owner: string }>> {
  const out: Array<{ clusterId: string; dir: string; owner: string }> = [];
  for (const r of await listClusterStates()) {
    const owner = r.kind === 'local' ? recordOwner(r.backend ?? {}) : undefined;
    if (owner !== undefined) out.push({ clusterId: r.id, dir: clusterDir(r.id), owner });
  }
  return out;
}

/** Gone, or a zombie waiting to be reaped (it holds nothing any more). */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  if (!HAS_PROC) return false;
  try {
    return /\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

async function waitGone(pids: number[], ms: number): Promise<number[]> {
  const end = Date.now() + ms;
  let left = pids.filter((p) => !gone(p));
  while (left.length > 0 && Date.now() < end) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    left = left.filter((p) => !gone(p));
  }
  return left;
}

/** Signal the processes that still carry this cluster's marker (a PID may have been reused since the scan). */
async function signalStill(pids: number[], clusterId: string, signal: NodeJS.Signals): Promise<void> {
  const uid = process.getuid?.();
  for (const pid of pids) {
    if ((await markerOf(pid, uid))?.clusterId !== clusterId) continue;
    try {
      process.kill(pid, signal);
    } catch {
      // gone meanwhile
    }
  }
}

/**
 * Find the local clusters this user left behind (their owner process is gone), kill their
 * processes (SIGTERM, SIGKILL after a grace period) and remove their key directories. A cluster
 * whose owner still runs is reported and left alone. `dryRun` only reports.
 */
export async function cleanupLocalClusters(options: LocalCleanupOptions = {}): Promise<LocalCleanupReport> {
  const tmpDir = options.tmpDir ?? os.tmpdir();
  const [procs, dirs, states] = await Promise.all([HAS_PROC ? markedProcesses() : Promise.resolve([]), keyDirs(tmpDir), stateDirs()]);
  const wanted = options.clusterIds ? new Set(options.clusterIds) : undefined;
  const byId = new Map<string, { procs: Marked[]; dirs: KeyDir[]; state?: { dir: string; owner: string } }>();
  const group = (id: string) => {
    let g = byId.get(id);
    if (!g) byId.set(id, (g = { procs: [], dirs: [] }));
    return g;
  };
  for (const id of options.clusterIds ?? []) group(id);
  for (const p of procs) if (!wanted || wanted.has(p.clusterId)) group(p.clusterId).procs.push(p);
  for (const d of dirs) if (!wanted || wanted.has(d.clusterId)) group(d.clusterId).dirs.push(d);
  // Only the directories of clusters that are gone: a running cluster's is left out of the report.
  for (const s of states) if ((!wanted || wanted.has(s.clusterId)) && (byId.has(s.clusterId) || !identityAlive(s.owner))) group(s.clusterId).state = s;

  const report: LocalCleanupReport = { clusters: [], processesSearched: HAS_PROC };
  for (const [clusterId, g] of byId) {
    const entry: LocalCleanupEntry = { clusterId, pids: g.procs.map((p) => p.pid).sort((a, b) => a - b), dirs: g.dirs.map((d) => d.dir), killed: [], removedDirs: [] };
    if (g.state) entry.stateDir = g.state.dir;
    report.clusters.push(entry);
    const owners = new Set([...g.procs, ...g.dirs, ...(g.state ? [g.state] : [])].map((x) => x.owner).filter((o): o is string => o !== undefined));
    const live = [...owners].find(identityAlive);
    if (live !== undefined) {
      entry.skipped = `its owner (pid ${live.split(':')[0]}) is still running`;
      continue;
    }
    if (owners.size === 0 && g.procs.length === 0 && g.dirs.some((d) => Date.now() - d.mtimeMs < UNOWNED_DIR_AGE_MS)) {
      entry.skipped = 'its key directory has no owner file yet: a cluster may be starting';
      continue;
    }
    if (options.dryRun) continue;
    const errors: string[] = [];
    if (entry.pids.length > 0) {
      await signalStill(entry.pids, clusterId, 'SIGTERM');
      const left = await waitGone(entry.pids, STOP_GRACE_MS);
      await signalStill(left, clusterId, 'SIGKILL');
      const stuck = await waitGone(left, STOP_GRACE_MS);
      entry.killed = entry.pids.filter((p) => !stuck.includes(p));
      if (stuck.length > 0) errors.push(`process(es) ${stuck.join(', ')} survived SIGKILL`);
    }
    for (const d of entry.dirs) {
      try {
        await rm(d, { recursive: true, force: true });
        entry.removedDirs.push(d);
      } catch (err) {
        errors.push(`${d}: ${(err as Error).message}`);
      }
    }
    if (entry.stateDir !== undefined) {
      // Last: with the processes gone, the credentials reach nothing.
      try {
        await rm(entry.stateDir, { recursive: true, force: true });
        entry.removedStateDir = true;
      } catch (err) {
        errors.push(`${entry.stateDir}: ${(err as Error).message}`);
      }
    }
    if (errors.length > 0) entry.error = errors.join('; ');
  }
  return report;
}
