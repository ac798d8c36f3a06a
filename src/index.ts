import 'reflect-metadata';

export * from './errors';
export { Security } from './security';
export type * from './security';
export { Cluster, validateClusterOptions } from './cluster/cluster';
export type { ClusterOptions, ClusterState } from './cluster/cluster';
export type { ClusterEvent, ClusterEventListener, ClusterPhase } from './cluster/events';
export type { ClusterBackend, Member, MemberSpec, BackendContext, SchedulerLaunch } from './cluster/backend';
export { SchedulerClient, waitForScheduler, waitForWorkers, parseAddress } from './dask';
export type * from './dask';
export { daskProcessSpec, DEFAULT_SCHEDULER_PORT, DEFAULT_DASHBOARD_PORT } from './dask/command';
export type { DaskProcessOptions, DaskProcessSpec, DaskFile } from './dask/command';
export { renderUserData, USER_DATA_LIMITS } from './cloud-init';
export type * from './cloud-init';
export { LocalCluster, findPython } from '../providers/local';
export type { LocalClusterOptions, PythonInfo } from '../providers/local';
