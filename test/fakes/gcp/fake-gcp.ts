/**
 * FakeGcp: a Compute Engine v1 REST fake on loopback that the real `@google-cloud/compute` SDK
 * reaches through its endpoint options (`fake.clientOptions()`).
 *
 * ```ts
 * const fake = await FakeGcp.start({ clock, booter });
 * const instances = new InstancesClient(fake.clientOptions());
 * ...
 * expect(fake.leaked()).toEqual({});
 * await fake.stop();
 * ```
 * One project (`fake.project`) with the `default` network and a `default` subnetwork
 * (the private block: 10.77.0.0/20 by default, the simulated-VM block) in every region; public images from debian-cloud,
 * ubuntu-os-cloud and cos-cloud. Every request is checked against contracts/gcp.json first.
 */
import { OAuth2Client } from 'google-auth-library';
import {
  AddressPools, FakeServer, IdAllocator, ResourceRegistry, TokenBucket, realClock,
  type Clock, type ContractViolation, type FakeRequest, type FakeResponse, type FaultHandle, type Faults,
  type OperationMatcher, type ResourceSnapshot, type VmBooter,
} from '../core';
import { BATCH_PATH, computeBatch } from './batch';
import { API, IMAGES, REGIONS, ZONES, imageWire, machineType, regionOf, type MachineType } from './catalog';
import { gcpErrorShape, invalidField, notFound } from './errors';
import { Firewalls, translateFirewalls } from './firewalls';
import { Instances } from './instances';
import { Operations, WAIT_MAX_MS, type OperationError, type OperationScope } from './operations';
import { Routers, type NatSpec, type RouterSpec } from './routers';
import { DEFAULT_TIMINGS, type GcpQuotas, type GcpTimings, type GcpWorld } from './world';
import { partialResponse } from './filter';

export interface FakeGcpOptions {
  /**
   * Address blocks (default the simulated cloud's 10.77 blocks). Pass loopback blocks
   * (`LOOPBACK_POOLS` of test/sim/process-booter) when instances run as local processes. Every
   * region's default subnetwork range is the private block.
   */
  privateCidr?: string;
  publicCidr?: string;
  /** The only project that exists (besides the public image projects). Default `dask-fake-project`. */
  project?: string;
  /** Time source for lifecycles, operations, waits and throttling. Default: real time. */
  clock?: Clock;
  /** Boots instances when they reach RUNNING (test/sim). Without one, instances only change state. */
  booter?: VmBooter;
  /** Lifecycle step durations (ms on `clock`); a number sets every step. Defaults: DEFAULT_TIMINGS (fast). */
  lifecycleMs?: number | Partial<GcpTimings>;
  /**
   * Regional quotas (CPUS, INSTANCES, IN_USE_ADDRESSES, SSD_TOTAL_GB, DISKS_TOTAL_GB), the same in
   * every region; `regions.get` reports them with their usage. Unlimited when omitted (reported
   * as {@link UNLIMITED_QUOTA}).
   */
  quotas?: GcpQuotas;
  /** Cloud Routers (with their Cloud NAT configs) by region. Default: none, as in a new project. */
  routers?: Record<string, RouterSpec[]>;
  /** Seed the `default-allow-internal/ssh/icmp` rules a new real project has. Default false. */
  seedDefaultFirewalls?: boolean;
  /** Contract handling: 'reject' (default) or 'record'. */
  contractMode?: 'reject' | 'record';
}

/** What `@google-cloud/compute` clients need to reach the fake (pass to any `*Client` constructor). */
export type GcpClientOptions = {
  apiEndpoint: string;
  port: number;
  protocol: 'http';
  authClient: OAuth2Client;
};

/** The limit `regions.get` reports for a quota the test did not set (nothing reaches it). */
export const UNLIMITED_QUOTA = 100_000;

/** `match` without the batch request's own operation. */
function notBatch(match: OperationMatcher): OperationMatcher {
  const not = `^(?!${computeBatch.operation.replace(/\./g, '\\.')}$)`;
  if (match === '*') return new RegExp(not);
  if (match instanceof RegExp) return new RegExp(`${not}(?:${match.source})`, match.flags);
  return typeof match === 'string' ? (match === computeBatch.operation ? [] : match) : match.filter((m) => m !== computeBatch.operation);
}

