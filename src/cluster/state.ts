/**
 * A cluster's local directory: what this machine needs to reach a cluster that outlives the
 * process that started it. The cloud holds the truth about what exists (labels and tags); this
 * directory holds only what must never go to the cloud (the client key) and the few settings a
 * new handle needs:
 *
 *   <config dir>/dask-cloud/clusters/<id>/   (0700)
 *     ca.pem  client.pem  client.key  dask.yaml   DASK_CONFIG=<dir> makes a Python Client() connect
 *     worker.pem  worker.key                      VM clusters: new workers' credentials (scale up)
 *     cluster.record                              JSON: kind, location, addresses, non-secret options
 *
 * The record is not named `*.json`: Dask reads every `.json`/`.yaml` file of DASK_CONFIG as config.
 * Env values, bootstrap commands and cloud credentials are never written here.
 */
import { readdirSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { DaskCloudError, ValidationError } from '../errors';
import { Security, TLS_FILE_NAMES } from '../security/security';
import { writePrivateFiles } from '../security/private-dir';
import { writeClientConfig } from './client-config';

/** Where cluster directories live: `DASK_CLOUD_HOME/clusters`, else the user config dir's `dask-cloud/clusters`. */
export function clustersRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DASK_CLOUD_HOME) return path.join(path.resolve(env.DASK_CLOUD_HOME), 'clusters');
  const base =
    env.XDG_CONFIG_HOME ||
    (process.platform === 'win32' && env.APPDATA ? env.APPDATA : path.join(os.homedir(), '.config'));
  return path.join(base, 'dask-cloud', 'clusters');
}

const ID = /^[a-z][a-z0-9-]{0,31}-[0-9a-f]{8}$/;

/** A cluster id as dask-cloud makes them (`<name>-<8 hex>`); anything else cannot name a directory. */
export function checkClusterId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || !ID.test(id)) {
    throw new ValidationError(`${JSON.stringify(id)} is not a dask-cloud cluster id (such as dask-1a2b3c4d): dask-cloud ls lists them`, { option: 'id' });
  }
}

/** The directory of cluster `id`. */
export function clusterDir(id: string, env: NodeJS.ProcessEnv = process.env): string {
  checkClusterId(id);
  return path.join(clustersRoot(env), id);
}

export const RECORD_FILE = 'cluster.record';

/** What `cluster.record` holds: nothing secret. */
export interface ClusterRecord {
  format: 1;
  id: string;
  /** `local`, `gcp`, `ec2`, `digitalocean`. */
  kind: string;
  /** When the cluster finished starting (ISO 8601). */
  startedAt: string;
  schedulerAddress: string;
  dashboardLink?: string;
  /** `false` when security is off; else the TLS settings the files need. */
  tls: false | { requireEncryption: boolean; tlsMinVersion?: string; tlsMaxVersion?: string; tlsCiphers?: string; worker: boolean };
  /** The options a new handle is built with: the cluster's own, minus anything secret or local. */
  options: Record<string, unknown>;
  /** Names of the `env` variables the cluster was started with (their values are never written). */
  envNames: string[];
  /** Whether it was started with `bootstrap` commands (never written: they may hold secrets). */
  bootstrap: boolean;
  /** What the backend needs to take the cluster over (VM: the image, the expiry; local: the owner). */
  backend: Record<string, unknown>;
}

/** The directory is missing: attaching needs what the starting machine wrote. */
export class NoLocalStateError extends DaskCloudError {
  constructor(id: string, dir: string) {
    super(
      'E_NO_LOCAL_STATE',
      `no local directory for cluster ${id} (${dir}): it holds the client credentials, which never leave the machine that started the cluster. ` +
        'Copy that directory here (keep it 0700) to attach; without it, dask-cloud ls and dask-cloud down still work from the cloud\'s labels',
      { details: { clusterId: id, dir } },
    );
  }
}

/**
 * Write the cluster's directory: the client config (as `writeClientConfig`), the worker's
 * credentials when asked, and the record (written last: a directory with a record is complete).
 */
export async function saveClusterState(record: ClusterRecord, security: Security | false, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const dir = clusterDir(record.id, env);
  await writeClientConfig(security, dir, record.schedulerAddress, record.dashboardLink);
  const files: Array<{ name: string; content: string; mode: number }> = [];
  if (security !== false && record.tls !== false && record.tls.worker) {
    // The worker's own pair (tlsFiles never yields another role's key), for scale-up from here.
    for (const f of security.tlsFiles('worker', dir).slice(1)) files.push({ name: path.basename(f.path), content: f.content, mode: parseInt(f.mode, 8) });
  }
  files.push({ name: RECORD_FILE, content: `${JSON.stringify(record, null, 2)}\n`, mode: 0o600 });
  await writePrivateFiles(dir, files);
  return dir;
}

