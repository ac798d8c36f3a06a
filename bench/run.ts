/**
 * Benchmarks for the core. Each one measures what a user's script pays, side by side with its
 * baseline in the same run, and prints one row per figure: `ok` or `MISS`, the name, the value
 * and the goal.
 *
 *   npm run bench [import|temporary|userdata|local ...]   (none: all of them)
 *
 * - import: `import { LocalCluster } from 'dask-cloud'` (ESM entry, dist/index.mjs) and
 *   `require('dask-cloud')` (dist/index.js), each in a fresh `node`, against a bare `node -e ''`,
 *   the three interleaved so they see the same machine load. Goal for both: <= 1.5x.
 * - temporary: `Security.temporary()` from the built package. The first call in a fresh process
 *   (what every `start()` pays, lazy loading of @peculiar/x509 included), median over fresh
 *   processes: <= 200 ms. Later calls (warm median): <= 25 ms.
 * - userdata: bytes of a secure worker's user-data (EC credentials, Docker runtime): <= 4096 B.
 * - local: `LocalCluster.start({ nWorkers: 2 })` in a fresh process, until both workers are
 *   registered, against the same Dask commands started by hand (see byHand): <= 1.3x.
 *
 * import, temporary and local measure the built package: the run rebuilds dist/ first.
 *
 * Exit status: 0 when every goal is met, 1 when a row is a MISS (or a benchmark failed), 2 for
 * bad usage (an unknown benchmark name, a bad DASK_CLOUD_BENCH_GOALS).
 *
 * DASK_CLOUD_BENCH_GOALS overrides goals, for testing the exit status only (its rows say so):
 * `DASK_CLOUD_BENCH_GOALS='userdata.worker=1,import.esm=2'`. Keys: see GOALS below.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Security as SecurityClass } from '../src/security';

const root = path.resolve(__dirname, '..');

/** Goals, by the key DASK_CLOUD_BENCH_GOALS uses. */
const GOALS = {
  'import.esm': { limit: 1.5, unit: 'x' },
  'import.cjs': { limit: 1.5, unit: 'x' },
  'temporary.first': { limit: 200, unit: ' ms' },
  'temporary.warm': { limit: 25, unit: ' ms' },
  'userdata.worker': { limit: 4096, unit: ' B' },
  local: { limit: 1.3, unit: 'x' },
} as const;
type GoalKey = keyof typeof GOALS;

const GOALS_ENV = 'DASK_CLOUD_BENCH_GOALS';

class UsageError extends Error {}

function parseGoalOverrides(text: string | undefined): Partial<Record<GoalKey, number>> {
  const out: Partial<Record<GoalKey, number>> = {};
  if (!text) return out;
  for (const item of text.split(',')) {
    const m = /^\s*([\w.]+)\s*=\s*(\S+)\s*$/.exec(item);
    if (!m || !Object.hasOwn(GOALS, m[1]!) || !(Number(m[2]) >= 0) || !Number.isFinite(Number(m[2]))) {
      throw new UsageError(`${GOALS_ENV}: cannot use '${item}': expected key=number with key one of ${Object.keys(GOALS).join(', ')}`);
    }
    out[m[1] as GoalKey] = Number(m[2]);
  }
  return out;
}

let overrides: Partial<Record<GoalKey, number>> = {};
const missed: string[] = [];

function goal(key: GoalKey): number {
  return overrides[key] ?? GOALS[key].limit;
}

/** One result row; a value above its goal is a MISS, and makes the run exit 1. */
function row(key: GoalKey, name: string, value: number, shown: string): void {
  const limit = goal(key);
  const ok = value <= limit;
  if (!ok) missed.push(name);
  const goalText = `<= ${limit}${GOALS[key].unit}${key in overrides ? ` (${GOALS_ENV})` : ''}`;
  console.log(`${ok ? 'ok  ' : 'MISS'} ${name.padEnd(46)} ${shown.padEnd(34)} goal ${goalText}`);
}

/** A figure printed for comparison only, without a goal. */
function info(name: string, shown: string): void {
  console.log(`     ${name.padEnd(46)} ${shown}`);
}

