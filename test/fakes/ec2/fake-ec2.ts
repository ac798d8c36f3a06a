/**
 * FakeEc2: an in-memory EC2 (Query API 2016-11-15) on loopback that the real `@aws-sdk/client-ec2`
 * talks to. Instances follow EC2's state machine on an injectable clock, security groups behave
 * like VPC security groups (duplicates, dependency violations), errors come back in EC2's XML
 * shape with EC2's codes, and with a `VmBooter` every instance that reaches `running` boots a
 * simulated VM whose firewall follows its security groups.
 *
 * Every request is checked against the published EC2 contract first (test/fakes/contracts/ec2.json).
 */
import { randomBytes } from 'node:crypto';
import {
  FakeApiError,
  FakeServer,
  IdAllocator,
  IpAllocator,
  PendingWork,
  Lifecycle,
  PRIVATE_BLOCK,
  PUBLIC_BLOCK,
  ResourceRegistry,
  TokenBucket,
  realClock,
  type BootedVm,
  type Clock,
  type ContractViolation,
  type FakeRequest,
  type FaultHandle,
  type Faults,
  type FirewallRule,
  type OperationMatcher,
  type ResourceSnapshot,
  type VmBooter,
} from '../core';
import {
  DEFAULT_TIMINGS,
  IMAGES,
  INSTANCE_TYPES,
  REGIONS,
  RULES_PER_GROUP,
  STATE_CODES,
  TAGS_PER_RESOURCE,
  USER_DATA_LIMIT,
  type Ec2Image,
  type Ec2Timings,
  type InstanceStateName,
} from './catalog';
import { applyFilters, paginate, type Ec2Tag } from './filters';
import type {
  DescribeInput,
  Ec2Instance,
  Ec2Route,
  Ec2RouteTable,
  Ec2SecurityGroup,
  Ec2SgRule,
  Ec2Subnet,
  Ec2Volume,
  Ec2Vpc,
  IpPermissionInput,
  RunInstancesInput,
  SgIngressInput,
  TagSpecInput,
} from './model';
import { ec2ErrorShape, el, fields, isoTime, list, xmlResponse, Xml, type XmlChild } from './xml';

export interface FakeEc2Options {
  /** Default `eu-west-1`. Availability zones are `<region>a`, `b`, `c`. */
  region?: string;
  /** The caller's account (`ownerId`). Default `123456789012`. */
  accountId?: string;
  /** Drives lifecycles, throttling buckets and injected latency. Default: real time. */
  clock?: Clock;
  /** Boots a simulated VM for every instance that reaches `running`. */
  booter?: VmBooter;
  /** A number sets every transition time; an object overrides single timings (see Ec2Timings). */
  lifecycleMs?: number | Partial<Ec2Timings>;
  /**
   * Private block the default subnets are carved from (one per AZ). Default PRIVATE_BLOCK
   * (10.77.0.0/20); pass the simulated network's `privateCidr` when booting VMs.
   */
  privateCidr?: string;
  /** Public block (Elastic/auto-assigned public IPs). Default PUBLIC_BLOCK (10.77.128.0/20). */
  publicCidr?: string;
  /**
   * The default VPC's CIDR. Default: `privateCidr` when given (the VPC holds its subnets and
   * nothing else — in particular not the public block, as on EC2, so rules a provider derives
   * from the VPC CIDR admit members, not the internet), else 10.77.0.0/16.
   */
  vpcCidr?: string;
  /**
   * RunInstances' resource rate limit: a bucket of instances (EC2: burst 1 000, then 2 per second).
   * `false` disables it.
   */
  runInstancesRate?: { burst: number; perSecond: number } | false;
  /** Contract handling (default 'reject'). */
  contractMode?: 'reject' | 'record';
}

/** Per-instance machinery that is not part of the resource as EC2 shows it. */
interface InstanceRuntime {
  lifecycle: Lifecycle<InstanceStateName>;
  booting?: Promise<void>;
  vm?: BootedVm;
  /** JSON of the firewall last given to the booter (boot or setFirewall). */
  firewallSent?: string;
  /** Firewall updates of this VM, one after the other (a booter resolves peers when each runs). */
  firewallQueue?: Promise<void>;
  /** Set before we stop the VM ourselves, so its exit is not mistaken for a guest shutdown. */
  stopRequested?: boolean;
}

interface ReservationRecord {
  reservationId: string;
  instanceIds: string[];
  fingerprint: string;
}

const DEFAULT_VPC_CIDR = '10.77.0.0/16';
const CANNED_CONSOLE =
  `[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)\n` +
  `[    3.141592] cloud-init[412]: Cloud-init v. 22.4.2 running 'init' at $TIME. Up 3.14 seconds.\n` +
  `[    9.265358] cloud-init[611]: Cloud-init v. 22.4.2 finished. Datasource DataSourceEc2Local.  Up 9.26 seconds\n`;
const INSTANCE_ID = /^i-([0-9a-f]{8}|[0-9a-f]{17})$/;
const GROUP_ID = /^sg-([0-9a-f]{8}|[0-9a-f]{17})$/;
const IMAGE_ID = /^ami-([0-9a-f]{8}|[0-9a-f]{17})$/;

const INSTANCE_FILTERS = [
  'instance-id', 'instance-state-name', 'instance-state-code', 'instance-type', 'image-id', 'vpc-id', 'subnet-id',
  'availability-zone', 'private-ip-address', 'ip-address', 'reservation-id', 'client-token', 'key-name',
  'instance.group-id', 'instance.group-name', 'instance-lifecycle', 'metadata-options.http-tokens', 'iam-instance-profile.arn',
];
const SG_FILTERS = ['group-id', 'group-name', 'vpc-id', 'description', 'owner-id', 'ip-permission.group-id', 'ip-permission.cidr', 'ip-permission.protocol', 'ip-permission.from-port', 'ip-permission.to-port'];
const VPC_FILTERS = ['vpc-id', 'is-default', 'isDefault', 'cidr', 'cidr-block-association.cidr-block', 'state', 'owner-id', 'dhcp-options-id'];
const SUBNET_FILTERS = ['subnet-id', 'vpc-id', 'availability-zone', 'availabilityZone', 'availability-zone-id', 'default-for-az', 'defaultForAz', 'map-public-ip-on-launch', 'cidr-block', 'cidr', 'cidrBlock', 'state', 'owner-id'];
const IMAGE_FILTERS = ['name', 'architecture', 'state', 'image-id', 'owner-id', 'owner-alias', 'root-device-type', 'virtualization-type', 'is-public', 'image-type', 'description'];
const OFFERING_FILTERS = ['instance-type', 'location'];
const ROUTE_TABLE_FILTERS = ['route-table-id', 'vpc-id', 'association.subnet-id', 'association.main', 'route.destination-cidr-block', 'route.nat-gateway-id', 'route.gateway-id', 'route.instance-id', 'route.state'];
const REGION_FILTERS = ['region-name', 'opt-in-status', 'endpoint'];
const ZONE_FILTERS = ['zone-name', 'zone-id', 'state', 'region-name', 'zone-type', 'opt-in-status'];

/**
 * Operations that change something: a test proves a read-only path with `fake.mutatingCalls()`,
 * which leaves out DryRun requests (EC2 answers them without making the change).
 */
export const MUTATING_OPERATIONS: ReadonlySet<string> = new Set([
  'RunInstances',
  'TerminateInstances',
  'CreateTags',
  'CreateSecurityGroup',
  'AuthorizeSecurityGroupIngress',
  'RevokeSecurityGroupIngress',
  'DeleteSecurityGroup',
]);

/** How an instance that fails at launch ends (EC2 StateReason codes, e.g. `Server.InternalError`). */
export interface LaunchFailure {
  code: string;
  message: string;
}

const STATUS_FILTERS = ['availability-zone', 'instance-state-name', 'instance-state-code', 'instance-status.status', 'system-status.status', 'instance-status.reachability', 'system-status.reachability'];

/**
 * A fake EC2 endpoint. `await FakeEc2.start()`, then `new EC2Client(fake.clientConfig())`.
 * See test/fakes/README.md for the shared core it builds on.
 */
export class FakeEc2 implements AsyncDisposable {
  readonly server: FakeServer;
  readonly region: string;
  readonly accountId: string;
  readonly clock: Clock;
  readonly timings: Ec2Timings;
  /** Boot / firewall / VM-stop failures from the booter (the instance stays as EC2 says it is). */
  readonly bootErrors: { instanceId: string; phase: 'boot' | 'setFirewall' | 'stop'; error: unknown }[] = [];

  private readonly registry = new ResourceRegistry();
  private readonly ids = new IdAllocator();
  private readonly publicIps: IpAllocator;
  private readonly booter?: VmBooter;
  private readonly runtime = new Map<string, InstanceRuntime>();
  private readonly reservations = new Map<string, ReservationRecord>();
  private readonly clientTokens = new Map<string, string>();
  private readonly pendingWork = new PendingWork();
  private runBucket?: TokenBucket;
  private stopped = false;
  /** Instance types a zone does not offer (zone → types). Every zone offers every type otherwise. */
  private readonly withheld = new Map<string, Set<string>>();
  /** Operations the caller's IAM policy does not allow (UnauthorizedOperation). */
  private readonly denied = new Set<string>();
  /** Every request fails with AuthFailure (unknown or revoked access key). */
  private credentialsRefused = false;
  private dryRunIgnored = false;
  /** Instances launched from now on that fail instead of running, oldest first. */
  private readonly launchFailures: LaunchFailure[] = [];
  readonly defaultVpc: Ec2Vpc;

  private constructor(opts: FakeEc2Options) {
    this.region = opts.region ?? 'eu-west-1';
    this.accountId = opts.accountId ?? '123456789012';
    this.clock = opts.clock ?? realClock;
    this.booter = opts.booter;
    const lm = opts.lifecycleMs;
    this.timings =
      typeof lm === 'number'
        ? { ...DEFAULT_TIMINGS, pendingMs: lm, shuttingDownMs: lm, stoppingMs: lm }
        : { ...DEFAULT_TIMINGS, ...(lm ?? {}) };
    this.server = new FakeServer({
      name: 'ec2',
      contract: 'ec2',
      contractMode: opts.contractMode,
      errorShape: ec2ErrorShape,
      dispatch: (req) => ({ operation: req.form?.Action ?? (typeof req.query.Action === 'string' ? req.query.Action : '') }),
      clock: this.clock,
    });
    if (opts.runInstancesRate !== false) this.throttleRunInstances(opts.runInstancesRate ?? { burst: 1_000, perSecond: 2 });

    // Seeded infrastructure: the default VPC, one default subnet per AZ, its default security group, public images.
    this.publicIps = reservedAllocator(opts.publicCidr ?? PUBLIC_BLOCK);
    const privateCidr = opts.privateCidr ?? PRIVATE_BLOCK;
    const vpcCidr = opts.vpcCidr ?? opts.privateCidr ?? DEFAULT_VPC_CIDR;
    this.defaultVpc = this.registry.put<Ec2Vpc>('vpcs', stableId('vpc-', this.region + vpcCidr), {
      vpcId: stableId('vpc-', this.region + vpcCidr),
      cidrBlock: vpcCidr,
      cidrAssociationId: stableId('vpc-cidr-assoc-', this.region + vpcCidr),
      dhcpOptionsId: stableId('dopt-', this.region),
      isDefault: true,
      tags: [],
    });
    ['a', 'b', 'c'].forEach((letter, i) => {
      const cidr = carve(privateCidr, i);
      const subnetId = stableId('subnet-', this.region + cidr);
      this.registry.put<Ec2Subnet>('subnets', subnetId, {
        subnetId,
        vpcId: this.defaultVpc.vpcId,
        cidrBlock: cidr,
        availabilityZone: `${this.region}${letter}`,
        availabilityZoneId: `${zoneIdPrefix(this.region)}-az${i + 1}`,
        defaultForAz: true,
        mapPublicIpOnLaunch: true,
        tags: [],
        addresses: reservedAllocator(cidr),
      });
    });
    const sgId = this.ids.hex('sg-', 17);
    this.registry.put<Ec2SecurityGroup>('securityGroups', sgId, {
      groupId: sgId,
      groupName: 'default',
      description: 'default VPC security group',
      vpcId: this.defaultVpc.vpcId,
      ownerId: this.accountId,
      isDefault: true,
      tags: [],
      ingress: [{ ruleId: this.ids.hex('sgr-', 17), protocol: '-1', groupId: sgId, tags: [] }],
      egress: [{ ruleId: this.ids.hex('sgr-', 17), protocol: '-1', cidr: '0.0.0.0/0', tags: [] }],
    });
    for (const img of IMAGES) this.registry.put('images', img.imageId, img);
    // A default VPC's main route table sends everything outside the VPC to its internet gateway.
    const mainTable = stableId('rtb-', this.region + vpcCidr);
    this.registry.put<Ec2RouteTable>('routeTables', mainTable, {
      routeTableId: mainTable,
      vpcId: this.defaultVpc.vpcId,
      main: true,
      subnetIds: [],
      routes: [
        { destinationCidrBlock: vpcCidr, gatewayId: 'local', state: 'active' },
        { destinationCidrBlock: '0.0.0.0/0', gatewayId: stableId('igw-', this.region + vpcCidr), state: 'active' },
      ],
      tags: [],
    });
    this.registry.ignoreForLeaks('vpcs', 'subnets', 'images', 'routeTables');
    this.registerHandlers();
  }

