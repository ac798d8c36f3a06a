/**
 * GCPCluster end to end against the Compute fake, with every booted instance running its real
 * Dask process (ProcessBooter, from the user-data's launch spec) on a loopback address, and GCP's
 * 1:1 NAT of the external address simulated for the scheduler port (admitted by the firewall
 * rules). `start()` really completes: the scheduler answers over mutual TLS, workers register, a
 * Python client computes with nothing but the written client config.
 *
 * Also here: the exact API calls of start, scale and close, and cleanup of what a killed process
 * left behind. Network safety: every address is on loopback (see helpers.ts).
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { GCPCluster } from '../../../providers/gcp';
import type { ClusterEvent } from '../../../src/cluster/events';
import { LABELS } from '../../../src/cluster/vm';
import { parseAddress } from '../../../src/dask';
import { Security } from '../../../src/security';
import type { DaskCloudError } from '../../../src/errors';
import { presentedCertificate, userSecurity } from '../../helpers/tls';
import { expectListed } from '../../helpers/fakes';
import { spawnTsx } from '../../helpers/spawn';
import { assertNoContractViolations } from '../../fakes/core';
import type { FakeGcp } from '../../fakes/gcp';
import { have, openssl, pythonWithDask, realDask } from '../../helpers/prereq';
import { COMPUTE, pythonWithConfig } from '../../helpers/python';
import { eventually } from '../../helpers/eventually';
import { pidExists } from '../../sim/exec';
import { fakeOptions, NatProcessBooter, operations, startFake, ZONE } from './helpers';

const enabled = have(realDask());
const root = path.resolve(__dirname, '../../..');

let fake: FakeGcp | undefined;
let booter: NatProcessBooter | undefined;
const clusters: GCPCluster[] = [];
const dirs: string[] = [];

afterEach(async () => {
  try {
    await Promise.all(clusters.splice(0).map((c) => c.close().catch(() => undefined)));
    if (fake) {
      assertNoContractViolations(fake);
      expect(fake.server.handlerErrors).toEqual([]);
      expect(fake.bootErrors).toEqual([]);
    }
  } finally {
    await booter?.stopAll();
    await fake?.stop();
    fake = undefined;
    booter = undefined;
  }
});

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function setup(opts: Parameters<typeof startFake>[0] = {}): Promise<{ fake: FakeGcp; booter: NatProcessBooter }> {
  booter = new NatProcessBooter({ python: pythonWithDask()!, ports: [8786] });
  fake = await startFake({ booter, ...opts });
  return { fake, booter };
}

function track(c: GCPCluster): GCPCluster {
  clusters.push(c);
  return c;
}

async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), 'dc-gcp-test-'));
  dirs.push(d);
  return d;
}

/** The user-data of an insert / bulkInsert request, decoded as the VM sees it. */
function userDataOf(props: { metadata: { items: { key: string; value: string }[] } }): string {
  const items = props.metadata.items;
  const value = items.find((i) => i.key === 'user-data')!.value;
  if (items.find((i) => i.key === 'user-data-encoding')?.value === 'base64') return gunzipSync(Buffer.from(value, 'base64')).toString('utf8');
  return value;
}