export class FakeGcp implements AsyncDisposable {
  readonly project: string;
  readonly projectNumber = '123456789012';
  readonly server: FakeServer;
  readonly clock: Clock;
  readonly pools: AddressPools;
  /** Errors a booter threw (boot, stop, setFirewall), by instance id: a test should assert it is empty. */
  readonly bootErrors: { id: string; error: unknown }[] = [];
  /** Every partial-response field selection a request was answered with (`fields` or `X-Goog-FieldMask`), by operation. */
  readonly fieldSelections: { operation: string; fields: string }[] = [];

  private readonly registry = new ResourceRegistry();
  private readonly ids = new IdAllocator();
  private readonly operations: Operations;
  private readonly instances: Instances;
  private readonly firewalls: Firewalls;
  private readonly routers: Routers;
  private readonly quotas: GcpQuotas;
  private readonly zoneStatus = new Map<string, 'UP' | 'DOWN'>();
  /** Machine types not offered in a zone, by zone. */
  private readonly withdrawn = new Map<string, Set<string>>();
  private readonly booter?: VmBooter;
  private authClient?: OAuth2Client;

  private constructor(opts: FakeGcpOptions) {
    this.project = opts.project ?? 'dask-fake-project';
    this.clock = opts.clock ?? realClock;
    this.booter = opts.booter;
    this.pools = new AddressPools({ privateCidr: opts.privateCidr, publicCidr: opts.publicCidr });
    this.server = new FakeServer({
      name: 'gcp',
      basePath: '/compute/v1',
      contract: 'gcp',
      contractMode: opts.contractMode ?? 'reject',
      errorShape: gcpErrorShape,
      clock: this.clock,
      // `fields` / X-Goog-FieldMask is a system parameter: every method honours it.
      shapeResponse: (req, operation, response) => {
        const body = response.body;
        if (body === undefined || body === null || typeof body !== 'object' || Buffer.isBuffer(body)) return response;
        return { ...response, body: partialResponse(body as Record<string, unknown>, req, (fields) => this.fieldSelections.push({ operation, fields })) };
      },
      // POST /batch/compute/v1: multipart/mixed, each inner call through the pipeline above.
      batch: computeBatch,
    });
    this.operations = new Operations(this.project, this.clock, this.ids);
    const ms = opts.lifecycleMs;
    const timings: GcpTimings = typeof ms === 'number'
      ? { provisioningMs: ms, stagingMs: ms, stoppingMs: ms, globalOperationMs: ms }
      : { ...DEFAULT_TIMINGS, ...(ms ?? {}) };
    this.quotas = opts.quotas ?? {};
    const world = this.world(timings, this.quotas);
    this.instances = new Instances(world);
    this.firewalls = new Firewalls(world);
    this.instances.rulesProvider = (vm) => this.rulesFor(vm);
    this.instances.register(this.server);
    this.firewalls.register(this.server);
    if (opts.seedDefaultFirewalls) this.firewalls.seedDefaults();
    this.routers = new Routers(this.project, this.ids, (p) => this.checkProject(p));
    this.routers.register(this.server);
    for (const [region, specs] of Object.entries(opts.routers ?? {})) for (const r of specs) this.routers.add(region, r);
    this.registerInfrastructure();
  }

  /** Starts a fake on 127.0.0.1 and a free port. */
  static async start(opts: FakeGcpOptions = {}): Promise<FakeGcp> {
    const fake = new FakeGcp(opts);
    await fake.server.start();
    return fake;
  }

  /** `http://127.0.0.1:PORT/compute/v1`. */
  get endpoint(): string {
    return this.server.endpoint;
  }

  /** `http://127.0.0.1:PORT/batch/compute/v1`, Compute's batch endpoint (outside the endpoint's basePath). */
  get batchEndpoint(): string {
    return this.server.origin + BATCH_PATH;
  }

  get port(): number {
    return Number(new URL(this.server.origin).port);
  }

  get faults(): Faults {
    return this.server.faults;
  }

  /** Requests that broke the published contract (for `assertNoContractViolations(fake)`). */
  get contractViolations(): ContractViolation[] {
    return this.server.contractViolations;
  }

  /**
   * Options for any `@google-cloud/compute` client: `new InstancesClient(fake.clientOptions())`.
   * The auth client holds a fixed token, so nothing asks Google for credentials.
   */
  clientOptions(): GcpClientOptions {
    if (!this.authClient) {
      this.authClient = new OAuth2Client();
      // The auth library checks expiry against real time, not the fake's clock.
      this.authClient.setCredentials({ access_token: 'fake-gcp-token', expiry_date: Date.now() + 365 * 24 * 3_600_000 });
    }
    return { apiEndpoint: '127.0.0.1', port: this.port, protocol: 'http', authClient: this.authClient };
  }

