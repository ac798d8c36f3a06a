/**
 * Issue 8, "never print a secret": distinctive secrets are planted in every exported class's
 * options — EC2 access key id, secret key and session token, a GCP service-account JSON with its
 * private key, an OAuth access token, a DigitalOcean token, `env` values, and the TLS private keys
 * of `Security.temporary()` and `Security.fromPem()` — then every object a user can get hold of
 * is rendered every way a user would print it, and no rendering may contain any of them:
 * - the objects: each cluster class (before start, during start, after a start against the fakes
 *   or with local processes, after close), `Security`, `PreflightReport`, `SchedulerClient`, the
 *   DigitalOcean adapter and the API pipelines, every event emitted (start, scale, a member that
 *   died, close, failed starts) and every error thrown (bad input, refused credentials, faults
 *   injected into the fakes) with each error of its `.cause` chain;
 * - the renderings: `util.inspect` (depth Infinity), `JSON.stringify`, `String()`, an error's
 *   message and stack, and a walk of the raw own enumerable properties (what a debugger or a
 *   logging library that ignores `inspect.custom` would see).
 * A child process running a DigitalOcean cluster against the fake with `DEBUG=*` must not print
 * the token either (follow-redirects under dots-wrapper's axios used to log the Authorization header).
 *
 * Network safety: every fake hands out loopback addresses only (slots 6 of the EC2 and DigitalOcean
 * blocks, which no other test file uses; GCP's per-process blocks), and the GCP auth client holds
 * a fixed token with a far expiry, so nothing asks Google for one.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { inspect } from 'node:util';
import { OAuth2Client } from 'google-auth-library';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../providers/local';
import { DropletAdapter, DropletCluster } from '../../providers/digitalocean';
import { DoApi } from '../../providers/digitalocean/api';
import { EC2Cluster } from '../../providers/ec2';
import { Ec2Api } from '../../providers/ec2/api';
import { GCPCluster } from '../../providers/gcp';
import { GcpApi } from '../../providers/gcp/api';
import { VMCluster, type VMClusterOptions } from '../../src/cluster/vm';
import type { ClusterEvent } from '../../src/cluster/events';
import { Security } from '../../src/security';
import type { FailureSpec } from '../fakes/core';
import type { FakeDigitalOcean } from '../fakes/digitalocean';
import type { FakeEc2 } from '../fakes/ec2';
import type { FakeGcp } from '../fakes/gcp';
import { MemoryCloud } from '../helpers/memory-cloud';
import { have, realDask } from '../helpers/prereq';
import { spawnTsx } from '../helpers/spawn';
import { userSecurity } from '../helpers/tls';
import { eventually } from '../helpers/eventually';
import { LocalVmBooter, adapterOptions as doAdapterOptions, startFake as startDoFake } from '../providers/digitalocean/helpers';
import { fakeOptions as ec2FakeOptions, startFake as startEc2Fake } from '../providers/ec2/helpers';
import { fakeOptions as gcpFakeOptions, startFake as startGcpFake } from '../providers/gcp/helpers';

const SLOT = 6;
const tag = randomBytes(6).toString('hex');

/** The planted secrets by name; TLS keys are added as they are generated. */
const secrets = new Map<string, string>([
  ['aws access key id', `AKIAWALK${tag.toUpperCase()}`],
  ['aws secret access key', `walkAwsSecret${tag}Kq7`],
  ['aws session token', `walkAwsSession${tag}FwoGZX`],
  ['gcp private key id', `walkpkid${tag}`],
  ['oauth access token', `ya29.walkOAuth${tag}`],
  ['oauth refresh token', `1//walkRefresh${tag}`],
  ['digitalocean token', `dop_v1_walk${tag}`],
  ['env value', `walkEnvValue${tag}`],
  ['env value 2', `walkSecondEnv${tag}`],
]);
const S = (name: string): string => secrets.get(name)!;

