/**
 * The user's `bootstrap` runs as its own `set -eu` script, and its failure stops Dask from
 * starting, visibly. The shell tests run the rendered runcmd exactly as cloud-init builds it (its
 * own `shellify`), with the VM paths moved into a temp dir and `systemctl` / `shutdown` replaced
 * by stubs that record their calls: nothing here re-implements the runner.
 */
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BOOTSTRAP_FAILED_MARK, renderUserData, unitPath, VM_PATHS, type UserDataOptions } from '../../src/cloud-init';
import { consoleTail } from '../../src/cluster/vm';
import { cloudInitSchema, have } from '../helpers/prereq';
import { decode } from './cloud-init.shared';

const WORKER: UserDataOptions = { role: 'worker', security: false, schedulerAddress: 'tcp://10.0.0.2:8786', runtime: 'native' };

describe('bootstrap in the rendered user-data', () => {
  it('is one root-only script that starts with `set -eu`, run by its own shell between Docker and the Dask unit', () => {
    const bootstrap = ['echo one', 'for i in 1 2; do echo $i; done\necho multi-line'];
    const d = decode(renderUserData({ ...WORKER, runtime: 'docker', bootstrap }).text);
    const script = d.file(VM_PATHS.bootstrapScript);
    expect(script.permissions).toBe('0700');
    expect(script.content).toBe(`set -eu\n${bootstrap.join('\n')}\n`);
    expect(d.runcmd).toHaveLength(4);
    expect(d.runcmd[0]).toMatch(/command -v docker/);
    const runner = d.runcmd[1] as string;
    expect(runner).toContain(`/bin/sh ${VM_PATHS.bootstrapScript} `);
    expect(runner).toContain(VM_PATHS.bootstrapLog);
    expect(runner).toContain(BOOTSTRAP_FAILED_MARK);
    expect(runner).not.toMatch(/^\s*#/m); // comments stripped from the shipped copy
    // The user's commands are never pasted into runcmd itself.
    expect(runner).not.toContain('echo one');
    expect(d.runcmd.slice(2)).toEqual([['systemctl', 'daemon-reload'], ['systemctl', 'enable', '--now', 'dask-worker.service']]);
  });

  it('powers off on failure only with autoShutdown; without bootstrap there is no script and no runner', () => {
    const on = decode(renderUserData({ ...WORKER, bootstrap: ['true'] }).text).runcmd[0] as string;
    const off = decode(renderUserData({ ...WORKER, bootstrap: ['true'], autoShutdown: false }).text).runcmd[0] as string;
    expect(on).toContain('shutdown -h now');
    expect(off).not.toContain('shutdown');
    const none = decode(renderUserData({ ...WORKER, bootstrap: [] }).text);
    expect(none.files.map((f) => f.path)).not.toContain(VM_PATHS.bootstrapScript);
    expect(none.runcmd).toEqual([['systemctl', 'daemon-reload'], ['systemctl', 'enable', '--now', 'dask-worker.service']]);
  });
});

/** Python that prints the runcmd script cloud-init would write for this user-data. */
const SHELLIFY = `
import sys
from cloudinit import util
sys.stdout.write(util.shellify(util.load_yaml(sys.stdin.read()).get("runcmd", [])))
`;

interface RunResult {
  code: number;
  stdout: string;
  /** Each stubbed command line, in order (`systemctl enable --now dask-worker.service`, `shutdown -h now`). */
  calls: string[];
  dir: string;
}

describe.runIf(have(cloudInitSchema()))('the rendered runcmd, run by a real shell', () => {
  let tmp: string;
  const started: number[] = [];
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dask-cloud-bootstrap-'));
  });
  afterAll(() => {
    for (const pid of started) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /**
   * Renders the user-data, lets cloud-init build the runcmd script, moves every VM path under a
   * fresh directory, writes the bootstrap script where the runner looks for it, and runs the
   * runcmd script with `shell` (cloud-init uses /bin/sh; bash must behave the same).
   */
  async function runOnFakeVm(options: Partial<UserDataOptions>, shell = 'bash'): Promise<RunResult> {
    const dir = fs.mkdtempSync(path.join(tmp, 'vm-'));
    const text = renderUserData({ ...WORKER, ...options }).text;
    const runcmd = execFileSync('/usr/bin/python3', ['-c', SHELLIFY], { input: text, timeout: 30_000 }).toString();
    const moved = (p: string) => path.join(dir, p);
    const script = runcmd.replaceAll(VM_PATHS.bootstrapScript, moved(VM_PATHS.bootstrapScript)).replaceAll(VM_PATHS.bootstrapLog, moved(VM_PATHS.bootstrapLog));
    for (const f of decode(text).files) {
      fs.mkdirSync(path.dirname(moved(f.path)), { recursive: true });
      fs.writeFileSync(moved(f.path), f.content, { mode: parseInt((f.permissions as string | undefined) ?? '0644', 8) });
    }
    fs.mkdirSync(path.dirname(moved(VM_PATHS.bootstrapLog)), { recursive: true });
    const bin = moved('stub-bin');
    fs.mkdirSync(bin);
    for (const cmd of ['systemctl', 'shutdown']) {
      fs.writeFileSync(path.join(bin, cmd), `#!/bin/sh\necho "${cmd} $*" >> ${JSON.stringify(moved('calls'))}\n`, { mode: 0o755 });
    }
    fs.writeFileSync(moved('runcmd.sh'), script);
    const result = await new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile(shell, [moved('runcmd.sh')], { cwd: dir, env: { PATH: `${bin}:/usr/bin:/bin` }, timeout: 20_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
        resolve({ code, stdout: `${stdout}${stderr}` });
      });
    });
    const calls = fs.existsSync(moved('calls')) ? fs.readFileSync(moved('calls'), 'utf8').trim().split('\n') : [];
    return { ...result, calls, dir };
  }

  const START_DASK = ['systemctl daemon-reload', 'systemctl enable --now dask-worker.service'];

  it.each(['bash', 'sh'])("`exit 0` ends only the bootstrap script: runcmd still starts Dask (%s)", async (shell) => {
    const r = await runOnFakeVm({ bootstrap: ['echo hi', 'exit 0', 'echo never'] }, shell);
    expect(r.code, r.stdout).toBe(0);
    expect(r.calls).toEqual(START_DASK);
    expect(r.stdout).toMatch(/^hi$/m);
    expect(r.stdout).not.toContain('never');
    expect(r.stdout).toMatch(/^dask-cloud: bootstrap done$/m);
    expect(r.stdout).not.toContain(BOOTSTRAP_FAILED_MARK);
  });

  it.each(['bash', 'sh'])('`exit 3`: Dask is not started, the failure and the output are reported, the VM powers off (%s)', async (shell) => {
    const r = await runOnFakeVm({ bootstrap: ['echo preparing', 'echo oops >&2', 'exit 3', 'echo never'] }, shell);
    expect(r.code).not.toBe(0); // runcmd ends there: cloud-init records the failure
    expect(r.calls).toEqual(['shutdown -h now']);
    expect(r.stdout).toContain(`${BOOTSTRAP_FAILED_MARK} (exit 3): Dask is not started. Last lines of its output:\ndask-cloud: | preparing\ndask-cloud: | oops\ndask-cloud: powering off (autoShutdown)\n`);
    expect(r.stdout).not.toContain('never');
    // The whole output stays on the VM, root-only.
    const log = path.join(r.dir, VM_PATHS.bootstrapLog);
    expect(fs.readFileSync(log, 'utf8')).toBe('preparing\noops\n');
    expect(fs.statSync(log).mode & 0o777).toBe(0o600);
  });

  it('set -e: a failing command stops the bootstrap; set -u: so does an unset variable', async () => {
    const failing = await runOnFakeVm({ bootstrap: ['echo start', 'false', 'echo after-false'] });
    expect(failing.calls).toEqual(['shutdown -h now']);
    expect(failing.stdout).toContain(`${BOOTSTRAP_FAILED_MARK} (exit 1)`);
    expect(failing.stdout).not.toContain('after-false');
    const unset = await runOnFakeVm({ bootstrap: ['echo "$DASK_CLOUD_SURELY_UNSET_VARIABLE"', 'echo after-unset'] });
    expect(unset.calls).toEqual(['shutdown -h now']);
    expect(unset.stdout).toMatch(/dask-cloud: \| .*DASK_CLOUD_SURELY_UNSET_VARIABLE/);
    expect(unset.stdout).not.toContain('after-unset');
  });

  it('a syntax error (unterminated quote) fails before any command ran, with the shell’s message', async () => {
    const r = await runOnFakeVm({ bootstrap: ['touch ran-anyway', 'echo "unterminated'] });
    expect(r.calls).toEqual(['shutdown -h now']);
    expect(r.stdout).toMatch(/dask-cloud: bootstrap failed \(syntax error, exit 2\)/);
    expect(r.stdout).toMatch(/^dask-cloud: \| .*bootstrap\.sh: .*(Unterminated quoted string|unexpected EOF)/m);
    expect(fs.existsSync(path.join(r.dir, 'ran-anyway'))).toBe(false);
  });

  it('autoShutdown off: no power-off, Dask still not started, and the console says the VM stays up', async () => {
    const r = await runOnFakeVm({ bootstrap: ['exit 1'], autoShutdown: false });
    expect(r.calls).toEqual([]);
    expect(r.stdout).toContain(`${BOOTSTRAP_FAILED_MARK} (exit 1)`);
    expect(r.stdout).toContain('dask-cloud: the VM stays up for inspection (autoShutdown is off)');
  });

  it('reports only the last 20 lines; a daemon left running in the background does not hold up the boot', async () => {
    const lines = await runOnFakeVm({ bootstrap: ['for i in $(seq 1 30); do echo line-$i; done', 'exit 4'] });
    const block = lines.stdout.split('\n').filter((l) => l.startsWith('dask-cloud: | '));
    expect(block).toEqual(Array.from({ length: 20 }, (_, i) => `dask-cloud: | line-${i + 11}`));
    // Its stdout is the log file, not a pipe runcmd waits on: runcmd goes on while it sleeps.
    const bg = await runOnFakeVm({ bootstrap: ['sleep 60 & echo $! > bg.pid', 'echo daemon started'] });
    started.push(Number(fs.readFileSync(path.join(bg.dir, 'bg.pid'), 'utf8')));
    expect(bg.code, bg.stdout).toBe(0);
    expect(bg.calls).toEqual(START_DASK);
  });

  it('the Docker runtime: the runner comes after the Docker install and before the unit', async () => {
    const d = decode(renderUserData({ ...WORKER, runtime: 'docker', bootstrap: ['exit 0'] }).text);
    expect(d.file(unitPath('worker')).content).toContain('docker run');
    expect(d.runcmd.findIndex((c) => typeof c === 'string' && c.includes(VM_PATHS.bootstrapScript))).toBe(1);
  });
});

