/**
 * DropletCluster against the DigitalOcean fake with real Dask: every Droplet's Dask process runs
 * locally (LocalVmBooter → test/sim/process-booter.ts) on the fake's loopback addresses, so start()
 * really completes over mutual TLS. Asserts the exact API calls of start / scale / close, tags and
 * firewall rules, what user-data carries (and does not), and computation from a Python client that
 * only gets `writeClientConfig(dir)`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { X509Certificate } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import { parse } from 'yaml';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { checkFakesAndClose, expectListed } from '../../helpers/fakes';
import type { FakeDigitalOcean } from '../../fakes/digitalocean';
import { have, realDask } from '../../helpers/prereq';
import { clusterTag, DropletCluster, firewallName } from '../../../providers/digitalocean';
import { presentedCertificate, userSecurity } from '../../helpers/tls';
import { ClusterStartError } from '../../../src/errors';
import type { ClusterEvent } from '../../../src/cluster/events';
import { eventually } from '../../helpers/eventually';
import { COMPUTE } from '../../helpers/python';
import { assertLoopback, LocalVmBooter, NETWORK_TEARDOWN, newCluster, opsSince, PREFLIGHT_PRIVATE, pythonWithConfig, sequenceAfterPreflight, sequenceSince, startFake } from './helpers';

const SLOT = 0;
const enabled = have(realDask());
const booter = enabled ? new LocalVmBooter() : undefined;
const fakes: FakeDigitalOcean[] = [];
const clusters: DropletCluster[] = [];
const dirs: string[] = [];

afterEach(() => checkFakesAndClose(fakes, clusters));

afterAll(async () => {
  await booter?.stopAll();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function fake(options: Parameters<typeof startFake>[1] = {}): Promise<FakeDigitalOcean> {
  const f = await startFake(SLOT, { booter, ...options });
  fakes.push(f);
  return f;
}

function track(c: DropletCluster): DropletCluster {
  clusters.push(c);
  return c;
}

async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), 'dc-do-test-'));
  dirs.push(d);
  return d;
}

/** The files a cloud-config writes, decoded. */
function writtenFiles(userData: string): Map<string, string> {
  const doc = parse(userData) as { write_files?: { path: string; content: string; encoding?: string }[] };
  return new Map((doc.write_files ?? []).map((f) => [f.path, f.encoding === 'b64' ? Buffer.from(f.content, 'base64').toString('utf8') : f.content]));
}

