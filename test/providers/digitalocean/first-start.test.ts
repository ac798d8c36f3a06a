/**
 * What a first start on a real DigitalOcean account meets, against the corrected fake (no real
 * Dask: starts are stopped by an injected fault before anything would be dialled):
 * - item 1: a firewall may only name tags that exist, so the cluster tag is created first, and
 *   the cluster's own tags are deleted on teardown and by cleanup sweeps;
 * - item 8: a rollback whose Droplet delete fails still reports the real cause, what is left, the
 *   cleanup command, and still tries the firewall delete; the cleanup then empties the account;
 * - item 11: bad input is refused with a typed error before any API call.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createApiClient } from 'dots-wrapper';
import type { FailureSpec } from '../../fakes/core';
import { checkFakesAndClose, failedStart } from '../../helpers/fakes';
import type { FakeDigitalOcean } from '../../fakes/digitalocean';
import { DropletCluster, clusterTag, firewallName, type DropletClusterOptions } from '../../../providers/digitalocean';
import { ClusterStartError, DaskCloudError } from '../../../src/errors';
import { clusterOptions, networkThenScheduler, newCluster, sequenceSince, startFake } from './helpers';

const SLOT = 7;
const fakes: FakeDigitalOcean[] = [];
const clusters: DropletCluster[] = [];

afterEach(() => checkFakesAndClose(fakes, clusters));

async function fake(options: Parameters<typeof startFake>[1] = {}): Promise<FakeDigitalOcean> {
  const f = await startFake(SLOT, options);
  fakes.push(f);
  return f;
}

function track(c: DropletCluster): DropletCluster {
  clusters.push(c);
  return c;
}

const FORBIDDEN: FailureSpec = { status: 403, code: 'forbidden', message: 'You do not have permission to perform this action.' };
const EXPIRES = /^dask-cloud-expires:\d+$/;

describe('item 1: the cluster firewall names its tag only once the tag exists', () => {
  it('item 1: start creates the cluster tag before the firewall that names it, and the rollback deletes the per-cluster tags', async () => {
    const f = await fake();
    f.faults.fail('droplets_get', FORBIDDEN, { nth: 1 }); // stop once the scheduler Droplet exists
    const cluster = track(newCluster(f, { nWorkers: 1 }));
    const err = await failedStart(cluster);
    // The failure is the injected one, not the firewall create: the real API refuses unknown tags.
    expect(err.details.phase).toBe('scheduler');
    expect(err.message).toContain('droplets_get failed (HTTP 403 forbidden');
    const tag = clusterTag(cluster.id);
    expect(f.server.calls('tags_create').map((c) => c.json)).toEqual([{ name: tag }]);
    const ops = f.server.operations();
    expect(ops.indexOf('tags_create')).toBeLessThan(ops.indexOf('firewalls_create'));
    expect(f.server.calls('firewalls_create')[0]!.status).toBe(202);
    // The Droplet created its expiry tag; the teardown deleted both of the cluster's own tags.
    expect(f.server.calls('tags_delete').map((c) => c.params.tag_id)).toEqual(expect.arrayContaining([tag, expect.stringMatching(EXPIRES)]));
    expect(f.leaked()).toEqual({});
    // The shared tags stay: other clusters use them, and they cost nothing.
    // The scheduler's protocol and port tags are shared the same way.
    expect(f.tagNames().sort()).toEqual(['dask-cloud', 'dask-cloud-port:8786', 'dask-cloud-protocol:tls', 'dask-cloud-role:scheduler']);
  });

  it('a tag left by an earlier attempt is fine: creating it again answers the existing tag', async () => {
    const f = await fake();
    const cluster = track(newCluster(f, { nWorkers: 0 }));
    await createApiClient(f.clientOptions()).tag.createTag({ name: clusterTag(cluster.id) });
    f.faults.fail('droplets_get', FORBIDDEN, { nth: 1 });
    await failedStart(cluster);
    expect(f.server.calls('tags_create').map((c) => c.status)).toEqual([201, 201]);
    expect(f.server.calls('firewalls_create').map((c) => c.status)).toEqual([202]);
    expect(f.leaked()).toEqual({});
  });

  it('an expiry tag another cluster still uses is kept; the cluster tag goes', async () => {
    const f = await fake();
    const dots = createApiClient(f.clientOptions());
    // Another cluster started around the same second: its Droplet carries every expiry tag this
    // cluster's Droplet may get (epoch = now + 24 h, to the second).
    const first = Math.floor(Date.now() / 1000) + 24 * 3600 - 1;
    const window = Array.from({ length: 30 }, (_, i) => `dask-cloud-expires:${first + i}`);
    await dots.droplet.createDroplet({ name: 'other', region: 'nyc3', size: 's-1vcpu-1gb', image: 'debian-12-x64', tags: window });
    f.faults.fail('droplets_get', FORBIDDEN, { nth: 1 });
    const cluster = track(newCluster(f, { nWorkers: 0 }));
    await failedStart(cluster);
    const expiry = (f.server.calls('droplets_create').at(-1)!.json as { tags: string[] }).tags.find((t) => EXPIRES.test(t))!;
    expect(window).toContain(expiry);
    const deleted = f.server.calls('tags_delete').map((c) => c.params.tag_id);
    expect(deleted).toEqual([clusterTag(cluster.id)]);
    expect(f.server.calls('tags_get').map((c) => c.params.tag_id)).toContain(expiry); // looked at, found in use
    expect(f.tagNames()).toContain(expiry);
    await dots.droplet.deleteDropletsByTag({ tag_name: expiry });
    for (const t of window) await dots.tag.deleteTag({ tag_name: t });
    expect(f.leaked()).toEqual({});
  });
});

describe('cleanup sweeps delete the per-cluster tags too', () => {
  /** What a killed process leaves: the cluster tag, its firewall, a Droplet with the cluster's tags. */
  async function leftovers(f: FakeDigitalOcean, id: string, expiresAt = Math.floor(Date.now() / 1000) - 60): Promise<void> {
    const dots = createApiClient(f.clientOptions());
    await dots.tag.createTag({ name: clusterTag(id) });
    await dots.firewall.createFirewall({
      name: firewallName(id),
      tags: [clusterTag(id)],
      inbound_rules: [{ protocol: 'tcp', ports: '0', sources: { tags: [clusterTag(id)] } }],
      outbound_rules: [],
    } as never);
    await dots.droplet.createDroplet({
      name: `${id}-scheduler`,
      region: 'nyc3',
      size: 's-1vcpu-1gb',
      image: 'debian-12-x64',
      tags: ['dask-cloud', clusterTag(id), 'dask-cloud-role:scheduler', `dask-cloud-expires:${expiresAt}`],
    });
  }

  it('by cluster id: Droplets, firewall, cluster tag and expiry tag all go', async () => {
    const f = await fake();
    await leftovers(f, 'dask-0badcafe');
    expect(Object.keys(f.leaked()).sort()).toEqual(['droplets', 'firewalls', 'tags']);
    const report = await DropletCluster.cleanup({ token: f.token, endpoint: f.endpoint, clusterIds: ['dask-0badcafe'] });
    expect(report.clusters).toEqual([expect.objectContaining({ clusterId: 'dask-0badcafe', deleted: true })]);
    expect(f.leaked()).toEqual({});
  });

  it('all: a cluster tag alone (a process killed between the tag and the firewall) is found and deleted', async () => {
    const f = await fake();
    await createApiClient(f.clientOptions()).tag.createTag({ name: clusterTag('dask-feedf00d') });
    const dry = await DropletCluster.cleanup({ token: f.token, endpoint: f.endpoint, all: true, dryRun: true });
    expect(dry.clusters).toEqual([{ clusterId: 'dask-feedf00d', instances: [], deleted: false }]);
    await DropletCluster.cleanup({ token: f.token, endpoint: f.endpoint, all: true });
    expect(f.leaked()).toEqual({});
  });

  it('expired: finds the cluster by its expiry tag and deletes everything of it', async () => {
    const f = await fake();
    await leftovers(f, 'dask-0ddba11');
    const report = await DropletCluster.cleanup({ token: f.token, endpoint: f.endpoint, expired: true });
    expect(report.clusters.map((c) => [c.clusterId, c.deleted])).toEqual([['dask-0ddba11', true]]);
    expect(f.leaked()).toEqual({});
  });
});

