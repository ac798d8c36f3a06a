/**
 * The DigitalOcean part of a VM cluster: Droplets, one cloud firewall per cluster, VPC look-up.
 * Ordering, rollback, scaling and the tag sweep live in the core (src/cluster/vm.ts); this file
 * only speaks DigitalOcean, always through the request pipeline in api.ts.
 *
 * DigitalOcean specifics that shape it:
 * - Tags are key-less strings of `[a-zA-Z0-9_\-:]`: the core's labels become `key:value` tags,
 *   e.g. `dask-cloud-cluster:dask-1a2b3c4d`, set at creation.
 * - A Droplet's addresses appear only once it is `active`: the scheduler is polled with
 *   `droplets_get` (the core asks); a worker batch is polled with one `droplets_list` by cluster
 *   tag, and workers are returned with their private addresses, because scale-down matches Dask
 *   workers to Droplets by host.
 * - No idempotency tokens: a create answered by a 5xx or a lost connection is reconciled by
 *   listing what carries the cluster tag (by name) before anything is created again. Whatever a
 *   reconciliation cannot see yet is still caught by the core's teardown sweep by tag.
 * - dots-wrapper sends a fixed field list, so `public_networking: false` (Private Droplets) goes
 *   out as a raw request through the same pipeline.
 */
import type { modules } from 'dots-wrapper';
import { LABELS, type AdapterContext, type CloudAdapter, type Instance, type InstanceRequest, type NetworkPlan } from '../../src/cluster/vm';
import type { MemberRole } from '../../src/cluster/backend';
import { retry } from '../../src/cluster/retry';
import { CloudApiError, DaskCloudError, ValidationError } from '../../src/errors';
import { isAmbiguous, isCloudApiError, statusOf, type DoApi, type DotsClient } from './api';

type Droplet = modules.droplet.IDroplet;
type Firewall = modules.firewall.IFirewall;
type InboundRule = modules.firewall.IFirewallInboundRule;
type OutboundRule = modules.firewall.IFirewallOutboundRule;

/** Every resource of every dask-cloud cluster carries this tag (for account-wide sweeps). */
export const MARKER_TAG = 'dask-cloud';

/** Characters DigitalOcean allows in a tag name. */
export const TAG_PATTERN = /^[a-zA-Z0-9_\-:]{1,255}$/;

/** A core label as a DigitalOcean tag: `key:value`, other characters replaced by `_`. */
export function labelTag(key: string, value: string): string {
  return `${key}:${value}`.replace(/[^a-zA-Z0-9_\-:]/g, '_').slice(0, 255);
}

/** The tag that marks a cluster's Droplets and scopes its firewall. */
export function clusterTag(clusterId: string): string {
  return labelTag(LABELS.cluster, clusterId);
}

/** The name of a cluster's firewall (DigitalOcean firewalls carry no tags of their own). */
export function firewallName(clusterId: string): string {
  return `dask-cloud-${clusterId}`.slice(0, 255);
}

/** How to read a Droplet's console when something failed (DigitalOcean's API has no console output). */
export type ConsoleOutputFetcher = (droplet: { id: string; name?: string }) => Promise<string>;

export interface DropletAdapterOptions {
  api: DoApi;
  region: string;
  /** The caller chose the region (else a given VPC's region wins). */
  regionExplicit: boolean;
  schedulerSize: string;
  workerSize: string;
  image: string | number;
  vpc?: string;
  sshKeys: (string | number)[];
  monitoring: boolean;
  /** Extra tags for every Droplet. */
  tags: string[];
  privateNetworking: boolean;
  /** Public mode: who may reach the scheduler (and SSH, when `sshKeys` are given). */
  ingressCidrs: string[];
  activeTimeoutMs: number;
  pollIntervalMs: number;
  consoleOutput?: ConsoleOutputFetcher;
}

/** Used where DigitalOcean does not tell the VPC's range (a region whose default VPC does not exist yet). */
const PRIVATE_RANGES = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'];
const ANYWHERE = ['0.0.0.0/0', '::/0'];
/** DigitalOcean writes "every port" as "0". */
const ALL_PORTS = '0';
const PER_PAGE = 200;

