/**
 * Process VMs behind a simulated 1:1 NAT that obeys the fake's firewall rules, for provider tests
 * that need "the outside" to reach a scheduler on its public address. Loopback only.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { BootRequest, FirewallRule, VmBooter } from '../fakes/core/state';
import { ProcessBooter, type ProcessVm } from './process-booter';

/** Whether a source address is inside an IPv4 CIDR. */
export function inCidr(ip: string, cidr: string): boolean {
  const [base, bits] = cidr.split('/');
  const toInt = (a: string) => a.split('.').reduce((n, x) => (n << 8) + Number(x), 0) >>> 0;
  const mask = Number(bits) === 0 ? 0 : (~0 << (32 - Number(bits))) >>> 0;
  return (toInt(ip) & mask) === (toInt(base!) & mask);
}

/**
 * ProcessBooter plus a cloud's 1:1 NAT of an external address (GCP access configs, EC2 public
 * IPs): the Dask process binds the instance's
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

  async boot(vm: BootRequest): Promise<ProcessVm> {
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
      id: booted.id,
      pid: booted.pid,
      exited: booted.exited,
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
