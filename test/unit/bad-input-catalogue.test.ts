/**
 * The bad-input catalogue: every kind of wrong input a user can give — constructor options of
 * each cluster kind, scale/adapt/waitForWorkers arguments, Security, renderUserData, the config
 * file, DASK_CLOUD_* variables and CLI flags — must fail with a typed input error (a
 * DaskCloudError whose code is an input code, ValidationError with `option` for options) BEFORE
 * anything happens:
 * - VM clusters point at running API fakes (GCP, EC2, DigitalOcean); a case passes only when the
 *   fakes' request logs are unchanged;
 * - LocalCluster uses a "tripwire" interpreter that logs every launch; a case passes only when
 *   nothing was launched;
 * - when a constructor accepts the input, the case goes on to `start()` (stopped at the first
 *   request or launch): an error that only comes after a request or launch fails the case;
 * - the CLI is the real one, spawned: exit code 2, one line on stderr, no stack trace, no request,
 *   no launch.
 * Control tests prove each detector can fail (a valid start does reach the fake / the tripwire).
 * The number of cases is printed and exported as CATALOGUE_SIZE.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster, type LocalClusterOptions } from '../../providers/local';
import { GCPCluster, type GCPClusterOptions } from '../../providers/gcp';
import { EC2Cluster, type EC2ClusterOptions } from '../../providers/ec2';
import { DropletCluster, type DropletClusterOptions } from '../../providers/digitalocean';
import { Security } from '../../src/security';
import { renderUserData, type UserDataOptions } from '../../src/cloud-init';
import { DaskCloudError, type ErrorCode } from '../../src/errors';
import type { Cluster } from '../../src/cluster/cluster';
import { MAX_TIMER_MS } from '../../src/config/bounds';
import { FakeGcp } from '../fakes/gcp';
import { FakeEc2 } from '../fakes/ec2';
import { FakeDigitalOcean } from '../fakes/digitalocean';
import { startFake as startGcp, fakeOptions as gcpFakeOptions } from '../providers/gcp/helpers';
import { startFake as startEc2, fakeOptions as ec2FakeOptions } from '../providers/ec2/helpers';
import { startFake as startDo } from '../providers/digitalocean/helpers';

/** Codes that mean "your input is wrong" (not "the cloud failed" or "wrong state"). */
const INPUT_CODES = new Set<ErrorCode>([
  'E_INVALID_OPTION',
  'E_PEM_FILE',
  'E_PEM_INVALID',
  'E_KEY_MISMATCH',
  'E_CERT_NOT_ISSUED_BY_CA',
  'E_CERT_EXPIRED',
  'E_CERT_NOT_YET_VALID',
  'E_KEY_TOO_SMALL',
  'E_CERT_USAGE',
  'E_TLS_VERSION',
  'E_TLS_CIPHERS',
  'E_SECURITY_INCOMPLETE',
]);

const root = path.resolve(__dirname, '../..');
const cliPath = path.join(root, 'src/cli.ts');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-bad-input-'));
const tripwireLog = path.join(tmp, 'tripwire.log');
/** An "interpreter" that records that something launched it, then fails. */
const tripwire = path.join(tmp, 'tripwire-python');
fs.writeFileSync(tripwire, `#!/bin/sh\necho "launched $*" >> '${tripwireLog}'\nexit 1\n`, { mode: 0o755 });
fs.chmodSync(tripwire, 0o755);

let gcp: FakeGcp;
let ec2: FakeEc2;
let dig: FakeDigitalOcean;
const savedEnv = { ...process.env };

beforeAll(async () => {
  // No config file or DASK_CLOUD_* variable of this machine may change the cases.
  for (const k of Object.keys(process.env)) if (k.startsWith('DASK_CLOUD_')) delete process.env[k];
  process.env.XDG_CONFIG_HOME = path.join(tmp, 'xdg');
  [gcp, ec2, dig] = await Promise.all([startGcp(), startEc2(7), startDo(7)]);
});

afterAll(async () => {
  for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
  Object.assign(process.env, savedEnv);
  await Promise.all([gcp?.stop(), ec2?.stop(), dig?.stop()]);
  fs.rmSync(tmp, { recursive: true, force: true });
  // eslint-disable-next-line no-console
  console.log(`bad-input catalogue: ${CATALOGUE_SIZE} cases, each a typed input error before any API call or process launch`);
});

function requests(): number {
  return gcp.server.received.length + ec2.server.received.length + dig.server.received.length;
}
function launches(): number {
  return fs.existsSync(tripwireLog) ? fs.readFileSync(tripwireLog, 'utf8').split('\n').filter(Boolean).length : 0;
}

// Base options: valid, pointing at the fakes and the tripwire.
const local = (o: object = {}): LocalClusterOptions => ({ python: tripwire, closeOnSignals: false, ...o }) as LocalClusterOptions;
const gcpOpts = (o: object = {}): GCPClusterOptions => ({ ...gcpFakeOptions(gcp), ...o }) as GCPClusterOptions;
const ec2Opts = (o: object = {}): EC2ClusterOptions => ({ ...ec2FakeOptions(ec2), ...o }) as EC2ClusterOptions;
const doOpts = (o: object = {}): DropletClusterOptions =>
  ({ token: dig.token, endpoint: dig.endpoint, closeOnSignals: false, memberWatchIntervalMs: 0, ...o }) as DropletClusterOptions;

