/**
 * Dask clusters on AWS EC2: one scheduler instance and N worker instances in a per-cluster
 * security group, mutual TLS by default. The project README documents every option, what is
 * created and how it is cleaned up.
 *
 * `@aws-sdk/client-ec2` is loaded on the first API call, never by importing this module.
 */
import { resolveOptions } from '../../src/config';
import { createLog } from '../../src/log';
import { VMCluster, cleanupClusters, listVmClusters, type CleanupOptions, type CleanupReport, type ClusterSummary } from '../../src/cluster/vm';
import { ValidationError } from '../../src/errors';
import { Ec2Adapter } from './adapter';
import { EC2_DEFAULTS, resolveEc2Settings, type EC2ClusterOptions } from './options';
import { requireCloudSdk } from '../../src/peer';

// Refuse to load without the SDK: one typed error naming the install line.
requireCloudSdk('ec2');

export type { EC2ClusterOptions } from './options';
export { EC2_DEFAULTS } from './options';

/** How every EC2Cluster talks to the API: bounded concurrency, our own retries. */
function apiOptions(options: Pick<EC2ClusterOptions, 'endpoint' | 'credentials' | 'client' | 'maxAttempts' | 'requestTimeoutMs'>) {
  return {
    endpoint: options.endpoint,
    credentials: options.credentials,
    client: options.client,
    maxAttempts: options.maxAttempts ?? EC2_DEFAULTS.maxAttempts,
    concurrency: 8,
    requestTimeoutMs: options.requestTimeoutMs ?? EC2_DEFAULTS.requestTimeoutMs,
    deadlineMs: 5 * 60_000,
    baseDelayMs: 500,
    maxDelayMs: 10_000,
  };
}

/** Where `EC2Cluster.list` and `cleanup` look: a region and its connection. */
export type EC2ListOptions = Pick<EC2ClusterOptions, 'region' | 'endpoint' | 'credentials' | 'client' | 'maxAttempts' | 'requestTimeoutMs'>;

/**
 * A Dask cluster on EC2 instances.
 *
 * ```ts
 * await using cluster = await EC2Cluster.start({ region: 'eu-west-1', nWorkers: 2 });
 * await cluster.writeClientConfig('./dask-client'); // then DASK_CONFIG=./dask-client python -c 'from distributed import Client; Client()'
 * ```
 *
 * The constructor validates every option (region included) and creates nothing; `start()`
 * provisions and, on any failure, deletes everything it created before it throws.
 */
export class EC2Cluster extends VMCluster {
  readonly #adapter: Ec2Adapter;
  /** The region of every resource (undefined when a `client` you passed decides it). */
  readonly region: string | undefined;

  constructor(options: EC2ClusterOptions = {}) {
    // Config file and DASK_CLOUD_* environment variables under the caller's options.
    options = resolveOptions('ec2', options);
    if (typeof options !== 'object' || options === null) throw new ValidationError('options must be an object');
    const settings = resolveEc2Settings(options);
    const adapter = new Ec2Adapter({
      settings,
      api: apiOptions(options),
    });
    // The credentials and client stay inside the request pipeline: the core keeps only what it uses.
    const { credentials: _credentials, client: _client, ...common } = options;
    super(common, adapter);
    this.#adapter = adapter;
    this.region = settings.region;
  }

  /**
   * A handle for a running cluster started by another process (or machine): built from the
   * cluster's local directory (its client credentials and saved options; see `stateDir`), with
   * its instances found by tag. It can `scale`, `adapt`, `workers`, `getLogs`,
   * `writeClientConfig` and `close` (which deletes everything by tag) like the handle that
   * started it. `options` add to the saved ones: `credentials`, and the `env` and `bootstrap` the
   * cluster was started with, which new workers need and which are never saved. Closes on
   * signals only with `closeOnSignals: true`.
   */
  static async attach(id: string, options: EC2ClusterOptions = {}): Promise<EC2Cluster> {
    return VMCluster.attachKind('ec2', id, options, (o) => new EC2Cluster(o));
  }

  protected override savedOptions(): Record<string, unknown> {
    return { ...super.savedOptions(), ...(this.region === undefined ? {} : { region: this.region }) };
  }

  /** Create and start in one step. */
  static async start(options: EC2ClusterOptions = {}): Promise<EC2Cluster> {
    return new EC2Cluster(options).start();
  }

  /**
   * Delete what clusters left behind in a region (a killed process, a crashed service): their
   * instances by tag, then their security groups. `clusterIds`, or `expired: true` (expiry tag
   * passed), or `all: true`; `dryRun` only reports.
   */
  static async cleanup(options: CleanupOptions & EC2ListOptions): Promise<CleanupReport> {
    if (options.clusterIds === undefined && !options.expired && !options.all) {
      throw new ValidationError('cleanup needs clusterIds, expired: true or all: true', { option: 'clusterIds' });
    }
    return EC2Cluster.#sweep(options, (adapter) => cleanupClusters(adapter, options, createLog('dask-cloud:cleanup:ec2')));
  }

  /**
   * Every dask-cloud cluster in the region, from its tags alone: id, zone, state, instances by
   * role, scheduler address, creation and expiry. Read calls only; works from any machine with
   * credentials.
   */
  static async list(options: EC2ListOptions & { signal?: AbortSignal } = {}): Promise<ClusterSummary[]> {
    return EC2Cluster.#sweep(options, (adapter) => listVmClusters(adapter, options, createLog('dask-cloud:list:ec2')));
  }

  /** An adapter for sweeps: only the connection options matter. */
  static async #sweep<T>(options: EC2ListOptions, fn: (adapter: Ec2Adapter) => Promise<T>): Promise<T> {
    const settings = resolveEc2Settings({ region: options.region, client: options.client, requestTimeoutMs: options.requestTimeoutMs, maxAttempts: options.maxAttempts });
    const adapter = new Ec2Adapter({ settings, api: apiOptions(options) });
    try {
      return await fn(adapter);
    } finally {
      adapter.dispose();
    }
  }

  /** Deletes every instance and the security group, then releases the SDK client we created. Idempotent. */
  override async close(): Promise<void> {
    try {
      await super.close();
    } finally {
      if (this.state === 'closed' || this.state === 'failed') this.#adapter.dispose();
    }
  }
}
