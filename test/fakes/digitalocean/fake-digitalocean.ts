/**
 * FakeDigitalOcean: the DigitalOcean API v2 (JSON over HTTP) on loopback, for the real
 * `dots-wrapper` client and raw requests. Droplets (single and multi create, lifecycle new →
 * active, private/public addresses only once active, `public_networking: false`), cloud firewalls
 * (rules, tags, droplet ids, limits, status), VPCs (region defaults, custom ranges), account,
 * regions, sizes and SSH keys; Bearer-token auth; DigitalOcean's rate limits and error shapes.
 * Every request is checked against the published contract (see ./contract.ts).
 *
 * With a `booter`, a Droplet turning active boots a simulated VM with its user-data, addresses
 * and the inbound rules of the firewalls that apply to it (none → everything allowed).
 */
import {
  AddressPools,
  FakeApiError,
  FakeServer,
  IdAllocator,
  IpAllocator,
  Lifecycle,
  PendingWork,
  ResourceRegistry,
  realClock,
  type ApiErrorInfo,
  type BootRequest,
  type BootedVm,
  type Clock,
  type ContractViolation,
  type FakeRequest,
  type FakeResponse,
  type Faults,
  type FirewallRule,
  type ResourceSnapshot,
  type VmBooter,
} from '../core';
import { Catalog, type ImageInfo, type RegionInfo, type SizeInfo } from './catalog';
import { digitalOceanContract } from './contract';
import {
  checkLimits,
  effectiveInbound,
  isValidTag,
  normalizeRules,
  sameRule,
  unprocessable,
  type DoFirewall,
  type DoInboundRule,
  type DoOutboundRule,
} from './firewall';
import { DoRateLimiter, type RateLimitOptions } from './rate-limit';

// ---------------------------------------------------------------------------------------------
// Public types

export interface FakeDigitalOceanOptions {
  /** Address blocks (default the simulated cloud's 10.77 blocks; loopback ones for process VMs). */
  privateCidr?: string;
  publicCidr?: string;
  /** The API token clients must send as `Authorization: Bearer <token>`. Default: a fixed fake token. */
  token?: string;
  /** Time source for lifecycles, firewall status and rate limits. Default: real time. */
  clock?: Clock;
  /** Boots simulated VMs when Droplets turn active (see core/state.ts). */
  booter?: VmBooter;
  /** Ms a Droplet stays `new` before it is `active` (plus `faults.slowBoot`). Default 1 000. */
  lifecycleMs?: number;
  /** Ms a firewall stays `waiting` after a change before it is `succeeded`. Default 500. */
  firewallApplyMs?: number;
  /** Regions where `public_networking: false` (Private Droplets) is offered. Default: every region. */
  privateNetworkingRegions?: string[];
  /** Rate limits (default DigitalOcean's: 250/min bursty, 5 000/h); `false` disables them. */
  rateLimit?: RateLimitOptions | false;
  /** Account droplet limit (GET /v2/account; creates beyond it → 422). Default 25. */
  dropletLimit?: number;
  /** Region whose default VPC is 10.77.0.0/20 (the simulated private block). Default `nyc3`. */
  defaultRegion?: string;
  /** SSH keys on the account (droplet `ssh_keys` may name them by id or fingerprint). */
  sshKeys?: { name: string; public_key: string; fingerprint: string; id?: number }[];
  /** Contract handling (default 'reject'). */
  contractMode?: 'reject' | 'record';
  /**
   * The token's custom scopes (`droplet:create`, `tag:read`, ...). Default: full access. A request
   * whose operation needs a scope the token lacks is answered 403 `forbidden`.
   */
  scopes?: string[];
  /** Account `status` (GET /v2/account): `active` (default), `warning` or `locked`. */
  accountStatus?: 'active' | 'warning' | 'locked';
  /** Account `status_message` shown with a non-active status. */
  accountStatusMessage?: string;
  /**
   * Which tags count as left behind in `leaked()` (tags are not billed, but a library that
   * creates them should delete them). Default: a dask-cloud cluster's own tags,
   * `dask-cloud-cluster:*`, `dask-cloud-expires:*` and `dask-cloud-retire:*`; the shared `dask-cloud` and
   * `dask-cloud-role:*` tags and users' tags are kept on purpose.
   */
  leakingTag?: (name: string) => boolean;
}

/** A tag as the fake keeps it; the API view (with resource counts) is built on read. */
export interface DoTag {
  name: string;
}

/** A VPC NAT gateway as the API returns it (resources/vpc_nat_gateways/models/vpc_nat_gateway_get.yml). */
export interface DoVpcNatGateway {
  id: string;
  name: string;
  type: 'PUBLIC';
  state: 'NEW' | 'PROVISIONING' | 'ACTIVE' | 'DELETING' | 'ERROR' | 'INVALID';
  region: string;
  size: number;
  vpcs: { vpc_uuid: string; gateway_ip: string; default_gateway: boolean }[];
  egresses: { public_gateways: { ipv4: string }[] };
  udp_timeout_seconds: number;
  icmp_timeout_seconds: number;
  tcp_timeout_seconds: number;
  created_at: string;
  updated_at: string;
}

export type DropletStatus = 'new' | 'active' | 'off' | 'archive';

/** A VPC as the API returns it. */
export interface DoVpc {
  id: string;
  urn: string;
  name: string;
  description: string;
  region: string;
  ip_range: string;
  default: boolean;
  created_at: string;
}

/** What the fake holds per Droplet (the API view is `FakeDigitalOcean.view(...)`). */
export interface DropletRecord {
  id: number;
  name: string;
  region: RegionInfo;
  size: SizeInfo;
  image: ImageInfo;
  tags: string[];
  userData: string;
  vpcUuid: string;
  publicNetworking: boolean;
  ipv6: boolean;
  backups: boolean;
  monitoring: boolean;
  withDropletAgent: boolean;
  sshKeys: (string | number)[];
  createdAt: string;
  privateIp?: string;
  publicIp?: string;
  lifecycle: Lifecycle<DropletStatus>;
  vm?: BootedVm;
  /** The VM of the last boot, kept after it stops: its console stays readable. */
  lastVm?: BootedVm;
  /** The firewall last given to the booter (JSON), to call setFirewall only on change. */
  sentFirewall?: string;
  deleted: boolean;
}

const UNAUTHORIZED = { id: 'unauthorized', message: 'Unable to authenticate you' } as const;
/** shared/responses/forbidden.yml (a token without the scope an endpoint needs). */
const FORBIDDEN = { id: 'forbidden', message: 'You do not have permission to perform this action.' } as const;
/** The tags of one dask-cloud cluster, also its one-off retire tags (see `FakeDigitalOceanOptions.leakingTag`). */
const CLUSTER_TAG = /^dask-cloud-(cluster|expires|retire):/;
/** resources/tags/models/tags.yml: letters, numbers, colons, dashes and underscores; at most 255. */
const TAG_NAME = /^[a-zA-Z0-9_\-:]{1,255}$/;
/** resources/droplets/models/droplet_single_create.yml (and multi): `name` pattern, maxLength 255. */
const DROPLET_NAME = /^[a-zA-Z0-9]?[a-z0-9A-Z.-]*[a-z0-9A-Z]$/;
/** resources/firewalls/models/firewall.yml: `name` begins alphanumeric, then alphanumerics, `.` or `-`. */
const FIREWALL_NAME = /^[a-zA-Z0-9][a-zA-Z0-9.-]+$/;

/**
 * The scopes each operation needs (the `security` section of each operation in the DigitalOcean
 * OpenAPI spec). Extra scopes some requests need are added in `requiredScopes`.
 */