function hostOf(address: string): string {
  return address.replace(/^\w+:\/\//, '').replace(/:\d+$/, '');
}

function firewallOf(f: FakeDigitalOcean): Record<string, any> {
  const fws = f.resources().firewalls ?? [];
  expect(fws).toHaveLength(1);
  return fws[0]!.value as Record<string, any>;
}

describe.runIf(enabled)('DropletCluster with real Dask on the DigitalOcean fake', () => {
  it('starts 2 workers over mutual TLS with the exact API calls; a Python client computes with only the written config; close deletes everything', async () => {
    const f = await fake();
    const events: ClusterEvent[] = [];
    const cluster = track(newCluster(f, { nWorkers: 2, onEvent: (e) => events.push(e) }));
    expect(f.server.received).toHaveLength(0); // the constructor creates nothing and calls nothing

    const startedAt = Date.now();
    await cluster.start();
    // Start: read-only preflight (VPC range for the firewall among it), the cluster tag the firewall
    // names, the firewall, the scheduler, its address (polled), then the workers as soon as the
    // scheduler's private address is known, polled as one batch.
    expect(sequenceAfterPreflight(f)).toEqual(['tags_create', 'firewalls_create', 'droplets_create', 'droplets_get', 'droplets_create', 'droplets_list']);
    const creates = f.server.calls('droplets_create');
    expect(creates.map((c) => c.status)).toEqual([202, 202]);
    expect(creates[0]!.json).toMatchObject({ names: [`${cluster.id}-scheduler`], region: 'nyc3', size: 's-2vcpu-4gb', image: 'ubuntu-24-04-x64', monitoring: false });
    expect(creates[1]!.json).toMatchObject({ names: [`${cluster.id}-worker-0`, `${cluster.id}-worker-1`] });
    expect(opsSince(f, 0).filter((o) => o === 'droplets_get').length).toBeLessThan(30);

    // Addresses: clients dial the public one, workers the private one.
    assertLoopback(cluster.schedulerAddress);
    expect(cluster.schedulerAddress).toMatch(/^tls:\/\/[\d.]+:8786$/);
    expect(f.pools.public.contains(hostOf(cluster.schedulerAddress))).toBe(true);
    expect(f.pools.private.contains(hostOf(cluster.schedulerPrivateAddress))).toBe(true);
    expect(await cluster.workers()).toHaveLength(2);
    const phases = events.filter((e) => e.type === 'phase-end').map((e) => (e as { phase: string }).phase);
    expect(phases).toEqual(['credentials', 'validate', 'preflight', 'network', 'scheduler', 'ready', 'versions']);

    // Tags on every Droplet from creation; the firewall is scoped by the cluster tag.
    const tag = clusterTag(cluster.id);
    const droplets = f.droplets() as { id: number; name: string; tags: string[] }[];
    expect(droplets).toHaveLength(3);
    for (const d of droplets) {
      const role = d.name.endsWith('-scheduler') ? 'scheduler' : 'worker';
      expect(d.tags).toEqual(expect.arrayContaining(['dask-cloud', tag, `dask-cloud-role:${role}`]));
      expect(d.tags.some((t) => /^dask-cloud-expires:\d{10}$/.test(t))).toBe(true);
    }
    const fw = firewallOf(f);
    expect(fw.name).toBe(firewallName(cluster.id));
    expect(fw.tags).toEqual([tag]);
    const inbound = (fw.inbound_rules as { ports: string; sources: { addresses: string[]; tags: string[] } }[]).map((r) => [r.ports, r.sources.tags.length ? r.sources.tags : r.sources.addresses]);
    expect(inbound).toEqual([
      ['0', [tag]],
      ['8786', [f.pools.private.cidr]],
      ['8788', [f.pools.private.cidr]],
      ['8786', ['0.0.0.0/0']],
      ['8788', ['0.0.0.0/0']],
    ]);
    expect((fw.outbound_rules as { protocol: string }[]).map((r) => r.protocol)).toEqual(['tcp', 'udp', 'icmp']);

    // No API token in any user-data; a VM gets its own role's key and never the client's.
    for (const d of droplets) {
      const record = f.droplet(d.id)!;
      expect(record.userData).not.toContain(f.token);
      expect(record.userData).not.toContain('DIGITALOCEAN');
    }

    // A Python client with nothing but DASK_CONFIG computes.
    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    expect((await pythonWithConfig(dir, COMPUTE)).split('\n').pop()).toBe('90');

    // Listed from the tags alone, with nothing but the token.
    const list = () => DropletCluster.list({ token: f.token, endpoint: f.endpoint });
    const region = (f.droplets()[0] as { region: { slug: string } }).region.slug;
    await expectListed(list, cluster, { workers: 2, location: region, startedAt });

    const mark = f.server.received.length;
    await cluster.close();
    // Close: every Droplet in one delete by the cluster tag, then the firewall and the cluster's
    // own tags.
    expect(opsSince(f, mark)).toEqual(['droplets_destroy_byTag', ...NETWORK_TEARDOWN]);
    await cluster.close(); // idempotent: no further calls
    expect(f.server.received.length).toBe(mark + 6);
    expect(cluster.state).toBe('closed');
    expect(f.leaked()).toEqual({});
    await f.settle();
    expect(booter!.pids()).toEqual([]);
    expect((await list()).map((c) => c.id)).not.toContain(cluster.id);
  });

  it('scale(3) launches one batch; scale(1) retires the two newest through the scheduler, then deletes exactly their Droplets', async () => {
    const f = await fake();
    const events: ClusterEvent[] = [];
    const cluster = track(newCluster(f, { nWorkers: 1, onEvent: (e) => events.push(e) }));
    await cluster.start();
    const byName = () => new Map((f.droplets() as { id: number; name: string }[]).map((d) => [d.name, String(d.id)]));

    let mark = f.server.received.length;
    await cluster.scale(3);
    expect(sequenceSince(f, mark)).toEqual(['droplets_create', 'droplets_list']);
    expect(f.server.calls('droplets_create').pop()!.json).toMatchObject({ names: [`${cluster.id}-worker-1`, `${cluster.id}-worker-2`] });
    // The worker names are not in the user-data (one user-data per batch); the core matches by host.
    for (const d of f.droplets() as { id: number }[]) expect(f.droplet(d.id)!.userData).not.toMatch(/worker-\d/);
    await cluster.waitForWorkers(3, { timeoutMs: 30_000 });
    const before = byName();
    expect(before.size).toBe(4);

    mark = f.server.received.length;
    await cluster.scale(1);
    expect(sequenceSince(f, mark)).toEqual(['droplets_destroy']);
    const deleted = f.server.calls('droplets_destroy').slice(-2).map((c) => c.params.droplet_id).sort();
    expect(deleted).toEqual([before.get(`${cluster.id}-worker-1`), before.get(`${cluster.id}-worker-2`)].sort());
    expect([...byName().keys()].sort()).toEqual([`${cluster.id}-scheduler`, `${cluster.id}-worker-0`]);

    const retired = events.find((e) => e.type === 'workers-retired') as Extract<ClusterEvent, { type: 'workers-retired' }>;
    expect(retired.retired.sort()).toEqual([`${cluster.id}-worker-1`, `${cluster.id}-worker-2`]);
    expect(retired.notRetired).toEqual([]);
    const left = await cluster.workers();
    expect(left).toHaveLength(1);
    expect(left[0]!.host).toBe(cluster.members.find((m) => m.name === `${cluster.id}-worker-0`)!.privateHost);

    await cluster.close();
    expect(f.leaked()).toEqual({});
  });

  it('scale(5) → scale(1) deletes the 4 retired workers by a one-off tag: tags_create, tags_assign_resources, droplets_destroy_byTag, tags_delete', async () => {
    const f = await fake();
    const cluster = track(newCluster(f, { nWorkers: 1 }));
    await cluster.start();
    await cluster.scale(5);
    await cluster.waitForWorkers(5, { timeoutMs: 30_000 });
    const names = () => (f.droplets() as { name: string }[]).map((d) => d.name).sort();
    expect(names()).toHaveLength(6);

    const mark = f.server.received.length;
    await cluster.scale(1);
    expect(opsSince(f, mark)).toEqual(['tags_create', 'tags_assign_resources', 'droplets_destroy_byTag', 'tags_delete']);
    const tag = (f.server.calls('tags_create').pop()!.json as { name: string }).name;
    expect(tag).toMatch(new RegExp(`^dask-cloud-retire:${cluster.id}-[0-9a-f]{8}$`));
    expect((f.server.calls('tags_assign_resources').pop()!.json as { resources: unknown[] }).resources).toHaveLength(4);
    expect(names()).toEqual([`${cluster.id}-scheduler`, `${cluster.id}-worker-0`]);
    expect(f.tagNames()).not.toContain(tag);
    expect(await cluster.workers()).toHaveLength(1);

    await cluster.close();
    expect(f.leaked()).toEqual({});
  });

  it('security: false works over plain tcp, with a warning, and the same firewall', async () => {
    const f = await fake();
    const events: ClusterEvent[] = [];
    const cluster = track(newCluster(f, { nWorkers: 1, security: false, onEvent: (e) => events.push(e) }));
    await cluster.start();
    expect(cluster.schedulerAddress).toMatch(/^tcp:\/\/127\./);
    expect(events.some((e) => e.type === 'warning' && /security is off/.test(e.message))).toBe(true);
    const publicRule = (firewallOf(f).inbound_rules as { ports: string; sources: { addresses: string[] } }[]).find((r) => r.sources.addresses.includes('0.0.0.0/0'));
    expect(publicRule?.ports).toBe('8786');
    for (const d of f.droplets() as { id: number }[]) expect(f.droplet(d.id)!.userData).not.toContain('PRIVATE KEY');
    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    expect((await pythonWithConfig(dir, "from distributed import Client\nc = Client(timeout='20s')\nprint(c.submit(lambda: 41 + 1).result())\nc.close()")).split('\n').pop()).toBe('42');
    const [listed] = (await DropletCluster.list({ token: f.token, endpoint: f.endpoint })).filter((c) => c.id === cluster.id);
    expect(listed?.address).toBe(cluster.schedulerAddress);
    await cluster.close();
    expect(f.leaked()).toEqual({});
  });

  it('a user Security with distinct scheduler/worker/client certificates: the scheduler presents its own; no VM gets the client key', async () => {
    const { security, ca, scheduler: sched, worker, client } = await userSecurity();
    const f = await fake();
    const cluster = track(newCluster(f, { nWorkers: 1, security }));
    await cluster.start();
    expect(cluster.security).toBe(security);

    // What the scheduler presents to a client is the scheduler certificate.
    const { host, port } = /^tls:\/\/(?<host>[\d.]+):(?<port>\d+)$/.exec(cluster.schedulerAddress)!.groups as { host: string; port: string };
    assertLoopback(host);
    const presented = await presentedCertificate(host, Number(port), { ca: ca.certPem, cert: client.certPem, key: client.keyPem });
    expect(presented.cert.raw.equals(new X509Certificate(sched.certPem).raw)).toBe(true);

    for (const d of f.droplets() as { id: number; name: string }[]) {
      const files = [...writtenFiles(f.droplet(d.id)!.userData).values()].join('\n');
      expect(files).not.toContain(client.keyPem.trim());
      if (d.name.endsWith('-scheduler')) {
        expect(files).toContain(sched.keyPem.trim());
        expect(files).not.toContain(worker.keyPem.trim());
      } else {
        expect(files).toContain(worker.keyPem.trim());
        expect(files).not.toContain(sched.keyPem.trim());
      }
    }
    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    expect((await pythonWithConfig(dir, COMPUTE)).split('\n').pop()).toBe('90');
    await cluster.close();
    expect(f.leaked()).toEqual({});
  });

  it('privateNetworking: Private Droplets (raw create with public_networking: false), private scheduler address, no public inbound rule', async () => {
    const f = await fake();
    // The docker runtime needs egress: private mode needs the VPC's NAT gateway (checked first).
    f.addVpcNatGateway({ vpcUuid: f.defaultVpc('nyc3').id });
    const cluster = track(newCluster(f, { nWorkers: 1, privateNetworking: true }));
    await cluster.start();
    expect(sequenceAfterPreflight(f, PREFLIGHT_PRIVATE)).toEqual(['tags_create', 'firewalls_create', 'droplets_create', 'droplets_get', 'droplets_create', 'droplets_list']);
    expect(f.server.calls('droplets_create').map((c) => (c.json as { public_networking?: boolean }).public_networking)).toEqual([false, false]);
    expect(cluster.schedulerAddress).toBe(cluster.schedulerPrivateAddress);
    expect(f.pools.private.contains(hostOf(cluster.schedulerAddress))).toBe(true);
    for (const d of f.droplets() as { networks: { v4: { type: string }[] } }[]) expect(d.networks.v4.map((n) => n.type)).toEqual(['private']);
    const rules = firewallOf(f).inbound_rules as { sources: { addresses: string[] } }[];
    expect(rules.some((r) => r.sources.addresses.includes('0.0.0.0/0'))).toBe(false);
    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    expect((await pythonWithConfig(dir, COMPUTE)).split('\n').pop()).toBe('90');
    await cluster.close();
    expect(f.leaked()).toEqual({});
  });

  it('privateNetworking where Private Droplets are not offered: falls back to the tag-scoped firewall with no public inbound, and says so', async () => {
    const f = await fake({ privateNetworkingRegions: ['ams3'] });
    f.addVpcNatGateway({ vpcUuid: f.defaultVpc('nyc3').id });
    const events: ClusterEvent[] = [];
    const cluster = track(newCluster(f, { nWorkers: 1, privateNetworking: true, onEvent: (e) => events.push(e) }));
    await cluster.start();
    const creates = f.server.calls('droplets_create');
    expect(creates.map((c) => [c.status, (c.json as { public_networking?: boolean }).public_networking])).toEqual([
      [422, false],
      [202, undefined],
      [202, undefined],
    ]);
    const warning = events.find((e) => e.type === 'warning' && e.code === 'DASK_CLOUD_PROVIDER') as Extract<ClusterEvent, { type: 'warning' }>;
    expect(warning.message).toMatch(/Private Droplets .* not available in nyc3.*no public inbound/);
    expect(cluster.schedulerAddress).toBe(cluster.schedulerPrivateAddress);
    const rules = firewallOf(f).inbound_rules as { ports: string; sources: { addresses: string[] } }[];
    expect(rules.flatMap((r) => r.sources.addresses)).not.toContain('0.0.0.0/0');

    // The scheduler Droplet has a public address now, but the firewall admits nobody there.
    const sched = (f.droplets() as { name: string; networks: { v4: { type: string; ip_address: string }[] } }[]).find((d) => d.name.endsWith('-scheduler'))!;
    const publicIp = sched.networks.v4.find((n) => n.type === 'public')!.ip_address;
    assertLoopback(publicIp);
    const before = booter!.refused.length;
    await new Promise<void>((resolve) => {
      const s = netConnect(8786, publicIp);
      s.on('close', () => resolve());
      s.on('error', () => resolve());
    });
    expect(booter!.refused.length).toBe(before + 1);

    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    expect((await pythonWithConfig(dir, COMPUTE)).split('\n').pop()).toBe('90');
    await cluster.close();
    expect(f.leaked()).toEqual({});
  });

  it('public mode admits only ingressCidrs at the scheduler port: from elsewhere start() fails and rolls back', async () => {
    const f = await fake();
    const cluster = track(newCluster(f, { nWorkers: 1, ingressCidrs: ['203.0.113.0/24'], schedulerTimeoutMs: 3_000 }));
    const before = booter!.refused.length;
    const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
    expect(err.code).toBe('E_START_FAILED');
    expect(err.details.phase).toBe('scheduler');
    expect(booter!.refused.length).toBeGreaterThan(before);
    const rule = f.server.calls('firewalls_create')[0]!.json as { inbound_rules: { ports: string; sources: { addresses?: string[] } }[] };
    expect(rule.inbound_rules.filter((r) => r.sources.addresses?.includes('203.0.113.0/24')).map((r) => r.ports)).toEqual(['8786', '8788']);
    expect(f.leaked()).toEqual({});
  });

  it('abort during start rolls back: E_ABORTED, nothing left in the fake, no process alive', async () => {
    const f = await fake();
    const controller = new AbortController();
    const cluster = track(
      newCluster(f, {
        nWorkers: 2,
        signal: controller.signal,
        onEvent: (e) => {
          if (e.type === 'member-launched' && e.role === 'scheduler') controller.abort();
        },
      }),
    );
    const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
    expect(ClusterStartError.isInstance(err)).toBe(true);
    expect(err.code).toBe('E_ABORTED');
    expect(cluster.state).toBe('failed');
    await f.settle();
    expect(f.leaked()).toEqual({});
    expect(booter!.pids()).toEqual([]);
  });

  it('a scheduler whose Dask exits at boot (the Droplet powers off) fails start at once, with its console, not after the readiness timeout', async () => {
    const f = await fake();
    const cluster = track(newCluster(f, { nWorkers: 1, schedulerOptions: ['--no-such-dask-option'], schedulerTimeoutMs: 120_000, memberWatchIntervalMs: 250 }));
    const t0 = Date.now();
    const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
    expect(ClusterStartError.isInstance(err), String(err)).toBe(true);
    // Whichever notices first: the member watch, or the wait for the Droplet's addresses.
    expect(err.message).toMatch(/the scheduler VM dask-[0-9a-f]+-scheduler stopped on its own \(state off\)|droplet dask-[0-9a-f]+-scheduler \(\d+\) is 'off' instead of becoming active/);
    expect(err.message).toMatch(/no such option/i);
    expect(Date.now() - t0).toBeLessThan(60_000); // well inside the 120 s readiness timeout
    await f.settle();
    expect(f.leaked()).toEqual({});
  });

  it("after start, a worker Droplet that powers off ('off') is reported as member-failed and no longer counted", async () => {
    const f = await fake();
    const events: ClusterEvent[] = [];
    const cluster = track(newCluster(f, { nWorkers: 2, memberWatchIntervalMs: 250, onEvent: (e) => events.push(e) }));
    await cluster.start();
    const [victim, survivor] = cluster.members.filter((m) => m.role === 'worker');
    f.guestPowerOff(victim!.id);
    await eventually(() => cluster.members.filter((m) => m.role === 'worker').length === 1, 'one worker left', 20_000);
    expect(events.filter((e) => e.type === 'member-failed')).toEqual([
      expect.objectContaining({ role: 'worker', name: victim!.name, message: expect.stringMatching(/stopped on its own \(state off\)/) }),
    ]);
    expect(cluster.members.filter((m) => m.role === 'worker').map((m) => m.name)).toEqual([survivor!.name]);
    await cluster.close();
    await f.settle();
    expect(f.leaked()).toEqual({});
  });

  it('a throttled create (429 with retry-after) is retried and the start succeeds', async () => {
    const f = await fake();
    f.faults.fail('droplets_create', { status: 429, code: 'too_many_requests', message: 'API Rate limit exceeded.', headers: { 'retry-after': '1' } }, { times: 1 });
    const cluster = track(newCluster(f, { nWorkers: 1 }));
    const started = Date.now();
    await cluster.start();
    expect(f.server.calls('droplets_create').map((c) => c.status)).toEqual([429, 202, 202]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000); // it waited as told
    expect(f.droplets()).toHaveLength(2);
    await cluster.close();
    expect(f.leaked()).toEqual({});
  });
});
