#!/usr/bin/env node
/**
 * The `dask-cloud` command line.
 *
 *   dask-cloud start [--provider local|gcp|ec2|digitalocean] [--workers N] [--client-config DIR] [--no-security] [--strict-versions] [--private] [provider options]
 *   dask-cloud local [...]   (= start --provider local)
 *   dask-cloud user-data --role scheduler|worker [--scheduler-address A] [--runtime docker|native] [--dask-version V] [--no-security]
 *   dask-cloud cleanup --provider gcp|ec2|digitalocean (--cluster ID ... | --expired | --all) [--dry-run] [provider options]
 *   dask-cloud cleanup --provider local [--cluster ID ...] [--dry-run]
 *   dask-cloud ls [--provider local|gcp|ec2|digitalocean] [--json] [provider options]
 *   dask-cloud up [start's options] [--idle-timeout D] [--json]
 *   dask-cloud info|logs|dashboard|env ID, dask-cloud scale ID N, dask-cloud down ID ... | --all --provider P [--yes]
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DaskCloudError } from './errors';
import { Security } from './security/security';
import { renderUserData } from './cloud-init';
import { decideDaskImage, imageClient } from './dask/images';
import { findPython } from './dask/python';
import { LocalCluster } from '../providers/local';
import type { CleanupReport, ClusterSummary } from './cluster/vm';
import type { Cluster, ClusterOptions } from './cluster/cluster';
import type { ClusterEvent } from './cluster/events';
import { formatVersionSet, type VersionReport, type VersionSet } from './dask/versions';
import type { VMCluster } from './cluster/vm';
import { checkClusterId, readRecordOf } from './cluster/state';

const USAGE = () => `usage:
  dask-cloud start [--provider local|gcp|ec2|digitalocean] [--workers N] [--client-config DIR]
      [--no-security] [--strict-versions] [--private] [--project P --zone Z | --region R] [--endpoint URL]
      start a cluster (mutual TLS unless --no-security), write the client config, run until
      Ctrl-C (or SIGTERM, or the terminal closing), then delete everything, waiting for the cloud
      to confirm; a signal during the start rolls it back. A second signal stops waiting and
      prints the cleanup command. The image follows the local Python's Dask; the versions of
      client, scheduler and workers are printed after start, and --strict-versions makes a
      mismatch fail the start. Other options come from the config file and DASK_CLOUD_*
      variables, credentials from each cloud's usual place
  dask-cloud local [--workers N] [--client-config DIR] [--no-security]
      the same as start --provider local
  dask-cloud up [--provider local|gcp|ec2|digitalocean] [--workers N] [--idle-timeout D] [--name NAME]
      [--client-config DIR] [--no-security] [--strict-versions] [--private] [--project P --zone Z | --region R]
      [--endpoint URL] [--json]
      start a cluster that outlives this command, write its directory (client credentials,
      dask.yaml), print its address, the DASK_CONFIG line and the next commands, and exit. Its
      scheduler shuts down after --idle-timeout without tasks (default ${UP_IDLE_TIMEOUT}); a local
      cluster runs in a process of its own
  dask-cloud info ID [--json]      what the cluster is: state, address, workers registered / asked, dashboard
  dask-cloud scale ID N [--no-wait]
      scale to N workers: up, then wait for them to register; down, retiring workers first
  dask-cloud logs ID [MEMBER]      each member's recent console or output (MEMBER: scheduler, worker-2, a name or id)
  dask-cloud dashboard ID [--port P]
      print the dashboard's URL on this machine: a VM cluster's through a tunnel over mutual TLS
      (open until Ctrl-C), a local cluster's directly
  dask-cloud env ID                print the shell line that points a Python client at the cluster
  dask-cloud down ID ... | --all --provider local|gcp|ec2|digitalocean [--yes]
      delete clusters and everything they created (by their labels), and their directories;
      without a directory, --provider and --project/--zone or --region say where one lives.
      --all asks first (or takes --yes)
  info, scale, logs, dashboard and env need the cluster's directory (written by up or start on
  the machine that started it); ls and down work from the cloud's labels alone
  dask-cloud user-data --role scheduler|worker [--scheduler-address tls://10.0.0.2:8786]
      [--runtime docker|native] [--docker-image IMAGE | --dask-version V [--python-version 3.X]]
      [--python PATH] [--no-security]
      print the cloud-init user-data a VM of that role boots from, with its private key elided
      (renderUserData() in the library gives the full text); the image is chosen as start
      would choose it (from the local Python's Dask unless given), and named on stderr
  dask-cloud doctor --provider gcp|ec2|digitalocean [--workers N] [--private] [--native]
      [--project P --zone Z | --region R] [--endpoint URL] [--json]
      check the account against the cluster those options would start, with read-only calls only:
      credentials (and where they came from), location, image, network and instance types, NAT for
      private mode, quota headroom, permissions; prints a checklist with the fix for each failure
      and exits 1 when a check fails. start runs the same checks first
  dask-cloud ls [--provider local|gcp|ec2|digitalocean] [--project P [--zone Z] | --region R] [--endpoint URL] [--json]
      list the account's dask-cloud clusters from their labels alone (read calls only): id,
      location, state, workers, scheduler address, creation and expiry; on gcp every zone of the
      project unless --zone names one. Without --provider: this machine's local clusters
  dask-cloud cleanup --provider gcp|ec2|digitalocean (--cluster ID ... | --expired | --all) [--dry-run]
      [--project P [--zone Z] | --region R] [--endpoint URL]
      delete what clusters left behind (instances by label, then firewalls / security groups);
      on gcp every zone of the project unless --zone names one
  dask-cloud cleanup --provider local [--cluster ID ...] [--dry-run]
      kill the Dask processes and remove the key directories of this user's local clusters whose
      owning process is gone (every such cluster unless --cluster names some); clusters whose
      owner still runs are left alone`;

/** Bad command-line input: exit code 2, one line on stderr, no stack trace. */
class UsageError extends Error {}

