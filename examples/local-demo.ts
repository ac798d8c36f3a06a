/**
 * The demo: a real local Dask cluster with generated mutual-TLS credentials, a Python computation
 * that connects using only the written client config, and an unauthenticated client refused.
 *
 *   npm run demo            (DEBUG=dask-cloud:* for detailed logs)
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { chooseDaskImage, DaskCloudError, findPython, LocalCluster, pinnedDaskImage, SchedulerClient, Security } from 'dask-cloud';
import { ensureDask } from '../scripts/ensure-dask';

function python(exe: string, code: string, env: NodeJS.ProcessEnv): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile(exe, ['-c', code], { env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ ok: !err, out: (stdout + stderr).trim() });
    });
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  const py = await ensureDask();
  const started = Date.now();
  const cluster = new LocalCluster({
    nWorkers: 2,
    python: py,
    onEvent: (e) => {
      if (e.type === 'phase-end') console.log(`  ${e.phase.padEnd(11)} ${e.durationMs} ms`);
    },
  });
  const clientDir = await mkdtemp(path.join(os.tmpdir(), 'dask-cloud-demo-'));
  let pids: number[] = [];
  try {
    console.log('Starting a local cluster: 1 scheduler + 2 workers, fresh cluster-scoped TLS credentials');
    await cluster.start();
    pids = cluster.pids();
    console.log(`Ready in ${Date.now() - started} ms at ${cluster.schedulerAddress}`);

    await cluster.writeClientConfig(clientDir);
    console.log(`Client config written to ${clientDir} (ca.pem, client.pem, client.key 0600, dask.yaml)`);

    // The Python client gets nothing but DASK_CONFIG: address and TLS settings come from the file.
    const env: NodeJS.ProcessEnv = { ...process.env, DASK_CONFIG: clientDir };
    for (const k of Object.keys(env)) if (k.startsWith('DASK_') && k !== 'DASK_CONFIG') delete env[k];
    const computed = await python(
      py,
      [
        'from distributed import Client',
        "c = Client(timeout='30s')",
        'n = len(c.scheduler_info()["workers"])',
        'total = sum(c.gather(c.map(lambda x: x * x, range(100))))',
        'print(f"{n} workers computed sum(x*x for x < 100) = {total}")',
        'c.close()',
      ].join('\n'),
      env,
    );
    if (cluster.versions) console.log(`Versions compared after start: ${cluster.versions.mismatches.length === 0 ? 'client, scheduler and workers match' : cluster.versions.mismatches.map((m) => m.package).join(', ')}`);
    if (!computed.ok) throw new Error(`the authenticated Python client failed:\n${computed.out}`);
    console.log(`Python client with the generated certificate: ${computed.out.split('\n').pop()}`);

    // A client without a client certificate must be refused by the scheduler.
    const anonEnv = { ...process.env };
    for (const k of Object.keys(anonEnv)) if (k.startsWith('DASK_')) delete anonEnv[k];
    const anon = await python(
      py,
      [
        'import asyncio, ssl',
        'from distributed.comm import connect',
        // It even trusts the cluster's CA and speaks TLS; it only lacks a client certificate.
        `ctx = ssl.create_default_context(cafile=${JSON.stringify(path.join(clientDir, 'ca.pem'))})`,
        'ctx.check_hostname = False',
        'async def main():',
        `    comm = await connect(${JSON.stringify(cluster.schedulerAddress)}, timeout=5, ssl_context=ctx)`,
        "    await comm.write({'op': 'identity', 'reply': True})",
        '    await comm.read()',
        'try:',
        '    asyncio.run(main())',
        '    print("CONNECTED")',
        'except Exception as e:',
        '    print(f"refused: {type(e).__name__}: {e}")',
      ].join('\n'),
      anonEnv,
    );
    if (anon.out.includes('CONNECTED') || !anon.out.includes('refused')) {
      throw new Error(`a client without certificates was NOT refused:\n${anon.out}`);
    }
    console.log(`Python client without a certificate:    ${anon.out.split('\n').pop()}`);

    // A certificate from another cluster's CA is refused too; our own wire client says why.
    const stranger = await Security.temporary();
    const own = cluster.security as Security;
    const tls = { ...stranger.clientTlsOptions(), ca: own.caCertPem }; // trusts our scheduler, presents a foreign cert
    const refused = await SchedulerClient.connect(cluster.schedulerAddress, { tls, timeoutMs: 5_000 }).then(
      async (c) => {
        await c.close();
        return undefined;
      },
      (err: unknown) => err,
    );
    if (!DaskCloudError.isInstance(refused)) throw new Error('a client with another CA\'s certificate was NOT refused');
    console.log(`Client with another cluster's certificate: refused: ${refused.code}: ${refused.message.split('\n')[0]}`);
  } finally {
    await cluster.close();
    await rm(clientDir, { recursive: true, force: true });
  }
  const left = pids.filter(isAlive);
  if (left.length > 0) throw new Error(`processes still running after close: ${left.join(', ')}`);
  console.log(`Closed: ${pids.length} processes stopped, nothing left running.`);

  // A cloud cluster runs the Dask of the client it is started from (daskVersion: 'auto').
  const { versions } = await findPython(py);
  const image = chooseDaskImage({ dask: versions.packages.dask ?? '', python: versions.python }) ?? pinnedDaskImage();
  console.log(`This client (Dask ${versions.packages.dask}, Python ${versions.python}): a cloud cluster started from it runs ${image.image}`);
  for (const d of image.differences) console.log(`  note: ${d}`);
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
