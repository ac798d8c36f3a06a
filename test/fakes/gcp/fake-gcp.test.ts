/**
 * The GCP fake, driven by the real `@google-cloud/compute` SDK (REST transport) through its
 * endpoint options. Raw HTTP only where the wire shape itself is asserted.
 */
import type * as compute from '@google-cloud/compute';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock, PRIVATE_BLOCK, assertNoContractViolations, IpAllocator } from '../core';
import { raw } from '../core/http';
import { FakeGcp, type FakeGcpOptions } from './fake-gcp';
import { closeClients, instanceBody, RecordingBooter, sdkClients, until, type Clients } from './helpers';

const PROJECT = 'dask-fake-project';
const ZONE = 'us-central1-a';
const privateBlock = new IpAllocator(PRIVATE_BLOCK);
const publicBlock = new IpAllocator('10.77.128.0/20');

let fake: FakeGcp | undefined;
let c: Clients | undefined;

async function setup(opts: FakeGcpOptions = {}): Promise<{ fake: FakeGcp; c: Clients }> {
  fake = await FakeGcp.start(opts);
  c = sdkClients(fake);
  return { fake, c };
}

afterEach(async () => {
  try {
    if (fake) {
      assertNoContractViolations(fake);
      expect(fake.server.handlerErrors).toEqual([]);
      expect(fake.bootErrors).toEqual([]);
    }
  } finally {
    if (c) await closeClients(c);
    await fake?.stop();
    fake = undefined;
    c = undefined;
  }
});

/** Inserts one instance and waits for its operation (real clock). */
async function insertAndWait(c: Clients, name: string, over = {}) {
  const [lro] = await c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody(name, over) });
  const [done] = await c.zoneOps.wait({ project: PROJECT, zone: ZONE, operation: opOf(lro).name });
  return done;
}

/**
 * A fake on a ManualClock with 10 ms lifecycles and a RecordingBooter, holding one instance that
 * has been inserted and reached RUNNING (so it has booted).
 */
async function runningOnManualClock(name: string, over = {}) {
  const clock = new ManualClock();
  const booter = new RecordingBooter();
  const { fake, c } = await setup({ clock, booter, lifecycleMs: { provisioningMs: 10, stagingMs: 10, stoppingMs: 10 } });
  await c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody(name, over) });
  await clock.advance(20);
  return { clock, booter, fake, c };
}

/**
 * What the SDK throws for an HTTP error. With google-gax 5 + google-auth-library 10 the REST
 * transport's fetch rejects first: a GaxiosError whose `code`/`status` is the HTTP status and whose
 * `message` is the raw JSON body — so providers must read `error.errors[0].reason` from it.
 */
interface SdkError {
  code?: number;
  status?: number;
  message: string;
  /** The message parsed: Compute's error body. */
  body: { error: { code: number; message: string; status: string; errors: { message: string; domain: string; reason: string }[] } };
}

async function sdkError(p: Promise<unknown>): Promise<SdkError> {
  try {
    await p;
  } catch (e) {
    const err = e as SdkError;
    err.body = JSON.parse(err.message);
    return err;
  }
  throw new Error('expected the call to fail');
}

type ComputeOp = compute.protos.google.cloud.compute.v1.IOperation;
/** The compute Operation an LRO-style insert/delete answer carries. */
const opOf = (lro: { latestResponse: unknown }): ComputeOp => lro.latestResponse as ComputeOp;

describe('instances lifecycle (ManualClock)', () => {
  it('PROVISIONING → STAGING → RUNNING, operation DONE, then STOPPING → gone on delete', async () => {
    const clock = new ManualClock();
    const { fake, c } = await setup({ clock, lifecycleMs: { provisioningMs: 1_000, stagingMs: 2_000, stoppingMs: 500 } });
    const [lro] = await c.instances.insert({ project: PROJECT, zone: ZONE, requestId: '6f6c2a2e-0000-4000-8000-000000000001', instanceResource: instanceBody('dask-abc-scheduler') });
    const op = opOf(lro);
    expect(op).toMatchObject({ kind: 'compute#operation', operationType: 'insert', status: 'PENDING' });
    expect(op.name).toMatch(/^operation-\d+-[0-9a-f]{13}-[0-9a-f]{8}-[0-9a-f]{8}$/);
    expect(op.id).toMatch(/^\d+$/); // uint64 as a string
    expect(op.targetLink).toBe(`https://www.googleapis.com/compute/v1/projects/${PROJECT}/zones/${ZONE}/instances/dask-abc-scheduler`);

    const get = async () => (await c.instances.get({ project: PROJECT, zone: ZONE, instance: 'dask-abc-scheduler' }))[0];
    let inst = await get();
    expect(inst.status).toBe('PROVISIONING');
    // The private address is known from the start; no accessConfig → no public address.
    const ip = inst.networkInterfaces![0].networkIP!;
    expect(privateBlock.contains(ip)).toBe(true);
    expect(inst.networkInterfaces![0].accessConfigs ?? []).toEqual([]);
    expect(inst.labels).toEqual({ 'dask-cluster': 'abc' });
    expect(inst.tags!.items).toEqual(['dask-abc']);
    expect(inst.machineType).toMatch(/\/zones\/us-central1-a\/machineTypes\/e2-standard-2$/);

    await clock.advance(0);
    expect((await c.zoneOps.get({ project: PROJECT, zone: ZONE, operation: op.name! }))[0].status).toBe('RUNNING');
    await clock.advance(1_000);
    expect((await get()).status).toBe('STAGING');
    await clock.advance(2_000);
    inst = await get();
    expect(inst.status).toBe('RUNNING');
    const [doneOp] = await c.zoneOps.get({ project: PROJECT, zone: ZONE, operation: op.name! });
    expect(doneOp).toMatchObject({ status: 'DONE', progress: 100, targetId: inst.id });
    expect(doneOp.error).toBeFalsy();

    const [del] = await c.instances.delete({ project: PROJECT, zone: ZONE, instance: 'dask-abc-scheduler' });
    expect(opOf(del).operationType).toBe('delete');
    expect((await get()).status).toBe('STOPPING');
    await clock.advance(500);
    const err = await sdkError(get());
    expect(err.code).toBe(404);
    expect((await c.zoneOps.get({ project: PROJECT, zone: ZONE, operation: opOf(del).name! }))[0].status).toBe('DONE');
    expect(fake.leaked()).toEqual({});
    expect(fake.pools.private.inUse()).toEqual([]);
  });

  it('zoneOperations.wait returns when DONE, or after about two minutes while still RUNNING', async () => {
    const clock = new ManualClock();
    const { fake, c } = await setup({ clock, lifecycleMs: { provisioningMs: 100, stagingMs: 150_000 } });
    const [lro] = await c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody('slow') });
    const name = opOf(lro).name!;
    const waiting = c.zoneOps.wait({ project: PROJECT, zone: ZONE, operation: name });
    await until(() => fake.server.calls('compute.zoneOperations.wait').length === 1, 'the wait call');
    await clock.advance(120_000);
    const [first] = await waiting;
    expect(first.status).toBe('RUNNING'); // Google's wait is bounded (~2 min)

    const again = c.zoneOps.wait({ project: PROJECT, zone: ZONE, operation: name });
    await until(() => fake.server.calls('compute.zoneOperations.wait').length === 2, 'the second wait call');
    await clock.advance(60_000); // RUNNING at 150.1 s: within the second wait's two minutes
    const [second] = await again;
    expect(second.status).toBe('DONE');
  });

  it('maxRunDuration with instanceTerminationAction DELETE deletes the VM when it elapses', async () => {
    const { clock, booter, fake, c } = await runningOnManualClock('capped', { scheduling: { maxRunDuration: { seconds: 3600 }, instanceTerminationAction: 'DELETE' } });
    const [inst] = await c.instances.get({ project: PROJECT, zone: ZONE, instance: 'capped' });
    expect(inst.status).toBe('RUNNING');
    expect(inst.scheduling).toMatchObject({ maxRunDuration: { seconds: '3600' }, instanceTerminationAction: 'DELETE', provisioningModel: 'STANDARD' });
    await clock.advance(3_600_000);
    await clock.advance(10);
    expect((await sdkError(c.instances.get({ project: PROJECT, zone: ZONE, instance: 'capped' }))).code).toBe(404);
    expect(booter.stopped).toEqual([String(inst.id)]);
    expect(fake.leaked()).toEqual({});
  });
});

