/**
 * GCPCluster options: their types, defaults, validation, and where the project id comes from.
 * Everything here runs before the first API call, so a typo fails in the constructor.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ValidationError } from '../../src/errors';
import { closestName } from '../../src/config/schema';
import { LABELS, type VMClusterOptions } from '../../src/cluster/vm';
import { checkInteger, checkTimerMs } from '../../src/config/bounds';

/**
 * What signs Compute requests: any google-auth-library client (`OAuth2Client`, `JWT`,
 * `GoogleAuth`, `Impersonated`, ...), or anything else that makes the headers of a request.
 */
export interface GcpAuthClient {
  /** The headers (`Authorization`, and a quota project's) for a request to `url`. */
  getRequestHeaders(url?: string): Promise<Headers | Record<string, string>>;
}

/**
 * How requests reach Compute and how they are signed. `endpoint` and `authClient` (the
 * connection options) set the same fields and take precedence. Unknown keys are refused.
 */
export interface GcpClientOptions {
  /** Host of the Compute API (default `compute.googleapis.com`). */
  apiEndpoint?: string;
  /** Its port (default that of `protocol`). */
  port?: number;
  /** `https` (default) or `http` (local emulators only). */
  protocol?: 'http' | 'https';
  /** Signs every request. Default: a google-auth-library client from the options below, else Application Default Credentials. */
  authClient?: GcpAuthClient;
  /** A service account key file (`.json`, or `.p12` / `.pem`) for google-auth-library. */
  keyFilename?: string;
  /** Same as `keyFilename` (google-auth-library's older name). */
  keyFile?: string;
  /** A key file's contents, e.g. `{ client_email, private_key }`, for google-auth-library. */
  credentials?: Record<string, unknown>;
  /** OAuth scopes of the token google-auth-library gets (default Compute's: `compute` and `cloud-platform`). Not those of the VMs (see `scopes`). */
  scopes?: string | string[];
  /** The project google-auth-library reports; set from `projectId`. */
  projectId?: string;
}

/** The keys `clientOptions` may have. */
const CLIENT_OPTION_KEYS: readonly (keyof GcpClientOptions)[] = ['apiEndpoint', 'port', 'protocol', 'authClient', 'keyFilename', 'keyFile', 'credentials', 'scopes', 'projectId'];

/** Where the Compute API lives, when not Google's own endpoint (emulators, Private Service Connect, tests). */
export interface GcpEndpoint {
  /** Host name, e.g. `compute.googleapis.com` or `127.0.0.1`. */
  apiEndpoint: string;
  port?: number;
  protocol?: 'http' | 'https';
}

/** How the provider reaches the Compute API: shared by `GCPCluster` and `GCPCluster.cleanup`. */
export interface GcpConnectionOptions {
  /**
   * The project VMs are billed to. Default: `GOOGLE_CLOUD_PROJECT`, then `GCLOUD_PROJECT`, then
   * `authClient.projectId`, then Application Default Credentials (the `project_id` of the key file
   * in `GOOGLE_APPLICATION_CREDENTIALS`, the quota project of gcloud's ADC file), then gcloud's
   * active configuration. The metadata server is never asked: set it explicitly on a GCE VM.
   */
  projectId?: string;
  /** Zone of every VM (default `us-central1-a`). */
  zone?: string;
  /** Project that owns the network, for a Shared VPC (default `projectId`). Firewall rules are created there. */
  networkProjectId?: string;
  /** The Compute endpoint: a URL such as `http://127.0.0.1:8080`, or its parts. Default: Google's. */
  endpoint?: string | GcpEndpoint;
  /** Credentials, e.g. a google-auth-library client. Default: Application Default Credentials. */
  authClient?: GcpAuthClient;
  /** How requests reach Compute and are signed: key options for google-auth-library, the endpoint's parts (`endpoint` and `authClient` take precedence). */
  clientOptions?: GcpClientOptions;
  /** API requests in flight at once (default 32): deleting a thousand VMs is a thousand calls, one per VM. */
  maxConcurrentRequests?: number;
  /** Deadline of one API request (default 60 s). */
  requestTimeoutMs?: number;
  /** Deadline for one operation (insert, delete, firewall) to finish (default 10 min). */
  operationTimeoutMs?: number;
}

/** GPUs attached to every VM of the cluster (scheduler included, as dask-cloudprovider does). */
export interface GcpGpu {
  /** Accelerator type, e.g. `nvidia-tesla-t4`, `nvidia-l4`. */
  type: string;
  /** GPUs per VM (default 1). */
  count?: number;
}