  /** Everything the project holds that a caller created: instances, disks, firewalls (by `zones/Z/instances/N` ...). */
  resources(): ResourceSnapshot {
    return this.registry.all();
  }

  /** Like resources(), without the seeded default firewall rules: `{}` when nothing leaked. */
  leaked(): ResourceSnapshot {
    return this.registry.leaked((kind, v) => kind === 'firewalls' && this.firewalls.seeded.has((v as { name: string }).name));
  }

  /**
   * Per-minute API rate quota: more than `perMinute` calls (of `match`, default all) within a minute
   * of the fake's clock answer 403 `rateLimitExceeded` (domain usageLimits), like Compute. A batch
   * request is not counted, only the calls it carries ("n requests count as n").
   */
  throttle(opts: { perMinute: number; match?: OperationMatcher }): FaultHandle {
    const bucket = new TokenBucket({ capacity: opts.perMinute, refill: opts.perMinute, intervalMs: 60_000, clock: this.clock });
    return this.faults.throttle(notBatch(opts.match ?? '*'), {
      bucket,
      reject: () => ({
        status: 403,
        code: 'rateLimitExceeded',
        message: `Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service 'compute.googleapis.com' for consumer 'project_number:${this.projectNumber}'.`,
      }),
    });
  }

  /**
   * Makes the next `times` (default 1) operations of `operationType` ('insert', 'bulkInsert',
   * 'delete'; default any) fail asynchronously: the call succeeds, the operation ends DONE with
   * `error.errors[]` (default ZONE_RESOURCE_POOL_EXHAUSTED) and inserted instances disappear.
   */
  failOperations(opts: { operationType?: 'insert' | 'bulkInsert' | 'delete'; times?: number; error?: OperationError } = {}): { remove(): void } {
    return this.instances.failOperations({
      operationType: opts.operationType,
      times: opts.times,
      error: opts.error ?? {
        code: 'ZONE_RESOURCE_POOL_EXHAUSTED',
        message: "The zone 'projects/" + this.project + "/zones/us-central1-a' does not have enough resources available to fulfill the request.  Try a different zone, or try again later.",
        httpStatus: 503,
      },
    });
  }

  /**
   * The guest OS of instance `name` (or numeric id) powered itself off: RUNNING → STOPPING →
   * TERMINATED. Happens on its own when a booted VM exits (the simulated VMs expose `exited`).
   */
  guestPowerOff(name: string): void {
    this.instances.guestPowerOff(name);
  }

  /** Adds a Cloud Router (with its NAT configs) to `region`. */
  addRouter(region: string, router: RouterSpec): void {
    this.routers.add(region, router);
  }

  /** A Cloud NAT for every subnetwork range of `network` (default `default`) in `region`. */
  addCloudNat(region: string, opts: { network?: string; nat?: NatSpec } = {}): void {
    this.routers.add(region, { name: `nat-router-${region}`, network: opts.network, nats: [opts.nat ?? { name: 'nat' }] });
  }

  /** A zone going DOWN (or back UP), as `zones.get` reports it. */
  setZoneStatus(zone: string, status: 'UP' | 'DOWN'): void {
    this.zoneStatus.set(zone, status);
  }

  /** Machine type `name` is not offered in `zone` (per-zone availability). */
  withdrawMachineType(zone: string, name: string): void {
    this.withdrawn.set(zone, new Set([...(this.withdrawn.get(zone) ?? []), name]));
  }

