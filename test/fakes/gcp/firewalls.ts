/**
 * VPC firewall rules (`compute.firewalls.*`, global operations) and their translation into the
 * cloud-neutral `FirewallRule`s a simulated VM enforces.
 *
 * GCP semantics modelled: a rule applies to instances of its network whose network tags meet
 * `targetTags` (or whose service account is in `targetServiceAccounts`; neither = every
 * instance); an INGRESS rule without any source defaults to `sourceRanges: ['0.0.0.0/0']` (a real
 * trap); `sourceRanges` and `sourceTags` combine with OR; `allowed[].ports` are single ports or
 * `lo-hi` ranges; no ports = all ports. Every VM also has GCP's implied "allow all egress".
 * Not modelled: `denied` rules and priorities in the translation (only allow rules are
 * translated — dask-cloud never creates deny rules), disabled rules are skipped.
 */
import type { FakeRequest, FakeResponse, FakeServer, FirewallRule } from '../core';
import { API, NAME_RE, stripApi, timestamp } from './catalog';
import { alreadyExists, badRequest, invalidField, notFound, requiredField } from './errors';
import { listResponse } from './filter';
import type { GcpWorld } from './world';

export type FirewallWire = Record<string, unknown> & {
  name: string;
  direction: 'INGRESS' | 'EGRESS';
  allowed?: { IPProtocol: string; ports?: string[] }[];
  denied?: { IPProtocol: string; ports?: string[] }[];
  sourceRanges?: string[];
  destinationRanges?: string[];
  sourceTags?: string[];
  targetTags?: string[];
  sourceServiceAccounts?: string[];
  targetServiceAccounts?: string[];
  disabled?: boolean;
  network: string;
};

/** What the translation needs to know about an instance. */
export interface FirewallSubject {
  id: string;
  network: string;
  tags: string[];
  serviceAccounts: string[];
}

const PORT_PROTOCOLS = new Set(['tcp', 'udp', 'sctp']);
const PROTOCOLS = new Set(['tcp', 'udp', 'icmp', 'esp', 'ah', 'sctp', 'ipip', 'all']);
const CIDR_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/;

export const GCP_IMPLIED_EGRESS: FirewallRule = { direction: 'egress', protocol: 'all', cidrs: ['0.0.0.0/0'] };

/** `'8786'` → [8786, 8786]; `'8000-9000'` → [8000, 9000]; undefined when malformed. */
export function parsePortRange(p: string): [number, number] | undefined {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(p);
  if (!m) return undefined;
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  return lo <= hi && hi <= 65535 ? [lo, hi] : undefined;
}

function appliesTo(fw: FirewallWire, vm: FirewallSubject): boolean {
  if (fw.disabled || fw.network !== vm.network) return false;
  if (fw.targetTags?.length) return fw.targetTags.some((t) => vm.tags.includes(t));
  if (fw.targetServiceAccounts?.length) return fw.targetServiceAccounts.some((s) => vm.serviceAccounts.includes(s));
  return true;
}

/**
 * The rules one VM must enforce, from every firewall of the project. `peers` are the other
 * running VMs, for `sourceTags` / `sourceServiceAccounts` (→ `peerVmIds`).
 */
export function translateFirewalls(firewalls: FirewallWire[], vm: FirewallSubject, peers: FirewallSubject[]): FirewallRule[] {
  const out: FirewallRule[] = [];
  for (const fw of firewalls) {
    if (!appliesTo(fw, vm) || !fw.allowed) continue;
    const ingress = fw.direction === 'INGRESS';
    const cidrs = ingress ? [...(fw.sourceRanges ?? [])] : [...(fw.destinationRanges ?? ['0.0.0.0/0'])];
    let peerVmIds: string[] | undefined;
    if (ingress && (fw.sourceTags?.length || fw.sourceServiceAccounts?.length)) {
      peerVmIds = peers
        .filter((p) => p.network === fw.network && (fw.sourceTags?.some((t) => p.tags.includes(t)) || fw.sourceServiceAccounts?.some((s) => p.serviceAccounts.includes(s))))
        .map((p) => p.id);
    }
    for (const a of fw.allowed) {
      const proto = a.IPProtocol.toLowerCase();
      if (proto !== 'tcp' && proto !== 'udp' && proto !== 'icmp' && proto !== 'all') continue; // esp, ah, sctp ...: nothing a simulated VM speaks
      const base = { direction: ingress ? 'ingress' : 'egress', protocol: proto, cidrs: [...cidrs], ...(peerVmIds ? { peerVmIds: [...peerVmIds] } : {}) } as FirewallRule;
      if (!a.ports?.length) out.push(base);
      else for (const p of a.ports) {
        const [fromPort, toPort] = parsePortRange(p)!;
        out.push({ ...base, fromPort, toPort });
      }
    }
  }
  out.push({ ...GCP_IMPLIED_EGRESS, cidrs: [...GCP_IMPLIED_EGRESS.cidrs] });
  return out;
}

// ---------------------------------------------------------------------------------------------

