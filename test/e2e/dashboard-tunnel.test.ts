/**
 * The dashboard over mutual TLS, end to end on 127.0.0.1: a real Dask scheduler (dashboard on
 * 127.0.0.1 only) with workers, the terminator that ships in user-data
 * (cloud-init/dashboard-tls.py, run by the same Python as Dask, as on a VM) in front of it with
 * the scheduler's certificate, and openDashboardTunnel on the user's side.
 *
 * - pages of the real dashboard through tunnel + terminator, many at once;
 * - what the terminator port gives everyone else: nothing without a certificate, nothing to a
 *   certificate of another CA, nothing to plain HTTP, nothing to a client that never handshakes;
 * - a websocket-style upgrade and a long bidirectional stream, with a half-close (a Node echo
 *   server plays the dashboard there);
 * - a dashboard that is not up yet, SIGTERM, missing or mismatched files;
 * - a real browser: Debian's headless Chromium loads the workers page of a trixie-Dask scheduler
 *   with 2 workers through the tunnel and the terminator (test/helpers/browser.ts).
 *
 * DASK_CLOUD_TERMINATOR_PYTHON runs the terminator (only) with another interpreter, to check it
 * on each Python it must support (3.9 to 3.13): it needs nothing but the standard library.
 *
 * Nothing dials anything but 127.0.0.1. Every process started here runs in its own process group
 * and is killed by that id in afterAll, whatever happened; every wait is bounded.
 */
import 'reflect-metadata';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startGroup, stopGroup, writeFiles, type Started } from '../helpers/procs';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { Security } from '../../src/security';
import { daskProcessSpec } from '../../src/dask/command';
import { openDashboardTunnel, type DashboardTunnel } from '../../src/dashboard';
import { have, pythonWithDask, realDask, trixieDask, trixiePython } from '../helpers/prereq';
import { chromium, loadPage } from '../helpers/browser';

const WAIT_MS = 60_000;
const TERMINATOR = path.resolve(__dirname, '..', '..', 'cloud-init', 'dashboard-tls.py');

const enabled = have(realDask());
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-dashboard-e2e-'));
const home = path.join(root, 'home');
fs.mkdirSync(home);

const started: Started[] = [];
const closers: (() => Promise<void> | void)[] = [];

afterAll(async () => {
  for (const close of closers.reverse()) await close();
  await Promise.all(started.map(stopGroup));
  // Keys and logs go; screenshots stay for people to look at.
  for (const entry of fs.readdirSync(root)) {
    if (entry !== 'screenshots') fs.rmSync(path.join(root, entry), { recursive: true, force: true });
  }
  if (!fs.existsSync(path.join(root, 'screenshots'))) fs.rmSync(root, { recursive: true, force: true });
});

function startProcess(name: string, command: string, args: string[], env: Record<string, string> = {}): Started {
  const s = startGroup(name, command, args, home, env);
  started.push(s);
  return s;
}

async function waitForOutput(p: Started, re: RegExp): Promise<RegExpMatchArray> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const m = p.output().match(re);
    if (m) return m;
    if (p.proc.exitCode !== null) throw new Error(`${p.name} exited with ${p.proc.exitCode} before printing ${re}:\n${p.output()}`);
    if (Date.now() > deadline) throw new Error(`${p.name}: no ${re} within ${WAIT_MS} ms:\n${p.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function eventually(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`)), WAIT_MS)))]);
  } finally {
    clearTimeout(timer);
  }
}

interface DaskCluster {
  dashboardPort: number;
  /** The scheduler's TLS files (ca.pem, scheduler.pem, scheduler.key), as on the VM. */
  tlsDir: string;
  workerNames: string[];
}

