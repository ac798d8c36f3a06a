/**
 * The benchmarks' exit status: `npm run bench` fails when a row misses its goal, refuses an
 * unknown benchmark name, and passes when every goal is met. The cheap `userdata` benchmark (no
 * build, no timing) with its goal forced through DASK_CLOUD_BENCH_GOALS makes both outcomes
 * certain, whatever the real size is today.
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '../..');
const tsx = path.join(root, 'node_modules/tsx/dist/cli.mjs');
const benchScript = path.join(root, 'bench/run.ts');

// What one run costs, on an idle 2-core machine here: tsx starting and compiling bench/run.ts
// (~0.8 s; with the sources the `userdata` benchmark imports, ~1 s), then `userdata` minting one
// ECDSA and one RSA-2048 credential set (RSA key generation, ~0.4 s) and rendering three
// user-data (~10 ms). `npm run` adds npm's own start (~0.5 s).
const TSX_COMPILE_MS = 1_000;
const USERDATA_WORK_MS = 500;
const NPM_START_MS = 500;
// Other test files run Dask clusters on the same two cores: a run took 3x as long at a load
// average of 8. Allow 10x before calling it hung.
const LOAD_FACTOR = 10;
const USERDATA_RUN_MS = LOAD_FACTOR * (TSX_COMPILE_MS + USERDATA_WORK_MS);
const USAGE_RUN_MS = LOAD_FACTOR * TSX_COMPILE_MS;
const NPM_RUN_MS = USERDATA_RUN_MS + LOAD_FACTOR * NPM_START_MS;
/** The test's own limit: its child's, plus time to report a killed child rather than time out blind. */
const slack = (ms: number): number => ms + 5_000;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command without blocking this worker (a synchronous child would stall vitest's RPC). */
function run(file: string, args: string[], env: Record<string, string>, timeoutMs: number): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: root, env: { ...process.env, ...env }, timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals | null }) | null;
      resolve({
        code: e ? (typeof e.code === 'number' ? e.code : null) : 0,
        signal: e?.signal ?? null,
        stdout,
        stderr,
      });
    });
  });
}

/** `tsx bench/run.ts …`: exactly what `npm run bench …` runs. */
function bench(args: string[], goals: string | undefined, timeoutMs: number): Promise<Run> {
  return run(process.execPath, [tsx, benchScript, ...args], goals === undefined ? {} : { DASK_CLOUD_BENCH_GOALS: goals }, timeoutMs);
}

const USERDATA_ROW = /^(ok  |MISS) secure worker user-data \(docker, EC\), raw +\d+ B .* goal <= (\d+) B \(DASK_CLOUD_BENCH_GOALS\)$/m;

describe('npm run bench exit status', () => {
  it(
    'exits non-zero when a goal is missed, and says which',
    async () => {
      // Through npm itself: its exit status is what a CI step sees.
      const r = await run('npm', ['run', '--silent', 'bench', 'userdata'], { DASK_CLOUD_BENCH_GOALS: 'userdata.worker=1' }, NPM_RUN_MS);
      expect(r.signal, r.stderr).toBeNull();
      expect(r.code, r.stderr).toBe(1);
      const row = USERDATA_ROW.exec(r.stdout);
      expect(row?.[1], r.stdout).toBe('MISS');
      expect(row?.[2]).toBe('1');
      expect(r.stderr).toContain('1 goal(s) missed: secure worker user-data');
    },
    slack(NPM_RUN_MS),
  );

  it(
    'exits 0 when every goal is met',
    async () => {
      const r = await bench(['userdata'], 'userdata.worker=1000000', USERDATA_RUN_MS);
      expect(r.signal, r.stderr).toBeNull();
      expect(r.code, r.stderr).toBe(0);
      expect(USERDATA_ROW.exec(r.stdout)?.[1], r.stdout).toBe('ok  ');
      expect(r.stdout).not.toMatch(/^MISS/m);
    },
    slack(USERDATA_RUN_MS),
  );

  it(
    'exits 2 on an unknown benchmark name, listing the valid ones, and runs nothing',
    async () => {
      const r = await bench(['userdata', 'imprt'], undefined, USAGE_RUN_MS);
      expect(r.signal, r.stderr).toBeNull();
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain("unknown benchmark 'imprt'");
      expect(r.stderr).toContain('valid names are import, temporary, userdata, local');
      expect(r.stdout).toBe('');
    },
    slack(USAGE_RUN_MS),
  );

  it(
    'exits 2 on a goal override it does not know, rather than ignore it',
    async () => {
      const r = await bench(['userdata'], 'userdata.wroker=1', USAGE_RUN_MS);
      expect(r.signal, r.stderr).toBeNull();
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain("DASK_CLOUD_BENCH_GOALS: cannot use 'userdata.wroker=1'");
      expect(r.stdout).toBe('');
    },
    slack(USAGE_RUN_MS),
  );
});
