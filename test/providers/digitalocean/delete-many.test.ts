/**
 * Deleting many Droplets at once (scale-down, a failed scale-up's rollback) against the
 * DigitalOcean fake, through the adapter and its request pipeline: more than three go by a
 * one-off tag (tags_create → tags_assign_resources per 100 → one droplets_destroy_byTag →
 * tags_delete) instead of one droplets_destroy each; any failure on the way falls back to the
 * per-Droplet deletes. Either way exactly the given Droplets go, and the one-off tag does not stay.
 * No Dask and no VM: nothing here dials an address the fake hands out.
 */
import { formatWithOptions } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { createApiClient } from 'dots-wrapper';
import { checkFakesAndClose } from '../../helpers/fakes';
import type { FailureSpec } from '../../fakes/core';
import type { FakeDigitalOcean, FakeDigitalOceanOptions } from '../../fakes/digitalocean';
import { BULK_DELETE_THRESHOLD, clusterTag, DropletAdapter, MARKER_TAG, REQUIRED_SCOPES, TAG_CHUNK } from '../../../providers/digitalocean/adapter';
import { DoApi } from '../../../providers/digitalocean/api';
import type { AdapterContext } from '../../../src/cluster/vm';
import type { Log } from '../../../src/log';
import { adapterOptions, startFake } from './helpers';

const SLOT = 5;
const CLUSTER = 'dask-1a2b3c4d';
const RETIRE = new RegExp(`^dask-cloud-retire:${CLUSTER}-[0-9a-f]{8}$`);
const FORBIDDEN: FailureSpec = { status: 403, code: 'forbidden', message: 'You do not have permission to perform this action.' };

const fakes: FakeDigitalOcean[] = [];
afterEach(() => checkFakesAndClose(fakes, []));

interface Setup {
  fake: FakeDigitalOcean;
  adapter: DropletAdapter;
  ctx: AdapterContext;
  logs: string[];
  /** Ids of `n` new Droplets carrying the cluster's tags (created straight on the fake). */
  droplets(n: number): Promise<string[]>;
  /** Ids of the Droplets the fake holds. */
  left(): string[];
}

async function setup(options: FakeDigitalOceanOptions = {}): Promise<Setup> {
  const fake = await startFake(SLOT, { dropletLimit: 1_000, ...options });
  fakes.push(fake);
  const api = new DoApi({ token: fake.token, endpoint: fake.endpoint, random: () => 0 });
  const adapter = new DropletAdapter(adapterOptions(api, { activeTimeoutMs: 5_000, pollIntervalMs: 50 }));
  const logs: string[] = [];
  const log = Object.assign((format: unknown, ...args: unknown[]) => void logs.push(formatWithOptions({ colors: false }, format, ...args)), {
    extend: () => log,
    enabled: true,
    namespace: 'test',
  }) as Log;
  const ctx: AdapterContext = { clusterId: CLUSTER, signal: new AbortController().signal, log };
  // Made straight on the fake (no tag calls from the adapter), 10 names per create as the API allows.
  const dots = createApiClient(fake.clientOptions());
  let seq = 0;
  const droplets = async (n: number): Promise<string[]> => {
    const ids: string[] = [];
    while (ids.length < n) {
      const names = Array.from({ length: Math.min(10, n - ids.length) }, () => `${CLUSTER}-worker-${seq++}`);
      const made = await dots.droplet.createDroplets({ names, region: 'nyc3', size: 's-2vcpu-4gb', image: 'ubuntu-24-04-x64', tags: [MARKER_TAG, clusterTag(CLUSTER), 'dask-cloud-role:worker'] });
      ids.push(...made.data.droplets.map((d) => String(d.id)));
    }
    return ids;
  };
  const left = () => (fake.droplets() as { id: number }[]).map((d) => String(d.id)).sort();
  return { fake, adapter, ctx, logs, droplets, left };
}

/** How often each operation was called since `mark`. */
function counts(fake: FakeDigitalOcean, mark: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const op of fake.server.operations().slice(mark)) out[op ?? '?'] = (out[op ?? '?'] ?? 0) + 1;
  return out;
}

/** The one-off tags of this cluster the account still has. */
function retireTags(fake: FakeDigitalOcean): string[] {
  return fake.tagNames().filter((t) => t.startsWith('dask-cloud-retire:'));
}

const sorted = (ids: string[]) => [...ids].sort();

