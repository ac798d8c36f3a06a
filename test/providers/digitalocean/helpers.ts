/**
 * Shared pieces of the DigitalOcean provider tests: the fake on loopback address blocks, a booter
 * that runs each Droplet's Dask process locally (test/sim/process-booter.ts) and gives it a
 * "public interface", and small helpers for call sequences and Python clients.
 *
 * Network safety (FACTS.md): every fake here hands out 127.78.x.x addresses only (all of 127/8 is
 * local on Linux), so whatever the library dials (scheduler readiness, clients) stays on this
 * machine. 127.78/16 is DigitalOcean's: LOOPBACK_POOLS and the EC2 tests use 127.77/16, the GCP
 * tests 127.80-207. Each test file takes its own slot in it, so files running in parallel never
 * hand out the same scheduler address and port.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { expect } from 'vitest';
import { FakeDigitalOcean, type FakeDigitalOceanOptions } from '../../fakes/digitalocean';
import type { BootRequest, BootedVm, FirewallRule, VmBooter } from '../../fakes/core';
import { ProcessBooter } from '../../sim/process-booter';
import { DropletCluster, type DropletClusterOptions } from '../../../providers/digitalocean';
import type { DropletAdapterOptions } from '../../../providers/digitalocean/adapter';
import { pythonWithDask } from '../../helpers/prereq';

/** Loopback blocks of one test file: private 127.78.(16k).0/20, public 127.78.(128+16k).0/20. */
export function loopbackPools(slot: number): { privateCidr: string; publicCidr: string } {
  if (!Number.isInteger(slot) || slot < 0 || slot > 7) throw new Error('slot must be 0..7');
  return { privateCidr: `127.78.${16 * slot}.0/20`, publicCidr: `127.78.${128 + 16 * slot}.0/20` };
}

/** Options of a `DropletAdapter` made directly (no DropletCluster): public mode in nyc3, the defaults' sizes and image. */
export function adapterOptions(api: DropletAdapterOptions['api'], timing: Pick<DropletAdapterOptions, 'activeTimeoutMs' | 'pollIntervalMs'>): DropletAdapterOptions {
  return {
    api,
    region: 'nyc3',
    regionExplicit: true,
    schedulerSize: 's-2vcpu-4gb',
    workerSize: 's-2vcpu-4gb',
    image: 'ubuntu-24-04-x64',
    sshKeys: [],
    monitoring: false,
    tags: [],
    privateNetworking: false,
    ingressCidrs: ['0.0.0.0/0'],
    ...timing,
  };
}

/** A fake on loopback blocks (never the 10.77 defaults: tests may dial what it hands out). */
export async function startFake(slot: number, options: FakeDigitalOceanOptions = {}): Promise<FakeDigitalOcean> {
  const fake = await FakeDigitalOcean.start({ lifecycleMs: 200, firewallApplyMs: 50, ...options, ...loopbackPools(slot) });
  if (!fake.pools.private.cidr.startsWith('127.') || !fake.pools.public.cidr.startsWith('127.')) {
    await fake.stop();
    throw new Error('the DigitalOcean fake must hand out loopback addresses only');
  }
  return fake;
}

/** Cluster options that talk to the fake, poll fast, and read console output from the fake. */
export function clusterOptions(fake: FakeDigitalOcean, extra: DropletClusterOptions = {}): DropletClusterOptions {
  return {
    token: fake.token,
    endpoint: fake.endpoint,
    pollIntervalMs: 50,
    activeTimeoutMs: 15_000,
    schedulerTimeoutMs: 30_000,
    workersTimeoutMs: 30_000,
    closeOnSignals: false,
    consoleOutput: (d) => fake.consoleOutput(d.id),
    // Start/scale/close tests assert exact call sequences; the member watch would add lists at
    // random points. The tests about the watch turn it on.
    memberWatchIntervalMs: 0,
    ...extra,
  };
}

export function newCluster(fake: FakeDigitalOcean, extra: DropletClusterOptions = {}): DropletCluster {
  return new DropletCluster(clusterOptions(fake, extra));
}

