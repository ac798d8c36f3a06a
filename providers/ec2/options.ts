/**
 * EC2Cluster options: the names of dask-cloudprovider's `EC2Cluster` in camelCase, their
 * defaults, and the checks that run before any API call.
 */
import type { EC2Client, EC2ClientConfig } from '@aws-sdk/client-ec2';
import { LABELS, type VMClusterOptions } from '../../src/cluster/vm';
import { ValidationError } from '../../src/errors';
import { checkTimerMs, describeValue } from '../../src/config/bounds';

/** EC2Cluster's options; each is also declared in ./schema.ts (checked against this interface), which makes unknown keys an error. */
export interface EC2ClusterOptions extends VMClusterOptions {
  /**
   * AWS region, e.g. `eu-west-1`. Default: `AWS_REGION`, then `AWS_DEFAULT_REGION`; required
   * unless `client` is given (its region is used then).
   */
  region?: string;
  /** Availability zone for every instance, e.g. `eu-west-1b` (default: the subnet's zone, or EC2's pick among the VPC's default subnets). */
  availabilityZone?: string;
  /**
   * AMI id for every instance. Default: the newest official Debian 12 (bookworm) image from
   * Debian's account (136693071363), `amd64` or `arm64` to match each instance type.
   */
  ami?: string;
  /** Instance type of both roles unless the role-specific option is given. */
  instanceType?: string;
  /** Scheduler instance type (default `instanceType`, else `t3.medium`: 2 vCPU, 4 GiB). */
  schedulerInstanceType?: string;
  /** Worker instance type (default `instanceType`, else `m6i.large`: 2 vCPU, 8 GiB). */
  workerInstanceType?: string;
  /** VPC id (default: the region's default VPC, or the VPC of `subnetId`). */
  vpc?: string;
  /** Subnet id (default: a default subnet of the VPC, in `availabilityZone` when given). */
  subnetId?: string;
  /**
   * Security group ids to use instead of the per-cluster group. Used as they are and never
   * modified or deleted: they must let members reach each other on every TCP port, and let you
   * reach the scheduler port.
   */
  securityGroups?: string[];
  /** EC2 key pair name for SSH access (default: none). */
  keyName?: string;
  /** IAM instance profile, by name or ARN (default: none — the VMs get no AWS credentials). */
  iamInstanceProfile?: string;
  /** Root volume size in GiB (default 20: room for the Docker image and spilled data). */
  rootVolumeSizeGb?: number;
  /**
   * Run workers as Spot instances (one-time requests, terminated on interruption). `true` bids up
   * to the on-demand price; `{ maxPrice: '0.05' }` caps it (USD per hour). The scheduler always
   * runs on demand: losing it loses the cluster. Default false.
   */
  spot?: boolean | { maxPrice?: string };
  /** Extra tags on every instance, volume and security group. */
  tags?: Record<string, string>;
  /** CloudWatch detailed (1-minute) monitoring (default false). */
  monitoring?: boolean;
  /** EC2 endpoint URL (default: the region's). */
  endpoint?: string;
  /**
   * A ready-made `EC2Client`, used as is (and never destroyed by the cluster). Give it
   * `maxAttempts: 1`: this library retries requests itself.
   */
  client?: EC2Client;
  /** Credentials for the client we create (default: the AWS SDK's default provider chain). Never sent to a VM. */
  credentials?: EC2ClientConfig['credentials'];
  /** Attempts per API request, the first included, on throttling and transient errors (default 8). */
  maxAttempts?: number;
  /** Deadline of one API request attempt; one with no answer by then is retried (default 60 s). */
  requestTimeoutMs?: number;
  /**
   * Your account's RunInstances launch budget in the region: instances launched at once, then
   * per second. AWS's default is `{ burst: 1000, perSecond: 2 }`; give yours if AWS raised it.
   * Launches beyond it are paced (a `pacing` event says so) instead of refused.
   */
  launchRate?: { burst: number; perSecond: number };
}

/** Defaults of EC2Cluster options that are not the core's. */
export const EC2_DEFAULTS = Object.freeze({
  schedulerInstanceType: 't3.medium',
  workerInstanceType: 'm6i.large',
  rootVolumeSizeGb: 20,
  maxAttempts: 8,
  requestTimeoutMs: 60_000,
  /** Debian's AWS account: the official Debian cloud images. */
  debianOwner: '136693071363',
  /**
   * RunInstances count per call. EC2 sets no per-call maximum (MaxCount: "between 1 and the quota
   * for the instance type"); 250 lets the batches of 1,000 workers all be in flight at once
   * within the pipeline's 8 concurrent requests.
   */
  maxBatch: 250,
  /**
   * RunInstances' resource token bucket (EC2 API reference, "Request throttling": 1,000
   * instances, refilled at 2 a second, per account and region).
   */
  launchRate: Object.freeze({ burst: 1_000, perSecond: 2 }),
});

