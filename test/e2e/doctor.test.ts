/**
 * `dask-cloud doctor`, run as a user runs it (the CLI in a child process, credentials from the
 * environment each cloud's own tools use), against the EC2 and DigitalOcean fakes: a passing
 * account, then one failing account per check, each exiting 1 with the fix printed under the
 * failed check; every run makes no mutating call (the fake's request log proves it).
 *
 * GCP's checks are tested through `GCPCluster.preflight()` (test/providers/gcp/preflight.test.ts)
 * and its no-credentials run through the CLI's own code path in a loopback-only namespace
 * (test/providers/gcp/credentials.test.ts): a child process cannot hand the CLI an auth client,
 * and a real Google credential would make google-auth-library dial Google.
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { FakeEc2 } from '../fakes/ec2';
import type { FakeDigitalOcean } from '../fakes/digitalocean';
import { imageIdFor } from '../fakes/ec2';
import { startFake as startEc2 } from '../providers/ec2/helpers';
import { startFake as startDo } from '../providers/digitalocean/helpers';
import { REQUIRED_SCOPES } from '../../providers/digitalocean';

const root = path.resolve(__dirname, '../..');
const tsx = path.join(root, 'node_modules/tsx/dist/cli.mjs');
const cli = path.join(root, 'src/cli.ts');
/** Loopback slots no other test file uses. */
const EC2_SLOT = 7;
const DO_SLOT = 7;

/** The environment of a user with no cloud configuration at all (no ~/.aws, no tokens, no config file). */
const CLEAN: NodeJS.ProcessEnv = {
  PATH: process.env.PATH,
  HOME: '/nonexistent-home',
  // The AWS SDK's chain would otherwise end at the instance metadata service, off this machine.
  AWS_EC2_METADATA_DISABLED: 'true',
  AWS_CONFIG_FILE: '/nonexistent/aws-config',
  AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/aws-credentials',
  DASK_CLOUD_CONFIG: '',
  XDG_CONFIG_HOME: '/nonexistent-config',
};

function doctor(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [tsx, cli, 'doctor', ...args], { env: { ...CLEAN, ...env }, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** The checklist line of one check, and the fix line under it. */
function line(stdout: string, title: RegExp): string {
  const lines = stdout.split('\n');
  const i = lines.findIndex((l) => title.test(l));
  if (i < 0) throw new Error(`no line matching ${title} in:\n${stdout}`);
  return [lines[i], lines[i + 1]?.startsWith('       fix:') ? lines[i + 1] : ''].join('\n');
}

const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(stops.splice(0).map((s) => s()));
});

describe('dask-cloud doctor --provider ec2', () => {
  async function fake(): Promise<FakeEc2> {
    const f = await startEc2(EC2_SLOT, { lifecycleMs: { pendingMs: 100, shuttingDownMs: 100 } });
    stops.push(() => f.stop());
    return f;
  }
  function env(f: FakeEc2, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
    const c = f.clientConfig().credentials;
    return { AWS_ACCESS_KEY_ID: c.accessKeyId, AWS_SECRET_ACCESS_KEY: c.secretAccessKey, ...extra };
  }
  const flags = (f: FakeEc2, ...more: string[]) => ['--provider', 'ec2', '--region', f.region, '--endpoint', f.clientConfig().endpoint, ...more];

  it('a passing account: a checklist, exit 0, credentials named by source and never by value, no mutating call', async () => {
    const f = await fake();
    const r = await doctor(flags(f, '--workers', '4'), env(f));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/dask-cloud doctor: ec2, 1 scheduler \+ 4 workers \(read-only checks: nothing is created\)/);
    for (const title of ['user-data renders and fits', 'credentials', 'project / region / zone', 'image', 'network and instance types', 'NAT for private mode', 'permissions']) {
      expect(line(r.stdout, new RegExp(`^\\[(ok  |skip)\\] ${title.replace(/[()/]/g, '.')}:`))).toBeTruthy();
    }
    expect(r.stdout).toMatch(/^\[ok {2}\] credentials: .*environment/m);
    expect(r.stdout).toMatch(/all checks passed/);
    expect(r.stdout + r.stderr).not.toContain(f.clientConfig().credentials.secretAccessKey);
    expect(f.mutatingCalls()).toEqual([]);
  }, 90_000);

  const failing: Array<{ check: RegExp; args?: string[]; env?: NodeJS.ProcessEnv; setup?: (f: FakeEc2) => void; noCreds?: boolean; fix: RegExp }> = [
    { check: /credentials/, noCreds: true, fix: /aws configure|AWS_PROFILE/ },
    { check: /credentials/, setup: (f) => f.refuseCredentials(), fix: /aws sts get-caller-identity/ },
    { check: /project \/ region \/ zone/, args: ['--region', 'af-south-1'], fix: /aws account enable-region --region-name af-south-1/ },
    { check: /image/, env: { DASK_CLOUD_EC2_AMI: imageIdFor('gone') }, fix: /pass ami of an image that exists/ },
    { check: /network and instance types/, setup: (f) => ['a', 'b', 'c'].forEach((z) => f.withholdInstanceTypes(`${f.region}${z}`, ['m6i.large'])), fix: /./ },
    { check: /NAT for private mode/, args: ['--private'], fix: /create-nat-gateway/ },
    { check: /quota headroom/, args: ['--workers', '1100'], fix: /fewer nWorkers/ },
    { check: /permissions/, setup: (f) => f.deny('RunInstances', 'CreateSecurityGroup'), fix: /ec2:CreateSecurityGroup, ec2:RunInstances/ },
  ];
  for (const t of failing) {
    it(`a failing account: ${t.check.source.replace(/\\/g, '')}${t.noCreds ? ' (none found)' : t.setup ? ' (the account set up to fail it)' : ''} fails with its fix, exit 1, no mutating call`, async () => {
      const f = await fake();
      t.setup?.(f);
      const args = flags(f).filter((a, i, all) => !(t.args?.includes('--region') && (a === '--region' || all[i - 1] === '--region')));
      const r = await doctor([...args, ...(t.args ?? [])], { ...(t.noCreds ? {} : env(f)), ...t.env });
      expect(r.code, r.stdout + r.stderr).toBe(1);
      const entry = line(r.stdout, new RegExp(`^\\[FAIL\\] ${t.check.source}`));
      expect(entry).toMatch(/\n {7}fix: /);
      expect(entry).toMatch(t.fix);
      expect(r.stdout).toMatch(/check\(s\) failed: the fix is under each/);
      expect(f.mutatingCalls()).toEqual([]);
    }, 90_000);
  }
});