describe('item 8: a rollback that cannot delete everything', () => {
  it('item 8: a failing Droplet delete keeps the real cause, lists what is left, gives the cleanup command, still deletes the firewall; the cleanup empties the account', async () => {
    const f = await fake();
    f.faults.fail('droplets_get', { status: 422, code: 'unprocessable_entity', message: 'the real cause' }, { nth: 1 });
    f.faults.fail('droplets_destroy_byTag', FORBIDDEN, { times: 100 });
    const cluster = track(newCluster(f, { nWorkers: 1 }));
    const err = await cluster.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(ClusterStartError.isInstance(err), String(err)).toBe(true);
    const e = err as ClusterStartError;
    expect(e.code).toBe('E_START_FAILED');
    expect(e.message).toContain('the real cause');
    expect(DaskCloudError.isInstance(e.cause) && e.cause.message).toMatch(/droplets_get failed \(HTTP 422 unprocessable_entity: the real cause\)/);
    const leftovers = e.details.leftovers as string[];
    expect(leftovers.join('; ')).toMatch(/instances \d+/);
    const command = `dask-cloud cleanup --provider digitalocean --cluster ${cluster.id}`;
    expect(e.details.cleanupCommand).toBe(command);
    expect(e.message).toContain(command);
    expect(cluster.state).toBe('failed');
    // Every deletion was tried: the Droplet (refused), and the firewall all the same.
    expect(f.server.calls('droplets_destroy_byTag').length).toBeGreaterThan(0);
    expect(f.server.calls('firewalls_delete').map((c) => c.status)).toEqual([204]);
    // The cluster tag stays while a Droplet carries it: the cleanup finds the Droplet by it.
    expect(f.tagNames()).toContain(clusterTag(cluster.id));
    expect(Object.keys(f.leaked()).sort()).toEqual(['droplets', 'tags']);

    f.faults.clear();
    const report = await DropletCluster.cleanup({ token: f.token, endpoint: f.endpoint, clusterIds: [cluster.id] });
    expect(report.clusters).toEqual([expect.objectContaining({ clusterId: cluster.id, deleted: true })]);
    expect(f.leaked()).toEqual({});
  });
});