  /** Starts a fake EC2 on 127.0.0.1 and a free port. */
  static async start(opts: FakeEc2Options = {}): Promise<FakeEc2> {
    const fake = new FakeEc2(opts);
    await fake.server.start();
    return fake;
  }

  /** `http://127.0.0.1:PORT` */
  get endpoint(): string {
    return this.server.endpoint;
  }

  get faults(): Faults {
    return this.server.faults;
  }

  /** For `assertNoContractViolations(fake)`. */
  get contractViolations(): ContractViolation[] {
    return this.server.contractViolations;
  }

  /**
   * What `new EC2Client(...)` needs to reach this fake: endpoint, region, static credentials and
   * `maxAttempts` (default 1: the test decides about retries).
   */
  clientConfig(opts: { maxAttempts?: number } = {}): {
    region: string;
    endpoint: string;
    credentials: { accessKeyId: string; secretAccessKey: string };
    maxAttempts: number;
  } {
    return {
      region: this.region,
      endpoint: this.endpoint,
      credentials: { accessKeyId: 'AKIDFAKEEC2', secretAccessKey: 'fake-secret' },
      maxAttempts: opts.maxAttempts ?? 1,
    };
  }

  /** Everything held, by kind (`instances`, `securityGroups`, `volumes`, and the seeded `vpcs`, `subnets`, `images`). */
  resources(): ResourceSnapshot {
    return this.registry.all();
  }

  /** What would still cost money: non-terminated instances, non-default security groups, volumes. */
  leaked(): ResourceSnapshot {
    return this.registry.leaked((kind, v) => {
      if (kind === 'instances') return (v as Ec2Instance).state === 'terminated';
      if (kind === 'securityGroups') return (v as Ec2SecurityGroup).isDefault;
      return false;
    });
  }

  instance(id: string): Ec2Instance | undefined {
    return this.registry.get<Ec2Instance>('instances', id);
  }

  instances(): Ec2Instance[] {
    return this.registry.list<Ec2Instance>('instances');
  }

  securityGroup(idOrName: string): Ec2SecurityGroup | undefined {
    return this.registry.get<Ec2SecurityGroup>('securityGroups', idOrName) ?? this.registry.find<Ec2SecurityGroup>('securityGroups', (g) => g.groupName === idOrName)[0];
  }

  securityGroups(): Ec2SecurityGroup[] {
    return this.registry.list<Ec2SecurityGroup>('securityGroups');
  }

  volumes(): Ec2Volume[] {
    return this.registry.list<Ec2Volume>('volumes');
  }

  subnets(): Ec2Subnet[] {
    return this.registry.list<Ec2Subnet>('subnets');
  }

  /**
   * A VPC of the user's beside the default one, with one (non-default) subnet of `cidr` in
   * `zone` (default: the region's first). Not a leak: like the seeded VPC, it is the account's.
   */
  addVpc(cidr: string, zone = `${this.region}a`): { vpcId: string; subnetId: string } {
    const vpcId = stableId('vpc-', `${this.region}${cidr}user`);
    this.registry.put<Ec2Vpc>('vpcs', vpcId, { vpcId, cidrBlock: cidr, cidrAssociationId: stableId('vpc-cidr-assoc-', vpcId), dhcpOptionsId: stableId('dopt-', this.region), isDefault: false, tags: [] });
    const zoneId = this.subnets().find((x) => x.availabilityZone === zone)?.availabilityZoneId ?? `${zoneIdPrefix(this.region)}-az9`;
    const subnetId = stableId('subnet-', `${vpcId}${cidr}`);
    this.registry.put<Ec2Subnet>('subnets', subnetId, {
      subnetId,
      vpcId,
      cidrBlock: cidr,
      availabilityZone: zone,
      availabilityZoneId: zoneId,
      defaultForAz: false,
      mapPublicIpOnLaunch: false,
      tags: [],
      addresses: reservedAllocator(cidr),
    });
    return { vpcId, subnetId };
  }

  images(): Ec2Image[] {
    return this.registry.list<Ec2Image>('images');
  }

  /** The booted VM of an instance (after `booter.boot` resolved). */
  vm(instanceId: string): BootedVm | undefined {
    return this.runtime.get(instanceId)?.vm;
  }

  /**
   * A general API rate limit (EC2's request token buckets): `burst` requests, refilled at
   * `perSecond`, over `operations` (default all). Excess calls get 503 `RequestLimitExceeded`.
   */
  throttle(opts: { burst: number; perSecond: number; operations?: OperationMatcher }): FaultHandle {
    const bucket = new TokenBucket({ capacity: opts.burst, refill: opts.perSecond, intervalMs: 1_000, clock: this.clock });
    return this.faults.throttle(opts.operations ?? /.*/, {
      bucket,
      reject: () => ({ status: 503, code: 'RequestLimitExceeded', message: 'Request limit exceeded.' }),
    });
  }

  /** Replaces RunInstances' instance-launch bucket (`false` disables it). */
  throttleRunInstances(rate: { burst: number; perSecond: number } | false): void {
    this.runBucket = rate === false ? undefined : new TokenBucket({ capacity: rate.burst, refill: rate.perSecond, intervalMs: 1_000, clock: this.clock });
  }

  /**
   * The guest OS powered itself off (`shutdown -h now`). Called automatically when a booted VM
   * exposes an `exited` promise (the simulated VMs do); tests without a booter call it directly.
   * The instance goes to `terminated` when launched with InstanceInitiatedShutdownBehavior
   * `terminate`, else to `stopped` (still billed for its volumes, still holding its groups).
   */
  guestShutdown(instanceId: string): void {
    const inst = this.instance(instanceId);
    const rt = this.runtime.get(instanceId);
    if (!inst || !rt || inst.state !== 'running' || rt.stopRequested || this.stopped) return;
    inst.stateReason = { code: 'Client.InstanceInitiatedShutdown', message: 'Client.InstanceInitiatedShutdown: Instance initiated shutdown' };
    if (inst.instanceInitiatedShutdownBehavior === 'terminate') {
      inst.stateTransitionReason = `Instance initiated shutdown (${gmt(this.clock.now())})`;
      this.go(inst, 'shutting-down', { state: 'terminated', afterMs: this.timings.shuttingDownMs });
    } else {
      inst.stateTransitionReason = `Instance initiated shutdown (${gmt(this.clock.now())})`;
      this.go(inst, 'stopping', { state: 'stopped', afterMs: this.timings.stoppingMs });
    }
  }

  /**
   * `zone` no longer offers `types` (as us-east-1e lacks t3 and m6i): DescribeInstanceTypeOfferings
   * leaves them out there and RunInstances into that zone answers `Unsupported`.
   */
  withholdInstanceTypes(zone: string, types: string[]): void {
    const set = this.withheld.get(zone) ?? new Set<string>();
    for (const t of types) set.add(t);
    this.withheld.set(zone, set);
  }

  /** Whether `zone` offers `type`. */
  offers(zone: string, type: string): boolean {
    return INSTANCE_TYPES[type] !== undefined && !this.withheld.get(zone)?.has(type);
  }

  /** The caller's policy does not allow these operations: they answer UnauthorizedOperation, DryRun included. */
  deny(...operations: string[]): void {
    for (const op of operations) this.denied.add(op);
  }

  /** Undoes {@link deny} for these operations. */
  allow(...operations: string[]): void {
    for (const op of operations) this.denied.delete(op);
  }

  /**
   * A fault, not EC2's rule: from now on DryRun requests are carried out like any other, as an
   * EC2-compatible endpoint that does not implement DryRun would (`false` undoes it).
   */
  ignoreDryRun(ignored = true): void {
    this.dryRunIgnored = ignored;
  }

  /** Every request answers AuthFailure from now on (`false` undoes it). */
  refuseCredentials(refused = true): void {
    this.credentialsRefused = refused;
  }

  /**
   * The next `times` instances launched go pending → shutting-down → terminated instead of
   * running, with `reason` as their state reason (EC2 does this for e.g. `Server.InternalError`
   * or `Client.VolumeLimitExceeded`).
   */
  failLaunches(reason: LaunchFailure, times = 1): void {
    for (let i = 0; i < times; i++) this.launchFailures.push(reason);
  }

  /**
   * Gives `subnetId` (or, without it, the VPC's main table) a default route to a new NAT
   * gateway, as private subnets have. Returns the NAT gateway id.
   */
  routeThroughNat(opts: { subnetId?: string } = {}): string {
    const nat = this.ids.hex('nat-', 17);
    const route: Ec2Route = { destinationCidrBlock: '0.0.0.0/0', natGatewayId: nat, state: 'active' };
    if (opts.subnetId === undefined) {
      const main = this.routeTables().find((t) => t.main && t.vpcId === this.defaultVpc.vpcId) as Ec2RouteTable;
      main.routes = [...main.routes.filter((r) => r.destinationCidrBlock !== '0.0.0.0/0'), route];
      return nat;
    }
    const subnet = this.registry.get<Ec2Subnet>('subnets', opts.subnetId);
    if (!subnet) throw new Error(`no subnet ${opts.subnetId}`);
    for (const t of this.routeTables()) t.subnetIds = t.subnetIds.filter((x) => x !== subnet.subnetId);
    const id = this.ids.hex('rtb-', 17);
    this.registry.put<Ec2RouteTable>('routeTables', id, {
      routeTableId: id,
      vpcId: subnet.vpcId,
      main: false,
      subnetIds: [subnet.subnetId],
      routes: [{ destinationCidrBlock: this.defaultVpc.cidrBlock, gatewayId: 'local', state: 'active' }, route],
      tags: [],
    });
    return nat;
  }

  routeTables(): Ec2RouteTable[] {
    return this.registry.list<Ec2RouteTable>('routeTables');
  }

  /** Requests of mutating operations that were not DryRun, in order (rejected ones included). */
  mutatingCalls(): ReturnType<FakeServer['calls']> {
    return this.server.received.filter((c) => c.operation !== undefined && MUTATING_OPERATIONS.has(c.operation) && String(c.params.DryRun) !== 'true');
  }

