/**
 * Running a Python Dask client the way a user would: with nothing but `DASK_CONFIG` pointing at
 * the directory `writeClientConfig` wrote — no other DASK_* variable of ours leaks in.
 */
import { execFile } from 'node:child_process';
import type { RunResult, SimNetwork } from '../sim';
import { pythonWithDask, trixiePython } from './prereq';

/** A small computation a client runs on a cluster: prints 90 (the doubles of 0..9, summed). */
export const COMPUTE = "from distributed import Client\nc = Client(timeout='20s')\nprint(sum(c.gather(c.map(lambda x: x * 2, range(10)))))\nc.close()";

/** The environment of a client configured only by `DASK_CONFIG=dir`. */
export function clientEnv(dir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, DASK_CONFIG: dir };
  for (const k of Object.keys(env)) if (k.startsWith('DASK_') && k !== 'DASK_CONFIG') delete env[k];
  return env;
}

/** Runs `code` on this machine with only `DASK_CONFIG=dir`; resolves with its trimmed stdout. */
export function pythonWithConfig(dir: string, code: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(pythonWithDask()!, ['-c', code], { env: clientEnv(dir), timeout: 60_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout.trim()),
    );
  });
}

/**
 * Runs `code` inside a simulated-network namespace with only `DASK_CONFIG=dir`, dialling `dials`
 * (route-checked first). The client is the simulated VMs' own Dask: the VM image is Debian trixie
 * (Dask 2024.12.1, Python 3.13), and only a client of the same Dask computes on it, so this runs
 * scripts/trixie-python (gate on `have(trixieDask())`), not the host's bookworm Dask.
 */
export function pythonIn(net: SimNetwork, where: 'vpc' | 'internet', dir: string, dials: string, code: string): Promise<RunResult> {
  return net.run(where, trixiePython()!, ['-c', code], { env: { DASK_CONFIG: dir }, dials: [dials], timeoutMs: 60_000, check: false });
}