/** A Droplet that is not active yet: worth polling again. */
class NotReady extends Error {}

function toInstance(d: Droplet, role?: MemberRole): Instance {
  const v4 = d.networks?.v4 ?? [];
  const privateIp = v4.find((n) => n.type === 'private')?.ip_address;
  const publicIp = v4.find((n) => n.type === 'public')?.ip_address;
  const tagged = (d.tags ?? []).includes(labelTag(LABELS.role, 'scheduler')) ? 'scheduler' : 'worker';
  // `off`: powered off from inside (autoShutdown); `archive`: being destroyed.
  const stopped = d.status === 'off' || d.status === 'archive' ? { stoppedState: d.status } : {};
  return { id: String(d.id), name: d.name, role: role ?? tagged, privateIp, publicIp, ...stopped };
}

function portsOf([from, to]: [number, number]): string {
  return from === to ? String(from) : `${from}-${to}`;
}

export class DropletAdapter implements CloudAdapter {
  readonly kind = 'digitalocean';
  readonly userDataLimit = 65_536;
  /** `user_data` is a JSON string: no gzip. */
  readonly binaryUserData = false;
  /** DigitalOcean creates at most 10 Droplets per request (`names`). */
  readonly maxBatch = 10;
  /** Set by DropletCluster: how the adapter tells the user something through the cluster's events. */
  onWarning: ((message: string) => void) | undefined;

  readonly #o: DropletAdapterOptions;
  readonly #api: DoApi;
  #region: string;
  #vpcRange: string[] = PRIVATE_RANGES;
  #firewallId: string | undefined;
  /**
   * What this adapter knows about the cluster's firewall: `created` (id known), `none` (its create
   * failed cleanly), `unknown` (an answer was lost, or this adapter never created it — a cleanup
   * sweep): then deleteNetwork finds it by name.
   */
  #firewall: 'none' | 'created' | 'unknown' = 'unknown';
  /** Private Droplets turned out not to be offered in this region: use public networking + firewall. */
  #privateDropletsUnavailable = false;
  readonly #names = new Map<string, string>();

  constructor(options: DropletAdapterOptions) {
    this.#o = options;
    this.#api = options.api;
    this.#region = options.region;
  }

  /** The region Droplets go to (a given VPC's region when no region was chosen). */
  get region(): string {
    return this.#region;
  }

  /** Whether Droplets are created without public interfaces (Private Droplets). */
  get privateDroplets(): boolean {
    return this.#o.privateNetworking && !this.#privateDropletsUnavailable;
  }

