/**
 * The options of each cluster kind, declared once. This table drives:
 * - validation: unknown keys are refused everywhere (constructor, config file, env, CLI) with a
 *   "did you mean" suggestion;
 * - the config file's JSON Schema (config.schema.json), for editors;
 * - the DASK_CLOUD_* environment mapping;
 * - the CLI's flags.
 *
 * The tables themselves: the shared ones in ./option-table.ts, each kind's in
 * `providers/<kind>/schema.ts`, checked by TypeScript against the kind's Options interface.
 */
import type { ClusterKind } from './index';
import { ValidationError } from '../errors';
import { describeValue } from './bounds';
import { parseDaskDuration, parseDaskMemoryLimit } from './dask-format';
import type { OptionDecl } from './option-table';
import { LOCAL_OPTIONS } from '../../providers/local/schema';
import { GCP_OPTIONS } from '../../providers/gcp/schema';
import { EC2_OPTIONS } from '../../providers/ec2/schema';
import { DIGITALOCEAN_OPTIONS } from '../../providers/digitalocean/schema';

/** How a value is written in a file, a variable or a flag, and checked. */
export type OptionType =
  | 'string'
  | 'integer'
  | 'number'
  | 'boolean'
  /** Dask's duration text ('2 hours', '90s', '500ms') or a number of seconds. */
  | 'duration'
  /** Dask's byte-size text ('4 GiB', '512MB', 'auto') or a number of bytes. */
  | 'bytes'
  | 'string[]'
  /** Any JSON value (objects such as labels or launchRate). */
  | 'json';

/** A fragment of JSON Schema (draft-07), as the config file's schema uses it. */
export type JsonSchema = { readonly [keyword: string]: unknown };

export interface OptionSpec {
  /** The option's camelCase name, e.g. `nWorkers`. */
  readonly name: string;
  readonly type: OptionType;
  /** For strings: the only values allowed. */
  readonly enum?: readonly string[];
  /** One line, for --help and the JSON Schema. */
  readonly description: string;
  /** The CLI flag without dashes (e.g. `workers`, `machine-type`) when the option is one; absent = not a flag. */
  readonly flag?: string;
  /** Whether the option may come from the config file and DASK_CLOUD_* variables (false for secrets and objects only code can build). */
  readonly fileAndEnv: boolean;
  /** A credential: never read from a file or variable of ours, never shown. */
  readonly secret?: boolean;
  /** Other forms the value may take besides `type`: a number (an image id, seconds), or `false` (off). */
  readonly alsoAccepts?: readonly ('number' | 'false')[];
  /** For `json` options: the value's shape, as JSON Schema. */
  readonly jsonSchema?: JsonSchema;
}

/** Every cluster kind, in the order sections and messages list them. */
export const CLUSTER_KINDS: readonly ClusterKind[] = Object.freeze(['local', 'gcp', 'ec2', 'digitalocean'] as const);

/** The class each kind is built with, for messages. */
export const CLUSTER_CLASSES: Readonly<Record<ClusterKind, string>> = Object.freeze({
  local: 'LocalCluster',
  gcp: 'GCPCluster',
  ec2: 'EC2Cluster',
  digitalocean: 'DropletCluster',
});

const TABLES: Readonly<Record<ClusterKind, Readonly<Record<string, OptionDecl>>>> = {
  local: LOCAL_OPTIONS,
  gcp: GCP_OPTIONS,
  ec2: EC2_OPTIONS,
  digitalocean: DIGITALOCEAN_OPTIONS,
};

function toSpec(name: string, d: OptionDecl): OptionSpec {
  return Object.freeze({
    name,
    type: d.type,
    description: d.description,
    fileAndEnv: d.fileAndEnv !== false,
    ...(d.enum === undefined ? {} : { enum: d.enum }),
    ...(d.flag === undefined ? {} : { flag: d.flag }),
    ...(d.secret === undefined ? {} : { secret: true }),
    ...(d.alsoAccepts === undefined ? {} : { alsoAccepts: d.alsoAccepts }),
    ...(d.jsonSchema === undefined ? {} : { jsonSchema: d.jsonSchema }),
  });
}

const SPECS: Readonly<Record<ClusterKind, readonly OptionSpec[]>> = Object.freeze(
  Object.fromEntries(CLUSTER_KINDS.map((k) => [k, Object.freeze(Object.entries(TABLES[k]).map(([n, d]) => toSpec(n, d)))])) as Record<
    ClusterKind,
    readonly OptionSpec[]
  >,
);
const BY_NAME: Readonly<Record<ClusterKind, ReadonlyMap<string, OptionSpec>>> = Object.freeze(
  Object.fromEntries(CLUSTER_KINDS.map((k) => [k, new Map(SPECS[k].map((s) => [s.name, s]))])) as unknown as Record<ClusterKind, ReadonlyMap<string, OptionSpec>>,
);

