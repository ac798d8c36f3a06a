import * as path from 'node:path';
import { loadYaml } from '../lazy';
import { writePrivateFiles } from '../security/private-dir';
import type { Security } from '../security/security';

/**
 * Write what a Python client needs to reach the cluster into `dir`. With security on, the
 * Security object writes CA, client certificate and key (0600) and the TLS config; with security
 * off only the scheduler address is written. Either way under the same rules (see
 * `Security.writeClientConfig`): a directory it creates is 0700, an existing one must be yours and
 * not writable by others, and symbolic links are refused.
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
  const abs = await writePrivateFiles(dir, [
    { name: 'dask.yaml', content: loadYaml().stringify({ 'scheduler-address': schedulerAddress }), mode: 0o644 },
  ]);
  return { dir: abs, configFile: path.join(abs, 'dask.yaml') };
}