describe('time limits (Limit the run time of a VM)', () => {
  it('item 3: a legacy preemptible VM refuses maxRunDuration and instanceTerminationAction; a Spot VM takes them', async () => {
    const { fake, c } = await setup();
    const preemptible = { onHostMaintenance: 'TERMINATE', automaticRestart: false, preemptible: true };
    for (const extra of [{ maxRunDuration: { seconds: 3600 }, instanceTerminationAction: 'DELETE' }, { instanceTerminationAction: 'DELETE' }]) {
      const err = await sdkError(c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody('legacy', { scheduling: { ...preemptible, ...extra } }) }));
      expect(err.code).toBe(400);
      expect(err.body.error.message).toMatch(/not supported for preemptible VMs; use provisioningModel SPOT/);
    }
    // Plain preemptible, and Spot with a time limit, are fine.
    await insertAndWait(c, 'legacy', { scheduling: preemptible });
    await insertAndWait(c, 'spot', { scheduling: { onHostMaintenance: 'TERMINATE', automaticRestart: false, provisioningModel: 'SPOT', maxRunDuration: { seconds: 3600 }, instanceTerminationAction: 'DELETE' } });
    expect(fake.resources().instances).toHaveLength(2);
  });

  it('maxRunDuration and terminationTime are one union field: both together are refused', async () => {
    const { c } = await setup();
    const err = await sdkError(c.instances.insert({
      project: PROJECT, zone: ZONE,
      instanceResource: instanceBody('both', { scheduling: { maxRunDuration: { seconds: 3600 }, terminationTime: '2030-01-01T00:00:00Z', instanceTerminationAction: 'DELETE' } }),
    }));
    expect(err.code).toBe(400);
    expect(err.body.error.message).toMatch(/Only one of maxRunDuration and terminationTime/);
  });

  it('item 4: a VM that powered itself off loses its time limit: maxRunDuration never deletes it, its disk stays', async () => {
    const { clock, booter, fake, c } = await runningOnManualClock('off', { scheduling: { maxRunDuration: { seconds: 3600 }, instanceTerminationAction: 'DELETE' } });
    const [running] = await c.instances.get({ project: PROJECT, zone: ZONE, instance: 'off' });
    await until(() => booter.boots.length === 1, 'the boot');
    booter.exit(String(running.id));
    await until(() => fake.resources().instances!.some((i) => (i.value as { status: string }).status === 'STOPPING'), 'STOPPING');
    await clock.advance(10);
    // Well past the limit: still there, TERMINATED, with its boot disk.
    await clock.advance(2 * 3_600_000);
    const [off] = await c.instances.get({ project: PROJECT, zone: ZONE, instance: 'off' });
    expect(off.status).toBe('TERMINATED');
    expect(fake.resources().disks!.map((d) => d.id)).toEqual([`zones/${ZONE}/disks/off`]);
    await c.instances.delete({ project: PROJECT, zone: ZONE, instance: 'off' });
    await clock.advance(10);
    expect(fake.leaked()).toEqual({});
  });
});

