/**
 * GCPCluster against the Compute fake without booting anything: validation before any call,
 * what is created (labels, tags, firewall rules, NICs, batching) and a clean rollback when any
 * API step of start() fails. Nothing here runs Dask: a started cluster's scheduler never answers,
 * so these starts end in a (fast) failure once the requests of interest have been made.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { GCPCluster, clusterTag, roleTag, type GCPClusterOptions } from '../../../providers/gcp';
import { GcpAdapter } from '../../../providers/gcp/adapter';
import { LABELS } from '../../../src/cluster/vm';
import type { ClusterEvent } from '../../../src/cluster/events';
import { randomBytes } from 'node:crypto';
import { ClusterStartError, DaskCloudError, UserDataError, ValidationError } from '../../../src/errors';
import { assertNoContractViolations, type ReceivedCall, type ResourceSnapshot } from '../../fakes/core';
import { METADATA_VALUE_MAX, type FakeGcp } from '../../fakes/gcp';
import { eventually } from '../../helpers/eventually';
import { callTimeline } from '../../helpers/fakes';
import { fakeOptions, operations, startFake, ZONE } from './helpers';

let fakes: FakeGcp[] = [];

afterEach(async () => {
  try {
    for (const fake of fakes) {
      assertNoContractViolations(fake);
      expect(fake.server.handlerErrors).toEqual([]);
      expect(fake.bootErrors).toEqual([]);
    }
  } finally {
    await Promise.all(fakes.map((f) => f.stop()));
    fakes = [];
  }
});

async function fakeGcp(opts: Parameters<typeof startFake>[0] = {}): Promise<FakeGcp> {
  const fake = await startFake(opts);
  fakes.push(fake);
  return fake;
}

type Body = Record<string, any>;
const bodies = (fake: FakeGcp, op: string): Body[] => fake.server.calls(`compute.${op}`).map((c: ReceivedCall) => c.json as Body);

/**
 * Starts a cluster whose scheduler never answers (nothing boots), records what existed once the
 * workers had been created, and returns the start error (the rollback has run by then). Unless
 * `untilReadiness`, the start is aborted right after that snapshot instead of waiting for the
 * scheduler to time out.
 */
async function startUntilWorkers(fake: FakeGcp, options: Partial<ConstructorParameters<typeof GCPCluster>[0]> = {}, untilReadiness = false) {
  const events: ClusterEvent[] = [];
  let snapshot: ResourceSnapshot | undefined;
  const controller = new AbortController();
  const cluster = new GCPCluster({
    ...fakeOptions(fake),
    nWorkers: 2,
    schedulerTimeoutMs: 1_500,
    signal: controller.signal,
    ...options,
    onEvent: (e) => {
      events.push(e);
      if (e.type === 'member-launched' && (e.role === 'worker' || options.nWorkers === 0) && !snapshot) {
        snapshot = structuredClone(fake.resources());
        if (!untilReadiness) controller.abort(new Error('seen enough'));
      }
    },
  });
  const error = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
  expect(ClusterStartError.isInstance(error)).toBe(true);
  return { cluster, error, events, snapshot: snapshot ?? {} };
}

