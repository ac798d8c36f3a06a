import { Cluster, type ClusterOptions } from '../../src/cluster/cluster';
import { resolveOptions } from '../../src/config';
import { ValidationError } from '../../src/errors';
import { LocalBackend } from './backend';

export { findPython, type PythonInfo } from './python';

export interface LocalClusterOptions extends ClusterOptions {
  /** Python interpreter that imports `distributed` (default: DASK_CLOUD_PYTHON, then a search of PATH and /usr/bin/python3). */
  python?: string;
  /** Interface every process binds to (default `127.0.0.1`). */
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
 */
export class LocalCluster extends Cluster {
  protected declare readonly backend: LocalBackend;

  constructor(options: LocalClusterOptions = {}) {
    // Config file and DASK_CLOUD_* environment variables under the caller's options.
    options = resolveOptions('local', options);
    if (options.schedulerPort !== undefined && (!Number.isInteger(options.schedulerPort) || options.schedulerPort < 1 || options.schedulerPort > 65535)) {
      throw new ValidationError(`schedulerPort must be an integer from 1 to 65535, got ${String(options.schedulerPort)}`, { option: 'schedulerPort' });
    }
    if (options.python !== undefined && (typeof options.python !== 'string' || options.python === '')) {
      throw new ValidationError('python must be a non-empty path or command name', { option: 'python' });
    }
    super(options, new LocalBackend(options), { schedulerTimeoutMs: 60_000, workersTimeoutMs: 60_000 });
  }

  /** Create and start in one step. */
  static async start(options: LocalClusterOptions = {}): Promise<LocalCluster> {
    return new LocalCluster(options).start();
  }

  /** Process ids of the running scheduler and workers. */
  pids(): number[] {
    return this.backend.pids();
  }
}
