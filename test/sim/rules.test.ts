/** Pure parts of the simulated cloud: no root, no VMs. */
import { describe, expect, it } from 'vitest';
import { renderNftScript, validCidr } from './firewall';
import { toHostname, toSimRules } from './booter';
import { macFor } from './network';
import { inCidr, intToIp, ipToInt } from './net-util';

describe('firewall rendering', () => {
  it('default-denies ingress and admits loopback and replies before any rule', () => {
    const script = renderNftScript([]);
    expect(script).toContain('type filter hook input priority 0; policy drop;');
    expect(script.indexOf('iif "lo" accept')).toBeLessThan(script.indexOf('ct state established,related accept'));
    // One transaction that works whether or not the table exists yet.
    expect(script.split('\n').slice(0, 3)).toEqual(['table inet dcsim_fw', 'delete table inet dcsim_fw', 'table inet dcsim_fw {']);
  });

  it('renders each protocol', () => {
    const script = renderNftScript([
      { protocol: 'tcp', ports: [8786, 8787], sources: ['10.77.0.0/20', '10.77.128.5'] },
      { protocol: 'udp', ports: [53, 53], sources: ['0.0.0.0/0'] },
      { protocol: 'tcp', sources: ['10.77.0.0/20'] },
      { protocol: 'icmp', sources: ['10.77.0.0/16'] },
      { protocol: 'all', sources: ['10.77.0.9/32'] },
      { protocol: 'all', sources: [] }, // admits nobody: no line
    ]);
    expect(script).toContain('ip saddr { 10.77.0.0/20, 10.77.128.5 } tcp dport 8786-8787 accept');
    expect(script).toContain('ip saddr { 0.0.0.0/0 } udp dport 53 accept');
    expect(script).toContain('ip saddr { 10.77.0.0/20 } tcp dport 1-65535 accept');
    expect(script).toContain('ip saddr { 10.77.0.0/16 } meta l4proto icmp accept');
    expect(script).toContain('ip saddr { 10.77.0.9/32 } accept');
    expect(script.match(/accept/g)).toHaveLength(2 + 5); // loopback, replies, five rules
  });

  it('refuses malformed rules (nothing reaches nft)', () => {
    expect(() => renderNftScript([{ protocol: 'tcp', ports: [0, 10], sources: [] }])).toThrow(/port range/);
    expect(() => renderNftScript([{ protocol: 'tcp', ports: [20, 10], sources: [] }])).toThrow(/port range/);
    expect(() => renderNftScript([{ protocol: 'icmp', ports: [1, 2], sources: [] }])).toThrow(/only apply/);
    expect(() => renderNftScript([{ protocol: 'sctp' as 'tcp', sources: [] }])).toThrow(/protocol/);
    expect(() => renderNftScript([{ protocol: 'all', sources: ['10.0.0.0/8; flush ruleset'] }])).toThrow(/CIDR/);
    for (const bad of ['10.0.0.0/33', '256.1.1.1', '10.0.0', '::1/128', '10.0.0.1/8/1', '']) expect(validCidr(bad), bad).toBe(false);
    for (const good of ['0.0.0.0/0', '10.77.0.0/20', '10.77.0.5', '255.255.255.255/32']) expect(validCidr(good), good).toBe(true);
  });
});

describe('fake firewall rules → simulated VM rules', () => {
  const ips: Record<string, string> = { 'vm-b': '10.77.0.3' };
  const lookup = (id: string) => ips[id];

  it('keeps ingress, resolves peers to private addresses, drops egress and empty rules', () => {
    expect(
      toSimRules(
        [
          { direction: 'ingress', protocol: 'tcp', fromPort: 8786, toPort: 8786, cidrs: ['0.0.0.0/0'] },
          { direction: 'ingress', protocol: 'all', cidrs: [], peerVmIds: ['vm-b', 'not-booted-yet'] },
          { direction: 'ingress', protocol: 'tcp', cidrs: [], peerVmIds: ['not-booted-yet'] },
          { direction: 'egress', protocol: 'all', cidrs: ['0.0.0.0/0'] },
          { direction: 'ingress', protocol: 'icmp', fromPort: 8, cidrs: ['10.77.0.0/20'] },
          { direction: 'ingress', protocol: 'udp', fromPort: 9000, cidrs: ['10.77.0.0/20'] },
        ],
        lookup,
      ),
    ).toEqual([
      { protocol: 'tcp', ports: [8786, 8786], sources: ['0.0.0.0/0'] },
      { protocol: 'all', sources: ['10.77.0.3/32'] },
      { protocol: 'icmp', sources: ['10.77.0.0/20'] },
      { protocol: 'udp', ports: [9000, 9000], sources: ['10.77.0.0/20'] },
    ]);
  });

  it('makes hostnames cloud-init accepts', () => {
    expect(toHostname('Dask_Scheduler.1', 'x')).toBe('dask-scheduler-1');
    expect(toHostname(undefined, 'i-0abc123')).toBe('i-0abc123');
    expect(toHostname('---', '12345')).toBe('12345');
    expect(toHostname('a'.repeat(80), 'x')).toHaveLength(63);
  });
});

describe('addresses', () => {
  it('does IPv4 arithmetic and CIDR membership', () => {
    expect(intToIp(ipToInt('10.77.15.253'))).toBe('10.77.15.253');
    expect(inCidr('10.77.15.255', '10.77.0.0/20')).toBe(true);
    expect(inCidr('10.77.16.0', '10.77.0.0/20')).toBe(false);
    expect(inCidr('192.0.2.1', '10.77.0.0/16')).toBe(false);
    expect(inCidr('8.8.8.8', '0.0.0.0/0')).toBe(true);
    expect(() => ipToInt('10.77.0.256')).toThrow();
  });

  it('derives a stable, locally administered MAC from an address', () => {
    expect(macFor('10.77.0.10')).toBe('02:00:0a:4d:00:0a');
    expect(macFor('10.77.128.10')).not.toBe(macFor('10.77.0.10'));
  });
});
