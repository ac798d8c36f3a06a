/** `start`, `local`, `up` and `doctor`: the commands that build a cluster from flags. */
import * as os from 'node:os';
import * as path from 'node:path';
import type { Cluster, ClusterOptions } from '../cluster/cluster';
import type { ClusterEvent } from '../cluster/events';
import { resolveOptions, type ClusterKind } from '../config';
import { findPython } from '../dask/python';
import { rows, shellQuote, tryItLine } from './format';
import { createProgress } from './progress';
import { SignalGate } from './signals';
import { UsageError } from './usage';

/** How long an `up` cluster's scheduler waits without tasks before it shuts down, unless --idle-timeout, the config file or DASK_CLOUD_IDLE_TIMEOUT say otherwise. */
export const UP_IDLE_TIMEOUT = '1 hour';

/** What `start`, `up` and `doctor` do on SIGINT, SIGTERM and SIGHUP (the terminal closing). */
export const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** A cluster request as the command line gave it. */
export interface ClusterRequest {
  kind: ClusterKind;
  /** Cluster options from the table's flags: only those given. */
  options: Record<string, unknown>;
  /** --endpoint: the cloud API's address (a fake, a proxy). */
  endpoint?: string;
  /** --native: run the VM image's own Dask instead of the Docker image. */
  native: boolean;
  /** --no-security */
  insecure: boolean;
}

/** The cluster options of a request, without the ones a command adds (signal, onEvent). */
export function clusterOptions(r: ClusterRequest): Record<string, unknown> {
  if (r.kind === 'local' && (r.endpoint !== undefined || r.native)) throw new UsageError(`${r.endpoint !== undefined ? '--endpoint' : '--native'} is for cloud providers, not --provider local`);
  return {
    ...r.options,
    ...(r.insecure ? { security: false } : {}),
    ...(r.native ? { runtime: 'native' } : {}),
    ...(r.endpoint !== undefined ? { endpoint: r.endpoint } : {}),
  };
}

/** The cluster a request describes. Providers are loaded only when asked for: each pulls in its cloud SDK. */
export async function buildCluster(kind: ClusterKind, options: ClusterOptions & Record<string, unknown>): Promise<Cluster> {
  switch (kind) {
    case 'local': {
      const { LocalCluster } = await import('../../providers/local');
      return new LocalCluster(options);
    }
    case 'gcp': {
      const { GCPCluster } = await import('../../providers/gcp');
      return new GCPCluster(options as never);
    }
    case 'ec2': {
      const { EC2Cluster } = await import('../../providers/ec2');
      return new EC2Cluster(options as never);
    }
    case 'digitalocean': {
      const { DropletCluster } = await import('../../providers/digitalocean');
      return new DropletCluster(options as never);
    }
    default:
      throw new UsageError('--provider must be local, gcp, ec2 or digitalocean');
  }
}

/** What the options resolve to once the config file and DASK_CLOUD_* variables are read under them, as the cluster reads them. */
function resolved(kind: ClusterKind, options: Record<string, unknown>): Record<string, unknown> {
  try {
    return resolveOptions(kind, options) as Record<string, unknown>;
  } catch {
    // The cluster's constructor reports the same problem, typed.
    return options;
  }
}

/** The interpreter a copy-paste line should name: the one the library found (and would compare versions with). */
async function pythonPath(python: unknown): Promise<string | undefined> {
  return findPython(typeof python === 'string' ? python : undefined).then((p) => p.path, () => undefined);
}

export interface StartArgs extends ClusterRequest {
  mode: 'foreground' | 'up';
  /** --client-config DIR */
  clientConfig?: string;
  json: boolean;
}

/**
 * `start` (foreground: runs until a signal, then deletes everything) and `up` (starts, prints
 * how to use the cluster, and leaves it running).
 */