const SCOPES: Record<string, string[]> = {
  account_get: ['account:read'],
  sshKeys_list: ['ssh_key:read'],
  regions_list: ['regions:read'],
  sizes_list: ['sizes:read', 'regions:read'],
  images_get: ['image:read'],
  droplets_create: ['droplet:create'],
  droplets_list: ['droplet:read'],
  droplets_get: ['droplet:read'],
  droplets_destroy: ['droplet:delete'],
  droplets_destroy_byTag: ['droplet:delete'],
  firewalls_list: ['firewall:read'],
  firewalls_create: ['firewall:create'],
  firewalls_get: ['firewall:read'],
  firewalls_update: ['firewall:update'],
  firewalls_delete: ['firewall:delete'],
  firewalls_assign_droplets: ['firewall:update'],
  firewalls_delete_droplets: ['firewall:update'],
  firewalls_add_tags: ['firewall:update'],
  firewalls_delete_tags: ['firewall:update'],
  firewalls_add_rules: ['firewall:update'],
  firewalls_delete_rules: ['firewall:update'],
  vpcs_list: ['vpc:read'],
  vpcs_create: ['vpc:create'],
  vpcs_get: ['vpc:read'],
  vpcs_delete: ['vpc:delete'],
  tags_list: ['tag:read'],
  tags_create: ['tag:create'],
  tags_get: ['tag:read'],
  tags_delete: ['tag:delete'],
  // Tagging a resource also needs that resource type's update scope (see requiredScopes).
  tags_assign_resources: ['tag:create'],
  vpcnatgateways_list: ['nat_gateway:read'],
  vpcnatgateways_get: ['nat_gateway:read'],
};
const NOT_FOUND = { id: 'not_found', message: 'The resource you were accessing could not be found.' } as const;
const USER_DATA_LIMIT = 64 * 1024;
const MAX_NAMES = 10;
const DEFAULT_TOKEN = 'dop_v1_fake0000000000000000000000000000000000000000000000000000000000';
/** Custom and non-default VPC ranges come from here: inside the simulated block, below the public pool. */
const VPC_SPACE = { base: ipToInt('10.77.0.0'), size: 2 ** 15, step: 2 ** 12 }; // 10.77.0.0/17 in /20s

// ---------------------------------------------------------------------------------------------

export class FakeDigitalOcean {
  readonly server: FakeServer;
  readonly token: string;
  readonly clock: Clock;
  readonly pools: AddressPools;
  readonly catalog = new Catalog();
  /** Errors raised by the booter (boot, setFirewall, stop); tests should expect this empty. */
  readonly bootErrors: { id: string; error: unknown }[] = [];

  private readonly registry = new ResourceRegistry();
  private readonly ids = new IdAllocator();
  private readonly booter?: VmBooter;
  private readonly lifecycleMs: number;
  private readonly firewallApplyMs: number;
  private readonly privateNetworkingRegions?: Set<string>;
  private readonly dropletLimit: number;
  private readonly defaultRegion: string;
  private readonly accountUuid: string;
  /** Default VPCs are infrastructure (not resources a caller created): kept out of the registry. */
  private readonly defaultVpcs = new Map<string, DoVpc>();
  private readonly vpcAllocators = new Map<string, IpAllocator>();
  private readonly sshKeys: { id: number; name: string; public_key: string; fingerprint: string }[];
  private readonly firewallTimers = new Map<string, () => void>();
  private readonly pending = new PendingWork();
  private limiter?: DoRateLimiter;
  /** Operations whose next answers are replaced by a 500 after they took effect. */
  private readonly lostAnswers = new Map<string, number>();
  private actionSeq = 36_000_000;
  private stopped = false;
  private readonly scopes?: Set<string>;
  private readonly accountStatus: { status: 'active' | 'warning' | 'locked'; message: string };
  private readonly leakingTag: (name: string) => boolean;
  /** VPC NAT gateways are infrastructure the account owner set up (seeded by tests): not leaks. */
  private readonly natGateways = new Map<string, DoVpcNatGateway>();

  private constructor(opts: FakeDigitalOceanOptions) {
    this.pools = new AddressPools({ privateCidr: opts.privateCidr, publicCidr: opts.publicCidr });
    this.token = opts.token ?? DEFAULT_TOKEN;
    this.clock = opts.clock ?? realClock;
    this.booter = opts.booter;
    this.lifecycleMs = opts.lifecycleMs ?? 1_000;
    this.firewallApplyMs = opts.firewallApplyMs ?? 500;
    this.privateNetworkingRegions = opts.privateNetworkingRegions ? new Set(opts.privateNetworkingRegions) : undefined;
    this.dropletLimit = opts.dropletLimit ?? 25;
    this.defaultRegion = opts.defaultRegion ?? 'nyc3';
    if (!this.catalog.region(this.defaultRegion)) throw new Error(`unknown default region ${this.defaultRegion}`);
    this.accountUuid = this.ids.uuid();
    this.scopes = opts.scopes ? new Set(opts.scopes) : undefined;
    this.accountStatus = { status: opts.accountStatus ?? 'active', message: opts.accountStatusMessage ?? '' };
    this.leakingTag = opts.leakingTag ?? ((name) => CLUSTER_TAG.test(name));
    this.sshKeys = (opts.sshKeys ?? []).map((k, i) => ({ id: k.id ?? 41_000_000 + i, name: k.name, public_key: k.public_key, fingerprint: k.fingerprint }));
    this.server = new FakeServer({
      name: 'digitalocean',
      basePath: '',
      contract: digitalOceanContract(),
      contractMode: opts.contractMode ?? 'reject',
      errorShape: (e) => this.errorShape(e),
      clock: this.clock,
    });
    // The default region's default VPC is the simulated private block (AddressPools.private).
    this.ensureDefaultVpc(this.defaultRegion);
    if (opts.rateLimit !== false) this.throttle(opts.rateLimit ?? {});
    this.routes();
  }

  /** Starts the fake on 127.0.0.1 and a free port. */
  static async start(opts: FakeDigitalOceanOptions = {}): Promise<FakeDigitalOcean> {
    const fake = new FakeDigitalOcean(opts);
    await fake.server.start();
    return fake;
  }

  /** `http://127.0.0.1:PORT/v2` — dots-wrapper's `endpoint`. */
  get endpoint(): string {
    return `${this.server.origin}/v2`;
  }

  /** Options for dots-wrapper: `createApiClient(fake.clientOptions())`. */
  clientOptions(): { token: string; endpoint: string } {
    return { token: this.token, endpoint: this.endpoint };
  }

  get faults(): Faults {
    return this.server.faults;
  }

  /** For `assertNoContractViolations(fake)`. */
  get contractViolations(): ContractViolation[] {
    return this.server.contractViolations;
  }

  /**
   * Replaces the rate limits (DigitalOcean's by default: `{ perMinute: 250, perHour: 5000 }`);
   * `false` turns them off. Note `faults.clear()` removes them too.
   */
  throttle(limits: RateLimitOptions | false = {}): void {
    this.limiter?.remove();
    this.limiter = limits === false ? undefined : new DoRateLimiter(this.server.faults, this.clock, limits);
  }

  /**
   * The next `times` calls of `operation` take effect and are then answered with a 500, as when
   * DigitalOcean did the work but the answer was lost: what a client without idempotency tokens
   * must reconcile (e.g. `droplets_create` → list by tag before creating again).
   */
  failAfterEffect(operation: string, times = 1): void {
    this.lostAnswers.set(operation, (this.lostAnswers.get(operation) ?? 0) + times);
  }

  /** Everything the fake holds that a caller created (default VPCs are not included). */
  resources(): ResourceSnapshot {
    return this.registry.all();
  }

