/**
 * One private directory for the whole run as DASK_CLOUD_HOME: every cluster a test starts writes
 * its local directory (client credentials, record) there, never under the user's config dir.
 * Test processes and the CLIs they spawn inherit it; it is removed when the run ends.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export default function setup(): () => void {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dask-cloud-test-home-'));
  process.env.DASK_CLOUD_HOME = dir;
  return () => rmSync(dir, { recursive: true, force: true });
}
