/**
 * The DigitalOcean fake, driven by the real dots-wrapper client (and raw HTTP where dots-wrapper
 * cannot send what we need: `public_networking`, missing auth, contract-breaking bodies).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createApiClient } from 'dots-wrapper';
import { assertNoContractViolations, ManualClock } from '../core';
import { raw, type RawResponse } from '../core/http';
import { FakeDigitalOcean, type FakeDigitalOceanOptions } from './fake-digitalocean';
import { RecordingBooter } from './recording-booter';
import { checkFakesAndClose } from '../../helpers/fakes';

const fakes: FakeDigitalOcean[] = [];

afterEach(() => checkFakesAndClose(fakes, []));

async function start(opts: FakeDigitalOceanOptions = {}) {
  const clock = new ManualClock();
  const fake = await FakeDigitalOcean.start({ clock, ...opts });
  fakes.push(fake);
  const dots = createApiClient(fake.clientOptions());
  const api = (path: string, init: { method?: string; body?: object; token?: string | null } = {}): Promise<RawResponse> => {
    const headers: Record<string, string> = {};
    if (init.token !== null) headers.authorization = `Bearer ${init.token ?? fake.token}`;
    return raw(`${fake.endpoint}${path}`, { method: init.method ?? (init.body ? 'POST' : 'GET'), headers, body: init.body });
  };
  return { fake, clock, dots, api };
}

/** The HTTP error a dots-wrapper (axios) call failed with. */
async function failure(p: Promise<unknown>): Promise<{ status: number; data: any; headers: Record<string, string> }> {
  try {
    await p;
  } catch (e) {
    const r = (e as { response?: { status: number; data: unknown; headers: Record<string, string> } }).response;
    if (!r) throw e;
    return { status: r.status, data: r.data, headers: r.headers };
  }
  throw new Error('expected the call to fail');
}

const base = { region: 'nyc3', size: 's-2vcpu-4gb', image: 'debian-12-x64' };
const inNet = (ip: string, prefix: string) => ip.startsWith(prefix);