/** `a ms / b ms = r x`, with a third decimal when two would show a missed ratio as the goal itself. */
function ratioText(key: GoalKey, value: number, base: number): string {
  const ratio = value / base;
  const digits = ratio > goal(key) && ratio.toFixed(2) === goal(key).toFixed(2) ? 3 : 2;
  return `${value.toFixed(0)} ms / ${base.toFixed(0)} ms = ${ratio.toFixed(digits)}x`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Runs `node args` to completion in the package root (so `dask-cloud` resolves to this package
 * by its own name) and returns its wall time and stdout. A child that fails throws: a failed
 * import is fast, and must never pass for a fast one.
 */
function runNode(args: string[], timeoutMs: number): { ms: number; stdout: string } {
  const t = process.hrtime.bigint();
  const r = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : r.signal ? `signal ${r.signal}` : `exit code ${r.status}`;
    throw new Error(`node ${args.join(' ')} failed (${why}):\n${r.stderr}`);
  }
  return { ms, stdout: r.stdout };
}

let built = false;
/** Benchmarks of the built package measure the current sources. */
function build(): void {
  if (built) return;
  runNode([path.join(root, 'scripts/build.mjs')], 300_000);
  built = true;
}

async function benchImport(): Promise<void> {
  build();
  // Each script checks it got the real export, so a broken entry cannot look fast.
  const variants = {
    bare: ['-e', ''],
    esm: ['--input-type=module', '-e', `import { LocalCluster } from 'dask-cloud'; if (typeof LocalCluster !== 'function') process.exit(3);`],
    cjs: ['-e', `const { LocalCluster } = require('dask-cloud'); if (typeof LocalCluster !== 'function') process.exit(3);`],
  };
  const order = Object.keys(variants) as (keyof typeof variants)[];
  const times: Record<keyof typeof variants, number[]> = { bare: [], esm: [], cjs: [] };
  for (let i = 0; i < 15; i++) {
    // Interleaved, and the order rotated each round, so all three see the same machine load.
    for (let j = 0; j < order.length; j++) {
      const v = order[(i + j) % order.length]!;
      times[v].push(runNode(variants[v], 30_000).ms);
    }
  }
  const bare = median(times.bare);
  for (const [key, v, name] of [
    ['import.esm', 'esm', `import 'dask-cloud' (ESM) vs node -e ""`],
    ['import.cjs', 'cjs', `require('dask-cloud') (CJS) vs node -e ""`],
  ] as const) {
    row(key, name, median(times[v]) / bare, ratioText(key, median(times[v]), bare));
  }
}

/**
 * Run in a fresh `node` by benchTemporary: the first `Security.temporary()` of the process (the
 * package is already required: its import is the import benchmark's), then warm-up calls that are
 * discarded, then timed warm calls. Prints `{ first, warm: [...] }` in milliseconds.
 */
const TEMPORARY_CHILD = `
const { Security } = require('dask-cloud');
const [, keyAlgorithm, warmUp, timed] = process.argv;
const options = { keyAlgorithm };
(async () => {
  let t = performance.now();
  await Security.temporary(options);
  const first = performance.now() - t;
  for (let i = 0; i < Number(warmUp); i++) await Security.temporary(options);
  const warm = [];
  for (let i = 0; i < Number(timed); i++) {
    t = performance.now();
    await Security.temporary(options);
    warm.push(performance.now() - t);
  }
  console.log(JSON.stringify({ first, warm }));
})().catch((err) => { console.error(err); process.exit(1); });
`;

function temporaryInFreshProcess(keyAlgorithm: string, warmUp: number, timed: number): { first: number; warm: number[] } {
  return JSON.parse(runNode(['-e', TEMPORARY_CHILD, keyAlgorithm, String(warmUp), String(timed)], 120_000).stdout) as {
    first: number;
    warm: number[];
  };
}

