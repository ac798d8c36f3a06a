/**
 * EC2Cluster's options, declared once (see src/config/schema.ts). TypeScript checks that this
 * table and `EC2ClusterOptions` have the same keys. No SDK is imported here: the types are erased.
 */
import { CLUSTER_OPTIONS, optionTable, VM_OPTIONS } from '../../src/config/option-table';
import type { EC2ClusterOptions } from './options';

export const EC2_OPTIONS = optionTable<EC2ClusterOptions>()({
  ...CLUSTER_OPTIONS,
  ...VM_OPTIONS,
  region: { type: 'string', flag: 'region', description: 'AWS region, e.g. eu-west-1 (default: AWS_REGION, then AWS_DEFAULT_REGION).' },
  availabilityZone: { type: 'string', flag: 'availability-zone', description: "Availability zone for every instance (default: the subnet's, or EC2's pick)." },
  ami: { type: 'string', flag: 'ami', description: 'AMI id for every instance (default: the newest official Debian 12 image).' },
  instanceType: { type: 'string', flag: 'instance-type', description: 'Instance type of both roles unless the role-specific option is given.' },
  schedulerInstanceType: { type: 'string', flag: 'scheduler-instance-type', description: 'Scheduler instance type (default instanceType, else t3.medium).' },
  workerInstanceType: { type: 'string', flag: 'worker-instance-type', description: 'Worker instance type (default instanceType, else m6i.large).' },
  vpc: { type: 'string', flag: 'vpc', description: "VPC id (default: the region's default VPC, or the VPC of subnetId)." },
  subnetId: { type: 'string', flag: 'subnet-id', description: 'Subnet id (default: a default subnet of the VPC).' },
  securityGroups: { type: 'string[]', description: 'Security group ids to use, unchanged, instead of the per-cluster group.' },
  keyName: { type: 'string', flag: 'key-name', description: 'EC2 key pair name for SSH access (default: none).' },
  iamInstanceProfile: { type: 'string', flag: 'iam-instance-profile', description: 'IAM instance profile, by name or ARN (default: none).' },
  rootVolumeSizeGb: { type: 'integer', flag: 'root-volume-size-gb', description: 'Root volume size in GiB (default 20).' },
  spot: {
    type: 'json',
    flag: 'spot',
    description: 'Workers as Spot instances: true, or {"maxPrice": "0.05"} (USD per hour) (default false).',
    jsonSchema: {
      anyOf: [{ type: 'boolean' }, { type: 'object', properties: { maxPrice: { type: 'string' } }, additionalProperties: false }],
    },
  },
  tags: { type: 'json', description: 'Extra tags on every instance, volume and security group.', jsonSchema: { type: 'object', additionalProperties: { type: 'string' } } },
  monitoring: { type: 'boolean', description: 'CloudWatch detailed (1-minute) monitoring (default false).' },
  endpoint: { type: 'string', flag: 'endpoint', description: "EC2 endpoint URL (default: the region's)." },
  client: { type: 'json', fileAndEnv: false, description: 'A ready-made EC2Client (code only).' },
  credentials: { type: 'json', fileAndEnv: false, secret: true, description: "AWS credentials (code only; default: the AWS SDK's provider chain)." },
  maxAttempts: { type: 'integer', description: 'Attempts per API request on throttling and transient errors (default 8).' },
  requestTimeoutMs: { type: 'integer', description: 'Milliseconds for one API request attempt (default 60000).' },
  launchRate: {
    type: 'json',
    description: 'RunInstances launch budget: {"burst": 1000, "perSecond": 2} unless AWS raised yours.',
    jsonSchema: {
      type: 'object',
      properties: { burst: { type: 'integer' }, perSecond: { type: 'number' } },
      required: ['burst', 'perSecond'],
      additionalProperties: false,
    },
  },
});