/** Exit code 2 (bad input: flags, options, config file, DASK_CLOUD_* variables) versus 1 (it failed). */
function isBadInput(err: unknown): boolean {
  if (err instanceof UsageError) return true;
  if (DaskCloudError.isInstance(err)) return ['E_INVALID_OPTION', 'E_TLS_VERSION', 'E_TLS_CIPHERS'].includes(err.code);
  // node:util parseArgs: unknown flag, missing value, ...
  return String((err as { code?: unknown })?.code ?? '').startsWith('ERR_PARSE_ARGS');
}

/** `--workers`: digits only (no '', '-1', '1.5', '1e3', '0x10'); the cluster checks the upper bound. */
function parseWorkers(text: string | undefined, what = '--workers'): number {
  if (text === undefined || !/^\d{1,9}$/.test(text)) throw new UsageError(`${what} must be a whole number >= 0, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** Replace the body of every PEM private key with a marker. */
export function redactKeys(text: string): string {
  return text.replace(/(-----BEGIN [A-Z ]*PRIVATE KEY-----)[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----)/g, '$1 (elided) $2');
}

const IMAGE_BASIS = {
  explicit: 'dockerImage',
  requested: 'daskVersion/pythonVersion',
  client: "matches the local client's Dask and Python",
  pinned: 'the pinned default',
} as const;

/** `client dask 2024.12.1, …; scheduler the same; 2 workers the same` (or what each runs). */
export function versionsLine(report: VersionReport): string {
  const same = (set: VersionSet) => report.client !== undefined && formatVersionSet(set) === formatVersionSet(report.client);
  const workers = Object.values(report.workers);
  const workersText =
    workers.length === 0
      ? 'no workers'
      : workers.every((w) => formatVersionSet(w) === formatVersionSet(report.scheduler))
        ? `${workers.length} worker(s) ${same(report.scheduler) ? 'the same' : 'as the scheduler'}`
        : `workers differ: ${workers.map((w) => formatVersionSet(w)).join(' | ')}`;
  const parts = [
    report.client === undefined ? 'client unknown (no local Python with Dask)' : `client ${formatVersionSet(report.client)}`,
    `scheduler ${same(report.scheduler) ? 'the same' : formatVersionSet(report.scheduler)}`,
    workersText,
  ];
  return `${parts.join('; ')}${report.mismatches.length > 0 ? ` (${report.mismatches.length} mismatch${report.mismatches.length === 1 ? '' : 'es'}: ${report.mismatches.map((m) => m.package).join(', ')})` : ''}`;
}

/** One line per progress event worth a person's attention, on stderr. */
function progress(e: ClusterEvent): void {
  switch (e.type) {
    case 'phase-end':
      console.error(`  ${e.phase} done (${Math.round(e.durationMs)} ms)`);
      break;
    case 'member-launched':
      console.error(`  launched ${e.role} ${e.name}`);
      break;
    case 'warning':
    case 'member-failed':
      console.error(`  ${e.type}: ${e.message}`);
      break;
    case 'rollback':
      console.error('  rolling back: deleting what was created');
      break;
    case 'image':
      console.error(`  image ${e.image} (${IMAGE_BASIS[e.basis]})`);
      break;
    case 'versions':
      console.error(`  versions: ${versionsLine(e.report)}`);
      break;
    default:
      break;
  }
}

/** How long an `up` cluster's scheduler waits without tasks before it shuts down, unless --idle-timeout says otherwise. */
export const UP_IDLE_TIMEOUT = '1 hour';

async function start(argv: string[], mode: 'foreground' | 'up' = 'foreground'): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      provider: { type: 'string', default: 'local' },
      workers: { type: 'string', default: '2' },
      'client-config': { type: 'string', ...(mode === 'foreground' ? { default: './dask-client' } : {}) },
      'idle-timeout': { type: 'string' },
      name: { type: 'string' },
      json: { type: 'boolean', default: false },
      'no-security': { type: 'boolean', default: false },
      'strict-versions': { type: 'boolean', default: false },
      private: { type: 'boolean', default: false },
      project: { type: 'string' },
      zone: { type: 'string' },
      region: { type: 'string' },
      endpoint: { type: 'string' },
    },
  });
  const nWorkers = parseWorkers(values.workers);
  if (mode === 'foreground' && values.json) throw new UsageError('--json is for up');
  const idleTimeout = values['idle-timeout'] ?? (mode === 'up' ? UP_IDLE_TIMEOUT : undefined);
  if (mode === 'up' && values.provider === 'local') return upLocal(values, nWorkers, idleTimeout);
  // The first SIGINT, SIGTERM or SIGHUP (the terminal closed) aborts the start, whose rollback
  // deletes everything created, or closes the running cluster: either waits as long as the cloud
  // takes to confirm each deletion. A second one stops waiting, says what may be left, and exits.
  const interrupted = new AbortController();
  let cluster: Cluster | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted.signal.aborted) giveUp(signal, cluster, values.endpoint);
    console.error(`  ${signal}: ${cluster ? `deleting everything ${cluster.id} created` : 'stopping'}; waiting for the cloud to confirm (a second signal stops waiting)`);
    interrupted.abort(new Error(`interrupted by ${signal}`));
  };
  // Once the terminal is gone, writes fail (EIO, EPIPE): that must not end the teardown.
  const ignore = (): void => undefined;
  process.stdout.on('error', ignore);
  process.stderr.on('error', ignore);
  for (const s of SIGNALS) process.on(s, onSignal);
  const schedulerLost = new AbortController();
  try {
    const common = {
      nWorkers,
      ...(idleTimeout === undefined ? {} : { idleTimeout }),
      ...(values.name === undefined ? {} : { name: values.name }),
      ...(values['no-security'] ? { security: false as const } : {}),
      ...(values['strict-versions'] ? { strictVersions: true } : {}),
      closeOnSignals: false,
      signal: interrupted.signal,
      onEvent: (e: ClusterEvent) => {
        progress(e);
        // A dead scheduler ends the session: holding its workers open would only cost money.
        if (e.type === 'member-failed' && e.role === 'scheduler') schedulerLost.abort(new Error(e.message));
      },
    };
    if (values.provider === 'local') {
      if (values.private || values.endpoint) throw new UsageError('--private and --endpoint are for cloud providers');
      cluster = new LocalCluster(common);
    } else {
      cluster = await vmCluster(values, common);
    }
    console.error(`starting ${cluster.id} (${values.provider}, ${nWorkers} workers)`);
    await cluster.start();
    if (mode === 'up') {
      if (values['client-config'] !== undefined) await cluster.writeClientConfig(values['client-config']);
      printUp(
        {
          id: cluster.id,
          kind: cluster.kind,
          schedulerAddress: cluster.schedulerAddress,
          workers: nWorkers,
          stateDir: cluster.stateDir,
          dashboardLink: cluster.dashboardLink,
          idleTimeout: idleTimeout!,
          python: cluster.versions?.client === undefined ? undefined : await findPython(undefined).then((p) => p.path, () => undefined),
        },
        values.json === true,
      );
      // Left running: this process exits without closing it.
      return 0;
    }
    try {
      await cluster.writeClientConfig(values['client-config']!);
      console.log(`scheduler ${cluster.schedulerAddress}, ${nWorkers} workers`);
      console.log(`client config in ${values['client-config']}: DASK_CONFIG=${values['client-config']} python3 -c "from distributed import Client; print(Client())"`);
      console.log('Ctrl-C stops the cluster.');
      // A cloud cluster leaves nothing in this process that keeps Node running (unlike local
      // processes): hold it open until the signal comes, or it would exit without closing.
      const keepAlive = setInterval(() => undefined, 1 << 30);
      try {
        const ended = AbortSignal.any([interrupted.signal, schedulerLost.signal]);
        if (!ended.aborted) await new Promise((resolve) => ended.addEventListener('abort', resolve, { once: true }));
      } finally {
        clearInterval(keepAlive);
      }
    } finally {
      await cluster.close();
    }
    if (schedulerLost.signal.aborted && !interrupted.signal.aborted) {
      console.error(`the scheduler of ${cluster.id} is gone, so the cluster was closed and everything it created deleted`);
      return 1;
    }
    console.log('closed');
    return 0;
  } finally {
    for (const s of SIGNALS) process.off(s, onSignal);
  }
}

interface UpResult {
  id: string;
  kind: string;
  schedulerAddress: string;
  workers: number;
  stateDir: string | undefined;
  dashboardLink?: string;
  idleTimeout: string;
  /** The interpreter whose Dask the cluster matches, for the copy-paste line. */
  python?: string;
}

/** What `up` prints: where the cluster is, how to use it, how long it lives, and how to end it. */
function printUp(r: UpResult, json: boolean): void {
  if (json) {
    console.log(JSON.stringify({ ...r, env: r.stateDir === undefined ? undefined : `DASK_CONFIG=${r.stateDir}` }, null, 2));
    return;
  }
  const py = r.python ?? 'python3';
  const rows: Array<[string, string]> = [
    ['scheduler', r.schedulerAddress],
    ['workers', String(r.workers)],
    ['idle timeout', `${r.idleTimeout}: the scheduler shuts down after that long without tasks (up --idle-timeout changes it)`],
  ];
  if (r.stateDir !== undefined) {
    rows.push(['client', `export DASK_CONFIG=${shellQuote(r.stateDir)}`]);
    rows.push(['try it', `DASK_CONFIG=${shellQuote(r.stateDir)} ${py} -c "from distributed import Client; print(Client())"`]);
  }
  rows.push(['dashboard', `dask-cloud dashboard ${r.id}`]);
  rows.push(['more', `dask-cloud info|scale|logs|env ${r.id}`]);
  rows.push(['end it', `dask-cloud down ${r.id}`]);
  const width = Math.max(...rows.map(([k]) => k.length));
  console.log(`cluster ${r.id} (${r.kind}) is up, and keeps running after this command:`);
  for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
}

/** A word for a POSIX shell: as it is when safe, else single-quoted. */
function shellQuote(text: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

/** `up --provider local`: a detached owner process runs the cluster; this command only waits for it to be up. */
async function upLocal(values: VMFlags & { json?: boolean; name?: string; 'client-config'?: string; 'no-security'?: boolean; 'strict-versions'?: boolean }, nWorkers: number, idleTimeout: string | undefined): Promise<number> {
  if (values.private || values.endpoint || values.project || values.zone || values.region) throw new UsageError('--private, --endpoint, --project, --zone and --region are for cloud providers');
  const { startDetachedLocal } = await import('../providers/local/supervisor');
  console.error(`starting a local cluster (${nWorkers} workers) in a process of its own`);
  const up = await startDetachedLocal({
    nWorkers,
    ...(idleTimeout === undefined ? {} : { idleTimeout }),
    ...(values.name === undefined ? {} : { name: values.name }),
    ...(values['no-security'] ? { security: false as const } : {}),
    ...(values['strict-versions'] ? { strictVersions: true } : {}),
  });
  if (values['client-config'] !== undefined) {
    const cluster = await LocalCluster.attach(up.id);
    await cluster.writeClientConfig(values['client-config']);
  }
  printUp(
    { id: up.id, kind: 'local', schedulerAddress: up.schedulerAddress, workers: nWorkers, stateDir: up.stateDir, dashboardLink: up.dashboardLink, idleTimeout: idleTimeout ?? UP_IDLE_TIMEOUT, python: await findPython(undefined).then((p) => p.path, () => undefined) },
    values.json === true,
  );
  return 0;
}

/** What `start` handles: Ctrl-C, `kill`, and the terminal closing. */
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * A second signal while the cluster is being deleted: exit at once (128 + the signal's number),
 * saying what may be left and the command that deletes it. Local processes are killed first:
 * they would outlive this process.
 */
function giveUp(signal: NodeJS.Signals, cluster: Cluster | undefined, endpoint: string | undefined): never {
  const lines = [`dask-cloud: second ${signal}: exiting before every deletion was confirmed.`];
  if (cluster === undefined || cluster.state === 'new') {
    lines.push('No cluster had been created yet: nothing is left.');
  } else if (cluster.state === 'closed') {
    lines.push(`Cluster ${cluster.id} is already deleted.`);
  } else {
    // Local processes would outlive this process: kill them now (a no-op for cloud clusters).
    cluster.killSync();
    const local = cluster.kind === 'local';
    // Members are forgotten only once their deletion is confirmed: these are the unconfirmed ones.
    const members = cluster.members.map((m) => `${m.role} ${m.name} (${m.id})`);
    lines.push(
      local
        ? `Killed the Dask processes of cluster ${cluster.id} (local); its key directory ${path.join(os.tmpdir(), `dask-cloud-local-${cluster.id}-*`)} may remain.`
        : `Cluster ${cluster.id} (${cluster.kind}) may have left: ${[...members, 'its firewall / security group and tags'].join(', ')}.`,
    );
    const command = cluster.cleanupCommand();
    if (command !== undefined) lines.push(`Delete what is left with: ${command}${endpoint && !local ? ` --endpoint ${endpoint}` : ''}`);
  }
  // Synchronous on pipes and terminals (Linux): printed before the exit.
  console.error(lines.join('\n'));
  process.exit(128 + (os.constants.signals[signal] ?? 0));
}

interface VMFlags {
  provider?: string;
  private?: boolean;
  native?: boolean;
  project?: string;
  zone?: string;
  region?: string;
  endpoint?: string;
}

/** The VM cluster the flags describe. Providers are loaded only when asked for: each pulls in its cloud SDK. */
async function vmCluster(values: VMFlags, common: ClusterOptions): Promise<VMCluster> {
  const vm = {
    ...common,
    ...(values.private ? { privateNetworking: true } : {}),
    ...(values.native ? { runtime: 'native' as const } : {}),
    ...(values.endpoint ? { endpoint: values.endpoint } : {}),
  };
  switch (values.provider) {
    case 'gcp': {
      const { GCPCluster } = await import('../providers/gcp');
      return new GCPCluster({ ...vm, ...(values.project ? { projectId: values.project } : {}), ...(values.zone ? { zone: values.zone } : {}) });
    }
    case 'ec2': {
      const { EC2Cluster } = await import('../providers/ec2');
      return new EC2Cluster({ ...vm, ...(values.region ? { region: values.region } : {}) });
    }
    case 'digitalocean': {
      const { DropletCluster } = await import('../providers/digitalocean');
      return new DropletCluster({ ...vm, ...(values.region ? { region: values.region } : {}) });
    }
    default:
      throw new UsageError('--provider must be local, gcp, ec2 or digitalocean');
  }
}

/** Read-only checks of the account against the cluster the flags describe. */
async function doctor(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      provider: { type: 'string' },
      workers: { type: 'string', default: '2' },
      private: { type: 'boolean', default: false },
      native: { type: 'boolean', default: false },
      project: { type: 'string' },
      zone: { type: 'string' },
      region: { type: 'string' },
      endpoint: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const nWorkers = parseWorkers(values.workers);
  if (values.provider !== 'gcp' && values.provider !== 'ec2' && values.provider !== 'digitalocean') {
    throw new UsageError('doctor checks a cloud account: --provider gcp, ec2 or digitalocean');
  }
  const cluster = await vmCluster(values, { nWorkers, closeOnSignals: false });
  const report = await cluster.preflight();
  if (values.json) {
    console.log(JSON.stringify(report.toJSON(), null, 2));
  } else {
    console.log(`dask-cloud doctor: ${report.provider}, 1 scheduler + ${nWorkers} workers${values.private ? ', private networking' : ''} (read-only checks: nothing is created)`);
    console.log(report.format());
    console.log(report.ok ? 'all checks passed' : `${report.failures.length} check(s) failed: the fix is under each`);
  }
  return report.ok ? 0 : 1;
}

async function userData(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      role: { type: 'string' },
      'scheduler-address': { type: 'string' },
      runtime: { type: 'string', default: 'docker' },
      'docker-image': { type: 'string' },
      'dask-version': { type: 'string' },
      'python-version': { type: 'string' },
      python: { type: 'string' },
      'no-security': { type: 'boolean', default: false },
    },
  });
  const role = values.role;
  if (role !== 'scheduler' && role !== 'worker') throw new UsageError('--role must be scheduler or worker');
  const runtime = values.runtime;
  if (runtime !== 'docker' && runtime !== 'native') throw new UsageError('--runtime must be docker or native');
  const imageOptions = { dockerImage: values['docker-image'], daskVersion: values['dask-version'], pythonVersion: values['python-version'], runtime } as const;
  const { validateImageOptions } = await import('./cluster/vm');
  try {
    validateImageOptions(imageOptions);
  } catch (err) {
    // The library's message names its options; here they are flags.
    const flags: Record<string, string> = { daskVersion: '--dask-version', pythonVersion: '--python-version', dockerImage: '--docker-image' };
    throw new UsageError((err instanceof Error ? err.message : String(err)).replace(/\b(daskVersion|pythonVersion|dockerImage)\b/g, (m) => flags[m]!).replace('the native runtime', '--runtime native'));
  }
  const security = values['no-security'] ? false : await Security.temporary();
  const proto = security === false ? 'tcp' : 'tls';
  const base = {
    role,
    security,
    runtime,
    schedulerAddress: role === 'worker' ? (values['scheduler-address'] ?? `${proto}://10.0.0.2:8786`) : undefined,
  } as const;
  // Every input is checked by a first render before the local Python is run.
  let rendered = renderUserData({ ...base, image: values['docker-image'] });
  if (runtime === 'docker') {
    // The image a cluster started here would run: it follows the local client's Dask, as start does.
    const local = imageOptions.dockerImage === undefined ? await findPython(values.python).then((p) => p.versions, () => undefined) : undefined;
    const decision = decideDaskImage(imageOptions, imageClient(local));
    process.stderr.write(`# image ${decision.image} (${IMAGE_BASIS[decision.basis]})\n`);
    for (const d of decision.differences) process.stderr.write(`#   ${d}\n`);
    rendered = renderUserData({ ...base, image: decision.image });
  }
  // A command line never prints a private key: the VM's key is elided.
  process.stdout.write(redactKeys(rendered.text));
  process.stderr.write(`# ${role} user-data: ${rendered.rawBytes} bytes (private key elided)\n`);
  return 0;
}

