/**
 * The Compute Engine part of a VM cluster (`CloudAdapter`). The core owns ordering, waiting,
 * rollback and scaling; this file only says how GCP does each step:
 *
 * - preflight: the image family is resolved once (every VM of the cluster gets the same image),
 *   the network and the subnetwork range are looked up;
 * - network: per-cluster firewall rules targeting the cluster's network tag, named after the
 *   cluster id (GCP firewalls carry no labels: the description holds cluster id and expiry);
 * - scheduler: `instances.insert`, then `instances.get` at once for its private address (known
 *   while still PROVISIONING), so the workers are created right away; its operation is watched
 *   in the background and a failure is reported to the core;
 * - workers: one `instances.bulkInsert` with `perInstanceProperties` naming every VM;
 * - every VM and boot disk carries the cluster labels from creation; boot disks auto-delete.
 */
import { CloudApiError, DaskCloudError, PreflightError, UserDataError, ValidationError } from '../../src/errors';
import type { PreflightReport } from '../../src/cluster/preflight';
import { cloudDate, LABELS, type AdapterContext, type CloudAdapter, type ClusterListing, type Instance, type InstanceRequest, type NetworkPlan, type NetworkSetup } from '../../src/cluster/vm';
import { USER_DATA_LIMITS } from '../../src/cloud-init';
import type { MemberRole } from '../../src/cluster/backend';
import { retry } from '../../src/cluster/retry';
import { credentialsRefused, isNotFound, gcpErrorInfo, operationOf, raceAbort, type GcpApi, type OperationScope, type RequestOptions } from './api';
import type { ComputeRest } from './rest';
import { CREDENTIALS_FIX } from './credentials';
import type { ResolvedGcpConfig } from './options';
import type { ComputeOperation, Firewall as IFirewall, Instance as IInstance, InstanceProperties as IInstanceProperties, Region as IRegion, RouterNat as IRouterNat } from './types';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomUUID } from 'node:crypto';
import { BATCH_MAX, type BatchCall } from './batch';

/** Network tag every member carries; the firewall rules target it. */
export function clusterTag(clusterId: string): string {
  return `dask-cloud-${clusterId}`;
}

/** Network tag of one role (`dask-cloud-<id>-scheduler`): the scheduler's ingress rules target it. */
export function roleTag(clusterId: string, role: MemberRole): string {
  return `${clusterTag(clusterId)}-${role}`;
}

/** Firewall descriptions start with this, so a sweep finds the rules of clusters that are gone. */
const FIREWALL_MARK = 'dask-cloud cluster=';

function firewallDescription(clusterId: string, expires: string | undefined, why: string): string {
  return `${FIREWALL_MARK}${clusterId} expires=${expires ?? ''} ${why}`;
}

function parseFirewallDescription(description: string | null | undefined): { clusterId: string; expiresAt?: Date } | undefined {
  const m = /^dask-cloud cluster=([a-z][-a-z0-9]*) expires=(\d*)/.exec(description ?? '');
  if (!m) return undefined;
  return { clusterId: m[1]!, ...(m[2] ? { expiresAt: new Date(Number(m[2]) * 1000) } : {}) };
}

/** The expiry label (epoch seconds) as a Date. */
function expiryOf(labels: Record<string, string> | null | undefined): Date | undefined {
  const v = labels?.[LABELS.expires];
  return v && /^\d+$/.test(v) ? new Date(Number(v) * 1000) : undefined;
}

const NOT_READY = 'resourceNotReady';

/** A state that an instance never leaves for RUNNING on its own. */
const GONE_STATES = new Set(['STOPPING', 'STOPPED', 'SUSPENDING', 'SUSPENDED', 'TERMINATED']);
/** Deletions beyond this many are waited for by listing the cluster rather than by their operations. */
const LIST_WAIT_THRESHOLD = 8;

/** The operation a batch answer carries, if its body is one. */
function operationIn(body: string): ComputeOperation | undefined {
  try {
    const op = JSON.parse(body) as ComputeOperation | null;
    return typeof op?.name === 'string' ? op : undefined;
  } catch {
    return undefined;
  }
}

/** A deletion asked for: its operation, none when the VM was already gone. */
interface StartedDelete {
  name: string;
  zone: string;
  op: ComputeOperation | undefined;
}

export class GcpAdapter implements CloudAdapter {
  readonly kind = 'gcp';
  /** A firewall rule names tags, not VMs: it can be deleted while its VMs still stop. */
  readonly networkIndependentOfInstances = true;
  /**
   * What the core checks rendered user-data against, before any call. Metadata values are at most
   * 256 KiB of text; a gzipped body travels base64-encoded, 4/3 its size, so a gzipped body must
   * stay under 3/4 of that (a text body over it is gzipped by the core, which cloud-init reads).
   */
  readonly userDataLimit = Math.floor((USER_DATA_LIMITS.gcp * 3) / 4);
  /** Metadata values are strings: a gzipped body travels base64-encoded, marked `user-data-encoding: base64`. */
  readonly binaryUserData = true;
  /** `instances.bulkInsert` creates up to 5,000 VMs per request. */
  readonly maxBatch = 5000;

  readonly #api: GcpApi;
  readonly #cfg: ResolvedGcpConfig;
  /** Cleanup across the project: list with aggregatedList, delete each VM in its own zone. */
  readonly #allZones: boolean;
  /** Zones of instances found by an all-zones list, by instance name. */
  readonly #zoneOf = new Map<string, string>();
  /** The image every VM boots (the family resolved in preflight). */
  #image: string;
  #subnetwork: { url: string; range: string } | undefined;
  /** Insert operations still being watched, by instance name (the scheduler's). */
  readonly #inserts = new Map<string, Promise<void>>();
  /** vCPUs of each machine type, from preflight (for the quota check). */
  readonly #vcpus = new Map<string, number>();
  /** From the plan: no access configs, so no public addresses. */
  #privateNetworking = false;
  /**
   * Creates not settled yet (the call, and for bulkInsert its operation). A sweep waits for them:
   * a rollback can begin while a worker bulkInsert is still in flight, and the VMs it makes must
   * be in the list the sweep deletes.
   */
  readonly #creating = new Set<Promise<unknown>>();

  #track(p: Promise<unknown>): void {
    const settledP = p.then(
      () => undefined,
      () => undefined,
    );
    this.#creating.add(settledP);
    void settledP.then(() => this.#creating.delete(settledP));
  }

  constructor(api: GcpApi, config: ResolvedGcpConfig, options: { allZones?: boolean } = {}) {
    this.#api = api;
    this.#cfg = config;
    this.#allZones = options.allZones ?? false;
    this.#image = config.sourceImage;
  }

