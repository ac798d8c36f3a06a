/**
 * The key of a cached test-bed build (the trixie root, the simulated-VM image): what the build
 * script stores next to its output, `build_hash` in scripts/debian-root.sh, the script and that
 * helper. A cache whose stored hash differs was built by another version of the script.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

export function buildScriptHash(script: string): string {
  return createHash('sha256').update(readFileSync(script)).update(readFileSync(path.join(path.dirname(script), 'debian-root.sh'))).digest('hex');
}

/** The hash stored next to a build's output (`OUT.hash`), or '' when there is none. */
export function storedBuildHash(out: string): string {
  try {
    return readFileSync(`${out}.hash`, 'utf8').trim();
  } catch {
    return '';
  }
}
