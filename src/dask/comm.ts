/**
 * One Dask comm: a TCP or TLS connection that has completed Dask's handshake, over which
 * requests are sent and replies read in order.
 *
 * Connecting goes through three phases, each bounded by what is left of one deadline and each
 * with its own failure messages: `tcp` (socket connect), `tls` (TLS handshake, skipped for
 * tcp://) and `handshake` (both sides exchange `{compression, python, pickle-protocol}`). A
 * connection counts as accepted only once the scheduler's handshake message has arrived: with
 * TLS 1.3 the client's side of the TLS handshake finishes *before* the server has checked our
 * certificate, so a refusal only shows up on the first read.
 */
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import { createLog } from '../log';
import { DaskCommError, ValidationError, type ErrorCode } from '../errors';
import { parseAddress, type DaskAddress } from './address';
import { encodeFrames, FrameDecoder, type FrameLimits } from './frames';
import { CLIENT_HANDSHAKE, decodeMessage, encodeMessage } from './protocol';
import { loadTls } from '../lazy';
import { DEFAULT_TLS12_CIPHERS } from '../security/ciphers';
import { checkSignal, checkTimerMs } from '../config/bounds';

const log = createLog('dask-cloud:comm');

/** PEM material and TLS settings for connecting to a scheduler as a client. */
export interface TlsClientOptions {
  /** CA certificate(s) (PEM) that signed the scheduler's certificate. */
  ca: string;
  /** Our client certificate (PEM), signed by a CA the scheduler trusts. */
  cert: string;
  /** Private key (PEM) of `cert`. Never logged, never put into an error. */
  key: string;
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  maxVersion?: 'TLSv1.2' | 'TLSv1.3';
  /** OpenSSL cipher list (TLS 1.2 ciphers; TLS 1.3 suites are not affected). Default: `DEFAULT_TLS12_CIPHERS` (AEAD only). */
  ciphers?: string;
}

/**
 * TLS options at the comm level, where the certificate and key may be left out: every Dask
 * scheduler refuses such a client, but diagnostics can then tell "no certificate" from "wrong
 * certificate". {@link SchedulerClient} always requires them.
 */
export type CommTlsOptions = Omit<TlsClientOptions, 'cert' | 'key'> & { cert?: string; key?: string };

/** The stage of a connection attempt an error happened in. */
export type ConnectPhase = 'tcp' | 'tls' | 'handshake';

/** Options of {@link DaskComm.connect}. */
export interface CommConnectOptions {
  /** Required for `tls://` addresses, refused for `tcp://` ones. */
  tls?: CommTlsOptions;
  /** Budget for connect + TLS + Dask handshake, in ms. Default 10 000. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Caps applied to incoming messages. */
  limits?: FrameLimits;
}

/** Options of one request. */
export interface RequestOptions {
  /** Time to wait for the reply, in ms. Default 30 000. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** How long `close()` waits for the peer to close its side before destroying the socket. */
const CLOSE_GRACE_MS = 2_000;

/** Failures that waiting will not cure: the caller's security setup does not match the scheduler's. */
const FATAL_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'E_UNTRUSTED_SCHEDULER',
  'E_TLS_REFUSED',
  'E_PLAINTEXT_PEER',
  'E_TLS_PEER',
  'E_ABORTED',
]);

/**
 * True when retrying the same connection could succeed later (the scheduler may still be
 * booting). False for verdicts that waiting cannot change: a certificate not signed by our CA,
 * a TLS alert refusing our certificate, a TLS/plaintext mismatch proven by the bytes received.
 */
export function isRetryableCommError(err: unknown): boolean {
  if (!DaskCommError.isInstance(err)) return false;
  if (typeof err.details.retryable === 'boolean') return err.details.retryable;
  return !FATAL_CODES.has(err.code);
}

function commError(
  code: ErrorCode,
  message: string,
  details: Record<string, unknown>,
  cause?: unknown,
): DaskCommError {
  return new DaskCommError(code, message, {
    cause,
    details: { retryable: !FATAL_CODES.has(code), ...details },
  });
}

/** An error that means the caller's signal fired. */
export function abortedError(address: string, what: string, signal?: AbortSignal): DaskCommError {
  return commError('E_ABORTED', `${what} ${address} was aborted`, { address }, signal?.reason);
}

function validateTimeout(value: number | undefined, fallback: number, option: string): number {
  checkTimerMs(value, option);
  return value ?? fallback;
}

// Node reports certificate verification failures with these OpenSSL verify codes.
const UNTRUSTED_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