  /**
   * What a caller left behind: Droplets, firewalls, custom VPCs, and tags `leakingTag` selects
   * (by default a dask-cloud cluster's own tags).
   */
  leaked(): ResourceSnapshot {
    return this.registry.leaked((kind, value) => kind === 'tags' && !this.leakingTag((value as DoTag).name));
  }

  /** The names of every tag on the account (created by POST /v2/tags or by tagging a Droplet). */
  tagNames(): string[] {
    return this.registry.list<DoTag>('tags').map((t) => t.name);
  }

  /**
   * Sets up a VPC NAT gateway for `vpcUuid` (what the account owner does in the control panel or
   * with POST /v2/vpc_nat_gateways): ACTIVE and the VPC's default route unless told otherwise.
   */
  addVpcNatGateway(spec: { vpcUuid: string; name?: string; state?: DoVpcNatGateway['state']; defaultGateway?: boolean; region?: string }): DoVpcNatGateway {
    const vpc = this.findVpc(spec.vpcUuid);
    if (!vpc) throw new Error(`no VPC ${spec.vpcUuid}`);
    const now = new Date(this.clock.now()).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const gw: DoVpcNatGateway = {
      id: this.ids.uuid(),
      name: spec.name ?? `nat-${vpc.region}-${this.natGateways.size + 1}`,
      type: 'PUBLIC',
      state: spec.state ?? 'ACTIVE',
      region: spec.region ?? vpc.region,
      size: 1,
      // The gateway's address inside the VPC is its first usable host (infrastructure: never dialled).
      vpcs: [{ vpc_uuid: vpc.id, gateway_ip: intToIp(ipToInt(vpc.ip_range.split('/')[0]!) + 1), default_gateway: spec.defaultGateway ?? true }],
      egresses: { public_gateways: [{ ipv4: '192.0.2.77' }] },
      udp_timeout_seconds: 30,
      icmp_timeout_seconds: 30,
      tcp_timeout_seconds: 30,
      created_at: now,
      updated_at: now,
    };
    this.natGateways.set(gw.id, gw);
    return gw;
  }

  /**
   * The default VPC of `region` (DigitalOcean makes one when a region is first used; a test can
   * ask for it before any Droplet exists, e.g. to attach a NAT gateway to it).
   */
  defaultVpc(region: string): DoVpc {
    if (!this.catalog.region(region)) throw new Error(`unknown region ${region}`);
    return this.ensureDefaultVpc(region);
  }

  /** A Droplet's record (undefined once deleted). */
  /**
   * The guest OS of Droplet `id` powered itself off: status `off`, addresses kept (still billed)
   * until it is destroyed. Happens on its own when a booted VM exits.
   */
  guestPowerOff(id: number | string): void {
    const d = this.droplet(id);
    if (!d || d.deleted || this.stopped || d.lifecycle.state !== 'active') return;
    d.lifecycle.set('off');
    if (d.vm) this.track(d.vm.stop(), String(d.id));
    d.vm = undefined;
    this.refreshFirewalls();
  }

  droplet(id: number | string): DropletRecord | undefined {
    return this.registry.get<DropletRecord>('droplets', String(id));
  }

  /** The API view of every Droplet. */
  droplets(): Record<string, unknown>[] {
    return this.registry.list<DropletRecord>('droplets').map((d) => this.view(d));
  }

  /** The inbound rules the Droplet enforces now (what the booter was / would be given). */
  firewallFor(id: number | string): FirewallRule[] {
    const d = this.droplet(id);
    if (!d) throw new Error(`no droplet ${id}`);
    return this.effectiveFirewall(d);
  }

  /** Console output of a booted Droplet (DigitalOcean's API has none; for tests and diagnostics). */
  async consoleOutput(id: number | string): Promise<string> {
    const d = this.droplet(id);
    return (await (d?.vm ?? d?.lastVm)?.consoleOutput()) ?? '';
  }

  /** Waits for boots, firewall updates and VM stops the fake started. */
  async settle(): Promise<void> {
    await this.pending.drain();
  }

  /** Stops the server, cancels lifecycles and timers, and stops every booted VM. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const cancel of this.firewallTimers.values()) cancel();
    this.firewallTimers.clear();
    for (const d of this.registry.list<DropletRecord>('droplets')) {
      if (d.lifecycle.state !== 'archive') d.lifecycle.set('archive');
      if (d.vm) this.track(d.vm.stop(), String(d.id));
      d.vm = undefined;
    }
    await this.settle();
    await this.server.stop();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  // -------------------------------------------------------------------------------------------
  // Routing, auth, errors

  private routes(): void {
    const s = this.server;
    const r = (method: string, pattern: string, op: string, h: (req: FakeRequest) => FakeResponse) =>
      s.route(method, pattern, op, (req) => {
        this.authenticate(req);
        this.authorize(op, req);
        const response = h(req);
        const lost = this.lostAnswers.get(op) ?? 0;
        if (lost > 0) {
          // The work is done; only the answer is lost (see failAfterEffect).
          this.lostAnswers.set(op, lost - 1);
          throw new FakeApiError(500, 'server_error', 'Unexpected server-side error');
        }
        return response;
      });
    r('GET', '/v2/account', 'account_get', () => this.getAccount());
    r('GET', '/v2/account/keys', 'sshKeys_list', (req) => ({ body: this.paginate(req, 'ssh_keys', this.sshKeys) }));
    r('GET', '/v2/regions', 'regions_list', (req) => ({ body: this.paginate(req, 'regions', this.catalog.regions) }));
    r('GET', '/v2/sizes', 'sizes_list', (req) => ({ body: this.paginate(req, 'sizes', this.catalog.sizes) }));

    r('POST', '/v2/droplets', 'droplets_create', (req) => this.createDroplets(req));
    r('GET', '/v2/droplets', 'droplets_list', (req) => this.listDroplets(req));
    r('DELETE', '/v2/droplets', 'droplets_destroy_byTag', (req) => this.deleteDropletsByTag(req));
    r('GET', '/v2/droplets/:droplet_id', 'droplets_get', (req) => ({ body: { droplet: this.view(this.mustDroplet(req)) } }));
    r('DELETE', '/v2/droplets/:droplet_id', 'droplets_destroy', (req) => {
      this.destroyDroplet(this.mustDroplet(req));
      return { status: 204 };
    });

    r('GET', '/v2/firewalls', 'firewalls_list', (req) => ({ body: this.paginate(req, 'firewalls', this.registry.list<DoFirewall>('firewalls')) }));
    r('POST', '/v2/firewalls', 'firewalls_create', (req) => this.createFirewall(req));
    r('GET', '/v2/firewalls/:firewall_id', 'firewalls_get', (req) => ({ body: { firewall: this.mustFirewall(req) } }));
    r('PUT', '/v2/firewalls/:firewall_id', 'firewalls_update', (req) => this.updateFirewall(req));
    r('DELETE', '/v2/firewalls/:firewall_id', 'firewalls_delete', (req) => this.deleteFirewall(req));
    r('POST', '/v2/firewalls/:firewall_id/droplets', 'firewalls_assign_droplets', (req) => this.changeFirewallDroplets(req, true));
    r('DELETE', '/v2/firewalls/:firewall_id/droplets', 'firewalls_delete_droplets', (req) => this.changeFirewallDroplets(req, false));
    r('POST', '/v2/firewalls/:firewall_id/tags', 'firewalls_add_tags', (req) => this.changeFirewallTags(req, true));
    r('DELETE', '/v2/firewalls/:firewall_id/tags', 'firewalls_delete_tags', (req) => this.changeFirewallTags(req, false));
    r('POST', '/v2/firewalls/:firewall_id/rules', 'firewalls_add_rules', (req) => this.changeFirewallRules(req, true));
    r('DELETE', '/v2/firewalls/:firewall_id/rules', 'firewalls_delete_rules', (req) => this.changeFirewallRules(req, false));

    r('GET', '/v2/vpcs', 'vpcs_list', (req) => ({ body: this.paginate(req, 'vpcs', this.allVpcs()) }));
    r('POST', '/v2/vpcs', 'vpcs_create', (req) => this.createVpc(req));
    r('GET', '/v2/vpcs/:vpc_id', 'vpcs_get', (req) => ({ body: { vpc: this.mustVpc(req.params.vpc_id) } }));
    r('DELETE', '/v2/vpcs/:vpc_id', 'vpcs_delete', (req) => this.deleteVpc(req));

    r('GET', '/v2/tags', 'tags_list', (req) => ({ body: this.paginate(req, 'tags', this.registry.list<DoTag>('tags').map((t) => this.tagView(t))) }));
    r('POST', '/v2/tags', 'tags_create', (req) => this.createTag(req));
    r('GET', '/v2/tags/:tag_id', 'tags_get', (req) => ({ body: { tag: this.tagView(this.mustTag(req.params.tag_id)) } }));
    r('DELETE', '/v2/tags/:tag_id', 'tags_delete', (req) => this.deleteTag(req));
    r('POST', '/v2/tags/:tag_id/resources', 'tags_assign_resources', (req) => this.tagResources(req));

    r('GET', '/v2/images/:image_id', 'images_get', (req) => ({ body: { image: this.mustImage(req.params.image_id) } }));

    r('GET', '/v2/vpc_nat_gateways', 'vpcnatgateways_list', (req) => this.listNatGateways(req));
    r('GET', '/v2/vpc_nat_gateways/:id', 'vpcnatgateways_get', (req) => {
      const gw = this.natGateways.get(req.params.id);
      if (!gw) throw new FakeApiError(404, NOT_FOUND.id, NOT_FOUND.message);
      return { body: { vpc_nat_gateway: gw } };
    });
  }

  /** The scopes a request needs: its operation's, plus `tag:*` when it names tags (see SCOPES). */
  private requiredScopes(op: string, req: FakeRequest): string[] {
    const needed = [...(SCOPES[op] ?? [])];
    const b = (req.json ?? {}) as Record<string, unknown>;
    // tags_array.yml: "Requires tag:create scope"; existing_tags_array.yml: "Requires tag:create and tag:read scopes".
    if (op === 'droplets_create' && Array.isArray(b.tags) && b.tags.length > 0) needed.push('tag:create');
    // Tagging Droplets changes them: `droplet:update` as well as the operation's `tag:create`.
    if (op === 'tags_assign_resources' && Array.isArray(b.resources) && b.resources.some((r) => (r as { resource_type?: unknown }).resource_type === 'droplet')) {
      needed.push('droplet:update');
    }
    if ((op === 'firewalls_create' || op === 'firewalls_update' || op === 'firewalls_add_tags' || op === 'firewalls_add_rules') && firewallTagRefs(b).length > 0) {
      needed.push('tag:create', 'tag:read');
    }
    return needed;
  }