/**
 * The read-only calls preflight makes before anything is created (public mode, default VPC,
 * no ssh keys): account, VPC, region, image, sizes, Droplet count, and the firewall / tag read
 * probes. After the account, they go out together: the fake sees them in any order.
 */
export const PREFLIGHT = ['account_get', 'vpcs_list', 'regions_list', 'images_get', 'sizes_list', 'droplets_list', 'firewalls_list', 'tags_list'];

/** PREFLIGHT in private mode with the docker runtime: also the VPC NAT gateway look-up, once the VPC is known. */
export const PREFLIGHT_PRIVATE = [...PREFLIGHT.slice(0, 5), 'vpcnatgateways_list', ...PREFLIGHT.slice(5)];

/** What a teardown does after the Droplets: the firewall, then the cluster tag and the expiry tag (looked at, then deleted). */
export const NETWORK_TEARDOWN = ['firewalls_delete', 'tags_get', 'tags_delete', 'tags_get', 'tags_delete'];

/** Operation names with consecutive repeats (polls, parallel deletes) collapsed into one. */
export function collapse(ops: (string | undefined)[]): string[] {
  const out: string[] = [];
  for (const op of ops) if (out[out.length - 1] !== (op ?? '?')) out.push(op ?? '?');
  return out;
}

/** Operations the fake received since `mark` (= `fake.server.received.length` taken earlier). */
export function opsSince(fake: FakeDigitalOcean, mark: number): string[] {
  return fake.server.operations().slice(mark).map((o) => o ?? '?');
}

/**
 * The collapsed call sequence after preflight, once its first calls were checked to be
 * `preflight`'s reads: the account first, then the others in any order.
 */
export function sequenceAfterPreflight(fake: FakeDigitalOcean, preflight: string[] = PREFLIGHT): string[] {
  const seq = sequenceSince(fake, 0);
  expect(seq[0]).toBe(preflight[0]);
  expect(seq.slice(0, preflight.length).sort()).toEqual([...preflight].sort());
  return networkThenScheduler(seq.slice(preflight.length));
}

/** The calls of the network phase: the cluster tag, then the firewall (with its reconciling look-ups). */
const NETWORK_CALLS = new Set(['tags_create', 'tags_get', 'firewalls_create', 'firewalls_list']);

/**
 * The scheduler's create goes out right behind the firewall's, without waiting for its answer, so
 * it may arrive among the firewall's calls (a lost answer's look-up and retry). It is moved to
 * just after them, where a test states it; a sequence without a tag create is returned as it is.
 * The scheduler's address poll must wait for the firewall, and that order is kept: a
 * `droplets_get` among the network's calls stays there and fails the test.
 */
export function networkThenScheduler(seq: string[]): string[] {
  const start = seq.indexOf('tags_create');
  if (start < 0) return seq;
  let end = start;
  while (end < seq.length && (NETWORK_CALLS.has(seq[end]!) || seq[end] === 'droplets_create')) end++;
  const window = seq.slice(start, end);
  const create = window.indexOf('droplets_create');
  if (create < 0) return seq;
  window.splice(create, 1);
  return collapse([...seq.slice(0, start), ...window, 'droplets_create', ...seq.slice(end)]);
}

/** Like opsSince, collapsed: the call sequence a test states exactly. */
export function sequenceSince(fake: FakeDigitalOcean, mark: number): string[] {
  return collapse(opsSince(fake, mark));
}

function cidrContains(cidr: string, ip: string): boolean {
  const [base, bits = '32'] = cidr.split('/');
  if (!base || base.includes(':') || ip.includes(':')) return false;
  const toInt = (a: string) => a.split('.').reduce((acc, x) => acc * 256 + Number(x), 0);
  const size = 2 ** (32 - Number(bits));
  return Math.floor(toInt(ip) / size) === Math.floor(toInt(base) / size);
}

function allows(rules: FirewallRule[], port: number, source: string): boolean {
  return rules.some(
    (r) =>
      r.direction === 'ingress' &&
      (r.protocol === 'tcp' || r.protocol === 'all') &&
      (r.fromPort === undefined || (port >= r.fromPort && port <= (r.toPort ?? r.fromPort))) &&
      r.cidrs.some((c) => cidrContains(c, source)),
  );
}