  /** Stops the server and every booted VM. Idempotent. */
  async stop(): Promise<void> {
    await this.server.stop();
    await this.instances.stopAll();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  // -------------------------------------------------------------------------------------------

  private world(timings: GcpTimings, quotas: GcpQuotas): GcpWorld {
    const self = this;
    return {
      project: this.project,
      projectNumber: this.projectNumber,
      clock: this.clock,
      ids: this.ids,
      registry: this.registry,
      pools: this.pools,
      get faults() {
        return self.server.faults;
      },
      timings,
      quotas,
      operations: this.operations,
      booter: this.booter,
      checkProject: (p) => this.checkProject(p),
      checkZone: (z) => {
        if (!ZONES.includes(z)) throw invalidField('zone', z, 'Unknown zone.');
      },
      networkUrl: (name) => `${API}/projects/${this.project}/global/networks/${name}`,
      machineTypeIn: (zone, name) => this.machineTypeIn(zone, name),
      syncFirewalls: () => this.syncFirewalls(),
      recordBootError: (id, error) => this.bootErrors.push({ id, error }),
    };
  }

  private machineTypeIn(zone: string, name: string): MachineType | undefined {
    if (this.withdrawn.get(zone)?.has(name)) return undefined;
    return machineType(name);
  }

  private checkProject(project: string): void {
    if (project !== this.project) throw notFound(`projects/${project}`);
  }

  private rulesFor(vm: { id: string; tags: string[]; serviceAccounts: string[] }) {
    const network = `${API}/projects/${this.project}/global/networks/default`;
    return translateFirewalls(this.firewalls.effective(), { ...vm, network }, this.instances.firewallSubjects());
  }

  private syncFirewalls(): void {
    if (!this.booter || this.booter.ignoresFirewalls) return;
    for (const s of this.instances.firewallSubjects()) this.instances.pushFirewall(s.record, this.rulesFor(s));
  }

  /** Zones, the default network and subnetworks, public images, operations. */
  private registerInfrastructure(): void {
    const s = this.server;
    const p = this.project;
    s.route('GET', '/projects/:project/zones/:zone', 'compute.zones.get', (req) => {
      this.checkProject(req.params.project);
      const zone = req.params.zone;
      if (!ZONES.includes(zone)) throw notFound(`projects/${p}/zones/${zone}`);
      return {
        body: {
          kind: 'compute#zone',
          id: String(2000 + ZONES.indexOf(zone)),
          creationTimestamp: '1969-12-31T16:00:00.000-08:00',
          name: zone,
          description: zone,
          status: this.zoneStatus.get(zone) ?? 'UP',
          region: `${API}/projects/${p}/regions/${regionOf(zone)}`,
          selfLink: `${API}/projects/${p}/zones/${zone}`,
          availableCpuPlatforms: ['Intel Broadwell', 'Intel Cascade Lake', 'AMD Milan'],
          supportsPzs: false,
        },
      };
    });
    s.route('GET', '/projects/:project', 'compute.projects.get', (req) => {
      this.checkProject(req.params.project);
      return {
        body: {
          kind: 'compute#project',
          id: this.projectNumber,
          creationTimestamp: '2024-01-01T00:00:00.000-08:00',
          name: p,
          commonInstanceMetadata: { kind: 'compute#metadata', fingerprint: 'nQpZ3kVYx2c=' },
          selfLink: `${API}/projects/${p}`,
          defaultServiceAccount: `${this.projectNumber}-compute@developer.gserviceaccount.com`,
          xpnProjectStatus: 'UNSPECIFIED_XPN_PROJECT_STATUS',
          defaultNetworkTier: 'PREMIUM',
          vmDnsSetting: 'ZONAL_ONLY',
        },
      };
    });
    s.route('GET', '/projects/:project/regions/:region', 'compute.regions.get', (req) => {
      this.checkProject(req.params.project);
      const region = req.params.region;
      if (!REGIONS.includes(region)) throw notFound(`projects/${p}/regions/${region}`);
      const use = this.instances.regionUsage(region);
      const q = this.quotas;
      const quota = (metric: string, limit: number | undefined, usage: number) => ({ metric, limit: limit ?? UNLIMITED_QUOTA, usage });
      return {
        body: {
          kind: 'compute#region',
          id: String(1000 + REGIONS.indexOf(region)),
          creationTimestamp: '1969-12-31T16:00:00.000-08:00',
          name: region,
          description: region,
          status: 'UP',
          zones: ZONES.filter((z) => regionOf(z) === region).map((z) => `${API}/projects/${p}/zones/${z}`),
          quotas: [
            quota('CPUS', q.cpus, use.cpus),
            quota('DISKS_TOTAL_GB', q.disksTotalGb, use.standardGb),
            quota('SSD_TOTAL_GB', q.ssdTotalGb, use.ssdGb),
            quota('INSTANCES', q.instances, use.instances),
            quota('IN_USE_ADDRESSES', q.inUseAddresses, use.addresses),
          ],
          selfLink: `${API}/projects/${p}/regions/${region}`,
          supportsPzs: false,
        },
      };
    });
    s.route('GET', '/projects/:project/zones/:zone/machineTypes/:machineType', 'compute.machineTypes.get', (req) => {
      this.checkProject(req.params.project);
      const { zone, machineType: name } = req.params;
      if (!ZONES.includes(zone)) throw notFound(`projects/${p}/zones/${zone}`);
      const mt = this.machineTypeIn(zone, name);
      if (!mt) throw notFound(`projects/${p}/zones/${zone}/machineTypes/${name}`);
      return {
        body: {
          kind: 'compute#machineType',
          id: String(900000 + (name.length * 131 + mt.guestCpus)),
          creationTimestamp: '1969-12-31T16:00:00.000-08:00',
          name,
          description: `${mt.guestCpus} vCPUs, ${mt.memoryMb / 1024} GB RAM`,
          guestCpus: mt.guestCpus,
          memoryMb: mt.memoryMb,
          maximumPersistentDisks: 128,
          maximumPersistentDisksSizeGb: '263168',
          zone,
          selfLink: `${API}/projects/${p}/zones/${zone}/machineTypes/${name}`,
          isSharedCpu: false,
          ...(mt.builtInGpus ? { accelerators: [{ guestAcceleratorType: 'nvidia-l4', guestAcceleratorCount: mt.builtInGpus }] } : {}),
          architecture: 'X86_64',
        },
      };
    });
    s.route('GET', '/projects/:project/global/networks/:network', 'compute.networks.get', (req) => {
      this.checkProject(req.params.project);
      if (req.params.network !== 'default') throw notFound(`projects/${p}/global/networks/${req.params.network}`);
      return {
        body: {
          kind: 'compute#network',
          id: '4000000000000000001',
          creationTimestamp: '2024-01-01T00:00:00.000-08:00',
          name: 'default',
          description: 'Default network for the project',
          selfLink: `${API}/projects/${p}/global/networks/default`,
          selfLinkWithId: `${API}/projects/${p}/global/networks/4000000000000000001`,
          autoCreateSubnetworks: true,
          subnetworks: REGIONS.map((r) => `${API}/projects/${p}/regions/${r}/subnetworks/default`),
          routingConfig: { routingMode: 'REGIONAL' },
          networkFirewallPolicyEnforcementOrder: 'AFTER_CLASSIC_FIREWALL',
        },
      };
    });
    s.route('GET', '/projects/:project/regions/:region/subnetworks/:subnetwork', 'compute.subnetworks.get', (req) => {
      const { project, region, subnetwork } = req.params;
      this.checkProject(project);
      if (!REGIONS.includes(region) || subnetwork !== 'default') throw notFound(`projects/${p}/regions/${region}/subnetworks/${subnetwork}`);
      return {
        body: {
          kind: 'compute#subnetwork',
          id: String(5000000000000000000n + BigInt(REGIONS.indexOf(region))),
          creationTimestamp: '2024-01-01T00:00:00.000-08:00',
          name: 'default',
          network: `${API}/projects/${p}/global/networks/default`,
          // Every region's default subnetwork is the simulated-VM block (real ones differ per region).
          ipCidrRange: this.pools.private.cidr,
          gatewayAddress: this.pools.private.cidr.replace(/\.0\/\d+$/, '.1'),
          region: `${API}/projects/${p}/regions/${region}`,
          selfLink: `${API}/projects/${p}/regions/${region}/subnetworks/default`,
          privateIpGoogleAccess: false,
          fingerprint: 'zZ3r0XkUq8E=',
          purpose: 'PRIVATE',
          stackType: 'IPV4_ONLY',
        },
      };
    });
    s.route('GET', '/projects/:project/global/images/family/:family', 'compute.images.getFromFamily', (req) => {
      const { project, family } = req.params;
      const image = IMAGES.find((i) => i.project === project && i.family === family);
      if (!image) throw notFound(`projects/${project}/global/images/family/${family}`);
      return { body: imageWire(image, { imageId: (name) => String(3000000000000000000n + BigInt(IMAGES.findIndex((i) => i.name === name))) }) };
    });

    const opRoutes: [string, string, (req: FakeRequest) => OperationScope][] = [
      ['/projects/:project/zones/:zone/operations/:operation', 'compute.zoneOperations', (req) => ({ zone: req.params.zone })],
      ['/projects/:project/global/operations/:operation', 'compute.globalOperations', () => 'global'],
    ];
    for (const [path, prefix, scopeOf] of opRoutes) {
      s.route('GET', path, `${prefix}.get`, (req) => ({ body: this.findOperation(req, scopeOf(req)).wire }));
      s.route('POST', `${path}/wait`, `${prefix}.wait`, async (req): Promise<FakeResponse> => {
        const op = this.findOperation(req, scopeOf(req));
        await op.waitDone(WAIT_MAX_MS);
        return { body: op.wire };
      });
    }
  }

  private findOperation(req: FakeRequest, scope: OperationScope) {
    this.checkProject(req.params.project);
    if (scope !== 'global' && !ZONES.includes(scope.zone)) throw invalidField('zone', scope.zone, 'Unknown zone.');
    return this.operations.get(scope, req.params.operation);
  }
}