/** Needles for a PEM key: the base64 lines of its body (any one printed gives it away). */
function plantPem(name: string, pem: string): void {
  const lines = pem.split('\n').filter((l) => l && !l.startsWith('-----'));
  lines.forEach((line, i) => {
    // Short final lines are padding-heavy and could match by chance; 40+ characters cannot.
    if (line.length >= 40) secrets.set(`${name} (line ${i + 1})`, line);
  });
}

const gcpKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
plantPem('gcp service-account private key', gcpKey);
const serviceAccount = {
  type: 'service_account',
  project_id: 'walk-project',
  private_key_id: S('gcp private key id'),
  private_key: gcpKey,
  client_email: 'walker@walk-project.iam.gserviceaccount.com',
  client_id: '1234567890',
  token_uri: 'https://oauth2.googleapis.com/token',
};

const env = { WALK_SECRET: S('env value'), WALK_OTHER: S('env value 2') };
const awsCredentials = { accessKeyId: S('aws access key id'), secretAccessKey: S('aws secret access key'), sessionToken: S('aws session token') };

/** An auth client holding the planted token, far from expiry: nothing asks Google for another. */
function authClient(): OAuth2Client {
  const c = new OAuth2Client({ clientId: 'walk-client', clientSecret: `walkClientSecret${tag}` });
  secrets.set('oauth client secret', `walkClientSecret${tag}`);
  c.setCredentials({ access_token: S('oauth access token'), refresh_token: S('oauth refresh token'), expiry_date: Date.now() + 365 * 24 * 3_600_000 });
  return c;
}

/** Every TLS key a Security holds, as needles. */
function plantSecurity(name: string, sec: Security): void {
  for (const role of ['scheduler', 'worker', 'client'] as const) {
    if (!sec.hasRole(role)) continue;
    const key = sec.tlsFiles(role, '/walk').find((f) => f.path.endsWith('.key'));
    if (key) plantPem(`${name} ${role} key`, key.content);
  }
}

// ---------------------------------------------------------------------------------------------
// The walk

/** Every rendering taken, checked against every secret at the end (keys generated later included). */
const rendered: { label: string; how: string; text: string }[] = [];
const walkedErrors = new Set<unknown>();

function attempt(fn: () => string): string {
  try {
    return fn();
  } catch (err) {
    // A rendering that throws (a cycle) is fine, but its message is printed too.
    return `(threw) ${err instanceof Error ? err.message : String(err)}`;
  }
}

/** The raw own enumerable properties, recursively: what ignores `inspect.custom` and `toJSON`. */
function rawProperties(value: unknown): string {
  const out: string[] = [];
  const seen = new Set<unknown>();
  const visit = (v: unknown, depth: number): void => {
    if (typeof v === 'string') out.push(v);
    if ((typeof v !== 'object' && typeof v !== 'function') || v === null || seen.has(v) || depth > 12) return;
    seen.add(v);
    for (const key of Reflect.ownKeys(v)) {
      const d = Object.getOwnPropertyDescriptor(v, key);
      if (!d?.enumerable || !('value' in d)) continue;
      visit(d.value, depth + 1);
    }
  };
  visit(value, 0);
  return out.join('\n');
}

function walk(label: string, value: unknown): void {
  const add = (how: string, text: string) => rendered.push({ label, how, text });
  add('util.inspect', attempt(() => inspect(value, { depth: Infinity, showHidden: false })));
  add('JSON.stringify', attempt(() => String(JSON.stringify(value))));
  add('String()', attempt(() => String(value)));
  add('own properties', rawProperties(value));
  if (value instanceof Error) {
    add('message', value.message);
    add('stack', value.stack ?? '');
  }
}

/** An error and each error of its cause chain. */
function walkError(label: string, err: unknown): void {
  expect(err, `${label}: something must have been thrown`).toBeDefined();
  walkedErrors.add(err);
  let e: unknown = err;
  for (let i = 0; e !== undefined && i < 10; i++) {
    walk(i === 0 ? label : `${label} → cause ${i}`, e);
    e = (e as { cause?: unknown }).cause;
  }
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

async function rejected(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err,
  );
}

