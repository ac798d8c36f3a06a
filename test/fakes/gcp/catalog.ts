/**
 * The fixed world of the GCP fake: zones, machine types, accelerator types, public images, the
 * `default` network, plus URL and timestamp helpers in Compute's formats.
 */
import { randomBytes } from 'node:crypto';

/** Compute resource URLs always carry this prefix on the wire (selfLink, zone, targetLink ...). */
export const API = 'https://www.googleapis.com/compute/v1';

export const ZONES = [
  'us-central1-a', 'us-central1-b', 'us-central1-c', 'us-central1-f',
  'us-east1-b', 'us-east1-c', 'us-east1-d',
  'us-west1-a', 'us-west1-b',
  'europe-west1-b', 'europe-west1-c', 'europe-west1-d',
  'europe-west4-a', 'europe-west4-b',
  'asia-east1-a', 'asia-southeast1-a',
];

export function regionOf(zone: string): string {
  return zone.replace(/-[a-z]$/, '');
}

export const REGIONS = [...new Set(ZONES.map(regionOf))];

export interface MachineType {
  guestCpus: number;
  memoryMb: number;
  /** Built-in GPUs (A2/G2) — no separate guestAccelerators needed. */
  builtInGpus?: number;
}

const MACHINE_TYPES: Record<string, MachineType> = {
  'e2-micro': { guestCpus: 2, memoryMb: 1024 },
  'e2-small': { guestCpus: 2, memoryMb: 2048 },
  'e2-medium': { guestCpus: 2, memoryMb: 4096 },
  'g2-standard-4': { guestCpus: 4, memoryMb: 16384, builtInGpus: 1 },
  'a2-highgpu-1g': { guestCpus: 12, memoryMb: 87040, builtInGpus: 1 },
};
for (const n of [2, 4, 8, 16, 32]) {
  MACHINE_TYPES[`e2-standard-${n}`] = { guestCpus: n, memoryMb: n * 4096 };
  MACHINE_TYPES[`e2-highmem-${n}`] = { guestCpus: n, memoryMb: n * 8192 };
  MACHINE_TYPES[`e2-highcpu-${n}`] = { guestCpus: n, memoryMb: n * 1024 };
  MACHINE_TYPES[`n2-standard-${n}`] = { guestCpus: n, memoryMb: n * 4096 };
  MACHINE_TYPES[`n2d-standard-${n}`] = { guestCpus: n, memoryMb: n * 4096 };
  MACHINE_TYPES[`c2-standard-${n}`] = { guestCpus: n, memoryMb: n * 4096 };
}
for (const n of [1, 2, 4, 8, 16, 32]) MACHINE_TYPES[`n1-standard-${n}`] = { guestCpus: n, memoryMb: n * 3840 };
for (const n of [1, 2, 4, 8]) MACHINE_TYPES[`t2d-standard-${n}`] = { guestCpus: n, memoryMb: n * 4096 };

/** Known machine type (also custom types: `custom-4-16384`, `e2-custom-2-8192`). */
export function machineType(name: string): MachineType | undefined {
  const known = MACHINE_TYPES[name];
  if (known) return known;
  const m = /^(?:[a-z0-9]+-)?custom-(\d+)-(\d+)(?:-ext)?$/.exec(name);
  return m ? { guestCpus: Number(m[1]), memoryMb: Number(m[2]) } : undefined;
}

export const ACCELERATOR_TYPES = ['nvidia-tesla-t4', 'nvidia-l4', 'nvidia-tesla-v100', 'nvidia-tesla-p100', 'nvidia-tesla-a100'];

// ---------------------------------------------------------------------------------------------
// Images

export interface ImageInfo {
  project: string;
  name: string;
  family: string;
  architecture: 'X86_64' | 'ARM64';
  diskSizeGb: number;
  description: string;
  license: string;
}

