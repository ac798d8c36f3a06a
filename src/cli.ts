#!/usr/bin/env node
/**
 * The `dask-cloud` command line.
 *
 *   dask-cloud start [--provider local|gcp|ec2|digitalocean] [--workers N] [--client-config DIR] [--no-security] [--private] [provider options]
 *   dask-cloud local [...]   (= start --provider local)
 *   dask-cloud user-data --role scheduler|worker [--scheduler-address A] [--runtime docker|native] [--no-security]
 *   dask-cloud cleanup --provider gcp|ec2|digitalocean (--cluster ID ... | --expired | --all) [--dry-run] [provider options]
 */
import { parseArgs } from 'node:util';
import { DaskCloudError } from './errors';
import { Security } from './security/security';
import { renderUserData } from './cloud-init';
import { LocalCluster } from '../providers/local';
import type { CleanupReport } from './cluster/vm';
import type { Cluster, ClusterOptions } from './cluster/cluster';
import type { ClusterEvent } from './cluster/events';
import type { VMCluster } from './cluster/vm';

const USAGE = `usage:
  dask-cloud start [--provider local|gcp|ec2|digitalocean] [--workers N] [--client-config DIR]
      [--no-security] [--private] [--project P --zone Z | --region R] [--endpoint URL]
      start a cluster (mutual TLS unless --no-security), write the client config, run until
      Ctrl-C, then delete everything; Ctrl-C during the start rolls it back. Other options come
      from the config file and DASK_CLOUD_* variables, credentials from each cloud's usual place
  dask-cloud local [--workers N] [--client-config DIR] [--no-security]
      the same as start --provider local
  dask-cloud user-data --role scheduler|worker [--scheduler-address tls://10.0.0.2:8786]
      [--runtime docker|native] [--docker-image IMAGE] [--no-security]
      print the cloud-init user-data a VM of that role boots from, with its private key elided
      (renderUserData() in the library gives the full text)
  dask-cloud doctor --provider gcp|ec2|digitalocean [--workers N] [--private] [--native]
      [--project P --zone Z | --region R] [--endpoint URL] [--json]
      check the account against the cluster those options would start, with read-only calls only:
      credentials (and where they came from), location, image, network and instance types, NAT for
      private mode, quota headroom, permissions; prints a checklist with the fix for each failure
      and exits 1 when a check fails. start runs the same checks first
  dask-cloud cleanup --provider gcp|ec2|digitalocean (--cluster ID ... | --expired | --all) [--dry-run]
      [--project P [--zone Z] | --region R] [--endpoint URL]
      delete what clusters left behind (instances by label, then firewalls / security groups);
      on gcp every zone of the project unless --zone names one`;

/** Replace the body of every PEM private key with a marker. */
export function redactKeys(text: string): string {
  return text.replace(/(-----BEGIN [A-Z ]*PRIVATE KEY-----)[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----)/g, '$1 (elided) $2');
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
    default:
      break;
  }
}