describe('GCPCluster options', () => {
  it('importing the provider and constructing a cluster loads no cloud SDK', () => {
    const root = path.resolve(__dirname, '../../..');
    const out = execFileSync(
      process.execPath,
      [
        path.join(root, 'node_modules/tsx/dist/cli.mjs'),
        '-e',
        `const g = require('./providers/gcp');
         new g.GCPCluster({ projectId: 'p-123456', closeOnSignals: false });
         console.log(JSON.stringify(Object.keys(require.cache).filter((k) => /@google-cloud|google-gax|google-auth-library/.test(k))));`,
      ],
      { cwd: root, encoding: 'utf8', timeout: 60_000 },
    );
    expect(JSON.parse(out.trim().split('\n').pop()!)).toEqual([]);
  });

  it('validates every option in the constructor, before any API call', async () => {
    const fake = await fakeGcp();
    const base = fakeOptions(fake);
    const bad: [Partial<ConstructorParameters<typeof GCPCluster>[0]>, string, RegExp][] = [
      [{ zone: 'us-central1' }, 'zone', /zone must look like us-central1-a/],
      [{ projectId: 'Bad_Project' }, 'projectId', /not a GCP project id/],
      [{ labels: { Team: 'x' } }, 'labels', /label key "Team"/],
      [{ labels: { team: 'Data Science' } }, 'labels', /GCP label values/],
      [{ labels: { [LABELS.cluster]: 'x' } }, 'labels', /set by dask-cloud itself/],
      [{ spot: true, preemptible: true }, 'spot', /spot or preemptible/],
      [{ gpu: { type: 'nvidia-tesla-t4' }, onHostMaintenance: 'MIGRATE' }, 'onHostMaintenance', /cannot live-migrate/],
      [{ gpu: { type: 'nvidia-tesla-t4', count: 0 } }, 'gpu.count', /positive integer/],
      [{ diskSizeGb: 5 }, 'diskSizeGb', /at least 10/],
      [{ machineType: 'zones/us-central1-a/machineTypes/e2-standard-4' }, 'schedulerMachineType', /not a URL/],
      [{ sourceImage: 'debian-12' }, 'sourceImage', /projects\/P\/global\/images/],
      [{ subnetwork: 'projects/p-123456/regions/europe-west1/subnetworks/s', networkProjectId: 'p-123456' }, 'subnetwork', /region europe-west1/],
      [{ network: 'projects/other-project/global/networks/vpc' }, 'network', /networkProjectId: 'other-project'/],
      [{ scopes: ['https://www.googleapis.com/auth/cloud-platform'] }, 'scopes', /set serviceAccount too/],
      [{ serviceAccount: 'not an email' }, 'serviceAccount', /'default' or an email/],
      [{ maxRunDuration: '3 hours' }, 'maxRunDuration', /duration such as '8h'/],
      [{ maxRunDuration: 10 }, 'maxRunDuration', /30 s to 120 days/],
      [{ endpoint: 'ftp://x' }, 'endpoint', /http or https/],
      [{ maxConcurrentRequests: 0 }, 'maxConcurrentRequests', /positive integer/],
    ];
    for (const [over, option, message] of bad) {
      const err = (() => {
        try {
          new GCPCluster({ ...base, ...over });
          return undefined;
        } catch (e) {
          return e;
        }
      })();
      expect(err instanceof ValidationError, `${JSON.stringify(over)} should be refused`).toBe(true);
      expect((err as ValidationError).details.option).toBe(option);
      expect((err as Error).message).toMatch(message);
    }
    // The core's own checks run too.
    expect(() => new GCPCluster({ ...base, ingressCidrs: ['everyone'] })).toThrow(/IPv4 CIDR/);
    expect(fake.server.received).toEqual([]);
  });

  it('a project id is required, and looked for only locally', async () => {
    const fake = await fakeGcp();
    const { projectId: _p, ...noProject } = fakeOptions(fake);
    const env = { ...process.env };
    try {
      for (const k of ['GOOGLE_CLOUD_PROJECT', 'GCLOUD_PROJECT', 'GOOGLE_APPLICATION_CREDENTIALS', 'CLOUDSDK_CORE_PROJECT']) delete process.env[k];
      process.env.CLOUDSDK_CONFIG = '/nonexistent/dask-cloud-test';
      const err = (() => {
        try {
          new GCPCluster(noProject);
        } catch (e) {
          return e as ValidationError;
        }
        return undefined;
      })();
      expect(err).toBeInstanceOf(ValidationError);
      expect(err!.details.option).toBe('projectId');
      expect(err!.message).toMatch(/^no GCP project: pass projectId, set GOOGLE_CLOUD_PROJECT/);
      process.env.GCLOUD_PROJECT = fake.project;
      expect(new GCPCluster(noProject).projectId).toBe(fake.project);
      process.env.GOOGLE_CLOUD_PROJECT = 'from-google-cloud-project';
      expect(new GCPCluster(noProject).projectId).toBe('from-google-cloud-project');
      expect(new GCPCluster({ ...noProject, projectId: 'explicit-project' }).projectId).toBe('explicit-project');
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in env)) delete process.env[k];
      Object.assign(process.env, env);
    }
    expect(fake.server.received).toEqual([]);
  });

  it('defaults: documented machine types, image, disk, 24 h max run duration', async () => {
    const fake = await fakeGcp();
    const { cluster } = await startUntilWorkers(fake);
    expect(fake.server.calls('compute.images.getFromFamily')[0]!.params).toMatchObject({ project: 'ubuntu-os-cloud', family: 'ubuntu-2404-lts-amd64' });
    const [sched] = bodies(fake, 'instances.insert');
    expect(sched!.machineType).toBe(`zones/${ZONE}/machineTypes/e2-standard-2`);
    expect(sched!.disks).toMatchObject([
      {
        boot: true,
        autoDelete: true,
        initializeParams: {
          sourceImage: expect.stringMatching(/\/projects\/ubuntu-os-cloud\/global\/images\/ubuntu-2404-noble-amd64-v\d+$/),
          diskSizeGb: '50',
          diskType: `zones/${ZONE}/diskTypes/pd-balanced`,
          labels: expect.objectContaining({ [LABELS.cluster]: cluster.id, [LABELS.role]: 'scheduler' }),
        },
      },
    ]);
    expect(sched!.scheduling).toEqual({ onHostMaintenance: 'MIGRATE', automaticRestart: true, maxRunDuration: { seconds: '86400' }, instanceTerminationAction: 'DELETE' });
    expect(sched!.serviceAccounts).toBeUndefined();
    const [bulk] = bodies(fake, 'instances.bulkInsert');
    expect(bulk!.instanceProperties.machineType).toBe('e2-standard-4');
    expect(bulk!.instanceProperties.disks[0].initializeParams.diskType).toBe('pd-balanced');
  });

  it('GPUs, spot VMs, a service account, extra labels, machine types and maxRunDuration reach every VM', async () => {
    const fake = await fakeGcp();
    await startUntilWorkers(fake, {
      machineType: 'n1-standard-4',
      workerMachineType: 'n1-standard-8',
      gpu: { type: 'nvidia-tesla-t4', count: 2 },
      spot: true,
      serviceAccount: 'dask@my-project.iam.gserviceaccount.com',
      labels: { team: 'data' },
      maxRunDuration: '8h',
      diskSizeGb: 100,
      diskType: 'pd-ssd',
    });
    const [sched] = bodies(fake, 'instances.insert');
    const [bulk] = bodies(fake, 'instances.bulkInsert');
    const props = bulk!.instanceProperties;
    expect(sched!.machineType).toBe(`zones/${ZONE}/machineTypes/n1-standard-4`);
    expect(props.machineType).toBe('n1-standard-8');
    expect(sched!.guestAccelerators).toEqual([{ acceleratorType: `zones/${ZONE}/acceleratorTypes/nvidia-tesla-t4`, acceleratorCount: 2 }]);
    expect(props.guestAccelerators).toEqual([{ acceleratorType: 'nvidia-tesla-t4', acceleratorCount: 2 }]);
    for (const s of [sched!.scheduling, props.scheduling]) {
      expect(s).toEqual({ onHostMaintenance: 'TERMINATE', automaticRestart: false, provisioningModel: 'SPOT', maxRunDuration: { seconds: '28800' }, instanceTerminationAction: 'DELETE' });
    }
    for (const p of [sched!, props]) {
      expect(p.serviceAccounts).toEqual([{ email: 'dask@my-project.iam.gserviceaccount.com', scopes: ['https://www.googleapis.com/auth/cloud-platform'] }]);
      expect(p.labels.team).toBe('data');
      expect(p.disks[0].initializeParams).toMatchObject({ diskSizeGb: '100' });
    }
    // The Docker runtime passes the GPUs through.
    const userData = sched!.metadata.items.find((i: Body) => i.key === 'user-data').value as string;
    expect(userData).toContain('--gpus all');
  });

  it('item 3: preemptible: true is created as Spot, so the default maxRunDuration (and DELETE) is accepted', async () => {
    const fake = await fakeGcp();
    const { cluster, snapshot } = await startUntilWorkers(fake, { preemptible: true });
    const spot = { onHostMaintenance: 'TERMINATE', automaticRestart: false, provisioningModel: 'SPOT', maxRunDuration: { seconds: '86400' }, instanceTerminationAction: 'DELETE' };
    expect(bodies(fake, 'instances.insert')[0]!.scheduling).toEqual(spot);
    expect(bodies(fake, 'instances.bulkInsert')[0]!.instanceProperties.scheduling).toEqual(spot);
    expect((snapshot.instances ?? []).map((i) => (i.value as Body).name).sort()).toEqual([`${cluster.id}-scheduler`, `${cluster.id}-worker-0`, `${cluster.id}-worker-1`]);
    expect(fake.leaked()).toEqual({});
  });

  it('maxRunDuration: false sets none', async () => {
    const fake = await fakeGcp();
    await startUntilWorkers(fake, { maxRunDuration: false, nWorkers: 0 });
    expect(bodies(fake, 'instances.insert')[0]!.scheduling).toEqual({ onHostMaintenance: 'MIGRATE', automaticRestart: true });
  });
});