async function benchTemporary(): Promise<void> {
  build();
  const first: number[] = [];
  const warm: number[] = [];
  for (let i = 0; i < 9; i++) {
    const r = temporaryInFreshProcess('ecdsa-p256', 3, 11);
    first.push(r.first);
    warm.push(...r.warm);
  }
  const f = median(first);
  row(
    'temporary.first',
    'Security.temporary() first call, fresh process',
    f,
    `${f.toFixed(0)} ms (${Math.min(...first).toFixed(0)}–${Math.max(...first).toFixed(0)}, ${first.length} runs)`,
  );
  const w = median(warm);
  row('temporary.warm', 'Security.temporary() ECDSA P-256 warm median', w, `${w.toFixed(1)} ms (${(w / goal('temporary.warm')).toFixed(2)} of goal)`);
  const rsa = temporaryInFreshProcess('rsa-2048', 1, 5);
  info('Security.temporary() RSA-2048 first / warm', `${rsa.first.toFixed(0)} ms / ${median(rsa.warm).toFixed(1)} ms (for comparison)`);
}

async function benchUserData(): Promise<void> {
  // Sizes do not depend on the build: the sources are measured directly.
  const { Security } = await import('../src/security');
  const { renderUserData } = await import('../src/cloud-init');
  const security = await Security.temporary();
  const worker = renderUserData({ role: 'worker', security, schedulerAddress: 'tls://10.0.0.2:8786' });
  const scheduler = renderUserData({ role: 'scheduler', security });
  row(
    'userdata.worker',
    'secure worker user-data (docker, EC), raw',
    worker.rawBytes,
    `${worker.rawBytes} B (${(worker.rawBytes / goal('userdata.worker')).toFixed(2)} of goal)`,
  );
  info('secure scheduler user-data (docker, EC), raw', `${scheduler.rawBytes} B`);
  const rsa = await Security.temporary({ keyAlgorithm: 'rsa-2048' });
  const rsaWorker = renderUserData({ role: 'worker', security: rsa, schedulerAddress: 'tls://10.0.0.2:8786' });
  info('secure worker user-data (docker, RSA), raw', `${rsaWorker.rawBytes} B`);
}

/** Bound for one cluster to come up, either way (FACTS: ~1.5 s on an idle machine). */
const CLUSTER_TIMEOUT_MS = 60_000;

/**
 * The baseline: what a person does by hand. The same `dask scheduler` / `dask worker` commands
 * LocalCluster runs (built by the same daskProcessSpec, so flags, TLS files and environment are
 * identical and only the orchestration differs), started at once, with credentials made before
 * the clock starts (LocalCluster's own timing includes making them).
 *
 * Readiness is read from the workers' own logs: a Dask worker logs `Registered to: <scheduler>`
 * once the scheduler has accepted it over mutual TLS, which is the moment LocalCluster waits
 * for (the scheduler listing both workers). Nothing of the library's client or polling code is
 * involved, and there is no polling interval: the baseline learns of readiness as early as
 * anyone could, so every millisecond the library spends detecting it counts against the library.
 */
