/**
 * Option resolution, lowest to highest precedence:
 *
 *   built-in defaults  <  config file  <  environment variables  <  constructor options
 *
 * Config file: `DASK_CLOUD_CONFIG`, else `$XDG_CONFIG_HOME/dask-cloud/config.yaml` (or
 * `~/.config/dask-cloud/config.yaml`), when it exists. Top-level `cluster:` holds options shared
 * by every kind of cluster (each kind takes those it has); `local:`, `gcp:`, `ec2:`,
 * `digitalocean:` hold one kind's:
 *
 *   cluster: { nWorkers: 4, idleTimeout: 2 hours }
 *   gcp: { projectId: my-proj, zone: europe-west4-a }
 *
 * Environment: `DASK_CLOUD_<OPTION>` for every kind, `DASK_CLOUD_<KIND>_<OPTION>` for one, with
 * the option in SCREAMING_SNAKE_CASE: `DASK_CLOUD_N_WORKERS=4`, `DASK_CLOUD_GCP_PROJECT_ID=p`.
 * Values are read as the option's type (src/config/schema.ts `optionFromText`): digits for
 * numbers, true/false, Dask durations and sizes, comma-separated or JSON lists, JSON objects.
 *
 * Everything is strict, as the option table says (src/config/schema.ts): an unknown key in the
 * constructor's options, in any section of the file, or an unknown DASK_CLOUD_* variable is a
 * ValidationError naming where it came from and the option probably meant. Values then go
 * through the same validation as constructor options, before any cloud call.
 *
 * Secrets (tokens, keys) are never read from the config file or DASK_CLOUD_* variables: keep
 * them in the environment variables each cloud's SDK already reads.
 */
import { existsSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ValidationError } from '../errors';
import { describeValue } from './bounds';
import { loadYaml } from '../lazy';
import { CLUSTER_CLASSES, CLUSTER_KINDS, closestName, kindsWithOption, optionFromText, optionSpec, optionSpecs, suggestOption, valueProblem, type OptionSpec } from './schema';

export type ClusterKind = 'local' | 'gcp' | 'ec2' | 'digitalocean';

const KINDS: readonly ClusterKind[] = CLUSTER_KINDS;
const SECTIONS = ['cluster', ...KINDS];

/**
 * DASK_CLOUD_* variables that are settings, not cluster options: they are never read as options
 * and never refused as unknown ones. The library's own, then those of its scripts, benchmarks
 * and test suite (which run the library with them set).
 */
export const NOT_OPTIONS: ReadonlySet<string> = new Set([
  // the library
  'DASK_CLOUD_CONFIG', // this file's path
  'DASK_CLOUD_PYTHON', // the local interpreter (src/dask/python.ts)
  'DASK_CLOUD_HOME', // where cluster directories live (src/cluster/state.ts)
  // scripts/ (Debian roots and VM images)
  'DASK_CLOUD_DEBIAN_MIRROR',
  'DASK_CLOUD_TRIXIE_ROOT',
  'DASK_CLOUD_TRIXIE_STAGE',
  'DASK_CLOUD_TRIXIE_REPO',
  'DASK_CLOUD_TRIXIE_IDS',
  'DASK_CLOUD_TRIXIE_CWD',
  'DASK_CLOUD_IN_LOOPBACK_NETNS',
  // bench/ and test/
  'DASK_CLOUD_BENCH_GOALS',
  'DASK_CLOUD_TEST_CLIENT',
  'DASK_CLOUD_VM_IMAGE',
  'DASK_CLOUD_CHROMIUM',
  'DASK_CLOUD_TERMINATOR_PYTHON',
]);

/** `nWorkers` → `N_WORKERS`, `projectId` → `PROJECT_ID`. */
export function toEnvName(option: string): string {
  return option.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/**
 * The variable that sets `option`: `DASK_CLOUD_<OPTION>` for every kind that has it, or with
 * `kind`, `DASK_CLOUD_<KIND>_<OPTION>` for that kind only.
 */
export function envVariableName(option: string, kind?: ClusterKind): string {
  return `DASK_CLOUD_${kind === undefined ? '' : `${kind.toUpperCase()}_`}${toEnvName(option)}`;
}

/** Where the config file is looked for. */
export function configFilePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DASK_CLOUD_CONFIG) return env.DASK_CLOUD_CONFIG;
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'dask-cloud', 'config.yaml');
}