function checkKind(kind: unknown): asserts kind is ClusterKind {
  if (!CLUSTER_KINDS.includes(kind as ClusterKind)) {
    throw new ValidationError(`cluster kind must be one of ${CLUSTER_KINDS.join(', ')}, got ${describeValue(kind)}`, { option: 'kind' });
  }
}

/** Every option a cluster of `kind` accepts, shared ones first. */
export function optionSpecs(kind: ClusterKind): readonly OptionSpec[] {
  checkKind(kind);
  return SPECS[kind];
}

/** The option `name` of `kind`, if it has one. */
export function optionSpec(kind: ClusterKind, name: string): OptionSpec | undefined {
  checkKind(kind);
  return BY_NAME[kind].get(name);
}

/** The kinds that have an option called `name` (e.g. `region`: ec2 and digitalocean). */
export function kindsWithOption(name: string): ClusterKind[] {
  return CLUSTER_KINDS.filter((k) => BY_NAME[k].has(name));
}

// ---------------------------------------------------------------------------------------------
// "Did you mean"
// ---------------------------------------------------------------------------------------------

/** Case, `_` and `-` do not matter when comparing names: `n_workers`, `NWorkers`, `n-workers` are `nworkers`. */
function fold(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]/g, '');
}

type Targets = Partial<Record<ClusterKind | '*', string>>;

/**
 * Names people bring from dask-cloudprovider (GCPCluster, EC2Cluster, DropletCluster and their
 * VMCluster base), from the Dask CLI and from the other clouds, folded, with the option each
 * means here. `*`: every kind that has the target. Names that fold to one of ours already
 * (`n_workers`, `docker_image`, `scheduler_machine_type` on GCP) need no entry.
 */
const ALIASES: Readonly<Record<string, Targets>> = {
  workers: { '*': 'nWorkers' },
  machinetype: { gcp: 'machineType', ec2: 'instanceType', digitalocean: 'size' },
  schedulermachinetype: { ec2: 'schedulerInstanceType', digitalocean: 'schedulerSize' },
  workermachinetype: { ec2: 'workerInstanceType', digitalocean: 'workerSize' },
  instancetype: { gcp: 'machineType', digitalocean: 'size' },
  schedulerinstancetype: { gcp: 'schedulerMachineType', digitalocean: 'schedulerSize' },
  workerinstancetype: { gcp: 'workerMachineType', digitalocean: 'workerSize' },
  size: { gcp: 'machineType', ec2: 'instanceType' },
  schedulersize: { gcp: 'schedulerMachineType', ec2: 'schedulerInstanceType' },
  workersize: { gcp: 'workerMachineType', ec2: 'workerInstanceType' },
  vmsize: { gcp: 'machineType', ec2: 'instanceType', digitalocean: 'size' },
  workermem: { '*': 'workerMemoryLimit' },
  workermemory: { '*': 'workerMemoryLimit' },
  memorylimit: { '*': 'workerMemoryLimit' },
  memory: { '*': 'workerMemoryLimit' },
  nthreads: { '*': 'workerNthreads' },
  workerthreads: { '*': 'workerNthreads' },
  threads: { '*': 'workerNthreads' },
  threadsperworker: { '*': 'workerNthreads' },
  envvars: { '*': 'env' },
  environment: { '*': 'env' },
  filesystemsize: { gcp: 'diskSizeGb', ec2: 'rootVolumeSizeGb' },
  disksize: { gcp: 'diskSizeGb', ec2: 'rootVolumeSizeGb' },
  disksizegb: { ec2: 'rootVolumeSizeGb' },
  rootvolumesize: { gcp: 'diskSizeGb', ec2: 'rootVolumeSizeGb' },
  rootvolumesizegb: { gcp: 'diskSizeGb' },
  ngpus: { '*': 'gpu' },
  gpus: { '*': 'gpu' },
  gputype: { '*': 'gpu' },
  workerngpus: { '*': 'gpu' },
  schedulerngpus: { '*': 'gpu' },
  workergputype: { '*': 'gpu' },
  schedulergputype: { '*': 'gpu' },
  accelerator: { '*': 'gpu' },
  project: { gcp: 'projectId' },
  publicingress: { '*': 'privateNetworking' },
  useprivateip: { '*': 'privateNetworking' },
  private: { '*': 'privateNetworking' },
  privateip: { '*': 'privateNetworking' },
  instancelabels: { gcp: 'labels', ec2: 'tags', digitalocean: 'tags' },
  instancetags: { gcp: 'labels', ec2: 'tags', digitalocean: 'tags' },
  volumetags: { gcp: 'labels', ec2: 'tags', digitalocean: 'tags' },
  labels: { ec2: 'tags', digitalocean: 'tags' },
  tags: { gcp: 'labels' },
  extrabootstrap: { '*': 'bootstrap' },
  enabledetailedmonitoring: { ec2: 'monitoring', digitalocean: 'monitoring' },
  detailedmonitoring: { ec2: 'monitoring', digitalocean: 'monitoring' },
  schedulertimeout: { '*': 'schedulerTimeoutMs' },
  image: { gcp: 'sourceImage', ec2: 'ami' },
  sourceimage: { ec2: 'ami', digitalocean: 'image' },
  ami: { gcp: 'sourceImage', digitalocean: 'image' },
  region: { gcp: 'zone' },
  location: { gcp: 'zone', ec2: 'region', digitalocean: 'region' },
  zone: { ec2: 'availabilityZone', digitalocean: 'region' },
  availabilityzone: { gcp: 'zone', digitalocean: 'region' },
  subnet: { gcp: 'subnetwork', ec2: 'subnetId' },
  subnetid: { gcp: 'subnetwork' },
  securitygroup: { ec2: 'securityGroups' },
  keypair: { ec2: 'keyName' },
  keyname: { digitalocean: 'sshKeys' },
  sshkey: { digitalocean: 'sshKeys', ec2: 'keyName' },
  port: { '*': 'schedulerPort' },
  dashboard: { local: 'dashboardAddress', gcp: 'exposeDashboard', ec2: 'exposeDashboard', digitalocean: 'exposeDashboard' },
  preemptible: { ec2: 'spot' },
  serviceaccountcredentials: { gcp: 'authClient' },
  instancescopes: { gcp: 'scopes' },
  workerclass: { '*': 'workerOptions' },
  workermodule: { '*': 'workerOptions' },
  workercommand: { '*': 'workerOptions' },
};

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours cost 1. */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** How far a misspelling may be from what was meant: one edit in a short name, up to three in a long one. */
function tolerance(length: number): number {
  return length <= 4 ? 1 : length <= 9 ? 2 : 3;
}

