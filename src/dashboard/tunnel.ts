/**
 * The user's end of the dashboard over mutual TLS.
 *
 * On the scheduler VM the Dask dashboard listens on 127.0.0.1 only, behind a TLS terminator
 * (`cloud-init/dashboard-tls.py`) that accepts only certificates of the cluster's CA. This module
 * opens a port on the user's 127.0.0.1 and carries every connection made to it (HTTP and the
 * dashboard's websockets alike: bytes are forwarded as they are) to that terminator with the
 * cluster's client certificate. The browser speaks plain HTTP to the loopback interface; only
 * mutual TLS leaves the machine.
 *
 * Like `ssh -L`, the local port is open to every process of this machine: the loopback
 * interface, not a password, is its boundary.
 */
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import { createLog } from '../log';
import { ValidationError } from '../errors';
import { Security } from '../security/security';
import { checkInteger, checkSignal, checkTimerMs, describeValue, readOptions } from '../config/bounds';
import { abortedError, DEFAULT_CONNECT_TIMEOUT_MS } from '../dask/comm';
import { loadTls } from '../lazy';

const log = createLog('dask-cloud:dashboard');

import { DEFAULT_DASHBOARD_TLS_PORT } from '../dask/command';

export { DEFAULT_DASHBOARD_TLS_PORT };

/** The page {@link DashboardTunnel.url} points at unless `path` says otherwise. */
export const DEFAULT_DASHBOARD_PATH = '/status';

/** Options of {@link openDashboardTunnel}. */
export interface DashboardTunnelOptions {
  /** Address of the scheduler's dashboard terminator: an IP address or a DNS name. */
  host: string;
  /** Port of the terminator ({@link DEFAULT_DASHBOARD_TLS_PORT} on dask-cloud's VMs). */
  port: number;
  /** The cluster's TLS material: its client certificate opens the terminator, its CA vouches for it. */
  security: Security;
  /** Local port on 127.0.0.1. Default 0: a free port, chosen by the system. */
  localPort?: number;
  /** Path of the page {@link DashboardTunnel.url} names. Default `/status`. */
  path?: string;
  /** Aborting closes the tunnel (or stops it opening). */
  signal?: AbortSignal;
  /** Budget for each connection's TCP connect and TLS handshake to the terminator, in ms. Default 10 000. */
  connectTimeoutMs?: number;
}

/** An open tunnel: a local port whose connections reach the dashboard over mutual TLS. */
export interface DashboardTunnel extends AsyncDisposable {
  /** The dashboard page through the tunnel, e.g. `http://127.0.0.1:40123/status`. */
  readonly url: string;
  /** The local port (on 127.0.0.1). */
  readonly port: number;
  /** Local connections being carried right now. */
  readonly connections: number;
  /** Stops listening and ends every live connection. Idempotent. */
  close(): Promise<void>;
}

const KNOWN_OPTIONS = new Set(['host', 'port', 'security', 'localPort', 'path', 'signal', 'connectTimeoutMs']);

interface Resolved {
  host: string;
  port: number;
  security: Security;
  localPort: number;
  path: string;
  signal: AbortSignal | undefined;
  connectTimeoutMs: number;
}