async function cleanup(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      provider: { type: 'string' },
      cluster: { type: 'string', multiple: true },
      expired: { type: 'boolean', default: false },
      all: { type: 'boolean', default: false },
      'dry-run': { type: 'boolean', default: false },
      project: { type: 'string' },
      zone: { type: 'string' },
      region: { type: 'string' },
      endpoint: { type: 'string' },
    },
  });
  if (values.provider === 'local') return cleanupLocal(values);
  const common = { clusterIds: values.cluster, expired: values.expired, all: values.all, dryRun: values['dry-run'] };
  if (!common.clusterIds?.length && !common.expired && !common.all) throw new UsageError('say which clusters: --cluster ID, --expired or --all');
  const report = await cleanupProvider(values.provider ?? '', { ...values, ...common });
  let failed = 0;
  for (const c of report.clusters) {
    const what = c.error ? `FAILED: ${c.error}` : values['dry-run'] ? 'would delete' : 'deleted';
    if (c.error) failed++;
    console.log(`${c.clusterId}: ${c.instances.length} instance(s) ${what}`);
  }
  if (report.clusters.length === 0) console.log('nothing to clean up');
  return failed > 0 ? 1 : 0;
}

/** `ls`: every cluster of one cloud account, from the cloud's labels alone. */
async function ls(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      provider: { type: 'string' },
      project: { type: 'string' },
      zone: { type: 'string' },
      region: { type: 'string' },
      endpoint: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const provider = values.provider ?? 'local';
  if (provider === 'local' && (values.project || values.zone || values.region || values.endpoint)) throw new UsageError('--project, --zone, --region and --endpoint are for cloud providers');
  const found = provider === 'local' ? await localClusters() : await listProvider({ ...values, provider });
  if (values.json) {
    console.log(JSON.stringify(found, null, 2));
    return 0;
  }
  if (found.length === 0) {
    console.log(`no dask-cloud clusters on ${provider}`);
    return 0;
  }
  console.log(formatClusterTable(found));
  return 0;
}