  /** A custom-scoped token lacking a needed scope gets 403 (the API docs' "Scopes" section). */
  private authorize(op: string, req: FakeRequest): void {
    if (!this.scopes) return;
    const missing = this.requiredScopes(op, req).filter((sc) => !this.scopes!.has(sc));
    if (missing.length > 0) throw new FakeApiError(403, FORBIDDEN.id, FORBIDDEN.message);
  }

  private isAuthorized(req: FakeRequest): boolean {
    const m = /^bearer\s+(.+)$/i.exec(String(req.headers.authorization ?? '').trim());
    return m !== null && m[1] === this.token;
  }

  private authenticate(req: FakeRequest): void {
    if (!this.isAuthorized(req)) throw new FakeApiError(401, UNAUTHORIZED.id, UNAUTHORIZED.message);
  }

  /** DigitalOcean's error body: `{ id, message, request_id }`. */
  private errorShape(e: ApiErrorInfo): FakeResponse {
    // Answers that never reached the throttle rules still carry the rate-limit headers.
    const headers = e.source === 'contract' || e.source === 'no-route' ? (this.limiter?.currentHeaders() ?? {}) : {};
    const body = (status: number, id: string, message: string): FakeResponse => ({ status, headers, body: { id, message, request_id: e.request.id } });
    if ((e.source === 'contract' || e.source === 'no-route') && !this.isAuthorized(e.request)) return body(401, UNAUTHORIZED.id, UNAUTHORIZED.message);
    switch (e.source) {
      case 'contract':
        // A path the API does not have is DigitalOcean's plain 404 (still recorded as a violation).
        if (e.code === 'UnknownOperation') return body(404, NOT_FOUND.id, NOT_FOUND.message);
        return body(400, 'bad_request', e.message);
      case 'no-route':
        return e.status === 404 ? body(404, NOT_FOUND.id, NOT_FOUND.message) : body(e.status, 'not_implemented', e.message);
      case 'internal':
        return body(500, 'server_error', 'Unexpected server-side error');
      default:
        return body(e.status, e.code, e.message);
    }
  }

  private paginate<T>(req: FakeRequest, key: string, items: T[]): Record<string, unknown> {
    const perPage = Math.min(200, Math.max(1, intQuery(req, 'per_page') ?? 20));
    const page = Math.max(1, intQuery(req, 'page') ?? 1);
    const total = items.length;
    const last = Math.max(1, Math.ceil(total / perPage));
    const url = (p: number) => {
      const u = new URL(`${this.server.origin}${req.path}`);
      for (const [k, v] of Object.entries(req.query)) if (k !== 'page' && k !== 'per_page') u.searchParams.set(k, Array.isArray(v) ? v[v.length - 1] : v);
      u.searchParams.set('page', String(p));
      u.searchParams.set('per_page', String(perPage));
      return u.toString();
    };
    const pages: Record<string, string> = {};
    if (page > 1) {
      pages.first = url(1);
      pages.prev = url(Math.min(page - 1, last));
    }
    if (page < last) {
      pages.next = url(page + 1);
      pages.last = url(last);
    }
    return { [key]: items.slice((page - 1) * perPage, page * perPage), links: Object.keys(pages).length ? { pages } : {}, meta: { total } };
  }

  private track(p: Promise<unknown> | void, id: string): void {
    if (!p) return;
    this.pending.add(
      Promise.resolve(p).catch((error) => {
        this.bootErrors.push({ id, error });
      }),
    );
  }

  // -------------------------------------------------------------------------------------------
  // Account

  private getAccount(): FakeResponse {
    return {
      body: {
        account: {
          droplet_limit: this.dropletLimit,
          floating_ip_limit: 3,
          volume_limit: 10,
          email: 'dask-cloud@example.com',
          uuid: this.accountUuid,
          email_verified: true,
          status: this.accountStatus.status,
          status_message: this.accountStatus.message,
          team: { uuid: this.accountUuid, name: 'My Team' },
        },
      },
    };
  }

  // -------------------------------------------------------------------------------------------
  // Droplets

