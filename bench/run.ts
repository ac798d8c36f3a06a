/**
 * Benchmarks for the core: each number is measured side by side with its baseline in one run and
 * printed as a median and a ratio against the goal.
 *
 *   npm run bench [import|temporary|userdata|local]   (import rebuilds dist/ first)
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import 'reflect-metadata';
import { Security } from '../src/security';
import { renderUserData } from '../src/cloud-init';
import { daskProcessSpec } from '../src/dask/command';
import { SchedulerClient, waitForScheduler, waitForWorkers } from '../src/dask';
import { LocalCluster, findPython } from '../providers/local';

const root = path.resolve(__dirname, '..');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function timeCommand(args: string[]): number {
  const t = process.hrtime.bigint();
  execFileSync(process.execPath, args, { stdio: 'ignore' });
  return Number(process.hrtime.bigint() - t) / 1e6;
}

function row(name: string, value: string, goal: string, ok: boolean): void {
  console.log(`${ok ? 'ok  ' : 'MISS'} ${name.padEnd(46)} ${value.padEnd(34)} goal ${goal}`);
}

async function benchImport(): Promise<void> {
  const entry = path.join(root, 'dist/index.js');
  // Always measure the current sources.
  execFileSync(process.execPath, [path.join(root, 'scripts/build.mjs')], { stdio: 'ignore' });
  const bare: number[] = [];
  const lib: number[] = [];
  for (let i = 0; i < 15; i++) {
    // Interleaved so both see the same machine load.
    bare.push(timeCommand(['-e', '']));
    lib.push(timeCommand(['-e', `require(${JSON.stringify(entry)})`]));
  }
  const ratio = median(lib) / median(bare);
  row('import dask-cloud vs node -e ""', `${median(lib).toFixed(0)} ms / ${median(bare).toFixed(0)} ms = ${ratio.toFixed(2)}x`, '<= 1.5x', ratio <= 1.5);
}

async function benchTemporary(): Promise<void> {
  for (let i = 0; i < 3; i++) await Security.temporary(); // warm up WebCrypto
  const ec: number[] = [];
  for (let i = 0; i < 31; i++) {
    const t = performance.now();
    await Security.temporary();
    ec.push(performance.now() - t);
  }
  row('Security.temporary() ECDSA P-256 median', `${median(ec).toFixed(1)} ms (${(median(ec) / 25).toFixed(2)} of goal)`, '<= 25 ms', median(ec) <= 25);
  const rsa: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    await Security.temporary({ keyAlgorithm: 'rsa-2048' });
    rsa.push(performance.now() - t);
  }
  console.log(`     Security.temporary() RSA-2048 median          ${median(rsa).toFixed(1)} ms (for comparison)`);
}

async function benchUserData(): Promise<void> {
  const security = await Security.temporary();
  const worker = renderUserData({ role: 'worker', security, schedulerAddress: 'tls://10.0.0.2:8786' });
  const scheduler = renderUserData({ role: 'scheduler', security });
  row('secure worker user-data (docker, EC), raw', `${worker.rawBytes} B (${(worker.rawBytes / 4096).toFixed(2)} of goal)`, '<= 4096 B', worker.rawBytes <= 4096);
  console.log(`     secure scheduler user-data (docker, EC), raw   ${scheduler.rawBytes} B`);
  const rsa = await Security.temporary({ keyAlgorithm: 'rsa-2048' });
  const rsaWorker = renderUserData({ role: 'worker', security: rsa, schedulerAddress: 'tls://10.0.0.2:8786' });
  console.log(`     secure worker user-data (docker, RSA), raw     ${rsaWorker.rawBytes} B`);
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

/** Baseline: the same dask scheduler/worker commands started by hand, readiness measured the same way. */
async function byHand(python: string, security: Security): Promise<number> {
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
    for (const s of specs) {
      for (const f of s.files) {
        await writeFile(f.path, f.content);
        await chmod(f.path, parseInt(f.mode, 8));
      }
      children.push(spawn(python, ['-m', 'dask', ...s.args], { env: { ...process.env, ...s.env }, stdio: 'ignore', detached: true }));
    }
    await waitForScheduler(address, { security, timeoutMs: 60_000 });
    const client = await SchedulerClient.connect(address, { security });
    await waitForWorkers(client, 2, { timeoutMs: 60_000 });
    const elapsed = performance.now() - t;
    await client.close();
    return elapsed;
  } finally {
    for (const c of children) {
      try {
        process.kill(-c.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await rm(dir, { recursive: true, force: true });
  }
}

async function benchLocalCluster(): Promise<void> {
  const python = (await findPython()).path;
  const ours: number[] = [];
  const hand: number[] = [];
  for (let i = 0; i < 3; i++) {
    // Credentials are generated outside the baseline timing, inside ours (a cost users pay).
    const security = await Security.temporary();
    hand.push(await byHand(python, security));
    const t = performance.now();
    const cluster = await LocalCluster.start({ nWorkers: 2, python, closeOnSignals: false });
    ours.push(performance.now() - t);
    await cluster.close();
  }
  const ratio = median(ours) / median(hand);
  row('LocalCluster 2 ready workers vs by hand', `${median(ours).toFixed(0)} ms / ${median(hand).toFixed(0)} ms = ${ratio.toFixed(2)}x`, '<= 1.3x', ratio <= 1.3);
}

async function main(): Promise<void> {
  const only = process.argv[2];
  const all: Record<string, () => Promise<void>> = {
    import: benchImport,
    temporary: benchTemporary,
    userdata: benchUserData,
    local: benchLocalCluster,
  };
  for (const [name, fn] of Object.entries(all)) if (!only || only === name) await fn();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
