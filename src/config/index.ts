/**
 * Option resolution, lowest to highest precedence:
 *
 *   built-in defaults  <  config file  <  environment variables  <  constructor options
 *
 * Config file: `DASK_CLOUD_CONFIG`, else `$XDG_CONFIG_HOME/dask-cloud/config.yaml` (or
 * `~/.config/dask-cloud/config.yaml`), when it exists. Top-level `cluster:` holds options for
 * every kind of cluster; `local:`, `gcp:`, `ec2:`, `digitalocean:` hold one kind's:
 *
 *   cluster: { nWorkers: 4, idleTimeout: 2 hours }
 *   gcp: { projectId: my-proj, zone: europe-west4-a }
 *
 * Environment: `DASK_CLOUD_<OPTION>` for every kind, `DASK_CLOUD_<KIND>_<OPTION>` for one, with
 * the option in SCREAMING_SNAKE_CASE: `DASK_CLOUD_N_WORKERS=4`, `DASK_CLOUD_GCP_PROJECT_ID=p`.
 * Values are read as JSON when they parse as JSON (numbers, booleans, arrays, objects), else as
 * strings. Resolved values go through the same validation as constructor options, so a bad value
 * in a file or variable fails with the same typed error before any cloud call.
 *
 * Secrets (tokens, keys) are never read from the config file: keep them in the environment
 * variables each cloud's SDK already reads.
 */
import { existsSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ValidationError } from '../errors';
import { describeValue } from './bounds';
import { loadYaml } from '../lazy';

export type ClusterKind = 'local' | 'gcp' | 'ec2' | 'digitalocean';

const KINDS: readonly ClusterKind[] = ['local', 'gcp', 'ec2', 'digitalocean'];
const SECTIONS = ['cluster', ...KINDS];
/** Options that must never come from a file on disk. */
const SECRET_OPTIONS = new Set(['token', 'credentials', 'authClient', 'client', 'clients', 'security']);
/** Options that are objects only code can build. */
const CODE_ONLY = new Set(['signal', 'onEvent', 'client', 'clients', 'authClient', 'credentials', 'security']);

/** DASK_CLOUD_* variables that are settings of the library itself, not cluster options. */
const NOT_OPTIONS = new Set(['DASK_CLOUD_CONFIG', 'DASK_CLOUD_PYTHON', 'DASK_CLOUD_HOME']);

/** `nWorkers` → `N_WORKERS`, `projectId` → `PROJECT_ID`. */
export function toEnvName(option: string): string {
  return option.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/** `N_WORKERS` → `nWorkers`. */
function fromEnvName(name: string): string {
  return name.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function parseValue(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/** Where the config file is looked for. */
export function configFilePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DASK_CLOUD_CONFIG) return env.DASK_CLOUD_CONFIG;
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'dask-cloud', 'config.yaml');
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
  for (const [section, values] of Object.entries(sections)) {
    if (!SECTIONS.includes(section)) {
      throw new ValidationError(`config file ${file}: unknown section ${JSON.stringify(section)} (expected ${SECTIONS.join(', ')})`, { option: 'DASK_CLOUD_CONFIG' });
    }
    if (typeof values !== 'object' || values === null || Array.isArray(values)) {
      throw new ValidationError(`config file ${file}: section ${section} must be a mapping of options`, { option: 'DASK_CLOUD_CONFIG' });
    }
    for (const k of Object.keys(values)) {
      if (SECRET_OPTIONS.has(k)) {
        throw new ValidationError(`config file ${file}: ${section}.${k} does not belong in a file; pass it in code or through the cloud's own environment variables`, { option: k });
      }
    }
  }
  // The kind's own section overrides the shared one.
  return { ...(sections.cluster as object | undefined), ...(sections[kind] as object | undefined) };
}

function readEnvLayer(kind: ClusterKind, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const shared: Record<string, unknown> = {};
  const own: Record<string, unknown> = {};
  const ownPrefix = `DASK_CLOUD_${kind.toUpperCase()}_`;
  const otherPrefixes = KINDS.filter((k) => k !== kind).map((k) => `DASK_CLOUD_${k.toUpperCase()}_`);
  for (const [name, raw] of Object.entries(env)) {
    if (raw === undefined || !name.startsWith('DASK_CLOUD_') || NOT_OPTIONS.has(name)) continue;
    if (name.startsWith(ownPrefix)) {
      own[fromEnvName(name.slice(ownPrefix.length))] = parseValue(raw);
    } else if (!otherPrefixes.some((p) => name.startsWith(p))) {
      shared[fromEnvName(name.slice('DASK_CLOUD_'.length))] = parseValue(raw);
    }
  }
  for (const k of [...Object.keys(shared), ...Object.keys(own)]) {
    if (CODE_ONLY.has(k)) throw new ValidationError(`${k} cannot be set through an environment variable`, { option: k });
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
