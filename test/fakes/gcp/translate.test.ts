/** Pure parts of the GCP fake: firewall translation and the list filter. */
import { describe, expect, it } from 'vitest';
import { FakeApiError } from '../core';
import { applyFieldSelection, matches, parseFieldSelection, parseFilter, partialResponse } from './filter';
import { parsePortRange, translateFirewalls, type FirewallWire } from './firewalls';

const NET = 'https://www.googleapis.com/compute/v1/projects/p/global/networks/default';
const fw = (f: Partial<FirewallWire>): FirewallWire => ({ name: 'r', direction: 'INGRESS', network: NET, ...f }) as FirewallWire;
const vm = (id: string, tags: string[] = [], sa: string[] = []) => ({ id, network: NET, tags, serviceAccounts: sa });
const EGRESS = { direction: 'egress', protocol: 'all', cidrs: ['0.0.0.0/0'] };

describe('translateFirewalls', () => {
  it('targets by tag or service account; sources by ranges, tags (peers) or service accounts', () => {
    const rules = [
      fw({ name: 'a', targetTags: ['dask'], sourceTags: ['dask'], allowed: [{ IPProtocol: 'tcp', ports: ['8786-8787'] }] }),
      fw({ name: 'b', targetServiceAccounts: ['sa@x'], sourceServiceAccounts: ['sa@x'], allowed: [{ IPProtocol: 'udp' }] }),
      fw({ name: 'c', targetTags: ['other'], sourceRanges: ['0.0.0.0/0'], allowed: [{ IPProtocol: 'tcp', ports: ['22'] }] }),
      fw({ name: 'd', sourceRanges: ['10.0.0.0/8'], allowed: [{ IPProtocol: 'all' }, { IPProtocol: 'esp' }] }), // no target: every VM
      fw({ name: 'e', targetTags: ['dask'], sourceRanges: ['0.0.0.0/0'], allowed: [{ IPProtocol: 'tcp' }], disabled: true }),
      fw({ name: 'f', direction: 'EGRESS', destinationRanges: ['203.0.113.0/24'], allowed: [{ IPProtocol: 'tcp', ports: ['443'] }] }),
      fw({ name: 'g', targetTags: ['dask'], sourceRanges: ['0.0.0.0/0'], denied: [{ IPProtocol: 'tcp' }] }),
    ];
    const me = vm('1', ['dask'], ['sa@x']);
    const peers = [me, vm('2', ['dask']), vm('3', [], ['sa@x']), vm('4', ['nope'])];
    expect(translateFirewalls(rules, me, peers)).toEqual([
      { direction: 'ingress', protocol: 'tcp', fromPort: 8786, toPort: 8787, cidrs: [], peerVmIds: ['1', '2'] },
      { direction: 'ingress', protocol: 'udp', cidrs: [], peerVmIds: ['1', '3'] },
      { direction: 'ingress', protocol: 'all', cidrs: ['10.0.0.0/8'] },
      { direction: 'egress', protocol: 'tcp', fromPort: 443, toPort: 443, cidrs: ['203.0.113.0/24'] },
      EGRESS,
    ]);
    expect(translateFirewalls(rules, vm('4', ['nope']), peers)).toEqual([{ direction: 'ingress', protocol: 'all', cidrs: ['10.0.0.0/8'] }, { direction: 'egress', protocol: 'tcp', fromPort: 443, toPort: 443, cidrs: ['203.0.113.0/24'] }, EGRESS]);
  });

  it('parses ports', () => {
    expect(parsePortRange('8786')).toEqual([8786, 8786]);
    expect(parsePortRange('8000-9000')).toEqual([8000, 9000]);
    expect(parsePortRange('9000-8000')).toBeUndefined();
    expect(parsePortRange('70000')).toBeUndefined();
    expect(parsePortRange('a')).toBeUndefined();
  });
});

