/**
 * The wire-protocol client against real Dask: schedulers and workers are spawned from
 * `daskProcessSpec` on 127.0.0.1 with credentials from `Security.temporary()`; nothing is mocked.
 * Every process runs in its own process group and is killed by PID in afterAll, whatever happened.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { freePort } from '../../src/net';
import { Security } from '../../src/security/security';
import { DaskCommError, DaskCloudError } from '../../src/errors';
import {
  daskProcessSpec,
  DaskComm,
  SchedulerClient,
  waitForScheduler,
  waitForWorkers,
  type DaskProcessOptions,
  type TlsClientOptions,
} from '../../src/dask';
import { have, pythonWithDask, realDask } from '../helpers/prereq';
import { spawnTsx } from '../helpers/spawn';

const HOST = '127.0.0.1';
const REPO = path.resolve(__dirname, '../..');

interface DaskProc {
  child: ChildProcess;
  pid: number;
  exited: Promise<number | null>;
  output: string[];
}

const procs: DaskProc[] = [];
const dirs: string[] = [];

/**
 * A port that accepts connections and never says a word: the deterministic "peer that never
 * answers the handshake". (A Dask dashboard is not one: it is a Tornado HTTP server, which
 * answers `400 Bad Request` whenever a TLS ClientHello's random bytes happen to contain a blank
 * line, about 4 times in 1000 tries.)
 */
async function silentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<import('node:net').Socket>();
  const srv = createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, HOST, resolve);
  });
  const { port } = srv.address() as { port: number };
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        srv.close(() => resolve());
      }),
  };
}

/**
 * A loopback TCP relay to `port` that can drop every connection it carries, as a scheduler does
 * when its side fails a read (CPython gh-148594 on Python 3.13 drops healthy TLS connections that
 * way). `refuse` drops each new connection as it arrives.
 */
async function dropProxy(port: number): Promise<{ address(proto: string): string; accepted: number; refuse: boolean; dropAll(): void; close(): Promise<void> }> {
  const pairs = new Set<[import('node:net').Socket, import('node:net').Socket]>();
  const state = { accepted: 0, refuse: false };
  const srv = createServer((inbound) => {
    state.accepted++;
    inbound.on('error', () => undefined);
    if (state.refuse) return void inbound.destroy();
    const outbound = connect(port, HOST);
    outbound.on('error', () => inbound.destroy());
    const pair: [import('node:net').Socket, import('node:net').Socket] = [inbound, outbound];
    pairs.add(pair);
    inbound.pipe(outbound).on('error', () => undefined);
    outbound.pipe(inbound);
    const done = (): void => {
      inbound.destroy();
      outbound.destroy();
      pairs.delete(pair);
    };
    inbound.on('close', done);
    outbound.on('close', done);
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, HOST, resolve);
  });
  const own = (srv.address() as { port: number }).port;
  return {
    address: (proto) => `${proto}://${HOST}:${own}`,
    get accepted() {
      return state.accepted;
    },
    get refuse() {
      return state.refuse;
    },
    set refuse(v: boolean) {
      state.refuse = v;
    },
    dropAll() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const [a, b] of pairs) {
          a.destroy();
          b.destroy();
        }
        srv.close(() => resolve());
      }),
  };
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dask-client-test-'));
  await chmod(dir, 0o700);
  dirs.push(dir);
  return dir;
}

