/**
 * What the EC2 fake knows before anyone calls it: public images (per owner, with creation dates so
 * "latest image named X" lookups behave), instance types with their architecture, timing defaults.
 */
import { createHash } from 'node:crypto';

export type Architecture = 'x86_64' | 'arm64';

export interface Ec2Image {
  imageId: string;
  name: string;
  description: string;
  ownerId: string;
  /** `amazon` for Amazon's own images; undefined for other publishers (Debian, Canonical). */
  ownerAlias?: string;
  architecture: Architecture;
  creationDate: string;
  rootDeviceName: string;
  rootVolumeSizeGb: number;
  /** `v2.0`: instances launched from it default to IMDSv2 (`httpTokens: required`), like AL2023. */
  imdsSupport?: 'v2.0';
  state: 'available';
}

/** Image publishers' real account ids. */
export const OWNERS = { debian: '136693071363', canonical: '099720109477', amazon: '137112412989' } as const;

/** Stable ids, so a test can name an image without looking it up. */
export function imageIdFor(name: string): string {
  return 'ami-' + createHash('sha256').update(name).digest('hex').slice(0, 17);
}

function image(p: Omit<Ec2Image, 'imageId' | 'state'>): Ec2Image {
  return { imageId: imageIdFor(p.name), state: 'available', ...p };
}

/** The seeded public images (two Debian 12 builds per architecture so "latest" means something). */
export const IMAGES: readonly Ec2Image[] = [
  image({ name: 'debian-12-amd64-20240717-1811', description: 'Debian 12 (20240717-1811)', ownerId: OWNERS.debian, architecture: 'x86_64', creationDate: '2024-07-17T18:14:38.000Z', rootDeviceName: '/dev/xvda', rootVolumeSizeGb: 8 }),
  image({ name: 'debian-12-amd64-20250115-1997', description: 'Debian 12 (20250115-1997)', ownerId: OWNERS.debian, architecture: 'x86_64', creationDate: '2025-01-15T21:41:07.000Z', rootDeviceName: '/dev/xvda', rootVolumeSizeGb: 8 }),
  image({ name: 'debian-12-arm64-20240717-1811', description: 'Debian 12 (20240717-1811)', ownerId: OWNERS.debian, architecture: 'arm64', creationDate: '2024-07-17T18:15:02.000Z', rootDeviceName: '/dev/xvda', rootVolumeSizeGb: 8 }),
  image({ name: 'debian-12-arm64-20250115-1997', description: 'Debian 12 (20250115-1997)', ownerId: OWNERS.debian, architecture: 'arm64', creationDate: '2025-01-15T21:42:19.000Z', rootDeviceName: '/dev/xvda', rootVolumeSizeGb: 8 }),
  image({ name: 'ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240927', description: 'Canonical, Ubuntu, 22.04 LTS, amd64 jammy image build on 2024-09-27', ownerId: OWNERS.canonical, architecture: 'x86_64', creationDate: '2024-09-27T02:37:44.000Z', rootDeviceName: '/dev/sda1', rootVolumeSizeGb: 8 }),
  image({ name: 'ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250115', description: 'Canonical, Ubuntu, 24.04, amd64 noble image', ownerId: OWNERS.canonical, architecture: 'x86_64', creationDate: '2025-01-15T08:11:52.000Z', rootDeviceName: '/dev/sda1', rootVolumeSizeGb: 8 }),
  image({ name: 'ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-20250115', description: 'Canonical, Ubuntu, 24.04, arm64 noble image', ownerId: OWNERS.canonical, architecture: 'arm64', creationDate: '2025-01-15T08:12:30.000Z', rootDeviceName: '/dev/sda1', rootVolumeSizeGb: 8 }),
  image({ name: 'al2023-ami-2023.6.20250115.0-kernel-6.1-x86_64', description: 'Amazon Linux 2023 AMI 2023.6.20250115.0 x86_64 HVM kernel-6.1', ownerId: OWNERS.amazon, ownerAlias: 'amazon', architecture: 'x86_64', creationDate: '2025-01-14T22:19:43.000Z', rootDeviceName: '/dev/xvda', rootVolumeSizeGb: 8, imdsSupport: 'v2.0' }),
];

/**
 * A small, realistic set of instance types (anything else is `InvalidParameterValue`), with the
 * hypervisor each runs on: only Nitro types serve `GetConsoleOutput` with `Latest` (API reference,
 * GetConsoleOutput: "This option is supported on instance types that use the Nitro hypervisor";
 * DescribeInstanceTypes `hypervisor`: `nitro | xen`).
 */
