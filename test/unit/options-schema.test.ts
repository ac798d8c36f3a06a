/**
 * One source for options (issue 11): the option table of each cluster kind, "did you mean" for
 * misspelled options in constructor options, the config file and DASK_CLOUD_* variables (the
 * table in test/helpers/misspelled-options.ts, which the CLI's tests extend), values read from
 * text, Dask's duration and size formats (checked against Dask itself when it is installed),
 * precedence, and the config file's JSON Schema.
 *
 * Cloud clusters point at the API fakes and LocalCluster at a "tripwire" interpreter: each
 * misspelled-option case also proves that no request was made and no process launched.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../providers/local';
import { GCPCluster } from '../../providers/gcp';
import { EC2Cluster } from '../../providers/ec2';
import { DropletCluster } from '../../providers/digitalocean';
import type { GCPClusterOptions } from '../../providers/gcp/options';
import type { EC2ClusterOptions } from '../../providers/ec2/options';
import type { DropletClusterOptions } from '../../providers/digitalocean';
import type { LocalClusterOptions } from '../../providers/local';
import { GCP_OPTIONS } from '../../providers/gcp/schema';
import { EC2_OPTIONS } from '../../providers/ec2/schema';
import { DIGITALOCEAN_OPTIONS } from '../../providers/digitalocean/schema';
import { LOCAL_OPTIONS } from '../../providers/local/schema';
import { NOT_OPTIONS, resolveOptions, suggestEnvVariable, type ClusterKind } from '../../src/config';
import { CLUSTER_KINDS, optionFromText, optionSpec, optionSpecs, suggestOption, type OptionSpec } from '../../src/config/schema';
import { optionTable } from '../../src/config/option-table';
import { configJsonSchema, configJsonSchemaText } from '../../src/config/json-schema';
import { parseDaskBytes, parseDaskDuration, parseDaskMemoryLimit } from '../../src/config/dask-format';
import { DaskCloudError, ValidationError } from '../../src/errors';
import type { Cluster } from '../../src/cluster/cluster';
import { FakeGcp } from '../fakes/gcp';
import { FakeEc2 } from '../fakes/ec2';
import { FakeDigitalOcean } from '../fakes/digitalocean';
import { startFake as startGcp, fakeOptions as gcpFakeOptions } from '../providers/gcp/helpers';
import { startFake as startEc2, fakeOptions as ec2FakeOptions } from '../providers/ec2/helpers';
import { startFake as startDo } from '../providers/digitalocean/helpers';
import { MISSPELLED_OPTIONS, type MisspelledOption } from '../helpers/misspelled-options';
import { pythonWithDask } from '../helpers/prereq';

const root = path.resolve(__dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-options-schema-'));
const tripwireLog = path.join(tmp, 'tripwire.log');
/** An "interpreter" that records that something launched it, then fails. */
const tripwire = path.join(tmp, 'tripwire-python');
fs.writeFileSync(tripwire, `#!/bin/sh\necho "launched $*" >> '${tripwireLog}'\nexit 1\n`, { mode: 0o755 });

let gcp: FakeGcp;
let ec2: FakeEc2;
let dig: FakeDigitalOcean;
const savedEnv = { ...process.env };

/** Only the variables a case sets: none of this machine's DASK_CLOUD_* options, no config file. */
function cleanEnv(extra: Record<string, string> = {}): void {
  for (const k of Object.keys(process.env)) if (k.startsWith('DASK_CLOUD_') && !NOT_OPTIONS.has(k)) delete process.env[k];
  delete process.env.DASK_CLOUD_CONFIG;
  process.env.XDG_CONFIG_HOME = path.join(tmp, 'xdg');
  Object.assign(process.env, extra);
}

beforeAll(async () => {
  cleanEnv();
  [gcp, ec2, dig] = await Promise.all([startGcp(), startEc2(6), startDo(6)]);
});

afterEach(() => {
  for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
  Object.assign(process.env, savedEnv);
  cleanEnv();
});

afterAll(async () => {
  for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
  Object.assign(process.env, savedEnv);
  await Promise.all([gcp?.stop(), ec2?.stop(), dig?.stop()]);
  fs.rmSync(tmp, { recursive: true, force: true });
});

function requests(): number {
  return gcp.server.received.length + ec2.server.received.length + dig.server.received.length;
}
function launches(): number {
  return fs.existsSync(tripwireLog) ? fs.readFileSync(tripwireLog, 'utf8').split('\n').filter(Boolean).length : 0;
}