describe('droplets', () => {
  it('failAfterEffect: the create happens, the answer is a 500 (what a client must reconcile)', async () => {
    const { fake, dots } = await start();
    fake.failAfterEffect('droplets_create');
    const err = await failure(dots.droplet.createDroplets({ ...base, names: ['a', 'b'], tags: ['dask-lost'] }));
    expect(err.status).toBe(500);
    expect(err.data).toMatchObject({ id: 'server_error' });
    const listed = (await dots.droplet.listDroplets({ tag_name: 'dask-lost' })).data.droplets.map((d) => d.name);
    expect(listed.sort()).toEqual(['a', 'b']);
    expect((await dots.droplet.createDroplets({ ...base, names: ['c'] })).status).toBe(202); // only once
  });

  it('createDroplet: new without addresses; the private (and public) address appears only when active', async () => {
    const { fake, clock, dots } = await start({ lifecycleMs: 30_000 });
    const created = await dots.droplet.createDroplet({ ...base, name: 'sched', tags: ['dask-abc'], user_data: '#cloud-config\n' });
    expect(created.status).toBe(202);
    const d = created.data.droplet;
    expect(d).toMatchObject({ name: 'sched', status: 'new', size_slug: 's-2vcpu-4gb', tags: ['dask-abc'], networks: { v4: [], v6: [] } });
    expect((created.data as any).links.actions[0]).toMatchObject({ rel: 'create' });

    await clock.advance(29_999);
    expect((await dots.droplet.getDroplet({ droplet_id: d.id })).data.droplet.networks.v4).toEqual([]);
    await clock.advance(1);
    const active = (await dots.droplet.getDroplet({ droplet_id: d.id })).data.droplet;
    expect(active.status).toBe('active');
    const priv = active.networks.v4.find((n: { type: string }) => n.type === 'private')!;
    const pub = active.networks.v4.find((n: { type: string }) => n.type === 'public')!;
    expect(inNet(priv.ip_address, '10.77.')).toBe(true);
    expect(fake.pools.private.contains(priv.ip_address)).toBe(true);
    expect(fake.pools.public.contains(pub.ip_address)).toBe(true);

    // It sits in the region's default VPC, 10.77.0.0/20.
    const vpc = (await dots.vpc.getVpc({ vpc_id: active.vpc_uuid })).data.vpc;
    expect(vpc).toMatchObject({ region: 'nyc3', ip_range: '10.77.0.0/20', default: true });
  });

  it('public_networking: false (raw request) gives a private address only; unsupported region → 422', async () => {
    const { clock, api } = await start({ privateNetworkingRegions: ['nyc3'] });
    const r = await api('/droplets', { body: { ...base, name: 'w1', public_networking: false } });
    expect(r.status).toBe(202);
    await clock.advance(1_000);
    const got = (await api(`/droplets/${r.json().droplet.id}`)).json().droplet;
    expect(got.status).toBe('active');
    expect(got.networks.v4.map((n: { type: string }) => n.type)).toEqual(['private']);

    const bad = await api('/droplets', { body: { ...base, region: 'sfo3', name: 'w2', public_networking: false } });
    expect(bad.status).toBe(422);
    expect(bad.json()).toMatchObject({ id: 'unprocessable_entity', message: expect.stringMatching(/public_networking/) });
  });

  it('createDroplets: up to 10 names per call; 11 → 422', async () => {
    const { dots, api } = await start();
    const names = Array.from({ length: 10 }, (_, i) => `w-${i}`);
    const r = await dots.droplet.createDroplets({ ...base, names, tags: ['dask-abc'], user_data: '#cloud-config\n', monitoring: true } as never);
    expect(r.status).toBe(202);
    const body = r.data as unknown as { droplets: { name: string; status: string; features: string[] }[]; links: { actions: { rel: string }[] } };
    expect(body.droplets.map((d) => d.name)).toEqual(names);
    expect(body.droplets.every((d) => d.status === 'new' && d.features.includes('monitoring'))).toBe(true);
    expect(body.links.actions[0].rel).toBe('multiple_create');

    const eleven = await failure(dots.droplet.createDroplets({ ...base, names: [...names, 'w-10'] } as never));
    expect(eleven.status).toBe(422);
    expect(eleven.data).toMatchObject({ id: 'unprocessable_entity', message: expect.stringMatching(/10/) });
    expect((await api('/droplets?per_page=200')).json().meta.total).toBe(10);
  });

  it('rejects unknown images, sizes, regions and VPCs with 422; accepts numeric image ids', async () => {
    const { dots, api } = await start();
    for (const body of [
      { ...base, name: 'x', image: 'no-such-image' },
      { ...base, name: 'x', size: 's-99vcpu' },
      { ...base, name: 'x', region: 'mars1' },
      { ...base, name: 'x', vpc_uuid: '00000000-0000-4000-8000-000000000000' },
      { ...base, name: 'bad_name!' },
      { ...base, name: 'x', tags: ['has space'] },
      { ...base, name: 'x', ssh_keys: [123] },
      { ...base, name: 'x', volumes: ['vol-1'] },
    ]) {
      const e = await failure(dots.droplet.createDroplet(body as never));
      expect(e.status, JSON.stringify(body)).toBe(422);
      expect(e.data.id).toBe('unprocessable_entity');
    }
    const catalogImage = (await api('/droplets', { body: { ...base, name: 'byid', image: 139_000_001 } })).json().droplet.image;
    expect(catalogImage).toMatchObject({ id: 139_000_001, slug: 'debian-12-x64' });
  });

  it('user_data: 64 KiB accepted, one byte more → 422', async () => {
    const { dots } = await start();
    const ok = await dots.droplet.createDroplet({ ...base, name: 'ok', user_data: 'x'.repeat(64 * 1024) });
    expect(ok.status).toBe(202);
    const e = await failure(dots.droplet.createDroplet({ ...base, name: 'big', user_data: 'x'.repeat(64 * 1024 + 1) }));
    expect(e.status).toBe(422);
    expect(e.data).toMatchObject({ id: 'unprocessable_entity', message: expect.stringMatching(/user_data.*64 KiB/) });
  });

  it('account droplet limit: creating beyond it → 422', async () => {
    const { dots } = await start({ dropletLimit: 3 });
    expect((await dots.account.getAccount()).data.account).toMatchObject({ droplet_limit: 3, status: 'active', email_verified: true });
    await dots.droplet.createDroplets({ ...base, names: ['a', 'b'] } as never);
    const e = await failure(dots.droplet.createDroplets({ ...base, names: ['c', 'd'] } as never));
    expect(e).toMatchObject({ status: 422, data: { id: 'unprocessable_entity', message: expect.stringMatching(/droplet limit/) } });
  });

  it('listDroplets by tag is paginated like DigitalOcean (links.pages, meta.total)', async () => {
    const { dots, api } = await start();
    await dots.droplet.createDroplets({ ...base, names: ['a', 'b', 'c', 'd', 'e'], tags: ['dask-abc'] } as never);
    await dots.droplet.createDroplet({ ...base, name: 'other', tags: ['other'] });

    const p1 = (await dots.droplet.listDroplets({ tag_name: 'dask-abc', page: 1, per_page: 2 })).data as any;
    expect(p1.droplets.map((d: { name: string }) => d.name)).toEqual(['a', 'b']);
    expect(p1.meta).toEqual({ total: 5 });
    expect(p1.links.pages.first).toBeUndefined();
    const next = new URL(p1.links.pages.next);
    expect(Object.fromEntries(next.searchParams)).toEqual({ tag_name: 'dask-abc', page: '2', per_page: '2' });
    expect(new URL(p1.links.pages.last).searchParams.get('page')).toBe('3');

    // Following the links works with the fake's own URLs.
    const p3 = (await api(`/droplets?tag_name=dask-abc&page=3&per_page=2`)).json();
    expect(p3.droplets.map((d: { name: string }) => d.name)).toEqual(['e']);
    expect(p3.links.pages.next).toBeUndefined();
    expect(new URL(p3.links.pages.prev).searchParams.get('page')).toBe('2');
    expect(p3.links.pages.first).toBeDefined();

    const all = (await dots.droplet.listDroplets({ page: 1, per_page: 200 })).data as any;
    expect(all).toMatchObject({ meta: { total: 6 }, links: {} });
  });

  it('deleteDroplet → 204 then 404 in the exact DigitalOcean shape; deleteDropletsByTag deletes all with the tag', async () => {
    const { fake, dots, api } = await start();
    const one = (await dots.droplet.createDroplet({ ...base, name: 'solo' })).data.droplet;
    expect((await dots.droplet.deleteDroplet({ droplet_id: one.id })).status).toBe(204);
    const nf = await failure(dots.droplet.getDroplet({ droplet_id: one.id }));
    expect(nf.status).toBe(404);
    expect(nf.data).toEqual({ id: 'not_found', message: 'The resource you were accessing could not be found.', request_id: expect.any(String) });
    expect((await failure(dots.droplet.deleteDroplet({ droplet_id: one.id }))).status).toBe(404);

    await dots.droplet.createDroplets({ ...base, names: ['a', 'b', 'c'], tags: ['dask-abc'] } as never);
    await dots.droplet.createDroplet({ ...base, name: 'keep', tags: ['keep'] });
    expect((await dots.droplet.deleteDropletsByTag({ tag_name: 'dask-abc' })).status).toBe(204);
    expect((await api('/droplets?tag_name=dask-abc')).json()).toMatchObject({ droplets: [], meta: { total: 0 } });
    expect(fake.droplets().map((d) => d.name)).toEqual(['keep']);
    // Deleting by an unused tag is not an error.
    expect((await dots.droplet.deleteDropletsByTag({ tag_name: 'nothing' })).status).toBe(204);
  });

  it('faults: injected failures use the DigitalOcean error shape; slowBoot delays active', async () => {
    const { fake, clock, dots } = await start();
    fake.faults.fail('droplets_create', { status: 500, code: 'server_error', message: 'Unexpected server-side error' }, { times: 1 });
    const e = await failure(dots.droplet.createDroplet({ ...base, name: 'x' }));
    expect(e).toMatchObject({ status: 500, data: { id: 'server_error', message: 'Unexpected server-side error' } });
    expect(fake.server.calls('droplets_create')[0].rejectedBy).toBe('fault');

    fake.faults.slowBoot(5_000, 1);
    const slow = (await dots.droplet.createDroplet({ ...base, name: 'slow' })).data.droplet;
    const quick = (await dots.droplet.createDroplet({ ...base, name: 'quick' })).data.droplet;
    await clock.advance(1_000);
    expect((await dots.droplet.getDroplet({ droplet_id: slow.id })).data.droplet.status).toBe('new');
    expect((await dots.droplet.getDroplet({ droplet_id: quick.id })).data.droplet.status).toBe('active');
    await clock.advance(5_000);
    expect((await dots.droplet.getDroplet({ droplet_id: slow.id })).data.droplet.status).toBe('active');
  });
});

