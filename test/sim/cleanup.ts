/**
 * Removes leftovers of simulated clouds whose owning process is gone: VM processes (by PID),
 * network namespaces named `dcsim-*`, root-namespace host-access links, tmpfs directories.
 * Resources of a live owner are never touched (unless `all: true`).
 *
 * Called at the start of every SimNetwork.create(); also runnable by hand:
 *   tsx test/sim/cleanup.ts          # stale leftovers only
 *   tsx test/sim/cleanup.ts --all    # everything with our prefix, including the extracted base image
 *   tsx test/sim/cleanup.ts --all --remove-blackhole   # and the root namespace's safety route
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import {
  PREFIX,
  SHM_ROOT,
  SIM_BLOCK,
  STATE_ROOT,
  netShmDir,
  netStateDir,
  ownerAlive,
  readNetRecord,
  recordedVmPids,
  slotDir,
} from './state';
import { debug, killPid, pidAlive } from './exec';

export interface CleanupReport {
  networks: string[];
  namespaces: string[];
  pidsKilled: number[];
  hostLinks: string[];
  dirs: string[];
}

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return '';
  }
}

/** Our network namespaces (`dcsim-<net>-<role>`), from `ip netns list`. */
export function listOurNamespaces(): string[] {
  return sh('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(`${PREFIX}-`));
}

const netOf = (ns: string) => ns.split('-')[1] ?? '';

/** PIDs of processes inside a network namespace (exact, from the kernel). */
export function pidsInNamespace(ns: string): number[] {
  return sh('ip', ['netns', 'pids', ns])
    .split('\n')
    .map((s) => Number.parseInt(s, 10))
    .filter((n) => Number.isInteger(n) && n > 1 && n !== process.pid);
}

function waitGone(pids: number[], ms: number): void {
  const deadline = Date.now() + ms;
  while (pids.some(pidAlive) && Date.now() < deadline) {
    execFileSync('sleep', ['0.05']);
  }
}

/**
 * Synchronously tears one network down by name: kills its VM launchers and every process left in
 * its namespaces (by PID), deletes the namespaces (which removes their veths, including host-access
 * links into the root namespace), removes its state and tmpfs directories. Safe to repeat.
 */
export function teardownNetworkSync(net: string, report?: CleanupReport): void {
  const rec = readNetRecord(net);
  const namespaces = listOurNamespaces().filter((ns) => netOf(ns) === net);
  // 1. VM launchers: SIGKILL on `unshare --kill-child` takes the VM's whole PID namespace with it.
  const launchers = recordedVmPids(net)
    .filter((o) => ownerAlive(o))
    .map((o) => o.pid);
  for (const pid of launchers) killPid(pid, 'SIGKILL');
  // 2. Whatever still runs inside our namespaces (VM processes, client commands).
  const inside = namespaces.flatMap(pidsInNamespace);
  for (const pid of inside) killPid(pid, 'SIGKILL');
  waitGone([...launchers, ...inside], 5_000);
  // 3. Host-access links first, from the root side: a veth whose peer namespace is deleted dies
  //    only when the kernel gets round to it, and until then its /20 route still wins over the
  //    blackhole — the next network (or test) would see it. Deleting our end removes the pair now.
  for (const link of rec?.hostLinks ?? []) {
    if (sh('ip', ['-o', 'link', 'show', 'dev', link]).trim()) sh('ip', ['link', 'delete', link]);
  }
  const linksDeadline = Date.now() + 5_000;
  while ((rec?.hostLinks ?? []).some((l) => sh('ip', ['-o', 'link', 'show', 'dev', l]).trim()) && Date.now() < linksDeadline) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
  // 4. Namespaces (the remaining veth pairs die with them).
  for (const ns of namespaces) sh('ip', ['netns', 'delete', ns]);
  if (rec?.slot !== undefined) {
    const slotOwner = readSlotOwner(rec.slot);
    if (slotOwner === net) fs.rmSync(slotDir(rec.slot), { recursive: true, force: true });
  }
  fs.rmSync(netShmDir(net), { recursive: true, force: true });
  fs.rmSync(netStateDir(net), { recursive: true, force: true });
  if (report) {
    report.networks.push(net);
    report.namespaces.push(...namespaces);
    report.pidsKilled.push(...launchers, ...inside);
    report.hostLinks.push(...(rec?.hostLinks ?? []));
  }
  debug('net %s: torn down (%d namespaces, %d processes)', net, namespaces.length, launchers.length + inside.length);
}

export function readSlotOwner(slot: number): string | null {
  try {
    return fs.readFileSync(path.join(slotDir(slot), 'net'), 'utf8').trim();
  } catch {
    return null;
  }
}

function netOwnerAlive(net: string): boolean {
  const rec = readNetRecord(net);
  return rec !== null && ownerAlive(rec.owner);
}

/** Removes leftovers whose owner is dead (or everything of ours with `all`). Synchronous and bounded. */
export function cleanupStale(options: { all?: boolean } = {}): CleanupReport {
  const report: CleanupReport = { networks: [], namespaces: [], pidsKilled: [], hostLinks: [], dirs: [] };
  const nets = new Set<string>();
  for (const ns of listOurNamespaces()) nets.add(netOf(ns));
  for (const dir of [path.join(STATE_ROOT, 'nets'), path.join(SHM_ROOT, 'nets')]) {
    try {
      for (const n of fs.readdirSync(dir)) nets.add(n);
    } catch {
      /* none */
    }
  }
  for (const net of nets) {
    if (!net) continue;
    if (options.all || !netOwnerAlive(net)) teardownNetworkSync(net, report);
  }
  // Slots whose network is gone.
  try {
    for (const s of fs.readdirSync(path.join(STATE_ROOT, 'slots'))) {
      const owner = readSlotOwner(Number(s));
      // A slot is claimed (mkdir) a moment before its owner file is written: leave young ones alone.
      const young = owner === null && Date.now() - fs.statSync(slotDir(Number(s))).mtimeMs < 10_000;
      if (options.all || (!young && (owner === null || !netOwnerAlive(owner)))) {
        fs.rmSync(slotDir(Number(s)), { recursive: true, force: true });
        report.dirs.push(slotDir(Number(s)));
      }
    }
  } catch {
    /* none */
  }
  // Root-namespace host-access links of ours whose network is gone (normally removed with the core namespace).
  for (const line of sh('ip', ['-o', 'link', 'show']).split('\n')) {
    const m = /^\d+:\s+(dcsim[a-z]\d+)[@:]/.exec(line);
    if (!m) continue;
    const slot = Number(/\d+$/.exec(m[1])![0]);
    const owner = readSlotOwner(slot);
    if (options.all || owner === null || !netOwnerAlive(owner)) {
      sh('ip', ['link', 'delete', m[1]]);
      report.hostLinks.push(m[1]);
    }
  }
  // Extracted base images: stale extractions (a `.tmp` whose extractor died) always; all with `all`.
  try {
    for (const d of fs.readdirSync(SHM_ROOT)) {
      if (!d.startsWith('base-')) continue;
      const tmp = /\.tmp-(\d+)$/.exec(d);
      const stale = tmp !== null && !pidAlive(Number(tmp[1]));
      if (options.all || stale) {
        fs.rmSync(path.join(SHM_ROOT, d), { recursive: true, force: true });
        report.dirs.push(path.join(SHM_ROOT, d));
      }
    }
  } catch {
    /* none */
  }
  // The blackhole route for our block in the root namespace is a safety net: it stays.
  return report;
}

/**
 * Removes the root namespace's `blackhole 10.77.0.0/16` safety route, only when none of our
 * namespaces is left. Normally it stays: it costs nothing and turns an accidental dial of a VM
 * address from the root namespace into a local error.
 */
export function removeRootBlackhole(): boolean {
  if (listOurNamespaces().length > 0) return false;
  sh('ip', ['route', 'del', 'blackhole', SIM_BLOCK]);
  return !sh('ip', ['route', 'show', 'exact', SIM_BLOCK]).includes('blackhole');
}

if (typeof require !== 'undefined' && typeof module !== 'undefined' && require.main === module) {
  const report = cleanupStale({ all: process.argv.includes('--all') });
  if (process.argv.includes('--remove-blackhole')) {
    // eslint-disable-next-line no-console
    console.log(`blackhole ${SIM_BLOCK} removed: ${removeRootBlackhole()}`);
  }
  // eslint-disable-next-line no-console
  console.log(JSON.stringify(report, null, 2));
}
