/**
 * The EC2 part of a VM cluster: image and network look-ups, the per-cluster security group,
 * RunInstances batches, addresses, termination and console output. Ordering, waiting, rollback
 * and scaling live in the core (src/cluster); every request goes through `Ec2Api`.
 *
 * Naming: EC2 names instances by their `Name` tag, and one RunInstances call gives every instance
 * the same tags. The scheduler's Name is its member name; all workers are tagged
 * `Name=<cluster id>-worker`, and the core keeps per-member names (`<cluster id>-worker-<n>`) on
 * its side. Distinct worker Names would cost one CreateTags call per instance — extra requests
 * against EC2's mutating-call budget and extra failure points in the middle of a launch — for a
 * cosmetic gain: the core tells workers apart by address, and cleanup goes by the cluster tag.
 */
import { createHash } from 'node:crypto';
import type * as Ec2Sdk from '@aws-sdk/client-ec2';
import { onAbort } from '../../src/cluster/abort';
import { realClock, retry } from '../../src/cluster/retry';
import { Budget } from '../../src/cluster/limiter';
import { cleanupCommand, cloudDate, LABELS, type AdapterContext, type CloudAdapter, type ClusterListing, type Instance, type InstanceRequest, type NetworkPlan, type NetworkSetup } from '../../src/cluster/vm';
import type { MemberRole } from '../../src/cluster/backend';
import { USER_DATA_LIMITS } from '../../src/cloud-init';
import type { PreflightReport } from '../../src/cluster/preflight';
import { CloudApiError, CredentialsError, PreflightError, ValidationError } from '../../src/errors';
import { abortError, Ec2Api, ec2ErrorCode, type Ec2ApiConfig, type Ec2Operation, type Ec2Operations } from './api';
import { architectureOf, EC2_DEFAULTS, type Ec2Settings } from './options';

/** Instance states from which an instance can still become a working member. */
const LIVE_STATES = ['pending', 'running', 'stopping', 'stopped'];
/** New ids can be unknown to EC2's read side for a while; this long we keep retrying NotFound. */
const CONSISTENCY_WINDOW_MS = 2 * 60_000;
/** How long an instance may take from RunInstances to having the addresses we need. */
const ADDRESS_TIMEOUT_MS = 10 * 60_000;
const TERMINATE_CHUNK = 100;
/** Instance ids per DescribeInstances filter (the watch's by-id look-up). */
const DESCRIBE_CHUNK = 100;

/** Codes with which EC2 refuses the credentials themselves (EC2 API reference, error codes). */
const REFUSED_CREDENTIALS = new Set(['AuthFailure', 'InvalidClientTokenId', 'SignatureDoesNotMatch', 'IncompleteSignature', 'ExpiredToken', 'RequestExpired', 'UnrecognizedClientException', 'OptInRequired']);

function refusedFix(code: string): string {
  if (code === 'RequestExpired' || code === 'SignatureDoesNotMatch') return "check this machine's clock, and that the secret key belongs to the access key";
  if (code === 'ExpiredToken') return 'the temporary credentials expired: refresh them (`aws sso login`, or assume the role again)';
  if (code === 'OptInRequired') return 'the account is not subscribed to EC2 (or the region is not enabled): finish the account set-up';
  return 'check that the access key exists and is active (`aws sts get-caller-identity`), and that AWS_PROFILE names the profile you mean';
}

/**
 * RunInstances errors after which another zone may work: the type is not offered in this zone
 * (offerings changed since preflight), or the zone has no capacity for it right now.
 */
const TRY_ANOTHER_ZONE = new Set(['Unsupported', 'InsufficientInstanceCapacity']);

/** Codes with which GetConsoleOutput refuses `Latest` on instance types without the Nitro hypervisor. */
const LATEST_REFUSED = new Set(['UnsupportedOperation', 'Unsupported', 'InvalidParameterValue', 'InvalidParameterCombination', 'InvalidParameter']);

interface ResolvedImage {
  imageId: string;
  name: string;
  rootDeviceName: string | undefined;
  rootSizeGb: number | undefined;
}

interface ResolvedNetwork {
  vpcId: string;
  vpcCidrs: string[];
  subnetId: string;
  availabilityZone: string | undefined;
  freeAddresses: number | undefined;
  /** Subnets in other zones that offer both instance types, best first (for `Unsupported` at launch). */
  alternatives: Array<{ subnetId: string; availabilityZone: string | undefined; freeAddresses: number | undefined }>;
}

/** Raised while polling: the instance exists but lacks the address we wait for. */
class NotYet extends Error {}

/**
 * Preflight work started before its outcome is needed, so that it runs beside other reads. The
 * outcome counts as if the work were done when it is taken: the reads it was refused join the
 * taker's `denied` set only then. Work whose outcome is never taken (its check is skipped, or an
 * earlier step failed) leaves every check, the permissions included, as it would be had the work
 * never started; it never rejects unobserved.
 */
interface Ahead<T> {
  take(denied: Set<string>): Promise<T>;
  /** Resolves once the work is over, however it ended. */
  readonly settled: Promise<void>;
}

function ahead<T>(work: (denied: Set<string>) => Promise<T>): Ahead<T> {
  const own = new Set<string>();
  const outcome = work(own).then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
  return {
    settled: outcome.then(() => undefined),
    async take(denied) {
      const o = await outcome;
      for (const action of own) denied.add(action);
      if (!o.ok) throw o.error;
      return o.value;
    },
  };
}

/** The network reads `#resolveNetwork` sends before it needs them. */
interface EarlyNetworkReads {
  offerings: Ahead<Map<string, Set<string>>>;
  /** Unless the VPC must come from the subnet. */
  vpcs: Ahead<Ec2Sdk.DescribeVpcsCommandOutput> | undefined;
  /**
   * Without a subnetId: the available subnets (of `vpc`, if given; else of every VPC, the
   * default VPC's picked once it is known), listed beside the VPC rather than after it.
   */
  subnets: Ahead<Ec2Sdk.Subnet[]> | undefined;
}

/** The given security groups exist and are in the VPC the instances go into. */
function checkGroups(ids: string[], out: Ec2Sdk.DescribeSecurityGroupsCommandOutput, vpcId: string): void {
  for (const id of ids) {
    const g = out.SecurityGroups?.find((x) => x.GroupId === id);
    if (!g) throw new ValidationError(`securityGroups: InvalidGroup.NotFound: ${id} does not exist`, { option: 'securityGroups' });
    if (g.VpcId !== vpcId) throw new ValidationError(`securityGroups: ${id} is in ${g.VpcId ?? '?'}, but the instances go into ${vpcId}`, { option: 'securityGroups' });
  }
}

export interface Ec2AdapterOptions {
  settings: Ec2Settings;
  api: Omit<Ec2ApiConfig, 'region'>;
}

/** The `CloudAdapter` for EC2 that `EC2Cluster` hands to the core. One per cluster. */
export class Ec2Adapter implements CloudAdapter {
  readonly kind = 'ec2';
  /** EC2 limits the raw user-data (before base64) to 16 KB. */
  readonly userDataLimit = USER_DATA_LIMITS.ec2;
  /** gzip is fine: cloud-init recognises it and we base64-encode whatever we send. */
  readonly binaryUserData = true;
  /**
   * Instances per RunInstances call (MinCount = MaxCount = batch: all or nothing). Batches of 100
   * stay well inside the launch-rate bucket (burst 1 000) and let a capacity error fail only part
   * of a big scale-up.
   */
  readonly maxBatch = EC2_DEFAULTS.maxBatch;

  readonly api: Ec2Api;
  readonly #settings: Ec2Settings;
  /** The account's RunInstances launch budget, as far as this cluster has spent it. */
  readonly #launches: Budget;
  /** Instances waiting to be launched, over every batch in flight (for pacing messages). */
  #launchesLeft = 0;
  #images = new Map<string, ResolvedImage>();
  #network: ResolvedNetwork | undefined;
  /** The per-cluster security group, once created (or found after an ambiguous create). */
  #groupId: string | undefined;
  /** When we created each instance: NotFound for a young id means "not visible yet", not "gone". */
  readonly #createdAt = new Map<string, number>();
  /** Reads preflight was refused (UnauthorizedOperation), for the permissions check. */
  readonly #deniedReads = new Set<string>();
  /** Instance type of each instance we created (console output: `Latest` needs Nitro). */
  readonly #typeOf = new Map<string, string>();
  /** Instance types whose GetConsoleOutput refused `Latest`. */
  readonly #noLatest = new Set<string>();

  constructor(options: Ec2AdapterOptions) {
    this.#settings = options.settings;
    this.api = new Ec2Api({ ...options.api, region: options.settings.region });
    // Refilled a little slower than AWS's bucket: ours counts from when a launch is sent, AWS's
    // from when it arrives, so at the exact rate a paced launch can arrive a moment early.
    const { burst, perSecond } = options.settings.launchRate;
    this.#launches = new Budget({ burst, perSecond: perSecond * 0.95 });
  }

