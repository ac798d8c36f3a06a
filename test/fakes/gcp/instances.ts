/**
 * Compute Engine instances: insert, bulkInsert, get, list, aggregatedList, delete, setLabels, getSerialPortOutput,
 * with Google's validation, the PROVISIONING → STAGING → RUNNING / STOPPING → TERMINATED
 * lifecycle on the fake's clock, address allocation, boot disks, regional quotas and the VmBooter
 * hook.
 */
import { FakeApiError, Lifecycle, PendingWork, type BootedVm, type FakeRequest, type FakeResponse, type FakeServer, type FirewallRule } from '../core';
import {
  ACCELERATOR_TYPES, API, NAME_RE, ZONES, fingerprint, parseZonal, regionOf, resolveImage, stripApi, timestamp, type ImageInfo,
} from './catalog';
import { alreadyExists, badRequest, conditionNotMet, invalidField, notFound, notModelled, requiredField } from './errors';
import { listResponse } from './filter';
import type { Operation, OperationError } from './operations';
import type { GcpWorld } from './world';

export type InstanceStatus = 'PROVISIONING' | 'STAGING' | 'RUNNING' | 'STOPPING' | 'TERMINATED';

/** Google's metadata limits: 256 KiB per value, 512 KiB in total. */
export const METADATA_VALUE_MAX = 256 * 1024;
export const METADATA_TOTAL_MAX = 512 * 1024;
/** bulkInsert: at most this many instances per request. */
export const BULK_INSERT_MAX = 5000;
/** The serial port keeps the last 1 MiB. */
const SERIAL_BUFFER = 1024 * 1024;
const MAX_RUN_DURATION_S = { min: 30, max: 120 * 24 * 3600 };
const DISK_TYPES = new Set(['pd-standard', 'pd-balanced', 'pd-ssd', 'pd-extreme', 'hyperdisk-balanced', 'local-ssd']);
const LABEL_KEY_RE = /^[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}$/u;
const LABEL_VALUE_RE = /^[\p{Ll}\p{Lo}\p{N}_-]{0,63}$/u;
/** Disk types whose size counts against the regional SSD_TOTAL_GB quota (the rest: DISKS_TOTAL_GB). */
export const SSD_QUOTA_TYPES = new Set(['pd-ssd', 'pd-balanced']);

/** A region's current use of the quotas the fake models. */
export interface RegionUsage {
  cpus: number;
  instances: number;
  addresses: number;
  ssdGb: number;
  standardGb: number;
}

type Json = Record<string, any>;

/** An instance's properties after validation: what insert and bulkInsert create from. */
interface Plan {
  machineType: string;
  cpus: number;
  builtInGpus: number;
  labels: Record<string, string>;
  tags: string[];
  metadataItems: { key: string; value: string }[];
  userData: Buffer;
  accessConfig?: Json;
  disks: DiskPlan[];
  scheduling: Json;
  maxRunDurationMs?: number;
  guestAccelerators: Json[];
  serviceAccounts: { email: string; scopes: string[] }[];
  deletionProtection: boolean;
  /** Accepted fields echoed as sent (description, shieldedInstanceConfig, ...). */
  passthrough: Json;
}

interface DiskPlan {
  boot: boolean;
  autoDelete: boolean;
  index: number;
  deviceName?: string;
  diskName?: string;
  sizeGb: number;
  image?: ImageInfo;
  diskType: string;
  scratch: boolean;
  input: Json;
}

interface InstanceRecord {
  key: string;
  zone: string;
  name: string;
  id: string;
  wire: Json;
  lifecycle: Lifecycle<InstanceStatus>;
  userData: Buffer;
  privateIp: string;
  publicIp?: string;
  tags: string[];
  serviceAccounts: string[];
  cpus: number;
  diskKeys: { key: string; autoDelete: boolean }[];
  vm?: BootedVm;
  /** The VM of the last boot, kept after it stops: its serial console stays readable. */
  lastVm?: BootedVm;
  bootDone?: Promise<void>;
  bootError?: unknown;
  /** JSON of the rules the VM was last given (boot or setFirewall). */
  firewallKey?: string;
  deleting?: boolean;
  cancelTimers: (() => void)[];
  /** Called once when the instance reaches RUNNING or goes away first (insert operations). */
  onSettled: (() => void)[];
}

/** A rule that makes the next matching operations fail asynchronously (DONE with `error`). */
interface OperationFailureRule {
  operationType?: string;
  remaining: number;
  error: OperationError;
}

export class Instances {
  private readonly records = new Map<string, InstanceRecord>();
  private readonly failureRules: OperationFailureRule[] = [];
  /**
   * VMs of deleted or stopped instances that are still shutting down (and boots still under way
   * for deleted ones). stopAll waits for them: a fake started next may hand out the same addresses.
   */
  private readonly stopping = new PendingWork();

  constructor(private readonly world: GcpWorld) {}

  register(server: FakeServer): void {
    const base = '/projects/:project/zones/:zone/instances';
    server.route('POST', base, 'compute.instances.insert', (req) => this.insert(req));
    server.route('POST', `${base}/bulkInsert`, 'compute.instances.bulkInsert', (req) => this.bulkInsert(req));
    server.route('GET', base, 'compute.instances.list', (req) => this.list(req));
    server.route('GET', '/projects/:project/aggregated/instances', 'compute.instances.aggregatedList', (req) => this.aggregatedList(req));
    server.route('GET', `${base}/:instance`, 'compute.instances.get', (req) => ({ body: this.find(req).wire }));
    server.route('DELETE', `${base}/:instance`, 'compute.instances.delete', (req) => this.delete(req));
    server.route('POST', `${base}/:instance/setLabels`, 'compute.instances.setLabels', (req) => this.setLabels(req));
    server.route('GET', `${base}/:instance/serialPort`, 'compute.instances.getSerialPortOutput', (req) => this.serialPort(req));
  }

  /** Wire form of every instance (any status). */
  all(): Json[] {
    return [...this.records.values()].map((r) => r.wire);
  }

  /** Makes the next `times` operations (of `operationType`, or any) finish DONE with `error`. */
  failOperations(rule: { operationType?: string; times?: number; error: OperationError }): { remove(): void } {
    const r: OperationFailureRule = { operationType: rule.operationType, remaining: rule.times ?? 1, error: rule.error };
    this.failureRules.push(r);
    return { remove: () => this.failureRules.splice(this.failureRules.indexOf(r) >>> 0, 1) };
  }

  /** The data a firewall translation needs about the running, not-deleting instances. */
  firewallSubjects(): { id: string; network: string; tags: string[]; serviceAccounts: string[]; record: InstanceRecord }[] {
    return [...this.records.values()]
      .filter((r) => r.lifecycle.state === 'RUNNING' && !r.deleting)
      .map((r) => ({ id: r.id, network: this.world.networkUrl('default'), tags: r.tags, serviceAccounts: r.serviceAccounts, record: r }));
  }