/** The `ls` table: one row per cluster; times in UTC, expiry also as time left. */
export function formatClusterTable(rows: ClusterSummary[], now = Date.now()): string {
  const when = (d: Date | undefined): string => (d ? d.toISOString().slice(0, 16).replace('T', ' ') : '-');
  const left = (d: Date | undefined): string => {
    if (!d) return '-';
    const minutes = Math.round((d.getTime() - now) / 60_000);
    if (minutes <= 0) return `${when(d)} (passed)`;
    return `${when(d)} (in ${minutes >= 120 ? `${Math.floor(minutes / 60)} h` : `${minutes} min`})`;
  };
  const table = [
    ['ID', 'KIND', 'LOCATION', 'STATE', 'WORKERS', 'ADDRESS', 'CREATED (UTC)', 'EXPIRES (UTC)'],
    ...rows.map((c) => [c.id, c.kind, c.location ?? '-', c.state, String(c.counts.workers), c.address ?? '-', when(c.created), left(c.expires)]),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  return table.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n');
}

/** The one positional argument of `info`, `scale`, `logs`, `dashboard`, `env`: a cluster id. */
function clusterIdArg(command: string, positionals: string[], extra = 0): string {
  const [id] = positionals;
  if (id === undefined) throw new UsageError(`${command} needs a cluster id (dask-cloud ls lists them)`);
  if (positionals.length > 1 + extra) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1 + extra])}`);
  checkClusterId(id);
  return id;
}

/** A handle on a cluster started elsewhere, from this machine's directory for it. */
async function attached(id: string): Promise<Cluster> {
  const { attachCluster } = await import('./cluster/list');
  return attachCluster(id);
}

/** `info ID`: what the cluster is, from its scheduler and its labels. */
async function info(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { json: { type: 'boolean', default: false } }, allowPositionals: true });
  const cluster = await attached(clusterIdArg('info', positionals));
  const summary = { ...cluster.toJSON(), stateDir: cluster.stateDir };
  if (values.json) {
    console.log(JSON.stringify(summary, null, 2));
    return 0;
  }
  const rows: Array<[string, string]> = [
    ['id', summary.id],
    ['kind', summary.kind],
    ['state', summary.state],
    ['scheduler', summary.schedulerAddress ?? '-'],
    ['workers', `${summary.workersRegistered ?? '?'} registered / ${summary.workers} asked`],
    ['members', summary.members.join(' ')],
    ['dashboard', summary.dashboardLink ?? `dask-cloud dashboard ${summary.id}`],
    ['client', summary.stateDir === undefined ? '-' : `export DASK_CONFIG=${shellQuote(summary.stateDir)}`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
  return 0;
}

/** `scale ID N`: up (then wait for the new workers to register) or down (retire first). */
async function scale(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { 'no-wait': { type: 'boolean', default: false } }, allowPositionals: true });
  const id = clusterIdArg('scale', positionals, 1);
  const n = parseWorkers(positionals[1], 'the number of workers');
  const cluster = await attached(id);
  const before = cluster.toJSON().workers;
  await cluster.scale(n);
  if (n > before && !values['no-wait']) {
    console.error(`  waiting for ${n} workers to register`);
    await cluster.waitForWorkers(n);
  }
  const registered = values['no-wait'] ? undefined : (await cluster.workers()).length;
  console.log(`${id}: ${n} workers asked (was ${before})${registered === undefined ? '' : `, ${registered} registered`}`);
  return 0;
}

/** `logs ID [MEMBER]`: each member's recent console or process output. */
async function logs(argv: string[]): Promise<number> {
  const { positionals } = parseArgs({ args: argv, options: {}, allowPositionals: true });
  const id = clusterIdArg('logs', positionals, 1);
  const which = positionals[1];
  const cluster = await attached(id);
  // A member by its full name, or by what follows the cluster id (`scheduler`, `worker-2`).
  const members = which === undefined ? cluster.members : cluster.members.filter((m) => m.name === which || m.name === `${id}-${which}` || m.id === which);
  if (members.length === 0) throw new UsageError(`${id} has no member ${JSON.stringify(which)}: it has ${cluster.members.map((m) => m.name.slice(id.length + 1)).join(', ')}`);
  const out = await cluster.getLogs(members);
  for (const [name, text] of Object.entries(out)) {
    console.log(`==> ${name} <==`);
    console.log(text.trimEnd());
  }
  return 0;
}

/** `env ID`: the shell line that points Dask at the cluster's directory. */
async function env(argv: string[]): Promise<number> {
  const { positionals } = parseArgs({ args: argv, options: {}, allowPositionals: true });
  const id = clusterIdArg('env', positionals);
  const { dir } = await readRecordOf(id);
  console.log(`export DASK_CONFIG=${shellQuote(dir)}`);
  return 0;
}

/**
 * `dashboard ID`: prints the URL a browser opens. A VM cluster's dashboard is reached through a
 * tunnel over mutual TLS, open until Ctrl-C; a local cluster's is on this machine already.
 */
async function dashboard(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { port: { type: 'string' } }, allowPositionals: true });
  const id = clusterIdArg('dashboard', positionals);
  if (values.port !== undefined && !/^\d{1,5}$/.test(values.port)) throw new UsageError(`--port must be a port number, got ${JSON.stringify(values.port)}`);
  const cluster = await attached(id);
  const opened = await cluster.openDashboard(values.port === undefined ? {} : { localPort: Number(values.port) });
  console.log(opened.url);
  if (!opened.tunnel) return 0;
  console.error(`  the dashboard of ${id}, over mutual TLS with its client certificate; Ctrl-C closes the tunnel`);
  await new Promise<void>((resolve) => {
    const done = (): void => {
      for (const sig of SIGNALS) process.off(sig, done);
      resolve();
    };
    for (const sig of SIGNALS) process.on(sig, done);
  });
  await opened.close();
  return 0;
}

/** Asks a person at a terminal; anything but y/yes is no. */
async function confirm(question: string): Promise<boolean> {
  const readline = await import('node:readline/promises');
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

/**
 * `down ID ...` deletes clusters by their labels (the directory says where they live, else the
 * flags do) and removes their directories; `down --all --provider X` every cluster of an account.
 */
async function down(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      all: { type: 'boolean', default: false },
      yes: { type: 'boolean', default: false },
      provider: { type: 'string' },
      project: { type: 'string' },
      zone: { type: 'string' },
      region: { type: 'string' },
      endpoint: { type: 'string' },
    },
    allowPositionals: true,
  });
  if (values.all && positionals.length > 0) throw new UsageError('give cluster ids or --all, not both');
  if (!values.all && positionals.length === 0) throw new UsageError('down needs cluster ids, or --all --provider P (dask-cloud ls lists them)');
  for (const id of positionals) checkClusterId(id);
  let targets: Array<{ id: string; provider: string; flags: VMFlags }>;
  if (values.all) {
    const provider = values.provider;
    if (provider === undefined) throw new UsageError('down --all needs --provider local|gcp|ec2|digitalocean: it deletes every cluster there');
    const found = provider === 'local' ? await localClusters() : await listProvider({ ...values, provider });
    if (found.length === 0) {
      console.log(`no dask-cloud clusters on ${provider}`);
      return 0;
    }
    console.log(formatClusterTable(found));
    if (!values.yes) {
      if (!process.stdin.isTTY) throw new UsageError(`down --all would delete ${found.length} cluster(s): pass --yes to confirm without a terminal`);
      if (!(await confirm(`delete these ${found.length} cluster(s) and everything they created?`))) {
        console.log('nothing deleted');
        return 1;
      }
    }
    targets = found.map((c) => ({ id: c.id, provider, flags: values }));
  } else {
    targets = await Promise.all(positionals.map(async (id) => ({ id, ...(await whereIs(id, values)) })));
  }
  let failed = 0;
  for (const t of targets) {
    try {
      console.log(`${t.id}: ${await downOne(t.id, t.provider, t.flags)}`);
    } catch (err) {
      failed++;
      console.error(`${t.id}: FAILED: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return failed > 0 ? 1 : 0;
}

