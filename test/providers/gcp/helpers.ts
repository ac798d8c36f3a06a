/**
 * Shared setup for the GCP provider tests: a FakeGcp whose every address is on loopback, the
 * options that point a GCPCluster at it, and a booter that runs each instance's Dask process.
 *
 * Network safety (FACTS.md): a fake here never hands out 10.77 addresses. Its private and public
 * blocks are /20s of 127.0.0.0/8 (every 127/8 address is local on Linux), so whatever the library
 * or a Python client dials is loopback. Each fake gets its own pair of blocks outside 127.77/16
 * (which the other providers' tests use), so test files running in parallel never hand out the
 * same scheduler address. `startFake` asserts it before anything starts.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { expect } from 'vitest';
import { FakeGcp, type FakeGcpOptions } from '../../fakes/gcp';
import type { BootRequest, BootedVm, FirewallRule, VmBooter } from '../../fakes/core/state';
import { ProcessBooter } from '../../sim/process-booter';
import type { GCPClusterOptions } from '../../../providers/gcp';

export const ZONE = 'us-central1-a';

let counter = 0;

/** A private /20 and a public /20 on loopback, different for each fake of this process. */
export function loopbackBlocks(): { privateCidr: string; publicCidr: string } {
  // 127.80.0.0 - 127.207.255.255: away from 127.0.0.1 and from 127.77/16.
  const second = 80 + ((process.pid * 7 + counter++) % 128);
  const third = 16 * (counter % 8);
  return { privateCidr: `127.${second}.${third}.0/20`, publicCidr: `127.${second}.${128 + third}.0/20` };
}

/** A FakeGcp on loopback blocks. */
export async function startFake(opts: Omit<FakeGcpOptions, 'privateCidr' | 'publicCidr'> = {}): Promise<FakeGcp> {
  const fake = await FakeGcp.start({ ...loopbackBlocks(), ...opts });
  expect(fake.pools.private.cidr.startsWith('127.'), 'the fake must hand out loopback addresses only').toBe(true);
  expect(fake.pools.public.cidr.startsWith('127.'), 'the fake must hand out loopback addresses only').toBe(true);
  return fake;
}

/** GCPCluster options that reach `fake` (fixed-token auth, plain http on 127.0.0.1). */
export function fakeOptions(fake: FakeGcp): Pick<GCPClusterOptions, 'projectId' | 'zone' | 'endpoint' | 'authClient' | 'closeOnSignals'> {
  const o = fake.clientOptions();
  return {
    projectId: fake.project,
    zone: ZONE,
    endpoint: { apiEndpoint: o.apiEndpoint, port: o.port, protocol: o.protocol },
    authClient: o.authClient,
    closeOnSignals: false,
  };
}

/** Operation names the fake received, in order, with consecutive repeats collapsed (polling counts vary). */
export function collapsed(fake: FakeGcp, from = 0): string[] {
  const ops = fake.server.received.slice(from).map((r) => (r.operation ?? `${r.method} ${r.path}`).replace(/^compute\./, ''));
  return ops.filter((op, i) => op !== ops[i - 1]);
}

/** Operation names the fake received, in order. */
export function operations(fake: FakeGcp, from = 0): string[] {
  return fake.server.received.slice(from).map((r) => (r.operation ?? `${r.method} ${r.path}`).replace(/^compute\./, ''));
}

/** Whether a source address is inside an IPv4 CIDR. */
export function inCidr(ip: string, cidr: string): boolean {
  const [base, bits] = cidr.split('/');
  const toInt = (a: string) => a.split('.').reduce((n, x) => (n << 8) + Number(x), 0) >>> 0;
  const mask = Number(bits) === 0 ? 0 : (~0 << (32 - Number(bits))) >>> 0;
  return (toInt(ip) & mask) === (toInt(base!) & mask);
}