  /** Pushes new rules to one booted VM if they changed (firewall sync). */
  pushFirewall(rec: InstanceRecord, rules: FirewallRule[]): void {
    const key = JSON.stringify(rules);
    if (!rec.vm || rec.firewallKey === key || !this.world.booter) return;
    rec.firewallKey = key;
    Promise.resolve()
      .then(() => this.world.booter!.setFirewall(rec.id, rules))
      .catch((e) => this.world.recordBootError(rec.id, e));
  }

  /** Stops every booted VM (fake shutdown). */
  async stopAll(): Promise<void> {
    const recs = [...this.records.values()];
    for (const r of recs) r.cancelTimers.splice(0).forEach((c) => c());
    await Promise.all(recs.map(async (r) => {
      await r.bootDone;
      await r.vm?.stop().catch((e) => this.world.recordBootError(r.id, e));
    }));
    await this.stopping.drain();
  }

  // -------------------------------------------------------------------------------------------
  // Handlers

  private insert(req: FakeRequest): FakeResponse {
    const { project, zone } = req.params;
    this.world.checkProject(project);
    this.world.checkZone(zone);
    for (const q of ['sourceInstanceTemplate', 'sourceMachineImage'] as const) {
      const ref = req.query[q];
      // The fake holds no templates or machine images, so any reference is one that does not exist.
      if (typeof ref === 'string' && ref) throw notFound(stripApi(ref));
    }
    const op = this.world.operations.idempotent(req.query.requestId as string | undefined, () => {
      const body = (req.json ?? {}) as Json;
      const name = body.name as string | undefined;
      if (!name) throw requiredField('resource.name');
      this.checkNewName(zone, name, 'resource.name');
      const plan = this.validate(body, zone, 'resource', 'insert');
      this.checkDiskNames(zone, [name], plan);
      const op = this.world.operations.start({
        scope: { zone },
        operationType: 'insert',
        targetLink: `${this.zoneUrl(zone)}/instances/${name}`,
      });
      const quota = this.quotaShortfall(zone, plan, 1);
      if (quota) {
        this.world.clock.setTimeout(() => op.finish([quota]), 0);
        return op;
      }
      const failure = this.takeFailure('insert');
      const rec = this.create(zone, name, plan, {}, failure ? [] : undefined);
      op.wire.targetId = rec.id;
      this.whenSettled([rec], op, failure);
      return op;
    });
    return { body: op.wire };
  }

  private bulkInsert(req: FakeRequest): FakeResponse {
    const { project, zone } = req.params;
    this.world.checkProject(project);
    this.world.checkZone(zone);
    const op = this.world.operations.idempotent(req.query.requestId as string | undefined, () => {
      const body = (req.json ?? {}) as Json;
      if (body.sourceInstanceTemplate) throw notFound(stripApi(body.sourceInstanceTemplate));
      if (body.locationPolicy) throw notModelled('bulkInsert locationPolicy (zonal bulkInsert only)');
      if (!body.instanceProperties) throw badRequest("Invalid value for field 'bulkInsertInstanceResource': ''. Either instanceProperties or sourceInstanceTemplate must be specified.", 'invalid');
      const count = Number(body.count ?? 0);
      const per = (body.perInstanceProperties ?? {}) as Record<string, Json>;
      const perNames = Object.keys(per);
      if (!Number.isInteger(count) || count < 1) throw invalidField('bulkInsertInstanceResource.count', body.count ?? '', 'Bulk instance count must be greater than 0.');
      if (count > BULK_INSERT_MAX) throw invalidField('bulkInsertInstanceResource.count', body.count, `Bulk instance count must be less than or equal to ${BULK_INSERT_MAX}.`);
      const minCount = body.minCount === undefined ? count : Number(body.minCount);
      if (!(minCount >= 1 && minCount <= count)) throw invalidField('bulkInsertInstanceResource.minCount', body.minCount, 'minCount must be between 1 and count.');
      if (perNames.length > count) throw invalidField('bulkInsertInstanceResource.perInstanceProperties', perNames.length, 'The number of perInstanceProperties must not exceed count.');
      if (perNames.length < count && !body.namePattern) throw requiredField('bulkInsertInstanceResource.namePattern');
      for (const n of perNames) this.checkNewName(zone, n, `bulkInsertInstanceResource.perInstanceProperties[${n}]`);
      const names = [...perNames, ...this.patternNames(zone, body.namePattern, count - perNames.length, perNames)];
      const plan = this.validate(body.instanceProperties, zone, 'bulkInsertInstanceResource.instanceProperties', 'bulkInsert');
      this.checkDiskNames(zone, names, plan);

      const op = this.world.operations.start({
        scope: { zone },
        operationType: 'bulkInsert',
        targetLink: `${this.zoneUrl(zone)}/instances`,
        extra: { operationGroupId: this.world.ids.uuid() },
      });
      const status = { status: 'CREATING', createdVmCount: 0, deletedVmCount: 0, failedToCreateVmCount: 0, targetVmCount: count };
      op.wire.instancesBulkInsertOperationMetadata = { perLocationStatus: { [`zones/${zone}`]: status } };
      // minCount: create what quota allows if that is at least minCount, else nothing.
      const capacity = this.quotaCapacity(zone, plan);
      const n = Math.min(count, capacity);
      if (n < minCount) {
        const quota = this.quotaShortfall(zone, plan, minCount)!;
        this.world.clock.setTimeout(() => {
          Object.assign(status, { status: 'DONE', failedToCreateVmCount: count });
          op.finish([quota]);
        }, 0);
        return op;
      }
      const failure = this.takeFailure('bulkInsert');
      const recs = names.slice(0, n).map((name) => this.create(zone, name, plan, { hostname: per[name]?.hostname }, failure ? [] : undefined));
      // Google also records one `insert` operation per VM, in the same operation group.
      for (const rec of recs) {
        const child = this.world.operations.start({
          scope: { zone }, operationType: 'insert', targetLink: rec.wire.selfLink, targetId: rec.id, extra: { operationGroupId: op.wire.operationGroupId },
        });
        this.whenSettled([rec], child, failure);
      }
      this.whenSettled(recs, op, failure, () => {
        Object.assign(status, failure ? { status: 'DONE', failedToCreateVmCount: count } : { status: 'DONE', createdVmCount: n, failedToCreateVmCount: count - n });
      });
      return op;
    });
    return { body: op.wire };
  }

  private list(req: FakeRequest): FakeResponse {
    const { project, zone } = req.params;
    this.world.checkProject(project);
    this.world.checkZone(zone);
    const items = [...this.records.values()].filter((r) => r.zone === zone).map((r) => r.wire);
    return {
      body: listResponse(items, req.query, { kind: 'compute#instanceList', id: `projects/${project}/zones/${zone}/instances`, selfLink: `${this.zoneUrl(zone)}/instances` }),
    };
  }