// OpenSSL's ways of saying "the bytes that came back are not TLS".
const PLAINTEXT_CODES = new Set([
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'ERR_SSL_PACKET_LENGTH_TOO_LONG',
  'ERR_SSL_HTTP_REQUEST',
  'ERR_SSL_HTTPS_PROXY_REQUEST',
  'ERR_SSL_UNKNOWN_PROTOCOL',
]);

const CLOSED_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

function alertHint(code: string): string {
  if (code.includes('CERTIFICATE_REQUIRED') || code.includes('PEER_DID_NOT_RETURN')) {
    return 'it requires a client certificate and none was accepted: pass the cluster Security (or tls cert/key)';
  }
  if (code.includes('UNKNOWN_CA')) {
    return "it does not trust our client certificate (signed by another CA): use the client certificate of this cluster's Security";
  }
  if (code.includes('CERTIFICATE_EXPIRED')) return 'our client certificate has expired';
  if (code.includes('PROTOCOL_VERSION') || code.includes('UNSUPPORTED_PROTOCOL') || code.includes('NO_PROTOCOLS')) {
    return 'no TLS version in common: check minVersion/maxVersion on both sides';
  }
  if (code.includes('HANDSHAKE_FAILURE') || code.includes('NO_SHARED_CIPHER') || code.includes('INSUFFICIENT_SECURITY')) {
    return 'no cipher in common, or our client certificate was rejected: check ciphers and the client certificate';
  }
  return "it rejected our client certificate: check that it is signed by the CA the scheduler trusts (its --tls-ca-file)";
}

/** Turn whatever ended a connection attempt into one of our errors, naming the address and what to check. */
function classifyConnectFailure(
  err: NodeJS.ErrnoException | null,
  phase: ConnectPhase,
  address: string,
  isTls: boolean,
): DaskCommError {
  const code = err?.code ?? (err === null ? 'EOF' : 'UNKNOWN');
  const details = { address, phase, code };
  const reason = err ? `${code}: ${err.message}` : 'connection closed by peer';

  if (code === 'ECONNREFUSED') {
    return commError(
      'E_CONNECT_REFUSED',
      `nothing is listening at ${address} (connection refused): check that the scheduler is running and the host and port are right`,
      details,
      err,
    );
  }
  if (phase === 'tcp') {
    return commError(
      'E_CONNECT_REFUSED',
      `could not connect to ${address} (${reason}): check the host, the network route and firewall rules`,
      details,
      err,
    );
  }
  if (UNTRUSTED_CODES.has(code)) {
    const why =
      code === 'CERT_HAS_EXPIRED'
        ? 'its certificate has expired'
        : code === 'CERT_NOT_YET_VALID'
          ? 'its certificate is not valid yet (clock skew?)'
          : 'its certificate is not signed by our CA';
    return commError(
      'E_UNTRUSTED_SCHEDULER',
      `refusing scheduler ${address}: ${why} (${code}): check that the CA in our security settings is this cluster's CA`,
      details,
      err,
    );
  }
  if (PLAINTEXT_CODES.has(code)) {
    return commError(
      'E_PLAINTEXT_PEER',
      `${address} does not speak TLS (${code}): the scheduler probably runs without TLS (then use tcp:// and security: false), or this is not the scheduler port`,
      details,
      err,
    );
  }
  if (code.startsWith('ERR_SSL_') && (code.includes('ALERT') || code.includes('PROTOCOL'))) {
    return commError('E_TLS_REFUSED', `scheduler ${address} refused the TLS connection (${code}): ${alertHint(code)}`, details, err);
  }
  const closed = err === null || CLOSED_CODES.has(code);
  // A bare close is a guess (a port proxy or a scheduler that is shutting down looks the same),
  // so unlike an alert or a certificate verdict it stays retryable.
  const guess = { ...details, retryable: true };
  if (closed && isTls) {
    // No alert, just a closed socket: the scheduler's TLS layer dropped us. After our side of
    // the handshake finished this is how a refused client certificate looks with TLS 1.3.
    return commError(
      'E_TLS_REFUSED',
      phase === 'tls'
        ? `scheduler ${address} closed the connection during the TLS handshake (${reason}): it most likely rejected our client certificate; check that it is signed by the CA the scheduler trusts`
        : `scheduler ${address} closed the connection right after the TLS handshake, before Dask's handshake (${reason}): it most likely rejected our client certificate; check that it is signed by the CA the scheduler trusts`,
      guess,
      err,
    );
  }
  if (closed) {
    return commError(
      'E_TLS_PEER',
      `${address} closed the connection without a Dask handshake (${reason}): the scheduler may require TLS (use a tls:// address with the cluster's security)`,
      guess,
      err,
    );
  }
  if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) {
    return commError('E_TLS_REFUSED', `TLS with ${address} failed (${reason})`, details, err);
  }
  return commError('E_CONNECTION_CLOSED', `connection to ${address} failed during the ${phase} phase (${reason})`, details, err);
}