describe.runIf(enabled)('GCPCluster with real Dask on simulated instances', () => {
  it('start, compute from Python, scale up and down through the scheduler, close: the exact API calls', async () => {
    // Slow enough provisioning that "workers are created before the scheduler runs" is visible.
    // Wide enough that a loaded machine still gets its insert → get → bulkInsert inside it.
    const provisioningMs = 1_500;
    const { fake, booter } = await setup({ lifecycleMs: { provisioningMs, stagingMs: 300 } });
    const events: ClusterEvent[] = [];
    const cluster = track(new GCPCluster({ ...fakeOptions(fake), nWorkers: 2, onEvent: (e) => events.push(e) }));
    const startedAt = Date.now();
    await cluster.start();
    const id = cluster.id;

    // --- start ---------------------------------------------------------------------------------
    const start = operations(fake);
    // preflight: reads only, made together (the credentials' projects.get beside the zone's get)
    expect([...start.slice(0, 8)].sort()).toEqual(['images.getFromFamily', 'machineTypes.get', 'machineTypes.get', 'networks.get', 'projects.get', 'regions.get', 'subnetworks.get', 'zones.get']);
    // Then, concurrently: the rules' inserts beside the scheduler's insert (a rule names tags, not
    // VMs), the rules' operations (awaited only before the scheduler is dialled), the scheduler's
    // private address (get), its operation (wait) and, once RUNNING, its external address (get);
    // once the rules' inserts are answered, the workers' bulkInsert, its operation, their addresses.
    expect([...start.slice(8)].sort()).toEqual([
      'firewalls.insert',
      'firewalls.insert',
      'firewalls.insert',
      'globalOperations.wait',
      'globalOperations.wait',
      'globalOperations.wait',
      'instances.bulkInsert',
      'instances.get',
      'instances.get',
      'instances.insert',
      'instances.list',
      'zoneOperations.wait',
      'zoneOperations.wait',
    ]);
    expect(start.indexOf('instances.bulkInsert')).toBeGreaterThan(start.indexOf('instances.get'));
    expect(start.indexOf('instances.bulkInsert')).toBeGreaterThan(start.lastIndexOf('firewalls.insert'));
    const received = fake.server.received;
    const insertAt = received.find((r) => r.operation === 'compute.instances.insert')!.at;
    const bulkAt = received.find((r) => r.operation === 'compute.instances.bulkInsert')!.at;
    expect(bulkAt - insertAt, 'workers are created while the scheduler is still PROVISIONING').toBeLessThan(provisioningMs);

    // Every API call was under the cluster's own names.
    const insert = fake.server.calls('compute.instances.insert')[0]!;
    const bulk = fake.server.calls('compute.instances.bulkInsert')[0]!;
    expect(insert.json).toMatchObject({ name: `${id}-scheduler` });
    expect(Object.keys((bulk.json as { perInstanceProperties: object }).perInstanceProperties)).toEqual([`${id}-worker-0`, `${id}-worker-1`]);
    // One user-data for all workers, naming none of them; workers dial the scheduler's private address.
    const workerUserData = userDataOf((bulk.json as { instanceProperties: Parameters<typeof userDataOf>[0] }).instanceProperties);
    expect(workerUserData).not.toContain(`${id}-worker-`);
    expect(workerUserData).toContain(cluster.schedulerPrivateAddress);
    expect(workerUserData).not.toContain('client.key');

    // Addresses: the client dials the external one, workers the internal one; all loopback.
    const pub = parseAddress(cluster.schedulerAddress);
    const priv = parseAddress(cluster.schedulerPrivateAddress);
    expect(cluster.schedulerAddress).toMatch(/^tls:\/\//);
    expect(fake.pools.public.contains(pub.host)).toBe(true);
    expect(fake.pools.private.contains(priv.host)).toBe(true);
    const workers = await cluster.workers();
    expect(workers).toHaveLength(2);
    expect(workers.every((w) => fake.pools.private.contains(w.host))).toBe(true);

    // A Python client connects with nothing but the written config, and computes.
    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    expect((await pythonWithConfig(dir, COMPUTE)).split('\n').pop()).toBe('90');

    // Every instance is labelled; boot disks auto-delete.
    for (const r of fake.resources().instances!) {
      const v = r.value as { name: string; labels: Record<string, string>; disks: { autoDelete: boolean }[] };
      expect(v.labels).toMatchObject({ [LABELS.cluster]: id, [LABELS.role]: v.name.endsWith('-scheduler') ? 'scheduler' : 'worker' });
      expect(v.disks[0]!.autoDelete).toBe(true);
    }

    // --- scale up --------------------------------------------------------------------------------
    let from = fake.server.received.length;
    await cluster.scale(3);
    expect(operations(fake, from)).toEqual(['instances.bulkInsert', 'zoneOperations.wait', 'instances.list']);
    await cluster.waitForWorkers(3, { timeoutMs: 30_000 });
    const memberHost = new Map(cluster.members.map((m) => [m.name, m.privateHost]));

    // --- scale down: retire_workers first, then delete exactly the retired VMs --------------------
    from = fake.server.received.length;
    await cluster.scale(1);
    expect(operations(fake, from)).toEqual(['instances.delete', 'instances.delete', 'zoneOperations.wait', 'zoneOperations.wait']);
    expect(fake.server.calls('compute.instances.delete').map((c) => c.params.instance).sort()).toEqual([`${id}-worker-1`, `${id}-worker-2`]);
    const retired = events.find((e): e is Extract<ClusterEvent, { type: 'workers-retired' }> => e.type === 'workers-retired')!;
    expect(retired.retired.sort()).toEqual([`${id}-worker-1`, `${id}-worker-2`]);
    expect(retired.notRetired).toEqual([]);
    const left = await cluster.workers();
    expect(left.map((w) => w.host)).toEqual([memberHost.get(`${id}-worker-0`)]);
    expect(fake.resources().instances!.map((i) => i.id).sort()).toEqual([`zones/us-central1-a/instances/${id}-scheduler`, `zones/us-central1-a/instances/${id}-worker-0`]);

    // --- listed from the labels alone, in every zone of the project ------------------------------
    const { projectId, endpoint, authClient } = fakeOptions(fake);
    await expectListed(() => GCPCluster.list({ projectId, endpoint, authClient }), cluster, { workers: 1, location: 'us-central1-a', startedAt });

    // --- close -----------------------------------------------------------------------------------
    const pids = booter.pids();
    expect(pids).toHaveLength(2);
    from = fake.server.received.length;
    await cluster.close();
    // The VMs and the firewall rules are deleted at once (a rule names tags, not VMs): the two
    // sequences interleave, each in its own order.
    const closing = operations(fake, from);
    expect(closing.filter((op) => op.startsWith('instances.') || op.startsWith('zoneOperations.'))).toEqual([
      'instances.delete',
      'instances.delete',
      'zoneOperations.wait',
      'zoneOperations.wait',
      'instances.list',
    ]);
    expect(closing.filter((op) => op.startsWith('firewalls.') || op.startsWith('globalOperations.'))).toEqual([
      'firewalls.list',
      'firewalls.delete',
      'firewalls.delete',
      'firewalls.delete',
      'globalOperations.wait',
      'globalOperations.wait',
      'globalOperations.wait',
    ]);
    expect(closing).toHaveLength(12);
    // The rules went while the VMs were still stopping.
    const closeCalls = fake.server.received.slice(from);
    const firstRuleDelete = closeCalls.find((r) => r.operation === 'compute.firewalls.delete')!.at;
    // (the sweep's list comes once the VMs' delete operations are done)
    const sweep = closeCalls.find((r) => r.operation === 'compute.instances.list')!.at;
    expect(firstRuleDelete).toBeLessThan(sweep);
    from = fake.server.received.length;
    await cluster.close(); // idempotent: nothing more is asked of the cloud
    expect(fake.server.received.length).toBe(from);
    expect(cluster.state).toBe('closed');
    expect(fake.leaked()).toEqual({});
    expect(booter.pids()).toEqual([]);
    expect(pids.filter(pidExists)).toEqual([]);
    expect(booter.natCount()).toEqual(0);
    expect((await GCPCluster.list({ projectId, endpoint, authClient })).map((c) => c.id)).not.toContain(id);
  });

  it('attach: a second handle built from the local directory alone scales, reads logs and closes the cluster', async () => {
    const { fake, booter } = await setup();
    const first = track(await GCPCluster.start({ ...fakeOptions(fake), nWorkers: 1 }));
    const dir = first.stateDir!;
    expect(dir).toBe(path.join(process.env.DASK_CLOUD_HOME!, 'clusters', first.id));
    expect((await readdir(dir)).sort()).toEqual(['ca.pem', 'client.key', 'client.pem', 'cluster.record', 'dask.yaml', 'worker.key', 'worker.pem']);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    // The record holds no secret: no key, no token.
    const record = await readFile(path.join(dir, 'cluster.record'), 'utf8');
    expect(record).not.toMatch(/PRIVATE KEY|fake-token|authClient/);
    // Python computes through the directory alone.
    expect((await pythonWithConfig(dir, COMPUTE)).split('\n').pop()).toBe('90');

    const { authClient } = fakeOptions(fake);
    const second = track(await GCPCluster.attach(first.id, { authClient, memberWatchIntervalMs: 0 }));
    expect(second.attached).toBe(true);
    expect(second.id).toBe(first.id);
    expect(second.schedulerAddress).toBe(first.schedulerAddress);
    expect(second.members.map((m) => m.name)).toEqual([`${first.id}-scheduler`, `${first.id}-worker-0`]);
    await second.scale(3);
    await second.waitForWorkers(3, { timeoutMs: 60_000 });
    expect(second.members.map((m) => m.name).slice(1)).toEqual([`${first.id}-worker-0`, `${first.id}-worker-1`, `${first.id}-worker-2`]);
    expect(await first.workers()).toHaveLength(3);
    const logs = await second.getLogs();
    expect(logs[`${first.id}-worker-2`]).toMatch(/Starting Worker|Registered to/);

    // close() of the attached handle deletes everything by label, and the local directory.
    await second.close();
    expect(fake.leaked()).toEqual({});
    expect(booter.pids()).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    // Attaching again: the directory is gone, and the error says what it would need.
    const err = (await GCPCluster.attach(first.id, { authClient }).catch((e: unknown) => e)) as DaskCloudError;
    expect(err.code).toBe('E_NO_LOCAL_STATE');
    expect(err.message).toMatch(/never leave the machine that started the cluster/);
  });

  it('security: false works over plain tcp', async () => {
    const { fake, booter } = await setup();
    const cluster = track(await GCPCluster.start({ ...fakeOptions(fake), nWorkers: 1, security: false }));
    expect(cluster.schedulerAddress).toMatch(/^tcp:\/\/127\./);
    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    const out = await pythonWithConfig(dir, "from distributed import Client\nc = Client(timeout='20s')\nprint(c.submit(lambda: 41 + 1).result())\nc.close()");
    expect(out.split('\n').pop()).toBe('42');
    // getLogs reads each VM's serial console.
    const logs = await cluster.getLogs();
    expect(Object.keys(logs).sort()).toEqual(cluster.members.map((m) => m.name).sort());
    expect(logs[`${cluster.id}-scheduler`]).toMatch(/Scheduler at:\s+tcp:\/\//);
    expect(fake.server.calls('compute.instances.getSerialPortOutput').length).toBe(2);
    const [listed] = (await GCPCluster.list(fakeOptions(fake))).filter((c) => c.id === cluster.id);
    expect(listed?.address).toBe(cluster.schedulerAddress);
    await cluster.close();
    expect(fake.leaked()).toEqual({});
    expect(booter.pids()).toEqual([]);
  });

  it('private networking: no external address; the client dials the internal one', async () => {
    const { fake, booter } = await setup();
    // The docker runtime needs outbound internet in private mode: preflight insists on a Cloud NAT.
    fake.addCloudNat('us-central1');
    const cluster = track(await GCPCluster.start({ ...fakeOptions(fake), nWorkers: 1, privateNetworking: true }));
    expect(fake.pools.private.contains(parseAddress(cluster.schedulerAddress).host)).toBe(true);
    expect(cluster.schedulerAddress).toBe(cluster.schedulerPrivateAddress);
    expect(fake.pools.public.inUse()).toEqual([]);
    expect(booter.natCount()).toBe(0);
    expect(await cluster.workers()).toHaveLength(1);
    await cluster.close();
    expect(fake.leaked()).toEqual({});
  });

  it('the firewall decides who reaches the scheduler from outside: ingressCidrs that exclude us time out', async () => {
    const { fake, booter } = await setup();
    const cluster = track(new GCPCluster({ ...fakeOptions(fake), nWorkers: 0, ingressCidrs: ['203.0.113.0/24'], schedulerTimeoutMs: 2_000 }));
    const err = (await cluster.start().catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/was not ready within 2000 ms/);
    expect(booter.refused.length).toBeGreaterThan(0);
    expect(fake.leaked()).toEqual({});
  });

  it('a scheduler whose Dask exits at boot (the guest powers off) fails start at once, with its serial console, not after the readiness timeout', async () => {
    const { fake } = await setup();
    const cluster = track(new GCPCluster({ ...fakeOptions(fake), nWorkers: 1, schedulerOptions: ['--no-such-dask-option'], schedulerTimeoutMs: 120_000, memberWatchIntervalMs: 250 }));
    const t0 = Date.now();
    const err = (await cluster.start().catch((e: unknown) => e)) as Error & { details: { phase?: string } };
    // Whichever notices first: the member watch, or the wait for the scheduler's external address.
    expect(err.message).toMatch(/the scheduler VM dask-[0-9a-f]+-scheduler stopped on its own \(state (STOPPING|TERMINATED)\)|instance dask-[0-9a-f]+-scheduler is (STOPPING|TERMINATED) instead of running/);
    expect(err.details.phase).toBe('scheduler');
    expect(err.message).toMatch(/no such option/i);
    expect(Date.now() - t0).toBeLessThan(60_000); // well inside the 120 s readiness timeout
    expect(fake.leaked()).toEqual({});
  });

  it('after start, a worker VM that powers off (TERMINATED) is reported as member-failed and no longer counted', async () => {
    const { fake } = await setup();
    const events: ClusterEvent[] = [];
    const cluster = track(new GCPCluster({ ...fakeOptions(fake), nWorkers: 2, memberWatchIntervalMs: 250, onEvent: (e) => events.push(e) }));
    await cluster.start();
    const [victim, survivor] = cluster.members.filter((m) => m.role === 'worker');
    fake.guestPowerOff(victim!.name);
    await eventually(() => cluster.members.filter((m) => m.role === 'worker').length === 1, 'one worker left', 20_000);
    expect(events.filter((e) => e.type === 'member-failed')).toEqual([
      expect.objectContaining({ role: 'worker', name: victim!.name, message: expect.stringMatching(/stopped on its own \(state (STOPPING|TERMINATED)\)/) }),
    ]);
    expect(cluster.members.find((m) => m.role === 'worker')!.name).toBe(survivor!.name);
    await cluster.close();
    expect(fake.leaked()).toEqual({});
  });

  it("a user Security with distinct scheduler/worker/client certificates: the scheduler presents the user's scheduler certificate", async () => {
    const { fake, booter } = await setup();
    const { security, scheduler, worker, client } = await userSecurity('user');
    const cluster = track(await GCPCluster.start({ ...fakeOptions(fake), nWorkers: 1, security }));
    expect(cluster.security).toBe(security);
    const { host, port } = parseAddress(cluster.schedulerAddress);
    const presented = await presentedCertificate(host, port, security.clientTlsOptions());
    expect(presented.cert.fingerprint256).toBe(new X509Certificate(scheduler.certPem).fingerprint256);
    // Each VM got its own role's key and nothing else; the client key stayed here.
    const schedUd = userDataOf(fake.server.calls('compute.instances.insert')[0]!.json as Parameters<typeof userDataOf>[0]);
    const workerUd = userDataOf((fake.server.calls('compute.instances.bulkInsert')[0]!.json as { instanceProperties: Parameters<typeof userDataOf>[0] }).instanceProperties);
    // A PEM's second line is specific to its key or certificate (the first is a common ASN.1 header).
    const mark = (pem: string) => pem.split('\n')[2]!;
    expect(schedUd).toContain(mark(scheduler.certPem));
    expect(schedUd).toContain(mark(scheduler.keyPem));
    expect(workerUd).toContain(mark(worker.keyPem));
    for (const ud of [schedUd, workerUd]) expect(ud).not.toContain(mark(client.keyPem));
    expect(workerUd).not.toContain(mark(scheduler.keyPem));
    expect(schedUd).not.toContain(mark(worker.keyPem));
    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    expect((await pythonWithConfig(dir, COMPUTE)).split('\n').pop()).toBe('90');
    await cluster.close();
    expect(fake.leaked()).toEqual({});
    expect(booter.pids()).toEqual([]);
  });
});

describe.runIf(enabled && have(openssl()))('examples/custom-security.ts: its OpenSSL recipe and Security.fromFiles', () => {
  it('material made exactly as the example documents starts a GCPCluster; each role presents its own certificate', async () => {
    const { fake, booter } = await setup();
    // The recipe is taken from the example's header, so the documentation is what is tested.
    const source = await readFile(path.join(root, 'examples/custom-security.ts'), 'utf8');
    const lines = source.split('\n').map((l) => l.replace(/^ \*   ?/, ''));
    const first = lines.findIndex((l) => l.startsWith('mkdir -p tls'));
    const last = lines.findIndex((l) => l.startsWith('chmod 600'));
    expect(first).toBeGreaterThan(0);
    const recipe = lines.slice(first, last + 1).join('\n');
    const dir = await tempDir();
    execFileSync('bash', ['-euo', 'pipefail', '-c', recipe], { cwd: dir, stdio: 'pipe', timeout: 30_000 });
    const tlsDir = path.join(dir, 'tls');
    const file = (n: string) => path.join(tlsDir, n);
    const security = Security.fromFiles({
      tlsCaFile: file('ca.pem'),
      tlsSchedulerCert: file('scheduler.pem'),
      tlsSchedulerKey: file('scheduler.key'),
      tlsWorkerCert: file('worker.pem'),
      tlsWorkerKey: file('worker.key'),
      tlsClientCert: file('client.pem'),
      tlsClientKey: file('client.key'),
      requireEncryption: true,
      tlsMinVersion: '1.3',
    });
    const cluster = track(await GCPCluster.start({ ...fakeOptions(fake), nWorkers: 2, security }));
    const workers = await cluster.workers();
    expect(workers).toHaveLength(2);
    const presented = async (address: string) => {
      const { host, port } = parseAddress(address);
      const { cert, protocol } = await presentedCertificate(host, port, security.clientTlsOptions());
      expect(protocol).toBe('TLSv1.3');
      return cert.fingerprint256;
    };
    const fingerprint = async (n: string) => new X509Certificate(await readFile(file(n))).fingerprint256;
    expect(await presented(cluster.schedulerAddress)).toBe(await fingerprint('scheduler.pem'));
    expect(await presented(workers[0]!.address)).toBe(await fingerprint('worker.pem'));
    const client = await tempDir();
    await cluster.writeClientConfig(client);
    expect((await pythonWithConfig(client, COMPUTE)).split('\n').pop()).toBe('90');
    await cluster.close();
    expect(fake.leaked()).toEqual({});
    expect(booter.pids()).toEqual([]);
  });
});

/** Starts leave-behind.ts, waits until its cluster exists, kills it with SIGKILL: the cluster id. */
async function killedProcessCluster(f: FakeGcp, expiresHours: number, zone = ZONE): Promise<string> {
  const script = spawnTsx(path.join(__dirname, 'fixtures/leave-behind.ts'), [], {
    FAKE_GCP_PORT: String(f.port),
    FAKE_GCP_PROJECT: f.project,
    FAKE_GCP_ZONE: zone,
    EXPIRES_HOURS: String(expiresHours),
  });
  try {
    // The script prints its cluster id as one JSON line once the cluster exists.
    await script.until(/^\{.*\}$/m, 40_000);
    const line = script.stdout().split('\n').find((l) => l.startsWith('{'))!;
    return (JSON.parse(line) as { clusterId: string }).clusterId;
  } finally {
    if (script.child.exitCode === null) {
      script.child.kill('SIGKILL');
      await script.exited;
    }
  }
}

describe('GCPCluster.cleanup: what a killed process left behind', () => {
  it('{ clusterIds } deletes its instances and firewall rules', async () => {
    fake = await startFake();
    const id = await killedProcessCluster(fake, 24);
    const left = fake.leaked();
    expect(left.instances!.map((i) => i.id).sort()).toEqual([`${id}-scheduler`, `${id}-worker-0`, `${id}-worker-1`].map((n) => `zones/us-central1-a/instances/${n}`));
    expect(left.firewalls).toHaveLength(3);

    const dry = await GCPCluster.cleanup({ ...fakeOptions(fake), clusterIds: [id], dryRun: true });
    expect(dry.clusters).toEqual([{ clusterId: id, instances: [`${id}-scheduler`, `${id}-worker-0`, `${id}-worker-1`], deleted: false }]);
    expect(fake.leaked()).toEqual(left);

    const report = await GCPCluster.cleanup({ ...fakeOptions(fake), clusterIds: [id] });
    expect(report.clusters).toEqual([{ clusterId: id, instances: [`${id}-scheduler`, `${id}-worker-0`, `${id}-worker-1`], deleted: true }]);
    expect(fake.leaked()).toEqual({});
    // Again: nothing left, and that is fine.
    expect((await GCPCluster.cleanup({ ...fakeOptions(fake), clusterIds: [id] })).clusters).toEqual([{ clusterId: id, instances: [], deleted: true }]);
  });

  it('{ expired: true } deletes clusters whose expiry label has passed, and only those', async () => {
    fake = await startFake();
    const id = await killedProcessCluster(fake, 1);
    const now = await GCPCluster.cleanup({ ...fakeOptions(fake), expired: true });
    expect(now.clusters).toEqual([]);
    expect(fake.leaked().instances).toHaveLength(3);
    const later = await GCPCluster.cleanup({ ...fakeOptions(fake), expired: true, now: new Date(Date.now() + 2 * 3_600_000) });
    expect(later.clusters).toEqual([{ clusterId: id, instances: [`${id}-scheduler`, `${id}-worker-0`, `${id}-worker-1`], deleted: true }]);
    expect(fake.leaked()).toEqual({});
  });

  it('without a zone it sweeps every zone of the project (aggregatedList); with one, only that zone', async () => {
    fake = await startFake();
    const [central, europe] = [await killedProcessCluster(fake, 24, 'us-central1-a'), await killedProcessCluster(fake, 24, 'europe-west1-b')];
    const members = (id: string) => [`${id}-scheduler`, `${id}-worker-0`, `${id}-worker-1`];
    const zonesOf = () => [...new Set(fake!.leaked().instances?.map((i) => i.id.split('/')[1]) ?? [])].sort();
    expect(zonesOf()).toEqual(['europe-west1-b', 'us-central1-a']);
    const { zone: _zone, ...everyZone } = fakeOptions(fake);

    // An explicit zone narrows the sweep: the European cluster's VMs are not seen, only its firewall rules (global).
    const narrow = await GCPCluster.cleanup({ ...fakeOptions(fake), clusterIds: [central, europe], dryRun: true });
    expect(narrow.clusters).toEqual([
      { clusterId: central, instances: members(central), deleted: false },
      { clusterId: europe, instances: [], deleted: false },
    ]);

    const dry = await GCPCluster.cleanup({ ...everyZone, all: true, dryRun: true });
    expect(dry.clusters.map((c) => [c.clusterId, c.instances]).sort()).toEqual([[central, members(central)], [europe, members(europe)]].sort());
    expect(zonesOf()).toEqual(['europe-west1-b', 'us-central1-a']);

    const report = await GCPCluster.cleanup({ ...everyZone, all: true });
    expect(report.clusters.every((c) => c.deleted && c.error === undefined)).toBe(true);
    expect(fake.leaked()).toEqual({});
    // Each VM was deleted in its own zone, and found with one aggregated list per sweep.
    const deletes = fake.server.calls('compute.instances.delete').map((c) => `${String(c.params.zone)}/${String(c.params.instance)}`);
    expect(deletes.sort()).toEqual([...members(central).map((n) => `us-central1-a/${n}`), ...members(europe).map((n) => `europe-west1-b/${n}`)].sort());
    expect(fake.server.calls('compute.instances.aggregatedList').length).toBeGreaterThanOrEqual(2);
  });

  it('item 4: { expired: true } deletes the VMs that powered themselves off (TERMINATED, which maxRunDuration no longer deletes) and their disks', async () => {
    fake = await startFake();
    const id = await killedProcessCluster(fake, 1);
    // autoShutdown: the scheduler's Dask exited and the guest powered off; so did a worker.
    fake.guestPowerOff(`${id}-scheduler`);
    fake.guestPowerOff(`${id}-worker-0`);
    const status = () => Object.fromEntries(fake!.leaked().instances!.map((i) => [(i.value as { name: string }).name, (i.value as { status: string }).status]));
    await eventually(() => status()[`${id}-scheduler`] === 'TERMINATED' && status()[`${id}-worker-0`] === 'TERMINATED', 'the power-offs', 10_000);
    expect(fake.leaked().disks).toHaveLength(3);
    const report = await GCPCluster.cleanup({ ...fakeOptions(fake), expired: true, now: new Date(Date.now() + 2 * 3_600_000) });
    expect(report.clusters).toEqual([{ clusterId: id, instances: [`${id}-scheduler`, `${id}-worker-0`, `${id}-worker-1`], deleted: true }]);
    expect(fake.leaked()).toEqual({});
  });

  it('{ all: true } also finds firewall rules whose instances are already gone', async () => {
    fake = await startFake();
    const id = await killedProcessCluster(fake, 24);
    // Someone deleted the VMs by hand; the firewall rules remain.
    await GCPCluster.cleanup({ ...fakeOptions(fake), clusterIds: [id], dryRun: true });
    for (const r of fake.resources().instances!) {
      const name = (r.value as { name: string }).name;
      const res = await fetch(`${fake.endpoint}/projects/${fake.project}/zones/us-central1-a/instances/${name}`, { method: 'DELETE' });
      expect(res.status).toBe(200);
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(Object.keys(fake.leaked())).toEqual(['firewalls']);
    const report = await GCPCluster.cleanup({ ...fakeOptions(fake), all: true });
    expect(report.clusters).toEqual([{ clusterId: id, instances: [], deleted: true }]);
    expect(fake.leaked()).toEqual({});
  });
});