/** Where cluster `id` lives: its directory's record, else the flags. */
async function whereIs(id: string, flags: VMFlags): Promise<{ provider: string; flags: VMFlags }> {
  try {
    const { record } = await readRecordOf(id);
    const o = record.options as { projectId?: string; zone?: string; region?: string; endpoint?: unknown };
    const endpoint = typeof o.endpoint === 'string' ? o.endpoint : endpointUrl(o.endpoint);
    return { provider: record.kind, flags: { project: o.projectId, zone: o.zone, region: o.region, endpoint, ...definedFlags(flags) } };
  } catch (err) {
    if (!(DaskCloudError.isInstance(err) && err.code === 'E_NO_LOCAL_STATE')) throw err;
    if (flags.provider === undefined) {
      throw new UsageError(`no local directory for ${id}: say where it lives with --provider (and --project/--zone or --region), as for dask-cloud ls`);
    }
    return { provider: flags.provider, flags };
  }
}

function definedFlags(flags: VMFlags): VMFlags {
  return Object.fromEntries(Object.entries(flags).filter(([k, v]) => v !== undefined && k !== 'provider' && k !== 'all' && k !== 'yes')) as VMFlags;
}

/** A GCP endpoint saved as `{ apiEndpoint, port, protocol }`, as a URL. */
function endpointUrl(e: unknown): string | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const { apiEndpoint, port, protocol } = e as { apiEndpoint?: string; port?: number; protocol?: string };
  return apiEndpoint === undefined ? undefined : `${protocol ?? 'https'}://${apiEndpoint}${port === undefined ? '' : `:${port}`}`;
}

