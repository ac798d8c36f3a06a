/**
 * DigitalOcean: a Dask cluster of Droplets. The lifecycle is the core's (src/cluster); this file
 * holds the options, their validation and defaults. The SDK (dots-wrapper) is loaded on first use
 * (api.ts), never by importing this module.
 */
import { resolveOptions } from '../../src/config';
import { createLog } from '../../src/log';
import { cleanupClusters, listVmClusters, VMCluster, type CleanupOptions, type CleanupReport, type ClusterSummary, type VMClusterOptions } from '../../src/cluster/vm';
import { CredentialsError, ValidationError } from '../../src/errors';
import { savableOptions } from '../../src/cluster/state';
import { checkTimerMs, describeValue } from '../../src/config/bounds';
import { DoApi, DEFAULT_ENDPOINT, type DotsClient } from './api';
import { DropletAdapter, TAG_PATTERN, TOKEN_PAGE, type ConsoleOutputFetcher, type TokenSource } from './adapter';

export {
  DropletAdapter,
  clusterTag,
  firewallName,
  labelTag,
  MARKER_TAG,
  NAT_SCOPE,
  REQUIRED_SCOPES,
  SSH_KEY_SCOPE,
  type ConsoleOutputFetcher,
  type TokenSource,
} from './adapter';
import { requireCloudSdk } from '../../src/peer';

// Refuse to load without the SDK: one typed error naming the install line.
requireCloudSdk('digitalocean');
export type { DotsClient } from './api';

/** Defaults of {@link DropletClusterOptions}. */
export const DROPLET_DEFAULTS = Object.freeze({
  region: 'nyc3',
  /** 2 vCPU / 4 GB: Dask's scheduler and a worker both fit comfortably. */
  size: 's-2vcpu-4gb',
  /** Current LTS; cloud-init installs Docker on boot for the default docker runtime. */
  image: 'ubuntu-24-04-x64',
  endpoint: DEFAULT_ENDPOINT,
  activeTimeoutMs: 5 * 60_000,
  pollIntervalMs: 2_000,
  requestTimeoutMs: 30_000,
});

/** Environment variables the token is read from, in order. */
export const TOKEN_ENV = ['DIGITALOCEAN_TOKEN', 'DIGITALOCEAN_ACCESS_TOKEN'] as const;

export interface DropletClusterOptions extends VMClusterOptions {
  /**
   * API token. Default: `DIGITALOCEAN_TOKEN`, then `DIGITALOCEAN_ACCESS_TOKEN`. Used only for API
   * requests from this process: it is never logged and never sent to a Droplet. Without any,
   * `start()` and `preflight()` fail the credentials check (`CredentialsError`) before any request.
   */
  token?: string;
  /** API base URL (default `https://api.digitalocean.com/v2`). */
  endpoint?: string;
  /** A ready-made dots-wrapper client (`createApiClient(...)`); `token` is then needed only with `privateNetworking`. */
  client?: DotsClient;
  /** Region slug (default `nyc3`; with `vpc` and no region, the VPC's region). */
  region?: string;
  /** Droplet size slug for scheduler and workers (default `s-2vcpu-4gb`). */
  size?: string;
  /** Scheduler Droplet size (default `size`). */
  schedulerSize?: string;
  /** Worker Droplet size (default `size`). */
  workerSize?: string;
  /**
   * Droplet image: a slug or a snapshot / custom image id (default `ubuntu-24-04-x64`). With the
   * default `docker` runtime any image works (Docker is installed on boot when missing); a
   * Docker-ready image such as the Marketplace `docker-20-04` or your own snapshot skips that.
   * With `runtime: 'native'` the image must have Python with `distributed`.
   */
  image?: string | number;
  /** VPC uuid (default: the region's default VPC). */
  vpc?: string;
  /**
   * SSH keys (ids or fingerprints of keys on the account) installed for root. When given, the
   * firewall admits port 22 from the VPC and, in public mode, from `ingressCidrs`.
   */
  sshKeys?: (string | number)[];
  /** Install DigitalOcean's monitoring agent (default false). */
  monitoring?: boolean;
  /** Extra tags for every Droplet (`[a-zA-Z0-9_\-:]`, not starting with `dask-cloud`). */
  tags?: string[];
  /** How long a Droplet may take to become active with its addresses (default 5 min). */
  activeTimeoutMs?: number;
  /** First interval between polls of a new Droplet (default 2 s; backs off to 4x). */
  pollIntervalMs?: number;
  /** Timeout of one API request (default 30 s). */
  requestTimeoutMs?: number;
  /**
   * Fetches a Droplet's console output for error messages (DigitalOcean's API has none), e.g.
   * over SSH. Without it, a failure says where to look instead.
   */
  consoleOutput?: ConsoleOutputFetcher;
}