function aliasTarget(folded: string, has: (name: string) => boolean, kind: ClusterKind | undefined): string | undefined {
  const targets = ALIASES[folded];
  if (targets === undefined) return undefined;
  const candidates = kind === undefined ? [targets['*'], ...CLUSTER_KINDS.map((k) => targets[k])] : [targets[kind], targets['*']];
  return candidates.find((t): t is string => t !== undefined && has(t));
}

/**
 * The closest of `names` to `unknown`: the same name in another case or with `_`/`-`, then a
 * dask-cloudprovider name, then the nearest by edit distance (ties: the earlier name).
 * `kind` picks the alias meant for that kind; undefined: any kind's.
 */
export function closestName(names: readonly string[], unknown: string, kind?: ClusterKind): string | undefined {
  const f = fold(unknown);
  if (f === '') return undefined;
  const has = (n: string) => names.includes(n);
  const same = names.find((n) => fold(n) === f);
  if (same !== undefined) return same;
  const alias = aliasTarget(f, has, kind);
  if (alias !== undefined) return alias;
  let best: { name: string; d: number } | undefined;
  const consider = (name: string, d: number) => {
    if (d <= tolerance(f.length) && (best === undefined || d < best.d)) best = { name, d };
  };
  for (const n of names) consider(n, distance(f, fold(n)));
  for (const key of Object.keys(ALIASES)) {
    const target = aliasTarget(key, has, kind);
    if (target !== undefined) consider(target, distance(f, key));
  }
  return best?.name;
}