/** Checks every option before anything listens or dials; a {@link ValidationError} names the first bad one. */
function validate(input: DashboardTunnelOptions): Resolved {
  const o = readOptions(input, 'openDashboardTunnel options');
  for (const key of Object.keys(o)) {
    if (!KNOWN_OPTIONS.has(key)) {
      throw new ValidationError(`openDashboardTunnel: unknown option ${JSON.stringify(key)} (known: ${[...KNOWN_OPTIONS].join(', ')})`, { option: key });
    }
  }
  if (!Security.isSecurity(o.security)) {
    throw new ValidationError(
      `openDashboardTunnel needs the cluster's Security (got ${describeValue(o.security)}): the dashboard is reachable only over mutual TLS, ` +
        'and a cluster started with security: false has no dashboard terminator',
      { option: 'security' },
    );
  }
  if (typeof o.host !== 'string' || o.host.length === 0 || o.host.length > 253 || /[\s/]/.test(o.host)) {
    throw new ValidationError(`host must be the scheduler's IP address or DNS name, got ${describeValue(o.host)}`, { option: 'host' });
  }
  // `[::1]` as people write it in URLs; tls.connect wants the bare address.
  const host = /^\[.*\]$/.test(o.host) ? o.host.slice(1, -1) : o.host;
  if (o.port === undefined) throw new ValidationError(`port is required: the terminator's port (${DEFAULT_DASHBOARD_TLS_PORT} on dask-cloud's VMs)`, { option: 'port' });
  checkInteger(o.port, 'port', 1, 65_535);
  checkInteger(o.localPort, 'localPort', 0, 65_535, '0 picks a free port');
  if (o.path !== undefined && (typeof o.path !== 'string' || !/^\/[^\s]*$/.test(o.path) || o.path.length > 2_048)) {
    throw new ValidationError(`path must start with "/" and hold no spaces, got ${describeValue(o.path)}`, { option: 'path' });
  }
  checkSignal(o.signal);
  checkTimerMs(o.connectTimeoutMs, 'connectTimeoutMs');
  return {
    host,
    port: o.port,
    security: o.security,
    localPort: o.localPort ?? 0,
    path: o.path ?? DEFAULT_DASHBOARD_PATH,
    signal: o.signal,
    connectTimeoutMs: o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
  };
}

/** One side of a connection fully closed: the other gets its pending bytes out, then goes too. */
function follow(other: net.Socket): void {
  if (other.destroyed) return;
  if (other.writableFinished) {
    other.destroy();
    return;
  }
  other.end();
  other.once('finish', () => other.destroy());
  // A peer that never reads must not keep the socket.
  setTimeout(() => other.destroy(), 5_000).unref();
}

/** `METHOD /target HTTP/1.x`: the start of an HTTP request, which may be answered with a 502. */
const HTTP_REQUEST_LINE = /^[A-Z]+ \S+ HTTP\/1\.[01]\r?\n/;

// OpenSSL's verdicts on the terminator's certificate (as in src/dask/comm.ts).
const UNTRUSTED_SERVER = /^(SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|CERT_SIGNATURE_FAILURE|CERT_UNTRUSTED|CERT_REJECTED|CERT_HAS_EXPIRED|CERT_NOT_YET_VALID|INVALID_CA)$/;

