/**
 * Clusters of cloud VMs. Everything that is the same on every cloud lives here once: user-data
 * rendering and size limits, labels, batching of creates, firewall planning, tracking of every
 * resource created so a rollback can delete it, the tag sweep on close, and a watch that notices
 * VMs that stop on their own. A cloud only implements the small `CloudAdapter` below.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { BOOTSTRAP_FAILED_MARK, renderUserData, type RenderedUserData } from '../cloud-init';
import { DEFAULT_DASHBOARD_PORT, DEFAULT_DASHBOARD_TLS_PORT, DEFAULT_SCHEDULER_PORT, protocolFor } from '../dask/command';
import { decideDaskImage, imageClient, parseRelease } from '../dask/images';
import type { DaskVersions } from '../dask/python';
import { CloudApiError, DaskCloudError, SecurityError, TeardownError, ValidationError } from '../errors';
import { Security } from '../security/security';
import type { AdoptedCluster, BackendContext, ClusterBackend, Member, MemberRole, MemberSpec, SchedulerLaunch } from './backend';
import type { ClusterRecord } from './state';
import { Cluster, type ClusterOptions } from './cluster';
import { PreflightReport } from './preflight';
import { retry } from './retry';
import { checkBoolean, checkOptionsObject, checkPositive, checkTimerMs, describeValue, MAX_EXPIRES_AFTER_HOURS } from '../config/bounds';

/** Label / tag keys every resource carries from the moment it is created. */
export const LABELS = Object.freeze({
  cluster: 'dask-cloud-cluster',
  role: 'dask-cloud-role',
  expires: 'dask-cloud-expires',
  /** On the scheduler: `tls` or `tcp`, so a listing can give its address without local files. */
  protocol: 'dask-cloud-protocol',
  /** On the scheduler: the port clients dial. */
  port: 'dask-cloud-port',
});

export interface VMClusterOptions extends ClusterOptions {
  /** No public addresses at all; the scheduler is reachable only from inside the network (default false). */
  privateNetworking?: boolean;
  /** Public mode: who may reach the scheduler port (default `['0.0.0.0/0']`: mutual TLS guards it). */
  ingressCidrs?: string[];
  /** Scheduler port (default 8786). */
  schedulerPort?: number;
  /** Open the dashboard port to `ingressCidrs` too (default false: reach it through a tunnel). */
  exposeDashboard?: boolean;
  /** `docker` (default) runs the Dask image; `native` runs the VM image's own `dask`. */
  runtime?: 'docker' | 'native';
  /**
   * Docker image the VMs run, used as it is (dask-cloudprovider's `docker_image`). Default: the
   * published Dask image matching `daskVersion` and `pythonVersion`.
   */
  dockerImage?: string;
  /**
   * The Dask release the default image runs: `'auto'` (default) follows the local client (the
   * `python` option's interpreter), so client and cluster speak the same protocol; or a release
   * such as `'2024.12.1'`. Without a local Python with Dask, `'auto'` means the pinned default
   * (`ghcr.io/dask/dask:2025.11.0`, Python 3.10), and a warning says so.
   */
  daskVersion?: string;
  /** The Python minor of the default image, e.g. `'3.12'` (default: the local client's). */
  pythonVersion?: string;
  /** Docker runtime: install Docker on boot when missing (default true). */
  installDocker?: boolean;
  /** Docker runtime: `--gpus all`. */
  gpu?: boolean;
  /** Native runtime: the interpreter that has `distributed` (default `/usr/bin/python3`). */
  pythonPath?: string;
  /** Shell commands each VM runs before Dask starts. */
  bootstrap?: string[];
  /** Power a VM off when its Dask process exits (default true). */
  autoShutdown?: boolean;
  /** Hours after which resources count as expired for `cleanup()` sweeps (default 24). */
  expiresAfterHours?: number;
  /**
   * How often the cluster's VMs are listed to notice one that stopped on its own (default 15 s;
   * 0 turns it off). During `start()` such a VM fails the start at once, with its console
   * output, instead of after the readiness timeout; later it is reported as `member-failed`.
   */
  memberWatchIntervalMs?: number;
}

/** What the core tells an adapter about the network a cluster needs. */
export interface NetworkPlan {
  clusterId: string;
  labels: Record<string, string>;
  privateNetworking: boolean;
  schedulerPort: number;
  /** The plain dashboard (opened only with `exposeDashboard`, or inside the network without TLS). */
  dashboardPort: number;
  /** The dashboard's mutual-TLS terminator, when security is on. */
  dashboardTlsPort?: number;
  /**
   * Ingress rules for the scheduler VM. Cluster members always reach each other on every TCP
   * port (workers and nannies listen on random ports); adapters add that rule themselves using
   * their own mechanism (self-referencing group, target tags, cluster tag).
   */
  ingress: Array<{ ports: [number, number]; cidrs: string[] | 'network'; why: string }>;
  /** Workers the cluster starts with (quota checks count the scheduler on top). */
  nWorkers: number;
  /**
   * Whether VMs need outbound internet while booting (the docker runtime installs Docker and
   * pulls the image). Private mode then needs a NAT; a `native` runtime on a baked image does not.
   */
  needsEgress: boolean;
}

/** Network work `ensureNetwork` started and did not wait for. */
export interface NetworkSetup {
  /**
   * Resolves once the firewall rules / security group rules are in effect; rejects with why not.
   * Not abandoned on abort: the rollback needs it settled before it can see and delete the result.
   */
  inEffect: Promise<void>;
  /**
   * Resolves once the cloud has answered the requests (accepted them: a request or two, sent
   * beside the scheduler's create and answered long before its address is known); rejects with a
   * refusal. The core waits for it before it launches the workers, so a refusal (of a call the
   * preflight could not try ahead) costs no worker's create. Where taking effect is quick, it is
   * `inEffect` itself; where it takes seconds (GCP's firewall operations), the workers launch
   * while it does. Unset: the workers wait for nothing.
   */
  accepted?: Promise<void>;
}

export interface InstanceRequest {
  role: MemberRole;
  /** One name per instance; a batch shares one user-data. */
  names: string[];
  userData: RenderedUserData;
  labels: Record<string, string>;
}

export interface Instance {
  id: string;
  name: string;
  role: MemberRole;
  privateIp?: string;
  publicIp?: string;
  /**
   * The cloud's state name when the VM is stopping or stopped (powered off from inside, or
   * terminated); absent while it is being created or running.
   */
  stoppedState?: string;
}