  get #zoneScope(): OperationScope {
    return { project: this.#cfg.projectId, zone: this.#cfg.zone };
  }

  /** The zone an instance lives in: where a sweep found it, else the configured zone. */
  #zoneFor(name: string): string {
    return this.#zoneOf.get(name) ?? this.#cfg.zone;
  }

  get #networkUrl(): string {
    return `projects/${this.#cfg.networkProjectId}/global/networks/${this.#cfg.network}`;
  }

  /**
   * Read-only checks, in the report's order; every call here is a GET. What it resolves (the
   * image of the family, the subnetwork and its range) is kept for the create calls.
   */
  async preflight(ctx: AdapterContext, plan: NetworkPlan, report: PreflightReport): Promise<void> {
    const c = this.#cfg;
    const signal = ctx.signal;
    this.#privateNetworking = plan.privateNetworking;
    let project: { name?: string | null } | undefined;
    let projectError: unknown;
    // The zone is read while the credentials are checked: the two reads are independent, and a
    // zone read with refused credentials is simply not looked at.
    const zoneRead = this.#api.rest().then(() => this.#read(ctx, `reading zone ${c.zone}`, (api, req) => api.zones.get({ project: c.projectId, zone: c.zone }, req)));
    zoneRead.catch(() => undefined);
    const credentialsOk = await report.check(
      'credentials',
      async () => {
        const source = this.#api.credentialSource();
        await this.#api.rest();
        // The first read: it is also the location check's project look-up.
        try {
          project = await this.#read(ctx, `reading project ${c.projectId}`, (api, req) => api.projects.get({ project: c.projectId }, req));
        } catch (err) {
          if (isAuthFailure(err)) throw credentialsRefused(this.#api.credentialSource(), DaskCloudError.isInstance(err) && err.cause !== undefined ? err.cause : err);
          projectError = err;
          return `found in ${source.description}`;
        }
        return `found in ${source.description}; accepted by Compute (projects.get ${c.projectId})`;
      },
      CREDENTIALS_FIX,
      signal,
    );
    // Nothing else can be checked without credentials (the core marks the rest skipped).
    if (!credentialsOk) return;

    const locationOk = await report.check(
      'location',
      async () => {
        if (projectError !== undefined) throw this.#projectProblem(projectError);
        const zone = await zoneRead.catch((err: unknown) => {
          if (isNotFound(err)) {
            throw new ValidationError(`gcp: zone ${c.zone} does not exist in project ${c.projectId}`, {
              option: 'zone',
              cause: err,
              details: { fix: `choose a zone from \`gcloud compute zones list --project ${c.projectId}\`` },
            });
          }
          throw err;
        });
        if (zone.status !== 'UP') {
          throw new PreflightError(`gcp: zone ${c.zone} is ${String(zone.status)}, not UP`, {
            details: { fix: `choose another zone of ${c.region} (\`gcloud compute zones list --filter=region:${c.region}\`) and pass it as zone` },
          });
        }
        return `project ${project?.name ?? c.projectId}, zone ${c.zone} (UP), region ${c.region}`;
      },
      undefined,
      signal,
    );
    // A missing project or zone makes every other check fail the same way: say it once.
    if (!locationOk) return;

    // The rest are independent reads, made together; only the quota needs the machine types' vCPUs.
    const imageChecked = report.check('image', () => this.#resolveImage(ctx), undefined, signal);
    const regionRead = this.#read(ctx, `reading region ${c.region}`, (api, req) => api.regions.get({ project: c.projectId, region: c.region }, req));
    regionRead.catch(() => undefined);

    let subnetName: string | undefined;
    const networkOk = await report.check(
      'network',
      async () => {
        const types = this.#checkMachineTypes(ctx);
        types.catch(() => undefined); // awaited below, after the network's own verdict
        const found = await this.#resolveNetwork(ctx);
        subnetName = found.subnet;
        return `${found.text}; ${await types}`;
      },
      undefined,
      signal,
    );

    if (!(plan.privateNetworking && plan.needsEgress)) {
      report.pass('nat', plan.privateNetworking ? 'not needed: the native runtime downloads nothing at boot' : 'not needed: public mode gives every VM an external address');
    } else if (!networkOk || subnetName === undefined) {
      report.skip('nat', 'not checked: the network check failed');
    } else {
      const name = subnetName;
      await report.check('nat', () => this.#checkNat(ctx, name), undefined, signal);
    }

    await report.check('quota', () => this.#checkQuota(ctx, plan, regionRead), undefined, signal);
    await imageChecked;

    // Compute has no project-level testIamPermissions (that is Resource Manager's API, which this
    // provider does not call): name the roles instead of guessing from a failed create.
    const roles = ['roles/compute.instanceAdmin.v1 (instances, disks)', `roles/compute.securityAdmin (firewall rules${c.networkProjectId !== c.projectId ? ` in ${c.networkProjectId}` : ''})`];
    if (c.serviceAccount) roles.push(`roles/iam.serviceAccountUser on ${c.serviceAccount.email === 'default' ? 'the Compute Engine default service account' : c.serviceAccount.email}`);
    if (c.networkProjectId !== c.projectId) roles.push(`roles/compute.networkUser on the subnetwork in ${c.networkProjectId} (Shared VPC)`);
    report.warn(
      'permissions',
      `not checked (Compute cannot test project permissions read-only); creating a cluster needs ${roles.join(', ')}`,
      `grant them: gcloud projects add-iam-policy-binding ${c.projectId} --member=user:YOU --role=ROLE (once per role)`,
    );
  }

  /** One read-only call, its first result. */
  #read<T>(ctx: AdapterContext, what: string, fn: (api: ComputeRest, req: RequestOptions) => Promise<[T, ...unknown[]]>): Promise<T> {
    return this.#api.call(
      what,
      async (api, _id, req) => {
        const [res] = await fn(api, req);
        return res;
      },
      { signal: ctx.signal },
    );
  }

  /** A failed projects.get, as what the user can do about it. */
  #projectProblem(err: unknown): DaskCloudError {
    const c = this.#cfg;
    const info = DaskCloudError.isInstance(err) && err.cause !== undefined ? gcpErrorInfo(err.cause) : gcpErrorInfo(err);
    if (isNotFound(err)) {
      return new ValidationError(`gcp: project ${c.projectId} does not exist (or these credentials cannot see it)`, {
        option: 'projectId',
        cause: err,
        details: { fix: 'pass the project id (not its name or number) as projectId; `gcloud projects list` shows the ones you can use' },
      });
    }
    if (info.reason === 'accessNotConfigured' || /has not been used|is disabled/i.test(info.message)) {
      return new PreflightError(`gcp: the Compute Engine API is not enabled in project ${c.projectId}`, {
        cause: err,
        details: { fix: `gcloud services enable compute.googleapis.com --project ${c.projectId}` },
      });
    }
    if (info.status === 403) {
      return new PreflightError(`gcp: these credentials may not read project ${c.projectId}: ${info.message}`, {
        cause: err,
        details: { fix: `grant roles/compute.instanceAdmin.v1 and roles/compute.securityAdmin on ${c.projectId} to the account the credentials belong to` },
      });
    }
    return DaskCloudError.isInstance(err) ? err : new CloudApiError(`gcp: reading project ${c.projectId} failed: ${info.message}`, { cause: err });
  }

  /** The image family resolved once, so every VM of the cluster boots the same image. */
  async #resolveImage(ctx: AdapterContext): Promise<string> {
    const c = this.#cfg;
    const family = /^(?:projects\/([^/]+)\/)?global\/images\/family\/([^/]+)$/.exec(c.sourceImage);
    if (!family) return `${c.sourceImage} (an image name: created as given)`;
    const project = family[1] ?? c.projectId;
    const image = await this.#read(ctx, `looking up image family ${family[2]} in ${project}`, (api, req) => api.images.getFromFamily({ project, family: family[2] }, req)).catch(
      (err: unknown) => {
        if (!isNotFound(err)) throw err;
        throw new ValidationError(`gcp: image family ${family[2]} does not exist in project ${project} (sourceImage ${c.sourceImage})`, {
          option: 'sourceImage',
          cause: err,
          details: { fix: `list the families with \`gcloud compute images list --project ${project} --format='value(family)'\` and pass one as sourceImage` },
        });
      },
    );
    if (!image.selfLink) throw new CloudApiError(`gcp: image family ${c.sourceImage} returned no image`);
    this.#image = image.selfLink;
    ctx.log('image family %s → %s', c.sourceImage, image.name);
    return `family ${family[2]} → ${image.name ?? image.selfLink}`;
  }

  /** The network, and the subnetwork the VMs use (the network's only one in the region, unless given). */
  async #resolveNetwork(ctx: AdapterContext): Promise<{ text: string; subnet: string }> {
    const c = this.#cfg;
    const network = await this.#read(ctx, `looking up network ${c.network} in ${c.networkProjectId}`, (api, req) => api.networks.get({ project: c.networkProjectId, network: c.network }, req)).catch(
      (err: unknown) => {
        if (!isNotFound(err)) throw err;
        throw new ValidationError(`gcp: network ${c.network} does not exist in project ${c.networkProjectId}`, {
          option: 'network',
          cause: err,
          details: { fix: `pass an existing network (\`gcloud compute networks list --project ${c.networkProjectId}\`), or create it` },
        });
      },
    );
    let subnet = c.subnetwork;
    if (!subnet) {
      const inRegion = (network.subnetworks ?? []).filter((u) => u.includes(`/regions/${c.region}/subnetworks/`));
      if (inRegion.length !== 1) {
        throw new ValidationError(
          inRegion.length === 0
            ? `gcp: network ${c.network} has no subnetwork in region ${c.region}`
            : `gcp: network ${c.network} has ${inRegion.length} subnetworks in region ${c.region}`,
          {
            option: 'subnetwork',
            details: {
              network: c.network,
              region: c.region,
              fix:
                inRegion.length === 0
                  ? `create one (\`gcloud compute networks subnets create NAME --network ${c.network} --region ${c.region} --range CIDR\`) or choose a zone in a region the network covers`
                  : `pass one of ${inRegion.map((u) => u.split('/').pop()).join(', ')} as subnetwork`,
            },
          },
        );
      }
      subnet = { region: c.region, name: inRegion[0]!.split('/').pop()! };
    }
    const { region, name } = subnet;
    const sub = await this.#read(ctx, `looking up subnetwork ${name} in ${region}`, (api, req) => api.subnetworks.get({ project: c.networkProjectId, region, subnetwork: name }, req)).catch(
      (err: unknown) => {
        if (!isNotFound(err)) throw err;
        throw new ValidationError(`gcp: subnetwork ${name} does not exist in region ${region} of project ${c.networkProjectId}`, {
          option: 'subnetwork',
          cause: err,
          details: { fix: `pass an existing subnetwork (\`gcloud compute networks subnets list --network ${c.network} --regions ${region}\`)` },
        });
      },
    );
    if (!sub.ipCidrRange) throw new CloudApiError(`gcp: subnetwork ${name} has no ipCidrRange`);
    if (sub.network && !sub.network.endsWith(`/global/networks/${c.network}`)) {
      throw new ValidationError(`gcp: subnetwork ${name} belongs to ${sub.network}, not network ${c.network}`, {
        option: 'subnetwork',
        details: { fix: `pass the network the subnetwork belongs to (${sub.network.split('/').pop()}) as network, or a subnetwork of ${c.network}` },
      });
    }
    this.#subnetwork = { url: `projects/${c.networkProjectId}/regions/${region}/subnetworks/${name}`, range: sub.ipCidrRange };
    return { text: `network ${c.network}, subnetwork ${name} (${sub.ipCidrRange})`, subnet: name };
  }

  /** Both machine types are offered in the zone; their vCPUs are kept for the quota check. */
  async #checkMachineTypes(ctx: AdapterContext): Promise<string> {
    const c = this.#cfg;
    const wanted: [string, string][] = [
      ['schedulerMachineType', c.schedulerMachineType],
      ['workerMachineType', c.workerMachineType],
    ];
    const lookUp = async ([option, type]: [string, string]): Promise<void> => {
      if (this.#vcpus.has(type)) return;
      const mt = await this.#read(ctx, `looking up machine type ${type} in ${c.zone}`, (api, req) => api.machineTypes.get({ project: c.projectId, zone: c.zone, machineType: type }, req)).catch(
        (err: unknown) => {
          if (!isNotFound(err)) throw err;
          throw new ValidationError(`gcp: machine type ${type} is not offered in zone ${c.zone}`, {
            option,
            cause: err,
            details: { fix: `choose a type from \`gcloud compute machine-types list --zones ${c.zone}\`, or another zone that offers ${type}` },
          });
        },
      );
      this.#vcpus.set(type, Number(mt.guestCpus ?? 0));
    };
    const distinct = wanted.filter(([, t], i) => wanted.findIndex(([, u]) => u === t) === i);
    settled(await Promise.allSettled(distinct.map(lookUp)));
    return `machine types ${[...new Set(wanted.map(([, t]) => t))].join(', ')} offered in ${c.zone}`;
  }

  /** Private mode with the docker runtime: a Cloud NAT must translate the subnetwork's addresses. */
  async #checkNat(ctx: AdapterContext, subnet: string): Promise<string> {
    const c = this.#cfg;
    const routers = await this.#api.call(
      `listing Cloud Routers in ${c.region}`,
      async (api, _id, req) => {
        const [items] = await api.routers.list({ project: c.networkProjectId, region: c.region }, { ...req, autoPaginate: true });
        return items;
      },
      { signal: ctx.signal },
    );
    for (const router of routers) {
      if (!router.network?.endsWith(`/global/networks/${c.network}`)) continue;
      for (const nat of router.nats ?? []) {
        if (natCovers(nat, c.region, subnet)) return `Cloud NAT ${nat.name ?? ''} on router ${router.name ?? ''} covers subnetwork ${subnet}`;
      }
    }
    const p = c.networkProjectId;
    throw new PreflightError(
      `gcp: private mode with the docker runtime needs outbound internet, but no Cloud NAT in ${c.region} covers subnetwork ${subnet} of network ${c.network}: ` +
        'the VMs could not install Docker or pull the image',
      {
        details: {
          fix:
            `create a Cloud NAT: \`gcloud compute routers create dask-nat-router --project ${p} --region ${c.region} --network ${c.network}\` then ` +
            `\`gcloud compute routers nats create dask-nat --project ${p} --router dask-nat-router --region ${c.region} --auto-allocate-nat-external-ips --nat-all-subnet-ip-ranges\`; ` +
            "or use runtime: 'native' on an image that has Dask, or turn privateNetworking off",
        },
      },
    );
  }

  /** Regional quota headroom for the VMs, disks and external addresses the cluster creates. */
  async #checkQuota(ctx: AdapterContext, plan: NetworkPlan, regionRead: Promise<IRegion>): Promise<string> {
    const c = this.#cfg;
    const region = await regionRead;
    const quotas = new Map((region.quotas ?? []).map((q) => [q.metric ?? '', { limit: Number(q.limit ?? 0), usage: Number(q.usage ?? 0) }]));
    const vms = 1 + plan.nWorkers;
    const need = new Map<string, number>();
    const add = (metric: string, n: number) => need.set(metric, (need.get(metric) ?? 0) + n);
    for (const [type, count] of [
      [c.schedulerMachineType, 1],
      [c.workerMachineType, plan.nWorkers],
    ] as const) {
      const cpus = this.#vcpus.get(type);
      // Unknown when the network check failed: counted as nothing rather than guessed.
      if (cpus !== undefined && count > 0) add(cpuMetric(type, quotas), cpus * count);
    }
    add('INSTANCES', vms);
    if (!plan.privateNetworking) add('IN_USE_ADDRESSES', vms);
    add(SSD_DISK_TYPES.has(c.diskType) ? 'SSD_TOTAL_GB' : 'DISKS_TOTAL_GB', c.diskSizeGb * vms);
    const short: string[] = [];
    const fine: string[] = [];
    for (const [metric, n] of need) {
      const q = quotas.get(metric);
      if (!q) continue; // a metric the region does not report is not limited there
      const free = q.limit - q.usage;
      (n > free ? short : fine).push(`${metric} needs ${n}, ${free} free of ${q.limit}`);
    }
    if (short.length > 0) {
      throw new PreflightError(`gcp: not enough quota in ${c.region} for the scheduler and ${plan.nWorkers} workers: ${short.join('; ')}`, {
        details: {
          fix:
            `request more at https://console.cloud.google.com/iam-admin/quotas?project=${c.projectId} (filter: region ${c.region}, the metrics above), ` +
            'or start fewer or smaller workers, or delete what uses the quota (`gcloud compute instances list`)',
        },
      });
    }
    return `${c.region}: ${fine.join('; ')}`;
  }

  /** The cluster's firewall rules, from the core's plan. */
  #firewallRules(plan: NetworkPlan): IFirewall[] {
    const id = plan.clusterId;
    const expires = plan.labels[LABELS.expires];
    const base = { network: this.#networkUrl, direction: 'INGRESS', priority: 1000 } as const;
    const rules: IFirewall[] = [
      {
        ...base,
        name: `${id}-internal`,
        description: firewallDescription(id, expires, 'members reach each other on every TCP port (workers and nannies listen on random ports)'),
        sourceTags: [clusterTag(id)],
        targetTags: [clusterTag(id)],
        allowed: [{ IPProtocol: 'tcp' }],
      },
    ];
    // One rule per distinct source set, so `ingressCidrs` and the subnetwork range stay apart.
    const bySource = new Map<string, { cidrs: string[]; ports: Set<number>; why: string[] }>();
    for (const r of plan.ingress) {
      const cidrs = r.cidrs === 'network' ? [this.#subnetwork?.range ?? ''] : [...r.cidrs];
      const key = r.cidrs === 'network' ? 'network' : cidrs.join(',');
      const entry = bySource.get(key) ?? { cidrs, ports: new Set<number>(), why: [] };
      for (let p = r.ports[0]; p <= r.ports[1]; p++) entry.ports.add(p);
      entry.why.push(r.why);
      bySource.set(key, entry);
    }
    let publicRules = 0;
    for (const [key, entry] of bySource) {
      if (entry.cidrs.some((x) => x === '')) throw new CloudApiError('gcp: the subnetwork range is unknown (preflight did not run)');
      const suffix = key === 'network' ? 'network' : publicRules++ === 0 ? 'public' : `public-${publicRules}`;
      rules.push({
        ...base,
        name: `${id}-${suffix}`,
        description: firewallDescription(id, expires, entry.why.join('; ')),
        sourceRanges: entry.cidrs,
        targetTags: [roleTag(id, 'scheduler')],
        allowed: [{ IPProtocol: 'tcp', ports: [...entry.ports].sort((a, b) => a - b).map(String) }],
      });
    }
    return rules;
  }

  /**
   * Sends the cluster's firewall rules and returns at once: an instance names its tags, not a
   * rule, so the VMs are created while the rules are inserted and take effect (the core dials
   * the scheduler only once they have). The workers wait for the inserts' answers (`accepted`),
   * which come long before the scheduler's address: a refused insert costs the scheduler's
   * create, never a worker's.
   */
  async ensureNetwork(ctx: AdapterContext, plan: NetworkPlan): Promise<NetworkSetup> {
    const project = this.#cfg.networkProjectId;
    const rules = this.#firewallRules(plan);
    // All inserts first, then all waits: the rules are created in parallel. Every insert settles
    // before an error is thrown, so the rollback's sweep sees everything that was created.
    const ops = Promise.allSettled(
      rules.map((rule) =>
        this.#api
          .call(`creating firewall rule ${rule.name}`, (c, requestId, req) => c.firewalls.insert({ project, requestId, firewallResource: rule }, req), {
            signal: ctx.signal,
            mutating: true,
          })
          .then(operationOf),
      ),
    ).then(settled);
    const inEffect = ops.then(async (started) => {
      settled(await Promise.allSettled(started.map((op, i) => this.#api.waitOperation(`creating firewall rule ${rules[i]!.name}`, op, { project, global: true }, ctx.signal))));
    });
    return { inEffect, accepted: ops.then(() => undefined) };
  }

  #userDataItems(request: InstanceRequest): { key: string; value: string }[] {
    const ud = request.userData;
    const value = ud.gzipped ? ud.body.toString('base64') : ud.body.toString('utf8');
    // The core checked it against userDataLimit before any call; this guards the arithmetic.
    if (Buffer.byteLength(value) > USER_DATA_LIMITS.gcp) {
      throw new UserDataError(
        'E_USER_DATA_TOO_LARGE',
        `${request.role} user-data is ${ud.bytes} bytes${ud.gzipped ? ' gzipped' : ''}, ${Buffer.byteLength(value)} bytes as a metadata value: over GCP's ${USER_DATA_LIMITS.gcp}-byte metadata value limit`,
        { details: { rawBytes: ud.rawBytes, gzipBytes: ud.bytes, limitBytes: USER_DATA_LIMITS.gcp } },
      );
    }
    // cloud-init's GCE datasource decodes `user-data` marked base64.
    return ud.gzipped ? [{ key: 'user-data', value }, { key: 'user-data-encoding', value: 'base64' }] : [{ key: 'user-data', value }];
  }

  /**
   * Instance properties shared by insert and bulkInsert. `bulk` switches the forms bulkInsert's
   * instanceProperties want: bare machine, disk and accelerator type names instead of URLs.
   */
  #properties(ctx: AdapterContext, request: InstanceRequest, bulk: boolean): IInstanceProperties {
    const c = this.#cfg;
    const zone = c.zone;
    const role = request.role;
    const machine = role === 'scheduler' ? c.schedulerMachineType : c.workerMachineType;
    const labels = { ...c.labels, ...request.labels };
    const scheduling: IInstanceProperties['scheduling'] = {
      onHostMaintenance: c.onHostMaintenance,
      automaticRestart: !c.spot,
      // `preemptible` is sent as Spot too: legacy preemptible VMs refuse time limits ("Limit the
      // run time of a VM") and would be stopped, not deleted, when preempted.
      ...(c.spot ? { provisioningModel: 'SPOT' } : {}),
      // int64 fields travel as strings in Compute's REST JSON.
      ...(c.maxRunDurationSeconds !== undefined ? { maxRunDuration: { seconds: String(c.maxRunDurationSeconds) } } : {}),
      // Delete, never just stop: a stopped VM still bills for its disk and is easily forgotten.
      ...(c.maxRunDurationSeconds !== undefined || c.spot ? { instanceTerminationAction: 'DELETE' } : {}),
    };
    if (!this.#subnetwork) throw new CloudApiError('gcp: the subnetwork is unknown (preflight did not run)');
    return {
      machineType: bulk ? machine : `zones/${zone}/machineTypes/${machine}`,
      description: `dask-cloud ${role} of cluster ${ctx.clusterId}`,
      labels,
      tags: { items: [clusterTag(ctx.clusterId), roleTag(ctx.clusterId, role)] },
      metadata: { items: this.#userDataItems(request) },
      disks: [
        {
          boot: true,
          // The API's default is false: the disk would outlive its VM and keep billing.
          autoDelete: true,
          initializeParams: {
            sourceImage: this.#image,
            diskSizeGb: String(c.diskSizeGb),
            diskType: bulk ? c.diskType : `zones/${zone}/diskTypes/${c.diskType}`,
            labels,
          },
        },
      ],
      networkInterfaces: [
        {
          network: this.#networkUrl,
          subnetwork: this.#subnetwork.url,
          // Private networking: no access config, so no public address at all.
          ...(this.#privateNetworking ? {} : { accessConfigs: [{ name: 'External NAT', type: 'ONE_TO_ONE_NAT' }] }),
        },
      ],
      scheduling,
      ...(c.gpu
        ? { guestAccelerators: [{ acceleratorType: bulk ? c.gpu.type : `zones/${zone}/acceleratorTypes/${c.gpu.type}`, acceleratorCount: c.gpu.count }] }
        : {}),
      ...(c.serviceAccount ? { serviceAccounts: [{ email: c.serviceAccount.email, scopes: c.serviceAccount.scopes }] } : {}),
    };
  }

  async createInstances(ctx: AdapterContext, request: InstanceRequest, onCreated: (ids: string[]) => void): Promise<Instance[]> {
    if (request.role === 'scheduler' && request.names.length === 1) return [await this.#insertOne(ctx, request, request.names[0]!, onCreated)];
    return this.#bulkInsert(ctx, request, onCreated);
  }

  async #insertOne(ctx: AdapterContext, request: InstanceRequest, name: string, onCreated: (ids: string[]) => void): Promise<Instance> {
    const { projectId: project, zone } = this.#cfg;
    const props = this.#properties(ctx, request, false);
    const call = this.#api.call(`creating ${request.role} ${name}`, (c, requestId, req) => c.instances.insert({ project, zone, requestId, instanceResource: { ...props, name } as IInstance }, req), {
      signal: ctx.signal,
      mutating: true,
    });
    this.#track(call);
    const op = operationOf(await call);
    onCreated([name]);
    // Watched in the background: the workers need only the private address, not a booted VM.
    const watch = this.#api.waitOperation(`creating ${request.role} ${name}`, op, this.#zoneScope, ctx.signal).then(() => undefined);
    this.#inserts.set(name, watch);
    watch.catch((err: Error) => {
      if (!ctx.signal.aborted) ctx.memberFailed?.({ id: name, name, role: request.role }, err);
    });
    // The internal address is allocated with the instance: GCP knows it while PROVISIONING. The
    // external one is taken only from a RUNNING instance (waitForAddresses).
    const inst = await this.#getInstance(ctx, name, { waitForExistence: true });
    const { publicIp: _notYet, ...withPrivate } = toInstance(inst, request.role);
    return inst.status === 'RUNNING' ? toInstance(inst, request.role) : withPrivate;
  }

  async #bulkInsert(ctx: AdapterContext, request: InstanceRequest, onCreated: (ids: string[]) => void): Promise<Instance[]> {
    const { projectId: project, zone } = this.#cfg;
    const names = request.names;
    const instanceProperties = this.#properties(ctx, request, true);
    // Any failure is reported at once: a start would otherwise notice only after the scheduler is up.
    const reportFailure = (err: unknown) => {
      if (!ctx.signal.aborted) ctx.memberFailed?.({ id: names[0]!, name: names[0]!, role: request.role }, err as Error);
      throw err;
    };
    const what = `creating ${names.length} ${request.role}s`;
    const call = this.#api.call(
      what,
      (c, requestId, req) =>
        c.instances.bulkInsert(
          {
            project,
            zone,
            requestId,
            bulkInsertInstanceResourceResource: {
              count: String(names.length),
              // All or nothing: a partial cluster is rolled back anyway.
              minCount: String(names.length),
              perInstanceProperties: Object.fromEntries(names.map((n) => [n, {}])),
              instanceProperties,
            },
          },
          req,
        ),
      { signal: ctx.signal, mutating: true },
    );
    // The operation is waited for whatever the signal says (bounded), so that a sweep can wait
    // for it too (see #creating); this start stops waiting as soon as it is aborted.
    const done = call.then((res) => {
      onCreated([...names]);
      return this.#api.waitOperation(what, operationOf(res), this.#zoneScope);
    });
    this.#track(done);
    await raceAbort(done, ctx.signal).catch(reportFailure);
    // bulkInsert answers with no addresses: one list gives them all.
    const wanted = new Set(names);
    const found = (await this.#list(ctx, `labels.${LABELS.cluster} = "${ctx.clusterId}"`)).filter((i) => wanted.has(i.name ?? ''));
    const missing = names.filter((n) => !found.some((i) => i.name === n));
    if (missing.length > 0) throw new CloudApiError(`gcp: bulkInsert finished but ${missing.join(', ')} do not exist`, { details: { missing } });
    return names.map((n) => toInstance(found.find((i) => i.name === n)!, request.role));
  }

  async #getInstance(ctx: AdapterContext, name: string, opts: { waitForExistence?: boolean } = {}): Promise<IInstance> {
    const { projectId: project, zone } = this.#cfg;
    return this.#api.call(
      `looking up instance ${name}`,
      async (c, _id, req) => {
        const [inst] = await c.instances.get({ project, zone, instance: name }, req);
        return inst;
      },
      // Right after an insert, a read may not see the instance yet.
      { signal: ctx.signal, ...(opts.waitForExistence ? { retryAlso: isNotFound, retryTimeoutMs: 30_000 } : {}) },
    );
  }

  async #list(ctx: AdapterContext, filter: string): Promise<IInstance[]> {
    const { projectId: project, zone } = this.#cfg;
    if (this.#allZones) {
      return this.#api.call(
        `listing instances in every zone (${filter})`,
        async (c, _id, req) => {
          const found: IInstance[] = [];
          for await (const [scope, list] of c.instances.aggregatedListAsync({ project, filter }, { ...req, autoPaginate: false, otherArgs: { headers: { [FIELD_MASK]: AGGREGATED_LIST_FIELDS } } })) {
            for (const inst of list.instances ?? []) {
              this.#zoneOf.set(inst.name ?? '', scope.replace(/^zones\//, ''));
              found.push(inst);
            }
          }
          return found;
        },
        { signal: ctx.signal },
      );
    }
    return this.#api.call(
      `listing instances (${filter})`,
      async (c, _id, req) => {
        const [items] = await c.instances.list({ project, zone, filter }, { ...req, autoPaginate: true, otherArgs: { headers: { [FIELD_MASK]: LIST_FIELDS } } });
        return items;
      },
      { signal: ctx.signal },
    );
  }

  async waitForAddresses(ctx: AdapterContext, instance: Instance, wantPublic: boolean): Promise<Instance> {
    // A failed insert operation explains itself better than a missing address.
    await this.#inserts.get(instance.id);
    const what = `gcp: waiting for the ${wantPublic ? 'public' : 'private'} address of ${instance.id}`;
    return retry(
      async () => {
        const inst = await this.#getInstance(ctx, instance.id).catch((err: unknown) => {
          if (isNotFound(err)) throw new CloudApiError(`gcp: instance ${instance.id} disappeared before it was running`, { cause: err });
          throw err;
        });
        const status = inst.status ?? '';
        if (GONE_STATES.has(status)) throw new CloudApiError(`gcp: instance ${instance.id} is ${status} instead of running`, { details: { status } });
        const found = toInstance(inst, instance.role);
        if (found.privateIp && (!wantPublic || (status === 'RUNNING' && found.publicIp))) return found;
        throw new NotYet(`instance ${instance.id} is ${status || 'unknown'}${wantPublic ? ', no public address yet' : ''}`);
      },
      { what, retryable: (err) => err instanceof NotYet, timeoutMs: this.#api.operationTimeoutMs, baseDelayMs: 500, maxDelayMs: 5000, signal: ctx.signal },
    );
  }

  async deleteInstances(ctx: AdapterContext, ids: string[]): Promise<void> {
    // Deletes first, then the waits, so every VM starts stopping at once.
    const started = ids.length > LIST_WAIT_THRESHOLD ? await this.#startDeletesInBatches(ctx, ids) : await Promise.allSettled(ids.map((name) => this.#startDelete(ctx, name)));
    const pending = new Map<string, { zone: string; op: ComputeOperation }>();
    const failures: Error[] = [];
    for (const s of started) {
      if (s.status === 'rejected') failures.push(s.reason as Error);
      else if (s.value.op && s.value.op.status !== 'DONE') pending.set(s.value.name, { zone: s.value.zone, op: s.value.op });
      else if (s.value.op) await this.#deleteOutcome(s.value.name, s.value.zone, s.value.op, ctx.signal).catch((err: Error) => failures.push(err));
    }
    // One list per poll sees every VM of the cluster (a few at a time, the operations are cheaper).
    const byList = ctx.clusterId !== '' && pending.size > LIST_WAIT_THRESHOLD && (this.#allZones || [...pending.values()].every((p) => p.zone === this.#cfg.zone));
    if (byList) await this.#waitGoneByList(ctx, pending, failures);
    else {
      const waited = await Promise.allSettled([...pending].map(([name, p]) => this.#deleteOutcome(name, p.zone, p.op, ctx.signal)));
      for (const w of waited) if (w.status === 'rejected') failures.push(w.reason as Error);
    }
    for (const id of ids) this.#inserts.delete(id);
    if (failures.length === 1) throw failures[0];
    if (failures.length > 1) {
      throw new CloudApiError(`gcp: deleting ${failures.length} instances failed: ${failures.map((f) => f.message).join('; ')}`, { cause: failures[0] });
    }
  }

  /** Asks for one VM's deletion; its operation, or none when the VM was already gone. */
  async #startDelete(ctx: AdapterContext, name: string): Promise<StartedDelete> {
    const zone = this.#zoneFor(name);
    try {
      const res = await this.#api.call(`deleting instance ${name}`, (c, requestId, req) => c.instances.delete({ project: this.#cfg.projectId, zone, instance: name, requestId }, req), {
        signal: ctx.signal,
        mutating: true,
        // Already being deleted (e.g. by maxRunDuration): ask again until it is gone.
        retryAlso: (err) => gcpErrorInfo(err).reason === NOT_READY,
      });
      return { name, zone, op: operationOf(res) };
    } catch (err) {
      if (isNotFound(err)) return { name, zone, op: undefined };
      throw err;
    }
  }

  /**
   * Many deletions go out in Compute's batches, a thousand calls per HTTP request. A call the
   * batch did not accept (throttled, not ready, any error), or every call of a batch that failed
   * as a whole, is asked again on its own, where the pipeline's retries and error messages apply.
   */
  async #startDeletesInBatches(ctx: AdapterContext, ids: string[]): Promise<PromiseSettledResult<StartedDelete>[]> {
    const project = encodeURIComponent(this.#cfg.projectId);
    const chunks = Array.from({ length: Math.ceil(ids.length / BATCH_MAX) }, (_, k) => ids.slice(k * BATCH_MAX, (k + 1) * BATCH_MAX));
    const settled = await Promise.all(
      chunks.map(async (names) => {
        const zones = names.map((name) => this.#zoneFor(name));
        const calls = names.map((name, i): BatchCall => ({
          method: 'DELETE',
          path: `/compute/v1/projects/${project}/zones/${encodeURIComponent(zones[i]!)}/instances/${encodeURIComponent(name)}?requestId=${randomUUID()}`,
        }));
        const answers = await this.#api.batch(`deleting ${names.length} instances`, calls, { signal: ctx.signal, mutating: true }).catch((err: unknown) => {
          if (ctx.signal.aborted) throw err;
          ctx.log('a batch of %d deletions failed (%s); asking one by one', names.length, gcpErrorInfo(err).message);
          return undefined;
        });
        return Promise.allSettled(
          names.map(async (name, i): Promise<StartedDelete> => {
            const answer = answers?.[i];
            if (answer?.status === 404) return { name, zone: zones[i]!, op: undefined };
            const op = answer?.status === 200 ? operationIn(answer.body) : undefined;
            return op ? { name, zone: zones[i]!, op } : this.#startDelete(ctx, name);
          }),
        );
      }),
    );
    return settled.flat();
  }

  /** Waits for one delete operation; an instance that was already gone counts as deleted. */
  async #deleteOutcome(name: string, zone: string, op: ComputeOperation, signal: AbortSignal): Promise<void> {
    try {
      await this.#api.waitOperation(`deleting instance ${name}`, op, { project: this.#cfg.projectId, zone }, signal);
    } catch (err) {
      const codes = ((err as CloudApiError).details?.errors as { code?: string }[] | undefined) ?? [];
      if (codes.some((e) => e.code === 'RESOURCE_NOT_FOUND')) return;
      throw err;
    }
  }

  /**
   * Waits until none of `pending` is listed any more, with one list of the cluster per poll
   * instead of one operation wait per VM. A VM still listed and not STOPPING after the first poll
   * is checked through its own operation: a delete that failed leaves it running, and its
   * operation says why.
   */
  async #waitGoneByList(ctx: AdapterContext, pending: Map<string, { zone: string; op: ComputeOperation }>, failures: Error[]): Promise<void> {
    const deadline = Date.now() + this.#api.operationTimeoutMs;
    let pause = 500;
    let polls = 0;
    const checked = new Set<string>();
    while (pending.size > 0) {
      await sleep(pause, undefined, { signal: ctx.signal }).catch(() => undefined);
      if (ctx.signal.aborted) throw ctx.signal.reason;
      pause = Math.min(2_000, pause * 1.5);
      polls++;
      const listed = new Map((await this.#list(ctx, `labels.${LABELS.cluster} = "${ctx.clusterId}"`)).map((i) => [i.name ?? '', i]));
      const odd: [string, { zone: string; op: ComputeOperation }][] = [];
      for (const [name, p] of [...pending]) {
        const inst = listed.get(name);
        if (!inst) pending.delete(name);
        else if (polls > 1 && inst.status !== 'STOPPING' && !checked.has(name)) odd.push([name, p]);
      }
      const outcomes = await Promise.allSettled(odd.map(([name, p]) => this.#deleteOutcome(name, p.zone, p.op, ctx.signal)));
      for (const [k, o] of outcomes.entries()) {
        const name = odd[k]![0];
        checked.add(name);
        if (o.status === 'rejected') {
          failures.push(o.reason as Error);
          pending.delete(name);
        }
      }
      if (pending.size > 0 && Date.now() >= deadline) {
        const left = [...pending.keys()];
        failures.push(
          new CloudApiError(`gcp: ${left.length} instance(s) still exist ${this.#api.operationTimeoutMs} ms after their deletion was accepted: ${left.slice(0, 10).join(', ')}${left.length > 10 ? ', …' : ''}`, {
            details: { instances: left },
          }),
        );
        return;
      }
    }
  }

  async listInstances(ctx: AdapterContext): Promise<Instance[]> {
    await Promise.all([...this.#creating]);
    const items = await this.#list(ctx, `labels.${LABELS.cluster} = "${ctx.clusterId}"`);
    return items
      .filter((i) => i.labels?.[LABELS.cluster] === ctx.clusterId)
      .map((i) => toInstance(i, i.labels?.[LABELS.role] === 'scheduler' ? 'scheduler' : 'worker'));
  }

  async #clusterFirewalls(ctx: AdapterContext, filter: string): Promise<IFirewall[]> {
    const project = this.#cfg.networkProjectId;
    return this.#api.call(
      `listing firewall rules (${filter})`,
      async (c, _id, req) => {
        const [items] = await c.firewalls.list({ project, filter }, { ...req, autoPaginate: true });
        return items;
      },
      { signal: ctx.signal },
    );
  }

  async deleteNetwork(ctx: AdapterContext): Promise<void> {
    const project = this.#cfg.networkProjectId;
    const id = ctx.clusterId;
    const rules = (await this.#clusterFirewalls(ctx, `name eq "${id}-.*"`)).filter((f) => parseFirewallDescription(f.description)?.clusterId === id);
    const deletions = await Promise.allSettled(
      rules.map(async (rule) => {
        try {
          const res = await this.#api.call(`deleting firewall rule ${rule.name}`, (c, requestId, req) => c.firewalls.delete({ project, firewall: rule.name!, requestId }, req), {
            signal: ctx.signal,
            mutating: true,
            retryAlso: (err) => gcpErrorInfo(err).reason === NOT_READY,
          });
          return { name: rule.name!, op: operationOf(res) };
        } catch (err) {
          if (isNotFound(err)) return undefined;
          throw err;
        }
      }),
    );
    const waits = settled(deletions).map((o) => (o ? this.#api.waitOperation(`deleting firewall rule ${o.name}`, o.op, { project, global: true }, ctx.signal) : undefined));
    settled(await Promise.allSettled(waits));
  }

  /** `cleanup` sweeps every zone of the project, so the project is all it needs. */
  cleanupFlags(): string[] {
    return ['--project', this.#cfg.projectId];
  }

  async consoleOutput(ctx: AdapterContext, id: string): Promise<string> {
    const { projectId: project, zone } = this.#cfg;
    return this.#api.call(
      `reading the serial console of ${id}`,
      async (c, _id, req) => {
        // A negative start reads the most recent bytes.
        const [out] = await c.instances.getSerialPortOutput({ project, zone, instance: id, port: 1, start: -65_536 }, { ...req, timeout: 15_000 });
        return out.contents ?? '';
      },
      { signal: ctx.signal },
    );
  }

  async listClusters(ctx: AdapterContext): Promise<ClusterListing[]> {
    const found = new Map<string, ClusterListing>();
    const note = (clusterId: string, expiresAt: Date | undefined, created?: Date): ClusterListing => {
      const c = found.get(clusterId) ?? { clusterId, instances: [] };
      // The earliest expiry wins: a cluster counts as expired once any of its resources is.
      if (expiresAt !== undefined && (c.expiresAt === undefined || expiresAt < c.expiresAt)) c.expiresAt = expiresAt;
      if (created !== undefined && (c.createdAt === undefined || created < c.createdAt)) c.createdAt = created;
      found.set(clusterId, c);
      return c;
    };
    for (const inst of await this.#list(ctx, `labels.${LABELS.cluster}:*`)) {
      const id = inst.labels?.[LABELS.cluster];
      if (!id) continue;
      const created = cloudDate(inst.creationTimestamp);
      note(id, expiryOf(inst.labels), created).instances!.push({
        ...toInstance(inst, inst.labels?.[LABELS.role] === 'scheduler' ? 'scheduler' : 'worker'),
        labels: { ...(inst.labels ?? {}) },
        ...(created ? { createdAt: created } : {}),
        ...(inst.zone ? { location: inst.zone.split('/').pop()! } : {}),
      });
    }
    for (const rule of await this.#clusterFirewalls(ctx, `description eq "${FIREWALL_MARK}.*"`)) {
      const parsed = parseFirewallDescription(rule.description);
      if (parsed) note(parsed.clusterId, parsed.expiresAt, cloudDate(rule.creationTimestamp));
    }
    return [...found.values()];
  }
}

/**
 * Lists ask only for the fields the library reads (Compute's partial response, "Improve
 * performance" in its docs): a full instance carries its metadata, user-data included, so a list
 * of a thousand workers would otherwise be megabytes to fetch, parse and hold.
 */
const FIELD_MASK = 'X-Goog-FieldMask';
const INSTANCE_FIELDS = 'name,zone,status,labels,creationTimestamp,networkInterfaces(networkIP,accessConfigs(natIP))';
const LIST_FIELDS = `items(${INSTANCE_FIELDS}),nextPageToken`;
const AGGREGATED_LIST_FIELDS = `items/*/instances(${INSTANCE_FIELDS}),nextPageToken`;

function toInstance(inst: IInstance, role: MemberRole): Instance {
  const nic = inst.networkInterfaces?.[0];
  const publicIp = nic?.accessConfigs?.find((a) => a.natIP)?.natIP ?? undefined;
  return {
    id: inst.name ?? '',
    name: inst.name ?? '',
    role,
    ...(nic?.networkIP ? { privateIp: nic.networkIP } : {}),
    ...(publicIp ? { publicIp } : {}),
    ...(inst.status && GONE_STATES.has(inst.status) ? { stoppedState: inst.status } : {}),
  };
}

/** Disk types whose size counts against the regional SSD_TOTAL_GB quota (the rest: DISKS_TOTAL_GB). */
const SSD_DISK_TYPES = new Set(['pd-ssd', 'pd-balanced']);
/** Families whose vCPUs count against the plain `CPUS` quota; the others have `<FAMILY>_CPUS`. */
const PLAIN_CPU_FAMILIES = new Set(['e2', 'n1', 'f1', 'g1', 'custom']);

/** The regional quota metric a machine type's vCPUs count against. */
function cpuMetric(machineType: string, quotas: Map<string, unknown>): string {
  const family = machineType.split('-')[0] ?? '';
  if (PLAIN_CPU_FAMILIES.has(family)) return 'CPUS';
  const own = `${family.toUpperCase()}_CPUS`;
  return quotas.has(own) ? own : 'CPUS';
}

/**
 * Whether a Cloud NAT config translates the primary range of `subnet` (Compute v1 `RouterNat`:
 * `sourceSubnetworkIpRangesToNat`, and for LIST_OF_SUBNETWORKS the `subnetworks[]` entries).
 */
export function natCovers(nat: IRouterNat, region: string, subnet: string): boolean {
  const mode = String(nat.sourceSubnetworkIpRangesToNat ?? '');
  if (mode === 'ALL_SUBNETWORKS_ALL_IP_RANGES' || mode === 'ALL_SUBNETWORKS_ALL_PRIMARY_IP_RANGES') return true;
  if (mode !== 'LIST_OF_SUBNETWORKS') return false;
  return (nat.subnetworks ?? []).some((s) => {
    const ranges = (s.sourceIpRangesToNat ?? ['ALL_IP_RANGES']).map(String);
    return (s.name ?? '').endsWith(`/regions/${region}/subnetworks/${subnet}`) && (ranges.includes('ALL_IP_RANGES') || ranges.includes('PRIMARY_IP_RANGE'));
  });
}

/** A refused token (401) or an auth-library failure before any answer: the credentials' fault. */
function isAuthFailure(err: unknown): boolean {
  const inner = DaskCloudError.isInstance(err) && err.cause !== undefined ? err.cause : err;
  const info = gcpErrorInfo(inner);
  if (info.status === 401) return true;
  return info.status === undefined && /invalid_grant|invalid_client|unauthorized_client|Could not load the default credentials|Could not refresh access token/i.test(info.message);
}

/** The values, or the first failure once every promise has settled. */
function settled<T>(results: PromiseSettledResult<T>[]): T[] {
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/** An instance that is not there yet: polled again. */
class NotYet extends Error {}

export type { ComputeOperation };
