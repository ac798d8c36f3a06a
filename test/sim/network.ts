/**
 * The simulated cloud's network, built entirely inside network namespaces we create:
 *
 *   dcsim-<net>-core      two bridges: `brvpc` (private block) and `brinet` (public block)
 *   dcsim-<net>-vpc       a client inside the VPC   (eth0 on brvpc), e.g. a Python client
 *   dcsim-<net>-inet      a client on "the internet" (eth0 on brinet): reaches VM public addresses only
 *   dcsim-<net>-vm<N>     one per VM: eth0 on brvpc (private), optional eth1 on brinet (public),
 *                         ingress firewall in nftables
 *
 * Network safety (see shared/FACTS.md): none of these namespaces has a default route, so nothing in
 * them can reach anything outside the two blocks; every dial through `run(..., { dials })` is checked
 * with `ip route get` first. In the root namespace — which has a default route to the outside — we
 * install `blackhole 10.77.0.0/16` before anything exists, so an accidental dial of a VM address from
 * the test process fails locally instead of leaving the machine. With `hostAccess`, the root
 * namespace additionally gets one veth into each bridge (more specific routes than the blackhole),
 * so the test process itself can talk to VMs; `assertHostRoute` checks before dialling.
 *
 * Teardown is by PID and by name, always: `destroy()`, an exit/signal handler for the process, and
 * `cleanupStale()` at the start of every `create()` for leftovers of runs that died.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { SimError, debug, run as runCmd, type RunOptions, type RunResult } from './exec';
import { cleanupStale, readSlotOwner, teardownNetworkSync } from './cleanup';
import {
  SIM_BLOCK,
  currentOwner,
  netStateDir,
  netnsName,
  ownerAlive,
  readNetRecord,
  slotDir,
  writeNetRecord,
  type NetRecord,
} from './state';
import { assertLocalRoute, assertNoDefaultRoute, inCidr, intToIp, ipToInt, routeGet, type RouteInfo } from './net-util';
import { renderNftScript, type FirewallRule } from './firewall';
import { SimVm, startVm, type BootVmOptions } from './vm';

export type { FirewallRule } from './firewall';
export type { BootVmOptions } from './vm';

/** Where a command runs: one of the two client namespaces, or a VM's namespace (network only). */
export type NetLocation = 'vpc' | 'internet' | { vm: string };

export interface SimNetworkOptions {
  /** Short label, becomes part of namespace names (letters and digits are kept). */
  name: string;
  /**
   * Let the test process itself (root namespace) reach VM addresses: one veth from the root
   * namespace into each bridge, on a per-network address slot. Default false: only processes run
   * through `run()` inside our namespaces can reach VMs.
   */
  hostAccess?: boolean;
}

export interface SimRunOptions extends RunOptions {
  /** Addresses the command will dial: each is checked with `ip route get` in that namespace first. */
  dials?: string[];
}

const PREFIX_LEN = 20;
const MAX_HOST_SLOTS = 8;
/** VM addresses: from base+2 (the fakes' allocators start there too) up to the reserved top. */
const FIRST_HOST = 2;
const BLOCK_SIZE = 2 ** (32 - PREFIX_LEN);
/** The top of each block is ours: base+SIZE-2 = the host's link (hostAccess), base+SIZE-3 = the client namespace. */
const HOST_OFFSET = BLOCK_SIZE - 2;
const CLIENT_OFFSET = BLOCK_SIZE - 3;
const LAST_HOST = BLOCK_SIZE - 4;

interface VmEntry {
  vm: SimVm;
  ns: string;
  privateIp: string;
  publicIp?: string;
}