function timeoutFailure(phase: ConnectPhase, address: string, isTls: boolean, timeoutMs: number): DaskCommError {
  const details = { address, phase, timeoutMs };
  switch (phase) {
    case 'tcp':
      return commError(
        'E_TIMEOUT',
        `no TCP connection to ${address} within ${timeoutMs} ms: the host may be down or a firewall may drop the packets`,
        details,
      );
    case 'tls':
      return commError(
        'E_TIMEOUT',
        `TLS handshake with ${address} did not complete within ${timeoutMs} ms: check that this port is the scheduler's TLS port`,
        details,
      );
    case 'handshake':
      return commError(
        'E_TIMEOUT',
        isTls
          ? `connected to ${address} with TLS but got no Dask handshake within ${timeoutMs} ms: is this the scheduler port (not the dashboard)?`
          : `connected to ${address} but got no Dask handshake within ${timeoutMs} ms: the scheduler may require TLS (use tls:// with the cluster's security), or this is not a Dask port`,
        details,
      );
  }
}

/** First bytes of a TLS record (alert or handshake, version 3.x): a TLS server answering plaintext. */
function looksLikeTlsRecord(chunk: Uint8Array): boolean {
  return chunk.length >= 3 && chunk[0]! >= 0x14 && chunk[0]! <= 0x17 && chunk[1] === 0x03 && chunk[2]! <= 0x04;
}

function secureContextFor(tlsOptions: CommTlsOptions): tls.SecureContext {
  const pem = (v: unknown): boolean => typeof v === 'string' && v.length > 0;
  if (!pem(tlsOptions.ca)) {
    throw new ValidationError('TLS client options need the CA certificate as a non-empty PEM string in "ca"', { option: 'tls.ca' });
  }
  const hasCert = tlsOptions.cert !== undefined;
  if (hasCert !== (tlsOptions.key !== undefined) || (hasCert && (!pem(tlsOptions.cert) || !pem(tlsOptions.key)))) {
    throw new ValidationError('TLS client options need both "cert" and "key" as non-empty PEM strings', { option: 'tls.cert' });
  }
  try {
    return loadTls().createSecureContext({
      ca: tlsOptions.ca,
      cert: tlsOptions.cert,
      key: tlsOptions.key,
      minVersion: tlsOptions.minVersion ?? 'TLSv1.2',
      maxVersion: tlsOptions.maxVersion,
      // Node's own default still offers CBC suites under TLS 1.2: AEAD only unless told otherwise.
      ciphers: tlsOptions.ciphers ?? DEFAULT_TLS12_CIPHERS,
    });
  } catch (err) {
    // OpenSSL's message names the failing routine, never the PEM contents.
    const e = err as NodeJS.ErrnoException;
    throw new ValidationError(`TLS client options are unusable (${e.code ?? 'error'}: ${e.message})`, { option: 'tls' });
  }
}

interface Pending {
  op: string;
  resolve(value: unknown): void;
  reject(err: unknown): void;
  cleanup(): void;
}

/**
 * An established Dask connection. Replies on one connection come in request order, so
 * requests may be pipelined; a request that times out or is aborted closes the connection,
 * since its late reply would otherwise be taken for the next request's.
 */
export class DaskComm {
  /** The address as given, e.g. `tls://127.0.0.1:8786`. */
  readonly address: string;
  /** What the scheduler announced in its handshake (`python`, `pickle-protocol`, `compression`). */
  readonly peerHandshake: Readonly<Record<string, unknown>>;
  /** Negotiated TLS version and cipher, for tls:// connections. */
  readonly tlsInfo: { protocol: string | null; cipher: string } | undefined;

  private readonly socket: net.Socket;
  private readonly decoder: FrameDecoder;
  private readonly pending: Pending[] = [];
  private endError: DaskCommError | null = null;
  private socketClosed = false;
  private readonly closeWaiters = new Set<() => void>();
  private closing: Promise<void> | null = null;
  private lastSocketError: Error | null = null;