/** Resolved settings the adapter works with. */
export interface Ec2Settings {
  region: string | undefined;
  availabilityZone: string | undefined;
  ami: string | undefined;
  schedulerInstanceType: string;
  workerInstanceType: string;
  vpc: string | undefined;
  subnetId: string | undefined;
  securityGroups: string[] | undefined;
  keyName: string | undefined;
  iamInstanceProfile: string | undefined;
  rootVolumeSizeGb: number | undefined;
  spot: false | { maxPrice?: string };
  tags: Record<string, string>;
  monitoring: boolean;
  privateNetworking: boolean;
  launchRate: { burst: number; perSecond: number };
}

const REGION = /^[a-z]{2}(-[a-z]+)+-\d+$/;
const ID = (prefix: string) => new RegExp(`^${prefix}-[0-9a-f]{8}([0-9a-f]{9})?$`);
/** Tag keys we set ourselves; user tags may not replace them. */
const RESERVED_TAGS = new Set<string>(['Name', ...Object.values(LABELS)]);

function optionalString(value: unknown, option: string): void {
  if (value !== undefined && (typeof value !== 'string' || value === '')) {
    throw new ValidationError(`${option} must be a non-empty string`, { option });
  }
}

function checkId(value: string | undefined, prefix: string, option: string): void {
  if (value !== undefined && !ID(prefix).test(value)) {
    throw new ValidationError(`${option} must be an id like ${prefix}-0123456789abcdef0, got ${JSON.stringify(value)}`, { option });
  }
}

/** Region from the options, then the environment (AWS_REGION, AWS_DEFAULT_REGION). */
export function resolveRegion(options: EC2ClusterOptions, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const fromEnv = [env.AWS_REGION, env.AWS_DEFAULT_REGION].find((r) => r !== undefined && r !== '');
  return options.region ?? fromEnv;
}

/** Graviton instance types (`m7g.large`, `c6gn.xlarge`, `t4g.small`, `a1.large`) need arm64 images. */
export function architectureOf(instanceType: string): 'x86_64' | 'arm64' {
  const family = instanceType.split('.')[0] ?? '';
  return family === 'a1' || /^[a-z]+\d+[a-z]*g[a-z]*$/.test(family) ? 'arm64' : 'x86_64';
}