/** A cluster of `kind` from valid options pointing at the fakes (or the tripwire), with `extra` on top. */
function build(kind: ClusterKind, extra: Record<string, unknown> = {}): Cluster {
  switch (kind) {
    case 'local':
      return new LocalCluster({ python: tripwire, closeOnSignals: false, ...extra } as LocalClusterOptions);
    case 'gcp':
      return new GCPCluster({ ...gcpFakeOptions(gcp), ...extra } as GCPClusterOptions);
    case 'ec2':
      return new EC2Cluster({ ...ec2FakeOptions(ec2), ...extra } as EC2ClusterOptions);
    case 'digitalocean':
      return new DropletCluster({ token: dig.token, endpoint: dig.endpoint, closeOnSignals: false, memberWatchIntervalMs: 0, ...extra } as DropletClusterOptions);
  }
}

let configN = 0;
function configFile(yaml: string): string {
  const file = path.join(tmp, `config-${configN++}.yaml`);
  fs.writeFileSync(file, yaml);
  return file;
}

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (err) {
    return err;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

// Compile-time checks (tsc -p tsconfig.json): each table has exactly its interface's keys.
type SameKeys<A, B> = [Exclude<keyof A, keyof B>, Exclude<keyof B, keyof A>] extends [never, never] ? true : false;
const tablesMatchInterfaces: [
  SameKeys<typeof LOCAL_OPTIONS, LocalClusterOptions>,
  SameKeys<typeof GCP_OPTIONS, GCPClusterOptions>,
  SameKeys<typeof EC2_OPTIONS, EC2ClusterOptions>,
  SameKeys<typeof DIGITALOCEAN_OPTIONS, DropletClusterOptions>,
] = [true, true, true, true];
interface TwoOptions {
  a?: number;
  b?: string;
}
// @ts-expect-error a table missing an option of its interface does not compile
optionTable<TwoOptions>()({ a: { type: 'integer', description: 'A.' } });
// @ts-expect-error a table with an option its interface lacks does not compile
optionTable<TwoOptions>()({ a: { type: 'integer', description: 'A.' }, b: { type: 'string', description: 'B.' }, c: { type: 'string', description: 'C.' } });

describe('the option table', () => {
  it('covers every key of each Options interface (checked by the compiler) and lists shared options first', () => {
    expect(tablesMatchInterfaces).toEqual([true, true, true, true]);
    for (const kind of CLUSTER_KINDS) {
      const names = optionSpecs(kind).map((s) => s.name);
      expect(new Set(names).size, kind).toBe(names.length);
      expect(names.slice(0, 3), kind).toEqual(['nWorkers', 'security', 'temporarySecurity']);
    }
    expect(optionSpecs('gcp').map((s) => s.name)).toEqual(expect.arrayContaining(['machineType', 'schedulerMachineType', 'workerMachineType', 'gpu', 'projectId', 'zone']));
  });

  it('has a one-line description for each option, types with their own rules, and secrets only in code', () => {
    for (const kind of CLUSTER_KINDS) {
      for (const s of optionSpecs(kind)) {
        expect(s.description, `${kind}.${s.name}`).toMatch(/^[^\n]{10,200}[.)]$/);
        if (s.enum !== undefined) expect(s.type, `${kind}.${s.name}`).toBe('string');
        if (s.secret) expect(s.fileAndEnv, `${kind}.${s.name}`).toBe(false);
        if (s.flag !== undefined) expect(s.flag, `${kind}.${s.name}`).toMatch(/^[a-z][a-z0-9]*(-[a-z0-9]+)*$/);
      }
    }
    expect(optionSpec('digitalocean', 'token')).toMatchObject({ secret: true, fileAndEnv: false });
    expect(optionSpec('ec2', 'credentials')).toMatchObject({ secret: true, fileAndEnv: false });
    expect(optionSpec('local', 'idleTimeout')?.type).toBe('duration');
    expect(optionSpec('gcp', 'workerMemoryLimit')?.type).toBe('bytes');
    expect(optionSpec('ec2', 'runtime')?.enum).toEqual(['docker', 'native']);
  });

  it('an option in several kinds is file-and-env (or code-only) in all of them, and a shared flag is a switch in all or none', () => {
    const seen = new Map<string, OptionSpec>();
    const flags = new Map<string, OptionSpec>();
    for (const kind of CLUSTER_KINDS) {
      const mine = new Set<string>();
      for (const s of optionSpecs(kind)) {
        const other = seen.get(s.name);
        if (other !== undefined) expect(s.fileAndEnv, s.name).toBe(other.fileAndEnv);
        seen.set(s.name, s);
        if (s.flag === undefined) continue;
        expect(mine.has(s.flag), `${kind}: --${s.flag} twice`).toBe(false);
        mine.add(s.flag);
        const f = flags.get(s.flag);
        // A JSON option reads 'true' as true, so it may share a flag with a switch.
        if (f !== undefined && (f.type === 'boolean') !== (s.type === 'boolean')) expect([f.type, s.type], `--${s.flag}`).toContain('json');
        flags.set(s.flag, s);
      }
    }
  });

  it('gives the common options a flag in every kind that has them', () => {
    const flagOf = (kind: ClusterKind, option: string) => optionSpec(kind, option)?.flag;
    for (const kind of CLUSTER_KINDS) {
      expect(flagOf(kind, 'nWorkers')).toBe('workers');
      expect(flagOf(kind, 'name')).toBe('name');
      expect(flagOf(kind, 'idleTimeout')).toBe('idle-timeout');
      expect(flagOf(kind, 'workerMemoryLimit')).toBe('worker-memory-limit');
      expect(flagOf(kind, 'workerNthreads')).toBe('worker-nthreads');
    }
    for (const kind of ['gcp', 'ec2', 'digitalocean'] as const) {
      expect(flagOf(kind, 'privateNetworking')).toBe('private');
      expect(flagOf(kind, 'dockerImage')).toBe('docker-image');
      expect(flagOf(kind, 'endpoint')).toBe('endpoint');
    }
    expect([flagOf('gcp', 'machineType'), flagOf('gcp', 'schedulerMachineType'), flagOf('gcp', 'workerMachineType')]).toEqual(['machine-type', 'scheduler-machine-type', 'worker-machine-type']);
    expect([flagOf('gcp', 'projectId'), flagOf('gcp', 'zone'), flagOf('gcp', 'gpu')]).toEqual(['project', 'zone', 'accelerator']);
    expect([flagOf('ec2', 'instanceType'), flagOf('ec2', 'schedulerInstanceType'), flagOf('ec2', 'workerInstanceType'), flagOf('ec2', 'region'), flagOf('ec2', 'gpu')]).toEqual([
      'instance-type',
      'scheduler-instance-type',
      'worker-instance-type',
      'region',
      'gpu',
    ]);
    expect([flagOf('digitalocean', 'size'), flagOf('digitalocean', 'schedulerSize'), flagOf('digitalocean', 'workerSize'), flagOf('digitalocean', 'region')]).toEqual([
      'size',
      'scheduler-size',
      'worker-size',
      'region',
    ]);
  });

  it('refuses a kind it does not know', () => {
    expect(() => optionSpecs('azure' as ClusterKind)).toThrow(ValidationError);
  });
});

