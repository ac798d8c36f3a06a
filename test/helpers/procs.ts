/** Processes a test starts in their own process group (`detached: true`), and files laid out as a VM would have them. */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DaskFile } from '../../src/dask/command';

export { freePort } from '../../src/net';

export interface Started {
  name: string;
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** SIGTERM the process's group, wait (bounded), then SIGKILL the group in any case: a nanny's worker child may outlive its parent. */
export async function stopGroup(p: Started): Promise<void> {
  const pid = p.proc.pid;
  if (pid === undefined) return;
  const group = (signal: NodeJS.Signals) => {
    try {
      process.kill(-pid, signal);
    } catch {
      /* already gone */
    }
  };
  if (p.proc.exitCode === null && p.proc.signalCode === null) {
    group('SIGTERM');
    await Promise.race([p.exited, new Promise((r) => setTimeout(r, 5_000))]);
  }
  group('SIGKILL');
  if (p.proc.exitCode === null && p.proc.signalCode === null) await Promise.race([p.exited, new Promise((r) => setTimeout(r, 5_000))]);
}

/** Writes files the way a VM's cloud-init does: the mode from the spec, whatever the umask. */
export function writeFiles(files: DaskFile[]): void {
  for (const f of files) {
    fs.mkdirSync(path.dirname(f.path), { recursive: true, mode: 0o700 });
    fs.writeFileSync(f.path, f.content, { mode: Number.parseInt(f.mode, 8) });
    fs.chmodSync(f.path, Number.parseInt(f.mode, 8));
  }
}

/** Minimal environment: nothing of ours (no DASK_* from the test runner) leaks into Python. */
export function baseEnv(home: string, extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, PYTHONWARNINGS: 'ignore', ...extra };
}

/** Starts `command` in a process group of its own (for stopGroup), with baseEnv(home, env), collecting its output. */
export function startGroup(name: string, command: string, args: string[], home: string, env: Record<string, string> = {}): Started {
  const proc = spawn(command, args, { env: baseEnv(home, env), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return { name, proc, output: () => out, exited };
}
