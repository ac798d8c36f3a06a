/**
 * State helpers shared by the cloud fakes: a resource registry (so a test can ask a fake for
 * everything it still holds and assert nothing leaked), id and address allocators, and the hook
 * through which a fake boots simulated VMs (implemented in test/sim/).
 *
 * Address blocks are the simulated-VM blocks: private 10.77.0.0/20, public 10.77.128.0/20.
 * The fakes only *allocate* them; nothing here dials an address.
 */
import { randomBytes, randomUUID } from 'node:crypto';

// ---------------------------------------------------------------------------------------------
// Resource registry

/** Everything a fake holds, by kind: `{ instances: [...], firewalls: [...] }`. */
export type ResourceSnapshot = Record<string, { id: string; value: unknown }[]>;

/**
 * In-memory resources by kind and id, in insertion order. Kinds are the fake's words
 * ('instances', 'firewalls', 'securityGroups', 'droplets', 'operations', ...).
 */
export class ResourceRegistry {
  private readonly kinds = new Map<string, Map<string, unknown>>();
  /** Kinds that `leaked()` ignores (e.g. operations, default networks the fake seeds). */
  private readonly ignored = new Set<string>();

  private bucket(kind: string): Map<string, unknown> {
    let m = this.kinds.get(kind);
    if (!m) this.kinds.set(kind, (m = new Map()));
    return m;
  }

  put<T>(kind: string, id: string, value: T): T {
    this.bucket(kind).set(id, value);
    return value;
  }

  get<T>(kind: string, id: string): T | undefined {
    return this.kinds.get(kind)?.get(id) as T | undefined;
  }

  has(kind: string, id: string): boolean {
    return this.kinds.get(kind)?.has(id) ?? false;
  }

  /** Removes and returns the resource (undefined if absent). */
  delete<T>(kind: string, id: string): T | undefined {
    const m = this.kinds.get(kind);
    const v = m?.get(id) as T | undefined;
    m?.delete(id);
    return v;
  }

  list<T>(kind: string): T[] {
    return [...(this.kinds.get(kind)?.values() ?? [])] as T[];
  }

  /** Entries of one kind, filtered. */
  find<T>(kind: string, pred: (value: T, id: string) => boolean): T[] {
    return [...(this.kinds.get(kind)?.entries() ?? [])].filter(([id, v]) => pred(v as T, id)).map(([, v]) => v as T);
  }

  /** Marks kinds that are infrastructure, not leaks (pre-seeded networks, images, operations). */
  ignoreForLeaks(...kinds: string[]): void {
    for (const k of kinds) this.ignored.add(k);
  }

  /** Everything held, by kind (empty kinds omitted). */
  all(): ResourceSnapshot {
    const out: ResourceSnapshot = {};
    for (const [kind, m] of this.kinds) {
      if (m.size) out[kind] = [...m.entries()].map(([id, value]) => ({ id, value }));
    }
    return out;
  }

  /** Like all(), without ignored kinds and without entries `isGone` says are deleted (e.g. EC2 `terminated`). */
  leaked(isGone: (kind: string, value: unknown) => boolean = () => false): ResourceSnapshot {
    const out: ResourceSnapshot = {};
    for (const [kind, entries] of Object.entries(this.all())) {
      if (this.ignored.has(kind)) continue;
      const left = entries.filter((e) => !isGone(kind, e.value));
      if (left.length) out[kind] = left;
    }
    return out;
  }

  clear(): void {
    this.kinds.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// Ids

/** Deterministic-enough id generators in each cloud's format. */
export class IdAllocator {
  private seq = 0;
  private numeric: bigint;

  constructor(seed = 1_000_000n) {
    this.numeric = seed;
  }

  /** Next small integer (DigitalOcean droplet ids): 1, 2, 3 ... from `start`. */
  nextInt(start = 100_000_000): number {
    return start + ++this.seq;
  }

  /** Next uint64 as a decimal string (GCP resource and operation ids). */
  nextUint64(): string {
    this.numeric += 1n;
    return (7_000_000_000_000_000_000n + this.numeric).toString();
  }

  /** `prefix` + random lowercase hex (EC2: `hex('i-', 17)`, `hex('sg-', 17)`, `hex('r-', 17)`). */
  hex(prefix: string, length = 17): string {
    return prefix + randomBytes(Math.ceil(length / 2)).toString('hex').slice(0, length);
  }

  /** Random UUID (DigitalOcean firewall and VPC ids). */
  uuid(): string {
    return randomUUID();
  }
}

// ---------------------------------------------------------------------------------------------
// Addresses

function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`bad IPv4 address ${ip}`);
  return ((p[0] << 24) >>> 0) + (p[1] << 16) + (p[2] << 8) + p[3];
}

function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Hands out host addresses of one IPv4 block; released addresses are reused last. */
export class IpAllocator {
  readonly cidr: string;
  private readonly first: number;
  private readonly last: number;
  private nextFree: number;
  private readonly used = new Set<number>();
  private readonly freed: number[] = [];