export const IMAGES: ImageInfo[] = [
  { project: 'debian-cloud', name: 'debian-12-bookworm-v20250113', family: 'debian-12', architecture: 'X86_64', diskSizeGb: 10, description: 'Debian, Debian GNU/Linux, 12 (bookworm), amd64 built on 20250113', license: 'debian-12-bookworm' },
  { project: 'debian-cloud', name: 'debian-12-bookworm-arm64-v20250113', family: 'debian-12-arm64', architecture: 'ARM64', diskSizeGb: 10, description: 'Debian, Debian GNU/Linux, 12 (bookworm), arm64 built on 20250113', license: 'debian-12-bookworm' },
  { project: 'debian-cloud', name: 'debian-11-bullseye-v20250113', family: 'debian-11', architecture: 'X86_64', diskSizeGb: 10, description: 'Debian, Debian GNU/Linux, 11 (bullseye), amd64 built on 20250113', license: 'debian-11-bullseye' },
  { project: 'ubuntu-os-cloud', name: 'ubuntu-2204-jammy-v20250112', family: 'ubuntu-2204-lts', architecture: 'X86_64', diskSizeGb: 10, description: 'Canonical, Ubuntu, 22.04 LTS, amd64 jammy image built on 2025-01-12', license: 'ubuntu-2204-lts' },
  { project: 'ubuntu-os-cloud', name: 'ubuntu-2404-noble-amd64-v20250117', family: 'ubuntu-2404-lts-amd64', architecture: 'X86_64', diskSizeGb: 10, description: 'Canonical, Ubuntu, 24.04 LTS Minimal, amd64 noble image built on 2025-01-17', license: 'ubuntu-2404-lts' },
  { project: 'cos-cloud', name: 'cos-stable-117-18613-75-37', family: 'cos-stable', architecture: 'X86_64', diskSizeGb: 10, description: 'Google, Container-Optimized OS, 117-18613.75.37 LTS', license: 'cos-pcid' },
];

/** Image by `projects/P/global/images/family/F`, `.../images/NAME`, `global/images/...` (own project) or a full URL. */
export function resolveImage(ref: string, ownProject: string): { image?: ImageInfo; resource: string } {
  const path = stripApi(ref);
  const m = /^(?:projects\/([^/]+)\/)?global\/images\/(?:family\/([^/]+)|([^/]+))$/.exec(path);
  if (!m) return { resource: path };
  const project = m[1] ?? ownProject;
  const resource = `projects/${project}/global/images/${m[2] ? `family/${m[2]}` : m[3]}`;
  const image = IMAGES.find((i) => i.project === project && (m[2] ? i.family === m[2] : i.name === m[3]));
  return { image, resource };
}

export function imageWire(i: ImageInfo, ids: { imageId(name: string): string }): Record<string, unknown> {
  return {
    kind: 'compute#image',
    id: ids.imageId(i.name),
    creationTimestamp: '2025-01-13T04:12:31.000-08:00',
    name: i.name,
    description: i.description,
    sourceType: 'RAW',
    status: 'READY',
    archiveSizeBytes: '1234509824',
    diskSizeGb: String(i.diskSizeGb),
    licenses: [`${API}/projects/${i.project}/global/licenses/${i.license}`],
    family: i.family,
    selfLink: `${API}/projects/${i.project}/global/images/${i.name}`,
    labelFingerprint: '42WmSpB8rSM=',
    guestOsFeatures: [{ type: 'UEFI_COMPATIBLE' }, { type: 'VIRTIO_SCSI_MULTIQUEUE' }, { type: 'GVNIC' }],
    storageLocations: ['eu', 'asia', 'us'],
    architecture: i.architecture,
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** `https://www.googleapis.com/compute/v1/projects/...` → `projects/...` (also compute.googleapis.com). */
export function stripApi(ref: string): string {
  return ref.replace(/^https:\/\/(?:www|compute)\.googleapis\.com\/compute\/(?:v1|beta|alpha)\//, '');
}

/** Parses a zonal sub-resource reference: `zones/Z/machineTypes/T`, `projects/P/zones/Z/...`, full URL. */
export function parseZonal(ref: string, collection: string): { project?: string; zone: string; name: string } | undefined {
  const m = new RegExp(`^(?:projects/([^/]+)/)?zones/([^/]+)/${collection}/([^/]+)$`).exec(stripApi(ref));
  return m ? { project: m[1], zone: m[2], name: m[3] } : undefined;
}

/** Compute timestamps: RFC 3339 in Pacific time with the offset, e.g. `2024-01-10T03:04:05.678-08:00`. */
export function timestamp(ms: number): string {
  return new Date(ms - 8 * 3_600_000).toISOString().replace('Z', '-08:00');
}

/** Fingerprints are 8 random bytes, base64. */
export function fingerprint(): string {
  return randomBytes(8).toString('base64');
}

/** RFC 1035 names (instances, firewalls, disks). */
export const NAME_RE = /^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