  /** Stops listening, stops every booted VM and cancels pending transitions. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.server.stop();
    for (const inst of this.instances()) this.stopVm(inst);
    await this.pendingWork.drain();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  // =============================================================================================
  // Handlers

  private registerHandlers(): void {
    const op = <I>(action: string, fn: (input: I, req: FakeRequest) => XmlChild | Promise<XmlChild>) => {
      this.server.handle(action, async (req) => {
        const input = (req.normalized ?? {}) as I & { DryRun?: boolean };
        // Signature first, then the caller's permissions, then DryRun (API reference, Common
        // Parameters: DryRun answers DryRunOperation when allowed, else UnauthorizedOperation).
        if (this.credentialsRefused) throw new FakeApiError(401, 'AuthFailure', 'AWS was not able to validate the provided access credentials');
        if (this.denied.has(action)) {
          throw new FakeApiError(403, 'UnauthorizedOperation', `You are not authorized to perform this operation. User: arn:aws:iam::${this.accountId}:user/dask is not authorized to perform: ec2:${action}`);
        }
        if (input.DryRun === true && !this.dryRunIgnored) throw new FakeApiError(412, 'DryRunOperation', 'Request would have succeeded, but DryRun flag is set.');
        return xmlResponse(action, req.id, await fn(input, req));
      });
    };
    op<RunInstancesInput>('RunInstances', (n) => this.runInstances(n));
    op<DescribeInput & { InstanceId?: string[] }>('DescribeInstances', (n) => this.describeInstances(n));
    op<{ InstanceId: string[] }>('TerminateInstances', (n) => this.terminateInstances(n));
    op<{ ResourceId: string[]; Tag: { Key?: string; Value?: string }[] }>('CreateTags', (n) => this.createTags(n));
    op<{ InstanceId: string; Latest?: boolean }>('GetConsoleOutput', (n) => this.getConsoleOutput(n));
    op<DescribeInput & { LocationType?: string }>('DescribeInstanceTypeOfferings', (n) => this.describeInstanceTypeOfferings(n));
    op<DescribeInput & { InstanceType?: string[] }>('DescribeInstanceTypes', (n) => this.describeInstanceTypes(n));
    op<DescribeInput & { RouteTableId?: string[] }>('DescribeRouteTables', (n) => this.describeRouteTables(n));
    op<DescribeInput & { RegionName?: string[]; AllRegions?: boolean }>('DescribeRegions', (n) => this.describeRegions(n));
    op<DescribeInput & { ZoneName?: string[] }>('DescribeAvailabilityZones', (n) => this.describeAvailabilityZones(n));
    op<DescribeInput & { InstanceId?: string[]; IncludeAllInstances?: boolean }>('DescribeInstanceStatus', (n) => this.describeInstanceStatus(n));
    op<{ GroupName: string; GroupDescription: string; VpcId?: string; TagSpecification?: TagSpecInput[] }>('CreateSecurityGroup', (n) => this.createSecurityGroup(n));
    op<SgIngressInput>('AuthorizeSecurityGroupIngress', (n) => this.authorizeIngress(n));
    op<SgIngressInput>('RevokeSecurityGroupIngress', (n) => this.revokeIngress(n));
    op<DescribeInput & { GroupId?: string[]; GroupName?: string[] }>('DescribeSecurityGroups', (n) => this.describeSecurityGroups(n));
    op<{ GroupId?: string; GroupName?: string }>('DeleteSecurityGroup', (n) => this.deleteSecurityGroup(n));
    op<DescribeInput & { VpcId?: string[] }>('DescribeVpcs', (n) => this.describeVpcs(n));
    op<DescribeInput & { SubnetId?: string[] }>('DescribeSubnets', (n) => this.describeSubnets(n));
    op<DescribeInput & { ImageId?: string[]; Owner?: string[] }>('DescribeImages', (n) => this.describeImages(n));
  }

  // ---------------------------------------------------------------------------------------------
  // RunInstances

  private runInstances(n: RunInstancesInput): XmlChild {
    if (n.LaunchTemplate !== undefined) throw new FakeApiError(400, 'Unsupported', 'The EC2 fake does not implement launch templates.');
    if (!n.ImageId) throw new FakeApiError(400, 'MissingParameter', 'The request must contain the parameter ImageId');
    if (n.MinCount < 1) throw new FakeApiError(400, 'InvalidParameterValue', `Value (${n.MinCount}) for parameter minCount is invalid. Expected a positive integer.`);
    if (n.MaxCount < n.MinCount) throw new FakeApiError(400, 'InvalidParameterValue', `Value (${n.MinCount}) for parameter minCount is invalid. It must be less than or equal to maxCount (${n.MaxCount}).`);

    // Idempotency: the same token answers with the reservation it made, and creates nothing.
    const fingerprint = canonicalJson({ ...n, ClientToken: undefined });
    if (n.ClientToken !== undefined) {
      if (!/^[\x20-\x7e]*$/.test(n.ClientToken)) throw new FakeApiError(400, 'InvalidParameterValue', `Value (${n.ClientToken}) for parameter clientToken is invalid. It must consist of ASCII characters.`);
      if (n.ClientToken.length > 64) throw new FakeApiError(400, 'InvalidParameterValue', `Value (${n.ClientToken}) for parameter clientToken is invalid. Length exceeds 64.`);
      const prior = this.clientTokens.get(n.ClientToken);
      if (prior) {
        const r = this.reservations.get(prior) as ReservationRecord;
        if (r.fingerprint !== fingerprint) throw new FakeApiError(400, 'IdempotentParameterMismatch', 'The client token you have provided is associated with a request with different parameters.');
        const insts = r.instanceIds.map((id) => this.instance(id)).filter((i): i is Ec2Instance => i !== undefined);
        return this.reservationBody(r.reservationId, insts);
      }
    }

    if (!IMAGE_ID.test(n.ImageId)) throw new FakeApiError(400, 'InvalidAMIID.Malformed', `Invalid id: "${n.ImageId}" (expecting "ami-...")`);
    const image = this.registry.get<Ec2Image>('images', n.ImageId);
    if (!image) throw new FakeApiError(400, 'InvalidAMIID.NotFound', `The image id '[${n.ImageId}]' does not exist`);
    const instanceType = n.InstanceType ?? 'm1.small';
    const type = INSTANCE_TYPES[instanceType];
    if (!type) throw new FakeApiError(400, 'InvalidParameterValue', `Invalid value '${instanceType}' for InstanceType.`);
    if (type.architecture !== image.architecture) {
      throw new FakeApiError(
        400,
        'InvalidParameterValue',
        `The architecture '${type.architecture}' of the specified instance type does not match the architecture '${image.architecture}' of the specified AMI. Specify an instance type and an AMI that have matching architectures, and try again. You can use 'describe-instance-types' or 'describe-images' to discover the architecture of the instance type or AMI.`,
      );
    }

    const userData = decodeUserData(n.UserData);

    // Network: instance-level SubnetId / groups, or one network interface (not both, as on EC2).
    const nis = n.NetworkInterface ?? [];
    if (nis.length && n.SubnetId !== undefined) throw new FakeApiError(400, 'InvalidParameterCombination', 'Network interfaces and an instance-level subnet ID may not be specified on the same request');
    if (nis.length && ((n.SecurityGroupId?.length ?? 0) > 0 || (n.SecurityGroup?.length ?? 0) > 0)) {
      throw new FakeApiError(400, 'InvalidParameterCombination', 'Network interfaces and an instance-level security groups may not be specified on the same request');
    }
    if (nis.length > 1) throw new FakeApiError(400, 'Unsupported', 'The EC2 fake supports one network interface per instance.');
    const ni = nis[0];
    if (ni && (ni.DeviceIndex ?? 0) !== 0) throw new FakeApiError(400, 'InvalidParameterValue', 'The primary network interface must have device index 0.');
    if (ni?.NetworkInterfaceId !== undefined) throw new FakeApiError(400, 'Unsupported', 'The EC2 fake does not attach existing network interfaces.');
    if (n.PrivateIpAddress !== undefined || ni?.PrivateIpAddress !== undefined) throw new FakeApiError(400, 'Unsupported', 'The EC2 fake does not assign chosen private addresses.');
    const subnet = this.pickSubnet(ni?.SubnetId ?? n.SubnetId, n.Placement?.AvailabilityZone, instanceType);
    if (!this.offers(subnet.availabilityZone, instanceType)) {
      const others = this.zones().filter((z) => this.offers(z, instanceType));
      throw new FakeApiError(
        400,
        'Unsupported',
        `Your requested instance type (${instanceType}) is not supported in your requested Availability Zone (${subnet.availabilityZone}). Please retry your request by not specifying an Availability Zone or choosing ${others.join(', ')}.`,
      );
    }
    const groupIds = this.resolveLaunchGroups(ni?.SecurityGroupId ?? n.SecurityGroupId ?? [], n.SecurityGroup ?? [], subnet.vpcId);
    const associatePublicIp = ni?.AssociatePublicIpAddress ?? subnet.mapPublicIpOnLaunch;

    const tagsFor = this.launchTags(n.TagSpecification);
    const hop = n.MetadataOptions?.HttpPutResponseHopLimit;
    if (hop !== undefined && (hop < 1 || hop > 64)) throw new FakeApiError(400, 'InvalidParameterValue', `Invalid value '${hop}' for HttpPutResponseHopLimit. Valid values are 1 to 64.`);
    const volumesSpec = this.volumeSpecs(image, n.BlockDeviceMapping ?? []);

    // Rate limit (EC2 meters RunInstances by instances launched): launch up to MaxCount, at least MinCount.
    let count = n.MaxCount;
    if (this.runBucket) {
      const available = this.runBucket.peek().remaining;
      count = Math.min(n.MaxCount, available);
      if (count < n.MinCount) throw new FakeApiError(503, 'RequestLimitExceeded', 'Request limit exceeded.');
    }
    // Addresses: as many as the subnet has, at least MinCount.
    const ips: string[] = [];
    try {
      while (ips.length < count) ips.push(subnet.addresses.allocate());
    } catch {
      if (ips.length < n.MinCount) {
        ips.forEach((ip) => subnet.addresses.release(ip));
        throw new FakeApiError(400, 'InsufficientFreeAddressesInSubnet', `There are not enough free addresses in subnet '${subnet.subnetId}' to satisfy the requested number of instances.`);
      }
      count = ips.length;
    }
    this.runBucket?.take(count);

    const now = this.clock.now();
    const reservationId = this.ids.hex('r-', 17);
    const spotOpts = n.InstanceMarketOptions?.MarketType === 'spot' ? n.InstanceMarketOptions.SpotOptions ?? {} : undefined;
    const failures = this.launchFailures.splice(0, count);
    const created: Ec2Instance[] = ips.map((privateIp, index) => {
      const instanceId = this.ids.hex('i-', 17);
      const volumeIds = volumesSpec.map((spec) => {
        const volumeId = this.ids.hex('vol-', 17);
        this.registry.put<Ec2Volume>('volumes', volumeId, { ...spec, volumeId, state: 'in-use', instanceId, attachTime: now, tags: tagsFor.volume.map((t) => ({ ...t })) });
        return volumeId;
      });
      const inst: Ec2Instance = {
        instanceId,
        reservationId,
        imageId: image.imageId,
        instanceType,
        architecture: image.architecture,
        keyName: n.KeyName,
        launchTime: now,
        amiLaunchIndex: index,
        availabilityZone: subnet.availabilityZone,
        subnetId: subnet.subnetId,
        vpcId: subnet.vpcId,
        privateIpAddress: privateIp,
        associatePublicIp,
        securityGroupIds: groupIds,
        tags: tagsFor.instance.map((t) => ({ ...t })),
        userData,
        clientToken: n.ClientToken,
        metadataOptions: {
          httpTokens: n.MetadataOptions?.HttpTokens ?? (image.imdsSupport === 'v2.0' ? 'required' : 'optional'),
          httpEndpoint: n.MetadataOptions?.HttpEndpoint ?? 'enabled',
          httpPutResponseHopLimit: hop ?? (image.imdsSupport === 'v2.0' ? 2 : 1),
          httpProtocolIpv6: n.MetadataOptions?.HttpProtocolIpv6 ?? 'disabled',
          instanceMetadataTags: n.MetadataOptions?.InstanceMetadataTags ?? 'disabled',
        },
        instanceInitiatedShutdownBehavior: n.InstanceInitiatedShutdownBehavior ?? 'stop',
        disableApiTermination: n.DisableApiTermination ?? false,
        iamInstanceProfile: n.IamInstanceProfile
          ? { arn: n.IamInstanceProfile.Arn ?? `arn:aws:iam::${this.accountId}:instance-profile/${n.IamInstanceProfile.Name ?? ''}`, id: 'AIPA' + randomBytes(12).toString('hex').toUpperCase().slice(0, 17) }
          : undefined,
        ebsOptimized: n.EbsOptimized ?? false,
        monitoring: n.Monitoring?.Enabled ? 'enabled' : 'disabled',
        spot: spotOpts
          ? { spotInstanceRequestId: this.ids.hex('sir-', 8), maxPrice: spotOpts.MaxPrice, spotInstanceType: spotOpts.SpotInstanceType ?? 'one-time', interruptionBehavior: spotOpts.InstanceInterruptionBehavior ?? 'terminate' }
          : undefined,
        rootDeviceName: image.rootDeviceName,
        volumeIds,
        networkInterfaceId: this.ids.hex('eni-', 17),
        attachmentId: this.ids.hex('eni-attach-', 17),
        macAddress: ['0a', ...randomBytes(5).toString('hex').match(/../g)!].join(':'),
        state: 'pending',
        stateReason: { code: 'pending', message: 'pending' },
        stateTransitionReason: '',
        visibleAt: now + this.timings.consistencyDelayMs,
        postedConsole: '',
      };
      this.registry.put('instances', instanceId, inst);
      const failure = failures[index];
      const lifecycle = new Lifecycle<InstanceStateName>(
        this.clock,
        'pending',
        failure
          ? [
              { state: 'shutting-down', afterMs: this.timings.pendingMs },
              { state: 'terminated', afterMs: this.timings.shuttingDownMs },
            ]
          : [{ state: 'running', afterMs: this.timings.pendingMs + this.faults.takeBootDelay() }],
        (s) => {
          if (failure && s === 'shutting-down') {
            inst.stateReason = { code: failure.code, message: failure.message };
            inst.stateTransitionReason = `Server initiated (${gmt(this.clock.now())})`;
          }
          this.onEnter(inst, s);
        },
      );
      this.runtime.set(instanceId, { lifecycle });
      return inst;
    });
    this.reservations.set(reservationId, { reservationId, instanceIds: created.map((i) => i.instanceId), fingerprint });
    if (n.ClientToken !== undefined) this.clientTokens.set(n.ClientToken, reservationId);
    return this.reservationBody(reservationId, created);
  }

  /** The region's availability zones (those with a default subnet), in order. */
  private zones(): string[] {
    return [...new Set(this.subnets().filter((s) => s.defaultForAz).map((s) => s.availabilityZone))].sort();
  }