/** Options of any kind, and of one, by name: what a shared section or variable may hold. */
function anyKindOption(name: string): OptionSpec | undefined {
  for (const k of KINDS) {
    const spec = optionSpec(k, name);
    if (spec !== undefined) return spec;
  }
  return undefined;
}

const ALL_OPTION_NAMES: readonly string[] = [...new Set(KINDS.flatMap((k) => optionSpecs(k).map((s) => s.name)))];

/** `(did you mean "nWorkers"?)`, or nothing. */
function didYouMean(suggestion: string | undefined, quote = true): string {
  return suggestion === undefined ? '' : ` (did you mean ${quote ? JSON.stringify(suggestion) : suggestion}?)`;
}

/** For an option of other kinds: which ones have it. */
function elsewhere(name: string): string {
  const kinds = kindsWithOption(name);
  return kinds.length === 0 ? '' : ` (it is an option of ${kinds.map((k) => CLUSTER_CLASSES[k]).join(', ')})`;
}

/**
 * Every key of the caller's options is an option of `kind` (an `undefined` value is let through:
 * it sets nothing, and spreading optional values produces it).
 */
export function checkOptionKeys(kind: ClusterKind, options: Record<string, unknown>, what = `${CLUSTER_CLASSES[kind]} options`): void {
  for (const [k, v] of Object.entries(options)) {
    if (v === undefined || optionSpec(kind, k) !== undefined) continue;
    const suggestion = suggestOption(kind, k);
    const hint = suggestion !== undefined ? didYouMean(suggestion) : elsewhere(k);
    throw new ValidationError(`${what}: unknown option ${JSON.stringify(k)}${hint}`, {
      option: k,
      details: { reason: 'unknown-option', source: 'options', ...(suggestion === undefined ? {} : { suggestion }) },
    });
  }
}