describe('project, region, machine types, routers', () => {
  it('projects.get knows only the fake project; regions.get reports each quota with its usage', async () => {
    const { fake, c } = await setup({ quotas: { cpus: 24, ssdTotalGb: 500 } });
    const [project] = await c.projects.get({ project: PROJECT });
    expect(project).toMatchObject({ name: PROJECT, id: fake.projectNumber });
    expect((await sdkError(c.projects.get({ project: 'someone-else' }))).code).toBe(404);
    await insertAndWait(c, 'a', { machineType: 'zones/us-central1-a/machineTypes/e2-standard-4', disks: [{ boot: true, autoDelete: true, initializeParams: { sourceImage: 'projects/debian-cloud/global/images/family/debian-12', diskSizeGb: 30, diskType: 'zones/us-central1-a/diskTypes/pd-balanced' } }] });
    const [region] = await c.regions.get({ project: PROJECT, region: 'us-central1' });
    const q = Object.fromEntries(region.quotas!.map((x) => [x.metric, { limit: x.limit, usage: x.usage }]));
    expect(q.CPUS).toEqual({ limit: 24, usage: 4 });
    expect(q.SSD_TOTAL_GB).toEqual({ limit: 500, usage: 30 });
    expect(q.INSTANCES).toEqual({ limit: 100_000, usage: 1 });
    // Another region uses nothing.
    const [east] = await c.regions.get({ project: PROJECT, region: 'us-east1' });
    expect(east.quotas!.find((x) => x.metric === 'CPUS')!.usage).toBe(0);
  });

  it('SSD_TOTAL_GB is enforced like CPUS: an insert over it ends with QUOTA_EXCEEDED', async () => {
    const { c } = await setup({ quotas: { ssdTotalGb: 40 } });
    const done = await insertAndWait(c, 'big', { disks: [{ boot: true, autoDelete: true, initializeParams: { sourceImage: 'projects/debian-cloud/global/images/family/debian-12', diskSizeGb: 50, diskType: 'pd-ssd' } }] });
    expect(done.error!.errors![0]).toMatchObject({ code: 'QUOTA_EXCEEDED', message: expect.stringContaining("Quota 'SSD_TOTAL_GB' exceeded") });
  });

  it('machine types are per zone: a withdrawn type is 404 on machineTypes.get and refused by insert', async () => {
    const { fake, c } = await setup();
    const [mt] = await c.machineTypes.get({ project: PROJECT, zone: ZONE, machineType: 'e2-standard-4' });
    expect(mt).toMatchObject({ name: 'e2-standard-4', guestCpus: 4, memoryMb: 16384 });
    fake.withdrawMachineType(ZONE, 'e2-standard-4');
    expect((await sdkError(c.machineTypes.get({ project: PROJECT, zone: ZONE, machineType: 'e2-standard-4' }))).code).toBe(404);
    expect((await c.machineTypes.get({ project: PROJECT, zone: 'us-central1-b', machineType: 'e2-standard-4' }))[0].name).toBe('e2-standard-4');
    const err = await sdkError(c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody('x', { machineType: `zones/${ZONE}/machineTypes/e2-standard-4` }) }));
    expect(err.code).toBe(400);
    expect(err.body.error.message).toMatch(/Machine type with name 'e2-standard-4' does not exist in zone/);
  });

  it('zones.get reports a zone that went DOWN', async () => {
    const { fake, c } = await setup();
    fake.setZoneStatus(ZONE, 'DOWN');
    expect((await c.zones.get({ project: PROJECT, zone: ZONE }))[0].status).toBe('DOWN');
  });

  it('routers.list and aggregatedList show the seeded routers with their Cloud NAT configs', async () => {
    const { fake, c } = await setup({ routers: { 'us-east1': [{ name: 'r1', nats: [{ name: 'only-one', sourceSubnetworkIpRangesToNat: 'LIST_OF_SUBNETWORKS', subnetworks: [{ name: 'default' }] }] }] } });
    expect((await c.routers.list({ project: PROJECT, region: 'us-central1' }))[0]).toEqual([]);
    fake.addCloudNat('us-central1');
    const [central] = await c.routers.list({ project: PROJECT, region: 'us-central1' });
    expect(central).toHaveLength(1);
    expect(central[0]).toMatchObject({ name: 'nat-router-us-central1', network: expect.stringMatching(/\/global\/networks\/default$/), nats: [{ name: 'nat', sourceSubnetworkIpRangesToNat: 'ALL_SUBNETWORKS_ALL_IP_RANGES' }] });
    const [east] = await c.routers.list({ project: PROJECT, region: 'us-east1' });
    expect(east[0]!.nats![0]!.subnetworks).toMatchObject([{ name: `https://www.googleapis.com/compute/v1/projects/${PROJECT}/regions/us-east1/subnetworks/default`, sourceIpRangesToNat: ['ALL_IP_RANGES'] }]);
    const scopes: string[] = [];
    for await (const [scope, list] of c.routers.aggregatedListAsync({ project: PROJECT })) if (list.routers?.length) scopes.push(scope);
    expect(scopes.sort()).toEqual(['regions/us-central1', 'regions/us-east1']);
  });
});

describe('guest power-off', () => {
  it('a booted VM that exits on its own: STOPPING → TERMINATED, external IP released, the instance stays until deleted', async () => {
    const { clock, booter, fake, c } = await runningOnManualClock('quits', {
      networkInterfaces: [{ network: 'global/networks/default', accessConfigs: [{ type: 'ONE_TO_ONE_NAT', name: 'External NAT' }] }],
    });
    const get = async () => (await c.instances.get({ project: PROJECT, zone: ZONE, instance: 'quits' }))[0];
    const running = await get();
    expect(running.status).toBe('RUNNING');
    const natIP = running.networkInterfaces![0]!.accessConfigs![0]!.natIP;
    expect(natIP).toBeTruthy();
    await until(() => booter.boots.length === 1, 'the boot');
    booter.exit(String(running.id));
    await until(() => fake.resources().instances!.some((i) => (i.value as { status: string }).status === 'STOPPING'), 'STOPPING');
    await clock.advance(10);
    const off = await get();
    expect(off.status).toBe('TERMINATED');
    expect(off.networkInterfaces![0]!.accessConfigs![0]!.natIP).toBeUndefined();
    expect(fake.pools.public.inUse()).not.toContain(natIP);
    expect(booter.stopped).toEqual([String(running.id)]);
    // Still there (disk billed) until deleted.
    await c.instances.delete({ project: PROJECT, zone: ZONE, instance: 'quits' });
    await clock.advance(10);
    expect(fake.leaked()).toEqual({});
  });
});