async function start(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      provider: { type: 'string', default: 'local' },
      workers: { type: 'string', default: '2' },
      'client-config': { type: 'string', default: './dask-client' },
      'no-security': { type: 'boolean', default: false },
      private: { type: 'boolean', default: false },
      project: { type: 'string' },
      zone: { type: 'string' },
      region: { type: 'string' },
      endpoint: { type: 'string' },
    },
  });
  const nWorkers = Number(values.workers);
  if (!Number.isInteger(nWorkers) || nWorkers < 0) throw new Error(`--workers must be a whole number >= 0, got ${values.workers}`);
  // Ctrl-C during the start aborts it (everything created is deleted); afterwards it closes.
  const interrupted = new AbortController();
  const onSignal = (): void => {
    // Quitting half way would leave cloud resources behind: say why we are still here.
    if (interrupted.signal.aborted) console.error('  still deleting what the cluster created; this ends on its own (kill -9 would leave it behind)');
    interrupted.abort(new Error('interrupted'));
  };
  for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, onSignal);
  const schedulerLost = new AbortController();
  try {
    const common = {
      nWorkers,
      ...(values['no-security'] ? { security: false as const } : {}),
      closeOnSignals: false,
      signal: interrupted.signal,
      onEvent: (e: ClusterEvent) => {
        progress(e);
        // A dead scheduler ends the session: holding its workers open would only cost money.
        if (e.type === 'member-failed' && e.role === 'scheduler') schedulerLost.abort(new Error(e.message));
      },
    };
    let cluster: Cluster;
    if (values.provider === 'local') {
      if (values.private || values.endpoint) throw new Error('--private and --endpoint are for cloud providers');
      cluster = new LocalCluster(common);
    } else {
      cluster = await vmCluster(values, common);
    }
    console.error(`starting ${cluster.id} (${values.provider}, ${nWorkers} workers)`);
    await cluster.start();
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
    for (const s of ['SIGINT', 'SIGTERM'] as const) process.off(s, onSignal);
  }
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
      throw new Error('--provider must be local, gcp, ec2 or digitalocean');
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
  const nWorkers = Number(values.workers);
  if (values.workers === '' || !Number.isInteger(nWorkers) || nWorkers < 0) throw new Error(`--workers must be a whole number >= 0, got ${JSON.stringify(values.workers)}`);
  if (values.provider !== 'gcp' && values.provider !== 'ec2' && values.provider !== 'digitalocean') {
    throw new Error('doctor checks a cloud account: --provider gcp, ec2 or digitalocean');
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
      'no-security': { type: 'boolean', default: false },
    },
  });
  const role = values.role;
  if (role !== 'scheduler' && role !== 'worker') throw new Error('--role must be scheduler or worker');
  const security = values['no-security'] ? false : await Security.temporary();
  const proto = security === false ? 'tcp' : 'tls';
  const rendered = renderUserData({
    role,
    security,
    runtime: values.runtime as 'docker' | 'native',
    image: values['docker-image'],
    schedulerAddress: role === 'worker' ? (values['scheduler-address'] ?? `${proto}://10.0.0.2:8786`) : undefined,
  });
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
  const endpoint = values.endpoint;
  const common = { clusterIds: values.cluster, expired: values.expired, all: values.all, dryRun: values['dry-run'] };
  if (!common.clusterIds?.length && !common.expired && !common.all) throw new Error('say which clusters: --cluster ID, --expired or --all');
  let report: CleanupReport;
  // Providers are loaded only when asked for: each pulls in its cloud SDK.
  switch (values.provider) {
    case 'gcp': {
      const { GCPCluster } = await import('../providers/gcp');
      report = await GCPCluster.cleanup({ projectId: values.project, zone: values.zone, endpoint, ...common });
      break;
    }
    case 'ec2': {
      const { EC2Cluster } = await import('../providers/ec2');
      report = await EC2Cluster.cleanup({ region: values.region, endpoint, ...common });
      break;
    }
    case 'digitalocean': {
      const { DropletCluster } = await import('../providers/digitalocean');
      report = await DropletCluster.cleanup({ endpoint, ...common });
      break;
    }
    default:
      throw new Error('--provider must be gcp, ec2 or digitalocean');
  }
  let failed = 0;
  for (const c of report.clusters) {
    const what = c.error ? `FAILED: ${c.error}` : values['dry-run'] ? 'would delete' : 'deleted';
    if (c.error) failed++;
    console.log(`${c.clusterId}: ${c.instances.length} instance(s) ${what}`);
  }
  if (report.clusters.length === 0) console.log('nothing to clean up');
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
      case 'doctor':
        return await doctor(rest);
      case undefined:
      case '-h':
      case '--help':
        console.log(USAGE);
        return command === undefined ? 1 : 0;
      default:
        console.error(`unknown command ${command}\n${USAGE}`);
        return 1;
    }
  } catch (err) {
    const code = DaskCloudError.isInstance(err) ? ` [${err.code}]` : '';
    console.error(`dask-cloud ${command}: ${err instanceof Error ? err.message : String(err)}${code}`);
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
