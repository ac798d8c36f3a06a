/**
 * The simulated clouds of the scale benchmark (parent process): each in-repo API fake on its own
 * loopback address blocks, with per-operation latency, the cloud's documented rate limits, VM
 * lifecycles of a few seconds, and the stand-in booter. Also: what the child needs to reach the
 * fake, the minimum API calls each cloud needs, and what is left after close.
 */
import type { ReceivedCall } from '../../test/fakes/core/server';
import type { StandInBooter } from '../../test/sim/standin';
import { FakeGcp } from '../../test/fakes/gcp';
import { FakeEc2 } from '../../test/fakes/ec2';
import { FakeDigitalOcean } from '../../test/fakes/digitalocean';
import ec2Contract from '../../test/fakes/contracts/ec2.json';

export const CLOUDS = ['gcp', 'ec2', 'digitalocean'] as const;
export type CloudName = (typeof CLOUDS)[number];

/** Time from the create call until the cloud says "running" (before the simulated boot starts). */
export const TIME_TO_RUNNING_MS = 4_500;
/** Time a deletion takes (GCP STOPPING, EC2 shutting-down). */
export const DELETE_MS = 3_000;

/**
 * Loopback blocks per cloud, away from the ones the test suite uses (127.77, 127.78, 127.80-207,
 * 127.241-242): every 127/8 address is local on Linux, so whatever the library dials stays here.
 * /19s: a thousand workers, plus the addresses a scale-down/up cycle leaves held for a while.
 */
const BLOCKS: Record<CloudName, { privateCidr: string; publicCidr: string }> = {
  gcp: { privateCidr: '127.231.0.0/19', publicCidr: '127.231.128.0/19' },
  ec2: { privateCidr: '127.232.0.0/19', publicCidr: '127.232.128.0/19' },
  digitalocean: { privateCidr: '127.233.0.0/19', publicCidr: '127.233.128.0/19' },
};

/** Uniform random latency in [lo, hi] ms. */
const between = (lo: number, hi: number) => () => lo + Math.random() * (hi - lo);

/** Where the child process finds the fake (JSON, sent over IPC). */
export type ChildTarget =
  | { cloud: 'gcp'; port: number; project: string; zone: string }
  | { cloud: 'ec2'; endpoint: string; region: string; credentials: { accessKeyId: string; secretAccessKey: string } }
  | { cloud: 'digitalocean'; endpoint: string; token: string };

export interface SimulatedCloud {
  name: CloudName;
  target: ChildTarget;
  /** Every request the fake received, in order. */
  received(): ReceivedCall[];
  /** What the fake still holds that costs money or should have been deleted (one line per kind), empty when nothing. */
  leftovers(): string[];
  stop(): Promise<void>;
}

/** The limits and timings each fake runs with, for the header. */
export const LIMITS_TEXT: Record<CloudName, string[]> = {
  gcp: [
    'rate quotas per project and minute (Compute docs "rate quotas": Queries/mutations, Read, List, Operation read requests, 1,500/min each), 403 rateLimitExceeded',
    `instances PROVISIONING 1.5 s + STAGING 3 s = RUNNING after ${TIME_TO_RUNNING_MS / 1000} s (insert/bulkInsert operations finish then); firewall operations 3 s; delete 3 s`,
  ],
  ec2: [
    'request buckets per API (EC2 "request throttling" docs): Describe*/Get* 100 burst + 20/s; mutating (Create*, Authorize*, Revoke*, Delete*, RunInstances, TerminateInstances) 50 + 5/s [the mutating figures are our reading; verify]; 503 RequestLimitExceeded',
    'RunInstances instance-launch bucket 1,000 instances + 2/s (the fake\'s own rule); TerminateInstances\' resource bucket (1,000 + 20/s) not modelled',
    `pending ${TIME_TO_RUNNING_MS / 1000} s → running; shutting-down 3 s; terminated instances stay listed (1 h)`,
  ],
  digitalocean: [
    'API rate limits 250 requests/min (bursty) and 5,000/h (sliding), 429 too_many_requests with Retry-After (the fake\'s own rule)',
    `droplets new → active after ${TIME_TO_RUNNING_MS / 1000} s (addresses only then); firewall changes applied after 2 s; droplet limit raised to 2,000`,
  ],
};

export const LATENCY_TEXT = 'every request: reads (get/list/describe) 50–150 ms, mutations 150–300 ms, uniform, before the fake answers';

function readOp(cloud: CloudName, op: string): boolean {
  return READ_RE[cloud].test(op);
}