/** Options of {@link DropletCluster.cleanup}: what to delete, and how to reach the API. */
/** Where `DropletCluster.list` looks: the account of the token (or client). */
export type DropletListOptions = Pick<DropletCleanupOptions, 'token' | 'endpoint' | 'client' | 'requestTimeoutMs'> & { signal?: AbortSignal };

export interface DropletCleanupOptions extends CleanupOptions {
  /** API token (default `DIGITALOCEAN_TOKEN`, then `DIGITALOCEAN_ACCESS_TOKEN`). */
  token?: string;
  /** API base URL (default `https://api.digitalocean.com/v2`). */
  endpoint?: string;
  /** A ready-made dots-wrapper client. */
  client?: DotsClient;
  /** Timeout of one API request (default 30 s). */
  requestTimeoutMs?: number;
}

const log = createLog('dask-cloud:digitalocean');

const SLUG = /^[a-z0-9][a-z0-9-]{0,63}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function checkSlug(value: unknown, option: string, example: string): void {
  if (value !== undefined && (typeof value !== 'string' || !SLUG.test(value))) {
    throw new ValidationError(`${option} must be a DigitalOcean slug such as '${example}', got ${describeValue(value)}`, { option });
  }
}


/** The token from options or the environment, and where it came from; never echoed in messages. */
function resolveToken(options: DropletClusterOptions): { token: string | undefined; source: TokenSource } {
  if (options.token !== undefined) {
    if (typeof options.token !== 'string' || options.token.trim() === '' || /\s/.test(options.token)) {
      throw new ValidationError('token must be a non-empty string without whitespace (a DigitalOcean API token)', { option: 'token' });
    }
    return { token: options.token, source: 'token option' };
  }
  for (const name of TOKEN_ENV) {
    const v = process.env[name];
    if (v !== undefined && v.trim() !== '') return { token: v.trim(), source: name };
  }
  return { token: undefined, source: options.client !== undefined ? 'client option' : 'none' };
}

/** What a missing token's CredentialsError tells the user to do. */
const NO_TOKEN_FIX = `create a token at ${TOKEN_PAGE} and set DIGITALOCEAN_TOKEN (or pass the token option)`;

/**
 * Checks every DigitalOcean option; throws a ValidationError naming the option. A missing token
 * is not an option error: `start()` and `preflight()` report it as the credentials check
 * (CredentialsError) before any request.
 */