  /**
   * Every zone's instances in one list: the same filter and paging as `list`, with the page's items
   * grouped under `zones/<zone>` and Google's NO_RESULTS_ON_PAGE warning for every zone without one.
   */
  private aggregatedList(req: FakeRequest): FakeResponse {
    const { project } = req.params;
    this.world.checkProject(project);
    const all = [...this.records.values()]
      .sort((a, b) => a.zone.localeCompare(b.zone) || a.name.localeCompare(b.name))
      .map((r) => r.wire);
    const selfLink = `${API}/projects/${project}/aggregated/instances`;
    const page = listResponse(all, req.query, { kind: 'compute#instanceAggregatedList', id: `projects/${project}/aggregated/instances`, selfLink });
    const scopes: Record<string, Json> = {};
    for (const zone of ZONES) {
      const scope = `zones/${zone}`;
      scopes[scope] = {
        warning: { code: 'NO_RESULTS_ON_PAGE', message: `There are no results for scope '${scope}' on this page.`, data: [{ key: 'scope', value: scope }] },
      };
    }
    for (const wire of (page.items as Json[] | undefined) ?? []) {
      const scope = `zones/${String(wire.zone).split('/').pop()}`;
      scopes[scope] = { instances: [...((scopes[scope]!.instances as Json[] | undefined) ?? []), wire] };
    }
    return { body: { ...page, items: scopes } };
  }

  private delete(req: FakeRequest): FakeResponse {
    const op = this.world.operations.idempotent(req.query.requestId as string | undefined, () => {
      const rec = this.find(req);
      if (rec.wire.deletionProtection) {
        throw badRequest("Invalid resource usage: 'Resource cannot be deleted if it's protected against deletion.'.", 'resourceInUseByAnotherResource');
      }
      if (rec.deleting) throw badRequest(`The resource '${this.path(rec)}' is not ready`, 'resourceNotReady');
      const op = this.world.operations.start({ scope: { zone: rec.zone }, operationType: 'delete', targetLink: rec.wire.selfLink, targetId: rec.id });
      if (this.takeFailure('delete')) {
        // The delete "fails": the instance stays as it was.
        const error = this.lastFailure!;
        this.world.clock.setTimeout(() => op.finish([error]), this.world.timings.stoppingMs);
        return op;
      }
      this.beginDelete(rec, () => op.finish());
      return op;
    });
    return { body: op.wire };
  }

  private setLabels(req: FakeRequest): FakeResponse {
    const op = this.world.operations.idempotent(req.query.requestId as string | undefined, () => {
      const rec = this.find(req);
      const body = (req.json ?? {}) as Json;
      if (!body.labelFingerprint) throw requiredField('labelFingerprint');
      if (body.labelFingerprint !== rec.wire.labelFingerprint) {
        throw conditionNotMet('Labels fingerprint either invalid or resource labels have changed');
      }
      const labels = this.checkLabels(body.labels ?? {}, 'labels');
      const op = this.world.operations.start({ scope: { zone: rec.zone }, operationType: 'setLabels', targetLink: rec.wire.selfLink, targetId: rec.id });
      this.world.clock.setTimeout(() => {
        rec.wire.labels = labels;
        if (!Object.keys(labels).length) delete rec.wire.labels;
        rec.wire.labelFingerprint = fingerprint();
        op.finish();
      }, this.world.timings.globalOperationMs);
      return op;
    });
    return { body: op.wire };
  }

  private async serialPort(req: FakeRequest): Promise<FakeResponse> {
    const rec = this.find(req);
    const state = rec.lifecycle.state;
    if (state === 'PROVISIONING' || state === 'STAGING') throw badRequest(`The resource '${this.path(rec)}' is not ready`, 'resourceNotReady');
    const port = Number(req.query.port ?? 1);
    let text = '';
    if (port === 1) {
      // The buffer of the last boot outlives a power-off (as it does until the next start).
      const vm = rec.vm ?? rec.lastVm;
      if (vm) text = await vm.consoleOutput();
      else text = this.stubConsole(rec);
    }
    const buf = Buffer.from(text, 'utf8');
    const total = buf.length;
    const oldest = Math.max(0, total - SERIAL_BUFFER);
    let start = req.query.start === undefined ? 0 : Number(req.query.start);
    if (!Number.isInteger(start)) throw invalidField('start', req.query.start, 'Must be an integer.');
    if (start < 0) start = total + start; // negative: the most recent -start bytes
    start = Math.max(start, oldest);
    const contents = start >= total ? '' : buf.subarray(start).toString('utf8');
    return {
      body: {
        kind: 'compute#serialPortOutput',
        contents,
        start: String(start),
        next: String(Math.max(start, total)),
        selfLink: `${rec.wire.selfLink}/serialPort?port=${port}`,
      },
    };
  }

  // -------------------------------------------------------------------------------------------
  // Lifecycle