  private pickSubnet(subnetId: string | undefined, zone: string | undefined, instanceType: string): Ec2Subnet {
    const subnets = this.subnets();
    if (subnetId !== undefined) {
      const s = subnets.find((x) => x.subnetId === subnetId);
      if (!s) throw new FakeApiError(400, 'InvalidSubnetID.NotFound', `The subnet ID '${subnetId}' does not exist`);
      if (zone !== undefined && zone !== s.availabilityZone) {
        throw new FakeApiError(400, 'InvalidParameterValue', `Value (${zone}) for parameter availabilityZone is invalid. Subnet '${subnetId}' is in the availability zone ${s.availabilityZone}`);
      }
      return s;
    }
    if (zone !== undefined) {
      const s = subnets.find((x) => x.defaultForAz && x.availabilityZone === zone);
      if (!s) throw new FakeApiError(400, 'InvalidParameterValue', `Invalid availability zone: [${zone}]`);
      return s;
    }
    // Without a subnet or zone EC2 picks a default subnet in a zone that offers the type.
    return subnets.find((x) => x.defaultForAz && this.offers(x.availabilityZone, instanceType)) ?? (subnets.find((x) => x.defaultForAz) as Ec2Subnet);
  }

  private resolveLaunchGroups(ids: string[], names: string[], vpcId: string): string[] {
    const out: string[] = [];
    for (const id of ids) {
      const g = this.registry.get<Ec2SecurityGroup>('securityGroups', id);
      if (!g || g.vpcId !== vpcId) throw new FakeApiError(400, 'InvalidGroup.NotFound', `The security group '${id}' does not exist in VPC '${vpcId}'`);
      if (!out.includes(id)) out.push(id);
    }
    for (const name of names) {
      const g = this.registry.find<Ec2SecurityGroup>('securityGroups', (x) => x.groupName === name && x.vpcId === vpcId)[0];
      if (!g) throw new FakeApiError(400, 'InvalidGroup.NotFound', `The security group '${name}' does not exist in VPC '${vpcId}'`);
      if (!out.includes(g.groupId)) out.push(g.groupId);
    }
    if (out.length === 0) {
      const def = this.registry.find<Ec2SecurityGroup>('securityGroups', (x) => x.isDefault && x.vpcId === vpcId)[0];
      out.push(def.groupId);
    }
    return out;
  }

  /** Tags by resource type from TagSpecification (instance, volume; others accepted and dropped). */
  private launchTags(specs: TagSpecInput[] | undefined): { instance: Ec2Tag[]; volume: Ec2Tag[] } {
    const out = { instance: [] as Ec2Tag[], volume: [] as Ec2Tag[] };
    for (const spec of specs ?? []) {
      const tags = validateTags(spec.Tag ?? []);
      const type = spec.ResourceType ?? '';
      if (type === 'instance' || type === 'volume') out[type].push(...tags);
      else if (type !== 'network-interface' && type !== 'spot-instances-request') {
        throw new FakeApiError(400, 'InvalidParameterValue', `'${type}' is not a valid taggable resource type for this operation.`);
      }
    }
    for (const kind of ['instance', 'volume'] as const) validateTags(out[kind].map((t) => ({ Key: t.key, Value: t.value })));
    return out;
  }

  private volumeSpecs(image: Ec2Image, bdms: NonNullable<RunInstancesInput['BlockDeviceMapping']>): Omit<Ec2Volume, 'volumeId' | 'state' | 'instanceId' | 'attachTime' | 'tags'>[] {
    const root = { sizeGb: image.rootVolumeSizeGb, volumeType: 'gp3', deviceName: image.rootDeviceName, deleteOnTermination: true, encrypted: false };
    const extra: (typeof root)[] = [];
    for (const b of bdms) {
      if (!b.DeviceName) throw new FakeApiError(400, 'InvalidBlockDeviceMapping', 'The device name must be specified for each block device mapping.');
      if (b.NoDevice !== undefined || b.VirtualName !== undefined || !b.Ebs) continue;
      const size = b.Ebs.VolumeSize;
      if (b.DeviceName === image.rootDeviceName) {
        if (size !== undefined && size < image.rootVolumeSizeGb) {
          throw new FakeApiError(400, 'InvalidBlockDeviceMapping', `Volume of size ${size}GB is smaller than snapshot '${stableId('snap-', image.imageId)}', expect size >= ${image.rootVolumeSizeGb}GB`);
        }
        root.sizeGb = size ?? root.sizeGb;
        root.volumeType = b.Ebs.VolumeType ?? root.volumeType;
        root.deleteOnTermination = b.Ebs.DeleteOnTermination ?? true;
        root.encrypted = b.Ebs.Encrypted ?? false;
      } else {
        if (size === undefined && b.Ebs.SnapshotId === undefined) throw new FakeApiError(400, 'InvalidBlockDeviceMapping', `The request must contain either a snapshot ID or a volume size for device ${b.DeviceName}`);
        extra.push({ sizeGb: size ?? 8, volumeType: b.Ebs.VolumeType ?? 'gp3', deviceName: b.DeviceName, deleteOnTermination: b.Ebs.DeleteOnTermination ?? true, encrypted: b.Ebs.Encrypted ?? false });
      }
    }
    return [root, ...extra];
  }

  // ---------------------------------------------------------------------------------------------
  // Instance lifecycle

  /** Jumps to `state` now (running its side effects), then optionally on to `then` on the clock. */
  private go(inst: Ec2Instance, state: InstanceStateName, then?: { state: InstanceStateName; afterMs: number }): void {
    const rt = this.runtime.get(inst.instanceId) as InstanceRuntime;
    rt.lifecycle.set(state);
    rt.lifecycle = new Lifecycle<InstanceStateName>(this.clock, state, then ? [then] : [], (s) => this.onEnter(inst, s));
  }

  private onEnter(inst: Ec2Instance, state: InstanceStateName): void {
    if (this.stopped) return;
    inst.state = state;
    const now = this.clock.now();
    switch (state) {
      case 'running': {
        inst.runningSince = now;
        // Posted shortly after the transition: only what the guest had printed by then.
        if (!this.booter) inst.postedConsole = CANNED_CONSOLE.split('\n')[0] + '\n';
        inst.stateReason = undefined;
        if (inst.associatePublicIp && !inst.publicIpAddress) inst.publicIpAddress = this.publicIps.allocate();
        this.boot(inst);
        this.refreshFirewalls();
        break;
      }
      case 'shutting-down':
      case 'stopping':
        if (!this.booter && inst.runningSince !== undefined) inst.postedConsole = this.cannedConsole(inst);
        this.stopVm(inst);
        this.refreshFirewalls();
        break;
      case 'stopped':
        this.releasePublicIp(inst);
        break;
      case 'terminated': {
        inst.terminatedAt = now;
        this.releasePublicIp(inst);
        const subnet = this.registry.get<Ec2Subnet>('subnets', inst.subnetId);
        subnet?.addresses.release(inst.privateIpAddress);
        for (const volumeId of inst.volumeIds) {
          const v = this.registry.get<Ec2Volume>('volumes', volumeId);
          if (!v) continue;
          if (v.deleteOnTermination) this.registry.delete('volumes', volumeId);
          else Object.assign(v, { state: 'available', instanceId: undefined });
        }
        // Terminated instances stay visible for a while, like on EC2, then vanish.
        this.clock.setTimeout(() => {
          if (this.instance(inst.instanceId)?.state !== 'terminated') return;
          this.registry.delete('instances', inst.instanceId);
          this.runtime.delete(inst.instanceId);
        }, this.timings.terminatedVisibleMs);
        break;
      }
      default:
        break;
    }
  }

  private releasePublicIp(inst: Ec2Instance): void {
    if (inst.publicIpAddress) this.publicIps.release(inst.publicIpAddress);
    inst.publicIpAddress = undefined;
  }

  private track<T>(p: Promise<T>): Promise<T> {
    return this.pendingWork.add(p);
  }

  private boot(inst: Ec2Instance): void {
    const booter = this.booter;
    const rt = this.runtime.get(inst.instanceId);
    if (!booter || !rt || rt.booting) return;
    const firewall = booter.ignoresFirewalls ? [] : this.firewallFor(inst);
    rt.firewallSent = JSON.stringify(firewall);
    rt.booting = this.track(
      Promise.resolve()
        .then(() =>
          booter.boot({
            id: inst.instanceId,
            name: inst.tags.find((t) => t.key === 'Name')?.value,
            userData: Buffer.from(inst.userData),
            privateIp: inst.privateIpAddress,
            publicIp: inst.publicIpAddress,
            firewall,
          }),
        )
        .then(
          (vm) => {
            rt.vm = vm;
            if (this.stopped || inst.state !== 'running') {
              this.stopVm(inst);
              return;
            }
            // Simulated VMs expose `exited`: a guest-initiated power-off drives the instance state.
            const exited = (vm as BootedVm & { exited?: Promise<unknown> }).exited;
            if (exited && typeof exited.then === 'function') void exited.then(() => this.guestShutdown(inst.instanceId), () => undefined);
            this.resendFirewallsNaming(inst.instanceId);
          },
          (error: unknown) => {
            this.bootErrors.push({ instanceId: inst.instanceId, phase: 'boot', error });
          },
        ),
    );
  }

  private stopVm(inst: Ec2Instance): void {
    const rt = this.runtime.get(inst.instanceId);
    if (!rt?.booting || rt.stopRequested) return;
    rt.stopRequested = true;
    this.track(
      rt.booting
        .then(async () => {
          // The console is posted again on the way down (EC2 posts after stop and terminate).
          if (rt.vm) inst.postedConsole = await rt.vm.consoleOutput().catch(() => inst.postedConsole);
          await rt.vm?.stop();
        })
        .catch((error: unknown) => {
          this.bootErrors.push({ instanceId: inst.instanceId, phase: 'stop', error });
        }),
    );
  }

  /** Gives every booted, running VM whose effective rules changed its new firewall. */
  private refreshFirewalls(): void {
    const booter = this.booter;
    if (!booter || booter.ignoresFirewalls || this.stopped) return;
    for (const inst of this.instances()) {
      const rt = this.runtime.get(inst.instanceId);
      if (inst.state !== 'running' || !rt?.booting || rt.stopRequested) continue;
      const rules = this.firewallFor(inst);
      const key = JSON.stringify(rules);
      if (key === rt.firewallSent) continue;
      this.sendFirewall(inst.instanceId, rt, booter, rules, key);
    }
  }

  /**
   * Queues a firewall update for a VM after its boot and its earlier updates: run concurrently,
   * an older update (whose peers the booter resolved earlier) could land last and win.
   */
  private sendFirewall(instanceId: string, rt: InstanceRuntime, booter: VmBooter, rules: FirewallRule[], key: string): void {
    rt.firewallSent = key;
    const after = (rt.firewallQueue ?? (rt.booting as Promise<void>)).catch(() => undefined);
    rt.firewallQueue = this.track(
      after
        .then(async () => {
          // Only the latest rules matter; a VM that failed to boot or is stopping has none to set.
          if (rt.vm && !rt.stopRequested && rt.firewallSent === key) await booter.setFirewall(instanceId, rules);
        })
        .catch((error: unknown) => {
          this.bootErrors.push({ instanceId, phase: 'setFirewall', error });
        }),
    );
  }

  /**
   * Re-sends the rules of every other running VM whose peers include `instanceId`. Those rules
   * named the instance as soon as it was running, but a booter can only turn a peer's id into an
   * address once that peer has booted (test/sim resolves peers when rules are set); without this,
   * members booted later would stay locked out of their group until some rule changed.
   */
  private resendFirewallsNaming(instanceId: string): void {
    const booter = this.booter;
    if (!booter || booter.ignoresFirewalls || this.stopped) return;
    for (const other of this.instances()) {
      const rt = this.runtime.get(other.instanceId);
      if (other.instanceId === instanceId || other.state !== 'running' || !rt?.booting || rt.stopRequested) continue;
      const rules = this.firewallFor(other);
      if (!rules.some((r) => r.peerVmIds?.includes(instanceId))) continue;
      this.sendFirewall(other.instanceId, rt, booter, rules, JSON.stringify(rules));
    }
  }

