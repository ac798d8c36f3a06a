/** The package's version, read at run time from its package.json (the CLI's --version, the GCP client's User-Agent). */
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

/**
 * The version in the package.json of the package this code belongs to. Found by walking up from
 * this file's directory: the bundles (dist/*.js) are one level below it, the source
 * (src/version.ts, run with tsx) one too; the first package.json named dask-cloud is ours.
 */
export function packageVersion(from: string = __dirname): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file)) {
      try {
        const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
        if (pkg.name === 'dask-cloud' && typeof pkg.version === 'string') return pkg.version;
      } catch {
        // Not ours, or unreadable: keep looking upwards.
      }
    }
    if (path.dirname(dir) === dir) return 'unknown';
  }
}
