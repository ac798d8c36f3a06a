/**
 * DropletCluster's options, declared once (see src/config/schema.ts). TypeScript checks that
 * this table and `DropletClusterOptions` have the same keys. No SDK is imported here.
 */
import { CLUSTER_OPTIONS, optionTable, VM_OPTIONS } from '../../src/config/option-table';
import type { DropletClusterOptions } from './index';

export const DIGITALOCEAN_OPTIONS = optionTable<DropletClusterOptions>()({
  ...CLUSTER_OPTIONS,
  ...VM_OPTIONS,
  token: {
    type: 'string',
    fileAndEnv: false,
    secret: true,
    description: 'API token (code only; default: DIGITALOCEAN_TOKEN, then DIGITALOCEAN_ACCESS_TOKEN).',
  },
  endpoint: { type: 'string', flag: 'endpoint', description: 'API base URL (default https://api.digitalocean.com/v2).' },
  client: { type: 'json', fileAndEnv: false, description: 'A ready-made dots-wrapper client (code only).' },
  region: { type: 'string', flag: 'region', description: "Region slug (default nyc3; with vpc and no region, the VPC's region)." },
  size: { type: 'string', flag: 'size', description: 'Droplet size slug for scheduler and workers (default s-2vcpu-4gb).' },
  schedulerSize: { type: 'string', flag: 'scheduler-size', description: 'Scheduler Droplet size (default size).' },
  workerSize: { type: 'string', flag: 'worker-size', description: 'Worker Droplet size (default size).' },
  image: {
    type: 'string',
    alsoAccepts: ['number'],
    flag: 'image',
    description: 'Droplet image: a slug or a snapshot / custom image id (default ubuntu-24-04-x64).',
  },
  vpc: { type: 'string', flag: 'vpc', description: "VPC uuid (default: the region's default VPC)." },
  sshKeys: { type: 'string[]', alsoAccepts: ['number'], description: 'SSH key ids or fingerprints installed for root.' },
  monitoring: { type: 'boolean', description: "Install DigitalOcean's monitoring agent (default false)." },
  tags: { type: 'string[]', description: 'Extra tags for every Droplet.' },
  activeTimeoutMs: { type: 'integer', description: 'Milliseconds a Droplet may take to become active (default 300000).' },
  pollIntervalMs: { type: 'integer', description: 'First interval between polls of a new Droplet, in milliseconds (default 2000).' },
  requestTimeoutMs: { type: 'integer', description: 'Milliseconds for one API request (default 30000).' },
  consoleOutput: { type: 'json', fileAndEnv: false, description: "Fetches a Droplet's console output for error messages (code only)." },
});