describe('addresses', () => {
  it('private address always; public address only with a ONE_TO_ONE_NAT accessConfig', async () => {
    const { fake, c } = await setup();
    await insertAndWait(c, 'private-only');
    await insertAndWait(c, 'public', { networkInterfaces: [{ network: 'global/networks/default', accessConfigs: [{ name: 'External NAT', type: 'ONE_TO_ONE_NAT' }] }] });
    const [priv] = await c.instances.get({ project: PROJECT, zone: ZONE, instance: 'private-only' });
    const [pub] = await c.instances.get({ project: PROJECT, zone: ZONE, instance: 'public' });
    expect(priv.networkInterfaces![0].accessConfigs ?? []).toEqual([]);
    expect(privateBlock.contains(pub.networkInterfaces![0].networkIP!)).toBe(true);
    expect(pub.networkInterfaces![0].networkIP).not.toBe(priv.networkInterfaces![0].networkIP);
    const ac = pub.networkInterfaces![0].accessConfigs![0];
    expect(ac).toMatchObject({ type: 'ONE_TO_ONE_NAT', name: 'External NAT', networkTier: 'PREMIUM' });
    expect(publicBlock.contains(ac.natIP!)).toBe(true);
    expect(fake.pools.public.inUse()).toEqual([ac.natIP]);
    expect(pub.networkInterfaces![0].subnetwork).toMatch(/\/regions\/us-central1\/subnetworks\/default$/);
  });
});

describe('bulkInsert', () => {
  it('creates count instances from namePattern (numbers continue after existing ones) and perInstanceProperties', async () => {
    const { fake, c } = await setup();
    const props = {
      machineType: 'e2-standard-2', // bulkInsert instanceProperties take a bare machine type name
      disks: [{ boot: true, autoDelete: true, initializeParams: { sourceImage: 'projects/debian-cloud/global/images/family/debian-12' } }],
      networkInterfaces: [{ network: 'global/networks/default' }],
      labels: { 'dask-cluster': 'abc', role: 'worker' },
      metadata: { items: [{ key: 'user-data', value: '#cloud-config\n' }] },
    };
    const [lro] = await c.instances.bulkInsert({
      project: PROJECT, zone: ZONE, requestId: '6f6c2a2e-0000-4000-8000-00000000000b',
      bulkInsertInstanceResourceResource: { count: 3, namePattern: 'dask-abc-worker-####', instanceProperties: props },
    });
    expect(opOf(lro).operationType).toBe('bulkInsert');
    const [done] = await c.zoneOps.wait({ project: PROJECT, zone: ZONE, operation: opOf(lro).name! });
    expect(done.status).toBe('DONE');
    expect(done.instancesBulkInsertOperationMetadata!.perLocationStatus![`zones/${ZONE}`]).toMatchObject({ status: 'DONE', createdVmCount: 3, targetVmCount: 3 });

    const [lro2] = await c.instances.bulkInsert({
      project: PROJECT, zone: ZONE,
      bulkInsertInstanceResourceResource: { count: 3, namePattern: 'dask-abc-worker-####', perInstanceProperties: { 'dask-abc-special': {} }, instanceProperties: props },
    });
    await c.zoneOps.wait({ project: PROJECT, zone: ZONE, operation: opOf(lro2).name! });
    const names = [];
    for await (const i of c.instances.listAsync({ project: PROJECT, zone: ZONE })) names.push(i.name);
    expect(names).toEqual(['dask-abc-special', 'dask-abc-worker-0001', 'dask-abc-worker-0002', 'dask-abc-worker-0003', 'dask-abc-worker-0004', 'dask-abc-worker-0005']);
    // Google records one insert operation per VM in the same group.
    expect(fake.resources().instances).toHaveLength(6);

    // A URL in instanceProperties.machineType fails (Google documents it).
    const err = await sdkError(c.instances.bulkInsert({
      project: PROJECT, zone: ZONE,
      bulkInsertInstanceResourceResource: { count: 1, namePattern: 'x-#', instanceProperties: { ...props, machineType: 'zones/us-central1-a/machineTypes/e2-standard-2' } },
    }));
    // The proto comment of InstanceProperties.machine_type: a URL "will result in an INTERNAL_ERROR".
    expect(err.code).toBe(500);
    expect(err.body.error.errors[0]!.reason).toBe('INTERNAL_ERROR');
    // More than 5,000 per request is refused.
    expect((await sdkError(c.instances.bulkInsert({ project: PROJECT, zone: ZONE, bulkInsertInstanceResourceResource: { count: 5001, namePattern: 'y-#####', instanceProperties: props } }))).code).toBe(400);
  });

  it('sourceInstanceTemplate refers to a template that does not exist here → 404', async () => {
    const { c } = await setup();
    const err = await sdkError(c.instances.bulkInsert({
      project: PROJECT, zone: ZONE,
      bulkInsertInstanceResourceResource: { count: 1, namePattern: 'a-#', sourceInstanceTemplate: `projects/${PROJECT}/global/instanceTemplates/tpl` },
    }));
    expect(err.code).toBe(404);
    expect(err.body.error.message).toContain('instanceTemplates/tpl');
  });
});

