/**
 * Scale benchmark (issue 12): how long the library takes to get N workers ready on each cloud,
 * compared with one VM boot, what it costs in API calls, how it copes with each cloud's rate
 * limits, and how much memory it needs. Runs on the in-repo API fakes and a stand-in for the VMs'
 * Dask (test/sim/standin.ts), all on loopback.
 *
 *   npm run bench:scale -- [--cloud gcp,ec2,digitalocean] [--n 1,10,100,1000] [--boot-ms 30000]
 *                          [--quick] [--baseline] [--no-scale] [--step-timeout-ms MS] [--lib GIT-REV] [--built]
 *
 * `--lib` measures the library of a commit (extracted with `git archive`) instead of the working tree.
 * `--built` measures the built package (`npm run build`, then `dist/<cloud>.js`) in a child that
 * runs under plain `node`, as users run it: tsx's loader adds tens of MB to a process's RSS.
 *
 * This process runs the fakes and the stand-in; each (cloud, N) measurement runs the library in
 * a child process (bench/scale/child.ts) that reaches the fake over loopback HTTP, so the child's
 * peak RSS is the library's own. Every measurement is bounded and torn down (child killed, fake
 * and stand-in stopped), also on failure.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { StandInBooter, versionsLike } from '../../test/sim/standin';
import type { ReceivedCall } from '../../test/fakes/core/server';
import { CLOUDS, DELETE_MS, LATENCY_TEXT, LIMITS_TEXT, TIME_TO_RUNNING_MS, isThrottle, minimumCalls, startCloud, type CloudName, type SimulatedCloud } from './clouds';
import type { ChildConfig, ChildMessage } from './child';
import { librarySource, loadLibrary, REPO_ROOT, type LibrarySource } from './lib';

interface Args {
  clouds: CloudName[];
  ns: number[];
  bootMs: number;
  baseline: boolean;
  scale: boolean;
  stepTimeoutMs?: number;
  lib?: string;
  built: boolean;
}

function parseArgs(argv: string[]): Args {
  let clouds: CloudName[] = [...CLOUDS];
  let ns: number[] | undefined;
  let bootMs: number | undefined;
  let quick = false;
  let baseline = false;
  let scale = true;
  let stepTimeoutMs: number | undefined;
  let lib: string | undefined;
  let built = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const flag = a.split('=')[0];
    if (flag === '--cloud') {
      clouds = value().split(',').map((c) => c.trim()) as CloudName[];
      for (const c of clouds) if (!CLOUDS.includes(c)) throw new Error(`unknown cloud ${c} (expected ${CLOUDS.join(', ')})`);
    } else if (flag === '--n') {
      ns = value().split(',').map(Number);
      if (ns.some((n) => !Number.isInteger(n) || n < 1 || n > 1000)) throw new Error('--n takes whole numbers from 1 to 1000');
    } else if (flag === '--boot-ms') {
      bootMs = Number(value());
      if (!Number.isInteger(bootMs) || bootMs < 0) throw new Error('--boot-ms takes a whole number of ms');
    } else if (flag === '--step-timeout-ms') stepTimeoutMs = Number(value());
    else if (flag === '--lib') lib = value();
    else if (flag === '--quick') quick = true;
    else if (flag === '--baseline') baseline = true;
    else if (flag === '--no-scale') scale = false;
    else if (flag === '--built') built = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (quick) {
    bootMs ??= 3_000;
    ns = (ns ?? [1, 10, 100]).filter((n) => n <= 100);
  }
  if (built && lib !== undefined) throw new Error('--built measures the working tree\'s build: leave out --lib');
  return { clouds, ns: ns ?? [1, 10, 100, 1000], bootMs: bootMs ?? 30_000, baseline, scale, stepTimeoutMs, lib, built };
}

interface Phase {
  name: string;
  start: number;
  end: number;
  ok: boolean;
  error?: string;
  detail?: Record<string, unknown>;
  peakRssKb?: number;
}

interface Measurement {
  cloud: CloudName;
  n: number;
  mode: 'library' | 'baseline';
  phases: Phase[];
  libPhases: { phase: string; start: number; end?: number }[];
  warnings: string[];
  pacing: string[];
  stderrWarnings: string[];
  calls: ReceivedCall[];
  maxRssKb?: number;
  rssAfterImportKb?: number;
  rssAtStartKb?: number;
  refused: string[];
  leftovers: string[];
  leftoversAfterMs?: number;
  failure?: string;
}

const CHILD = path.join(__dirname, 'child.ts');
/** `--built`: child.ts bundled to plain JavaScript (its packages stay external), run under plain node. */
let builtChild: string | undefined;