export class Firewalls {
  /** Names of rules the fake seeded (the `default-allow-*` rules of a real default network). */
  readonly seeded = new Set<string>();
  private readonly deleting = new Set<string>();
  /** Inserted but their operation is not DONE yet: visible, not yet enforced. */
  private readonly pending = new Set<string>();

  constructor(private readonly world: GcpWorld) {}

  /** Every firewall (wire form). */
  all(): FirewallWire[] {
    return this.world.registry.list<FirewallWire>('firewalls');
  }

  /** The firewalls in force: inserted (operation DONE) and not yet deleted (operation not DONE). */
  effective(): FirewallWire[] {
    return this.all().filter((f) => !this.pending.has(f.name));
  }

  register(server: FakeServer): void {
    const base = '/projects/:project/global/firewalls';
    server.route('POST', base, 'compute.firewalls.insert', (req) => this.insert(req));
    server.route('GET', base, 'compute.firewalls.list', (req) => this.list(req));
    server.route('GET', `${base}/:firewall`, 'compute.firewalls.get', (req) => ({ body: this.find(req.params.project, req.params.firewall) }));
    server.route('DELETE', `${base}/:firewall`, 'compute.firewalls.delete', (req) => this.delete(req));
  }

  /** The default network's rules in a fresh real project (used with `seedDefaultFirewalls`). */
  seedDefaults(): void {
    const net = this.world.networkUrl('default');
    const seeds: Partial<FirewallWire>[] = [
      { name: 'default-allow-internal', sourceRanges: ['10.128.0.0/9', this.world.pools.private.cidr], allowed: [{ IPProtocol: 'tcp', ports: ['0-65535'] }, { IPProtocol: 'udp', ports: ['0-65535'] }, { IPProtocol: 'icmp' }], priority: 65534, description: 'Allow internal traffic on the default network' },
      { name: 'default-allow-ssh', sourceRanges: ['0.0.0.0/0'], allowed: [{ IPProtocol: 'tcp', ports: ['22'] }], priority: 65534, description: 'Allow SSH from anywhere' },
      { name: 'default-allow-icmp', sourceRanges: ['0.0.0.0/0'], allowed: [{ IPProtocol: 'icmp' }], priority: 65534, description: 'Allow ICMP from anywhere' },
    ];
    for (const s of seeds) {
      const wire = this.wire({ ...s, network: net, direction: 'INGRESS' } as FirewallWire);
      this.world.registry.put('firewalls', wire.name, wire);
      this.seeded.add(wire.name);
    }
  }

  private find(project: string, name: string): FirewallWire {
    this.world.checkProject(project);
    const fw = this.world.registry.get<FirewallWire>('firewalls', name);
    if (!fw) throw notFound(`projects/${project}/global/firewalls/${name}`);
    return fw;
  }

  private list(req: FakeRequest): FakeResponse {
    const { project } = req.params;
    this.world.checkProject(project);
    return {
      body: listResponse(this.all(), req.query, {
        kind: 'compute#firewallList',
        id: `projects/${project}/global/firewalls`,
        selfLink: `${API}/projects/${project}/global/firewalls`,
      }),
    };
  }

  private insert(req: FakeRequest): FakeResponse {
    const { project } = req.params;
    this.world.checkProject(project);
    const requestId = req.query.requestId as string | undefined;
    const op = this.world.operations.idempotent(requestId, () => {
      const wire = this.validate((req.json ?? {}) as Record<string, unknown>);
      const op = this.world.operations.start({ scope: 'global', operationType: 'insert', targetLink: wire.selfLink as string, targetId: wire.id as string });
      this.world.registry.put('firewalls', wire.name, wire);
      // Visible at once; enforced once the operation is DONE.
      this.pending.add(wire.name);
      this.world.clock.setTimeout(() => {
        this.pending.delete(wire.name);
        op.finish();
        this.world.syncFirewalls();
      }, this.world.timings.globalOperationMs);
      return op;
    });
    return { body: op.wire };
  }

  private delete(req: FakeRequest): FakeResponse {
    const { project, firewall } = req.params;
    const requestId = req.query.requestId as string | undefined;
    const op = this.world.operations.idempotent(requestId, () => {
      const fw = this.find(project, firewall);
      if (this.deleting.has(fw.name)) throw badRequest(`The resource 'projects/${project}/global/firewalls/${fw.name}' is not ready`, 'resourceNotReady');
      this.deleting.add(fw.name);
      const op = this.world.operations.start({ scope: 'global', operationType: 'delete', targetLink: fw.selfLink as string, targetId: fw.id as string });
      this.world.clock.setTimeout(() => {
        this.world.registry.delete('firewalls', fw.name);
        this.seeded.delete(fw.name);
        this.deleting.delete(fw.name);
        op.finish();
        this.world.syncFirewalls();
      }, this.world.timings.globalOperationMs);
      return op;
    });
    return { body: op.wire };
  }