/** The closest known option to a misspelled one (snake_case names from dask-cloudprovider included), if any is close. */
export function suggestOption(kind: ClusterKind, unknown: string): string | undefined {
  checkKind(kind);
  if (typeof unknown !== 'string') return undefined;
  return closestName(SPECS[kind].map((s) => s.name), unknown, kind);
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

const WHAT: Readonly<Record<OptionType, string>> = {
  string: 'a string',
  integer: 'a whole number',
  number: 'a number',
  boolean: 'true or false',
  duration: "a Dask duration such as '2 hours', '90m' or '3600s'",
  bytes: "a Dask size such as '4GiB', '512MB' or 'auto'",
  'string[]': 'a list of strings',
  json: 'JSON',
};

/** What a value of `spec` must be, in words: "a whole number", "one of docker, native". */
export function expectedValue(spec: OptionSpec): string {
  let what = spec.enum !== undefined ? `one of ${spec.enum.join(', ')}` : WHAT[spec.type];
  if (spec.alsoAccepts?.includes('number') && spec.type !== 'integer' && spec.type !== 'number') what += ' or a number';
  if (spec.alsoAccepts?.includes('false')) what += ', or false';
  return what;
}

function isDuration(v: unknown, numbers: boolean): boolean {
  if (typeof v === 'number') return numbers && parseDaskDuration(v) !== undefined;
  return typeof v === 'string' && parseDaskDuration(v) !== undefined;
}

function isBytes(v: unknown, numbers: boolean): boolean {
  if (typeof v === 'number') return numbers && parseDaskMemoryLimit(v) !== undefined;
  return typeof v === 'string' && parseDaskMemoryLimit(v) !== undefined;
}

/**
 * Whether `value` (from a config file, already parsed) has the option's type; ranges and
 * formats particular to one option are left to the cluster's own validation. Returns what is
 * wrong, or undefined.
 */
export function valueProblem(spec: OptionSpec, value: unknown): string | undefined {
  if (value === null || value === undefined) return `is empty: give ${expectedValue(spec)}, or remove it for the default`;
  if (value === false && spec.alsoAccepts?.includes('false')) return undefined;
  const numbers = spec.alsoAccepts?.includes('number') === true;
  let ok: boolean;
  switch (spec.type) {
    case 'integer':
      ok = typeof value === 'number' && Number.isInteger(value);
      break;
    case 'number':
      ok = typeof value === 'number' && Number.isFinite(value);
      break;
    case 'boolean':
      ok = typeof value === 'boolean';
      break;
    case 'string':
      ok = (typeof value === 'string' && (spec.enum === undefined || spec.enum.includes(value))) || (numbers && typeof value === 'number' && Number.isFinite(value));
      break;
    case 'string[]':
      ok = Array.isArray(value) && value.every((v) => typeof v === 'string' || (numbers && typeof v === 'number' && Number.isFinite(v)));
      break;
    case 'duration':
      ok = isDuration(value, numbers);
      break;
    case 'bytes':
      ok = isBytes(value, numbers);
      break;
    default:
      ok = true;
  }
  return ok ? undefined : `must be ${expectedValue(spec)}, got ${describeValue(value)}`;
}

/**
 * A value written as text (an env var or a CLI flag) read as the option's type; throws a
 * ValidationError naming `where` when it does not parse. The text itself is never quoted back:
 * it may come from a variable holding something private.
 */
export function optionFromText(spec: OptionSpec, raw: string, where: string): unknown {
  const fail = (problem: string): never => {
    throw new ValidationError(`${where} (${spec.name}) ${problem}`, { option: spec.name, details: { from: where } });
  };
  if (typeof raw !== 'string') return fail(`must be text, got ${describeValue(raw)}`);
  const text = raw.trim();
  if (text === '' && spec.type !== 'string') return fail(`is empty: it needs ${expectedValue(spec)}`);
  if (text === 'false' && spec.alsoAccepts?.includes('false')) return false;
  const numbers = spec.alsoAccepts?.includes('number') === true;
  switch (spec.type) {
    case 'integer': {
      const n = /^[+-]?\d+$/.test(text) ? Number(text) : NaN;
      return Number.isSafeInteger(n) ? n : fail('must be a whole number written in digits');
    }
    case 'number': {
      const n = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/.test(text) ? Number(text) : NaN;
      return Number.isFinite(n) ? n : fail('must be a number written in digits');
    }
    case 'boolean':
      if (text === 'true') return true;
      if (text === 'false') return false;
      return fail('must be true or false');
    case 'string':
      if (numbers && /^\d+$/.test(text)) return Number(text);
      if (spec.enum !== undefined && !spec.enum.includes(raw)) return fail(`must be ${expectedValue(spec)}`);
      return raw;
    case 'string[]': {
      let items: unknown[];
      if (text.startsWith('[')) {
        try {
          items = JSON.parse(text) as unknown[];
        } catch {
          return fail('starts with [ but is not a JSON array');
        }
        if (!Array.isArray(items) || !items.every((v) => typeof v === 'string' || (numbers && typeof v === 'number'))) {
          return fail('must be a JSON array of strings');
        }
        return items;
      }
      items = text.split(',').map((s) => s.trim());
      if (items.some((s) => s === '')) return fail('has an empty item: write a comma-separated list (a,b) or a JSON array');
      return items;
    }
    case 'duration':
      return parseDaskDuration(text) === undefined ? fail(`must be ${WHAT.duration}`) : text;
    case 'bytes':
      return parseDaskMemoryLimit(text) === undefined ? fail(`must be ${WHAT.bytes}`) : text;
    case 'json':
      try {
        return JSON.parse(text) as unknown;
      } catch {
        return fail('must be JSON, e.g. {"key": "value"} or true');
      }
    default:
      return fail(`has a type this version cannot read (${String(spec.type)})`);
  }
}