/** A failed connection's reason as a person can act on it: the code, then what it means here. */
function explain(err: NodeJS.ErrnoException, remoteName: string): string {
  const code = err.code ?? '';
  if (UNTRUSTED_SERVER.test(code)) return `${code}: the server at ${remoteName} does not hold a certificate of this cluster's CA`;
  if (/CERTIFICATE_REQUIRED|UNKNOWN_CA|BAD_CERTIFICATE|DECRYPT_ERROR|HANDSHAKE_FAILURE/.test(code)) {
    return `${code}: the terminator at ${remoteName} refused our client certificate; is this Security the cluster's?`;
  }
  if (code === 'ECONNREFUSED') return `ECONNREFUSED: nothing listens at ${remoteName}; is the scheduler up and the port open to you?`;
  if (code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return `${code}: ${remoteName} cannot be reached from here`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `${code}: the name in ${remoteName} does not resolve`;
  return code ? `${code}: ${err.message}` : err.message;
}

function badGateway(reason: string): string {
  const body = `dask-cloud: the dashboard could not be reached over mutual TLS (${reason}).\nRun with DEBUG=dask-cloud:dashboard for details.\n`;
  return `HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/**
 * Open a local tunnel to a cluster's dashboard: listens on 127.0.0.1 (`localPort`, default a free
 * port) and carries each connection to `host:port`, the scheduler VM's dashboard terminator, over
 * TLS with the cluster's client certificate, checking the terminator's certificate against the
 * cluster's CA (no hostname check: cluster certificates name roles, not addresses, as in Dask).
 *
 * Resolves once the local port listens; nothing is dialled until a connection arrives, so a
 * scheduler that is still booting is no error here. Each connection gets `connectTimeoutMs` for
 * its TCP connect and TLS handshake. A connection that fails before the dashboard answered
 * anything gets an HTTP 502 with the reason when it sent an HTTP request, else it is just closed;
 * failures are logged (`DEBUG=dask-cloud:dashboard`) and never affect other connections or the
 * process.
 *
 * @throws {ValidationError} for bad options (no `Security`, a bad port or host, ...) or a local
 *   port that cannot be bound, before anything listens.
 * @throws {DaskCommError} `E_ABORTED` when `signal` fired before the port listened.
 *
 * @example
 * ```ts
 * await using tunnel = await openDashboardTunnel({ host: '34.1.2.3', port: 8788, security });
 * console.log(`Dask dashboard: ${tunnel.url}`);
 * ```
 */
export async function openDashboardTunnel(options: DashboardTunnelOptions): Promise<DashboardTunnel> {
  const o = validate(options);
  const remoteName = `${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port}`;
  const what = 'opening the dashboard tunnel to';
  if (o.signal?.aborted) throw abortedError(remoteName, what, o.signal);
  const tlsModule = loadTls();
  const { createServer, isIP } = require('node:net') as typeof net;
  const clientTls = o.security.clientTlsOptions();
  let secureContext: tls.SecureContext;
  try {
    secureContext = tlsModule.createSecureContext({
      ca: clientTls.ca,
      cert: clientTls.cert,
      key: clientTls.key,
      minVersion: clientTls.minVersion ?? 'TLSv1.2',
      maxVersion: clientTls.maxVersion,
      ciphers: clientTls.ciphers,
    });
  } catch (err) {
    // OpenSSL's message names the failing routine, never the PEM contents.
    const e = err as NodeJS.ErrnoException;
    throw new ValidationError(`the Security's TLS settings are unusable (${e.code ?? 'error'}: ${e.message})`, { option: 'security' });
  }

  // Every socket still open, so close() can end them; locals are what `connections` counts.
  const locals = new Set<net.Socket>();
  const remotes = new Set<tls.TLSSocket>();
  let nextId = 0;
  let closing: Promise<void> | undefined;

  /** Carries one local connection to the terminator until either side is done. */
  function carry(local: net.Socket): void {
    const id = ++nextId;
    const tag = `#${id} ${remoteName}`;
    locals.add(local);
    local.setNoDelay(true);
    let fromRemote = 0;
    let firstLocalBytes = '';
    let remote: tls.TLSSocket;
    // Each side may end its half while the other still talks (an HTTP client that shuts its
    // write side after the request still gets the answer). Node hands allowHalfOpen on to the
    // TLSSocket; @types/node does not list it for tls.connect.
    const connectOptions: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
      host: o.host,
      port: o.port,
      secureContext,
      // As Dask: the cluster CA is the trust boundary; certificates carry no SANs for VM addresses.
      checkServerIdentity: () => undefined,
      rejectUnauthorized: true,
      servername: isIP(o.host) ? undefined : o.host,
      allowHalfOpen: true,
    };
    try {
      remote = tlsModule.connect(connectOptions);
    } catch (err) {
      log('%s cannot connect: %s', tag, (err as Error).message);
      local.destroy();
      return;
    }
    remotes.add(remote);
    const timer = setTimeout(() => {
      fail(new Error(`no TLS connection within ${o.connectTimeoutMs} ms`));
    }, o.connectTimeoutMs);
    let failed = false;

    /** Ends both sides; tells an HTTP client why when the dashboard had not answered yet. */
    function fail(err: NodeJS.ErrnoException): void {
      if (failed) return;
      failed = true;
      clearTimeout(timer);
      const reason = explain(err, remoteName);
      log('%s failed after %d bytes from the dashboard: %s', tag, fromRemote, reason);
      remote.destroy();
      if (fromRemote === 0 && !local.destroyed && !local.writableEnded && HTTP_REQUEST_LINE.test(firstLocalBytes)) {
        // follow() (on the remote's close) destroys the local socket once this is out.
        local.end(badGateway(reason));
      } else {
        local.destroy();
      }
    }

    remote.once('secureConnect', () => {
      clearTimeout(timer);
      remote.setNoDelay(true);
      // Long-lived connections (websockets) notice a vanished VM instead of hanging on it.
      remote.setKeepAlive(true, 30_000);
      log('%s connected (%s)', tag, remote.getProtocol());
    });
    remote.on('error', (err) => fail(err));
    local.on('error', (err: NodeJS.ErrnoException) => {
      log('%s local side failed: %s', tag, err.message);
      clearTimeout(timer);
      failed = true;
      remote.destroy();
      local.destroy();
    });
    local.on('data', (chunk: Buffer) => {
      if (firstLocalBytes.length < 64) firstLocalBytes += chunk.subarray(0, 64).toString('latin1');
    });
    remote.on('data', (chunk: Buffer) => {
      fromRemote += chunk.length;
    });
    remote.on('end', () => {
      // The terminator ends a connection without a byte when the dashboard is not up on the VM;
      // with TLS 1.3 a refused client certificate can look the same from here.
      if (fromRemote === 0 && !failed) {
        fail(new Error("the terminator closed the connection before the dashboard answered: the dashboard may not be up yet, or our client certificate was refused"));
      }
      else if (!local.destroyed) local.end();
    });
    local.pipe(remote);
    remote.pipe(local, { end: false });

    remote.once('close', () => {
      clearTimeout(timer);
      remotes.delete(remote);
      follow(local);
    });
    local.once('close', () => {
      locals.delete(local);
      log('%s closed (%d bytes from the dashboard)', tag, fromRemote);
      follow(remote);
    });
  }

  const server = createServer({ allowHalfOpen: true }, (local) => {
    try {
      carry(local);
    } catch (err) {
      // Never let one connection take the process down.
      log('%s: connection setup failed: %s', remoteName, (err as Error).message);
      local.destroy();
    }
  });
  server.on('error', (err) => log('%s: local server error: %s', remoteName, err.message));

  const onAbort = (): void => {
    void close();
  };

  function close(): Promise<void> {
    if (closing) return closing;
    o.signal?.removeEventListener('abort', onAbort);
    closing = new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of [...locals, ...remotes]) socket.destroy();
      // Counted as gone now: their 'close' events come a tick later.
      locals.clear();
      remotes.clear();
    });
    return closing;
  }

  await new Promise<void>((resolve, reject) => {
    const onListenError = (err: NodeJS.ErrnoException): void => {
      server.removeListener('listening', onListening);
      o.signal?.removeEventListener('abort', onEarlyAbort);
      const hint = err.code === 'EADDRINUSE' ? ': another process uses it; pass localPort: 0 for a free port' : '';
      reject(new ValidationError(`cannot listen on 127.0.0.1:${o.localPort} (${err.code ?? err.message})${hint}`, { option: 'localPort', cause: err }));
    };
    const onListening = (): void => {
      server.removeListener('error', onListenError);
      o.signal?.removeEventListener('abort', onEarlyAbort);
      resolve();
    };
    const onEarlyAbort = (): void => {
      server.removeListener('error', onListenError);
      server.removeListener('listening', onListening);
      server.close();
      reject(abortedError(remoteName, what, o.signal));
    };
    server.once('error', onListenError);
    server.once('listening', onListening);
    o.signal?.addEventListener('abort', onEarlyAbort, { once: true });
    // The loopback address only: the tunnel must never be reachable from another machine.
    server.listen({ host: '127.0.0.1', port: o.localPort });
  });
  if (o.signal?.aborted) {
    await close();
    throw abortedError(remoteName, what, o.signal);
  }
  o.signal?.addEventListener('abort', onAbort, { once: true });

  const port = (server.address() as net.AddressInfo).port;
  const url = `http://127.0.0.1:${port}${o.path}`;
  log('%s: listening on 127.0.0.1:%d', remoteName, port);
  return {
    url,
    port,
    get connections() {
      return locals.size;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