describe('consoleTail: the failure report survives a power-off', () => {
  it('keeps the bootstrap report when shutdown messages pushed it out of the last 40 lines', () => {
    const report = [
      '[   41.2] cloud-init[812]: dask-cloud: bootstrap failed (exit 3): Dask is not started. Last lines of its output:',
      '[   41.2] cloud-init[812]: dask-cloud: | E: Unable to locate package nosuchpkg',
      '[   41.2] cloud-init[812]: dask-cloud: powering off (autoShutdown)',
    ];
    const shutdown = Array.from({ length: 60 }, (_, i) => `[  OK  ] Stopped unit-${i}.service.`);
    const out = consoleTail(['boot noise', ...report, ...shutdown, 'reboot: Power down'].join('\r\n'));
    const lines = out.split('\n');
    expect(lines.slice(0, 4)).toEqual([...report, '[…]']);
    expect(lines.slice(4)).toEqual([...shutdown.slice(-39), 'reboot: Power down']);
  });

  it('is the plain tail otherwise', () => {
    const out = Array.from({ length: 50 }, (_, i) => `line ${i}`);
    expect(consoleTail(out.join('\n'))).toBe(out.slice(-40).join('\n'));
    const within = ['x', `${BOOTSTRAP_FAILED_MARK} (exit 1): …`, 'dask-cloud: | y'];
    expect(consoleTail(within.join('\n'))).toBe(within.join('\n'));
  });
});
