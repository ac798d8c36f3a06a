/**
 * Runs the shipped launcher for real (the bytes decoded from user-data) against a fake `dask`
 * that reports its argv and environment: proves every value reaches the process exactly, with
 * no shell in between.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderUserData, VM_PATHS, type UserDataOptions } from '../../src/cloud-init';
import { Security } from '../../src/security';
import { have } from '../helpers/prereq';
import { BOOTSTRAP, decode, NASTY_ENV } from './cloud-init.shared';

const PYTHON = '/usr/bin/python3';
const python = () => ({ ok: fs.existsSync(PYTHON), reason: `${PYTHON} is missing; install it with \`apt-get install -y python3\`` });

/** A stand-in for `dask` (or prepare.sh): prints what it was started with as JSON. */
const REPORTER = `#!${PYTHON}
import json, os, sys
json.dump({"argv": sys.argv, "env": dict(os.environ)}, sys.stdout)
`;

describe.runIf(have(python()))('launch.py (as shipped in user-data)', () => {
  let tmp: string;
  let security: Security;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dask-cloud-launcher-'));
    security = await Security.temporary();
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  /** Decodes launch.py/launch.json from the rendered user-data into a fresh directory. */
  function unpack(options: UserDataOptions) {
    const d = decode(renderUserData(options).text);
    const dir = fs.mkdtempSync(path.join(tmp, 'vm-'));
    const launcher = path.join(dir, 'launch.py');
    const spec = path.join(dir, 'launch.json');
    fs.writeFileSync(launcher, d.file(VM_PATHS.launcher).content);
    fs.writeFileSync(spec, d.file(VM_PATHS.launchSpec).content);
    const bin = path.join(dir, 'bin');
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, 'dask'), REPORTER, { mode: 0o755 });
    return { dir, launcher, spec, bin, parsed: JSON.parse(d.file(VM_PATHS.launchSpec).content) as { args: string[]; env: Record<string, string> } };
  }

  function launch(launcher: string, spec: string, env: Record<string, string>) {
    const r = spawnSync(PYTHON, [launcher, spec], { env, encoding: 'utf8', timeout: 30_000 });
    return { status: r.status, stderr: r.stderr, out: r.status === 0 ? (JSON.parse(r.stdout) as { argv: string[]; env: Record<string, string> }) : undefined };
  }

  const cases: [string, (s: Security) => UserDataOptions][] = [
    ['secure worker with nasty env', (s) => ({ role: 'worker', security: s, schedulerAddress: 'tls://10.0.0.2:8786', env: NASTY_ENV, bootstrap: BOOTSTRAP, nthreads: 2, workerName: 'w "1"' })],
    ['secure scheduler with idle timeout', (s) => ({ role: 'scheduler', security: s, idleTimeout: '30 minutes', schedulerOptions: ['--preload', 'my module.py'] })],
    ['plain native scheduler', () => ({ role: 'scheduler', security: false, runtime: 'native', dashboardAddress: false })],
  ];

  it.each(cases)('%s: dask gets exactly the spec argv, and the spec env over the inherited one', (_name, make) => {
    const { launcher, spec, bin, parsed } = unpack(make(security));
    // LC_ALL keeps Python from coercing the locale (which would add LC_CTYPE to the environment).
    const inherited = { PATH: bin, LC_ALL: 'C.UTF-8', INHERITED: 'kept', DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION: 'overridden' };
    const r = launch(launcher, spec, inherited);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.out!.argv).toEqual([path.join(bin, 'dask'), ...parsed.args]);
    const expectedEnv = { ...inherited, ...parsed.env };
    // security: false ships no REQUIRE_ENCRYPTION, so the inherited value stays.
    expect(r.out!.env).toEqual(expectedEnv);
    for (const [k, v] of Object.entries(make(security).env ?? {})) expect(r.out!.env[k], k).toBe(v);
  });

  it('with EXTRA_*_PACKAGES set and the image’s prepare.sh present, dask starts through prepare.sh with the env', () => {
    const { dir, launcher, spec, bin, parsed } = unpack({
      role: 'worker',
      security,
      schedulerAddress: 'tls://10.0.0.2:8786',
      env: { EXTRA_PIP_PACKAGES: 's3fs "pandas<3"' },
    });
    const prepare = path.join(dir, 'prepare.sh');
    fs.writeFileSync(prepare, REPORTER, { mode: 0o755 });
    const source = fs.readFileSync(launcher, 'utf8');
    expect(source).toContain("PREPARE = '/usr/bin/prepare.sh'");
    fs.writeFileSync(launcher, source.replace("PREPARE = '/usr/bin/prepare.sh'", `PREPARE = ${JSON.stringify(prepare)}`));
    const r = launch(launcher, spec, { PATH: bin, LC_ALL: 'C.UTF-8' });
    expect(r.status).toBe(0);
    expect(r.out!.argv).toEqual([prepare, path.join(bin, 'dask'), ...parsed.args]);
    expect(r.out!.env.EXTRA_PIP_PACKAGES).toBe('s3fs "pandas<3"');

    // Without those variables prepare.sh is left alone.
    const plain = unpack({ role: 'scheduler', security: false });
    fs.writeFileSync(plain.launcher, fs.readFileSync(plain.launcher, 'utf8').replace("PREPARE = '/usr/bin/prepare.sh'", `PREPARE = ${JSON.stringify(prepare)}`));
    expect(launch(plain.launcher, plain.spec, { PATH: plain.bin, LC_ALL: 'C.UTF-8' }).out!.argv[0]).toBe(path.join(plain.bin, 'dask'));
  });

  it('finds dask beside the interpreter when PATH lacks it (venvs, conda)', () => {
    const { dir, launcher, spec, parsed } = unpack({ role: 'scheduler', security: false });
    const venvBin = path.join(dir, 'venv', 'bin');
    fs.mkdirSync(venvBin, { recursive: true });
    fs.symlinkSync(PYTHON, path.join(venvBin, 'python3'));
    fs.writeFileSync(path.join(venvBin, 'dask'), REPORTER, { mode: 0o755 });
    const r = spawnSync(path.join(venvBin, 'python3'), [launcher, spec], { env: { PATH: path.join(dir, 'empty'), LC_ALL: 'C.UTF-8' }, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout).argv).toEqual([path.join(venvBin, 'dask'), ...parsed.args]);
  });

  it('without any dask it exits non-zero and says why', () => {
    const { launcher, spec, dir } = unpack({ role: 'scheduler', security: false });
    // An interpreter in a folder without dask (the host's /usr/bin may well have a real one).
    const lonely = path.join(dir, 'lonely');
    fs.mkdirSync(lonely);
    fs.symlinkSync(PYTHON, path.join(lonely, 'python3'));
    const r = spawnSync(path.join(lonely, 'python3'), [launcher, spec], { env: { PATH: path.join(dir, 'empty'), LC_ALL: 'C.UTF-8' }, encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/no dask on PATH or beside /);
  });
});
