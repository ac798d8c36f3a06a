/**
 * scripts/trixie-python, the second Dask client of the test bed (Debian trixie's Dask 2024.12.1 on
 * Python 3.13, from the root scripts/build-trixie-root.sh builds): it must behave like a host
 * interpreter, because the tests hand it to the library as the `python` option and run clients
 * with it inside the simulated network.
 *
 * - the PID the caller gets is Python's own: exit codes, stdin, signals to the process group;
 * - the host's /tmp, the repository and the working directory at their own paths, the caller's
 *   network namespace and uid;
 * - a LocalCluster on it (mutual TLS, 2 workers) computes for a client of the same interpreter,
 *   and the library's version check finds client and cluster equal.
 *
 * Loopback only (LocalCluster on 127.0.0.1). Needs the trixie root (`scripts/build-trixie-root.sh`).
 */
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../providers/local';
import { have, trixieDask, trixiePython } from '../helpers/prereq';
import { clientEnv } from '../helpers/python';

const enabled = have(trixieDask());

function py(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(trixiePython()!, args, { cwd: options.cwd, env: options.env, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

describe.skipIf(!enabled)('scripts/trixie-python (Dask 2024.12.1 on Python 3.13 as a host interpreter)', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('exit codes, stdin, uid, network namespace, and the host paths it promises', async () => {
    const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'trixie-py-'));
    dirs.push(scratch);
    fs.writeFileSync(path.join(scratch, 'from-host'), 'written on the host');
    const code = [
      'import os, sys, distributed',
      'print(sys.version_info[:2], distributed.__version__)',
      'print(os.getcwd())',
      `print(open(${JSON.stringify(path.join(scratch, 'from-host'))}).read())`,
      `print(os.path.exists(${JSON.stringify(path.resolve(__dirname, '..', '..', 'package.json'))}))`,
      'print(os.getuid(), os.readlink("/proc/self/ns/net"))',
      'print(sys.stdin.read().upper())',
      'sys.exit(7)',
    ].join('\n');
    const r = await py(['-c', code], { cwd: scratch, input: 'from stdin' });
    expect(r.code, r.stderr).toBe(7);
    expect(r.stdout.trim().split('\n')).toEqual([
      '(3, 13) 2024.12.1',
      fs.realpathSync(scratch),
      'written on the host',
      'True',
      `${process.getuid?.()} ${fs.readlinkSync('/proc/self/ns/net')}`,
      'FROM STDIN',
    ]);
  });

  it('is the process the caller holds: a signal to its process group ends Python itself', async () => {
    const child = spawn(trixiePython()!, ['-c', 'import sys, time\nprint("ready", flush=True)\nsys.stdin.read()\ntime.sleep(60)'], {
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no "ready" from trixie-python within 30 s')), 30_000);
      child.stdout.on('data', (b: Buffer) => {
        if (b.toString().includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    expect(fs.readlinkSync(`/proc/${child.pid}/exe`)).toMatch(/\/python3\.13$/);
    child.stdin.end();
    process.kill(-child.pid!, 'SIGTERM');
    expect(await exited).toEqual([null, 'SIGTERM']);
  });

  it('runs a LocalCluster (mutual TLS, 2 workers) that a client of the same interpreter computes on, versions equal', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'trixie-py-client-'));
    dirs.push(dir);
    await using cluster = await LocalCluster.start({ nWorkers: 2, python: trixiePython()!, closeOnSignals: false });
    expect(cluster.schedulerAddress).toMatch(/^tls:\/\/127\.0\.0\.1:\d+$/);
    expect(cluster.versions?.mismatches).toEqual([]);
    expect(cluster.versions?.scheduler.distributed).toBe('2024.12.1');
    await cluster.writeClientConfig(dir);
    const r = await py(
      ['-c', "from distributed import Client\nc = Client(timeout='20s')\nprint(c.submit(lambda x: x + 1, 1).result())\nprint(sorted(set(c.run(lambda: __import__('sys').version.split()[0]).values())))\nc.close()"],
      { env: clientEnv(dir) },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['2', "['3.13.5']"]);
  }, 90_000);
});