export const INSTANCE_TYPES: Readonly<Record<string, { architecture: Architecture; vcpus: number; hypervisor: 'nitro' | 'xen' }>> = {
  'm1.small': { architecture: 'x86_64', vcpus: 1, hypervisor: 'xen' }, // RunInstances' documented default
  't2.micro': { architecture: 'x86_64', vcpus: 1, hypervisor: 'xen' },
  't3.micro': { architecture: 'x86_64', vcpus: 2, hypervisor: 'nitro' },
  't3.small': { architecture: 'x86_64', vcpus: 2, hypervisor: 'nitro' },
  't3.medium': { architecture: 'x86_64', vcpus: 2, hypervisor: 'nitro' },
  't3.large': { architecture: 'x86_64', vcpus: 2, hypervisor: 'nitro' },
  't3.xlarge': { architecture: 'x86_64', vcpus: 4, hypervisor: 'nitro' },
  't3a.medium': { architecture: 'x86_64', vcpus: 2, hypervisor: 'nitro' },
  'm5.large': { architecture: 'x86_64', vcpus: 2, hypervisor: 'nitro' },
  'm5.xlarge': { architecture: 'x86_64', vcpus: 4, hypervisor: 'nitro' },
  'm6i.large': { architecture: 'x86_64', vcpus: 2, hypervisor: 'nitro' },
  'm6i.xlarge': { architecture: 'x86_64', vcpus: 4, hypervisor: 'nitro' },
  'm6i.2xlarge': { architecture: 'x86_64', vcpus: 8, hypervisor: 'nitro' },
  'c6i.large': { architecture: 'x86_64', vcpus: 2, hypervisor: 'nitro' },
  'r6i.large': { architecture: 'x86_64', vcpus: 2, hypervisor: 'nitro' },
  't4g.small': { architecture: 'arm64', vcpus: 2, hypervisor: 'nitro' },
  't4g.medium': { architecture: 'arm64', vcpus: 2, hypervisor: 'nitro' },
  'm6g.large': { architecture: 'arm64', vcpus: 2, hypervisor: 'nitro' },
  'm7g.large': { architecture: 'arm64', vcpus: 2, hypervisor: 'nitro' },
  'c7g.large': { architecture: 'arm64', vcpus: 2, hypervisor: 'nitro' },
};

/**
 * Regions DescribeRegions lists (with `AllRegions`, the opt-in ones the account has not enabled
 * too). The fake's own region is always listed as enabled.
 */
export const REGIONS: Readonly<Record<string, 'opt-in-not-required' | 'not-opted-in'>> = {
  'us-east-1': 'opt-in-not-required',
  'us-east-2': 'opt-in-not-required',
  'us-west-1': 'opt-in-not-required',
  'us-west-2': 'opt-in-not-required',
  'eu-west-1': 'opt-in-not-required',
  'eu-west-2': 'opt-in-not-required',
  'eu-central-1': 'opt-in-not-required',
  'ap-south-1': 'opt-in-not-required',
  'ap-northeast-1': 'opt-in-not-required',
  'af-south-1': 'not-opted-in',
  'me-south-1': 'not-opted-in',
  'ap-east-1': 'not-opted-in',
};

/** EC2 instance state codes (the low byte of `instanceState/code`). */
export const STATE_CODES = {
  pending: 0,
  running: 16,
  'shutting-down': 32,
  terminated: 48,
  stopping: 64,
  stopped: 80,
} as const;
export type InstanceStateName = keyof typeof STATE_CODES;

/** How long the simulated instance lifecycle takes (ms of the fake's clock). */
export interface Ec2Timings {
  /** pending → running. Default 1 000 (real EC2: ~10–30 s). `faults.slowBoot()` adds to it. */
  pendingMs: number;
  /** shutting-down → terminated. Default 500. */
  shuttingDownMs: number;
  /** stopping → stopped (guest shutdown with behaviour `stop`). Default 500. */
  stoppingMs: number;
  /** Status checks report `initializing` this long after running, then `ok`. Default 1 000. */
  statusChecksMs: number;
  /** Terminated instances stay visible this long (real EC2: about an hour). Default 3 600 000. */
  terminatedVisibleMs: number;
  /**
   * Eventual consistency: a new instance id is unknown to DescribeInstances-by-id, CreateTags and
   * TerminateInstances for this long (real EC2: usually under a second, sometimes more). Default 0.
   */
  consistencyDelayMs: number;
}

export const DEFAULT_TIMINGS: Ec2Timings = {
  pendingMs: 1_000,
  shuttingDownMs: 500,
  stoppingMs: 500,
  statusChecksMs: 1_000,
  terminatedVisibleMs: 3_600_000,
  consistencyDelayMs: 0,
};

/** EC2 user-data limit, on the raw (decoded) bytes. */
export const USER_DATA_LIMIT = 16_384;
/** Rules per security group and direction (the default quota). */
export const RULES_PER_GROUP = 60;
/** Tags per resource. */
export const TAGS_PER_RESOURCE = 50;