export function validateDropletOptions(options: DropletClusterOptions): { token: string | undefined; tokenSource: TokenSource } {
  if (typeof options !== 'object' || options === null) throw new ValidationError('options must be an object');
  const { token, source } = resolveToken(options);
  const c = options.client as unknown;
  if (c !== undefined && (typeof c !== 'object' || c === null || typeof (c as { droplet?: unknown }).droplet !== 'object' || typeof (c as { firewall?: unknown }).firewall !== 'object')) {
    throw new ValidationError('client must be a dots-wrapper client (createApiClient({ token }))', { option: 'client' });
  }
  if (token === undefined && c !== undefined && options.privateNetworking === true) {
    throw new ValidationError('privateNetworking needs token as well as client: Private Droplets are created with a request dots-wrapper cannot make', { option: 'token' });
  }
  if (options.endpoint !== undefined) {
    let url: URL | undefined;
    try {
      url = typeof options.endpoint === 'string' ? new URL(options.endpoint) : undefined;
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
      throw new ValidationError(`endpoint must be an http(s) URL such as ${DEFAULT_ENDPOINT}, got ${describeValue(options.endpoint)}`, { option: 'endpoint' });
    }
  }
  checkSlug(options.region, 'region', 'nyc3');
  checkSlug(options.size, 'size', 's-2vcpu-4gb');
  checkSlug(options.schedulerSize, 'schedulerSize', 's-2vcpu-4gb');
  checkSlug(options.workerSize, 'workerSize', 's-4vcpu-8gb');
  const image = options.image;
  if (image !== undefined && !(typeof image === 'number' ? Number.isSafeInteger(image) && image > 0 : typeof image === 'string' && /^[a-z0-9][a-z0-9.-]{0,127}$/.test(image))) {
    throw new ValidationError(`image must be an image slug such as 'ubuntu-24-04-x64' or a positive image id, got ${describeValue(image)}`, { option: 'image' });
  }
  if (options.dockerImage !== undefined && (typeof options.dockerImage !== 'string' || !/^[^\s]+$/.test(options.dockerImage))) {
    throw new ValidationError(`dockerImage must be an image reference such as ghcr.io/dask/dask:2025.11.0, got ${describeValue(options.dockerImage)}`, { option: 'dockerImage' });
  }
  if (options.vpc !== undefined && (typeof options.vpc !== 'string' || !UUID.test(options.vpc))) {
    throw new ValidationError(`vpc must be a VPC uuid, got ${describeValue(options.vpc)}`, { option: 'vpc' });
  }
  if (options.sshKeys !== undefined) {
    const ok =
      Array.isArray(options.sshKeys) &&
      options.sshKeys.every((k) => (typeof k === 'number' ? Number.isSafeInteger(k) && k > 0 : typeof k === 'string' && /^[0-9a-fA-F:]+$|^\d+$/.test(k)));
    if (!ok) throw new ValidationError('sshKeys must be an array of SSH key ids or fingerprints (aa:bb:...)', { option: 'sshKeys' });
  }
  if (options.monitoring !== undefined && typeof options.monitoring !== 'boolean') {
    throw new ValidationError('monitoring must be a boolean', { option: 'monitoring' });
  }
  if (options.tags !== undefined) {
    if (!Array.isArray(options.tags)) throw new ValidationError('tags must be an array of strings', { option: 'tags' });
    for (const t of options.tags) {
      if (typeof t !== 'string' || !TAG_PATTERN.test(t)) {
        throw new ValidationError(`tags: ${describeValue(t)} is not a DigitalOcean tag (letters, digits, '_', '-', ':'; at most 255)`, { option: 'tags' });
      }
      if (t.startsWith('dask-cloud')) throw new ValidationError(`tags: ${JSON.stringify(t)}: tags starting with dask-cloud are reserved for the cluster's own`, { option: 'tags' });
    }
  }
  // Firewalls Limits (DigitalOcean docs): at most 1000 entries in one rule's sources.
  if (Array.isArray(options.ingressCidrs) && options.ingressCidrs.length > 1000) {
    throw new ValidationError(`ingressCidrs: ${options.ingressCidrs.length} ranges; a DigitalOcean firewall rule takes at most 1000: merge them into wider ranges`, { option: 'ingressCidrs' });
  }
  checkTimerMs(options.activeTimeoutMs, 'activeTimeoutMs');
  checkTimerMs(options.pollIntervalMs, 'pollIntervalMs');
  checkTimerMs(options.requestTimeoutMs, 'requestTimeoutMs');
  if (options.consoleOutput !== undefined && typeof options.consoleOutput !== 'function') {
    throw new ValidationError('consoleOutput must be a function (droplet) => Promise<string>', { option: 'consoleOutput' });
  }
  return { token, tokenSource: source };
}

