/**
 * DigitalOcean preflight (what `dask-cloud doctor --provider digitalocean` prints and `start()`
 * runs first) against the fake: a passing account makes only GET requests; each failing account
 * fails exactly its check, with the fix; `start()` on a failing account throws the typed error
 * before any mutating call. Items 5 (VPC NAT gateway for private mode) and 12 (credentials).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { callTimeline, checkFakesAndClose } from '../../helpers/fakes';
import type { FakeDigitalOcean } from '../../fakes/digitalocean';
import type { CheckId, CheckStatus, PreflightReport } from '../../../src/cluster/preflight';
import { DropletCluster, REQUIRED_SCOPES, type DropletClusterOptions } from '../../../providers/digitalocean';
import { CredentialsError, DaskCloudError, PreflightError, ValidationError } from '../../../src/errors';
import { clusterOptions, startFake } from './helpers';

const SLOT = 4;
const fakes: FakeDigitalOcean[] = [];
const clusters: DropletCluster[] = [];

afterEach(async () => {
  vi.unstubAllEnvs();
  await checkFakesAndClose(fakes, clusters);
});

async function fake(options: Parameters<typeof startFake>[1] = {}): Promise<FakeDigitalOcean> {
  const f = await startFake(SLOT, options);
  fakes.push(f);
  return f;
}

function cluster(f: FakeDigitalOcean, extra: DropletClusterOptions = {}): DropletCluster {
  const c = new DropletCluster(clusterOptions(f, { nWorkers: 2, ...extra }));
  clusters.push(c);
  return c;
}

function statuses(report: PreflightReport): Partial<Record<CheckId, CheckStatus>> {
  return Object.fromEntries(report.checks.map((c) => [c.id, c.status]));
}

/** Every request the fake saw was a read. */
function onlyReads(f: FakeDigitalOcean): void {
  const calls = f.server.calls();
  expect(calls.length).toBeGreaterThan(0);
  expect(calls.filter((c) => c.method !== 'GET').map((c) => `${c.method} ${c.path}`)).toEqual([]);
}

function failure(report: PreflightReport, id: CheckId) {
  const r = report.checks.find((c) => c.id === id);
  expect(r?.status, report.format()).toBe('fail');
  return r!;
}

const SSH = { name: 'laptop', public_key: 'ssh-ed25519 AAAA laptop', fingerprint: '3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa', id: 512189 };

describe('a passing account', () => {
  it('after the account, every read goes out at once: none waits for another to be answered', async () => {
    const f = await fake({ sshKeys: [SSH] });
    f.addVpcNatGateway({ vpcUuid: f.defaultVpc('nyc3').id, name: 'egress' });
    const LATENCY_MS = 1_000;
    f.faults.latency(/_(get|list)$/, LATENCY_MS);
    const report = await cluster(f, { privateNetworking: true, sshKeys: [SSH.id] }).preflight();
    expect(report.ok, report.format()).toBe(true);
    onlyReads(f);
    const calls = f.server.calls();
    expect(calls[0]!.operation).toBe('account_get');
    // The NAT gateways are looked up in the VPC the VPC read found: one read after another.
    const rest = calls.slice(1).filter((c) => c.operation !== 'vpcnatgateways_list');
    expect(rest.map((c) => c.operation).sort()).toEqual(['droplets_list', 'firewalls_list', 'images_get', 'regions_list', 'sizes_list', 'sshKeys_list', 'tags_list', 'vpcs_list']);
    // One after another, each read was sent once the previous one was answered, LATENCY_MS later.
    const spread = rest.at(-1)!.at - rest[0]!.at;
    expect(spread, callTimeline(rest)).toBeLessThan(LATENCY_MS);
    const nat = calls.find((c) => c.operation === 'vpcnatgateways_list')!;
    expect(nat.at).toBeGreaterThanOrEqual(calls.find((c) => c.operation === 'vpcs_list')!.at + LATENCY_MS);
  });

  it('private mode with a NAT gateway, ssh keys: every check passes (write scopes a warning) and only GET requests are made', async () => {
    const f = await fake({ sshKeys: [SSH] });
    f.addVpcNatGateway({ vpcUuid: f.defaultVpc('nyc3').id, name: 'egress' });
    const c = cluster(f, { privateNetworking: true, sshKeys: [SSH.id], workerSize: 's-4vcpu-8gb' });
    const report = await c.preflight();
    expect(report.ok, report.format()).toBe(true);
    expect(statuses(report)).toEqual({
      'user-data': 'pass',
      credentials: 'pass',
      location: 'pass',
      image: 'pass',
      network: 'pass',
      nat: 'pass',
      quota: 'pass',
      permissions: 'warn',
    });
    const text = report.format();
    expect(text).toMatch(/credentials: token from the token option accepted; account active/);
    expect(text).toMatch(/nyc3 \(New York 3\) takes new Droplets/);
    expect(text).toMatch(/ubuntu-24-04-x64/);
    expect(text).toMatch(/s-2vcpu-4gb and s-4vcpu-8gb offered in nyc3; 1 SSH key\(s\) found/);
    expect(text).toMatch(/VPC NAT gateway egress is the default route of VPC default-nyc3/);
    expect(text).toMatch(/0 of 25 Droplets in use; this cluster needs 3/);
    // Only a write could prove the create / delete scopes: a warning naming them, with the fix.
    const perms = report.checks.find((x) => x.id === 'permissions')!;
    expect(perms.message).toMatch(/droplet:create, droplet:delete, firewall:create, firewall:delete, tag:create, tag:delete/);
    expect(perms.fix).toMatch(/full access, or custom scopes including .*nat_gateway:read.*ssh_key:read/);
    expect(text).not.toContain(f.token);
    onlyReads(f);
    expect(f.leaked()).toEqual({});
  });

  it('public mode needs no NAT gateway', async () => {
    const f = await fake();
    const c = cluster(f);
    const report = await c.preflight();
    expect(report.ok, report.format()).toBe(true);
    expect(report.checks.find((x) => x.id === 'nat')!.message).toMatch(/not needed: public mode/);
    onlyReads(f);
  });
});

