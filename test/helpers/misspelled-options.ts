/**
 * The misspelled-option table (issue 11): one row per way a user gets an option wrong, in every
 * place options come from, with the option the library must suggest. test/unit/options-schema.test.ts
 * runs the constructor, file and env rows; the CLI's tests add rows with `source: 'cli'` (their
 * `args`) to the same table shape, and can reuse the other rows' `meant` to find the flag.
 */
import type { ClusterKind } from '../../src/config';

export type OptionSource = 'constructor' | 'file' | 'env' | 'cli';

export interface MisspelledOption {
  /** What the row is about, for the test's name. */
  name: string;
  /** The cluster kind built (or `--provider`). */
  kind: ClusterKind;
  source: OptionSource;
  /** `constructor`: the options given (on top of valid ones for the kind). */
  options?: Record<string, unknown>;
  /** `file`: the config file's YAML. */
  file?: string;
  /** `env`: DASK_CLOUD_* variables set. */
  env?: Record<string, string>;
  /** `cli`: the arguments after `dask-cloud`. */
  args?: readonly string[];
  /** Text the error message must contain (the place it came from, and the suggestion). */
  message: readonly (string | RegExp)[];
  /** The error's `details.option`. */
  option: string;
  /** The error's `details.suggestion`, written the way that place spells it; undefined: none is expected. */
  suggestion?: string;
  /** The option that was meant, camelCase (for the CLI: its flag). */
  meant?: string;
}