export interface AdapterContext {
  clusterId: string;
  signal: AbortSignal;
  log: BackendContext['log'];
  /**
   * Reports an instance that failed after its create call returned (an asynchronous create
   * error, a VM that died): a running start() stops waiting and rolls back. Absent in cleanup.
   */
  memberFailed?: (instance: Instance, error: Error) => void;
  /** Reports that calls are being held back to the cloud's rate limit (a `pacing` event). Absent in cleanup. */
  pacing?: (info: { operation: string; message: string; remaining: number; perSecond: number }) => void;
}

/** The cloud-specific part of a VM cluster. All methods honour `ctx.signal`; deletes treat "not found" as done. */
export interface CloudAdapter {
  readonly kind: string;
  /** Max user-data bytes the cloud accepts. */
  readonly userDataLimit: number;
  /** Whether the cloud can carry gzip (binary) user-data. */
  readonly binaryUserData: boolean;
  /** Max instances one create call may make. */
  readonly maxBatch: number;
  /**
   * Read-only checks and look-ups (credentials, location, image, network, NAT, quotas,
   * permissions). Records one result per check in `report` (see `PreflightReport.check`) and
   * makes no mutating call; what it resolves (image, subnet) is kept for the create calls. A
   * failed credentials check ends it: the rest cannot be checked.
   */
  preflight(ctx: AdapterContext, plan: NetworkPlan, report: PreflightReport): Promise<void>;
  /**
   * Create the per-cluster firewall / security group. It may resolve once the cloud accepted the
   * requests, before they took effect, where VMs can be created meanwhile: it then hands back
   * that work (`NetworkSetup.inEffect`), and the core awaits it before it dials the scheduler and
   * before it deletes the network.
   */
  ensureNetwork(ctx: AdapterContext, plan: NetworkPlan): Promise<NetworkSetup | void>;
  /** Create instances; resolve once ids exist. `onCreated` is called as soon as ids are known, before any wait. */
  createInstances(ctx: AdapterContext, request: InstanceRequest, onCreated: (ids: string[]) => void): Promise<Instance[]>;
  /** Wait until the instance has its private (and, if wanted, public) address. */
  waitForAddresses(ctx: AdapterContext, instance: Instance, wantPublic: boolean): Promise<Instance>;
  deleteInstances(ctx: AdapterContext, ids: string[]): Promise<void>;
  /**
   * Deletes every instance carrying the cluster label in one call, where the cloud has one
   * (DigitalOcean's delete by tag). Teardown and cleanup then make no call per instance.
   */
  deleteLabelled?(ctx: AdapterContext): Promise<void>;
  /** Every instance carrying the cluster label (for the sweep on close). */
  listInstances(ctx: AdapterContext): Promise<Instance[]>;
  /**
   * The given instances in whatever state they are, terminated ones included (with
   * `stoppedState`), for the member watch: a VM that died before the watch first saw it must
   * not look like one the cloud does not show yet. Ids the cloud does not know yet are left out.
   * Without it the watch uses `listInstances`.
   */
  describeInstances?(ctx: AdapterContext, ids: string[]): Promise<Instance[]>;
  /**
   * An attached handle is about to create instances in a cluster another process started: find
   * the per-cluster network resources `ensureNetwork` made then (e.g. the security group's id).
   * Read calls only; runs after `preflight` has resolved image and network.
   */
  adoptNetwork?(ctx: AdapterContext, plan: NetworkPlan): Promise<void>;
  /**
   * Whether `deleteNetwork` may run while the instances are still being deleted (nothing the
   * cloud has refuses it, as GCP firewall rules): teardown then runs both at once.
   */
  readonly networkIndependentOfInstances?: boolean;
  /** Delete the per-cluster network resources; retried by the core while instances are still going away. */
  deleteNetwork(ctx: AdapterContext): Promise<void>;
  /** Whether an error from deleteNetwork means "still in use, try again". */
  isDependencyError?(err: unknown): boolean;
  consoleOutput(ctx: AdapterContext, id: string): Promise<string>;
  /** CLI flags that name where the cluster lives, for the cleanup command in errors (e.g. `['--region', 'eu-west-1']`). */
  cleanupFlags?(): string[];
  /**
   * Every cluster that has resources in this account/project/region, from their labels, with the
   * expiry label when present. Used by `cleanup` sweeps; `ctx.clusterId` is empty here.
   */
  listClusters?(ctx: AdapterContext): Promise<ClusterListing[]>;
}

/** One instance as a cluster listing sees it: its labels, and what the cloud says of it. */
export interface ListedInstance extends Instance {
  labels: Record<string, string>;
  /** When the cloud created it. */
  createdAt?: Date;
  /** Its zone or region. */
  location?: string;
}

/** A cluster found by its labels: what `listClusters` of an adapter returns. */
export interface ClusterListing {
  clusterId: string;
  expiresAt?: Date;
  /** Its instances (live ones; a cloud may still list stopped ones, with `stoppedState`). */
  instances?: ListedInstance[];
  /** When its oldest remaining resource was created, for a cluster that has no instance. */
  createdAt?: Date;
}

/** What `list()` tells of one cluster: all of it read from the cloud's labels and listings. */
export interface ClusterSummary {
  id: string;
  /** The cluster kind: `gcp`, `ec2`, `digitalocean`. */
  kind: string;
  /** Zone or region of its scheduler (else of any instance). */
  location?: string;
  /**
   * `running`: the scheduler's instance runs. `stopped`: it is stopping or stopped. `partial`:
   * there is no scheduler instance (a failed start or a cleanup left the rest: `down` or `cleanup`).
   */
  state: 'running' | 'stopped' | 'partial';
  /** Instances by role (stopped ones not counted). */
  counts: { scheduler: number; workers: number };
  /** What clients dial (the public address, else the private one), when the scheduler has one. */
  address?: string;
  created?: Date;
  expires?: Date;
}

/** A creation time as a cloud API gives it (RFC 3339 text, or a Date), or undefined. */
export function cloudDate(value: string | Date | null | undefined): Date | undefined {
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? undefined : value;
  const t = Date.parse(String(value ?? ''));
  return Number.isNaN(t) ? undefined : new Date(t);
}