  #call<T>(ctx: AdapterContext, operation: string, fn: (client: DotsClient) => Promise<{ data: T }>, idempotent: boolean): Promise<T> {
    return this.#api.call(operation, fn, { signal: ctx.signal, idempotent, log: ctx.log });
  }

  // ---------------------------------------------------------------------------------------------
  // Network

  async preflight(ctx: AdapterContext, _plan: NetworkPlan): Promise<void> {
    if (this.#o.vpc !== undefined) {
      const vpcId = this.#o.vpc;
      const { vpc } = await this.#call(ctx, 'vpcs_get', (c) => c.vpc.getVpc({ vpc_id: vpcId }), true);
      if (this.#o.regionExplicit && vpc.region !== this.#region) {
        throw new ValidationError(`vpc ${vpcId} is in region ${vpc.region}, not ${this.#region}: pass region '${vpc.region}' or leave region out`, { option: 'vpc' });
      }
      this.#region = vpc.region;
      this.#vpcRange = [vpc.ip_range];
      return;
    }
    const vpcs: modules.vpc.IVpc[] = [];
    for (let page = 1; ; page++) {
      const r = await this.#call(ctx, 'vpcs_list', (c) => c.vpc.listVpcs({ page, per_page: PER_PAGE }), true);
      vpcs.push(...r.vpcs);
      if (!r.links?.pages?.next || r.vpcs.length === 0) break;
    }
    const own = vpcs.find((v) => v.default && v.region === this.#region);
    if (own) this.#vpcRange = [own.ip_range];
    // DigitalOcean creates a region's default VPC with its first Droplet; until then only
    // "some private range" is known. Private addresses are reachable only inside the VPC anyway.
    else ctx.log('no default VPC in %s yet: members and VPC clients are admitted from %s', this.#region, PRIVATE_RANGES.join(', '));
  }

  /** The firewall's rules for a plan (exported through the class for tests and the README). */
  firewallRules(plan: NetworkPlan): { inbound_rules: InboundRule[]; outbound_rules: OutboundRule[] } {
    const tag = clusterTag(plan.clusterId);
    const inbound: InboundRule[] = [
      // Workers and nannies listen on random ports: members reach each other on every TCP port.
      { protocol: 'tcp', ports: ALL_PORTS, sources: { tags: [tag] } },
      ...plan.ingress.map((r) => ({
        protocol: 'tcp',
        ports: portsOf(r.ports),
        sources: { addresses: r.cidrs === 'network' ? [...this.#vpcRange] : [...r.cidrs] },
      })),
    ];
    if (this.#o.sshKeys.length > 0) {
      // SSH keys are only useful with port 22 reachable: from the VPC, and in public mode from ingressCidrs.
      inbound.push({ protocol: 'tcp', ports: '22', sources: { addresses: [...this.#vpcRange] } });
      if (!plan.privateNetworking) inbound.push({ protocol: 'tcp', ports: '22', sources: { addresses: [...this.#o.ingressCidrs] } });
    }
    const outbound: OutboundRule[] = (['tcp', 'udp', 'icmp'] as const).map((protocol) => ({
      protocol,
      ports: ALL_PORTS,
      destinations: { addresses: [...ANYWHERE] },
    }));
    return { inbound_rules: inbound, outbound_rules: outbound };
  }

  async ensureNetwork(ctx: AdapterContext, plan: NetworkPlan): Promise<void> {
    const name = firewallName(plan.clusterId);
    const rules = this.firewallRules(plan);
    let ambiguous = false;
    await this.#reconciled(ctx, `creating firewall ${name}`, async () => {
      this.#firewall = 'unknown';
      try {
        const { firewall } = await this.#call(
          ctx,
          'firewalls_create',
          (c) => c.firewall.createFirewall({ name, tags: [clusterTag(plan.clusterId)], ...rules }),
          false,
        );
        this.#firewallId = firewall.id;
        this.#firewall = 'created';
        ctx.log('firewall %s (%s) applies to tag %s', firewall.id, name, clusterTag(plan.clusterId));
      } catch (err) {
        if (!isAmbiguous(err)) {
          // Nothing was created, unless an earlier attempt's answer was lost: then look on teardown.
          this.#firewall = ambiguous ? 'unknown' : 'none';
          throw err;
        }
        ambiguous = true;
        const found = await this.#firewallsNamed(ctx, name);
        if (found.length === 0) throw err;
        ctx.log('firewall create answered %s, but %s exists: adopted', (err as Error).message, found[0]!.id);
        this.#firewallId = found[0]!.id;
        this.#firewall = 'created';
      }
    });
  }

  async #firewallsNamed(ctx: AdapterContext, name: string | ((name: string) => boolean)): Promise<Firewall[]> {
    const matches = typeof name === 'string' ? (n: string) => n === name : name;
    const all: Firewall[] = [];
    for (let page = 1; ; page++) {
      const r = await this.#call(ctx, 'firewalls_list', (c) => c.firewall.listFirewalls({ page, per_page: PER_PAGE }), true);
      all.push(...r.firewalls);
      if (!r.links?.pages?.next || r.firewalls.length === 0) break;
    }
    return all.filter((f) => matches(f.name));
  }

  async deleteNetwork(ctx: AdapterContext): Promise<void> {
    if (this.#firewall === 'none') return;
    // After a lost create answer, or in a cleanup sweep, the id is unknown: find it by its name.
    const ids = this.#firewallId !== undefined ? [this.#firewallId] : (await this.#firewallsNamed(ctx, firewallName(ctx.clusterId))).map((f) => f.id as string);
    for (const id of ids) {
      try {
        await this.#call(ctx, 'firewalls_delete', (c) => c.firewall.deleteFirewall({ firewall_id: id }), true);
      } catch (err) {
        if (statusOf(err) !== 404) throw err;
      }
    }
    this.#firewallId = undefined;
    this.#firewall = 'none';
  }

  // ---------------------------------------------------------------------------------------------
  // Droplets

  async createInstances(ctx: AdapterContext, request: InstanceRequest, onCreated: (ids: string[]) => void): Promise<Instance[]> {
    if (request.userData.gzipped) throw new DaskCloudError('E_USER_DATA_TOO_LARGE', 'DigitalOcean takes user-data as text: it cannot be gzipped');
    const tags = [...new Set([MARKER_TAG, ...Object.entries(request.labels).map(([k, v]) => labelTag(k, v)), ...this.#o.tags])];
    const body = {
      region: this.#region,
      size: request.role === 'scheduler' ? this.#o.schedulerSize : this.#o.workerSize,
      image: this.#o.image,
      tags,
      user_data: request.userData.body.toString('utf8'),
      monitoring: this.#o.monitoring,
      ...(this.#o.sshKeys.length > 0 ? { ssh_keys: [...this.#o.sshKeys] } : {}),
      ...(this.#o.vpc !== undefined ? { vpc_uuid: this.#o.vpc } : {}),
    };
    const created: Droplet[] = [];
    const record = (droplets: Droplet[]) => {
      for (const d of droplets) this.#names.set(String(d.id), d.name);
      created.push(...droplets);
      onCreated(droplets.map((d) => String(d.id)));
    };
    let pending = [...request.names];
    await this.#reconciled(ctx, `creating ${request.role} droplets ${request.names.join(', ')}`, async () => {
      try {
        record(await this.#createDroplets(ctx, { ...body, names: pending }));
        pending = [];
      } catch (err) {
        if (!isAmbiguous(err)) throw err;
        // The create may have happened: adopt what carries our tag and a requested name.
        const wanted = new Set(pending);
        const found = (await this.#listTagged(ctx)).filter((d) => wanted.has(d.name) && !created.some((c) => c.id === d.id));
        if (found.length > 0) {
          ctx.log('create answered %s, but %d of the droplets exist: adopted', (err as Error).message, found.length);
          record(found);
          const names = new Set(found.map((d) => d.name));
          pending = pending.filter((n) => !names.has(n));
        }
        if (pending.length > 0) throw err;
      }
    });
    const instances = created.map((d) => toInstance(d, request.role));
    if (ctx.signal.aborted) {
      // The start was cancelled while the request was in flight; the rollback may have swept
      // already, so delete these here rather than leave them to chance.
      await this.deleteInstances({ ...ctx, signal: new AbortController().signal }, instances.map((i) => i.id)).catch((e: unknown) =>
        ctx.log('deleting droplets created after abort failed: %s', (e as Error).message),
      );
      throw ctx.signal.reason;
    }
    // Workers are returned with their private address: scale-down matches Dask workers by host.
    if (request.role === 'worker') return this.#waitActive(ctx, instances, () => this.#listTagged(ctx), false);
    return instances;
  }

  /** One create request: raw for Private Droplets, dots-wrapper otherwise. */
  async #createDroplets(ctx: AdapterContext, body: Record<string, unknown> & { names: string[] }): Promise<Droplet[]> {
    if (this.privateDroplets) {
      try {
        const r = await this.#api.post<{ droplets: Droplet[] }>('droplets_create', '/droplets', { ...body, public_networking: false }, {
          signal: ctx.signal,
          idempotent: false,
          log: ctx.log,
        });
        return r.droplets;
      } catch (err) {
        if (!(statusOf(err) === 422 && /public_networking|private droplet/i.test(String((err as CloudApiError).details.doMessage)))) throw err;
        this.#privateDropletsUnavailable = true;
        this.onWarning?.(
          `Private Droplets (public_networking: false) are not available in ${this.#region}: ` +
            'Droplets get public interfaces, and the cluster firewall admits no public inbound traffic at all ' +
            `(only cluster members and ${this.#vpcRange.join(', ')})`,
        );
      }
    }
    const r = await this.#call(ctx, 'droplets_create', (c) => c.droplet.createDroplets(body as unknown as modules.droplet.ICreateDropletsApiRequest), false);
    return r.droplets;
  }

  /**
   * Runs `attempt` until it succeeds; an ambiguous failure (5xx, lost connection) is retried with
   * backoff after `attempt` itself reconciled what exists. Other errors end it at once.
   */
  async #reconciled(ctx: AdapterContext, what: string, attempt: () => Promise<void>): Promise<void> {
    try {
      await retry(attempt, {
        retryable: isAmbiguous,
        timeoutMs: 120_000,
        baseDelayMs: 1_000,
        what: `DigitalOcean: ${what}`,
        signal: ctx.signal,
        onRetry: (err, n, delay) => ctx.log('%s: attempt %d failed ambiguously (%s); reconciled, retrying in %d ms', what, n, (err as Error).message, delay),
      });
    } catch (err) {
      if (DaskCloudError.isInstance(err) && err.code === 'E_TIMEOUT' && isCloudApiError(err.cause)) throw err.cause;
      throw err;
    }
  }

  async waitForAddresses(ctx: AdapterContext, instance: Instance, wantPublic: boolean): Promise<Instance> {
    const [ready] = await this.#waitActive(
      ctx,
      [instance],
      async () => [(await this.#call(ctx, 'droplets_get', (c) => c.droplet.getDroplet({ droplet_id: Number(instance.id) }), true)).droplet],
      wantPublic && !this.privateDroplets,
    );
    return ready!;
  }

  /** Polls `fetch` until every instance is active with its addresses; bounded by activeTimeoutMs. */
  async #waitActive(ctx: AdapterContext, instances: Instance[], fetch: () => Promise<Droplet[]>, wantPublic: boolean): Promise<Instance[]> {
    let seen = new Map<string, string>();
    const started = Date.now();
    try {
      return await retry(
        async () => {
          const byId = new Map((await fetch()).map((d) => [String(d.id), d]));
          seen = new Map();
          const out: Instance[] = [];
          for (const i of instances) {
            const d = byId.get(i.id);
            seen.set(`${i.name} (${i.id})`, d ? String(d.status) : 'not listed yet');
            if (!d) continue;
            if (d.status === 'off' || d.status === 'archive') {
              throw new CloudApiError(`DigitalOcean: droplet ${i.name} (${i.id}) is '${String(d.status)}' instead of becoming active`, {
                details: { provider: 'digitalocean', dropletId: i.id, status: d.status },
              });
            }
            const ready = toInstance(d, i.role);
            if (d.status === 'active' && ready.privateIp && (!wantPublic || ready.publicIp)) out.push(ready);
          }
          if (out.length < instances.length) throw new NotReady();
          return out;
        },
        {
          retryable: (err) => err instanceof NotReady,
          timeoutMs: this.#o.activeTimeoutMs,
          baseDelayMs: this.#o.pollIntervalMs,
          maxDelayMs: this.#o.pollIntervalMs * 4,
          // Half to full backoff: polls keep a steady pace without falling into step.
          random: () => 0.5 + Math.random() / 2,
          what: 'DigitalOcean: waiting for droplets to become active',
          signal: ctx.signal,
        },
      );
    } catch (err) {
      if (DaskCloudError.isInstance(err) && err.code === 'E_TIMEOUT' && err.cause instanceof NotReady) {
        const last = [...seen].map(([k, v]) => `${k}: ${v}`).join(', ');
        throw new DaskCloudError('E_TIMEOUT', `DigitalOcean: droplets did not become active with their addresses within ${this.#o.activeTimeoutMs} ms (waited ${Date.now() - started} ms; last seen ${last})`, {
          details: { provider: 'digitalocean', operation: 'wait-for-active', statuses: Object.fromEntries(seen) },
        });
      }
      throw err;
    }
  }

  async deleteInstances(ctx: AdapterContext, ids: string[]): Promise<void> {
    const results = await Promise.allSettled(
      ids.map(async (id) => {
        try {
          await this.#call(ctx, 'droplets_destroy', (c) => c.droplet.deleteDroplet({ droplet_id: Number(id) }), true);
        } catch (err) {
          if (statusOf(err) !== 404) throw err;
        }
      }),
    );
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [`${ids[i]}: ${(r.reason as Error).message}`] : []));
    if (failed.length > 0) {
      throw new CloudApiError(`DigitalOcean: deleting ${failed.length} of ${ids.length} droplets failed: ${failed.join('; ')}`, {
        details: { provider: 'digitalocean', operation: 'droplets_destroy', failed: failed.length },
      });
    }
  }

  async listInstances(ctx: AdapterContext): Promise<Instance[]> {
    return (await this.#listTagged(ctx)).map((d) => toInstance(d));
  }

  async #listTagged(ctx: AdapterContext, tag = clusterTag(ctx.clusterId)): Promise<Droplet[]> {
    const out: Droplet[] = [];
    for (let page = 1; ; page++) {
      const r = await this.#call(ctx, 'droplets_list', (c) => c.droplet.listDroplets({ tag_name: tag, page, per_page: PER_PAGE }), true);
      out.push(...r.droplets);
      if (!r.links?.pages?.next || r.droplets.length === 0) break;
    }
    return out;
  }

  /**
   * Every cluster with resources in the account, for cleanup sweeps: Droplets carrying the
   * `dask-cloud` tag (cluster id and expiry from their tags), and firewalls named
   * `dask-cloud-<id>` whose Droplets are gone (firewalls carry no tags: such a leftover counts as
   * expired a day after it was created, the default `expiresAfterHours`).
   */
  async listClusters(ctx: AdapterContext): Promise<Array<{ clusterId: string; expiresAt?: Date }>> {
    const clusters = new Map<string, Date | undefined>();
    const clusterPrefix = `${LABELS.cluster}:`;
    const expiresPrefix = `${LABELS.expires}:`;
    for (const d of await this.#listTagged(ctx, MARKER_TAG)) {
      const tags = d.tags ?? [];
      const id = tags.find((t) => t.startsWith(clusterPrefix))?.slice(clusterPrefix.length);
      if (!id) continue;
      const epoch = Number(tags.find((t) => t.startsWith(expiresPrefix))?.slice(expiresPrefix.length));
      const expires = Number.isFinite(epoch) && epoch > 0 ? new Date(epoch * 1000) : undefined;
      const known = clusters.get(id);
      // The earliest expiry of a cluster's Droplets (later batches carry later ones).
      if (!clusters.has(id) || (expires !== undefined && (known === undefined || expires < known))) clusters.set(id, expires);
    }
    const prefix = firewallName('');
    for (const f of await this.#firewallsNamed(ctx, (name) => name.startsWith(prefix))) {
      const id = f.name.slice(prefix.length);
      if (!id || clusters.has(id)) continue;
      const created = Date.parse(String((f as { created_at?: string }).created_at));
      clusters.set(id, Number.isNaN(created) ? undefined : new Date(created + 24 * 3_600_000));
    }
    return [...clusters].map(([clusterId, expiresAt]) => ({ clusterId, ...(expiresAt ? { expiresAt } : {}) }));
  }

  async consoleOutput(_ctx: AdapterContext, id: string): Promise<string> {
    if (this.#o.consoleOutput) return this.#o.consoleOutput({ id, name: this.#names.get(id) });
    throw new CloudApiError(
      "DigitalOcean's API offers no console output: open the Droplet console in the control panel, or ssh in " +
        '(sshKeys) and read /var/log/cloud-init-output.log; the consoleOutput option can fetch it for error messages',
    );
  }
}
