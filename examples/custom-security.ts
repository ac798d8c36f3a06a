/**
 * Your own TLS material instead of the generated per-cluster credentials: a `Security` loaded
 * from files, with a distinct certificate and key for the scheduler, the workers and the client,
 * all issued by your CA. Here on GCPCluster; EC2Cluster and DropletCluster take the same option.
 *
 * What travels where: the scheduler VM receives the CA certificate and the scheduler certificate
 * + key; each worker VM the CA and the worker certificate + key; the client key never leaves this
 * machine. A VM cluster refuses a Security whose scheduler or worker would have to borrow the
 * client's certificate.
 *
 *   DASK_TLS_DIR=./tls GOOGLE_CLOUD_PROJECT=my-project npx tsx examples/custom-security.ts
 *
 * DASK_TLS_DIR holds ca.pem, scheduler.pem/.key, worker.pem/.key, client.pem/.key. To make a
 * throw-away set with OpenSSL 3 (EC P-256; what strict X.509 verification, Python 3.13's default,
 * needs: a critical CA basicConstraints, key identifiers, serverAuth + clientAuth, a SAN):
 *
 *   mkdir -p tls && cd tls
 *   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
 *   openssl req -x509 -new -key ca.key -sha256 -days 30 -subj /CN=my-dask-ca \
 *     -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out ca.pem
 *   for role in scheduler worker client; do
 *     openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $role.key
 *     openssl req -new -key $role.key -subj /CN=dask-$role |
 *       openssl x509 -req -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -sha256 -out $role.pem \
 *         -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:dask-%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' $role)
 *   done
 *   chmod 600 *.key
 *
 * Keep ca.key offline: dask-cloud never needs it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Security, DaskCloudError } from 'dask-cloud';
import { GCPCluster } from 'dask-cloud/gcp';

async function main(): Promise<void> {
  const tlsDir = process.env.DASK_TLS_DIR ?? './tls';
  const file = (name: string) => path.join(tlsDir, name);
  // Checked here, before any VM exists: files readable, keys match certificates, chains to the
  // CA, dates, key sizes. Each failure is a SecurityError whose `code` says what is wrong.
  const security = Security.fromFiles({
    tlsCaFile: file('ca.pem'),
    tlsSchedulerCert: file('scheduler.pem'),
    tlsSchedulerKey: file('scheduler.key'),
    tlsWorkerCert: file('worker.pem'),
    tlsWorkerKey: file('worker.key'),
    tlsClientCert: file('client.pem'),
    tlsClientKey: file('client.key'),
    requireEncryption: true,
    tlsMinVersion: '1.3',
  });
  console.log(`Loaded TLS material from ${tlsDir}; it expires ${security.expiresAt.toISOString()}`);

  await using cluster = await GCPCluster.start({
    zone: process.env.GCP_ZONE ?? 'us-central1-a',
    nWorkers: 2,
    security,
    onEvent: (e) => {
      if (e.type === 'phase-end') console.log(`  ${e.phase.padEnd(11)} ${e.durationMs} ms`);
    },
  });
  console.log(`Ready at ${cluster.schedulerAddress}: the scheduler presents ${file('scheduler.pem')}`);

  const dir = await mkdtemp(path.join(os.tmpdir(), `${cluster.id}-client-`));
  try {
    // The same files, arranged for a Python client: DASK_CONFIG=<dir> python -c 'Client()'.
    await cluster.writeClientConfig(dir);
    const workers = await cluster.workers();
    console.log(`${workers.length} workers registered over TLS 1.3 with their own certificates`);
    console.log(`DASK_CONFIG=${dir} python3 -c "from distributed import Client; print(Client().submit(sum, [1, 2, 3]).result())"`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  // `await using` closes the cluster here: VMs, disks and firewall rules are deleted.
}

main().catch((err: unknown) => {
  console.error(DaskCloudError.isInstance(err) ? `${err.code}: ${err.message}` : err);
  process.exit(1);
});
