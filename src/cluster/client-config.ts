import { mkdir, writeFile, chmod } from 'node:fs/promises';
import * as path from 'node:path';
import { loadYaml } from '../lazy';
import type { Security } from '../security/security';

/**
 * Write what a Python client needs to reach the cluster into `dir`. With security on, the
 * Security object writes CA, client certificate and key (0600) and the TLS config; with security
 * off only the scheduler address is written.
 */
export async function writeClientConfig(
  security: Security | false,
  dir: string,
  schedulerAddress: string,
): Promise<{ dir: string; configFile: string }> {
  if (security !== false) {
    const written = await security.writeClientConfig(dir, { schedulerAddress });
    return { dir: written.dir, configFile: written.configFile };
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const configFile = path.join(dir, 'dask.yaml');
  await writeFile(configFile, loadYaml().stringify({ 'scheduler-address': schedulerAddress }), { mode: 0o644 });
  return { dir, configFile };
}
