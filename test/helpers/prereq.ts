/**
 * Prerequisite checks for tests that need real Dask, cloud-init, root, nspawn, ...
 *
 * Outside CI a missing prerequisite skips the test with a message saying how to install it.
 * With CI=true nothing may skip: the check throws, so the run fails loudly instead.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { buildScriptHash, storedBuildHash } from './build-hash';

export const IN_CI = process.env.CI === 'true';

export interface Prereq {
  ok: boolean;
  /** Why it is missing and how to install it. */
  reason: string;
}

/** Returns true when the prerequisite is present; in CI, throws when it is not. */
export function have(p: Prereq): boolean {
  if (p.ok) return true;
  if (IN_CI) throw new Error(`CI=true and a test prerequisite is missing: ${p.reason}`);
  // eslint-disable-next-line no-console
  console.warn(`[skip] ${p.reason}`);
  return false;
}

function commandWorks(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 30_000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * Which Dask the real-Dask tests run against. By default the host's (Debian bookworm: Dask
 * 2022.12.1 on Python 3.11); with `DASK_CLOUD_TEST_CLIENT=trixie` (the vitest project
 * `dask-2024.12`) the trixie root's (Dask 2024.12.1 on Python 3.13), for the Python tests spawn
 * and, through DASK_CLOUD_PYTHON (test/setup.ts), for the library and the CLI too.
 */
export const TEST_CLIENT: 'host' | 'trixie' = process.env.DASK_CLOUD_TEST_CLIENT === 'trixie' ? 'trixie' : 'host';

let pythonCache: string | null | undefined;
/** A Python interpreter that can import `distributed` (the one TEST_CLIENT names), or null. */
export function pythonWithDask(): string | null {
  if (TEST_CLIENT === 'trixie') return trixiePython();
  if (pythonCache !== undefined) return pythonCache;
  const candidates = [process.env.DASK_CLOUD_PYTHON, '/usr/bin/python3', 'python3', 'python'].filter(Boolean) as string[];
  pythonCache = candidates.find((c) => commandWorks(c, ['-c', 'import distributed'])) ?? null;
  return pythonCache;
}

export const realDask = (): Prereq => ({
  ok: pythonWithDask() !== null,
  reason:
    TEST_CLIENT === 'trixie'
      ? trixieStatus().reason
      : 'no Python can import distributed; install it with `apt-get install -y python3-distributed` (Debian)',
});

export const cloudInitSchema = (): Prereq => ({
  ok: commandWorks('cloud-init', ['--version']),
  reason: 'cloud-init is not installed; install it with `apt-get install -y cloud-init`',
});

export const openssl = (): Prereq => ({
  ok: commandWorks('openssl', ['version']),
  reason: 'openssl is not installed; install it with `apt-get install -y openssl`',
});

/** scripts/trixie-python: runs the trixie root's Python 3.13 (Dask 2024.12.1) as a host interpreter. */
export const TRIXIE_PYTHON = path.resolve(__dirname, '..', '..', 'scripts', 'trixie-python');
const TRIXIE_BUILD = path.resolve(__dirname, '..', '..', 'scripts', 'build-trixie-root.sh');
/** Where scripts/build-trixie-root.sh puts the root (DASK_CLOUD_TRIXIE_ROOT overrides it, for the wrapper too). */
export const TRIXIE_ROOT = process.env.DASK_CLOUD_TRIXIE_ROOT || path.resolve(__dirname, '..', '..', '.cache', 'trixie-root');

let trixieCache: { python: string | null; reason: string } | undefined;
function trixieStatus(): { python: string | null; reason: string } {
  if (trixieCache) return trixieCache;
  const fix = 'build it (as root, needs Debian\'s mirror; ~1 min, cached) with `scripts/build-trixie-root.sh`';
  if (!existsSync(path.join(TRIXIE_ROOT, 'usr/bin/python3'))) {
    trixieCache = { python: null, reason: `no trixie root at ${TRIXIE_ROOT} (the second Dask client, Dask 2024.12.1 on Python 3.13): ${fix}` };
  } else if (!process.env.DASK_CLOUD_TRIXIE_ROOT && storedBuildHash(TRIXIE_ROOT) !== buildScriptHash(TRIXIE_BUILD)) {
    // The default root only: a root named by the caller is theirs to keep current.
    trixieCache = { python: null, reason: `the trixie root at ${TRIXIE_ROOT} was built by another version of scripts/build-trixie-root.sh: re-run it` };
  } else if (!commandWorks(TRIXIE_PYTHON, ['-c', 'import distributed'])) {
    trixieCache = { python: null, reason: `${TRIXIE_PYTHON} cannot import distributed from ${TRIXIE_ROOT} (it needs root, or unprivileged user namespaces): run it by hand to see why, or rebuild the root with \`FORCE=1 scripts/build-trixie-root.sh\`` };
  } else {
    trixieCache = { python: TRIXIE_PYTHON, reason: '' };
  }
  return trixieCache;
}

/**
 * The second Dask client: the path of scripts/trixie-python (Debian trixie's Dask 2024.12.1 on
 * Python 3.13, next to the host's bookworm Dask 2022.12.1) when its root is built and it imports
 * `distributed`; else null. Usable wherever an interpreter path is: the `python` option,
 * DASK_CLOUD_PYTHON, `net.run(where, trixiePython(), ...)`.
 */
export function trixiePython(): string | null {
  return trixieStatus().python;
}

export const trixieDask = (): Prereq => ({
  ok: trixiePython() !== null,
  reason: trixieStatus().reason,
});