/**
 * ProcessBooter plus GCP's 1:1 NAT of an external address: the Dask process binds the instance's
 * private address (as on a VM, which only knows that one), and connections to
 * `publicIp:port` are forwarded to it — only while the VM's firewall admits that port from the
 * dialling address, so the provider's firewall rules are what decides reachability from outside.
 */
export class NatProcessBooter implements VmBooter {
  readonly inner: ProcessBooter;
  readonly #ports: number[];
  readonly #nat = new Map<string, { servers: Server[]; sockets: Set<Socket> }>();
  readonly #rules = new Map<string, FirewallRule[]>();
  /** Connections the firewall refused, by `publicIp:port`. */
  readonly refused: string[] = [];

  constructor(options: { python: string; ports?: number[] }) {
    this.inner = new ProcessBooter({ python: options.python });
    this.#ports = options.ports ?? [8786];
  }

  async boot(vm: BootRequest): Promise<BootedVm> {
    this.#rules.set(vm.id, vm.firewall);
    const booted = await this.inner.boot(vm);
    const nat = { servers: [] as Server[], sockets: new Set<Socket>() };
    this.#nat.set(vm.id, nat);
    if (vm.publicIp !== undefined) {
      if (!vm.publicIp.startsWith('127.') || !vm.privateIp.startsWith('127.')) throw new Error(`NAT only between loopback addresses, got ${vm.publicIp} → ${vm.privateIp}`);
      for (const port of this.#ports) nat.servers.push(await this.#forward(vm.id, vm.publicIp, vm.privateIp, port, nat.sockets));
    }
    const stopNat = async () => {
      for (const s of nat.sockets) s.destroy();
      await Promise.all(nat.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      nat.servers = [];
      this.#nat.delete(vm.id);
    };
    return {
      consoleOutput: () => booted.consoleOutput(),
      stop: async () => {
        await stopNat();
        await booted.stop();
      },
    };
  }

  setFirewall(id: string, rules: FirewallRule[]): void {
    this.#rules.set(id, rules);
    this.inner.setFirewall(id, rules);
  }

  /** Whether the VM's current rules admit TCP `port` from `source` (CIDR rules only: the outside has no tags). */
  admits(id: string, port: number, source: string): boolean {
    return (this.#rules.get(id) ?? []).some(
      (r) =>
        r.direction === 'ingress' &&
        (r.protocol === 'tcp' || r.protocol === 'all') &&
        (r.fromPort === undefined || (r.fromPort <= port && port <= (r.toPort ?? r.fromPort))) &&
        r.cidrs.some((c) => inCidr(source, c.includes('/') ? c : `${c}/32`)),
    );
  }

  #forward(id: string, fromHost: string, toHost: string, port: number, sockets: Set<Socket>): Promise<Server> {
    return new Promise((resolve, reject) => {
      const server = createServer((client) => {
        const source = (client.remoteAddress ?? '').replace(/^::ffff:/, '');
        if (!this.admits(id, port, source)) {
          this.refused.push(`${fromHost}:${port}`);
          client.destroy();
          return;
        }
        sockets.add(client);
        const upstream = connect({ host: toHost, port });
        sockets.add(upstream);
        const drop = () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
        };
        client.on('error', drop).on('close', drop);
        upstream.on('error', drop).on('close', drop);
        client.pipe(upstream).pipe(client);
      });
      server.once('error', reject);
      server.listen(port, fromHost, () => resolve(server));
    });
  }

  /** Dask processes still alive. */
  pids(): number[] {
    return this.inner.pids();
  }

  /** NAT listeners still open. */
  natCount(): number {
    return [...this.#nat.values()].reduce((n, s) => n + s.servers.length, 0);
  }

  async stopAll(): Promise<void> {
    for (const nat of this.#nat.values()) {
      for (const s of nat.sockets) s.destroy();
      for (const s of nat.servers) s.close();
    }
    this.#nat.clear();
    await this.inner.stopAll();
  }
}

/** Polls `check` until it holds (bounded). */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
