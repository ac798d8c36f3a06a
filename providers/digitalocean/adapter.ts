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
 * - A firewall may only name tags that exist (OpenAPI spec: firewall.yml and firewall_rule.yml use
 *   `existing_tags_array.yml`), while a Droplet create makes the tags it names. So the cluster tag
 *   is created (POST /v2/tags, which answers an existing tag as it is) before the firewall. The
 *   cluster's own tags (cluster id, expiry) are deleted with the firewall; the shared `dask-cloud`
 *   and role tags stay. A tag is only deleted when no Droplet carries it any more: deleting a tag
 *   untags its Droplets, and a Droplet without its cluster tag is invisible to every sweep.
 * - `preflight` makes only GET requests; see its TSDoc for the checks.
 */
import { randomBytes } from 'node:crypto';
import { inspect, type InspectOptions } from 'node:util';
import type { modules } from 'dots-wrapper';
import { cloudDate, LABELS, type AdapterContext, type CloudAdapter, type ClusterListing, type Instance, type InstanceRequest, type NetworkPlan, type NetworkSetup } from '../../src/cluster/vm';
import type { MemberRole } from '../../src/cluster/backend';
import { retry } from '../../src/cluster/retry';
import { CloudApiError, CredentialsError, DaskCloudError, PreflightError, ValidationError } from '../../src/errors';
import type { PreflightReport } from '../../src/cluster/preflight';
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

/** The key of the one-off tag a many-Droplet delete goes by (see `DropletAdapter.deleteInstances`). */
export const RETIRE_TAG_KEY = 'dask-cloud-retire';

/** A fresh one-off tag for deleting some of a cluster's Droplets at once: `dask-cloud-retire:<clusterId>-<8 hex>`. */
export function retireTag(clusterId: string): string {
  const nonce = randomBytes(4).toString('hex');
  return `${labelTag(RETIRE_TAG_KEY, clusterId).slice(0, 255 - nonce.length - 1)}-${nonce}`;
}

/** Deleting more Droplets than this at once goes by a one-off tag (a handful is cheaper one by one). */
export const BULK_DELETE_THRESHOLD = 3;

/**
 * Droplets tagged per `tags_assign_resources` call. DigitalOcean documents no maximum for the
 * `resources` array; 100 is our own conservative choice (a 500-Droplet scale-down: 5 calls).
 */
export const TAG_CHUNK = 100;

/** The name of a cluster's firewall (DigitalOcean firewalls carry no tags of their own). */
export function firewallName(clusterId: string): string {
  return `dask-cloud-${clusterId}`.slice(0, 255);
}

/** Where the API token came from, for messages (never the token itself). */
export type TokenSource = 'token option' | 'DIGITALOCEAN_TOKEN' | 'DIGITALOCEAN_ACCESS_TOKEN' | 'client option' | 'none';

/** Where a token is made, and what the fix of a credentials failure says. */
export const TOKEN_PAGE = 'https://cloud.digitalocean.com/account/api/tokens';

/**
 * The scopes of a custom-scoped token the cluster needs (DigitalOcean OpenAPI spec, each
 * operation's `security`). A full-access token has them all.
 */
export const REQUIRED_SCOPES = [
  'account:read',
  'regions:read',
  'sizes:read',
  'image:read',
  'vpc:read',
  'droplet:create',
  'droplet:read',
  'droplet:delete',
  'firewall:create',
  'firewall:read',
  'firewall:delete',
  'tag:create',
  'tag:read',
  'tag:delete',
] as const;
/** Needed in addition for private mode with the docker runtime (the NAT check). */
export const NAT_SCOPE = 'nat_gateway:read';
/** Needed in addition when `sshKeys` are given. */
export const SSH_KEY_SCOPE = 'ssh_key:read';

/** How to read a Droplet's console when something failed (DigitalOcean's API has no console output). */
export type ConsoleOutputFetcher = (droplet: { id: string; name?: string }) => Promise<string>;

export interface DropletAdapterOptions {
  api: DoApi;
  /** Where the token came from (for the credentials check's message). */
  tokenSource?: TokenSource;
  /** The option the user set for each size (`size`, or the role's own), for error messages. */
  sizeOptions?: { scheduler: string; worker: string };
  /** The Docker image Droplets pull (for the NAT check's message). */
  dockerImage?: string;
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

/** What this process knows of its cluster's firewall: 'none' until a create is tried, 'unknown' while one may have landed. */
type FirewallState = { clusterId: string; firewallId?: string; firewall: 'none' | 'created' | 'unknown' };

/** A VPC NAT gateway as GET /v2/vpc_nat_gateways lists it (dots-wrapper has no type for it). */
interface NatGateway {
  id: string;
  name: string;
  state: string;
  region: string;
  vpcs?: { vpc_uuid: string; default_gateway?: boolean }[];
}

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
  /** The VPC Droplets go to: the given one, or the region's default VPC once it exists. */
  #vpcId: string | undefined;
  #vpcName: string | undefined;
  /**
   * The firewall of the cluster this adapter created one for (`clusterId`): `created` (id known),
   * `none` (its create failed cleanly, or it was deleted), `unknown` (an answer was lost). For any
   * other cluster (cleanup sweeps) deleteNetwork finds the firewall by name.
   */
  #own: FirewallState | undefined;
  /** Expiry tags seen on each cluster's Droplets (they are shared by name, so only these are candidates for deletion). */
  readonly #expiryTags = new Map<string, Set<string>>();
  /** The list the waiting worker batches share (see #pollTagged). */
  #poll: { clusterId: string; at: number; pending: boolean; pages: number; result: Promise<Droplet[]> } | undefined;
  /** Private Droplets turned out not to be offered in this region: use public networking + firewall. */
  #privateDropletsUnavailable = false;
  readonly #names = new Map<string, string>();

  constructor(options: DropletAdapterOptions) {
    this.#o = options;
    this.#api = options.api;
    this.#region = options.region;
    this.#vpcId = options.vpc;
  }