/** Rows for constructor options, the config file and DASK_CLOUD_* variables. */
export const MISSPELLED_OPTIONS: readonly MisspelledOption[] = [
  // --- constructor options ------------------------------------------------------------------
  {
    name: 'nworkers (case)',
    kind: 'local',
    source: 'constructor',
    options: { nworkers: 2 },
    message: ['LocalCluster options: unknown option "nworkers" (did you mean "nWorkers"?)'],
    option: 'nworkers',
    suggestion: 'nWorkers',
    meant: 'nWorkers',
  },
  {
    name: 'n_workers (dask-cloudprovider)',
    kind: 'gcp',
    source: 'constructor',
    options: { n_workers: 2 },
    message: ['GCPCluster options: unknown option "n_workers" (did you mean "nWorkers"?)'],
    option: 'n_workers',
    suggestion: 'nWorkers',
    meant: 'nWorkers',
  },
  {
    name: 'nWorker (one letter short)',
    kind: 'digitalocean',
    source: 'constructor',
    options: { nWorker: 2 },
    message: ['unknown option "nWorker" (did you mean "nWorkers"?)'],
    option: 'nWorker',
    suggestion: 'nWorkers',
    meant: 'nWorkers',
  },
  {
    name: 'machine_type on GCP',
    kind: 'gcp',
    source: 'constructor',
    options: { machine_type: 'e2-standard-4' },
    message: ['unknown option "machine_type" (did you mean "machineType"?)'],
    option: 'machine_type',
    suggestion: 'machineType',
    meant: 'machineType',
  },
  {
    name: 'machine_type on EC2 is an instance type',
    kind: 'ec2',
    source: 'constructor',
    options: { machine_type: 'm6i.large' },
    message: ['EC2Cluster options: unknown option "machine_type" (did you mean "instanceType"?)'],
    option: 'machine_type',
    suggestion: 'instanceType',
    meant: 'instanceType',
  },
  {
    name: 'machine_type on DigitalOcean is a size',
    kind: 'digitalocean',
    source: 'constructor',
    options: { machine_type: 's-2vcpu-4gb' },
    message: ['DropletCluster options: unknown option "machine_type" (did you mean "size"?)'],
    option: 'machine_type',
    suggestion: 'size',
    meant: 'size',
  },
  {
    name: 'worker_mem (dask-cloudprovider ECS)',
    kind: 'ec2',
    source: 'constructor',
    options: { worker_mem: '4GiB' },
    message: ['unknown option "worker_mem" (did you mean "workerMemoryLimit"?)'],
    option: 'worker_mem',
    suggestion: 'workerMemoryLimit',
    meant: 'workerMemoryLimit',
  },
  {
    name: 'filesystem_size on GCP',
    kind: 'gcp',
    source: 'constructor',
    options: { filesystem_size: 100 },
    message: ['unknown option "filesystem_size" (did you mean "diskSizeGb"?)'],
    option: 'filesystem_size',
    suggestion: 'diskSizeGb',
    meant: 'diskSizeGb',
  },
  {
    name: 'ngpus on GCP',
    kind: 'gcp',
    source: 'constructor',
    options: { ngpus: 1 },
    message: ['unknown option "ngpus" (did you mean "gpu"?)'],
    option: 'ngpus',
    suggestion: 'gpu',
    meant: 'gpu',
  },
  {
    name: "another kind's option",
    kind: 'local',
    source: 'constructor',
    options: { region: 'eu-west-1' },
    message: ['LocalCluster options: unknown option "region" (it is an option of EC2Cluster, DropletCluster)'],
    option: 'region',
  },
  {
    name: "idleTimeout 'two hours'",
    kind: 'local',
    source: 'constructor',
    options: { idleTimeout: 'two hours' },
    message: ['idleTimeout must be a Dask duration', '"two hours"'],
    option: 'idleTimeout',
  },
  {
    name: "workerMemoryLimit '4 GiB-ish'",
    kind: 'gcp',
    source: 'constructor',
    options: { workerMemoryLimit: '4 GiB-ish' },
    message: ['workerMemoryLimit must be what dask worker --memory-limit reads', '"4 GiB-ish"'],
    option: 'workerMemoryLimit',
  },
  // --- the config file ----------------------------------------------------------------------
  {
    name: 'nworkers in the cluster section',
    kind: 'local',
    source: 'file',
    file: 'cluster:\n  nworkers: 2\n',
    message: [/config file \S+\.yaml, section cluster: unknown option "nworkers" \(did you mean "nWorkers"\?\)/],
    option: 'nworkers',
    suggestion: 'nWorkers',
    meant: 'nWorkers',
  },
  {
    name: 'machine_type in the ec2 section',
    kind: 'ec2',
    source: 'file',
    file: 'ec2:\n  machine_type: m6i.large\n',
    message: [/section ec2: unknown option "machine_type" \(did you mean "instanceType"\?\)/],
    option: 'machine_type',
    suggestion: 'instanceType',
    meant: 'instanceType',
  },
  {
    name: "n_workers in the gcp section, read by a LocalCluster (the whole file is checked)",
    kind: 'local',
    source: 'file',
    file: 'gcp:\n  n_workers: 3\n',
    message: [/section gcp: unknown option "n_workers" \(did you mean "nWorkers"\?\)/],
    option: 'n_workers',
    suggestion: 'nWorkers',
    meant: 'nWorkers',
  },
  {
    name: 'a misspelled section',
    kind: 'local',
    source: 'file',
    file: 'clusters:\n  nWorkers: 2\n',
    message: ['unknown section "clusters" (did you mean "cluster"?)'],
    option: 'DASK_CLOUD_CONFIG',
    suggestion: 'cluster',
  },
  {
    name: "idleTimeout 'two hours' in the file",
    kind: 'digitalocean',
    source: 'file',
    file: 'cluster:\n  idleTimeout: two hours\n',
    message: [/section cluster: idleTimeout must be a Dask duration/],
    option: 'idleTimeout',
  },
  {
    name: "workerMemoryLimit '4 GiB-ish' in the file",
    kind: 'local',
    source: 'file',
    file: 'local:\n  workerMemoryLimit: 4 GiB-ish\n',
    message: [/section local: workerMemoryLimit must be a Dask size/],
    option: 'workerMemoryLimit',
  },
  // --- DASK_CLOUD_* variables ---------------------------------------------------------------
  {
    name: 'DASK_CLOUD_NWORKERS',
    kind: 'local',
    source: 'env',
    env: { DASK_CLOUD_NWORKERS: '2' },
    message: ['DASK_CLOUD_NWORKERS is not an option (did you mean DASK_CLOUD_N_WORKERS?)'],
    option: 'DASK_CLOUD_NWORKERS',
    suggestion: 'DASK_CLOUD_N_WORKERS',
    meant: 'nWorkers',
  },
  {
    name: 'DASK_CLOUD_N_WORKER',
    kind: 'ec2',
    source: 'env',
    env: { DASK_CLOUD_N_WORKER: '2' },
    message: ['DASK_CLOUD_N_WORKER is not an option (did you mean DASK_CLOUD_N_WORKERS?)'],
    option: 'DASK_CLOUD_N_WORKER',
    suggestion: 'DASK_CLOUD_N_WORKERS',
    meant: 'nWorkers',
  },
  {
    name: 'DASK_CLOUD_GCP_MACHINETYPE',
    kind: 'gcp',
    source: 'env',
    env: { DASK_CLOUD_GCP_MACHINETYPE: 'e2-standard-4' },
    message: ['DASK_CLOUD_GCP_MACHINETYPE is not an option of GCPCluster (did you mean DASK_CLOUD_GCP_MACHINE_TYPE?)'],
    option: 'DASK_CLOUD_GCP_MACHINETYPE',
    suggestion: 'DASK_CLOUD_GCP_MACHINE_TYPE',
    meant: 'machineType',
  },
  {
    name: 'DASK_CLOUD_DIGITALOCEAN_MACHINE_TYPE, read by a LocalCluster',
    kind: 'local',
    source: 'env',
    env: { DASK_CLOUD_DIGITALOCEAN_MACHINE_TYPE: 's-2vcpu-4gb' },
    message: ['DASK_CLOUD_DIGITALOCEAN_MACHINE_TYPE is not an option of DropletCluster (did you mean DASK_CLOUD_DIGITALOCEAN_SIZE?)'],
    option: 'DASK_CLOUD_DIGITALOCEAN_MACHINE_TYPE',
    suggestion: 'DASK_CLOUD_DIGITALOCEAN_SIZE',
    meant: 'size',
  },
  {
    name: 'DASK_CLOUD_AWS_REGION (another name for ec2)',
    kind: 'ec2',
    source: 'env',
    env: { DASK_CLOUD_AWS_REGION: 'eu-west-1' },
    message: ['DASK_CLOUD_AWS_REGION is not an option (did you mean DASK_CLOUD_EC2_REGION?)'],
    option: 'DASK_CLOUD_AWS_REGION',
    suggestion: 'DASK_CLOUD_EC2_REGION',
    meant: 'region',
  },
  {
    name: 'DASK_CLOUD_CONFG (a library setting)',
    kind: 'local',
    source: 'env',
    env: { DASK_CLOUD_CONFG: '/nowhere.yaml' },
    message: ['DASK_CLOUD_CONFG is not an option (did you mean DASK_CLOUD_CONFIG?)'],
    option: 'DASK_CLOUD_CONFG',
    suggestion: 'DASK_CLOUD_CONFIG',
  },
  {
    name: "DASK_CLOUD_IDLE_TIMEOUT='two hours'",
    kind: 'gcp',
    source: 'env',
    env: { DASK_CLOUD_IDLE_TIMEOUT: 'two hours' },
    message: ['DASK_CLOUD_IDLE_TIMEOUT (idleTimeout) must be a Dask duration'],
    option: 'idleTimeout',
  },
  {
    name: "DASK_CLOUD_WORKER_MEMORY_LIMIT='4 GiB-ish'",
    kind: 'local',
    source: 'env',
    env: { DASK_CLOUD_WORKER_MEMORY_LIMIT: '4 GiB-ish' },
    message: ['DASK_CLOUD_WORKER_MEMORY_LIMIT (workerMemoryLimit) must be a Dask size'],
    option: 'workerMemoryLimit',
  },
  {
    name: "DASK_CLOUD_N_WORKERS='' (empty)",
    kind: 'local',
    source: 'env',
    env: { DASK_CLOUD_N_WORKERS: '' },
    message: ['DASK_CLOUD_N_WORKERS (nWorkers) is empty'],
    option: 'nWorkers',
  },
];
