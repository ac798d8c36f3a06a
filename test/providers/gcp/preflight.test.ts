/**
 * GCP preflight (`cluster.preflight()`, and the same checks first in `start()`): one passing
 * project with every check and proof from the fake's request log that nothing was changed, then
 * one failing project per check, each asserting the fix it names. A failing project's start()
 * throws the check's own typed error before any mutating call.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { GCPCluster, type GCPClusterOptions } from '../../../providers/gcp';
import type { CheckResult } from '../../../src/cluster/preflight';
import { CredentialsError, DaskCloudError, PreflightError, ValidationError } from '../../../src/errors';
import { assertNoContractViolations } from '../../fakes/core';
import type { FakeGcp } from '../../fakes/gcp';
import { fakeOptions, startFake, ZONE } from './helpers';

let fakes: FakeGcp[] = [];

afterEach(async () => {
  try {
    for (const fake of fakes) {
      assertNoContractViolations(fake);
      expect(fake.server.handlerErrors).toEqual([]);
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

/** Every call that could change something: Compute's reads are all GETs. */
function mutatingCalls(fake: FakeGcp): string[] {
  return fake.server.received.filter((r) => r.method !== 'GET').map((r) => `${r.method} ${r.operation ?? r.path}`);
}

function cluster(fake: FakeGcp, over: Partial<GCPClusterOptions> = {}): GCPCluster {
  return new GCPCluster({ ...fakeOptions(fake), nWorkers: 2, ...over });
}

function check(report: { checks: CheckResult[] }, id: string): CheckResult {
  const c = report.checks.find((x) => x.id === id);
  expect(c, `check ${id} recorded`).toBeDefined();
  return c!;
}

describe('GCP preflight: a project where everything is in place', () => {
  it('every check passes (permissions: a warning naming the roles), with reads only', async () => {
    const fake = await fakeGcp({ quotas: { cpus: 24, inUseAddresses: 8, ssdTotalGb: 500, instances: 24 } });
    const report = await cluster(fake).preflight();
    expect(report.ok).toBe(true);
    expect(report.checks.map((c) => [c.id, c.status])).toEqual([
      ['user-data', 'pass'],
      ['credentials', 'pass'],
      ['location', 'pass'],
      ['image', 'pass'],
      ['network', 'pass'],
      ['nat', 'pass'],
      ['quota', 'pass'],
      ['permissions', 'warn'],
    ]);
    expect(check(report, 'credentials').message).toBe(`found in the authClient option; accepted by Compute (projects.get ${fake.project})`);
    expect(check(report, 'location').message).toBe(`project ${fake.project}, zone ${ZONE} (UP), region us-central1`);
    expect(check(report, 'image').message).toMatch(/^family ubuntu-2404-lts-amd64 → ubuntu-2404-noble-amd64-v\d+$/);
    expect(check(report, 'network').message).toMatch(/network default, subnetwork default \(127\.\S+\/20\); machine types e2-standard-2, e2-standard-4 offered in us-central1-a/);
    expect(check(report, 'nat').message).toMatch(/not needed: public mode/);
    // 2 + 2 × 4 vCPUs, 3 VMs, 3 external addresses, 3 × 50 GB pd-balanced.
    expect(check(report, 'quota').message).toBe(
      'us-central1: CPUS needs 10, 24 free of 24; INSTANCES needs 3, 24 free of 24; IN_USE_ADDRESSES needs 3, 8 free of 8; SSD_TOTAL_GB needs 150, 500 free of 500',
    );
    expect(check(report, 'permissions')).toMatchObject({
      message: expect.stringMatching(/roles\/compute\.instanceAdmin\.v1 .*roles\/compute\.securityAdmin/),
      fix: expect.stringContaining(`gcloud projects add-iam-policy-binding ${fake.project}`),
    });
    expect(report.format()).toMatch(/^\[ok {2}\] user-data/);
    // Reads only, each once.
    expect(mutatingCalls(fake)).toEqual([]);
    // Independent reads are made together: their order is not fixed.
    expect(fake.server.received.map((r) => r.operation).sort()).toEqual([
      'compute.images.getFromFamily',
      'compute.machineTypes.get',
      'compute.machineTypes.get',
      'compute.networks.get',
      'compute.projects.get',
      'compute.regions.get',
      'compute.subnetworks.get',
      'compute.zones.get',
    ]);
    expect(fake.leaked()).toEqual({});
  });

  it('private mode with a Cloud NAT on the region passes; a service account adds iam.serviceAccountUser', async () => {
    const fake = await fakeGcp();
    fake.addCloudNat('us-central1');
    const report = await cluster(fake, { privateNetworking: true, serviceAccount: 'dask@p.iam.gserviceaccount.com' }).preflight();
    expect(report.ok).toBe(true);
    expect(check(report, 'nat')).toMatchObject({ status: 'pass', message: 'Cloud NAT nat on router nat-router-us-central1 covers subnetwork default' });
    // Private mode: no external addresses to count.
    expect(check(report, 'quota').message).not.toContain('IN_USE_ADDRESSES');
    expect(check(report, 'permissions').message).toContain('roles/iam.serviceAccountUser on dask@p.iam.gserviceaccount.com');
    expect(mutatingCalls(fake)).toEqual([]);
  });
});

