/**
 * Names, paths and on-disk ownership records of the simulated cloud. Everything we create carries
 * the `dcsim` prefix, and every network records its owner (PID + process start time), so a later
 * run can tell leftovers of a dead run from the resources of a live one and remove only those.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const PREFIX = 'dcsim';
/** Ownership records (small files). */
export const STATE_ROOT = `/run/${PREFIX}`;
/** tmpfs: extracted base images and each VM's overlay (upper/work dirs). */
export const SHM_ROOT = `/dev/shm/${PREFIX}`;

/** The one address block of the whole simulated cloud. Nothing outside it is ever assigned. */
export const SIM_BLOCK = '10.77.0.0/16';

export const netnsName = (net: string, role: string) => `${PREFIX}-${net}-${role}`;
export const netStateDir = (net: string) => path.join(STATE_ROOT, 'nets', net);
export const netShmDir = (net: string) => path.join(SHM_ROOT, 'nets', net);
export const slotDir = (slot: number) => path.join(STATE_ROOT, 'slots', String(slot));

export interface Owner {
  pid: number;
  /** Field 22 of /proc/PID/stat: guards against PID reuse. */
  startTime: string;
}

/** Fields of /proc/PID/stat after the command: `[0]` the state (field 3), `[19]` the start time (field 22). */
function procStat(pid: number): string[] | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may contain spaces: fields after the last ')' are fixed.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

export function processStartTime(pid: number): string | null {
  return procStat(pid)?.[19] ?? null;
}

export function currentOwner(): Owner {
  return { pid: process.pid, startTime: processStartTime(process.pid) ?? '' };
}

/**
 * The owner still runs: its PID has the recorded start time (not reused) and is not a zombie or
 * dead task (state Z or X: exited, only its parent has not reaped it yet).
 */
export function ownerAlive(owner: Owner | null): boolean {
  if (!owner) return false;
  const stat = procStat(owner.pid);
  return stat !== null && stat[19] === owner.startTime && stat[0] !== 'Z' && stat[0] !== 'X';
}

export function readOwner(file: string): Owner | null {
  try {
    const o = JSON.parse(fs.readFileSync(file, 'utf8')) as Owner;
    return typeof o.pid === 'number' && typeof o.startTime === 'string' ? o : null;
  } catch {
    return null;
  }
}

export interface NetRecord {
  owner: Owner;
  /** Host-access slot (root-namespace routes), if any. */
  slot?: number;
  /** Root-namespace links created for host access. */
  hostLinks?: string[];
}

export function readNetRecord(net: string): NetRecord | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(netStateDir(net), 'net.json'), 'utf8')) as NetRecord;
  } catch {
    return null;
  }
}

export function writeNetRecord(net: string, rec: NetRecord): void {
  fs.mkdirSync(netStateDir(net), { recursive: true });
  fs.writeFileSync(path.join(netStateDir(net), 'net.json'), JSON.stringify(rec));
}

/** PIDs of VM launcher processes (the `unshare` that owns the VM's PID namespace), recorded at boot. */
export function recordVmPid(net: string, vmKey: string, pid: number): void {
  const dir = path.join(netStateDir(net), 'vms');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, vmKey), JSON.stringify({ pid, startTime: processStartTime(pid) ?? '' }));
}

export function forgetVmPid(net: string, vmKey: string): void {
  fs.rmSync(path.join(netStateDir(net), 'vms', vmKey), { force: true });
}

export function recordedVmPids(net: string): Owner[] {
  const dir = path.join(netStateDir(net), 'vms');
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names.map((n) => readOwner(path.join(dir, n))).filter((o): o is Owner => o !== null);
}