/** Spawn `python -m dask <role>` from daskProcessSpec, in its own process group. */
async function spawnDask(options: Omit<DaskProcessOptions, 'tlsDir'>): Promise<DaskProc> {
  const tlsDir = await tempDir();
  const spec = daskProcessSpec({ ...options, tlsDir });
  for (const f of spec.files) await writeFile(f.path, f.content, { mode: parseInt(f.mode, 8) });
  const child = spawn(pythonWithDask()!, ['-m', 'dask', ...spec.args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: os.tmpdir(), ...spec.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const output: string[] = [];
  const keep = (b: Buffer): void => {
    output.push(...b.toString('utf8').split('\n').filter(Boolean));
    if (output.length > 200) output.splice(0, output.length - 200);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const proc: DaskProc = { child, pid: child.pid!, exited, output };
  procs.push(proc);
  return proc;
}

async function startScheduler(security: Security | false): Promise<{ proc: DaskProc; address: string; dashboardPort: number }> {
  const port = await freePort();
  const dashboardPort = await freePort();
  const proc = await spawnDask({ role: 'scheduler', security, host: HOST, port, dashboardAddress: `${HOST}:${dashboardPort}` });
  const address = `${security === false ? 'tcp' : 'tls'}://${HOST}:${port}`;
  await waitForScheduler(address, { security, timeoutMs: 30_000, intervalMs: 100 }).catch((err) => {
    throw new Error(`scheduler did not come up: ${(err as Error).message}\n${proc.output.join('\n')}`);
  });
  return { proc, address, dashboardPort };
}

function startWorker(security: Security | false, schedulerAddress: string, name: string): Promise<DaskProc> {
  return spawnDask({ role: 'worker', security, schedulerAddress, host: HOST, name, nthreads: 1, memoryLimit: 0 });
}

/** Resolve with the exit code, or reject after `ms`. */
function exitWithin(proc: DaskProc, ms: number): Promise<number | null> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    proc.exited.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`pid ${proc.pid} still running after ${ms} ms\n${proc.output.slice(-20).join('\n')}`)), ms);
    }),
  ]);
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

/** Run `fn`, expect a DaskCommError with `code`; returns it and how long it took. */
async function expectCode(code: string, fn: () => Promise<unknown>): Promise<{ err: DaskCommError; ms: number }> {
  const t0 = Date.now();
  let result: unknown;
  try {
    result = await fn();
  } catch (err) {
    const ms = Date.now() - t0;
    if (!DaskCommError.isInstance(err)) throw err;
    expect(err.code, err.message).toBe(code);
    return { err, ms };
  }
  if (result && typeof (result as { close?: unknown }).close === 'function') await (result as { close(): Promise<void> }).close();
  throw new Error(`expected ${code}, but it succeeded`);
}

const until = async (what: string, ms: number, check: () => Promise<boolean>): Promise<void> => {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
};

const enabled = have(realDask());