/** Reads and mutations of each cloud's operation names (the fake's operation ids). */
const READ_RE: Record<CloudName, RegExp> = {
  gcp: /\.(get|list|aggregatedList|getFromFamily|wait)$/,
  ec2: /^(Describe|Get)/,
  digitalocean: /_(get|list)$/,
};
const WRITE_RE: Record<CloudName, RegExp> = {
  gcp: /^(?!.*\.(get|list|aggregatedList|getFromFamily|wait)$|compute\.batch$)/,
  ec2: /^(?!Describe|Get)/,
  digitalocean: /^(?!.*_(get|list)$)/,
};

function addLatency(cloud: CloudName, faults: { latency(match: RegExp, ms: () => number): unknown }): void {
  faults.latency(READ_RE[cloud], between(50, 150));
  faults.latency(WRITE_RE[cloud], between(150, 300));
}

export async function startCloud(cloud: CloudName, booter: StandInBooter): Promise<SimulatedCloud> {
  const blocks = BLOCKS[cloud];
  for (const c of Object.values(blocks)) if (!c.startsWith('127.')) throw new Error(`refusing non-loopback block ${c}`);
  switch (cloud) {
    case 'gcp': {
      const fake = await FakeGcp.start({
        ...blocks,
        booter,
        lifecycleMs: { provisioningMs: 1_500, stagingMs: TIME_TO_RUNNING_MS - 1_500, stoppingMs: DELETE_MS, globalOperationMs: 3_000 },
      });
      addLatency(cloud, fake.faults);
      // Compute's rate quota groups, 1,500 requests per minute each.
      const ops = /^compute\.(zoneOperations|globalOperations|regionOperations)\./;
      fake.throttle({ perMinute: 1_500, match: ops });
      const notOps = (re: RegExp): RegExp => new RegExp(`^(?!compute\\.(zoneOperations|globalOperations|regionOperations)\\.)${re.source}`);
      fake.throttle({ perMinute: 1_500, match: notOps(/.*\.(list|aggregatedList)$/) });
      fake.throttle({ perMinute: 1_500, match: notOps(/.*\.(get|getFromFamily)$/) });
      fake.throttle({ perMinute: 1_500, match: notOps(/.*\.(?!(get|getFromFamily|list|aggregatedList)$)[A-Za-z]+$/) });
      const o = fake.clientOptions();
      return {
        name: cloud,
        target: { cloud, port: o.port, project: fake.project, zone: 'us-central1-a' },
        received: () => fake.server.received,
        leftovers: () => summarize(fake.leaked() as Record<string, unknown[]>),
        stop: () => fake.stop(),
      };
    }
    case 'ec2': {
      const fake = await FakeEc2.start({
        ...blocks,
        booter,
        lifecycleMs: { pendingMs: TIME_TO_RUNNING_MS, shuttingDownMs: DELETE_MS, stoppingMs: DELETE_MS },
        runInstancesRate: { burst: 1_000, perSecond: 2 },
      });
      for (const cidr of [...fake.subnets().map((s) => s.cidrBlock), fake.defaultVpc.cidrBlock]) {
        if (!cidr.startsWith('127.')) throw new Error(`FakeEc2 block ${cidr} is not loopback`);
      }
      addLatency(cloud, fake.faults);
      // One request bucket per API, as EC2 evaluates each API on its own.
      for (const op of Object.keys((ec2Contract as { operations: Record<string, unknown> }).operations)) {
        const nonMutating = readOp('ec2', op);
        fake.throttle({ burst: nonMutating ? 100 : 50, perSecond: nonMutating ? 20 : 5, operations: op });
      }
      const cfg = fake.clientConfig();
      return {
        name: cloud,
        target: { cloud, endpoint: cfg.endpoint, region: cfg.region, credentials: cfg.credentials },
        received: () => fake.server.received,
        leftovers: () => summarize(fake.leaked() as Record<string, unknown[]>),
        stop: () => fake.stop(),
      };
    }
    case 'digitalocean': {
      const fake = await FakeDigitalOcean.start({
        ...blocks,
        booter,
        lifecycleMs: TIME_TO_RUNNING_MS,
        firewallApplyMs: 2_000,
        dropletLimit: 2_000,
        rateLimit: { perMinute: 250, perHour: 5_000 },
      });
      if (!fake.pools.private.cidr.startsWith('127.') || !fake.pools.public.cidr.startsWith('127.')) throw new Error('FakeDigitalOcean blocks are not loopback');
      addLatency(cloud, fake.faults);
      return {
        name: cloud,
        target: { cloud, endpoint: fake.endpoint, token: fake.token },
        received: () => fake.server.received,
        leftovers: () => summarize(fake.leaked() as Record<string, unknown[]>),
        stop: () => fake.stop(),
      };
    }
  }
}