  private createDroplets(req: FakeRequest): FakeResponse {
    const b = (req.json ?? {}) as Record<string, unknown>;
    const multi = b.names !== undefined;
    const names = multi ? (b.names as string[]) : [b.name as string];
    if (multi && names.length === 0) throw unprocessable('names must contain at least one Droplet name');
    if (names.length > MAX_NAMES) throw unprocessable(`You may only create up to ${MAX_NAMES} Droplets at once; ${names.length} names were given.`);
    for (const n of names) {
      if (typeof n !== 'string' || n.length > 255 || !DROPLET_NAME.test(n)) {
        throw unprocessable(`Name ${JSON.stringify(n)}: only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)`);
      }
    }

    let vpc: DoVpc | undefined;
    if (b.vpc_uuid !== undefined) {
      vpc = this.findVpc(String(b.vpc_uuid));
      if (!vpc) throw unprocessable(`vpc_uuid ${String(b.vpc_uuid)} does not exist`);
    }
    const region = this.resolveRegion(b.region as string | undefined, vpc);
    if (vpc && vpc.region !== region.slug) throw unprocessable(`vpc_uuid ${vpc.id} is in region ${vpc.region}, not ${region.slug}`);
    const size = this.catalog.size(String(b.size));
    if (!size) throw unprocessable(`Size ${JSON.stringify(b.size)} is not a valid size`);
    if (!region.sizes.includes(size.slug) || !size.regions.includes(region.slug)) throw unprocessable('Size is not available in this region.');
    const image = this.catalog.image(b.image as string | number);
    if (!image) throw unprocessable(`You specified an invalid image for Droplet creation: ${JSON.stringify(b.image)}`);
    if (!image.regions.includes(region.slug)) throw unprocessable(`Image ${image.slug ?? image.id} is not available in ${region.slug}`);

    const userData = (b.user_data as string | undefined) ?? '';
    const userDataBytes = Buffer.byteLength(userData, 'utf8');
    if (userDataBytes > USER_DATA_LIMIT) throw unprocessable(`user_data is ${userDataBytes} bytes; it must not exceed 64 KiB (${USER_DATA_LIMIT} bytes)`);

    const tags = [...new Set((b.tags as string[] | null | undefined) ?? [])];
    for (const t of tags) if (!isValidTag(t)) throw unprocessable(`Tag ${JSON.stringify(t)}: tag names may only contain letters, numbers, colons, dashes and underscores`);

    const sshKeys = (b.ssh_keys as (string | number)[] | undefined) ?? [];
    for (const k of sshKeys) {
      const known = this.sshKeys.some((s) => s.id === k || String(s.id) === String(k) || s.fingerprint === k);
      if (!known) throw unprocessable(`ssh_keys: ${JSON.stringify(k)} is not a key on this account`);
    }

    // The fake has no block storage: any volume id is unknown, as an unknown id is on DigitalOcean.
    const volumes = (b.volumes as string[] | undefined) ?? [];
    if (volumes.length) throw unprocessable(`volumes: ${volumes.join(', ')} not found (the fake models no volumes)`);

    const publicNetworking = b.public_networking !== false;
    if (!publicNetworking && this.privateNetworkingRegions && !this.privateNetworkingRegions.has(region.slug)) {
      throw unprocessable(`public_networking: false (Private Droplets) is not available in region ${region.slug}`);
    }
    // droplet_create.yml, public_networking: "If explicitly set to false, ipv6 must also be false."
    if (!publicNetworking && b.ipv6 === true) throw unprocessable('ipv6 must be false when public_networking is false');

    const existing = this.registry.list('droplets').length;
    if (existing + names.length > this.dropletLimit) {
      throw unprocessable(`creating ${names.length === 1 ? 'this droplet' : 'these droplets'} will exceed your droplet limit (${this.dropletLimit})`);
    }

    const vpcUuid = (vpc ?? this.ensureDefaultVpc(region.slug)).id;
    // tags_array.yml: a Droplet create may name new tags, which it creates (in their canonical spelling).
    const canonicalTags = [...new Set(tags.map((t) => this.ensureTag(t).name))];
    const created = names.map((name) =>
      this.newDroplet({
        name,
        region,
        size,
        image,
        tags: canonicalTags,
        userData,
        vpcUuid,
        publicNetworking,
        ipv6: b.ipv6 === true,
        backups: b.backups === true,
        monitoring: b.monitoring === true,
        withDropletAgent: b.with_droplet_agent === true,
        sshKeys,
      }),
    );
    // New Droplets may be peers (by tag) of running ones.
    this.refreshFirewalls();
    const action = (rel: string) => ({ id: ++this.actionSeq, rel, href: `${this.endpoint}/actions/${this.actionSeq}` });
    if (multi) return { status: 202, body: { droplets: created.map((d) => this.view(d)), links: { actions: [action('multiple_create')] } } };
    return { status: 202, body: { droplet: this.view(created[0]), links: { actions: [action('create')] } } };
  }

  private newDroplet(spec: Omit<DropletRecord, 'id' | 'createdAt' | 'lifecycle' | 'deleted'>): DropletRecord {
    const id = this.ids.nextInt();
    const d = {
      ...spec,
      tags: [...spec.tags],
      id,
      createdAt: new Date(this.clock.now()).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      deleted: false,
    } as DropletRecord;
    d.lifecycle = new Lifecycle<DropletStatus>(
      this.clock,
      'new',
      [{ state: 'active', afterMs: this.lifecycleMs + this.server.faults.takeBootDelay() }],
      (state) => {
        if (state === 'active') this.activate(d);
      },
    );
    return this.registry.put('droplets', String(id), d);
  }

  /** new → active: the addresses appear now (FACTS.md: private address only after active), then the VM boots. */
  private activate(d: DropletRecord): void {
    if (d.deleted || this.stopped) return;
    d.privateIp = this.vpcAllocator(d.vpcUuid).allocate();
    if (d.publicNetworking) d.publicIp = this.pools.public.allocate();
    if (this.booter) {
      const firewall = this.booter.ignoresFirewalls ? [] : this.effectiveFirewall(d);
      const request: BootRequest = {
        id: String(d.id),
        name: d.name,
        userData: Buffer.from(d.userData, 'utf8'),
        privateIp: d.privateIp,
        ...(d.publicIp ? { publicIp: d.publicIp } : {}),
        firewall,
      };
      d.sentFirewall = JSON.stringify(firewall);
      const booting = this.booter.boot(request).then((vm) => {
        if (d.deleted || this.stopped) return vm.stop();
        d.vm = vm;
        d.lastVm = vm;
        // A VM that exits on its own (`shutdown -h now`, autoShutdown) is a guest power-off.
        const exited = (vm as BootedVm & { exited?: Promise<unknown> }).exited;
        if (exited && typeof exited.then === 'function') void exited.then(() => d.vm === vm && this.guestPowerOff(d.id), () => undefined);
        this.refreshFirewalls();
      });
      this.track(booting, String(d.id));
    }
    this.refreshFirewalls();
  }

  private destroyDroplet(d: DropletRecord): void {
    d.deleted = true;
    this.registry.delete('droplets', String(d.id));
    d.lifecycle.set('archive');
    if (d.privateIp) this.vpcAllocator(d.vpcUuid).release(d.privateIp);
    if (d.publicIp) this.pools.public.release(d.publicIp);
    // DigitalOcean drops a deleted Droplet from the firewalls that named it.
    for (const fw of this.registry.list<DoFirewall>('firewalls')) {
      if (fw.droplet_ids.includes(d.id)) fw.droplet_ids = fw.droplet_ids.filter((x) => x !== d.id);
    }
    if (d.vm) this.track(d.vm.stop(), String(d.id));
    d.vm = undefined;
    this.refreshFirewalls();
  }

  private listDroplets(req: FakeRequest): FakeResponse {
    const tag = strQuery(req, 'tag_name');
    const name = strQuery(req, 'name');
    const items = this.registry
      .list<DropletRecord>('droplets')
      .filter((d) => (tag === undefined || d.tags.includes(tag)) && (name === undefined || d.name === name))
      .map((d) => this.view(d));
    return { body: this.paginate(req, 'droplets', items) };
  }

