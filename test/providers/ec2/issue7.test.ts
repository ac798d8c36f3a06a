/**
 * Issue 7, EC2 part: each test is named after the item it proves and ran red against the code
 * before the fix (against the corrected fake). Nothing is booted: every address is loopback
 * (helpers.ts), and starts that get as far as the readiness wait end in a short timeout.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EC2Cluster, type EC2ClusterOptions } from '../../../providers/ec2';
import { ClusterStartError, CredentialsError, DaskCloudError, ValidationError } from '../../../src/errors';
import { checkFakesAndClose, failedStart } from '../../helpers/fakes';
import { imageIdFor, type FakeEc2 } from '../../fakes/ec2';
import { fakeOptions, startFake } from './helpers';

/** Loopback slot of this file: see helpers.ts. */
const SLOT = 4;
const fakes: FakeEc2[] = [];
afterEach(() => checkFakesAndClose(fakes, [], async () => vi.unstubAllEnvs()));

async function fake(opts: Parameters<typeof startFake>[1] = {}): Promise<FakeEc2> {
  const f = await startFake(SLOT, { lifecycleMs: { pendingMs: 100, shuttingDownMs: 100 }, ...opts });
  fakes.push(f);
  return f;
}

function cluster(f: FakeEc2, options: EC2ClusterOptions = {}): EC2Cluster {
  return new EC2Cluster({ ...fakeOptions(f), schedulerTimeoutMs: 1_000, ...options });
}

function leakedCount(f: FakeEc2): number {
  return Object.values(f.leaked()).flat().length;
}

/** What start() threw (it must throw). */
async function startError(c: EC2Cluster): Promise<DaskCloudError> {
  const err = await c.start().then(
    () => {
      throw new Error('start() should have failed');
    },
    (e: unknown) => e,
  );
  expect(DaskCloudError.isInstance(err), String(err)).toBe(true);
  return err as DaskCloudError;
}

/** RunInstances requests, DryRuns included. */
function runs(f: FakeEc2) {
  return f.server.calls('RunInstances');
}

/** The default subnet the old choice (most free addresses, then id) would take. */
function firstById(f: FakeEc2) {
  return [...f.subnets()].sort((a, b) => b.addresses.inUse().length - a.addresses.inUse().length || a.subnetId.localeCompare(b.subnetId))[0]!;
}