function summarize(leaked: Record<string, unknown[]>): string[] {
  return Object.entries(leaked)
    .filter(([, v]) => v.length > 0)
    .map(([kind, v]) => `${v.length} ${kind}`);
}

/**
 * The fewest calls each cloud needs, by phase, for a public-mode cluster with its own firewall:
 * creates and deletes the API cannot batch further, plus the reads without which an address or an
 * image is unknown. Checks a careful library adds (preflight, waits) come on top: the table shows
 * the calls made beside this floor.
 */
export function minimumCalls(cloud: CloudName, n: number): { start: Record<string, number>; down: Record<string, number>; up: Record<string, number>; close: Record<string, number>; notes: string } {
  const half = Math.floor(n / 2);
  switch (cloud) {
    case 'ec2': {
      // The launch bucket holds 1,000 instances: the scheduler plus N workers over 1,000 need a second call after a refill.
      const runs = 1 + (n > 0 ? Math.ceil(n / 999) : 0);
      return {
        start: { DescribeImages: 1, DescribeVpcs: 1, DescribeSubnets: 1, CreateSecurityGroup: 1, AuthorizeSecurityGroupIngress: 1, RunInstances: runs, DescribeInstances: 1 },
        down: half < n ? { TerminateInstances: 1 } : {},
        up: half < n ? { RunInstances: 1 } : {},
        close: { TerminateInstances: Math.ceil((n + 1) / 1000), DescribeInstances: 1, DeleteSecurityGroup: 1 },
        notes:
          'EC2: AMI, default VPC and subnet look-ups; one security group with all its rules in one Authorize call; RunInstances for the scheduler and ' +
          'one per 999 workers (MinCount/MaxCount; the launch bucket holds 1,000 instances; dask-cloud sends 250 a call, all in flight at once, ' +
          'so 1,000 workers take 4 calls instead of 2, made at once); one DescribeInstances for the scheduler\'s public IP ' +
          '(the private one is in the RunInstances answer). Scale: one TerminateInstances / one RunInstances (after a drained launch bucket it must wait for 2/s). ' +
          'Close: TerminateInstances per 1,000 ids, one DescribeInstances to see them gone, DeleteSecurityGroup.',
      };
    }
    case 'gcp':
      return {
        start: { 'images.getFromFamily': 1, 'firewalls.insert': 2, 'instances.insert': 1, 'instances.bulkInsert': n > 0 ? 1 : 0, 'instances.get': 2 },
        down: half < n ? { 'instances.delete': n - half } : {},
        up: half < n ? { 'instances.bulkInsert': 1 } : {},
        close: { 'instances.delete': n + 1, 'firewalls.delete': 2 },
        notes:
          'GCP: image family look-up; two firewall rules (members to each other by tag, 8786/8788 from ingressCidrs: different sources); insert for the ' +
          'scheduler and one bulkInsert for up to 5,000 workers; two instances.get for the scheduler (internal IP after insert, external IP when RUNNING). ' +
          'Compute has no bulk delete: one instances.delete per VM on scale-down and close (each counts against the quotas; more than 8 travel in ' +
          'batches of up to 1,000 calls per HTTP request, shown as compute.batch), plus the two firewall deletes. Operation waits are not counted as needed.',
      };
    case 'digitalocean':
      return {
        start: { tags_create: 1, firewalls_create: 1, droplets_create: 1 + Math.ceil(n / 10), droplets_get: 1, droplets_list: Math.ceil((n + 1) / 200) },
        down: half < n ? { droplets_destroy: n - half } : {},
        up: half < n ? { droplets_create: Math.ceil((n - half) / 10) } : {},
        close: { droplets_destroy_byTag: 1, firewalls_delete: 1, tags_delete: 2 },
        notes:
          'DigitalOcean: the cluster tag must exist before a firewall names it; one firewall; droplets_create for the scheduler and one per 10 workers; ' +
          'one droplets_get once the scheduler is active (addresses come only then); one droplets_list per 200 droplets for the workers\' addresses. ' +
          'Scale-down: one droplets_destroy per droplet (by-tag would take every worker). Close: delete by tag, the firewall, the two cluster tags.',
      };
  }
}

/** Is this request a throttling answer? (Request buckets are `rejectedBy: 'throttle'`; EC2\'s launch bucket answers 503 from the handler.) */
export function isThrottle(cloud: CloudName, c: ReceivedCall): boolean {
  if (c.rejectedBy === 'throttle') return true;
  return cloud === 'ec2' && c.operation === 'RunInstances' && c.status === 503;
}

export { readOp };
