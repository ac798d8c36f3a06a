/**
 * security: false — a cluster WITHOUT TLS, for troubleshooting inside a private network.
 *
 *   AWS_REGION=eu-west-1 npx tsx examples/security-false.ts
 *
 * What turning security off means: scheduler, workers and clients talk plain `tcp://`, with no
 * encryption and no authentication. Dask runs whatever a connected client submits, so anyone who
 * can reach port 8786 can run arbitrary code on every VM (and read all data passing by). That is
 * why this example pairs it with `privateNetworking: true`: no instance gets a public address and
 * the security group admits the scheduler port only from inside the VPC. The library still warns
 * (a `warning` event) if you turn security off with a public scheduler.
 *
 * Consequences of private networking on EC2:
 * - run this script inside the VPC (an EC2 instance, a VPN, an SSM port forward): the library
 *   dials the scheduler's private address to check it is up;
 * - the subnet needs a NAT gateway for egress: without one the VMs cannot pull the Dask Docker
 *   image (use `runtime: 'native'` with an AMI that already has Dask, or add NAT).
 *
 * Prefer the default (mutual TLS) for anything else: it costs nothing at runtime that you would notice.
 */
import { DaskCloudError } from 'dask-cloud';
import { EC2Cluster } from 'dask-cloud/ec2';

async function main(): Promise<void> {
  await using cluster = new EC2Cluster({
    nWorkers: 1,
    security: false,
    privateNetworking: true,
    onEvent: (e) => {
      if (e.type === 'warning') console.warn(`warning: ${e.message}`);
      if (e.type === 'phase-end') console.log(`  ${e.phase} ${e.durationMs} ms`);
    },
  });
  await cluster.start();
  console.log(`Scheduler (no TLS, private address only): ${cluster.schedulerAddress}`);
  console.log(`From inside the VPC: python3 -c "from distributed import Client; print(Client('${cluster.schedulerAddress}'))"`);
  console.log(`${(await cluster.workers()).length} worker(s) registered; closing.`);
}

main().catch((err: unknown) => {
  console.error(DaskCloudError.isInstance(err) ? `${err.code}: ${err.message}` : err);
  process.exit(1);
});