export async function start(a: StartArgs): Promise<number> {
  const base = clusterOptions(a);
  if (a.mode === 'up' && resolved(a.kind, base).idleTimeout === undefined) base.idleTimeout = UP_IDLE_TIMEOUT;
  if (a.mode === 'up' && a.kind === 'local') return upLocal(a, base);
  // The first SIGINT, SIGTERM or SIGHUP (the terminal closed) aborts the start, whose rollback
  // deletes everything created, or closes the running cluster: either waits as long as the cloud
  // takes to confirm each deletion. A second one stops waiting, says what may be left, and exits.
  const interrupted = new AbortController();
  const gate = new SignalGate();
  let cluster: Cluster | undefined;
  const progress = createProgress({ json: a.json });
  const onSignal = (signal: NodeJS.Signals): void => {
    const meaning = gate.classify(signal);
    if (meaning === 'same-press') return;
    if (meaning === 'second') {
      progress.abandon();
      giveUp(signal, cluster, a.endpoint);
    }
    // The live list ends here: the deletion that follows can take minutes, shown as lines.
    void progress.settle(new Error(`interrupted by ${signal}`));
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
    const options = {
      ...base,
      closeOnSignals: false,
      signal: interrupted.signal,
      onEvent: (e: ClusterEvent) => {
        progress.event(e);
        // A dead scheduler ends the session: holding its workers open would only cost money.
        if (e.type === 'member-failed' && e.role === 'scheduler') schedulerLost.abort(new Error(e.message));
      },
    };
    cluster = await buildCluster(a.kind, options);
    const settings = resolved(a.kind, base);
    const asked = typeof settings.nWorkers === 'number' ? settings.nWorkers : undefined;
    progress.asked(asked);
    console.error(`starting ${cluster.id} (${a.kind}, ${asked === undefined ? 'the default number of' : asked} workers)`);
    try {
      await cluster.start();
    } catch (err) {
      await progress.settle(err);
      throw err;
    }
    await progress.settle();
    const workers = cluster.toJSON().workers;
    const python = await pythonPath(settings.python);
    if (a.mode === 'up') {
      if (a.clientConfig !== undefined) await cluster.writeClientConfig(a.clientConfig);
      printUp({ id: cluster.id, kind: cluster.kind, schedulerAddress: cluster.schedulerAddress, workers, stateDir: cluster.stateDir, dashboardLink: cluster.dashboardLink, idleTimeout: String(settings.idleTimeout ?? base.idleTimeout), python }, a.json);
      // Left running: this process exits without closing it.
      return 0;
    }
    const dir = a.clientConfig ?? './dask-client';
    try {
      await cluster.writeClientConfig(dir);
      if (a.json) {
        // One line, printed once the cluster runs: a script can read it without waiting for the end.
        console.log(JSON.stringify({ id: cluster.id, kind: cluster.kind, schedulerAddress: cluster.schedulerAddress, workers, clientConfig: path.resolve(dir), dashboardLink: cluster.dashboardLink, python, env: `DASK_CONFIG=${path.resolve(dir)}` }));
        console.error('Ctrl-C stops the cluster.');
      } else {
        console.log(`scheduler ${cluster.schedulerAddress}, ${workers} workers`);
        console.log(`client config in ${dir}: ${tryItLine(dir, python)}`);
        console.log('Ctrl-C stops the cluster.');
      }
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
    (a.json ? console.error : console.log)('closed');
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
  /** The interpreter the library found, for the copy-paste line. */
  python?: string;
}

/** What `up` prints: where the cluster is, how to use it, how long it lives, and how to end it. */
function printUp(r: UpResult, json: boolean): void {
  if (json) {
    console.log(JSON.stringify({ ...r, env: r.stateDir === undefined ? undefined : `DASK_CONFIG=${r.stateDir}` }, null, 2));
    return;
  }
  const entries: Array<[string, string]> = [
    ['scheduler', r.schedulerAddress],
    ['workers', String(r.workers)],
    ['idle timeout', `${r.idleTimeout}: the scheduler shuts down after that long without tasks (up --idle-timeout changes it)`],
  ];
  if (r.stateDir !== undefined) {
    entries.push(['client', `export DASK_CONFIG=${shellQuote(r.stateDir)}`]);
    entries.push(['try it', tryItLine(r.stateDir, r.python)]);
  }
  entries.push(['dashboard', `dask-cloud dashboard ${r.id}`]);
  entries.push(['more', `dask-cloud info|scale|logs|env ${r.id}`]);
  entries.push(['end it', `dask-cloud down ${r.id}`]);
  console.log(`cluster ${r.id} (${r.kind}) is up, and keeps running after this command:`);
  console.log(rows(entries, '  '));
}

/** `up --provider local`: a detached owner process runs the cluster; this command only waits for it to be up. */
async function upLocal(a: StartArgs, options: Record<string, unknown>): Promise<number> {
  const { startDetachedLocal, LocalCluster } = await import('../../providers/local');
  const settings = resolved('local', options);
  console.error(`starting a local cluster (${typeof settings.nWorkers === 'number' ? settings.nWorkers : 'the default number of'} workers) in a process of its own`);
  const up = await startDetachedLocal(options);
  const handle = await LocalCluster.attach(up.id);
  if (a.clientConfig !== undefined) await handle.writeClientConfig(a.clientConfig);
  printUp(
    {
      id: up.id,
      kind: 'local',
      schedulerAddress: up.schedulerAddress,
      workers: handle.toJSON().workers,
      stateDir: up.stateDir,
      dashboardLink: up.dashboardLink,
      idleTimeout: String(settings.idleTimeout ?? UP_IDLE_TIMEOUT),
      python: await pythonPath(settings.python),
    },
    a.json,
  );
  return 0;
}

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
  // A live list hid the cursor: give it back before leaving.
  if (process.stderr.isTTY) process.stderr.write('\x1b[?25h');
  // Synchronous on pipes and terminals (Linux): printed before the exit.
  console.error(lines.join('\n'));
  process.exit(128 + (os.constants.signals[signal] ?? 0));
}

/** Read-only checks of the account against the cluster the flags describe. */
export async function doctor(r: ClusterRequest, json: boolean): Promise<number> {
  if (r.kind === 'local') throw new UsageError('doctor checks a cloud account: --provider gcp, ec2 or digitalocean');
  const options = clusterOptions(r);
  const cluster = await buildCluster(r.kind, { ...options, closeOnSignals: false });
  const report = await cluster.preflight();
  if (json) {
    console.log(JSON.stringify(report.toJSON(), null, 2));
  } else {
    const settings = resolved(r.kind, options);
    const n = typeof settings.nWorkers === 'number' ? String(settings.nWorkers) : 'the default number of';
    console.log(`dask-cloud doctor: ${report.provider}, 1 scheduler + ${n} workers${settings.privateNetworking === true ? ', private networking' : ''} (read-only checks: nothing is created)`);
    console.log(report.format());
    console.log(report.ok ? 'all checks passed' : `${report.failures.length} check(s) failed: the fix is under each`);
  }
  return report.ok ? 0 : 1;
}
