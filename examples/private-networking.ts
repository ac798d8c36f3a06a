/**
 * A cluster with no public entry point (`privateNetworking: true`), here on DigitalOcean: the
 * Droplets are Private Droplets (`public_networking: false`) where the region offers them, else
 * they keep a public interface that the cluster firewall closes to all inbound traffic. The
 * scheduler address is the private one; clients must be inside the VPC.
 *
 *   DIGITALOCEAN_TOKEN=dop_v1_... npx tsx examples/private-networking.ts
 *
 * Optional: DO_REGION (default nyc3), DO_VPC (VPC uuid; default the region's default VPC).
 *
 * Egress: Private Droplets reach the internet only through a VPC NAT gateway. Without one, the
 * default Docker runtime cannot pull the Dask image: add a NAT gateway to the VPC, or use
 * `runtime: 'native'` with an image (snapshot) that has Python + distributed (DO_IMAGE=<id>).
 * The same options work for GCPCluster and EC2Cluster.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline/promises';
import { DaskCloudError } from 'dask-cloud';
import { DropletCluster } from 'dask-cloud/digitalocean';

async function main(): Promise<void> {
  const image = process.env.DO_IMAGE;
  const cluster = new DropletCluster({
    region: process.env.DO_REGION ?? 'nyc3',
    vpc: process.env.DO_VPC,
    nWorkers: 2,
    privateNetworking: true,
    idleTimeout: '2 hours',
    ...(image !== undefined ? { image: /^\d+$/.test(image) ? Number(image) : image, runtime: 'native' as const } : {}),
    endpoint: process.env.DO_ENDPOINT, // only for a local API fake
    onEvent: (e) => {
      if (e.type === 'phase-end') console.log(`  ${e.phase.padEnd(11)} ${(e.durationMs / 1000).toFixed(1)} s`);
      if (e.type === 'warning') console.log(`  warning: ${e.message}`);
    },
  });
  let dir: string | undefined;
  try {
    console.log(`Starting ${cluster.id} with private networking...`);
    // start() proves readiness by connecting to the scheduler's private address: run this script
    // from inside the VPC (e.g. a small Droplet in it), or it times out and deletes everything.
    await cluster.start();
    dir = await mkdtemp(path.join(os.tmpdir(), `${cluster.id}-client-`));
    await cluster.writeClientConfig(dir);
    const [host, port] = cluster.schedulerAddress.replace('tls://', '').split(':');
    console.log(`
Scheduler: ${cluster.schedulerAddress} — reachable only inside the VPC (${cluster.region}).
Client configuration: ${dir}

From a machine inside the VPC:
  DASK_CONFIG=${dir} python3 -c "from distributed import Client; print(Client().submit(sum, [1, 2, 3]).result())"

From a machine in another VPC region or outside (copy the directory first):
  scp -r ${dir} you@vpc-host:dask-client
  ssh you@vpc-host 'DASK_CONFIG=dask-client python3 -c "from distributed import Client; Client()"'

Through an SSH tunnel via a host in the VPC (Dask does not check hostnames, so TLS still holds):
  ssh -N -L 8786:${host}:${port} you@vpc-host &
  sed -i 's#${cluster.schedulerAddress}#tls://127.0.0.1:8786#' ${path.join(dir, 'dask.yaml')}
  DASK_CONFIG=${dir} python3 -c "from distributed import Client; Client()"
`);
    if (process.stdin.isTTY) {
      const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
      await rl.question('Press Enter to delete the cluster... ');
      rl.close();
    }
  } finally {
    await cluster.close();
    if (dir) await rm(dir, { recursive: true, force: true }); // holds the client key
    console.log('Closed: Droplets and firewall deleted.');
  }
}

main().catch((err) => {
  console.error(DaskCloudError.isInstance(err) ? `${err.code}: ${err.message}` : err);
  process.exit(1);
});