  /** The security group ids instances are launched into. */
  get #groups(): string[] {
    if (this.#settings.securityGroups) return this.#settings.securityGroups;
    if (!this.#groupId) throw new CloudApiError('ec2: the cluster security group does not exist yet');
    return [this.#groupId];
  }

  // -------------------------------------------------------------------------------------------
  // Look-ups and read-only checks (create nothing)

  /**
   * The read-only checks `start()` runs first and `dask-cloud doctor` prints: credentials (and
   * where they came from), region and zone, image, VPC / subnet in a zone that offers both
   * instance types, NAT for private mode with the docker runtime, quota, and DryRun permission
   * checks of the creates. Mutates nothing: DryRun requests are answered without a change.
   */
  async preflight(ctx: AdapterContext, plan: NetworkPlan, report: PreflightReport): Promise<void> {
    const s = this.#settings;
    this.#deniedReads.clear();
    let regions: Ec2Sdk.Region[] | undefined;
    let regionsError: unknown;
    const credentialsOk = await report.check(
      'credentials',
      async () => {
        const source = await this.api.credentialSource();
        try {
          regions = (await this.api.call(ctx, 'DescribeRegions', { AllRegions: true })).Regions ?? [];
        } catch (err) {
          const code = ec2ErrorCode(err);
          if (code !== undefined && REFUSED_CREDENTIALS.has(code)) {
            throw new CredentialsError(`ec2: EC2 refused the credentials from ${source}: ${(err as Error).message}`, {
              cause: err,
              details: { provider: 'ec2', ec2Code: code, source, fix: refusedFix(code) },
            });
          }
          // Anything else (a denied DescribeRegions, an unreachable endpoint) is the location check's.
          regionsError = err;
          if (code === 'UnauthorizedOperation') return `from ${source} (valid: EC2 authenticated them, then denied DescribeRegions)`;
          return `from ${source} (not verified: ${code ?? (err as Error).message})`;
        }
        return `from ${source}, accepted by EC2`;
      },
      undefined,
      ctx.signal,
    );
    if (!credentialsOk) return;
    const region = await this.api.region();
    // What DescribeRegions said of the region is known now: a region it rules out fails the
    // location check, and nothing in it is looked up.
    const regionFailure = this.#regionFailure(region, regions, regionsError);

    // The location, the image and the network are independent reads: made together.
    const locationChecked = report.check(
      'location',
      async () => {
        if (regionFailure !== undefined) throw regionFailure;
        const zones = (await this.#read(ctx, 'DescribeAvailabilityZones', {})).AvailabilityZones ?? [];
        if (s.availabilityZone !== undefined) {
          const zone = zones.find((z) => z.ZoneName === s.availabilityZone);
          if (!zone) throw new ValidationError(`availabilityZone ${s.availabilityZone} is not a zone of ${region} (zones: ${zones.map((z) => z.ZoneName).join(', ')})`, { option: 'availabilityZone' });
          if (zone.State !== 'available') throw new ValidationError(`availabilityZone ${s.availabilityZone} is ${zone.State ?? 'not available'}`, { option: 'availabilityZone' });
        }
        return `region ${region}, zones ${zones.filter((z) => z.State === 'available').map((z) => z.ZoneName).join(', ')}`;
      },
      'pass a region this account has enabled (`aws ec2 describe-regions`) and, if any, one of its zones (`aws ec2 describe-availability-zones --region REGION`)',
      ctx.signal,
    );

    const archs = [...new Set([architectureOf(s.schedulerInstanceType), architectureOf(s.workerInstanceType)])];
    this.#images.clear();
    const imageChecked = report.check(
      'image',
      async () => {
        if (s.ami !== undefined) {
          const image = await this.#describeAmi(ctx, s.ami, archs);
          for (const arch of archs) this.#images.set(arch, image);
        } else {
          for (const arch of archs) this.#images.set(arch, await this.#latestDebian(ctx, arch));
        }
        for (const image of new Set(this.#images.values())) this.#rootSize(image); // a too small root volume fails here, before anything exists
        return [...this.#images].map(([arch, i]) => `${i.imageId} (${i.name}, ${arch})`).join('; ');
      },
      `pass ami of an image that exists in ${region} and is shared with this account, with the architecture of the instance types (\`aws ec2 describe-images --region ${region} --image-ids AMI\`)`,
      ctx.signal,
    );

    this.#network = undefined;
    const network = regionFailure === undefined ? ahead((denied) => this.#resolveNetwork(ctx, denied)) : undefined;

    const [locationOk] = await Promise.all([locationChecked, imageChecked]);
    // Subnets are looked up in the region and zone: a failed location says it all. The network's
    // outcome is then not used (nor the reads it was refused), but it is waited for: preflight
    // leaves no read in flight.
    if (!locationOk || network === undefined) {
      await network?.settled;
      report.skip('network', 'not checked: the location check failed');
    } else await report.check(
      'network',
      async () => {
        const net = await network.take(this.#deniedReads);
        this.#network = net;
        return `subnet ${net.subnetId} in ${net.availabilityZone} of ${net.vpcId}, which offers ${this.#types().join(' and ')}`;
      },
      `pass vpc, subnetId and securityGroups that exist in ${region} (\`aws ec2 describe-subnets --region ${region}\`), and instance types offered in the subnet's zone (\`aws ec2 describe-instance-type-offerings --location-type availability-zone --region ${region}\`)`,
      ctx.signal,
    );

    // The DryRuns need the network and the image, not the NAT or the quota: made beside those,
    // and judged after them (their refused reads count too).
    const dryRuns = ahead((denied) => this.#dryRuns(ctx, plan, denied));
    await Promise.all([this.#checkNat(ctx, plan, report), report.check('quota', () => this.#checkQuota(ctx, plan, report), undefined, ctx.signal)]);
    if (this.#network === undefined && this.#deniedReads.size === 0) report.skip('permissions', 'creates not tried: the network check did not pass');
    else await report.check('permissions', () => this.#checkPermissions(dryRuns), undefined, ctx.signal);
    // Assigned inside the check above: TypeScript cannot see that through the closure.
    const net = this.#network as ResolvedNetwork | undefined;
    if (net) {
      ctx.log('ec2 preflight: images %o, vpc %s (%s), subnet %s (%s)', Object.fromEntries([...this.#images].map(([a, i]) => [a, `${i.imageId} ${i.name}`])), net.vpcId, net.vpcCidrs.join(','), net.subnetId, net.availabilityZone);
    }
  }

  /**
   * A read for preflight: a denied one becomes a PreflightError naming the IAM action (and is
   * remembered in `denied` for the permissions check).
   */
  async #read<K extends Ec2Operation>(ctx: AdapterContext, operation: K, input: Ec2Operations[K][0], denied = this.#deniedReads): Promise<Ec2Operations[K][1]> {
    try {
      return await this.api.call(ctx, operation, input);
    } catch (err) {
      throw this.#readError(err, operation, undefined, denied);
    }
  }

  #readError(err: unknown, operation: Ec2Operation, option?: string, denied = this.#deniedReads): unknown {
    const code = ec2ErrorCode(err);
    if (code === 'UnauthorizedOperation') {
      denied.add(`ec2:${operation}`);
      return new PreflightError(`ec2: the credentials may not call ${operation} (UnauthorizedOperation)`, {
        cause: err,
        details: { provider: 'ec2', ec2Code: code, fix: `allow ec2:${operation} in the IAM policy of these credentials (the README lists every action dask-cloud needs)` },
      });
    }
    const netCode = (err as { cause?: { code?: string } } | undefined)?.cause?.code ?? code;
    if (option === 'region' && (netCode === 'ENOTFOUND' || netCode === 'EAI_AGAIN')) {
      return new ValidationError(`region: the EC2 endpoint of ${this.#settings.region ?? 'the region'} does not resolve (${netCode}): no such region`, { option: 'region', cause: err });
    }
    return err;
  }

  /** Why the region itself fails the location check, from DescribeRegions' answer; undefined when it does not. */
  #regionFailure(region: string, regions: Ec2Sdk.Region[] | undefined, regionsError: unknown): unknown {
    if (regionsError !== undefined) return this.#readError(regionsError, 'DescribeRegions', 'region');
    const found = regions?.find((r) => r.RegionName === region);
    if (!found) {
      return new ValidationError(`region ${region} does not exist (EC2 lists ${(regions ?? []).map((r) => r.RegionName).join(', ')})`, { option: 'region' });
    }
    if (found.OptInStatus === 'not-opted-in') {
      return new ValidationError(`region ${region} is an opt-in region that this account has not enabled`, {
        option: 'region',
        details: { fix: `enable ${region} (AWS console → Account → AWS Regions, or \`aws account enable-region --region-name ${region}\`), or choose another region` },
      });
    }
    return undefined;
  }

  /** Both instance types, once each. */
  #types(): string[] {
    return [...new Set([this.#settings.schedulerInstanceType, this.#settings.workerInstanceType])];
  }

  /** The option a user sets to choose `type`. */
  #typeOption(type: string): string {
    const s = this.#settings;
    if (s.schedulerInstanceType === s.workerInstanceType) return 'instanceType';
    return type === s.schedulerInstanceType ? 'schedulerInstanceType' : 'workerInstanceType';
  }

  async #describeAmi(ctx: AdapterContext, ami: string, archs: string[]): Promise<ResolvedImage> {
    let out: Ec2Sdk.DescribeImagesCommandOutput;
    try {
      out = await this.#read(ctx, 'DescribeImages', { ImageIds: [ami] });
    } catch (err) {
      const code = ec2ErrorCode(err);
      if (code === 'InvalidAMIID.NotFound' || code === 'InvalidAMIID.Malformed' || code === 'InvalidAMIID.Unavailable') {
        throw new ValidationError(`ami ${ami}: ${code}: no such image in region ${await this.api.region()} (or it is not shared with this account)`, { option: 'ami', cause: err });
      }
      throw err;
    }
    const image = out.Images?.[0];
    if (!image?.ImageId) throw new ValidationError(`ami ${ami}: InvalidAMIID.NotFound: no such image in region ${await this.api.region()}`, { option: 'ami' });
    const wrong = archs.find((a) => image.Architecture !== a);
    if (wrong !== undefined) {
      throw new ValidationError(
        `ami ${ami} is ${image.Architecture ?? 'of unknown architecture'} but the instance types need ${archs.join(' and ')}: choose matching instanceType/ami`,
        { option: 'ami' },
      );
    }
    return toImage(image);
  }

  /** The newest official Debian 12 image for `arch` (Debian publishes them from account 136693071363). */
  async #latestDebian(ctx: AdapterContext, arch: 'x86_64' | 'arm64'): Promise<ResolvedImage> {
    const out = await this.#read(ctx, 'DescribeImages', {
      Owners: [EC2_DEFAULTS.debianOwner],
      Filters: [
        { Name: 'name', Values: [`debian-12-${arch === 'arm64' ? 'arm64' : 'amd64'}-*`] },
        { Name: 'architecture', Values: [arch] },
        { Name: 'state', Values: ['available'] },
      ],
    });
    const newest = [...(out.Images ?? [])].filter((i) => i.ImageId).sort((a, b) => (b.CreationDate ?? '').localeCompare(a.CreationDate ?? ''))[0];
    if (!newest) throw new ValidationError(`ec2: no Debian 12 ${arch} image found in region ${await this.api.region()}; pass ami`, { option: 'ami' });
    return toImage(newest);
  }

  #rootSize(image: ResolvedImage): number {
    const wanted = this.#settings.rootVolumeSizeGb;
    const min = image.rootSizeGb ?? 1;
    if (wanted !== undefined && wanted < min) {
      throw new ValidationError(`rootVolumeSizeGb ${wanted} is smaller than the ${min} GiB snapshot of image ${image.imageId}`, { option: 'rootVolumeSizeGb' });
    }
    return wanted ?? Math.max(EC2_DEFAULTS.rootVolumeSizeGb, min);
  }

  /** Zone → the cluster's instance types it offers (DescribeInstanceTypeOfferings, per availability zone). */
  async #offerings(ctx: AdapterContext, denied: Set<string>): Promise<Map<string, Set<string>>> {
    const byZone = new Map<string, Set<string>>();
    let token: string | undefined;
    do {
      const out = await this.#read(ctx, 'DescribeInstanceTypeOfferings', {
        LocationType: 'availability-zone',
        Filters: [{ Name: 'instance-type', Values: this.#types() }],
        ...(token !== undefined ? { NextToken: token } : {}),
      }, denied);
      for (const o of out.InstanceTypeOfferings ?? []) {
        if (!o.Location || !o.InstanceType) continue;
        const set = byZone.get(o.Location) ?? new Set<string>();
        set.add(o.InstanceType);
        byZone.set(o.Location, set);
      }
      token = out.NextToken || undefined;
    } while (token !== undefined);
    return byZone;
  }

  /**
   * The VPC and subnet to launch into, checked against the options, the zones' offerings and the
   * given security groups. Reads that need nothing from another go out at once (the offerings,
   * the groups, the VPC unless it must come from the subnet); their outcomes are taken in the
   * order the checks use them, so a failure and the reads refused are those of one read after
   * the other. Reads refused go to `denied`.
   */
  async #resolveNetwork(ctx: AdapterContext, denied: Set<string>): Promise<ResolvedNetwork> {
    const s = this.#settings;
    const ids = s.securityGroups;
    // With subnetId and vpc both given, the VPC to read is vpc (or the subnet check fails first).
    const vpcKnown = s.subnetId === undefined || s.vpc !== undefined;
    const subnetFilters: Ec2Sdk.Filter[] = [{ Name: 'state', Values: ['available'] }];
    if (s.vpc !== undefined) subnetFilters.push({ Name: 'vpc-id', Values: [s.vpc] });
    if (s.availabilityZone !== undefined) subnetFilters.push({ Name: 'availability-zone', Values: [s.availabilityZone] });
    const early: EarlyNetworkReads = {
      offerings: ahead((d) => this.#offerings(ctx, d)),
      vpcs: vpcKnown ? ahead((d) => this.#describeVpcs(ctx, s.vpc, d)) : undefined,
      subnets: s.subnetId === undefined ? ahead(async (d) => (await this.#read(ctx, 'DescribeSubnets', { Filters: subnetFilters }, d)).Subnets ?? []) : undefined,
    };
    const groups = ids ? ahead((d) => this.#describeGroups(ctx, ids, d)) : undefined;
    try {
      const net = await this.#findNetwork(ctx, denied, early);
      if (ids && groups) checkGroups(ids, await groups.take(denied), net.vpcId);
      return net;
    } finally {
      await Promise.all([early.offerings.settled, early.vpcs?.settled, early.subnets?.settled, groups?.settled]);
    }
  }

  async #findNetwork(ctx: AdapterContext, denied: Set<string>, early: EarlyNetworkReads): Promise<ResolvedNetwork> {
    const s = this.#settings;
    const region = await this.api.region();
    let subnet: Ec2Sdk.Subnet | undefined;
    if (s.subnetId !== undefined) {
      try {
        subnet = (await this.#read(ctx, 'DescribeSubnets', { SubnetIds: [s.subnetId] }, denied)).Subnets?.[0];
      } catch (err) {
        const code = ec2ErrorCode(err);
        if (code === 'InvalidSubnetID.NotFound' || code === 'InvalidSubnetID.Malformed') throw new ValidationError(`subnetId ${s.subnetId}: ${code}: no such subnet in ${region}`, { option: 'subnetId', cause: err });
        throw err;
      }
      if (!subnet?.VpcId) throw new ValidationError(`subnetId ${s.subnetId}: InvalidSubnetID.NotFound: no such subnet in ${region}`, { option: 'subnetId' });
      if (s.vpc !== undefined && subnet.VpcId !== s.vpc) throw new ValidationError(`subnetId ${s.subnetId} is in ${subnet.VpcId}, not in vpc ${s.vpc}`, { option: 'subnetId' });
      if (s.availabilityZone !== undefined && subnet.AvailabilityZone !== s.availabilityZone) {
        throw new ValidationError(`subnetId ${s.subnetId} is in ${subnet.AvailabilityZone ?? '?'}, not in availabilityZone ${s.availabilityZone}`, { option: 'availabilityZone' });
      }
    }
    const vpcId = subnet?.VpcId ?? s.vpc;
    const vpcs = early.vpcs ? await early.vpcs.take(denied) : await this.#describeVpcs(ctx, vpcId, denied);
    const vpc = vpcs.Vpcs?.[0];
    if (!vpc?.VpcId) {
      if (vpcId !== undefined) throw new ValidationError(`vpc ${vpcId}: InvalidVpcID.NotFound: no such VPC in ${region}`, { option: 'vpc' });
      throw new ValidationError(`region ${region} has no default VPC: pass vpc or subnetId`, { option: 'vpc' });
    }
    const vpcCidrs = [
      ...new Set([
        ...(vpc.CidrBlock ? [vpc.CidrBlock] : []),
        ...(vpc.CidrBlockAssociationSet ?? []).filter((a) => a.CidrBlockState?.State === 'associated' && a.CidrBlock).map((a) => a.CidrBlock as string),
      ]),
    ];

    // Zones do not all offer every type (us-east-1e lacks t3 and m6i): RunInstances there answers Unsupported.
    const offered = await early.offerings.take(denied);
    const types = this.#types();
    for (const t of types) {
      if (![...offered.values()].some((set) => set.has(t))) {
        throw new ValidationError(`${this.#typeOption(t)}: ${t} is not offered in any zone of ${region} (check the name, or choose another type)`, { option: this.#typeOption(t) });
      }
    }
    const lacking = (zone: string | undefined) => types.filter((t) => !(zone !== undefined && offered.get(zone)?.has(t)));
    const offeredIn = (t: string) => [...offered].filter(([, set]) => set.has(t)).map(([z]) => z).sort().join(', ');
    const explicitZone = subnet?.AvailabilityZone ?? s.availabilityZone;
    if (explicitZone !== undefined && lacking(explicitZone).length > 0) {
      const t = lacking(explicitZone)[0] as string;
      const option = s.subnetId !== undefined ? 'subnetId' : 'availabilityZone';
      throw new ValidationError(`${option} ${option === 'subnetId' ? `${s.subnetId} (in ${explicitZone})` : explicitZone}: ${t} is not offered in ${explicitZone}; it is offered in ${offeredIn(t)}`, {
        option,
        details: { fix: `choose a ${option === 'subnetId' ? 'subnet' : 'zone'} in ${offeredIn(t)}, or another ${this.#typeOption(t)}` },
      });
    }
    if (subnet) {
      return { vpcId: vpc.VpcId, vpcCidrs, subnetId: subnet.SubnetId as string, availabilityZone: subnet.AvailabilityZone, freeAddresses: subnet.AvailableIpAddressCount, alternatives: [] };
    }
    const inVpc = vpc.VpcId;
    const subnets = ((await early.subnets?.take(denied)) ?? []).filter((x) => x.VpcId === inVpc);
    // Only zones offering both types; then default subnets first (they route to the internet
    // gateway), the roomiest, ties by id so the choice is stable.
    const candidates = [...subnets]
      .filter((x) => x.SubnetId && lacking(x.AvailabilityZone).length === 0)
      .sort((a, b) => Number(b.DefaultForAz ?? false) - Number(a.DefaultForAz ?? false) || (b.AvailableIpAddressCount ?? 0) - (a.AvailableIpAddressCount ?? 0) || (a.SubnetId as string).localeCompare(b.SubnetId as string));
    const chosen = candidates[0];
    if (!chosen) {
      const where = s.availabilityZone !== undefined ? ` in ${s.availabilityZone}` : '';
      if (subnets.length === 0) throw new ValidationError(`vpc ${vpc.VpcId} has no available subnet${where}: pass subnetId`, { option: 'subnetId' });
      throw new ValidationError(`vpc ${vpc.VpcId} has no subnet${where} in a zone that offers ${types.join(' and ')} (${types.map((t) => `${t}: ${offeredIn(t)}`).join('; ')})`, {
        option: 'subnetId',
        details: { fix: 'pass subnetId of a subnet in one of those zones, or choose instance types offered where your subnets are' },
      });
    }
    // For an `Unsupported` at launch anyway (offerings change): one subnet per other eligible zone.
    const alternatives: ResolvedNetwork['alternatives'] = [];
    for (const c of candidates.slice(1)) {
      if (c.AvailabilityZone === chosen.AvailabilityZone || alternatives.some((a) => a.availabilityZone === c.AvailabilityZone)) continue;
      alternatives.push({ subnetId: c.SubnetId as string, availabilityZone: c.AvailabilityZone, freeAddresses: c.AvailableIpAddressCount });
    }
    return { vpcId: vpc.VpcId, vpcCidrs, subnetId: chosen.SubnetId as string, availabilityZone: chosen.AvailabilityZone, freeAddresses: chosen.AvailableIpAddressCount, alternatives };
  }

  /** DescribeVpcs of `vpcId`, else of the default VPC; a VPC that does not exist is a ValidationError. */
  async #describeVpcs(ctx: AdapterContext, vpcId: string | undefined, denied: Set<string>): Promise<Ec2Sdk.DescribeVpcsCommandOutput> {
    try {
      return await this.#read(ctx, 'DescribeVpcs', vpcId !== undefined ? { VpcIds: [vpcId] } : { Filters: [{ Name: 'is-default', Values: ['true'] }] }, denied);
    } catch (err) {
      const code = ec2ErrorCode(err);
      if (code === 'InvalidVpcID.NotFound' || code === 'InvalidVpcID.Malformed') throw new ValidationError(`vpc ${vpcId ?? ''}: ${code}: no such VPC in ${await this.api.region()}`, { option: 'vpc', cause: err });
      throw err;
    }
  }

  async #describeGroups(ctx: AdapterContext, ids: string[], denied: Set<string>): Promise<Ec2Sdk.DescribeSecurityGroupsCommandOutput> {
    try {
      return await this.#read(ctx, 'DescribeSecurityGroups', { GroupIds: ids }, denied);
    } catch (err) {
      const code = ec2ErrorCode(err);
      if (code === 'InvalidGroup.NotFound' || code === 'InvalidGroupId.Malformed') throw new ValidationError(`securityGroups: ${code}: ${(err as Error).message}`, { option: 'securityGroups', cause: err });
      throw err;
    }
  }

  /**
   * Private mode with the docker runtime: VMs without public addresses install Docker and pull
   * the image through a NAT, so the subnet's route table (its own association, else the VPC's
   * main table) must send 0.0.0.0/0 to a NAT gateway or a NAT instance.
   */
  async #checkNat(ctx: AdapterContext, plan: NetworkPlan, report: PreflightReport): Promise<void> {
    if (!plan.privateNetworking) return report.pass('nat', 'not needed: public mode gives every VM a public address');
    if (!plan.needsEgress) return report.pass('nat', 'not needed: the native runtime installs nothing while booting');
    const net = this.#network;
    if (!net) return report.skip('nat', 'not checked: the network check failed');
    await report.check(
      'nat',
      async () => {
        const own = (await this.#read(ctx, 'DescribeRouteTables', { Filters: [{ Name: 'association.subnet-id', Values: [net.subnetId] }] })).RouteTables ?? [];
        const table =
          own[0] ??
          ((await this.#read(ctx, 'DescribeRouteTables', { Filters: [{ Name: 'vpc-id', Values: [net.vpcId] }, { Name: 'association.main', Values: ['true'] }] })).RouteTables ?? [])[0];
        const which = table ? `route table ${table.RouteTableId ?? '?'}${own[0] ? '' : ` (the main table of ${net.vpcId})`}` : 'no route table';
        const route = table?.Routes?.find((r) => r.DestinationCidrBlock === '0.0.0.0/0');
        const target = route ? (route.NatGatewayId ?? route.InstanceId ?? route.TransitGatewayId ?? route.GatewayId ?? route.NetworkInterfaceId ?? route.VpcPeeringConnectionId ?? 'an unknown target') : undefined;
        if (route && route.State !== 'blackhole' && (route.NatGatewayId !== undefined || route.InstanceId !== undefined || (route.NetworkInterfaceId !== undefined && route.GatewayId === undefined))) {
          return `subnet ${net.subnetId}: ${which} routes 0.0.0.0/0 to ${target}`;
        }
        if (route && route.State !== 'blackhole' && route.TransitGatewayId !== undefined) {
          report.warn('nat', `subnet ${net.subnetId}: ${which} routes 0.0.0.0/0 to ${target}; whether that reaches the internet cannot be seen from here`, 'make sure the transit gateway leads to a NAT, or the VMs cannot install Docker or pull the image');
          return;
        }
        const why = !route ? 'has no route for 0.0.0.0/0' : route.State === 'blackhole' ? `routes 0.0.0.0/0 to ${target}, which is gone (blackhole)` : `routes 0.0.0.0/0 to ${target}`;
        const rtb = table?.RouteTableId ?? '<route table of the subnet>';
        throw new PreflightError(
          `ec2: private mode with the docker runtime needs a NAT gateway: subnet ${net.subnetId}: ${which} ${why}. VMs without public addresses cannot reach the internet that way, so they could not install Docker or pull the image`,
          {
            details: {
              provider: 'ec2',
              subnetId: net.subnetId,
              routeTableId: table?.RouteTableId,
              fix:
                `create a NAT gateway in a public subnet of ${net.vpcId} and route the private subnet through it ` +
                `(aws ec2 create-nat-gateway --subnet-id <public subnet> --allocation-id <Elastic IP allocation>; ` +
                `aws ec2 create-route --route-table-id ${rtb} --destination-cidr-block 0.0.0.0/0 --nat-gateway-id <nat-...>), ` +
                `or pass subnetId of a private subnet that already has one, or use runtime: 'native' with an image that has Dask`,
            },
          },
        );
      },
      undefined,
      ctx.signal,
    );
  }

  /**
   * What can be read is checked (free addresses in the subnet); EC2's vCPU limits live in Service
   * Quotas, which the EC2 API does not expose (DescribeAccountAttributes' `max-instances` "does
   * not reflect your actual vCPU limit"), so the need is stated as a warning with where to look.
   */
  async #checkQuota(ctx: AdapterContext, plan: NetworkPlan, report: PreflightReport): Promise<string> {
    const s = this.#settings;
    const net = this.#network;
    const members = plan.nWorkers + 1;
    let addresses = 'addresses not checked (the network check failed)';
    if (net?.freeAddresses !== undefined) {
      if (net.freeAddresses < members) {
        throw new PreflightError(`ec2: subnet ${net.subnetId} has ${net.freeAddresses} free addresses; the cluster needs ${members} (1 scheduler + ${plan.nWorkers} workers)`, {
          details: { provider: 'ec2', fix: 'pass subnetId of a subnet with more free addresses, or start with fewer nWorkers and scale up later' },
        });
      }
      addresses = `subnet ${net.subnetId} has ${net.freeAddresses} free addresses for ${members} VMs`;
    }
    const out = await this.#read(ctx, 'DescribeInstanceTypes', { InstanceTypes: this.#types() as Ec2Sdk._InstanceType[] });
    const vcpus = (t: string) => out.InstanceTypes?.find((x) => x.InstanceType === t)?.VCpuInfo?.DefaultVCpus ?? 0;
    const onDemand = vcpus(s.schedulerInstanceType) + (s.spot ? 0 : plan.nWorkers * vcpus(s.workerInstanceType));
    const spot = s.spot ? plan.nWorkers * vcpus(s.workerInstanceType) : 0;
    const standard = this.#types().every((t) => /^[acdhimrtz]/.test(t));
    const codes = standard ? `"Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances" (L-1216C47A)${s.spot ? ' and "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests" (L-34B43A08)' : ''}` : 'the quota of these instance families';
    const need = `${onDemand} on-demand vCPUs${spot ? ` and ${spot} Spot vCPUs` : ''}`;
    const message = `${addresses}; the cluster needs ${need}, but EC2's vCPU limits are in Service Quotas, which the EC2 API does not show: not checked`;
    report.warn('quota', message, `compare with ${codes} in the Service Quotas console (aws service-quotas get-service-quota --service-code ec2 --quota-code L-1216C47A), minus what already runs in ${await this.api.region()}`);
    return message;
  }

  /**
   * DryRun of the creates (EC2 answers DryRunOperation when allowed, UnauthorizedOperation when
   * not, and creates nothing): RunInstances for each role with its tags (tagging on create needs
   * ec2:CreateTags; an instance profile needs iam:PassRole), CreateSecurityGroup with its tags.
   * TerminateInstances, AuthorizeSecurityGroupIngress and DeleteSecurityGroup act on resources
   * that exist only later, so they cannot be tried ahead: the README lists them. The actions
   * refused go to `denied`. All at once: each is one round trip, and none needs another's answer.
   * An endpoint that ignores DryRun (some EC2-compatible ones) carries them out: what they made
   * is deleted here, before the check fails, since a failed preflight has nothing to roll back.
   */
  async #dryRuns(ctx: AdapterContext, plan: NetworkPlan, denied: Set<string>): Promise<string[]> {
    const tried = new Map<string, boolean>();
    const made = { instances: [] as string[], groups: [] as string[] };
    const dryRun = async <K extends Ec2Operation>(operation: K, input: Ec2Operations[K][0], what: string): Promise<void> => {
      tried.set(what, false);
      let out: Ec2Operations[K][1];
      try {
        out = await this.api.call(ctx, operation, { ...input, DryRun: true } as Ec2Operations[K][0]);
      } catch (err) {
        const code = ec2ErrorCode(err);
        if (code === 'DryRunOperation') {
          tried.set(what, true);
          return;
        }
        if (code !== 'UnauthorizedOperation') throw err;
        // The refusal names the action that is missing (ec2:RunInstances, ec2:CreateTags, iam:PassRole).
        const action = /perform: ([a-z0-9-]+:[A-Za-z0-9]+)/.exec((err as Error).message)?.[1] ?? `ec2:${operation}`;
        denied.add(action);
        return;
      }
      const result = out as { Instances?: { InstanceId?: string }[]; GroupId?: string };
      for (const i of result.Instances ?? []) if (i.InstanceId) made.instances.push(i.InstanceId);
      if (result.GroupId) made.groups.push(result.GroupId);
    };
    const net = this.#network;
    if (net) {
      const runs: Promise<void>[] = [];
      for (const role of ['scheduler', 'worker'] as const) {
        const type = role === 'scheduler' ? this.#settings.schedulerInstanceType : this.#settings.workerInstanceType;
        if (!this.#images.has(architectureOf(type))) continue;
        const names = role === 'scheduler' ? [`${plan.clusterId}-scheduler`] : [`${plan.clusterId}-worker`];
        const input = this.#runInput(plan.clusterId, { role, names, userData: { body: Buffer.alloc(0) } as unknown as InstanceRequest['userData'], labels: { ...plan.labels, [LABELS.role]: role } }, net, { dryRun: true });
        runs.push(dryRun('RunInstances', input, `RunInstances (${role}, tagged)`));
      }
      if (!this.#settings.securityGroups) {
        runs.push(
          dryRun(
            'CreateSecurityGroup',
            { GroupName: plan.clusterId, Description: `dask-cloud cluster ${plan.clusterId}`, VpcId: net.vpcId, TagSpecifications: [{ ResourceType: 'security-group', Tags: this.#tags(plan.labels, plan.clusterId) }] },
            'CreateSecurityGroup (tagged)',
          ),
        );
      }
      // Every one settles before the first failure is thrown: none is left in flight.
      const settled = await Promise.allSettled(runs);
      if (made.instances.length + made.groups.length > 0) await this.#undoDryRuns(ctx, plan.clusterId, made);
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    }
    // In the order they were asked for, whatever order they were answered in.
    return [...tried].filter(([, allowed]) => allowed).map(([what]) => what);
  }

  /**
   * DryRuns that were carried out: their instances are terminated and their group deleted (it
   * holds no instance: a DryRun launch names no group of ours), then the check fails. What could
   * not be deleted is named, with the cleanup command (it carries the cluster's tags).
   */
  async #undoDryRuns(ctx: AdapterContext, clusterId: string, made: { instances: string[]; groups: string[] }): Promise<never> {
    const now = Date.now();
    for (const id of made.instances) this.#createdAt.set(id, now); // just made: "not found" means not visible yet
    const what = [...made.instances, ...made.groups];
    const undo = await Promise.allSettled([
      made.instances.length > 0 ? this.deleteInstances(ctx, made.instances) : undefined,
      ...made.groups.map((id) => this.api.call(ctx, 'DeleteSecurityGroup', { GroupId: id })),
    ]);
    const left = undo.flatMap((r, i) => (r.status === 'fulfilled' ? [] : i === 0 ? made.instances : [made.groups[i - 1] as string]));
    const failure = undo.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    const cleanup = cleanupCommand(this.kind, this.cleanupFlags(), clusterId);
    throw new PreflightError(
      `ec2: the endpoint ignores DryRun: the permission checks launched or created ${what.join(', ')}` +
        (left.length === 0 ? '; they have been deleted' : `; ${left.join(', ')} could not be deleted (${(failure?.reason as Error | undefined)?.message ?? String(failure?.reason)}): delete them with ${cleanup}`),
      {
        details: {
          provider: 'ec2',
          made: what,
          ...(left.length > 0 ? { leftovers: left, cleanupCommand: cleanup } : {}),
          fix: 'use an EC2 endpoint that answers DryRun requests without carrying them out (EC2 itself does): dask-cloud checks permissions with them before it creates anything',
        },
      },
    );
  }

  /** The DryRuns' verdict, with the reads refused before it (NAT and quota included). */
  async #checkPermissions(dryRuns: Ahead<string[]>): Promise<string> {
    const denied = new Set(this.#deniedReads);
    const tried = await dryRuns.take(denied);
    if (denied.size > 0) {
      const actions = [...denied].sort();
      throw new PreflightError(`ec2: these credentials may not call ${actions.join(', ')}`, {
        details: { provider: 'ec2', denied: actions, fix: `add ${actions.join(', ')} to the IAM policy of these credentials (the README lists every action dask-cloud needs)` },
      });
    }
    return `DryRun allowed: ${tried.join(', ')}; TerminateInstances, AuthorizeSecurityGroupIngress and DeleteSecurityGroup target resources that do not exist yet and cannot be tried ahead`;
  }

  // -------------------------------------------------------------------------------------------
  // Security group

  async ensureNetwork(ctx: AdapterContext, plan: NetworkPlan): Promise<NetworkSetup | void> {
    if (this.#settings.securityGroups) {
      ctx.log('ec2: using the given security groups %s as they are', this.#settings.securityGroups.join(', '));
      return;
    }
    const net = this.#requireNetwork();
    const name = plan.clusterId;
    let groupId: string | undefined;
    try {
      // Not abandoned on abort (like RunInstances): a create already sent may still take effect,
      // and the rollback can only delete the group once its id (or its tag) is known.
      const out = await this.api.call(
        ctx,
        'CreateSecurityGroup',
        {
          GroupName: name,
          Description: `dask-cloud cluster ${plan.clusterId}`,
          VpcId: net.vpcId,
          TagSpecifications: [{ ResourceType: 'security-group', Tags: this.#tags(plan.labels, name) }],
        },
        { abortable: false },
      );
      groupId = out.GroupId;
    } catch (err) {
      // A create retried after a lost answer finds its own group: adopt it if it carries our tag.
      if (ec2ErrorCode(err) !== 'InvalidGroup.Duplicate') throw err;
      groupId = (await this.#findGroups(ctx, net.vpcId))[0];
      if (!groupId) throw err;
    }
    if (!groupId) throw new CloudApiError('ec2 CreateSecurityGroup returned no GroupId', { details: { provider: 'ec2', operation: 'CreateSecurityGroup' } });
    this.#groupId = groupId;
    ctx.log('ec2: security group %s (%s) in %s', groupId, name, net.vpcId);
    // Rules added to a group apply to the instances already in it, so the scheduler is launched
    // while the rules are authorised. The workers wait for the answer (accepted), which
    // comes about when the scheduler's does: no preflight can try an authorisation ahead, and a
    // refused one must not first launch (and drain the launch budget with) a thousand workers.
    // Not abandoned on abort either: the rollback deletes the group once it was answered.
    const inEffect = this.api.call(ctx, 'AuthorizeSecurityGroupIngress', { GroupId: groupId, IpPermissions: this.#permissions(groupId, plan, net) }, { abortable: false }).then(
      () => undefined,
      (err: unknown) => {
        // Only a retry of a call whose first answer was lost can see its own rules as duplicates.
        if (ec2ErrorCode(err) !== 'InvalidPermission.Duplicate') throw err;
      },
    );
    return { inEffect, accepted: inEffect };
  }

  /** Members reach each other on every TCP port (workers and nannies listen on random ports); plan rules by CIDR. */
  #permissions(groupId: string, plan: NetworkPlan, net: ResolvedNetwork): Ec2Sdk.IpPermission[] {
    const perms: Ec2Sdk.IpPermission[] = [
      { IpProtocol: 'tcp', FromPort: 0, ToPort: 65535, UserIdGroupPairs: [{ GroupId: groupId, Description: 'cluster members reach each other' }] },
    ];
    const byPorts = new Map<string, Ec2Sdk.IpPermission>();
    for (const rule of plan.ingress) {
      const cidrs = rule.cidrs === 'network' ? net.vpcCidrs : rule.cidrs;
      const key = `${rule.ports[0]}-${rule.ports[1]}`;
      let perm = byPorts.get(key);
      if (!perm) {
        perm = { IpProtocol: 'tcp', FromPort: rule.ports[0], ToPort: rule.ports[1], IpRanges: [] };
        byPorts.set(key, perm);
      }
      for (const cidr of cidrs) {
        // EC2 rejects a request holding the same rule twice (e.g. ingressCidrs naming the VPC CIDR).
        if (!perm.IpRanges?.some((r) => r.CidrIp === cidr)) perm.IpRanges?.push({ CidrIp: cidr, Description: sgDescription(rule.why) });
      }
    }
    return [...perms, ...byPorts.values()];
  }

  /** Our security groups in `vpcId` (or anywhere), found by the cluster tag. */
  async #findGroups(ctx: AdapterContext, vpcId?: string): Promise<string[]> {
    const filters: Ec2Sdk.Filter[] = [{ Name: `tag:${LABELS.cluster}`, Values: [ctx.clusterId] }];
    if (vpcId !== undefined) filters.push({ Name: 'vpc-id', Values: [vpcId] });
    const out = await this.api.call(ctx, 'DescribeSecurityGroups', { Filters: filters });
    return (out.SecurityGroups ?? []).map((g) => g.GroupId).filter((id): id is string => id !== undefined);
  }

  /** An attached handle's first scale-up: the cluster's security group, found by its tag. */
  async adoptNetwork(ctx: AdapterContext): Promise<void> {
    if (this.#settings.securityGroups) return;
    const [groupId] = await this.#findGroups(ctx, this.#network?.vpcId);
    if (groupId === undefined) throw new CloudApiError(`ec2: the security group of cluster ${ctx.clusterId} is gone: the cluster is being deleted`, { details: { provider: 'ec2' } });
    this.#groupId = groupId;
  }

  async deleteNetwork(ctx: AdapterContext): Promise<void> {
    if (this.#settings.securityGroups) return; // the user's groups: never ours to delete
    // Without a known id (a create that failed ambiguously), find the group by its tag.
    const ids = this.#groupId !== undefined ? [this.#groupId] : await this.#findGroups(ctx);
    for (const id of ids) {
      try {
        await this.api.call(ctx, 'DeleteSecurityGroup', { GroupId: id });
        ctx.log('ec2: deleted security group %s', id);
      } catch (err) {
        if (ec2ErrorCode(err) !== 'InvalidGroup.NotFound') throw err;
      }
    }
    this.#groupId = undefined;
  }

  /** DependencyViolation: instances still hold the group while they terminate; the core retries. */
  isDependencyError(err: unknown): boolean {
    return ec2ErrorCode(err) === 'DependencyViolation';
  }

  // -------------------------------------------------------------------------------------------
  // Instances

  /**
   * Launches within the account's instance-launch budget (`launchRate`): a batch the budget
   * covers goes in one RunInstances; beyond it, the rest goes in steps of `PACED_LAUNCH` as the
   * budget refills, with a `pacing` event, instead of being refused. A step is sent as soon as
   * the budget holds it, not after the previous step's answer: launches keep the budget's rate.
   * When EC2 still answers RequestLimitExceeded (another process or cluster spent the budget),
   * the budget is taken as empty and that step is sent again once it refills. After a step fails
   * otherwise, no further step is sent, and the failure is thrown once the steps in flight are
   * answered (whatever they launched is reported through `onCreated` first).
   */
  async createInstances(ctx: AdapterContext, request: InstanceRequest, onCreated: (ids: string[]) => void): Promise<Instance[]> {
    // Ends the pacing waits of this call once a step failed or the caller aborted: nothing more is sent.
    const stop = new AbortController();
    const signal = stop.signal;
    if (ctx.signal.aborted) stop.abort(ctx.signal.reason);
    const unlisten = onAbort(ctx.signal, () => stop.abort(ctx.signal.reason));
    const steps: Promise<Instance[]>[] = [];
    let next = 0;
    this.#launchesLeft += request.names.length;
    try {
      while (next < request.names.length && !signal.aborted) {
        const left = request.names.length - next;
        const available = Math.floor(this.#launches.available());
        // A step never exceeds the bucket: one larger than the burst would wait forever.
        const n = left <= available ? left : Math.min(left, Math.max(Math.min(PACED_LAUNCH, this.#settings.launchRate.burst), available));
        if (!(await this.#launchBudget(ctx, n, signal))) break;
        const names = request.names.slice(next, next + n);
        next += n;
        this.#launchesLeft -= n;
        const step = this.#launchStep(ctx, { ...request, names }, onCreated, signal);
        step.catch((err: unknown) => stop.abort(err));
        steps.push(step);
      }
    } finally {
      this.#launchesLeft -= request.names.length - next;
    }
    const results = await Promise.allSettled(steps);
    unlisten();
    // What stopped the launch comes first: a step's failure or the caller's abort (a throttled
    // step then refused its budget fails with a later error of its own).
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw signal.aborted ? signal.reason : failed.reason;
    if (next < request.names.length) throw signal.reason; // aborted before all was sent
    return results.flatMap((r) => (r.status === 'fulfilled' ? r.value : []));
  }

  /**
   * Waits until the launch budget holds `n` instances (with a `pacing` event when it does not
   * yet), then takes them, in the same turn as the look: no other step can take them meanwhile.
   * False when `signal` ended the wait.
   */
  async #launchBudget(ctx: AdapterContext, n: number, signal: AbortSignal): Promise<boolean> {
    for (;;) {
      if (signal.aborted) return false;
      const wait = this.#launches.waitMs(n);
      if (wait <= 0) {
        this.#launches.take(n);
        return true;
      }
      const { perSecond } = this.#settings.launchRate;
      ctx.pacing?.({
        operation: 'RunInstances',
        message: `EC2 is launching ${perSecond}/s: ${this.#launchesLeft} instances left (the account's RunInstances launch budget)`,
        remaining: this.#launchesLeft,
        perSecond,
      });
      // Other steps may take what refills meanwhile: the budget is looked at again.
      await realClock.sleep(wait, signal).catch(() => undefined);
    }
  }

  /** One step of a launch: sent again, paced, after RequestLimitExceeded (RunInstances launches all of a request or none). */
  async #launchStep(ctx: AdapterContext, request: InstanceRequest, onCreated: (ids: string[]) => void, signal: AbortSignal): Promise<Instance[]> {
    for (let throttled = 0; ; ) {
      try {
        return await this.#launch(ctx, request, onCreated, throttled);
      } catch (err) {
        if (ec2ErrorCode(err) !== 'RequestLimitExceeded' || ctx.signal.aborted || ++throttled > MAX_THROTTLED_LAUNCHES) throw err;
        ctx.log('ec2: RunInstances of %d throttled after its retries: pacing launches from an empty budget', request.names.length);
        this.#launches.empty();
        this.#launchesLeft += request.names.length;
        const taken = await this.#launchBudget(ctx, request.names.length, signal);
        this.#launchesLeft -= request.names.length;
        if (!taken) throw err;
      }
    }
  }

  /** One RunInstances for `request.names`; `attempt` > 0 after throttling (a new ClientToken: nothing was launched). */
  async #launch(ctx: AdapterContext, request: InstanceRequest, onCreated: (ids: string[]) => void, attempt: number): Promise<Instance[]> {
    let out: Ec2Sdk.RunInstancesCommandOutput;
    for (;;) {
      const net = this.#requireNetwork();
      const input = this.#runInput(ctx.clusterId, request, net, { attempt });
      try {
        out = await this.api.call(ctx, 'RunInstances', input, { abortable: false });
        break;
      } catch (err) {
        // Nothing was launched: another zone that offers the type gets a new ClientToken (the
        // token names the subnet), since a token is bound to its request's parameters.
        const code = ec2ErrorCode(err);
        if (code === undefined || !TRY_ANOTHER_ZONE.has(code) || ctx.signal.aborted || !this.#moveZone(net.subnetId)) throw err;
        ctx.log('ec2: RunInstances %s in %s (%s); trying subnet %s in %s', code, net.availabilityZone, net.subnetId, this.#network?.subnetId, this.#network?.availabilityZone);
      }
    }
    const launched = [...(out.Instances ?? [])].sort((a, b) => (a.AmiLaunchIndex ?? 0) - (b.AmiLaunchIndex ?? 0));
    const ids = launched.map((i) => i.InstanceId).filter((id): id is string => id !== undefined);
    const now = Date.now();
    const type = request.role === 'scheduler' ? this.#settings.schedulerInstanceType : this.#settings.workerInstanceType;
    for (const id of ids) {
      this.#createdAt.set(id, now);
      this.#typeOf.set(id, type);
    }
    onCreated(ids);
    ctx.log('ec2: launched %s %s', request.role, ids.join(' '));
    if (ids.length !== request.names.length) {
      throw new CloudApiError(`ec2 RunInstances launched ${ids.length} instances, ${request.names.length} were asked for`, {
        details: { provider: 'ec2', operation: 'RunInstances', instanceIds: ids },
      });
    }
    return launched.map((i, n) => ({
      id: i.InstanceId as string,
      name: request.names[n] as string,
      role: request.role,
      privateIp: i.PrivateIpAddress,
      publicIp: i.PublicIpAddress,
    }));
  }

  /**
   * After a launch failed in `failedSubnet`: move the cluster (later creates too) to the next
   * eligible zone. True when there is a subnet to try (another batch may have moved already).
   */
  #moveZone(failedSubnet: string): boolean {
    const net = this.#requireNetwork();
    if (net.subnetId !== failedSubnet) return true;
    const next = net.alternatives[0];
    if (!next) return false;
    this.#network = { ...net, ...next, alternatives: net.alternatives.slice(1) };
    return true;
  }

  /** RunInstances input for a batch; `dryRun` (preflight) leaves out what does not exist yet: the group, the user-data, the token. */
  #runInput(clusterId: string, request: InstanceRequest, net: ResolvedNetwork, opts: { dryRun?: boolean; attempt?: number } = {}): Ec2Sdk.RunInstancesCommandInput {
    const s = this.#settings;
    const type = request.role === 'scheduler' ? s.schedulerInstanceType : s.workerInstanceType;
    const image = this.#images.get(architectureOf(type));
    if (!image) throw new CloudApiError(`ec2: no image resolved for ${type}: preflight did not run`);
    const count = request.names.length;
    const name = request.role === 'scheduler' ? (request.names[0] as string) : `${clusterId}-worker`;
    const tags = this.#tags(request.labels, name);
    const spot = request.role === 'worker' ? s.spot : false;
    const tagSpecs: Ec2Sdk.TagSpecification[] = [
      { ResourceType: 'instance', Tags: tags },
      { ResourceType: 'volume', Tags: tags },
    ];
    if (spot) tagSpecs.push({ ResourceType: 'spot-instances-request', Tags: tags });
    return {
      ImageId: image.imageId,
      InstanceType: type as Ec2Sdk._InstanceType,
      MinCount: count,
      MaxCount: count,
      // Same batch in the same subnet → same token: a create retried after a lost answer returns
      // the same instances; another subnet is another request.
      ...(opts.dryRun ? {} : { ClientToken: clientToken(clusterId, request.role, request.names, net.subnetId, opts.attempt) }),
      // The SDK sends UserData as given; EC2 wants base64 (of the raw or gzipped body).
      ...(opts.dryRun ? {} : { UserData: request.userData.body.toString('base64') }),
      // The VM powers itself off when Dask exits (auto-shutdown): that must delete it, not stop it.
      InstanceInitiatedShutdownBehavior: 'terminate',
      // IMDSv2 only: no unauthenticated metadata requests (SSRF-style credential theft).
      MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled' },
      NetworkInterfaces: [
        {
          DeviceIndex: 0,
          SubnetId: net.subnetId,
          ...(opts.dryRun && !s.securityGroups ? {} : { Groups: this.#groups }),
          // Explicit either way: a non-default subnet would not map a public address by itself.
          AssociatePublicIpAddress: !s.privateNetworking,
          DeleteOnTermination: true,
        },
      ],
      BlockDeviceMappings: image.rootDeviceName
        ? [{ DeviceName: image.rootDeviceName, Ebs: { VolumeSize: this.#rootSize(image), VolumeType: 'gp3', DeleteOnTermination: true } }]
        : undefined,
      ...(s.keyName !== undefined ? { KeyName: s.keyName } : {}),
      ...(s.iamInstanceProfile !== undefined
        ? { IamInstanceProfile: s.iamInstanceProfile.startsWith('arn:') ? { Arn: s.iamInstanceProfile } : { Name: s.iamInstanceProfile } }
        : {}),
      ...(spot
        ? {
            InstanceMarketOptions: {
              MarketType: 'spot',
              SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate', ...(spot.maxPrice !== undefined ? { MaxPrice: spot.maxPrice } : {}) },
            },
          }
        : {}),
      ...(s.monitoring ? { Monitoring: { Enabled: true } } : {}),
      TagSpecifications: tagSpecs,
    };
  }

  /** The core's labels as tags, plus Name and the user's extra tags. */
  #tags(labels: Record<string, string>, name: string): Ec2Sdk.Tag[] {
    return [
      { Key: 'Name', Value: name },
      ...Object.entries(labels).map(([Key, Value]) => ({ Key, Value })),
      ...Object.entries(this.#settings.tags).map(([Key, Value]) => ({ Key, Value })),
    ];
  }

  async waitForAddresses(ctx: AdapterContext, instance: Instance, wantPublic: boolean): Promise<Instance> {
    let lastState = 'unknown';
    const what = `ec2: waiting for the ${wantPublic ? 'public' : 'private'} address of ${instance.id}`;
    return retry(
      async () => {
        const out = await this.api.call(ctx, 'DescribeInstances', { InstanceIds: [instance.id] });
        const found = out.Reservations?.flatMap((r) => r.Instances ?? []).find((i) => i.InstanceId === instance.id);
        if (!found) throw new NotYet(`${instance.id} not listed yet`);
        lastState = found.State?.Name ?? 'unknown';
        if (lastState !== 'pending' && lastState !== 'running') {
          const reason = found.StateReason?.Message ?? found.StateTransitionReason ?? '';
          throw new CloudApiError(`ec2: instance ${instance.id} is ${lastState} before it got its address${reason ? `: ${reason}` : ''}`, {
            details: { provider: 'ec2', operation: 'DescribeInstances', instanceId: instance.id, state: lastState, stateReason: found.StateReason?.Code },
          });
        }
        const privateIp = found.PrivateIpAddress ?? instance.privateIp;
        const publicIp = found.PublicIpAddress;
        if (!privateIp || (wantPublic && !publicIp)) throw new NotYet(`${instance.id} is ${lastState} without its ${privateIp ? 'public' : 'private'} address`);
        return { ...instance, privateIp, publicIp };
      },
      {
        // A new id can be unknown to DescribeInstances for a while (eventual consistency).
        retryable: (err) => err instanceof NotYet || (ec2ErrorCode(err) === 'InvalidInstanceID.NotFound' && this.#young(instance.id)),
        timeoutMs: ADDRESS_TIMEOUT_MS,
        baseDelayMs: 1_000,
        maxDelayMs: 5_000,
        what: `${what} (last state ${lastState})`,
        signal: ctx.signal,
      },
    ).catch((err: unknown) => {
      throw ctx.signal.aborted && err === ctx.signal.reason ? abortError(what, ctx.signal) : err;
    });
  }

  async deleteInstances(ctx: AdapterContext, ids: string[]): Promise<void> {
    const chunks: string[][] = [];
    for (let i = 0; i < ids.length; i += TERMINATE_CHUNK) chunks.push(ids.slice(i, i + TERMINATE_CHUNK));
    await Promise.all(chunks.map((chunk) => this.#terminate(ctx, chunk)));
  }

  /**
   * TerminateInstances fails as a whole when one id is unknown. An unknown id we created moments
   * ago is not visible yet (retry it); an old or foreign one is gone already (drop it: "not found"
   * counts as done).
   */
  async #terminate(ctx: AdapterContext, ids: string[]): Promise<void> {
    let pending = [...new Set(ids)];
    const deadline = Date.now() + CONSISTENCY_WINDOW_MS;
    for (let round = 0; pending.length > 0; round++) {
      try {
        await this.api.call(ctx, 'TerminateInstances', { InstanceIds: pending });
        ctx.log('ec2: terminating %s', pending.join(' '));
        for (const id of pending) this.#createdAt.delete(id);
        return;
      } catch (err) {
        if (ec2ErrorCode(err) !== 'InvalidInstanceID.NotFound') throw err;
        const named: string[] = (err as Error).message.match(/i-[0-9a-f]+/g) ?? [];
        // Without ids in the message we cannot tell which one is missing: go one by one.
        const missing = named.length > 0 ? pending.filter((id) => named.includes(id)) : pending;
        if (named.length === 0 && pending.length > 1) {
          await Promise.all(pending.map((id) => this.#terminate(ctx, [id])));
          return;
        }
        const young = missing.filter((id) => this.#young(id));
        pending = pending.filter((id) => !missing.includes(id) || young.includes(id));
        for (const id of missing.filter((x) => !young.includes(x))) this.#createdAt.delete(id);
        if (young.length > 0) {
          if (Date.now() > deadline) throw err;
          await realClock.sleep(Math.min(5_000, 500 * 2 ** round), ctx.signal);
        }
      }
    }
  }

  #young(id: string): boolean {
    const at = this.#createdAt.get(id);
    return at !== undefined && Date.now() - at < CONSISTENCY_WINDOW_MS;
  }

  async listInstances(ctx: AdapterContext): Promise<Instance[]> {
    // Terminated (and shutting-down) instances are not listed at all (LIVE_STATES).
    return this.#describe(ctx, [
      { Name: `tag:${LABELS.cluster}`, Values: [ctx.clusterId] },
      { Name: 'instance-state-name', Values: LIVE_STATES },
    ]);
  }

  /** Every instance the filters match, page by page (a thousand a page, EC2's maximum). */
  async #describe(ctx: AdapterContext, filters: Ec2Sdk.Filter[]): Promise<Instance[]> {
    const found: Instance[] = [];
    let token: string | undefined;
    do {
      const out = await this.api.call(ctx, 'DescribeInstances', { Filters: filters, MaxResults: 1000, ...(token !== undefined ? { NextToken: token } : {}) });
      for (const i of out.Reservations?.flatMap((r) => r.Instances ?? []) ?? []) if (i.InstanceId) found.push(toInstance(i));
      token = out.NextToken || undefined;
    } while (token !== undefined);
    return found;
  }

  /** Clusters with live instances or a security group in this region, from their tags (for cleanup sweeps). */
  async listClusters(ctx: AdapterContext): Promise<ClusterListing[]> {
    const found = new Map<string, ClusterListing>();
    const note = (tags: Ec2Sdk.Tag[] | undefined): ClusterListing | undefined => {
      const id = tags?.find((t) => t.Key === LABELS.cluster)?.Value;
      if (!id) return undefined;
      const exp = Number(tags?.find((t) => t.Key === LABELS.expires)?.Value);
      const expiresAt = Number.isFinite(exp) && exp > 0 ? new Date(exp * 1000) : undefined;
      const c = found.get(id) ?? { clusterId: id, instances: [] };
      // Every resource carries the cluster's one expiry; of differing ones, the earliest.
      if (expiresAt !== undefined && (c.expiresAt === undefined || expiresAt < c.expiresAt)) c.expiresAt = expiresAt;
      found.set(id, c);
      return c;
    };
    const region = await this.api.region();
    let token: string | undefined;
    do {
      const out = await this.api.call(ctx, 'DescribeInstances', {
        Filters: [
          { Name: 'tag-key', Values: [LABELS.cluster] },
          { Name: 'instance-state-name', Values: LIVE_STATES },
        ],
        MaxResults: 1000,
        ...(token !== undefined ? { NextToken: token } : {}),
      });
      for (const i of out.Reservations?.flatMap((r) => r.Instances ?? []) ?? []) {
        const created = cloudDate(i.LaunchTime);
        note(i.Tags)?.instances!.push({
          ...toInstance(i),
          labels: Object.fromEntries((i.Tags ?? []).filter((t) => t.Key !== undefined).map((t) => [t.Key!, t.Value ?? ''])),
          ...(created ? { createdAt: created } : {}),
          location: i.Placement?.AvailabilityZone ?? region,
        });
      }
      token = out.NextToken || undefined;
    } while (token !== undefined);
    const groups = await this.api.call(ctx, 'DescribeSecurityGroups', { Filters: [{ Name: 'tag-key', Values: [LABELS.cluster] }] });
    for (const g of groups.SecurityGroups ?? []) note(g.Tags);
    return [...found.values()];
  }

  /**
   * The console for error messages: the latest output (`Latest: true`), because without it EC2
   * returns the buffer posted at the last state change, which misses what happened since boot.
   * Types without the Nitro hypervisor refuse `Latest`: those get the posted buffer.
   */
  async consoleOutput(ctx: AdapterContext, id: string): Promise<string> {
    const type = this.#typeOf.get(id);
    const latest = type === undefined || !this.#noLatest.has(type);
    try {
      const out = await this.api.call(ctx, 'GetConsoleOutput', { InstanceId: id, ...(latest ? { Latest: true } : {}) });
      return out.Output ? Buffer.from(out.Output, 'base64').toString('utf8') : '';
    } catch (err) {
      const code = ec2ErrorCode(err);
      // Not visible yet (just created) or already gone: there is no output to show.
      if (code === 'InvalidInstanceID.NotFound') return '';
      if (!latest || code === undefined || !LATEST_REFUSED.has(code)) throw err;
      if (type !== undefined) this.#noLatest.add(type);
      ctx.log('ec2: GetConsoleOutput with Latest refused for %s (%s): using the posted buffer', id, code);
      const out = await this.api.call(ctx, 'GetConsoleOutput', { InstanceId: id });
      return out.Output ? Buffer.from(out.Output, 'base64').toString('utf8') : '';
    }
  }

  /**
   * The given instances in any state, for the member watch: by an `instance-id` filter without
   * a state filter, so a VM that already terminated is reported (with `stoppedState`) and an id
   * EC2 does not show yet is simply absent (a filter, unlike InstanceIds, never answers NotFound).
   */
  async describeInstances(ctx: AdapterContext, ids: string[]): Promise<Instance[]> {
    const found: Instance[] = [];
    for (let i = 0; i < ids.length; i += DESCRIBE_CHUNK) found.push(...(await this.#describe(ctx, [{ Name: 'instance-id', Values: ids.slice(i, i + DESCRIBE_CHUNK) }])));
    return found;
  }

  /** `dask-cloud cleanup` needs the region to find the cluster. */
  cleanupFlags(): string[] {
    return this.#settings.region !== undefined ? ['--region', this.#settings.region] : [];
  }

  #requireNetwork(): ResolvedNetwork {
    if (!this.#network) throw new CloudApiError('ec2: network not resolved: preflight did not run');
    return this.#network;
  }

  /** Closes the SDK client we created (a closed cluster makes no more requests). */
  dispose(): void {
    this.api.dispose();
  }
}

/** States in which an instance no longer runs (or is on its way out): the watch reports them. */
const STOPPED_STATES = new Set(['stopping', 'stopped', 'shutting-down', 'terminated']);

function toInstance(i: Ec2Sdk.Instance): Instance {
  const tag = (k: string) => i.Tags?.find((t) => t.Key === k)?.Value;
  const role: MemberRole = tag(LABELS.role) === 'scheduler' ? 'scheduler' : 'worker';
  const state = i.State?.Name;
  return {
    id: i.InstanceId as string,
    name: tag('Name') ?? (i.InstanceId as string),
    role,
    privateIp: i.PrivateIpAddress,
    publicIp: i.PublicIpAddress,
    ...(state !== undefined && STOPPED_STATES.has(state) ? { stoppedState: state } : {}),
  };
}

function toImage(i: Ec2Sdk.Image): ResolvedImage {
  const root = i.BlockDeviceMappings?.find((b) => b.DeviceName === i.RootDeviceName);
  return { imageId: i.ImageId as string, name: i.Name ?? '', rootDeviceName: i.RootDeviceName, rootSizeGb: root?.Ebs?.VolumeSize };
}

/**
 * Deterministic per batch (cluster, role, member names, and the subnet when given) and at most
 * 64 ASCII characters, as EC2 requires.
 */
export function clientToken(clusterId: string, role: MemberRole, names: string[], subnetId?: string, attempt = 0): string {
  const digest = createHash('sha256')
    .update(`${clusterId}\n${role}\n${names.join('\n')}${subnetId !== undefined ? `\n${subnetId}` : ''}${attempt > 0 ? `\n${attempt}` : ''}`)
    .digest('hex');
  return `${clusterId.slice(0, 40)}-${digest.slice(0, 20)}`;
}

/** Instances per RunInstances while launches are paced: one call every 5 s at AWS's 2/s. */
const PACED_LAUNCH = 10;
/** Throttled RunInstances in a row (each after the pipeline's own retries) before giving up. */
const MAX_THROTTLED_LAUNCHES = 5;

/** Security group rule descriptions allow only a few ASCII characters. */
function sgDescription(why: string): string {
  return why.replace(/[^a-zA-Z0-9. _\-:/()#,@[\]+=&;{}!$*]/g, ' ').slice(0, 255);
}
