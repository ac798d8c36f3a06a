/**
 * Shared setup for the EC2 provider tests: a FakeEc2 whose every address is on loopback, the
 * options that point an EC2Cluster at it, and a booter that runs each instance's Dask process.
 *
 * Network safety: every fake here carves its subnets, public addresses and VPC CIDR from
 * 127.77.0.0/16, so whatever the library dials (scheduler, workers, Python client) is loopback.
 * `assertLoopbackFake` checks it before a test starts a cluster.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { FakeEc2, type FakeEc2Options } from '../../fakes/ec2';
import type { BootRequest, BootedVm, FirewallRule, VmBooter } from '../../fakes/core/state';
import { LOOPBACK_POOLS, ProcessBooter } from '../../sim/process-booter';
import type { EC2ClusterOptions } from '../../../providers/ec2';

/**
 * A pair of loopback /20 blocks inside LOOPBACK_POOLS' /16, by slot (1..7; slot 0 is
 * LOOPBACK_POOLS itself, which other providers' tests use). Test files that may run in parallel
 * use different slots, so their fakes never hand out the same scheduler address.
 */
export function loopbackBlocks(slot: number): { privateCidr: string; publicCidr: string } {
  if (!Number.isInteger(slot) || slot < 1 || slot > 7) throw new Error(`slot must be 1..7, got ${slot}`);
  const [a, b] = LOOPBACK_POOLS.private.split('.');
  return { privateCidr: `${a}.${b}.${slot * 16}.0/20`, publicCidr: `${a}.${b}.${128 + slot * 16}.0/20` };
}

/** A FakeEc2 on the loopback blocks of `slot` (never the 10.77 defaults: see the file comment). */
export async function startFake(slot: number, opts: Omit<FakeEc2Options, 'privateCidr' | 'publicCidr'> = {}): Promise<FakeEc2> {
  const fake = await FakeEc2.start({ ...loopbackBlocks(slot), ...opts });
  assertLoopbackFake(fake);
  return fake;
}

/** Throws unless every block the fake hands addresses from is loopback. */
export function assertLoopbackFake(fake: FakeEc2): void {
  for (const cidr of [...fake.subnets().map((s) => s.cidrBlock), fake.defaultVpc.cidrBlock]) {
    if (!cidr.startsWith('127.')) throw new Error(`FakeEc2 block ${cidr} is not loopback: tests must never dial it`);
  }
}

/** EC2Cluster options that reach `fake` with static test credentials. */
export function fakeOptions(fake: FakeEc2): Pick<EC2ClusterOptions, 'region' | 'endpoint' | 'credentials' | 'closeOnSignals'> {
  const cfg = fake.clientConfig();
  return { region: cfg.region, endpoint: cfg.endpoint, credentials: cfg.credentials, closeOnSignals: false };
}

/** Calls that poll or retry a varying number of times from run to run. */
const POLLED = new Set(['DescribeInstances', 'DeleteSecurityGroup']);

/** Operation names in order, consecutive repeats of polled calls collapsed to one. */
export function collapsed(operations: (string | undefined)[]): string[] {
  const ops = operations.map((op) => op ?? '(unrouted)');
  return ops.filter((op, i) => !(POLLED.has(op) && op === ops[i - 1]));
}

/**
 * Runs each instance's Dask process (ProcessBooter) and, like EC2's 1:1 NAT of public
 * addresses, forwards `ports` on the instance's public address to its private one: the instance
 * itself only knows its private address, as on EC2.
 */
export class NatProcessBooter implements VmBooter {
  readonly inner: ProcessBooter;
  readonly #ports: number[];
  readonly #servers = new Map<string, { servers: Server[]; sockets: Set<Socket> }>();

  constructor(options: { python: string; ports?: number[] }) {
    this.inner = new ProcessBooter({ python: options.python });
    this.#ports = options.ports ?? [8786];
  }

  async boot(vm: BootRequest): Promise<BootedVm> {
    const booted = (await this.inner.boot(vm)) as BootedVm & { exited?: Promise<unknown>; pid?: number };
    const nat = { servers: [] as Server[], sockets: new Set<Socket>() };
    this.#servers.set(vm.id, nat);
    if (vm.publicIp !== undefined) {
      if (!vm.publicIp.startsWith('127.') || !vm.privateIp.startsWith('127.')) throw new Error(`NAT only between loopback addresses, got ${vm.publicIp} → ${vm.privateIp}`);
      for (const port of this.#ports) nat.servers.push(await forward(vm.publicIp, vm.privateIp, port, nat.sockets));
    }
    const stopNat = async () => {
      for (const s of nat.sockets) s.destroy();
      await Promise.all(nat.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      nat.servers = [];
      this.#servers.delete(vm.id);
    };
    return {
      exited: booted.exited,
      pid: booted.pid,
      consoleOutput: () => booted.consoleOutput(),
      stop: async () => {
        await stopNat();
        await booted.stop();
      },
    } as BootedVm;
  }

  setFirewall(id: string, rules: FirewallRule[]): void {
    this.inner.setFirewall(id, rules);
  }

  /** Dask processes still alive. */
  pids(): number[] {
    return this.inner.pids();
  }

  /** Listeners still open. */
  natCount(): number {
    return [...this.#servers.values()].reduce((n, s) => n + s.servers.length, 0);
  }

  async stopAll(): Promise<void> {
    for (const nat of this.#servers.values()) {
      for (const s of nat.sockets) s.destroy();
      for (const s of nat.servers) s.close();
    }
    this.#servers.clear();
    await this.inner.stopAll();
  }
}

function forward(fromHost: string, toHost: string, port: number, sockets: Set<Socket>): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer((client) => {
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

/** Polls `check` until it returns true (bounded). */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Tags of a stored resource as an object. */
export function tagMap(tags: { key: string; value: string }[]): Record<string, string> {
  return Object.fromEntries(tags.map((t) => [t.key, t.value]));
}