/** One failing project per check: the failure, the fix it names, and start() failing first. */
interface FailingProject {
  name: string;
  check: string;
  setup?: (fake: FakeGcp) => void;
  options?: Partial<GCPClusterOptions>;
  error: { class: { isInstance(e: unknown): boolean }; option?: string; message: RegExp };
  fix: RegExp;
}

const FAILING: FailingProject[] = [
  {
    name: 'a project that does not exist',
    check: 'location',
    options: { projectId: 'no-such-project-1' },
    error: { class: ValidationError, option: 'projectId', message: /project no-such-project-1 does not exist/ },
    fix: /gcloud projects list/,
  },
  {
    name: 'the Compute Engine API not enabled',
    check: 'location',
    setup: (f) =>
      f.faults.fail('compute.projects.get', { status: 403, code: 'accessNotConfigured', message: `Compute Engine API has not been used in project ${f.projectNumber} before or it is disabled.` }),
    error: { class: PreflightError, message: /Compute Engine API is not enabled/ },
    fix: /gcloud services enable compute\.googleapis\.com --project dask-fake-project/,
  },
  {
    name: 'a zone that does not exist',
    check: 'location',
    options: { zone: 'us-central1-z' },
    error: { class: ValidationError, option: 'zone', message: /zone us-central1-z does not exist/ },
    fix: /gcloud compute zones list/,
  },
  {
    name: 'a zone that is DOWN',
    check: 'location',
    setup: (f) => f.setZoneStatus(ZONE, 'DOWN'),
    error: { class: PreflightError, message: /zone us-central1-a is DOWN, not UP/ },
    fix: /choose another zone of us-central1/,
  },
  {
    name: 'an image family that does not exist',
    check: 'image',
    options: { sourceImage: 'projects/debian-cloud/global/images/family/debian-99' },
    error: { class: ValidationError, option: 'sourceImage', message: /image family debian-99 does not exist in project debian-cloud/ },
    fix: /gcloud compute images list --project debian-cloud/,
  },
  {
    name: 'a network that does not exist',
    check: 'network',
    options: { network: 'vpc-missing' },
    error: { class: ValidationError, option: 'network', message: /network vpc-missing does not exist/ },
    fix: /gcloud compute networks list/,
  },
  {
    name: 'a subnetwork that does not exist',
    check: 'network',
    options: { subnetwork: 'sub-missing' },
    error: { class: ValidationError, option: 'subnetwork', message: /subnetwork sub-missing does not exist in region us-central1/ },
    fix: /gcloud compute networks subnets list/,
  },
  {
    name: 'a worker machine type the zone does not offer',
    check: 'network',
    setup: (f) => f.withdrawMachineType(ZONE, 'e2-standard-4'),
    error: { class: ValidationError, option: 'workerMachineType', message: /machine type e2-standard-4 is not offered in zone us-central1-a/ },
    fix: /gcloud compute machine-types list --zones us-central1-a/,
  },
  {
    name: 'item 5: private mode with the docker runtime and no Cloud NAT',
    check: 'nat',
    options: { privateNetworking: true },
    error: { class: PreflightError, message: /no Cloud NAT in us-central1 covers subnetwork default/ },
    fix: /gcloud compute routers create dask-nat-router .*--region us-central1 --network default.*gcloud compute routers nats create dask-nat .*--nat-all-subnet-ip-ranges/,
  },
  {
    name: 'a Cloud NAT that covers only another subnetwork',
    check: 'nat',
    options: { privateNetworking: true },
    setup: (f) => f.addRouter('us-central1', { name: 'r', nats: [{ name: 'other', sourceSubnetworkIpRangesToNat: 'LIST_OF_SUBNETWORKS', subnetworks: [{ name: 'other-subnet' }] }] }),
    error: { class: PreflightError, message: /no Cloud NAT in us-central1 covers subnetwork default/ },
    fix: /gcloud compute routers nats create/,
  },
  {
    name: 'too little CPUS quota',
    check: 'quota',
    options: { nWorkers: 3 },
    setup: () => undefined,
    error: { class: PreflightError, message: /not enough quota in us-central1 for the scheduler and 3 workers: CPUS needs 14, 8 free of 8/ },
    fix: /console\.cloud\.google\.com\/iam-admin\/quotas\?project=dask-fake-project/,
  },
  {
    name: 'too few external addresses left',
    check: 'quota',
    error: { class: PreflightError, message: /IN_USE_ADDRESSES needs 3, 2 free of 2/ },
    fix: /request more/,
  },
];

/** Quotas per failing project (the fake's quotas are fixed at start). */
const QUOTAS: Record<string, Parameters<typeof startFake>[0]> = {
  'too little CPUS quota': { quotas: { cpus: 8 } },
  'too few external addresses left': { quotas: { inUseAddresses: 2 } },
};