/**
 * A Dask cluster on DigitalOcean Droplets: one scheduler Droplet and `nWorkers` worker Droplets,
 * mutual TLS by default, one cloud firewall scoped by the cluster tag.
 *
 * ```ts
 * // token from DIGITALOCEAN_TOKEN
 * await using cluster = await DropletCluster.start({ region: 'ams3', nWorkers: 2 });
 * await cluster.writeClientConfig('./dask-client');   // DASK_CONFIG=./dask-client python -c "from distributed import Client; Client()"
 * ```
 *
 * The constructor validates every option and creates nothing; `start()` creates the firewall,
 * the scheduler Droplet and, as soon as its private address is known, the workers (10 per
 * request). Every Droplet carries the tags `dask-cloud`, `dask-cloud-cluster:<id>`,
 * `dask-cloud-role:<role>` and `dask-cloud-expires:<epoch>`; `close()` deletes them all and the
 * firewall.
 */
export class DropletCluster extends VMCluster {
  readonly #adapter: DropletAdapter;
  /** The DigitalOcean options the core does not hold, as resolved, for the cluster's record. */
  readonly #saved: Record<string, unknown>;

  constructor(options: DropletClusterOptions = {}) {
    // Config file and DASK_CLOUD_* environment variables under the caller's options.
    options = resolveOptions('digitalocean', options);
    const { token, tokenSource } = validateDropletOptions(options);
    const {
      token: _token,
      client,
      endpoint,
      region,
      size,
      schedulerSize,
      workerSize,
      image,
      dockerImage,
      vpc,
      sshKeys,
      monitoring,
      tags,
      activeTimeoutMs,
      pollIntervalMs,
      requestTimeoutMs,
      consoleOutput,
      ...common
    } = options;
    const api = new DoApi({ token, client, endpoint, requestTimeoutMs: requestTimeoutMs ?? DROPLET_DEFAULTS.requestTimeoutMs });
    const adapter = new DropletAdapter({
      api,
      tokenSource,
      sizeOptions: { scheduler: schedulerSize !== undefined ? 'schedulerSize' : 'size', worker: workerSize !== undefined ? 'workerSize' : 'size' },
      dockerImage,
      region: region ?? DROPLET_DEFAULTS.region,
      regionExplicit: region !== undefined,
      schedulerSize: schedulerSize ?? size ?? DROPLET_DEFAULTS.size,
      workerSize: workerSize ?? size ?? DROPLET_DEFAULTS.size,
      image: image ?? DROPLET_DEFAULTS.image,
      vpc,
      sshKeys: sshKeys ?? [],
      monitoring: monitoring ?? false,
      tags: tags ?? [],
      privateNetworking: common.privateNetworking ?? false,
      ingressCidrs: common.ingressCidrs ?? ['0.0.0.0/0'],
      activeTimeoutMs: activeTimeoutMs ?? DROPLET_DEFAULTS.activeTimeoutMs,
      pollIntervalMs: pollIntervalMs ?? DROPLET_DEFAULTS.pollIntervalMs,
      consoleOutput,
    });
    // The token and client stay inside the request pipeline: the options the core keeps (and
    // that `util.inspect(cluster)` would show) never hold them.
    super({ ...common, dockerImage }, adapter);
    this.#adapter = adapter;
    this.#saved = savableOptions({ endpoint, region: region ?? DROPLET_DEFAULTS.region, size, schedulerSize, workerSize, image, vpc, sshKeys, monitoring, tags, activeTimeoutMs, pollIntervalMs, requestTimeoutMs });
    adapter.onWarning = (message) => this.emit({ type: 'warning', code: 'DASK_CLOUD_PROVIDER', clusterId: this.id, message, at: Date.now() });
  }