describe('list', () => {
  it('filters by labels (both documented forms, AND of terms) and pages with maxResults + pageToken', async () => {
    const { fake, c } = await setup();
    for (const [name, cluster, role] of [['a1', 'abc', 'worker'], ['a2', 'abc', 'worker'], ['a3', 'abc', 'scheduler'], ['b1', 'other', 'worker'], ['a4', 'abc', 'worker']]) {
      await c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody(name, { labels: { 'dask-cluster': cluster, role } }) });
    }
    const names = async (filter: string) => {
      const out = [];
      for await (const i of c.instances.listAsync({ project: PROJECT, zone: ZONE, filter, maxResults: 2 })) out.push(i.name);
      return out;
    };
    expect(await names('labels.dask-cluster=abc')).toEqual(['a1', 'a2', 'a3', 'a4']);
    expect(await names('labels.dask-cluster = "abc"')).toEqual(['a1', 'a2', 'a3', 'a4']);
    expect(await names('(labels.dask-cluster = "abc") (labels.role = worker)')).toEqual(['a1', 'a2', 'a4']);
    expect(await names('(labels.dask-cluster = abc) AND (labels.role != worker)')).toEqual(['a3']);
    expect(await names('labels.role:*')).toHaveLength(5);
    expect(await names('name eq a[12]')).toEqual(['a1', 'a2']);

    // One page at a time: the SDK follows nextPageToken.
    const [page1, next, rawPage] = await c.instances.list({ project: PROJECT, zone: ZONE, filter: 'labels.dask-cluster=abc', maxResults: 3 }, { autoPaginate: false });
    expect(page1.map((i) => i.name)).toEqual(['a1', 'a2', 'a3']);
    expect(rawPage?.nextPageToken).toBeTruthy();
    const [page2, last] = await c.instances.list(next!, { autoPaginate: false });
    expect(page2.map((i) => i.name)).toEqual(['a4']);
    expect(last).toBeFalsy();
    expect(fake.server.calls('compute.instances.list').at(-1)!.params).toMatchObject({ pageToken: rawPage?.nextPageToken });

    const bad = await sdkError(c.instances.list({ project: PROJECT, zone: ZONE, filter: 'labels.x = ' }, { autoPaginate: false }));
    expect(bad.code).toBe(400);
    expect(bad.message).toContain('Invalid list filter expression');
  });
  it('aggregatedList: every zone at once, grouped by zone scope, with the filter, paging and NO_RESULTS_ON_PAGE', async () => {
    const { fake, c } = await setup();
    for (const [zone, name, cluster] of [['us-central1-a', 'a1', 'abc'], ['europe-west1-b', 'e1', 'abc'], ['europe-west1-b', 'e2', 'abc'], ['us-east1-b', 'x1', 'other']]) {
      await c.instances.insert({ project: PROJECT, zone, instanceResource: instanceBody(name, { labels: { 'dask-cluster': cluster }, machineType: `zones/${zone}/machineTypes/e2-standard-2` }) });
    }
    const seen: string[] = [];
    for await (const [scope, list] of c.instances.aggregatedListAsync({ project: PROJECT, filter: 'labels.dask-cluster = "abc"', maxResults: 2 })) {
      for (const i of list.instances ?? []) seen.push(`${scope}/${i.name}`);
    }
    expect(seen.sort()).toEqual(['zones/europe-west1-b/e1', 'zones/europe-west1-b/e2', 'zones/us-central1-a/a1']);
    // Two pages of two instances at most; the raw page names every zone, empty ones with a warning.
    expect(fake.server.calls('compute.instances.aggregatedList')).toHaveLength(2);
    const body = (await (await raw(`${fake.endpoint}/projects/${PROJECT}/aggregated/instances?filter=${encodeURIComponent('labels.dask-cluster=other')}`)).json()) as {
      kind: string;
      items: Record<string, { instances?: { name: string }[]; warning?: { code: string } }>;
    };
    expect(body.kind).toBe('compute#instanceAggregatedList');
    expect(body.items['zones/us-east1-b']!.instances!.map((i) => i.name)).toEqual(['x1']);
    expect(body.items['zones/us-central1-a']!.warning!.code).toBe('NO_RESULTS_ON_PAGE');
    expect((await raw(`${fake.endpoint}/projects/not-this-project/aggregated/instances`)).status).toBe(404);
  });
});

describe('errors in GCP shape', () => {
  it('404, 409, 400 parsed by the SDK; the raw body has error.errors[] and status', async () => {
    const { fake, c } = await setup();
    const missing = await sdkError(c.instances.get({ project: PROJECT, zone: ZONE, instance: 'nope' }));
    expect(missing.code).toBe(404);
    expect(missing.body.error).toMatchObject({ status: 'NOT_FOUND', message: `The resource 'projects/${PROJECT}/zones/${ZONE}/instances/nope' was not found` });
    expect(missing.body.error.errors[0].reason).toBe('notFound');

    await insertAndWait(c, 'dup');
    const dup = await sdkError(c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody('dup') }));
    expect(dup.code).toBe(409);
    expect(dup.body.error).toMatchObject({ status: 'ALREADY_EXISTS', message: `The resource 'projects/${PROJECT}/zones/${ZONE}/instances/dup' already exists` });
    expect(dup.body.error.errors[0].reason).toBe('alreadyExists');

    const badType = await sdkError(c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody('x', { machineType: 'zones/us-central1-a/machineTypes/e2-huge-99' }) }));
    expect(badType.code).toBe(400);
    expect(badType.message).toContain("Machine type with name 'e2-huge-99' does not exist in zone 'us-central1-a'");

    const badImage = await sdkError(c.instances.insert({
      project: PROJECT, zone: ZONE,
      instanceResource: instanceBody('x', { disks: [{ boot: true, initializeParams: { sourceImage: 'projects/debian-cloud/global/images/family/debian-99' } }] }),
    }));
    expect(badImage.code).toBe(404);
    expect(badImage.body.error.message).toContain('projects/debian-cloud/global/images/family/debian-99');

    const gpu = await sdkError(c.instances.insert({
      project: PROJECT, zone: ZONE,
      instanceResource: instanceBody('gpu', { guestAccelerators: [{ acceleratorType: 'zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4', acceleratorCount: 1 }] }),
    }));
    expect(gpu.code).toBe(400);
    expect(gpu.message).toContain('do not support live migration');
    await insertAndWait(c, 'gpu', { guestAccelerators: [{ acceleratorType: 'zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4', acceleratorCount: 1 }], scheduling: { onHostMaintenance: 'TERMINATE' } });

    const r = await raw(`${fake.endpoint}/projects/${PROJECT}/zones/${ZONE}/instances/nope`);
    expect(r.status).toBe(404);
    expect(r.json()).toEqual({
      error: {
        code: 404,
        message: `The resource 'projects/${PROJECT}/zones/${ZONE}/instances/nope' was not found`,
        errors: [{ message: `The resource 'projects/${PROJECT}/zones/${ZONE}/instances/nope' was not found`, domain: 'global', reason: 'notFound' }],
        status: 'NOT_FOUND',
      },
    });
    expect((await raw(`${fake.endpoint}/projects/other-project/zones/${ZONE}/instances/nope`)).status).toBe(404);
  });

  it('metadata: 256 KiB per value and 512 KiB in total', async () => {
    const { c } = await setup();
    const big = 'x'.repeat(256 * 1024);
    await insertAndWait(c, 'max-value', { metadata: { items: [{ key: 'user-data', value: big }] } });
    const tooBig = await sdkError(c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody('too-big', { metadata: { items: [{ key: 'user-data', value: big + 'x' }] } }) }));
    expect(tooBig.code).toBe(400);
    expect(tooBig.message).toContain('is too large');
    const tooMuch = await sdkError(c.instances.insert({
      project: PROJECT, zone: ZONE,
      instanceResource: instanceBody('too-much', { metadata: { items: [{ key: 'user-data', value: big }, { key: 'a', value: big }, { key: 'b', value: 'y' }] } }),
    }));
    expect(tooMuch.code).toBe(400);
    expect(tooMuch.message).toContain('exceeds the limit of 524288 bytes');
  });

  it('a request the published contract rejects (bad name pattern) → 400, recorded as a violation', async () => {
    const { fake, c } = await setup();
    const err = await sdkError(c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody('Bad_Name') }));
    expect(err.code).toBe(400);
    expect(err.body.error.errors[0].reason).toBe('invalid');
    expect(fake.contractViolations).toHaveLength(1);
    expect(fake.contractViolations[0]).toMatchObject({ operation: 'compute.instances.insert', kind: 'wrong-type', location: 'body.name' });
    expect(fake.server.calls('compute.instances.insert')[0].rejectedBy).toBe('contract');
    fake.contractViolations.length = 0; // expected here; afterEach asserts none are left
    expect(fake.leaked()).toEqual({});
  });
});

