/**
 * Make sure a Python that imports `distributed` exists: pip where PyPI is reachable, else apt on
 * Debian/Ubuntu when running as root, else a clear instruction. Used by the demo and CI.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { findPython, INSTALL_HINT } from '../src/dask/python';

function run(cmd: string, args: string[], timeoutMs: number): boolean {
  console.log(`$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', timeout: timeoutMs, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  return r.status === 0;
}

export async function ensureDask(): Promise<string> {
  try {
    return (await findPython()).path;
  } catch {
    // fall through to installing
  }
  console.log('Dask (the Python package distributed) is not installed; installing it.');
  const pip = run('python3', ['-m', 'pip', 'install', '--quiet', '--retries', '0', '--timeout', '10', 'distributed'], 300_000);
  if (!pip && existsSync('/usr/bin/apt-get') && process.getuid?.() === 0) {
    // Debian's package is for the system interpreter, /usr/bin/python3.
    run('apt-get', ['update', '-qq'], 300_000);
    run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'python3-distributed'], 600_000);
  }
  try {
    return (await findPython()).path;
  } catch {
    throw new Error(`could not install Dask automatically; ${INSTALL_HINT}`);
  }
}

if (require.main === module) {
  ensureDask().then(
    (p) => console.log(`Dask found: ${p}`),
    (err) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