function readFileLayer(kind: ClusterKind, file: string, explicit: boolean): Record<string, unknown> {
  if (!existsSync(file)) {
    if (explicit) throw new ValidationError(`DASK_CLOUD_CONFIG names ${file}, which does not exist`, { option: 'DASK_CLOUD_CONFIG' });
    return {};
  }
  let doc: unknown;
  try {
    doc = loadYaml().parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ValidationError(`config file ${file} is not valid YAML: ${(err as Error).message}`, { option: 'DASK_CLOUD_CONFIG', cause: err });
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ValidationError(`config file ${file} must be a mapping of sections`, { option: 'DASK_CLOUD_CONFIG' });
  const sections = doc as Record<string, unknown>;
  // The whole file is checked, whatever kind is being built: a typo in the gcp section is
  // reported by the first cluster that reads the file, not by the first GCP cluster.
  for (const [section, values] of Object.entries(sections)) {
    if (!SECTIONS.includes(section)) {
      const suggestion = closestName(SECTIONS, section);
      throw new ValidationError(`config file ${file}: unknown section ${JSON.stringify(section)}${didYouMean(suggestion)} (expected ${SECTIONS.join(', ')})`, {
        option: 'DASK_CLOUD_CONFIG',
        details: { reason: 'unknown-section', source: 'file', file, section, ...(suggestion === undefined ? {} : { suggestion }) },
      });
    }
    if (values === null || values === undefined) continue;
    if (typeof values !== 'object' || Array.isArray(values)) {
      throw new ValidationError(`config file ${file}: section ${section} must be a mapping of options`, { option: 'DASK_CLOUD_CONFIG' });
    }
    const sectionKind = section === 'cluster' ? undefined : (section as ClusterKind);
    for (const [k, v] of Object.entries(values as Record<string, unknown>)) {
      const where = `config file ${file}, section ${section}`;
      const spec = sectionKind === undefined ? anyKindOption(k) : optionSpec(sectionKind, k);
      if (spec === undefined) {
        const suggestion = sectionKind === undefined ? closestName(ALL_OPTION_NAMES, k) : suggestOption(sectionKind, k);
        const hint = suggestion !== undefined ? didYouMean(suggestion) : elsewhere(k);
        throw new ValidationError(`${where}: unknown option ${JSON.stringify(k)}${hint}`, {
          option: k,
          details: { reason: 'unknown-option', source: 'file', file, section, ...(suggestion === undefined ? {} : { suggestion }) },
        });
      }
      if (!spec.fileAndEnv) {
        const why = spec.secret
          ? "pass it in code or through the cloud's own environment variables"
          : 'only code can pass it';
        throw new ValidationError(`${where}: ${section}.${k} does not belong in a file: ${why}`, { option: k, details: { source: 'file', file, section } });
      }
      // A shared option is checked against the kind it is for, when it names one of its options.
      const typed = sectionKind === undefined ? (optionSpec(kind, k) ?? spec) : spec;
      const problem = valueProblem(typed, v);
      if (problem !== undefined) throw new ValidationError(`${where}: ${k} ${problem}`, { option: k, details: { source: 'file', file, section } });
    }
  }
  // The kind's own section overrides the shared one; shared options this kind does not have are for the others.
  const shared = Object.fromEntries(Object.entries((sections.cluster ?? {}) as object).filter(([k]) => optionSpec(kind, k) !== undefined));
  return { ...shared, ...((sections[kind] ?? {}) as object) };
}

/** `DASK_CLOUD_GCP_ZONE` → `{ kind: 'gcp', rest: 'ZONE' }`; `DASK_CLOUD_N_WORKERS` → `{ rest: 'N_WORKERS' }`. */
function splitEnvName(name: string): { kind?: ClusterKind; rest: string } {
  const rest = name.slice('DASK_CLOUD_'.length);
  for (const k of KINDS) {
    const prefix = `${k.toUpperCase()}_`;
    if (rest.startsWith(prefix)) return { kind: k, rest: rest.slice(prefix.length) };
  }
  return { rest };
}

/** The option a variable's name part (`N_WORKERS`) names among `specs`, compared exactly. */
function optionOfEnvName(specs: readonly OptionSpec[], rest: string): OptionSpec | undefined {
  return specs.find((s) => toEnvName(s.name) === rest);
}

/** Names other kinds go by in variables people write: `DASK_CLOUD_AWS_REGION` meant ec2. */
const KIND_ALIASES: Readonly<Record<string, ClusterKind>> = { AWS: 'ec2', DO: 'digitalocean', DROPLET: 'digitalocean', GOOGLE: 'gcp', GCE: 'gcp' };

/** The variable that was probably meant by an unknown `DASK_CLOUD_*` name. */
export function suggestEnvVariable(name: string): string | undefined {
  const { kind, rest } = splitEnvName(name);
  if (kind !== undefined) {
    const s = suggestOption(kind, rest);
    return s !== undefined && optionSpec(kind, s)?.fileAndEnv ? envVariableName(s, kind) : undefined;
  }
  // A kind under another name, or misspelled: DASK_CLOUD_AWS_REGION, DASK_CLOUD_GPC_ZONE.
  const m = /^([A-Z0-9]+)_(.+)$/.exec(rest);
  if (m) {
    const meant = KIND_ALIASES[m[1]!] ?? (closestName(KINDS, m[1]!) as ClusterKind | undefined);
    const s = meant === undefined ? undefined : optionSpec(meant, m[2]!.toLowerCase()) !== undefined ? m[2]!.toLowerCase() : suggestOption(meant, m[2]!);
    if (meant !== undefined && s !== undefined && optionSpec(meant, s)?.fileAndEnv) return envVariableName(s, meant);
  }
  const settings = [...NOT_OPTIONS].map((n) => n.slice('DASK_CLOUD_'.length));
  const s = closestName([...ALL_OPTION_NAMES, ...settings], rest);
  if (s === undefined) return undefined;
  return settings.includes(s) ? `DASK_CLOUD_${s}` : anyKindOption(s)?.fileAndEnv ? envVariableName(s) : undefined;
}

function readEnvLayer(kind: ClusterKind, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const shared: Record<string, unknown> = {};
  const own: Record<string, unknown> = {};
  // Sorted, so that with several unknown variables the same one is reported every time.
  for (const name of Object.keys(env).sort()) {
    const raw = env[name];
    if (raw === undefined || !name.startsWith('DASK_CLOUD_') || NOT_OPTIONS.has(name)) continue;
    const { kind: varKind, rest } = splitEnvName(name);
    const spec = varKind === undefined ? KINDS.map((k) => optionOfEnvName(optionSpecs(k), rest)).find((s) => s !== undefined) : optionOfEnvName(optionSpecs(varKind), rest);
    if (spec === undefined) {
      // The name only: a variable's value may be private.
      const suggestion = suggestEnvVariable(name);
      const scope = varKind === undefined ? '' : ` of ${CLUSTER_CLASSES[varKind]}`;
      const help = suggestion === undefined ? ': DASK_CLOUD_<OPTION> and DASK_CLOUD_<KIND>_<OPTION> name options in SCREAMING_SNAKE_CASE, e.g. DASK_CLOUD_N_WORKERS' : '';
      throw new ValidationError(`${name} is not an option${scope}${didYouMean(suggestion, false)}${help}`, {
        option: name,
        details: { reason: 'unknown-option', source: 'env', variable: name, ...(suggestion === undefined ? {} : { suggestion }) },
      });
    }
    if (!spec.fileAndEnv) throw new ValidationError(`${spec.name} cannot be set through an environment variable (${name}): only code can pass it`, { option: spec.name, details: { source: 'env', variable: name } });
    if (varKind !== undefined && varKind !== kind) continue;
    const mine = optionSpec(kind, spec.name);
    if (mine === undefined) continue; // a shared variable for the kinds that have the option
    (varKind === undefined ? shared : own)[spec.name] = optionFromText(mine, raw, name);
  }
  return { ...shared, ...own };
}

/**
 * The options a cluster of `kind` is built from: the caller's options over environment variables
 * over the config file. `undefined` in the caller's options does not override a configured value.
 */
export function resolveOptions<T extends object>(kind: ClusterKind, options: T, env: NodeJS.ProcessEnv = process.env): T {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new ValidationError(`options must be an object, got ${describeValue(options)}`, { option: 'options' });
  }
  const given = snapshot(options, 'options', 0) as Record<string, unknown>;
  checkOptionKeys(kind, given);
  const file = configFilePath(env);
  const fromFile = readFileLayer(kind, file, Boolean(env.DASK_CLOUD_CONFIG));
  const fromEnv = readEnvLayer(kind, env);
  for (const k of Object.keys(given)) if (given[k] === undefined) delete given[k];
  return { ...fromFile, ...fromEnv, ...given } as T;
}