/** Builds the package (dist/) and a plain-JavaScript child that loads it. */
async function prepareBuilt(): Promise<() => Promise<void>> {
  execFileSync(process.execPath, [path.join(REPO_ROOT, 'scripts/build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 300_000 });
  // Inside node_modules: its imports of packages (also dynamic ones) resolve from there.
  const cache = path.join(REPO_ROOT, 'node_modules', '.cache');
  await mkdir(cache, { recursive: true });
  const dir = await mkdtemp(path.join(cache, 'dask-cloud-bench-child-'));
  const out = path.join(dir, 'child.cjs');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const esbuild = require('esbuild') as typeof import('esbuild');
  await esbuild.build({ entryPoints: [CHILD], outfile: out, bundle: true, platform: 'node', format: 'cjs', packages: 'external', target: 'node20', logLevel: 'error' });
  builtChild = out;
  return () => rm(dir, { recursive: true, force: true });
}

/** Tears down the measurement under way (child, fake, stand-in) when this process is interrupted. */
let abortCurrent: (() => Promise<void>) | undefined;
/** Removes an extracted library copy (see lib.ts). */
let disposeLibrary: (() => Promise<void>) | undefined;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    process.stderr.write(`\n[bench:scale] ${signal}: tearing down\n`);
    void (abortCurrent?.() ?? Promise.resolve())
      .then(() => disposeLibrary?.())
      .finally(() => process.exit(130));
  });
}