describe('requestId idempotency', () => {
  it('the same requestId returns the same operation and creates nothing new (insert and delete)', async () => {
    const { fake, c } = await setup();
    const requestId = '0b8e4b1c-2b4f-4f5e-9a51-6f1c2a7d9e10';
    const [a] = await c.instances.insert({ project: PROJECT, zone: ZONE, requestId, instanceResource: instanceBody('once') });
    const [b] = await c.instances.insert({ project: PROJECT, zone: ZONE, requestId, instanceResource: instanceBody('once') });
    expect(opOf(b).name).toBe(opOf(a).name);
    expect(fake.resources().instances).toHaveLength(1);
    // A new requestId for the same name is a real second insert → 409.
    expect((await sdkError(c.instances.insert({ project: PROJECT, zone: ZONE, requestId: '0b8e4b1c-2b4f-4f5e-9a51-6f1c2a7d9e11', instanceResource: instanceBody('once') }))).code).toBe(409);
    await c.zoneOps.wait({ project: PROJECT, zone: ZONE, operation: opOf(a).name! });

    const delId = '0b8e4b1c-2b4f-4f5e-9a51-6f1c2a7d9e12';
    const [d1] = await c.instances.delete({ project: PROJECT, zone: ZONE, instance: 'once', requestId: delId });
    await c.zoneOps.wait({ project: PROJECT, zone: ZONE, operation: opOf(d1).name! });
    const [d2] = await c.instances.delete({ project: PROJECT, zone: ZONE, instance: 'once', requestId: delId }); // retry after success: no 404
    expect(opOf(d2).name).toBe(opOf(d1).name);
    expect(fake.leaked()).toEqual({});

    expect((await sdkError(c.instances.insert({ project: PROJECT, zone: ZONE, requestId: 'not-a-uuid', instanceResource: instanceBody('x') }))).code).toBe(400);
  });
});

describe('throttling and faults', () => {
  it('403 rateLimitExceeded after N calls in a minute; allowed again once the minute refills', async () => {
    const clock = new ManualClock();
    const { fake, c } = await setup({ clock });
    fake.throttle({ perMinute: 3 });
    for (let i = 0; i < 3; i++) await c.zones.get({ project: PROJECT, zone: ZONE });
    const err = await sdkError(c.zones.get({ project: PROJECT, zone: ZONE }));
    expect(err.code).toBe(403);
    expect(err.body.error).toMatchObject({ status: 'PERMISSION_DENIED', errors: [{ domain: 'usageLimits', reason: 'rateLimitExceeded' }] });
    expect(err.body.error.message).toContain("Quota exceeded for quota metric 'Queries'");
    const r = await raw(`${fake.endpoint}/projects/${PROJECT}/zones/${ZONE}`);
    expect(r.status).toBe(403);
    expect(r.json().error).toMatchObject({ code: 403, status: 'PERMISSION_DENIED', errors: [{ domain: 'usageLimits', reason: 'rateLimitExceeded' }] });
    expect(fake.server.calls().filter((x) => x.rejectedBy === 'throttle')).toHaveLength(2);
    await clock.advance(60_000);
    await c.zones.get({ project: PROJECT, zone: ZONE });
  });

  it('fails the k-th insert (synchronous fault) and an operation asynchronously (failOperations)', async () => {
    const { fake, c } = await setup();
    fake.faults.fail('compute.instances.insert', { status: 503, code: 'backendError', message: 'Internal error. Please try again or contact Google Support.' }, { nth: 2 });
    await insertAndWait(c, 'first');
    const err = await sdkError(c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody('second') }));
    expect(err.code).toBe(503);
    expect(err.body.error).toMatchObject({ status: 'UNAVAILABLE', errors: [{ reason: 'backendError' }] });
    await insertAndWait(c, 'third');
    expect(fake.resources().instances!.map((i) => i.id)).toEqual([`zones/${ZONE}/instances/first`, `zones/${ZONE}/instances/third`]);

    fake.failOperations({ operationType: 'insert' });
    const done = await insertAndWait(c, 'exhausted');
    expect(done.status).toBe('DONE');
    expect(done.error!.errors![0]).toMatchObject({ code: 'ZONE_RESOURCE_POOL_EXHAUSTED' });
    expect(done.httpErrorStatusCode).toBe(503);
    expect((await sdkError(c.instances.get({ project: PROJECT, zone: ZONE, instance: 'exhausted' }))).code).toBe(404);
    expect(fake.resources().instances).toHaveLength(2);
  });

  it('regional CPU quota: operation error QUOTA_EXCEEDED; bulkInsert minCount takes what fits', async () => {
    const { fake, c } = await setup({ quotas: { cpus: 6 } });
    const [lro] = await c.instances.bulkInsert({
      project: PROJECT, zone: ZONE,
      bulkInsertInstanceResourceResource: {
        count: 5, minCount: 2, namePattern: 'w-##',
        instanceProperties: { machineType: 'e2-standard-2', disks: [{ boot: true, autoDelete: true, initializeParams: { sourceImage: 'projects/debian-cloud/global/images/family/debian-12' } }], networkInterfaces: [{}] },
      },
    });
    const [bulk] = await c.zoneOps.wait({ project: PROJECT, zone: ZONE, operation: opOf(lro).name! });
    expect(bulk.instancesBulkInsertOperationMetadata!.perLocationStatus![`zones/${ZONE}`]).toMatchObject({ createdVmCount: 3, failedToCreateVmCount: 2 });
    const done = await insertAndWait(c, 'one-more');
    expect(done.error!.errors![0]).toMatchObject({ code: 'QUOTA_EXCEEDED', message: "Quota 'CPUS' exceeded.  Limit: 6.0 in region us-central1." });
    expect(fake.resources().instances).toHaveLength(3);
  });
});

