import { Cluster, type ClusterOptions } from '../../src/cluster/cluster';
import { resolveOptions } from '../../src/config';
import { describeValue } from '../../src/config/bounds';
import { ValidationError } from '../../src/errors';
import { LocalBackend } from './backend';
import { cleanupLocalClusters, type LocalCleanupOptions, type LocalCleanupReport } from './cleanup';
import { listLocalClusters, type LocalClusterSummary } from './list';

export { findPython, type PythonInfo } from '../../src/dask/python';
export { cleanupLocalClusters, type LocalCleanupOptions, type LocalCleanupEntry, type LocalCleanupReport } from './cleanup';
export { listLocalClusters, type LocalClusterSummary } from './list';
export { startDetachedLocal, type DetachedLocalOptions, type DetachedLocalCluster } from './supervisor';

/** LocalCluster's options; each is also declared in ./schema.ts (checked against this interface), which makes unknown keys an error. */
export interface LocalClusterOptions extends ClusterOptions {
  /**
   * Interface every process binds to, its HTTP servers included (default `127.0.0.1`): an IPv4
   * address or a host name. With `security: false` anything but loopback warns
   * (`DASK_CLOUD_INSECURE_BIND`): anyone who reaches it can run code on the cluster.
   */
  host?: string;
  /** Scheduler port (default: a free port). */
  schedulerPort?: number;
  /** Dashboard address (default: a free port on `host`), or `false` for none. */
  dashboardAddress?: string | false;
}

/**
 * A Dask cluster of local processes with the same credentials, commands and lifecycle as a
 * cloud cluster: the embedded default that needs no cloud account.
 *
 * ```ts
 * await using cluster = await LocalCluster.start({ nWorkers: 2 });
 * await cluster.writeClientConfig('./dask-client');
 * ```
 *
 * The processes are children of the Node process that started the cluster (its owner) and end
 * with it. Other processes reach the cluster through `LocalCluster.attach(id)`, which asks the
 * owner to act; `startDetachedLocal()` (and `dask-cloud up`) starts a cluster in an owner process
 * of its own, which outlives the caller.
 */
export class LocalCluster extends Cluster {
  protected declare readonly backend: LocalBackend;
  /** Security off on a non-loopback interface: said once, when start() begins. */
  readonly #insecureBind: string | undefined;

  constructor(options: LocalClusterOptions = {}) {
    // Config file and DASK_CLOUD_* environment variables under the caller's options.
    options = resolveOptions('local', options);
    if (options.schedulerPort !== undefined && (!Number.isInteger(options.schedulerPort) || options.schedulerPort < 1 || options.schedulerPort > 65535)) {
      throw new ValidationError(`schedulerPort must be an integer from 1 to 65535, got ${String(options.schedulerPort)}`, { option: 'schedulerPort' });
    }
    const dash = options.dashboardAddress;
    if (dash !== undefined && dash !== false && (typeof dash !== 'string' || !/^[A-Za-z0-9.:[\]_-]{1,260}$/.test(dash))) {
      throw new ValidationError(`dashboardAddress must be an address such as ':8787' or '127.0.0.1:8787', or false for none, got ${describeValue(dash)}`, { option: 'dashboardAddress' });
    }
    // Dask reads `host:port` by splitting at ':', so an IPv6 address cannot be expressed.
    if (options.host !== undefined && (typeof options.host !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9.-]*$/.test(options.host))) {
      throw new ValidationError(`host must be an IPv4 address or a host name, got ${describeValue(options.host)}`, { option: 'host' });
    }
    super(options, new LocalBackend(options), { schedulerTimeoutMs: 60_000, workersTimeoutMs: 60_000 });
    const host = options.host ?? '127.0.0.1';
    if (options.security === false && !isLoopback(host)) this.#insecureBind = host;
    // A `close` from an attached handle closes the cluster as this handle's close() would:
    // state, events and the local directory follow.
    this.backend.onRemoteClose = () => this.close();
  }

  /**
   * A handle for the running local cluster `id`, started by another process of this user (or by
   * `dask-cloud up`), from its local directory (`DASK_CLOUD_HOME/clusters/<id>`, else
   * `~/.config/dask-cloud/clusters/<id>`): the client credentials, and the control socket of the
   * process that owns the cluster's Dask processes. It can `scale`, `adapt`, read `workers` and
   * `getLogs`, `writeClientConfig` and `close` like the handle that started the cluster: the owner
   * launches and stops processes on its behalf, and `close()` ends the whole cluster and removes
   * the directory. A script that attached and exits leaves the cluster running (unless it was
   * attached with `closeOnSignals: true` and got a signal).
   *
   * `options` add to the saved ones: the `env` the cluster was started with is needed to add
   * workers (its values are never written to disk). Throws `E_NO_LOCAL_STATE` when this machine
   * has no directory for it, and `E_NOT_FOUND` when its owner process is gone (the processes
   * ended with it: `dask-cloud cleanup --provider local` tidies up) or no longer serves it.
   */
  static async attach(id: string, options: LocalClusterOptions = {}): Promise<LocalCluster> {
    return Cluster.attachKind('local', id, options, (o) => new LocalCluster(o));
  }

  /**
   * This user's local clusters on this machine, from their local directories: `running` when the
   * owner process answers (with its members counted), `unresponsive` when it runs but did not
   * answer in time, `gone` when it has exited (its processes ended with it; `cleanup()` removes
   * the directory). Newest first.
   */
  static async list(): Promise<LocalClusterSummary[]> {
    return listLocalClusters();
  }

  override async start(): Promise<this> {
    if (this.#insecureBind !== undefined && this.state === 'new') {
      this.emit({
        type: 'warning',
        code: 'DASK_CLOUD_INSECURE_BIND',
        clusterId: this.id,
        message:
          `security is off and the cluster listens on ${this.#insecureBind}, not on a loopback address: anyone who can reach this machine ` +
          'can connect without credentials and run code on it. Keep security on, or bind to 127.0.0.1',
        at: Date.now(),
      });
    }
    return super.start();
  }

  /**
   * Kill the processes and remove the key directories of local clusters whose owner process is
   * gone (normally the launchers' watchdog already did), and their local directories: `{
   * clusterIds }` narrows the sweep, `dryRun` only reports. Only the current user's processes
   * (Linux: found by their marker in /proc) and directories are touched; a cluster whose owner
   * still runs is left alone.
   */
  static async cleanup(options: LocalCleanupOptions = {}): Promise<LocalCleanupReport> {
    return cleanupLocalClusters(options);
  }

  /** Create and start in one step. */
  static async start(options: LocalClusterOptions = {}): Promise<LocalCluster> {
    return new LocalCluster(options).start();
  }

  /**
   * Process ids of the running scheduler and workers (each one's launcher, the leader of its
   * process group). Empty for an attached handle: the processes belong to the owner.
   */
  pids(): number[] {
    return this.backend.pids();
  }

  /**
   * Resolves once the control socket has answered its last request (at most `ms`), so that an
   * owner process can exit right after `close()` without cutting off a reply. Internal: used by
   * the detached supervisor.
   * @internal
   */
  async controlDrained(ms: number): Promise<void> {
    await this.backend.controlDrained(ms);
  }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
