/**
 * The commands that work on clusters that already exist: from this machine's directory for them
 * (`info`, `scale`, `logs`, `dashboard`, `env`) or from the cloud's labels alone (`ls`, `down`,
 * `cleanup`).
 */
import type { Cluster } from '../cluster/cluster';
import type { CleanupReport, ClusterSummary } from '../cluster/vm';
import { checkClusterId, readRecordOf } from '../cluster/state';
import { DaskCloudError } from '../errors';
import { formatClusterTable, rows, shellQuote } from './format';
import { SIGNALS } from './start';
import { UsageError } from './usage';

/** Where a cloud account is: the flags of ls, down and cleanup. */
export interface Location {
  provider?: string;
  project?: string;
  zone?: string;
  region?: string;
  endpoint?: string;
}

/** A whole number of workers, written in digits. */
export function parseCount(text: string | undefined, what: string): number {
  if (text === undefined || !/^\d{1,9}$/.test(text)) throw new UsageError(`${what} must be a whole number >= 0, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** A cluster id argument, checked before anything reads a path from it. */
export function clusterIdArg(id: string): string {
  checkClusterId(id);
  return id;
}

/** A handle on a cluster started elsewhere, from this machine's directory for it. */
async function attached(id: string): Promise<Cluster> {
  const { attachCluster } = await import('../cluster/list');
  return attachCluster(clusterIdArg(id));
}

/** `info ID`: what the cluster is, from its scheduler and its labels. */
export async function info(id: string, json: boolean): Promise<number> {
  const cluster = await attached(id);
  const summary = { ...cluster.toJSON(), stateDir: cluster.stateDir };
  if (json) {
    console.log(JSON.stringify(summary, null, 2));
    return 0;
  }
  console.log(
    rows([
      ['id', summary.id],
      ['kind', summary.kind],
      ['state', summary.state],
      ['scheduler', summary.schedulerAddress ?? '-'],
      ['workers', `${summary.workersRegistered ?? '?'} registered / ${summary.workers} asked`],
      ['members', summary.members.join(' ')],
      ['dashboard', summary.dashboardLink ?? `dask-cloud dashboard ${summary.id}`],
      ['client', summary.stateDir === undefined ? '-' : `export DASK_CONFIG=${shellQuote(summary.stateDir)}`],
    ]),
  );
  return 0;
}

/** `scale ID N`: up (then wait for the new workers to register) or down (retire first). */
export async function scale(id: string, count: string, wait: boolean): Promise<number> {
  clusterIdArg(id);
  const n = parseCount(count, 'the number of workers');
  const cluster = await attached(id);
  const before = cluster.toJSON().workers;
  await cluster.scale(n);
  if (n > before && wait) {
    console.error(`  waiting for ${n} workers to register`);
    await cluster.waitForWorkers(n);
  }
  const registered = wait ? (await cluster.workers()).length : undefined;
  console.log(`${id}: ${n} workers asked (was ${before})${registered === undefined ? '' : `, ${registered} registered`}`);
  return 0;
}

/** `logs ID [MEMBER]`: each member's recent console or process output. */
export async function logs(id: string, which: string | undefined): Promise<number> {
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
export async function env(id: string): Promise<number> {
  const { dir } = await readRecordOf(clusterIdArg(id));
  console.log(`export DASK_CONFIG=${shellQuote(dir)}`);
  return 0;
}

/**
 * `dashboard ID`: prints the URL a browser opens. A VM cluster's dashboard is reached through a
 * tunnel over mutual TLS, open until Ctrl-C; a local cluster's is on this machine already.
 */
export async function dashboard(id: string, port: string | undefined): Promise<number> {
  clusterIdArg(id);
  if (port !== undefined && !/^\d{1,5}$/.test(port)) throw new UsageError(`--port must be a port number, got ${JSON.stringify(port)}`);
  const cluster = await attached(id);
  const opened = await cluster.openDashboard(port === undefined ? {} : { localPort: Number(port) });
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
export async function down(ids: string[], o: Location & { all: boolean; yes: boolean; json: boolean }): Promise<number> {
  if (o.all && ids.length > 0) throw new UsageError('give cluster ids or --all, not both');
  if (!o.all && ids.length === 0) throw new UsageError('down needs cluster ids, or --all --provider P (dask-cloud ls lists them)');
  for (const id of ids) checkClusterId(id);
  const say = o.json ? console.error : console.log;
  let targets: Array<{ id: string; provider: string; flags: Location }>;
  if (o.all) {
    const provider = o.provider;
    if (provider === undefined) throw new UsageError('down --all needs --provider local|gcp|ec2|digitalocean: it deletes every cluster there');
    const found = provider === 'local' ? await localClusters() : await listProvider({ ...o, provider });
    if (found.length === 0) {
      if (o.json) console.log(JSON.stringify({ clusters: [] }, null, 2));
      else console.log(`no dask-cloud clusters on ${provider}`);
      return 0;
    }
    say(formatClusterTable(found));
    if (!o.yes) {
      if (!process.stdin.isTTY) throw new UsageError(`down --all would delete ${found.length} cluster(s): pass --yes to confirm without a terminal`);
      if (!(await confirm(`delete these ${found.length} cluster(s) and everything they created?`))) {
        say('nothing deleted');
        return 1;
      }
    }
    targets = found.map((c) => ({ id: c.id, provider, flags: o }));
  } else {
    targets = await Promise.all(ids.map(async (id) => ({ id, ...(await whereIs(id, o)) })));
  }
  let failed = 0;
  const results: Array<{ id: string; provider: string; deleted: boolean; message: string }> = [];
  for (const t of targets) {
    try {
      const message = await downOne(t.id, t.provider, t.flags);
      results.push({ id: t.id, provider: t.provider, deleted: true, message });
      if (!o.json) console.log(`${t.id}: ${message}`);
    } catch (err) {
      failed++;
      const message = err instanceof Error ? err.message : String(err);
      results.push({ id: t.id, provider: t.provider, deleted: false, message });
      console.error(`${t.id}: FAILED: ${message}`);
    }
  }
  if (o.json) console.log(JSON.stringify({ clusters: results }, null, 2));
  return failed > 0 ? 1 : 0;
}

/** Where cluster `id` lives: its directory's record, else the flags. */
async function whereIs(id: string, flags: Location): Promise<{ provider: string; flags: Location }> {
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

function definedFlags(flags: Location): Location {
  const keep = ['project', 'zone', 'region', 'endpoint'];
  return Object.fromEntries(Object.entries(flags).filter(([k, v]) => v !== undefined && keep.includes(k))) as Location;
}

/** A GCP endpoint saved as `{ apiEndpoint, port, protocol }`, as a URL. */
function endpointUrl(e: unknown): string | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const { apiEndpoint, port, protocol } = e as { apiEndpoint?: string; port?: number; protocol?: string };
  return apiEndpoint === undefined ? undefined : `${protocol ?? 'https'}://${apiEndpoint}${port === undefined ? '' : `:${port}`}`;
}

/** Deletes one cluster: a local one through its owner, a cloud one by its labels; then its directory. */
async function downOne(id: string, provider: string, flags: Location): Promise<string> {
  const { removeClusterState } = await import('../cluster/state');
  if (provider === 'local') {
    const { LocalCluster } = await import('../../providers/local');
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

/** This machine's local clusters (from their directories). */
async function localClusters(): Promise<ClusterSummary[]> {
  const { LocalCluster } = await import('../../providers/local');
  return (await LocalCluster.list()) as ClusterSummary[];
}

/** `cleanup` of one cloud account, by provider name; each SDK is loaded only when asked for. */
async function cleanupProvider(provider: string, o: Location & { clusterIds?: string[]; expired?: boolean; all?: boolean; dryRun?: boolean }): Promise<CleanupReport> {
  const common = { clusterIds: o.clusterIds, expired: o.expired, all: o.all, dryRun: o.dryRun, endpoint: o.endpoint };
  switch (provider) {
    case 'gcp': {
      const { GCPCluster } = await import('../../providers/gcp');
      return GCPCluster.cleanup({ projectId: o.project, zone: o.zone, ...common });
    }
    case 'ec2': {
      const { EC2Cluster } = await import('../../providers/ec2');
      return EC2Cluster.cleanup({ region: o.region, ...common });
    }
    case 'digitalocean': {
      const { DropletCluster } = await import('../../providers/digitalocean');
      return DropletCluster.cleanup(common);
    }
    default:
      throw new UsageError('--provider must be local, gcp, ec2 or digitalocean');
  }
}

/** `ls` of one cloud account. */
async function listProvider(values: Location & { provider: string }): Promise<ClusterSummary[]> {
  const provider = values.provider;
  if (provider !== 'gcp' && provider !== 'ec2' && provider !== 'digitalocean') throw new UsageError('--provider must be local, gcp, ec2 or digitalocean');
  if (provider !== 'gcp' && (values.project || values.zone)) throw new UsageError('--project and --zone are for --provider gcp');
  if (provider === 'gcp' && values.region) throw new UsageError('--region is for --provider ec2 or digitalocean');
  const { listClusters } = await import('../cluster/list');
  const endpoint = values.endpoint;
  return provider === 'gcp'
    ? listClusters({ provider, projectId: values.project, zone: values.zone, endpoint })
    : provider === 'ec2'
      ? listClusters({ provider, region: values.region, endpoint })
      : listClusters({ provider, endpoint });
}

/** `ls`: every cluster of one cloud account, from the cloud's labels alone; without --provider, this machine's local clusters. */
export async function ls(o: Location & { json: boolean }): Promise<number> {
  const provider = o.provider ?? 'local';
  if (provider === 'local' && (o.project || o.zone || o.region || o.endpoint)) throw new UsageError('--project, --zone, --region and --endpoint are for cloud providers');
  const found = provider === 'local' ? await localClusters() : await listProvider({ ...o, provider });
  if (o.json) {
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

export interface CleanupArgs extends Location {
  cluster?: string[];
  expired: boolean;
  all: boolean;
  dryRun: boolean;
  json: boolean;
}

/** `cleanup`: what clusters left behind on a cloud account, by label; or this user's local strays. */
export async function cleanup(o: CleanupArgs): Promise<number> {
  if (o.provider === 'local') return cleanupLocal(o);
  if (!o.cluster?.length && !o.expired && !o.all) throw new UsageError('say which clusters: --cluster ID, --expired or --all');
  const report = await cleanupProvider(o.provider ?? '', { ...o, clusterIds: o.cluster });
  if (o.json) {
    console.log(JSON.stringify({ dryRun: o.dryRun, ...report }, null, 2));
    return report.clusters.some((c) => c.error) ? 1 : 0;
  }
  let failed = 0;
  for (const c of report.clusters) {
    const what = c.error ? `FAILED: ${c.error}` : o.dryRun ? 'would delete' : 'deleted';
    if (c.error) failed++;
    console.log(`${c.clusterId}: ${c.instances.length} instance(s) ${what}`);
  }
  if (report.clusters.length === 0) console.log('nothing to clean up');
  return failed > 0 ? 1 : 0;
}

/** `cleanup --provider local`: strays are found by their dead owner, so no selector is needed. */
async function cleanupLocal(o: CleanupArgs): Promise<number> {
  if (o.expired) throw new UsageError('local clusters have no expiry: without --cluster every cluster whose owner is gone is cleaned up');
  if (o.project || o.zone || o.region || o.endpoint) throw new UsageError('--project, --zone, --region and --endpoint are for cloud providers');
  const { LocalCluster } = await import('../../providers/local');
  const report = await LocalCluster.cleanup({ clusterIds: o.cluster, dryRun: o.dryRun });
  if (o.json) {
    console.log(JSON.stringify({ dryRun: o.dryRun, ...report }, null, 2));
    return report.clusters.some((c) => c.error) ? 1 : 0;
  }
  let failed = 0;
  for (const c of report.clusters) {
    const pids = c.pids.length > 0 ? ` (pids ${c.pids.join(' ')})` : '';
    if (c.skipped) {
      console.log(`${c.clusterId}: left alone, ${c.skipped}`);
    } else if (c.pids.length === 0 && c.dirs.length === 0) {
      console.log(`${c.clusterId}: nothing found`);
    } else if (o.dryRun) {
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