  private create(zone: string, name: string, plan: Plan, extra: { hostname?: string }, steps?: []): InstanceRecord {
    const w = this.world;
    const id = w.ids.nextUint64();
    const privateIp = w.pools.private.allocate();
    const publicIp = plan.accessConfig ? w.pools.public.allocate() : undefined;
    const key = `zones/${zone}/instances/${name}`;
    const zoneUrl = this.zoneUrl(zone);
    const now = timestamp(w.clock.now());
    const diskKeys: InstanceRecord['diskKeys'] = [];
    const attached = plan.disks.map((d) => {
      const diskName = d.boot ? d.diskName ?? name : d.diskName ?? `${name}-${d.index}`;
      const source = `${zoneUrl}/disks/${diskName}`;
      if (!d.scratch) {
        const diskKey = `zones/${zone}/disks/${diskName}`;
        diskKeys.push({ key: diskKey, autoDelete: d.autoDelete });
        w.registry.put('disks', diskKey, {
          kind: 'compute#disk',
          id: w.ids.nextUint64(),
          creationTimestamp: now,
          name: diskName,
          sizeGb: String(d.sizeGb),
          zone: zoneUrl,
          status: 'READY',
          selfLink: source,
          ...(d.image ? { sourceImage: `${API}/projects/${d.image.project}/global/images/${d.image.name}`, architecture: d.image.architecture } : {}),
          type: `${zoneUrl}/diskTypes/${d.diskType}`,
          users: [`${zoneUrl}/instances/${name}`],
          physicalBlockSizeBytes: '4096',
        });
      }
      return {
        kind: 'compute#attachedDisk',
        type: d.scratch ? 'SCRATCH' : 'PERSISTENT',
        mode: d.input.mode ?? 'READ_WRITE',
        ...(d.scratch ? {} : { source }),
        deviceName: d.deviceName ?? (d.scratch ? `local-ssd-${d.index}` : `persistent-disk-${d.index}`),
        index: d.index,
        boot: d.boot,
        autoDelete: d.autoDelete,
        ...(d.image ? { licenses: [`${API}/projects/${d.image.project}/global/licenses/${d.image.license}`], architecture: d.image.architecture } : {}),
        interface: d.input.interface ?? (d.scratch ? 'NVME' : 'SCSI'),
        ...(d.image ? { guestOsFeatures: [{ type: 'UEFI_COMPATIBLE' }, { type: 'VIRTIO_SCSI_MULTIQUEUE' }, { type: 'GVNIC' }] } : {}),
        diskSizeGb: String(d.sizeGb),
      };
    });
    const region = regionOf(zone);
    const nic: Json = {
      kind: 'compute#networkInterface',
      network: w.networkUrl('default'),
      subnetwork: `${API}/projects/${w.project}/regions/${region}/subnetworks/default`,
      networkIP: privateIp,
      name: 'nic0',
      fingerprint: fingerprint(),
      stackType: 'IPV4_ONLY',
    };
    if (plan.accessConfig) {
      nic.accessConfigs = [{
        kind: 'compute#accessConfig',
        type: 'ONE_TO_ONE_NAT',
        name: plan.accessConfig.name ?? 'External NAT',
        natIP: publicIp,
        networkTier: plan.accessConfig.networkTier ?? 'PREMIUM',
      }];
    }
    const wire: Json = {
      kind: 'compute#instance',
      id,
      creationTimestamp: now,
      name,
      ...plan.passthrough,
      ...(extra.hostname ? { hostname: extra.hostname } : {}),
      tags: plan.tags.length ? { items: plan.tags, fingerprint: fingerprint() } : { fingerprint: fingerprint() },
      machineType: `${zoneUrl}/machineTypes/${plan.machineType}`,
      status: 'PROVISIONING',
      zone: zoneUrl,
      canIpForward: plan.passthrough.canIpForward ?? false,
      networkInterfaces: [nic],
      disks: attached,
      metadata: { kind: 'compute#metadata', fingerprint: fingerprint(), ...(plan.metadataItems.length ? { items: plan.metadataItems } : {}) },
      ...(plan.serviceAccounts.length ? { serviceAccounts: plan.serviceAccounts } : {}),
      selfLink: `${zoneUrl}/instances/${name}`,
      scheduling: plan.scheduling,
      cpuPlatform: 'Unknown CPU Platform',
      ...(Object.keys(plan.labels).length ? { labels: plan.labels } : {}),
      labelFingerprint: fingerprint(),
      startRestricted: false,
      deletionProtection: plan.deletionProtection,
      ...(plan.guestAccelerators.length ? { guestAccelerators: plan.guestAccelerators } : {}),
      fingerprint: fingerprint(),
    };
    const rec: InstanceRecord = {
      key, zone, name, id, wire,
      lifecycle: undefined as unknown as Lifecycle<InstanceStatus>,
      userData: plan.userData,
      privateIp, publicIp,
      tags: plan.tags,
      serviceAccounts: plan.serviceAccounts.map((s) => s.email),
      cpus: plan.cpus,
      diskKeys,
      cancelTimers: [],
      onSettled: [],
    };
    rec.lifecycle = new Lifecycle<InstanceStatus>(
      w.clock,
      'PROVISIONING',
      steps ?? [
        { state: 'STAGING', afterMs: w.timings.provisioningMs },
        { state: 'RUNNING', afterMs: w.timings.stagingMs + w.faults.takeBootDelay() },
      ],
      (s) => this.onEnter(rec, s, plan),
    );
    this.records.set(key, rec);
    w.registry.put('instances', key, wire);
    return rec;
  }

  private onEnter(rec: InstanceRecord, state: InstanceStatus, plan: Plan): void {
    rec.wire.status = state;
    if (state !== 'RUNNING' || rec.deleting) return;
    rec.wire.cpuPlatform = 'Intel Broadwell';
    rec.wire.lastStartTimestamp = timestamp(this.world.clock.now());
    this.settle(rec);
    if (plan.maxRunDurationMs !== undefined) {
      const action = plan.scheduling.instanceTerminationAction as string;
      rec.cancelTimers.push(this.world.clock.setTimeout(() => this.expire(rec, action), plan.maxRunDurationMs));
    }
    this.boot(rec);
    this.world.syncFirewalls();
  }

  private boot(rec: InstanceRecord): void {
    const booter = this.world.booter;
    if (!booter) return;
    const rules = booter.ignoresFirewalls ? [] : this.rulesFor(rec);
    rec.firewallKey = JSON.stringify(rules);
    rec.bootDone = Promise.resolve()
      .then(() => booter.boot({ id: rec.id, name: rec.name, userData: rec.userData, privateIp: rec.privateIp, publicIp: rec.publicIp, firewall: rules }))
      .then(
        async (vm) => {
          if (rec.deleting || rec.lifecycle.state !== 'RUNNING') {
            await vm.stop().catch((e) => this.world.recordBootError(rec.id, e));
            return;
          }
          rec.vm = vm;
          rec.lastVm = vm;
          // A VM that exits on its own (`shutdown -h now`, autoShutdown) is a guest power-off.
          const exited = (vm as BootedVm & { exited?: Promise<unknown> }).exited;
          if (exited && typeof exited.then === 'function') void exited.then(() => this.guestPowerOff(rec, vm), () => undefined);
          // Rules may have changed while it booted.
          if (booter.ignoresFirewalls) return;
          const now = this.rulesFor(rec);
          if (JSON.stringify(now) !== rec.firewallKey) {
            rec.firewallKey = undefined;
            this.pushFirewall(rec, now);
          }
        },
        (e) => {
          rec.bootError = e;
          this.world.recordBootError(rec.id, e);
        },
      );
  }

  private rulesFor(rec: InstanceRecord): FirewallRule[] {
    // Filled in by FakeGcp (it owns both instances and firewalls).
    return this.rulesProvider?.(rec) ?? [];
  }

  /** Set by FakeGcp: the rules for one instance. */
  rulesProvider?: (rec: { id: string; tags: string[]; serviceAccounts: string[] }) => FirewallRule[];

  /** STOPPING now; TERMINATED and gone after `stoppingMs`; `done` then. */
  private beginDelete(rec: InstanceRecord, done?: () => void): void {
    rec.deleting = true;
    rec.cancelTimers.splice(0).forEach((c) => c());
    rec.lifecycle.set('STOPPING');
    this.settle(rec);
    this.stopVm(rec);
    this.world.syncFirewalls();
    this.world.clock.setTimeout(() => {
      rec.lifecycle.set('TERMINATED');
      this.remove(rec);
      done?.();
    }, this.world.timings.stoppingMs);
  }

  /**
   * The guest powered itself off: like Compute Engine, the instance goes STOPPING → TERMINATED and
   * stays (its disk still billed) until deleted. Tests without a booter call it directly.
   */
  guestPowerOff(rec: InstanceRecord | string, vm?: BootedVm): void {
    const r = typeof rec === 'string' ? [...this.records.values()].find((x) => x.name === rec || x.id === rec) : rec;
    if (!r || !this.records.has(r.key) || r.deleting || r.lifecycle.state !== 'RUNNING' || (vm !== undefined && r.vm !== vm)) return;
    this.powerOff(r);
  }