  /**
   * An instance's effective firewall: the union of its groups' rules, one FirewallRule per
   * protocol/port range, CIDR sources as `cidrs`, group sources as the running members' ids.
   */
  firewallFor(inst: Ec2Instance): FirewallRule[] {
    const groups = inst.securityGroupIds.map((id) => this.registry.get<Ec2SecurityGroup>('securityGroups', id)).filter((g): g is Ec2SecurityGroup => !!g);
    const out: FirewallRule[] = [];
    for (const direction of ['ingress', 'egress'] as const) {
      const byRange = new Map<string, FirewallRule>();
      for (const g of groups) {
        for (const r of g[direction]) {
          const protocol = firewallProtocol(r.protocol);
          if (!protocol) continue;
          const ported = protocol === 'tcp' || protocol === 'udp';
          const key = `${protocol}|${ported ? r.fromPort : ''}|${ported ? r.toPort : ''}`;
          let rule = byRange.get(key);
          if (!rule) {
            // EC2 writes "all TCP" as 0-65535; port 0 cannot be connected to, so booters (whose
            // firewalls take 1-65535) get the same range without it.
            const fromPort = ported && r.fromPort === 0 ? 1 : r.fromPort;
            rule = { direction, protocol, ...(ported ? { fromPort, toPort: r.toPort } : {}), cidrs: [] };
            byRange.set(key, rule);
          }
          if (r.cidr && !rule.cidrs.includes(r.cidr)) rule.cidrs.push(r.cidr);
          if (r.groupId) {
            const peers = this.instances()
              .filter((i) => i.state === 'running' && i.securityGroupIds.includes(r.groupId as string))
              .map((i) => i.instanceId);
            rule.peerVmIds = [...new Set([...(rule.peerVmIds ?? []), ...peers])];
          }
        }
      }
      for (const rule of byRange.values()) if (rule.cidrs.length || rule.peerVmIds?.length) out.push(rule);
    }
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // Describe / terminate / tags / console

  /** By-id lookup honouring eventual consistency; throws EC2's NotFound for what is not there. */
  private instancesById(ids: string[]): Ec2Instance[] {
    const bad = ids.find((id) => !INSTANCE_ID.test(id));
    if (bad !== undefined) throw new FakeApiError(400, 'InvalidInstanceID.Malformed', `Invalid id: "${bad}"`);
    const unique = [...new Set(ids)];
    const found = unique.map((id) => this.visibleInstance(id));
    const missing = unique.filter((_, i) => !found[i]);
    if (missing.length === 1) throw new FakeApiError(400, 'InvalidInstanceID.NotFound', `The instance ID '${missing[0]}' does not exist`);
    if (missing.length > 1) throw new FakeApiError(400, 'InvalidInstanceID.NotFound', `The instance IDs '${missing.join(', ')}' do not exist`);
    return found as Ec2Instance[];
  }

  private visibleInstance(id: string): Ec2Instance | undefined {
    const inst = this.instance(id);
    return inst && this.clock.now() >= inst.visibleAt ? inst : undefined;
  }

  private describeInstances(n: DescribeInput & { InstanceId?: string[] }): XmlChild {
    const ids = n.InstanceId ?? [];
    if (ids.length && n.MaxResults !== undefined) throw new FakeApiError(400, 'InvalidParameterCombination', 'The parameter instancesSet cannot be used with the parameter maxResults');
    const candidates = ids.length ? this.instancesById(ids) : this.instances().filter((i) => this.clock.now() >= i.visibleAt);
    const filtered = applyFilters(
      candidates,
      n.Filter,
      INSTANCE_FILTERS,
      (i) => ({
        'instance-id': i.instanceId,
        'instance-state-name': i.state,
        'instance-state-code': String(STATE_CODES[i.state]),
        'instance-type': i.instanceType,
        'image-id': i.imageId,
        'vpc-id': i.vpcId,
        'subnet-id': i.subnetId,
        'availability-zone': i.availabilityZone,
        'private-ip-address': i.state === 'terminated' ? undefined : i.privateIpAddress,
        'ip-address': i.publicIpAddress,
        'reservation-id': i.reservationId,
        'client-token': i.clientToken,
        'key-name': i.keyName,
        'instance.group-id': i.securityGroupIds,
        'instance.group-name': i.securityGroupIds.map((g) => this.registry.get<Ec2SecurityGroup>('securityGroups', g)?.groupName ?? ''),
        'instance-lifecycle': i.spot ? 'spot' : undefined,
        'metadata-options.http-tokens': i.metadataOptions.httpTokens,
        'iam-instance-profile.arn': i.iamInstanceProfile?.arn,
      }),
      (i) => i.tags,
    );
    const { page, nextToken } = paginate('DescribeInstances', filtered, n.MaxResults, n.NextToken);
    // Consecutive instances of one reservation share a reservationSet item.
    const groups: Ec2Instance[][] = [];
    for (const inst of page) {
      const last = groups[groups.length - 1];
      if (last && last[0].reservationId === inst.reservationId) last.push(inst);
      else groups.push([inst]);
    }
    return [list('reservationSet', groups, (g) => this.reservationBody(g[0].reservationId, g)), el('nextToken', nextToken)];
  }

  private reservationBody(reservationId: string, insts: Ec2Instance[]): XmlChild {
    return [
      fields({ reservationId, ownerId: this.accountId }),
      new Xml('<groupSet/>'),
      list('instancesSet', insts, (i) => this.instanceXml(i)),
    ];
  }

  private instanceXml(i: Ec2Instance): XmlChild {
    const groups = i.securityGroupIds.map((id) => ({ id, name: this.registry.get<Ec2SecurityGroup>('securityGroups', id)?.groupName ?? '' }));
    const groupSet = list('groupSet', groups, (g) => fields({ groupId: g.id, groupName: g.name }));
    const privateDns = i.state === 'terminated' ? '' : `ip-${i.privateIpAddress.replace(/\./g, '-')}.${this.dnsSuffix()}`;
    const publicDns = i.publicIpAddress ? `ec2-${i.publicIpAddress.replace(/\./g, '-')}.${this.region === 'us-east-1' ? 'compute-1' : `${this.region}.compute`}.amazonaws.com` : '';
    const association = i.publicIpAddress ? fields({ publicIp: i.publicIpAddress, publicDnsName: publicDns, ipOwnerId: 'amazon' }) : undefined;
    const attached = i.state !== 'terminated';
    const volumes = i.volumeIds.map((id) => this.registry.get<Ec2Volume>('volumes', id)).filter((v): v is Ec2Volume => !!v && v.instanceId === i.instanceId);
    return [
      fields({ instanceId: i.instanceId, imageId: i.imageId }),
      el('instanceState', fields({ code: STATE_CODES[i.state], name: i.state })),
      fields({ privateDnsName: privateDns, dnsName: publicDns, reason: i.stateTransitionReason, keyName: i.keyName, amiLaunchIndex: i.amiLaunchIndex }),
      new Xml('<productCodes/>'),
      fields({ instanceType: i.instanceType, launchTime: isoTime(i.launchTime) }),
      el('placement', fields({ availabilityZone: i.availabilityZone, groupName: '', tenancy: 'default' })),
      el('monitoring', fields({ state: i.monitoring })),
      fields({
        subnetId: attached ? i.subnetId : undefined,
        vpcId: attached ? i.vpcId : undefined,
        privateIpAddress: attached ? i.privateIpAddress : undefined,
        ipAddress: i.publicIpAddress,
        sourceDestCheck: attached ? true : undefined,
      }),
      groupSet,
      i.stateReason ? el('stateReason', fields({ code: i.stateReason.code, message: i.stateReason.message })) : undefined,
      fields({ architecture: i.architecture, rootDeviceType: 'ebs', rootDeviceName: i.rootDeviceName }),
      list('blockDeviceMapping', volumes, (v) =>
        fields({ deviceName: v.deviceName, ebs: fields({ volumeId: v.volumeId, status: 'attached', attachTime: isoTime(v.attachTime), deleteOnTermination: v.deleteOnTermination }) }),
      ),
      fields({ virtualizationType: 'hvm', clientToken: i.clientToken ?? '' }),
      list('tagSet', i.tags, (t) => fields({ key: t.key, value: t.value })),
      fields({ hypervisor: 'xen' }),
      list('networkInterfaceSet', attached ? [i] : [], () =>
        fields({
          networkInterfaceId: i.networkInterfaceId,
          subnetId: i.subnetId,
          vpcId: i.vpcId,
          description: '',
          ownerId: this.accountId,
          status: 'in-use',
          macAddress: i.macAddress,
          privateIpAddress: i.privateIpAddress,
          privateDnsName: privateDns,
          sourceDestCheck: true,
          groupSet,
          attachment: fields({ attachmentId: i.attachmentId, deviceIndex: 0, networkCardIndex: 0, status: i.state === 'shutting-down' ? 'detaching' : 'attached', attachTime: isoTime(i.launchTime), deleteOnTermination: true }),
          association,
          privateIpAddressesSet: new Xml(`<item>${fields({ privateIpAddress: i.privateIpAddress, privateDnsName: privateDns, primary: true, association }).text}</item>`),
          interfaceType: 'interface',
        }),
      ),
      i.iamInstanceProfile ? el('iamInstanceProfile', fields({ arn: i.iamInstanceProfile.arn, id: i.iamInstanceProfile.id })) : undefined,
      fields({ ebsOptimized: i.ebsOptimized, enaSupport: true, instanceLifecycle: i.spot ? 'spot' : undefined, spotInstanceRequestId: i.spot?.spotInstanceRequestId }),
      el(
        'metadataOptions',
        fields({
          state: i.state === 'pending' ? 'pending' : 'applied',
          httpTokens: i.metadataOptions.httpTokens,
          httpPutResponseHopLimit: i.metadataOptions.httpPutResponseHopLimit,
          httpEndpoint: i.metadataOptions.httpEndpoint,
          httpProtocolIpv6: i.metadataOptions.httpProtocolIpv6,
          instanceMetadataTags: i.metadataOptions.instanceMetadataTags,
        }),
      ),
      fields({ platformDetails: 'Linux/UNIX', usageOperation: 'RunInstances', bootMode: 'uefi-preferred', currentInstanceBootMode: 'legacy-bios' }),
    ];
  }

  private dnsSuffix(): string {
    return this.region === 'us-east-1' ? 'ec2.internal' : `${this.region}.compute.internal`;
  }

  private terminateInstances(n: { InstanceId: string[] }): XmlChild {
    const insts = this.instancesById(n.InstanceId);
    const locked = insts.find((i) => i.disableApiTermination && i.state !== 'terminated' && i.state !== 'shutting-down');
    if (locked) {
      throw new FakeApiError(400, 'OperationNotPermitted', `The instance '${locked.instanceId}' may not be terminated. Modify its 'disableApiTermination' instance attribute and try again.`);
    }
    const changes = insts.map((inst) => {
      const previous = inst.state;
      if (previous !== 'shutting-down' && previous !== 'terminated') {
        inst.stateReason = { code: 'Client.UserInitiatedShutdown', message: 'Client.UserInitiatedShutdown: User initiated shutdown' };
        inst.stateTransitionReason = `User initiated (${gmt(this.clock.now())})`;
        this.go(inst, 'shutting-down', { state: 'terminated', afterMs: this.timings.shuttingDownMs });
      }
      return { inst, previous };
    });
    return list('instancesSet', changes, ({ inst, previous }) => [
      fields({ instanceId: inst.instanceId }),
      el('currentState', fields({ code: STATE_CODES[inst.state], name: inst.state })),
      el('previousState', fields({ code: STATE_CODES[previous], name: previous })),
    ]);
  }

  private createTags(n: { ResourceId: string[]; Tag: { Key?: string; Value?: string }[] }): XmlChild {
    const tags = validateTags(n.Tag);
    const targets = n.ResourceId.map((id) => {
      const [kind, notFound] = taggable(id);
      const v = kind === 'instances' ? this.visibleInstance(id) : this.registry.get<{ tags: Ec2Tag[] }>(kind, id);
      if (!v) throw new FakeApiError(400, notFound, `The ID '${id}' does not exist`);
      return v as { tags: Ec2Tag[] };
    });
    for (const t of targets) {
      const merged = [...t.tags];
      for (const tag of tags) {
        const existing = merged.find((x) => x.key === tag.key);
        if (existing) existing.value = tag.value;
        else merged.push({ ...tag });
      }
      if (merged.length > TAGS_PER_RESOURCE) throw new FakeApiError(400, 'TagLimitExceeded', 'The maximum number of Tags for a resource has been reached.');
    }
    for (const t of targets) {
      for (const tag of tags) {
        const existing = t.tags.find((x) => x.key === tag.key);
        if (existing) existing.value = tag.value;
        else t.tags.push({ ...tag });
      }
    }
    return fields({ return: true });
  }

  /**
   * Without `Latest`: the buffer posted at the last state transition (API reference,
   * GetConsoleOutput: "buffered information that was posted shortly after an instance transition
   * state"). With `Latest`: the live console, on Nitro types only; other types are refused. "At
   * any time during the instance lifecycle": a VM on its way down (shutting-down, stopping) or
   * gone still shows what it printed last, not the buffer being posted.
   */
  private async getConsoleOutput(n: { InstanceId: string; Latest?: boolean }): Promise<XmlChild> {
    const [inst] = this.instancesById([n.InstanceId]);
    const rt = this.runtime.get(inst.instanceId);
    let output = inst.postedConsole;
    if (n.Latest === true) {
      if (INSTANCE_TYPES[inst.instanceType]?.hypervisor !== 'nitro') {
        throw new FakeApiError(400, 'UnsupportedOperation', `The instance type ${inst.instanceType} does not support retrieving the latest console output.`);
      }
      if (rt?.vm) output = await rt.vm.consoleOutput();
      else if (!this.booter && inst.runningSince !== undefined && inst.state === 'running') output = this.cannedConsole(inst);
    }
    return [fields({ instanceId: inst.instanceId, timestamp: isoTime(this.clock.now()) }), output ? el('output', Buffer.from(output, 'utf8').toString('base64')) : undefined];
  }

  /** No simulated VM: a short, plausible boot log so callers have something to show. */
  private cannedConsole(inst: Ec2Instance): string {
    return CANNED_CONSOLE.replace('$TIME', new Date(inst.runningSince ?? this.clock.now()).toUTCString());
  }

  private describeInstanceStatus(n: DescribeInput & { InstanceId?: string[]; IncludeAllInstances?: boolean }): XmlChild {
    const ids = n.InstanceId ?? [];
    if (ids.length && n.MaxResults !== undefined) throw new FakeApiError(400, 'InvalidParameterCombination', 'The parameter instancesSet cannot be used with the parameter maxResults');
    let insts = ids.length ? this.instancesById(ids) : this.instances().filter((i) => this.clock.now() >= i.visibleAt);
    if (!n.IncludeAllInstances) insts = insts.filter((i) => i.state === 'running');
    const check = (i: Ec2Instance): 'ok' | 'initializing' | 'not-applicable' => {
      if (i.state !== 'running' || i.runningSince === undefined) return 'not-applicable';
      return this.clock.now() - i.runningSince < this.timings.statusChecksMs ? 'initializing' : 'ok';
    };
    const reach = (s: string) => (s === 'ok' ? 'passed' : s === 'initializing' ? 'initializing' : undefined);
    const filtered = applyFilters(insts, n.Filter, STATUS_FILTERS, (i) => ({
      'availability-zone': i.availabilityZone,
      'instance-state-name': i.state,
      'instance-state-code': String(STATE_CODES[i.state]),
      'instance-status.status': check(i),
      'system-status.status': check(i),
      'instance-status.reachability': reach(check(i)),
      'system-status.reachability': reach(check(i)),
    }));
    const { page, nextToken } = paginate('DescribeInstanceStatus', filtered, n.MaxResults, n.NextToken);
    const summary = (i: Ec2Instance) => {
      const s = check(i);
      const r = reach(s);
      return [fields({ status: s }), list('details', r ? [r] : [], (x) => fields({ name: 'reachability', status: x }))];
    };
    return [
      list('instanceStatusSet', page, (i) => [
        fields({ instanceId: i.instanceId, availabilityZone: i.availabilityZone }),
        el('instanceState', fields({ code: STATE_CODES[i.state], name: i.state })),
        el('systemStatus', summary(i)),
        el('instanceStatus', summary(i)),
      ]),
      el('nextToken', nextToken),
    ];
  }

  // ---------------------------------------------------------------------------------------------
  // Security groups

  private createSecurityGroup(n: { GroupName: string; GroupDescription: string; VpcId?: string; TagSpecification?: TagSpecInput[] }): XmlChild {
    const name = n.GroupName;
    if (name.length === 0 || name.length > 255) throw new FakeApiError(400, 'InvalidParameterValue', `Invalid value '${name}' for GroupName. Length must be between 1 and 255.`);
    if (name.startsWith('sg-')) throw new FakeApiError(400, 'InvalidParameterValue', 'Group names may not be in the format sg-*');
    if (n.GroupDescription.length > 255 || !/^[\x20-\x7e]*$/.test(n.GroupDescription)) {
      throw new FakeApiError(400, 'InvalidParameterValue', `Invalid value '${n.GroupDescription}' for GroupDescription. Character sets beyond ASCII are not supported.`);
    }
    const vpcId = n.VpcId ?? this.defaultVpc.vpcId;
    if (!this.registry.has('vpcs', vpcId)) throw new FakeApiError(400, 'InvalidVpcID.NotFound', `The vpc ID '${vpcId}' does not exist`);
    if (this.registry.find<Ec2SecurityGroup>('securityGroups', (g) => g.groupName === name && g.vpcId === vpcId).length) {
      throw new FakeApiError(400, 'InvalidGroup.Duplicate', `The security group '${name}' already exists for VPC '${vpcId}'`);
    }
    const tags: Ec2Tag[] = [];
    for (const spec of n.TagSpecification ?? []) {
      if (spec.ResourceType !== 'security-group') throw new FakeApiError(400, 'InvalidParameterValue', `'${spec.ResourceType ?? ''}' is not a valid taggable resource type for this operation.`);
      tags.push(...validateTags(spec.Tag ?? []));
    }
    validateTags(tags.map((t) => ({ Key: t.key, Value: t.value })));
    const groupId = this.ids.hex('sg-', 17);
    this.registry.put<Ec2SecurityGroup>('securityGroups', groupId, {
      groupId,
      groupName: name,
      description: n.GroupDescription,
      vpcId,
      ownerId: this.accountId,
      isDefault: false,
      tags,
      ingress: [],
      egress: [{ ruleId: this.ids.hex('sgr-', 17), protocol: '-1', cidr: '0.0.0.0/0', tags: [] }],
    });
    return [fields({ return: true, groupId, securityGroupArn: this.sgArn(groupId) }), tags.length ? list('tagSet', tags, (t) => fields({ key: t.key, value: t.value })) : undefined];
  }

  private sgArn(groupId: string): string {
    return `arn:aws:ec2:${this.region}:${this.accountId}:security-group/${groupId}`;
  }

  /** The group an Authorize/Revoke/Delete call names (GroupId, or GroupName in the default VPC). */
  private targetGroup(n: { GroupId?: string; GroupName?: string }): Ec2SecurityGroup {
    if (n.GroupId !== undefined) {
      if (!GROUP_ID.test(n.GroupId)) throw new FakeApiError(400, 'InvalidGroupId.Malformed', `Invalid id: "${n.GroupId}" (expecting "sg-...")`);
      const g = this.registry.get<Ec2SecurityGroup>('securityGroups', n.GroupId);
      if (!g) throw new FakeApiError(400, 'InvalidGroup.NotFound', `The security group '${n.GroupId}' does not exist`);
      return g;
    }
    if (n.GroupName !== undefined) {
      const g = this.registry.find<Ec2SecurityGroup>('securityGroups', (x) => x.groupName === n.GroupName && x.vpcId === this.defaultVpc.vpcId)[0];
      if (!g) throw new FakeApiError(400, 'InvalidGroup.NotFound', `The security group '${n.GroupName}' does not exist in default VPC '${this.defaultVpc.vpcId}'`);
      return g;
    }
    throw new FakeApiError(400, 'MissingParameter', 'The request must contain the parameter groupName or groupId');
  }

  /** Flattens IpPermissions (or the legacy top-level fields) into one rule per source. */
  private parsePermissions(n: SgIngressInput, group: Ec2SecurityGroup, mustExist: boolean): Omit<Ec2SgRule, 'ruleId' | 'tags'>[] {
    const perms: IpPermissionInput[] = [...(n.IpPermissions ?? [])];
    if (n.IpProtocol !== undefined || n.CidrIp !== undefined || n.SourceSecurityGroupName !== undefined) {
      perms.push({
        IpProtocol: n.IpProtocol ?? '-1',
        FromPort: n.FromPort,
        ToPort: n.ToPort,
        IpRanges: n.CidrIp !== undefined ? [{ CidrIp: n.CidrIp }] : [],
        Groups: n.SourceSecurityGroupName !== undefined ? [{ GroupName: n.SourceSecurityGroupName }] : [],
      });
    }
    const out: Omit<Ec2SgRule, 'ruleId' | 'tags'>[] = [];
    for (const p of perms) {
      const protocol = normalizeProtocol(p.IpProtocol);
      let fromPort: number | undefined;
      let toPort: number | undefined;
      if (protocol === 'tcp' || protocol === 'udp') {
        if (p.FromPort === undefined || p.ToPort === undefined) throw new FakeApiError(400, 'InvalidParameterValue', `Invalid value for portRange. Must specify both from and to ports with TCP/UDP.`);
        if (p.FromPort < 0 || p.ToPort > 65535 || p.FromPort > p.ToPort) throw new FakeApiError(400, 'InvalidParameterValue', `Invalid TCP/UDP port range: ${p.FromPort}-${p.ToPort}`);
        fromPort = p.FromPort;
        toPort = p.ToPort;
      } else if (protocol === 'icmp' || protocol === 'icmpv6') {
        fromPort = p.FromPort ?? -1;
        toPort = p.ToPort ?? -1;
      }
      const ranges = p.IpRanges ?? [];
      const pairs = p.Groups ?? [];
      if (ranges.length === 0 && pairs.length === 0) {
        if ((p.Ipv6Ranges?.length ?? 0) > 0 || (p.PrefixListIds?.length ?? 0) > 0) throw new FakeApiError(400, 'Unsupported', 'The EC2 fake supports IPv4 ranges and security group sources only.');
        throw new FakeApiError(400, 'MissingParameter', 'Missing source specification');
      }
      for (const r of ranges) {
        if (!r.CidrIp || !isCidr(r.CidrIp)) throw new FakeApiError(400, 'InvalidParameterValue', `CIDR block ${r.CidrIp ?? ''} is malformed`);
        out.push({ protocol, fromPort, toPort, cidr: r.CidrIp, description: r.Description });
      }
      for (const pair of pairs) {
        let groupId = pair.GroupId;
        if (groupId === undefined && pair.GroupName !== undefined) {
          groupId = this.registry.find<Ec2SecurityGroup>('securityGroups', (x) => x.groupName === pair.GroupName && x.vpcId === group.vpcId)[0]?.groupId;
          if (!groupId && mustExist) throw new FakeApiError(400, 'InvalidGroup.NotFound', `The security group '${pair.GroupName}' does not exist in VPC '${group.vpcId}'`);
        }
        if (!groupId) {
          if (mustExist) throw new FakeApiError(400, 'MissingParameter', 'Missing source specification');
          continue;
        }
        if (mustExist && !this.registry.has('securityGroups', groupId)) throw new FakeApiError(400, 'InvalidGroup.NotFound', `The security group '${groupId}' does not exist`);
        out.push({ protocol, fromPort, toPort, groupId, description: pair.Description });
      }
    }
    return out;
  }

  private authorizeIngress(n: SgIngressInput): XmlChild {
    const group = this.targetGroup(n);
    const candidates = this.parsePermissions(n, group, true);
    const seen: Omit<Ec2SgRule, 'ruleId' | 'tags'>[] = [...group.ingress];
    for (const c of candidates) {
      if (seen.some((r) => sameRule(r, c))) {
        const peer = c.cidr ?? c.groupId;
        const ports = c.fromPort === undefined ? 'ALL' : `from port: ${c.fromPort}, to port: ${c.toPort}`;
        throw new FakeApiError(400, 'InvalidPermission.Duplicate', `the specified rule "peer: ${peer}, ${c.protocol === '-1' ? 'ALL' : c.protocol.toUpperCase()}, ${ports}, ALLOW" already exists`);
      }
      seen.push(c);
    }
    if (seen.length > RULES_PER_GROUP) throw new FakeApiError(400, 'RulesPerSecurityGroupLimitExceeded', 'The maximum number of rules per security group has been reached.');
    const tags: Ec2Tag[] = [];
    for (const spec of n.TagSpecification ?? []) {
      if (spec.ResourceType !== 'security-group-rule') throw new FakeApiError(400, 'InvalidParameterValue', `'${spec.ResourceType ?? ''}' is not a valid taggable resource type for this operation.`);
      tags.push(...validateTags(spec.Tag ?? []));
    }
    const added = candidates.map((c) => ({ ...c, ruleId: this.ids.hex('sgr-', 17), tags: tags.map((t) => ({ ...t })) }));
    group.ingress.push(...added);
    this.refreshFirewalls();
    return [fields({ return: true }), list('securityGroupRuleSet', added, (r) => this.ruleXml(group, r, false))];
  }

  private revokeIngress(n: SgIngressInput): XmlChild {
    const group = this.targetGroup(n);
    const removed: Ec2SgRule[] = [];
    for (const id of n.SecurityGroupRuleId ?? []) {
      const r = group.ingress.find((x) => x.ruleId === id);
      if (!r) throw new FakeApiError(400, 'InvalidSecurityGroupRuleId.NotFound', `The security group rule ID '${id}' does not exist`);
      removed.push(r);
    }
    const unknown: Omit<Ec2SgRule, 'ruleId' | 'tags'>[] = [];
    const hasPermissions = (n.IpPermissions?.length ?? 0) > 0 || n.IpProtocol !== undefined || n.CidrIp !== undefined || n.SourceSecurityGroupName !== undefined;
    if (hasPermissions) {
      for (const c of this.parsePermissions(n, group, false)) {
        const r = group.ingress.find((x) => sameRule(x, c));
        if (r) removed.push(r);
        else unknown.push(c);
      }
    }
    group.ingress = group.ingress.filter((r) => !removed.includes(r));
    this.refreshFirewalls();
    return [
      fields({ return: unknown.length === 0 }),
      unknown.length ? this.permissionsXml('unknownIpPermissionSet', unknown) : undefined,
      list('revokedSecurityGroupRuleSet', removed, (r) =>
        fields({ securityGroupRuleId: r.ruleId, groupId: group.groupId, isEgress: false, ipProtocol: r.protocol, fromPort: r.fromPort, toPort: r.toPort, cidrIpv4: r.cidr, referencedGroupId: r.groupId }),
      ),
    ];
  }

  private ruleXml(group: Ec2SecurityGroup, r: Ec2SgRule, isEgress: boolean): XmlChild {
    return [
      fields({
        securityGroupRuleId: r.ruleId,
        groupId: group.groupId,
        groupOwnerId: this.accountId,
        isEgress,
        ipProtocol: r.protocol,
        fromPort: r.fromPort ?? -1,
        toPort: r.toPort ?? -1,
        cidrIpv4: r.cidr,
        description: r.description,
      }),
      r.groupId ? el('referencedGroupInfo', fields({ groupId: r.groupId, userId: this.accountId })) : undefined,
      list('tagSet', r.tags, (t) => fields({ key: t.key, value: t.value })),
      fields({ securityGroupRuleArn: `arn:aws:ec2:${this.region}:${this.accountId}:security-group-rule/${r.ruleId}` }),
    ];
  }

  /** EC2's grouped view: one IpPermission per protocol/port range, its sources listed inside. */
  private permissionsXml(name: string, rules: Omit<Ec2SgRule, 'ruleId' | 'tags'>[]): XmlChild {
    const byRange = new Map<string, Omit<Ec2SgRule, 'ruleId' | 'tags'>[]>();
    for (const r of rules) {
      const key = `${r.protocol}|${r.fromPort}|${r.toPort}`;
      byRange.set(key, [...(byRange.get(key) ?? []), r]);
    }
    return list(name, [...byRange.values()], (rs) => [
      fields({ ipProtocol: rs[0].protocol, fromPort: rs[0].fromPort, toPort: rs[0].toPort }),
      list('groups', rs.filter((r) => r.groupId), (r) => fields({ description: r.description, userId: this.accountId, groupId: r.groupId })),
      list('ipRanges', rs.filter((r) => r.cidr), (r) => fields({ cidrIp: r.cidr, description: r.description })),
      new Xml('<ipv6Ranges/><prefixListIds/>'),
    ]);
  }

  private describeSecurityGroups(n: DescribeInput & { GroupId?: string[]; GroupName?: string[] }): XmlChild {
    const ids = n.GroupId ?? [];
    const names = n.GroupName ?? [];
    if ((ids.length || names.length) && n.MaxResults !== undefined) throw new FakeApiError(400, 'InvalidParameterCombination', 'The parameter groupIdSet cannot be used with the parameter maxResults');
    let groups = this.securityGroups();
    if (ids.length || names.length) {
      const picked = new Set<Ec2SecurityGroup>();
      for (const id of ids) picked.add(this.targetGroup({ GroupId: id }));
      for (const name of names) picked.add(this.targetGroup({ GroupName: name }));
      groups = groups.filter((g) => picked.has(g));
    }
    const filtered = applyFilters(
      groups,
      n.Filter,
      SG_FILTERS,
      (g) => ({
        'group-id': g.groupId,
        'group-name': g.groupName,
        'vpc-id': g.vpcId,
        description: g.description,
        'owner-id': g.ownerId,
        'ip-permission.group-id': g.ingress.flatMap((r) => (r.groupId ? [r.groupId] : [])),
        'ip-permission.cidr': g.ingress.flatMap((r) => (r.cidr ? [r.cidr] : [])),
        'ip-permission.protocol': g.ingress.map((r) => r.protocol),
        'ip-permission.from-port': g.ingress.flatMap((r) => (r.fromPort !== undefined ? [String(r.fromPort)] : [])),
        'ip-permission.to-port': g.ingress.flatMap((r) => (r.toPort !== undefined ? [String(r.toPort)] : [])),
      }),
      (g) => g.tags,
    );
    const { page, nextToken } = paginate('DescribeSecurityGroups', filtered, n.MaxResults, n.NextToken);
    return [
      list('securityGroupInfo', page, (g) => [
        fields({ ownerId: g.ownerId, groupId: g.groupId, groupName: g.groupName, groupDescription: g.description, vpcId: g.vpcId, securityGroupArn: this.sgArn(g.groupId) }),
        this.permissionsXml('ipPermissions', g.ingress),
        this.permissionsXml('ipPermissionsEgress', g.egress),
        list('tagSet', g.tags, (t) => fields({ key: t.key, value: t.value })),
      ]),
      el('nextToken', nextToken),
    ];
  }

  private deleteSecurityGroup(n: { GroupId?: string; GroupName?: string }): XmlChild {
    const g = this.targetGroup(n);
    if (g.isDefault) throw new FakeApiError(400, 'CannotDelete', `the specified group: "${g.groupId}" name: "default" cannot be deleted by a user`);
    // Any instance that still holds a network interface (everything but `terminated`) depends on it.
    const user = this.instances().find((i) => i.state !== 'terminated' && i.securityGroupIds.includes(g.groupId));
    const referrer = this.securityGroups().find((o) => o !== g && [...o.ingress, ...o.egress].some((r) => r.groupId === g.groupId));
    if (user || referrer) throw new FakeApiError(400, 'DependencyViolation', `resource ${g.groupId} has a dependent object`);
    this.registry.delete('securityGroups', g.groupId);
    return fields({ return: true, groupId: g.groupId });
  }

  // ---------------------------------------------------------------------------------------------
  // VPCs, subnets, images

  // ---------------------------------------------------------------------------------------------
  // Offerings, instance types, route tables, regions, zones

  private describeInstanceTypeOfferings(n: DescribeInput & { LocationType?: string }): XmlChild {
    const locationType = n.LocationType ?? 'region';
    const zoneIds = new Map(this.subnets().filter((s) => s.defaultForAz).map((s) => [s.availabilityZone, s.availabilityZoneId]));
    const offerings: { instanceType: string; location: string }[] = [];
    for (const type of Object.keys(INSTANCE_TYPES)) {
      if (locationType === 'region') {
        if (this.zones().some((z) => this.offers(z, type))) offerings.push({ instanceType: type, location: this.region });
        continue;
      }
      for (const zone of this.zones()) {
        if (!this.offers(zone, type)) continue;
        offerings.push({ instanceType: type, location: locationType === 'availability-zone' ? zone : (zoneIds.get(zone) as string) });
      }
    }
    const filtered = applyFilters(offerings, n.Filter, OFFERING_FILTERS, (o) => ({ 'instance-type': o.instanceType, location: o.location }));
    const { page, nextToken } = paginate('DescribeInstanceTypeOfferings', filtered, n.MaxResults, n.NextToken);
    return [list('instanceTypeOfferingSet', page, (o) => fields({ instanceType: o.instanceType, locationType, location: o.location })), el('nextToken', nextToken)];
  }

  private describeInstanceTypes(n: DescribeInput & { InstanceType?: string[] }): XmlChild {
    const wanted = n.InstanceType ?? [];
    const unknown = wanted.filter((t) => INSTANCE_TYPES[t] === undefined);
    if (unknown.length) throw new FakeApiError(400, 'InvalidInstanceType', `The following supplied instance types do not exist: [${unknown.join(', ')}]`);
    const types = (wanted.length ? wanted : Object.keys(INSTANCE_TYPES)).map((t) => ({ name: t, ...(INSTANCE_TYPES[t] as (typeof INSTANCE_TYPES)[string]) }));
    const { page, nextToken } = paginate('DescribeInstanceTypes', types, n.MaxResults, n.NextToken);
    return [
      list('instanceTypeSet', page, (t) => [
        fields({ instanceType: t.name, currentGeneration: !/^(m1|t1)\./.test(t.name), hypervisor: t.hypervisor }),
        el('processorInfo', list('supportedArchitectures', [t.architecture], (a) => a)),
        el('vCpuInfo', fields({ defaultVCpus: t.vcpus })),
      ]),
      el('nextToken', nextToken),
    ];
  }

  private describeRouteTables(n: DescribeInput & { RouteTableId?: string[] }): XmlChild {
    let tables = this.routeTables();
    for (const id of n.RouteTableId ?? []) if (!tables.some((t) => t.routeTableId === id)) throw new FakeApiError(400, 'InvalidRouteTableID.NotFound', `The routeTable ID '${id}' does not exist`);
    if (n.RouteTableId?.length) tables = tables.filter((t) => n.RouteTableId?.includes(t.routeTableId));
    const filtered = applyFilters(
      tables,
      n.Filter,
      ROUTE_TABLE_FILTERS,
      (t) => ({
        'route-table-id': t.routeTableId,
        'vpc-id': t.vpcId,
        'association.subnet-id': t.subnetIds,
        // Only the main association has main=true; a table with only subnet associations has none.
        'association.main': t.main ? 'true' : t.subnetIds.length ? 'false' : undefined,
        'route.destination-cidr-block': t.routes.map((r) => r.destinationCidrBlock),
        'route.nat-gateway-id': t.routes.flatMap((r) => (r.natGatewayId ? [r.natGatewayId] : [])),
        'route.gateway-id': t.routes.flatMap((r) => (r.gatewayId ? [r.gatewayId] : [])),
        'route.instance-id': t.routes.flatMap((r) => (r.instanceId ? [r.instanceId] : [])),
        'route.state': t.routes.map((r) => r.state),
      }),
      (t) => t.tags,
    );
    const { page, nextToken } = paginate('DescribeRouteTables', filtered, n.MaxResults, n.NextToken);
    const assoc = (t: Ec2RouteTable, subnetId: string | undefined) =>
      fields({
        main: subnetId === undefined,
        routeTableAssociationId: stableId('rtbassoc-', t.routeTableId + (subnetId ?? 'main')),
        routeTableId: t.routeTableId,
        subnetId,
        associationState: fields({ state: 'associated' }),
      });
    return [
      list('routeTableSet', page, (t) => [
        fields({ routeTableId: t.routeTableId, vpcId: t.vpcId, ownerId: this.accountId }),
        list('routeSet', t.routes, (r) =>
          fields({
            destinationCidrBlock: r.destinationCidrBlock,
            gatewayId: r.gatewayId,
            natGatewayId: r.natGatewayId,
            instanceId: r.instanceId,
            networkInterfaceId: r.networkInterfaceId,
            state: r.state,
            origin: r.gatewayId === 'local' ? 'CreateRouteTable' : 'CreateRoute',
          }),
        ),
        list('associationSet', [...(t.main ? [undefined] : []), ...t.subnetIds], (subnetId) => assoc(t, subnetId)),
        new Xml('<propagatingVgwSet/>'),
        list('tagSet', t.tags, (x) => fields({ key: x.key, value: x.value })),
      ]),
      el('nextToken', nextToken),
    ];
  }

  private describeRegions(n: DescribeInput & { RegionName?: string[]; AllRegions?: boolean }): XmlChild {
    const all = { ...REGIONS, [this.region]: 'opt-in-not-required' as const };
    let regions = Object.entries(all).map(([name, optIn]) => ({ name, optIn }));
    if (!n.AllRegions) regions = regions.filter((r) => r.optIn !== 'not-opted-in');
    if (n.RegionName?.length) regions = regions.filter((r) => n.RegionName?.includes(r.name));
    const filtered = applyFilters(regions, n.Filter, REGION_FILTERS, (r) => ({ 'region-name': r.name, 'opt-in-status': r.optIn, endpoint: `ec2.${r.name}.amazonaws.com` }));
    return list('regionInfo', filtered, (r) => fields({ regionName: r.name, regionEndpoint: `ec2.${r.name}.amazonaws.com`, optInStatus: r.optIn }));
  }

  private describeAvailabilityZones(n: DescribeInput & { ZoneName?: string[] }): XmlChild {
    let zones = this.subnets()
      .filter((s) => s.defaultForAz)
      .map((s) => ({ name: s.availabilityZone, id: s.availabilityZoneId }))
      .sort((a, b) => a.name.localeCompare(b.name));
    for (const z of n.ZoneName ?? []) if (!zones.some((x) => x.name === z)) throw new FakeApiError(400, 'InvalidParameterValue', `The zone '${z}' does not exist.`);
    if (n.ZoneName?.length) zones = zones.filter((z) => n.ZoneName?.includes(z.name));
    const filtered = applyFilters(zones, n.Filter, ZONE_FILTERS, (z) => ({
      'zone-name': z.name,
      'zone-id': z.id,
      state: 'available',
      'region-name': this.region,
      'zone-type': 'availability-zone',
      'opt-in-status': 'opt-in-not-required',
    }));
    return list('availabilityZoneInfo', filtered, (z) => [
      fields({ optInStatus: 'opt-in-not-required', zoneName: z.name, zoneId: z.id, zoneState: 'available', regionName: this.region, groupName: this.region, networkBorderGroup: this.region, zoneType: 'availability-zone' }),
      new Xml('<messageSet/>'),
    ]);
  }

  private describeVpcs(n: DescribeInput & { VpcId?: string[] }): XmlChild {
    let vpcs = this.registry.list<Ec2Vpc>('vpcs');
    for (const id of n.VpcId ?? []) if (!vpcs.some((v) => v.vpcId === id)) throw new FakeApiError(400, 'InvalidVpcID.NotFound', `The vpc ID '${id}' does not exist`);
    if (n.VpcId?.length) vpcs = vpcs.filter((v) => n.VpcId?.includes(v.vpcId));
    const filtered = applyFilters(
      vpcs,
      n.Filter,
      VPC_FILTERS,
      (v) => ({
        'vpc-id': v.vpcId,
        'is-default': String(v.isDefault),
        isDefault: String(v.isDefault),
        cidr: v.cidrBlock,
        'cidr-block-association.cidr-block': v.cidrBlock,
        state: 'available',
        'owner-id': this.accountId,
        'dhcp-options-id': v.dhcpOptionsId,
      }),
      (v) => v.tags,
    );
    const { page, nextToken } = paginate('DescribeVpcs', filtered, n.MaxResults, n.NextToken);
    return [
      list('vpcSet', page, (v) => [
        fields({ vpcId: v.vpcId, ownerId: this.accountId, state: 'available', cidrBlock: v.cidrBlock }),
        list('cidrBlockAssociationSet', [v], () => fields({ associationId: v.cidrAssociationId, cidrBlock: v.cidrBlock, cidrBlockState: fields({ state: 'associated' }) })),
        new Xml('<ipv6CidrBlockAssociationSet/>'),
        fields({ dhcpOptionsId: v.dhcpOptionsId, instanceTenancy: 'default', isDefault: v.isDefault }),
        list('tagSet', v.tags, (t) => fields({ key: t.key, value: t.value })),
      ]),
      el('nextToken', nextToken),
    ];
  }

  private describeSubnets(n: DescribeInput & { SubnetId?: string[] }): XmlChild {
    let subnets = this.subnets();
    for (const id of n.SubnetId ?? []) if (!subnets.some((s) => s.subnetId === id)) throw new FakeApiError(400, 'InvalidSubnetID.NotFound', `The subnet ID '${id}' does not exist`);
    if (n.SubnetId?.length) subnets = subnets.filter((s) => n.SubnetId?.includes(s.subnetId));
    const filtered = applyFilters(
      subnets,
      n.Filter,
      SUBNET_FILTERS,
      (s) => ({
        'subnet-id': s.subnetId,
        'vpc-id': s.vpcId,
        'availability-zone': s.availabilityZone,
        availabilityZone: s.availabilityZone,
        'availability-zone-id': s.availabilityZoneId,
        'default-for-az': String(s.defaultForAz),
        defaultForAz: String(s.defaultForAz),
        'map-public-ip-on-launch': String(s.mapPublicIpOnLaunch),
        'cidr-block': s.cidrBlock,
        cidr: s.cidrBlock,
        cidrBlock: s.cidrBlock,
        state: 'available',
        'owner-id': this.accountId,
      }),
      (s) => s.tags,
    );
    const { page, nextToken } = paginate('DescribeSubnets', filtered, n.MaxResults, n.NextToken);
    return [
      list('subnetSet', page, (s) => [
        fields({
          subnetId: s.subnetId,
          subnetArn: `arn:aws:ec2:${this.region}:${this.accountId}:subnet/${s.subnetId}`,
          state: 'available',
          vpcId: s.vpcId,
          ownerId: this.accountId,
          cidrBlock: s.cidrBlock,
          availableIpAddressCount: availableAddresses(s),
          availabilityZone: s.availabilityZone,
          availabilityZoneId: s.availabilityZoneId,
          defaultForAz: s.defaultForAz,
          mapPublicIpOnLaunch: s.mapPublicIpOnLaunch,
          assignIpv6AddressOnCreation: false,
        }),
        new Xml('<ipv6CidrBlockAssociationSet/>'),
        list('tagSet', s.tags, (t) => fields({ key: t.key, value: t.value })),
      ]),
      el('nextToken', nextToken),
    ];
  }

  private describeImages(n: DescribeInput & { ImageId?: string[]; Owner?: string[] }): XmlChild {
    let images = this.images();
    const ids = n.ImageId ?? [];
    for (const id of ids) {
      if (!IMAGE_ID.test(id)) throw new FakeApiError(400, 'InvalidAMIID.Malformed', `Invalid id: "${id}" (expecting "ami-...")`);
      if (!images.some((i) => i.imageId === id)) throw new FakeApiError(400, 'InvalidAMIID.NotFound', `The image id '[${id}]' does not exist`);
    }
    if (ids.length) images = images.filter((i) => ids.includes(i.imageId));
    const owners = n.Owner ?? [];
    if (owners.length) {
      images = images.filter((i) => owners.some((o) => (o === 'self' ? i.ownerId === this.accountId : o === i.ownerId || o === i.ownerAlias)));
    }
    const filtered = applyFilters(images, n.Filter, IMAGE_FILTERS, (i) => ({
      name: i.name,
      architecture: i.architecture,
      state: i.state,
      'image-id': i.imageId,
      'owner-id': i.ownerId,
      'owner-alias': i.ownerAlias,
      'root-device-type': 'ebs',
      'virtualization-type': 'hvm',
      'is-public': 'true',
      'image-type': 'machine',
      description: i.description,
    }));
    const { page, nextToken } = paginate('DescribeImages', filtered, n.MaxResults, n.NextToken);
    return [
      list('imagesSet', page, (i) => [
        fields({
          imageId: i.imageId,
          imageLocation: `${i.ownerAlias ?? i.ownerId}/${i.name}`,
          imageState: i.state,
          imageOwnerId: i.ownerId,
          creationDate: i.creationDate,
          isPublic: true,
          architecture: i.architecture,
          imageType: 'machine',
          name: i.name,
          description: i.description,
          imageOwnerAlias: i.ownerAlias,
          rootDeviceType: 'ebs',
          rootDeviceName: i.rootDeviceName,
        }),
        list('blockDeviceMapping', [i], () =>
          fields({
            deviceName: i.rootDeviceName,
            ebs: fields({ snapshotId: stableId('snap-', i.imageId), volumeSize: i.rootVolumeSizeGb, deleteOnTermination: true, volumeType: 'gp3', encrypted: false }),
          }),
        ),
        fields({ virtualizationType: 'hvm', hypervisor: 'xen', enaSupport: true, sriovNetSupport: 'simple', platformDetails: 'Linux/UNIX', usageOperation: 'RunInstances', imdsSupport: i.imdsSupport }),
      ]),
      el('nextToken', nextToken),
    ];
  }
}

// ===============================================================================================
// Helpers

/** Decodes RunInstances' UserData: it must be base64 (the SDK does not encode it) and ≤ 16 KB raw. */
function decodeUserData(b64: string | undefined): Buffer {
  if (b64 === undefined || b64 === '') return Buffer.alloc(0);
  const compact = b64.replace(/\s+/g, '');
  if (compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) throw new FakeApiError(400, 'InvalidParameterValue', 'Invalid BASE64 encoding of user data.');
  const raw = Buffer.from(compact, 'base64');
  if (raw.length > USER_DATA_LIMIT) throw new FakeApiError(400, 'InvalidParameterValue', `User data is limited to ${USER_DATA_LIMIT} bytes`);
  return raw;
}

function validateTags(tags: { Key?: string; Value?: string }[]): Ec2Tag[] {
  const out: Ec2Tag[] = [];
  for (const t of tags) {
    const key = t.Key ?? '';
    const value = t.Value ?? '';
    if (key.length === 0 || key.length > 128) throw new FakeApiError(400, 'InvalidParameterValue', `Tag key must be between 1 and 128 characters: '${key}'`);
    if (value.length > 256) throw new FakeApiError(400, 'InvalidParameterValue', `Tag value exceeds the maximum length of 256 characters for key '${key}'`);
    if (key.toLowerCase().startsWith('aws:')) throw new FakeApiError(400, 'InvalidParameterValue', "Tag keys starting with 'aws:' are reserved for internal use");
    if (out.some((x) => x.key === key)) throw new FakeApiError(400, 'InvalidParameterValue', `Duplicate tag key '${key}' specified.`);
    out.push({ key, value });
  }
  if (out.length > TAGS_PER_RESOURCE) throw new FakeApiError(400, 'TagLimitExceeded', 'The maximum number of Tags for a resource has been reached.');
  return out;
}

/** Registry kind and NotFound code for a resource id's prefix. */
function taggable(id: string): [string, string] {
  if (/^i-[0-9a-f]+$/.test(id)) return ['instances', 'InvalidInstanceID.NotFound'];
  if (/^sg-[0-9a-f]+$/.test(id)) return ['securityGroups', 'InvalidGroup.NotFound'];
  if (/^vol-[0-9a-f]+$/.test(id)) return ['volumes', 'InvalidVolume.NotFound'];
  if (/^vpc-[0-9a-f]+$/.test(id)) return ['vpcs', 'InvalidVpcID.NotFound'];
  if (/^subnet-[0-9a-f]+$/.test(id)) return ['subnets', 'InvalidSubnetID.NotFound'];
  throw new FakeApiError(400, 'InvalidID', `The ID '${id}' is not valid`);
}

function normalizeProtocol(p: string | undefined): string {
  const v = (p ?? '').toLowerCase();
  const named: Record<string, string> = { tcp: 'tcp', '6': 'tcp', udp: 'udp', '17': 'udp', icmp: 'icmp', '1': 'icmp', icmpv6: 'icmpv6', '58': 'icmpv6', '-1': '-1' };
  if (named[v]) return named[v];
  if (/^\d+$/.test(v) && Number(v) <= 255) return v;
  throw new FakeApiError(400, 'InvalidParameterValue', `Invalid value '${p ?? ''}' for IP protocol. Unknown protocol.`);
}

function firewallProtocol(p: string): FirewallRule['protocol'] | undefined {
  if (p === 'tcp' || p === 'udp' || p === 'icmp') return p;
  if (p === '-1') return 'all';
  return undefined;
}

function sameRule(a: Omit<Ec2SgRule, 'ruleId' | 'tags'>, b: Omit<Ec2SgRule, 'ruleId' | 'tags'>): boolean {
  return a.protocol === b.protocol && a.fromPort === b.fromPort && a.toPort === b.toPort && a.cidr === b.cidr && a.groupId === b.groupId;
}

function isCidr(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(s);
  return !!m && m.slice(1, 5).every((x) => Number(x) <= 255) && Number(m[5]) <= 32;
}

function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, x) => acc * 256 + Number(x), 0);
}

