/**
 * The small interface a cluster backend (a cloud provider, or local processes) implements.
 * The core (`Cluster`) owns every bit of ordering, waiting, rollback and scaling; a backend only
 * knows how to create and delete its own kind of member.
 */
import type { Log } from '../log';
import type { DaskVersions } from '../dask/python';
import type { Security } from '../security/security';
import type { DaskProcessOptions } from '../dask/command';
import type { ClusterEvent } from './events';
import type { PreflightReport } from './preflight';
import type { ClusterRecord } from './state';

export type MemberRole = 'scheduler' | 'worker';

/** What the core asks a backend to launch: a named Dask process with its options. */
export interface MemberSpec {
  role: MemberRole;
  name: string;
  /** Process options except what the backend decides (TLS dir, bind host). */
  process: Omit<DaskProcessOptions, 'tlsDir' | 'security' | 'role'>;
}

/** A launched member: a process, a VM, a droplet. */
export interface Member {
  id: string;
  role: MemberRole;
  name: string;
  /** Address cluster members use to reach it (private network). */
  privateHost?: string;
  /** Address reachable from outside the network, when it has one. */
  publicHost?: string;
}

export interface SchedulerLaunch {
  member: Member;
  /** What workers dial: always the scheduler's private address. */
  workerAddress: string;
  /**
   * What this library and the user's client dial. May still be resolving (a public address can
   * appear only once the VM runs): the core launches the workers before awaiting it.
   */
  clientAddress: string | Promise<string>;
  /** The dashboard's URL where the user's browser can open it directly (a local cluster's), if any. */
  dashboardLink?: string;
}

/** A running cluster as a backend finds it when a handle attaches to it. */
export interface AdoptedCluster {
  scheduler: Member;
  workers: Member[];
  /** What this library and the user's client dial. */
  clientAddress: string;
  /** What workers dial (the scheduler's private address). */
  workerAddress: string;
  dashboardLink?: string;
}

export interface BackendContext {
  clusterId: string;
  security: Security | false;
  /** Aborted when start is cancelled or fails; backends pass it to every wait. */
  signal: AbortSignal;
  log: Log;
  emit(event: ClusterEvent): void;
  /** A backend calls this when a member dies on its own (process exit, VM terminated). */
  memberFailed(member: Member, error: Error): void;
}

export interface ClusterBackend {
  /** Short name used in logs and errors, e.g. `local`, `gcp`. */
  readonly kind: string;
  /**
   * Checks that need no API call (user-data of both roles renders and fits). Throws a typed
   * error; runs before anything else talks to a cloud.
   */
  validate?(ctx: BackendContext, specs: { scheduler: MemberSpec; worker: MemberSpec }): void;
  /**
   * Settles what depends on the local client, after `validate` and before any cloud call: a VM
   * cluster picks its image from the client's Dask and Python (`client` is undefined when no
   * local Python with Dask was found).
   */
  resolve?(ctx: BackendContext, client: DaskVersions | undefined): Promise<void>;
  /** Read-only checks of the account (credentials, location, image, network, NAT, quota, permissions). */
  preflight?(ctx: BackendContext, report: PreflightReport): Promise<void>;
  /** Create shared resources (network, firewall). Called once, first. */
  prepare(ctx: BackendContext): Promise<void>;
  launchScheduler(ctx: BackendContext, spec: MemberSpec): Promise<SchedulerLaunch>;
  launchWorkers(ctx: BackendContext, specs: MemberSpec[]): Promise<Member[]>;
  /** Delete the given members. "Not found" counts as done. */
  stopMembers(ctx: BackendContext, members: Member[]): Promise<void>;
  /**
   * Delete everything this backend created for the cluster. Idempotent; safe after a partial
   * start. Tries every deletion even when one fails, then throws a `TeardownError` naming what is
   * left.
   */
  teardown(ctx: BackendContext): Promise<void>;
  /**
   * Pause between readiness checks of the scheduler and the workers (default 500 ms; it does not
   * grow). A local backend polls every 50 ms, a VM backend every 250 ms: a refused connect costs
   * nothing, and every pause is time the user waits after the cluster is up.
   */
  readonly readinessPollMs?: number;
  /**
   * `teardown` deletes every member itself (a VM backend sweeps by label, in one call where the
   * cloud can), so `close()` does not stop the members one by one first.
   */
  readonly teardownDeletesMembers?: boolean;
  /** The command that deletes what a failed teardown left behind (with the flags naming the location). */
  cleanupCommand?(clusterId: string): string;
  /**
   * Take over a running cluster started by another process (`attach`): find its members by label
   * (or from their owner) so that scale, logs and close work as on the handle that started it.
   * Throws `E_NOT_FOUND` when the cluster has no scheduler any more. Read calls only.
   */
  adopt?(ctx: BackendContext, record: ClusterRecord): Promise<AdoptedCluster>;
  /** What the backend needs in the cluster's record to adopt it later (non-secret). */
  recordState?(): Record<string, unknown>;
  /** New workers of an attached handle need the worker's credentials from the local directory (VMs). */
  readonly savesWorkerCredentials?: boolean;
  /**
   * Where the user's side of a dashboard tunnel dials (a VM scheduler's mutual-TLS terminator),
   * or undefined when the dashboard is reached directly (`SchedulerLaunch.dashboardLink`) or not at all.
   */
  dashboardTarget?(scheduler: Member): { host: string; port: number } | undefined;
  /** The tail of a member's log / console output, for error messages. Never throws. */
  diagnostics(member: Member): Promise<string>;
}