  private deleteDropletsByTag(req: FakeRequest): FakeResponse {
    const tag = strQuery(req, 'tag_name') ?? '';
    for (const d of this.registry.find<DropletRecord>('droplets', (x) => x.tags.includes(tag))) this.destroyDroplet(d);
    return { status: 204 };
  }

  private mustDroplet(req: FakeRequest): DropletRecord {
    const d = this.droplet(req.params.droplet_id);
    if (!d) throw new FakeApiError(404, NOT_FOUND.id, NOT_FOUND.message);
    return d;
  }

  /** The Droplet as GET /v2/droplets/:id returns it. */
  view(d: DropletRecord): Record<string, unknown> {
    const status = d.lifecycle.state;
    const v4: Record<string, string>[] = [];
    const v6: Record<string, unknown>[] = [];
    // A powered-off Droplet keeps its addresses.
    const addressed = status === 'active' || status === 'off';
    if (addressed && d.privateIp) {
      const vpc = this.findVpc(d.vpcUuid);
      v4.push({ ip_address: d.privateIp, netmask: netmaskOf(vpc?.ip_range ?? '10.77.0.0/20'), gateway: '<nil>', type: 'private' });
    }
    if (addressed && d.publicIp) {
      v4.push({ ip_address: d.publicIp, netmask: '255.255.240.0', gateway: '10.77.128.1', type: 'public' });
      if (d.ipv6) v6.push({ ip_address: `2001:db8:77::${d.id.toString(16)}`, netmask: 64, gateway: '2001:db8:77::1', type: 'public' });
    }
    const features = [
      ...(d.backups ? ['backups'] : []),
      ...(d.ipv6 ? ['ipv6'] : []),
      ...(d.monitoring ? ['monitoring'] : []),
      ...(d.withDropletAgent ? ['droplet_agent'] : []),
      'private_networking',
    ];
    return {
      id: d.id,
      name: d.name,
      memory: d.size.memory,
      vcpus: d.size.vcpus,
      disk: d.size.disk,
      locked: false,
      status,
      kernel: null,
      created_at: d.createdAt,
      features,
      backup_ids: [],
      next_backup_window: null,
      snapshot_ids: [],
      image: d.image,
      volume_ids: [],
      size: d.size,
      size_slug: d.size.slug,
      networks: { v4, v6 },
      region: d.region,
      tags: [...d.tags],
      vpc_uuid: d.vpcUuid,
    };
  }

  private resolveRegion(slug: string | undefined, vpc: DoVpc | undefined): RegionInfo {
    if (slug === undefined) return this.catalog.region(vpc?.region ?? this.defaultRegion)!;
    // A slug prefix (`nyc`) means "any datacenter there".
    const region = this.catalog.region(slug) ?? (/^[a-z]+$/.test(slug) ? this.catalog.regions.find((r) => r.slug.startsWith(slug)) : undefined);
    if (!region || !region.available) throw unprocessable(`Region ${JSON.stringify(slug)} is not available`);
    return region;
  }

  // -------------------------------------------------------------------------------------------
  // Firewalls

  private createFirewall(req: FakeRequest): FakeResponse {
    const b = req.json as Record<string, unknown>;
    // The published schema requires inbound_rules or outbound_rules (an anyOf the core contract does not check).
    if (b.inbound_rules === undefined && b.outbound_rules === undefined) throw unprocessable('a firewall needs inbound_rules or outbound_rules');
    const fw: DoFirewall = {
      id: this.ids.uuid(),
      name: checkFirewallName(b.name),
      status: 'waiting',
      created_at: new Date(this.clock.now()).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      droplet_ids: [],
      tags: [],
      inbound_rules: [],
      outbound_rules: [],
      pending_changes: [],
    };
    this.applyFirewallBody(fw, b);
    this.registry.put('firewalls', fw.id, fw);
    this.firewallChanged(fw, fw.droplet_ids, false);
    return { status: 202, body: { firewall: fw } };
  }

  /** PUT replaces the whole firewall: attributes left out are reset (DigitalOcean docs). */
  private updateFirewall(req: FakeRequest): FakeResponse {
    const fw = this.mustFirewall(req);
    const b = req.json as Record<string, unknown>;
    const next: DoFirewall = { ...fw, name: checkFirewallName(b.name) };
    this.applyFirewallBody(next, b);
    const removed = fw.droplet_ids.filter((id) => !next.droplet_ids.includes(id));
    Object.assign(fw, next);
    this.firewallChanged(fw, fw.droplet_ids, false);
    if (removed.length) fw.pending_changes.push(...removed.map((droplet_id) => ({ droplet_id, removing: true, status: 'waiting' as const })));
    return { body: { firewall: fw } };
  }

  private applyFirewallBody(fw: DoFirewall, b: Record<string, unknown>): void {
    this.checkTagsExist(firewallTagRefs(b));
    const rules = normalizeRules(b.inbound_rules as DoInboundRule[] | null, b.outbound_rules as DoOutboundRule[] | null, (id) => this.registry.has('droplets', String(id)));
    const dropletIds = [...new Set((b.droplet_ids as number[] | null | undefined) ?? [])];
    for (const id of dropletIds) if (!this.registry.has('droplets', String(id))) throw unprocessable(`droplet ${id} does not exist`);
    const candidate = { ...fw, ...rules, droplet_ids: dropletIds, tags: [...new Set((b.tags as string[] | null | undefined) ?? [])] };
    checkLimits(candidate);
    Object.assign(fw, candidate);
  }

  private deleteFirewall(req: FakeRequest): FakeResponse {
    const fw = this.mustFirewall(req);
    this.firewallTimers.get(fw.id)?.();
    this.firewallTimers.delete(fw.id);
    this.registry.delete('firewalls', fw.id);
    this.refreshFirewalls();
    return { status: 204 };
  }

  private changeFirewallDroplets(req: FakeRequest, add: boolean): FakeResponse {
    const fw = this.mustFirewall(req);
    const ids = ((req.json as { droplet_ids?: number[] }).droplet_ids ?? []).slice();
    if (add) {
      for (const id of ids) if (!this.registry.has('droplets', String(id))) throw unprocessable(`droplet ${id} does not exist`);
      const next = [...new Set([...fw.droplet_ids, ...ids])];
      checkLimits({ ...fw, droplet_ids: next });
      fw.droplet_ids = next;
    } else {
      fw.droplet_ids = fw.droplet_ids.filter((id) => !ids.includes(id));
    }
    this.firewallChanged(fw, ids, !add);
    return { status: 204 };
  }

  private changeFirewallTags(req: FakeRequest, add: boolean): FakeResponse {
    const fw = this.mustFirewall(req);
    const tags = (req.json as { tags?: string[] | null }).tags ?? [];
    if (add) this.checkTagsExist(tags);
    const next = add ? [...new Set([...fw.tags, ...tags])] : fw.tags.filter((t) => !tags.includes(t));
    checkLimits({ ...fw, tags: next });
    fw.tags = next;
    this.firewallChanged(fw, [], false);
    return { status: 204 };
  }

  private changeFirewallRules(req: FakeRequest, add: boolean): FakeResponse {
    const fw = this.mustFirewall(req);
    const b = req.json as { inbound_rules?: DoInboundRule[] | null; outbound_rules?: DoOutboundRule[] | null };
    if (add) this.checkTagsExist(firewallTagRefs(b as Record<string, unknown>));
    const rules = normalizeRules(b.inbound_rules, b.outbound_rules, (id) => this.registry.has('droplets', String(id)));
    if (add) {
      const next = { ...fw, inbound_rules: [...fw.inbound_rules, ...rules.inbound_rules], outbound_rules: [...fw.outbound_rules, ...rules.outbound_rules] };
      checkLimits(next);
      fw.inbound_rules = next.inbound_rules;
      fw.outbound_rules = next.outbound_rules;
    } else {
      fw.inbound_rules = fw.inbound_rules.filter((r) => !rules.inbound_rules.some((x) => sameRule(r, x)));
      fw.outbound_rules = fw.outbound_rules.filter((r) => !rules.outbound_rules.some((x) => sameRule(r, x)));
    }
    this.firewallChanged(fw, [], false);
    return { status: 204 };
  }

