/**
 * What ties a local cluster's processes to the Node process that owns them, with no help from
 * that process when it dies.
 *
 * Every Dask process is started by a small Python launcher (below) whose stdin is a pipe only the
 * owner holds the other end of. The kernel closes that end however the owner ends (close, crash,
 * `kill -9`), so end-of-file on stdin means "owner gone": the launcher then removes the cluster's
 * key directory and stops its Dask process group (SIGTERM, then SIGKILL after a grace period).
 * Plain POSIX (pipes, process groups): works on Linux and macOS alike.
 *
 * Each process also carries a marker in its environment (the cluster id and the owner's identity),
 * and each key directory a recognisable name and an `owner` file, so `cleanupLocalClusters()` can
 * find what a cluster left behind if even the launcher was killed.
 */
import { readFileSync } from 'node:fs';

/** How long a Dask process gets to shut down after SIGTERM before it is killed. */
export const STOP_GRACE_MS = 5_000;

/** Environment variable carrying the cluster id (not `DASK_*`: Dask and our config would read it). */
export const CLUSTER_ENV = 'DASKCLOUD_LOCAL_CLUSTER';
/** Environment variable carrying the owner's identity, `<pid>:<start time>` (see `processIdentity`). */
export const OWNER_ENV = 'DASKCLOUD_LOCAL_OWNER';
/** Name prefix of a local cluster's key directory under `os.tmpdir()`: `dask-cloud-local-<clusterId>-XXXXXX`. */
export const KEY_DIR_PREFIX = 'dask-cloud-local-';
/** File in the key directory naming the cluster and its owner (JSON `{ clusterId, owner }`). */
export const OWNER_FILE = 'owner';

/**
 * The launcher, run as `python -c LAUNCHER_PY <clusterId> <graceSeconds> <keyDir> <dask args...>`.
 * It runs Dask as its child (same process group, which the owner created with `detached`), reports
 * Dask's own exit status as its own, and watches stdin in a thread.
 *
 * Both this code and the Dask child start with `-c`, which puts the caller's working directory
 * first on `sys.path`; it is dropped before any other import, so a `dask.py`, `distributed.py`
 * or `subprocess.py` there cannot shadow the real modules. (Not `-P`: Python < 3.11 refuses it,
 * and the PYTHONSAFEPATH variable would leak into every subprocess a task starts.) The working
 * directory itself stays the caller's, so relative paths in tasks mean what they did.
 */
export const LAUNCHER_PY = `# dask-cloud local launcher (providers/local/watchdog.ts)
import sys
if sys.path[:1] == [""]:
    del sys.path[0]
import os, shutil, signal, subprocess, threading, time

grace, keydir, args = float(sys.argv[2]), sys.argv[3], sys.argv[4:]
BOOT = "# dask-cloud: dask without the caller's directory on sys.path\\nimport sys\\nif sys.path[:1] == ['']:\\n    del sys.path[0]\\nimport runpy\\nrunpy.run_module('dask', run_name='__main__', alter_sys=True)"
orphaned = threading.Event()

def kill_group(sig):
    try:
        os.killpg(os.getpgrp(), sig)
    except OSError:
        pass

# A normal stop signals the whole group: Dask shuts down by itself and its status is reported.
signal.signal(signal.SIGTERM, lambda *_: None)
child = subprocess.Popen([sys.executable, "-c", BOOT] + args, stdin=subprocess.DEVNULL)

def watch():
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    orphaned.set()
    shutil.rmtree(keydir, ignore_errors=True)
    kill_group(signal.SIGTERM)
    time.sleep(grace)
    kill_group(signal.SIGKILL)

threading.Thread(target=watch, daemon=True).start()
code = child.wait()
if orphaned.is_set():
    # A nanny's worker can outlive the nanny: take the whole group, this launcher included.
    kill_group(signal.SIGKILL)
if code < 0:
    try:
        signal.signal(-code, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), -code)
sys.exit(code)
`;

/** Arguments for the Python interpreter that make it the launcher of one Dask process. */
export function launcherArgs(clusterId: string, keyDir: string, daskArgs: string[]): string[] {
  return ['-c', LAUNCHER_PY, clusterId, String(STOP_GRACE_MS / 1000), keyDir, ...daskArgs];
}

/** Fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses). */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

const HAS_PROC = process.platform === 'linux';

/**
 * A process's identity that survives PID reuse: `<pid>:<start time>` on Linux (field 22 of
 * /proc/<pid>/stat), plain `<pid>` elsewhere. Undefined when the process does not exist.
 */
export function processIdentity(pid: number): string | undefined {
  if (!HAS_PROC) return String(pid);
  // Field 3 (state) is index 0 here, so field 22 (starttime) is index 19.
  const start = statFields(pid)?.[19];
  return start === undefined ? undefined : `${pid}:${start}`;
}

/** Whether the process an identity names still runs (a zombie, or a new process with its PID, does not count). */
export function identityAlive(identity: string): boolean {
  const [pidText, start] = identity.split(':');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (!HAS_PROC) {
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
  const fields = statFields(pid);
  if (!fields || fields[0] === 'Z' || fields[0] === 'X') return false;
  return start === undefined || fields[19] === start;
}

let ownIdentity: string | undefined;
/** This process's identity, as recorded in its clusters' markers. */
export function ownerIdentity(): string {
  ownIdentity ??= processIdentity(process.pid) ?? String(process.pid);
  return ownIdentity;
}
