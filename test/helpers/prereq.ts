/**
 * Prerequisite checks for tests that need real Dask, cloud-init, root, nspawn, ...
 *
 * Outside CI a missing prerequisite skips the test with a message saying how to install it.
 * With CI=true nothing may skip: the check throws, so the run fails loudly instead.
 */
import { execFileSync } from 'node:child_process';

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

let pythonCache: string | null | undefined;
/** A Python interpreter that can import `distributed`, or null. */
export function pythonWithDask(): string | null {
  if (pythonCache !== undefined) return pythonCache;
  const candidates = [process.env.DASK_CLOUD_PYTHON, '/usr/bin/python3', 'python3', 'python'].filter(Boolean) as string[];
  pythonCache = candidates.find((c) => commandWorks(c, ['-c', 'import distributed'])) ?? null;
  return pythonCache;
}

export const realDask = (): Prereq => ({
  ok: pythonWithDask() !== null,
  reason: 'no Python can import distributed; install it with `apt-get install -y python3-distributed` (Debian)',
});

export const cloudInitSchema = (): Prereq => ({
  ok: commandWorks('cloud-init', ['--version']),
  reason: 'cloud-init is not installed; install it with `apt-get install -y cloud-init`',
});

export const openssl = (): Prereq => ({
  ok: commandWorks('openssl', ['version']),
  reason: 'openssl is not installed; install it with `apt-get install -y openssl`',
});