async function byHand(python: string, security: SecurityClass): Promise<number> {
  const { daskProcessSpec } = await import('../src/dask/command');
  const { freePort } = await import('../src/net');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dc-bench-'));
  const children: ChildProcess[] = [];
  try {
    const t = performance.now();
    const port = await freePort();
    const address = `tls://127.0.0.1:${port}`;
    const specs = [
      daskProcessSpec({ role: 'scheduler', security, tlsDir: dir, host: '127.0.0.1', port, dashboardAddress: `127.0.0.1:${await freePort()}` }),
      daskProcessSpec({ role: 'worker', security, tlsDir: dir, host: '127.0.0.1', schedulerAddress: address, name: 'w0' }),
      daskProcessSpec({ role: 'worker', security, tlsDir: dir, host: '127.0.0.1', schedulerAddress: address, name: 'w1' }),
    ];
    const registered = new Promise<void>((resolve, reject) => {
      let waiting = 2;
      const timer = setTimeout(() => reject(new Error(`by hand: workers not registered after ${CLUSTER_TIMEOUT_MS} ms`)), CLUSTER_TIMEOUT_MS);
      const done = (err?: Error) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      void (async () => {
        const written = new Set<string>();
        for (const s of specs) {
          for (const f of s.files) {
            // The workers share their files: written once, as LocalCluster does.
            if (written.has(f.path)) continue;
            written.add(f.path);
            await writeFile(f.path, f.content);
            await chmod(f.path, parseInt(f.mode, 8));
          }
          const child = spawn(python, ['-m', 'dask', ...s.args], {
            env: { ...process.env, ...s.env },
            stdio: ['ignore', 'pipe', 'pipe'],
            detached: true,
          });
          children.push(child);
          const log: string[] = [];
          let partial = '';
          const scan = (chunk: Buffer) => {
            const lines = (partial + chunk.toString('utf8')).split('\n');
            partial = lines.pop()!;
            for (const line of lines) {
              log.push(line);
              if (s.role === 'worker' && /Registered to:/.test(line) && --waiting === 0) done();
            }
          };
          child.stdout!.on('data', scan);
          child.stderr!.on('data', scan);
          child.on('error', (err) => done(new Error(`by hand: could not start ${python}: ${err.message}`)));
          child.on('exit', (code, signal) => {
            if (waiting > 0) done(new Error(`by hand: dask ${s.role} exited (${signal ?? code}) before both workers registered:\n${log.slice(-15).join('\n')}`));
          });
        }
      })().catch(done);
    });
    await registered;
    return performance.now() - t;
  } finally {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            c.once('exit', () => resolve());
            try {
              process.kill(-c.pid!, 'SIGKILL'); // its process group: the nanny's worker too
            } catch {
              resolve();
            }
          }),
      ),
    );
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Run in a fresh `node` by benchLocalCluster: what a script does, timed from just before
 * `start()` (the import is the import benchmark's) until it resolves with both workers
 * registered; the first `Security.temporary()` of the process is inside. Prints
 * `{ ms, phases: { phase: ms } }`, the phases from start()'s own `phase-end` events.
 */
const LOCAL_CHILD = `
const { LocalCluster } = require('dask-cloud');
(async () => {
  const phases = {};
  const onEvent = (e) => { if (e.type === 'phase-end') phases[e.phase] = (phases[e.phase] ?? 0) + e.durationMs; };
  const t = performance.now();
  const cluster = await LocalCluster.start({ nWorkers: 2, python: process.argv[1], closeOnSignals: false, onEvent });
  const ms = performance.now() - t;
  const started = { ...phases };
  await cluster.close();
  console.log(JSON.stringify({ ms, phases: started }));
})().catch((err) => { console.error(err); process.exit(1); });
`;

async function benchLocalCluster(): Promise<void> {
  build();
  const { findPython } = await import('../src/dask/python');
  const { Security } = await import('../src/security');
  const python = (await findPython()).path;
  const ours: number[] = [];
  const hand: number[] = [];
  const phases = new Map<string, number[]>();
  for (let i = 0; i < 5; i++) {
    hand.push(await byHand(python, await Security.temporary()));
    const r = JSON.parse(runNode(['-e', LOCAL_CHILD, python], 2 * CLUSTER_TIMEOUT_MS).stdout) as { ms: number; phases: Record<string, number> };
    ours.push(r.ms);
    for (const [phase, ms] of Object.entries(r.phases)) phases.set(phase, [...(phases.get(phase) ?? []), ms]);
  }
  row('local', 'LocalCluster 2 ready workers vs by hand', median(ours) / median(hand), ratioText('local', median(ours), median(hand)));
  info('LocalCluster.start() phases, medians', [...phases].map(([phase, ms]) => `${phase} ${median(ms).toFixed(0)}`).join(', ') + ' ms');
}

const BENCHMARKS: Record<string, () => Promise<void>> = {
  import: benchImport,
  temporary: benchTemporary,
  userdata: benchUserData,
  local: benchLocalCluster,
};

async function main(): Promise<number> {
  const names = process.argv.slice(2);
  const unknown = names.filter((n) => !Object.hasOwn(BENCHMARKS, n));
  if (unknown.length > 0) {
    throw new UsageError(`unknown benchmark ${unknown.map((n) => `'${n}'`).join(', ')}: valid names are ${Object.keys(BENCHMARKS).join(', ')} (none: all)`);
  }
  overrides = parseGoalOverrides(process.env[GOALS_ENV]);
  for (const [name, fn] of Object.entries(BENCHMARKS)) if (names.length === 0 || names.includes(name)) await fn();
  if (missed.length > 0) {
    console.error(`bench: ${missed.length} goal(s) missed: ${missed.join('; ')}`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      console.error(`bench: ${err.message}`);
      process.exitCode = 2;
    } else {
      console.error(err);
      process.exitCode = 1;
    }
  },
);