function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** The i-th quarter of a block (`10.77.0.0/20`, 1 → `10.77.4.0/22`): one default subnet per AZ. */
function carve(cidr: string, i: number): string {
  const [base, bits] = cidr.split('/');
  const prefix = Number(bits) + 2;
  const size = 2 ** (32 - prefix);
  const network = ipToInt(base) - (ipToInt(base) % (size * 4));
  return `${intToIp(network + i * size)}/${prefix}`;
}

/**
 * An allocator that, like AWS, never hands out the first four addresses of a block (network,
 * router, DNS, reserved) nor the last. IpAllocator itself skips the first two and the last; the
 * next two are taken here for good. This also keeps the simulated network's host/client
 * addresses (block + 1, + 2) free.
 */
function reservedAllocator(cidr: string): IpAllocator {
  const a = new IpAllocator(cidr);
  a.allocate();
  a.allocate();
  return a;
}

function availableAddresses(s: Ec2Subnet): number {
  const size = 2 ** (32 - Number(s.cidrBlock.split('/')[1]));
  return size - 5 - (s.addresses.inUse().length - 2);
}

/** Deterministic id from a seed (seeded VPCs, subnets, snapshots stay the same across runs). */
function stableId(prefix: string, seed: string): string {
  let h = 0xcbf29ce484222325n;
  for (const c of Buffer.from(seed)) h = ((h ^ BigInt(c)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return prefix + (h.toString(16).padStart(16, '0') + '0').slice(0, 17);
}

/** `eu-west-1` → `euw1` (AZ ids are `euw1-az1` ...). */
function zoneIdPrefix(region: string): string {
  const [geo, dir = '', n = ''] = region.split('-');
  return geo + dir.replace('north', 'n').replace('south', 's').replace('east', 'e').replace('west', 'w').replace('central', 'c') + n;
}

/** `2024-01-02 03:04:05 GMT`, as in EC2's state transition reasons. */
function gmt(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' GMT');
}

function canonicalJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b))) : x,
  );
}