/** How deep plain objects and arrays are copied: options nest two or three levels at most. */
const SNAPSHOT_DEPTH = 4;

/**
 * A copy of the caller's plain objects and arrays, read once: a getter or proxy that throws
 * becomes a ValidationError naming the option, and nothing can change under validation later.
 * Class instances (Security, AbortSignal, SDK clients) and functions are kept as they are.
 */
function snapshot(value: unknown, where: string, depth: number): unknown {
  if (typeof value !== 'object' || value === null || depth >= SNAPSHOT_DEPTH) return value;
  let isArray: boolean;
  let proto: unknown;
  try {
    isArray = Array.isArray(value);
    proto = Object.getPrototypeOf(value);
  } catch (err) {
    throw unreadable(where, err);
  }
  if (!isArray && proto !== Object.prototype && proto !== null) return value;
  let keys: string[];
  try {
    keys = Object.keys(value);
  } catch (err) {
    throw unreadable(where, err);
  }
  const copy: Record<string, unknown> = {};
  for (const k of keys) {
    const at = isArray ? `${where}[${k}]` : `${where}.${k}`;
    let v: unknown;
    try {
      v = (value as Record<string, unknown>)[k];
    } catch (err) {
      throw unreadable(at, err);
    }
    copy[k] = snapshot(v, at, depth + 1);
  }
  return isArray ? Object.assign([], copy) : copy;
}

function unreadable(where: string, err: unknown): ValidationError {
  const option = where.replace(/^options\.?/, '') || 'options';
  return new ValidationError(`${where} could not be read: ${err instanceof Error ? err.message : String(err)}`, { option, cause: err });
}