/** Update the record only (scheduler address or dashboard link changed). */
export async function updateClusterRecord(record: ClusterRecord, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  await writePrivateFiles(clusterDir(record.id, env), [{ name: RECORD_FILE, content: `${JSON.stringify(record, null, 2)}\n`, mode: 0o600 }]);
}

/** Cluster `id`'s directory and record (no credentials read). */
export async function readRecordOf(id: string, env: NodeJS.ProcessEnv = process.env): Promise<{ dir: string; record: ClusterRecord }> {
  const dir = clusterDir(id, env);
  return { dir, record: await readRecord(id, dir) };
}

/** Read cluster `id`'s record and credentials; `kind` must match when given. */
export async function loadClusterState(id: string, kind?: string, env: NodeJS.ProcessEnv = process.env): Promise<{ dir: string; record: ClusterRecord; security: Security | false }> {
  const dir = clusterDir(id, env);
  const record = await readRecord(id, dir);
  if (kind !== undefined && record.kind !== kind) {
    throw new ValidationError(`cluster ${id} is a ${record.kind} cluster, not ${kind}`, { option: 'id' });
  }
  if (record.tls === false) return { dir, record, security: false };
  const { requireEncryption, tlsMinVersion, tlsMaxVersion, tlsCiphers, worker } = record.tls;
  const security = Security.fromFiles({
    tlsCaFile: path.join(dir, TLS_FILE_NAMES.ca),
    tlsClientCert: path.join(dir, TLS_FILE_NAMES.cert('client')),
    tlsClientKey: path.join(dir, TLS_FILE_NAMES.key('client')),
    ...(worker ? { tlsWorkerCert: path.join(dir, TLS_FILE_NAMES.cert('worker')), tlsWorkerKey: path.join(dir, TLS_FILE_NAMES.key('worker')) } : {}),
    requireEncryption,
    ...(tlsMinVersion === undefined ? {} : { tlsMinVersion }),
    ...(tlsMaxVersion === undefined ? {} : { tlsMaxVersion }),
    ...(tlsCiphers === undefined ? {} : { tlsCiphers }),
  });
  return { dir, record, security };
}

async function readRecord(id: string, dir: string): Promise<ClusterRecord> {
  let text: string;
  try {
    const st = await fs.lstat(dir);
    if (!st.isDirectory()) throw new ValidationError(`${dir} is not a directory`, { option: 'id' });
    text = await fs.readFile(path.join(dir, RECORD_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NoLocalStateError(id, dir);
    throw err;
  }
  let record: ClusterRecord;
  try {
    record = JSON.parse(text) as ClusterRecord;
  } catch (err) {
    throw new ValidationError(`${path.join(dir, RECORD_FILE)} is not valid JSON: remove the directory, or run dask-cloud down ${id}`, { option: 'id', cause: err });
  }
  if (record?.format !== 1 || record.id !== id || typeof record.kind !== 'string' || typeof record.schedulerAddress !== 'string') {
    throw new ValidationError(`${path.join(dir, RECORD_FILE)} is not a cluster record of ${id}`, { option: 'id' });
  }
  return record;
}

/** Remove cluster `id`'s directory (gone already counts as done). */
export async function removeClusterState(id: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  await fs.rm(clusterDir(id, env), { recursive: true, force: true });
}

/** The records of every cluster directory on this machine (unreadable ones skipped). */
export async function listClusterStates(env: NodeJS.ProcessEnv = process.env): Promise<ClusterRecord[]> {
  const root = clustersRoot(env);
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const records: ClusterRecord[] = [];
  for (const name of names.filter((n) => ID.test(n)).sort()) {
    try {
      records.push(await readRecord(name, path.join(root, name)));
    } catch {
      // a directory without a readable record is not a cluster's (yet)
    }
  }
  return records;
}

/**
 * Options that never go into a record: secrets (env values, bootstrap commands, credentials,
 * clients), objects only code can build, and what belongs to one process or machine.
 */
const NOT_SAVED = new Set([
  'env',
  'bootstrap',
  'security',
  'temporarySecurity',
  'signal',
  'onEvent',
  'closeOnSignals',
  'python',
  'saveState',
  'token',
  'credentials',
  'authClient',
  'clientOptions',
  'clients',
  'client',
]);

/** The JSON-safe, non-secret part of a cluster's options. */
export function savableOptions(options: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(options)) {
    if (NOT_SAVED.has(k) || v === undefined) continue;
    if (isPlainJson(v, 0)) out[k] = v;
  }
  return out;
}

function isPlainJson(v: unknown, depth: number): boolean {
  if (depth > 4) return false;
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return true;
  if (typeof v === 'number') return Number.isFinite(v);
  if (Array.isArray(v)) return v.every((x) => isPlainJson(x, depth + 1));
  if (typeof v === 'object') {
    const proto = Object.getPrototypeOf(v) as unknown;
    return (proto === Object.prototype || proto === null) && Object.values(v as object).every((x) => isPlainJson(x, depth + 1));
  }
  return false;
}
