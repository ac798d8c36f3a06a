/** Running one of the project's TypeScript entry points as a child process, as a user would. */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import * as path from 'node:path';
import type { Readable } from 'node:stream';

const root = path.resolve(__dirname, '../..');

export interface SpawnedScript {
  child: ChildProcessByStdio<null, Readable, Readable>;
  /** Resolves with the exit code (null after a signal). */
  exited: Promise<number | null>;
  stdout(): string;
  stderr(): string;
  /** stdout and stderr interleaved as they arrived. */
  output(): string;
  /** Waits, at most `ms`, for `text` in the output; throws with the output when it never comes. */
  until(text: string | RegExp, ms?: number): Promise<void>;
  /** The exit code once the process exits on its own within `ms`; else it is SIGKILLed: `'timeout'`. */
  exitWithin(ms: number): Promise<number | null | 'timeout'>;
}

/**
 * Spawns `node --import tsx script ...args` from the project root. `node --import tsx` rather
 * than the tsx CLI, which runs the script in a grandchild: a signal must reach the process
 * under test, and its exit must be that process's.
 */
export function spawnTsx(script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): SpawnedScript {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let out = '';
  child.stdout.on('data', (b: Buffer) => {
    stdout += b.toString();
    out += b.toString();
  });
  child.stderr.on('data', (b: Buffer) => {
    stderr += b.toString();
    out += b.toString();
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return {
    child,
    exited,
    stdout: () => stdout,
    stderr: () => stderr,
    output: () => out,
    async until(text, ms = 60_000) {
      const deadline = Date.now() + ms;
      const seen = () => (typeof text === 'string' ? out.includes(text) : text.test(out));
      while (!seen() && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 100));
      if (!seen()) throw new Error(`the process did not print ${String(text)}:\n${out}`);
    },
    async exitWithin(ms) {
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)))]);
      clearTimeout(timer);
      if (code === 'timeout') {
        child.kill('SIGKILL');
        await exited;
      }
      return code;
    },
  };
}