describe('list filter', () => {
  const inst = { name: 'dask-abc-w-1', status: 'RUNNING', labels: { 'dask-cluster': 'abc', role: 'worker' }, tags: { items: ['dask-abc'] }, scheduling: { preemptible: false } };
  const ok = (f: string) => matches(inst, parseFilter(f));

  it('evaluates the documented forms', () => {
    expect(ok('labels.dask-cluster=abc')).toBe(true);
    expect(ok('labels.dask-cluster = "abc"')).toBe(true);
    expect(ok("labels.dask-cluster = 'xyz'")).toBe(false);
    expect(ok('(labels.dask-cluster = abc) (status = RUNNING)')).toBe(true);
    expect(ok('(labels.dask-cluster = abc) AND (status != RUNNING)')).toBe(false);
    expect(ok('labels.owner:*')).toBe(false);
    expect(ok('labels.role:*')).toBe(true);
    expect(ok('name: abc')).toBe(true);
    expect(ok('name ne .*-w-.*')).toBe(false);
    expect(ok('tags.items = dask-abc')).toBe(true);
    expect(ok('scheduling.preemptible = false')).toBe(true);
    expect(ok('labels.missing != x')).toBe(true);
    expect(ok('')).toBe(true);
  });

  it('answers 400 for what it cannot read, and says OR is not modelled', () => {
    const code = (f: string) => {
      try {
        parseFilter(f);
      } catch (e) {
        return e instanceof FakeApiError ? `${e.status} ${e.code}` : 'other';
      }
      return 'ok';
    };
    expect(code('labels.a = ')).toBe('400 invalid');
    expect(code('labels.a = b labels.c = d')).toBe('400 invalid'); // several expressions need parentheses
    expect(code('(labels.a = b')).toBe('400 invalid');
    expect(code('(labels.a = b) OR (labels.c = d)')).toBe('400 badRequest');
  });
});

describe('partial responses (fields / X-Goog-FieldMask)', () => {
  const list = {
    kind: 'compute#instanceList',
    items: [
      { name: 'a', status: 'RUNNING', metadata: { items: [{ key: 'user-data', value: 'x'.repeat(100) }] }, networkInterfaces: [{ networkIP: '10.0.0.2', network: 'n', accessConfigs: [{ natIP: '1.2.3.4', type: 'ONE_TO_ONE_NAT' }] }] },
      { name: 'b', status: 'STOPPING' },
    ],
    nextPageToken: 't',
  };

  it('keeps only the selected fields, inside arrays and nested selections; a/b and a.b select inside a', () => {
    const sel = parseFieldSelection('items(name,networkInterfaces(networkIP,accessConfigs/natIP)),nextPageToken');
    expect(applyFieldSelection(list, sel)).toEqual({
      items: [{ name: 'a', networkInterfaces: [{ networkIP: '10.0.0.2', accessConfigs: [{ natIP: '1.2.3.4' }] }] }, { name: 'b' }],
      nextPageToken: 't',
    });
    expect(applyFieldSelection(list, parseFieldSelection('items.status'))).toEqual({ items: [{ status: 'RUNNING' }, { status: 'STOPPING' }] });
  });

  it('* selects every key of a map (aggregated lists); no selection answers everything', () => {
    const agg = { items: { 'zones/a': { instances: [{ name: 'x', status: 'RUNNING' }] }, 'zones/b': { warning: { code: 'NO_RESULTS_ON_PAGE' } } } };
    expect(applyFieldSelection(agg, parseFieldSelection('items/*/instances(name)'))).toEqual({ items: { 'zones/a': { instances: [{ name: 'x' }] }, 'zones/b': {} } });
    expect(partialResponse(list, { query: {}, headers: {} })).toBe(list);
    const seen: string[] = [];
    expect(partialResponse(list, { query: {}, headers: { 'x-goog-fieldmask': 'nextPageToken' } }, (f) => seen.push(f))).toEqual({ nextPageToken: 't' });
    expect(seen).toEqual(['nextPageToken']);
  });

  it('an unreadable selection is a 400', () => {
    for (const bad of ['items(', 'items()', ',', 'a//b', 'a)']) expect(() => parseFieldSelection(bad), bad).toThrow(FakeApiError);
  });
});