  /** The region Droplets go to (a given VPC's region when no region was chosen). */
  get region(): string {
    return this.#region;
  }

  /** Whether Droplets are created without public interfaces (Private Droplets). */
  get privateDroplets(): boolean {
    return this.#o.privateNetworking && !this.#privateDropletsUnavailable;
  }

  /** A safe summary (the API client and its token stay out). */
  toJSON(): { kind: string; endpoint: string; region: string; privateDroplets: boolean } {
    return { kind: this.kind, endpoint: this.#api.endpoint, region: this.#region, privateDroplets: this.privateDroplets };
  }

  /** `console.log(adapter)` shows {@link DropletAdapter.toJSON}. */
  [inspect.custom](depth: number, options: InspectOptions, render: typeof inspect): string {
    return depth < 0 ? '[DropletAdapter]' : `DropletAdapter ${render(this.toJSON(), options)}`;
  }

  #call<T>(ctx: AdapterContext, operation: string, fn: (client: DotsClient) => Promise<{ data: T }>, idempotent: boolean): Promise<T> {
    return this.#api.call(operation, fn, { signal: ctx.signal, idempotent, log: ctx.log, pacing: ctx.pacing });
  }

  /** Every page of a list operation. */
  async #all<T>(ctx: AdapterContext, operation: string, key: string, fn: (client: DotsClient, page: number) => Promise<{ data: unknown }>): Promise<T[]> {
    const out: T[] = [];
    for (let page = 1; ; page++) {
      const r = (await this.#call(ctx, operation, (c) => fn(c, page) as Promise<{ data: Record<string, unknown> }>, true)) as Record<string, unknown> & { links?: { pages?: { next?: string } } };
      const items = (r[key] ?? []) as T[];
      out.push(...items);
      if (!r.links?.pages?.next || items.length === 0) break;
    }
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // Preflight

  /**
   * Read-only checks (GET requests only), each recorded in `report`:
   * - credentials: a token (from the option or DIGITALOCEAN_TOKEN) that the API accepts
   *   (GET /v2/account; 401 → CredentialsError), on an account that is not locked;
   * - location: the region exists and takes new Droplets;
   * - image: the image resolves and is offered in the region;
   * - network: the VPC (given, or the region's default) and its range; both sizes offered in the
   *   region; the SSH keys exist;
   * - nat: private mode with the docker runtime needs a VPC NAT gateway as the VPC's default
   *   route, or Private Droplets cannot install Docker or pull the image;
   * - quota: the Droplet limit leaves room for the scheduler and every worker;
   * - permissions: the read scopes the cluster needs (a 403 anywhere above names the scope);
   *   create and delete scopes only a write could prove, so they are a warning with the fix.
   * Whatever it resolves (region, VPC, range) is kept for the create calls.
   */
  async preflight(ctx: AdapterContext, plan: NetworkPlan, report: PreflightReport): Promise<void> {
    /** Read scopes a 403 showed missing. */
    const missing = new Set<string>();
    const read = async <T>(scope: string, fn: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await fn();
      } catch (err) {
        if (statusOf(err) !== 403) throw err;
        missing.add(scope);
        return undefined;
      }
    };
    const notReadable = (id: Parameters<PreflightReport['warn']>[0], scope: string, what: string) =>
      report.warn(id, `${what} not checked: the token lacks the ${scope} scope`, `add ${scope} to the token's scopes (${TOKEN_PAGE})`);
    const source = this.#o.tokenSource ?? 'token option';
    const signal = ctx.signal;

    // credentials ---------------------------------------------------------------------------
    let account: modules.account.IAccount | undefined;
    const credentialsFix = `create a token at ${TOKEN_PAGE} (full access, or the custom scopes the README lists) and set DIGITALOCEAN_TOKEN, or pass the token option`;
    const credentialsOk = await report.check(
      'credentials',
      async () => {
        if (!this.#api.hasCredentials) {
          throw new CredentialsError('DigitalOcean: no API token: neither the token option nor DIGITALOCEAN_TOKEN (or DIGITALOCEAN_ACCESS_TOKEN) is set', {
            details: { provider: 'digitalocean', fix: credentialsFix },
          });
        }
        try {
          account = (await this.#call(ctx, 'account_get', (c) => c.account.getAccount(), true)).account;
        } catch (err) {
          if (statusOf(err) === 401) {
            throw new CredentialsError(`DigitalOcean refused the API token from the ${source} (HTTP 401: ${String((err as CloudApiError).details.doMessage)}): it is wrong, expired or revoked`, {
              cause: err,
              details: { provider: 'digitalocean', tokenSource: source, fix: credentialsFix },
            });
          }
          if (statusOf(err) !== 403) throw err;
          missing.add('account:read');
          return `token from the ${source} accepted (account details not readable)`;
        }
        const status = String(account.status);
        const why = account.status_message?.trim() ? ` (${account.status_message.trim()})` : '';
        if (status === 'locked') {
          throw new PreflightError(`the DigitalOcean account is locked${why}: it cannot create Droplets`, {
            details: { provider: 'digitalocean', fix: 'resolve the lock in the DigitalOcean control panel (Billing, or a support ticket), then run dask-cloud doctor again' },
          });
        }
        if (status !== 'active') {
          report.warn('credentials', `token from the ${source} accepted, but the account status is '${status}'${why}`, 'see the notice in the DigitalOcean control panel: creates may be refused until it is resolved');
        }
        return `token from the ${source} accepted; account ${status}`;
      },
      credentialsFix,
      signal,
    );
    if (!credentialsOk) return;

    // Every read below needs only the token: they go out together, and each check judges its
    // own once what it depends on is known (a given VPC's region, the region's sizes). All are
    // awaited before preflight returns: it leaves no read in flight.
    const reads: Promise<unknown>[] = [];
    const early = <T>(scope: string, fn: () => Promise<T>): Promise<T | undefined> => {
      const p = read(scope, fn);
      p.catch(() => undefined); // judged (and rethrown) by its check
      reads.push(p);
      return p;
    };
    const vpcId = this.#o.vpc;
    // A given VPC is read by its id; else the region's default VPC is found in the list.
    const vpcGet = vpcId !== undefined ? early('vpc:read', async () => (await this.#call(ctx, 'vpcs_get', (c) => c.vpc.getVpc({ vpc_id: vpcId }), true)).vpc) : undefined;
    const vpcList = vpcId === undefined ? early('vpc:read', () => this.#all<modules.vpc.IVpc>(ctx, 'vpcs_list', 'vpcs', (c, page) => c.vpc.listVpcs({ page, per_page: PER_PAGE }))) : undefined;
    const regionsRead = early('regions:read', () => this.#all<modules.region.IRegion>(ctx, 'regions_list', 'regions', (c, page) => c.region.listRegions({ page, per_page: PER_PAGE })));
    const ref = this.#o.image;
    const imageRead = early('image:read', async () => (await this.#call(ctx, 'images_get', (c) => c.image.getImage(typeof ref === 'number' ? { image_id: ref } : { slug: ref }), true)).image);
    const sizesRead = early('sizes:read', () => this.#all<modules.size.ISize>(ctx, 'sizes_list', 'sizes', (c, page) => c.size.listSizes({ page, per_page: PER_PAGE })));
    const keysRead = this.#o.sshKeys.length > 0 ? early(SSH_KEY_SCOPE, () => this.#all<modules.sshKey.ISshKey>(ctx, 'sshKeys_list', 'ssh_keys', (c, page) => c.sshKey.listSshKeys({ page, per_page: PER_PAGE }))) : undefined;
    const dropletsRead = early('droplet:read', async () => {
      const r = await this.#call(ctx, 'droplets_list', (c) => c.droplet.listDroplets({ page: 1, per_page: 1 }), true);
      return (r as { meta?: { total?: number } }).meta?.total ?? r.droplets.length;
    });
    const permissionReads = [
      early('firewall:read', () => this.#call(ctx, 'firewalls_list', (c) => c.firewall.listFirewalls({ page: 1, per_page: 1 }), true)),
      early('tag:read', () => this.#call(ctx, 'tags_list', (c) => c.tag.listTags({ page: 1, per_page: 1 }), true)),
    ];

    try {
      // network (the VPC first: without a region option a given VPC's region is the region) ----
      const vpcChecked = report.check(
        'network',
        async () => {
          if (vpcId !== undefined) {
            let vpc: modules.vpc.IVpc | undefined;
            try {
              vpc = await vpcGet;
            } catch (err) {
              if (statusOf(err) === 404) throw new ValidationError(`vpc ${vpcId} does not exist in this account`, { option: 'vpc', details: { fix: 'pass the id of one of your VPCs (doctl vpcs list), or leave vpc out for the region\'s default VPC' } });
              throw err;
            }
            if (!vpc) return notReadable('network', 'vpc:read', 'the VPC');
            if (this.#o.regionExplicit && vpc.region !== this.#region) {
              throw new ValidationError(`vpc ${vpcId} is in region ${vpc.region}, not ${this.#region}`, { option: 'vpc', details: { fix: `pass region '${vpc.region}' or leave region out` } });
            }
            this.#region = vpc.region;
            this.#vpcRange = [vpc.ip_range];
            this.#vpcName = vpc.name;
            return `VPC ${vpc.name} (${vpc.ip_range}) in ${vpc.region}`;
          }
          const vpcs = await vpcList;
          if (!vpcs) return notReadable('network', 'vpc:read', 'the VPC');
          const own = vpcs.find((v) => v.default && v.region === this.#region);
          if (own) {
            this.#vpcRange = [own.ip_range];
            this.#vpcId = own.id;
            this.#vpcName = own.name;
            return `default VPC ${own.name} (${own.ip_range})`;
          }
          // DigitalOcean creates a region's default VPC with its first Droplet; until then only
          // "some private range" is known. Private addresses are reachable only inside the VPC anyway.
          ctx.log('no default VPC in %s yet: members and VPC clients are admitted from %s', this.#region, PRIVATE_RANGES.join(', '));
          return `no default VPC in ${this.#region} yet (DigitalOcean creates it with the first Droplet)`;
        },
        undefined,
        signal,
      );
      // The region is known once the VPC check has run (a given VPC may name it).
      const regionKnown = vpcId !== undefined && !this.#o.regionExplicit ? vpcChecked : Promise.resolve(true);

      // location --------------------------------------------------------------------------------
      let region: modules.region.IRegion | undefined;
      const locationChecked = regionKnown.then(() =>
        report.check(
          'location',
          async () => {
            const regions = await regionsRead;
            if (!regions) return notReadable('location', 'regions:read', 'the region');
            region = regions.find((r) => r.slug === this.#region);
            const open = regions.filter((r) => r.available).map((r) => r.slug);
            if (!region) throw new ValidationError(`region ${this.#region} does not exist`, { option: 'region', details: { fix: `pass one of: ${open.join(', ')}` } });
            if (!region.available) throw new ValidationError(`region ${this.#region} (${region.name}) does not take new Droplets`, { option: 'region', details: { fix: `pass one of: ${open.join(', ')}` } });
            return `${region.slug} (${region.name}) takes new Droplets`;
          },
          undefined,
          signal,
        ),
      );

      // image -----------------------------------------------------------------------------------
      const imageChecked = regionKnown.then(() =>
        report.check(
          'image',
          async () => {
            let image: modules.image.IImage | undefined;
            try {
              image = await imageRead;
            } catch (err) {
              if (statusOf(err) === 404) {
                throw new ValidationError(`image ${JSON.stringify(ref)} does not exist`, {
                  option: 'image',
                  details: { fix: "pass a public image slug (doctl compute image list-distribution --public), e.g. 'ubuntu-24-04-x64', or the id of one of your snapshots" },
                });
              }
              throw err;
            }
            if (!image) return notReadable('image', 'image:read', 'the image');
            const name = `${image.slug ?? image.id} (${image.distribution} ${image.name})`;
            if (image.status !== undefined && image.status !== 'available') {
              throw new ValidationError(`image ${name} is ${image.status}, not available`, { option: 'image', details: { fix: 'wait until the image is available, or pass another image' } });
            }
            if (image.regions && image.regions.length > 0 && !image.regions.includes(this.#region)) {
              throw new ValidationError(`image ${name} is not offered in ${this.#region} (only ${image.regions.join(', ')})`, {
                option: 'image',
                details: { fix: `transfer the image to ${this.#region} (doctl compute image-action transfer), or pass one of these regions` },
              });
            }
            return name;
          },
          undefined,
          signal,
        ),
      );

      // network: sizes and SSH keys (after the VPC part, so the check's message reads in order;
      // and after the location, whose region lists the sizes it offers) -------------------------
      const sizesChecked = Promise.all([vpcChecked, locationChecked]).then(() =>
        report.check(
          'network',
          async () => {
            const sizes = await sizesRead;
            if (!sizes) return notReadable('network', 'sizes:read', 'the Droplet sizes');
            const wanted = [
              { slug: this.#o.schedulerSize, option: this.#o.sizeOptions?.scheduler ?? 'schedulerSize' },
              { slug: this.#o.workerSize, option: this.#o.sizeOptions?.worker ?? 'workerSize' },
            ];
            const offered = sizes.filter((z) => z.available && z.regions.includes(this.#region) && (!region || region.sizes.includes(z.slug))).map((z) => z.slug);
            const hint = offered.slice(0, 12).join(', ');
            for (const w of wanted) {
              const size = sizes.find((z) => z.slug === w.slug);
              if (!size) throw new ValidationError(`size ${w.slug} does not exist`, { option: w.option, details: { fix: `pass a size offered in ${this.#region}, e.g. ${hint}` } });
              if (!offered.includes(size.slug)) {
                throw new ValidationError(`size ${w.slug} is not offered in ${this.#region}`, { option: w.option, details: { fix: `pass a size offered in ${this.#region}, e.g. ${hint}; or another region` } });
              }
            }
            let keys = '';
            if (keysRead) {
              const onAccount = await keysRead;
              if (!onAccount) notReadable('network', SSH_KEY_SCOPE, 'the SSH keys');
              else {
                const unknown = this.#o.sshKeys.filter((k) => !onAccount.some((a) => String(a.id) === String(k) || a.fingerprint === k));
                if (unknown.length > 0) {
                  throw new ValidationError(`sshKeys: ${unknown.map((k) => JSON.stringify(k)).join(', ')} are not keys of this account`, {
                    option: 'sshKeys',
                    details: { fix: 'add the keys to the account (doctl compute ssh-key import) or pass the ids / fingerprints doctl compute ssh-key list shows' },
                  });
                }
                keys = `; ${this.#o.sshKeys.length} SSH key(s) found`;
              }
            }
            const sizesText = [...new Set(wanted.map((w) => w.slug))].join(' and ');
            return `${sizesText} offered in ${this.#region}${keys}`;
          },
          undefined,
          signal,
        ),
      );

      // nat (its VPC is known once the VPC part has run) ----------------------------------------
      const natChecked = vpcChecked.then(() =>
        report.check(
          'nat',
          async () => {
            if (!plan.privateNetworking) return 'not needed: public mode (Droplets reach the internet through their public addresses)';
            if (!plan.needsEgress) return "not needed: the native runtime installs nothing at boot";
            const fix =
              `add a VPC NAT gateway to ${this.#vpcName ?? `the default VPC of ${this.#region}`} as its default route (control panel: Networking → VPC → NAT gateways; ` +
              "API: POST /v2/vpc_nat_gateways with vpcs: [{ vpc_uuid, default_gateway: true }]); or use privateNetworking: false; or runtime: 'native' with an image that has Python and distributed";
            const image = this.#o.dockerImage ?? 'the Dask image';
            if (this.#vpcId === undefined) {
              throw new PreflightError(`private mode: ${this.#region} has no default VPC yet, so no VPC NAT gateway: Private Droplets could not install Docker or pull ${image}`, {
                details: { provider: 'digitalocean', fix: `create a VPC in ${this.#region} with a VPC NAT gateway as its default route and pass it as vpc; or use privateNetworking: false; or runtime: 'native' with an image that has Python and distributed` },
              });
            }
            const natVpc = this.#vpcId;
            const gateways = await read(NAT_SCOPE, () =>
              this.#allRaw<NatGateway>(ctx, 'vpcnatgateways_list', 'vpc_nat_gateways', `/vpc_nat_gateways?region=${encodeURIComponent(this.#region)}`),
            );
            if (!gateways) return notReadable('nat', NAT_SCOPE, 'the VPC NAT gateway');
            const attached = gateways.filter((g) => (g.vpcs ?? []).some((v) => v.vpc_uuid === natVpc));
            const vpcText = `VPC ${this.#vpcName ?? natVpc}`;
            if (attached.length === 0) {
              throw new PreflightError(`private mode: ${vpcText} has no VPC NAT gateway: Private Droplets could not install Docker or pull ${image}, and the start would time out after minutes`, {
                details: { provider: 'digitalocean', fix },
              });
            }
            const usable = attached.find((g) => g.state === 'ACTIVE' && g.vpcs!.some((v) => v.vpc_uuid === natVpc && v.default_gateway !== false));
            if (!usable) {
              const seen = attached.map((g) => `${g.name} (${g.state}${g.vpcs!.some((v) => v.vpc_uuid === natVpc && v.default_gateway === false) ? ', not the default route' : ''})`).join(', ');
              throw new PreflightError(`private mode: the VPC NAT gateway of ${vpcText} is not usable: ${seen}`, {
                details: { provider: 'digitalocean', fix: `wait until it is ACTIVE and make it the VPC's default route (default_gateway: true); or ${fix.slice(fix.indexOf('or use') + 3)}` },
              });
            }
            return `VPC NAT gateway ${usable.name} is the default route of ${vpcText}`;
          },
          undefined,
          signal,
        ),
      );

      // quota -----------------------------------------------------------------------------------
      const quotaChecked = report.check(
        'quota',
        async () => {
          const need = 1 + plan.nWorkers;
          const total = await dropletsRead;
          if (total === undefined) return notReadable('quota', 'droplet:read', 'the Droplet count');
          if (!account) return notReadable('quota', 'account:read', 'the Droplet limit');
          const free = account.droplet_limit - total;
          if (free < need) {
            throw new PreflightError(`the account's Droplet limit is ${account.droplet_limit} and ${total} Droplets exist: ${free} left, this cluster needs ${need} (scheduler + ${plan.nWorkers} workers)`, {
              details: {
                provider: 'digitalocean',
                fix: `delete ${need - free} Droplet(s) you no longer need, start with nWorkers ≤ ${Math.max(0, free - 1)}, or ask DigitalOcean for a higher Droplet limit (control panel: Settings → Team, or a support ticket)`,
              },
            });
          }
          return `${total} of ${account.droplet_limit} Droplets in use; this cluster needs ${need}`;
        },
        undefined,
        signal,
      );

      await Promise.all([vpcChecked, locationChecked, imageChecked, sizesChecked, natChecked, quotaChecked]);

      // permissions (judged last: every read above may have shown a missing scope) ----------------
      await report.check(
        'permissions',
        async () => {
          await Promise.all(permissionReads);
          const needed = [...REQUIRED_SCOPES, ...(plan.privateNetworking && plan.needsEgress ? [NAT_SCOPE] : []), ...(this.#o.sshKeys.length > 0 ? [SSH_KEY_SCOPE] : [])];
          if (missing.size > 0) {
            throw new PreflightError(`the token lacks these scopes: ${[...missing].sort().join(', ')}`, {
              details: { provider: 'digitalocean', missingScopes: [...missing].sort(), fix: `give the token full access, or custom scopes including ${needed.join(', ')} (${TOKEN_PAGE}: tokens cannot be changed, create a new one)` },
            });
          }
          const writes = needed.filter((sc) => !/:read$/.test(sc));
          report.warn(
            'permissions',
            `read scopes verified; ${writes.join(', ')} can only be proven by creating something, which preflight never does`,
            `use a token with full access, or custom scopes including ${needed.join(', ')} (${TOKEN_PAGE})`,
          );
        },
        undefined,
        signal,
      );
    } finally {
      await Promise.allSettled(reads);
    }
  }

  /** Every page of a list dots-wrapper lacks (raw GET through the pipeline). */
  async #allRaw<T>(ctx: AdapterContext, operation: string, key: string, path: string): Promise<T[]> {
    const out: T[] = [];
    const sep = path.includes('?') ? '&' : '?';
    for (let page = 1; ; page++) {
      const r = await this.#api.get<Record<string, unknown> & { links?: { pages?: { next?: string } } }>(operation, `${path}${sep}page=${page}&per_page=${PER_PAGE}`, {
        signal: ctx.signal,
        idempotent: true,
        log: ctx.log,
      });
      const items = (r[key] ?? []) as T[];
      out.push(...items);
      if (!r.links?.pages?.next || items.length === 0) break;
    }
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // Network

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

  /**
   * Creates the cluster tag, then sends the firewall's create and returns without its answer:
   * the scheduler's create goes out right behind it. A firewall names Droplets by tag, so it
   * covers the scheduler whenever each lands. Without a firewall a Droplet accepts everything, so
   * the firewall's request is sent first: a process killed after the Droplet's create has sent
   * the firewall's too. The core waits for the answer ({@link NetworkSetup.accepted}) before it
   * looks for the scheduler's address and before it creates any worker: a refused firewall
   * costs the scheduler's create and delete, never a worker's.
   */
  async ensureNetwork(ctx: AdapterContext, plan: NetworkPlan): Promise<NetworkSetup> {
    const rules = this.firewallRules(plan);
    // 'none' until the firewall create is tried: a failed tag create leaves no firewall to look for.
    const own: FirewallState = (this.#own = { clusterId: plan.clusterId, firewall: 'none' });
    // The firewall may only name an existing tag: a Droplet's create makes its tags, a firewall's does not.
    await this.#ensureTag(ctx, clusterTag(plan.clusterId));
    const inEffect = this.#createFirewall(ctx, plan.clusterId, rules, own);
    return { inEffect, accepted: inEffect };
  }

  async #createFirewall(ctx: AdapterContext, clusterId: string, rules: ReturnType<DropletAdapter['firewallRules']>, own: FirewallState): Promise<void> {
    const name = firewallName(clusterId);
    const tag = clusterTag(clusterId);
    let ambiguous = false;
    await this.#reconciled(ctx, `creating firewall ${name}`, async () => {
      own.firewall = 'unknown';
      try {
        const { firewall } = await this.#call(ctx, 'firewalls_create', (c) => c.firewall.createFirewall({ name, tags: [tag], ...rules }), false);
        own.firewallId = firewall.id;
        own.firewall = 'created';
        ctx.log('firewall %s (%s) applies to tag %s', firewall.id, name, tag);
      } catch (err) {
        if (!isAmbiguous(err)) {
          // Nothing was created, unless an earlier attempt's answer was lost: then look on teardown.
          own.firewall = ambiguous ? 'unknown' : 'none';
          throw err;
        }
        ambiguous = true;
        const found = await this.#firewallsNamed(ctx, name);
        if (found.length === 0) throw err;
        ctx.log('firewall create answered %s, but %s exists: adopted', (err as Error).message, found[0]!.id);
        own.firewallId = found[0]!.id;
        own.firewall = 'created';
      }
    });
  }

  /**
   * Creates a tag. Creating a tag that exists answers the existing tag (terraform-provider-
   * digitalocean relies on it), so it is safe to repeat; should an account answer "exists"
   * with an error instead, the tag is looked up before giving up.
   */
  async #ensureTag(ctx: AdapterContext, tag: string): Promise<void> {
    try {
      await this.#call(ctx, 'tags_create', (c) => c.tag.createTag({ name: tag }), true);
    } catch (err) {
      const status = statusOf(err);
      if (status !== 409 && status !== 422) throw err;
      try {
        await this.#call(ctx, 'tags_get', (c) => c.tag.getTag({ tag_name: tag }), true);
      } catch {
        throw err;
      }
    }
  }

  async #firewallsNamed(ctx: AdapterContext, name: string | ((name: string) => boolean)): Promise<Firewall[]> {
    const matches = typeof name === 'string' ? (n: string) => n === name : name;
    const all = await this.#all<Firewall>(ctx, 'firewalls_list', 'firewalls', (c, page) => c.firewall.listFirewalls({ page, per_page: PER_PAGE }));
    return all.filter((f) => matches(f.name));
  }

  /**
   * Deletes the cluster's firewall, then its own tags: the cluster tag (only once no Droplet
   * carries it: deleting it would untag them and hide them from every sweep, so that is a
   * "still in use" error the core retries), and each expiry tag seen on its Droplets that no
   * other Droplet carries (clusters started in the same second share one). Not found is done.
   * Every deletion is attempted even when an earlier one failed (a firewall left behind is still
   * found by its name); the first failure is thrown.
   */
  async deleteNetwork(ctx: AdapterContext): Promise<void> {
    const own = this.#own?.clusterId === ctx.clusterId ? this.#own : undefined;
    const errors: unknown[] = [];
    const attempt = async (step: () => Promise<void>): Promise<void> => {
      try {
        await step();
      } catch (err) {
        errors.push(err);
      }
    };
    if (own?.firewall !== 'none') {
      await attempt(async () => {
        // After a lost create answer, or in a cleanup sweep, the id is unknown: find it by its name.
        const ids = own?.firewallId !== undefined ? [own.firewallId] : (await this.#firewallsNamed(ctx, firewallName(ctx.clusterId))).map((f) => f.id as string);
        const failed = errors.length;
        for (const id of ids) {
          await attempt(async () => {
            try {
              await this.#call(ctx, 'firewalls_delete', (c) => c.firewall.deleteFirewall({ firewall_id: id }), true);
            } catch (err) {
              if (statusOf(err) !== 404) throw err;
            }
          });
        }
        if (own && errors.length === failed) {
          own.firewallId = undefined;
          own.firewall = 'none';
        }
      });
    }
    const tag = clusterTag(ctx.clusterId);
    await attempt(async () => {
      const inUse = await this.#deleteTagIfUnused(ctx, tag);
      if (inUse > 0) {
        throw new CloudApiError(`DigitalOcean: ${inUse} Droplet(s) still carry tag ${tag}: it is kept so that a cleanup can find them`, {
          details: { provider: 'digitalocean', operation: 'tags_delete', tag, dependency: true },
        });
      }
    });
    // Droplets still carrying the cluster tag carry its expiry tag too: those wait for the retry.
    const stillTagged = errors.some((e) => this.isDependencyError(e));
    let expiryTags: Iterable<string> = [];
    if (!stillTagged) {
      const known = this.#expiryTags.get(ctx.clusterId);
      // A sweep that came after the Droplets were gone (a process stopped mid-close) never saw
      // their expiry tag: delete every expiry tag nothing carries any more (none can be in use),
      // and the cluster's retire tags a process stopped mid-scale-down left behind.
      if (known !== undefined) expiryTags = known;
      else await attempt(async () => void (expiryTags = await this.#unusedTags(ctx)));
    }
    const expiryErrors = errors.length;
    for (const expiry of expiryTags) {
      await attempt(async () => {
        const others = await this.#deleteTagIfUnused(ctx, expiry);
        if (others > 0) ctx.log('tag %s is kept: %d Droplet(s) of other clusters carry it', expiry, others);
      });
    }
    if (!stillTagged && errors.length === expiryErrors) this.#expiryTags.delete(ctx.clusterId);
    // A real failure before a "still in use" one: the latter only asks for a retry.
    const first = errors.find((e) => !this.isDependencyError(e)) ?? errors[0];
    if (first !== undefined) throw first;
  }

  /** Tags no resource carries: expiry tags (left by clusters whose Droplets are gone) and this cluster's retire tags. */
  async #unusedTags(ctx: AdapterContext): Promise<string[]> {
    const prefixes = [`${LABELS.expires}:`, `${labelTag(RETIRE_TAG_KEY, ctx.clusterId)}-`];
    const tags = await this.#all<modules.tag.ITag>(ctx, 'tags_list', 'tags', (c, page) => c.tag.listTags({ page, per_page: PER_PAGE }));
    return tags.filter((t) => prefixes.some((p) => t.name.startsWith(p)) && Number(t.resources?.count ?? 0) === 0).map((t) => t.name);
  }

  /** Deletes `tag` unless resources carry it; returns how many do (0: deleted, or it did not exist). */
  async #deleteTagIfUnused(ctx: AdapterContext, tag: string): Promise<number> {
    let count: number;
    try {
      const { tag: found } = await this.#call(ctx, 'tags_get', (c) => c.tag.getTag({ tag_name: tag }), true);
      count = Number(found.resources?.count ?? 0);
    } catch (err) {
      if (statusOf(err) === 404) return 0;
      throw err;
    }
    if (count > 0) return count;
    try {
      await this.#call(ctx, 'tags_delete', (c) => c.tag.deleteTag({ tag_name: tag }), true);
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
    }
    return 0;
  }

  /** A cluster tag still on Droplets that are going away: deleteNetwork is worth repeating. */
  isDependencyError(err: unknown): boolean {
    return isCloudApiError(err) && err.details.dependency === true;
  }

  // ---------------------------------------------------------------------------------------------
  // Droplets

  async createInstances(ctx: AdapterContext, request: InstanceRequest, onCreated: (ids: string[]) => void): Promise<Instance[]> {
    if (request.userData.gzipped) throw new DaskCloudError('E_USER_DATA_TOO_LARGE', 'DigitalOcean takes user-data as text: it cannot be gzipped');
    const tags = [...new Set([MARKER_TAG, ...Object.entries(request.labels).map(([k, v]) => labelTag(k, v)), ...this.#o.tags])];
    this.#noteExpiryTags(ctx.clusterId, tags);
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
    if (request.role === 'worker') return this.#waitActive(ctx, instances, () => this.#pollTagged(ctx), false);
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
          pacing: ctx.pacing,
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
          // One Droplet is the scheduler, whose private address every worker waits for (it
          // exists only once the Droplet is active): a steady poll of at most a second costs a
          // few requests, where a backoff grown to 8 s made every worker boot that much later.
          baseDelayMs: instances.length === 1 ? Math.min(1_000, this.#o.pollIntervalMs) : this.#o.pollIntervalMs,
          maxDelayMs: instances.length === 1 ? Math.min(1_000, this.#o.pollIntervalMs) : this.#o.pollIntervalMs * 4,
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

  /**
   * Deletes exactly the Droplets `ids`; not found is done. A few go one `droplets_destroy` each.
   * More than {@link BULK_DELETE_THRESHOLD} go by a one-off tag (at DigitalOcean's 250 requests a
   * minute, one call per Droplet paces a 500-Droplet scale-down over 65 s): a fresh tag is made
   * (`tags_create`), given to exactly these Droplets ({@link TAG_CHUNK} per
   * `tags_assign_resources`), all of them deleted in one `droplets_destroy_byTag`, and the tag is
   * deleted again (best effort: a failure there is logged, never thrown). No other Droplet can
   * carry a tag that did not exist before, so none other is deleted. When any of that fails
   * (e.g. a token without `droplet:update`, which tagging needs), the tag is deleted first (so a
   * process stopped during a long fallback leaves none behind) and every id is then deleted one
   * by one as before, which treats the ones already gone as done. Like before, the deletes are
   * requested, not waited for.
   */
  async deleteInstances(ctx: AdapterContext, ids: string[]): Promise<void> {
    const unique = [...new Set(ids)];
    if (unique.length > BULK_DELETE_THRESHOLD && (await this.#deleteByRetireTag(ctx, unique))) return;
    await this.#deleteEach(ctx, unique);
  }

  /** One `droplets_destroy` per id, all attempted; the failures are thrown together. */
  async #deleteEach(ctx: AdapterContext, ids: string[]): Promise<void> {
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

  /**
   * The many-Droplet delete of {@link DropletAdapter.deleteInstances}: true when the delete by
   * the one-off tag was accepted, false when the caller should delete one by one instead (any
   * failure, also a cancelled `ctx.signal`, whose per-id deletes then fail as they always did).
   * The tag is deleted before this returns, either way.
   */
  async #deleteByRetireTag(ctx: AdapterContext, ids: string[]): Promise<boolean> {
    const tag = retireTag(ctx.clusterId);
    /** Whether the tag may exist and is ours: delete it at the end. */
    let ours = false;
    try {
      let made: modules.tag.ITag;
      try {
        made = (await this.#call(ctx, 'tags_create', (c) => c.tag.createTag({ name: tag }), true)).tag;
      } catch (err) {
        // The create may have happened with its answer lost: delete the tag all the same.
        ours = isAmbiguous(err);
        ctx.log('creating retire tag %s failed (%s): deleting %d droplets one by one', tag, (err as Error).message, ids.length);
        return false;
      }
      // A create of an existing tag answers that tag: only one nothing carries is ours alone.
      if (made.name !== tag || Number(made.resources?.count ?? 0) > 0) {
        ctx.log('retire tag %s existed already (%s resources): deleting %d droplets one by one', tag, String(made.resources?.count ?? 0), ids.length);
        return false;
      }
      ours = true;
      const chunks: string[][] = [];
      for (let i = 0; i < ids.length; i += TAG_CHUNK) chunks.push(ids.slice(i, i + TAG_CHUNK));
      // allSettled: no tagging call is still in flight when the fallback or the tag deletion starts.
      const tagged = await Promise.allSettled(
        chunks.map((chunk) =>
          this.#call(ctx, 'tags_assign_resources', (c) => c.tag.tagResources({ tag_name: tag, resources: chunk.map((id) => ({ resource_id: id, resource_type: 'droplet' })) }), true),
        ),
      );
      const failed = tagged.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) {
        ctx.log('tagging %d droplets with %s failed (%s): deleting them one by one', ids.length, tag, (failed.reason as Error).message);
        return false;
      }
      try {
        await this.#call(ctx, 'droplets_destroy_byTag', (c) => c.droplet.deleteDropletsByTag({ tag_name: tag }), true);
      } catch (err) {
        // Also a 404: with the tag gone (someone deleted it, untagging the Droplets) nothing says
        // these Droplets were deleted; one by one, those already gone answer 404 and are done.
        ctx.log('deleting %d droplets by tag %s failed (%s): deleting them one by one', ids.length, tag, (err as Error).message);
        return false;
      }
      return true;
    } finally {
      if (ours) await this.#deleteRetireTag(ctx, tag);
    }
  }

  /** Deletes a one-off retire tag; never throws (a tag left behind costs nothing and is logged). */
  async #deleteRetireTag(ctx: AdapterContext, tag: string): Promise<void> {
    // Also after a cancel: the tag is deleted with a signal of its own.
    const own = ctx.signal.aborted ? { ...ctx, signal: new AbortController().signal } : ctx;
    try {
      await this.#call(own, 'tags_delete', (c) => c.tag.deleteTag({ tag_name: tag }), true);
    } catch (err) {
      if (statusOf(err) !== 404) ctx.log('deleting retire tag %s failed (it is left behind, carrying nothing that lives on): %s', tag, (err as Error).message);
    }
  }

  /**
   * Every Droplet carrying the cluster tag, in one call (`DELETE /v2/droplets?tag_name=`): a
   * thousand-Droplet cluster closes within the request budget, and nothing already gone is asked
   * for again. Every Droplet is tagged when it is created, so none escapes it.
   */
  async deleteLabelled(ctx: AdapterContext): Promise<void> {
    const tag = clusterTag(ctx.clusterId);
    try {
      await this.#call(ctx, 'droplets_destroy_byTag', (c) => c.droplet.deleteDropletsByTag({ tag_name: tag }), true);
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
    }
  }

  async listInstances(ctx: AdapterContext): Promise<Instance[]> {
    const droplets = await this.#listTagged(ctx);
    // A sweep deletes the expiry tags these Droplets carry (see deleteNetwork).
    for (const d of droplets) this.#noteExpiryTags(ctx.clusterId, d.tags ?? []);
    return droplets.map((d) => toInstance(d));
  }

  #noteExpiryTags(clusterId: string, tags: string[]): void {
    const prefix = `${LABELS.expires}:`;
    const expiry = tags.filter((t) => t.startsWith(prefix));
    if (expiry.length === 0) return;
    const seen = this.#expiryTags.get(clusterId) ?? new Set<string>();
    for (const t of expiry) seen.add(t);
    this.#expiryTags.set(clusterId, seen);
  }

  /**
   * The cluster's Droplets for a poll, shared by every batch waiting at the time: a hundred
   * batches of ten share one list (a page per 200 Droplets) instead of listing a hundred times.
   * A list is reused while it is in flight and for a poll interval after it started; with many
   * pages the interval grows to a second per page, so polling takes at most a quarter of
   * DigitalOcean's sustained request budget (4 a second).
   */
  #pollTagged(ctx: AdapterContext): Promise<Droplet[]> {
    const last = this.#poll;
    const now = Date.now();
    if (last && last.clusterId === ctx.clusterId && (last.pending || now - last.at < Math.max(this.#o.pollIntervalMs, last.pages * 1_000))) return last.result;
    const entry = { clusterId: ctx.clusterId, at: now, pending: true, pages: last?.pages ?? 1, result: this.#listTagged(ctx) };
    this.#poll = entry;
    entry.result.then(
      (droplets) => {
        entry.pending = false;
        entry.pages = Math.max(1, Math.ceil(droplets.length / PER_PAGE));
      },
      () => {
        if (this.#poll === entry) this.#poll = undefined;
      },
    );
    return entry.result;
  }

  async #listTagged(ctx: AdapterContext, tag = clusterTag(ctx.clusterId)): Promise<Droplet[]> {
    return this.#all<Droplet>(ctx, 'droplets_list', 'droplets', (c, page) => c.droplet.listDroplets({ tag_name: tag, page, per_page: PER_PAGE }));
  }

  /**
   * Every cluster with resources in the account, for cleanup sweeps: Droplets carrying the
   * `dask-cloud` tag (cluster id and expiry from their tags), and firewalls named
   * `dask-cloud-<id>` whose Droplets are gone (firewalls carry no tags: such a leftover counts as
   * expired a day after it was created, the default `expiresAfterHours`), and cluster tags
   * nothing else is left of (a process killed between creating the tag and the firewall: no
   * expiry known, so only `all` and `clusterIds` sweeps delete them).
   */
  async listClusters(ctx: AdapterContext): Promise<ClusterListing[]> {
    const clusters = new Map<string, ClusterListing>();
    const clusterPrefix = `${LABELS.cluster}:`;
    const expiresPrefix = `${LABELS.expires}:`;
    for (const d of await this.#listTagged(ctx, MARKER_TAG)) {
      const tags = d.tags ?? [];
      const id = tags.find((t) => t.startsWith(clusterPrefix))?.slice(clusterPrefix.length);
      if (!id) continue;
      const epoch = Number(tags.find((t) => t.startsWith(expiresPrefix))?.slice(expiresPrefix.length));
      const expires = Number.isFinite(epoch) && epoch > 0 ? new Date(epoch * 1000) : undefined;
      const c = clusters.get(id) ?? { clusterId: id, instances: [] };
      // The earliest expiry of a cluster's Droplets (later batches carry later ones).
      if (expires !== undefined && (c.expiresAt === undefined || expires < c.expiresAt)) c.expiresAt = expires;
      const created = cloudDate((d as { created_at?: string }).created_at);
      const region = (d as { region?: { slug?: string } }).region?.slug;
      c.instances!.push({
        ...toInstance(d),
        // Our tags are `key:value`; the rest (the user's own) have no value.
        labels: Object.fromEntries(tags.map((t) => (t.includes(':') ? [t.slice(0, t.indexOf(':')), t.slice(t.indexOf(':') + 1)] : [t, '']))),
        ...(created ? { createdAt: created } : {}),
        ...(region ? { location: region } : {}),
      });
      clusters.set(id, c);
    }
    const prefix = firewallName('');
    for (const f of await this.#firewallsNamed(ctx, (name) => name.startsWith(prefix))) {
      const id = f.name.slice(prefix.length);
      if (!id || clusters.has(id)) continue;
      const created = cloudDate((f as { created_at?: string }).created_at);
      clusters.set(id, { clusterId: id, ...(created ? { createdAt: created, expiresAt: new Date(created.getTime() + 24 * 3_600_000) } : {}) });
    }
    for (const t of await this.#all<modules.tag.ITag>(ctx, 'tags_list', 'tags', (c, page) => c.tag.listTags({ page, per_page: PER_PAGE }))) {
      if (!t.name.startsWith(clusterPrefix)) continue;
      const id = t.name.slice(clusterPrefix.length);
      if (id && !clusters.has(id)) clusters.set(id, { clusterId: id });
    }
    return [...clusters.values()];
  }

  async consoleOutput(_ctx: AdapterContext, id: string): Promise<string> {
    if (this.#o.consoleOutput) return this.#o.consoleOutput({ id, name: this.#names.get(id) });
    throw new CloudApiError(
      "DigitalOcean's API offers no console output: open the Droplet console in the control panel, or ssh in " +
        '(sshKeys) and read /var/log/cloud-init-output.log; the consoleOutput option can fetch it for error messages',
    );
  }
}