  /** Checks a firewall body the way Compute does and returns the stored resource. */
  private validate(body: Record<string, unknown>): FirewallWire {
    const f = body as Partial<FirewallWire> & { priority?: number | string; logConfig?: unknown; description?: string };
    const p = this.world.project;
    if (!f.name) throw requiredField('resource.name');
    if (!NAME_RE.test(f.name)) throw invalidField('resource.name', f.name, `Must be a match of regex '${NAME_RE.source.slice(1, -1)}'`);
    if (this.world.registry.has('firewalls', f.name)) throw alreadyExists(`projects/${p}/global/firewalls/${f.name}`);

    const netRef = f.network ?? 'global/networks/default';
    const m = /^(?:projects\/([^/]+)\/)?global\/networks\/([^/]+)$/.exec(stripApi(netRef));
    if (!m) throw invalidField('resource.network', netRef, 'The URL is malformed.');
    if ((m[1] ?? p) !== p || m[2] !== 'default') throw notFound(`projects/${m[1] ?? p}/global/networks/${m[2]}`);

    const direction = f.direction ?? 'INGRESS';
    if (f.allowed?.length && f.denied?.length) throw badRequest("Invalid value for field 'resource': ''. A firewall rule can have either allowed or denied rules, not both.", 'invalid');
    if (!f.allowed?.length && !f.denied?.length) throw requiredField('resource.allowed');
    const entries = (f.allowed ?? f.denied)!;
    const kind = f.allowed?.length ? 'allowed' : 'denied';
    entries.forEach((e, i) => {
      const proto = String(e.IPProtocol ?? '').toLowerCase();
      if (!proto) throw requiredField(`resource.${kind}[${i}].IPProtocol`);
      const numeric = /^\d+$/.test(proto) && Number(proto) <= 255;
      if (!PROTOCOLS.has(proto) && !numeric) throw invalidField(`resource.${kind}[${i}].IPProtocol`, e.IPProtocol, 'Invalid IP protocol.');
      for (const [j, port] of (e.ports ?? []).entries()) {
        if (!PORT_PROTOCOLS.has(proto) && proto !== 'all') throw invalidField(`resource.${kind}[${i}].ports[${j}]`, port, 'Ports may only be specified for tcp, udp or sctp.');
        if (proto === 'all') throw invalidField(`resource.${kind}[${i}].ports[${j}]`, port, "Ports cannot be specified when IPProtocol is 'all'.");
        if (!parsePortRange(port)) throw invalidField(`resource.${kind}[${i}].ports[${j}]`, port, 'Invalid port or port range.');
      }
    });
    if (f.sourceTags?.length && f.sourceServiceAccounts?.length) throw badRequest("Invalid value for field 'resource.sourceServiceAccounts': ''. Source service accounts cannot be used together with source tags.", 'invalid');
    if (f.targetTags?.length && f.targetServiceAccounts?.length) throw badRequest("Invalid value for field 'resource.targetServiceAccounts': ''. Target service accounts cannot be used together with target tags.", 'invalid');
    if (direction === 'EGRESS' && (f.sourceTags?.length || f.sourceServiceAccounts?.length)) throw invalidField('resource.sourceTags', f.sourceTags, 'Source tags and service accounts cannot be used in an EGRESS rule.');
    for (const [field, list] of [['sourceRanges', f.sourceRanges], ['destinationRanges', f.destinationRanges]] as const) {
      (list ?? []).forEach((c, i) => {
        const cm = CIDR_RE.exec(c);
        if (!cm || cm.slice(1, 5).some((x) => Number(x) > 255) || (cm[5] !== undefined && Number(cm[5]) > 32)) throw invalidField(`resource.${field}[${i}]`, c, 'Invalid IPv4 CIDR range.');
      });
    }
    for (const [i, t] of [...(f.targetTags ?? []), ...(f.sourceTags ?? [])].entries()) {
      if (!NAME_RE.test(t)) throw invalidField('resource.tags', t, `Tag ${i} must be a match of regex '${NAME_RE.source.slice(1, -1)}'`);
    }
    const priority = f.priority === undefined ? 1000 : Number(f.priority);
    if (!(priority >= 0 && priority <= 65535)) throw invalidField('resource.priority', f.priority, 'Must be between 0 and 65535.');

    const wire: FirewallWire = {
      ...(f as FirewallWire),
      network: this.world.networkUrl('default'),
      direction,
      priority,
    };
    // GCP fills the source in: an INGRESS rule with no source admits the whole internet.
    if (direction === 'INGRESS' && !f.sourceRanges?.length && !f.sourceTags?.length && !f.sourceServiceAccounts?.length) wire.sourceRanges = ['0.0.0.0/0'];
    if (direction === 'EGRESS' && !f.destinationRanges?.length) wire.destinationRanges = ['0.0.0.0/0'];
    return this.wire(wire);
  }

  private wire(f: FirewallWire): FirewallWire {
    const { kind: _k, id: _i, selfLink: _s, creationTimestamp: _c, ...rest } = f;
    return {
      kind: 'compute#firewall',
      id: this.world.ids.nextUint64(),
      creationTimestamp: timestamp(this.world.clock.now()),
      ...rest,
      priority: f.priority ?? 1000,
      logConfig: (f.logConfig as object | undefined) ?? { enable: false },
      disabled: f.disabled ?? false,
      selfLink: `${API}/projects/${this.world.project}/global/firewalls/${f.name}`,
    };
  }
}