export interface LocalVmBooterOptions {
  /** Ports a VM's public address forwards to its private one (default [8786]). */
  publicPorts?: number[];
  /** Boot only Droplets whose Dask role is listed (others stay empty VMs). Default both. */
  roles?: ('scheduler' | 'worker')[];
  /** Boot at most this many worker Droplets; later ones stay empty VMs (default all). */
  maxWorkers?: number;
}

/**
 * ProcessBooter plus what a Droplet's public interface does: a process binds its private address
 * (ProcessBooter), and connections to `publicIp:port` are forwarded to it — only when the
 * firewall's rules admit the source, as DigitalOcean's cloud firewall would.
 */
export class LocalVmBooter implements VmBooter {
  readonly inner: ProcessBooter;
  readonly #ports: number[];
  readonly #roles: Set<string>;
  readonly #maxWorkers: number;
  #workersBooted = 0;
  readonly #rules = new Map<string, FirewallRule[]>();
  readonly #servers = new Set<Server>();
  /** Connections refused by the firewall (source address, port). */
  readonly refused: { id: string; source: string; port: number }[] = [];

  constructor(options: LocalVmBooterOptions = {}) {
    const python = pythonWithDask();
    if (!python) throw new Error('no Python with distributed');
    this.inner = new ProcessBooter({ python });
    this.#ports = options.publicPorts ?? [8786];
    this.#roles = new Set(options.roles ?? ['scheduler', 'worker']);
    this.#maxWorkers = options.maxWorkers ?? Infinity;
  }

  async boot(vm: BootRequest): Promise<BootedVm> {
    this.#rules.set(vm.id, vm.firewall);
    const text = vm.userData.toString('utf8');
    const role = /dask-scheduler\.service/.test(text) ? 'scheduler' : 'worker';
    if (!this.#roles.has(role) || (role === 'worker' && ++this.#workersBooted > this.#maxWorkers)) {
      return { consoleOutput: async () => `[empty vm ${vm.id}: ${role} not booted in this test]`, stop: async () => undefined };
    }
    const booted = await this.inner.boot(vm);
    const servers: Server[] = [];
    if (vm.publicIp) {
      for (const port of this.#ports) {
        const server = createServer((sock: Socket) => {
          const source = sock.remoteAddress?.replace(/^::ffff:/, '') ?? '';
          if (!allows(this.#rules.get(vm.id) ?? [], port, source)) {
            this.refused.push({ id: vm.id, source, port });
            sock.destroy();
            return;
          }
          const upstream = connect(port, vm.privateIp);
          sock.pipe(upstream).pipe(sock);
          const end = () => {
            sock.destroy();
            upstream.destroy();
          };
          sock.on('error', end);
          upstream.on('error', end);
          sock.on('close', end);
          upstream.on('close', end);
        });
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(port, vm.publicIp, () => resolve());
        });
        servers.push(server);
        this.#servers.add(server);
      }
    }
    return {
      ...booted,
      consoleOutput: () => booted.consoleOutput(),
      stop: async () => {
        for (const s of servers) {
          this.#servers.delete(s);
          await new Promise<void>((resolve) => s.close(() => resolve()));
        }
        await booted.stop();
      },
    };
  }

  setFirewall(id: string, rules: FirewallRule[]): void {
    this.#rules.set(id, rules);
    this.inner.setFirewall(id, rules);
  }

  /** Dask processes still alive. */
  pids(): number[] {
    return this.inner.pids();
  }

  async stopAll(): Promise<void> {
    for (const s of this.#servers) s.close();
    this.#servers.clear();
    await this.inner.stopAll();
  }
}


/** Refuses to go on if an address is not loopback (network-safety belt and braces). */
export function assertLoopback(address: string): void {
  const host = address.replace(/^\w+:\/\//, '').replace(/:\d+$/, '');
  if (!host.startsWith('127.')) throw new Error(`test would dial ${address}, which is not loopback`);
}

export { pythonWithConfig } from '../../helpers/python';