describe('real clock', () => {
  it('works without a ManualClock: a polling client sees new → active', async () => {
    const fake = await FakeDigitalOcean.start({ lifecycleMs: 50 });
    fakes.push(fake);
    const dots = createApiClient(fake.clientOptions());
    const d = (await dots.droplet.createDroplet({ ...base, name: 'rt' })).data.droplet;
    const deadline = Date.now() + 5_000;
    let status = d.status;
    while (status !== 'active' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      status = (await dots.droplet.getDroplet({ droplet_id: d.id })).data.droplet.status;
    }
    expect(status).toBe('active');
  });
});

describe('auth, rate limits, contract', () => {
  it('401 unauthorized without or with a wrong Bearer token (also for contract-breaking requests)', async () => {
    const { fake, api } = await start();
    const none = await api('/account', { token: null });
    expect(none.status).toBe(401);
    expect(none.json()).toEqual({ id: 'unauthorized', message: 'Unable to authenticate you', request_id: expect.any(String) });

    const wrong = createApiClient({ token: 'nope', endpoint: fake.endpoint });
    const e = await failure(wrong.droplet.listDroplets({}));
    expect(e).toMatchObject({ status: 401, data: { id: 'unauthorized', message: 'Unable to authenticate you' } });

    const broken = await api('/droplets', { token: null, body: { name: 'x' } });
    expect(broken.status).toBe(401);
    expect(() => assertNoContractViolations(fake)).toThrow(); // recorded (and cleared): missing size/image
  });

  it('every answer carries ratelimit-* headers; the 251st request in a minute → 429 with Retry-After', async () => {
    const { fake, clock, api } = await start();
    const first = await api('/account');
    expect(first.headers).toMatchObject({ 'ratelimit-limit': '5000', 'ratelimit-remaining': '4999' });
    expect(Number(first.headers['ratelimit-reset'])).toBe(Math.ceil((clock.now() + 3_600_000) / 1000));
    for (let i = 1; i < 250; i++) expect((await api('/account')).status).toBe(200);

    const limited = await api('/account');
    expect(limited.status).toBe(429);
    expect(limited.json()).toMatchObject({ id: 'too_many_requests', message: 'API Rate limit exceeded.' });
    expect(limited.headers).toMatchObject({ 'ratelimit-limit': '5000', 'ratelimit-remaining': '4750' });
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // Errors that never reach a handler carry the headers too (an unknown path is a 404, and a contract violation).
    const unknown = await api('/no-such-thing');
    expect(unknown.status).toBe(404);
    expect(unknown.json()).toMatchObject({ id: 'not_found' });
    expect(unknown.headers['ratelimit-remaining']).toBe('4750');
    expect(() => assertNoContractViolations(fake)).toThrow(/no-such-thing/);

    await clock.advance(60_000); // bursty window refilled
    const again = await api('/account');
    expect(again.status).toBe(200);
    expect(again.headers['ratelimit-remaining']).toBe('4749');
  });

  it('hourly limit (sliding window): throttle({ perHour }) and reset = when the oldest request expires', async () => {
    const { fake, clock, api } = await start();
    fake.throttle({ perMinute: 250, perHour: 3 });
    const t0 = clock.now();
    expect((await api('/account')).headers['ratelimit-remaining']).toBe('2');
    await clock.advance(10_000);
    await api('/account');
    await api('/account');
    const over = await api('/account');
    expect(over.status).toBe(429);
    expect(over.headers).toMatchObject({ 'ratelimit-limit': '3', 'ratelimit-remaining': '0', 'ratelimit-reset': String(Math.ceil((t0 + 3_600_000) / 1000)) });
    expect(over.headers['retry-after']).toBeUndefined();
    await clock.advance(3_600_000 - 10_000); // the first request expires
    const ok = await api('/account');
    expect(ok.status).toBe(200);
    expect(ok.headers['ratelimit-remaining']).toBe('0');

    fake.throttle(false);
    const free = await api('/account');
    expect(free.status).toBe(200);
    expect(free.headers['ratelimit-limit']).toBeUndefined();
  });

  it('contract: a body the published API does not describe → 400 bad_request, recorded as a violation', async () => {
    const { fake, api } = await start();
    const r = await api('/droplets', { body: { ...base, name: 'x', public_networkin: false } });
    expect(r.status).toBe(400);
    expect(r.json()).toMatchObject({ id: 'bad_request', message: expect.stringMatching(/public_networkin/) });
    const wrongType = await api('/droplets/abc');
    expect(wrongType.status).toBe(400);
    expect(fake.contractViolations.map((v) => v.kind)).toEqual(['unknown-property', 'wrong-type']);
    expect(() => assertNoContractViolations(fake)).toThrow(/public_networkin/);
    expect(fake.droplets()).toEqual([]);
  });
});