/** Deletes one cluster: a local one through its owner, a cloud one by its labels; then its directory. */
async function downOne(id: string, provider: string, flags: VMFlags): Promise<string> {
  const { removeClusterState } = await import('./cluster/state');
  if (provider === 'local') {
    try {
      const cluster = await LocalCluster.attach(id);
      await cluster.close();
      return 'closed: its processes are stopped';
    } catch (err) {
      if (!(DaskCloudError.isInstance(err) && (err.code === 'E_NOT_FOUND' || err.code === 'E_NO_LOCAL_STATE'))) throw err;
      const report = await LocalCluster.cleanup({ clusterIds: [id] });
      await removeClusterState(id);
      const killed = report.clusters.reduce((n, c) => n + c.killed.length, 0);
      return `its owner was gone; ${killed} stray process(es) killed, directory removed`;
    }
  }
  const report = await cleanupProvider(provider, { ...flags, clusterIds: [id] });
  const entry = report.clusters[0];
  if (entry?.error) throw new Error(entry.error);
  await removeClusterState(id);
  return `${entry?.instances.length ?? 0} instance(s) and its network resources deleted; directory removed`;
}

/** This machine's local clusters (from their directories), for `down --all --provider local`. */
async function localClusters(): Promise<ClusterSummary[]> {
  return (await LocalCluster.list()) as ClusterSummary[];
}

