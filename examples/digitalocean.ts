/**
 * A Dask cluster on DigitalOcean: 1 scheduler + 2 worker Droplets with fresh mutual-TLS
 * credentials. Writes the client configuration, prints how to compute from Python, waits for
 * Enter (or Ctrl-C), then deletes every Droplet and the firewall.
 *
 *   DIGITALOCEAN_TOKEN=dop_v1_... npx tsx examples/digitalocean.ts
 *
 * Optional: DO_REGION (default nyc3), DO_SIZE (default s-2vcpu-4gb), DEBUG=dask-cloud:* for logs.
 * Costs: three Droplets for as long as it runs (the scheduler also stops itself after 2 idle hours).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline/promises';
import { DaskCloudError } from 'dask-cloud';
import { DropletCluster } from 'dask-cloud/digitalocean';

async function main(): Promise<void> {
  const cluster = new DropletCluster({
    region: process.env.DO_REGION ?? 'nyc3',
    size: process.env.DO_SIZE ?? 's-2vcpu-4gb',
    nWorkers: 2,
    idleTimeout: '2 hours',
    // Only for trying the example against a local API fake; a real run leaves it unset.
    endpoint: process.env.DO_ENDPOINT,
    onEvent: (e) => {
      if (e.type === 'phase-end') console.log(`  ${e.phase.padEnd(11)} ${(e.durationMs / 1000).toFixed(1)} s`);
      if (e.type === 'member-launched') console.log(`  launched ${e.role} ${e.name} (droplet ${e.memberId})`);
      if (e.type === 'warning') console.log(`  warning: ${e.message}`);
    },
  });
  let tempDir: string | undefined;
  try {
    console.log(`Starting ${cluster.id}: 1 scheduler + 2 workers in ${cluster.region} (Droplets boot in ~1 minute)`);
    await cluster.start();
    console.log(`Ready: ${cluster.schedulerAddress} (mutual TLS; workers use ${cluster.schedulerPrivateAddress})`);

    const dir = process.env.DASK_CLIENT_DIR ?? (tempDir = await mkdtemp(path.join(os.tmpdir(), `${cluster.id}-client-`)));
    await cluster.writeClientConfig(dir);
    console.log(`
Client configuration written to ${dir} (ca.pem, client.pem, client.key 0600, dask.yaml).
Compute from Python (distributed installed) with nothing but this directory:

  DASK_CONFIG=${dir} python3 -c "
from distributed import Client
c = Client()
print(len(c.scheduler_info()['workers']), 'workers')
print(sum(c.gather(c.map(lambda x: x * x, range(100)))))"

The dashboard is not open to the internet; the scheduler port accepts only clients holding
${path.join(dir, 'client.pem')}. Anyone with that directory can use the cluster: keep it private.
`);
    if (process.stdin.isTTY) {
      const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
      await rl.question('Press Enter to delete the cluster... ');
      rl.close();
    }
  } finally {
    console.log('Deleting the Droplets and the firewall...');
    await cluster.close();
    // The client key is worthless once the cluster is gone; do not leave it lying around.
    if (tempDir) await rm(tempDir, { recursive: true, force: true });
    console.log('Closed: nothing of this cluster is left on DigitalOcean.');
  }
}

main().catch((err) => {
  console.error(DaskCloudError.isInstance(err) ? `${err.code}: ${err.message}` : err);
  process.exit(1);
});
