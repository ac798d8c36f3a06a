/**
 * A cloud firewall for one simulated VM, enforced by nftables inside the VM's network namespace:
 * ingress is denied by default except loopback and replies (established/related); each rule admits
 * a protocol (and port range) from a list of IPv4 CIDRs. Egress is open, as on the clouds.
 * A rule set is replaced atomically (one nft transaction), so rules change on running VMs.
 */
import { SimError } from './exec';

export interface FirewallRule {
  protocol: 'tcp' | 'udp' | 'icmp' | 'all';
  /** Inclusive port range, tcp/udp only. Omitted = every port. */
  ports?: [number, number];
  /** IPv4 CIDRs (or bare addresses) allowed to connect. */
  sources: string[];
}

export const TABLE = 'dcsim_fw';

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function validCidr(s: string): boolean {
  const [addr, bits, ...rest] = s.split('/');
  if (rest.length > 0 || addr === undefined || !IPV4.test(addr)) return false;
  if (bits === undefined) return true;
  return /^\d{1,2}$/.test(bits) && Number(bits) <= 32;
}

export function validateRules(rules: FirewallRule[]): void {
  if (!Array.isArray(rules)) throw new SimError('firewall rules must be an array');
  rules.forEach((r, i) => {
    if (!['tcp', 'udp', 'icmp', 'all'].includes(r.protocol)) {
      throw new SimError(`firewall rule ${i}: unknown protocol ${String(r.protocol)}`);
    }
    if (r.ports !== undefined) {
      if (r.protocol !== 'tcp' && r.protocol !== 'udp') {
        throw new SimError(`firewall rule ${i}: ports only apply to tcp/udp`);
      }
      const [a, b] = r.ports;
      if (!Number.isInteger(a) || !Number.isInteger(b) || a < 1 || b > 65535 || a > b) {
        throw new SimError(`firewall rule ${i}: bad port range ${JSON.stringify(r.ports)}`);
      }
    }
    if (!Array.isArray(r.sources)) throw new SimError(`firewall rule ${i}: sources must be an array of CIDRs`);
    for (const s of r.sources) {
      if (!validCidr(s)) throw new SimError(`firewall rule ${i}: not an IPv4 CIDR: ${JSON.stringify(s)}`);
    }
  });
}

/** The nft script that replaces the VM's firewall in one transaction. */
export function renderNftScript(rules: FirewallRule[]): string {
  validateRules(rules);
  const lines = [
    // Create-then-delete makes the script work whether or not the table exists yet.
    `table inet ${TABLE}`,
    `delete table inet ${TABLE}`,
    `table inet ${TABLE} {`,
    '  chain input {',
    '    type filter hook input priority 0; policy drop;',
    '    iif "lo" accept',
    '    ct state established,related accept',
    '    ct state invalid drop',
    // ARP is not IP and not filtered here; neighbour discovery needs nothing else (IPv6 is off).
  ];
  for (const r of rules) {
    if (r.sources.length === 0) continue;
    const saddr = `ip saddr { ${r.sources.join(', ')} }`;
    const ports = r.ports ? (r.ports[0] === r.ports[1] ? `${r.ports[0]}` : `${r.ports[0]}-${r.ports[1]}`) : null;
    switch (r.protocol) {
      case 'tcp':
      case 'udp':
        lines.push(`    ${saddr} ${r.protocol} dport ${ports ?? '1-65535'} accept`);
        break;
      case 'icmp':
        lines.push(`    ${saddr} meta l4proto icmp accept`);
        break;
      case 'all':
        lines.push(`    ${saddr} accept`);
        break;
    }
  }
  lines.push('  }', '}', '');
  return lines.join('\n');
}
