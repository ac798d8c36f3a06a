/**
 * `listClusters({ provider, ... })`: every dask-cloud cluster of one cloud account, read from the
 * labels and tags its resources carry. Nothing local is needed, so it works from any machine with
 * the cloud's credentials. Each provider's SDK is loaded only when its clusters are listed.
 */
import { ValidationError } from '../errors';
import { describeValue } from '../config/bounds';
import type { ClusterSummary } from './vm';
import type { Cluster } from './cluster';
import { readRecordOf } from './state';

/**
 * Which cloud to list, and that cloud's connection options: the same as `GCPCluster.list`,
 * `EC2Cluster.list` or `DropletCluster.list` take (those are typed in full; this one stays loose
 * so the core's types never pull in a cloud SDK's). The cloud's SDK must be installed.
 */
export interface ListClustersOptions {
  provider: 'gcp' | 'ec2' | 'digitalocean';
  signal?: AbortSignal;
  [option: string]: unknown;
}

/** One summary per cluster (id, kind, location, state, instances by role, address, created, expires), newest first. */
export async function listClusters(options: ListClustersOptions): Promise<ClusterSummary[]> {
  const { provider, ...rest } = (options ?? {}) as ListClustersOptions;
  switch (provider) {
    case 'gcp': {
      const { GCPCluster } = await import('../../providers/gcp');
      return GCPCluster.list(rest as Parameters<typeof GCPCluster.list>[0]);
    }
    case 'ec2': {
      const { EC2Cluster } = await import('../../providers/ec2');
      return EC2Cluster.list(rest as Parameters<typeof EC2Cluster.list>[0]);
    }
    case 'digitalocean': {
      const { DropletCluster } = await import('../../providers/digitalocean');
      return DropletCluster.list(rest as Parameters<typeof DropletCluster.list>[0]);
    }
    default:
      throw new ValidationError(`provider must be gcp, ec2 or digitalocean, got ${describeValue(provider)}`, { option: 'provider' });
  }
}

/**
 * A handle for the running cluster `id`, of whatever kind its local directory says it is (see
 * each kind's static `attach`). `options` add to the saved ones: a cloud's credentials, and the
 * `env` and `bootstrap` the cluster was started with (needed to add workers; never saved).
 * Throws `E_NO_LOCAL_STATE` when this machine has no directory for it.
 */
export async function attachCluster(id: string, options: Record<string, unknown> = {}): Promise<Cluster> {
  const { record } = await readRecordOf(id);
  switch (record.kind) {
    case 'local': {
      const { LocalCluster } = await import('../../providers/local');
      return LocalCluster.attach(id, options);
    }
    case 'gcp': {
      const { GCPCluster } = await import('../../providers/gcp');
      return GCPCluster.attach(id, options);
    }
    case 'ec2': {
      const { EC2Cluster } = await import('../../providers/ec2');
      return EC2Cluster.attach(id, options);
    }
    case 'digitalocean': {
      const { DropletCluster } = await import('../../providers/digitalocean');
      return DropletCluster.attach(id, options);
    }
    default:
      throw new ValidationError(`cluster ${id}: unknown kind ${describeValue(record.kind)} in its record`, { option: 'id' });
  }
}