/** Summaries of what an adapter lists: one per cluster, newest first. */
export function summarizeClusters(kind: string, listings: ClusterListing[]): ClusterSummary[] {
  const summaries = listings.map((c): ClusterSummary => {
    const instances = c.instances ?? [];
    const live = instances.filter((i) => i.stoppedState === undefined);
    const scheduler = instances.find((i) => i.role === 'scheduler' && i.stoppedState === undefined) ?? instances.find((i) => i.role === 'scheduler');
    const host = scheduler?.publicIp ?? scheduler?.privateIp;
    const protocol = scheduler?.labels[LABELS.protocol];
    const port = scheduler?.labels[LABELS.port];
    const created = [...instances.map((i) => i.createdAt), c.createdAt].filter((d): d is Date => d !== undefined).sort((a, b) => a.getTime() - b.getTime())[0];
    return {
      id: c.clusterId,
      kind,
      ...((scheduler ?? instances[0])?.location ? { location: (scheduler ?? instances[0])!.location } : {}),
      state: scheduler === undefined ? 'partial' : scheduler.stoppedState === undefined ? 'running' : 'stopped',
      counts: { scheduler: live.filter((i) => i.role === 'scheduler').length, workers: live.filter((i) => i.role === 'worker').length },
      ...(host && scheduler?.stoppedState === undefined ? { address: `${protocol === 'tcp' ? 'tcp' : 'tls'}://${host.includes(':') ? `[${host}]` : host}:${port ?? DEFAULT_SCHEDULER_PORT}` } : {}),
      ...(created ? { created } : {}),
      ...(c.expiresAt ? { expires: c.expiresAt } : {}),
    };
  });
  return summaries.sort((a, b) => (b.created?.getTime() ?? 0) - (a.created?.getTime() ?? 0) || a.id.localeCompare(b.id));
}

export interface CleanupOptions {
  /** Delete exactly these clusters' resources. */
  clusterIds?: string[];
  /** Delete every cluster whose expiry label has passed (needs `listClusters`). */
  expired?: boolean;
  /** Delete every dask-cloud cluster found (needs `listClusters`). */
  all?: boolean;
  /** Only report what would be deleted. */
  dryRun?: boolean;
  signal?: AbortSignal;
  now?: Date;
}

export interface CleanupReport {
  clusters: Array<{ clusterId: string; instances: string[]; deleted: boolean; error?: string }>;
}

/** Every dask-cloud cluster an adapter finds (read calls only), summarised from its labels. */
export async function listVmClusters(adapter: CloudAdapter, options: { signal?: AbortSignal }, log: AdapterContext['log']): Promise<ClusterSummary[]> {
  if (!adapter.listClusters) throw new ValidationError(`${adapter.kind}: listing clusters is not supported`);
  const signal = options.signal ?? new AbortController().signal;
  return summarizeClusters(adapter.kind, await adapter.listClusters({ clusterId: '', signal, log }));
}

/** Least time between two `pacing` events of one operation. */
const PACING_EVENT_MS = 5_000;

/**
 * Deletes all of a cluster's instances: in one call by label where the adapter can (every
 * instance is labelled when it is created), else one call per id.
 */
async function deleteMembers(adapter: CloudAdapter, ctx: AdapterContext, ids: string[]): Promise<void> {
  if (adapter.deleteLabelled) await adapter.deleteLabelled(ctx);
  else await adapter.deleteInstances(ctx, ids);
}

/**
 * Delete the resources of clusters left behind (a killed laptop, a crashed service): instances
 * by label, then the per-cluster network resources. Safe to run any time: "not found" is done.
 */
export async function cleanupClusters(adapter: CloudAdapter, options: CleanupOptions, log: AdapterContext['log']): Promise<CleanupReport> {
  const signal = options.signal ?? new AbortController().signal;
  const now = options.now ?? new Date();
  let ids = options.clusterIds ?? [];
  if (options.expired || options.all) {
    if (!adapter.listClusters) throw new ValidationError(`${adapter.kind}: listing clusters is not supported; pass clusterIds`);
    const found = await adapter.listClusters({ clusterId: '', signal, log });
    ids = [
      ...ids,
      ...found.filter((c) => options.all || (c.expiresAt !== undefined && c.expiresAt <= now)).map((c) => c.clusterId),
    ];
  }
  const report: CleanupReport = { clusters: [] };
  for (const clusterId of [...new Set(ids)]) {
    const ctx: AdapterContext = { clusterId, signal, log };
    const entry: CleanupReport['clusters'][number] = { clusterId, instances: [], deleted: false };
    report.clusters.push(entry);
    try {
      entry.instances = (await adapter.listInstances(ctx)).map((i) => i.id);
      if (options.dryRun) continue;
      if (entry.instances.length > 0) await deleteMembers(adapter, ctx, entry.instances);
      await retry(() => adapter.deleteNetwork(ctx), {
        retryable: (err) => adapter.isDependencyError?.(err) ?? false,
        timeoutMs: 5 * 60_000,
        what: `${adapter.kind}: deleting the network resources of ${clusterId}`,
        signal,
      });
      entry.deleted = true;
    } catch (err) {
      entry.error = err instanceof Error ? err.message : String(err);
    }
  }
  return report;
}

const CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

export function validateVMOptions(options: VMClusterOptions): void {
  checkOptionsObject(options, 'options');
  if (options.privateNetworking !== undefined && typeof options.privateNetworking !== 'boolean') {
    throw new ValidationError('privateNetworking must be a boolean', { option: 'privateNetworking' });
  }
  if (options.ingressCidrs !== undefined) {
    if (!Array.isArray(options.ingressCidrs) || options.ingressCidrs.length === 0) {
      throw new ValidationError('ingressCidrs must be a non-empty array of IPv4 CIDRs', { option: 'ingressCidrs' });
    }
    for (const c of options.ingressCidrs) {
      const m = typeof c === 'string' ? CIDR.exec(c) : null;
      if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || Number(m[5]) > 32) {
        throw new ValidationError(`ingressCidrs: ${describeValue(c)} is not an IPv4 CIDR like 203.0.113.0/24`, { option: 'ingressCidrs' });
      }
    }
  }
  const port = options.schedulerPort;
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) {
    throw new ValidationError(`schedulerPort must be an integer from 1 to 65535, got ${String(port)}`, { option: 'schedulerPort' });
  }
  if (options.runtime !== undefined && options.runtime !== 'docker' && options.runtime !== 'native') {
    throw new ValidationError(`runtime must be 'docker' or 'native', got ${describeValue(options.runtime)}`, { option: 'runtime' });
  }
  if (options.bootstrap !== undefined && (!Array.isArray(options.bootstrap) || options.bootstrap.some((b) => typeof b !== 'string'))) {
    throw new ValidationError('bootstrap must be an array of shell command strings', { option: 'bootstrap' });
  }
  const sec = options.security;
  if (Security.isSecurity(sec)) {
    // VMs receive their own role's key; the client key must never leave this machine.
    for (const role of ['scheduler', 'worker'] as const) {
      if (!sec.hasRole(role) || sec.certPem(role) === sec.certPem('client')) {
        throw new SecurityError(
          'E_SECURITY_INCOMPLETE',
          `security: the ${role} needs its own certificate and key (tls${role === 'scheduler' ? 'Scheduler' : 'Worker'}Cert/Key): ` +
            'a VM cluster never ships the client key to a VM, so the client certificate cannot stand in for it',
          { details: { role } },
        );
      }
    }
  }
  // Bounded so the expiry label and the generated certificates' dates stay valid.
  checkPositive(options.expiresAfterHours, 'expiresAfterHours', MAX_EXPIRES_AFTER_HOURS, 'hours (ten years)');
  // 0 turns the watch off; above 2^31-1 Node would fire it every millisecond.
  checkTimerMs(options.memberWatchIntervalMs, 'memberWatchIntervalMs', { allowZero: true });
  for (const key of ['exposeDashboard', 'installDocker', 'gpu', 'autoShutdown'] as const) checkBoolean(options[key], key);
  validateImageOptions(options);
  for (const key of ['dockerImage', 'pythonPath'] as const) {
    const v = options[key];
    if (v !== undefined && (typeof v !== 'string' || v === '')) throw new ValidationError(`${key} must be a non-empty string, got ${describeValue(v)}`, { option: key });
  }
}

