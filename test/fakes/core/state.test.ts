import { describe, expect, it } from 'vitest';
import { AddressPools, IdAllocator, IpAllocator, ResourceRegistry } from './state';

describe('state helpers', () => {
  it('registry lists what is held and what leaked', () => {
    const r = new ResourceRegistry();
    r.put('instances', 'i-1', { state: 'running' });
    r.put('instances', 'i-2', { state: 'terminated' });
    r.put('securityGroups', 'sg-1', { name: 'dask' });
    r.put('vpcs', 'vpc-default', { isDefault: true });
    r.ignoreForLeaks('vpcs');
    expect(Object.keys(r.all())).toEqual(['instances', 'securityGroups', 'vpcs']);
    const leaked = r.leaked((kind, v) => kind === 'instances' && (v as { state: string }).state === 'terminated');
    expect(leaked).toEqual({ instances: [{ id: 'i-1', value: { state: 'running' } }], securityGroups: [{ id: 'sg-1', value: { name: 'dask' } }] });
    r.delete('instances', 'i-1');
    r.delete('securityGroups', 'sg-1');
    expect(r.leaked((k, v) => (v as { state?: string }).state === 'terminated')).toEqual({});
  });

  it('allocates private and public addresses from separate blocks', () => {
    const pools = new AddressPools();
    expect(pools.private.allocate()).toBe('10.77.0.2');
    expect(pools.private.allocate()).toBe('10.77.0.3');
    expect(pools.public.allocate()).toBe('10.77.128.2');
    const small = new IpAllocator('192.0.2.0/30');
    expect(small.allocate()).toBe('192.0.2.2');
    expect(() => small.allocate()).toThrow(/exhausted/);
    small.release('192.0.2.2');
    expect(small.allocate()).toBe('192.0.2.2');
  });

  it('ids look like each cloud\'s', () => {
    const ids = new IdAllocator();
    expect(ids.hex('i-')).toMatch(/^i-[0-9a-f]{17}$/);
    expect(ids.nextUint64()).toMatch(/^\d{19}$/);
    expect(ids.nextInt()).toBeLessThan(ids.nextInt());
    expect(ids.uuid()).toMatch(/^[0-9a-f-]{36}$/);
  });
});
