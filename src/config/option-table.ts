/**
 * How option tables are written, and the tables every cluster kind shares. Each cloud's own
 * table lives in its provider folder (`providers/<cloud>/schema.ts`) and is built with
 * {@link optionTable}, which makes TypeScript check that the table and the kind's Options
 * interface have exactly the same keys: adding an option to an interface without describing it
 * here (or the other way round) does not compile.
 */
import type { ClusterOptions } from '../cluster/cluster';
import type { VMClusterOptions } from '../cluster/vm';
import type { JsonSchema, OptionType } from './schema';

/** One option, as a table declares it (the name is its key). */
export interface OptionDecl {
  readonly type: OptionType;
  /** One line, for --help and the JSON Schema. */
  readonly description: string;
  /** For strings: the only values allowed. */
  readonly enum?: readonly string[];
  /** The CLI flag, without dashes. */
  readonly flag?: string;
  /** `false`: only code may pass it (a secret, a function, an SDK object). Default: it may come from the config file and DASK_CLOUD_* variables. */
  readonly fileAndEnv?: false;
  /** A credential: never read from a file, never shown. */
  readonly secret?: true;
  /** Other forms the value may take besides `type`: a number (an image id, seconds), or `false` (off). */
  readonly alsoAccepts?: readonly ('number' | 'false')[];
  /** For `json` options: the shape, for the JSON Schema (editors complete it). */
  readonly jsonSchema?: JsonSchema;
}

/** A table of the options of `T`: one declaration per key. */
export type OptionTable<T> = { readonly [K in keyof T]-?: OptionDecl };

/**
 * `optionTable<GCPClusterOptions>()({ ... })`: the table, checked to have every key of the
 * interface (a missing one is an error) and no other (an extra one is typed `never`).
 */
export function optionTable<T extends object>() {
  return <D extends OptionTable<T>>(table: D & { readonly [K in Exclude<keyof D, keyof T>]: never }): D => table;
}

/** The table without `keys` (for a kind that replaces a shared option with its own). */
export function withoutKeys<D extends object, K extends keyof D>(table: D, ...keys: K[]): Omit<D, K> {
  const out: Record<string, unknown> = { ...(table as Record<string, unknown>) };
  for (const k of keys) delete out[k as string];
  return out as Omit<D, K>;
}

const STRINGS: JsonSchema = { type: 'object', additionalProperties: { type: 'string' } };

/** Options of every cluster kind (`ClusterOptions` in src/cluster/cluster.ts). */
export const CLUSTER_OPTIONS = optionTable<ClusterOptions>()({
  nWorkers: { type: 'integer', flag: 'workers', description: 'Workers to start with (default 1).' },
  security: {
    type: 'boolean',
    fileAndEnv: false,
    flag: 'security',
    description: 'true (default): fresh cluster-scoped TLS credentials; false: plain tcp://, no authentication; or a Security object (code only).',
  },
  temporarySecurity: {
    type: 'json',
    description: 'Options of the generated credentials (key type, validity, TLS version, ciphers).',
    jsonSchema: { type: 'object' },
  },
  name: { type: 'string', flag: 'name', description: 'Cluster name prefix: the id becomes <name>-<8 hex> (default dask).' },
  workerNthreads: { type: 'integer', flag: 'worker-nthreads', description: 'Threads per worker (dask worker --nthreads).' },
  workerMemoryLimit: {
    type: 'bytes',
    alsoAccepts: ['number'],
    flag: 'worker-memory-limit',
    description: "Memory limit per worker (dask worker --memory-limit): a Dask size such as '4GiB', 'auto', a fraction up to 1, or 0 for none.",
  },
  workerOptions: { type: 'string[]', description: 'Extra dask worker arguments.' },
  schedulerOptions: { type: 'string[]', description: 'Extra dask scheduler arguments.' },
  idleTimeout: {
    type: 'duration',
    flag: 'idle-timeout',
    description: "The scheduler shuts down after this long without tasks: a Dask duration such as '2 hours', '90m' or '3600s'.",
  },
  env: { type: 'json', description: 'Environment variables for scheduler and workers.', jsonSchema: STRINGS },
  schedulerTimeoutMs: { type: 'integer', flag: 'scheduler-timeout-ms', description: 'Milliseconds for the scheduler to answer over (mutual) TLS.' },
  workersTimeoutMs: { type: 'integer', flag: 'workers-timeout-ms', description: 'Milliseconds for the initial workers to register.' },
  signal: { type: 'json', fileAndEnv: false, description: 'An AbortSignal that cancels start() (code only).' },
  onEvent: { type: 'json', fileAndEnv: false, description: 'A listener of typed progress events (code only).' },
  closeOnSignals: { type: 'boolean', description: 'Close the cluster on SIGINT, SIGTERM and SIGHUP (default true).' },
  python: { type: 'string', flag: 'python', description: 'The local Python you compute from (default: DASK_CLOUD_PYTHON, then python3 on PATH).' },
  strictVersions: { type: 'boolean', flag: 'strict-versions', description: "Fail the start when the cluster's Dask or Python differ from the local client's (default false: a warning)." },
  saveState: { type: 'boolean', description: "Write the cluster's local directory once started, so attach(id) and the CLI reach it (default true)." },
});

/** Options every VM cluster adds (`VMClusterOptions` in src/cluster/vm.ts). */
export const VM_OPTIONS = optionTable<Omit<VMClusterOptions, keyof ClusterOptions>>()({
  privateNetworking: { type: 'boolean', flag: 'private', description: 'No public addresses: the scheduler is reachable only from inside the network (default false).' },
  ingressCidrs: { type: 'string[]', flag: 'ingress-cidrs', description: "Public mode: who may reach the scheduler port (default ['0.0.0.0/0']: mutual TLS guards it)." },
  schedulerPort: { type: 'integer', flag: 'scheduler-port', description: 'Scheduler port (default 8786).' },
  exposeDashboard: { type: 'boolean', flag: 'expose-dashboard', description: 'Open the dashboard port to ingressCidrs too (default false: reach it through a tunnel).' },
  runtime: { type: 'string', enum: ['docker', 'native'], flag: 'runtime', description: "docker (default) runs the Dask image; native runs the VM image's own dask." },
  dockerImage: { type: 'string', flag: 'docker-image', description: 'Docker image the VMs run (default: the Dask image matching daskVersion and pythonVersion).' },
  daskVersion: { type: 'string', flag: 'dask-version', description: "Dask release of the default image: 'auto' (default, follows the local client) or e.g. '2024.12.1'." },
  pythonVersion: { type: 'string', flag: 'python-version', description: "Python minor of the default image, e.g. '3.12' (default: the local client's)." },
  installDocker: { type: 'boolean', description: 'Docker runtime: install Docker on boot when missing (default true).' },
  gpu: { type: 'boolean', flag: 'gpu', description: 'Docker runtime: pass the GPUs to the containers (--gpus all).' },
  pythonPath: { type: 'string', description: 'Native runtime: the interpreter that has distributed (default /usr/bin/python3).' },
  bootstrap: { type: 'string[]', description: 'Shell commands each VM runs before Dask starts.' },
  autoShutdown: { type: 'boolean', description: 'Power a VM off when its Dask process exits (default true).' },
  expiresAfterHours: { type: 'number', flag: 'expires-after-hours', description: 'Hours after which resources count as expired for cleanup sweeps (default 24).' },
  memberWatchIntervalMs: { type: 'integer', description: "Milliseconds between listings of the cluster's VMs, to notice one that stopped (default 15000; 0: off)." },
});
