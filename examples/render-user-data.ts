/**
 * Render the cloud-init user-data a scheduler and a worker VM would boot from, without launching
 * anything (dask-cloudprovider's get_cloud_init). Prints sizes and the worker's YAML with the
 * key material elided.
 *
 *   npx tsx examples/render-user-data.ts
 */
import { Security, renderUserData, USER_DATA_LIMITS } from 'dask-cloud';

async function main(): Promise<void> {
  const security = await Security.temporary();
  const scheduler = renderUserData({ role: 'scheduler', security, limitBytes: USER_DATA_LIMITS.ec2 });
  const worker = renderUserData({
    role: 'worker',
    security,
    schedulerAddress: 'tls://10.0.0.2:8786',
    limitBytes: USER_DATA_LIMITS.ec2,
  });
  console.log(`scheduler user-data: ${scheduler.rawBytes} bytes raw, ${scheduler.bytes} sent (gzip: ${scheduler.gzipped})`);
  console.log(`worker user-data:    ${worker.rawBytes} bytes raw, ${worker.bytes} sent (gzip: ${worker.gzipped})`);
  console.log('--- worker cloud-config (base64 file contents shortened) ---');
  console.log(worker.text.replace(/(content: )(\S{40})\S+/g, '$1$2...'));
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