describe('item 11: bad input is refused before any API call', () => {
  const bad: [string, DropletClusterOptions, string][] = [
    ['oversized user-data (a huge bootstrap)', { bootstrap: [`echo ${'x'.repeat(70_000)}`] }, 'E_USER_DATA_TOO_LARGE'],
    ['a NUL in an env value', { env: { SECRET: 'a\0b' } }, 'E_INVALID_OPTION'],
    ['a bad dockerImage', { dockerImage: 'ghcr.io/dask/dask:2025 ; rm -rf /' }, 'E_INVALID_OPTION'],
    ['a dockerImage the renderer refuses', { dockerImage: '-v/etc:/etc' }, ''],
    ['bad tags', { tags: ['team data'] }, 'E_INVALID_OPTION'],
    ['too long a tag', { tags: [`t${'x'.repeat(255)}`] }, 'E_INVALID_OPTION'],
  ];
  for (const [what, options, code] of bad) {
    it(`item 11: ${what} → a typed error, zero calls on the fake`, async () => {
      const f = await fake();
      const err = await (async () => {
        const c = track(new DropletCluster(clusterOptions(f, { nWorkers: 2, ...options })));
        await c.start();
      })().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(DaskCloudError.isInstance(err), String(err)).toBe(true);
      expect(ClusterStartError.isInstance(err)).toBe(false);
      if (code) expect((err as DaskCloudError).code).toBe(code);
      expect((err as Error).message).not.toContain('a\0b');
      expect(f.server.calls()).toEqual([]);
    });
  }
});

describe('the cluster tag in the whole call sequence', () => {
  it('start → failure → rollback, call by call', async () => {
    const f = await fake();
    f.faults.fail('droplets_get', FORBIDDEN, { nth: 1 });
    const cluster = track(newCluster(f, { nWorkers: 1 }));
    const mark = f.server.received.length;
    await failedStart(cluster);
    const seq = networkThenScheduler(sequenceSince(f, mark));
    const preflight = seq.slice(0, seq.indexOf('tags_create'));
    expect(preflight.every((op) => /_(get|list)$/.test(op))).toBe(true);
    expect(seq.slice(seq.indexOf('tags_create'))).toEqual([
      'tags_create',
      'firewalls_create',
      'droplets_create',
      'droplets_get',
      'droplets_destroy_byTag',
      'firewalls_delete',
      'tags_get',
      'tags_delete',
      'tags_get',
      'tags_delete',
    ]);
  });
});
