/**
 * Shared setup for the EC2 provider tests: a FakeEc2 whose every address is on loopback, the
 * options that point an EC2Cluster at it, and a booter that runs each instance's Dask process.
 *
 * Network safety: every fake here carves its subnets, public addresses and VPC CIDR from
 * 127.77.0.0/16, so whatever the library dials (scheduler, workers, Python client) is loopback.
 * `assertLoopbackFake` checks it before a test starts a cluster.
 */
import { FakeEc2, type FakeEc2Options } from '../../fakes/ec2';
import { LOOPBACK_POOLS } from '../../sim/process-booter';
import type { EC2ClusterOptions } from '../../../providers/ec2';

/**
 * A pair of loopback /20 blocks inside LOOPBACK_POOLS' /16, by slot (1..7; slot 0 is
 * LOOPBACK_POOLS itself, which other providers' tests use). Test files that may run in parallel
 * use different slots, so their fakes never hand out the same scheduler address.
 */
export function loopbackBlocks(slot: number): { privateCidr: string; publicCidr: string } {
  if (!Number.isInteger(slot) || slot < 1 || slot > 7) throw new Error(`slot must be 1..7, got ${slot}`);
  const [a, b] = LOOPBACK_POOLS.private.split('.');
  return { privateCidr: `${a}.${b}.${slot * 16}.0/20`, publicCidr: `${a}.${b}.${128 + slot * 16}.0/20` };
}

/** A FakeEc2 on the loopback blocks of `slot` (never the 10.77 defaults: see the file comment). */
export async function startFake(slot: number, opts: Omit<FakeEc2Options, 'privateCidr' | 'publicCidr'> = {}): Promise<FakeEc2> {
  const fake = await FakeEc2.start({ ...loopbackBlocks(slot), ...opts });
  assertLoopbackFake(fake);
  return fake;
}

/** Throws unless every block the fake hands addresses from is loopback. */
export function assertLoopbackFake(fake: FakeEc2): void {
  for (const cidr of [...fake.subnets().map((s) => s.cidrBlock), fake.defaultVpc.cidrBlock]) {
    if (!cidr.startsWith('127.')) throw new Error(`FakeEc2 block ${cidr} is not loopback: tests must never dial it`);
  }
}

/** EC2Cluster options that reach `fake` with static test credentials. */
export function fakeOptions(fake: FakeEc2): Pick<EC2ClusterOptions, 'region' | 'endpoint' | 'credentials' | 'closeOnSignals' | 'memberWatchIntervalMs'> {
  const cfg = fake.clientConfig();
  return {
    region: cfg.region,
    endpoint: cfg.endpoint,
    credentials: cfg.credentials,
    closeOnSignals: false,
    // Start/scale/close tests assert exact call sequences; the member watch would add lists at
    // random points. The tests about the watch turn it on.
    memberWatchIntervalMs: 0,
  };
}

/**
 * The read-only calls start() makes first (preflight) with default options and a cluster
 * security group: DescribeRegions is the first read that proves the credentials; the three
 * DryRun creates (scheduler, workers, security group) check permissions and create nothing.
 * After DescribeRegions the independent reads are made together (test/providers/ec2/
 * preflight.test.ts proves the overlap), so their order is not fixed: the rest is sorted, as
 * `takePreflight` returns it.
 */
export const PREFLIGHT_OPS = [
  'DescribeRegions',
  'CreateSecurityGroup', // DryRun
  'DescribeAvailabilityZones',
  'DescribeImages',
  'DescribeInstanceTypeOfferings',
  'DescribeInstanceTypes',
  'DescribeSubnets',
  'DescribeVpcs',
  'RunInstances', // DryRun
  'RunInstances', // DryRun
] as const;

/** Removes the preflight's calls from the front of `ops`: the first, then the rest sorted (see PREFLIGHT_OPS). */
export function takePreflight(ops: string[]): string[] {
  const [first, ...rest] = ops.splice(0, PREFLIGHT_OPS.length);
  return first === undefined ? [] : [first, ...rest.sort()];
}

/** Operation names of the requests that were not DryRun, in order. */
export function nonDryRun(f: FakeEc2): (string | undefined)[] {
  return f.server.received.filter((c) => String(c.params.DryRun) !== 'true').map((c) => c.operation);
}

/** Calls that poll or retry a varying number of times from run to run. */
const POLLED = new Set(['DescribeInstances', 'DeleteSecurityGroup']);

/** Operation names in order, consecutive repeats of polled calls collapsed to one. */
export function collapsed(operations: (string | undefined)[]): string[] {
  const ops = operations.map((op) => op ?? '(unrouted)');
  return ops.filter((op, i) => !(POLLED.has(op) && op === ops[i - 1]));
}


/**
 * The security group's rules are authorised while the scheduler launches: the two requests may
 * arrive in either order. This puts an AuthorizeSecurityGroupIngress that came right after a
 * RunInstances before it, so call sequences compare as one.
 */
export function authorizeFirst<T extends string | undefined>(operations: T[]): T[] {
  const ops = [...operations];
  for (let i = 1; i < ops.length; i++) {
    if (ops[i] === 'AuthorizeSecurityGroupIngress' && ops[i - 1] === 'RunInstances') [ops[i - 1], ops[i]] = [ops[i]!, ops[i - 1]!];
  }
  return ops;
}

/** Tags of a stored resource as an object. */
export function tagMap(tags: { key: string; value: string }[]): Record<string, string> {
  return Object.fromEntries(tags.map((t) => [t.key, t.value]));
}

export { NatProcessBooter } from '../../sim/nat-booter';
export { eventually } from '../../helpers/eventually';