  /** A change goes `waiting` and applies to the VMs now; the status turns `succeeded` after firewallApplyMs. */
  private firewallChanged(fw: DoFirewall, dropletIds: number[], removing: boolean): void {
    fw.status = 'waiting';
    fw.pending_changes = dropletIds.map((droplet_id) => ({ droplet_id, removing, status: 'waiting' as const }));
    this.firewallTimers.get(fw.id)?.();
    this.firewallTimers.set(
      fw.id,
      this.clock.setTimeout(() => {
        this.firewallTimers.delete(fw.id);
        fw.status = 'succeeded';
        fw.pending_changes = [];
      }, this.firewallApplyMs),
    );
    this.refreshFirewalls();
  }

  private mustFirewall(req: FakeRequest): DoFirewall {
    const fw = this.registry.get<DoFirewall>('firewalls', req.params.firewall_id);
    if (!fw) throw new FakeApiError(404, NOT_FOUND.id, NOT_FOUND.message);
    return fw;
  }

  private firewallsOf(d: DropletRecord): DoFirewall[] {
    return this.registry.find<DoFirewall>('firewalls', (fw) => fw.droplet_ids.includes(d.id) || fw.tags.some((t) => d.tags.includes(t)));
  }

  private effectiveFirewall(d: DropletRecord): FirewallRule[] {
    return effectiveInbound(this.firewallsOf(d), (tag) => this.registry.find<DropletRecord>('droplets', (x) => x.tags.includes(tag)).map((x) => x.id));
  }

  /** Gives every booted VM whose effective rules changed its new rules. */
  private refreshFirewalls(): void {
    if (!this.booter || this.booter.ignoresFirewalls || this.stopped) return;
    for (const d of this.registry.list<DropletRecord>('droplets')) {
      if (!d.vm) continue;
      const rules = this.effectiveFirewall(d);
      const json = JSON.stringify(rules);
      if (json === d.sentFirewall) continue;
      d.sentFirewall = json;
      this.track(this.booter.setFirewall(String(d.id), rules), String(d.id));
    }
  }

  // -------------------------------------------------------------------------------------------
  // Tags

  /** The registered tag of this spelling, in any capitalization (tags.yml: names are "case stable"). */
  private findTag(name: string): DoTag | undefined {
    return this.registry.get<DoTag>('tags', name.toLowerCase());
  }

  /** Registers `name` unless a tag of that name exists; returns the canonical tag. */
  private ensureTag(name: string): DoTag {
    return this.findTag(name) ?? this.registry.put<DoTag>('tags', name.toLowerCase(), { name });
  }

  /** GET/DELETE /v2/tags/{name} need the canonical spelling (tags.yml); anything else is not found. */
  private mustTag(name: string): DoTag {
    const tag = this.findTag(name);
    if (!tag || tag.name !== name) throw new FakeApiError(404, NOT_FOUND.id, NOT_FOUND.message);
    return tag;
  }

  /**
   * existing_tags_array.yml: "Tag names must exist in order to be referenced in a request". The
   * API's answer, seen by kubicorn (issue #587): `422 … tag testing-master does not exist`.
   */
  private checkTagsExist(names: string[]): void {
    for (const name of names) {
      const tag = this.findTag(name);
      if (!tag || tag.name !== name) throw unprocessable(`tag ${name} does not exist`);
    }
  }

  /** The tag as the API shows it, with live resource counts (only Droplets are modelled). */
  private tagView(tag: DoTag): Record<string, unknown> {
    const droplets = this.registry.find<DropletRecord>('droplets', (d) => d.tags.includes(tag.name));
    const last = droplets.length ? { last_tagged_uri: `${this.endpoint}/droplets/${droplets[droplets.length - 1]!.id}` } : {};
    const none = { count: 0 };
    return {
      name: tag.name,
      resources: { count: droplets.length, ...last, droplets: { count: droplets.length, ...last }, images: none, volumes: none, volume_snapshots: none, databases: none },
    };
  }

  /**
   * POST /v2/tags. Creating a tag that exists answers with the existing tag in its canonical
   * spelling (terraform-provider-digitalocean creates every tag before tagging a resource with it,
   * and tags with the name the create returns: digitalocean/tag/tags.go, SetTags).
   */
  private createTag(req: FakeRequest): FakeResponse {
    const name = String((req.json as { name?: unknown }).name);
    if (!TAG_NAME.test(name)) throw new FakeApiError(400, 'bad_request', `Error validating resource tag: "tag-name \"${name}\" contains invalid characters"`);
    return { status: 201, body: { tag: this.tagView(this.ensureTag(name)) } };
  }

  /**
   * POST /v2/tags/{name}/resources (tags_assign_resources.yml): the tag must exist (its canonical
   * spelling, as for GET; else 404 `not_found`); each resource is `{ resource_id, resource_type }`.
   * Only Droplets are modelled: an unknown Droplet id, or another resource type, is a 422 (the
   * fake's own wording; the published spec documents only the 404 for the tag). Nothing is tagged
   * unless every resource can be. 204, no body.
   */
  private tagResources(req: FakeRequest): FakeResponse {
    const tag = this.mustTag(req.params.tag_id);
    const resources = (req.json as { resources: { resource_id: string; resource_type: string }[] }).resources;
    const droplets = resources.map((r) => {
      if (r.resource_type !== 'droplet') throw unprocessable(`resource_type ${r.resource_type}: the fake models tagging Droplets only`);
      const d = /^\d+$/.test(r.resource_id) ? this.droplet(r.resource_id) : undefined;
      if (!d) throw unprocessable(`droplet ${r.resource_id} does not exist`);
      return d;
    });
    for (const d of droplets) if (!d.tags.includes(tag.name)) d.tags = [...d.tags, tag.name];
    // A firewall scoped by this tag now applies to these Droplets.
    this.refreshFirewalls();
    return { status: 204 };
  }

  /** tags_delete.yml: "Deleting a tag also untags all the resources that have previously been tagged by the Tag". */
  private deleteTag(req: FakeRequest): FakeResponse {
    const tag = this.mustTag(req.params.tag_id);
    for (const d of this.registry.find<DropletRecord>('droplets', (x) => x.tags.includes(tag.name))) d.tags = d.tags.filter((t) => t !== tag.name);
    this.registry.delete('tags', tag.name.toLowerCase());
    this.refreshFirewalls();
    return { status: 204 };
  }

  // -------------------------------------------------------------------------------------------
  // Images and VPC NAT gateways

  /** images_get.yml: by numeric id, or a public image's slug. */
  private mustImage(ref: string): ImageInfo {
    const image = /^\d+$/.test(ref) ? this.catalog.image(Number(ref)) : this.catalog.image(ref);
    if (!image) throw new FakeApiError(404, NOT_FOUND.id, NOT_FOUND.message);
    return image;
  }