/** A TLS scheduler with its dashboard on 127.0.0.1 only, and `nWorkers` workers, all from `python`. */
async function startDask(name: string, python: string, security: Security, nWorkers: number): Promise<DaskCluster> {
  const dir = path.join(root, name);
  const [port, dashboardPort] = await Promise.all([freePort(), freePort()]);
  const tlsDir = path.join(dir, 'scheduler');
  const sSpec = daskProcessSpec({ role: 'scheduler', security, tlsDir, host: '127.0.0.1', port, dashboardAddress: `127.0.0.1:${dashboardPort}` });
  writeFiles(sSpec.files);
  const scheduler = startProcess(`${name}-scheduler`, python, ['-m', 'dask', ...sSpec.args], sSpec.env);
  await waitForOutput(scheduler, /Scheduler at:\s+tls:\/\/127\.0\.0\.1:\d+/);
  const workerNames = Array.from({ length: nWorkers }, (_, i) => `${name}-w${i + 1}`);
  const workers = workerNames.map((workerName, i) => {
    const wSpec = daskProcessSpec({
      role: 'worker',
      security,
      tlsDir: path.join(dir, `worker${i + 1}`),
      schedulerAddress: `tls://127.0.0.1:${port}`,
      host: '127.0.0.1',
      name: workerName,
      nthreads: 1,
      noNanny: true,
    });
    writeFiles(wSpec.files);
    return startProcess(workerName, python, ['-m', 'dask', ...wSpec.args], wSpec.env);
  });
  await Promise.all(workers.map((w) => waitForOutput(w, /Registered to:/)));
  return { dashboardPort, tlsDir, workerNames };
}

interface Terminator extends Started {
  port: number;
}

/** The terminator as a VM runs it, on 127.0.0.1 and a free port (`--listen ...:0`). */
async function startTerminator(name: string, python: string, tlsDir: string, targetPort: number, extra: string[] = []): Promise<Terminator> {
  const t = startProcess(name, python, [
    TERMINATOR,
    '--listen',
    '127.0.0.1:0',
    '--target',
    `127.0.0.1:${targetPort}`,
    '--ca',
    path.join(tlsDir, 'ca.pem'),
    '--cert',
    path.join(tlsDir, 'scheduler.pem'),
    '--key',
    path.join(tlsDir, 'scheduler.key'),
    ...extra,
  ]);
  const m = await waitForOutput(t, /listening on 127\.0\.0\.1:(\d+)/);
  return Object.assign(t, { port: Number(m[1]) });
}

async function tunnelTo(port: number, security: Security, p?: string): Promise<DashboardTunnel> {
  const tunnel = await openDashboardTunnel({ host: '127.0.0.1', port, security, ...(p ? { path: p } : {}) });
  closers.push(() => tunnel.close());
  return tunnel;
}

/** An HTTP GET (no keep-alive) with a bounded wait. */
function get(url: string): Promise<{ status: number; body: string }> {
  return within(
    new Promise((resolve, reject) => {
      const req = http.get(url, { agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      });
      req.on('error', reject);
    }),
    `GET ${url}`,
  );
}

/** What a client gets back from the terminator port: bytes until the connection ends, and how it ended. */
interface RawOutcome {
  data: string;
  error?: string;
}

/** Markup to text, for printing what a page says. */
function textOf(html: string): string {
  return html
    .replace(/<[^>]+>/g, ' ')
    .replace(/&gt;/g, '>')
    .replace(/&lt;/g, '<')
    .replace(/&quot;/g, '"')
    .replace(/&amp;/g, '&')
    .replace(/\s+/g, ' ')
    .trim();
}

function collect(socket: net.Socket): Promise<RawOutcome> {
  return within(
    new Promise<RawOutcome>((resolve) => {
      let data = '';
      let error: string | undefined;
      socket.on('data', (d: Buffer) => (data += d.toString('latin1')));
      socket.on('error', (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message));
      socket.on('close', () => resolve({ data, error }));
    }),
    'the refused connection to end',
  );
}

const REQUEST = 'GET /json/identity.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n';