describe('item 12: credentials', () => {
  it('item 12: no token (no option, no DIGITALOCEAN_TOKEN) → CredentialsError before any call, saying to set DIGITALOCEAN_TOKEN', async () => {
    const f = await fake();
    vi.stubEnv('DIGITALOCEAN_TOKEN', '');
    vi.stubEnv('DIGITALOCEAN_ACCESS_TOKEN', '');
    const c = cluster(f, { token: undefined });
    const report = await c.preflight();
    const cred = failure(report, 'credentials');
    expect(cred.error).toBeInstanceOf(CredentialsError);
    expect(cred.error!.code).toBe('E_CREDENTIALS');
    expect(cred.fix).toMatch(/set DIGITALOCEAN_TOKEN, or pass the token option/);
    // Nothing else can be checked without credentials.
    expect(report.checks.filter((x) => x.id !== 'credentials' && x.id !== 'user-data').every((x) => x.status === 'skip')).toBe(true);

    const err = await c.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CredentialsError);
    expect((err as Error).message).toMatch(/no API token[\s\S]*fix: .*DIGITALOCEAN_TOKEN/);
    expect(c.state).toBe('failed');
    expect(f.server.calls()).toEqual([]);
  });

  it('item 12: a token the API refuses (401) → CredentialsError from the credentials check, naming where it came from and not the token', async () => {
    const f = await fake();
    const wrong = 'dop_v1_ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff';
    vi.stubEnv('DIGITALOCEAN_TOKEN', wrong);
    const c = cluster(f, { token: undefined });
    const err = await c.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CredentialsError);
    expect((err as Error).message).toMatch(/refused the API token from the DIGITALOCEAN_TOKEN \(HTTP 401/);
    expect((err as Error).message).not.toContain(wrong);
    expect(f.server.operations()).toEqual(['account_get']);
  });

  it('item 12: the pass message says where the token came from (option or environment), never the token', async () => {
    const f = await fake();
    vi.stubEnv('DIGITALOCEAN_TOKEN', f.token);
    const fromEnv = await cluster(f, { token: undefined }).preflight();
    expect(fromEnv.checks.find((x) => x.id === 'credentials')!.message).toMatch(/^token from the DIGITALOCEAN_TOKEN accepted/);
    const fromOption = await cluster(f).preflight();
    expect(fromOption.checks.find((x) => x.id === 'credentials')!.message).toMatch(/^token from the token option accepted/);
    expect(JSON.stringify([fromEnv.toJSON(), fromOption.toJSON()])).not.toContain(f.token);
  });

  it('a locked account fails the credentials check with what to do', async () => {
    const f = await fake({ accountStatus: 'locked', accountStatusMessage: 'unpaid invoice' });
    const report = await cluster(f).preflight();
    const cred = failure(report, 'credentials');
    expect(cred.message).toMatch(/account is locked \(unpaid invoice\)/);
    expect(cred.fix).toMatch(/control panel/);
  });

  it("an account in 'warning' status passes with a warning", async () => {
    const f = await fake({ accountStatus: 'warning', accountStatusMessage: 'card expires soon' });
    const report = await cluster(f).preflight();
    expect(report.status('credentials')).toBe('warn');
    expect(report.ok).toBe(true);
  });
});