/** `cleanup` of one cloud account, by provider name; each SDK is loaded only when asked for. */
async function cleanupProvider(provider: string, o: VMFlags & { clusterIds?: string[]; expired?: boolean; all?: boolean; dryRun?: boolean }): Promise<CleanupReport> {
  const common = { clusterIds: o.clusterIds, expired: o.expired, all: o.all, dryRun: o.dryRun, endpoint: o.endpoint };
  switch (provider) {
    case 'gcp': {
      const { GCPCluster } = await import('../providers/gcp');
      return GCPCluster.cleanup({ projectId: o.project, zone: o.zone, ...common });
    }
    case 'ec2': {
      const { EC2Cluster } = await import('../providers/ec2');
      return EC2Cluster.cleanup({ region: o.region, ...common });
    }
    case 'digitalocean': {
      const { DropletCluster } = await import('../providers/digitalocean');
      return DropletCluster.cleanup(common);
    }
    default:
      throw new UsageError('--provider must be local, gcp, ec2 or digitalocean');
  }
}

/** `ls` of one cloud account. */
async function listProvider(values: VMFlags & { provider: string }): Promise<ClusterSummary[]> {
  const provider = values.provider;
  if (provider !== 'gcp' && provider !== 'ec2' && provider !== 'digitalocean') throw new UsageError('--provider must be local, gcp, ec2 or digitalocean');
  if (provider !== 'gcp' && (values.project || values.zone)) throw new UsageError('--project and --zone are for --provider gcp');
  if (provider === 'gcp' && values.region) throw new UsageError('--region is for --provider ec2 or digitalocean');
  const { listClusters } = await import('./cluster/list');
  const endpoint = values.endpoint;
  return provider === 'gcp'
    ? listClusters({ provider, projectId: values.project, zone: values.zone, endpoint })
    : provider === 'ec2'
      ? listClusters({ provider, region: values.region, endpoint })
      : listClusters({ provider, endpoint });
}

