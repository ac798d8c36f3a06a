/**
 * What the DigitalOcean fake offers: regions, sizes and public images, in the API's own JSON
 * shapes. A small, realistic subset; tests and providers only need the common slugs.
 */

export interface RegionInfo {
  name: string;
  slug: string;
  features: string[];
  available: boolean;
  sizes: string[];
}

export interface SizeInfo {
  slug: string;
  memory: number;
  vcpus: number;
  disk: number;
  transfer: number;
  price_monthly: number;
  price_hourly: number;
  regions: string[];
  available: boolean;
  description: string;
}

export interface ImageInfo {
  id: number;
  name: string;
  distribution: string;
  slug: string | null;
  public: boolean;
  regions: string[];
  created_at: string;
  min_disk_size: number;
  size_gigabytes: number;
  description: string;
  type: 'base' | 'snapshot' | 'backup' | 'custom' | 'admin';
  status: 'available';
  tags: string[];
  error_message: string;
}

const REGIONS: [slug: string, name: string][] = [
  ['nyc1', 'New York 1'],
  ['nyc3', 'New York 3'],
  ['sfo3', 'San Francisco 3'],
  ['ams3', 'Amsterdam 3'],
  ['fra1', 'Frankfurt 1'],
  ['lon1', 'London 1'],
  ['sgp1', 'Singapore 1'],
  ['tor1', 'Toronto 1'],
];

const SIZES: [slug: string, memory: number, vcpus: number, disk: number, monthly: number, description: string][] = [
  ['s-1vcpu-1gb', 1024, 1, 25, 6, 'Basic'],
  ['s-1vcpu-2gb', 2048, 1, 50, 12, 'Basic'],
  ['s-2vcpu-2gb', 2048, 2, 60, 18, 'Basic'],
  ['s-2vcpu-4gb', 4096, 2, 80, 24, 'Basic'],
  ['s-4vcpu-8gb', 8192, 4, 160, 48, 'Basic'],
  ['c-2', 4096, 2, 25, 42, 'CPU-Optimized'],
  ['c-4', 8192, 4, 50, 84, 'CPU-Optimized'],
  ['m-2vcpu-16gb', 16384, 2, 50, 84, 'Memory-Optimized'],
];

const IMAGES: [id: number, slug: string, distribution: string, name: string][] = [
  [139_000_001, 'debian-12-x64', 'Debian', '12 x64'],
  [139_000_002, 'ubuntu-24-04-x64', 'Ubuntu', '24.04 (LTS) x64'],
  [139_000_003, 'ubuntu-22-04-x64', 'Ubuntu', '22.04 (LTS) x64'],
  [139_000_004, 'docker-20-04', 'Ubuntu', 'Docker on Ubuntu 22.04'],
];

export class Catalog {
  readonly regions: RegionInfo[];
  readonly sizes: SizeInfo[];
  readonly images: ImageInfo[];

  constructor() {
    const regionSlugs = REGIONS.map(([slug]) => slug);
    const sizeSlugs = SIZES.map(([slug]) => slug);
    this.regions = REGIONS.map(([slug, name]) => ({
      name,
      slug,
      features: ['backups', 'ipv6', 'metadata', 'install_agent', 'storage', 'image_transfer'],
      available: true,
      sizes: [...sizeSlugs],
    }));
    this.sizes = SIZES.map(([slug, memory, vcpus, disk, monthly, description]) => ({
      slug,
      memory,
      vcpus,
      disk,
      transfer: memory >= 4096 ? 4 : 2,
      price_monthly: monthly,
      price_hourly: Math.round((monthly / 672) * 100_000) / 100_000,
      regions: [...regionSlugs],
      available: true,
      description,
    }));
    this.images = IMAGES.map(([id, slug, distribution, name]) => ({
      id,
      name,
      distribution,
      slug,
      public: true,
      regions: [...regionSlugs],
      created_at: '2024-06-01T00:00:00Z',
      min_disk_size: 15,
      size_gigabytes: 2.5,
      description: `${distribution} ${name}`,
      type: 'base',
      status: 'available',
      tags: [],
      error_message: '',
    }));
  }

  region(slug: string): RegionInfo | undefined {
    return this.regions.find((r) => r.slug === slug);
  }

  size(slug: string): SizeInfo | undefined {
    return this.sizes.find((s) => s.slug === slug);
  }

  /** By slug or numeric id (the API accepts both; a numeric string is not an id). */
  image(ref: string | number): ImageInfo | undefined {
    return typeof ref === 'number' ? this.images.find((i) => i.id === ref) : this.images.find((i) => i.slug === ref);
  }
}