describe('one failing account per check, each with its fix', () => {
  it('location: a region that does not exist, and one that takes no new Droplets', async () => {
    const f = await fake();
    let report = await cluster(f, { region: 'nyc2' }).preflight();
    let r = failure(report, 'location');
    expect(r.error).toBeInstanceOf(ValidationError);
    expect(r.error!.details.option).toBe('region');
    expect(r.message).toMatch(/region nyc2 does not exist/);
    expect(r.fix).toMatch(/pass one of: .*nyc3/);

    f.catalog.region('tor1')!.available = false;
    report = await cluster(f, { region: 'tor1' }).preflight();
    r = failure(report, 'location');
    expect(r.message).toMatch(/tor1 \(Toronto 1\) does not take new Droplets/);
    expect(r.fix).not.toMatch(/tor1/);
    onlyReads(f);
  });

  it('image: a slug that does not resolve', async () => {
    const f = await fake();
    const report = await cluster(f, { image: 'ubuntu-99-04-x64' }).preflight();
    const r = failure(report, 'image');
    expect(r.error!.details.option).toBe('image');
    expect(r.message).toMatch(/image "ubuntu-99-04-x64" does not exist/);
    expect(r.fix).toMatch(/public image slug .*ubuntu-24-04-x64/);
  });

  it('network: a worker size not offered in the region; a VPC that does not exist; an SSH key not on the account', async () => {
    const f = await fake();
    const c4 = f.catalog.size('c-4')!;
    c4.regions = c4.regions.filter((r) => r !== 'nyc3');
    let report = await cluster(f, { workerSize: 'c-4' }).preflight();
    let r = failure(report, 'network');
    expect(r.error!.details.option).toBe('workerSize');
    expect(r.message).toBe('size c-4 is not offered in nyc3');
    expect(r.fix).toMatch(/pass a size offered in nyc3, e\.g\. .*s-2vcpu-4gb/);

    report = await cluster(f, { vpc: '0d3db13e-a604-4944-9827-7ec2642d32ac' }).preflight();
    r = failure(report, 'network');
    expect(r.error!.details.option).toBe('vpc');
    expect(r.fix).toMatch(/leave vpc out/);

    report = await cluster(f, { sshKeys: ['aa:bb:cc'] }).preflight();
    r = failure(report, 'network');
    expect(r.error!.details.option).toBe('sshKeys');
    expect(r.fix).toMatch(/ssh-key import/);
    onlyReads(f);
  });

  it('quota: the Droplet limit leaves no room for the scheduler and every worker', async () => {
    const f = await fake({ dropletLimit: 3 });
    // Two Droplets already run on the account.
    const { createApiClient } = await import('dots-wrapper');
    await createApiClient(f.clientOptions()).droplet.createDroplets({ names: ['a', 'b'], region: 'nyc3', size: 's-1vcpu-1gb', image: 'debian-12-x64' } as never);
    const report = await cluster(f, { nWorkers: 2 }).preflight();
    const r = failure(report, 'quota');
    expect(r.message).toMatch(/Droplet limit is 3 and 2 Droplets exist: 1 left, this cluster needs 3/);
    expect(r.fix).toMatch(/delete 2 Droplet\(s\) .*nWorkers ≤ 0.*higher Droplet limit/);
    expect((await cluster(f, { nWorkers: 0 }).preflight()).status('quota')).toBe('pass');
    for (const d of f.droplets() as { id: number }[]) await createApiClient(f.clientOptions()).droplet.deleteDroplet({ droplet_id: d.id });
  });

  it('permissions: a custom-scoped token without firewall:read and tag:read fails, naming the scopes and the fix', async () => {
    const f = await fake({ scopes: REQUIRED_SCOPES.filter((s) => s !== 'firewall:read' && s !== 'tag:read') });
    const report = await cluster(f).preflight();
    const r = failure(report, 'permissions');
    expect(r.message).toBe('the token lacks these scopes: firewall:read, tag:read');
    expect(r.fix).toMatch(/custom scopes including .*firewall:read.*tag:read.*create a new one/);
    expect(report.failures.map((x) => x.id)).toEqual(['permissions']);
  });

  it('permissions: a read-only token passes the reads and is only warned about (no write is ever made to find out)', async () => {
    const f = await fake({ scopes: REQUIRED_SCOPES.filter((s) => s.endsWith(':read')) });
    const report = await cluster(f).preflight();
    expect(report.ok, report.format()).toBe(true);
    expect(report.status('permissions')).toBe('warn');
    onlyReads(f);
  });

  it('a check whose data a missing scope hides is a warning; the missing scope fails permissions', async () => {
    const f = await fake({ scopes: REQUIRED_SCOPES.filter((s) => s !== 'image:read') });
    const report = await cluster(f).preflight();
    expect(report.status('image')).toBe('warn');
    expect(failure(report, 'permissions').message).toMatch(/image:read/);
  });
});

