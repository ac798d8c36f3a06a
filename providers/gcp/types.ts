/**
 * The parts of Compute Engine v1 resources the provider sends or reads, as they travel in
 * Compute's REST JSON (https://cloud.google.com/compute/docs/reference/rest/v1). Only the fields
 * used here are declared; Compute sends more, which pass through untyped. int64 fields arrive as
 * strings and may be sent as numbers (proto3 JSON accepts both), hence `number | string`.
 */

/** `Operation`: what every mutating call answers with. */
export interface ComputeOperation {
  name?: string;
  /** `PENDING`, `RUNNING` or `DONE`. */
  status?: string;
  operationType?: string;
  targetLink?: string;
  zone?: string;
  selfLink?: string;
  httpErrorStatusCode?: number;
  error?: { errors?: { code?: string; message?: string }[] };
}

export interface AccessConfig {
  name?: string;
  type?: string;
  natIP?: string;
}

export interface NetworkInterface {
  network?: string;
  subnetwork?: string;
  networkIP?: string;
  accessConfigs?: AccessConfig[];
}

export interface AttachedDisk {
  boot?: boolean;
  autoDelete?: boolean;
  initializeParams?: {
    sourceImage?: string;
    diskSizeGb?: number | string;
    diskType?: string;
    labels?: Record<string, string>;
  };
}

export interface Scheduling {
  onHostMaintenance?: string;
  automaticRestart?: boolean;
  provisioningModel?: string;
  maxRunDuration?: { seconds?: number | string; nanos?: number };
  /** The other form of a time limit (an RFC 3339 time); not sent by dask-cloud. */
  terminationTime?: string;
  instanceTerminationAction?: string;
}

/** `InstanceProperties`: what insert's instance and bulkInsert's `instanceProperties` share. */
export interface InstanceProperties {
  machineType?: string;
  description?: string;
  labels?: Record<string, string>;
  tags?: { items?: string[] };
  metadata?: { items?: { key?: string; value?: string }[] };
  disks?: AttachedDisk[];
  networkInterfaces?: NetworkInterface[];
  scheduling?: Scheduling;
  guestAccelerators?: { acceleratorType?: string; acceleratorCount?: number }[];
  serviceAccounts?: { email?: string; scopes?: string[] }[];
}

export interface Instance extends InstanceProperties {
  id?: string;
  name?: string;
  /** A URL ending in `/zones/<zone>`. */
  zone?: string;
  status?: string;
  creationTimestamp?: string;
  selfLink?: string;
}

/** `BulkInsertInstanceResource`: the body of `instances.bulkInsert`. */
export interface BulkInsertInstanceResource {
  count?: number | string;
  minCount?: number | string;
  namePattern?: string;
  perInstanceProperties?: Record<string, { name?: string }>;
  instanceProperties?: InstanceProperties;
}

/** One entry of an aggregated list: the instances of one zone. */
export interface InstancesScopedList {
  instances?: Instance[];
  warning?: { code?: string; message?: string };
}

export interface Firewall {
  name?: string;
  description?: string;
  network?: string;
  direction?: string;
  priority?: number;
  sourceTags?: string[];
  sourceRanges?: string[];
  targetTags?: string[];
  allowed?: { IPProtocol?: string; ports?: string[] }[];
  creationTimestamp?: string;
}

export interface Zone {
  name?: string;
  /** `UP` or `DOWN`. */
  status?: string;
}

export interface Project {
  name?: string;
}

export interface Region {
  name?: string;
  quotas?: { metric?: string; limit?: number; usage?: number }[];
}

export interface Image {
  name?: string;
  selfLink?: string;
  family?: string;
}

export interface Network {
  name?: string;
  /** URLs of the network's subnetworks, every region. */
  subnetworks?: string[];
}

export interface Subnetwork {
  name?: string;
  network?: string;
  ipCidrRange?: string;
}

export interface MachineType {
  name?: string;
  guestCpus?: number;
}

/** `RouterNat`: one Cloud NAT config of a Cloud Router. */
export interface RouterNat {
  name?: string;
  sourceSubnetworkIpRangesToNat?: string;
  subnetworks?: { name?: string; sourceIpRangesToNat?: string[] }[];
}

export interface Router {
  name?: string;
  network?: string;
  nats?: RouterNat[];
}

export interface SerialPortOutput {
  contents?: string;
  start?: string;
  next?: string;
}
