/**
 * DigitalOcean cloud firewalls: validation of their rules (as the API applies it) and translation
 * to the cloud-neutral `FirewallRule`s a simulated VM enforces.
 *
 * Semantics modelled (DigitalOcean docs, "How to configure firewalls"):
 * - a Droplet with **no** firewall accepts all inbound traffic;
 * - once one or more firewalls apply (by Droplet id or by tag), inbound traffic is denied except
 *   what the union of their inbound rules allows;
 * - `ports`: one port, a range `8000-9000`, or `0` / `all` for every port; the API answers `0`
 *   for "all" and always `0` for ICMP.
 */
import { FakeApiError, type FirewallRule } from '../core';

export interface DoRuleTarget {
  addresses?: string[];
  tags?: string[] | null;
  droplet_ids?: number[];
  load_balancer_uids?: string[];
  kubernetes_ids?: string[];
}

export interface DoInboundRule {
  protocol: 'tcp' | 'udp' | 'icmp';
  ports: string;
  sources: DoRuleTarget;
}

export interface DoOutboundRule {
  protocol: 'tcp' | 'udp' | 'icmp';
  ports: string;
  destinations: DoRuleTarget;
}

export interface DoPendingChange {
  droplet_id: number;
  removing: boolean;
  status: 'waiting';
}

/** A firewall exactly as the API returns it. */
export interface DoFirewall {
  id: string;
  name: string;
  status: 'waiting' | 'succeeded' | 'failed';
  created_at: string;
  droplet_ids: number[];
  tags: string[];
  inbound_rules: DoInboundRule[];
  outbound_rules: DoOutboundRule[];
  pending_changes: DoPendingChange[];
}

/**
 * Limits per firewall (DigitalOcean docs, Firewalls Limits:
 * https://docs.digitalocean.com/products/networking/firewalls/details/limits/): 10 Droplets by id,
 * 5 tags, 50 inbound + outbound rules, 1000 entries in one rule's sources or destinations.
 */
export const FIREWALL_LIMITS = { dropletIds: 10, tags: 5, rules: 50, targetEntries: 1000 } as const;

/** What a simulated Droplet enforces when no firewall applies to it: everything is allowed. */
export const ALLOW_ALL_INBOUND: FirewallRule[] = [{ direction: 'ingress', protocol: 'all', cidrs: ['0.0.0.0/0'] }];

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const TAG = /^[a-zA-Z0-9_\-:]{1,255}$/;

export function unprocessable(message: string): FakeApiError {
  return new FakeApiError(422, 'unprocessable_entity', message);
}

export function isIpv4Cidr(s: string): boolean {
  const [addr, bits, ...rest] = s.split('/');
  return rest.length === 0 && IPV4.test(addr) && (bits === undefined || (/^\d{1,2}$/.test(bits) && Number(bits) <= 32));
}

function isIpv6Cidr(s: string): boolean {
  const [addr, bits, ...rest] = s.split('/');
  return rest.length === 0 && addr.includes(':') && /^[0-9a-fA-F:.]+$/.test(addr) && (bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= 128));
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

/** Parses `ports` of a tcp/udp rule → inclusive range, or undefined for every port. Throws 422. */
export function parsePorts(protocol: string, ports: string): { from: number; to: number } | undefined {
  if (protocol === 'icmp') return undefined;
  if (ports === '0' || ports === 'all') return undefined;
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(ports ?? '');
  const from = m ? Number(m[1]) : NaN;
  const to = m ? Number(m[2] ?? m[1]) : NaN;
  if (!m || from < 1 || to > 65535 || from > to) {
    throw unprocessable(`invalid ports '${ports}' for protocol ${protocol}: use a port, a range such as 8000-9000, or 0 / all`);
  }
  return { from, to };
}

function normalizePorts(protocol: string, ports: string): string {
  return protocol === 'icmp' || ports === 'all' ? '0' : ports;
}

function checkTarget(t: DoRuleTarget | undefined, where: string, dropletExists: (id: number) => boolean): DoRuleTarget {
  const target: DoRuleTarget = {};
  for (const a of t?.addresses ?? []) {
    if (!isIpv4Cidr(a) && !isIpv6Cidr(a)) throw unprocessable(`${where}: '${a}' is not a valid IP address or CIDR`);
  }
  for (const tag of t?.tags ?? []) if (!isValidTag(tag)) throw unprocessable(`${where}: invalid tag name '${tag}'`);
  for (const id of t?.droplet_ids ?? []) if (!dropletExists(id)) throw unprocessable(`${where}: droplet ${id} does not exist`);
  // The API answers with every key present.
  target.addresses = [...(t?.addresses ?? [])];
  target.droplet_ids = [...(t?.droplet_ids ?? [])];
  target.load_balancer_uids = [...(t?.load_balancer_uids ?? [])];
  target.kubernetes_ids = [...(t?.kubernetes_ids ?? [])];
  target.tags = [...(t?.tags ?? [])];
  const entries = target.addresses.length + target.droplet_ids.length + target.load_balancer_uids.length + target.kubernetes_ids.length + target.tags.length;
  if (entries > FIREWALL_LIMITS.targetEntries) throw unprocessable(`${where}: at most ${FIREWALL_LIMITS.targetEntries} entries (got ${entries}); use tags or network ranges`);
  const empty = !target.addresses.length && !target.droplet_ids.length && !target.load_balancer_uids.length && !target.kubernetes_ids.length && !target.tags.length;
  if (empty) throw unprocessable(`${where}: a rule needs at least one address, tag, droplet, load balancer or kubernetes cluster`);
  return target;
}