  private constructor(
    address: string,
    socket: net.Socket,
    decoder: FrameDecoder,
    peerHandshake: Record<string, unknown>,
    early: Uint8Array[][],
  ) {
    this.address = address;
    this.socket = socket;
    this.decoder = decoder;
    this.peerHandshake = peerHandshake;
    this.tlsInfo =
      socket instanceof loadTls().TLSSocket ? { protocol: socket.getProtocol(), cipher: socket.getCipher().name } : undefined;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => {
      this.lastSocketError = err;
      log('%s socket error: %s', this.address, (err as NodeJS.ErrnoException).code ?? err.message);
    });
    socket.on('close', () => this.onClose());
    for (const frames of early) this.onMessage(frames);
  }

  /**
   * Connect and complete the Dask handshake. Every failure is a `DaskCommError` whose code says
   * what went wrong (see the module doc); nothing is left open after a failure.
   */
  static async connect(address: string, options: CommConnectOptions = {}): Promise<DaskComm> {
    checkSignal(options.signal);
    const target = parseAddress(address);
    const isTls = target.protocol === 'tls';
    if (isTls && !options.tls) {
      throw new ValidationError(`${address} is a tls:// address: pass the cluster's security (or tls options) to connect`, {
        option: 'security',
      });
    }
    if (!isTls && options.tls) {
      throw new ValidationError(
        `${address} is a tcp:// address but TLS options were given: use the tls:// address, or security: false for plain tcp`,
        { option: 'security' },
      );
    }
    const timeoutMs = validateTimeout(options.timeoutMs, DEFAULT_CONNECT_TIMEOUT_MS, 'timeoutMs');
    const secureContext = isTls ? secureContextFor(options.tls!) : undefined;
    const signal = options.signal;
    if (signal?.aborted) throw abortedError(address, 'connecting to', signal);
    return connectPhases(address, target, { secureContext, isTls, timeoutMs, signal, limits: options.limits });
  }

  /** @internal used by the connect state machine. */
  static fromHandshake(
    address: string,
    socket: net.Socket,
    decoder: FrameDecoder,
    peerHandshake: Record<string, unknown>,
    early: Uint8Array[][],
  ): DaskComm {
    return new DaskComm(address, socket, decoder, peerHandshake, early);
  }

  /** True once the connection is closed or closing; requests then fail with `E_CONNECTION_CLOSED`. */
  get closed(): boolean {
    return this.endError !== null;
  }

  /** Send one message without waiting for anything. */
  send(message: Record<string, unknown>): void {
    if (this.endError) throw this.endError;
    this.socket.write(encodeFrames(encodeMessage(message)));
  }

  /** Send `message` and resolve with the next reply on this connection. */
  request(message: Record<string, unknown>, options: RequestOptions = {}): Promise<unknown> {
    const op = typeof message.op === 'string' ? message.op : '?';
    let timeoutMs: number;
    try {
      timeoutMs = validateTimeout(options.timeoutMs, DEFAULT_REQUEST_TIMEOUT_MS, 'timeoutMs');
    } catch (err) {
      return Promise.reject(err);
    }
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortedError(this.address, `request ${op} to`, signal));
    if (this.endError) return Promise.reject(this.endError);
    let wire: Buffer;
    try {
      // Encode before anything is registered, so an unencodable argument leaves no state behind.
      wire = encodeFrames(encodeMessage(message));
    } catch (err) {
      return Promise.reject(
        new ValidationError(`arguments of ${op} cannot be encoded as msgpack: ${(err as Error).message}`, { option: 'args' }),
      );
    }

    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        entry.reject(abortedError(this.address, `request ${op} to`, signal));
        this.destroy(`request ${op} was aborted`);
      };
      const timer = setTimeout(() => {
        entry.reject(
          commError(
            'E_TIMEOUT',
            `no reply to ${op} from ${this.address} within ${timeoutMs} ms: the scheduler is overloaded or the connection is stuck`,
            { address: this.address, op, timeoutMs },
          ),
        );
        this.destroy(`request ${op} timed out`);
      }, timeoutMs);
      let settled = false;
      const entry: Pending = {
        op,
        cleanup: () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
        },
        resolve: (value) => {
          if (settled) return;
          settled = true;
          entry.cleanup();
          resolve(value);
        },
        reject: (err) => {
          if (settled) return;
          settled = true;
          entry.cleanup();
          const i = this.pending.indexOf(entry);
          if (i >= 0) this.pending.splice(i, 1);
          reject(err);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.push(entry);
      log('%s -> %s', this.address, op);
      this.socket.write(wire);
    });
  }

  /** Resolve `true` once the peer has closed the connection, `false` after `timeoutMs`. */
  waitForClose(timeoutMs: number): Promise<boolean> {
    if (this.socketClosed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.closeWaiters.delete(done);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.closeWaiters.delete(done);
        resolve(false);
      }, timeoutMs);
      this.closeWaiters.add(done);
    });
  }

  /** Close politely (`{op: 'close'}`, then end), destroying the socket if the peer lingers. Idempotent. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = (async () => {
      if (!this.socketClosed && this.endError === null) {
        this.failPending(commError('E_CONNECTION_CLOSED', `connection to ${this.address} was closed by us`, { address: this.address }));
        try {
          // Dask's server loop ends on op close; reply: false so it writes nothing back.
          this.socket.write(encodeFrames(encodeMessage({ op: 'close', reply: false })));
        } catch {
          // The socket may already be half-closed; ending it is all that matters.
        }
        this.socket.end();
      } else {
        this.failPending(this.endError ?? commError('E_CONNECTION_CLOSED', `connection to ${this.address} is closed`, { address: this.address }));
      }
      if (!(await this.waitForClose(CLOSE_GRACE_MS))) this.socket.destroy();
      await this.waitForClose(CLOSE_GRACE_MS);
      log('%s closed', this.address);
    })();
    return this.closing;
  }

  /** Tear the connection down now, failing pending requests. */
  destroy(reason: string): void {
    if (this.endError === null) {
      this.failPending(
        commError('E_CONNECTION_CLOSED', `connection to ${this.address} was closed: ${reason}`, { address: this.address }),
      );
    }
    this.socket.destroy();
  }

  private failPending(err: DaskCommError): void {
    if (this.endError === null) this.endError = err;
    for (const p of this.pending.splice(0)) p.reject(err);
  }

  private onData(chunk: Buffer): void {
    let messages: Uint8Array[][];
    try {
      messages = this.decoder.push(chunk);
    } catch (err) {
      // Framing is lost: nothing after this can be trusted.
      log('%s bad framing: %s', this.address, (err as Error).message);
      for (const p of this.pending.splice(0)) p.reject(err);
      this.destroy(`bad framing from the scheduler (${(err as Error).message})`);
      return;
    }
    for (const frames of messages) this.onMessage(frames);
  }

  private onMessage(frames: Uint8Array[]): void {
    const entry = this.pending.shift();
    if (!entry) {
      log('%s dropped an unsolicited message', this.address);
      return;
    }
    let value: unknown;
    try {
      value = decodeMessage(frames);
    } catch (err) {
      // The framing is intact, so only this reply is lost.
      entry.reject(err);
      return;
    }
    log('%s <- reply to %s', this.address, entry.op);
    entry.resolve(value);
  }

  private onClose(): void {
    this.socketClosed = true;
    const cause = this.lastSocketError;
    this.failPending(
      commError(
        'E_CONNECTION_CLOSED',
        `scheduler ${this.address} closed the connection${cause ? ` (${(cause as NodeJS.ErrnoException).code ?? cause.message})` : ''}`,
        { address: this.address },
        cause ?? undefined,
      ),
    );
    for (const w of [...this.closeWaiters]) w();
    log('%s connection closed', this.address);
  }
}

