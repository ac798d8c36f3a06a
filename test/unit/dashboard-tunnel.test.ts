/**
 * openDashboardTunnel against Node stand-ins for the scheduler VM's terminator (mutual-TLS
 * servers on 127.0.0.1): typed errors before anything listens, bytes both ways, half-close,
 * refusals in both directions turned into a 502 for HTTP clients, timeouts, close() and abort.
 * The real terminator (cloud-init/dashboard-tls.py) and real Dask: test/e2e/dashboard-tunnel.test.ts.
 */
import 'reflect-metadata';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/net';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { Security } from '../../src/security';
import { DaskCommError, ValidationError } from '../../src/errors';
import { openDashboardTunnel, type DashboardTunnel } from '../../src/dashboard';
import { eventually } from '../helpers/eventually';

const WAIT_MS = 30_000;

let security: Security;
let other: Security;
const closers: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  [security, other] = await Promise.all([Security.temporary(), Security.temporary()]);
});
afterAll(async () => {
  for (const close of closers.reverse()) await close();
});

function keyOf(sec: Security, role: 'scheduler' | 'client'): string {
  return sec.tlsFiles(role, '/x').find((f) => f.mode === '0600')!.content;
}

interface FakeTerminator {
  port: number;
  /** Subjects of the client certificates it accepted. */
  peers: string[];
  /** Bytes it received, over all connections. */
  received: () => number;
}

/**
 * A mutual-TLS server standing in for the terminator: `serverOf` presents its scheduler
 * certificate, `trust` is the only CA it accepts clients of. `onConnection` plays the dashboard.
 */
async function fakeTerminator(serverOf: Security, trust: Security, onConnection: (s: tls.TLSSocket) => void): Promise<FakeTerminator> {
  const peers: string[] = [];
  let received = 0;
  const sockets = new Set<net.Socket>();
  const server = tls.createServer(
    {
      ca: trust.caCertPem,
      cert: serverOf.certPem('scheduler'),
      key: keyOf(serverOf, 'scheduler'),
      requestCert: true,
      rejectUnauthorized: true,
      allowHalfOpen: true,
    },
    (s) => {
      peers.push(String(s.getPeerCertificate().subject?.CN ?? '?'));
      s.on('data', (d: Buffer) => (received += d.length));
      onConnection(s);
    },
  );
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  closers.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as net.AddressInfo).port, peers, received: () => received };
}

/** Echo, and on the client's end of its half: a trailer with the byte count, then our end. */
function echoThenTrailer(s: tls.TLSSocket): void {
  let n = 0;
  s.on('data', (d: Buffer) => {
    n += d.length;
    s.write(d);
  });
  s.on('end', () => s.end(`\n[end after ${n} bytes]`));
  s.on('error', () => undefined);
}

async function track(t: Promise<DashboardTunnel>): Promise<DashboardTunnel> {
  const tunnel = await t;
  closers.push(() => tunnel.close());
  return tunnel;
}

/** True when 127.0.0.1:port can be bound right now (nothing listens there). */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** Opens a raw TCP connection to the tunnel; collects what comes back until the socket closes. */
function rawClient(port: number): { socket: net.Socket; data: () => string; closed: Promise<void> } {
  const socket = net.connect({ host: '127.0.0.1', port });
  let data = '';
  socket.on('data', (d: Buffer) => (data += d.toString('latin1')));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  return { socket, data: () => data, closed };
}