afterAll(async () => {
  for (const p of procs) {
    killGroup(p.pid, 'SIGCONT'); // a test may have stopped it
    killGroup(p.pid, 'SIGTERM');
  }
  await Promise.all(procs.map((p) => exitWithin(p, 5_000).catch(() => killGroup(p.pid, 'SIGKILL'))));
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe.skipIf(!enabled)('SchedulerClient against a real TLS scheduler', () => {
  let sec: Security;
  let address: string;
  let scheduler: DaskProc;
  let dashboardPort: number;
  let client: SchedulerClient;

  beforeAll(async () => {
    sec = await Security.temporary();
    ({ proc: scheduler, address, dashboardPort } = await startScheduler(sec));
    client = await SchedulerClient.connect(address, { security: sec });
  });
  afterAll(async () => {
    await client?.close();
  });

  it('reports identity with 0 workers over mutual TLS', async () => {
    const id = await client.identity();
    expect(id.type).toBe('Scheduler');
    expect(id.address).toBe(address);
    expect(id.id).toMatch(/^Scheduler-/);
    expect(id.services.dashboard).toBe(dashboardPort);
    expect(id.started).toBeGreaterThan(1.6e9);
    expect(id.workers).toEqual({});
    expect(id.raw.type).toBe('Scheduler');
    expect(client.tlsInfo?.protocol).toMatch(/^TLSv1\.[23]$/);
    expect(await client.workers()).toEqual([]);
  });

  it('answers an unknown op with null, adaptive_target with a number, versions with packages', async () => {
    expect(await client.request('no_such_handler')).toBeNull();
    expect(await client.adaptiveTarget()).toBe(0);
    const v = await client.versions();
    expect(typeof (v.packages as Record<string, unknown>).distributed).toBe('string');
    // An argument msgpack cannot carry is refused before anything is sent; the connection stays usable.
    await expect(client.request('identity', { f: () => 1 })).rejects.toThrow(/cannot be encoded/);
    expect((await client.identity()).type).toBe('Scheduler');
  });

  it('pipelines requests on one connection and matches replies in order', async () => {
    const [a, b, c] = await Promise.all([client.request('no_such_handler'), client.adaptiveTarget(), client.identity()]);
    expect(a).toBeNull();
    expect(b).toBe(0);
    expect(c.type).toBe('Scheduler');
  });

  it('maps a handler exception to E_REMOTE with the Python text, and the connection stays usable', async () => {
    const { err } = await expectCode('E_REMOTE', () => client.request('retire_workers', { workers: ['x'], names: ['y'] }));
    expect(err.message).toContain(address);
    expect(err.message).toContain("TypeError('names and workers are mutually exclusive')");
    expect(err.details.op).toBe('retire_workers');
    expect(String(err.details.tracebackText)).toContain('retire_workers');
    // A wrong argument type raises inside Dask too.
    await expectCode('E_REMOTE', () => client.request('retire_workers', { workers: 5 }));
    expect((await client.identity()).type).toBe('Scheduler');
  });

  it('waits for 2 workers, lists them, retires one (it exits) and keeps the other', async () => {
    const w1 = await startWorker(sec, address, 'w1');
    const w2 = await startWorker(sec, address, 'w2');
    const sent = vi.spyOn(client, 'request');
    const workers = await waitForWorkers(client, 2, { timeoutMs: 45_000, intervalMs: 200 });
    expect(workers.map((w) => w.name).sort()).toEqual(['w1', 'w2']);
    // The polls ask for the count (Dask's ncores: a number per worker); the whole records once, at the end.
    const ops = sent.mock.calls.map((c) => c[0]);
    sent.mockRestore();
    expect(ops.at(-1)).toBe('identity');
    expect(ops.slice(0, -1).length).toBeGreaterThan(0);
    expect(new Set(ops.slice(0, -1))).toEqual(new Set(['ncores']));
    expect(await client.workerCount()).toBe(2);
    const id = await client.identity();
    expect(Object.keys(id.workers)).toHaveLength(2);
    for (const [addr, w] of Object.entries(id.workers)) {
      expect(addr).toMatch(/^tls:\/\/127\.0\.0\.1:\d+$/);
      expect(w.address).toBe(addr);
      expect(w.nthreads).toBe(1);
      expect(w.host).toBe(HOST);
      expect(w.nanny).toMatch(/^tls:\/\//);
      expect(typeof w.status).toBe('string');
    }
    const running = await waitForWorkers(client, 2, { timeoutMs: 20_000, intervalMs: 200, requireRunning: true });
    expect(running.every((w) => w.status === 'running')).toBe(true);
    expect(await client.workerCount({ running: true })).toBe(2);

    const target = workers.find((w) => w.name === 'w1')!;
    const retired = await client.retireWorkers({ workers: [target.address] });
    expect(Object.keys(retired)).toEqual([target.address]);
    await until('scheduler to list 1 worker', 20_000, async () => (await client.workers()).length === 1);
    expect((await client.workers())[0]!.name).toBe('w2');
    await exitWithin(w1, 30_000);
    expect(w2.child.exitCode).toBeNull();
    // Retiring by a name that matches nothing retires nothing.
    expect(await client.retireWorkers({ names: ['nobody'] })).toEqual({});
  });

  it('times out a request on a frozen scheduler, and the timed-out connection is closed', async () => {
    const other = await SchedulerClient.connect(address, { security: sec });
    killGroup(scheduler.pid, 'SIGSTOP');
    try {
      const { ms } = await expectCode('E_TIMEOUT', () => other.identity({ timeoutMs: 300 }));
      expect(ms).toBeLessThan(2_000);
      expect(other.closed).toBe(true);
      await expectCode('E_CONNECTION_CLOSED', () => other.identity());
      // Connecting to a frozen process: the kernel accepts TCP, the TLS handshake never completes.
      const { err } = await expectCode('E_TIMEOUT', () => SchedulerClient.connect(address, { security: sec, timeoutMs: 400 }));
      expect(err.details.phase).toBe('tls');
      const ac = new AbortController();
      const pending = client.identity({ signal: ac.signal });
      setTimeout(() => ac.abort(), 100);
      await expectCode('E_ABORTED', () => pending);
      expect(client.closed).toBe(true);
    } finally {
      killGroup(scheduler.pid, 'SIGCONT');
    }
    await other.close();
    await client.close();
    client = await SchedulerClient.connect(address, { security: sec });
    expect((await client.identity()).type).toBe('Scheduler');
  });

  it('waitForWorkers: a dropped connection is reconnected within the deadline; without reconnect it ends the wait; a scheduler that refuses the new one ends it too', async () => {
    const proxy = await dropProxy(Number(address.split(':').pop()));
    const viaProxy = (): Promise<SchedulerClient> => SchedulerClient.connect(proxy.address('tls'), { security: sec });
    const first = await viaProxy();
    const others: DaskProc[] = [];
    try {
      const want = (await client.workers()).length + 1;
      // Without reconnect: the drop ends the wait with the connection's own error.
      const plain = waitForWorkers(first, want, { timeoutMs: 45_000, intervalMs: 100 });
      proxy.dropAll();
      await expectCode('E_CONNECTION_CLOSED', () => plain);

      // With reconnect: the wait goes on over a new connection and sees the worker that registers later.
      const second = await viaProxy();
      const accepted = proxy.accepted;
      const waiting = waitForWorkers(second, want, { timeoutMs: 45_000, intervalMs: 100, reconnect: viaProxy });
      await new Promise((r) => setTimeout(r, 300));
      proxy.dropAll();
      others.push(await startWorker(sec, address, 'after-drop'));
      const workers = await waiting;
      expect(workers.map((w) => w.name)).toContain('after-drop');
      expect(proxy.accepted).toBeGreaterThan(accepted);
      expect(second.closed).toBe(true);

      // A relay that drops every new connection: the reconnect fails, and that ends the wait at once.
      const third = await viaProxy();
      const failing = waitForWorkers(third, want + 5, { timeoutMs: 45_000, intervalMs: 100, reconnect: () => viaProxy() });
      await new Promise((r) => setTimeout(r, 300));
      proxy.refuse = true;
      proxy.dropAll();
      const t0 = Date.now();
      const err = await failing.then(() => null, (e: unknown) => e);
      expect(DaskCommError.isInstance(err), String(err)).toBe(true);
      expect(Date.now() - t0).toBeLessThan(20_000);
    } finally {
      await first.close();
      await proxy.close();
      for (const w of others) killGroup(w.pid, 'SIGKILL');
    }
  });

  it('terminate stops the scheduler, which closes its workers; close stays idempotent', async () => {
    const remaining = procs.filter((p) => p !== scheduler && p.child.exitCode === null && p.child.signalCode === null);
    await client.terminate({ timeoutMs: 20_000 });
    expect(client.closed).toBe(true);
    await client.close();
    await client.close();
    await exitWithin(scheduler, 20_000);
    for (const w of remaining) await exitWithin(w, 30_000);
    await expectCode('E_CONNECT_REFUSED', () => SchedulerClient.connect(address, { security: sec }));
  });
});

describe.skipIf(!enabled)('connection failures against real Dask', () => {
  let A: Security;
  let B: Security;
  let tlsAddr: string;
  let tlsDashboard: number;
  let silent: Awaited<ReturnType<typeof silentServer>>;
  let plainAddr: string;
  let plainScheduler: DaskProc;
  let a: TlsClientOptions;
  let b: TlsClientOptions;

  beforeAll(async () => {
    [A, B] = await Promise.all([Security.temporary(), Security.temporary()]);
    a = A.clientTlsOptions();
    b = B.clientTlsOptions();
    const [t, p] = await Promise.all([startScheduler(A), startScheduler(false)]);
    silent = await silentServer();
    tlsAddr = t.address;
    tlsDashboard = t.dashboardPort;
    plainAddr = p.address;
    plainScheduler = p.proc;
  });
  afterAll(() => silent?.close());

  it('nothing listening → E_CONNECT_REFUSED, at once', async () => {
    const port = await freePort();
    const { err, ms } = await expectCode('E_CONNECT_REFUSED', () => SchedulerClient.connect(`tls://${HOST}:${port}`, { security: A }));
    expect(ms).toBeLessThan(1_000);
    expect(err.message).toContain(`tls://${HOST}:${port}`);
    expect(err.message).toMatch(/nothing is listening/);
    expect(err.details.retryable).toBe(true);
  });

  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    it(`${version}: client without a certificate → E_TLS_REFUSED`, async () => {
      const { err } = await expectCode('E_TLS_REFUSED', () => DaskComm.connect(tlsAddr, { tls: { ca: a.ca, maxVersion: version } }));
      expect(err.message).toContain(tlsAddr);
      expect(err.details.retryable).toBe(false);
    });

    it(`${version}: client certificate from another CA → E_TLS_REFUSED`, async () => {
      const { err } = await expectCode('E_TLS_REFUSED', () =>
        SchedulerClient.connect(tlsAddr, { tls: { ca: a.ca, cert: b.cert, key: b.key, maxVersion: version } }),
      );
      expect(err.message).toMatch(/client certificate/);
    });

    it(`${version}: scheduler certificate not signed by our CA → E_UNTRUSTED_SCHEDULER`, async () => {
      const { err } = await expectCode('E_UNTRUSTED_SCHEDULER', () =>
        SchedulerClient.connect(tlsAddr, { tls: { ca: b.ca, cert: a.cert, key: a.key, maxVersion: version } }),
      );
      expect(err.message).toContain(tlsAddr);
      expect(err.message).toMatch(/not signed by our CA/);
    });
  }

  it('whole other cluster Security → refused one way or the other, fast, and no key material in the error', async () => {
    const t0 = Date.now();
    const err = await SchedulerClient.connect(tlsAddr, { security: B }).then(
      () => undefined,
      (e: unknown) => e as DaskCommError,
    );
    expect(err?.code).toMatch(/^E_(TLS_REFUSED|UNTRUSTED_SCHEDULER)$/);
    expect(Date.now() - t0).toBeLessThan(2_000);
    const text = `${err!.message} ${JSON.stringify(err!.details)} ${String(err!.stack)}`;
    expect(text).not.toContain('PRIVATE KEY');
    expect(text).not.toContain(b.key.split('\n')[1]!);
  });

  it('TLS to a plaintext scheduler → E_PLAINTEXT_PEER', async () => {
    const port = plainAddr.split(':').pop();
    const { err } = await expectCode('E_PLAINTEXT_PEER', () => SchedulerClient.connect(`tls://${HOST}:${port}`, { security: A }));
    expect(err.message).toMatch(/does not speak TLS/);
  });

  it('plaintext to a TLS scheduler → E_TLS_PEER or E_TIMEOUT saying it may require TLS', async () => {
    const port = tlsAddr.split(':').pop();
    const t0 = Date.now();
    const err = await SchedulerClient.connect(`tcp://${HOST}:${port}`, { security: false, timeoutMs: 3_000 }).then(
      () => undefined,
      (e: unknown) => e as DaskCommError,
    );
    expect(err?.code).toMatch(/^E_(TLS_PEER|TIMEOUT)$/);
    expect(err!.message).toMatch(/may require TLS/);
    expect(Date.now() - t0).toBeLessThan(4_000);
  });

  it('a port that never answers the handshake → E_TIMEOUT within the budget', async () => {
    for (const [addr, options] of [
      [`tls://${HOST}:${silent.port}`, { security: A }],
      [`tcp://${HOST}:${silent.port}`, {}],
      // The dashboard reads Dask's binary handshake as an unfinished HTTP request and waits.
      [`tcp://${HOST}:${tlsDashboard}`, {}],
    ] as const) {
      const { err, ms } = await expectCode('E_TIMEOUT', () => SchedulerClient.connect(addr, { ...options, timeoutMs: 500 }));
      expect(ms).toBeGreaterThanOrEqual(450);
      expect(ms).toBeLessThan(2_000);
      expect(err.message).toContain(addr);
    }
  });

  it('tls:// to the dashboard (HTTP) never hangs: a timeout, or "does not speak TLS" when Tornado answers', async () => {
    const addr = `tls://${HOST}:${tlsDashboard}`;
    const codes = new Set<string>();
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        const t0 = Date.now();
        const err = (await SchedulerClient.connect(addr, { security: A, timeoutMs: 500 }).then(
          async (c) => {
            await c.close();
            throw new Error('connected to the dashboard as if it were the scheduler');
          },
          (e: unknown) => e,
        )) as DaskCommError;
        expect(DaskCommError.isInstance(err), String(err)).toBe(true);
        expect(Date.now() - t0).toBeLessThan(2_000);
        codes.add(err.code);
        if (err.code === 'E_PLAINTEXT_PEER') expect(err.message).toMatch(/does not speak TLS/);
      }),
    );
    expect([...codes].filter((c) => c !== 'E_TIMEOUT' && c !== 'E_PLAINTEXT_PEER')).toEqual([]);
  });

  it('abort → E_ABORTED, whether the signal fires during the attempt or before it', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const { ms } = await expectCode('E_ABORTED', () =>
      SchedulerClient.connect(`tls://${HOST}:${silent.port}`, { security: A, signal: ac.signal, timeoutMs: 10_000 }),
    );
    expect(ms).toBeLessThan(1_000);
    await expectCode('E_ABORTED', () => SchedulerClient.connect(tlsAddr, { security: A, signal: AbortSignal.abort() }));
    await expectCode('E_ABORTED', () =>
      waitForScheduler(`tls://${HOST}:${silent.port}`, { security: A, timeoutMs: 10_000, signal: AbortSignal.timeout(200) }),
    );
  });

  it('plain tcp with security: false works end to end', async () => {
    await using client = await SchedulerClient.connect(plainAddr, { security: false });
    expect(client.tlsInfo).toBeUndefined();
    const id = await client.identity();
    expect(id.address).toBe(plainAddr);
    expect(id.workers).toEqual({});
    expect(plainScheduler.child.exitCode).toBeNull();
  });

  it('refuses contradictory options before dialling', async () => {
    await expect(SchedulerClient.connect(tlsAddr)).rejects.toThrow(/tls:\/\/ address/);
    await expect(SchedulerClient.connect(plainAddr, { security: A })).rejects.toThrow(/tcp:\/\/ address/);
    await expect(SchedulerClient.connect('127.0.0.1:8786')).rejects.toSatisfy(
      (e: unknown) => DaskCloudError.isInstance(e) && e.code === 'E_INVALID_OPTION',
    );
    await expect(SchedulerClient.connect(tlsAddr, { tls: { ...a, key: 'not a key' } })).rejects.toThrow(/unusable/);
  });

  it('waitForScheduler: fails fast on an untrusted scheduler and on a refused certificate', async () => {
    for (const [code, tls] of [
      ['E_UNTRUSTED_SCHEDULER', { ca: b.ca, cert: a.cert, key: a.key }],
      ['E_TLS_REFUSED', { ca: a.ca, cert: b.cert, key: b.key, maxVersion: 'TLSv1.3' as const }],
    ] as const) {
      const attempts: unknown[] = [];
      const { ms } = await expectCode(code, () => waitForScheduler(tlsAddr, { tls, timeoutMs: 20_000, onAttempt: (e) => attempts.push(e) }));
      expect(ms).toBeLessThan(2_000);
      expect(attempts).toHaveLength(1);
    }
  });

  it('waitForScheduler: on timeout says the last failure and how many attempts were made', async () => {
    const port = await freePort();
    const attempts: unknown[] = [];
    const { err } = await expectCode('E_TIMEOUT', () =>
      waitForScheduler(`tls://${HOST}:${port}`, { security: A, timeoutMs: 1_500, intervalMs: 100, onAttempt: (e) => attempts.push(e) }),
    );
    expect(attempts.length).toBeGreaterThan(2);
    expect(err.message).toContain(`tls://${HOST}:${port}`);
    expect(err.message).toMatch(/last failure: nothing is listening/);
    expect(err.details.lastCode).toBe('E_CONNECT_REFUSED');
    expect(err.details.attempts).toBe(attempts.length);
  });

  it('waitForScheduler: keeps trying until a scheduler that starts late answers', async () => {
    const port = await freePort();
    const address = `tls://${HOST}:${port}`;
    const waiting = waitForScheduler(address, { security: A, timeoutMs: 40_000, intervalMs: 100 });
    await new Promise((r) => setTimeout(r, 500));
    await spawnDask({ role: 'scheduler', security: A, host: HOST, port, dashboardAddress: false });
    const id = await waiting;
    expect(id.address).toBe(address);
    // workers = 0 here: waitForWorkers times out and says what it saw.
    await using client = await SchedulerClient.connect(address, { security: A });
    const { err } = await expectCode('E_TIMEOUT', () => waitForWorkers(client, 1, { timeoutMs: 600, intervalMs: 100 }));
    expect(err.message).toMatch(/had 0 of 1 workers/);
    await client.terminate();
  });

  it('leaves no sockets or timers behind: a script running every failure exits on its own', async () => {
    const dir = await tempDir();
    const input = path.join(dir, 'input.json');
    const port = await freePort();
    await writeFile(
      input,
      JSON.stringify({ a, b, tlsAddr, plainAddr, silent: `${HOST}:${silent.port}`, refused: `tls://${HOST}:${port}` }),
      { mode: 0o600 },
    );
    const script = path.join(dir, 'leak-check.ts');
    await writeFile(
      script,
      `
import { readFileSync } from 'node:fs';
import { DaskComm, SchedulerClient, waitForScheduler } from ${JSON.stringify(path.join(REPO, 'src/dask/index.ts'))};
const i = JSON.parse(readFileSync(process.argv[2]!, 'utf8'));
const codes: string[] = [];
const attempt = async (f: () => Promise<{ close(): Promise<void> }>) => {
  try { const c = await f(); await c.close(); codes.push('OK'); } catch (e) { codes.push((e as { code: string }).code); }
};
(async () => {
  await attempt(() => SchedulerClient.connect(i.refused, { tls: i.a }));
  await attempt(() => DaskComm.connect(i.tlsAddr, { tls: { ca: i.a.ca } }));
  await attempt(() => SchedulerClient.connect(i.tlsAddr, { tls: { ...i.a, ca: i.b.ca } }));
  await attempt(() => SchedulerClient.connect(i.tlsAddr.replace('tls:', 'tcp:'), { timeoutMs: 1000 }));
  await attempt(() => SchedulerClient.connect(i.plainAddr.replace('tcp:', 'tls:'), { tls: i.a }));
  await attempt(() => SchedulerClient.connect('tls://' + i.silent, { tls: i.a, timeoutMs: 300 }));
  await attempt(() => SchedulerClient.connect('tls://' + i.silent, { tls: i.a, signal: AbortSignal.timeout(100) }));
  await attempt(async () => { const c = await SchedulerClient.connect(i.tlsAddr, { tls: i.a }); await c.identity(); return c; });
  await attempt(async () => { await waitForScheduler(i.refused, { tls: i.a, timeoutMs: 400, intervalMs: 50 }); return { close: async () => {} }; });
  const c = await SchedulerClient.connect(i.tlsAddr, { tls: i.a });
  const ac = new AbortController();
  const p = c.request('identity', {}, { signal: ac.signal, timeoutMs: 60000 });
  ac.abort();
  await p.catch((e) => codes.push(e.code));
  await c.close();
  console.log(JSON.stringify({ codes, resources: process.getActiveResourcesInfo() }));
})();
`,
    );
    const run = spawnTsx(script, [input]);
    const code = await run.exitWithin(30_000);
    if (code === 'timeout') throw new Error(`the script did not exit on its own within 30 s: something is left open\n${run.output()}`);
    expect(code, run.stderr()).toBe(0);
    const result = JSON.parse(run.stdout().trim().split('\n').pop()!) as { codes: string[]; resources: string[] };
    expect(result.codes).toEqual([
      'E_CONNECT_REFUSED',
      'E_TLS_REFUSED',
      'E_UNTRUSTED_SCHEDULER',
      expect.stringMatching(/^E_(TLS_PEER|TIMEOUT)$/),
      'E_PLAINTEXT_PEER',
      'E_TIMEOUT',
      'E_ABORTED',
      'OK',
      'E_TIMEOUT',
      'E_ABORTED',
    ]);
    expect(result.resources.filter((r) => /TCP|TLS|Timeout|Timer/i.test(r))).toEqual([]);
  });
});