/** Checks every EC2 option and resolves defaults; throws ValidationError before anything is called. */
export function resolveEc2Settings(options: EC2ClusterOptions, env: NodeJS.ProcessEnv = process.env): Ec2Settings {
  for (const name of ['region', 'availabilityZone', 'ami', 'instanceType', 'schedulerInstanceType', 'workerInstanceType', 'vpc', 'subnetId', 'keyName', 'iamInstanceProfile', 'endpoint'] as const) {
    optionalString(options[name], name);
  }
  if (options.endpoint !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(options.endpoint);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      throw new ValidationError(`endpoint must be an http(s) URL such as https://ec2.eu-west-1.amazonaws.com, got ${describeValue(options.endpoint)}`, { option: 'endpoint' });
    }
  }
  const client = options.client as unknown;
  if (client !== undefined && (typeof client !== 'object' || client === null || typeof (client as { send?: unknown }).send !== 'function')) {
    throw new ValidationError('client must be an EC2Client from @aws-sdk/client-ec2', { option: 'client' });
  }
  const creds = options.credentials as unknown;
  if (
    creds !== undefined &&
    typeof creds !== 'function' &&
    (typeof creds !== 'object' || creds === null || typeof (creds as { accessKeyId?: unknown }).accessKeyId !== 'string' || typeof (creds as { secretAccessKey?: unknown }).secretAccessKey !== 'string')
  ) {
    // The value is never quoted back: it may hold a secret.
    throw new ValidationError('credentials must be { accessKeyId, secretAccessKey, sessionToken? } or a credential provider function', { option: 'credentials' });
  }
  const region = resolveRegion(options, env);
  if (region === undefined && options.client === undefined) {
    throw new ValidationError('region is required: pass { region: "eu-west-1" }, or set AWS_REGION or AWS_DEFAULT_REGION', { option: 'region' });
  }
  if (region !== undefined && !REGION.test(region)) {
    throw new ValidationError(`region must look like eu-west-1, got ${JSON.stringify(region)}`, { option: 'region' });
  }
  const az = options.availabilityZone;
  if (az !== undefined && region !== undefined && !(az.startsWith(region) && /^[a-z0-9-]+$/.test(az) && az.length > region.length)) {
    throw new ValidationError(`availabilityZone ${JSON.stringify(az)} is not a zone of region ${region} (e.g. ${region}a)`, { option: 'availabilityZone' });
  }
  checkId(options.ami, 'ami', 'ami');
  checkId(options.vpc, 'vpc', 'vpc');
  checkId(options.subnetId, 'subnet', 'subnetId');
  if (options.securityGroups !== undefined) {
    if (!Array.isArray(options.securityGroups) || options.securityGroups.length === 0) {
      throw new ValidationError('securityGroups must be a non-empty array of security group ids', { option: 'securityGroups' });
    }
    for (const g of options.securityGroups) {
      if (typeof g !== 'string') throw new ValidationError('securityGroups must hold strings', { option: 'securityGroups' });
      checkId(g, 'sg', 'securityGroups');
    }
  }
  const size = options.rootVolumeSizeGb;
  if (size !== undefined && (typeof size !== 'number' || !Number.isInteger(size) || size < 1 || size > 16_384)) {
    throw new ValidationError(`rootVolumeSizeGb must be an integer from 1 to 16384, got ${String(size)}`, { option: 'rootVolumeSizeGb' });
  }
  const attempts = options.maxAttempts;
  if (attempts !== undefined && (typeof attempts !== 'number' || !Number.isInteger(attempts) || attempts < 1 || attempts > 50)) {
    throw new ValidationError(`maxAttempts must be an integer from 1 to 50, got ${String(attempts)}`, { option: 'maxAttempts' });
  }
  checkTimerMs(options.requestTimeoutMs, 'requestTimeoutMs');
  if (options.monitoring !== undefined && typeof options.monitoring !== 'boolean') {
    throw new ValidationError('monitoring must be a boolean', { option: 'monitoring' });
  }
  let spot: Ec2Settings['spot'] = false;
  if (options.spot !== undefined) {
    if (typeof options.spot === 'boolean') spot = options.spot ? {} : false;
    else if (typeof options.spot === 'object' && options.spot !== null) {
      const max = options.spot.maxPrice;
      if (max !== undefined && (typeof max !== 'string' || !/^\d+(\.\d+)?$/.test(max))) {
        throw new ValidationError(`spot.maxPrice must be a decimal string in USD per hour such as '0.05', got ${describeValue(max)}`, { option: 'spot' });
      }
      spot = max === undefined ? {} : { maxPrice: max };
    } else {
      throw new ValidationError('spot must be a boolean or { maxPrice }', { option: 'spot' });
    }
  }
  const tags: Record<string, string> = {};
  if (options.tags !== undefined) {
    if (typeof options.tags !== 'object' || options.tags === null || Array.isArray(options.tags)) {
      throw new ValidationError('tags must be an object of strings', { option: 'tags' });
    }
    const entries = Object.entries(options.tags);
    // 50 tags per resource on EC2; we use 4 (Name and the three labels).
    if (entries.length > 46) throw new ValidationError(`tags: at most 46 extra tags, got ${entries.length}`, { option: 'tags' });
    for (const [k, v] of entries) {
      if (k.length === 0 || k.length > 128 || k.toLowerCase().startsWith('aws:')) {
        throw new ValidationError(`tags: key ${JSON.stringify(k)} must have 1 to 128 characters and not start with aws:`, { option: 'tags' });
      }
      if (RESERVED_TAGS.has(k)) throw new ValidationError(`tags: ${k} is set by dask-cloud itself`, { option: 'tags' });
      if (typeof v !== 'string' || v.length > 256) throw new ValidationError(`tags: value of ${k} must be a string of at most 256 characters`, { option: 'tags' });
      tags[k] = v;
    }
  }
  const launchRate = options.launchRate ?? EC2_DEFAULTS.launchRate;
  const positive = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v > 0;
  if (typeof launchRate !== 'object' || launchRate === null || !positive(launchRate.burst) || !positive(launchRate.perSecond) || !Number.isInteger(launchRate.burst)) {
    throw new ValidationError('launchRate must be { burst, perSecond }: a whole number of instances and a rate, both above 0', { option: 'launchRate' });
  }
  return {
    region,
    availabilityZone: az,
    ami: options.ami,
    schedulerInstanceType: options.schedulerInstanceType ?? options.instanceType ?? EC2_DEFAULTS.schedulerInstanceType,
    workerInstanceType: options.workerInstanceType ?? options.instanceType ?? EC2_DEFAULTS.workerInstanceType,
    vpc: options.vpc,
    subnetId: options.subnetId,
    securityGroups: options.securityGroups ? [...options.securityGroups] : undefined,
    keyName: options.keyName,
    iamInstanceProfile: options.iamInstanceProfile,
    rootVolumeSizeGb: size,
    spot,
    tags,
    monitoring: options.monitoring ?? false,
    privateNetworking: options.privateNetworking ?? false,
    launchRate: { burst: launchRate.burst, perSecond: launchRate.perSecond },
  };
}
