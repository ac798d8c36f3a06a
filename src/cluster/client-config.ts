import * as path from 'node:path';
import { loadYaml } from '../lazy';
import { writePrivateFiles } from '../security/private-dir';
import { checkDashboardLink, type Security } from '../security/security';

/**
 * Write what a Python client needs to reach the cluster into `dir` (and, when the cluster has one,
 * the dashboard link Python's `client.dashboard_link` shows). With security on, the
 * Security object writes CA, client certificate and key (0600) and the TLS config; with security
 * off only the scheduler address is written. Either way under the same rules (see
 * `Security.writeClientConfig`): a directory it creates is 0700, an existing one must be yours and
 * not writable by others, and symbolic links are refused.
 */
export async function writeClientConfig(
  security: Security | false,
  dir: string,
  schedulerAddress: string,
  dashboardLink?: string,
): Promise<{ dir: string; configFile: string }> {
  if (security !== false) {
    const written = await security.writeClientConfig(dir, { schedulerAddress, dashboardLink });
    return { dir: written.dir, configFile: written.configFile };
  }
  checkDashboardLink(dashboardLink);
  const config = { 'scheduler-address': schedulerAddress, ...(dashboardLink === undefined ? {} : { distributed: { dashboard: { link: dashboardLink } } }) };
  const abs = await writePrivateFiles(dir, [{ name: 'dask.yaml', content: loadYaml().stringify(config), mode: 0o644 }]);
  return { dir: abs, configFile: path.join(abs, 'dask.yaml') };
}