describe('serial port output', () => {
  it('without a booter: a stub boot log that says it is simulated; start/next offsets', async () => {
    const { c } = await setup();
    await insertAndWait(c, 'vm');
    const [out] = await c.instances.getSerialPortOutput({ project: PROJECT, zone: ZONE, instance: 'vm', port: 1 });
    expect(out.contents).toContain('simulated');
    expect(out.start).toBe('0');
    const total = Number(out.next);
    expect(total).toBe(Buffer.byteLength(out.contents!));
    const [tail] = await c.instances.getSerialPortOutput({ project: PROJECT, zone: ZONE, instance: 'vm', port: 1, start: String(total - 10) });
    expect(tail.contents).toBe(out.contents!.slice(-10));
    const [none] = await c.instances.getSerialPortOutput({ project: PROJECT, zone: ZONE, instance: 'vm', port: 1, start: String(total) });
    expect(none.contents).toBe('');
    expect(none.next).toBe(String(total));
  });

  it('not ready while PROVISIONING', async () => {
    const clock = new ManualClock();
    const { c } = await setup({ clock });
    await c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody('early') });
    const err = await sdkError(c.instances.getSerialPortOutput({ project: PROJECT, zone: ZONE, instance: 'early' }));
    expect(err.code).toBe(400);
    expect(err.body.error.errors[0]).toMatchObject({ reason: 'resourceNotReady', message: expect.stringContaining('is not ready') });
  });
});

describe('boot hook and firewalls', () => {
  it('boots RUNNING instances with user-data and translated rules, updates rules, stops on delete', async () => {
    const booter = new RecordingBooter();
    const { fake, c } = await setup({ booter });
    const [fwLro] = await c.firewalls.insert({
      project: PROJECT,
      firewallResource: {
        name: 'dask-abc', network: 'global/networks/default', direction: 'INGRESS', targetTags: ['dask-abc'],
        sourceTags: ['dask-abc'], sourceRanges: ['203.0.113.0/24'], allowed: [{ IPProtocol: 'tcp', ports: ['8786', '8000-9000'] }],
      },
    });
    expect(opOf(fwLro).operationType).toBe('insert');
    const [fwDone] = await c.globalOps.wait({ project: PROJECT, operation: opOf(fwLro).name! });
    expect(fwDone.status).toBe('DONE');

    await insertAndWait(c, 'sched', { metadata: { items: [{ key: 'user-data', value: '#cloud-config\nruncmd: []\n' }] }, networkInterfaces: [{ accessConfigs: [{ type: 'ONE_TO_ONE_NAT' }] }] });
    await until(() => booter.boots.length === 1, 'the scheduler boot');
    const [sched] = await c.instances.get({ project: PROJECT, zone: ZONE, instance: 'sched' });
    const boot = booter.boots[0];
    expect(boot).toMatchObject({ id: String(sched.id), name: 'sched', privateIp: sched.networkInterfaces![0].networkIP, publicIp: sched.networkInterfaces![0].accessConfigs![0].natIP });
    expect(boot.userData.toString()).toBe('#cloud-config\nruncmd: []\n');
    expect(boot.firewall).toEqual([
      { direction: 'ingress', protocol: 'tcp', fromPort: 8786, toPort: 8786, cidrs: ['203.0.113.0/24'], peerVmIds: [String(sched.id)] },
      { direction: 'ingress', protocol: 'tcp', fromPort: 8000, toPort: 9000, cidrs: ['203.0.113.0/24'], peerVmIds: [String(sched.id)] },
      { direction: 'egress', protocol: 'all', cidrs: ['0.0.0.0/0'] },
    ]);

    // A worker joins: the scheduler's rules now name it as a peer.
    await insertAndWait(c, 'worker');
    await until(() => booter.boots.length === 2, 'the worker boot');
    const workerId = booter.boots[1].id;
    await until(() => booter.rulesOf(String(sched.id))![0].peerVmIds!.length === 2, 'the scheduler rules update');
    expect(booter.rulesOf(String(sched.id))![0].peerVmIds).toEqual([String(sched.id), workerId]);
    expect(booter.boots[1].publicIp).toBeUndefined();

    // The serial port shows the booted VM's console.
    const [out] = await c.instances.getSerialPortOutput({ project: PROJECT, zone: ZONE, instance: 'sched' });
    expect(out.contents).toContain('[booted] sched');

    // A new rule (no source → Google fills in 0.0.0.0/0) reaches both running VMs.
    const [fw2] = await c.firewalls.insert({ project: PROJECT, firewallResource: { name: 'dask-abc-icmp', targetTags: ['dask-abc'], allowed: [{ IPProtocol: 'icmp' }] } });
    await c.globalOps.wait({ project: PROJECT, operation: opOf(fw2).name! });
    const [stored] = await c.firewalls.get({ project: PROJECT, firewall: 'dask-abc-icmp' });
    expect(stored).toMatchObject({ sourceRanges: ['0.0.0.0/0'], direction: 'INGRESS', priority: 1000, network: `https://www.googleapis.com/compute/v1/projects/${PROJECT}/global/networks/default` });
    await until(() => booter.rulesOf(workerId)!.some((r) => r.protocol === 'icmp'), 'the icmp rule on the worker');
    expect(booter.rulesOf(String(sched.id))).toContainEqual({ direction: 'ingress', protocol: 'icmp', cidrs: ['0.0.0.0/0'] });

    // Delete the worker: stopped, and no longer a peer of the scheduler.
    const [del] = await c.instances.delete({ project: PROJECT, zone: ZONE, instance: 'worker' });
    expect(booter.stopped).toEqual([workerId]);
    await until(() => booter.rulesOf(String(sched.id))![0].peerVmIds!.length === 1, 'the peer removal');
    await c.zoneOps.wait({ project: PROJECT, zone: ZONE, operation: opOf(del).name! });

    // Deleting the firewall updates the scheduler too.
    const [fwDel] = await c.firewalls.delete({ project: PROJECT, firewall: 'dask-abc' });
    await c.globalOps.wait({ project: PROJECT, operation: opOf(fwDel).name! });
    await until(() => !booter.rulesOf(String(sched.id))!.some((r) => r.fromPort === 8786), 'the rule removal');
    expect(fake.bootErrors).toEqual([]);
  });
});