/** Validates and normalizes rules as the API stores them (throws 422). */
export function normalizeRules(
  inbound: DoInboundRule[] | null | undefined,
  outbound: DoOutboundRule[] | null | undefined,
  dropletExists: (id: number) => boolean,
): { inbound_rules: DoInboundRule[]; outbound_rules: DoOutboundRule[] } {
  const inbound_rules = (inbound ?? []).map((r, i) => {
    parsePorts(r.protocol, r.ports);
    return { protocol: r.protocol, ports: normalizePorts(r.protocol, r.ports), sources: checkTarget(r.sources, `inbound_rules[${i}].sources`, dropletExists) };
  });
  const outbound_rules = (outbound ?? []).map((r, i) => {
    parsePorts(r.protocol, r.ports);
    return { protocol: r.protocol, ports: normalizePorts(r.protocol, r.ports), destinations: checkTarget(r.destinations, `outbound_rules[${i}].destinations`, dropletExists) };
  });
  return { inbound_rules, outbound_rules };
}

/** Enforces the per-firewall limits (throws 422). */
export function checkLimits(fw: Pick<DoFirewall, 'droplet_ids' | 'tags' | 'inbound_rules' | 'outbound_rules'>): void {
  if (fw.droplet_ids.length > FIREWALL_LIMITS.dropletIds) {
    throw unprocessable(`a firewall can be assigned to at most ${FIREWALL_LIMITS.dropletIds} droplets by id (got ${fw.droplet_ids.length}); use tags`);
  }
  if (fw.tags.length > FIREWALL_LIMITS.tags) {
    throw unprocessable(`a firewall can be assigned at most ${FIREWALL_LIMITS.tags} tags (got ${fw.tags.length})`);
  }
  const rules = fw.inbound_rules.length + fw.outbound_rules.length;
  if (rules > FIREWALL_LIMITS.rules) throw unprocessable(`a firewall can have at most ${FIREWALL_LIMITS.rules} rules (got ${rules})`);
  for (const tag of fw.tags) if (!isValidTag(tag)) throw unprocessable(`invalid tag name '${tag}'`);
}

/** Two rules are the same rule (for DELETE .../rules) when their normalized JSON matches. */
export function sameRule(a: DoInboundRule | DoOutboundRule, b: DoInboundRule | DoOutboundRule): boolean {
  const key = (r: DoInboundRule | DoOutboundRule) => {
    const t = 'sources' in r ? r.sources : r.destinations;
    const sorted = (xs: unknown[] | null | undefined) => [...(xs ?? [])].map(String).sort();
    return JSON.stringify([r.protocol, normalizePorts(r.protocol, r.ports), sorted(t.addresses), sorted(t.tags), sorted(t.droplet_ids), sorted(t.load_balancer_uids), sorted(t.kubernetes_ids)]);
  };
  return key(a) === key(b);
}

/**
 * The inbound rules a Droplet enforces, given the firewalls applying to it. `dropletsTagged`
 * resolves a source tag to the ids of the Droplets carrying it (peer VMs).
 * IPv6 sources are left out: the simulated network is IPv4 only.
 */
export function effectiveInbound(firewalls: DoFirewall[], dropletsTagged: (tag: string) => number[]): FirewallRule[] {
  if (firewalls.length === 0) return ALLOW_ALL_INBOUND.map((r) => ({ ...r, cidrs: [...r.cidrs] }));
  const out: FirewallRule[] = [];
  for (const fw of firewalls) {
    for (const r of fw.inbound_rules) {
      const range = parsePorts(r.protocol, r.ports);
      const cidrs = (r.sources.addresses ?? []).filter((a) => isIpv4Cidr(a)).map((a) => (a.includes('/') ? a : `${a}/32`));
      const peers = new Set<string>((r.sources.droplet_ids ?? []).map(String));
      for (const tag of r.sources.tags ?? []) for (const id of dropletsTagged(tag)) peers.add(String(id));
      const rule: FirewallRule = { direction: 'ingress', protocol: r.protocol, cidrs };
      if (range) {
        rule.fromPort = range.from;
        rule.toPort = range.to;
      }
      if ((r.sources.droplet_ids ?? []).length || (r.sources.tags ?? []).length) rule.peerVmIds = [...peers].sort();
      out.push(rule);
    }
  }
  return out;
}
