/**
 * Dask clusters on Google Compute Engine: one scheduler VM plus N worker VMs, mutual TLS by
 * default. The project README documents every option, the resources created and cleanup.
 */
import { resolveOptions } from '../../src/config';
import { createLog } from '../../src/log';
import { cleanupClusters, listVmClusters, VMCluster, type CleanupOptions, type CleanupReport, type ClusterSummary, type VMClusterOptions } from '../../src/cluster/vm';
import { DaskCloudError, ValidationError } from '../../src/errors';
import { savableOptions } from '../../src/cluster/state';
import { GcpAdapter } from './adapter';
import { GcpApi } from './api';
import { resolveGcpOptions, type GCPClusterOptions, type GcpConnectionOptions, type ResolvedConnection } from './options';
import { requireCloudSdk } from '../../src/peer';

// Refuse to load without google-auth-library: one typed error naming the install line.
requireCloudSdk('gcp');

export type { GCPClusterOptions, GcpAuthClient, GcpConnectionOptions, GcpClientOptions, GcpEndpoint, GcpGpu } from './options';
export { GCP_DEFAULTS, resolveProjectId } from './options';
export { clusterTag, roleTag } from './adapter';

const log = createLog('dask-cloud:gcp');

/** Options of {@link GCPCluster.cleanup}: what to delete, and how to reach the project. */
/** Where `GCPCluster.list` looks: the project and its connection, and `zone` to look in one zone only. */
export interface GCPListOptions extends GcpConnectionOptions {
  /** Look only in this zone. Default: every zone of the project. */
  zone?: string;
  signal?: AbortSignal;
}

export interface GCPCleanupOptions extends CleanupOptions, GcpConnectionOptions {
  /**
   * Sweep only this zone. Default: every zone of the project (one `instances.aggregatedList`),
   * so a cluster is found wherever it was started. A zone from the config file or the
   * environment does not narrow a sweep; only this option does.
   */
  zone?: string;
}

function apiFor(conn: ResolvedConnection): GcpApi {
  return new GcpApi({ ...conn, log });
}

/**
 * The core's options, with the GCP `gpu` object turned into the Docker runtime's `--gpus all`.
 * Credentials and the API client stay with the request pipeline: the core never holds them.
 */
function coreOptions(options: GCPClusterOptions): VMClusterOptions {
  const { gpu, authClient: _authClient, clientOptions: _clientOptions, ...rest } = options;
  return { ...rest, gpu: gpu !== undefined && (options.runtime ?? 'docker') === 'docker' };
}

/**
 * A Dask cluster on Compute Engine VMs.
 *
 * ```ts
 * await using cluster = await GCPCluster.start({ projectId: 'my-proj', zone: 'us-central1-a', nWorkers: 4 });
 * await cluster.writeClientConfig('./dask-client');   // DASK_CONFIG=./dask-client python -c 'Client()'
 * await cluster.scale(10);
 * ```
 *
 * The constructor validates every option (and finds the project id) without any API call;
 * `start()` creates the firewall rules, the scheduler and the workers, and deletes everything
 * again if anything fails.
 */
export class GCPCluster extends VMCluster {
  /** The project the VMs live in. */
  readonly projectId: string;
  /** The zone of every VM. */
  readonly zone: string;
  readonly #api: GcpApi;
  /** The `gpu` option as given (the core holds only whether there is one). */
  readonly #gpu: GCPClusterOptions['gpu'];

  constructor(options: GCPClusterOptions = {}) {
    // Config file and DASK_CLOUD_* environment variables under the caller's options.
    options = resolveOptions('gcp', options);
    const config = resolveGcpOptions(options);
    const api = apiFor(config);
    super(coreOptions(options), new GcpAdapter(api, config));
    this.#api = api;
    this.#gpu = options.gpu;
    this.projectId = config.projectId;
    this.zone = config.zone;
  }

  /** Create and start in one step. */
  static async start(options: GCPClusterOptions = {}): Promise<GCPCluster> {
    return new GCPCluster(options).start();
  }

  /**
   * A handle for a running cluster started by another process (or machine): built from the
   * cluster's local directory (its client credentials and saved options; see `stateDir`), with
   * its instances found by label. It can `scale`, `adapt`, `workers`, `getLogs`,
   * `writeClientConfig` and `close` (which deletes everything by label) like the handle that
   * started it. `options` add to the saved ones: credentials (`authClient`), and the `env` and
   * `bootstrap` the cluster was started with, which new workers need and which are never saved.
   * Closes on signals only with `closeOnSignals: true`.
   */
  static async attach(id: string, options: GCPClusterOptions = {}): Promise<GCPCluster> {
    return VMCluster.attachKind('gcp', id, options, (o) => new GCPCluster(o));
  }

  protected override savedOptions(): Record<string, unknown> {
    const { gpu: _gpu, ...saved } = super.savedOptions();
    return { ...saved, ...savableOptions({ gpu: this.#gpu }), projectId: this.projectId, zone: this.zone };
  }

  /**
   * Delete what clusters left behind (a killed process, a crashed service), found by their
   * labels and firewall rule names in one project, in every zone unless `zone` is given:
   * `{ clusterIds }`, `{ expired: true }` (expiry label passed) or `{ all: true }`; `dryRun` only
   * reports.
   */
  static async cleanup(options: GCPCleanupOptions): Promise<CleanupReport> {
    if (options.clusterIds === undefined && !options.expired && !options.all) {
      throw new ValidationError('cleanup needs clusterIds, expired: true or all: true', { option: 'clusterIds' });
    }
    return GCPCluster.#sweep(options, (adapter) => cleanupClusters(adapter, options, log));
  }

  /**
   * Every dask-cloud cluster in the project (every zone unless `zone` is given), from its labels
   * alone: id, zone, state, instances by role, scheduler address, creation and expiry. Read
   * calls only; works from any machine with credentials.
   */
  static async list(options: GCPListOptions = {}): Promise<ClusterSummary[]> {
    return GCPCluster.#sweep(options, (adapter) => listVmClusters(adapter, options, log));
  }

  /** An adapter for sweeps: only the connection options matter; the rest of the config is never used. */
  static async #sweep<T>(options: GCPListOptions, fn: (adapter: GcpAdapter) => Promise<T>): Promise<T> {
    const config = resolveGcpOptions({ ...options, maxRunDuration: false });
    const api = apiFor(config);
    try {
      return await fn(new GcpAdapter(api, config, { allZones: options.zone === undefined }));
    } finally {
      await api.close();
    }
  }

  override async start(): Promise<this> {
    try {
      return await super.start();
    } catch (err) {
      // The rollback deleted everything: the API client goes too (a failed cluster never restarts).
      // A rollback that left something keeps them, for the close() that retries it.
      const leftovers = DaskCloudError.isInstance(err) && err.details.leftovers !== undefined;
      if (this.state === 'failed' && !leftovers) await this.#api.close();
      throw err;
    }
  }

  override async close(): Promise<void> {
    try {
      await super.close();
    } finally {
      // A close that failed keeps them: close() again retries what is left.
      if (this.state === 'closed' || this.state === 'failed') await this.#api.close();
    }
  }
}