describe('GCP preflight: one failing project per check', () => {
  for (const p of FAILING) {
    it(`${p.name}: the ${p.check} check fails with its fix; start() throws it before any mutating call`, async () => {
      const fake = await fakeGcp(QUOTAS[p.name] ?? {});
      p.setup?.(fake);
      const report = await cluster(fake, p.options).preflight();
      expect(report.ok).toBe(false);
      const failed = report.failures;
      expect(failed.map((f) => f.id)).toEqual([p.check]);
      expect(failed[0]!.message).toMatch(p.error.message);
      expect(failed[0]!.fix).toMatch(p.fix);
      expect(report.format()).toContain(`fix: ${failed[0]!.fix}`);
      expect(mutatingCalls(fake)).toEqual([]);

      fake.server.clearLog();
      const c = cluster(fake, p.options);
      const err = (await c.start().catch((e: unknown) => e)) as DaskCloudError;
      expect(p.error.class.isInstance(err), `${String(err)}`).toBe(true);
      if (p.error.option) expect(err.details.option).toBe(p.error.option);
      expect(err.message).toMatch(p.error.message);
      expect(err.message).toMatch(p.fix);
      expect(c.state).toBe('failed');
      expect(mutatingCalls(fake)).toEqual([]);
      expect(fake.leaked()).toEqual({});
    });
  }

  it('the native runtime needs no NAT in private mode: the nat check passes without asking for routers', async () => {
    const fake = await fakeGcp();
    const report = await cluster(fake, { privateNetworking: true, runtime: 'native' }).preflight();
    expect(check(report, 'nat')).toMatchObject({ status: 'pass', message: expect.stringMatching(/not needed: the native runtime/) });
    expect(fake.server.calls('compute.routers.list')).toEqual([]);
  });

  it('no credentials anywhere: credentials fails with how to set them up, everything else is skipped, nothing is called', async () => {
    const fake = await fakeGcp();
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'gcp-nocred-'));
    const saved = { ...process.env };
    try {
      delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
      process.env.HOME = home;
      const { authClient: _a, ...noAuth } = fakeOptions(fake);
      const c = new GCPCluster({ ...noAuth, nWorkers: 1 });
      const report = await c.preflight();
      const creds = check(report, 'credentials');
      expect(creds.status).toBe('fail');
      expect(CredentialsError.isInstance(creds.error)).toBe(true);
      expect(creds.message).toMatch(/no Google credentials found: .*GOOGLE_APPLICATION_CREDENTIALS.*application-default credentials file \(.*gcp-nocred-.*\)/);
      expect(creds.fix).toMatch(/gcloud auth application-default login.*GOOGLE_APPLICATION_CREDENTIALS/);
      expect(report.checks.filter((x) => x.id !== 'user-data' && x.id !== 'credentials').every((x) => x.status === 'skip')).toBe(true);
      const err = (await new GCPCluster({ ...noAuth, nWorkers: 1 }).start().catch((e: unknown) => e)) as CredentialsError;
      expect(err.code).toBe('E_CREDENTIALS');
      expect(err.message).toContain('gcloud auth application-default login');
      expect(fake.server.received).toEqual([]);
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
      fs.rmSync(home, { recursive: true, force: true });
    }
  });

  it('GOOGLE_APPLICATION_CREDENTIALS naming a missing file: a CredentialsError that says so, before any call', async () => {
    const fake = await fakeGcp();
    const saved = process.env.GOOGLE_APPLICATION_CREDENTIALS;
    try {
      process.env.GOOGLE_APPLICATION_CREDENTIALS = '/nonexistent/dask-cloud/key.json';
      const { authClient: _a, ...noAuth } = fakeOptions(fake);
      const err = (await new GCPCluster({ ...noAuth, nWorkers: 1 }).start().catch((e: unknown) => e)) as CredentialsError;
      expect(err.code).toBe('E_CREDENTIALS');
      expect(err.message).toMatch(/GOOGLE_APPLICATION_CREDENTIALS names \/nonexistent\/dask-cloud\/key\.json, which cannot be read \(ENOENT\)/);
      expect(fake.server.received).toEqual([]);
    } finally {
      if (saved === undefined) delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
      else process.env.GOOGLE_APPLICATION_CREDENTIALS = saved;
    }
  });

  it('a token Compute refuses (401): the credentials check fails with where they came from, and the rest is skipped', async () => {
    const fake = await fakeGcp();
    fake.faults.fail('compute.projects.get', { status: 401, code: 'authError', message: 'Request had invalid authentication credentials.' });
    const report = await cluster(fake).preflight();
    expect(check(report, 'credentials')).toMatchObject({ status: 'fail', message: expect.stringMatching(/credentials from the authClient option could not be used: .*invalid authentication credentials/) });
    expect(check(report, 'location').status).toBe('skip');
    // The zone is read beside the credentials check; nothing after them is.
    expect(fake.server.received.map((r) => r.operation).sort()).toEqual(['compute.projects.get', 'compute.zones.get']);
  });
});
