/**
 * GCPCluster's options, declared once (see src/config/schema.ts). TypeScript checks that this
 * table and `GCPClusterOptions` have the same keys. Nothing is imported at run time: the types are erased.
 */
import { CLUSTER_OPTIONS, optionTable, VM_OPTIONS, withoutKeys } from '../../src/config/option-table';
import type { GCPClusterOptions } from './options';

export const GCP_OPTIONS = optionTable<GCPClusterOptions>()({
  ...CLUSTER_OPTIONS,
  // GCP attaches accelerators itself: its `gpu` is a type and a count, not the Docker switch.
  ...withoutKeys(VM_OPTIONS, 'gpu'),
  projectId: {
    type: 'string',
    flag: 'project',
    description: 'Project the VMs are billed to (default: GOOGLE_CLOUD_PROJECT, GCLOUD_PROJECT, credentials, then gcloud configuration).',
  },
  zone: { type: 'string', flag: 'zone', description: 'Zone of every VM (default us-central1-a).' },
  networkProjectId: { type: 'string', flag: 'network-project', description: 'Project that owns the network, for a Shared VPC (default projectId).' },
  endpoint: { type: 'string', flag: 'endpoint', description: "The Compute endpoint URL, e.g. http://127.0.0.1:8080 (default: Google's)." },
  authClient: { type: 'json', fileAndEnv: false, secret: true, description: 'Credentials, e.g. a google-auth-library client (code only; default: Application Default Credentials).' },
  clientOptions: {
    type: 'json',
    fileAndEnv: false,
    description: 'How requests reach Compute and are signed: apiEndpoint, port, protocol, authClient, keyFilename, keyFile, credentials, scopes, projectId (code only).',
  },
  maxConcurrentRequests: { type: 'integer', description: 'API requests in flight at once (default 32).' },
  requestTimeoutMs: { type: 'integer', description: 'Milliseconds for one API request (default 60000).' },
  operationTimeoutMs: { type: 'integer', description: 'Milliseconds for one operation (insert, delete, firewall) to finish (default 600000).' },
  network: { type: 'string', flag: 'network', description: 'VPC network (default default): a name, or projects/P/global/networks/N.' },
  subnetwork: { type: 'string', flag: 'subnetwork', description: "Subnetwork in the zone's region (default: the network's only one there)." },
  machineType: { type: 'string', flag: 'machine-type', description: 'Machine type of every VM unless the role-specific option is set.' },
  schedulerMachineType: { type: 'string', flag: 'scheduler-machine-type', description: 'Scheduler machine type (default machineType, else e2-standard-2).' },
  workerMachineType: { type: 'string', flag: 'worker-machine-type', description: 'Worker machine type (default machineType, else e2-standard-4).' },
  sourceImage: { type: 'string', flag: 'source-image', description: 'Boot image: projects/P/global/images/family/F or projects/P/global/images/NAME (default Ubuntu 24.04 LTS).' },
  diskSizeGb: { type: 'integer', flag: 'disk-size-gb', description: 'Boot disk size in GB (default 50).' },
  diskType: { type: 'string', flag: 'disk-type', description: 'Boot disk type (default pd-balanced).' },
  gpu: {
    type: 'json',
    // gcloud's name for it; `--gpu` is the Docker switch (a boolean) on the other clouds.
    flag: 'accelerator',
    description: 'GPUs per VM, e.g. {"type": "nvidia-tesla-t4", "count": 1}.',
    jsonSchema: {
      type: 'object',
      properties: { type: { type: 'string', description: 'Accelerator type, e.g. nvidia-tesla-t4.' }, count: { type: 'integer', description: 'GPUs per VM (default 1).' } },
      required: ['type'],
      additionalProperties: false,
    },
  },
  preemptible: { type: 'boolean', flag: 'preemptible', description: 'Preemptible VMs, created as Spot VMs (default false).' },
  spot: { type: 'boolean', flag: 'spot', description: 'Spot VMs, deleted when preempted (default false).' },
  serviceAccount: { type: 'string', flag: 'service-account', description: "Service account the VMs run as: 'default' or an email (default: none)." },
  scopes: { type: 'string[]', description: 'OAuth scopes of serviceAccount (default cloud-platform).' },
  labels: { type: 'json', description: 'Extra labels on every VM and boot disk.', jsonSchema: { type: 'object', additionalProperties: { type: 'string' } } },
  maxRunDuration: {
    type: 'string',
    alsoAccepts: ['number', 'false'],
    flag: 'max-run-duration',
    description: "Compute deletes each VM this long after it started: seconds, '8h', '90m', '2d', or false for none (default expiresAfterHours).",
  },
  onHostMaintenance: { type: 'string', enum: ['MIGRATE', 'TERMINATE'], description: 'Host maintenance policy (default MIGRATE; TERMINATE with GPUs or spot VMs).' },
});