describe('item 5: a VPC NAT gateway for private mode', () => {
  it('item 5: private mode with the docker runtime and no VPC NAT gateway fails fast, before anything is created, with the fix', async () => {
    const f = await fake();
    const c = cluster(f, { privateNetworking: true });
    const report = await c.preflight();
    const r = failure(report, 'nat');
    expect(r.error).toBeInstanceOf(PreflightError);
    expect(r.message).toMatch(/VPC default-nyc3 has no VPC NAT gateway: Private Droplets could not install Docker or pull/);
    expect(r.fix).toMatch(/add a VPC NAT gateway to default-nyc3 as its default route/);
    expect(r.fix).toMatch(/privateNetworking: false.*runtime: 'native'/);

    // Fast means before anything is created: onlyReads below proves no Droplet was ever asked for.
    const err = await c.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PreflightError);
    expect((err as Error).message).toMatch(/no VPC NAT gateway[\s\S]*fix: add a VPC NAT gateway/);
    onlyReads(f);
    expect(f.leaked()).toEqual({});
  });

  it('item 5: the native runtime passes without a NAT gateway (it installs nothing at boot)', async () => {
    const f = await fake();
    const report = await cluster(f, { privateNetworking: true, runtime: 'native' }).preflight();
    expect(report.status('nat')).toBe('pass');
    expect(report.checks.find((x) => x.id === 'nat')!.message).toMatch(/native runtime/);
    expect(f.server.calls('vpcnatgateways_list')).toEqual([]);
  });

  it("a NAT gateway of another VPC, one still provisioning, or one that is not the default route is not enough", async () => {
    const f = await fake();
    const vpc = f.defaultVpc('nyc3');
    f.addVpcNatGateway({ vpcUuid: f.defaultVpc('ams3').id, name: 'elsewhere' });
    expect(failure(await cluster(f, { privateNetworking: true }).preflight(), 'nat').message).toMatch(/has no VPC NAT gateway/);
    const gw = f.addVpcNatGateway({ vpcUuid: vpc.id, name: 'slow', state: 'PROVISIONING' });
    let r = failure(await cluster(f, { privateNetworking: true }).preflight(), 'nat');
    expect(r.message).toMatch(/not usable: slow \(PROVISIONING\)/);
    gw.state = 'ACTIVE';
    gw.vpcs[0]!.default_gateway = false;
    r = failure(await cluster(f, { privateNetworking: true }).preflight(), 'nat');
    expect(r.message).toMatch(/slow \(ACTIVE, not the default route\)/);
    expect(r.fix).toMatch(/default route \(default_gateway: true\)/);
    gw.vpcs[0]!.default_gateway = true;
    expect((await cluster(f, { privateNetworking: true }).preflight()).status('nat')).toBe('pass');
  });

  it('a region without a default VPC yet has no NAT gateway either', async () => {
    const f = await fake();
    const r = failure(await cluster(f, { privateNetworking: true, region: 'sgp1' }).preflight(), 'nat');
    expect(r.message).toMatch(/sgp1 has no default VPC yet/);
    expect(r.fix).toMatch(/create a VPC in sgp1 with a VPC NAT gateway/);
  });
});

describe('start() on a failing account', () => {
  it('throws the typed error of the failed check before any mutating call; several failures are one PreflightError listing each fix', async () => {
    const f = await fake({ dropletLimit: 1 });
    const one = cluster(f, { nWorkers: 1 });
    const err = await one.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PreflightError);
    expect((err as PreflightError).message).toMatch(/needs 2 \(scheduler \+ 1 workers\)[\s\S]*fix: delete 1 Droplet/);
    expect(one.state).toBe('failed');

    const several = cluster(f, { nWorkers: 1, image: 'ubuntu-99-04-x64', privateNetworking: true });
    const err2 = (await several.start().catch((e: unknown) => e)) as DaskCloudError;
    expect(err2).toBeInstanceOf(PreflightError);
    expect((err2.details.checks as { id: string }[]).map((x) => x.id)).toEqual(['image', 'nat', 'quota']);
    expect(err2.message).toMatch(/3 preflight checks failed; nothing was created/);
    onlyReads(f);
    expect(f.leaked()).toEqual({});
  });
});
