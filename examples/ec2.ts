/**
 * A Dask cluster on AWS EC2: 1 scheduler + 2 workers with fresh mutual-TLS credentials, a client
 * config for Python, then (by default) close. Every resource is tagged with the cluster id and
 * deleted on close, on Ctrl-C, or when start fails.
 *
 *   AWS_REGION=eu-west-1 npx tsx examples/ec2.ts           # start, show the workers, close
 *   AWS_REGION=eu-west-1 npx tsx examples/ec2.ts --hold    # keep it running until Enter / Ctrl-C
 *
 * Credentials come from the AWS SDK's default chain (env vars, ~/.aws, SSO, instance role); they
 * are never sent to the VMs. DEBUG=dask-cloud:* shows every API call.
 * Costs: a t3.medium and two m6i.large instances while it runs (about 0.25 USD/hour in eu-west-1).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline/promises';
import { DaskCloudError } from 'dask-cloud';
import { EC2Cluster } from 'dask-cloud/ec2';

async function main(): Promise<void> {
  const hold = process.argv.includes('--hold');
  const cluster = new EC2Cluster({
    // region: 'eu-west-1',               // else AWS_REGION / AWS_DEFAULT_REGION
    nWorkers: 2,
    // ingressCidrs: ['203.0.113.7/32'],  // who may reach the scheduler port (default: anyone, mutual TLS guards it)
    onEvent: (e) => {
      if (e.type === 'phase-end') console.log(`  ${e.phase.padEnd(11)} ${e.durationMs} ms`);
      if (e.type === 'member-launched') console.log(`  launched ${e.role} ${e.name} (${e.memberId})`);
      if (e.type === 'warning') console.warn(`  warning: ${e.message}`);
      if (e.type === 'rollback') console.warn(`  rolling back: ${e.reason}`);
    },
  });
  console.log(`Starting ${cluster.id} on EC2: 1 scheduler + 2 workers (mutual TLS)`);
  await cluster.start();
  const dir = await mkdtemp(path.join(os.tmpdir(), `${cluster.id}-client-`));
  try {
    console.log(`Ready at ${cluster.schedulerAddress}`);
    await cluster.writeClientConfig(dir);
    const workers = await cluster.workers();
    console.log(`${workers.length} workers: ${workers.map((w) => `${w.address} (${w.nthreads} threads)`).join(', ')}`);
    console.log(`
Client config written to ${dir} (ca.pem, client.pem, client.key 0600, dask.yaml). From Python:

  DASK_CONFIG=${dir} python3 -c "from distributed import Client; c = Client(); print(c.submit(sum, [1, 2, 3]).result())"

The client needs the same Dask version as the cluster (the image ghcr.io/dask/dask:<tag> it runs).
The dashboard (port 8787) is not open to the internet; reach it through an SSH or SSM tunnel.`);
    if (hold) {
      const rl = createInterface({ input: process.stdin, output: process.stdout });
      await rl.question('\nPress Enter to delete the cluster (Ctrl-C works too). ');
      rl.close();
    }
  } finally {
    await cluster.close();
    // The client key is worthless once the cluster (and its CA) is gone; remove it anyway.
    await rm(dir, { recursive: true, force: true });
    console.log(`Closed ${cluster.id}: instances terminated, security group deleted.`);
  }
}

main().catch((err: unknown) => {
  // ClusterStartError messages say which phase failed and show the VM's console tail.
  console.error(DaskCloudError.isInstance(err) ? `${err.code}: ${err.message}` : err);
  process.exit(1);
});