  /** maxRunDuration elapsed: DELETE removes the instance, STOP leaves it TERMINATED (external IP released). */
  private expire(rec: InstanceRecord, action: string): void {
    if (rec.deleting) return;
    if (action === 'DELETE') return this.beginDelete(rec);
    this.powerOff(rec);
  }

  /**
   * STOPPING, then TERMINATED after stoppingMs; the ephemeral external IP is released. The time
   * limit goes too: "the termination timestamp is automatically cleared whenever a VM is stopped
   * or suspended" (Limit the run time of a VM), so maxRunDuration never deletes a stopped VM.
   */
  private powerOff(rec: InstanceRecord): void {
    rec.cancelTimers.splice(0).forEach((c) => c());
    rec.lifecycle.set('STOPPING');
    this.stopVm(rec);
    this.world.syncFirewalls();
    this.world.clock.setTimeout(() => {
      rec.lifecycle.set('TERMINATED');
      rec.wire.lastStopTimestamp = timestamp(this.world.clock.now());
      if (rec.publicIp) {
        this.world.pools.public.release(rec.publicIp);
        rec.publicIp = undefined;
        delete rec.wire.networkInterfaces[0].accessConfigs[0].natIP;
      }
    }, this.world.timings.stoppingMs);
  }

  private stopVm(rec: InstanceRecord): void {
    const vm = rec.vm;
    rec.vm = undefined;
    if (vm) void this.stopping.add(vm.stop().catch((e) => this.world.recordBootError(rec.id, e)));
    // A VM still booting is stopped by boot() when it comes up.
    else if (rec.bootDone) void this.stopping.add(rec.bootDone);
  }

  private remove(rec: InstanceRecord): void {
    const w = this.world;
    this.records.delete(rec.key);
    w.registry.delete('instances', rec.key);
    w.pools.private.release(rec.privateIp);
    if (rec.publicIp) w.pools.public.release(rec.publicIp);
    for (const d of rec.diskKeys) {
      if (d.autoDelete) w.registry.delete('disks', d.key);
      else {
        const disk = w.registry.get<Json>('disks', d.key);
        if (disk) disk.users = (disk.users as string[]).filter((u) => u !== rec.wire.selfLink);
      }
    }
  }

  private settle(rec: InstanceRecord): void {
    for (const f of rec.onSettled.splice(0)) f();
  }

  /**
   * Finishes `op` once every instance reached RUNNING (or was deleted first). With an injected
   * failure the instances are rolled back after provisioning and `op` ends with the error.
   */
  private whenSettled(recs: InstanceRecord[], op: Operation, failure: boolean, before?: () => void): void {
    if (failure) {
      const error = this.lastFailure!;
      this.world.clock.setTimeout(() => {
        for (const r of recs) {
          if (this.records.get(r.key) !== r) continue;
          r.deleting = true;
          r.lifecycle.set('TERMINATED');
          this.remove(r);
        }
        before?.();
        op.finish([error]);
      }, this.world.timings.provisioningMs);
      return;
    }
    let pending = recs.length;
    const one = () => {
      if (--pending === 0) {
        before?.();
        op.finish();
      }
    };
    for (const r of recs) r.onSettled.push(one);
  }

  private lastFailure?: OperationError;

  private takeFailure(operationType: string): boolean {
    const rule = this.failureRules.find((r) => r.remaining > 0 && (r.operationType === undefined || r.operationType === operationType));
    if (!rule) return false;
    rule.remaining--;
    if (rule.remaining === 0) this.failureRules.splice(this.failureRules.indexOf(rule), 1);
    this.lastFailure = rule.error;
    return true;
  }

  // -------------------------------------------------------------------------------------------
  // Validation

  private find(req: FakeRequest): InstanceRecord {
    const { project, zone, instance } = req.params;
    this.world.checkProject(project);
    this.world.checkZone(zone);
    const rec = this.records.get(`zones/${zone}/instances/${instance}`);
    if (!rec) throw notFound(`projects/${project}/zones/${zone}/instances/${instance}`);
    return rec;
  }

  private checkNewName(zone: string, name: string, field: string): void {
    if (!NAME_RE.test(name)) throw invalidField(field, name, `Must be a match of regex '${NAME_RE.source.slice(1, -1)}'`);
    if (this.records.has(`zones/${zone}/instances/${name}`)) throw alreadyExists(`projects/${this.world.project}/zones/${zone}/instances/${name}`);
  }

  private checkDiskNames(zone: string, names: string[], plan: Plan): void {
    for (const name of names) {
      for (const d of plan.disks) {
        if (d.scratch) continue;
        const diskName = d.boot ? d.diskName ?? name : d.diskName ?? `${name}-${d.index}`;
        if (this.world.registry.has('disks', `zones/${zone}/disks/${diskName}`)) {
          throw alreadyExists(`projects/${this.world.project}/zones/${zone}/disks/${diskName}`);
        }
      }
    }
  }

