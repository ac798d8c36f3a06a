/**
 * Finding a Python interpreter that can import `distributed`: the `python` option, then the
 * DASK_CLOUD_PYTHON environment variable, then the usual names on PATH and Debian's system Python.
 * The first `python3` on PATH is often a virtualenv or pyenv shim without Dask, so each candidate
 * is actually asked to import it.
 */
import { loadChildProcess } from '../lazy';
import { LocalRuntimeError } from '../errors';

/** What a Python environment runs, as Dask's own version check sees it. */
export interface DaskVersions {
  /** `major.minor.micro`, e.g. `3.11.2`. */
  python: string;
  /** Installed versions by distribution name; null when absent. */
  packages: {
    dask: string | null;
    distributed: string | null;
    msgpack: string | null;
    cloudpickle: string | null;
    toolz: string | null;
    tornado: string | null;
    lz4: string | null;
  };
}

export interface PythonInfo {
  path: string;
  distributedVersion: string;
  /** The versions the interpreter would compute with (read from package metadata, nothing imported). */
  versions: DaskVersions;
}

/** The packages Dask compares between client, scheduler and workers (distributed/versions.py). */
export const COMPARED_PACKAGES = ['dask', 'distributed', 'msgpack', 'cloudpickle', 'toolz', 'tornado', 'lz4'] as const;

// find_spec + package metadata answer in ~0.1 s; actually importing distributed takes ~1 s.
// `-c` puts the working directory first on sys.path: drop it, or a distributed.py there would pass.
const CHECK = [
  'import sys, json',
  "if sys.path[:1] == ['']: del sys.path[0]",
  'import importlib.util as u, importlib.metadata as m',
  "if u.find_spec('distributed') is None: sys.exit('No module named distributed')",
  'def v(n):',
  '    try: return m.version(n)',
  '    except Exception: return None',
  `print(json.dumps({'python': '%d.%d.%d' % sys.version_info[:3], 'packages': {n: v(n) for n in ${JSON.stringify(COMPARED_PACKAGES)}}}))`,
].join('\n');
const CHECK_TIMEOUT_MS = 30_000;

function probe(python: string): Promise<PythonInfo | string> {
  return new Promise((resolve) => {
    loadChildProcess().execFile(python, ['-c', CHECK], { timeout: CHECK_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err) {
        const why = (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? 'not found'
          : (stderr.trim().split('\n').pop() ?? err.message);
        resolve(why);
        return;
      }
      try {
        const versions = JSON.parse(stdout.trim().split('\n').pop() ?? '') as DaskVersions;
        resolve({ path: python, distributedVersion: versions.packages.distributed ?? '', versions });
      } catch {
        resolve(`unexpected answer to the version probe: ${JSON.stringify(stdout.slice(0, 80))}`);
      }
    });
  });
}

const cache = new Map<string, Promise<PythonInfo>>();

export const INSTALL_HINT =
  "install Dask's distributed package for it: `python3 -m pip install distributed`, or on Debian/Ubuntu " +
  '`apt-get install python3-distributed` (then use /usr/bin/python3); or point the `python` option or ' +
  'DASK_CLOUD_PYTHON at an interpreter that has it';

/** Candidates in the order they are tried. */
export function pythonCandidates(explicit?: string): string[] {
  if (explicit !== undefined) return [explicit];
  const fromEnv = process.env.DASK_CLOUD_PYTHON;
  if (fromEnv) return [fromEnv];
  return ['python3', '/usr/bin/python3', 'python', '/usr/local/bin/python3'];
}

/** Resolve (and cache) an interpreter that imports `distributed`, or throw E_PYTHON_NOT_FOUND saying what was tried. */
export function findPython(explicit?: string): Promise<PythonInfo> {
  const key = explicit ?? `env:${process.env.DASK_CLOUD_PYTHON ?? ''}`;
  let found = cache.get(key);
  if (!found) {
    found = (async () => {
      const tried: string[] = [];
      for (const candidate of pythonCandidates(explicit)) {
        const result = await probe(candidate);
        if (typeof result !== 'string') return result;
        tried.push(`${candidate}: ${result}`);
      }
      throw new LocalRuntimeError(
        'E_PYTHON_NOT_FOUND',
        `no Python interpreter that can import distributed was found (tried ${tried.join('; ')}); ${INSTALL_HINT}`,
        { details: { tried } },
      );
    })();
    found.catch(() => cache.delete(key));
    cache.set(key, found);
  }
  return found;
}
