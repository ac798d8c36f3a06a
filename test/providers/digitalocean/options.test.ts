/**
 * DropletCluster options: validation before anything runs, defaults and options as they reach
 * the API (against the fake), the token (options, environment, ready-made client; never kept
 * where inspect or an error would show it), and the lazy SDK rule.
 *
 * No real Dask here: starts are stopped by an injected fault before the scheduler would be
 * dialled, or dial the fake's loopback addresses where nothing listens.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { inspect } from 'node:util';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createApiClient } from 'dots-wrapper';
import type { FailureSpec } from '../../fakes/core';
import { callTimeline, checkFakesAndClose, failedStart } from '../../helpers/fakes';
import type { FakeDigitalOcean } from '../../fakes/digitalocean';
import { DropletCluster, DROPLET_DEFAULTS, clusterTag, labelTag, type DropletClusterOptions } from '../../../providers/digitalocean';
import { CredentialsError, ValidationError } from '../../../src/errors';
import { clusterOptions, networkThenScheduler, newCluster, sequenceAfterPreflight, sequenceSince, startFake } from './helpers';

const SLOT = 3;
const fakes: FakeDigitalOcean[] = [];
const clusters: DropletCluster[] = [];

afterEach(async () => {
  vi.unstubAllEnvs();
  await checkFakesAndClose(fakes, clusters);
});

async function fake(options: Parameters<typeof startFake>[1] = {}): Promise<FakeDigitalOcean> {
  const f = await startFake(SLOT, options);
  fakes.push(f);
  return f;
}

function track(c: DropletCluster): DropletCluster {
  clusters.push(c);
  return c;
}

const FORBIDDEN: FailureSpec = { status: 403, code: 'forbidden', message: 'stop here' };

const TOKEN = 'dop_v1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';

describe('DropletCluster options are validated in the constructor', () => {
  const bad: [string, DropletClusterOptions, RegExp][] = [
    ['region', { region: 'New York' }, /region must be a DigitalOcean slug/],
    ['size', { size: 'XL' }, /size must be/],
    ['workerSize', { workerSize: '' }, /workerSize must be/],
    ['image', { image: 'Ubuntu 24.04' }, /image must be an image slug/],
    ['image', { image: -3 }, /image must be/],
    ['dockerImage', { dockerImage: 'a b' }, /dockerImage/],
    ['vpc', { vpc: 'default' }, /vpc must be a VPC uuid/],
    ['sshKeys', { sshKeys: ['my laptop'] }, /sshKeys/],
    ['sshKeys', { sshKeys: 'abc' as never }, /sshKeys/],
    ['monitoring', { monitoring: 'yes' as never }, /monitoring must be a boolean/],
    ['tags', { tags: ['has space'] }, /not a DigitalOcean tag/],
    ['tags', { tags: ['dask-cloud-cluster:other'] }, /reserved/],
    ['endpoint', { endpoint: 'ftp://x' }, /endpoint must be an http/],
    ['activeTimeoutMs', { activeTimeoutMs: 0 }, /activeTimeoutMs must be a positive number/],
    ['pollIntervalMs', { pollIntervalMs: -1 }, /pollIntervalMs/],
    ['token', { token: 'two words' }, /token must be a non-empty string without whitespace/],
    ['client', { client: {} as never }, /client must be a dots-wrapper client/],
    // core options are validated too
    ['nWorkers', { nWorkers: -1 }, /nWorkers/],
    ['ingressCidrs', { ingressCidrs: ['everyone'] }, /ingressCidrs/],
    ['ingressCidrs', { ingressCidrs: Array.from({ length: 1001 }, (_, i) => `198.51.${Math.floor(i / 250)}.${i % 250}/32`) }, /at most 1000/],
  ];
  for (const [option, opts, message] of bad) {
    it(`rejects a bad ${option}`, () => {
      let err: unknown;
      try {
        new DropletCluster({ token: TOKEN, ...opts });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).message).toMatch(message);
      expect((err as ValidationError).details.option).toBe(option);
      expect((err as Error).message).not.toContain(TOKEN);
    });
  }

  it('without a token in options or environment the constructor still works: the credentials check reports it (preflight.test.ts, item 12)', () => {
    vi.stubEnv('DIGITALOCEAN_TOKEN', '');
    vi.stubEnv('DIGITALOCEAN_ACCESS_TOKEN', '');
    expect(() => new DropletCluster({ nWorkers: 1 })).not.toThrow();
  });

  it('privateNetworking with a ready-made client also needs the token (Private Droplets go out as a raw request)', () => {
    vi.stubEnv('DIGITALOCEAN_TOKEN', '');
    vi.stubEnv('DIGITALOCEAN_ACCESS_TOKEN', '');
    const client = createApiClient({ token: TOKEN, endpoint: 'http://127.0.0.1:9/v2' });
    expect(() => new DropletCluster({ client, privateNetworking: true })).toThrow(/privateNetworking needs token as well as client/);
    expect(() => new DropletCluster({ client })).not.toThrow();
  });

  it('keeps the token out of the cluster object (inspect, JSON of options)', () => {
    const c = new DropletCluster({ token: TOKEN, nWorkers: 1 });
    expect(inspect(c, { depth: null, showHidden: true })).not.toContain(TOKEN);
    expect(JSON.stringify((c as unknown as { options: unknown }).options)).not.toContain(TOKEN);
  });
});

describe('DropletCluster against the fake (no Dask)', () => {
  it('defaults reach the API: nyc3, s-2vcpu-4gb, ubuntu-24-04-x64, default VPC, no monitoring, no ssh keys', async () => {
    const f = await fake();
    f.faults.fail('droplets_get', FORBIDDEN, { nth: 1 });
    const cluster = track(newCluster(f, { nWorkers: 1 }));
    await failedStart(cluster);
    const body = f.server.calls('droplets_create')[0]!.json as Record<string, unknown>;
    expect(body).toMatchObject({ region: DROPLET_DEFAULTS.region, size: DROPLET_DEFAULTS.size, image: DROPLET_DEFAULTS.image, monitoring: false });
    expect(body).not.toHaveProperty('ssh_keys');
    expect(body).not.toHaveProperty('vpc_uuid');
    expect(body).not.toHaveProperty('public_networking');
    expect(cluster.region).toBe('nyc3');
    expect(f.leaked()).toEqual({});
  });

  it('sizes, image, tags, monitoring and ssh keys reach the API; ssh keys open port 22 from the VPC and ingressCidrs', async () => {
    const f = await fake({ sshKeys: [{ name: 'laptop', public_key: 'ssh-ed25519 AAAA laptop', fingerprint: '3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa', id: 512189 }] });
    const cluster = track(
      newCluster(f, {
        nWorkers: 1,
        schedulerSize: 's-1vcpu-2gb',
        workerSize: 's-4vcpu-8gb',
        image: 'debian-12-x64',
        tags: ['team:data', 'env-test'],
        monitoring: true,
        sshKeys: [512189, '3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa'],
        ingressCidrs: ['198.51.100.0/24'],
        schedulerTimeoutMs: 1_000, // nothing listens on the (loopback) scheduler address: fails after the workers were created
      }),
    );
    await failedStart(cluster);
    const [sched, workers] = f.server.calls('droplets_create').map((c) => c.json as Record<string, unknown>);
    expect(sched).toMatchObject({ size: 's-1vcpu-2gb', image: 'debian-12-x64', monitoring: true, ssh_keys: [512189, '3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa'] });
    expect(workers).toMatchObject({ size: 's-4vcpu-8gb', image: 'debian-12-x64' });
    expect(sched!.tags).toEqual(expect.arrayContaining(['dask-cloud', clusterTag(cluster.id), 'dask-cloud-role:scheduler', 'team:data', 'env-test']));
    expect(workers!.tags).toEqual(expect.arrayContaining(['dask-cloud-role:worker', 'team:data']));
    const fw = f.server.calls('firewalls_create')[0]!.json as { inbound_rules: { ports: string; sources: { addresses?: string[] } }[] };
    const ssh = fw.inbound_rules.filter((r) => r.ports === '22').map((r) => r.sources.addresses);
    expect(ssh).toEqual([[f.pools.private.cidr], ['198.51.100.0/24']]);
    const schedPort = fw.inbound_rules.filter((r) => r.ports === '8786').map((r) => r.sources.addresses);
    expect(schedPort).toEqual([[f.pools.private.cidr], ['198.51.100.0/24']]);
    expect(f.leaked()).toEqual({});
  });

  it('vpc: looked up (vpcs_get), passed as vpc_uuid, its range admitted; its region is used when none is given', async () => {
    const f = await fake();
    const dots = createApiClient(f.clientOptions());
    const { vpc } = (await dots.vpc.createVpc({ name: 'analytics', region: 'ams3', ip_range: '10.77.64.0/20' })).data;
    f.faults.fail('droplets_get', FORBIDDEN, { nth: 1 }); // stop before anything is dialled
    const cluster = track(newCluster(f, { nWorkers: 1, vpc: vpc.id, exposeDashboard: true }));
    const mark = f.server.received.length;
    await failedStart(cluster);
    const seq = sequenceSince(f, mark);
    expect(seq).toContain('vpcs_get');
    expect(seq).not.toContain('vpcs_list');
    const ordered = networkThenScheduler(seq);
    expect(ordered.slice(ordered.indexOf('tags_create'), ordered.indexOf('tags_create') + 3)).toEqual(['tags_create', 'firewalls_create', 'droplets_create']);
    expect(cluster.region).toBe('ams3');
    expect(f.server.calls('droplets_create')[0]!.json).toMatchObject({ region: 'ams3', vpc_uuid: vpc.id });
    const fw = f.server.calls('firewalls_create')[0]!.json as { inbound_rules: { ports: string; sources: { addresses?: string[] } }[] };
    expect(fw.inbound_rules.filter((r) => r.sources.addresses?.length).map((r) => [r.ports, r.sources.addresses])).toEqual([
      ['8786', ['10.77.64.0/20']],
      ['8788', ['10.77.64.0/20']],
      ['8786', ['0.0.0.0/0']],
      ['8788', ['0.0.0.0/0']], // the dashboard's mutual-TLS terminator
      ['8787', ['0.0.0.0/0']], // exposeDashboard
    ]);
    await dots.vpc.deleteVpc({ vpc_id: vpc.id });
    expect(f.leaked()).toEqual({});
  });

  it('vpc in another region than the region asked for: refused before anything is created', async () => {
    const f = await fake();
    const dots = createApiClient(f.clientOptions());
    const { vpc } = (await dots.vpc.createVpc({ name: 'elsewhere', region: 'fra1', ip_range: '10.77.80.0/20' })).data;
    const cluster = track(newCluster(f, { nWorkers: 1, vpc: vpc.id, region: 'nyc3' }));
    const mark = f.server.received.length;
    const err = await cluster.start().catch((e: unknown) => e);
    // A preflight failure is the typed error itself, before anything exists: no rollback, no sweep.
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).details.option).toBe('vpc');
    expect((err as Error).message).toMatch(/vpc .* is in region fra1, not nyc3[\s\S]*fix: pass region 'fra1' or leave region out/);
    expect(f.server.calls().slice(mark).every((c) => c.method === 'GET')).toBe(true);
    expect(cluster.state).toBe('failed');
    await dots.vpc.deleteVpc({ vpc_id: vpc.id });
  });

  it('the token comes from DIGITALOCEAN_ACCESS_TOKEN when neither option nor DIGITALOCEAN_TOKEN has it', async () => {
    const f = await fake();
    vi.stubEnv('DIGITALOCEAN_TOKEN', '');
    vi.stubEnv('DIGITALOCEAN_ACCESS_TOKEN', f.token);
    f.faults.fail('firewalls_create', FORBIDDEN, { nth: 1 });
    const cluster = track(new DropletCluster({ ...clusterOptions(f), token: undefined, nWorkers: 1 }));
    await failedStart(cluster);
    expect(f.server.calls('vpcs_list')[0]!.status).toBe(200);
  });

  it('a ready-made dots-wrapper client is used as is', async () => {
    const f = await fake();
    vi.stubEnv('DIGITALOCEAN_TOKEN', '');
    vi.stubEnv('DIGITALOCEAN_ACCESS_TOKEN', '');
    f.faults.fail('firewalls_create', FORBIDDEN, { nth: 1 });
    const client = createApiClient(f.clientOptions());
    const cluster = track(new DropletCluster({ ...clusterOptions(f), token: undefined, endpoint: undefined, client, nWorkers: 1 }));
    await failedStart(cluster);
    expect(f.server.calls('vpcs_list')[0]!.status).toBe(200);
  });

  it('a wrong token fails at the first call with 401, the token in no message', async () => {
    const f = await fake();
    const cluster = track(newCluster(f, { token: TOKEN, nWorkers: 1 }));
    const err = await cluster.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CredentialsError);
    expect((err as Error).message).toMatch(/DigitalOcean refused the API token from the token option \(HTTP 401: Unable to authenticate you\)/);
    expect(f.server.operations()).toEqual(['account_get']);
    expect(inspect(err, { depth: null, showHidden: true })).not.toContain(TOKEN);
    expect(f.leaked()).toEqual({});
  });

  it('a 5xx on the firewall create that created nothing: looked up by name, then created once', async () => {
    const f = await fake();
    f.faults.fail('firewalls_create', { status: 500, code: 'server_error', message: 'Unexpected server-side error' }, { times: 1 });
    f.faults.fail('droplets_get', FORBIDDEN, { nth: 1 });
    const cluster = track(newCluster(f, { nWorkers: 1 }));
    await failedStart(cluster);
    expect(sequenceAfterPreflight(f).slice(0, 5)).toEqual(['tags_create', 'firewalls_create', 'firewalls_list', 'firewalls_create', 'droplets_create']);
    expect(f.server.calls('firewalls_create').map((c) => c.status)).toEqual([500, 202]);
    expect(f.server.calls('firewalls_delete')).toHaveLength(1);
    expect(f.leaked()).toEqual({});
  });

  it("the scheduler's create goes out right behind the firewall's, not after its answer; the workers' waits for the answer", async () => {
    const f = await fake();
    // Each network call takes longer than the scheduler takes to become active (lifecycleMs 200).
    const LATENCY_MS = 1_500;
    f.faults.latency(/^(tags|firewalls)_create$/, LATENCY_MS);
    f.faults.fail('droplets_list', FORBIDDEN, { nth: 2 }); // the workers' first poll: stop there
    const cluster = track(newCluster(f, { nWorkers: 1 }));
    await failedStart(cluster);
    const tag = f.server.calls('tags_create')[0]!;
    const firewall = f.server.calls('firewalls_create')[0]!;
    const [scheduler, workers] = f.server.calls('droplets_create');
    const timeline = callTimeline(f.server.calls(), tag.at);
    // The firewall waits for the tag it names.
    expect(firewall.at - tag.at, timeline).toBeGreaterThanOrEqual(LATENCY_MS);
    // Without a firewall a Droplet accepts everything: the firewall's request goes first...
    const arrived = f.server.calls().map((c) => c.requestId);
    expect(arrived.indexOf(firewall.requestId), timeline).toBeLessThan(arrived.indexOf(scheduler!.requestId));
    // ...and the scheduler's right behind it, before its answer (waiting would put it LATENCY_MS later).
    expect(scheduler!.at - firewall.at, timeline).toBeLessThan(LATENCY_MS);
    // No worker is created before the firewall is in place.
    expect(workers!.at - firewall.at, timeline).toBeGreaterThanOrEqual(LATENCY_MS);
    expect(f.leaked()).toEqual({});
  });

  it('maps labels to DigitalOcean tags', () => {
    expect(clusterTag('dask-1a2b3c4d')).toBe('dask-cloud-cluster:dask-1a2b3c4d');
    expect(labelTag('dask-cloud-role', 'worker')).toBe('dask-cloud-role:worker');
    expect(labelTag('k', 'a b/c')).toBe('k:a_b_c');
  });
});

describe('the SDK is loaded lazily', () => {
  it('importing the provider loads neither dots-wrapper nor axios', () => {
    const root = path.resolve(__dirname, '../../..');
    const out = execFileSync(
      process.execPath,
      [
        '--require',
        'tsx/cjs',
        '-e',
        `const { DropletCluster } = require('./providers/digitalocean');
         new DropletCluster({ token: 'x', nWorkers: 1 });
         console.log(Object.keys(require.cache).filter((k) => /dots-wrapper|axios/.test(k)).length);`,
      ],
      { cwd: root, encoding: 'utf8', timeout: 60_000 },
    );
    expect(out.trim()).toBe('0');
  });
});
