/**
 * The bridge between the cloud fakes (test/fakes) and simulated VMs: implements the fakes'
 * `VmBooter` hook over a SimNetwork, so a fake boots every instance it creates.
 *
 *   const net = await SimNetwork.create({ name: 'gcp' });
 *   const booter = new SimVmBooter(net);   // hand to the fake; its AddressPools should use
 *                                          // net.privateCidr / net.publicCidr
 */
import type { BootRequest, BootedVm, FirewallRule as FakeFirewallRule, VmBooter } from '../fakes/core/state';
import type { FirewallRule } from './firewall';
import type { SimNetwork } from './network';

/** A hostname cloud-init can set: lowercase letters, digits and `-`, at most 63 characters. */
export function toHostname(name: string | undefined, fallback: string): string {
  const h = (name ?? '')
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  return h || toHostname(fallback.replace(/^[^a-z0-9]+/i, 'vm-'), 'vm');
}

/**
 * The fake's cloud-neutral rules → our nftables rules. Only ingress is enforced (egress stays
 * open, as on the clouds by default). Peers named by VM id (groups, tags) become those VMs'
 * private addresses; peers not booted yet are skipped (the fake calls setFirewall when they join).
 */
export function toSimRules(rules: FakeFirewallRule[], privateIpOf: (vmId: string) => string | undefined): FirewallRule[] {
  const out: FirewallRule[] = [];
  for (const r of rules) {
    if (r.direction !== 'ingress') continue;
    const sources = [...r.cidrs];
    for (const id of r.peerVmIds ?? []) {
      const ip = privateIpOf(id);
      if (ip !== undefined) sources.push(`${ip}/32`);
    }
    if (sources.length === 0) continue;
    const portable = r.protocol === 'tcp' || r.protocol === 'udp';
    const ports: [number, number] | undefined =
      portable && (r.fromPort !== undefined || r.toPort !== undefined)
        ? // Clouds write "all ports" as 0-65535; nftables port 0 means nothing, so start at 1.
          [Math.max(1, r.fromPort ?? r.toPort ?? 1), r.toPort ?? r.fromPort ?? 65535]
        : undefined;
    out.push(ports ? { protocol: r.protocol, ports, sources } : { protocol: r.protocol, sources });
  }
  return out;
}

/**
 * `VmBooter` for the fakes: each BootRequest becomes a SimVm on `net`. Rules that name peers
 * (groups, tags) are kept and re-translated whenever a VM boots, so a rule admitting "every
 * member of the cluster" also admits members that booted after it was set.
 */
export class SimVmBooter implements VmBooter {
  readonly #rules = new Map<string, FakeFirewallRule[]>();
  /** The last queued rule change per VM: changes to one VM apply one after another, in order. */
  readonly #applying = new Map<string, Promise<void>>();

  /** `containers`: every VM may run Docker containers (see BootVmOptions.containers). */
  constructor(
    readonly net: SimNetwork,
    readonly options: { containers?: boolean } = {},
  ) {}

  private privateIpOf = (id: string): string | undefined => this.net.vm(id)?.privateIp;

  async boot(req: BootRequest): Promise<BootedVm & { exited: Promise<unknown> }> {
    // With host access the test process itself will dial this VM: its addresses must route
    // through our links, never out of the machine.
    if (this.net.hostIps) {
      await this.net.assertHostRoute(req.privateIp);
      if (req.publicIp !== undefined) await this.net.assertHostRoute(req.publicIp);
    }
    this.#rules.set(req.id, req.firewall);
    const vm = await this.net.bootVm({
      id: req.id,
      userData: req.userData,
      metaData: { instanceId: req.id, hostname: toHostname(req.name, req.id) },
      privateIp: req.privateIp,
      publicIp: req.publicIp,
      firewall: toSimRules(req.firewall, this.privateIpOf),
      containers: this.options.containers,
    });
    // Rules the fake sent while the VM booted were kept but could not be applied yet.
    if (this.#rules.get(req.id) !== req.firewall) await this.#apply(req.id);
    await this.#refreshPeers();
    return {
      consoleOutput: () => vm.consoleOutput(),
      stop: async () => {
        this.#rules.delete(req.id);
        this.#applying.delete(req.id);
        await vm.stop();
      },
      exited: vm.exited,
    };
  }

  async setFirewall(id: string, rules: FakeFirewallRule[]): Promise<void> {
    this.#rules.set(id, rules);
    await this.#apply(id);
  }

  /**
   * Applies VM `id`'s current rules, translated when its turn comes, never before. Two `nft`
   * runs for one VM that overlap may finish in either order; if an older translation (one
   * made before a peer booted) finished last, that peer would stay locked out.
   */
  #apply(id: string): Promise<void> {
    const next = (this.#applying.get(id) ?? Promise.resolve())
      .catch(() => undefined)
      .then(async () => {
        const rules = this.#rules.get(id);
        if (!rules || !this.net.vm(id)) return;
        try {
          await this.net.setFirewall(id, toSimRules(rules, this.privateIpOf));
        } catch (err) {
          if (this.net.vm(id)) throw err; // a VM stopped meanwhile needs no rules
        }
      });
    this.#applying.set(id, next);
    return next;
  }

  /**
   * Re-apply the rules that name peers of every running VM, `booted` included: peers that
   * finished booting while it booted were not there to translate when its own rules were set.
   */
  async #refreshPeers(): Promise<void> {
    const ids = [...this.#rules].filter(([id, rules]) => this.net.vm(id) && rules.some((r) => (r.peerVmIds ?? []).length > 0)).map(([id]) => id);
    await Promise.all(ids.map((id) => this.#apply(id)));
  }
}