describe('dask-cloud doctor --provider digitalocean', () => {
  async function fake(options: Parameters<typeof startDo>[1] = {}): Promise<FakeDigitalOcean> {
    const f = await startDo(DO_SLOT, options);
    stops.push(() => f.stop());
    return f;
  }
  const flags = (f: FakeDigitalOcean, ...more: string[]) => ['--provider', 'digitalocean', '--endpoint', f.endpoint, ...more];
  const onlyReads = (f: FakeDigitalOcean) => expect(f.server.received.filter((c) => c.method !== 'GET')).toEqual([]);

  it('a passing account: exit 0, the token named by where it came from and never printed, only GET requests', async () => {
    const f = await fake();
    const r = await doctor(flags(f, '--workers', '2'), { DIGITALOCEAN_TOKEN: f.token });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^\[ok {2}\] credentials: token from the DIGITALOCEAN_TOKEN accepted/m);
    expect(r.stdout).toMatch(/^\[warn\] permissions: /m); // write scopes: only a write could prove them
    expect(r.stdout).toMatch(/all checks passed/);
    expect(r.stdout + r.stderr).not.toContain(f.token);
    onlyReads(f);
  }, 90_000);

  const failing: Array<{ check: RegExp; args?: string[]; env?: NodeJS.ProcessEnv; options?: Parameters<typeof startDo>[1]; noToken?: boolean; fix: RegExp }> = [
    { check: /credentials/, noToken: true, fix: /DIGITALOCEAN_TOKEN/ },
    { check: /credentials/, options: { accountStatus: 'locked', accountStatusMessage: 'unpaid invoice' }, fix: /./ },
    { check: /project \/ region \/ zone/, args: ['--region', 'nyc2'], fix: /pass one of: .*nyc3/ },
    { check: /image/, env: { DASK_CLOUD_DIGITALOCEAN_IMAGE: 'ubuntu-99-04-x64' }, fix: /public image slug/ },
    { check: /network and instance types/, env: { DASK_CLOUD_DIGITALOCEAN_VPC: '0d3db13e-a604-4944-9827-7ec2642d32ac' }, fix: /leave vpc out/ },
    { check: /NAT for private mode/, args: ['--private'], fix: /NAT gateway/ },
    // 1 scheduler + 2 workers over a limit of 2 (the CLI has no default of its own: the count is given).
    { check: /quota headroom/, args: ['--workers', '2'], options: { dropletLimit: 2 }, fix: /higher Droplet limit/ },
    { check: /permissions/, options: { scopes: REQUIRED_SCOPES.filter((s) => s !== 'firewall:read') }, fix: /firewall:read/ },
  ];
  for (const t of failing) {
    it(`a failing account: ${t.check.source.replace(/\\/g, '')}${t.noToken ? ' (no token)' : ''} fails with its fix, exit 1, only GET requests`, async () => {
      const f = await fake(t.options);
      const r = await doctor([...flags(f), ...(t.args ?? [])], { ...(t.noToken ? {} : { DIGITALOCEAN_TOKEN: f.token }), ...t.env });
      expect(r.code, r.stdout + r.stderr).toBe(1);
      const entry = line(r.stdout, new RegExp(`^\\[FAIL\\] ${t.check.source}`));
      expect(entry).toMatch(/\n {7}fix: /);
      expect(entry).toMatch(t.fix);
      onlyReads(f);
    }, 90_000);
  }
});

describe('dask-cloud doctor usage', () => {
  it('refuses local and a bad --workers with a message, exit 2', async () => {
    const local = await doctor(['--provider', 'local'], {});
    expect(local.code).toBe(2);
    expect(local.stderr).toMatch(/doctor checks a cloud account: --provider gcp, ec2 or digitalocean/);
    const workers = await doctor(['--provider', 'ec2', '--workers', ''], {});
    expect(workers.code).toBe(2);
    expect(workers.stderr).toMatch(/--workers must be a whole number >= 0/);
  });
});
