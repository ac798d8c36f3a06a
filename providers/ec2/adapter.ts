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
import { realClock, retry } from '../../src/cluster/retry';
import { LABELS, type AdapterContext, type CloudAdapter, type Instance, type InstanceRequest, type NetworkPlan } from '../../src/cluster/vm';
import type { MemberRole } from '../../src/cluster/backend';
import { USER_DATA_LIMITS } from '../../src/cloud-init';
import { CloudApiError, ValidationError } from '../../src/errors';
import { abortError, Ec2Api, ec2ErrorCode, type Ec2ApiConfig } from './api';
import { architectureOf, EC2_DEFAULTS, type Ec2Settings } from './options';

/** Instance states from which an instance can still become a working member. */
const LIVE_STATES = ['pending', 'running', 'stopping', 'stopped'];
/** New ids can be unknown to EC2's read side for a while; this long we keep retrying NotFound. */
const CONSISTENCY_WINDOW_MS = 2 * 60_000;
/** How long an instance may take from RunInstances to having the addresses we need. */
const ADDRESS_TIMEOUT_MS = 10 * 60_000;
const TERMINATE_CHUNK = 100;

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
}

/** Raised while polling: the instance exists but lacks the address we wait for. */
class NotYet extends Error {}

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
  #images = new Map<string, ResolvedImage>();
  #network: ResolvedNetwork | undefined;
  /** The per-cluster security group, once created (or found after an ambiguous create). */
  #groupId: string | undefined;
  /** When we created each instance: NotFound for a young id means "not visible yet", not "gone". */
  readonly #createdAt = new Map<string, number>();

  constructor(options: Ec2AdapterOptions) {
    this.#settings = options.settings;
    this.api = new Ec2Api({ ...options.api, region: options.settings.region });
  }

  /** The security group ids instances are launched into. */
  get #groups(): string[] {
    if (this.#settings.securityGroups) return this.#settings.securityGroups;
    if (!this.#groupId) throw new CloudApiError('ec2: the cluster security group does not exist yet');
    return [this.#groupId];
  }

  // -------------------------------------------------------------------------------------------
  // Look-ups (create nothing)

  async preflight(ctx: AdapterContext, _plan: NetworkPlan): Promise<void> {
    const s = this.#settings;
    const archs = [...new Set([architectureOf(s.schedulerInstanceType), architectureOf(s.workerInstanceType)])];
    if (s.ami !== undefined) {
      const image = await this.#describeAmi(ctx, s.ami, archs);
      for (const arch of archs) this.#images.set(arch, image);
    } else {
      for (const arch of archs) this.#images.set(arch, await this.#latestDebian(ctx, arch));
    }
    for (const image of new Set(this.#images.values())) this.#rootSize(image); // a too small root volume fails here, before anything exists
    this.#network = await this.#resolveNetwork(ctx);
    if (s.securityGroups) await this.#checkGroups(ctx, s.securityGroups, this.#network.vpcId);
    ctx.log('ec2 preflight: images %o, vpc %s (%s), subnet %s', Object.fromEntries([...this.#images].map(([a, i]) => [a, `${i.imageId} ${i.name}`])), this.#network.vpcId, this.#network.vpcCidrs.join(','), this.#network.subnetId);
  }

  async #describeAmi(ctx: AdapterContext, ami: string, archs: string[]): Promise<ResolvedImage> {
    const out = await this.api.call(ctx, 'DescribeImages', { ImageIds: [ami] });
    const image = out.Images?.[0];
    if (!image?.ImageId) throw new ValidationError(`ami ${ami} does not exist in region ${await this.api.region()}`, { option: 'ami' });
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
    const out = await this.api.call(ctx, 'DescribeImages', {
      Owners: [EC2_DEFAULTS.debianOwner],
      Filters: [
        { Name: 'name', Values: [`debian-12-${arch === 'arm64' ? 'arm64' : 'amd64'}-*`] },
        { Name: 'architecture', Values: [arch] },
        { Name: 'state', Values: ['available'] },
      ],
    });
    const newest = [...(out.Images ?? [])].filter((i) => i.ImageId).sort((a, b) => (b.CreationDate ?? '').localeCompare(a.CreationDate ?? ''))[0];
    if (!newest) throw new CloudApiError(`ec2: no Debian 12 ${arch} image found in region ${await this.api.region()}; pass ami`, { details: { provider: 'ec2', operation: 'DescribeImages' } });
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

  async #resolveNetwork(ctx: AdapterContext): Promise<ResolvedNetwork> {
    const s = this.#settings;
    let subnet: Ec2Sdk.Subnet | undefined;
    if (s.subnetId !== undefined) {
      subnet = (await this.api.call(ctx, 'DescribeSubnets', { SubnetIds: [s.subnetId] })).Subnets?.[0];
      if (!subnet?.VpcId) throw new ValidationError(`subnetId ${s.subnetId} does not exist`, { option: 'subnetId' });
      if (s.vpc !== undefined && subnet.VpcId !== s.vpc) throw new ValidationError(`subnetId ${s.subnetId} is in ${subnet.VpcId}, not in vpc ${s.vpc}`, { option: 'subnetId' });
      if (s.availabilityZone !== undefined && subnet.AvailabilityZone !== s.availabilityZone) {
        throw new ValidationError(`subnetId ${s.subnetId} is in ${subnet.AvailabilityZone ?? '?'}, not in availabilityZone ${s.availabilityZone}`, { option: 'availabilityZone' });
      }
    }
    const vpcId = subnet?.VpcId ?? s.vpc;
    const vpcs = await this.api.call(ctx, 'DescribeVpcs', vpcId !== undefined ? { VpcIds: [vpcId] } : { Filters: [{ Name: 'is-default', Values: ['true'] }] });
    const vpc = vpcs.Vpcs?.[0];
    if (!vpc?.VpcId) {
      throw new ValidationError(`region ${await this.api.region()} has no default VPC: pass vpc or subnetId`, { option: 'vpc' });
    }
    const vpcCidrs = [
      ...new Set([
        ...(vpc.CidrBlock ? [vpc.CidrBlock] : []),
        ...(vpc.CidrBlockAssociationSet ?? []).filter((a) => a.CidrBlockState?.State === 'associated' && a.CidrBlock).map((a) => a.CidrBlock as string),
      ]),
    ];
    if (!subnet) {
      const filters: Ec2Sdk.Filter[] = [{ Name: 'vpc-id', Values: [vpc.VpcId] }, { Name: 'state', Values: ['available'] }];
      if (s.availabilityZone !== undefined) filters.push({ Name: 'availability-zone', Values: [s.availabilityZone] });
      const subnets = (await this.api.call(ctx, 'DescribeSubnets', { Filters: filters })).Subnets ?? [];
      // Default subnets first (they route to the internet gateway), then the roomiest; ties by id so the choice is stable.
      subnet = [...subnets]
        .filter((x) => x.SubnetId)
        .sort((a, b) => Number(b.DefaultForAz ?? false) - Number(a.DefaultForAz ?? false) || (b.AvailableIpAddressCount ?? 0) - (a.AvailableIpAddressCount ?? 0) || (a.SubnetId as string).localeCompare(b.SubnetId as string))[0];
      if (!subnet) {
        const where = s.availabilityZone !== undefined ? ` in ${s.availabilityZone}` : '';
        throw new ValidationError(`vpc ${vpc.VpcId} has no available subnet${where}: pass subnetId`, { option: 'subnetId' });
      }
    }
    return { vpcId: vpc.VpcId, vpcCidrs, subnetId: subnet.SubnetId as string, availabilityZone: subnet.AvailabilityZone };
  }

  async #checkGroups(ctx: AdapterContext, ids: string[], vpcId: string): Promise<void> {
    const out = await this.api.call(ctx, 'DescribeSecurityGroups', { GroupIds: ids });
    for (const id of ids) {
      const g = out.SecurityGroups?.find((x) => x.GroupId === id);
      if (!g) throw new ValidationError(`securityGroups: ${id} does not exist`, { option: 'securityGroups' });
      if (g.VpcId !== vpcId) throw new ValidationError(`securityGroups: ${id} is in ${g.VpcId ?? '?'}, but the instances go into ${vpcId}`, { option: 'securityGroups' });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Security group

  async ensureNetwork(ctx: AdapterContext, plan: NetworkPlan): Promise<void> {
    if (this.#settings.securityGroups) {
      ctx.log('ec2: using the given security groups %s as they are', this.#settings.securityGroups.join(', '));
      return;
    }
    const net = this.#requireNetwork();
    const name = plan.clusterId;
    let groupId: string | undefined;
    try {
      const out = await this.api.call(ctx, 'CreateSecurityGroup', {
        GroupName: name,
        Description: `dask-cloud cluster ${plan.clusterId}`,
        VpcId: net.vpcId,
        TagSpecifications: [{ ResourceType: 'security-group', Tags: this.#tags(plan.labels, name) }],
      });
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
    try {
      await this.api.call(ctx, 'AuthorizeSecurityGroupIngress', { GroupId: groupId, IpPermissions: this.#permissions(groupId, plan, net) });
    } catch (err) {
      // Only a retry of a call whose first answer was lost can see its own rules as duplicates.
      if (ec2ErrorCode(err) !== 'InvalidPermission.Duplicate') throw err;
    }
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

  async createInstances(ctx: AdapterContext, request: InstanceRequest, onCreated: (ids: string[]) => void): Promise<Instance[]> {
    const input = this.#runInput(ctx, request);
    const out = await this.api.call(ctx, 'RunInstances', input, { abortable: false });
    const launched = [...(out.Instances ?? [])].sort((a, b) => (a.AmiLaunchIndex ?? 0) - (b.AmiLaunchIndex ?? 0));
    const ids = launched.map((i) => i.InstanceId).filter((id): id is string => id !== undefined);
    const now = Date.now();
    for (const id of ids) this.#createdAt.set(id, now);
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

  #runInput(ctx: AdapterContext, request: InstanceRequest): Ec2Sdk.RunInstancesCommandInput {
    const s = this.#settings;
    const net = this.#requireNetwork();
    const type = request.role === 'scheduler' ? s.schedulerInstanceType : s.workerInstanceType;
    const image = this.#images.get(architectureOf(type));
    if (!image) throw new CloudApiError(`ec2: no image resolved for ${type}: preflight did not run`);
    const count = request.names.length;
    const name = request.role === 'scheduler' ? (request.names[0] as string) : `${ctx.clusterId}-worker`;
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
      // Same batch → same token: a create retried after a lost answer returns the same instances.
      ClientToken: clientToken(ctx.clusterId, request.role, request.names),
      // The SDK sends UserData as given; EC2 wants base64 (of the raw or gzipped body).
      UserData: request.userData.body.toString('base64'),
      // The VM powers itself off when Dask exits (auto-shutdown): that must delete it, not stop it.
      InstanceInitiatedShutdownBehavior: 'terminate',
      // IMDSv2 only: no unauthenticated metadata requests (SSRF-style credential theft).
      MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled' },
      NetworkInterfaces: [
        {
          DeviceIndex: 0,
          SubnetId: net.subnetId,
          Groups: this.#groups,
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
    const found: Instance[] = [];
    let token: string | undefined;
    do {
      const out = await this.api.call(ctx, 'DescribeInstances', {
        Filters: [
          { Name: `tag:${LABELS.cluster}`, Values: [ctx.clusterId] },
          { Name: 'instance-state-name', Values: LIVE_STATES },
        ],
        MaxResults: 1000,
        ...(token !== undefined ? { NextToken: token } : {}),
      });
      for (const i of out.Reservations?.flatMap((r) => r.Instances ?? []) ?? []) {
        if (!i.InstanceId) continue;
        const tag = (k: string) => i.Tags?.find((t) => t.Key === k)?.Value;
        const role: MemberRole = tag(LABELS.role) === 'scheduler' ? 'scheduler' : 'worker';
        const state = i.State?.Name;
        found.push({
          id: i.InstanceId,
          name: tag('Name') ?? i.InstanceId,
          role,
          privateIp: i.PrivateIpAddress,
          publicIp: i.PublicIpAddress,
          // Terminated (and shutting-down) instances are not listed at all (LIVE_STATES).
          ...(state === 'stopping' || state === 'stopped' ? { stoppedState: state } : {}),
        });
      }
      token = out.NextToken || undefined;
    } while (token !== undefined);
    return found;
  }

  /** Clusters with live instances or a security group in this region, from their tags (for cleanup sweeps). */
  async listClusters(ctx: AdapterContext): Promise<Array<{ clusterId: string; expiresAt?: Date }>> {
    const found = new Map<string, Date | undefined>();
    const note = (tags: Ec2Sdk.Tag[] | undefined) => {
      const id = tags?.find((t) => t.Key === LABELS.cluster)?.Value;
      if (!id) return;
      const exp = Number(tags?.find((t) => t.Key === LABELS.expires)?.Value);
      const expiresAt = Number.isFinite(exp) && exp > 0 ? new Date(exp * 1000) : undefined;
      const prev = found.get(id);
      // The latest expiry of a cluster's resources decides (a scale-up renews it).
      found.set(id, prev === undefined ? expiresAt : expiresAt !== undefined && expiresAt > prev ? expiresAt : prev);
    };
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
      for (const i of out.Reservations?.flatMap((r) => r.Instances ?? []) ?? []) note(i.Tags);
      token = out.NextToken || undefined;
    } while (token !== undefined);
    const groups = await this.api.call(ctx, 'DescribeSecurityGroups', { Filters: [{ Name: 'tag-key', Values: [LABELS.cluster] }] });
    for (const g of groups.SecurityGroups ?? []) note(g.Tags);
    return [...found].map(([clusterId, expiresAt]) => ({ clusterId, ...(expiresAt ? { expiresAt } : {}) }));
  }

  async consoleOutput(ctx: AdapterContext, id: string): Promise<string> {
    try {
      const out = await this.api.call(ctx, 'GetConsoleOutput', { InstanceId: id });
      return out.Output ? Buffer.from(out.Output, 'base64').toString('utf8') : '';
    } catch (err) {
      // Not visible yet (just created) or already gone: there is no output to show.
      if (ec2ErrorCode(err) === 'InvalidInstanceID.NotFound') return '';
      throw err;
    }
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

function toImage(i: Ec2Sdk.Image): ResolvedImage {
  const root = i.BlockDeviceMappings?.find((b) => b.DeviceName === i.RootDeviceName);
  return { imageId: i.ImageId as string, name: i.Name ?? '', rootDeviceName: i.RootDeviceName, rootSizeGb: root?.Ebs?.VolumeSize };
}

/** Deterministic per batch (cluster, role, member names) and at most 64 characters, as EC2 requires. */
export function clientToken(clusterId: string, role: MemberRole, names: string[]): string {
  const digest = createHash('sha256').update(`${clusterId}\n${role}\n${names.join('\n')}`).digest('hex');
  return `${clusterId.slice(0, 40)}-${digest.slice(0, 20)}`;
}

/** Security group rule descriptions allow only a few ASCII characters. */
function sgDescription(why: string): string {
  return why.replace(/[^a-zA-Z0-9. _\-:/()#,@[\]+=&;{}!$*]/g, ' ').slice(0, 255);
}