const events: { kind: string; event: ClusterEvent }[] = [];
const onEvent = (kind: string) => (event: ClusterEvent) => {
  events.push({ kind, event });
};

function findings(): string[] {
  const found: string[] = [];
  for (const r of rendered) {
    for (const [name, needle] of secrets) if (r.text.includes(needle)) found.push(`${r.label} [${r.how}] shows the ${name}`);
  }
  return found;
}

// ---------------------------------------------------------------------------------------------

const enabled = have(realDask());
const cleanups: Array<() => Promise<unknown>> = [];

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

class WalkCluster extends VMCluster {
  constructor(options: VMClusterOptions) {
    super({ closeOnSignals: false, memberWatchIntervalMs: 0, ...options }, new MemoryCloud(10));
  }
}

const FORBIDDEN: FailureSpec = { status: 403, code: 'forbidden', message: 'You do not have access for the attempted action.' };
const UNAUTHORIZED: FailureSpec = { status: 400, code: 'UnauthorizedOperation', message: 'You are not authorized to perform this operation.' };

describe('no rendering of any public object shows a secret (issue 8)', () => {
  it('bad input: every provider refuses it with a typed error that quotes no secret', async () => {
    walkError('LocalCluster: env name', thrown(() => new LocalCluster({ env: { ...env, 'bad-name': S('env value') } })));
    walkError('LocalCluster: NUL in env', thrown(() => new LocalCluster({ env: { WALK: `${S('env value')}\0` } })));
    walkError('LocalCluster: bad nWorkers', thrown(() => new LocalCluster({ env, nWorkers: -1 })));
    walkError('WalkCluster: env value not a string', thrown(() => new WalkCluster({ env: { WALK: [S('env value')] as unknown as string } })));
    walkError('EC2Cluster: bad region', thrown(() => new EC2Cluster({ credentials: awsCredentials, region: 'not a region', env })));
    walkError(
      'GCPCluster: bad zone',
      thrown(() => new GCPCluster({ projectId: 'walk-project', zone: 'nowhere', authClient: authClient(), clientOptions: { credentials: serviceAccount }, env })),
    );
    walkError('DropletCluster: token with a space', thrown(() => new DropletCluster({ token: `${S('digitalocean token')} x` })));
    walkError('DropletCluster: bad region', thrown(() => new DropletCluster({ token: S('digitalocean token'), region: 'NOT A REGION', env })));

    // A key that does not belong to the certificate: the SecurityError names the options, not the key.
    const a = await userSecurity();
    const b = await userSecurity();
    plantPem('fromPem client key', a.client.keyPem);
    plantPem('other client key', b.client.keyPem);
    walkError('Security.fromPem: key mismatch', thrown(() => Security.fromPem({ tlsCa: a.ca.certPem, tlsClientCert: a.client.certPem, tlsClientKey: b.client.keyPem })));
    walkError('Security.fromPem: key as certificate', thrown(() => Security.fromPem({ tlsCa: a.ca.certPem, tlsClientCert: a.client.keyPem, tlsClientKey: a.client.keyPem })));
    expect(walkedErrors.size).toBe(10);
  });

  it('Security objects, the API pipelines and every cluster class before start', async () => {
    const temp = await Security.temporary();
    plantSecurity('Security.temporary()', temp);
    const mine = await userSecurity();
    plantSecurity('Security.fromPem()', mine.security);
    walk('Security.temporary()', temp);
    walk('Security.fromPem()', mine.security);

    walk('DoApi', new DoApi({ token: S('digitalocean token') }));
    walk('Ec2Api', new Ec2Api({ region: 'eu-west-1', credentials: awsCredentials, maxAttempts: 1, concurrency: 1, requestTimeoutMs: 1000, deadlineMs: 1000, baseDelayMs: 1, maxDelayMs: 1 }));
    walk(
      'GcpApi',
      new GcpApi({
        clientOptions: { credentials: serviceAccount, authClient: authClient() } as never,
        maxConcurrentRequests: 1,
        requestTimeoutMs: 1000,
        operationTimeoutMs: 1000,
        log: Object.assign(() => undefined, { enabled: false }) as never,
      }),
    );
    walk(
      'DropletAdapter',
      new DropletAdapter(doAdapterOptions(new DoApi({ token: S('digitalocean token') }), { activeTimeoutMs: 1000, pollIntervalMs: 100 })),
    );

    const clusters = [
      new LocalCluster({ env, security: mine.security, closeOnSignals: false }),
      new LocalCluster({ env, security: temp, closeOnSignals: false }),
      new WalkCluster({ env, security: temp }),
      new EC2Cluster({ region: 'eu-west-1', credentials: awsCredentials, env, closeOnSignals: false }),
      new GCPCluster({ projectId: 'walk-project', authClient: authClient(), clientOptions: { credentials: serviceAccount }, env, closeOnSignals: false }),
      new DropletCluster({ token: S('digitalocean token'), env, closeOnSignals: false }),
    ];
    for (const c of clusters) {
      walk(`${c.constructor.name} (new)`, c);
      expect(inspect(c)).toMatch(new RegExp(`^${c.constructor.name} \\{`));
      expect(JSON.parse(JSON.stringify(c))).toMatchObject({ id: c.id, state: 'new', workers: 0, members: [] });
      // The options are no property of the object at all, enumerable or not.
      expect(Object.getOwnPropertyNames(c)).not.toContain('options');
      await c.close();
      walk(`${c.constructor.name} (closed before start)`, c);
    }
  });

  it('EC2 and GCP: preflight reports, clusters part way through start, refused credentials and injected faults', async () => {
    const ec2 = await startEc2Fake(SLOT);
    cleanups.push(() => ec2.stop());
    const gcp: FakeGcp = await startGcpFake();
    cleanups.push(() => gcp.stop());
    const ec2Options = () => ({ ...ec2FakeOptions(ec2), credentials: awsCredentials, env, nWorkers: 2, schedulerTimeoutMs: 1_000 });
    const gcpOptions = () => ({ ...gcpFakeOptions(gcp), authClient: authClient(), clientOptions: { credentials: serviceAccount }, env, nWorkers: 2, schedulerTimeoutMs: 1_000 });

    walk('EC2 PreflightReport', await new EC2Cluster(ec2Options()).preflight());
    walk('GCP PreflightReport', await new GCPCluster(gcpOptions()).preflight());

    // A start seen from inside (each event, the cluster at each event), aborted once the workers exist.
    for (const [kind, make] of [
      ['ec2', (o: { signal: AbortSignal; onEvent: (e: ClusterEvent) => void }) => new EC2Cluster({ ...ec2Options(), ...o })],
      ['gcp', (o: { signal: AbortSignal; onEvent: (e: ClusterEvent) => void }) => new GCPCluster({ ...gcpOptions(), ...o })],
    ] as const) {
      const abort = new AbortController();
      let cluster: EC2Cluster | GCPCluster | undefined;
      const seen = onEvent(kind);
      cluster = make({
        signal: abort.signal,
        onEvent: (e) => {
          seen(e);
          if (cluster) walk(`${kind} cluster at ${e.type}`, cluster);
          if (e.type === 'member-launched' && e.role === 'worker') abort.abort(new Error('seen enough'));
        },
      });
      walkError(`${kind}: aborted start`, await rejected(cluster.start()));
      walk(`${kind} cluster (failed)`, cluster);
    }

    // Refused credentials: the SDK's error is the cause, and preflight's report holds it.
    ec2.refuseCredentials();
    const refused = new EC2Cluster(ec2Options());
    walk('EC2 PreflightReport (credentials refused)', await refused.preflight());
    walkError('ec2: refused credentials', await rejected(new EC2Cluster({ ...ec2Options(), onEvent: onEvent('ec2') }).start()));
    ec2.refuseCredentials(false);

    // Faults on creates: a ClusterStartError whose cause is a CloudApiError whose cause is the SDK's error.
    ec2.faults.fail('RunInstances', UNAUTHORIZED, { nth: 4 }); // after the three DryRuns: the scheduler's launch
    walkError('ec2: RunInstances refused', await rejected(new EC2Cluster({ ...ec2Options(), onEvent: onEvent('ec2') }).start()));
    gcp.faults.fail('compute.instances.bulkInsert', { status: 403, code: 'QUOTA_EXCEEDED', message: "Quota 'CPUS' exceeded." }, { times: 1 });
    walkError('gcp: bulkInsert refused', await rejected(new GCPCluster({ ...gcpOptions(), onEvent: onEvent('gcp') }).start()));
    gcp.faults.fail('compute.firewalls.insert', { status: 401, code: 'UNAUTHENTICATED', message: 'Request had invalid authentication credentials.' }, { times: 1 });
    walkError('gcp: firewall insert unauthenticated', await rejected(new GCPCluster({ ...gcpOptions(), onEvent: onEvent('gcp') }).start()));
    expect(ec2.leaked()).toEqual({});
    expect(gcp.leaked()).toEqual({});
  });

  it.runIf(enabled)('LocalCluster: start, a client, scale up and down, a worker that dies, close, and a failed start', async () => {
    const cluster = new LocalCluster({ env, nWorkers: 1, closeOnSignals: false, onEvent: onEvent('local') });
    cleanups.push(() => cluster.close());
    await cluster.start();
    plantSecurity('LocalCluster generated', cluster.security as Security);
    walk('LocalCluster (running)', cluster);
    walk('LocalCluster.security', cluster.security);
    expect(cluster.toJSON()).toMatchObject({ kind: 'local', state: 'running', schedulerAddress: cluster.schedulerAddress, workers: 1 });
    const client = await cluster.connect();
    walk('SchedulerClient', client);
    walk('LocalCluster.workers()', await cluster.workers());
    await client.close();
    walk('SchedulerClient (closed)', client);
    await cluster.scale(2);
    await cluster.waitForWorkers(2);
    walk('LocalCluster (2 workers)', cluster);
    await cluster.scale(1);
    // A worker killed from outside: the cluster reports it (member-failed) and stops counting it.
    const worker = cluster.members.find((m) => m.role === 'worker')!;
    process.kill(-Number(worker.id.replace('pid-', '')), 'SIGKILL');
    await eventually(() => events.some((e) => e.kind === 'local' && e.event.type === 'member-failed'), 'member-failed for the killed worker', 30_000);
    walk('LocalCluster (lost a worker)', cluster);
    await cluster.close();
    walk('LocalCluster (closed)', cluster);

    const failing = new LocalCluster({ env, python: '/nonexistent/walk/python3', closeOnSignals: false, onEvent: onEvent('local') });
    walkError('local: no python', await rejected(failing.start()));
    walk('LocalCluster (failed)', failing);
    walkError('local: scale after failure', await rejected(failing.scale(2)));
  });

  it.runIf(enabled)('DropletCluster on the fake: start, scale, close; a wrong token; a refused create', async () => {
    const booter = new LocalVmBooter();
    cleanups.push(() => booter.stopAll());
    const fake: FakeDigitalOcean = await startDoFake(SLOT, { booter, token: S('digitalocean token') });
    cleanups.push(() => fake.stop());
    const base = {
      token: S('digitalocean token'),
      endpoint: fake.endpoint,
      env,
      pollIntervalMs: 50,
      activeTimeoutMs: 15_000,
      schedulerTimeoutMs: 30_000,
      workersTimeoutMs: 30_000,
      closeOnSignals: false,
      memberWatchIntervalMs: 0,
      consoleOutput: (d: { id: string }) => fake.consoleOutput(d.id),
    };
    const cluster = new DropletCluster({ ...base, nWorkers: 1, exposeDashboard: true, temporarySecurity: { validityDays: 30 }, onEvent: onEvent('digitalocean') });
    cleanups.push(() => cluster.close());
    walk('DropletCluster PreflightReport', await cluster.preflight());
    await cluster.start();
    plantSecurity('DropletCluster generated', cluster.security as Security);
    walk('DropletCluster (running)', cluster);
    const client = await cluster.connect();
    walk('SchedulerClient (DigitalOcean)', client);
    await client.close();
    await cluster.scale(2);
    await cluster.waitForWorkers(2);
    await cluster.scale(1);
    walk('DropletCluster (scaled)', cluster);
    await cluster.close();
    walk('DropletCluster (closed)', cluster);

    walkError('digitalocean: wrong token', await rejected(new DropletCluster({ ...base, token: `dop_v1_wrong${tag}`, onEvent: onEvent('digitalocean') }).start()));
    fake.faults.fail('droplets_create', FORBIDDEN, { nth: 2 });
    const refused = new DropletCluster({ ...base, nWorkers: 1, onEvent: onEvent('digitalocean') });
    walkError('digitalocean: worker create refused', await rejected(refused.start()));
    walk('DropletCluster (failed)', refused);
    await fake.settle();
    expect(fake.leaked()).toEqual({});
  });

  it.runIf(enabled)('a child process with DEBUG=* running a DigitalOcean cluster against the fake prints no token and no env value', async () => {
    const fake = await startDoFake(SLOT, { token: S('digitalocean token') });
    cleanups.push(() => fake.stop());
    // The worker create fails, so start() makes reads, creates, a rollback and throws: every path logs.
    fake.faults.fail('droplets_create', FORBIDDEN, { nth: 2 });
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dc-secrets-walk-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const script = path.join(dir, 'debug-star.ts');
    const root = path.resolve(__dirname, '../..');
    await writeFile(
      script,
      `import { DropletCluster } from ${JSON.stringify(path.join(root, 'providers/digitalocean'))};
async function main(): Promise<void> {
  const cluster = new DropletCluster({
    endpoint: process.env.WALK_ENDPOINT, nWorkers: 1, pollIntervalMs: 50, activeTimeoutMs: 10_000,
    schedulerTimeoutMs: 10_000, closeOnSignals: false, memberWatchIntervalMs: 0,
    env: { WALK_SECRET: process.env.WALK_ENV_VALUE as string },
  });
  console.log(cluster);
  console.log((await cluster.preflight()).format());
  try {
    await cluster.start();
  } catch (err) {
    console.error(err);
    console.log(JSON.stringify(err));
  }
  await cluster.close();
  console.log('walk-done');
}
void main();
`,
    );
    const child = spawnTsx(script, [], { DEBUG: '*', DIGITALOCEAN_TOKEN: S('digitalocean token'), WALK_ENDPOINT: fake.endpoint, WALK_ENV_VALUE: S('env value') });
    cleanups.push(async () => child.child.kill('SIGKILL'));
    expect(await child.exitWithin(60_000)).toBe(0);
    expect(child.stdout()).toContain('walk-done');
    // DEBUG was on (our own namespaces logged), and the requests went through dots-wrapper.
    expect(child.stderr()).toMatch(/dask-cloud:/);
    expect(fake.server.operations()).toContain('account_get');
    expect(fake.server.operations()).toContain('droplets_create');
    rendered.push({ label: 'child with DEBUG=*', how: 'stderr', text: child.stderr() }, { label: 'child with DEBUG=*', how: 'stdout', text: child.stdout() });
    await fake.settle();
    expect(fake.leaked()).toEqual({});
  });

  it('every event emitted, then: no finding in any rendering', () => {
    for (const { kind, event } of events) walk(`${kind} event ${event.type}`, event);
    const types = new Set(events.map((e) => e.event.type));
    const expected = ['phase-start', 'phase-end', 'member-launched', 'rollback', 'closed'];
    if (enabled) expected.push('member-stopped', 'member-failed', 'scheduler-ready', 'workers-ready', 'workers-retired', 'warning');
    for (const t of expected) expect(types, `event type ${t} was emitted and walked`).toContain(t);
    const found = findings();
    // One line for the record: how much was checked.
    console.info(`secrets walk: ${rendered.length} (object x rendering) checks against ${secrets.size} secrets, ${found.length} findings`);
    expect(found).toEqual([]);
    expect(rendered.length).toBeGreaterThan(enabled ? 600 : 300);
  });
});
