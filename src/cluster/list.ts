/**
 * `listClusters({ provider, ... })`: every dask-cloud cluster of one cloud account, read from the
 * labels and tags its resources carry. Nothing local is needed, so it works from any machine with
 * the cloud's credentials. Each provider's SDK is loaded only when its clusters are listed.
 */
import { ValidationError } from '../errors';
import { describeValue } from '../config/bounds';
import type { ClusterSummary } from './vm';
import type { GCPListOptions } from '../../providers/gcp';
import type { EC2ListOptions } from '../../providers/ec2';
import type { DropletListOptions } from '../../providers/digitalocean';

export type ListClustersOptions =
  | ({ provider: 'gcp' } & GCPListOptions)
  | ({ provider: 'ec2'; signal?: AbortSignal } & EC2ListOptions)
  | ({ provider: 'digitalocean' } & DropletListOptions);

/** One summary per cluster (id, kind, location, state, instances by role, address, created, expires), newest first. */
export async function listClusters(options: ListClustersOptions): Promise<ClusterSummary[]> {
  const { provider, ...rest } = (options ?? {}) as ListClustersOptions;
  switch (provider) {
    case 'gcp': {
      const { GCPCluster } = await import('../../providers/gcp');
      return GCPCluster.list(rest as GCPListOptions);
    }
    case 'ec2': {
      const { EC2Cluster } = await import('../../providers/ec2');
      return EC2Cluster.list(rest as EC2ListOptions);
    }
    case 'digitalocean': {
      const { DropletCluster } = await import('../../providers/digitalocean');
      return DropletCluster.list(rest as DropletListOptions);
    }
    default:
      throw new ValidationError(`provider must be gcp, ec2 or digitalocean, got ${describeValue(provider)}`, { option: 'provider' });
  }
}