/** The options that choose a VM's Docker image: each well-formed, and not two ways at once. */
export function validateImageOptions(options: Pick<VMClusterOptions, 'daskVersion' | 'pythonVersion' | 'dockerImage' | 'runtime'>): void {
  if (options.daskVersion !== undefined && (typeof options.daskVersion !== 'string' || (options.daskVersion !== 'auto' && parseRelease(options.daskVersion) === undefined))) {
    throw new ValidationError(`daskVersion must be 'auto' or a Dask release such as '2024.12.1', got ${describeValue(options.daskVersion)}`, { option: 'daskVersion' });
  }
  if (options.pythonVersion !== undefined && (typeof options.pythonVersion !== 'string' || !/^3\.\d{1,2}$/.test(options.pythonVersion))) {
    throw new ValidationError(`pythonVersion must be a Python minor version such as '3.12', got ${describeValue(options.pythonVersion)}`, { option: 'pythonVersion' });
  }
  const pinsImage = (options.daskVersion !== undefined && options.daskVersion !== 'auto') || options.pythonVersion !== undefined;
  if (pinsImage && options.dockerImage !== undefined) {
    throw new ValidationError('give dockerImage or daskVersion/pythonVersion, not both: dockerImage is used as it is', { option: options.pythonVersion !== undefined ? 'pythonVersion' : 'daskVersion' });
  }
  if (pinsImage && options.runtime === 'native') {
    throw new ValidationError("daskVersion and pythonVersion choose the Docker image; the native runtime runs the VM image's own Dask", { option: options.pythonVersion !== undefined ? 'pythonVersion' : 'daskVersion' });
  }
}

const DEFAULT_MEMBER_WATCH_MS = 15_000;
/** Default lifetime of a VM cluster's resources and of its generated certificates. */
export const DEFAULT_EXPIRES_AFTER_HOURS = 24;

/** Split into chunks of at most `size`. */
function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

const TAIL_LINES = 40;

/** Pause between readiness looks at a VM cluster's scheduler and at its workers' count. */
const VM_READINESS_POLL_MS = 250;

/** The CLI command that deletes what is left of a cluster (`flags`: the adapter's `cleanupFlags`). */
export function cleanupCommand(kind: string, flags: string[], clusterId: string): string {
  return ['dask-cloud cleanup --provider', kind, ...flags, '--cluster', clusterId].join(' ');
}

/**
 * The last {@link TAIL_LINES} lines of a console, and before them a failed bootstrap's report
 * when the tail no longer holds it: a VM that powers off prints its shutdown messages after it.
 * The report's lines all carry `dask-cloud: ` (consoles may prefix a timestamp and `cloud-init[pid]:`).
 */
export function consoleTail(output: string): string {
  const lines = output.replace(/\r\n?/g, '\n').split('\n');
  const start = Math.max(0, lines.length - TAIL_LINES);
  const tail = lines.slice(start);
  let report = -1;
  for (let i = start - 1; i >= 0 && report < 0; i -= 1) if (lines[i]!.includes(BOOTSTRAP_FAILED_MARK)) report = i;
  if (report < 0 || tail.some((l) => l.includes(BOOTSTRAP_FAILED_MARK))) return tail.join('\n');
  const block = lines.slice(report, start).filter((l) => l.includes('dask-cloud: '));
  return [...block, '[…]', ...tail].join('\n');
}

/** Renderer option → the cluster option a user sets for it. */
const RENDER_OPTION_NAMES: Record<string, string> = {
  image: 'dockerImage',
  nthreads: 'workerNthreads',
  memoryLimit: 'workerMemoryLimit',
};

export class VMBackend implements ClusterBackend {
  readonly kind: string;
  /** When a `pacing` event was last emitted, by operation. */
  readonly #pacingNoted = new Map<string, number>();
  /** Teardown deletes every instance it created or finds by label: close() needs no round of its own. */
  readonly teardownDeletesMembers = true;
  /**
   * A VM's scheduler comes up at a moment nothing predicts, a boot of 30 s to minutes after its
   * create, and its workers are counted only once it answers: a look every 250 ms finds it a
   * quarter of a second after, where a look grown to every second cost half a second on average.
   * A look before Dask listens is one refused (or unanswered) connection.
   */
  readonly readinessPollMs = VM_READINESS_POLL_MS;
  readonly #adapter: CloudAdapter;
  readonly #options: VMClusterOptions;
  /** Every instance id ever created, so rollback never depends on a create call having returned. */
  readonly #created = new Set<string>();
  #plan: NetworkPlan | undefined;
  /** The image chosen by `resolve()` (undefined before, and with the native runtime). */
  #image: string | undefined;
  #networkCreated = false;
  /** What `ensureNetwork` left taking effect (its rejection is observed where it is awaited). */
  #networkInEffect: Promise<void> | undefined;
  /** What the workers wait for ({@link NetworkSetup.accepted}). */
  #networkAccepted: Promise<void> | undefined;
  /** Members whose VMs should be running, by instance id; `seen` once a list has shown it. */
  readonly #watched = new Map<string, { member: Member; seen: boolean }>();
  /** Stops the member watch (teardown). */
  #watch: AbortController | undefined;
  #diagContext: AdapterContext = { clusterId: '', signal: new AbortController().signal, log: Object.assign(() => undefined, { enabled: false }) as unknown as AdapterContext['log'] };
  /**
   * An attached handle's backend: before its first create, preflight resolves what creates need
   * (image, network) and the adapter finds the cluster's network resources.
   */
  #adoptedNeedsResolve = false;
  /** Scale-up from another process renders worker user-data: the worker's credentials are kept locally. */
  readonly savesWorkerCredentials = true;