  /** Names from a bulkInsert `namePattern` (`dask-w-####`): numbers start after the biggest existing one. */
  private patternNames(zone: string, pattern: string | undefined, n: number, taken: string[]): string[] {
    if (n === 0) return [];
    const field = 'bulkInsertInstanceResource.namePattern';
    const m = /^([^#]*)(#+)([^#]*)$/.exec(pattern ?? '');
    if (!m || m[2].length > 18) throw invalidField(field, pattern, 'The name pattern must contain one continuous sequence of 1 to 18 placeholder hash characters (#).');
    const [, prefix, hashes, suffix] = m;
    const re = new RegExp(`^${escape(prefix)}(\\d{${hashes.length}})${escape(suffix)}$`);
    let biggest = 0;
    for (const r of this.records.values()) {
      const mm = r.zone === zone ? re.exec(r.name) : null;
      if (mm) biggest = Math.max(biggest, Number(mm[1]));
    }
    for (const t of taken) {
      const mm = re.exec(t);
      if (mm) biggest = Math.max(biggest, Number(mm[1]));
    }
    if (biggest + n >= 10 ** hashes.length) throw invalidField(field, pattern, `The name pattern cannot generate ${n} more names.`);
    const names = Array.from({ length: n }, (_, i) => `${prefix}${String(biggest + 1 + i).padStart(hashes.length, '0')}${suffix}`);
    for (const name of names) this.checkNewName(zone, name, field);
    return names;
  }

  private quotaUse(zone: string): RegionUsage {
    return this.regionUsage(regionOf(zone));
  }

  /**
   * What counts against a region's quotas: vCPUs, instances and external addresses of VMs that
   * are not TERMINATED, and the GB of every disk there (a stopped VM's disk still counts).
   */
  regionUsage(region: string): RegionUsage {
    const inRegion = [...this.records.values()].filter((r) => regionOf(r.zone) === region && r.lifecycle.state !== 'TERMINATED');
    const disks = this.world.registry.all().disks ?? [];
    let ssdGb = 0;
    let standardGb = 0;
    for (const d of disks) {
      const v = d.value as Json;
      if (regionOf(String(v.zone).split('/').pop() ?? '') !== region) continue;
      const type = String(v.type).split('/').pop() ?? '';
      if (SSD_QUOTA_TYPES.has(type)) ssdGb += Number(v.sizeGb);
      else standardGb += Number(v.sizeGb);
    }
    return {
      cpus: inRegion.reduce((s, r) => s + r.cpus, 0),
      instances: inRegion.length,
      addresses: inRegion.filter((r) => r.publicIp).length,
      ssdGb,
      standardGb,
    };
  }

  /** How many instances of `plan` still fit the regional quotas. */
  private quotaCapacity(zone: string, plan: Plan): number {
    const q = this.world.quotas;
    const use = this.quotaUse(zone);
    let cap = Infinity;
    if (q.cpus !== undefined) cap = Math.min(cap, Math.floor((q.cpus - use.cpus) / plan.cpus));
    if (q.instances !== undefined) cap = Math.min(cap, q.instances - use.instances);
    if (q.inUseAddresses !== undefined && plan.accessConfig) cap = Math.min(cap, q.inUseAddresses - use.addresses);
    const { ssd, standard } = diskGb(plan);
    if (q.ssdTotalGb !== undefined && ssd > 0) cap = Math.min(cap, Math.floor((q.ssdTotalGb - use.ssdGb) / ssd));
    if (q.disksTotalGb !== undefined && standard > 0) cap = Math.min(cap, Math.floor((q.disksTotalGb - use.standardGb) / standard));
    return Math.max(0, cap);
  }

  /** The QUOTA_EXCEEDED error for creating `n` instances of `plan`, if they do not fit. */
  private quotaShortfall(zone: string, plan: Plan, n: number): OperationError | undefined {
    const q = this.world.quotas;
    const use = this.quotaUse(zone);
    const region = regionOf(zone);
    const over = (metric: string, limit: number) => ({ code: 'QUOTA_EXCEEDED', message: `Quota '${metric}' exceeded.  Limit: ${limit.toFixed(1)} in region ${region}.`, httpStatus: 403 });
    if (q.cpus !== undefined && use.cpus + n * plan.cpus > q.cpus) return over('CPUS', q.cpus);
    if (q.instances !== undefined && use.instances + n > q.instances) return over('INSTANCES', q.instances);
    if (q.inUseAddresses !== undefined && plan.accessConfig && use.addresses + n > q.inUseAddresses) return over('IN_USE_ADDRESSES', q.inUseAddresses);
    const { ssd, standard } = diskGb(plan);
    if (q.ssdTotalGb !== undefined && ssd > 0 && use.ssdGb + n * ssd > q.ssdTotalGb) return over('SSD_TOTAL_GB', q.ssdTotalGb);
    if (q.disksTotalGb !== undefined && standard > 0 && use.standardGb + n * standard > q.disksTotalGb) return over('DISKS_TOTAL_GB', q.disksTotalGb);
    return undefined;
  }

  private checkLabels(labels: Json, field: string): Record<string, string> {
    const entries = Object.entries(labels);
    if (entries.length > 64) throw invalidField(field, entries.length, 'Resources can have at most 64 labels.');
    for (const [k, v] of entries) {
      if (!LABEL_KEY_RE.test(k)) throw invalidField(`${field}.${k}`, k, 'Label keys must start with a lowercase letter and contain only lowercase letters, digits, underscores and dashes (at most 63 characters).');
      if (typeof v !== 'string' || !LABEL_VALUE_RE.test(v)) throw invalidField(`${field}.${k}`, v, 'Label values may contain only lowercase letters, digits, underscores and dashes (at most 63 characters).');
    }
    return { ...labels } as Record<string, string>;
  }

  /**
   * Validates instance properties the way Compute does (`insert` body or bulkInsert
   * `instanceProperties`). `p` prefixes field names in messages.
   */
  private validate(body: Json, zone: string, p: string, kind: 'insert' | 'bulkInsert'): Plan {
    const w = this.world;
    const {
      name: _n, machineType: mtRef, labels: rawLabels, tags, metadata, networkInterfaces, disks, scheduling, guestAccelerators, serviceAccounts,
      deletionProtection, sourceMachineImage, hostname: _h, ...passthrough
    } = body;
    if (sourceMachineImage) throw notFound(stripApi(sourceMachineImage));
    for (const f of ['id', 'kind', 'selfLink', 'status', 'creationTimestamp', 'zone', 'cpuPlatform']) delete passthrough[f];

    // Machine type: a URL for insert; a bare name in bulkInsert instanceProperties (Google documents
    // that a URL there fails).
    if (!mtRef) throw requiredField(`${p}.machineType`);
    let mtName: string;
    if (kind === 'insert') {
      const ref = parseZonal(mtRef, 'machineTypes');
      if (!ref) throw invalidField(`${p}.machineType`, mtRef, 'Invalid value: must be a machine type URL such as zones/ZONE/machineTypes/TYPE.');
      if ((ref.project ?? w.project) !== w.project) throw notFound(`projects/${ref.project}`);
      if (ref.zone !== zone) throw invalidField(`${p}.machineType`, mtRef, `Machine type specified '${ref.name}' is in a different zone ('${ref.zone}') than the instance ('${zone}').`);
      mtName = ref.name;
    } else {
      // The proto says a URL here "will result in an INTERNAL_ERROR"; no clearer message exists.
      if (mtRef.includes('/')) throw new FakeApiError(500, 'INTERNAL_ERROR', 'Internal error. Please try again or contact Google Support.');
      mtName = mtRef;
    }
    const mt = this.world.machineTypeIn(zone, mtName);
    if (!mt) throw invalidField(`${p}.machineType`, mtRef, `Machine type with name '${mtName}' does not exist in zone '${zone}'.`);

    const labels = this.checkLabels(rawLabels ?? {}, `${p}.labels`);
    const tagItems: string[] = tags?.items ?? [];
    if (tagItems.length > 64) throw invalidField(`${p}.tags.items`, tagItems.length, 'At most 64 tags are allowed.');
    tagItems.forEach((t, i) => {
      if (!NAME_RE.test(t)) throw invalidField(`${p}.tags.items[${i}]`, t, `Must be a match of regex '${NAME_RE.source.slice(1, -1)}'`);
    });

    // Metadata: 256 KiB per value, 512 KiB in total, unique keys.
    const items: { key: string; value: string }[] = metadata?.items ?? [];
    const seen = new Set<string>();
    let total = 0;
    items.forEach((it, i) => {
      if (!it.key) throw requiredField(`${p}.metadata.items[${i}].key`);
      if (seen.has(it.key)) throw invalidField(`${p}.metadata.items[${i}].key`, it.key, 'Duplicate metadata key.');
      seen.add(it.key);
      const size = Buffer.byteLength(it.value ?? '', 'utf8');
      if (size > METADATA_VALUE_MAX) {
        throw badRequest(`Value for field '${p}.metadata.items[${i}].value' is too large: maximum size ${METADATA_VALUE_MAX} character(s); actual size ${size}.`, 'invalid');
      }
      total += size + Buffer.byteLength(it.key, 'utf8');
    });
    if (total > METADATA_TOTAL_MAX) throw invalidField(`${p}.metadata`, '', `The total size of all metadata entries (${total} bytes) exceeds the limit of ${METADATA_TOTAL_MAX} bytes.`);
    // cloud-init's GCE datasource base64-decodes user-data marked `user-data-encoding: base64`
    // (how a gzipped body travels in a string-valued metadata item): boot what the VM would see.
    const userDataText = items.find((it) => it.key === 'user-data')?.value ?? '';
    const encoding = items.find((it) => it.key === 'user-data-encoding')?.value;
    const userData = encoding === 'base64' ? Buffer.from(userDataText, 'base64') : Buffer.from(userDataText, 'utf8');

    // One network interface on the default network / regional default subnetwork.
    if (!networkInterfaces?.length) throw invalidField(`${p}.networkInterfaces`, '', 'At least one network interface is required.');
    if (networkInterfaces.length > 1) throw notModelled('more than one network interface');
    const nic = networkInterfaces[0] as Json;
    if (nic.network) {
      const m = /^(?:projects\/([^/]+)\/)?global\/networks\/([^/]+)$/.exec(stripApi(nic.network));
      if (!m) throw invalidField(`${p}.networkInterfaces[0].network`, nic.network, 'The URL is malformed.');
      if ((m[1] ?? w.project) !== w.project || m[2] !== 'default') throw notFound(`projects/${m[1] ?? w.project}/global/networks/${m[2]}`);
    }
    if (nic.subnetwork) {
      const m = /^(?:projects\/([^/]+)\/)?regions\/([^/]+)\/subnetworks\/([^/]+)$/.exec(stripApi(nic.subnetwork));
      if (!m) throw invalidField(`${p}.networkInterfaces[0].subnetwork`, nic.subnetwork, 'The URL is malformed.');
      if ((m[1] ?? w.project) !== w.project || m[3] !== 'default') throw notFound(`projects/${m[1] ?? w.project}/regions/${m[2]}/subnetworks/${m[3]}`);
      if (m[2] !== regionOf(zone)) throw invalidField(`${p}.networkInterfaces[0].subnetwork`, nic.subnetwork, `Subnetwork must be in region '${regionOf(zone)}' of zone '${zone}'.`);
    }
    if (nic.networkIP) throw notModelled('a static networkIP (the fake allocates internal addresses)');
    if (nic.aliasIpRanges?.length || nic.ipv6AccessConfigs?.length || nic.stackType === 'IPV4_IPV6') throw notModelled('alias IP ranges or IPv6');
    const accessConfigs: Json[] = nic.accessConfigs ?? [];
    if (accessConfigs.length > 1) throw invalidField(`${p}.networkInterfaces[0].accessConfigs`, accessConfigs.length, 'At most one access config is allowed per network interface.');
    const accessConfig = accessConfigs[0];
    if (accessConfig) {
      if (accessConfig.type && accessConfig.type !== 'ONE_TO_ONE_NAT') throw invalidField(`${p}.networkInterfaces[0].accessConfigs[0].type`, accessConfig.type, 'Only ONE_TO_ONE_NAT is supported for IPv4.');
      if (accessConfig.natIP) throw notModelled('a static external natIP');
    }

    // Disks: exactly one boot disk, first; images must exist.
    if (!disks?.length) throw invalidField(`${p}.disks`, '', 'Boot disk must be specified.');
    const diskPlans: DiskPlan[] = (disks as Json[]).map((d, i) => {
      const f = `${p}.disks[${i}]`;
      if (d.source) throw notModelled('attaching an existing disk (disks[].source)');
      const init: Json = d.initializeParams ?? {};
      const scratch = d.type === 'SCRATCH';
      if (!scratch && !d.initializeParams) throw requiredField(`${f}.initializeParams`);
      if (init.sourceSnapshot) throw notModelled('disks from snapshots');
      let image: ImageInfo | undefined;
      if (init.sourceImage) {
        const r = resolveImage(init.sourceImage, w.project);
        if (!r.image) throw notFound(r.resource);
        image = r.image;
      }
      if (d.boot && !image) throw requiredField(`${f}.initializeParams.sourceImage`);
      let diskType = scratch ? 'local-ssd' : 'pd-standard';
      if (init.diskType) {
        const ref = parseZonal(init.diskType, 'diskTypes');
        const typeName = ref?.name ?? (init.diskType.includes('/') ? undefined : init.diskType);
        if (!typeName || !DISK_TYPES.has(typeName) || (ref && ref.zone !== zone)) throw invalidField(`${f}.initializeParams.diskType`, init.diskType, `Disk type '${init.diskType}' does not exist in zone '${zone}'.`);
        diskType = typeName;
      }
      const sizeGb = init.diskSizeGb === undefined ? (image?.diskSizeGb ?? (scratch ? 375 : 500)) : Number(init.diskSizeGb);
      if (image && sizeGb < image.diskSizeGb) throw badRequest(`Invalid value for field '${f}.initializeParams.diskSizeGb': '${sizeGb}'. Requested disk size cannot be smaller than the image size (${image.diskSizeGb} GB)`, 'invalid');
      if (init.diskName !== undefined && !NAME_RE.test(init.diskName)) throw invalidField(`${f}.initializeParams.diskName`, init.diskName, `Must be a match of regex '${NAME_RE.source.slice(1, -1)}'`);
      if (kind === 'bulkInsert' && init.diskName) throw invalidField(`${f}.initializeParams.diskName`, init.diskName, 'diskName cannot be set when creating several instances.');
      // The API's default is autoDelete: false (gcloud sets true): a boot disk then outlives its VM.
      return { boot: d.boot === true, autoDelete: d.autoDelete === true, index: i, deviceName: d.deviceName, diskName: init.diskName, sizeGb, image, diskType, scratch, input: d };
    });
    const boots = diskPlans.filter((d) => d.boot);
    if (boots.length !== 1) throw invalidField(`${p}.disks`, '', boots.length ? 'Only one boot disk may be specified.' : 'Boot disk must be specified.');
    if (!diskPlans[0].boot) throw invalidField(`${p}.disks[0].boot`, 'false', 'The boot disk must be the first disk attached to the instance.');

    // Scheduling.
    const s: Json = { ...(scheduling ?? {}) };
    const spot = s.provisioningModel === 'SPOT';
    const preemptible = s.preemptible === true;
    if (spot || preemptible) {
      if (s.onHostMaintenance === 'MIGRATE') throw invalidField(`${p}.scheduling.onHostMaintenance`, 'MIGRATE', "Scheduling must have preemptible be false when OnHostMaintenance isn't TERMINATE.");
      if (s.automaticRestart === true) throw invalidField(`${p}.scheduling.automaticRestart`, 'true', 'Scheduling must have preemptible be false when AutomaticRestart is true.');
    }
    // Scheduling reference: maxRunDuration and terminationTime are one union field (run_duration).
    if (s.maxRunDuration && s.terminationTime) {
      throw invalidField(`${p}.scheduling.terminationTime`, s.terminationTime, 'Only one of maxRunDuration and terminationTime may be specified.');
    }
    // "Limit the run time of a VM", Restrictions: time limits are not allowed on legacy
    // preemptible VMs (use Spot). The wording is the fake's; Google's exact text is not published.
    if (preemptible && !spot && (s.maxRunDuration || s.terminationTime || s.instanceTerminationAction)) {
      const field = s.maxRunDuration ? 'maxRunDuration' : s.terminationTime ? 'terminationTime' : 'instanceTerminationAction';
      throw invalidField(`${p}.scheduling.${field}`, field === 'maxRunDuration' ? String(s.maxRunDuration.seconds ?? '') : String(s[field]),
        'Time limits and instanceTerminationAction are not supported for preemptible VMs; use provisioningModel SPOT.');
    }
    if (s.terminationTime) throw notModelled('scheduling.terminationTime (use maxRunDuration)');
    const sched: Json = {
      ...s,
      onHostMaintenance: s.onHostMaintenance ?? (spot || preemptible ? 'TERMINATE' : 'MIGRATE'),
      automaticRestart: s.automaticRestart ?? !(spot || preemptible),
      preemptible,
      provisioningModel: s.provisioningModel ?? 'STANDARD',
    };
    let maxRunDurationMs: number | undefined;
    if (s.maxRunDuration) {
      const secs = Number(s.maxRunDuration.seconds ?? 0);
      if (!(secs >= MAX_RUN_DURATION_S.min && secs <= MAX_RUN_DURATION_S.max)) {
        throw invalidField(`${p}.scheduling.maxRunDuration.seconds`, secs, `Must be between ${MAX_RUN_DURATION_S.min} seconds and 120 days.`);
      }
      if (!s.instanceTerminationAction) {
        throw invalidField(`${p}.scheduling.instanceTerminationAction`, '', 'instanceTerminationAction must be specified when maxRunDuration is set.');
      }
      maxRunDurationMs = secs * 1000 + Math.floor(Number(s.maxRunDuration.nanos ?? 0) / 1e6);
      sched.maxRunDuration = { seconds: String(secs), ...(s.maxRunDuration.nanos ? { nanos: s.maxRunDuration.nanos } : {}) };
    } else if (s.instanceTerminationAction && !spot) {
      throw invalidField(`${p}.scheduling.instanceTerminationAction`, s.instanceTerminationAction, 'instanceTerminationAction is only allowed for SPOT VMs or together with maxRunDuration.');
    }

    // Accelerators cannot live-migrate.
    const accels: Json[] = (guestAccelerators ?? []).map((a: Json, i: number) => {
      const ref = parseZonal(a.acceleratorType ?? '', 'acceleratorTypes');
      const typeName = ref?.name ?? (a.acceleratorType && !a.acceleratorType.includes('/') ? a.acceleratorType : undefined);
      if (!typeName || !ACCELERATOR_TYPES.includes(typeName) || (ref && ref.zone !== zone)) {
        throw invalidField(`${p}.guestAccelerators[${i}].acceleratorType`, a.acceleratorType ?? '', `Accelerator type '${typeName ?? a.acceleratorType}' does not exist in zone '${zone}'.`);
      }
      return { acceleratorType: `${this.zoneUrl(zone)}/acceleratorTypes/${typeName}`, acceleratorCount: Number(a.acceleratorCount ?? 1) };
    });
    if ((accels.length || mt.builtInGpus) && sched.onHostMaintenance !== 'TERMINATE') {
      throw invalidField(`${p}.scheduling.onHostMaintenance`, sched.onHostMaintenance, 'Instances with guest accelerators do not support live migration.');
    }

    if ((serviceAccounts ?? []).length > 1) throw invalidField(`${p}.serviceAccounts`, serviceAccounts.length, 'At most one service account may be attached to an instance.');
    const sas = (serviceAccounts ?? []).map((sa: Json) => ({
      email: !sa.email || sa.email === 'default' ? `${w.projectNumber}-compute@developer.gserviceaccount.com` : sa.email,
      scopes: sa.scopes ?? [],
    }));

    return {
      machineType: mtName,
      cpus: mt.guestCpus,
      builtInGpus: mt.builtInGpus ?? 0,
      labels,
      tags: tagItems,
      metadataItems: items.map((it) => ({ key: it.key, value: it.value ?? '' })),
      userData,
      accessConfig,
      disks: diskPlans,
      scheduling: sched,
      maxRunDurationMs,
      guestAccelerators: accels,
      serviceAccounts: sas,
      deletionProtection: deletionProtection === true,
      passthrough,
    };
  }

  // -------------------------------------------------------------------------------------------

  private zoneUrl(zone: string): string {
    return `${API}/projects/${this.world.project}/zones/${zone}`;
  }

  private path(rec: InstanceRecord): string {
    return `projects/${this.world.project}/${rec.key}`;
  }

  /** Serial console of an instance that no booter runs: a short boot log that says so. */
  private stubConsole(rec: InstanceRecord): string {
    const lines = [
      'SeaBIOS (version 1.8.2-google)',
      `Total RAM Size = 0x00000000f0000000 = 3840 MiB`,
      'Booting from Hard Disk 0...',
      `[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1`,
      `[    0.000000] fake-gcp: instance ${rec.name} (${rec.id}) is simulated; no VM was booted, this console is a stub`,
      `[    2.104211] cloud-init[318]: Cloud-init v. 22.4.2 running 'init-local' (simulated)`,
      rec.bootError ? `[    3.000000] fake-gcp: boot failed: ${rec.bootError instanceof Error ? rec.bootError.message : String(rec.bootError)}` : `[    4.512003] cloud-init[402]: Cloud-init v. 22.4.2 finished (simulated)`,
      rec.lifecycle.state === 'TERMINATED' || rec.lifecycle.state === 'STOPPING' ? '[   60.000000] reboot: Power down' : `${rec.name} login: `,
    ];
    return lines.join('\r\n') + '\r\n';
  }
}

/** GB of persistent disk one instance of `plan` adds to the SSD and the standard quota. */
function diskGb(plan: Plan): { ssd: number; standard: number } {
  let ssd = 0;
  let standard = 0;
  for (const d of plan.disks) {
    if (d.scratch) continue;
    if (SSD_QUOTA_TYPES.has(d.diskType)) ssd += d.sizeGb;
    else standard += d.sizeGb;
  }
  return { ssd, standard };
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