type Kind = 'local' | 'gcp' | 'ec2' | 'digitalocean';
const KINDS: Kind[] = ['local', 'gcp', 'ec2', 'digitalocean'];
const VM_KINDS: Kind[] = ['gcp', 'ec2', 'digitalocean'];

/**
 * A cluster of `kind` from valid base options with `extra` on top. `extra` may be anything, to
 * test non-objects; a function receives the base options and returns what the constructor gets.
 */
function build(kind: Kind, extra: unknown): Cluster {
  const merge = (base: (o: object) => object) => {
    if (typeof extra === 'function') return (extra as (b: object) => unknown)(base({}));
    const plain = typeof extra === 'object' && extra !== null && !Array.isArray(extra) && Object.getPrototypeOf(extra) === Object.prototype;
    return plain ? base(extra) : extra;
  };
  switch (kind) {
    case 'local':
      return new LocalCluster(merge(local) as LocalClusterOptions);
    case 'gcp':
      return new GCPCluster(merge(gcpOpts) as GCPClusterOptions);
    case 'ec2':
      return new EC2Cluster(merge(ec2Opts) as EC2ClusterOptions);
    case 'digitalocean':
      return new DropletCluster(merge(doOpts) as DropletClusterOptions);
  }
}

interface Case {
  group: string;
  name: string;
  /** Throws/rejects with the expected error; may return a cluster, whose start() is then tried. */
  attempt: () => unknown;
  /** The `details.option` the error must name, when it is an option error. */
  option?: string;
}

const cases: Case[] = [];
function add(group: string, name: string, attempt: () => unknown, option?: string): void {
  cases.push({ group, name, attempt, option });
}

function isCluster(v: unknown): v is Cluster {
  return typeof v === 'object' && v !== null && typeof (v as Cluster).start === 'function' && typeof (v as Cluster).close === 'function';
}

/**
 * What the attempt threw. A cluster that was built is started, and closed at the first request
 * or launch: the case has failed by then, whatever start() throws afterwards.
 */
