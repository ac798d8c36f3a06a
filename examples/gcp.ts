/**
 * A Dask cluster on Google Compute Engine: 1 scheduler + 2 workers with fresh mutual-TLS
 * credentials, a client config for Python, then (by default) close. Every VM carries the cluster's
 * labels and network tags; the firewall rules are named after the cluster id; everything is
 * deleted on close, on Ctrl-C, or when start fails.
 *
 *   GOOGLE_CLOUD_PROJECT=my-project npx tsx examples/gcp.ts          # start, show the workers, close
 *   GOOGLE_CLOUD_PROJECT=my-project npx tsx examples/gcp.ts --hold   # keep it until Enter / Ctrl-C
 *
 * Credentials: Application Default Credentials (`gcloud auth application-default login`, or a
 * service account key in GOOGLE_APPLICATION_CREDENTIALS). They stay on this machine: the VMs get
 * no Google credentials unless you pass `serviceAccount`. The account needs roles/compute.instanceAdmin.v1
 * and roles/compute.securityAdmin (firewall rules) on the project. DEBUG=dask-cloud:* shows every API call.
 *
 * Optional: GCP_ZONE (default us-central1-a).
 * Costs: an e2-standard-2 and two e2-standard-4 VMs with 50 GB pd-balanced disks while it runs
 * (about 0.35 USD/hour in us-central1). Whatever happens to this process, Compute deletes the VMs
 * after 24 hours (`maxRunDuration`); `GCPCluster.cleanup({ expired: true })` sweeps leftovers.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline/promises';
import { DaskCloudError } from 'dask-cloud';
import { GCPCluster } from 'dask-cloud/gcp';

async function main(): Promise<void> {
  const hold = process.argv.includes('--hold');
  const cluster = new GCPCluster({
    // projectId: 'my-project',            // else GOOGLE_CLOUD_PROJECT / GCLOUD_PROJECT / ADC / gcloud config
    zone: process.env.GCP_ZONE ?? 'us-central1-a',
    nWorkers: 2,
    // ingressCidrs: ['203.0.113.7/32'],   // who may reach the scheduler port (default: anyone, mutual TLS guards it)
    // workerMachineType: 'e2-highmem-4',
    // spot: true,                          // ~60-90% cheaper; VMs can be preempted (and are then deleted)
    idleTimeout: '2 hours', // the scheduler stops itself when unused; its VM then powers off
    onEvent: (e) => {
      if (e.type === 'phase-end') console.log(`  ${e.phase.padEnd(11)} ${e.durationMs} ms`);
      if (e.type === 'member-launched') console.log(`  launched ${e.role} ${e.name}`);
      if (e.type === 'warning') console.warn(`  warning: ${e.message}`);
      if (e.type === 'rollback') console.warn(`  rolling back: ${e.reason}`);
    },
  });
  console.log(`Starting ${cluster.id} in ${cluster.projectId}/${cluster.zone}: 1 scheduler + 2 workers (mutual TLS)`);
  await cluster.start();
  const dir = await mkdtemp(path.join(os.tmpdir(), `${cluster.id}-client-`));
  try {
    console.log(`Ready at ${cluster.schedulerAddress} (workers use ${cluster.schedulerPrivateAddress})`);
    await cluster.writeClientConfig(dir);
    const workers = await cluster.workers();
    console.log(`${workers.length} workers: ${workers.map((w) => `${w.address} (${w.nthreads} threads)`).join(', ')}`);
    console.log(`
Client config written to ${dir} (ca.pem, client.pem, client.key 0600, dask.yaml). From Python:

  DASK_CONFIG=${dir} python3 -c "from distributed import Client; c = Client(); print(c.submit(sum, [1, 2, 3]).result())"

The client needs the same Dask version as the cluster (the image ghcr.io/dask/dask:<tag> it runs).
The dashboard (port 8787) is not open to the internet; reach it through a tunnel, e.g.
  gcloud compute ssh ${cluster.id}-scheduler --zone ${cluster.zone} -- -L 8787:localhost:8787
(SSH works where the network allows it: the default network's default-allow-ssh rule does.)
If this process dies, delete what it left with:
  GCPCluster.cleanup({ projectId: '${cluster.projectId}', zone: '${cluster.zone}', clusterIds: ['${cluster.id}'] })`);
    if (hold) {
      const rl = createInterface({ input: process.stdin, output: process.stdout });
      await rl.question('\nPress Enter to delete the cluster (Ctrl-C works too). ');
      rl.close();
    }
  } finally {
    await cluster.close();
    // The client key is worthless once the cluster (and its CA) is gone; remove it anyway.
    await rm(dir, { recursive: true, force: true });
    console.log(`Closed ${cluster.id}: VMs, boot disks and firewall rules deleted.`);
  }
}

main().catch((err: unknown) => {
  // ClusterStartError messages say which step failed and show the VM's serial console tail.
  console.error(DaskCloudError.isInstance(err) ? `${err.code}: ${err.message}` : err);
  process.exit(1);
});