  constructor(cidr: string) {
    const [base, bitsText] = cidr.split('/');
    const bits = Number(bitsText);
    if (!(bits >= 8 && bits <= 30)) throw new Error(`unsupported prefix length in ${cidr}`);
    const size = 2 ** (32 - bits);
    const network = (ipToInt(base) & ~(size - 1)) >>> 0;
    this.cidr = cidr;
    // Skip the network address and the first host (the "gateway"), and broadcast.
    this.first = network + 2;
    this.last = network + size - 2;
    this.nextFree = this.first;
  }

  /** Next free address; throws when the block is exhausted. */
  allocate(): string {
    let n: number | undefined;
    if (this.nextFree <= this.last) n = this.nextFree++;
    else n = this.freed.shift();
    if (n === undefined) throw new Error(`address block ${this.cidr} exhausted`);
    this.used.add(n);
    return intToIp(n);
  }

  release(ip: string): void {
    const n = ipToInt(ip);
    if (this.used.delete(n)) this.freed.push(n);
  }

  contains(ip: string): boolean {
    const n = ipToInt(ip);
    return n >= this.first - 2 && n <= this.last + 1;
  }

  inUse(): string[] {
    return [...this.used].map(intToIp);
  }
}

/** The simulated cloud's blocks (also the simulated-VM blocks, see test/sim). */
export const PRIVATE_BLOCK = '10.77.0.0/20';
export const PUBLIC_BLOCK = '10.77.128.0/20';

/**
 * One private and one public allocator, per fake. Blocks are configurable so a fake can hand out
 * loopback addresses (127.77.0.0/16) when its instances run as local processes (test/sim).
 */
export class AddressPools {
  readonly private: IpAllocator;
  readonly public: IpAllocator;

  constructor(blocks: { privateCidr?: string; publicCidr?: string } = {}) {
    this.private = new IpAllocator(blocks.privateCidr ?? PRIVATE_BLOCK);
    this.public = new IpAllocator(blocks.publicCidr ?? PUBLIC_BLOCK);
  }
}

// ---------------------------------------------------------------------------------------------
// Boot hook

/**
 * A cloud-neutral firewall rule, as the fake resolved it from the cloud's own rule format
 * (GCP firewall, EC2 security group, DigitalOcean cloud firewall). Ingress rules are what a
 * simulated VM enforces; egress is informational unless the booter chooses to enforce it.
 */
export interface FirewallRule {
  direction: 'ingress' | 'egress';
  protocol: 'tcp' | 'udp' | 'icmp' | 'all';
  /** Inclusive port range; omitted = all ports. */
  fromPort?: number;
  toPort?: number;
  /** Peer CIDRs (`0.0.0.0/0`, `10.77.0.5/32`). */
  cidrs: string[];
  /** Peer VMs by id, when the rule names a group/tag/security group rather than addresses. */
  peerVmIds?: string[];
}

export interface BootRequest {
  /** The fake's instance / droplet id. */
  id: string;
  /** Instance name or hostname, if the cloud has one. */
  name?: string;
  /** Decoded user-data exactly as the VM would see it (EC2: base64-decoded; gzip left as is). */
  userData: Buffer;
  privateIp: string;
  publicIp?: string;
  firewall: FirewallRule[];
}

export interface BootedVm {
  /** What the cloud's console / serial port would show so far. */
  consoleOutput(): Promise<string>;
  /** Stops the VM and frees everything it holds. Idempotent. */
  stop(): Promise<void>;
}

/** Implemented by the simulated-VM layer (test/sim); a fake configured with one boots what it creates. */
export interface VmBooter {
  /**
   * True for a booter that enforces no firewall (test/sim/standin.ts): the fake then neither
   * computes nor pushes rules (boot gets `firewall: []`). Keeping every VM's rules current costs
   * O(N) per VM change, O(N²) per start, which a thousand VMs cannot afford.
   */
  readonly ignoresFirewalls?: boolean;
  boot(vm: BootRequest): Promise<BootedVm>;
  /** Replaces the firewall of a running VM (rules changed, or a VM joined a group/tag). */
  setFirewall(id: string, rules: FirewallRule[]): Promise<void> | void;
}

/**
 * Background work a fake started and did not await (VM boots, stops, firewall pushes): `drain()`
 * waits until none is left, also work added while it waits. A failure is the starter's to record;
 * here it only counts as done.
 */
export class PendingWork {
  readonly #pending = new Set<Promise<unknown>>();

  /** Tracks `p` and returns it unchanged. */
  add<T>(p: Promise<T>): Promise<T> {
    const done = p.then(
      () => undefined,
      () => undefined,
    );
    this.#pending.add(done);
    void done.then(() => this.#pending.delete(done));
    return p;
  }

  async drain(): Promise<void> {
    while (this.#pending.size) await Promise.all([...this.#pending]);
  }
}