describe('DropletAdapter.deleteInstances: many Droplets by a one-off tag', () => {
  it('30 of 40 Droplets: one tags_create, one tags_assign_resources, one droplets_destroy_byTag, one tags_delete, no droplets_destroy; exactly those go', async () => {
    const { fake, adapter, ctx, droplets, left } = await setup();
    const ids = await droplets(40);
    const [retire, keep] = [ids.slice(5, 35), [...ids.slice(0, 5), ...ids.slice(35)]];
    const mark = fake.server.received.length;
    await adapter.deleteInstances(ctx, retire);

    expect(fake.server.operations().slice(mark)).toEqual(['tags_create', 'tags_assign_resources', 'droplets_destroy_byTag', 'tags_delete']);
    expect(counts(fake, mark)).toEqual({ tags_create: 1, tags_assign_resources: 1, droplets_destroy_byTag: 1, tags_delete: 1 });
    const calls = fake.server.received.slice(mark);
    expect(calls.map((c) => c.status)).toEqual([201, 204, 204, 204]);
    const tag = (calls[0]!.json as { name: string }).name;
    expect(tag).toMatch(RETIRE);
    expect(calls[1]!.path).toBe(`/v2/tags/${tag}/resources`);
    expect(calls[1]!.json).toEqual({ resources: retire.map((id) => ({ resource_id: id, resource_type: 'droplet' })) });
    expect(calls[2]!.params.tag_name).toBe(tag);
    expect(calls[3]!.params.tag_id).toBe(tag);

    expect(left()).toEqual(sorted(keep));
    // The others are untouched: no retire tag ever reached them, and the tag is gone.
    for (const id of keep) expect(fake.droplet(id)!.tags).toEqual([MARKER_TAG, clusterTag(CLUSTER), 'dask-cloud-role:worker']);
    expect(retireTags(fake)).toEqual([]);
    // Left: the 10 kept Droplets and the cluster tag they carry.
    expect(fake.leaked().droplets).toHaveLength(10);
    expect(fake.leaked().tags?.map((t) => t.id)).toEqual([clusterTag(CLUSTER)]);
  });

  it(`tags ${TAG_CHUNK} Droplets per call: 205 Droplets take 3 tags_assign_resources and still one delete`, async () => {
    const { fake, adapter, ctx, droplets, left } = await setup();
    const ids = await droplets(207);
    const retire = ids.slice(2);
    const mark = fake.server.received.length;
    await adapter.deleteInstances(ctx, retire);
    expect(counts(fake, mark)).toEqual({ tags_create: 1, tags_assign_resources: Math.ceil(205 / TAG_CHUNK), droplets_destroy_byTag: 1, tags_delete: 1 });
    const sizes = fake.server.calls('tags_assign_resources').map((c) => (c.json as { resources: unknown[] }).resources.length);
    expect(sizes.sort((a, b) => b - a)).toEqual([100, 100, 5]);
    expect(left()).toEqual(sorted(ids.slice(0, 2)));
    expect(retireTags(fake)).toEqual([]);
  });

  it(`up to ${BULK_DELETE_THRESHOLD} Droplets go one droplets_destroy each, with no tag calls; ids given twice are deleted once`, async () => {
    const { fake, adapter, ctx, droplets, left } = await setup();
    const ids = await droplets(5);
    const mark = fake.server.received.length;
    await adapter.deleteInstances(ctx, [ids[0]!, ids[1]!, ids[2]!, ids[0]!]);
    expect(counts(fake, mark)).toEqual({ droplets_destroy: 3 });
    expect(left()).toEqual(sorted(ids.slice(3)));
  });

  it('a failing tags_assign_resources falls back to one droplets_destroy per Droplet: exactly those go, and the tag is deleted', async () => {
    const { fake, adapter, ctx, logs, droplets, left } = await setup();
    const ids = await droplets(40);
    const retire = ids.slice(0, 30);
    fake.faults.fail('tags_assign_resources', FORBIDDEN);
    const mark = fake.server.received.length;
    await adapter.deleteInstances(ctx, retire);
    expect(counts(fake, mark)).toEqual({ tags_create: 1, tags_assign_resources: 1, droplets_destroy: 30, tags_delete: 1 });
    expect(sorted(fake.server.calls('droplets_destroy').map((c) => c.params.droplet_id as string))).toEqual(sorted(retire));
    // The tag goes before the fallback: a process stopped during a long fallback leaves no tag.
    expect(fake.server.operations().slice(mark, mark + 3)).toEqual(['tags_create', 'tags_assign_resources', 'tags_delete']);
    expect(left()).toEqual(sorted(ids.slice(30)));
    expect(retireTags(fake)).toEqual([]);
    expect(logs.some((l) => /tagging 30 droplets with dask-cloud-retire:\S+ failed .*403.*one by one/.test(l))).toBe(true);
  });

  it('tagging that fails part way (the second of two chunks) deletes every given Droplet one by one, none other', async () => {
    const { fake, adapter, ctx, droplets, left } = await setup();
    const ids = await droplets(160);
    const retire = ids.slice(10, 160);
    fake.faults.fail('tags_assign_resources', FORBIDDEN, { nth: 2 });
    const mark = fake.server.received.length;
    await adapter.deleteInstances(ctx, retire);
    expect(counts(fake, mark)).toEqual({ tags_create: 1, tags_assign_resources: 2, droplets_destroy: 150, tags_delete: 1 });
    expect(fake.server.calls('tags_assign_resources').map((c) => c.status)).toEqual([204, 403]);
    expect(left()).toEqual(sorted(ids.slice(0, 10)));
    expect(retireTags(fake)).toEqual([]);
  });

  it('a token without droplet:update (tagging Droplets needs it) falls back to per-Droplet deletes', async () => {
    const { fake, adapter, ctx, droplets, left } = await setup({ scopes: [...REQUIRED_SCOPES] });
    const ids = await droplets(6);
    const mark = fake.server.received.length;
    await adapter.deleteInstances(ctx, ids.slice(0, 4));
    expect(counts(fake, mark)).toEqual({ tags_create: 1, tags_assign_resources: 1, droplets_destroy: 4, tags_delete: 1 });
    expect(fake.server.calls('tags_assign_resources')[0]!.status).toBe(403);
    expect(left()).toEqual(sorted(ids.slice(4)));
    expect(retireTags(fake)).toEqual([]);
  });

  it('Droplets already gone are done: tagging them fails, the per-Droplet deletes answer 404, and deleteInstances resolves', async () => {
    const { fake, adapter, ctx, droplets, left } = await setup();
    const ids = await droplets(8);
    await adapter.deleteInstances(ctx, ids.slice(0, 2)); // two go first (one by one)
    const mark = fake.server.received.length;
    await adapter.deleteInstances(ctx, ids.slice(0, 6));
    expect(counts(fake, mark)).toEqual({ tags_create: 1, tags_assign_resources: 1, droplets_destroy: 6, tags_delete: 1 });
    expect(fake.server.calls('droplets_destroy').slice(-6).filter((c) => c.status === 404)).toHaveLength(2);
    expect(left()).toEqual(sorted(ids.slice(6)));
    expect(retireTags(fake)).toEqual([]);
  });

  it('a failing droplets_destroy_byTag (even 404: nothing says the Droplets went) falls back to per-Droplet deletes; a failing tags_create too (and then no tag is deleted)', async () => {
    const { fake, adapter, ctx, droplets, left } = await setup();
    const ids = await droplets(12);
    fake.faults.fail('droplets_destroy_byTag', { status: 404, code: 'not_found', message: 'The resource you were accessing could not be found.' }, { times: 1 });
    let mark = fake.server.received.length;
    await adapter.deleteInstances(ctx, ids.slice(0, 4));
    expect(counts(fake, mark)).toEqual({ tags_create: 1, tags_assign_resources: 1, droplets_destroy_byTag: 1, droplets_destroy: 4, tags_delete: 1 });
    expect(left()).toEqual(sorted(ids.slice(4)));

    fake.faults.fail('tags_create', FORBIDDEN, { times: 1 });
    mark = fake.server.received.length;
    await adapter.deleteInstances(ctx, ids.slice(4, 8));
    expect(counts(fake, mark)).toEqual({ tags_create: 1, droplets_destroy: 4 });
    expect(left()).toEqual(sorted(ids.slice(8)));
    expect(retireTags(fake)).toEqual([]);
  });

  it('a failing tags_delete is logged, never thrown: the Droplets are gone, the tag (carrying nothing) is left until a sweep', async () => {
    const { fake, adapter, ctx, logs, droplets, left } = await setup();
    const ids = await droplets(5);
    fake.faults.fail('tags_delete', FORBIDDEN, { times: 1 });
    await adapter.deleteInstances(ctx, ids);
    expect(left()).toEqual([]);
    const [tag] = retireTags(fake);
    expect(tag).toMatch(RETIRE);
    expect(logs.some((l) => l.includes(`deleting retire tag ${tag} failed`))).toBe(true);
    expect(fake.leaked().tags?.map((t) => t.id).sort()).toEqual([clusterTag(CLUSTER), tag].sort());

    // A later sweep of the cluster (another process: it knows nothing of this one's tags) deletes
    // it with the cluster tag; another cluster's retire tag stays.
    const other = 'dask-cloud-retire:dask-99999999-0123abcd';
    await createApiClient(fake.clientOptions()).tag.createTag({ name: other });
    const sweeper = new DropletAdapter(adapterOptions(new DoApi({ token: fake.token, endpoint: fake.endpoint, random: () => 0 }), { activeTimeoutMs: 5_000, pollIntervalMs: 50 }));
    await sweeper.deleteNetwork(ctx);
    expect(retireTags(fake)).toEqual([other]);
    expect(fake.tagNames()).not.toContain(clusterTag(CLUSTER));
    await createApiClient(fake.clientOptions()).tag.deleteTag({ tag_name: other });
  });

  it('per-Droplet failures of the fallback are thrown together, as before', async () => {
    const { fake, adapter, ctx, droplets, left } = await setup();
    const ids = await droplets(5);
    fake.faults.fail('tags_assign_resources', FORBIDDEN);
    fake.faults.fail('droplets_destroy', FORBIDDEN, { nth: 2 });
    const err = await adapter.deleteInstances(ctx, ids).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/^DigitalOcean: deleting 1 of 5 droplets failed: \d+: DigitalOcean droplets_destroy failed \(HTTP 403/);
    expect(left()).toHaveLength(1);
    expect(retireTags(fake)).toEqual([]);
  });
});