describe('global resources', () => {
  it('networks, subnetworks, images.getFromFamily, zones; unknown ones 404', async () => {
    const { c } = await setup();
    const [net] = await c.networks.get({ project: PROJECT, network: 'default' });
    expect(net).toMatchObject({ kind: 'compute#network', name: 'default', autoCreateSubnetworks: true });
    const [sub] = await c.subnetworks.get({ project: PROJECT, region: 'us-central1', subnetwork: 'default' });
    expect(sub).toMatchObject({ ipCidrRange: '10.77.0.0/20', gatewayAddress: '10.77.0.1', region: expect.stringMatching(/\/regions\/us-central1$/) });
    const [img] = await c.images.getFromFamily({ project: 'debian-cloud', family: 'debian-12' });
    expect(img).toMatchObject({ family: 'debian-12', status: 'READY', architecture: 'X86_64', diskSizeGb: '10' });
    expect(img.name).toMatch(/^debian-12-bookworm-v\d{8}$/);
    const [zone] = await c.zones.get({ project: PROJECT, zone: ZONE });
    expect(zone).toMatchObject({ name: ZONE, status: 'UP' });

    expect((await sdkError(c.networks.get({ project: PROJECT, network: 'vpc-x' }))).code).toBe(404);
    expect((await sdkError(c.subnetworks.get({ project: PROJECT, region: 'us-central1', subnetwork: 'other' }))).code).toBe(404);
    expect((await sdkError(c.images.getFromFamily({ project: 'debian-cloud', family: 'debian-99' }))).code).toBe(404);
    expect((await sdkError(c.zones.get({ project: PROJECT, zone: 'mars-central1-a' }))).code).toBe(404);
  });

  it('firewalls: 409 on duplicates, list with a filter, validation of ports', async () => {
    const { c } = await setup({ seedDefaultFirewalls: true });
    const fw = { name: 'dask-abc', targetTags: ['dask-abc'], sourceRanges: ['10.0.0.0/8'], allowed: [{ IPProtocol: 'tcp', ports: ['8786'] }] };
    const [op] = await c.firewalls.insert({ project: PROJECT, firewallResource: fw });
    await c.globalOps.wait({ project: PROJECT, operation: opOf(op).name! });
    expect((await sdkError(c.firewalls.insert({ project: PROJECT, firewallResource: fw }))).code).toBe(409);
    const names = [];
    for await (const f of c.firewalls.listAsync({ project: PROJECT, filter: 'name eq dask-.*' })) names.push(f.name);
    expect(names).toEqual(['dask-abc']);
    const all = [];
    for await (const f of c.firewalls.listAsync({ project: PROJECT })) all.push(f.name);
    expect(all).toEqual(['dask-abc', 'default-allow-icmp', 'default-allow-internal', 'default-allow-ssh']);
    expect((await sdkError(c.firewalls.insert({ project: PROJECT, firewallResource: { ...fw, name: 'bad-port', allowed: [{ IPProtocol: 'tcp', ports: ['9000-8000'] }] } }))).code).toBe(400);
    expect((await sdkError(c.firewalls.insert({ project: PROJECT, firewallResource: { ...fw, name: 'icmp-port', allowed: [{ IPProtocol: 'icmp', ports: ['1'] }] } }))).code).toBe(400);
    expect((await sdkError(c.firewalls.insert({ project: PROJECT, firewallResource: { ...fw, name: 'other-net', network: 'global/networks/vpc-x' } }))).code).toBe(404);
  });
});

describe('no leaks', () => {
  it('resources() is empty after deleting everything; a boot disk without autoDelete is a leak', async () => {
    const { fake, c } = await setup();
    const [fw] = await c.firewalls.insert({ project: PROJECT, firewallResource: { name: 'dask-abc', targetTags: ['dask-abc'], sourceTags: ['dask-abc'], allowed: [{ IPProtocol: 'all' }] } });
    await c.globalOps.wait({ project: PROJECT, operation: opOf(fw).name! });
    await insertAndWait(c, 's');
    await insertAndWait(c, 'w', { disks: [{ boot: true, initializeParams: { sourceImage: 'projects/debian-cloud/global/images/family/debian-12' } }] }); // autoDelete defaults to false
    expect(Object.keys(fake.resources()).sort()).toEqual(['disks', 'firewalls', 'instances']);

    for (const instance of ['s', 'w']) {
      const [op] = await c.instances.delete({ project: PROJECT, zone: ZONE, instance });
      await c.zoneOps.wait({ project: PROJECT, zone: ZONE, operation: opOf(op).name! });
    }
    const [fwDel] = await c.firewalls.delete({ project: PROJECT, firewall: 'dask-abc' });
    await c.globalOps.wait({ project: PROJECT, operation: opOf(fwDel).name! });
    expect(fake.leaked()).toEqual({ disks: [expect.objectContaining({ id: `zones/${ZONE}/disks/w`, value: expect.objectContaining({ users: [] }) })] });
    // The leftover disk blocks a new instance of the same name, as on GCP.
    expect((await sdkError(c.instances.insert({ project: PROJECT, zone: ZONE, instanceResource: instanceBody('w') }))).body.error.message).toContain(`zones/${ZONE}/disks/w' already exists`);
  });

  it('leaves nothing when every instance asked for autoDelete', async () => {
    const { fake, c } = await setup();
    await insertAndWait(c, 'a');
    const [op] = await c.instances.delete({ project: PROJECT, zone: ZONE, instance: 'a' });
    await c.zoneOps.wait({ project: PROJECT, zone: ZONE, operation: opOf(op).name! });
    expect(fake.resources()).toEqual({});
  });
});
