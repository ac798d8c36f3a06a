/**
 * The core of dask-cloud: LocalCluster, Security, the cloud-init renderer, the Dask wire client,
 * errors, and what every cluster kind shares. Each cloud has its own entry point, so its SDK is
 * only needed by those who use it: `dask-cloud/gcp`, `dask-cloud/ec2`, `dask-cloud/digitalocean`.
 */
export * from './errors';
export { Security, DEFAULT_TLS12_CIPHERS } from './security';
export { MAX_TIMER_MS, MAX_WORKERS, MAX_VALIDITY_DAYS, MAX_EXPIRES_AFTER_HOURS } from './config/bounds';
export type * from './security';
export { Cluster, validateClusterOptions } from './cluster/cluster';
export type { ClusterOptions, ClusterState, AdaptOptions, Adaptive } from './cluster/cluster';
export type { ClusterEvent, ClusterEventListener, ClusterPhase, WarningCode } from './cluster/events';
export type { ClusterBackend, Member, MemberSpec, BackendContext, SchedulerLaunch } from './cluster/backend';
export { SchedulerClient, waitForScheduler, waitForWorkers, parseAddress } from './dask';
export type * from './dask';
export { daskProcessSpec, DEFAULT_SCHEDULER_PORT, DEFAULT_DASHBOARD_PORT, DEFAULT_DASHBOARD_TLS_PORT } from './dask/command';
export type { DaskProcessOptions, DaskProcessSpec, DaskFile } from './dask/command';
export { chooseDaskImage, decideDaskImage, pinnedDaskImage, DASK_IMAGE_RELEASES, DASK_IMAGE_REPOSITORY } from './dask/images';
export type { ImageBasis, ImageDecision } from './dask/images';
export type { ImageChoice } from './dask/images';
export { compareVersions, describeMismatches } from './dask/versions';
export type { VersionReport, VersionMismatch, VersionSet } from './dask/versions';
export type { DaskVersions } from './dask/python';
export { renderUserData, USER_DATA_LIMITS } from './cloud-init';
export type * from './cloud-init';
export { LocalCluster, findPython, cleanupLocalClusters, listLocalClusters, startDetachedLocal } from '../providers/local';
export type { LocalClusterOptions, PythonInfo, LocalCleanupOptions, LocalCleanupEntry, LocalCleanupReport, LocalClusterSummary, DetachedLocalOptions, DetachedLocalCluster } from '../providers/local';
export { openDashboardTunnel } from './dashboard';
export type { DashboardTunnel, DashboardTunnelOptions } from './dashboard';
export { VMCluster, cleanupClusters, LABELS } from './cluster/vm';
export type { VMClusterOptions, CloudAdapter, CleanupOptions, CleanupReport, NetworkPlan, NetworkSetup, Instance, InstanceRequest } from './cluster/vm';
export { attachCluster, listClusters, type ListClustersOptions } from './cluster/list';
export { clusterDir, clustersRoot, type ClusterRecord } from './cluster/state';
export type { ClusterSummary } from './cluster/vm';
export type { Log } from './log';
export { CLOUD_SDKS, type Cloud } from './peer';
export { optionSpecs, suggestOption, optionFromText, CLUSTER_KINDS } from './config/schema';
export type { OptionSpec, OptionType } from './config/schema';
export type { ClusterKind } from './config';
export { parseDaskDuration, parseDaskBytes } from './config/dask-format';