async function measure(cloudName: CloudName, n: number, mode: 'library' | 'baseline', args: Args, versions: Record<string, unknown> | undefined, lib: LibrarySource): Promise<Measurement> {
  const booter = new StandInBooter({ bootMs: args.bootMs, versions });
  const m: Measurement = { cloud: cloudName, n, mode, phases: [], libPhases: [], warnings: [], pacing: [], stderrWarnings: [], calls: [], refused: [], leftovers: [] };
  // One step (start, a scale, close) may take the boot, the cloud's time to run, and pacing at the
  // cloud's rate limits (EC2 refills 2 launches/s: 500 workers take 250 s).
  const stepTimeoutMs = args.stepTimeoutMs ?? args.bootMs + TIME_TO_RUNNING_MS + 120_000 + n * 600;
  const hardTimeoutMs = 5 * stepTimeoutMs + 120_000;
  let cloud: SimulatedCloud | undefined;
  let child: ChildProcess | undefined;
  const home = await mkdtemp(path.join(os.tmpdir(), 'dask-cloud-bench-home-'));
  abortCurrent = async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await cloud?.stop().catch(() => undefined);
    await booter.stopAll();
    await rm(home, { recursive: true, force: true });
  };
  try {
    cloud = await startCloud(cloudName, booter);
    const plainNode = args.built && mode === 'library' && builtChild !== undefined;
    const cfg: ChildConfig = { mode, target: cloud.target, n, bootMs: args.bootMs, stepTimeoutMs, noScale: !args.scale, libRoot: lib.root, built: plainNode };
    child = fork(plainNode ? builtChild! : CHILD, [], {
      // The built package runs under plain node; the sources (and the baseline) under tsx, as this process.
      ...(plainNode ? { execArgv: [] } : {}),
      // NODE_PATH: a library extracted outside the repository still finds its dependencies here.
      env: { ...process.env, DASK_CLOUD_HOME: home, NODE_NO_WARNINGS: undefined, NODE_PATH: path.join(REPO_ROOT, 'node_modules') },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const c = child;
    let stderr = '';
    c.stderr?.on('data', (b: Buffer) => {
      stderr += b.toString('utf8');
      if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
    });
    c.stdout?.on('data', () => undefined);
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`measurement exceeded ${Math.round(hardTimeoutMs / 1000)} s; child killed`)), hardTimeoutMs);
      c.on('message', (msg: ChildMessage) => {
        if (msg.type === 'phase') m.phases.push(msg);
        else if (msg.type === 'events') {
          m.libPhases = msg.phases;
          m.warnings = msg.warnings;
          m.pacing = msg.pacing;
        } else if (msg.type === 'done') {
          m.maxRssKb = msg.maxRssKb;
          m.rssAfterImportKb = msg.rssAfterImportKb;
          m.rssAtStartKb = msg.rssAtStartKb;
          m.refused = msg.refused;
          clearTimeout(timer);
          resolve();
        }
      });
      c.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (m.maxRssKb === undefined) reject(new Error(`child exited (${signal ?? code}) before reporting: ${stderr.trim().split('\n').slice(-5).join(' | ')}`));
      });
    });
    c.send({ type: 'run', cfg });
    try {
      await done;
    } catch (err) {
      m.failure = (err as Error).message;
    }
    m.stderrWarnings = [...new Set(stderr.split('\n').filter((l) => /Warning|warning:/.test(l)).map((l) => l.trim()))].slice(0, 10);
    // What is left once close() returned; the deletions a cloud finishes later are waited for a while.
    const t0 = Date.now();
    m.leftovers = cloud.leftovers();
    while (m.leftovers.length > 0 && Date.now() - t0 < 15_000) {
      await new Promise((r) => setTimeout(r, 500));
      m.leftovers = cloud.leftovers();
    }
    if (m.leftovers.length === 0 && Date.now() - t0 > 100) m.leftoversAfterMs = Date.now() - t0;
    m.calls = [...cloud.received()];
  } catch (err) {
    m.failure = (err as Error).message;
  } finally {
    await abortCurrent();
    abortCurrent = undefined;
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Reporting

const sec = (ms: number | undefined) => (ms === undefined ? '-' : `${(ms / 1000).toFixed(1)}`);
const phase = (m: Measurement, name: string) => m.phases.find((p) => p.name === name);
const dur = (p: Phase | undefined) => (p ? p.end - p.start : undefined);

function callsIn(m: Measurement, p: Phase | undefined): ReceivedCall[] {
  if (!p) return [];
  // Half-open: the next step may begin in the very millisecond this one ended.
  return m.calls.filter((c) => c.at >= p.start && c.at < p.end);
}

function byOp(calls: ReceivedCall[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const c of calls) {
    const dry = String(c.params.DryRun) === 'true' ? ' (DryRun)' : '';
    const op = (c.operation ?? `${c.method} ${c.path}`).replace(/^compute\./, '') + dry;
    out.set(op, (out.get(op) ?? 0) + 1);
  }
  return out;
}

function opsText(calls: ReceivedCall[], min: Record<string, number> | undefined): string {
  const got = byOp(calls);
  const keys = [...new Set([...got.keys(), ...Object.keys(min ?? {})])].sort((a, b) => (got.get(b) ?? 0) - (got.get(a) ?? 0) || a.localeCompare(b));
  return keys.map((k) => `${k} ${got.get(k) ?? 0}${min && min[k] !== undefined ? ` (min ${min[k]})` : ''}`).join(', ');
}

const THROTTLE_TEXT = /RequestLimitExceeded|rateLimitExceeded|too_many_requests|Rate limit|\b429\b|Throttl/i;

/** Throttling answers the fake gave during the whole measurement. */
function throttled(m: Measurement): number {
  return m.calls.filter((c) => isThrottle(m.cloud, c)).length;
}

/** Whether a step failed with a throttling error. */
function throttleReachedCaller(m: Measurement): boolean {
  return m.phases.some((p) => !p.ok && p.error !== undefined && THROTTLE_TEXT.test(p.error));
}

function throttleCell(m: Measurement): string {
  const n = throttled(m);
  return `${n}${throttleReachedCaller(m) ? ' REACHED CALLER' : n > 0 ? ' absorbed' : ''}`;
}

/** start() until N workers ready, in ms, when start succeeded. */
function readyMs(m: Measurement): number | undefined {
  const start = phase(m, 'start');
  return start?.ok ? dur(start) : undefined;
}

function sumMin(min: Record<string, number>): number {
  return Object.values(min).reduce((a, b) => a + b, 0);
}

function pad(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

function okOr(p: Phase | undefined, text: string): string {
  if (!p) return '-';
  return p.ok ? text : `FAIL ${text}`;
}

function table(results: Measurement[], baselines: Map<string, Measurement>, bootMs: number): string {
  const rows: string[][] = [
    ['cloud', 'N', 'ready s', '÷boot', '÷(run+boot)', 'overhead s', 'beyond cloud s', 'baseline ÷boot', 'start calls (min)', 'throttled', 'to N/2 s', 'back to N s (÷boot)', 'close s', 'close calls (min)', 'left after close', 'peak RSS MB (bare/constructed)'],
  ];
  for (const m of results) {
    const start = phase(m, 'start');
    const ready = readyMs(m);
    const min = minimumCalls(m.cloud, m.n);
    const up = dur(phase(m, 'scale-up'));
    const upReady = dur(phase(m, 'up-ready'));
    const close = phase(m, 'close');
    const b = baselines.get(`${m.cloud}:${m.n}`);
    const bStart = b ? phase(b, 'start') : undefined;
    rows.push([
      m.cloud,
      String(m.n),
      okOr(start, sec(ready)),
      ready !== undefined ? (ready / bootMs).toFixed(2) : '-',
      ready !== undefined ? (ready / (bootMs + TIME_TO_RUNNING_MS)).toFixed(2) : '-',
      ready !== undefined ? sec(ready - bootMs) : '-',
      ready !== undefined ? sec(ready - bootMs - TIME_TO_RUNNING_MS) : '-',
      b ? (bStart?.ok ? (dur(bStart)! / bootMs).toFixed(2) : 'FAIL') : '',
      `${callsIn(m, start).length} (${sumMin(min.start)})`,
      throttleCell(m),
      okOr(phase(m, 'scale-down'), sec(dur(phase(m, 'scale-down')))),
      up !== undefined || upReady !== undefined ? okOr(phase(m, 'up-ready') ?? phase(m, 'scale-up'), `${sec((up ?? 0) + (upReady ?? 0))} (${(((up ?? 0) + (upReady ?? 0)) / bootMs).toFixed(2)})`) : '-',
      okOr(close, sec(dur(close))),
      `${callsIn(m, close).length} (${sumMin(min.close)})`,
      m.leftovers.length ? m.leftovers.join(', ') : m.leftoversAfterMs ? `none (after ${sec(m.leftoversAfterMs)} s)` : 'none',
      m.maxRssKb === undefined ? '-' : `${(m.maxRssKb / 1024).toFixed(0)} (${((m.rssAtStartKb ?? 0) / 1024).toFixed(0)}/${((m.rssAfterImportKb ?? 0) / 1024).toFixed(0)})`,
    ]);
  }
  return pad(rows);
}

function details(m: Measurement, b: Measurement | undefined, bootMs: number): string {
  const out: string[] = [];
  const min = minimumCalls(m.cloud, m.n);
  out.push(`--- ${m.cloud} N=${m.n} ---`);
  if (m.failure) out.push(`harness: ${m.failure}`);
  for (const p of m.phases) if (!p.ok) out.push(`${p.name} FAILED after ${sec(p.end - p.start)} s: ${p.error}`);
  const start = phase(m, 'start');
  if (start) {
    const lib = m.libPhases.filter((p) => p.start >= start.start && p.start < start.end);
    out.push(`start: ${sec(dur(start))} s = ${lib.map((p) => `${p.phase} ${sec((p.end ?? start.end) - p.start)}`).join(', ')} (boot ${sec(bootMs)} s, time to running ${sec(TIME_TO_RUNNING_MS)} s)`);
  }
  const segs: [string, string, Record<string, number> | undefined][] = [
    ['start', 'start', min.start],
    ['scale-down', `scale(${Math.floor(m.n / 2)})`, min.down],
    ['scale-up', `scale(${m.n})`, min.up],
    ['up-ready', 'waitForWorkers', undefined],
    ['close', 'close', min.close],
  ];
  for (const [name, label, mn] of segs) {
    const p = phase(m, name);
    if (!p) continue;
    const calls = callsIn(m, p);
    const thr = calls.filter((c) => isThrottle(m.cloud, c)).length;
    const errs = calls.filter((c) => c.status >= 400 && !isThrottle(m.cloud, c)).length;
    out.push(`${label}: ${sec(dur(p))} s, ${calls.length} calls${thr ? `, ${thr} throttled` : ''}${errs ? `, ${errs} other errors` : ''}: ${opsText(calls, mn)}`);
  }
  const peaks = m.phases.filter((p) => p.peakRssKb !== undefined).map((p) => `${p.name} ${(p.peakRssKb! / 1024).toFixed(0)}`);
  if (peaks.length) out.push(`peak RSS MB by step (sampled every 50 ms): ${peaks.join(', ')}`);
  if (m.pacing.length) out.push(`pacing (events): ${m.pacing.join(' | ')}`);
  const outside = m.calls.filter((c) => !m.phases.some((p) => c.at >= p.start && c.at < p.end)).length;
  if (outside) out.push(`calls outside the measured steps: ${outside}`);
  if (m.refused.length) out.push(`NETWORK GUARD refused: ${m.refused.join(', ')}`);
  if (b) {
    const bs = phase(b, 'start');
    const bc = phase(b, 'close');
    out.push(
      `baseline (dask-cloudprovider strategy): start ${okOr(bs, `${sec(dur(bs))} s (${bs && dur(bs) !== undefined ? (dur(bs)! / bootMs).toFixed(2) : '-'}×boot)`)}, ` +
        `${callsIn(b, bs).length} calls, ${throttled(b)} throttled; close ${okOr(bc, `${sec(dur(bc))} s`)}, ${callsIn(b, bc).length} calls; ` +
        `left: ${b.leftovers.length ? b.leftovers.join(', ') : 'none'}`,
    );
    for (const p of b.phases) if (!p.ok) out.push(`  baseline ${p.name} FAILED: ${p.error}`);
    if (bs) out.push(`  baseline start calls: ${opsText(callsIn(b, bs), undefined)}`);
    if (b.failure) out.push(`  baseline harness: ${b.failure}`);
    if (b.refused.length) out.push(`  NETWORK GUARD refused (baseline): ${b.refused.join(', ')}`);
  }
  return out.join('\n');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const lib = await librarySource(args.lib);
  const disposeBuilt = args.built ? await prepareBuilt() : async () => undefined;
  disposeLibrary = async () => {
    await lib.dispose();
    await disposeBuilt();
  };
  try {
    await runAll(args, lib);
  } finally {
    await disposeLibrary();
  }
}

async function runAll(args: Args, lib: LibrarySource): Promise<void> {
  const { findPython } = loadLibrary<typeof import('../../src/dask/python')>(lib.root, 'src/dask/python');
  const local = await findPython().catch(() => undefined);
  const versions = local ? versionsLike(local.versions as never) : undefined;
  const lines = [
    `Scale benchmark (issue 12). Library measured: ${lib.description}${args.built ? ', built (dist/), in a child under plain node' : ', from its sources, in a child under tsx'}.`,
    'What is stood in for:',
    '- the clouds: the in-repo API fakes (test/fakes), real SDKs talking to them over loopback HTTP;',
    `- VM boot: simulated, ${sec(args.bootMs)} s from the cloud's "running" until the VM's Dask is up ("one boot" below);`,
    `  before that each cloud takes ${sec(TIME_TO_RUNNING_MS)} s from the create call to "running";`,
    '- Dask: a stand-in scheduler (test/sim/standin.ts) on the scheduler VM\'s loopback address with the cluster\'s TLS',
    '  certificate (mutual TLS), speaking Dask\'s wire protocol (identity, versions, retire_workers, ...); workers',
    '  "register" with it when their VM has booted; no tasks, no real worker processes;',
    `- latency: ${LATENCY_TEXT};`,
    ...CLOUDS.filter((c) => args.clouds.includes(c)).flatMap((c) => LIMITS_TEXT[c].map((l, i) => `${i === 0 ? `- ${c}: ` : '    '}${l}`)),
    `- versions answered by the stand-in: ${local ? `the local client's (${local.path}: distributed ${local.distributedVersion})` : 'a fixed set (no local Python with Dask)'};`,
    '- the library runs in a child process (its peak RSS is reported); fakes and stand-in run in this one.',
    'Columns: ready = start() until N workers registered; ÷boot = ready / one boot; overhead = ready − boot;',
    `  ÷(run+boot) = ready / one VM's create-to-Dask-up (the cloud's ${sec(TIME_TO_RUNNING_MS)} s to "running" + the boot): 1.00 is the floor;`,
    `  beyond cloud = overhead − the cloud's ${sec(TIME_TO_RUNNING_MS)} s to "running"; peak RSS = the child's maxRSS (bare = the child before any import, constructed = after the cluster object was made);`,
    '  throttled = throttling answers the fakes gave during the whole run ("REACHED CALLER" when a step failed with one);',
    '  back to N = scale(N) + waitForWorkers(N) after scale(N/2); min = fewest calls the cloud needs (see the notes at the end).',
    `Run: ${new Date().toISOString()}, node ${process.version}, ${os.cpus().length} CPUs, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; args: ${process.argv.slice(2).join(' ') || '(none)'}`,
    '',
  ];
  console.log(lines.join('\n'));
  const results: Measurement[] = [];
  const baselines = new Map<string, Measurement>();
  for (const cloud of args.clouds) {
    for (const n of args.ns) {
      const t0 = Date.now();
      process.stderr.write(`[bench:scale] ${cloud} N=${n} ...`);
      const m = await measure(cloud, n, 'library', args, versions, lib);
      results.push(m);
      process.stderr.write(` ${sec(Date.now() - t0)} s${m.failure ? ` (${m.failure})` : ''}\n`);
      if (args.baseline) {
        const t1 = Date.now();
        process.stderr.write(`[bench:scale] ${cloud} N=${n} baseline ...`);
        const b = await measure(cloud, n, 'baseline', { ...args, scale: false }, versions, lib);
        baselines.set(`${cloud}:${n}`, b);
        process.stderr.write(` ${sec(Date.now() - t1)} s${b.failure ? ` (${b.failure})` : ''}\n`);
      }
    }
  }
  console.log(table(results, baselines, args.bootMs));
  console.log('');
  for (const m of results) console.log(details(m, baselines.get(`${m.cloud}:${m.n}`), args.bootMs) + '\n');
  // Warnings, once each, with the rows they appeared in (the process id in Node's prefix varies).
  const seen = new Map<string, string[]>();
  for (const m of results) {
    for (const w of [...m.warnings.map((x) => `event: ${x}`), ...m.stderrWarnings.map((x) => `stderr: ${x}`)]) {
      const key = w.replace(/\(node:\d+\)/g, '(node)').replace(/dask-[0-9a-f]{8}/g, 'dask-<id>');
      seen.set(key, [...(seen.get(key) ?? []), `${m.cloud} ${m.n}`]);
    }
  }
  if (seen.size) {
    console.log('Warnings the library process showed:');
    for (const [w, rows] of seen) console.log(`- [${rows.length === results.length ? 'every row' : rows.join(', ')}] ${w}`);
    console.log('');
  }
  console.log('Minimum calls (what "min" means):');
  for (const c of args.clouds) console.log(`- ${minimumCalls(c, 1).notes}`);
  console.log('');
  const missed = goals(results, args.bootMs, args.built);
  const refused = [...results, ...baselines.values()].flatMap((m) => m.refused);
  if (refused.length) {
    console.log(`NETWORK GUARD: ${refused.length} non-loopback dial(s) refused`);
    process.exitCode = 1;
  }
  if (missed > 0) process.exitCode = 1;
}

/** Issue 12's goals. */
export const GOALS = {
  /** start() until N workers registered, ÷ one VM's create-to-Dask-up. */
  readyRatio: 1.1,
  /** close() ÷ the cloud's time to delete one VM: every VM's deletion requested at once, then one wait. */
  closeRatio: 2,
  peakRssMb: 200,
};

/**
 * One `ok` / `MISS` row per goal and measurement; returns the number of misses. A step that
 * failed is a miss of its goal.
 */
function goals(results: Measurement[], bootMs: number, built: boolean): number {
  const rows: string[][] = [['', 'cloud', 'N', 'goal', 'measured']];
  let missed = 0;
  const row = (ok: boolean, m: Measurement, goal: string, measured: string) => {
    if (!ok) missed++;
    rows.push([ok ? 'ok' : 'MISS', m.cloud, String(m.n), goal, measured]);
  };
  for (const m of results) {
    const ready = readyMs(m);
    const ratio = ready === undefined ? undefined : ready / (bootMs + TIME_TO_RUNNING_MS);
    row(ratio !== undefined && ratio <= GOALS.readyRatio, m, `ready ≤ ${GOALS.readyRatio} × one VM's create-to-Dask-up`, ratio === undefined ? 'start failed' : `${ratio.toFixed(2)} ×`);
    const close = phase(m, 'close');
    const closeMs = dur(close);
    const closeOk = close?.ok === true && closeMs !== undefined && closeMs <= GOALS.closeRatio * DELETE_MS && m.leftovers.length === 0;
    row(closeOk, m, `close() ≤ ${GOALS.closeRatio} × one VM's deletion (${sec(DELETE_MS)} s), nothing left`, close?.ok ? `${sec(closeMs)} s${m.leftovers.length ? `, left: ${m.leftovers.join(', ')}` : ''}` : 'close failed');
    const reached = throttleReachedCaller(m);
    const allOk = m.phases.every((p) => p.ok);
    row(!reached && allOk, m, 'no throttling error reaches the caller; every step succeeds', reached ? 'a step failed with a throttling error' : allOk ? `${throttled(m)} throttle answers absorbed` : 'a step failed');
    const rss = m.maxRssKb === undefined ? undefined : m.maxRssKb / 1024;
    row(rss !== undefined && rss <= GOALS.peakRssMb, m, `peak RSS ≤ ${GOALS.peakRssMb} MB (the child under ${built ? 'plain node' : 'tsx'}: ${((m.rssAtStartKb ?? 0) / 1024).toFixed(0)} MB before any import)`, rss === undefined ? '-' : `${rss.toFixed(0)} MB`);
  }
  console.log(`Goals (${missed} missed):`);
  console.log(pad(rows));
  return missed;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