async function outcome(attempt: () => unknown): Promise<unknown> {
  let value: unknown;
  try {
    value = attempt();
    if (value instanceof Promise) value = await value;
  } catch (err) {
    return err;
  }
  if (!isCluster(value)) return new Error(`accepted: returned ${String(value)}`);
  const before = requests() + launches();
  const started = value.start();
  const watch = setInterval(() => {
    if (requests() + launches() !== before) void value.close().catch(() => undefined);
  }, 5);
  try {
    await started;
    return new Error('accepted: start() succeeded');
  } catch (err) {
    return err;
  } finally {
    clearInterval(watch);
    await value.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// Constructor options shared by every cluster kind.
// ---------------------------------------------------------------------------------------------
/** The base options plus an `nWorkers` getter that throws. */
const throwingGetter = (base: object) =>
  Object.defineProperty({ ...base }, 'nWorkers', {
    enumerable: true,
    get(): number {
      throw new Error('getter exploded');
    },
  });
/** The base options behind a proxy whose key listing throws. */
const throwingProxy = (base: object) =>
  new Proxy(
    { ...base },
    {
      ownKeys() {
        throw new Error('proxy exploded');
      },
    },
  );
const fakeSecurity = { tlsFiles: () => [], env: () => ({}), hasRole: () => true, certPem: () => 'x' };

const COMMON: Array<[string, unknown, string]> = [
  // the red-team's
  ['nWorkers 30,000,000', { nWorkers: 30_000_000 }, 'nWorkers'],
  ['nWorkers -1', { nWorkers: -1 }, 'nWorkers'],
  ['nWorkers 1.5', { nWorkers: 1.5 }, 'nWorkers'],
  ['nWorkers NaN', { nWorkers: Number.NaN }, 'nWorkers'],
  ['nWorkers Infinity', { nWorkers: Number.POSITIVE_INFINITY }, 'nWorkers'],
  ['nWorkers -0', { nWorkers: -0 }, 'nWorkers'],
  ["nWorkers '3'", { nWorkers: '3' }, 'nWorkers'],
  ['nWorkers [2]', { nWorkers: [2] }, 'nWorkers'],
  ['nWorkers 2n', { nWorkers: 2n }, 'nWorkers'],
  ['nWorkers null', { nWorkers: null }, 'nWorkers'],
  ['schedulerTimeoutMs 3e9 (> 2^31-1)', { schedulerTimeoutMs: 3e9 }, 'schedulerTimeoutMs'],
  ['schedulerTimeoutMs 0', { schedulerTimeoutMs: 0 }, 'schedulerTimeoutMs'],
  ['schedulerTimeoutMs NaN', { schedulerTimeoutMs: Number.NaN }, 'schedulerTimeoutMs'],
  ["schedulerTimeoutMs '1000'", { schedulerTimeoutMs: '1000' }, 'schedulerTimeoutMs'],
  ['workersTimeoutMs 2^31', { workersTimeoutMs: MAX_TIMER_MS + 1 }, 'workersTimeoutMs'],
  ['workersTimeoutMs -5', { workersTimeoutMs: -5 }, 'workersTimeoutMs'],
  ['workerNthreads 0', { workerNthreads: 0 }, 'workerNthreads'],
  ['workerNthreads 2.5', { workerNthreads: 2.5 }, 'workerNthreads'],
  ['workerNthreads 1e6', { workerNthreads: 1e6 }, 'workerNthreads'],
  ['workerMemoryLimit -1', { workerMemoryLimit: -1 }, 'workerMemoryLimit'],
  ["workerMemoryLimit ''", { workerMemoryLimit: '' }, 'workerMemoryLimit'],
  ['workerMemoryLimit {}', { workerMemoryLimit: {} }, 'workerMemoryLimit'],
  ['idleTimeout 5', { idleTimeout: 5 }, 'idleTimeout'],
  ['signal {}', { signal: {} }, 'signal'],
  ['signal an AbortController', { signal: new AbortController() }, 'signal'],
  ["onEvent 'log'", { onEvent: 'log' }, 'onEvent'],
  ["closeOnSignals 'yes'", { closeOnSignals: 'yes' }, 'closeOnSignals'],
  ['security {} (duck-typed)', { security: fakeSecurity }, 'security'],
  ['security Object.create(Security.prototype)', { security: Object.create(Security.prototype) }, 'security'],
  ["security 'tls'", { security: 'tls' }, 'security'],
  ['name [abc] (array for a string)', { name: ['abc'] }, 'name'],
  ['name Bad_Name', { name: 'Bad_Name' }, 'name'],
  ['env { A: 1 }', { env: { A: 1 } }, 'env'],
  ["env ['x']", { env: ['x'] }, 'env'],
  ['env { 1BAD }', { env: { '1BAD': 'x' } }, 'env'],
  ['workerOptions string', { workerOptions: '--nthreads 2' }, 'workerOptions'],
  ['schedulerOptions [1]', { schedulerOptions: [1] }, 'schedulerOptions'],
  ['temporarySecurity.validityDays 1e9', { temporarySecurity: { validityDays: 1e9 } }, 'validityDays'],
  ['temporarySecurity.validityDays 0', { temporarySecurity: { validityDays: 0 } }, 'validityDays'],
  ["temporarySecurity.tlsCiphers 'eNULL:@SECLEVEL=0'", { temporarySecurity: { tlsCiphers: 'eNULL:@SECLEVEL=0' } }, 'tlsCiphers'],
  ["temporarySecurity.keyAlgorithm 'dsa'", { temporarySecurity: { keyAlgorithm: 'dsa' } }, 'keyAlgorithm'],
  ['temporarySecurity.backdateMinutes 1e12', { temporarySecurity: { backdateMinutes: 1e12 } }, 'backdateMinutes'],
  ['temporarySecurity unknown key', { temporarySecurity: { validity: 3 } }, 'validity'],
  ['temporarySecurity with security false', { security: false, temporarySecurity: { validityDays: 1 } }, 'temporarySecurity'],
  ['options: a getter that throws', throwingGetter, 'nWorkers'],
  ['options: a proxy that throws', throwingProxy, 'options'],
  ['options null', null, 'options'],
  ["options 'x'", 'x', 'options'],
  ['options []', [], 'options'],
];

for (const kind of KINDS) {
  for (const [name, extra, option] of COMMON) add(`${kind} constructor`, name, () => build(kind, extra), option);
}

// VM-cluster options (GCP, EC2, DigitalOcean).
const VM: Array<[string, unknown, string]> = [
  ['memberWatchIntervalMs 3e9 (the 490-lists-in-2-s bug)', { memberWatchIntervalMs: 3e9 }, 'memberWatchIntervalMs'],
  ['memberWatchIntervalMs -1', { memberWatchIntervalMs: -1 }, 'memberWatchIntervalMs'],
  ['memberWatchIntervalMs NaN', { memberWatchIntervalMs: Number.NaN }, 'memberWatchIntervalMs'],
  ['expiresAfterHours 1e9', { expiresAfterHours: 1e9 }, 'expiresAfterHours'],
  ['expiresAfterHours 0', { expiresAfterHours: 0 }, 'expiresAfterHours'],
  ["privateNetworking 'yes'", { privateNetworking: 'yes' }, 'privateNetworking'],
  ["ingressCidrs '0.0.0.0/0' (string for array)", { ingressCidrs: '0.0.0.0/0' }, 'ingressCidrs'],
  ['ingressCidrs [300.0.0.0/8]', { ingressCidrs: ['300.0.0.0/8'] }, 'ingressCidrs'],
  ['schedulerPort 70000', { schedulerPort: 70_000 }, 'schedulerPort'],
  ["runtime 'k8s'", { runtime: 'k8s' }, 'runtime'],
  ["bootstrap 'echo hi'", { bootstrap: 'echo hi' }, 'bootstrap'],
  ["exposeDashboard 'yes'", { exposeDashboard: 'yes' }, 'exposeDashboard'],
  ["dockerImage 'not an image'", { dockerImage: 'not an image' }, 'dockerImage'],
  ["pythonPath 'relative/python' (native)", { runtime: 'native', pythonPath: 'relative/python' }, 'pythonPath'],
];
for (const kind of VM_KINDS) {
  for (const [name, extra, option] of VM) add(`${kind} constructor`, name, () => build(kind, extra), option);
}

// Each kind's own options and worker cap.
const OWN: Array<[Kind, string, unknown, string]> = [
  ['local', 'nWorkers 1,001 (local cap 1,000)', { nWorkers: 1001 }, 'nWorkers'],
  ['local', 'schedulerPort 0', { schedulerPort: 0 }, 'schedulerPort'],
  ['local', "python ''", { python: '' }, 'python'],
  ['local', "host 'a b'", { host: 'a b' }, 'host'],
  ['local', "dashboardAddress 'x y'", { dashboardAddress: 'x y' }, 'dashboardAddress'],
  ['gcp', 'nWorkers 5,001 (one bulkInsert)', { nWorkers: 5001 }, 'nWorkers'],
  ['gcp', "zone 'nowhere'", { zone: 'nowhere' }, 'zone'],
  ['gcp', "projectId 'X'", { projectId: 'X' }, 'projectId'],
  ['gcp', 'requestTimeoutMs 3e9', { requestTimeoutMs: 3e9 }, 'requestTimeoutMs'],
  ['gcp', 'operationTimeoutMs 0', { operationTimeoutMs: 0 }, 'operationTimeoutMs'],
  ['gcp', 'maxConcurrentRequests 1e6', { maxConcurrentRequests: 1e6 }, 'maxConcurrentRequests'],
  ['gcp', 'diskSizeGb 1e9', { diskSizeGb: 1e9 }, 'diskSizeGb'],
  ['gcp', 'gpu.count 100', { gpu: { type: 'nvidia-tesla-t4', count: 100 } }, 'gpu.count'],
  ["gcp", "gpu 'nvidia'", { gpu: 'nvidia' }, 'gpu'],
  ['gcp', 'labels { A: b }', { labels: { A: 'b' } }, 'labels'],
  ['gcp', 'maxRunDuration 1e12', { maxRunDuration: 1e12 }, 'maxRunDuration'],
  ['gcp', "endpoint 'ftp://x'", { endpoint: 'ftp://x' }, 'endpoint'],
  ['gcp', 'machineType URL', { machineType: 'zones/us-central1-a/machineTypes/e2-standard-4' }, 'schedulerMachineType'],
  ['gcp', 'spot and preemptible', { spot: true, preemptible: true }, 'spot'],
  ['ec2', 'nWorkers 2,001 (RunInstances burst and refill)', { nWorkers: 2001 }, 'nWorkers'],
  ['ec2', "region 'Mars'", { region: 'Mars' }, 'region'],
  ['ec2', "ami 'bad'", { ami: 'bad' }, 'ami'],
  ['ec2', 'maxAttempts 1000', { maxAttempts: 1000 }, 'maxAttempts'],
  ['ec2', 'rootVolumeSizeGb 1e9', { rootVolumeSizeGb: 1e9 }, 'rootVolumeSizeGb'],
  ['ec2', "spot.maxPrice 'cheap'", { spot: { maxPrice: 'cheap' } }, 'spot'],
  ['ec2', 'tags aws:x', { tags: { 'aws:x': 'y' } }, 'tags'],
  ['ec2', "securityGroups ['nope']", { securityGroups: ['nope'] }, 'securityGroups'],
  ['ec2', "credentials 'secret' (string)", { credentials: 'secret' }, 'credentials'],
  ['ec2', 'client {} (not an EC2Client)', { client: {} }, 'client'],
  ['ec2', "endpoint 'not a url'", { endpoint: 'not a url' }, 'endpoint'],
  ['digitalocean', 'nWorkers 1,001', { nWorkers: 1001 }, 'nWorkers'],
  ['digitalocean', 'activeTimeoutMs 3e9', { activeTimeoutMs: 3e9 }, 'activeTimeoutMs'],
  ['digitalocean', 'pollIntervalMs 0', { pollIntervalMs: 0 }, 'pollIntervalMs'],
  ['digitalocean', 'requestTimeoutMs Infinity', { requestTimeoutMs: Number.POSITIVE_INFINITY }, 'requestTimeoutMs'],
  ['digitalocean', "region 'NYC 3'", { region: 'NYC 3' }, 'region'],
  ['digitalocean', 'image -1', { image: -1 }, 'image'],
  ['digitalocean', "vpc 'x'", { vpc: 'x' }, 'vpc'],
  ['digitalocean', "sshKeys ['zz']", { sshKeys: ['zz'] }, 'sshKeys'],
  ['digitalocean', 'tags reserved', { tags: ['dask-cloud-x'] }, 'tags'],
  ['digitalocean', 'token with a space', { token: 'has space' }, 'token'],
  ['digitalocean', 'client {}', { client: {} }, 'client'],
  ["digitalocean", "consoleOutput 'x'", { consoleOutput: 'x' }, 'consoleOutput'],
  ['digitalocean', 'ingressCidrs 1,001 ranges', { ingressCidrs: Array.from({ length: 1001 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`) }, 'ingressCidrs'],
];
for (const [kind, name, extra, option] of OWN) add(`${kind} constructor`, name, () => build(kind, extra), option);

// ---------------------------------------------------------------------------------------------
// scale / adapt / waitForWorkers / connect: on a cluster that was never started, so a missed check
// would surface as a state error, which is not an input error and fails the case.
// ---------------------------------------------------------------------------------------------
const CALLS: Array<[string, (c: Cluster) => unknown, string]> = [
  ['scale(-1)', (c) => c.scale(-1), 'n'],
  ['scale(1.5)', (c) => c.scale(1.5), 'n'],
  ['scale(30,000,000)', (c) => c.scale(30_000_000), 'n'],
  ["scale('2')", (c) => c.scale('2' as never), 'n'],
  ['scale()', (c) => c.scale(undefined as never), 'n'],
  ['adapt(undefined)', (c) => c.adapt(undefined as never), 'adapt() options'],
  ['adapt({}) (no maximum: never scales)', (c) => c.adapt({} as never), 'maximum'],
  ["adapt('x')", (c) => c.adapt('x' as never), 'adapt() options'],
  ['adapt maximum 30,000,000', (c) => c.adapt({ maximum: 30_000_000 }), 'maximum'],
  ['adapt maximum < minimum', (c) => c.adapt({ minimum: 3, maximum: 2 }), 'maximum'],
  ['adapt intervalMs 3e9 (hammered the scheduler)', (c) => c.adapt({ maximum: 2, intervalMs: 3e9 }), 'intervalMs'],
  ['adapt intervalMs 0', (c) => c.adapt({ maximum: 2, intervalMs: 0 }), 'intervalMs'],
  ['adapt waitCount 0', (c) => c.adapt({ maximum: 2, waitCount: 0 }), 'waitCount'],
  ['adapt waitCount 1.5', (c) => c.adapt({ maximum: 2, waitCount: 1.5 }), 'waitCount'],
  ['adapt unknown option', (c) => c.adapt({ maximum: 2, max: 3 } as never), 'max'],
  ['waitForWorkers(-1)', (c) => c.waitForWorkers(-1), 'n'],
  ['waitForWorkers timeoutMs 3e9', (c) => c.waitForWorkers(1, { timeoutMs: 3e9 }), 'timeoutMs'],
  ['waitForWorkers signal {}', (c) => c.waitForWorkers(1, { signal: {} as AbortSignal }), 'signal'],
  ['connect timeoutMs NaN', (c) => c.connect({ timeoutMs: Number.NaN }), 'timeoutMs'],
  ["preflight signal 'x'", (c) => c.preflight({ signal: 'x' as never }), 'signal'],
];
for (const kind of KINDS) {
  for (const [name, call, option] of CALLS) add(`${kind} ${name.split('(')[0]!.split(' ')[0]}`, name, () => call(build(kind, {})), option);
}

// ---------------------------------------------------------------------------------------------
// Security
// ---------------------------------------------------------------------------------------------
const BAD_CIPHERS = ['eNULL:@SECLEVEL=0', 'eNULL', 'NULL', 'aNULL', 'ADH', 'AECDH', 'kRSA', 'HIGH', 'ALL', 'DEFAULT:@SECLEVEL=0', 'DEFAULT@SECLEVEL=0', 'NULL-SHA256', 'TLS_AES_128_GCM_SHA256', 'NOT-A-CIPHER', ''];
for (const c of BAD_CIPHERS) add('Security.temporary', `tlsCiphers ${JSON.stringify(c)}`, () => Security.temporary({ tlsCiphers: c }), 'tlsCiphers');
const TEMPORARY: Array<[string, unknown, string]> = [
  ["tlsCiphers ['ECDHE+AESGCM'] (array)", { tlsCiphers: ['ECDHE+AESGCM'] }, 'tlsCiphers'],
  ['validityDays 1e9 (invalid dates)', { validityDays: 1e9 }, 'validityDays'],
  ['validityDays -1', { validityDays: -1 }, 'validityDays'],
  ['validityDays NaN', { validityDays: Number.NaN }, 'validityDays'],
  ["validityDays '3'", { validityDays: '3' }, 'validityDays'],
  ['backdateMinutes -1', { backdateMinutes: -1 }, 'backdateMinutes'],
  ["tlsMinVersion '1.1'", { tlsMinVersion: '1.1' }, 'tlsMinVersion'],
  ['tlsMinVersion above tlsMaxVersion', { tlsMinVersion: '1.3', tlsMaxVersion: '1.2' }, 'tlsMinVersion'],
  ["requireEncryption 'yes'", { requireEncryption: 'yes' }, 'requireEncryption'],
  ['clusterName 5', { clusterName: 5 }, 'clusterName'],
  ['unknown option', { validity: 3 }, 'validity'],
  ['null', null, 'Security.temporary options'],
  ['a getter that throws', { get validityDays() { throw new Error('boom'); } }, 'Security.temporary options'],
];
for (const [name, o, option] of TEMPORARY) add('Security.temporary', name, () => Security.temporary(o as never), option);

let pem: { ca: string; cert: string; key: string; otherKey: string };
const FROM_FILES: Array<[string, () => unknown, string]> = [
  ['no tlsCaFile', () => ({}), 'tlsCaFile'],
  ['tlsCaFile missing file', () => ({ tlsCaFile: path.join(tmp, 'nope.pem') }), 'tlsCaFile'],
  ['tlsCaFile a device (/dev/zero)', () => ({ tlsCaFile: '/dev/zero' }), 'tlsCaFile'],
  ['tlsCaFile 42', () => ({ tlsCaFile: 42 }), 'tlsCaFile'],
  ['tlsCaFile a directory', () => ({ tlsCaFile: tmp }), 'tlsCaFile'],
  ['tlsCaFile with NUL', () => ({ tlsCaFile: 'a\0b' }), 'tlsCaFile'],
  ['unknown option tlsCa', () => ({ tlsCa: 'x' }), 'tlsCa'],
  ['options null', () => null, 'Security.fromFiles options'],
];
for (const [name, o, option] of FROM_FILES) add('Security.fromFiles', name, () => Security.fromFiles(o() as never), option);
const FROM_PEM: Array<[string, () => unknown, string]> = [
  ["tlsCa 'garbage'", () => ({ tlsCa: 'garbage' }), 'tlsCa'],
  ['tlsCa 5', () => ({ tlsCa: 5 }), 'tlsCa'],
  ['no certificate/key pair', () => ({ tlsCa: pem.ca }), 'tlsClientCert'],
  ['cert without key', () => ({ tlsCa: pem.ca, tlsClientCert: pem.cert }), 'tlsClientKey'],
  ['key of another certificate', () => ({ tlsCa: pem.ca, tlsClientCert: pem.cert, tlsClientKey: pem.otherKey }), 'tlsClientKey'],
  ["tlsCiphers 'eNULL' on good material", () => ({ tlsCa: pem.ca, tlsClientCert: pem.cert, tlsClientKey: pem.key, tlsCiphers: 'eNULL' }), 'tlsCiphers'],
  ["tlsCiphers 'DEFAULT:@SECLEVEL=0' on good material", () => ({ tlsCa: pem.ca, tlsClientCert: pem.cert, tlsClientKey: pem.key, tlsCiphers: 'DEFAULT:@SECLEVEL=0' }), 'tlsCiphers'],
  ['a proxy that throws', () => throwingProxy({ tlsCa: 'x' }), 'Security.fromPem options'],
];
for (const [name, o, option] of FROM_PEM) add('Security.fromPem', name, () => Security.fromPem(o() as never), option);

// ---------------------------------------------------------------------------------------------
// renderUserData
// ---------------------------------------------------------------------------------------------
let renderSecurity: Security;
const RENDER: Array<[string, () => unknown, string | undefined]> = [
  ['no options', () => undefined, undefined],
  ["role 'client'", () => ({ role: 'client', security: false }), 'role'],
  ['security {}', () => ({ role: 'scheduler', security: {} }), 'security'],
  ["runtime 'k8s'", () => ({ role: 'scheduler', security: false, runtime: 'k8s' }), 'runtime'],
  ["image 'a b'", () => ({ role: 'scheduler', security: false, image: 'a b' }), 'image'],
  ['pythonPath relative (native)', () => ({ role: 'scheduler', security: false, runtime: 'native', pythonPath: 'python3' }), 'pythonPath'],
  ['nthreads 0', () => ({ role: 'worker', security: false, schedulerAddress: 'tcp://10.0.0.2:8786', nthreads: 0 }), 'nthreads'],
  ['schedulerPort 0', () => ({ role: 'scheduler', security: false, schedulerPort: 0 }), 'schedulerPort'],
  ['env { A: 1 }', () => ({ role: 'scheduler', security: false, env: { A: 1 } }), 'env'],
  ["bootstrap 'x'", () => ({ role: 'scheduler', security: false, bootstrap: 'x' }), 'bootstrap'],
  ['worker without schedulerAddress', () => ({ role: 'worker', security: false }), 'schedulerAddress'],
  ['tcp:// address with TLS on', () => ({ role: 'worker', security: renderSecurity, schedulerAddress: 'tcp://10.0.0.2:8786' }), 'schedulerAddress'],
  ['nthreads on the scheduler', () => ({ role: 'scheduler', security: false, nthreads: 2 }), 'nthreads'],
  ['memoryLimit NaN', () => ({ role: 'worker', security: false, schedulerAddress: 'tcp://10.0.0.2:8786', memoryLimit: Number.NaN }), 'memoryLimit'],
  ['memoryLimit -1', () => ({ role: 'worker', security: false, schedulerAddress: 'tcp://10.0.0.2:8786', memoryLimit: -1 }), 'memoryLimit'],
  ['dashboardAddress 5', () => ({ role: 'scheduler', security: false, dashboardAddress: 5 }), 'dashboardAddress'],
  ["limitBytes 'x'", () => ({ role: 'scheduler', security: false, limitBytes: 'x' }), 'limitBytes'],
  ["gzip 'sometimes'", () => ({ role: 'scheduler', security: false, gzip: 'sometimes' }), 'gzip'],
];
for (const [name, o, option] of RENDER) add('renderUserData', name, () => renderUserData(o() as UserDataOptions), option);

// ---------------------------------------------------------------------------------------------
// Config file and DASK_CLOUD_* variables: the same checks, before anything happens.
// ---------------------------------------------------------------------------------------------
/** Runs `fn` with these variables set (and nothing else of DASK_CLOUD_*), restoring them after. */
function withEnv<T>(vars: Record<string, string>, fn: () => T): T {
  const old: Record<string, string | undefined> = {};
  for (const k of Object.keys(vars)) old[k] = process.env[k];
  Object.assign(process.env, vars);
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(old)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}
let configN = 0;
function configFile(yaml: string): string {
  const file = path.join(tmp, `config-${configN++}.yaml`);
  fs.writeFileSync(file, yaml);
  return file;
}
const CONFIG: Array<[Kind, string, string, string]> = [
  ['local', 'cluster.nWorkers 30,000,000', 'cluster:\n  nWorkers: 30000000\n', 'nWorkers'],
  ['local', 'cluster.nWorkers -1', 'cluster:\n  nWorkers: -1\n', 'nWorkers'],
  ['local', "local.schedulerPort 'x'", 'local:\n  schedulerPort: x\n', 'schedulerPort'],
  ['digitalocean', 'memberWatchIntervalMs 3e9', 'cluster:\n  memberWatchIntervalMs: 3000000000\n', 'memberWatchIntervalMs'],
  ['gcp', 'gcp.zone nowhere', 'gcp:\n  zone: nowhere\n', 'zone'],
  ['ec2', 'ec2.maxAttempts 0', 'ec2:\n  maxAttempts: 0\n', 'maxAttempts'],
  ['local', 'cluster is a list', 'cluster:\n  - 1\n  - 2\n', 'DASK_CLOUD_CONFIG'],
  ['local', 'unknown section', 'bogus:\n  nWorkers: 1\n', 'DASK_CLOUD_CONFIG'],
  ['local', 'not YAML', 'cluster: [unclosed\n', 'DASK_CLOUD_CONFIG'],
  ['local', 'security in a file', 'cluster:\n  security: false\n', 'security'],
  ['local', "temporarySecurity.tlsCiphers 'eNULL'", 'cluster:\n  temporarySecurity:\n    tlsCiphers: eNULL\n', 'tlsCiphers'],
  ['local', 'onEvent from a file', 'cluster:\n  onEvent: log\n', 'onEvent'],
];
for (const [kind, name, yaml, option] of CONFIG) {
  // The file must win over the base options: drop the base's value for that option.
  add(`config file (${kind})`, name, () => withEnv({ DASK_CLOUD_CONFIG: configFile(yaml) }, () => build(kind, { [option]: undefined })), option);
}
add('config file (local)', 'DASK_CLOUD_CONFIG names a missing file', () => withEnv({ DASK_CLOUD_CONFIG: path.join(tmp, 'missing.yaml') }, () => build('local', {})), 'DASK_CLOUD_CONFIG');

const ENV: Array<[Kind, string, string, string]> = [
  ['local', 'DASK_CLOUD_N_WORKERS', '-1', 'nWorkers'],
  ['local', 'DASK_CLOUD_N_WORKERS', 'abc', 'nWorkers'],
  ['local', 'DASK_CLOUD_N_WORKERS', '', 'nWorkers'],
  ['local', 'DASK_CLOUD_N_WORKERS', '1e400', 'nWorkers'],
  ['local', 'DASK_CLOUD_N_WORKERS', '30000000', 'nWorkers'],
  ['local', 'DASK_CLOUD_SCHEDULER_TIMEOUT_MS', '3e9', 'schedulerTimeoutMs'],
  ['local', 'DASK_CLOUD_SIGNAL', 'x', 'signal'],
  ['local', 'DASK_CLOUD_NAME', '["abc"]', 'name'],
  ['local', 'DASK_CLOUD_ENV', '{"A":1}', 'env'],
  ['local', 'DASK_CLOUD_LOCAL_SCHEDULER_PORT', '99999', 'schedulerPort'],
  ['digitalocean', 'DASK_CLOUD_DIGITALOCEAN_POLL_INTERVAL_MS', '0', 'pollIntervalMs'],
  ['gcp', 'DASK_CLOUD_MEMBER_WATCH_INTERVAL_MS', '3e9', 'memberWatchIntervalMs'],
  ['gcp', 'DASK_CLOUD_GCP_ZONE', 'nowhere', 'zone'],
  ['ec2', 'DASK_CLOUD_EC2_ROOT_VOLUME_SIZE_GB', '0', 'rootVolumeSizeGb'],
];
for (const [kind, name, value, option] of ENV) {
  // The variable must win over the base options: drop the base's value for that option.
  add(`env (${kind})`, `${name}=${JSON.stringify(value)}`, () => withEnv({ [name]: value }, () => build(kind, { [option]: undefined })), option);
}

/** How many cases the catalogue holds (the CLI ones included). */
export let CATALOGUE_SIZE = 0;

// ---------------------------------------------------------------------------------------------
// The in-process cases.
// ---------------------------------------------------------------------------------------------
describe('bad input: typed error before any API call or process launch', () => {
  beforeAll(async () => {
    const a = await Security.temporary({ clusterName: 'cat' });
    const b = await Security.temporary({ clusterName: 'other' });
    const keyOf = (s: Security) => s.tlsFiles('client', '/k').find((f) => f.path.endsWith('.key'))!.content;
    pem = { ca: a.caCertPem, cert: a.certPem('client'), key: keyOf(a), otherKey: keyOf(b) };
    renderSecurity = a;
  });

  for (const c of cases) {
    it(`${c.group}: ${c.name}`, async () => {
      const before = { requests: requests(), launches: launches() };
      const err = await outcome(c.attempt);
      expect({ requests: requests(), launches: launches() }, 'an API request or a process launch happened').toEqual(before);
      expect(DaskCloudError.isInstance(err), `not a DaskCloudError: ${String(err)}`).toBe(true);
      const e = err as DaskCloudError;
      expect(INPUT_CODES.has(e.code), `${e.code}: ${e.message}`).toBe(true);
      if (c.option !== undefined) expect(e.details.option, e.message).toBe(c.option);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// The CLI, spawned for real.
// ---------------------------------------------------------------------------------------------
interface CliCase {
  name: string;
  args: () => string[];
  env?: () => Record<string, string>;
}
const CLI: CliCase[] = [
  { name: "local --workers ''", args: () => ['local', '--workers', ''] },
  { name: 'local --workers -1', args: () => ['local', '--workers', '-1'] },
  { name: 'local --workers 1.5', args: () => ['local', '--workers', '1.5'] },
  { name: 'local --workers abc', args: () => ['local', '--workers', 'abc'] },
  { name: 'local --workers 1e3', args: () => ['local', '--workers', '1e3'] },
  { name: "local --workers ' 1'", args: () => ['local', '--workers', ' 1'] },
  { name: 'local --workers 5000 (above the local cap)', args: () => ['local', '--workers', '5000'] },
  { name: 'start --provider digitalocean --workers -1', args: () => ['start', '--provider', 'digitalocean', '--endpoint', dig.endpoint, '--workers', '-1'] },
  { name: "start --provider digitalocean --workers ''", args: () => ['start', '--provider', 'digitalocean', '--endpoint', dig.endpoint, '--workers', ''] },
  { name: 'start --provider digitalocean --workers 1001', args: () => ['start', '--provider', 'digitalocean', '--endpoint', dig.endpoint, '--workers', '1001'] },
  { name: 'start --provider nope', args: () => ['start', '--provider', 'nope'] },
  { name: 'start --bogus-flag', args: () => ['start', '--bogus-flag'] },
  { name: 'start --provider gcp --zone nowhere', args: () => ['start', '--provider', 'gcp', '--project', gcp.project, '--zone', 'nowhere', '--endpoint', gcp.endpoint] },
  { name: 'start --provider ec2 --region Mars', args: () => ['start', '--provider', 'ec2', '--region', 'Mars', '--endpoint', ec2.endpoint] },
  { name: 'doctor --provider ec2 --workers 1.5', args: () => ['doctor', '--provider', 'ec2', '--workers', '1.5', '--endpoint', ec2.endpoint] },
  { name: 'doctor --provider local', args: () => ['doctor', '--provider', 'local'] },
  { name: 'user-data --role client', args: () => ['user-data', '--role', 'client'] },
  { name: 'user-data --runtime bogus', args: () => ['user-data', '--role', 'worker', '--runtime', 'bogus'] },
  { name: 'user-data --scheduler-address tcp:// with TLS', args: () => ['user-data', '--role', 'worker', '--scheduler-address', 'tcp://10.0.0.2:8786'] },
  { name: 'cleanup without a selection', args: () => ['cleanup', '--provider', 'digitalocean', '--endpoint', dig.endpoint] },
  { name: 'cleanup --provider local --expired', args: () => ['cleanup', '--provider', 'local', '--expired'] },
  { name: 'cleanup --provider local --region eu-west-1', args: () => ['cleanup', '--provider', 'local', '--region', 'eu-west-1'] },
  { name: 'cleanup --provider nope --all', args: () => ['cleanup', '--provider', 'nope', '--all'] },
  { name: 'an unknown command', args: () => ['launch'] },
  { name: 'DASK_CLOUD_MEMBER_WATCH_INTERVAL_MS=3e9', args: () => ['start', '--provider', 'digitalocean', '--endpoint', dig.endpoint, '--workers', '1'], env: () => ({ DASK_CLOUD_MEMBER_WATCH_INTERVAL_MS: '3e9' }) },
  { name: 'a config file with schedulerPort -1 (local)', args: () => ['local', '--workers', '1'], env: () => ({ DASK_CLOUD_CONFIG: configFile('local:\n  schedulerPort: -1\n') }) },
  { name: "DASK_CLOUD_TEMPORARY_SECURITY tlsCiphers 'aNULL'", args: () => ['local', '--workers', '1'], env: () => ({ DASK_CLOUD_TEMPORARY_SECURITY: '{"tlsCiphers":"aNULL"}' }) },
];

function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const clean: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(savedEnv)) if (!k.startsWith('DASK_CLOUD_')) clean[k] = v;
    execFile(
      process.execPath,
      ['--import', 'tsx', cliPath, ...args],
      {
        cwd: root,
        timeout: 120_000,
        killSignal: 'SIGKILL',
        env: { ...clean, XDG_CONFIG_HOME: path.join(tmp, 'xdg'), DASK_CLOUD_PYTHON: tripwire, DIGITALOCEAN_TOKEN: dig.token, AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'example', ...env },
      },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

describe('bad input on the command line: exit code 2, one line, no request, no launch', () => {
  const results = new Map<string, { code: number | null; stdout: string; stderr: string }>();
  let before: { requests: number; launches: number };

  beforeAll(async () => {
    before = { requests: requests(), launches: launches() };
    // Four at a time: each is a Node process compiling TypeScript.
    const queue = [...CLI];
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let c = queue.shift(); c; c = queue.shift()) results.set(c.name, await runCli(c.args(), c.env?.() ?? {}));
      }),
    );
  }, 600_000);

  for (const c of CLI) {
    it(c.name, () => {
      const r = results.get(c.name)!;
      expect(r.code, r.stderr).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^dask-cloud( \S+)?: /);
      expect(r.stderr).not.toMatch(/^\s+at /m);
    });
  }

  it('none of them made a request or launched a process', () => {
    expect({ requests: requests(), launches: launches() }).toEqual(before);
  });
});

CATALOGUE_SIZE = cases.length + CLI.length;

// ---------------------------------------------------------------------------------------------
// Controls: the detectors above can fail.
// ---------------------------------------------------------------------------------------------
describe('controls', () => {
  it('a valid LocalCluster start does launch the tripwire (and fails with its own typed error)', async () => {
    const before = launches();
    const err = await outcome(() => new LocalCluster(local({ nWorkers: 1 })));
    expect(launches()).toBeGreaterThan(before);
    expect(DaskCloudError.isInstance(err)).toBe(true);
  });

  it('valid VM options reach each fake', async () => {
    for (const [cluster, fake] of [
      [new GCPCluster(gcpOpts()), gcp],
      [new EC2Cluster(ec2Opts()), ec2],
      [new DropletCluster(doOpts()), dig],
    ] as const) {
      const before = fake.server.received.length;
      await cluster.preflight();
      expect(fake.server.received.length).toBeGreaterThan(before);
      await cluster.close();
    }
  });

  it('the catalogue holds at least 150 cases', () => {
    expect(CATALOGUE_SIZE).toBeGreaterThanOrEqual(150);
  });
});