/** GCPCluster's options; each is also declared in ./schema.ts (checked against this interface), which makes unknown keys an error. */
export interface GCPClusterOptions extends Omit<VMClusterOptions, 'gpu'>, GcpConnectionOptions {
  /** VPC network (default `default`): a name, or `projects/P/global/networks/N`. */
  network?: string;
  /**
   * Subnetwork in the zone's region: a name, or `projects/P/regions/R/subnetworks/N`. Default: the
   * network's only subnetwork in that region (an auto-mode network such as `default` has one).
   */
  subnetwork?: string;
  /** Machine type of every VM unless the role-specific option is set. */
  machineType?: string;
  /** Scheduler machine type (default `machineType`, else `e2-standard-2`: 2 vCPU, 8 GB). */
  schedulerMachineType?: string;
  /** Worker machine type (default `machineType`, else `e2-standard-4`: 4 vCPU, 16 GB). */
  workerMachineType?: string;
  /**
   * Boot image: `projects/P/global/images/family/F` (resolved once per cluster, so every VM gets the
   * same image) or `projects/P/global/images/NAME`. Default: Ubuntu 24.04 LTS
   * (`projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64`), whose GCE image runs
   * cloud-init; Google's Debian images do not, so they would ignore the user-data.
   */
  sourceImage?: string;
  /** Boot disk size in GB (default 50). */
  diskSizeGb?: number;
  /** Boot disk type (default `pd-balanced`). */
  diskType?: string;
  /** GPUs per VM; VMs then stop (not migrate) for host maintenance, and the Docker runtime passes them through. */
  gpu?: GcpGpu;
  /**
   * Preemptible VMs (default false): created as Spot VMs, Google's current form of preemptible
   * VMs (same price), because legacy preemptible VMs refuse the `maxRunDuration` safety net and
   * are only stopped, not deleted, when preempted.
   */
  preemptible?: boolean;
  /** Spot VMs (default false); deleted when preempted. */
  spot?: boolean;
  /**
   * Service account the VMs run as: `'default'` (the Compute Engine default account) or an email.
   * Default: none, so the VMs hold no Google credentials at all.
   */
  serviceAccount?: string;
  /** OAuth scopes of `serviceAccount` (default `['https://www.googleapis.com/auth/cloud-platform']`: IAM decides). */
  scopes?: string[];
  /** Extra labels on every VM and boot disk (GCP label rules: lowercase keys and values). */
  labels?: Record<string, string>;
  /**
   * GCP-side safety net: Compute deletes each running VM this long after it started, even if
   * this process died. Not a VM that powered itself off (autoShutdown): Google clears the time
   * limit when a VM stops, so a stopped VM and its disk stay until `cleanup({ expired: true })`.
   * Seconds, or a duration such as `'8h'`, `'90m'`, `'2d'`; `false` for none. Default:
   * `expiresAfterHours` (24 h).
   */
  maxRunDuration?: number | string | false;
  /** Host maintenance policy (default `MIGRATE`; `TERMINATE` with GPUs, spot or preemptible VMs). */
  onHostMaintenance?: 'MIGRATE' | 'TERMINATE';
}

export const GCP_DEFAULTS = Object.freeze({
  zone: 'us-central1-a',
  network: 'default',
  schedulerMachineType: 'e2-standard-2',
  workerMachineType: 'e2-standard-4',
  sourceImage: 'projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64',
  diskSizeGb: 50,
  diskType: 'pd-balanced',
  scopes: Object.freeze(['https://www.googleapis.com/auth/cloud-platform']) as readonly string[],
  maxConcurrentRequests: 32,
  requestTimeoutMs: 60_000,
  operationTimeoutMs: 10 * 60_000,
});

/** Connection settings after defaults and validation. */
export interface ResolvedConnection {
  projectId: string;
  zone: string;
  region: string;
  networkProjectId: string;
  clientOptions: GcpClientOptions;
  maxConcurrentRequests: number;
  requestTimeoutMs: number;
  operationTimeoutMs: number;
}