// ---------------------------------------------------------------------------------------------
// Did you mean
// ---------------------------------------------------------------------------------------------

describe('suggestOption', () => {
  // dask-cloudprovider's keyword arguments (GCPCluster, EC2Cluster, DropletCluster, VMCluster) and
  // other near misses, with what each kind suggests: local, gcp, ec2, digitalocean.
  const cases: Array<[string, [string | undefined, string | undefined, string | undefined, string | undefined]]> = [
    ['n_workers', ['nWorkers', 'nWorkers', 'nWorkers', 'nWorkers']],
    ['nworkers', ['nWorkers', 'nWorkers', 'nWorkers', 'nWorkers']],
    ['NWORKERS', ['nWorkers', 'nWorkers', 'nWorkers', 'nWorkers']],
    ['n-workers', ['nWorkers', 'nWorkers', 'nWorkers', 'nWorkers']],
    ['machine_type', [undefined, 'machineType', 'instanceType', 'size']],
    ['scheduler_machine_type', [undefined, 'schedulerMachineType', 'schedulerInstanceType', 'schedulerSize']],
    ['worker_instance_type', [undefined, 'workerMachineType', 'workerInstanceType', 'workerSize']],
    ['worker_mem', ['workerMemoryLimit', 'workerMemoryLimit', 'workerMemoryLimit', 'workerMemoryLimit']],
    ['worker_memory', ['workerMemoryLimit', 'workerMemoryLimit', 'workerMemoryLimit', 'workerMemoryLimit']],
    ['nthreads', ['workerNthreads', 'workerNthreads', 'workerNthreads', 'workerNthreads']],
    ['env_vars', ['env', 'env', 'env', 'env']],
    ['docker_image', [undefined, 'dockerImage', 'dockerImage', 'dockerImage']],
    ['filesystem_size', [undefined, 'diskSizeGb', 'rootVolumeSizeGb', undefined]],
    ['ngpus', [undefined, 'gpu', 'gpu', 'gpu']],
    ['gpu_type', [undefined, 'gpu', 'gpu', 'gpu']],
    ['projectid', [undefined, 'projectId', undefined, undefined]],
    ['network_projectid', [undefined, 'networkProjectId', undefined, undefined]],
    ['source_image', [undefined, 'sourceImage', 'ami', 'image']],
    ['public_ingress', [undefined, 'privateNetworking', 'privateNetworking', 'privateNetworking']],
    ['use_private_ip', [undefined, 'privateNetworking', 'privateNetworking', 'privateNetworking']],
    ['instance_labels', [undefined, 'labels', 'tags', 'tags']],
    ['instance_tags', [undefined, 'labels', 'tags', 'tags']],
    ['extra_bootstrap', [undefined, 'bootstrap', 'bootstrap', 'bootstrap']],
    ['availability_zone', [undefined, 'zone', 'availabilityZone', 'region']],
    ['iam_instance_profile', [undefined, undefined, 'iamInstanceProfile', undefined]],
    ['idle_timeout', ['idleTimeout', 'idleTimeout', 'idleTimeout', 'idleTimeout']],
    ['idleTimout', ['idleTimeout', 'idleTimeout', 'idleTimeout', 'idleTimeout']],
    ['workerMemoryLimt', ['workerMemoryLimit', 'workerMemoryLimit', 'workerMemoryLimit', 'workerMemoryLimit']],
    ['debug', [undefined, undefined, undefined, undefined]],
    // A worker class is one of `dask worker`'s arguments here (--worker-class).
    ['worker_class', ['workerOptions', 'workerOptions', 'workerOptions', 'workerOptions']],
    ['instance_scopes', [undefined, 'scopes', undefined, undefined]],
    ['', [undefined, undefined, undefined, undefined]],
  ];
  for (const [name, expected] of cases) {
    it(`${JSON.stringify(name)} → ${expected.map(String).join(', ')}`, () => {
      expect(CLUSTER_KINDS.map((k) => suggestOption(k, name))).toEqual(expected);
    });
  }

  it('suggests variables by their DASK_CLOUD_* names', () => {
    expect(suggestEnvVariable('DASK_CLOUD_NWORKERS')).toBe('DASK_CLOUD_N_WORKERS');
    expect(suggestEnvVariable('DASK_CLOUD_GCP_PROJECTID')).toBe('DASK_CLOUD_GCP_PROJECT_ID');
    expect(suggestEnvVariable('DASK_CLOUD_EC2_MACHINE_TYPE')).toBe('DASK_CLOUD_EC2_INSTANCE_TYPE');
    expect(suggestEnvVariable('DASK_CLOUD_DO_TOKEN')).toBeUndefined(); // a secret has no variable of ours
    expect(suggestEnvVariable('DASK_CLOUD_DO_REGION')).toBe('DASK_CLOUD_DIGITALOCEAN_REGION');
    expect(suggestEnvVariable('DASK_CLOUD_HOM')).toBe('DASK_CLOUD_HOME');
    expect(suggestEnvVariable('DASK_CLOUD_XYZZY_PLUGH')).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// Misspelled options, everywhere: the table the CLI's tests extend
// ---------------------------------------------------------------------------------------------

function attempt(row: MisspelledOption): unknown {
  switch (row.source) {
    case 'constructor':
      return thrown(() => build(row.kind, row.options));
    case 'file':
      cleanEnv({ DASK_CLOUD_CONFIG: configFile(row.file!) });
      return thrown(() => build(row.kind));
    case 'env':
      cleanEnv(row.env);
      return thrown(() => build(row.kind));
    default:
      throw new Error(`rows with source ${row.source} run in the CLI's tests`);
  }
}

describe('misspelled options: a ValidationError naming where, with the suggestion, before any request or launch', () => {
  for (const row of MISSPELLED_OPTIONS.filter((r) => r.source !== 'cli')) {
    it(`${row.source} (${row.kind}): ${row.name}`, () => {
      const before = { requests: requests(), launches: launches() };
      const err = attempt(row);
      expect(err, 'the constructor accepted it').toBeInstanceOf(ValidationError);
      const e = err as ValidationError;
      expect(e.code).toBe('E_INVALID_OPTION');
      for (const m of row.message) {
        if (typeof m === 'string') expect(e.message).toContain(m);
        else expect(e.message).toMatch(m);
      }
      expect(e.details.option).toBe(row.option);
      expect(e.details.suggestion).toBe(row.suggestion);
      expect({ requests: requests(), launches: launches() }, 'a request or a launch happened').toEqual(before);
      // A variable's value is never echoed: it may be private.
      if (row.source === 'env') for (const v of Object.values(row.env!)) if (v !== '') expect(e.message).not.toContain(v);
    });
  }

  it('control: the detectors see a request and a launch when one happens', async () => {
    const before = { requests: requests(), launches: launches() };
    await build('digitalocean').preflight().catch(() => undefined);
    expect(requests()).toBeGreaterThan(before.requests);
    const local = build('local', { nWorkers: 1, schedulerTimeoutMs: 10_000 });
    await local.start().catch(() => undefined);
    await local.close().catch(() => undefined);
    expect(launches()).toBeGreaterThan(before.launches);
  });

  it('the same options spelled right are accepted, from each place', () => {
    expect(() => build('gcp', { machineType: 'e2-standard-4', idleTimeout: '2 hours', workerMemoryLimit: '4 GiB' })).not.toThrow();
    cleanEnv({ DASK_CLOUD_CONFIG: configFile('cluster:\n  nWorkers: 2\n  idleTimeout: 90m\nec2:\n  instanceType: m6i.large\n') });
    expect(() => build('ec2')).not.toThrow();
    cleanEnv({ DASK_CLOUD_N_WORKERS: '3', DASK_CLOUD_GCP_MACHINE_TYPE: 'e2-standard-8', DASK_CLOUD_WORKER_MEMORY_LIMIT: 'auto', DASK_CLOUD_IDLE_TIMEOUT: '3600' });
    expect(() => build('gcp')).not.toThrow();
  });
});

// ---------------------------------------------------------------------------------------------
// Values from text
// ---------------------------------------------------------------------------------------------

describe('optionFromText', () => {
  const spec = (kind: ClusterKind, name: string) => optionSpec(kind, name)!;
  const read = (kind: ClusterKind, name: string, raw: string) => optionFromText(spec(kind, name), raw, 'WHERE');

  it('reads each type', () => {
    expect(read('local', 'nWorkers', '4')).toBe(4);
    expect(read('local', 'strictVersions', 'true')).toBe(true);
    expect(read('local', 'strictVersions', 'false')).toBe(false);
    expect(read('gcp', 'ingressCidrs', '10.0.0.0/8, 192.168.0.0/16')).toEqual(['10.0.0.0/8', '192.168.0.0/16']);
    expect(read('gcp', 'ingressCidrs', '["203.0.113.0/24"]')).toEqual(['203.0.113.0/24']);
    expect(read('ec2', 'tags', '{"team":"data"}')).toEqual({ team: 'data' });
    expect(read('ec2', 'spot', 'true')).toBe(true);
    expect(read('local', 'idleTimeout', '2 hours')).toBe('2 hours');
    expect(read('local', 'workerMemoryLimit', '4GiB')).toBe('4GiB');
    expect(read('local', 'workerMemoryLimit', 'auto')).toBe('auto');
    expect(read('ec2', 'expiresAfterHours', '1.5')).toBe(1.5);
    expect(read('ec2', 'runtime', 'native')).toBe('native');
    expect(read('local', 'dashboardAddress', 'false')).toBe(false);
    expect(read('local', 'dashboardAddress', ':8787')).toBe(':8787');
    expect(read('gcp', 'maxRunDuration', '3600')).toBe(3600);
    expect(read('gcp', 'maxRunDuration', '8h')).toBe('8h');
    expect(read('gcp', 'maxRunDuration', 'false')).toBe(false);
    expect(read('digitalocean', 'image', '12345')).toBe(12345);
    expect(read('digitalocean', 'image', 'ubuntu-24-04-x64')).toBe('ubuntu-24-04-x64');
  });

  const refused: Array<[ClusterKind, string, string, RegExp]> = [
    ['local', 'nWorkers', '', /WHERE \(nWorkers\) is empty/],
    ['local', 'nWorkers', '   ', /is empty/],
    ['local', 'nWorkers', '1.5', /whole number/],
    ['local', 'nWorkers', '1e3', /whole number/],
    ['local', 'nWorkers', '0x10', /whole number/],
    ['local', 'nWorkers', 'two', /whole number/],
    ['local', 'nWorkers', '99999999999999999999', /whole number/],
    ['ec2', 'expiresAfterHours', 'soon', /number/],
    ['local', 'strictVersions', 'yes', /true or false/],
    ['gcp', 'ingressCidrs', 'a,,b', /empty item/],
    ['gcp', 'ingressCidrs', '[1, 2]', /JSON array of strings/],
    ['gcp', 'ingressCidrs', '["a"', /not a JSON array/],
    ['ec2', 'tags', '{team: data}', /must be JSON/],
    ['local', 'idleTimeout', 'two hours', /Dask duration/],
    ['local', 'workerMemoryLimit', '4 GiB-ish', /Dask size/],
    ['ec2', 'runtime', 'podman', /one of docker, native/],
  ];
  for (const [kind, name, raw, message] of refused) {
    it(`refuses ${kind}.${name} ${JSON.stringify(raw)}`, () => {
      const err = thrown(() => read(kind, name, raw));
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).message).toMatch(message);
      expect((err as ValidationError).details.option).toBe(name);
    });
  }

  it('never quotes the text back (it may come from a private variable)', () => {
    const secretish = 'hunter2-private-value';
    for (const name of ['nWorkers', 'idleTimeout', 'workerMemoryLimit', 'strictVersions', 'env']) {
      const err = thrown(() => read('local', name, secretish)) as Error;
      expect(err, name).toBeInstanceOf(ValidationError);
      expect(err.message, name).not.toContain(secretish);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Dask's formats
// ---------------------------------------------------------------------------------------------

describe("Dask's duration and size text", () => {
  // Dask's own doctests (dask.utils.parse_timedelta, parse_bytes) and the cases around them.
  const durations: Array<[string | number, number | undefined]> = [
    ['3s', 3],
    ['3.5 seconds', 3.5],
    ['300ms', 0.3],
    ['2 hours', 7200],
    ['90m', 5400],
    ['1.5h', 5400],
    ['3600', 3600],
    ['hour', 3600],
    ['1 W', 604_800],
    [' 2 Hours ', 7200],
    [3600, 3600],
    ['two hours', undefined],
    ['2 hours 30 minutes', undefined],
    ['1h30m', undefined],
    ['-1h', undefined],
    ['', undefined],
    ['2 fortnights', undefined],
    [-5, undefined],
  ];
  const sizes: Array<[string, number | undefined]> = [
    ['100', 100],
    ['100 MB', 100_000_000],
    ['100M', 100_000_000],
    ['5kB', 5000],
    ['5.4 kB', 5400],
    ['1kiB', 1024],
    ['4 GiB', 4 * 2 ** 30],
    ['4gi', 4 * 2 ** 30],
    ['1e6', 1_000_000],
    ['1e6 kB', 1_000_000_000],
    ['MB', 1_000_000],
    ['5 foos', undefined],
    ['4 GiB-ish', undefined],
    ['four GB', undefined],
  ];

  it('reads durations as parse_timedelta does', () => {
    for (const [text, seconds] of durations) expect(parseDaskDuration(text), JSON.stringify(text)).toBe(seconds);
  });

  it('reads sizes as parse_bytes does, and memory limits as parse_memory_limit does', () => {
    for (const [text, bytes] of sizes) expect(parseDaskBytes(text), text).toBe(bytes);
    expect(parseDaskMemoryLimit('auto')).toEqual({ auto: true });
    expect(parseDaskMemoryLimit('0.5')).toEqual({ fraction: 0.5 });
    expect(parseDaskMemoryLimit(0)).toEqual({ bytes: 0 });
    expect(parseDaskMemoryLimit('8e9')).toEqual({ bytes: 8e9 });
    expect(parseDaskMemoryLimit('4GiB')).toEqual({ bytes: 4 * 2 ** 30 });
    expect(parseDaskMemoryLimit('-1')).toBeUndefined();
    expect(parseDaskMemoryLimit('4 GiB-ish')).toBeUndefined();
  });

  const python = pythonWithDask();
  it.skipIf(python === null)('agrees with Dask itself on every case', () => {
    const texts = [...durations.map(([t]) => t).filter((t): t is string => typeof t === 'string'), ...sizes.map(([t]) => t)];
    const code = [
      'import json, sys',
      'from dask.utils import parse_timedelta, parse_bytes',
      'def attempt(f, t):',
      '    try:',
      '        return f(t)',
      '    except Exception:',
      '        return None',
      'texts = json.loads(sys.argv[1])',
      'print(json.dumps({"d": [attempt(parse_timedelta, t) for t in texts], "b": [attempt(parse_bytes, t) for t in texts]}))',
    ].join('\n');
    const out = JSON.parse(execFileSync(python!, ['-c', code, JSON.stringify(texts)], { encoding: 'utf8', timeout: 30_000 })) as { d: (number | null)[]; b: (number | null)[] };
    texts.forEach((t, i) => {
      // Dask accepts negative durations in a form we refuse ('-1h' it refuses too); everything else must match.
      const ours = parseDaskDuration(t);
      const theirs = out.d[i];
      if (theirs === null || theirs === undefined) expect(ours, `duration ${JSON.stringify(t)}: Dask refuses it`).toBeUndefined();
      else expect(ours, `duration ${JSON.stringify(t)}`).toBeCloseTo(theirs, 9);
      const bytes = parseDaskBytes(t);
      const theirBytes = out.b[i];
      if (theirBytes === null || theirBytes === undefined) expect(bytes, `size ${JSON.stringify(t)}: Dask refuses it`).toBeUndefined();
      else expect(bytes, `size ${JSON.stringify(t)}`).toBe(theirBytes);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Precedence and the settings that are not options
// ---------------------------------------------------------------------------------------------

describe('precedence: defaults < file < env < constructor', () => {
  it('each layer overrides the one below, and a shared variable reaches only the kinds that have the option', () => {
    const file = configFile('cluster:\n  nWorkers: 1\n  region: nyc1\n  idleTimeout: 1h\nlocal:\n  nWorkers: 2\n');
    const env = { DASK_CLOUD_CONFIG: file, XDG_CONFIG_HOME: path.join(tmp, 'xdg') };
    expect(resolveOptions('local', {}, env)).toEqual({ nWorkers: 2, idleTimeout: '1h' });
    expect(resolveOptions('digitalocean', {}, env)).toEqual({ nWorkers: 1, region: 'nyc1', idleTimeout: '1h' });
    expect(resolveOptions('local', {}, { ...env, DASK_CLOUD_N_WORKERS: '3' })).toMatchObject({ nWorkers: 3 });
    expect(resolveOptions('local', {}, { ...env, DASK_CLOUD_N_WORKERS: '3', DASK_CLOUD_LOCAL_N_WORKERS: '4' })).toMatchObject({ nWorkers: 4 });
    expect(resolveOptions('local', { nWorkers: 5 }, { ...env, DASK_CLOUD_LOCAL_N_WORKERS: '4' })).toMatchObject({ nWorkers: 5 });
    expect(resolveOptions('local', { nWorkers: undefined }, { ...env, DASK_CLOUD_LOCAL_N_WORKERS: '4' })).toMatchObject({ nWorkers: 4 });
    expect(resolveOptions('ec2', {}, { ...env, DASK_CLOUD_REGION: 'eu-west-1' })).toMatchObject({ region: 'eu-west-1' });
    expect(resolveOptions('gcp', {}, { ...env, DASK_CLOUD_REGION: 'eu-west-1' })).not.toHaveProperty('region');
  });

  it('keeps the library and test-suite settings variables out of option checks', () => {
    const env: Record<string, string> = { XDG_CONFIG_HOME: path.join(tmp, 'xdg') };
    for (const name of NOT_OPTIONS) if (name !== 'DASK_CLOUD_CONFIG') env[name] = 'x';
    for (const kind of CLUSTER_KINDS) expect(resolveOptions(kind, {}, env), kind).toEqual({});
    // What the test projects and scripts set when they run the library.
    for (const name of ['DASK_CLOUD_PYTHON', 'DASK_CLOUD_HOME', 'DASK_CLOUD_TEST_CLIENT', 'DASK_CLOUD_IN_LOOPBACK_NETNS', 'DASK_CLOUD_TRIXIE_ROOT']) expect(NOT_OPTIONS.has(name), name).toBe(true);
  });

  it('checks file values against the option type, naming the file and section', () => {
    const file = configFile('gcp:\n  diskSizeGb: "50"\n');
    const err = thrown(() => resolveOptions('local', {}, { DASK_CLOUD_CONFIG: file })) as ValidationError;
    expect(err).toBeInstanceOf(ValidationError);
    expect(err.message).toBe(`config file ${file}, section gcp: diskSizeGb must be a whole number, got "50"`);
    expect(thrown(() => resolveOptions('local', {}, { DASK_CLOUD_CONFIG: configFile('ec2:\n  runtime: podman\n') }))).toBeInstanceOf(ValidationError);
    expect(thrown(() => resolveOptions('local', {}, { DASK_CLOUD_CONFIG: configFile('cluster:\n  nWorkers:\n') }))).toBeInstanceOf(ValidationError);
    expect(resolveOptions('local', {}, { DASK_CLOUD_CONFIG: configFile('cluster:\ngcp:\n  zone: europe-west4-a\n') })).toEqual({});
    const secret = thrown(() => resolveOptions('ec2', {}, { DASK_CLOUD_CONFIG: configFile('ec2:\n  credentials: {accessKeyId: AKIDEXAMPLE}\n') })) as ValidationError;
    expect(secret.message).toMatch(/does not belong in a file/);
    expect(secret.message).not.toContain('AKIDEXAMPLE');
  });

  it('refuses code-only options from variables, naming the variable but not its value', () => {
    const err = thrown(() => resolveOptions('digitalocean', {}, { XDG_CONFIG_HOME: path.join(tmp, 'xdg'), DASK_CLOUD_DIGITALOCEAN_TOKEN: 'dop_v1_private' })) as ValidationError;
    expect(err).toBeInstanceOf(ValidationError);
    expect(err.message).toContain('DASK_CLOUD_DIGITALOCEAN_TOKEN');
    expect(err.message).not.toContain('dop_v1_private');
  });
});

// ---------------------------------------------------------------------------------------------
// The JSON Schema of the config file
// ---------------------------------------------------------------------------------------------

type Schema = Record<string, unknown>;

/** The JSON Schema keywords config.schema.json uses: type, enum, const, properties, additionalProperties, required, items, anyOf. */
function validate(schema: Schema, value: unknown, at = '$'): string[] {
  const errors: string[] = [];
  const typeOf = (v: unknown): string[] => {
    if (v === null) return ['null'];
    if (Array.isArray(v)) return ['array'];
    if (typeof v === 'number') return Number.isInteger(v) ? ['integer', 'number'] : ['number'];
    return [typeof v];
  };
  if (schema.anyOf !== undefined) {
    const ok = (schema.anyOf as Schema[]).some((s) => validate(s, value, at).length === 0);
    if (!ok) errors.push(`${at}: matches none of anyOf`);
  }
  if (schema.type !== undefined) {
    const allowed = Array.isArray(schema.type) ? (schema.type as string[]) : [schema.type as string];
    if (!typeOf(value).some((t) => allowed.includes(t))) return [...errors, `${at}: not ${allowed.join(' or ')}`];
  }
  if (schema.enum !== undefined && !(schema.enum as unknown[]).includes(value)) errors.push(`${at}: not one of the enum`);
  if ('const' in schema && schema.const !== value) errors.push(`${at}: not ${JSON.stringify(schema.const)}`);
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const props = (schema.properties ?? {}) as Record<string, Schema>;
    for (const r of (schema.required ?? []) as string[]) if (!(r in value)) errors.push(`${at}.${r}: required`);
    for (const [k, v] of Object.entries(value)) {
      if (props[k] !== undefined) errors.push(...validate(props[k]!, v, `${at}.${k}`));
      else if (schema.additionalProperties === false) errors.push(`${at}.${k}: not allowed`);
      else if (typeof schema.additionalProperties === 'object') errors.push(...validate(schema.additionalProperties as Schema, v, `${at}.${k}`));
    }
  }
  if (Array.isArray(value) && schema.items !== undefined) value.forEach((v, i) => errors.push(...validate(schema.items as Schema, v, `${at}[${i}]`)));
  return errors;
}

describe('config.schema.json', () => {
  it('is what scripts/config-schema.ts generates from the table (run it after changing an option)', () => {
    expect(fs.readFileSync(path.join(root, 'config.schema.json'), 'utf8')).toBe(configJsonSchemaText());
  });

  it('has the five sections, no other, and every option a file may hold with its description', () => {
    const schema = configJsonSchema() as Schema;
    expect(schema.additionalProperties).toBe(false);
    const sections = schema.properties as Record<string, Schema>;
    expect(Object.keys(sections)).toEqual(['cluster', 'local', 'gcp', 'ec2', 'digitalocean']);
    for (const kind of CLUSTER_KINDS) {
      const props = sections[kind]!.properties as Record<string, Schema>;
      expect(sections[kind]!.additionalProperties).toBe(false);
      expect(Object.keys(props)).toEqual(optionSpecs(kind).filter((s) => s.fileAndEnv).map((s) => s.name));
      for (const p of Object.values(props)) expect(typeof p.description).toBe('string');
    }
    expect((sections.digitalocean!.properties as Schema).token).toBeUndefined();
    expect((sections.ec2!.properties as Record<string, Schema>).runtime!.enum).toEqual(['docker', 'native']);
    expect((sections.gcp!.properties as Record<string, Schema>).zone!.description).toContain('DASK_CLOUD_GCP_ZONE');
  });

  it('accepts a sample config the library accepts, and refuses what the library refuses', () => {
    const schema = configJsonSchema() as Schema;
    const sample = {
      cluster: { nWorkers: 4, idleTimeout: '2 hours', workerMemoryLimit: '4GiB', region: 'nyc3', env: { A: 'b' } },
      local: { host: '127.0.0.1', dashboardAddress: false },
      gcp: { projectId: 'my-project', zone: 'europe-west4-a', machineType: 'e2-standard-4', gpu: { type: 'nvidia-tesla-t4', count: 1 }, maxRunDuration: '8h' },
      ec2: { region: 'eu-west-1', spot: { maxPrice: '0.05' }, tags: { team: 'data' }, runtime: 'native' },
      digitalocean: { size: 's-4vcpu-8gb', image: 12345, sshKeys: ['aa:bb', 42] },
    };
    expect(validate(schema, sample)).toEqual([]);
    // The library reads the same sample without complaint.
    const file = configFile(JSON.stringify(sample));
    for (const kind of CLUSTER_KINDS) expect(() => resolveOptions(kind, {}, { DASK_CLOUD_CONFIG: file })).not.toThrow();

    // [config, the schema's complaint, whether reading the file already refuses it (else the constructor does)]
    const bad: Array<[object, string, boolean]> = [
      [{ cluster: { nworkers: 4 } }, '$.cluster.nworkers: not allowed', true],
      [{ clusters: {} }, '$.clusters: not allowed', true],
      [{ ec2: { runtime: 'podman' } }, '$.ec2.runtime: not one of the enum', true],
      [{ local: { nWorkers: '4' } }, '$.local.nWorkers: not integer', true],
      [{ digitalocean: { token: 'x' } }, '$.digitalocean.token: not allowed', true],
      [{ gcp: { gpu: { count: 1 } } }, '$.gcp.gpu.type: required', false],
    ];
    for (const [config, error, byFile] of bad) {
      expect(validate(schema, config), JSON.stringify(config)).toContain(error);
      const read = () => resolveOptions('local', {}, { DASK_CLOUD_CONFIG: configFile(JSON.stringify(config)) });
      if (byFile) expect(read, JSON.stringify(config)).toThrow(DaskCloudError);
    }
    cleanEnv({ DASK_CLOUD_CONFIG: configFile(JSON.stringify({ gcp: { gpu: { count: 1 } } })) });
    expect(() => build('gcp')).toThrow(/gpu must be/);
  });
});