/** One HTTP/1.1 GET through the tunnel, read to the server's close (Connection: close). */
async function httpGet(port: number, path = '/'): Promise<string> {
  const c = rawClient(port);
  c.socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`);
  await within(c.closed, 'the HTTP exchange to end');
  return c.data();
}

async function within<T>(p: Promise<T>, what: string, ms = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

describe('openDashboardTunnel: bad input', () => {
  it('refuses bad options with a typed ValidationError before anything listens', async () => {
    const localPort = await freePort();
    const good = { host: '127.0.0.1', port: 8788, security, localPort };
    const cases: [string, Record<string, unknown>, string][] = [
      ['no security', { host: '127.0.0.1', port: 8788, localPort }, 'security'],
      ['security: false', { ...good, security: false }, 'security'],
      ['a look-alike object', { ...good, security: Object.create(Security.prototype) }, 'security'],
      ['port 0', { ...good, port: 0 }, 'port'],
      ['port 65536', { ...good, port: 65_536 }, 'port'],
      ['fractional port', { ...good, port: 87.5 }, 'port'],
      ['port as a string', { ...good, port: '8788' }, 'port'],
      ['no port', { host: '127.0.0.1', security, localPort }, 'port'],
      ['host as a number', { ...good, host: 127001 }, 'host'],
      ['empty host', { ...good, host: '' }, 'host'],
      ['host with a space', { ...good, host: 'a b' }, 'host'],
      ['host as a URL', { ...good, host: 'https://x' }, 'host'],
      ['negative localPort', { ...good, localPort: -1 }, 'localPort'],
      ['path without a slash', { ...good, path: 'status' }, 'path'],
      ['connectTimeoutMs 0', { ...good, connectTimeoutMs: 0 }, 'connectTimeoutMs'],
      ['signal not an AbortSignal', { ...good, signal: {} }, 'signal'],
      ['an unknown option', { ...good, localport: 1 }, 'localport'],
    ];
    for (const [name, options, option] of cases) {
      const err = await openDashboardTunnel(options as never).then(
        () => new Error(`${name}: no error`),
        (e: unknown) => e,
      );
      expect(ValidationError.isInstance(err), `${name}: ${String(err)}`).toBe(true);
      expect((err as ValidationError).code).toBe('E_INVALID_OPTION');
      expect((err as ValidationError).details.option, name).toBe(option);
    }
    await expect(openDashboardTunnel(null as never)).rejects.toSatisfy((e) => ValidationError.isInstance(e));
    // Nothing listened on the local port meanwhile.
    expect(await bindable(localPort)).toBe(true);
  });

  it('refuses an already aborted signal (E_ABORTED) and listens on nothing', async () => {
    const localPort = await freePort();
    const err = await openDashboardTunnel({ host: '127.0.0.1', port: 8788, security, localPort, signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect(DaskCommError.isInstance(err)).toBe(true);
    expect((err as DaskCommError).code).toBe('E_ABORTED');
    expect(await bindable(localPort)).toBe(true);
  });

  it('names the local port when it is taken', async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    closers.push(() => new Promise<void>((r) => busy.close(() => r())));
    const localPort = (busy.address() as net.AddressInfo).port;
    const err = await openDashboardTunnel({ host: '127.0.0.1', port: 8788, security, localPort }).catch((e: unknown) => e);
    expect(ValidationError.isInstance(err)).toBe(true);
    expect((err as ValidationError).details.option).toBe('localPort');
    expect((err as Error).message).toMatch(/EADDRINUSE/);
  });
});

describe('openDashboardTunnel: carrying connections', () => {
  it('listens on 127.0.0.1 only and returns the local URL', async () => {
    const term = await fakeTerminator(security, security, echoThenTrailer);
    const tunnel = await track(openDashboardTunnel({ host: '127.0.0.1', port: term.port, security }));
    expect(tunnel.url).toBe(`http://127.0.0.1:${tunnel.port}/status`);
    const custom = await track(openDashboardTunnel({ host: '127.0.0.1', port: term.port, security, path: '/info/main/workers.html' }));
    expect(custom.url).toBe(`http://127.0.0.1:${custom.port}/info/main/workers.html`);
    // Not on another address of this machine (only loopback is bound).
    const other = Object.values(require('node:os').networkInterfaces() as Record<string, { address: string; family: string; internal: boolean }[]>)
      .flat()
      .find((a) => a && !a.internal && a.family === 'IPv4');
    if (other) {
      const refused = await new Promise<boolean>((resolve) => {
        const s = net.connect({ host: other.address, port: tunnel.port });
        s.once('connect', () => {
          s.destroy();
          resolve(false);
        });
        s.once('error', () => resolve(true));
      });
      expect(refused).toBe(true);
    }
  });

  it('carries bytes both ways with the cluster client certificate, passes a half-close on, and counts connections', async () => {
    const term = await fakeTerminator(security, security, echoThenTrailer);
    const tunnel = await track(openDashboardTunnel({ host: '127.0.0.1', port: term.port, security }));
    const c = rawClient(tunnel.port);
    await within(new Promise((r) => c.socket.once('connect', r)), 'the local connect');
    // Ping-pong: every message comes back before the next goes, like a websocket session.
    for (let i = 0; i < 20; i++) {
      const msg = `message ${i};`;
      const before = c.data().length;
      c.socket.write(msg);
      await eventually(() => c.data().length >= before + msg.length, `echo of ${msg}`, WAIT_MS);
    }
    expect(tunnel.connections).toBe(1);
    // A large blob in both directions at once.
    const blob = Buffer.alloc(3 * 1024 * 1024, 'x');
    c.socket.write(blob);
    const expected = c.data().length + blob.length;
    await eventually(() => c.data().length >= expected, 'the 3 MiB echo', WAIT_MS);
    // Our end of writing reaches the server, which still answers and then ends.
    c.socket.end();
    await within(c.closed, 'the connection to close');
    expect(c.data()).toMatch(/\[end after \d+ bytes\]$/);
    expect(c.data().endsWith(`[end after ${expected} bytes]`)).toBe(true);
    expect(term.peers).toEqual(['dask-cloud client']);
    await eventually(() => tunnel.connections === 0, 'connections back to 0', WAIT_MS);
  });

  it('refuses a terminator whose certificate is not of the cluster CA: an HTTP client gets a 502, the server no byte', async () => {
    const impostor = await fakeTerminator(other, security, echoThenTrailer);
    const tunnel = await track(openDashboardTunnel({ host: '127.0.0.1', port: impostor.port, security }));
    const answer = await httpGet(tunnel.port);
    expect(answer).toMatch(/^HTTP\/1\.1 502 Bad Gateway\r\n/);
    expect(answer).toMatch(/SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY|unable to verify/i);
    expect(impostor.received()).toBe(0);
  });

  it('turns a terminator that refuses our client certificate into a 502', async () => {
    // Presents a certificate we trust, but accepts only clients of another CA.
    const strict = await fakeTerminator(security, other, echoThenTrailer);
    const tunnel = await track(openDashboardTunnel({ host: '127.0.0.1', port: strict.port, security }));
    const answer = await httpGet(tunnel.port);
    expect(answer).toMatch(/^HTTP\/1\.1 502 Bad Gateway\r\n/);
    expect(strict.peers).toEqual([]);
  });

  it('gives up on a terminator that never completes TLS after connectTimeoutMs', async () => {
    // Reads (so it sees the tunnel hang up) but never answers.
    const silent = net.createServer((s) => s.on('error', () => undefined).resume());
    const held = new Set<net.Socket>();
    silent.on('connection', (s) => held.add(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    closers.push(() => new Promise<void>((r) => (held.forEach((s) => s.destroy()), silent.close(() => r()))));
    const tunnel = await track(
      openDashboardTunnel({ host: '127.0.0.1', port: (silent.address() as net.AddressInfo).port, security, connectTimeoutMs: 300 }),
    );
    const answer = await httpGet(tunnel.port);
    expect(answer).toMatch(/^HTTP\/1\.1 502 Bad Gateway\r\n/);
    expect(answer).toMatch(/no TLS connection within 300 ms/);
    await eventually(() => [...held].every((s) => s.destroyed), 'the stalled connection to be dropped', WAIT_MS);
  });

  it('closes a non-HTTP client without an answer when the terminator is unreachable', async () => {
    const dead = await freePort();
    const tunnel = await track(openDashboardTunnel({ host: '127.0.0.1', port: dead, security }));
    const c = rawClient(tunnel.port);
    c.socket.write('\x00\x01binary');
    await within(c.closed, 'the connection to close');
    expect(c.data()).toBe('');
  });

  it('survives a client that resets its connection', async () => {
    const term = await fakeTerminator(security, security, echoThenTrailer);
    const tunnel = await track(openDashboardTunnel({ host: '127.0.0.1', port: term.port, security }));
    const c = rawClient(tunnel.port);
    c.socket.write('hello');
    await eventually(() => c.data() === 'hello', 'the echo', WAIT_MS);
    c.socket.resetAndDestroy();
    await eventually(() => tunnel.connections === 0, 'the reset connection to go', WAIT_MS);
    // Still serving.
    const d = rawClient(tunnel.port);
    d.socket.end('again');
    await within(d.closed, 'the second connection');
    expect(d.data()).toBe('again\n[end after 5 bytes]');
  });
});

