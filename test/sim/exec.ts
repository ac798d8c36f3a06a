/**
 * Bounded process execution for the simulated cloud. Every command has a timeout (never more than
 * 60 s, the network-safety rule); on timeout the process is killed by PID.
 */
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import createDebug from 'debug';

export const debug = createDebug('dask-cloud:sim');

/** Longest any single wait in the simulated cloud may take. */
export const MAX_WAIT_MS = 60_000;

export class SimError extends Error {
  constructor(
    message: string,
    readonly details: { command?: string; exitCode?: number | null; stdout?: string; stderr?: string } = {},
  ) {
    super(message);
    this.name = 'SimError';
  }
}

export interface RunOptions {
  /** Default 20 s; capped at 60 s. */
  timeoutMs?: number;
  env?: Record<string, string>;
  input?: string | Buffer;
  /** Throw unless the exit code is 0 (default true). */
  check?: boolean;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
}

function boundedTimeout(ms: number | undefined, fallback: number): number {
  const t = ms ?? fallback;
  if (!(t > 0)) throw new SimError(`timeout must be positive, got ${t}`);
  return Math.min(t, MAX_WAIT_MS);
}

/** Runs a command with a bounded timeout and collects its output. */
export function run(cmd: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = boundedTimeout(options.timeoutMs, 20_000);
  const started = Date.now();
  const line = [cmd, ...args].join(' ');
  debug('run %s', line);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: options.env ? { ...process.env, ...options.env } : process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }, timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => undefined);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new SimError(`cannot run ${line}: ${e.message}`, { command: line }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: RunResult = {
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
        durationMs: Date.now() - started,
      };
      if (options.check !== false && (code !== 0 || timedOut)) {
        const why = timedOut ? `timed out after ${timeoutMs} ms` : `exited with ${code ?? signal}`;
        reject(
          new SimError(`${line} ${why}: ${result.stderr.trim().slice(-2000)}`, {
            command: line,
            exitCode: code,
            stdout: result.stdout,
            stderr: result.stderr,
          }),
        );
        return;
      }
      resolve(result);
    });
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
  });
}

/** Synchronous variant for exit handlers (where nothing asynchronous runs any more). */
export function runSync(cmd: string, args: string[], timeoutMs = 10_000): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: Math.min(timeoutMs, MAX_WAIT_MS) });
    return true;
  } catch {
    return false;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a value other than undefined, bounded by `timeoutMs` (≤ 60 s). */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  options: { timeoutMs?: number; intervalMs?: number; describe?: () => Promise<string> | string } = {},
): Promise<T> {
  const timeoutMs = boundedTimeout(options.timeoutMs, 30_000);
  const deadline = Date.now() + timeoutMs;
  let interval = options.intervalMs ?? 50;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      const seen = options.describe ? await Promise.resolve(options.describe()).catch(() => '') : '';
      const last = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new SimError(`timed out after ${timeoutMs} ms waiting for ${what}${last}${seen ? `\n${seen}` : ''}`);
    }
    await sleep(Math.min(interval, Math.max(0, deadline - Date.now())));
    interval = Math.min(interval * 1.5, 500);
  }
}

/** True when a process with this PID exists (a zombie included: it is not reaped yet). */
export function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** True when a process with this PID exists and is not a zombie. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Sends a signal by PID, ignoring processes that are already gone. */
export function killPid(pid: number, signal: NodeJS.Signals | number): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* gone */
  }
}