  constructor(adapter: CloudAdapter, options: VMClusterOptions) {
    this.kind = adapter.kind;
    this.#adapter = adapter;
    this.#options = options;
  }

  #actx(ctx: BackendContext): AdapterContext {
    return {
      clusterId: ctx.clusterId,
      signal: ctx.signal,
      log: ctx.log,
      memberFailed: (i, err) => ctx.memberFailed(toMember(i), err),
      pacing: (info) => {
        // One event per operation every few seconds, however many calls wait.
        const now = Date.now();
        if (now - (this.#pacingNoted.get(info.operation) ?? -Infinity) < PACING_EVENT_MS) return;
        this.#pacingNoted.set(info.operation, now);
        ctx.log('pacing %s: %s', info.operation, info.message);
        ctx.emit({ type: 'pacing', clusterId: ctx.clusterId, provider: this.kind, ...info, at: now });
      },
    };
  }

  /** The cluster's expiry (epoch seconds), fixed at its first resource: every resource carries the same one. */
  #expiresAt: number | undefined;

  labels(clusterId: string, role?: MemberRole, security?: Security | false): Record<string, string> {
    const hours = this.#options.expiresAfterHours ?? DEFAULT_EXPIRES_AFTER_HOURS;
    this.#expiresAt ??= Math.floor(Date.now() / 1000 + hours * 3600);
    const labels: Record<string, string> = {
      [LABELS.cluster]: clusterId,
      [LABELS.expires]: String(this.#expiresAt),
    };
    if (role) labels[LABELS.role] = role;
    if (role === 'scheduler' && security !== undefined) {
      labels[LABELS.protocol] = protocolFor(security);
      labels[LABELS.port] = String(this.#options.schedulerPort ?? DEFAULT_SCHEDULER_PORT);
    }
    return labels;
  }

  plan(clusterId: string, security: unknown): NetworkPlan {
    const o = this.#options;
    const schedulerPort = o.schedulerPort ?? DEFAULT_SCHEDULER_PORT;
    const dashboardPort = DEFAULT_DASHBOARD_PORT;
    // With TLS the dashboard listens on the VM's loopback only, behind its terminator, which
    // requires a certificate of the cluster's CA; without TLS there is nothing to require.
    const dashboardTlsPort = security === false ? undefined : DEFAULT_DASHBOARD_TLS_PORT;
    const ingress: NetworkPlan['ingress'] = [
      { ports: [schedulerPort, schedulerPort], cidrs: 'network', why: 'clients inside the network reach the scheduler' },
      dashboardTlsPort === undefined
        ? { ports: [dashboardPort, dashboardPort], cidrs: 'network', why: 'the dashboard from inside the network' }
        : { ports: [dashboardTlsPort, dashboardTlsPort], cidrs: 'network', why: 'the dashboard (mutual TLS) from inside the network' },
    ];
    if (!o.privateNetworking) {
      const cidrs = o.ingressCidrs ?? ['0.0.0.0/0'];
      ingress.push({ ports: [schedulerPort, schedulerPort], cidrs, why: security === false ? 'scheduler (NO TLS)' : 'scheduler (mutual TLS)' });
      if (dashboardTlsPort !== undefined) ingress.push({ ports: [dashboardTlsPort, dashboardTlsPort], cidrs, why: 'dashboard (mutual TLS)' });
      if (o.exposeDashboard) ingress.push({ ports: [dashboardPort, dashboardPort], cidrs, why: 'dashboard (exposeDashboard)' });
    }
    return {
      clusterId,
      labels: this.labels(clusterId),
      privateNetworking: o.privateNetworking ?? false,
      schedulerPort,
      dashboardPort,
      ...(dashboardTlsPort === undefined ? {} : { dashboardTlsPort }),
      ingress,
      nWorkers: o.nWorkers ?? 1,
      needsEgress: (o.runtime ?? 'docker') === 'docker',
    };
  }

  /** The Docker image: `dockerImage`, else the published image matching the request or the local client. */
  async resolve(ctx: BackendContext, client: DaskVersions | undefined): Promise<void> {
    const o = this.#options;
    if (o.runtime === 'native') return;
    const { image, basis, differences } = decideDaskImage(o, imageClient(client));
    this.#image = image;
    ctx.emit({ type: 'image', clusterId: ctx.clusterId, image, basis, differences, at: Date.now() });
    if (differences.length > 0) {
      ctx.emit({ type: 'warning', code: 'DASK_CLOUD_VERSION_MISMATCH', clusterId: ctx.clusterId, message: `image ${image}: ${differences.join('; ')}`, at: Date.now() });
    }
  }

  /** Both roles' user-data, rendered and size-checked before any API call (the worker's with the longest scheduler address). */
  validate(ctx: BackendContext, specs: { scheduler: MemberSpec; worker: MemberSpec }): void {
    this.#plan = this.plan(ctx.clusterId, ctx.security);
    const placeholder = `${protocolFor(ctx.security)}://255.255.255.255:${this.#plan.schedulerPort}`;
    try {
      this.#render(ctx, specs.scheduler);
      this.#render(ctx, { ...specs.worker, process: { ...specs.worker.process, name: undefined } }, placeholder);
    } catch (err) {
      // The renderer names its own options; the caller set the cluster's.
      const option = ValidationError.isInstance(err) ? String(err.details.option ?? '') : '';
      const ours = RENDER_OPTION_NAMES[option];
      if (ours === undefined) throw err;
      throw new ValidationError(err instanceof Error ? err.message.replace(new RegExp(`^${option}\\b`), ours) : String(err), { option: ours, cause: err });
    }
  }

  async preflight(ctx: BackendContext, report: PreflightReport): Promise<void> {
    const plan = (this.#plan ??= this.plan(ctx.clusterId, ctx.security));
    try {
      await this.#adapter.preflight(this.#actx(ctx), plan, report);
    } catch (err) {
      // An adapter records its own checks; anything it throws outside them still fails preflight.
      if (ctx.signal.aborted || !DaskCloudError.isInstance(err) || err.code === 'E_ABORTED') throw err;
      const option = String(err.details.option ?? '');
      report.fail(/image|ami|family/i.test(option) ? 'image' : 'network', err);
    }
  }

  async prepare(ctx: BackendContext): Promise<void> {
    this.#diagContext = { clusterId: ctx.clusterId, signal: new AbortController().signal, log: ctx.log };
    const plan = (this.#plan ??= this.plan(ctx.clusterId, ctx.security));
    const cidrs = this.#options.ingressCidrs ?? ['0.0.0.0/0'];
    if (ctx.security === false && !plan.privateNetworking) {
      ctx.emit({
        type: 'warning',
        code: 'DASK_CLOUD_INSECURE_PUBLIC',
        clusterId: ctx.clusterId,
        message: `security is off and the scheduler port ${plan.schedulerPort} is open to ${cidrs.join(', ')}: anyone there can run code on this cluster`,
        at: Date.now(),
      });
    }
    const publicCidrs = cidrs.filter((c) => !isPrivateCidr(c));
    if (this.#options.exposeDashboard && !plan.privateNetworking && publicCidrs.length > 0) {
      ctx.emit({
        type: 'warning',
        code: 'DASK_CLOUD_PUBLIC_DASHBOARD',
        clusterId: ctx.clusterId,
        message: `exposeDashboard opens the dashboard port ${plan.dashboardPort} as plain, unauthenticated HTTP to ${publicCidrs.join(', ')}: anyone there can see the cluster's tasks and logs. Narrow ingressCidrs or reach the dashboard through a tunnel`,
        at: Date.now(),
      });
    }
    this.#networkCreated = true; // from here on teardown must try to delete it, even if ensureNetwork fails half way
    const setup = await this.#adapter.ensureNetwork(this.#actx(ctx), plan);
    if (setup) {
      setup.inEffect.catch(() => undefined); // awaited before the scheduler is dialled and before the network is deleted
      this.#networkInEffect = setup.inEffect;
      setup.accepted?.catch(() => undefined); // awaited before the workers launch
      this.#networkAccepted = setup.accepted;
    }
  }

  #render(ctx: BackendContext, spec: MemberSpec, schedulerAddress?: string): RenderedUserData {
    const o = this.#options;
    const p = spec.process;
    return renderUserData({
      role: spec.role,
      security: ctx.security,
      runtime: o.runtime,
      image: this.#image ?? o.dockerImage,
      installDocker: o.installDocker,
      gpu: o.gpu,
      pythonPath: o.pythonPath,
      env: p.env,
      bootstrap: o.bootstrap,
      autoShutdown: o.autoShutdown,
      limitBytes: this.#adapter.userDataLimit,
      gzip: this.#adapter.binaryUserData ? 'auto' : 'never',
      ...(spec.role === 'scheduler'
        ? {
            schedulerPort: this.#plan?.schedulerPort,
            idleTimeout: p.idleTimeout,
            schedulerOptions: p.extraArgs,
            // exposeDashboard serves it plain on every interface; else TLS keeps it on loopback.
            ...(this.#options.exposeDashboard ? { dashboardAddress: `:${DEFAULT_DASHBOARD_PORT}` } : {}),
            dashboardTlsPort: this.#plan?.dashboardTlsPort ?? false,
          }
        : { schedulerAddress, nthreads: p.nthreads, memoryLimit: p.memoryLimit, workerOptions: p.extraArgs }),
    });
  }

  async #create(ctx: BackendContext, role: MemberRole, names: string[], userData: RenderedUserData): Promise<Instance[]> {
    const batches = chunks(names, this.#adapter.maxBatch);
    const thisCall = new Set<string>();
    const track = (id: string) => {
      this.#created.add(id);
      thisCall.add(id);
    };
    const results = await Promise.allSettled(
      batches.map((batch) =>
        this.#adapter.createInstances(
          this.#actx(ctx),
          { role, names: batch, userData, labels: this.labels(ctx.clusterId, role, ctx.security) },
          (ids) => ids.forEach(track),
        ),
      ),
    );
    const instances: Instance[] = [];
    for (const r of results) {
      if (r.status === 'fulfilled') {
        for (const i of r.value) track(i.id);
        instances.push(...r.value);
      }
    }
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      // All or nothing: a scale-up whose second batch failed must not leave the first batch
      // running outside the cluster's members until close().
      if (thisCall.size > 0) {
        try {
          await this.#adapter.deleteInstances(this.#actx(ctx), [...thisCall]);
          for (const id of thisCall) this.#created.delete(id);
        } catch (err) {
          ctx.log('deleting the instances of a failed create failed (teardown will retry): %s', (err as Error).message);
        }
      }
      throw failed.reason;
    }
    return instances;
  }

  /**
   * Lists the cluster's VMs every `memberWatchIntervalMs` and reports, once, each watched member
   * whose VM stopped on its own or vanished after it had been listed (a VM can be missing from a
   * list right after its create: eventual consistency). A failed list is logged and retried on
   * the next tick. Runs until teardown.
   */
  #startWatch(ctx: BackendContext): void {
    const interval = this.#options.memberWatchIntervalMs ?? DEFAULT_MEMBER_WATCH_MS;
    if (interval <= 0 || this.#watch) return;
    const stop = new AbortController();
    this.#watch = stop;
    const actx: AdapterContext = { clusterId: ctx.clusterId, signal: stop.signal, log: ctx.log };
    const tick = async (): Promise<void> => {
      if (this.#watched.size === 0) return;
      const ids = [...this.#watched.keys()];
      const found = this.#adapter.describeInstances ? await this.#adapter.describeInstances(actx, ids) : await this.#adapter.listInstances(actx);
      const listed = new Map(found.map((i) => [i.id, i]));
      for (const [id, w] of [...this.#watched]) {
        const found = listed.get(id);
        if (found && found.stoppedState === undefined) {
          w.seen = true;
          continue;
        }
        if (!found && !w.seen) continue;
        if (!this.#watched.delete(id) || stop.signal.aborted) continue;
        const what = found ? `stopped on its own (state ${found.stoppedState})` : 'is gone (terminated, or deleted outside dask-cloud)';
        ctx.memberFailed(
          w.member,
          new CloudApiError(
            `${this.kind}: the ${w.member.role} VM ${w.member.name} ${what}: when its Dask process exits, autoShutdown powers the VM off (so does a failed bootstrap), and its console output says why`,
            { details: { provider: this.kind, instance: id, ...(found ? { state: found.stoppedState } : {}) } },
          ),
        );
      }
    };
    void (async () => {
      while (!stop.signal.aborted) {
        try {
          // Unref'd: a watch alone must not keep the process alive.
          await sleep(interval, undefined, { ref: false, signal: stop.signal });
          await tick();
        } catch (err) {
          if (stop.signal.aborted) return;
          ctx.log('member watch: listing instances failed (next try in %d ms): %s', interval, (err as Error).message);
        }
      }
    })();
  }

  #watchMembers(ctx: BackendContext, members: Member[]): void {
    for (const m of members) this.#watched.set(m.id, { member: m, seen: false });
    this.#startWatch(ctx);
  }

  async launchScheduler(ctx: BackendContext, spec: MemberSpec): Promise<SchedulerLaunch> {
    const userData = this.#render(ctx, spec);
    const [created] = await this.#create(ctx, 'scheduler', [spec.name], userData);
    if (!created) throw new CloudApiError(`${this.kind}: creating the scheduler returned no instance`);
    // One member object from here on: the watch reports it, the core holds it, addresses fill in.
    const member = toMember(created);
    this.#watchMembers(ctx, [member]);
    // The core launches the workers once this returns: the network's requests are answered first
    // (a refusal then fails the start here, with the scheduler the only VM to delete).
    await this.#networkAccepted;
    const proto = protocolFor(ctx.security);
    const port = this.#plan?.schedulerPort ?? DEFAULT_SCHEDULER_PORT;
    const withPrivate = created.privateIp ? created : await this.#adapter.waitForAddresses(this.#actx(ctx), created, false);
    Object.assign(member, toMember(withPrivate));
    const wantPublic = !(this.#options.privateNetworking ?? false);
    const clientAddress = (async () => {
      // Nothing can reach the scheduler before its firewall rules are in effect.
      await this.#networkInEffect;
      const full = wantPublic && !withPrivate.publicIp ? await this.#adapter.waitForAddresses(this.#actx(ctx), withPrivate, true) : withPrivate;
      member.publicHost = full.publicIp;
      const host = wantPublic ? full.publicIp : full.privateIp;
      if (!host) throw new CloudApiError(`${this.kind}: scheduler ${created.id} has no ${wantPublic ? 'public' : 'private'} address`);
      return `${proto}://${host}:${port}`;
    })();
    clientAddress.catch(() => undefined); // awaited by the core; avoid an unhandled rejection meanwhile
    return { member, workerAddress: `${proto}://${withPrivate.privateIp}:${port}`, clientAddress };
  }

  /** What an attached handle needs from the record: the image the VMs run, and the cluster's expiry. */
  recordState(): Record<string, unknown> {
    return { ...(this.#image === undefined ? {} : { image: this.#image }), ...(this.#expiresAt === undefined ? {} : { expiresAt: this.#expiresAt }) };
  }

  /** The cluster's instances, found by label; the scheduler's current addresses (read calls only). */
  async adopt(ctx: BackendContext, record: ClusterRecord): Promise<AdoptedCluster> {
    const saved = record.backend as { image?: unknown; expiresAt?: unknown };
    if (typeof saved.image === 'string') this.#image = saved.image;
    if (typeof saved.expiresAt === 'number') this.#expiresAt = saved.expiresAt;
    const plan = (this.#plan = this.plan(ctx.clusterId, ctx.security));
    this.#diagContext = { clusterId: ctx.clusterId, signal: new AbortController().signal, log: ctx.log };
    const listed = await this.#adapter.listInstances(this.#actx(ctx));
    const live = listed.filter((i) => i.stoppedState === undefined);
    const scheduler = live.find((i) => i.role === 'scheduler');
    if (!scheduler) {
      throw new DaskCloudError(
        'E_NOT_FOUND',
        `${this.kind}: cluster ${ctx.clusterId} has no running scheduler (${listed.length} instance(s) carry its label): ` +
          `it has shut down or is being deleted. Delete what is left with: ${this.cleanupCommand(ctx.clusterId)}`,
        { details: { clusterId: ctx.clusterId, instances: listed.map((i) => i.id) } },
      );
    }
    const wantPublic = !plan.privateNetworking;
    const host = wantPublic ? scheduler.publicIp : scheduler.privateIp;
    if (!host || !scheduler.privateIp) throw new CloudApiError(`${this.kind}: the scheduler ${scheduler.id} of ${ctx.clusterId} has no ${wantPublic ? 'public' : 'private'} address`);
    // From here on teardown deletes them, and the network resources, as the starting handle would.
    for (const i of live) this.#created.add(i.id);
    this.#networkCreated = true;
    this.#adoptedNeedsResolve = true;
    const members = live.map(toMember);
    // A batch create may give every instance the same name (EC2 RunInstances tags a batch alike):
    // number such workers so each member has its own name (instance ids stay the members' ids).
    const workers = members.filter((m) => m.role === 'worker');
    const names = new Map<string, number>();
    for (const m of workers) names.set(m.name, (names.get(m.name) ?? 0) + 1);
    if ([...names.values()].some((n) => n > 1)) {
      const taken = new Set(workers.filter((m) => names.get(m.name) === 1).map((m) => m.name));
      let seq = 0;
      for (const m of [...workers].sort((a, b) => a.id.localeCompare(b.id))) {
        if (names.get(m.name) === 1) continue;
        while (taken.has(`${ctx.clusterId}-worker-${seq}`)) seq++;
        m.name = `${ctx.clusterId}-worker-${seq}`;
        taken.add(m.name);
      }
    }
    this.#watchMembers(ctx, members);
    const proto = protocolFor(ctx.security);
    return {
      scheduler: members.find((m) => m.role === 'scheduler')!,
      workers: members.filter((m) => m.role === 'worker').sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true })),
      clientAddress: `${proto}://${host}:${plan.schedulerPort}`,
      workerAddress: `${proto}://${scheduler.privateIp}:${plan.schedulerPort}`,
    };
  }

  /**
   * Where the user's side of the dashboard tunnel dials: the scheduler's terminator, on the
   * address clients use (public, or private in private mode). Undefined without TLS.
   */
  dashboardTarget(scheduler: Member): { host: string; port: number } | undefined {
    const port = this.#plan?.dashboardTlsPort;
    const host = this.#options.privateNetworking ? scheduler.privateHost : (scheduler.publicHost ?? scheduler.privateHost);
    return port === undefined || host === undefined ? undefined : { host, port };
  }

  async launchWorkers(ctx: BackendContext, specs: MemberSpec[]): Promise<Member[]> {
    if (specs.length === 0) return [];
    if (this.#adoptedNeedsResolve) {
      const plan = this.#plan ?? this.plan(ctx.clusterId, ctx.security);
      const report = new PreflightReport(this.kind);
      await this.#adapter.preflight(this.#actx(ctx), plan, report);
      report.throwIfFailed();
      await this.#adapter.adoptNetwork?.(this.#actx(ctx), plan);
      this.#adoptedNeedsResolve = false;
    }
    // One user-data for the whole batch (EC2 MinCount/MaxCount, GCP bulkInsert, DigitalOcean
    // names[] all require it), so it names no worker: the scheduler knows workers by address.
    const first = specs[0]!;
    const userData = this.#render(ctx, { ...first, process: { ...first.process, name: undefined } }, first.process.schedulerAddress);
    const instances = await this.#create(ctx, 'worker', specs.map((s) => s.name), userData);
    const members = instances.map(toMember);
    this.#watchMembers(ctx, members);
    return members;
  }

  async stopMembers(ctx: BackendContext, members: Member[]): Promise<void> {
    if (members.length === 0) return;
    // Deleted on purpose: no longer watched, so its going away is not reported as a failure.
    for (const m of members) this.#watched.delete(m.id);
    await this.#adapter.deleteInstances(this.#actx(ctx), members.map((m) => m.id));
    for (const m of members) this.#created.delete(m.id);
  }

  async teardown(ctx: BackendContext): Promise<void> {
    this.#watch?.abort();
    this.#watch = undefined;
    this.#watched.clear();
    const actx = this.#actx(ctx);
    // Every deletion is tried even when one fails; what could not be deleted is named at the end.
    const leftovers: string[] = [];
    const errors: unknown[] = [];
    let instancesGone = true;
    const failed = (err: unknown, what: string): void => {
      instancesGone = false;
      errors.push(err);
      leftovers.push(what);
      ctx.log('deleting instances failed: %s', (err as Error).message);
    };
    const deleteInstances = async (): Promise<void> => {
      if (this.#adapter.deleteLabelled) {
        // One call by label reaches every instance, also one whose create answer was lost.
        try {
          await this.#adapter.deleteLabelled(actx);
          this.#created.clear();
        } catch (err) {
          failed(err, this.#created.size > 0 ? `instances ${[...this.#created].join(', ')}` : `instances labelled ${ctx.clusterId}`);
        }
      } else {
        // What this process created goes at once; then a sweep by label finds what a lost create
        // answer hid. What was just deleted is not asked for again; what failed is not retried here.
        const tried = new Set<string>();
        const remove = async (ids: string[]): Promise<void> => {
          if (ids.length === 0) return;
          for (const id of ids) tried.add(id);
          try {
            await this.#adapter.deleteInstances(actx, ids);
            for (const id of ids) this.#created.delete(id);
          } catch (err) {
            failed(err, `instances ${ids.join(', ')}`);
          }
        };
        await remove([...this.#created]);
        let listed: Instance[] = [];
        try {
          listed = await this.#adapter.listInstances(actx);
        } catch (err) {
          ctx.log('listing instances for the sweep failed: %s', (err as Error).message);
        }
        // Also what a create call in flight reported meanwhile.
        const rest = new Set([...this.#created, ...listed.map((i) => i.id)]);
        await remove([...rest].filter((id) => !tried.has(id)));
      }
    };
    const deleteNetwork = async (): Promise<void> => {
      if (this.#networkCreated) {
        // A rule still being created is neither listed nor deletable yet, and an authorisation
        // still on its way would land on a group being deleted.
        await this.#networkInEffect?.catch(() => undefined);
        try {
          await retry(() => this.#adapter.deleteNetwork(actx), {
            retryable: (err) => this.#adapter.isDependencyError?.(err) ?? false,
            // Instances that could not be deleted keep the network in use: one attempt, no waiting.
            timeoutMs: instancesGone ? 5 * 60_000 : 0,
            // The network goes the moment its last VM is gone: a pause grown past a couple of
            // seconds would be close() waiting on nothing. One cheap call every second or two
            // stays far inside every cloud's rate limit.
            maxDelayMs: 2_000,
            what: `${this.kind}: deleting the cluster network resources`,
          });
          this.#networkCreated = false;
          this.#networkInEffect = undefined;
          this.#networkAccepted = undefined;
        } catch (err) {
          errors.push(err);
          leftovers.push('the cluster firewall / security group (and tags)');
          ctx.log('deleting network resources failed: %s', (err as Error).message);
        }
      }
    };
    // Where the cloud lets firewall rules go while their VMs still stop, both deletions run at
    // once: close() then takes one deletion, not two in a row.
    if (this.#adapter.networkIndependentOfInstances) await Promise.all([deleteInstances(), deleteNetwork()]);
    else {
      await deleteInstances();
      await deleteNetwork();
    }
    if (errors.length > 0) {
      const reasons = [...new Set(errors.map((e) => (e instanceof Error ? e.message : String(e))))].join('; ');
      throw new TeardownError(`${this.kind}: could not delete everything of cluster ${ctx.clusterId}: ${reasons}`, leftovers, { cause: errors[0] });
    }
  }

  cleanupCommand(clusterId: string): string {
    return cleanupCommand(this.kind, this.#adapter.cleanupFlags?.() ?? [], clusterId);
  }

  async diagnostics(member: Member): Promise<string> {
    try {
      const out = await this.#adapter.consoleOutput(this.#diagContext, member.id);
      return consoleTail(out);
    } catch (err) {
      return `(console output unavailable: ${(err as Error).message})`;
    }
  }
}

function toMember(i: Instance): Member {
  return { id: i.id, role: i.role, name: i.name, privateHost: i.privateIp, publicHost: i.publicIp };
}

/** Base class of GCPCluster, EC2Cluster and DropletCluster. */
export class VMCluster extends Cluster {
  protected constructor(options: VMClusterOptions, adapter: CloudAdapter) {
    validateVMOptions(options);
    super(options, new VMBackend(adapter, options), { schedulerTimeoutMs: 10 * 60_000, workersTimeoutMs: 10 * 60_000 });
  }

  /** Generated certificates last as long as the cluster's resources (`expiresAfterHours`). */
  protected override lifetimeHours(): number {
    return (this.options as VMClusterOptions).expiresAfterHours ?? DEFAULT_EXPIRES_AFTER_HOURS;
  }
}

/** RFC 1918, loopback, link-local and CGNAT blocks (IPv4), ULA and link-local (IPv6): not the public internet. */
function isPrivateCidr(cidr: string): boolean {
  const [addr = ''] = cidr.split('/');
  const v4 = /^(\d+)\.(\d+)\./.exec(addr);
  if (v4) {
    const a = Number(v4[1]);
    const b = Number(v4[2]);
    if (cidr.endsWith('/0')) return false;
    return a === 10 || a === 127 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 169 && b === 254) || (a === 100 && b >= 64 && b <= 127);
  }
  return /^f[cd]|^fe[89ab]|^::1$/i.test(addr) && !cidr.endsWith('/0');
}