/** Everything the adapter needs to build requests, after defaults and validation. */
export interface ResolvedGcpConfig extends ResolvedConnection {
  network: string;
  /** `{ region, name }` when given; otherwise found in preflight. */
  subnetwork?: { region: string; name: string };
  schedulerMachineType: string;
  workerMachineType: string;
  sourceImage: string;
  diskSizeGb: number;
  diskType: string;
  gpu?: { type: string; count: number };
  /** Spot provisioning: `spot`, or `preemptible` (which is sent as Spot, see GCPClusterOptions.preemptible). */
  spot: boolean;
  serviceAccount?: { email: string; scopes: string[] };
  labels: Record<string, string>;
  maxRunDurationSeconds?: number;
  onHostMaintenance: 'MIGRATE' | 'TERMINATE';
}

const NAME_RE = /^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
const ZONE_RE = /^([a-z]+-[a-z]+\d+)-[a-z]$/;
// Project ids: 6-30 characters; legacy domain-scoped ids carry a `domain:` prefix.
const PROJECT_RE = /^(?:[a-z0-9][-a-z0-9.]*[a-z0-9]:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$/;
const LABEL_KEY_RE = /^[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}$/u;
const LABEL_VALUE_RE = /^[\p{Ll}\p{Lo}\p{N}_-]{0,63}$/u;
const TYPE_RE = /^[a-z0-9][-a-z0-9]*$/;
const MAX_RUN_S = { min: 30, max: 120 * 24 * 3600 };

function fail(option: string, message: string): never {
  throw new ValidationError(message, { option });
}

function optionalString(value: unknown, option: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') fail(option, `${option} must be a non-empty string`);
  return value;
}

function positiveInt(value: unknown, option: string, fallback: number, max: number, why = ''): number {
  if (value === undefined) return fallback;
  checkInteger(value, option, 1, max, why);
  return value as number;
}

function timerMs(value: unknown, option: string, fallback: number): number {
  checkTimerMs(value, option);
  return (value as number | undefined) ?? fallback;
}

/** Requests in flight: Compute's per-minute quotas make more than this pointless. */
const MAX_CONCURRENT_REQUESTS = 100;
/** A persistent disk holds at most 64 TB. */
const MAX_DISK_SIZE_GB = 65_536;
/** The most GPUs one Compute VM takes (A2 ultra / megagpu: 16). */
const MAX_GPUS = 16;

function bool(value: unknown, option: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') fail(option, `${option} must be true or false`);
  return value;
}

/** `'8h'`, `'90m'`, `'1d12h'`, `'45s'` or a number of seconds → seconds. */
export function parseDuration(value: number | string, option: string): number {
  let seconds: number;
  if (typeof value === 'number') {
    seconds = value;
  } else {
    const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(value.trim());
    if (!m || value.trim() === '') fail(option, `${option} must be seconds or a duration such as '8h', '90m', '1d12h', got ${JSON.stringify(value)}`);
    seconds = Number(m[1] ?? 0) * 86_400 + Number(m[2] ?? 0) * 3600 + Number(m[3] ?? 0) * 60 + Number(m[4] ?? 0);
  }
  if (!Number.isInteger(seconds) || seconds < MAX_RUN_S.min || seconds > MAX_RUN_S.max) {
    fail(option, `${option} must be whole seconds from ${MAX_RUN_S.min} s to 120 days (Compute's limits), got ${String(value)}`);
  }
  return seconds;
}

function readJson(file: string): Record<string, unknown> | undefined {
  try {
    const parsed: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
    return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function gcloudConfigDir(env: NodeJS.ProcessEnv): string {
  if (env.CLOUDSDK_CONFIG) return env.CLOUDSDK_CONFIG;
  if (process.platform === 'win32' && env.APPDATA) return path.join(env.APPDATA, 'gcloud');
  return path.join(env.HOME ?? os.homedir(), '.config', 'gcloud');
}

/** `[core] project` of gcloud's active configuration (what `gcloud config get project` prints). */
function gcloudProject(env: NodeJS.ProcessEnv): string | undefined {
  if (env.CLOUDSDK_CORE_PROJECT) return env.CLOUDSDK_CORE_PROJECT;
  const dir = gcloudConfigDir(env);
  let active = 'default';
  try {
    active = fs.readFileSync(path.join(dir, 'active_config'), 'utf8').trim() || 'default';
  } catch {
    // no active_config: gcloud uses `default`
  }
  let text: string;
  try {
    text = fs.readFileSync(path.join(dir, 'configurations', `config_${active}`), 'utf8');
  } catch {
    return undefined;
  }
  let section = '';
  for (const line of text.split(/\r?\n/)) {
    const header = /^\s*\[([^\]]+)\]\s*$/.exec(line);
    if (header) section = header[1]!.trim();
    const kv = /^\s*project\s*=\s*(\S+)\s*$/.exec(line);
    if (kv && section === 'core') return kv[1];
  }
  return undefined;
}

/**
 * The project id, from the first place that has one (see `GcpConnectionOptions.projectId`), and
 * where it came from. Local files and environment only: resolving it never touches the network.
 */
export function resolveProjectId(
  options: Pick<GcpConnectionOptions, 'projectId' | 'authClient'>,
  env: NodeJS.ProcessEnv = process.env,
): { projectId: string; source: string } {
  if (options.projectId !== undefined) return { projectId: options.projectId, source: 'projectId option' };
  if (env.GOOGLE_CLOUD_PROJECT) return { projectId: env.GOOGLE_CLOUD_PROJECT, source: 'GOOGLE_CLOUD_PROJECT' };
  if (env.GCLOUD_PROJECT) return { projectId: env.GCLOUD_PROJECT, source: 'GCLOUD_PROJECT' };
  const fromAuth = (options.authClient as { projectId?: unknown } | undefined)?.projectId;
  if (typeof fromAuth === 'string' && fromAuth) return { projectId: fromAuth, source: 'authClient.projectId' };
  if (env.GOOGLE_APPLICATION_CREDENTIALS) {
    const key = readJson(env.GOOGLE_APPLICATION_CREDENTIALS);
    for (const field of ['project_id', 'quota_project_id']) {
      if (typeof key?.[field] === 'string' && key[field]) return { projectId: key[field] as string, source: `GOOGLE_APPLICATION_CREDENTIALS (${field})` };
    }
  }
  const adc = readJson(path.join(gcloudConfigDir(env), 'application_default_credentials.json'));
  if (typeof adc?.quota_project_id === 'string' && adc.quota_project_id) {
    return { projectId: adc.quota_project_id, source: 'application default credentials (quota_project_id)' };
  }
  const gcloud = gcloudProject(env);
  if (gcloud) return { projectId: gcloud, source: 'gcloud configuration' };
  return fail(
    'projectId',
    'no GCP project: pass projectId, set GOOGLE_CLOUD_PROJECT, or run `gcloud config set project PROJECT_ID` ' +
      '(looked at the projectId option, GOOGLE_CLOUD_PROJECT, GCLOUD_PROJECT, authClient.projectId, ' +
      'GOOGLE_APPLICATION_CREDENTIALS, the gcloud ADC file and the active gcloud configuration)',
  );
}

function resolveEndpoint(endpoint: GcpConnectionOptions['endpoint']): Partial<GcpClientOptions> {
  if (endpoint === undefined) return {};
  if (typeof endpoint === 'string') {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      return fail('endpoint', `endpoint must be a URL such as https://compute.googleapis.com, got ${JSON.stringify(endpoint)}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') fail('endpoint', `endpoint must be http or https, got ${url.protocol}`);
    if (url.pathname !== '/' && url.pathname !== '') fail('endpoint', 'endpoint is the server only (the SDK adds /compute/v1)');
    const protocol = url.protocol === 'http:' ? 'http' : 'https';
    const port = url.port ? Number(url.port) : protocol === 'http' ? 80 : 443;
    // IPv6 hosts come back bracketed from URL; the SDK wants the bare address.
    return { apiEndpoint: url.hostname.replace(/^\[|\]$/g, ''), port, protocol };
  }
  if (typeof endpoint !== 'object' || endpoint === null || typeof endpoint.apiEndpoint !== 'string' || endpoint.apiEndpoint === '') {
    return fail('endpoint', 'endpoint must be a URL or { apiEndpoint, port?, protocol? }');
  }
  if (endpoint.port !== undefined && (!Number.isInteger(endpoint.port) || endpoint.port < 1 || endpoint.port > 65535)) {
    fail('endpoint', `endpoint.port must be 1-65535, got ${String(endpoint.port)}`);
  }
  if (endpoint.protocol !== undefined && endpoint.protocol !== 'http' && endpoint.protocol !== 'https') {
    fail('endpoint', `endpoint.protocol must be 'http' or 'https', got ${String(endpoint.protocol)}`);
  }
  return {
    apiEndpoint: endpoint.apiEndpoint,
    ...(endpoint.port !== undefined ? { port: endpoint.port } : {}),
    ...(endpoint.protocol !== undefined ? { protocol: endpoint.protocol } : {}),
  };
}

function checkAuthClient(value: unknown, option: string): void {
  if (value === undefined) return;
  if (typeof value !== 'object' || value === null || typeof (value as GcpAuthClient).getRequestHeaders !== 'function') {
    fail(option, `${option} must be a google-auth-library client (an object with getRequestHeaders(url))`);
  }
}

/** `clientOptions` checked key by key: an unknown key is refused (a typo would otherwise be ignored), naming the closest known one. */
function checkClientOptions(value: unknown): GcpClientOptions {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('clientOptions', 'clientOptions must be an object');
  const o = value as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => o[k] !== undefined && !(CLIENT_OPTION_KEYS as readonly string[]).includes(k));
  if (unknown.length > 0) {
    const hints = unknown.map((k) => {
      const near = closestName(CLIENT_OPTION_KEYS, k);
      return near === undefined ? JSON.stringify(k) : `${JSON.stringify(k)} (did you mean ${JSON.stringify(near)}?)`;
    });
    fail('clientOptions', `clientOptions: unknown key${unknown.length > 1 ? 's' : ''} ${hints.join(', ')}; known: ${CLIENT_OPTION_KEYS.join(', ')}`);
  }
  for (const k of ['apiEndpoint', 'keyFilename', 'keyFile', 'projectId'] as const) optionalString(o[k], `clientOptions.${k}`);
  if (o.port !== undefined) checkInteger(o.port, 'clientOptions.port', 1, 65_535);
  if (o.protocol !== undefined && o.protocol !== 'http' && o.protocol !== 'https') fail('clientOptions', `clientOptions.protocol must be 'http' or 'https', got ${String(o.protocol)}`);
  checkAuthClient(o.authClient, 'clientOptions.authClient');
  if (o.credentials !== undefined && (typeof o.credentials !== 'object' || o.credentials === null)) fail('clientOptions', 'clientOptions.credentials must be an object (a key file\'s contents)');
  const sc = o.scopes;
  if (sc !== undefined && typeof sc !== 'string' && !(Array.isArray(sc) && sc.every((x) => typeof x === 'string' && x !== ''))) {
    fail('clientOptions', 'clientOptions.scopes must be an OAuth scope or an array of them');
  }
  return { ...(o as GcpClientOptions) };
}

/** Validates and resolves the connection options (also used by `GCPCluster.cleanup`). */
export function resolveConnection(options: GcpConnectionOptions, env: NodeJS.ProcessEnv = process.env): ResolvedConnection {
  if (typeof options !== 'object' || options === null) throw new ValidationError('options must be an object');
  const zone = optionalString(options.zone, 'zone') ?? GCP_DEFAULTS.zone;
  const zm = ZONE_RE.exec(zone);
  if (!zm) fail('zone', `zone must look like us-central1-a, got ${JSON.stringify(zone)}`);
  optionalString(options.projectId, 'projectId');
  const { projectId, source } = resolveProjectId(options, env);
  if (!PROJECT_RE.test(projectId)) fail('projectId', `${JSON.stringify(projectId)} (from ${source}) is not a GCP project id`);
  const networkProjectId = optionalString(options.networkProjectId, 'networkProjectId') ?? projectId;
  if (!PROJECT_RE.test(networkProjectId)) fail('networkProjectId', `${JSON.stringify(networkProjectId)} is not a GCP project id`);
  checkAuthClient(options.authClient, 'authClient');
  const clientOptions: GcpClientOptions = {
    ...checkClientOptions(options.clientOptions),
    ...resolveEndpoint(options.endpoint),
    ...(options.authClient !== undefined ? { authClient: options.authClient } : {}),
    projectId,
  };
  return {
    projectId,
    zone,
    region: zm[1]!,
    networkProjectId,
    clientOptions,
    maxConcurrentRequests: positiveInt(options.maxConcurrentRequests, 'maxConcurrentRequests', GCP_DEFAULTS.maxConcurrentRequests, MAX_CONCURRENT_REQUESTS),
    requestTimeoutMs: timerMs(options.requestTimeoutMs, 'requestTimeoutMs', GCP_DEFAULTS.requestTimeoutMs),
    operationTimeoutMs: timerMs(options.operationTimeoutMs, 'operationTimeoutMs', GCP_DEFAULTS.operationTimeoutMs),
  };
}

/** `name` or `projects/P/global/networks/N` (or its URL) → name, checking the project. */
function networkName(value: string, networkProjectId: string): string {
  const stripped = value.replace(/^https:\/\/(?:www|compute)\.googleapis\.com\/compute\/v1\//, '');
  if (NAME_RE.test(stripped)) return stripped;
  const m = /^(?:projects\/([^/]+)\/)?global\/networks\/([^/]+)$/.exec(stripped);
  if (!m || !NAME_RE.test(m[2]!)) return fail('network', `network must be a name or projects/P/global/networks/N, got ${JSON.stringify(value)}`);
  if (m[1] !== undefined && m[1] !== networkProjectId) {
    fail('network', `network ${value} belongs to project ${m[1]}: set networkProjectId: '${m[1]}' (Shared VPC)`);
  }
  return m[2]!;
}

function subnetworkRef(value: string, region: string, networkProjectId: string): { region: string; name: string } {
  const stripped = value.replace(/^https:\/\/(?:www|compute)\.googleapis\.com\/compute\/v1\//, '');
  if (NAME_RE.test(stripped)) return { region, name: stripped };
  const m = /^(?:projects\/([^/]+)\/)?regions\/([^/]+)\/subnetworks\/([^/]+)$/.exec(stripped);
  if (!m || !NAME_RE.test(m[3]!)) return fail('subnetwork', `subnetwork must be a name or projects/P/regions/R/subnetworks/N, got ${JSON.stringify(value)}`);
  if (m[1] !== undefined && m[1] !== networkProjectId) {
    fail('subnetwork', `subnetwork ${value} belongs to project ${m[1]}: set networkProjectId: '${m[1]}' (Shared VPC)`);
  }
  if (m[2] !== region) fail('subnetwork', `subnetwork ${value} is in region ${m[2]}, but the VMs are in zone region ${region}`);
  return { region, name: m[3]! };
}

function checkImage(value: string): string {
  const stripped = value.replace(/^https:\/\/(?:www|compute)\.googleapis\.com\/compute\/v1\//, '');
  if (!/^(?:projects\/[^/]+\/)?global\/images\/(?:family\/)?[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$/.test(stripped)) {
    fail('sourceImage', `sourceImage must be projects/P/global/images/NAME or projects/P/global/images/family/FAMILY, got ${JSON.stringify(value)}`);
  }
  return stripped;
}

function machineType(value: unknown, option: string, fallback: string): string {
  const v = optionalString(value, option) ?? fallback;
  if (!TYPE_RE.test(v)) fail(option, `${option} must be a machine type name such as e2-standard-4 (not a URL), got ${JSON.stringify(v)}`);
  return v;
}

function labels(value: unknown): Record<string, string> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('labels', 'labels must be an object of strings');
  const out: Record<string, string> = {};
  const reserved = new Set<string>(Object.values(LABELS));
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (reserved.has(k)) fail('labels', `label ${k} is set by dask-cloud itself`);
    if (!LABEL_KEY_RE.test(k)) fail('labels', `label key ${JSON.stringify(k)}: GCP label keys start with a lowercase letter and hold lowercase letters, digits, '_' and '-' (at most 63)`);
    if (typeof v !== 'string' || !LABEL_VALUE_RE.test(v)) {
      fail('labels', `label ${k}=${JSON.stringify(v)}: GCP label values hold lowercase letters, digits, '_' and '-' (at most 63)`);
    }
    out[k] = v;
  }
  // GCP allows 64 labels; dask-cloud adds its own (five on the scheduler: cluster, role, expiry, protocol, port).
  if (Object.keys(out).length > 64 - Object.keys(LABELS).length) fail('labels', `at most ${64 - Object.keys(LABELS).length} extra labels`);
  return out;
}

/** Validates every GCP option and applies the defaults (the core validates the rest). */
export function resolveGcpOptions(options: GCPClusterOptions, env: NodeJS.ProcessEnv = process.env): ResolvedGcpConfig {
  const conn = resolveConnection(options, env);
  const network = networkName(optionalString(options.network, 'network') ?? GCP_DEFAULTS.network, conn.networkProjectId);
  const subnetworkText = optionalString(options.subnetwork, 'subnetwork');
  const machine = optionalString(options.machineType, 'machineType');
  const sourceImage = checkImage(optionalString(options.sourceImage, 'sourceImage') ?? GCP_DEFAULTS.sourceImage);
  const diskSizeGb = positiveInt(options.diskSizeGb, 'diskSizeGb', GCP_DEFAULTS.diskSizeGb, MAX_DISK_SIZE_GB, 'a persistent disk holds at most 64 TB');
  if (diskSizeGb < 10) fail('diskSizeGb', `diskSizeGb must be at least 10 (the size of the public images), got ${diskSizeGb}`);
  const diskType = optionalString(options.diskType, 'diskType') ?? GCP_DEFAULTS.diskType;
  if (!TYPE_RE.test(diskType)) fail('diskType', `diskType must be a disk type name such as pd-balanced, got ${JSON.stringify(diskType)}`);

  let gpu: ResolvedGcpConfig['gpu'];
  if (options.gpu !== undefined) {
    const g = options.gpu as unknown;
    if (typeof g !== 'object' || g === null || typeof (g as GcpGpu).type !== 'string' || !TYPE_RE.test((g as GcpGpu).type)) {
      fail('gpu', "gpu must be { type: 'nvidia-tesla-t4', count?: 1 }");
    }
    gpu = { type: (g as GcpGpu).type, count: positiveInt((g as GcpGpu).count, 'gpu.count', 1, MAX_GPUS, 'the most one Compute VM takes') };
  }
  const preemptible = bool(options.preemptible, 'preemptible');
  const spot = bool(options.spot, 'spot');
  if (preemptible && spot) fail('spot', 'choose spot or preemptible, not both (spot is the newer form of preemptible)');

  let serviceAccount: ResolvedGcpConfig['serviceAccount'];
  const sa = optionalString(options.serviceAccount, 'serviceAccount');
  if (sa !== undefined && sa !== 'default' && !/^[^@\s]+@[^@\s]+$/.test(sa)) fail('serviceAccount', `serviceAccount must be 'default' or an email, got ${JSON.stringify(sa)}`);
  if (options.scopes !== undefined) {
    if (!Array.isArray(options.scopes) || options.scopes.some((s) => typeof s !== 'string' || s === '')) fail('scopes', 'scopes must be an array of OAuth scope strings');
    if (sa === undefined) fail('scopes', 'scopes apply to a serviceAccount: set serviceAccount too');
  }
  if (sa !== undefined) serviceAccount = { email: sa, scopes: [...(options.scopes ?? GCP_DEFAULTS.scopes)] };

  let maxRunDurationSeconds: number | undefined;
  const mrd = options.maxRunDuration;
  if (mrd === undefined) {
    const hours = options.expiresAfterHours ?? 24;
    // The core validates expiresAfterHours; only use it here when it is a usable number.
    if (typeof hours === 'number' && hours > 0) maxRunDurationSeconds = Math.min(MAX_RUN_S.max, Math.max(MAX_RUN_S.min, Math.round(hours * 3600)));
  } else if (mrd !== false) {
    if (typeof mrd !== 'number' && typeof mrd !== 'string') fail('maxRunDuration', 'maxRunDuration must be seconds, a duration string or false');
    maxRunDurationSeconds = parseDuration(mrd, 'maxRunDuration');
  }

  const mustTerminate = gpu !== undefined || spot || preemptible;
  const ohm = options.onHostMaintenance;
  if (ohm !== undefined && ohm !== 'MIGRATE' && ohm !== 'TERMINATE') fail('onHostMaintenance', `onHostMaintenance must be 'MIGRATE' or 'TERMINATE', got ${String(ohm)}`);
  if (ohm === 'MIGRATE' && mustTerminate) fail('onHostMaintenance', 'VMs with GPUs, spot or preemptible VMs cannot live-migrate: use TERMINATE');

  return {
    ...conn,
    network,
    subnetwork: subnetworkText === undefined ? undefined : subnetworkRef(subnetworkText, conn.region, conn.networkProjectId),
    schedulerMachineType: machineType(options.schedulerMachineType, 'schedulerMachineType', machine ?? GCP_DEFAULTS.schedulerMachineType),
    workerMachineType: machineType(options.workerMachineType, 'workerMachineType', machine ?? GCP_DEFAULTS.workerMachineType),
    sourceImage,
    diskSizeGb,
    diskType,
    gpu,
    spot: spot || preemptible,
    serviceAccount,
    labels: labels(options.labels),
    maxRunDurationSeconds,
    onHostMaintenance: ohm ?? (mustTerminate ? 'TERMINATE' : 'MIGRATE'),
  };
}