  /** vpc_nat_gateway_list.yml: filters `state`, `region`, `type`, `name`; paginated. */
  private listNatGateways(req: FakeRequest): FakeResponse {
    const state = strQuery(req, 'state');
    const region = strQuery(req, 'region');
    const type = strQuery(req, 'type');
    const name = strQuery(req, 'name');
    const items = [...this.natGateways.values()].filter(
      (g) =>
        (state === undefined || g.state === state.toUpperCase()) &&
        (region === undefined || g.region === region) &&
        (type === undefined || g.type === type.toUpperCase()) &&
        (name === undefined || g.name === name),
    );
    return { body: this.paginate(req, 'vpc_nat_gateways', items) };
  }

  // -------------------------------------------------------------------------------------------
  // VPCs

  private allVpcs(): DoVpc[] {
    return [...this.defaultVpcs.values(), ...this.registry.list<DoVpc>('vpcs')];
  }

  private findVpc(id: string): DoVpc | undefined {
    return this.allVpcs().find((v) => v.id === id);
  }

  private mustVpc(id: string): DoVpc {
    const v = this.findVpc(id);
    if (!v) throw new FakeApiError(404, NOT_FOUND.id, NOT_FOUND.message);
    return v;
  }

  /** A region's default VPC, created on first use (as DigitalOcean does); the default region's is 10.77.0.0/20. */
  private ensureDefaultVpc(region: string): DoVpc {
    const existing = this.defaultVpcs.get(region);
    if (existing) return existing;
    const ipRange = region === this.defaultRegion ? this.pools.private.cidr : this.freeRange();
    const vpc = this.vpcRecord({ name: `default-${region}`, region, ip_range: ipRange, description: '', default: true });
    this.defaultVpcs.set(region, vpc);
    this.vpcAllocators.set(vpc.id, region === this.defaultRegion ? this.pools.private : new IpAllocator(ipRange));
    return vpc;
  }

  private createVpc(req: FakeRequest): FakeResponse {
    const b = req.json as { name: string; region: string; ip_range?: string; description?: string };
    if (!/^[a-zA-Z0-9.-]{1,255}$/.test(b.name)) throw unprocessable('name may only contain letters, numbers, dashes and periods');
    if (this.allVpcs().some((v) => v.name === b.name)) throw unprocessable(`a VPC named ${b.name} already exists`);
    const region = this.catalog.region(b.region);
    if (!region) throw unprocessable(`Region ${JSON.stringify(b.region)} is not available`);
    let ipRange = b.ip_range;
    if (ipRange === undefined) ipRange = this.freeRange();
    else this.checkRange(ipRange);
    const vpc = this.vpcRecord({ name: b.name, region: region.slug, ip_range: ipRange, description: b.description ?? '', default: false });
    this.registry.put('vpcs', vpc.id, vpc);
    this.vpcAllocators.set(vpc.id, new IpAllocator(ipRange));
    return { status: 201, body: { vpc } };
  }

  private deleteVpc(req: FakeRequest): FakeResponse {
    const vpc = this.mustVpc(req.params.vpc_id);
    if (vpc.default) throw new FakeApiError(403, 'forbidden', 'The default VPC of a region can not be deleted.');
    if (this.registry.find<DropletRecord>('droplets', (d) => d.vpcUuid === vpc.id).length) {
      throw new FakeApiError(403, 'forbidden', 'Can not delete VPC with members');
    }
    this.registry.delete('vpcs', vpc.id);
    this.vpcAllocators.delete(vpc.id);
    return { status: 204 };
  }

  private vpcRecord(v: Omit<DoVpc, 'id' | 'urn' | 'created_at'>): DoVpc {
    const id = this.ids.uuid();
    return { id, urn: `do:vpc:${id}`, ...v, created_at: new Date(this.clock.now()).toISOString() };
  }

  private vpcAllocator(vpcId: string): IpAllocator {
    const a = this.vpcAllocators.get(vpcId);
    if (!a) throw new Error(`no allocator for VPC ${vpcId}`);
    return a;
  }

  /**
   * DigitalOcean: RFC 1918, between /16 and /28, no overlap with the account's VPCs. The fake
   * further keeps every range inside 10.77.0.0/17 (the simulated block, below the public pool),
   * so no simulated address can ever leave the machine (FACTS.md, network safety).
   */
  private checkRange(cidr: string): void {
    const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(cidr);
    const bits = m ? Number(m[2]) : NaN;
    if (!m || m[1].split('.').some((x) => Number(x) > 255)) throw unprocessable(`ip_range ${JSON.stringify(cidr)} is not a valid CIDR`);
    if (bits < 16 || bits > 28) throw unprocessable('ip_range may not be larger than /16 nor smaller than /28');
    const base = ipToInt(m[1]);
    const size = 2 ** (32 - bits);
    if (base % size !== 0) throw unprocessable(`ip_range ${cidr} is not aligned to its prefix`);
    const rfc1918 = [['10.0.0.0', 8], ['172.16.0.0', 12], ['192.168.0.0', 16]] as const;
    if (!rfc1918.some(([b, n]) => base >= ipToInt(b) && base + size <= ipToInt(b) + 2 ** (32 - n))) {
      throw unprocessable('ip_range must be a private (RFC 1918) range');
    }
    if (base < VPC_SPACE.base || base + size > VPC_SPACE.base + VPC_SPACE.size) {
      throw unprocessable(`ip_range ${cidr}: the fake only offers ranges inside 10.77.0.0/17 (the simulated network block)`);
    }
    for (const v of this.allVpcs()) {
      const [vb, vbits] = v.ip_range.split('/');
      if (overlaps(base, size, ipToInt(vb), 2 ** (32 - Number(vbits)))) throw unprocessable(`ip_range ${cidr} overlaps VPC ${v.name} (${v.ip_range})`);
    }
  }

  /** The first /20 of 10.77.0.0/17 no VPC uses. */
  private freeRange(): string {
    for (let base = VPC_SPACE.base; base < VPC_SPACE.base + VPC_SPACE.size; base += VPC_SPACE.step) {
      const used = this.allVpcs().some((v) => {
        const [vb, vbits] = v.ip_range.split('/');
        return overlaps(base, VPC_SPACE.step, ipToInt(vb), 2 ** (32 - Number(vbits)));
      });
      if (!used) return `${intToIp(base)}/20`;
    }
    throw unprocessable('no free VPC range left in the simulated block');
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function checkFirewallName(name: unknown): string {
  if (typeof name !== 'string' || name.length > 255 || !FIREWALL_NAME.test(name)) {
    throw unprocessable('name must begin with a letter or number and contain only letters, numbers, dashes and periods');
  }
  return name;
}

/** Every tag a firewall body names: the firewall's own `tags` and its rules' source / destination tags. */
function firewallTagRefs(b: Record<string, unknown>): string[] {
  const rules = [...((b.inbound_rules as DoInboundRule[] | null | undefined) ?? []), ...((b.outbound_rules as DoOutboundRule[] | null | undefined) ?? [])];
  const fromRules = rules.flatMap((r) => ('sources' in r ? r.sources?.tags : (r as DoOutboundRule).destinations?.tags) ?? []);
  return [...new Set([...((b.tags as string[] | null | undefined) ?? []), ...fromRules])];
}

function strQuery(req: FakeRequest, key: string): string | undefined {
  const v = req.query[key];
  return Array.isArray(v) ? v[v.length - 1] : v;
}

function intQuery(req: FakeRequest, key: string): number | undefined {
  const v = strQuery(req, key);
  return v === undefined || !/^\d+$/.test(v) ? undefined : Number(v);
}

function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, x) => acc * 256 + Number(x), 0);
}

function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

function overlaps(a: number, aSize: number, b: number, bSize: number): boolean {
  return a < b + bSize && b < a + aSize;
}

function netmaskOf(cidr: string): string {
  const bits = Number(cidr.split('/')[1]);
  return intToIp(2 ** 32 - 2 ** (32 - bits));
}