const live = new Set<SimNetwork>();
let handlersInstalled = false;

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const n of live) n.destroySync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = () => {
      for (const n of live) n.destroySync();
      process.removeListener(sig, handler);
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

/**
 * A VM interface's MAC is derived from its address (locally administered, 02:00:<IPv4>), so an
 * address handed out again after a VM was deleted keeps its MAC and no neighbour cache holds a
 * stale entry for it (a stale entry silently black-holes the first connections for seconds).
 */
export function macFor(addr: string): string {
  const n = ipToInt(addr);
  return ['02', '00', ...[n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

async function ip(args: string[]): Promise<RunResult> {
  return runCmd('ip', args, { timeoutMs: 10_000 });
}

/** Root namespace: make sure our whole block is a blackhole unless a more specific route of ours exists. */
async function ensureRootBlackhole(): Promise<void> {
  const r = await runCmd('ip', ['-j', 'route', 'show', 'exact', SIM_BLOCK], { timeoutMs: 5_000 });
  const routes = JSON.parse(r.stdout || '[]') as Array<{ type?: string; dev?: string }>;
  if (routes.some((x) => x.type === 'blackhole')) return;
  if (routes.length > 0) {
    throw new SimError(`the root namespace already routes ${SIM_BLOCK} (${r.stdout.trim()}): refusing to share that block`);
  }
  await runCmd('ip', ['route', 'add', 'blackhole', SIM_BLOCK], { timeoutMs: 5_000 });
  debug('root namespace: blackhole %s installed', SIM_BLOCK);
}

async function disableIpv6(ns: string): Promise<void> {
  await runCmd('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'], {
    timeoutMs: 5_000,
    check: false,
  });
}

async function addNamespace(ns: string): Promise<void> {
  await ip(['netns', 'add', ns]);
  await disableIpv6(ns);
  await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
}

function claimSlot(net: string): number {
  fs.mkdirSync(slotDir(0).replace(/\/0$/, ''), { recursive: true });
  for (let slot = 0; slot < MAX_HOST_SLOTS; slot++) {
    try {
      fs.mkdirSync(slotDir(slot)); // atomic: only one process wins a slot
    } catch {
      continue;
    }
    fs.writeFileSync(`${slotDir(slot)}/net`, net);
    return slot;
  }
  throw new SimError(`all ${MAX_HOST_SLOTS} host-access slots are taken (by ${[...Array(MAX_HOST_SLOTS).keys()].map(readSlotOwner).join(', ')})`);
}

export class SimNetwork implements AsyncDisposable {
  /** Unique id of this network; namespaces are `dcsim-<id>-*`. */
  readonly id: string;
  /** Private (VPC) block, e.g. 10.77.0.0/20. */
  readonly privateCidr: string;
  /** Public ("internet") block, e.g. 10.77.128.0/20. */
  readonly publicCidr: string;
  /** Address of the `vpc` client namespace. */
  readonly vpcClientIp: string;
  /** Address of the `internet` client namespace. */
  readonly internetClientIp: string;
  /** With hostAccess: the root namespace's addresses on the two bridges. */
  readonly hostIps: { private: string; public: string } | null;
  /** How long the last base-image extraction took in this process (0 = reused). */
  baseExtractMs = 0;

  private readonly privateBase: number;
  private readonly publicBase: number;
  private readonly usedIps = new Set<string>();
  /** Client namespaces' and host links' addresses: never a VM's. */
  private readonly reserved = new Set<string>();
  private readonly lastAllocated = new Map<number, number>();
  private readonly vms = new Map<string, VmEntry>();
  private vmCounter = 0;
  private destroyed = false;
  private readonly hostLinks: string[];

  private constructor(id: string, slot: number | null) {
    this.id = id;
    const s = slot ?? 0;
    this.privateBase = ipToInt(`10.77.${s * 16}.0`);
    this.publicBase = ipToInt(`10.77.${128 + s * 16}.0`);
    this.privateCidr = `${intToIp(this.privateBase)}/${PREFIX_LEN}`;
    this.publicCidr = `${intToIp(this.publicBase)}/${PREFIX_LEN}`;
    this.vpcClientIp = intToIp(this.privateBase + CLIENT_OFFSET);
    this.internetClientIp = intToIp(this.publicBase + CLIENT_OFFSET);
    this.hostIps =
      slot === null ? null : { private: intToIp(this.privateBase + HOST_OFFSET), public: intToIp(this.publicBase + HOST_OFFSET) };
    this.hostLinks = slot === null ? [] : [`dcsimv${slot}`, `dcsimi${slot}`];
    for (const x of [HOST_OFFSET, CLIENT_OFFSET]) {
      this.reserved.add(intToIp(this.privateBase + x));
      this.reserved.add(intToIp(this.publicBase + x));
    }
  }

  /** Builds the network. Removes stale leftovers of dead runs first. Bounded; cleans up on failure. */
  static async create(options: SimNetworkOptions): Promise<SimNetwork> {
    if (process.getuid?.() !== 0) throw new SimError('the simulated cloud needs root (network namespaces, nspawn)');
    cleanupStale();
    await ensureRootBlackhole();
    const label = options.name.toLowerCase().replace(/[^a-z0-9]/g, '').slice(0, 8) || 'net';
    const id = `${label}${randomBytes(3).toString('hex')}`;
    const record: NetRecord = { owner: currentOwner() };
    // The ownership record exists before any resource does, so a crash at any point is cleanable.
    writeNetRecord(id, record);
    let slot: number | null = null;
    if (options.hostAccess) {
      slot = claimSlot(id);
      record.slot = slot;
      record.hostLinks = [`dcsimv${slot}`, `dcsimi${slot}`];
      writeNetRecord(id, record);
    }
    const net = new SimNetwork(id, slot);
    live.add(net);
    installExitHandlers();
    try {
      await net.build();
    } catch (e) {
      net.destroySync();
      throw e;
    }
    return net;
  }

  private ns(role: string): string {
    return netnsName(this.id, role);
  }

  private async build(): Promise<void> {
    const core = this.ns('core');
    await addNamespace(core);
    for (const br of ['brvpc', 'brinet']) {
      await ip(['-n', core, 'link', 'add', br, 'type', 'bridge']);
      await ip(['-n', core, 'link', 'set', br, 'up']);
    }
    // Client namespaces.
    for (const [role, br, addr] of [
      ['vpc', 'brvpc', this.vpcClientIp],
      ['inet', 'brinet', this.internetClientIp],
    ] as const) {
      const ns = this.ns(role);
      await addNamespace(ns);
      await ip(['-n', core, 'link', 'add', `c${role}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      await ip(['-n', core, 'link', 'set', `c${role}`, 'master', br, 'up']);
      await ip(['-n', ns, 'addr', 'add', `${addr}/${PREFIX_LEN}`, 'dev', 'eth0']);
      await ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      await this.assertIsolated(ns);
    }
    if (this.hostIps) {
      // Root-namespace ends are created from inside the core namespace and moved out by PID.
      const [vLink, iLink] = this.hostLinks as [string, string];
      for (const [link, br, addr] of [
        [vLink, 'brvpc', this.hostIps.private],
        [iLink, 'brinet', this.hostIps.public],
      ] as const) {
        const inner = `h${link.slice(5)}`;
        await ip(['-n', core, 'link', 'add', inner, 'type', 'veth', 'peer', 'name', link, 'netns', String(process.pid)]);
        await ip(['-n', core, 'link', 'set', inner, 'master', br, 'up']);
        await ip(['addr', 'add', `${addr}/${PREFIX_LEN}`, 'dev', link]);
        await ip(['link', 'set', link, 'up']);
      }
      // The root namespace now routes our two blocks to our links; check it does, and nothing else.
      await assertLocalRoute(null, this.vpcClientIp, [vLink]);
      await assertLocalRoute(null, this.internetClientIp, [iLink]);
    }
    debug('net %s: up (private %s, public %s%s)', this.id, this.privateCidr, this.publicCidr, this.hostIps ? ', host access' : '');
  }

  /** A namespace of ours has no default route and cannot route to anything outside our block. */
  private async assertIsolated(ns: string): Promise<void> {
    await assertNoDefaultRoute(ns);
    for (const outside of ['192.0.2.1', '8.8.8.8', '10.0.0.1']) {
      const r = await routeGet(ns, outside);
      if (r) throw new SimError(`namespace ${ns} routes ${outside} (dev ${r.dev}${r.gateway ? ` via ${r.gateway}` : ''}): refusing to use it`);
    }
  }

  /** The next free address in the private block. */
  allocatePrivateIp(): string {
    return this.allocate(this.privateBase);
  }

  /** The next free address in the public block. */
  allocatePublicIp(): string {
    return this.allocate(this.publicBase);
  }

  /** Returns an address to the pool (e.g. after a VM was deleted). */
  releaseIp(addr: string): void {
    if ([...this.vms.values()].some((v) => v.privateIp === addr || v.publicIp === addr)) {
      throw new SimError(`${addr} is still used by a VM`);
    }
    this.usedIps.delete(addr);
  }

  private allocate(base: number): string {
    // Round-robin from the last address handed out, as clouds do: a fresh VM rarely gets the
    // address of one just deleted.
    const hosts = LAST_HOST - FIRST_HOST + 1;
    const last = this.lastAllocated.get(base) ?? FIRST_HOST - 1;
    for (let k = 1; k <= hosts; k++) {
      const i = FIRST_HOST + ((last - FIRST_HOST + k) % hosts + hosts) % hosts;
      const a = intToIp(base + i);
      if (!this.usedIps.has(a)) {
        this.usedIps.add(a);
        this.lastAllocated.set(base, i);
        return a;
      }
    }
    throw new SimError(`no free address left in ${intToIp(base)}/${PREFIX_LEN}`);
  }

  /** Is `addr` usable by a VM of this network (in the block, not the network/broadcast/reserved addresses)? */
  private checkVmAddress(addr: string, cidr: string, what: string): void {
    if (!inCidr(addr, cidr)) throw new SimError(`${what} ${addr} is not in ${cidr}`);
    const offset = ipToInt(addr) - ipToInt(cidr.split('/')[0]!);
    if (offset < 1 || offset > LAST_HOST || this.reserved.has(addr)) {
      throw new SimError(`${what} ${addr} is reserved in ${cidr} (VMs may use offsets 1..${LAST_HOST})`);
    }
  }

  /** The network namespace name behind a location. */
  namespaceOf(where: NetLocation): string {
    if (where === 'vpc') return this.ns('vpc');
    if (where === 'internet') return this.ns('inet');
    const entry = this.vms.get(where.vm);
    if (!entry) throw new SimError(`no VM ${where.vm} in network ${this.id}`);
    return entry.ns;
  }

  /** `ip route get ADDR` from a location; throws unless ADDR is ours and directly attached (no gateway). */
  async checkRoute(where: NetLocation, addr: string): Promise<RouteInfo> {
    return assertLocalRoute(this.namespaceOf(where), addr);
  }

  /** Root namespace (hostAccess only): throws unless ADDR goes out through this network's host links. */
  async assertHostRoute(addr: string): Promise<RouteInfo> {
    if (!this.hostIps) throw new SimError(`network ${this.id} was created without hostAccess`);
    return assertLocalRoute(null, addr, this.hostLinks);
  }

  /**
   * Runs a command inside a namespace (`ip netns exec`), with a bounded timeout (default 20 s,
   * at most 60 s). For a VM location this runs a *host* binary in the VM's network namespace only.
   */
  async run(where: NetLocation, cmd: string, args: string[], options: SimRunOptions = {}): Promise<RunResult> {
    this.assertLive();
    const ns = this.namespaceOf(where);
    await assertNoDefaultRoute(ns);
    for (const addr of options.dials ?? []) await assertLocalRoute(ns, addr);
    return runCmd('ip', ['netns', 'exec', ns, cmd, ...args], options);
  }

  /**
   * Tries a TCP connection from a location (Node itself, run inside the namespace; route checked
   * first). `open` = connected; `timeout` = no answer (e.g. dropped by a firewall); otherwise the
   * error code (`ECONNREFUSED`, ...).
   */
  async probeTcp(where: NetLocation, addr: string, port: number, options: { timeoutMs?: number } = {}): Promise<string> {
    const timeoutMs = Math.min(options.timeoutMs ?? 2_000, 30_000);
    const code = `
      const s = require('net').connect({ host: ${JSON.stringify(addr)}, port: ${Number(port)} });
      const done = (r) => { process.stdout.write(r); process.exit(0); };
      s.setTimeout(${timeoutMs}, () => done('timeout'));
      s.on('connect', () => done('open'));
      s.on('error', (e) => done(e.code || String(e)));`;
    const r = await this.run(where, process.execPath, ['-e', code], { dials: [addr], timeoutMs: timeoutMs + 10_000 });
    return r.stdout.trim();
  }

  /** Replaces a VM's ingress rules (atomically; works while the VM runs). */
  async setFirewall(vmId: string, rules: FirewallRule[]): Promise<void> {
    this.assertLive();
    const ns = this.namespaceOf({ vm: vmId });
    await this.applyFirewall(ns, rules);
  }

  /** The VM's current nftables rule set, as text. */
  async firewallRules(vmId: string): Promise<string> {
    const ns = this.namespaceOf({ vm: vmId });
    return (await runCmd('ip', ['netns', 'exec', ns, 'nft', 'list', 'ruleset'], { timeoutMs: 5_000 })).stdout;
  }

  private async applyFirewall(ns: string, rules: FirewallRule[]): Promise<void> {
    const script = renderNftScript(rules);
    await runCmd('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: script, timeoutMs: 10_000 });
  }

  /**
   * Boots a VM: its namespace and interfaces, its firewall (in place before the first packet), a
   * NoCloud seed with the user-data, then `systemd-nspawn --boot` on an overlay of the base image.
   * Resolves once the VM's init is running; `waitForCloudInit()` on the result waits for cloud-init.
   */
  async bootVm(options: BootVmOptions): Promise<SimVm> {
    this.assertLive();
    const { id, privateIp, publicIp } = options;
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(id)) throw new SimError(`bad VM id ${JSON.stringify(id)}`);
    const hostname = options.metaData?.hostname;
    if (hostname !== undefined && !/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(hostname)) {
      throw new SimError(`bad hostname ${JSON.stringify(hostname)}`);
    }
    if (this.vms.has(id)) throw new SimError(`VM ${id} already exists in network ${this.id}`);
    this.checkVmAddress(privateIp, this.privateCidr, 'private IP');
    if (publicIp !== undefined) this.checkVmAddress(publicIp, this.publicCidr, 'public IP');
    for (const a of [privateIp, publicIp]) {
      if (a === undefined) continue;
      if ([...this.vms.values()].some((v) => v.privateIp === a || v.publicIp === a)) throw new SimError(`${a} is already used by another VM`);
      this.usedIps.add(a);
    }
    const key = `vm${++this.vmCounter}`;
    const ns = this.ns(key);
    const core = this.ns('core');
    try {
      await addNamespace(ns);
      await ip(['-n', core, 'link', 'add', `p${key}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns, 'address', macFor(privateIp)]);
      await ip(['-n', core, 'link', 'set', `p${key}`, 'master', 'brvpc', 'up']);
      await ip(['-n', ns, 'addr', 'add', `${privateIp}/${PREFIX_LEN}`, 'dev', 'eth0']);
      await ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      if (publicIp !== undefined) {
        await ip(['-n', core, 'link', 'add', `u${key}`, 'type', 'veth', 'peer', 'name', 'eth1', 'netns', ns, 'address', macFor(publicIp)]);
        await ip(['-n', core, 'link', 'set', `u${key}`, 'master', 'brinet', 'up']);
        await ip(['-n', ns, 'addr', 'add', `${publicIp}/${PREFIX_LEN}`, 'dev', 'eth1']);
        await ip(['-n', ns, 'link', 'set', 'eth1', 'up']);
      }
      await this.applyFirewall(ns, options.firewall ?? []);
      await this.assertIsolated(ns);
    } catch (e) {
      await runCmd('ip', ['netns', 'delete', ns], { check: false, timeoutMs: 10_000 });
      for (const a of [privateIp, publicIp]) if (a !== undefined) this.usedIps.delete(a);
      throw e;
    }
    const vm = await startVm({
      options,
      netId: this.id,
      vmKey: key,
      netns: ns,
      onBaseExtracted: (ms) => {
        this.baseExtractMs = ms;
      },
      release: async () => {
        this.vms.delete(id);
        await runCmd('ip', ['netns', 'delete', ns], { check: false, timeoutMs: 10_000 });
        for (const a of [privateIp, publicIp]) if (a !== undefined) this.usedIps.delete(a);
      },
    }).catch(async (e: unknown) => {
      await runCmd('ip', ['netns', 'delete', ns], { check: false, timeoutMs: 10_000 });
      for (const a of [privateIp, publicIp]) if (a !== undefined) this.usedIps.delete(a);
      throw e;
    });
    this.vms.set(id, { vm, ns, privateIp, publicIp });
    return vm;
  }

  /** A running (or exited but not yet stopped) VM by id. */
  vm(id: string): SimVm | undefined {
    return this.vms.get(id)?.vm;
  }

  /** All VMs that have not been stopped. */
  /** Every running VM's nftables ruleset, for failure messages (most e2e failures are rules). */
  async firewallDump(): Promise<string> {
    const out: string[] = [];
    for (const vm of this.listVms()) {
      out.push(`--- ${vm.id} ${vm.privateIp}`, (await this.run({ vm: vm.id }, 'nft', ['list', 'ruleset'], { check: false })).stdout);
    }
    return out.join('\n');
  }

  listVms(): SimVm[] {
    return [...this.vms.values()].map((v) => v.vm);
  }

  private assertLive(): void {
    if (this.destroyed) throw new SimError(`network ${this.id} was destroyed`);
  }

  /** Stops every VM (in parallel, bounded) and removes everything this network created. Idempotent. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    await Promise.allSettled([...this.vms.values()].map((v) => v.vm.stop({ graceful: false })));
    this.destroySync();
  }

  /** Synchronous teardown by PID and by name (exit handlers use this). Idempotent. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    const rec = readNetRecord(this.id);
    if (rec && !ownerAlive(rec.owner)) debug('net %s: record owned by a dead process', this.id);
    teardownNetworkSync(this.id);
    fs.rmSync(netStateDir(this.id), { recursive: true, force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.destroy();
  }
}