let security: Security;
let other: Security;
let python: string;
/** The interpreter the terminator runs on (Dask's, unless DASK_CLOUD_TERMINATOR_PYTHON says otherwise). */
let terminatorPython: string;
let dask: DaskCluster;
let terminator: Terminator;

describe.skipIf(!enabled)('dashboard over mutual TLS: real Dask, the terminator and the tunnel', () => {
  beforeAll(async () => {
    python = pythonWithDask()!;
    terminatorPython = process.env.DASK_CLOUD_TERMINATOR_PYTHON || python;
    [security, other] = await Promise.all([Security.temporary(), Security.temporary()]);
    dask = await startDask('host', python, security, 2);
    terminator = await startTerminator('terminator', terminatorPython, dask.tlsDir, dask.dashboardPort);
  }, 120_000);

  it('serves the real dashboard through tunnel and terminator: the workers page and identity list both workers', async () => {
    const tunnel = await tunnelTo(terminator.port, security, '/info/main/workers.html');
    expect(tunnel.url).toBe(`http://127.0.0.1:${tunnel.port}/info/main/workers.html`);
    const page = await get(tunnel.url);
    expect(page.status).toBe(200);
    for (const name of dask.workerNames) expect(page.body).toContain(`<td> ${name} </td>`);
    expect(page.body.match(/href="\.\.\/worker\/tls%3A%2F%2F127\.0\.0\.1%3A\d+\.html"/g)).toHaveLength(2);

    const identity = await get(`http://127.0.0.1:${tunnel.port}/json/identity.json`);
    expect(identity.status).toBe(200);
    const workers = Object.values((JSON.parse(identity.body) as { workers: Record<string, { name: string }> }).workers).map((w) => w.name);
    expect(workers.sort()).toEqual([...dask.workerNames].sort());

    // Debian's Dask has no Bokeh (Debian ships none): /status answers, with Dask's own note.
    const status = await get(`http://127.0.0.1:${tunnel.port}/status`);
    expect(status.status).toBe(200);
    // eslint-disable-next-line no-console
    console.log(`[dashboard] /status through the tunnel: ${textOf(status.body).slice(0, 120)}`);
  });

  it('carries many connections at once', async () => {
    const tunnel = await tunnelTo(terminator.port, security);
    const answers = await Promise.all(Array.from({ length: 24 }, () => get(`http://127.0.0.1:${tunnel.port}/json/counts.json`)));
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect((JSON.parse(a.body) as { workers: number }).workers).toBe(2);
    }
    await eventually(() => tunnel.connections === 0, 'every tunnelled connection to end');
  });

  it('gives a TLS client without a certificate nothing, and logs one line', async () => {
    const sock = tls.connect({ host: '127.0.0.1', port: terminator.port, ca: security.caCertPem, checkServerIdentity: () => undefined });
    sock.once('secureConnect', () => sock.write(REQUEST));
    const out = await collect(sock);
    expect(out.data).not.toContain('HTTP/');
    expect(out.data).toBe('');
    await waitForOutput(terminator, /refused 127\.0\.0\.1:\d+: PEER_DID_NOT_RETURN_A_CERTIFICATE/);
  });

  it('refuses a client certificate of another CA', async () => {
    const foreign = other.clientTlsOptions();
    // Trusts the terminator (our CA) but presents the other cluster's client certificate.
    const sock = tls.connect({ host: '127.0.0.1', port: terminator.port, ca: security.caCertPem, cert: foreign.cert, key: foreign.key, checkServerIdentity: () => undefined });
    sock.once('secureConnect', () => sock.write(REQUEST));
    const out = await collect(sock);
    expect(out.data).toBe('');
    expect(out.error ?? '').toMatch(/ALERT|ECONNRESET|EPIPE|^$/);
    await waitForOutput(terminator, /refused 127\.0\.0\.1:\d+: CERTIFICATE_VERIFY_FAILED/);

    // The tunnel of the other cluster: its HTTP client gets our 502, never a dashboard page.
    const wrong = await tunnelTo(terminator.port, other);
    const page = await get(wrong.url);
    expect(page.status).toBe(502);
    expect(page.body).toMatch(/^dask-cloud: the dashboard could not be reached over mutual TLS/);
  });

  it('gives plain HTTP nothing', async () => {
    const sock = net.connect({ host: '127.0.0.1', port: terminator.port });
    sock.once('connect', () => sock.write(REQUEST));
    const out = await collect(sock);
    expect(out.data).not.toContain('HTTP/');
    await waitForOutput(terminator, /refused 127\.0\.0\.1:\d+: HTTP_REQUEST/);
    // No key material in anything it printed.
    expect(terminator.output()).not.toMatch(/PRIVATE KEY|BEGIN/);
  });

  it('drops a client that never starts the TLS handshake after --handshake-timeout', async () => {
    const t = await startTerminator('terminator-deadline', terminatorPython, dask.tlsDir, dask.dashboardPort, ['--handshake-timeout', '1']);
    const sock = net.connect({ host: '127.0.0.1', port: t.port });
    const out = await collect(sock);
    expect(out.data).toBe('');
    await waitForOutput(t, /refused 127\.0\.0\.1:\d+: no TLS handshake within the handshake timeout/);
  });

  it('closes connections beyond --max-connections at once, and serves again when one ends', async () => {
    const echo = await websocketEcho();
    const t = await startTerminator('terminator-max', terminatorPython, dask.tlsDir, echo.port, ['--max-connections', '1']);
    const options = { host: '127.0.0.1', port: t.port, ...security.clientTlsOptions(), checkServerIdentity: () => undefined };
    /** Opens a connection and upgrades it; resolves with the socket once served, or null when closed unserved. */
    const upgrade = (): Promise<tls.TLSSocket | null> =>
      within(
        new Promise((resolve) => {
          const sock = tls.connect(options);
          let data = '';
          sock.on('error', () => undefined);
          sock.on('data', (d: Buffer) => {
            data += d.toString('latin1');
            if (data.includes('101 Switching Protocols')) resolve(sock);
          });
          sock.once('close', () => resolve(null));
          sock.once('secureConnect', () => sock.write('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n'));
        }),
        'an upgrade through the terminator',
      );
    const first = await upgrade();
    expect(first).not.toBeNull();
    expect(await upgrade()).toBeNull();
    await waitForOutput(t, /refused 127\.0\.0\.1:\d+: 1 connections already open \(--max-connections\)/);
    const firstClosed = new Promise<void>((r) => first!.once('close', () => r()));
    first!.end();
    await within(firstClosed, 'the first connection to end');
    // Its slot comes free once the terminator's thread has let go of it.
    const deadline = Date.now() + WAIT_MS;
    let again: tls.TLSSocket | null = null;
    while (again === null && Date.now() < deadline) again = await upgrade();
    expect(again).not.toBeNull();
    again!.destroy();
  });

  it('carries a websocket-style upgrade, a long bidirectional stream and a half-close; close() ends it and frees the port', async () => {
    const echo = await websocketEcho();
    const t = await startTerminator('terminator-ws', terminatorPython, dask.tlsDir, echo.port);
    const tunnel = await tunnelTo(t.port, security);
    const c = net.connect({ host: '127.0.0.1', port: tunnel.port });
    let data = '';
    c.on('data', (d: Buffer) => (data += d.toString('latin1')));
    c.on('error', () => undefined);
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.write('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    await eventually(() => data.includes('\r\n\r\n'), 'the 101 answer');
    expect(data).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
    const head = data.length;
    let sent = 0;
    for (let i = 0; i < 30; i++) {
      const msg = `frame ${i} `;
      c.write(msg);
      sent += msg.length;
      await eventually(() => data.length >= head + sent, `the echo of frame ${i}`);
    }
    const blob = Buffer.alloc(4 * 1024 * 1024, 'z');
    c.write(blob);
    sent += blob.length;
    await eventually(() => data.length >= head + sent, 'the 4 MiB echo');
    expect(tunnel.connections).toBe(1);
    // Our end of writing travels tunnel → terminator → dashboard, whose last words still arrive.
    c.end();
    await within(closed, 'the stream to end after the half-close');
    expect(data.endsWith(`[end after ${sent} bytes]`)).toBe(true);

    // A second live stream, then close(): it ends, and the port is free again.
    const d = net.connect({ host: '127.0.0.1', port: tunnel.port });
    d.on('error', () => undefined);
    const dClosed = new Promise<void>((r) => d.once('close', () => r()));
    let dData = '';
    d.on('data', (b: Buffer) => (dData += b.toString('latin1')));
    d.write('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n');
    await eventually(() => dData.includes('101'), 'the second upgrade');
    await within(tunnel.close(), 'close()');
    await within(dClosed, 'the live stream to end on close()');
    expect(tunnel.connections).toBe(0);
    const rebound = net.createServer();
    await within(new Promise<void>((resolve, reject) => (rebound.once('error', reject), rebound.listen(tunnel.port, '127.0.0.1', () => resolve()))), 'rebinding the port');
    await new Promise<void>((r) => rebound.close(() => r()));
  });

  it('closes cleanly when the dashboard is not up yet; the tunnel tells an HTTP client with a 502', async () => {
    const dead = await freePort();
    const t = await startTerminator('terminator-down', terminatorPython, dask.tlsDir, dead);
    const sock = tls.connect({ host: '127.0.0.1', port: t.port, ...security.clientTlsOptions(), checkServerIdentity: () => undefined });
    let ended = false;
    sock.on('end', () => (ended = true));
    sock.once('secureConnect', () => sock.write(REQUEST));
    const out = await collect(sock);
    expect(out).toEqual({ data: '', error: undefined });
    expect(ended).toBe(true); // a TLS close_notify and FIN, not a reset
    await waitForOutput(t, /closed 127\.0\.0\.1:\d+: the dashboard at 127\.0\.0\.1:\d+ is not reachable \(Connection refused\)/);

    const tunnel = await tunnelTo(t.port, security);
    const page = await get(tunnel.url);
    expect(page.status).toBe(502);
    expect(page.body).toContain('the terminator closed the connection before the dashboard answered');
  });

  it('exits 0 on SIGTERM, and 2 with a clear message for a missing file or a key of another certificate', async () => {
    const t = await startTerminator('terminator-term', terminatorPython, dask.tlsDir, dask.dashboardPort);
    t.proc.kill('SIGTERM');
    expect(await within(t.exited, 'the terminator to exit on SIGTERM')).toBe(0);
    expect(t.output()).toMatch(/stopping/);

    const missing = startProcess('terminator-missing', terminatorPython, [TERMINATOR, '--ca', path.join(root, 'nope.pem'), '--cert', path.join(dask.tlsDir, 'scheduler.pem'), '--key', path.join(dask.tlsDir, 'scheduler.key')]);
    expect(await within(missing.exited, 'the terminator to exit')).toBe(2);
    expect(missing.output()).toMatch(/--ca .*nope\.pem: no such file/);

    const otherDir = path.join(root, 'other-tls');
    writeFiles(other.tlsFiles('scheduler', otherDir));
    const mismatch = startProcess('terminator-mismatch', terminatorPython, [TERMINATOR, '--ca', path.join(dask.tlsDir, 'ca.pem'), '--cert', path.join(dask.tlsDir, 'scheduler.pem'), '--key', path.join(otherDir, 'scheduler.key')]);
    expect(await within(mismatch.exited, 'the terminator to exit')).toBe(2);
    expect(mismatch.output()).toMatch(/cannot load them \(KEY_VALUES_MISMATCH\)/);
    expect(mismatch.output()).not.toMatch(/PRIVATE KEY|BEGIN/);
    // Three terminator processes one after another, each bounded by WAIT_MS.
  }, 3 * WAIT_MS + 10_000);
});