/** `cleanup --provider local`: strays are found by their dead owner, so no selector is needed. */
async function cleanupLocal(values: { cluster?: string[]; expired?: boolean; 'dry-run'?: boolean } & VMFlags): Promise<number> {
  if (values.expired) throw new UsageError('local clusters have no expiry: without --cluster every cluster whose owner is gone is cleaned up');
  if (values.project || values.zone || values.region || values.endpoint) throw new UsageError('--project, --zone, --region and --endpoint are for cloud providers');
  const dryRun = values['dry-run'] === true;
  const report = await LocalCluster.cleanup({ clusterIds: values.cluster, dryRun });
  let failed = 0;
  for (const c of report.clusters) {
    const pids = c.pids.length > 0 ? ` (pids ${c.pids.join(' ')})` : '';
    if (c.skipped) {
      console.log(`${c.clusterId}: left alone, ${c.skipped}`);
    } else if (c.pids.length === 0 && c.dirs.length === 0) {
      console.log(`${c.clusterId}: nothing found`);
    } else if (dryRun) {
      console.log(`${c.clusterId}: would kill ${c.pids.length} process(es)${pids} and remove ${c.dirs.length} key dir(s)`);
    } else {
      console.log(`${c.clusterId}: killed ${c.killed.length} process(es)${pids}, removed ${c.removedDirs.length} key dir(s)${c.error ? `; FAILED: ${c.error}` : ''}`);
    }
    if (c.error) failed++;
  }
  if (report.clusters.length === 0) console.log('nothing to clean up');
  if (!report.processesSearched) console.log(`processes were not searched (no /proc on ${process.platform}): only key directories`);
  return failed > 0 ? 1 : 0;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'start':
        return await start(rest);
      case 'local':
        return await start(['--provider', 'local', ...rest]);
      case 'user-data':
        return await userData(rest);
      case 'cleanup':
        return await cleanup(rest);
      case 'ls':
        return await ls(rest);
      case 'doctor':
        return await doctor(rest);
      case 'up':
        return await start(rest, 'up');
      case 'info':
        return await info(rest);
      case 'scale':
        return await scale(rest);
      case 'logs':
        return await logs(rest);
      case 'env':
        return await env(rest);
      case 'down':
        return await down(rest);
      case 'dashboard':
        return await dashboard(rest);
      case '__local-supervisor':
        // Internal: the detached owner of a local cluster started by `up` (providers/local/supervisor.ts).
        return await (await import('../providers/local/supervisor')).runLocalSupervisor(rest);
      case undefined:
      case '-h':
      case '--help':
        console.log(USAGE());
        return command === undefined ? 1 : 0;
      default:
        console.error(`dask-cloud: unknown command ${JSON.stringify(command)} (dask-cloud --help lists the commands)`);
        return 2;
    }
  } catch (err) {
    const code = DaskCloudError.isInstance(err) ? ` [${err.code}]` : '';
    const message = err instanceof Error ? err.message : String(err);
    if (isBadInput(err)) {
      // One line, no stack: the input was wrong, not the program.
      console.error(`dask-cloud ${command}: ${message.replace(/\s*\n\s*/g, ' ')}${code}`);
      return 2;
    }
    console.error(`dask-cloud ${command}: ${message}${code}`);
    return 1;
  }
}

/** Exit once stdout and stderr have drained: process.exit() drops what a pipe has not taken yet. */
function exitAfterFlush(code: number): void {
  let pending = 2;
  const done = (): void => {
    if (--pending === 0) process.exit(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
}

if (require.main === module) {
  main(process.argv.slice(2)).then(exitAfterFlush);
}
