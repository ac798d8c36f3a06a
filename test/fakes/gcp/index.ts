/** The GCP Compute Engine fake. See README.md in this folder. */
export { FakeGcp, UNLIMITED_QUOTA, type FakeGcpOptions, type GcpClientOptions } from './fake-gcp';
export type { NatSpec, RouterSpec } from './routers';
export { translateFirewalls, parsePortRange, type FirewallWire, type FirewallSubject } from './firewalls';
export { parseFilter, matches as filterMatches, listResponse } from './filter';
export { gcpErrorShape } from './errors';
export { WAIT_MAX_MS, type OperationError } from './operations';
export { METADATA_VALUE_MAX, METADATA_TOTAL_MAX, BULK_INSERT_MAX, SSD_QUOTA_TYPES } from './instances';
export { DEFAULT_TIMINGS, type GcpTimings, type GcpQuotas } from './world';