  /** Create and start in one step. */
  static async start(options: DropletClusterOptions = {}): Promise<DropletCluster> {
    return new DropletCluster(options).start();
  }

  /**
   * A handle for a running cluster started by another process (or machine): built from the
   * cluster's local directory (its client credentials and saved options; see `stateDir`), with
   * its Droplets found by tag. It can `scale`, `adapt`, `workers`, `getLogs`,
   * `writeClientConfig` and `close` (which deletes everything by tag) like the handle that
   * started it. `options` add to the saved ones: the `token`, and the `env` and `bootstrap` the
   * cluster was started with, which new workers need and which are never saved. Closes on
   * signals only with `closeOnSignals: true`.
   */
  static async attach(id: string, options: DropletClusterOptions = {}): Promise<DropletCluster> {
    return VMCluster.attachKind('digitalocean', id, options, (o) => new DropletCluster(o));
  }

  protected override savedOptions(): Record<string, unknown> {
    return { ...super.savedOptions(), ...this.#saved };
  }

  /**
   * Delete what clusters left behind (a killed process, a crashed service), found by their tags
   * and firewall names anywhere in the account: `{ clusterIds }`, `{ expired: true }` (the
   * `dask-cloud-expires` tag has passed) or `{ all: true }`; `dryRun` only reports.
   */
  static async cleanup(options: DropletCleanupOptions): Promise<CleanupReport> {
    if (options.clusterIds === undefined && !options.expired && !options.all) {
      validateDropletOptions({ token: options.token, endpoint: options.endpoint, client: options.client, requestTimeoutMs: options.requestTimeoutMs });
      throw new ValidationError('cleanup needs clusterIds, expired: true or all: true', { option: 'clusterIds' });
    }
    return cleanupClusters(DropletCluster.#sweepAdapter(options), options, log);
  }

  /**
   * Every dask-cloud cluster of the account, from its tags alone: id, region, state, Droplets by
   * role, scheduler address, creation and expiry. Read calls only; works from any machine with
   * the token.
   */
  static async list(options: DropletListOptions = {}): Promise<ClusterSummary[]> {
    return listVmClusters(DropletCluster.#sweepAdapter(options), options, log);
  }

  /** An adapter for sweeps (listing and deleting): the creation settings are never used. */
  static #sweepAdapter(options: DropletListOptions): DropletAdapter {
    const { token, endpoint, client, requestTimeoutMs } = options;
    const resolved = validateDropletOptions({ token, endpoint, client, requestTimeoutMs });
    if (resolved.token === undefined && client === undefined) {
      throw new CredentialsError(`DigitalOcean: no API token: neither the token option nor ${TOKEN_ENV.join(' or ')} is set`, { details: { provider: 'digitalocean', fix: NO_TOKEN_FIX } });
    }
    const api = new DoApi({ token: resolved.token, client, endpoint, requestTimeoutMs: requestTimeoutMs ?? DROPLET_DEFAULTS.requestTimeoutMs });
    return new DropletAdapter({
      api,
      region: DROPLET_DEFAULTS.region,
      regionExplicit: false,
      schedulerSize: DROPLET_DEFAULTS.size,
      workerSize: DROPLET_DEFAULTS.size,
      image: DROPLET_DEFAULTS.image,
      sshKeys: [],
      monitoring: false,
      tags: [],
      privateNetworking: false,
      ingressCidrs: [],
      activeTimeoutMs: DROPLET_DEFAULTS.activeTimeoutMs,
      pollIntervalMs: DROPLET_DEFAULTS.pollIntervalMs,
    });
  }

  /** The region the Droplets are in (a given VPC's region when no region was chosen). */
  get region(): string {
    return this.#adapter.region;
  }
}