interface PhaseOptions {
  secureContext: tls.SecureContext | undefined;
  isTls: boolean;
  timeoutMs: number;
  signal: AbortSignal | undefined;
  limits: FrameLimits | undefined;
}

/** The connect state machine: tcp → tls → handshake, one timer per phase from one deadline. */
function connectPhases(address: string, target: DaskAddress, o: PhaseOptions): Promise<DaskComm> {
  const deadline = Date.now() + o.timeoutMs;
  const started = Date.now();

  return new Promise<DaskComm>((resolve, reject) => {
    let phase: ConnectPhase = 'tcp';
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    let sawFirstBytes = false;
    const decoder = new FrameDecoder(o.limits);
    const { Socket, isIP } = require('node:net') as typeof net;
    const raw = new Socket();
    let sock: net.Socket = raw;

    const detach = (): void => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      for (const s of new Set([raw, sock])) {
        s.removeListener('error', onError);
        s.removeListener('close', onClose);
        s.removeListener('data', onData);
      }
      raw.removeListener('connect', onTcpConnected);
      sock.removeListener('secureConnect', onSecure);
    };
    const fail = (err: DaskCommError): void => {
      if (settled) return;
      settled = true;
      detach();
      // A socket destroyed after its error may still emit 'error'; keep a no-op listener so it is not thrown.
      raw.on('error', () => undefined);
      sock.on('error', () => undefined);
      sock.destroy();
      raw.destroy();
      log('%s connect failed in %s phase after %d ms: %s', address, phase, Date.now() - started, err.code);
      reject(err);
    };
    const armPhaseTimer = (): void => {
      clearTimeout(timer);
      const remaining = Math.max(0, deadline - Date.now());
      timer = setTimeout(() => fail(timeoutFailure(phase, address, o.isTls, o.timeoutMs)), remaining);
    };
    function onAbort(): void {
      fail(abortedError(address, 'connecting to', o.signal));
    }
    function onError(err: NodeJS.ErrnoException): void {
      fail(classifyConnectFailure(err, phase, address, o.isTls));
    }
    function onClose(): void {
      fail(classifyConnectFailure(null, phase, address, o.isTls));
    }
    function onTcpConnected(): void {
      raw.setNoDelay(true);
      // Long-lived cloud connections: notice a vanished peer instead of hanging on it.
      raw.setKeepAlive(true, 30_000);
      if (!o.isTls) {
        startHandshake();
        return;
      }
      phase = 'tls';
      armPhaseTimer();
      raw.removeListener('close', onClose);
      try {
        sock = loadTls().connect({
          socket: raw,
          secureContext: o.secureContext,
          // Dask never checks hostnames: the cluster CA is the trust boundary and certs carry no SANs for VM IPs.
          checkServerIdentity: () => undefined,
          rejectUnauthorized: true,
          servername: isIP(target.host) ? undefined : target.host,
        });
      } catch (err) {
        // We are inside a socket event: a throw here would be uncaught.
        onError(err as NodeJS.ErrnoException);
        return;
      }
      sock.on('error', onError);
      sock.on('close', onClose);
      sock.once('secureConnect', onSecure);
    }
    function onSecure(): void {
      const t = sock as tls.TLSSocket;
      log('%s TLS established (%s, %s) after %d ms', address, t.getProtocol(), t.getCipher().name, Date.now() - started);
      startHandshake();
    }
    function startHandshake(): void {
      phase = 'handshake';
      armPhaseTimer();
      sock.on('data', onData);
      sock.write(encodeFrames(encodeMessage(CLIENT_HANDSHAKE)));
    }
    function onData(chunk: Buffer): void {
      if (!sawFirstBytes) {
        sawFirstBytes = true;
        if (!o.isTls && looksLikeTlsRecord(chunk)) {
          fail(
            commError(
              'E_TLS_PEER',
              `${address} answered with TLS: the scheduler requires TLS (use a tls:// address with the cluster's security)`,
              { address, phase },
            ),
          );
          return;
        }
      }
      let messages: Uint8Array[][];
      try {
        messages = decoder.push(chunk);
      } catch (err) {
        const e = err as DaskCommError;
        fail(
          commError(
            'E_PROTOCOL',
            `${address} did not answer with Dask's framing (${e.message}): is this a Dask scheduler port?`,
            { address, phase },
            err,
          ),
        );
        return;
      }
      if (messages.length === 0) return;
      let hello: unknown;
      try {
        hello = decodeMessage(messages[0]!);
      } catch (err) {
        fail(commError('E_PROTOCOL', `${address} sent an unreadable handshake: ${(err as Error).message}`, { address, phase }, err));
        return;
      }
      if (hello === null || typeof hello !== 'object' || Array.isArray(hello) || !('pickle-protocol' in hello)) {
        fail(commError('E_PROTOCOL', `${address} sent something other than a Dask handshake`, { address, phase }));
        return;
      }
      settled = true;
      detach();
      if (raw !== sock) {
        // The TLS socket reports errors from here on; keep a stray one on the raw socket from crashing the process.
        raw.on('error', (e: NodeJS.ErrnoException) => log('%s raw socket error: %s', address, e.code ?? e.message));
      }
      log('%s connected in %d ms', address, Date.now() - started);
      resolve(DaskComm.fromHandshake(address, sock, decoder, hello as Record<string, unknown>, messages.slice(1)));
    }

    o.signal?.addEventListener('abort', onAbort, { once: true });
    raw.on('error', onError);
    raw.on('close', onClose);
    raw.once('connect', onTcpConnected);
    armPhaseTimer();
    log('%s connecting', address);
    raw.connect({ host: target.host, port: target.port });
  });
}