describe('openDashboardTunnel: close and abort', () => {
  it('close() ends live connections, frees the port, and is idempotent', async () => {
    const term = await fakeTerminator(security, security, echoThenTrailer);
    const tunnel = await openDashboardTunnel({ host: '127.0.0.1', port: term.port, security });
    const c = rawClient(tunnel.port);
    c.socket.write('x');
    await eventually(() => c.data() === 'x', 'the echo', WAIT_MS);
    expect(tunnel.connections).toBe(1);
    await within(Promise.all([tunnel.close(), tunnel.close()]), 'close()');
    await within(c.closed, 'the live connection to end');
    expect(tunnel.connections).toBe(0);
    expect(await bindable(tunnel.port)).toBe(true);
    await tunnel.close();
  });

  it('closes when its signal aborts, and with await using', async () => {
    const term = await fakeTerminator(security, security, echoThenTrailer);
    const controller = new AbortController();
    const tunnel = await openDashboardTunnel({ host: '127.0.0.1', port: term.port, security, signal: controller.signal });
    const c = rawClient(tunnel.port);
    c.socket.write('y');
    await eventually(() => c.data() === 'y', 'the echo', WAIT_MS);
    controller.abort();
    await within(c.closed, 'the live connection to end on abort');
    await eventually(() => bindable(tunnel.port), 'the port to be free after abort', WAIT_MS);

    let port = 0;
    {
      await using t = await openDashboardTunnel({ host: '127.0.0.1', port: term.port, security });
      port = t.port;
      expect(await bindable(port)).toBe(false);
    }
    expect(await bindable(port)).toBe(true);
  });
});
