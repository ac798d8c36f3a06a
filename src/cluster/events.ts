import type { VersionReport } from '../dask/versions';

/** Typed progress events a cluster emits through `onEvent`. Each carries the cluster id. */
export type ClusterPhase = 'validate' | 'credentials' | 'preflight' | 'network' | 'scheduler' | 'workers' | 'ready' | 'versions' | 'scale' | 'close';

export type ClusterEvent =
  | { type: 'phase-start'; clusterId: string; phase: ClusterPhase; at: number }
  | { type: 'phase-end'; clusterId: string; phase: ClusterPhase; at: number; durationMs: number }
  | { type: 'member-launched'; clusterId: string; role: 'scheduler' | 'worker'; memberId: string; name: string; at: number }
  | { type: 'member-stopped'; clusterId: string; role: 'scheduler' | 'worker'; memberId: string; name: string; at: number }
  /** A member died on its own after start (a process exited, a VM was preempted). */
  | { type: 'member-failed'; clusterId: string; role: 'scheduler' | 'worker'; memberId: string; name: string; message: string; at: number }
  | { type: 'scheduler-ready'; clusterId: string; address: string; at: number }
  /**
   * While `start()` or `waitForWorkers(wanted)` waits: the workers registered with the scheduler
   * so far, at the first look and whenever the count changes (at most once a poll).
   */
  | { type: 'workers-registered'; clusterId: string; count: number; wanted: number; at: number }
  | { type: 'workers-ready'; clusterId: string; count: number; at: number }
  | { type: 'workers-retired'; clusterId: string; retired: string[]; notRetired: string[]; at: number }
  /**
   * Something the user should know. Also emitted through `process.emitWarning` with `code`, so a
   * script without an `onEvent` listener still sees it on stderr.
   */
  | { type: 'warning'; clusterId: string; message: string; at: number; code?: WarningCode }
  /**
   * The Docker image a VM cluster runs, and why: `explicit` (dockerImage), `requested`
   * (daskVersion/pythonVersion), `client` (matched to the local Python's Dask), `pinned` (no
   * local Python with Dask was found). `differences` says where it differs from what was asked.
   */
  | { type: 'image'; clusterId: string; image: string; basis: 'explicit' | 'requested' | 'client' | 'pinned'; differences: string[]; at: number }
  /** Versions of client, scheduler and workers, compared right after start. */
  | { type: 'versions'; clusterId: string; report: VersionReport; at: number }
  /**
   * The library is holding requests back to stay within the cloud's documented rate limit
   * (instead of being refused): `remaining` still to go at `perSecond`.
   */
  | { type: 'pacing'; clusterId: string; provider: string; operation: string; message: string; remaining: number; perSecond: number; at: number }
  | { type: 'rollback'; clusterId: string; reason: string; at: number }
  | { type: 'closed'; clusterId: string; at: number };

/** `process.emitWarning` codes of the warnings a cluster emits. */
export type WarningCode =
  /** Security off and the scheduler reachable from public addresses. */
  | 'DASK_CLOUD_INSECURE_PUBLIC'
  /** `exposeDashboard` opens the plain-HTTP dashboard to public addresses. */
  | 'DASK_CLOUD_PUBLIC_DASHBOARD'
  /** A local cluster without TLS listens on a non-loopback address. */
  | 'DASK_CLOUD_INSECURE_BIND'
  /** Certificates that end before the cluster does (or long after it). */
  | 'DASK_CLOUD_CERT_LIFETIME'
  /** Adaptive scaling could not reach the scheduler or scale. */
  | 'DASK_CLOUD_ADAPT'
  /** Scale-down could not retire workers gracefully. */
  | 'DASK_CLOUD_RETIRE'
  /** A provider-specific notice (e.g. a DigitalOcean feature not available in a region). */
  | 'DASK_CLOUD_PROVIDER'
  /** Client and cluster run different Dask, Python or serialisation versions. */
  | 'DASK_CLOUD_VERSION_MISMATCH'
  /** The cluster's local directory (for attach and the CLI) could not be written. */
  | 'DASK_CLOUD_STATE'
  /** The dashboard tunnel could not listen on the port its link names. */
  | 'DASK_CLOUD_DASHBOARD_PORT';

export type ClusterEventListener = (event: ClusterEvent) => void;
