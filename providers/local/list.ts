/**
 * Listing this machine's local clusters. There is no cloud to ask: each cluster's local
 * directory names the process that owns it and that process's control socket, and the owner,
 * while it runs, says which members it has.
 */
import { clusterDir, listClusterStates, type ClusterRecord } from '../../src/cluster/state';
import type { ClusterSummary } from '../../src/cluster/vm';
import { controlRequest, isUnreachable } from './control';
import { recordOwner } from './cleanup';
import { identityAlive } from './watchdog';

/** How long `list()` waits for each owner's answer. */
const LIST_TIMEOUT_MS = 5_000;

/**
 * One local cluster as `LocalCluster.list()` sees it; the fields of a cloud's `ClusterSummary`
 * (location `localhost`), with the states a local cluster can be in.
 */
export interface LocalClusterSummary extends Omit<ClusterSummary, 'kind' | 'state' | 'location'> {
  kind: 'local';
  location: 'localhost';
  /**
   * `running`: its owner process answered. `unresponsive`: the owner runs but did not answer
   * within 5 s (busy, or stopped). `gone`: the owner has exited, and the cluster's processes with
   * it; only the directory is left (`LocalCluster.cleanup()` or `dask-cloud cleanup --provider
   * local` removes it).
   */
  state: 'running' | 'unresponsive' | 'gone';
  /** Live members, as the owner counts them (zero unless `running`). */
  counts: { scheduler: number; workers: number };
  /** The process that owns the cluster's Dask processes. */
  ownerPid?: number;
  /** The cluster's local directory (`DASK_CLOUD_HOME/clusters/<id>`). */
  stateDir: string;
}

/** Every local cluster with a directory on this machine, newest first. */
export async function listLocalClusters(): Promise<LocalClusterSummary[]> {
  const records = (await listClusterStates()).filter((r) => r.kind === 'local');
  const summaries = await Promise.all(records.map(summarize));
  return summaries.sort((a, b) => (b.created?.getTime() ?? 0) - (a.created?.getTime() ?? 0) || a.id.localeCompare(b.id));
}

async function summarize(record: ClusterRecord): Promise<LocalClusterSummary> {
  const backend = record.backend ?? {};
  const owner = recordOwner(backend);
  const ownerPid = owner === undefined ? undefined : Number(owner.split(':')[0]);
  const created = new Date(record.startedAt);
  const base = {
    id: record.id,
    kind: 'local' as const,
    location: 'localhost' as const,
    ...(Number.isNaN(created.getTime()) ? {} : { created }),
    ...(ownerPid === undefined ? {} : { ownerPid }),
    stateDir: clusterDir(record.id),
  };
  const none = { scheduler: 0, workers: 0 };
  const control = backend.control;
  if (owner === undefined || !identityAlive(owner) || typeof control !== 'string') return { ...base, state: 'gone', counts: none };
  try {
    const reply = (await controlRequest(control, 'members', {}, LIST_TIMEOUT_MS)) as { clusterId?: unknown; members?: Array<{ role?: unknown }> };
    if (reply?.clusterId !== record.id || !Array.isArray(reply.members)) return { ...base, state: 'gone', counts: none };
    const counts = {
      scheduler: reply.members.filter((m) => m?.role === 'scheduler').length,
      workers: reply.members.filter((m) => m?.role === 'worker').length,
    };
    return { ...base, state: counts.scheduler > 0 ? 'running' : 'gone', counts, ...(counts.scheduler > 0 ? { address: record.schedulerAddress } : {}) };
  } catch (err) {
    // Nobody listens: the owner closed the cluster (its directory outlived it) or is exiting.
    if (isUnreachable(err)) return { ...base, state: 'gone', counts: none };
    return { ...base, state: 'unresponsive', counts: none, address: record.schedulerAddress };
  }
}