describe('firewalls', () => {
  const rule = (ports: string, sources: object) => ({ protocol: 'tcp', ports, sources });
  const outAll = [{ protocol: 'tcp', ports: 'all', destinations: { addresses: ['0.0.0.0/0', '::/0'] } }];

  it('create by tag, get, list, update (PUT), add/remove droplets, tags and rules, delete; status waiting → succeeded', async () => {
    const { clock, dots } = await start();
    const d = (await dots.droplet.createDroplet({ ...base, name: 'sched', tags: ['dask-abc'] })).data.droplet;
    const created = await dots.firewall.createFirewall({
      name: 'dask-abc',
      tags: ['dask-abc'],
      inbound_rules: [rule('8786', { addresses: ['203.0.113.0/24'], tags: ['dask-abc'] })],
      outbound_rules: outAll,
    } as never);
    expect(created.status).toBe(202);
    const fw = created.data.firewall as any;
    expect(fw).toMatchObject({ name: 'dask-abc', status: 'waiting', tags: ['dask-abc'], droplet_ids: [] });
    expect(fw.outbound_rules[0].ports).toBe('0'); // "all" reads back as "0"
    await clock.advance(500);
    expect((await dots.firewall.getFirewall({ firewall_id: fw.id })).data.firewall.status).toBe('succeeded');
    expect((await dots.firewall.listFirewalls({})).data.firewalls.map((f) => f.id)).toEqual([fw.id]);

    await dots.firewall.addDropletsToFirewall({ firewall_id: fw.id, droplet_ids: [d.id] });
    await dots.tag.createTag({ name: 'extra' }); // a firewall may only name existing tags
    await dots.firewall.addTagsToFirewall({ firewall_id: fw.id, tags: ['extra'] });
    await dots.firewall.addRulesToFirewall({ firewall_id: fw.id, inbound_rules: [rule('8000-9000', { droplet_ids: [d.id] })] } as never);
    let got = (await dots.firewall.getFirewall({ firewall_id: fw.id })).data.firewall;
    expect(got).toMatchObject({ status: 'waiting', droplet_ids: [d.id], tags: ['dask-abc', 'extra'] });
    expect(got.inbound_rules.map((r: { ports: string }) => r.ports)).toEqual(['8786', '8000-9000']);

    await dots.firewall.removeRulesFromFirewall({ firewall_id: fw.id, inbound_rules: [rule('8000-9000', { droplet_ids: [d.id] })] } as never);
    await dots.firewall.removeTagsFromFirewall({ firewall_id: fw.id, tags: ['extra'] });
    await dots.firewall.removeDropletsFromFirewall({ firewall_id: fw.id, droplet_ids: [d.id] });
    got = (await dots.firewall.getFirewall({ firewall_id: fw.id })).data.firewall;
    expect(got).toMatchObject({ droplet_ids: [], tags: ['dask-abc'] });
    expect(got.inbound_rules).toHaveLength(1);

    // PUT replaces everything: left-out attributes are reset.
    const updated = await dots.firewall.updateFirewall({ id: fw.id, name: 'dask-abc-2', inbound_rules: [rule('22', { addresses: ['198.51.100.7'] })] } as never);
    expect(updated.data.firewall).toMatchObject({ name: 'dask-abc-2', tags: [], droplet_ids: [], outbound_rules: [] });

    expect((await dots.firewall.deleteFirewall({ firewall_id: fw.id })).status).toBe(204);
    expect((await failure(dots.firewall.getFirewall({ firewall_id: fw.id }))).data.id).toBe('not_found');
  });

  it('limits: 10 droplet ids, 5 tags, 50 rules → 422; bad ports / empty sources → 422', async () => {
    const { dots } = await start({ dropletLimit: 50 });
    const ids: number[] = [];
    for (const names of [['a0', 'a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'a7', 'a8', 'a9'], ['b0']]) {
      const r = (await dots.droplet.createDroplets({ ...base, names } as never)).data as unknown as { droplets: { id: number }[] };
      ids.push(...r.droplets.map((d) => d.id));
    }
    await dots.tag.createTag({ name: 'dask-abc' });
    const inbound = [rule('8786', { tags: ['dask-abc'] })];
    const eleven = await failure(dots.firewall.createFirewall({ name: 'fw', droplet_ids: ids, inbound_rules: inbound } as never));
    expect(eleven).toMatchObject({ status: 422, data: { id: 'unprocessable_entity', message: expect.stringMatching(/10 droplets/) } });

    const fw = (await dots.firewall.createFirewall({ name: 'fw', droplet_ids: ids.slice(0, 10), inbound_rules: inbound } as never)).data.firewall as any;
    expect((await failure(dots.firewall.addDropletsToFirewall({ firewall_id: fw.id, droplet_ids: [ids[10]] }))).status).toBe(422);

    for (const t of ['t1', 't2', 't3', 't4', 't5', 't6']) await dots.tag.createTag({ name: t });
    const sixTags = await failure(dots.firewall.createFirewall({ name: 'fw2', tags: ['t1', 't2', 't3', 't4', 't5', 't6'], inbound_rules: inbound } as never));
    expect(sixTags.data.message).toMatch(/5 tags/);
    const many = Array.from({ length: 51 }, (_, i) => rule(String(1000 + i), { addresses: ['0.0.0.0/0'] }));
    const tooMany = await failure(dots.firewall.createFirewall({ name: 'fw3', inbound_rules: many } as never));
    expect(tooMany).toMatchObject({ status: 422, data: { message: expect.stringMatching(/50 rules/) } });
    expect((await dots.firewall.createFirewall({ name: 'fw4', inbound_rules: many.slice(0, 50) } as never)).status).toBe(202);

    expect((await failure(dots.firewall.createFirewall({ name: 'norules', tags: ['x'] } as never))).status).toBe(422);
    for (const bad of [rule('70000', { addresses: ['0.0.0.0/0'] }), rule('9000-8000', { addresses: ['0.0.0.0/0'] }), rule('22', {}), rule('22', { addresses: ['not-an-ip'] })]) {
      expect((await failure(dots.firewall.createFirewall({ name: 'bad', inbound_rules: [bad] } as never))).status).toBe(422);
    }
  });
});

describe('VPCs and catalog', () => {
  it('default VPC, custom VPC with its own range, region checks, delete only when empty', async () => {
    const { fake, clock, dots, api } = await start();
    const list = (await dots.vpc.listVpcs({})).data.vpcs;
    expect(list).toEqual([expect.objectContaining({ name: 'default-nyc3', region: 'nyc3', ip_range: '10.77.0.0/20', default: true })]);

    const vpc = (await dots.vpc.createVpc({ name: 'dask-abc', region: 'nyc3', ip_range: '10.77.16.0/24' })).data.vpc;
    expect(vpc).toMatchObject({ name: 'dask-abc', region: 'nyc3', ip_range: '10.77.16.0/24', default: false, urn: `do:vpc:${vpc.id}` });
    expect((await dots.vpc.getVpc({ vpc_id: vpc.id })).data.vpc.id).toBe(vpc.id);

    for (const bad of [
      { name: 'dup', region: 'nyc3', ip_range: '10.77.0.0/24' }, // overlaps the default VPC
      { name: 'public', region: 'nyc3', ip_range: '8.8.0.0/16' }, // not RFC 1918
      { name: 'huge', region: 'nyc3', ip_range: '10.0.0.0/8' }, // larger than /16
      { name: 'outside', region: 'nyc3', ip_range: '192.168.10.0/24' }, // outside the simulated block
      { name: 'dask-abc', region: 'nyc3', ip_range: '10.77.17.0/24' }, // name taken
    ]) {
      expect((await failure(dots.vpc.createVpc(bad))).status, bad.name).toBe(422);
    }

    const wrongRegion = await failure(dots.droplet.createDroplet({ ...base, region: 'sfo3', name: 'x', vpc_uuid: vpc.id }));
    expect(wrongRegion).toMatchObject({ status: 422, data: { message: expect.stringMatching(/region/) } });

    const d = (await dots.droplet.createDroplet({ ...base, name: 'in-vpc', vpc_uuid: vpc.id })).data.droplet;
    await clock.advance(1_000);
    const priv = (await dots.droplet.getDroplet({ droplet_id: d.id })).data.droplet.networks.v4.find((n: { type: string }) => n.type === 'private');
    expect(priv).toMatchObject({ ip_address: '10.77.16.2', netmask: '255.255.255.0' });

    expect(await failure(dots.vpc.deleteVpc({ vpc_id: vpc.id }))).toMatchObject({ status: 403, data: { id: 'forbidden' } });
    expect((await failure(dots.vpc.deleteVpc({ vpc_id: list[0].id }))).status).toBe(403);
    await dots.droplet.deleteDroplet({ droplet_id: d.id });
    expect((await dots.vpc.deleteVpc({ vpc_id: vpc.id })).status).toBe(204);

    // Another region gets its default VPC on first use, in a free /20 of the simulated block.
    await dots.droplet.createDroplet({ ...base, region: 'sfo3', name: 'west' });
    const sfo = (await api('/vpcs')).json().vpcs.find((v: { region: string }) => v.region === 'sfo3');
    expect(sfo).toMatchObject({ default: true, ip_range: '10.77.16.0/20' });
    expect(fake.resources().vpcs).toBeUndefined(); // default VPCs are infrastructure
  });

  it('account, regions, sizes, ssh keys', async () => {
    const { dots } = await start({ sshKeys: [{ name: 'me', public_key: 'ssh-ed25519 AAAA me', fingerprint: 'aa:bb' }] });
    expect((await dots.account.getAccount()).data.account).toMatchObject({ status: 'active', droplet_limit: 25 });
    const regions = (await dots.region.listRegions({ per_page: 200 })).data.regions.map((r: { slug: string }) => r.slug);
    expect(regions).toContain('nyc3');
    const sizes = (await dots.size.listSizes({ per_page: 200 })).data.sizes.map((s: { slug: string }) => s.slug);
    expect(sizes).toContain('s-2vcpu-4gb');
    const keys = (await dots.sshKey.listSshKeys({})).data.ssh_keys;
    expect(keys).toEqual([expect.objectContaining({ name: 'me', fingerprint: 'aa:bb' })]);
    expect((await dots.droplet.createDroplet({ ...base, name: 'k', ssh_keys: ['aa:bb', keys[0].id] } as never)).status).toBe(202);
  });
});

describe('boot hook', () => {
  it('a booted droplet that exits on its own goes off, keeps its addresses, and stays until destroyed', async () => {
    const booter = new RecordingBooter();
    const { fake, clock, dots } = await start({ booter });
    const d = (await dots.droplet.createDroplet({ ...base, name: 'quits', user_data: '#cloud-config\n' })).data.droplet;
    await clock.advance(1_000);
    await fake.settle();
    const before = (await dots.droplet.getDroplet({ droplet_id: d.id })).data.droplet;
    expect(before.status).toBe('active');
    booter.exit(String(d.id));
    await fake.settle();
    const after = (await dots.droplet.getDroplet({ droplet_id: d.id })).data.droplet;
    expect(after.status).toBe('off');
    expect(after.networks.v4).toEqual(before.networks.v4);
    expect(booter.of('stop', String(d.id))).toHaveLength(1);
    await dots.droplet.deleteDroplet({ droplet_id: d.id });
    await fake.settle();
    expect(fake.leaked()).toEqual({});
  });

  it('boots active droplets with user-data, addresses and translated firewall; follows firewall changes; stops on delete', async () => {
    const booter = new RecordingBooter();
    const { fake, clock, dots, api } = await start({ booter });
    const userData = '#cloud-config\nruncmd: [echo hi]\n';
    const sched = (await dots.droplet.createDroplet({ ...base, name: 'sched', tags: ['dask-abc'], user_data: userData })).data.droplet;
    expect(booter.events).toEqual([]); // nothing boots before active
    await clock.advance(1_000);
    await fake.settle();

    const [boot] = booter.of('boot');
    expect(boot.request).toMatchObject({ id: String(sched.id), name: 'sched', privateIp: expect.stringMatching(/^10\.77\./), publicIp: expect.stringMatching(/^10\.77\.1(2[89]|[3-4]\d)\./) });
    expect(boot.request.userData.equals(Buffer.from(userData))).toBe(true);
    // No firewall applies: DigitalOcean lets everything in.
    expect(boot.request.firewall).toEqual([{ direction: 'ingress', protocol: 'all', cidrs: ['0.0.0.0/0'] }]);
    expect(await fake.consoleOutput(sched.id)).toMatch(/booted/);

    // A tag-scoped firewall: addresses → cidrs, tags / droplet ids → peer VMs.
    const fw = (
      await dots.firewall.createFirewall({
        name: 'dask-abc',
        tags: ['dask-abc'],
        inbound_rules: [
          { protocol: 'tcp', ports: '8786', sources: { addresses: ['203.0.113.0/24', '198.51.100.9', '::/0'] } },
          { protocol: 'tcp', ports: '0', sources: { tags: ['dask-abc'] } },
          { protocol: 'icmp', ports: '0', sources: { addresses: ['0.0.0.0/0'] } },
        ],
        outbound_rules: [{ protocol: 'tcp', ports: 'all', destinations: { addresses: ['0.0.0.0/0'] } }],
      } as never)
    ).data.firewall as any;
    await fake.settle();
    expect(booter.running.get(String(sched.id))?.firewall).toEqual([
      { direction: 'ingress', protocol: 'tcp', fromPort: 8786, toPort: 8786, cidrs: ['203.0.113.0/24', '198.51.100.9/32'] },
      { direction: 'ingress', protocol: 'tcp', cidrs: [], peerVmIds: [String(sched.id)] },
      { direction: 'ingress', protocol: 'icmp', cidrs: ['0.0.0.0/0'] },
    ]);

    // A worker joining the tag: it boots with the firewall, and the scheduler's peers grow.
    const w = (await api('/droplets', { body: { ...base, name: 'w1', tags: ['dask-abc'], public_networking: false } })).json().droplet;
    await clock.advance(1_000);
    await fake.settle();
    const wBoot = booter.of('boot', String(w.id))[0].request;
    expect(wBoot.publicIp).toBeUndefined();
    const peers = [String(sched.id), String(w.id)].sort();
    expect(wBoot.firewall[1].peerVmIds).toEqual(peers);
    expect(booter.running.get(String(sched.id))?.firewall[1].peerVmIds).toEqual(peers);

    // Removing the tag from the firewall: back to allow-all.
    await dots.firewall.removeTagsFromFirewall({ firewall_id: fw.id, tags: ['dask-abc'] });
    await fake.settle();
    expect(booter.running.get(String(sched.id))?.firewall).toEqual([{ direction: 'ingress', protocol: 'all', cidrs: ['0.0.0.0/0'] }]);
    // ...and by droplet id only the scheduler.
    await dots.firewall.addDropletsToFirewall({ firewall_id: fw.id, droplet_ids: [sched.id] });
    await fake.settle();
    expect(booter.running.get(String(sched.id))?.firewall).toHaveLength(3);
    expect(booter.running.get(String(w.id))?.firewall[0].protocol).toBe('all');

    const before = booter.of('setFirewall').length;
    await fake.settle();
    expect(booter.of('setFirewall')).toHaveLength(before); // only changes are pushed

    await dots.droplet.deleteDropletsByTag({ tag_name: 'dask-abc' });
    await fake.settle();
    expect(booter.of('stop').map((e) => e.id).sort()).toEqual(peers);
    expect(booter.running.size).toBe(0);
    await dots.firewall.deleteFirewall({ firewall_id: fw.id });
    // The tag outlives its Droplets (tags are account objects): only it is left.
    expect(fake.resources()).toEqual({ tags: [{ id: 'dask-abc', value: { name: 'dask-abc' } }] });
  });

  it('a droplet deleted while booting is stopped once the boot finishes; boot failures are recorded', async () => {
    const booter = new RecordingBooter();
    let release!: () => void;
    booter.gate = new Promise<void>((r) => (release = r));
    const { fake, clock, dots } = await start({ booter });
    const d = (await dots.droplet.createDroplet({ ...base, name: 'x' })).data.droplet;
    await clock.advance(1_000);
    expect(booter.of('boot', String(d.id))).toHaveLength(1); // booting, not finished
    await dots.droplet.deleteDroplet({ droplet_id: d.id });
    expect(booter.of('stop')).toHaveLength(0);
    release();
    booter.gate = undefined;
    await fake.settle();
    expect(booter.of('stop', String(d.id))).toHaveLength(1);
    expect(booter.running.size).toBe(0);

    booter.failBoots = 1;
    await dots.droplet.createDroplet({ ...base, name: 'y' });
    await clock.advance(1_000);
    await fake.settle();
    expect(fake.bootErrors).toHaveLength(1);
    fake.bootErrors.length = 0;
  });

  it('resources() and leaked() are empty after a full teardown', async () => {
    const { fake, clock, dots } = await start({ booter: new RecordingBooter() });
    const vpc = (await dots.vpc.createVpc({ name: 'dask-abc', region: 'nyc3' })).data.vpc;
    expect(vpc.ip_range).toBe('10.77.16.0/20');
    await dots.droplet.createDroplets({ ...base, names: ['s', 'w1', 'w2'], tags: ['dask-abc'], vpc_uuid: vpc.id } as never);
    const fw = (await dots.firewall.createFirewall({ name: 'dask-abc', tags: ['dask-abc'], inbound_rules: [{ protocol: 'tcp', ports: '8786', sources: { tags: ['dask-abc'] } }] } as never)).data.firewall as any;
    await clock.advance(1_000);
    await fake.settle();
    expect(Object.keys(fake.leaked()).sort()).toEqual(['droplets', 'firewalls', 'vpcs']);

    await dots.droplet.deleteDropletsByTag({ tag_name: 'dask-abc' });
    await dots.firewall.deleteFirewall({ firewall_id: fw.id });
    await dots.vpc.deleteVpc({ vpc_id: vpc.id });
    expect(fake.tagNames()).toEqual(['dask-abc']); // created with the Droplets, kept after them
    await dots.tag.deleteTag({ tag_name: 'dask-abc' });
    await fake.settle();
    expect(fake.resources()).toEqual({});
    expect(fake.leaked()).toEqual({});
    expect(fake.pools.private.inUse()).toEqual([]);
    expect(fake.pools.public.inUse()).toEqual([]);
  });
});

describe('tags, images, NAT gateways, scopes (rules with their sources in test/fakes/README.md)', () => {
  const rule = (ports: string, sources: object) => ({ protocol: 'tcp', ports, sources });

  it('item 1: a firewall may only name existing tags: unknown ones → 422 "tag … does not exist" on create, PUT, add tags, add rules', async () => {
    const { fake, dots } = await start();
    const tag = 'dask-cloud-cluster:dask-0badcafe';
    const body = { name: 'dask-cloud-dask-0badcafe', tags: [tag], inbound_rules: [rule('0', { tags: [tag] })] };
    const refused = await failure(dots.firewall.createFirewall(body as never));
    expect(refused).toMatchObject({ status: 422, data: { id: 'unprocessable_entity', message: `tag ${tag} does not exist` } });
    // A rule's source tag alone is checked too.
    const bySource = await failure(dots.firewall.createFirewall({ name: 'src', inbound_rules: [rule('22', { tags: ['nobody'] })] } as never));
    expect(bySource.data.message).toBe('tag nobody does not exist');
    expect(fake.resources().firewalls).toBeUndefined();

    expect((await dots.tag.createTag({ name: tag })).status).toBe(201);
    const fw = (await dots.firewall.createFirewall(body as never)).data.firewall as any;
    expect(fw.tags).toEqual([tag]);
    expect((await failure(dots.firewall.addTagsToFirewall({ firewall_id: fw.id, tags: ['later'] }))).data.message).toBe('tag later does not exist');
    expect((await failure(dots.firewall.addRulesToFirewall({ firewall_id: fw.id, inbound_rules: [rule('1', { tags: ['later'] })] } as never))).status).toBe(422);
    expect((await failure(dots.firewall.updateFirewall({ id: fw.id, name: fw.name, tags: ['later'], inbound_rules: [rule('1', { addresses: ['0.0.0.0/0'] })] } as never))).status).toBe(422);
    // Canonical spelling only: a differently capitalized name does not exist.
    expect((await failure(dots.firewall.addTagsToFirewall({ firewall_id: fw.id, tags: [tag.toUpperCase()] }))).status).toBe(422);
  });

  it('tags: created by POST /v2/tags (again → the existing tag, canonical spelling) and by Droplet creates; counts; delete untags; 404s', async () => {
    const { fake, dots } = await start();
    expect((await dots.tag.createTag({ name: 'PROD' })).data.tag).toMatchObject({ name: 'PROD', resources: { count: 0, droplets: { count: 0 } } });
    const again = await dots.tag.createTag({ name: 'prod' });
    expect(again.status).toBe(201);
    expect(again.data.tag.name).toBe('PROD');
    expect(fake.tagNames()).toEqual(['PROD']);

    const d = (await dots.droplet.createDroplet({ ...base, name: 'tagged', tags: ['prod', 'dask-cloud-cluster:dask-1'] })).data.droplet;
    expect(d.tags).toEqual(['PROD', 'dask-cloud-cluster:dask-1']);
    expect(fake.tagNames().sort()).toEqual(['PROD', 'dask-cloud-cluster:dask-1']);
    expect((await dots.tag.getTag({ tag_name: 'PROD' })).data.tag.resources.droplets.count).toBe(1);
    expect((await failure(dots.tag.getTag({ tag_name: 'prod' }))).status).toBe(404);
    expect((await dots.tag.listTags({})).data.tags.map((t) => t.name).sort()).toEqual(['PROD', 'dask-cloud-cluster:dask-1']);

    // leaked(): a cluster's own tags count, other tags do not.
    expect(fake.leaked().tags?.map((t) => t.id)).toEqual(['dask-cloud-cluster:dask-1']);
    expect((await dots.tag.deleteTag({ tag_name: 'dask-cloud-cluster:dask-1' })).status).toBe(204);
    expect((await dots.droplet.getDroplet({ droplet_id: d.id })).data.droplet.tags).toEqual(['PROD']); // untagged
    expect((await failure(dots.tag.deleteTag({ tag_name: 'dask-cloud-cluster:dask-1' }))).data.id).toBe('not_found');
    await dots.droplet.deleteDroplet({ droplet_id: d.id });
    expect(fake.leaked()).toEqual({});
    expect(fake.tagNames()).toEqual(['PROD']); // a tag outlives its resources
  });

  it('tags_assign_resources: 404 for a missing tag, 422 for an unknown Droplet (nothing tagged), 204 tags exactly the given Droplets; destroy by tag deletes exactly them', async () => {
    const { fake, dots, api } = await start();
    const made = (await dots.droplet.createDroplets({ ...base, names: ['a', 'b', 'c'], tags: ['keep'] })).data.droplets;
    const [a, b, c] = made.map((d) => String(d.id));
    const resources = (ids: string[]) => ids.map((id) => ({ resource_id: id, resource_type: 'droplet' }));

    const missing = await failure(dots.tag.tagResources({ tag_name: 'dask-cloud-retire:nope', resources: resources([a!]) }));
    expect(missing).toMatchObject({ status: 404, data: { id: 'not_found' } });

    const tag = 'dask-cloud-retire:dask-1a2b3c4d-0badcafe';
    await dots.tag.createTag({ name: tag });
    const unknown = await failure(dots.tag.tagResources({ tag_name: tag, resources: resources([a!, '999999999']) }));
    expect(unknown).toMatchObject({ status: 422, data: { id: 'unprocessable_entity', message: 'droplet 999999999 does not exist' } });
    expect((await dots.tag.getTag({ tag_name: tag })).data.tag.resources.count).toBe(0); // all or nothing

    // The contract: resource_id is a string, resource_type one of the documented ones.
    expect((await api(`/tags/${tag}/resources`, { body: { resources: [{ resource_id: Number(a), resource_type: 'droplet' }] } })).status).toBe(400);
    expect((await api(`/tags/${tag}/resources`, { body: { resources: [{ resource_id: a, resource_type: 'server' }] } })).status).toBe(400);
    expect(fake.contractViolations.map((v) => v.kind)).toEqual(['wrong-type', 'wrong-type']);
    expect(() => assertNoContractViolations(fake)).toThrow(/resource_id/); // and clears them

    const ok = await dots.tag.tagResources({ tag_name: tag, resources: resources([a!, b!]) });
    expect(ok.status).toBe(204);
    expect(fake.droplet(a!)!.tags).toEqual(['keep', tag]);
    expect(fake.droplet(c!)!.tags).toEqual(['keep']);
    expect((await dots.tag.tagResources({ tag_name: tag, resources: resources([a!]) })).status).toBe(204); // again: no duplicate
    expect(fake.droplet(a!)!.tags).toEqual(['keep', tag]);
    expect((await dots.tag.getTag({ tag_name: tag })).data.tag.resources.droplets.count).toBe(2);

    expect((await dots.droplet.deleteDropletsByTag({ tag_name: tag })).status).toBe(204);
    expect((fake.droplets() as { id: number }[]).map((d) => String(d.id))).toEqual([c]);
    expect(fake.leaked().tags?.map((t) => t.id)).toEqual([tag]); // a retire tag counts as left behind
    await dots.tag.deleteTag({ tag_name: tag });
    await dots.droplet.deleteDroplet({ droplet_id: Number(c) });
    expect(fake.leaked()).toEqual({});
  });

  it('tags_assign_resources with a custom-scoped token needs tag:create and, for Droplets, droplet:update', async () => {
    const { fake, dots } = await start({ scopes: ['droplet:create', 'droplet:read', 'tag:create', 'tag:read'] });
    const d = (await dots.droplet.createDroplet({ ...base, name: 'one' })).data.droplet;
    await dots.tag.createTag({ name: 'x' });
    const refused = await failure(dots.tag.tagResources({ tag_name: 'x', resources: [{ resource_id: String(d.id), resource_type: 'droplet' }] }));
    expect(refused).toMatchObject({ status: 403, data: { id: 'forbidden' } });
    expect(fake.droplet(d.id)!.tags).toEqual([]);
  });

  it('images by id or slug; unknown → 404', async () => {
    const { dots, api } = await start();
    expect((await dots.image.getImage({ slug: 'ubuntu-24-04-x64' })).data.image).toMatchObject({ slug: 'ubuntu-24-04-x64', status: 'available' });
    expect((await dots.image.getImage({ image_id: 139_000_001 })).data.image.slug).toBe('debian-12-x64');
    const missing = await api('/images/ubuntu-99-04-x64');
    expect(missing.status).toBe(404);
    expect(missing.json()).toMatchObject({ id: 'not_found' });
  });

  it('VPC NAT gateways: listed with their VPCs and default-route flag, filtered by region and state; got by id', async () => {
    const { fake, api } = await start();
    const vpc = fake.defaultVpc('nyc3');
    const gw = fake.addVpcNatGateway({ vpcUuid: vpc.id });
    fake.addVpcNatGateway({ vpcUuid: fake.defaultVpc('ams3').id, state: 'PROVISIONING' });
    const all = (await api('/vpc_nat_gateways')).json();
    expect(all.meta.total).toBe(2);
    expect(all.vpc_nat_gateways[0]).toMatchObject({ id: gw.id, type: 'PUBLIC', state: 'ACTIVE', region: 'nyc3', vpcs: [{ vpc_uuid: vpc.id, default_gateway: true }] });
    expect((await api('/vpc_nat_gateways?region=ams3&state=active')).json().vpc_nat_gateways).toEqual([]);
    expect((await api('/vpc_nat_gateways?region=ams3&state=provisioning')).json().vpc_nat_gateways).toHaveLength(1);
    expect((await api(`/vpc_nat_gateways/${gw.id}`)).json().vpc_nat_gateway.id).toBe(gw.id);
    expect(fake.leaked()).toEqual({}); // infrastructure the account owner set up
  });

  it('custom scopes: a request needing a scope the token lacks → 403 forbidden; tags in a Droplet create need tag:create', async () => {
    const { dots } = await start({ scopes: ['droplet:read', 'droplet:create', 'account:read'] });
    expect((await dots.account.getAccount()).status).toBe(200);
    expect((await dots.droplet.listDroplets({})).status).toBe(200);
    expect(await failure(dots.firewall.listFirewalls({}))).toMatchObject({ status: 403, data: { id: 'forbidden', message: 'You do not have permission to perform this action.' } });
    expect((await failure(dots.droplet.createDroplet({ ...base, name: 't', tags: ['x'] }))).status).toBe(403);
    expect((await dots.droplet.createDroplet({ ...base, name: 'untagged' })).status).toBe(202);
    expect((await failure(dots.size.listSizes({}))).status).toBe(403); // sizes:read and regions:read
  });

  it('account status; Droplet and firewall name patterns; public_networking false needs ipv6 false; 1000 entries per rule target', async () => {
    const { dots, api } = await start({ accountStatus: 'locked', accountStatusMessage: 'billing' });
    expect((await dots.account.getAccount()).data.account).toMatchObject({ status: 'locked', status_message: 'billing' });
    for (const name of ['trailing-', 'dot.', 'under_score']) {
      expect((await failure(dots.droplet.createDroplet({ ...base, name }))).status, name).toBe(422);
    }
    for (const name of ['x', '-fw', 'fw_1']) {
      expect((await failure(dots.firewall.createFirewall({ name, inbound_rules: [rule('22', { addresses: ['0.0.0.0/0'] })] } as never))).status, name).toBe(422);
    }
    const ipv6 = await api('/droplets', { body: { ...base, name: 'p', public_networking: false, ipv6: true } });
    expect(ipv6.status).toBe(422);
    const addresses = Array.from({ length: 1001 }, (_, i) => `198.51.${Math.floor(i / 250)}.${i % 250}`);
    expect((await failure(dots.firewall.createFirewall({ name: 'big', inbound_rules: [rule('22', { addresses })] } as never))).data.message).toMatch(/at most 1000 entries/);
    expect((await dots.firewall.createFirewall({ name: 'ok', inbound_rules: [rule('22', { addresses: addresses.slice(0, 1000) })] } as never)).status).toBe(202);
  });
});