/**
 * Plays the dashboard for the websocket case: answers an upgrade request with 101, then echoes
 * every byte; when the client ends its half, writes a trailer with the byte count and ends.
 */
async function websocketEcho(): Promise<{ port: number }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let head = '';
    let upgraded = false;
    let n = 0;
    s.on('data', (d: Buffer) => {
      if (upgraded) {
        n += d.length;
        s.write(d);
        return;
      }
      head += d.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      upgraded = true;
      s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      const rest = Buffer.from(head.slice(end + 4), 'latin1');
      if (rest.length > 0) {
        n += rest.length;
        s.write(rest);
      }
    });
    s.on('end', () => s.end(`[end after ${n} bytes]`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  closers.push(() => new Promise<void>((r) => (sockets.forEach((s) => s.destroy()), server.close(() => r()))));
  return { port: (server.address() as net.AddressInfo).port };
}

// Debian's Chromium against the dashboard of trixie's Dask (2024.12.1, the Dask our VMs run), with
// the terminator on that root's Python 3.13. Outside CI, skipped (with the reason) when Chromium
// or the trixie root is missing; with CI=true, have() fails the run instead.
const browserReady = have(trixieDask()) && have(chromium());

describe.skipIf(!browserReady)('dashboard in a real browser: headless Chromium through the tunnel', () => {
  let sec: Security;
  let cluster: DaskCluster;
  let t: Terminator;

  beforeAll(async () => {
    const trixie = trixiePython()!;
    sec = await Security.temporary();
    cluster = await startDask('trixie', trixie, sec, 2);
    t = await startTerminator('terminator-trixie', trixie, cluster.tlsDir, cluster.dashboardPort);
  }, 120_000);

  it('shows both workers on the dashboard page Chromium loads through tunnel and terminator', async () => {
    const tunnel = await tunnelTo(t.port, sec, '/info/main/workers.html');
    const shots = path.join(root, 'screenshots');
    fs.mkdirSync(shots, { recursive: true });
    const screenshot = path.join(shots, 'workers.png');
    const page = await loadPage(tunnel.url, { screenshot, virtualTimeBudgetMs: 5_000, timeoutMs: 90_000 });
    // The page renders a table with one row per worker: a link to the worker and its name.
    const rows = page.dom.match(/<a href="\.\.\/worker\/tls%3A%2F%2F127\.0\.0\.1%3A\d+\.html">tls:\/\/127\.0\.0\.1:\d+<\/a>/g) ?? [];
    expect(rows).toHaveLength(2);
    for (const name of cluster.workerNames) expect(page.dom).toContain(`<td> ${name} </td>`);
    expect(page.dom).toMatch(/<h2 class="title is-4">Workers<\/h2>/);
    expect(page.screenshot).toBe(screenshot);
    expect(fs.statSync(screenshot).size).toBeGreaterThan(1_000);

    // /status too: without Bokeh (Debian has none) Dask answers with its note instead of the plots.
    const statusShot = path.join(shots, 'status.png');
    const status = await loadPage(`http://127.0.0.1:${tunnel.port}/status`, { screenshot: statusShot, timeoutMs: 90_000 });
    const statusText = textOf(status.dom);
    expect(statusText.length).toBeGreaterThan(0);
    // eslint-disable-next-line no-console
    console.log(
      `[dashboard] screenshots: ${screenshot} ${statusShot}\n` +
        `[dashboard] /status in Chromium: ${statusText.slice(0, 160)}\n` +
        `[dashboard] requests stopped at the sinkhole (never left the machine): ${[...page.blocked, ...status.blocked].join(' | ') || 'none'}`,
    );
  });
});