describe('issue 7 on EC2', () => {
  it('item 2: the default subnet is in a zone that offers both instance types', async () => {
    const f = await fake({ region: 'us-east-1' });
    // The zone the old choice lands in lacks the defaults, as us-east-1e lacks t3 and m6i.
    const bad = firstById(f).availabilityZone;
    f.withholdInstanceTypes(bad, ['t3.medium', 'm6i.large']);
    const c = cluster(f, { nWorkers: 2 });
    const err = await failedStart(c);
    expect(err.details.phase).toBe('scheduler'); // got as far as the readiness wait: both creates worked
    const offerings = f.server.calls('DescribeInstanceTypeOfferings').map((r) => r.normalized as { LocationType: string; Filter: { Name: string; Value: string[] }[] });
    expect(offerings[0]!.LocationType).toBe('availability-zone');
    expect(offerings[0]!.Filter.find((x) => x.Name === 'instance-type')!.Value.sort()).toEqual(['m6i.large', 't3.medium']);
    expect(runs(f).filter((r) => r.params.DryRun === undefined).map((r) => r.status)).toEqual([200, 200]);
    expect(f.instances()).toHaveLength(3);
    expect(f.instances().every((i) => i.availabilityZone !== bad)).toBe(true);
    expect(leakedCount(f)).toBe(0);
  });

  it('item 2: Unsupported from RunInstances anyway moves to another eligible zone with a new ClientToken', async () => {
    const f = await fake({ region: 'us-east-1' });
    let chosen = '';
    // The offerings change between preflight and the create: the zone preflight chose (seen in
    // its DryRun) stops offering t3.medium.
    const c = cluster(f, {
      nWorkers: 1,
      onEvent: (e) => {
        if (e.type !== 'phase-start' || e.phase !== 'network') return;
        const subnetId = runs(f)[0]!.params['NetworkInterface.1.SubnetId'];
        chosen = f.subnets().find((s) => s.subnetId === subnetId)!.availabilityZone;
        f.withholdInstanceTypes(chosen, ['t3.medium']);
      },
    });
    const err = await failedStart(c);
    expect(err.details.phase).toBe('scheduler');
    const sched = runs(f).filter((r) => r.params.InstanceType === 't3.medium' && r.params.DryRun === undefined);
    expect(sched.map((r) => r.status)).toEqual([400, 200]);
    expect(new Set(sched.map((r) => r.params.ClientToken)).size).toBe(2);
    expect(new Set(sched.map((r) => r.params['NetworkInterface.1.SubnetId'])).size).toBe(2);
    const scheduler = f.instances().find((i) => i.instanceType === 't3.medium')!;
    expect(scheduler.availabilityZone).not.toBe(chosen);
    // Workers go where the scheduler went.
    expect(f.instances().every((i) => i.availabilityZone === scheduler.availabilityZone)).toBe(true);
    expect(leakedCount(f)).toBe(0);
  });

  it('item 2: an explicit subnetId or availabilityZone whose zone lacks a type is a ValidationError naming the option, before anything is created', async () => {
    const f = await fake({ region: 'us-east-1' });
    const subnet = f.subnets()[1]!;
    f.withholdInstanceTypes(subnet.availabilityZone, ['m6i.large']);
    const bySubnet = await startError(cluster(f, { subnetId: subnet.subnetId }));
    expect(ValidationError.isInstance(bySubnet)).toBe(true);
    expect(bySubnet.details.option).toBe('subnetId');
    expect(bySubnet.message).toContain(`m6i.large is not offered in ${subnet.availabilityZone}`);
    const byZone = await startError(cluster(f, { availabilityZone: subnet.availabilityZone }));
    expect(byZone.details.option).toBe('availabilityZone');
    expect(f.mutatingCalls()).toEqual([]);
    expect(leakedCount(f)).toBe(0);
  });

  it('item 5: private mode with the docker runtime needs a NAT route: checked before anything is created, with the fix', async () => {
    const f = await fake();
    const err = await startError(cluster(f, { nWorkers: 1, privateNetworking: true }));
    expect(err.code).toBe('E_PREFLIGHT');
    expect(err.message).toMatch(/0\.0\.0\.0\/0.*igw-/);
    expect(err.message).toMatch(/NAT gateway/);
    expect(String(err.details.fix)).toMatch(/create-nat-gateway|nat-gateway-id/);
    expect(f.mutatingCalls()).toEqual([]);

    // The native runtime needs no egress; a subnet routed through a NAT passes.
    f.server.clearLog();
    const native = await failedStart(cluster(f, { nWorkers: 1, privateNetworking: true, runtime: 'native' }));
    expect(native.details.phase).toBe('scheduler');
    f.routeThroughNat();
    const viaNat = await failedStart(cluster(f, { nWorkers: 1, privateNetworking: true }));
    expect(viaNat.details.phase).toBe('scheduler');
    expect(f.server.operations()).toContain('DescribeRouteTables');
    expect(leakedCount(f)).toBe(0);
  });

  it('item 7: a scheduler that terminates before the first watch tick fails the start quickly with that cause', async () => {
    const f = await fake({ lifecycleMs: { pendingMs: 50, shuttingDownMs: 50 } });
    f.failLaunches({ code: 'Server.InternalError', message: 'Server.InternalError: Internal error on launch' });
    const timeoutMs = 20_000;
    // Private + native: the private address comes from RunInstances, so nothing polls the instance.
    const c = cluster(f, { nWorkers: 0, privateNetworking: true, runtime: 'native', memberWatchIntervalMs: 500, schedulerTimeoutMs: timeoutMs });
    const t0 = Date.now();
    const err = await failedStart(c);
    // Terminated 100 ms after launch, seen at the first tick (500 ms): far inside the timeout.
    expect(Date.now() - t0).toBeLessThan(timeoutMs / 2);
    expect(err.details.phase).toBe('scheduler');
    expect(err.message).toMatch(/terminated/);
    expect(err.message).not.toMatch(/was not ready within/);
    expect(leakedCount(f)).toBe(0);
  });

  it('item 8: a rollback whose TerminateInstances fails still throws the real cause, leftovers and the cleanup command; cleanup then empties the fake', async () => {
    const f = await fake();
    const c = cluster(f, { nWorkers: 1, onEvent: (e) => e.type === 'member-launched' && e.role === 'scheduler' && f.faults.fail('TerminateInstances', { status: 403, code: 'UnauthorizedOperation', message: 'You are not authorized to perform this operation.' }) });
    const err = await failedStart(c);
    expect(err.message).toMatch(/was not ready within 1000 ms/); // the real cause, not the rollback's
    expect(err.message).toContain('UnauthorizedOperation');
    expect(err.details.leftovers).toEqual(expect.arrayContaining([expect.stringMatching(/^instances i-/)]));
    expect(err.details.cleanupCommand).toBe(`dask-cloud cleanup --provider ec2 --region ${f.region} --cluster ${c.id}`);
    expect(err.message).toContain(String(err.details.cleanupCommand));
    expect(c.state).toBe('failed');
    // Every deletion was still tried: the security group too (refused: the instances hold it).
    expect(f.server.calls('DeleteSecurityGroup').map((r) => r.status)).toEqual([400]);
    expect(leakedCount(f)).toBeGreaterThan(0);

    f.faults.clear();
    const report = await EC2Cluster.cleanup({ ...fakeOptions(f), clusterIds: [c.id] });
    expect(report.clusters.map((x) => [x.clusterId, x.deleted])).toEqual([[c.id, true]]);
    expect(f.leaked()).toEqual({});
  });

  it('item 9: console output for errors asks for the latest output, and falls back without Latest on types that do not support it', async () => {
    const f = await fake({ lifecycleMs: { pendingMs: 0, shuttingDownMs: 100 } });
    const nitro = await failedStart(cluster(f, { nWorkers: 0 }));
    // Only the live console has cloud-init's last line; the boot-time buffer ends at the kernel.
    expect(nitro.message).toContain('Cloud-init v. 22.4.2 finished');
    expect(f.server.calls('GetConsoleOutput').map((r) => [r.params.Latest, r.status])).toEqual([['true', 200]]);

    f.server.clearLog();
    const xen = await failedStart(cluster(f, { nWorkers: 0, schedulerInstanceType: 't2.micro' }));
    expect(f.server.calls('GetConsoleOutput').map((r) => [r.params.Latest, r.status])).toEqual([
      ['true', 400], // UnsupportedOperation on a Xen type
      [undefined, 200],
    ]);
    expect(xen.message).toContain('Linux version');
    expect(leakedCount(f)).toBe(0);
  });

  it('item 11: bad input is a typed error with zero API calls', async () => {
    const f = await fake();
    // Random text does not compress: the user-data stays over 16 KB even gzipped.
    const huge = randomBytes(20_000).toString('base64');
    const bad: [EC2ClusterOptions, string, string | undefined][] = [
      [{ bootstrap: [`echo ${huge}`] }, 'E_USER_DATA_TOO_LARGE', undefined],
      [{ env: { GREETING: 'a\0b' } }, 'E_INVALID_OPTION', 'env'],
      [{ dockerImage: 'not an image!' }, 'E_INVALID_OPTION', 'dockerImage'],
    ];
    for (const [options, code, option] of bad) {
      // Thrown by the constructor or by start(): either way before any call.
      const err = (await (async () => cluster(f, options).start())().then(
        () => new Error('start() should have failed'),
        (e: unknown) => e,
      )) as DaskCloudError;
      expect(DaskCloudError.isInstance(err), String(err)).toBe(true);
      expect([err.code, err.details.option], JSON.stringify(Object.keys(options))).toEqual([code, option]);
      expect(err.message).not.toContain('a\0b');
    }
    for (const tags of [{ 'aws:team': 'x' }, { ['k'.repeat(129)]: 'x' }, { team: 'v'.repeat(257) }, Object.fromEntries(Array.from({ length: 47 }, (_, i) => [`t${i}`, 'x']))]) {
      expect(() => cluster(f, { tags }), JSON.stringify(Object.keys(tags)).slice(0, 40)).toThrow(ValidationError);
    }
    expect(f.server.received).toEqual([]);
  });

  it('item 12: missing credentials are a CredentialsError before any call, saying how to set them up', async () => {
    const f = await fake();
    // An empty environment for the SDK's provider chain; instance metadata off (never dialled).
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI', 'AWS_CONTAINER_CREDENTIALS_FULL_URI', 'AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_ROLE_ARN']) {
      vi.stubEnv(k, '');
    }
    vi.stubEnv('AWS_SHARED_CREDENTIALS_FILE', '/nonexistent/dask-cloud-test/credentials');
    vi.stubEnv('AWS_CONFIG_FILE', '/nonexistent/dask-cloud-test/config');
    vi.stubEnv('AWS_EC2_METADATA_DISABLED', 'true');
    const { credentials: _none, ...noCredentials } = fakeOptions(f);
    const err = await startError(new EC2Cluster({ ...noCredentials, nWorkers: 1 }));
    expect(CredentialsError.isInstance(err), String(err)).toBe(true);
    expect(err.code).toBe('E_CREDENTIALS');
    expect(err.message).toContain('aws configure');
    expect(err.message).toContain('AWS_PROFILE');
    expect(err.message).toContain('AWS_ACCESS_KEY_ID');
    expect(f.server.received).toEqual([]);
  });

  it('item 12: credentials EC2 refuses are a CredentialsError after the first read call, and nothing else is called', async () => {
    const f = await fake();
    f.refuseCredentials();
    const err = await startError(cluster(f, { nWorkers: 1 }));
    expect(CredentialsError.isInstance(err), String(err)).toBe(true);
    expect(err.message).toMatch(/AuthFailure/);
    expect(err.message).toContain('the credentials option');
    expect(err.message).not.toContain(f.clientConfig().credentials.secretAccessKey);
    expect(f.server.operations()).toHaveLength(1);
  });

  it('item 13: Invalid*.NotFound for ami, subnetId, vpc and securityGroups are ValidationErrors naming the option, from preflight', async () => {
    const f = await fake();
    const missing: [EC2ClusterOptions, string, string][] = [
      [{ ami: imageIdFor('no-such-image') }, 'ami', 'InvalidAMIID.NotFound'],
      [{ subnetId: 'subnet-0123456789abcdef0' }, 'subnetId', 'InvalidSubnetID.NotFound'],
      [{ vpc: 'vpc-0123456789abcdef0' }, 'vpc', 'InvalidVpcID.NotFound'],
      [{ securityGroups: ['sg-0123456789abcdef0'] }, 'securityGroups', 'InvalidGroup.NotFound'],
    ];
    for (const [options, option, code] of missing) {
      const events: string[] = [];
      const err = await startError(cluster(f, { ...options, onEvent: (e) => e.type === 'phase-start' && events.push(e.phase) }));
      expect(ValidationError.isInstance(err), `${option}: ${String(err)}`).toBe(true);
      expect(ClusterStartError.isInstance(err)).toBe(false);
      expect(err.details.option).toBe(option);
      expect(err.message).toContain(code);
      expect(events.at(-1)).toBe('preflight');
    }
    expect(f.mutatingCalls()).toEqual([]);
  });
});