describe('GCPCluster resources', () => {
  it('labels and network tags on every VM and boot disk, one bulkInsert for all workers, no leaks', async () => {
    const fake = await fakeGcp();
    const { cluster, snapshot } = await startUntilWorkers(fake, { nWorkers: 5 });
    const id = cluster.id;
    // One bulkInsert naming every worker, with no name pattern.
    const bulks = bodies(fake, 'instances.bulkInsert');
    expect(bulks).toHaveLength(1);
    expect(bulks[0]).toMatchObject({ count: '5', minCount: '5' });
    expect(Object.keys(bulks[0]!.perInstanceProperties)).toEqual([0, 1, 2, 3, 4].map((i) => `${id}-worker-${i}`));
    expect(bulks[0]!.namePattern).toBeUndefined();
    expect(new GcpAdapter(undefined as never, { sourceImage: 'global/images/x' } as never).maxBatch).toBe(5000);

    const instances = snapshot.instances!.map((i) => i.value as Body);
    expect(instances.map((i) => i.name).sort()).toEqual([`${id}-scheduler`, ...[0, 1, 2, 3, 4].map((i) => `${id}-worker-${i}`)].sort());
    for (const inst of instances) {
      const role = inst.name.endsWith('-scheduler') ? 'scheduler' : 'worker';
      // The scheduler also says how clients reach it, so a listing can give its address.
      const listen = role === 'scheduler' ? { [LABELS.protocol]: 'tls', [LABELS.port]: '8786' } : {};
      expect(inst.labels).toEqual({ [LABELS.cluster]: id, [LABELS.role]: role, [LABELS.expires]: expect.stringMatching(/^\d{10}$/), ...listen });
      expect(Number(inst.labels[LABELS.expires]) * 1000).toBeGreaterThan(Date.now() + 23 * 3_600_000);
      expect(inst.tags.items).toEqual([clusterTag(id), roleTag(id, role)]);
      expect(inst.disks[0]).toMatchObject({ boot: true, autoDelete: true });
      expect(inst.networkInterfaces[0].accessConfigs).toHaveLength(1);
      expect(inst.networkInterfaces[0].subnetwork).toMatch(/\/regions\/us-central1\/subnetworks\/default$/);
    }
    // Boot disks are labelled from creation too.
    for (const b of [...bodies(fake, 'instances.insert'), bulks[0]!.instanceProperties]) {
      expect(b.disks[0].initializeParams.labels).toMatchObject({ [LABELS.cluster]: id });
    }
    expect(snapshot.disks).toHaveLength(6);
    expect(fake.leaked()).toEqual({});
  });

  it('public mode: members ↔ members all TCP, 8786 and the dashboard terminator 8788 from the subnetwork and from ingressCidrs; deleted on close', async () => {
    const fake = await fakeGcp();
    const { cluster, snapshot } = await startUntilWorkers(fake);
    const id = cluster.id;
    const rules = snapshot.firewalls!.map((f) => f.value as Body);
    const net = `https://www.googleapis.com/compute/v1/projects/${fake.project}/global/networks/default`;
    const description = expect.stringMatching(new RegExp(`^dask-cloud cluster=${id} expires=\\d{10} `));
    expect(rules).toEqual([
      expect.objectContaining({ name: `${id}-internal`, network: net, direction: 'INGRESS', sourceTags: [clusterTag(id)], targetTags: [clusterTag(id)], allowed: [{ IPProtocol: 'tcp' }], description }),
      expect.objectContaining({ name: `${id}-network`, sourceRanges: [fake.pools.private.cidr], targetTags: [roleTag(id, 'scheduler')], allowed: [{ IPProtocol: 'tcp', ports: ['8786', '8788'] }], description }),
      expect.objectContaining({ name: `${id}-public`, sourceRanges: ['0.0.0.0/0'], targetTags: [roleTag(id, 'scheduler')], allowed: [{ IPProtocol: 'tcp', ports: ['8786', '8788'] }], description }),
    ]);
    expect(rules.every((r) => r.sourceTags === undefined || r.sourceRanges === undefined)).toBe(true);
    expect(fake.leaked()).toEqual({});
  });

  it('public mode with ingressCidrs and exposeDashboard: one rule for those sources, the plain dashboard 8787 added', async () => {
    const fake = await fakeGcp();
    const { cluster, snapshot } = await startUntilWorkers(fake, { ingressCidrs: ['203.0.113.0/24', '198.51.100.7/32'], exposeDashboard: true, schedulerPort: 8800 });
    const rules = Object.fromEntries(snapshot.firewalls!.map((f) => [(f.value as Body).name, f.value as Body]));
    expect(rules[`${cluster.id}-public`]).toMatchObject({ sourceRanges: ['203.0.113.0/24', '198.51.100.7/32'], allowed: [{ IPProtocol: 'tcp', ports: ['8787', '8788', '8800'] }] });
    expect(rules[`${cluster.id}-network`]).toMatchObject({ allowed: [{ IPProtocol: 'tcp', ports: ['8788', '8800'] }] });
  });

  it('private mode: no public address anywhere, no rule from outside the network', async () => {
    const fake = await fakeGcp();
    // The docker runtime installs Docker and pulls the image: private mode needs a Cloud NAT.
    fake.addCloudNat('us-central1');
    const { cluster, snapshot, error } = await startUntilWorkers(fake, { privateNetworking: true }, true);
    expect(snapshot.firewalls!.map((f) => (f.value as Body).name)).toEqual([`${cluster.id}-internal`, `${cluster.id}-network`]);
    for (const inst of snapshot.instances!.map((i) => i.value as Body)) expect(inst.networkInterfaces[0].accessConfigs).toBeUndefined();
    for (const b of [...bodies(fake, 'instances.insert'), bodies(fake, 'instances.bulkInsert')[0]!.instanceProperties]) {
      expect(b.networkInterfaces).toEqual([{ network: `projects/${fake.project}/global/networks/default`, subnetwork: `projects/${fake.project}/regions/us-central1/subnetworks/default` }]);
    }
    expect(fake.pools.public.inUse()).toEqual([]);
    // The client address is the private one (nothing listens there: the start times out).
    expect(error.message).toMatch(new RegExp(`tls://${fake.pools.private.cidr.split('.').slice(0, 2).join('\\.')}\\.`));
    expect(fake.leaked()).toEqual({});
  });

  it('security: false: same rules (plain tcp), and a warning that the port is open', async () => {
    const fake = await fakeGcp();
    const { cluster, snapshot, events, error } = await startUntilWorkers(fake, { security: false }, true);
    expect(snapshot.firewalls!.map((f) => (f.value as Body).name)).toEqual([`${cluster.id}-internal`, `${cluster.id}-network`, `${cluster.id}-public`]);
    expect((snapshot.firewalls![2]!.value as Body).description).toContain('scheduler (NO TLS)');
    expect(events.some((e) => e.type === 'warning' && /security is off/.test(e.message))).toBe(true);
    expect(error.message).toContain('tcp://');
    const userData = bodies(fake, 'instances.insert')[0]!.metadata.items.find((i: Body) => i.key === 'user-data').value as string;
    expect(userData).not.toContain('PRIVATE KEY');
  });

  it('user-data too big for text goes gzipped, base64, marked user-data-encoding: base64', async () => {
    const fake = await fakeGcp();
    // ~300 KB of bootstrap commands: over 256 KiB as text, small gzipped.
    const bootstrap = Array.from({ length: 3000 }, (_, i) => `echo preparing step ${i} of the image ${'x'.repeat(60)}`);
    await startUntilWorkers(fake, { bootstrap, nWorkers: 1 });
    const items = bodies(fake, 'instances.insert')[0]!.metadata.items as Body[];
    expect(items.map((i) => i.key)).toEqual(['user-data', 'user-data-encoding']);
    expect(items[1]!.value).toBe('base64');
    const body = Buffer.from(items[0]!.value as string, 'base64');
    expect(body.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(items[0]!.value.length).toBeLessThanOrEqual(262_144);
  });
});

/**
 * Expected start-failure outcomes: phase, message and the console tail when a VM existed. Failed
 * look-ups (image, network, subnetwork) are preflight failures now: preflight.test.ts.
 */
interface FailureCase {
  step: string;
  inject: (fake: FakeGcp) => void;
  phase: string;
  message: RegExp;
  console?: RegExp;
  /** The step fails before the workers' create: none is sent. */
  noWorkers?: boolean;
  options?: Partial<ConstructorParameters<typeof GCPCluster>[0]>;
}

const FAILURES: FailureCase[] = [
  {
    step: 'firewall insert',
    inject: (f) => f.faults.fail('compute.firewalls.insert', { status: 403, code: 'forbidden', message: "Required 'compute.firewalls.create' permission" }, { nth: 2 }),
    // The rules go out beside the scheduler's insert; the scheduler phase waits for their answers.
    phase: 'scheduler',
    noWorkers: true,
    message: /creating firewall rule \S+ failed: HTTP 403 forbidden: Required 'compute.firewalls.create' permission/,
  },
  {
    step: 'scheduler insert',
    inject: (f) => f.faults.fail('compute.instances.insert', { status: 400, code: 'invalid', message: "Invalid value for field 'resource.machineType'" }, { times: 1 }),
    phase: 'scheduler',
    message: /creating scheduler \S+-scheduler failed: HTTP 400 invalid/,
  },
  {
    step: 'scheduler insert operation',
    inject: (f) => f.failOperations({ operationType: 'insert' }),
    phase: 'scheduler',
    message: /\(scheduler \S+-scheduler\): gcp: creating scheduler \S+ failed: operation operation-\S+ \(insert\) ended with ZONE_RESOURCE_POOL_EXHAUSTED/,
    console: /console output unavailable: .*was not found/,
  },
  {
    step: 'scheduler lookup after insert',
    inject: (f) => f.faults.fail('compute.instances.get', { status: 403, code: 'forbidden', message: "Required 'compute.instances.get' permission" }, { times: 1 }),
    phase: 'scheduler',
    message: /looking up instance \S+-scheduler failed: HTTP 403 forbidden/,
  },
  {
    step: 'worker bulkInsert',
    inject: (f) => f.faults.fail('compute.instances.bulkInsert', { status: 403, code: 'QUOTA_EXCEEDED', message: "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1." }, { times: 1 }),
    phase: 'workers',
    message: /\(worker \S+-worker-0\): gcp: creating 2 workers failed: HTTP 403 QUOTA_EXCEEDED/,
  },
  {
    step: 'worker bulkInsert operation',
    inject: (f) => f.failOperations({ operationType: 'bulkInsert' }),
    phase: 'workers',
    message: /creating 2 workers failed: operation operation-\S+ \(bulkInsert\) ended with ZONE_RESOURCE_POOL_EXHAUSTED/,
  },
  {
    step: 'scheduler never ready',
    inject: () => undefined,
    options: { schedulerTimeoutMs: 1_500 },
    phase: 'scheduler',
    message: /\(scheduler \S+-scheduler\): scheduler tls:\/\/127\.\S+:8786 was not ready within 1500 ms/,
    console: /fake-gcp: instance \S+-scheduler \(\d+\) is simulated/,
  },
];

describe('a failure at each API step of start() rolls back everything', () => {
  for (const c of FAILURES) {
    it(c.step, async () => {
      const fake = await fakeGcp();
      c.inject(fake);
      const events: ClusterEvent[] = [];
      // A long readiness deadline: every failure but the last must be noticed without it.
      const cluster = new GCPCluster({ ...fakeOptions(fake), nWorkers: 2, schedulerTimeoutMs: 30_000, ...c.options, onEvent: (e) => events.push(e) });
      const t = Date.now();
      const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
      expect(Date.now() - t).toBeLessThan(10_000);
      expect(ClusterStartError.isInstance(err)).toBe(true);
      expect(err.code).toBe('E_START_FAILED');
      expect(err.details.phase).toBe(c.phase);
      expect(err.message).toMatch(c.message);
      expect(err.message).toContain('Everything created for this cluster has been deleted.');
      if (c.console) {
        expect(err.details.consoleTail).toMatch(c.console);
        expect(err.message).toContain(`--- last output of ${cluster.id}-scheduler ---`);
      }
      expect(cluster.state).toBe('failed');
      expect(events.some((e) => e.type === 'rollback')).toBe(true);
      expect(fake.leaked()).toEqual({});
      // The rollback swept by label and by firewall name.
      const ops = operations(fake);
      expect(ops).toContain('instances.list');
      if (ops.includes('firewalls.insert')) expect(ops).toContain('firewalls.list');
      if (c.noWorkers) expect(ops).not.toContain('instances.bulkInsert');
      await cluster.close(); // nothing left to do, and no error
    });
  }
});

describe("the firewall rules go out beside the scheduler's insert", () => {
  it("the scheduler's insert does not wait for the rules' answers; the workers' bulkInsert does", async () => {
    const fake = await fakeGcp();
    const LATENCY_MS = 1_500;
    fake.faults.latency('compute.firewalls.insert', LATENCY_MS);
    // The workers' address list, right after their bulkInsert: stop there, before anything is dialled.
    fake.faults.fail('compute.instances.list', { status: 403, code: 'forbidden', message: "Required 'compute.instances.list' permission" }, { times: 1 });
    const cluster = new GCPCluster({ ...fakeOptions(fake), nWorkers: 2, schedulerTimeoutMs: 30_000 });
    const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
    expect(ClusterStartError.isInstance(err), String(err)).toBe(true);
    const calls = fake.server.received;
    const rules = calls.filter((r) => r.operation === 'compute.firewalls.insert');
    const insert = calls.find((r) => r.operation === 'compute.instances.insert')!;
    const bulk = calls.find((r) => r.operation === 'compute.instances.bulkInsert')!;
    const t0 = rules[0]!.at;
    const timeline = callTimeline(calls, t0);
    expect(rules, timeline).toHaveLength(3);
    // Waiting for the rules' answers would put the scheduler's insert LATENCY_MS later.
    expect(insert.at - t0, timeline).toBeLessThan(LATENCY_MS);
    expect(bulk.at - rules.at(-1)!.at, timeline).toBeGreaterThanOrEqual(LATENCY_MS);
    expect(fake.leaked()).toEqual({});
    await cluster.close();
  });
});

describe('abort', () => {
  it('aborting while the workers are being created rolls back and reports E_ABORTED', async () => {
    const fake = await fakeGcp({ lifecycleMs: { provisioningMs: 300, stagingMs: 700 } });
    const controller = new AbortController();
    fake.faults.latency('compute.instances.bulkInsert', () => {
      setTimeout(() => controller.abort(new Error('user pressed ctrl-c')), 10);
      return 200;
    });
    const cluster = new GCPCluster({ ...fakeOptions(fake), nWorkers: 3, signal: controller.signal, schedulerTimeoutMs: 30_000 });
    const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
    expect(ClusterStartError.isInstance(err)).toBe(true);
    expect(err.message).toContain('user pressed ctrl-c');
    expect(cluster.state).toBe('failed');
    // The bulkInsert in flight was not abandoned: its workers were created, then deleted.
    expect(fake.server.calls('compute.instances.bulkInsert')[0]!.status).toBe(200);
    expect(fake.leaked()).toEqual({});
  });

  it('close() during start rolls back and resolves once everything is gone', async () => {
    const fake = await fakeGcp();
    let cluster: GCPCluster | undefined;
    cluster = new GCPCluster({
      ...fakeOptions(fake),
      nWorkers: 1,
      schedulerTimeoutMs: 30_000,
      onEvent: (e) => {
        if (e.type === 'member-launched' && e.role === 'scheduler') void cluster!.close();
      },
    });
    const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
    expect(err.code).toBe('E_ABORTED');
    await cluster.close();
    expect(cluster.state).toBe('closed');
    expect(fake.leaked()).toEqual({});
  });
});

describe('idempotent creation', () => {
  it('a scheduler insert whose answer is lost is retried with the same requestId: one VM, no 409', async () => {
    const fake = await fakeGcp();
    let n = 0;
    fake.faults.latency('compute.instances.insert', () => (n++ === 0 ? 1_000 : 0));
    const { cluster, snapshot } = await startUntilWorkers(fake, { requestTimeoutMs: 400 });
    const inserts = fake.server.calls('compute.instances.insert');
    expect(inserts.length).toBeGreaterThanOrEqual(2);
    expect(new Set(inserts.map((c) => c.params.requestId)).size).toBe(1);
    // The first insert's answer was "lost" on the way back: the fake finishes it 1 s after it
    // arrived, which may be after the start was aborted and rolled back. Wait for that answer:
    // it must be the same operation (200), not a 409 and not a second VM.
    await eventually(() => inserts.every((c) => c.status !== 0), 'the delayed insert to be answered', 5_000);
    expect(inserts.map((c) => c.status)).toEqual(inserts.map(() => 200));
    expect(snapshot.instances!.filter((i) => (i.value as Body).name === `${cluster.id}-scheduler`)).toHaveLength(1);
    expect(fake.leaked()).toEqual({});
  });

  it('rateLimitExceeded on the creates is retried and succeeds', async () => {
    const fake = await fakeGcp();
    fake.faults.fail('compute.instances.insert', { status: 403, code: 'rateLimitExceeded', message: "Quota exceeded for quota metric 'Queries'" }, { times: 1 });
    fake.faults.fail('compute.instances.bulkInsert', { status: 403, code: 'rateLimitExceeded', message: "Quota exceeded for quota metric 'Queries'" }, { times: 1 });
    const { cluster, snapshot } = await startUntilWorkers(fake);
    expect(fake.server.calls('compute.instances.insert').map((c) => c.status)).toEqual([403, 200]);
    expect(fake.server.calls('compute.instances.bulkInsert').map((c) => c.status)).toEqual([403, 200]);
    expect(snapshot.instances!.map((i) => (i.value as Body).name).sort()).toEqual([`${cluster.id}-scheduler`, `${cluster.id}-worker-0`, `${cluster.id}-worker-1`]);
  });
});

describe('a rollback that cannot delete everything', () => {
  it('item 8: an instance delete that fails still throws the ClusterStartError with the real cause, what is left and the cleanup command; the firewall rules are still deleted; cleanup then empties the project', async () => {
    const fake = await fakeGcp();
    const refuse = fake.faults.fail('compute.instances.delete', { status: 403, code: 'forbidden', message: "Required 'compute.instances.delete' permission" });
    // The scheduler never answers (nothing boots): the start fails after 1.5 s and rolls back.
    const { cluster, error } = await startUntilWorkers(fake, { schedulerTimeoutMs: 1_500 }, true);
    const id = cluster.id;
    expect(error.code).toBe('E_START_FAILED');
    expect(error.details.phase).toBe('scheduler');
    expect(error.message).toMatch(/failed during scheduler \(scheduler \S+-scheduler\): scheduler tls:\/\/\S+ was not ready within 1500 ms/);
    expect((error.cause as Error).message).toMatch(/was not ready within 1500 ms/);
    expect(error.message).toMatch(/The rollback could not delete everything \(.*Required 'compute\.instances\.delete' permission.*\)/);
    expect(error.details.leftovers).toEqual([expect.stringMatching(new RegExp(`^instances .*${id}-scheduler`))]);
    expect(error.details.cleanupCommand).toBe(`dask-cloud cleanup --provider gcp --project ${fake.project} --cluster ${id}`);
    expect(error.message).toContain(`Delete it with: dask-cloud cleanup --provider gcp --project ${fake.project} --cluster ${id}`);
    expect(cluster.state).toBe('failed');
    // Every deletion was tried: the instances (refused) and the three firewall rules (deleted).
    expect(new Set(fake.server.calls('compute.instances.delete').map((c) => c.params.instance))).toEqual(new Set([`${id}-scheduler`, `${id}-worker-0`, `${id}-worker-1`]));
    expect(fake.server.calls('compute.firewalls.delete')).toHaveLength(3);
    expect(fake.leaked().firewalls).toBeUndefined();
    expect(fake.leaked().instances).toHaveLength(3);

    // The command it names cleans up once the permission is there.
    refuse.remove();
    const report = await GCPCluster.cleanup({ ...fakeOptions(fake), clusterIds: [id] });
    expect(report.clusters).toEqual([{ clusterId: id, instances: [`${id}-scheduler`, `${id}-worker-0`, `${id}-worker-1`], deleted: true }]);
    expect(fake.leaked()).toEqual({});
  });
});

describe('many VMs (issue 12): lists carry a field mask, deletions are awaited by listing', () => {
  const listsMasked = (fake: FakeGcp) => {
    const lists = fake.server.calls('compute.instances.list');
    const masked = fake.fieldSelections.filter((f) => f.operation === 'compute.instances.list');
    expect(lists.length).toBeGreaterThan(0);
    expect(masked).toHaveLength(lists.length);
    // Only what the library reads; the metadata (user-data) and disks never come back.
    for (const m of masked) {
      expect(m.fields).toMatch(/^items\(name,zone,status,labels,creationTimestamp,networkInterfaces\(networkIP,accessConfigs\(natIP\)\)\),nextPageToken$/);
    }
  };

  it('a rollback of 12 workers deletes each VM once and waits for them with lists, not one operation wait per VM', async () => {
    const fake = await fakeGcp();
    const { cluster } = await startUntilWorkers(fake, { nWorkers: 12 });
    const deletes = fake.server.calls('compute.instances.delete');
    expect(new Set(deletes.map((c) => c.params.instance)).size).toBe(13);
    expect(deletes).toHaveLength(13);
    // One HTTP request carried them all.
    const batches = fake.server.calls('compute.batch');
    expect(batches).toHaveLength(1);
    expect(deletes.every((c) => c.batch === batches[0]!.requestId)).toBe(true);
    // At most the creates' own operations (scheduler insert, workers' bulkInsert) were waited on.
    expect(fake.server.calls('compute.zoneOperations.wait').length).toBeLessThanOrEqual(2);
    const lastDelete = Math.max(...deletes.map((c) => c.at));
    expect(fake.server.calls('compute.instances.list').filter((c) => c.at > lastDelete).length).toBeGreaterThanOrEqual(1);
    listsMasked(fake);
    expect(fake.leaked()).toEqual({});
    expect(cluster.state).toBe('failed');
  });

  it('a deletion the batch did not take is asked for again on its own, where the retries apply', async () => {
    const fake = await fakeGcp();
    // Two inner calls answered 503, one throttled: all three worth another attempt.
    fake.faults.fail('compute.instances.delete', { status: 503, code: 'backendError', message: 'Backend Error' }, { times: 2 });
    const { cluster } = await startUntilWorkers(fake, { nWorkers: 12 });
    const deletes = fake.server.calls('compute.instances.delete');
    const batched = deletes.filter((c) => c.batch !== undefined);
    const alone = deletes.filter((c) => c.batch === undefined);
    expect(batched).toHaveLength(13);
    expect(batched.filter((c) => c.status === 503)).toHaveLength(2);
    // The two refused ones, and only they, were sent again outside the batch.
    expect(new Set(alone.map((c) => c.params.instance))).toEqual(new Set(batched.filter((c) => c.status === 503).map((c) => c.params.instance)));
    expect(alone.every((c) => c.status === 200)).toBe(true);
    expect(fake.leaked()).toEqual({});
    expect(cluster.state).toBe('failed');
  });

  it('a batch that fails as a whole: each deletion is asked for on its own', async () => {
    const fake = await fakeGcp();
    fake.faults.fail('compute.batch', { status: 502, code: 'badGateway', message: 'Bad Gateway' }, { times: 1 });
    // The 502 is retried like any call's; the 400 after it is not.
    fake.faults.fail('compute.batch', { status: 400, code: 'badRequest', message: 'Malformed batch' }, { times: 1 });
    const { cluster } = await startUntilWorkers(fake, { nWorkers: 12 });
    expect(fake.server.calls('compute.batch').map((c) => c.status)).toEqual([502, 400]);
    const deletes = fake.server.calls('compute.instances.delete');
    expect(deletes).toHaveLength(13);
    expect(deletes.every((c) => c.batch === undefined && c.status === 200)).toBe(true);
    expect(fake.leaked()).toEqual({});
    expect(cluster.state).toBe('failed');
  });

  it('a delete whose operation fails among 12 is named, through its own operation; the rest are gone', async () => {
    const fake = await fakeGcp();
    fake.failOperations({ operationType: 'delete', times: 1, error: { code: 'RESOURCE_OPERATION_RATE_EXCEEDED', message: 'Operation rate exceeded for resource.', httpStatus: 403 } });
    const { cluster, error } = await startUntilWorkers(fake, { nWorkers: 12 });
    expect(error.message).toMatch(/the rollback could not delete everything \(.*deleting instance \S+ failed: operation \S+ \(delete\) ended with RESOURCE_OPERATION_RATE_EXCEEDED: Operation rate exceeded for resource/);
    const left = fake.leaked().instances ?? [];
    expect(left).toHaveLength(1);
    expect(error.details.leftovers).toEqual([expect.stringMatching(/^instances /)]);
    // Only that VM's operation was waited on by name.
    expect(fake.server.calls('compute.zoneOperations.wait').length).toBeLessThanOrEqual(3);
    await cluster.close().catch(() => undefined);
    expect(fake.leaked()).toEqual({});
  });
});

describe('item 11: bad input is refused with a typed error before any API call', () => {
  it('invalid GCP labels: key and value characters and lengths, at most 64 labels with ours', async () => {
    const fake = await fakeGcp();
    const many = Object.fromEntries(Array.from({ length: 62 }, (_, i) => [`l${i}`, 'v']));
    const bad: [Record<string, string>, RegExp][] = [
      [{ '1team': 'x' }, /label key "1team"/],
      [{ ['k'.repeat(64)]: 'x' }, /label key "k{64}"/],
      [{ team: 'v'.repeat(64) }, /GCP label values/],
      [{ team: 'Data' }, /GCP label values/],
      [{ 'te am': 'x' }, /label key "te am"/],
      [many, /at most 59 extra labels/],
    ];
    for (const [labels, message] of bad) {
      let err: unknown;
      try {
        new GCPCluster({ ...fakeOptions(fake), labels });
      } catch (e) {
        err = e;
      }
      expect(ValidationError.isInstance(err), JSON.stringify(labels).slice(0, 60)).toBe(true);
      expect((err as ValidationError).details.option).toBe('labels');
      expect((err as Error).message).toMatch(message);
    }
    // 59 of the user's own plus dask-cloud's five (on the scheduler): exactly GCP's 64.
    expect(() => new GCPCluster({ ...fakeOptions(fake), labels: Object.fromEntries(Object.entries(many).slice(0, 59)) })).not.toThrow();
    expect(() => new GCPCluster({ ...fakeOptions(fake), labels: Object.fromEntries(Object.entries(many).slice(0, 60)) })).toThrow(/at most 59 extra labels/);
    expect(fake.server.received).toEqual([]);
  });

  it('user-data over the metadata value limit once base64-encoded, a NUL in env, a bad dockerImage: start() throws before any call', async () => {
    const fake = await fakeGcp();
    // Random base64 compresses to ~3/4: ~220 KB gzipped, under 256 KiB but over it in base64.
    const noise = randomBytes(220_000).toString('base64');
    const bootstrap = Array.from({ length: Math.ceil(noise.length / 1000) }, (_, i) => `echo ${noise.slice(i * 1000, (i + 1) * 1000)}`);
    const cases: [Partial<GCPClusterOptions>, (e: unknown) => boolean, RegExp][] = [
      [{ bootstrap }, (e) => UserDataError.isInstance(e) && (e as DaskCloudError).code === 'E_USER_DATA_TOO_LARGE', /./],
      [{ env: { TOKEN: 'a\u0000b' } }, (e) => ValidationError.isInstance(e) && (e as ValidationError).details.option === 'env', /NUL character/],
      [{ dockerImage: 'ghcr.io/dask/dask:latest; rm -rf /' }, (e) => ValidationError.isInstance(e), /Docker image reference/],
    ];
    for (const [over, typed, message] of cases) {
      let err: unknown;
      try {
        const c = new GCPCluster({ ...fakeOptions(fake), nWorkers: 1, ...over });
        err = await c.start().catch((e: unknown) => e);
        expect(c.state).toBe('failed');
      } catch (e) {
        err = e;
      }
      expect(typed(err), `${Object.keys(over)[0]}: ${String(err)}`).toBe(true);
      expect((err as Error).message).toMatch(message);
      expect(fake.server.received, `${Object.keys(over)[0]} made no call`).toEqual([]);
    }
    expect(METADATA_VALUE_MAX).toBe(262_144);
  });
});
