/**
 * The control socket of a local cluster's owner: how another process (an attached handle, the
 * CLI) asks the Node process that started a LocalCluster to act on it. Its Dask processes are the
 * owner's children, watched by the owner's launchers (./watchdog.ts), so only the owner can add,
 * stop or read them; everyone else asks it here.
 *
 * Transport: a Unix socket inside the cluster's private key directory (0700, this user only; Node
 * offers no peer-credential check, so the directory's permissions are the access control).
 * Protocol: one JSON object per line each way.
 *
 *   request   {"id": 1, "op": "members"}
 *   reply     {"id": 1, "result": {...}}   or   {"id": 1, "error": {"code": "E_...", "message": "..."}}
 *   event     {"event": "member-exited", ...}   (pushed only on a connection that sent `watch`)
 *
 * The owner never depends on a client: bad JSON, an unknown op or a failing handler answers an
 * error; an over-long line or an idle connection is dropped; every handle is unref'd, so an open
 * connection never keeps the owner's process alive. Every client request has a deadline.
 */
import { chmod } from 'node:fs/promises';
import type { Server, Socket } from 'node:net';
import { loadNet } from '../../src/lazy';
import { DaskCloudError, type ErrorCode } from '../../src/errors';

/** File name of the socket inside the key directory. */
export const CONTROL_SOCKET = 'control.sock';
/** Longest socket path used: Linux allows 107 bytes, macOS 103; kept well below both. */
export const MAX_SOCKET_PATH = 100;
/** A request or reply line longer than this is refused (specs of 1,000 workers fit easily). */
const MAX_LINE = 4 << 20;
/** A connection with no request in flight for this long is dropped (watchers excepted). */
const IDLE_MS = 60_000;
/** Connections served at once. */
const MAX_CONNECTIONS = 64;

export type ControlHandler = (params: Record<string, unknown>) => Promise<unknown>;

/** An event pushed to watchers. */
export interface ControlEvent {
  event: string;
  [key: string]: unknown;
}

interface Conn {
  socket: Socket;
  inflight: number;
  watcher: boolean;
}

/** Serialises an error for the wire: its code when it is one of ours, and its message. */
function wireError(err: unknown): { code: string; message: string } {
  if (DaskCloudError.isInstance(err)) return { code: err.code, message: err.message };
  return { code: 'E_REMOTE', message: err instanceof Error ? err.message : String(err) };
}

/**
 * Splits a stream into lines, refusing one longer than MAX_LINE. Chunks are collected and joined
 * once per line, not concatenated per read.
 */
function lineReader(onLine: (line: string) => void, onTooLong: () => void): (chunk: Buffer) => void {
  let parts: Buffer[] = [];
  let size = 0;
  let dead = false;
  const tooLong = () => {
    dead = true;
    parts = [];
    onTooLong();
  };
  return (chunk) => {
    if (dead) return;
    let start = 0;
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, start)) {
      parts.push(chunk.subarray(start, i));
      const line = Buffer.concat(parts).toString('utf8');
      parts = [];
      size = 0;
      start = i + 1;
      if (line.length > MAX_LINE) return tooLong();
      if (line.trim() !== '') onLine(line);
    }
    if (start < chunk.length) {
      parts.push(chunk.subarray(start));
      size += chunk.length - start;
      if (size > MAX_LINE) tooLong();
    }
  };
}

/** The owner's side: serves `handlers` by op name on a Unix socket. */
export class ControlServer {
  readonly path: string;
  readonly #server: Server;
  readonly #handlers: Record<string, ControlHandler>;
  readonly #conns = new Set<Conn>();
  readonly #log: (format: string, ...args: unknown[]) => void;
  #closing = false;
  readonly #closed: Promise<void>;

  private constructor(path: string, server: Server, handlers: Record<string, ControlHandler>, log: (format: string, ...args: unknown[]) => void) {
    this.path = path;
    this.#server = server;
    this.#handlers = handlers;
    this.#log = log;
    this.#closed = new Promise((resolve) => server.once('close', () => resolve()));
    server.on('connection', (socket) => this.#serve(socket));
    server.on('error', (err) => log('control socket error: %s', err.message));
  }

  /**
   * Listens on `path` (which must not exist). `watch` is built in: it marks the connection as one
   * that receives events, and answers with the `watch` handler's result.
   */
  static async listen(path: string, handlers: Record<string, ControlHandler>, log: (format: string, ...args: unknown[]) => void): Promise<ControlServer> {
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH) throw new Error(`control socket path ${path} is longer than ${MAX_SOCKET_PATH} bytes`);
    const server = loadNet().createServer({ allowHalfOpen: false });
    server.maxConnections = MAX_CONNECTIONS;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // The directory (0700) is the access control; the socket itself is this user's only, too.
    await chmod(path, 0o600).catch(() => undefined);
    // Serving clients must never keep the owner's process alive.
    server.unref();
    return new ControlServer(path, server, handlers, log);
  }

  #serve(socket: Socket): void {
    socket.unref();
    const conn: Conn = { socket, inflight: 0, watcher: false };
    this.#conns.add(conn);
    socket.on('close', () => this.#conns.delete(conn));
    socket.on('error', (err) => this.#log('control connection error: %s', err.message));
    socket.setTimeout(IDLE_MS, () => {
      if (conn.inflight === 0 && !conn.watcher) socket.destroy();
    });
    if (this.#closing) {
      socket.end();
      return;
    }
    socket.on(
      'data',
      lineReader(
        (line) => void this.#request(conn, line),
        () => {
          this.#send(conn, { id: null, error: { code: 'E_PROTOCOL', message: `request longer than ${MAX_LINE} bytes` } });
          socket.end();
        },
      ),
    );
  }

  async #request(conn: Conn, line: string): Promise<void> {
    let id: unknown = null;
    conn.inflight++;
    try {
      let msg: unknown;
      try {
        msg = JSON.parse(line);
      } catch {
        throw new DaskCloudError('E_PROTOCOL', 'the request is not valid JSON');
      }
      if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) throw new DaskCloudError('E_PROTOCOL', 'a request must be a JSON object');
      const { id: reqId, op, ...params } = msg as Record<string, unknown>;
      if (typeof reqId === 'string' || typeof reqId === 'number') id = reqId;
      if (id === null) throw new DaskCloudError('E_PROTOCOL', 'a request needs an id (a string or a number)');
      if (typeof op !== 'string' || !Object.hasOwn(this.#handlers, op)) {
        throw new DaskCloudError('E_PROTOCOL', `unknown op ${JSON.stringify(op)} (known: ${Object.keys(this.#handlers).join(', ')})`);
      }
      const result = await this.#handlers[op]!(params);
      if (op === 'watch') conn.watcher = !this.#closing;
      this.#send(conn, { id, result: result ?? {} });
    } catch (err) {
      this.#log('control request failed: %s', err instanceof Error ? err.message : String(err));
      this.#send(conn, { id, error: wireError(err) });
    } finally {
      conn.inflight--;
      // Once closing, a connection ends as soon as its last answer is written.
      if (this.#closing && conn.inflight === 0) conn.socket.end();
    }
  }

  #send(conn: Conn, message: unknown): void {
    if (conn.socket.destroyed || !conn.socket.writable) return;
    conn.socket.write(`${JSON.stringify(message)}\n`);
  }

  /** Pushes an event to every watching connection. */
  broadcast(event: ControlEvent): void {
    for (const c of this.#conns) if (c.watcher) this.#send(c, event);
  }

  /**
   * Stops accepting connections and ends every connection once its requests are answered
   * (watchers get `event` first). `drained()` tells when the last one has gone.
   */
  close(event?: ControlEvent): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#server.close();
    for (const c of this.#conns) {
      if (c.watcher && event) this.#send(c, event);
      if (c.inflight === 0) c.socket.end();
    }
  }

  /** Resolves once closed and every connection has ended (its last answer written), or after `ms`. */
  async drained(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#closed, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }

  /** Synchronous close for process exit: the socket file goes with the key directory. */
  closeSync(): void {
    this.#closing = true;
    this.#server.close();
    for (const c of this.#conns) c.socket.destroy();
  }
}

/** The owner's socket is not there, or nobody listens on it: the owner closed the cluster, or is gone. */
export function isUnreachable(err: unknown): boolean {
  return DaskCloudError.isInstance(err) && err.code === 'E_CONNECT_REFUSED';
}

const ERROR_CODE = /^E_[A-Z_]{2,40}$/;

interface Pending {
  resolve(result: unknown): void;
  reject(err: unknown): void;
}

/**
 * One client connection to an owner's socket. Requests on it are answered in any order and
 * matched by id. Closed by `close()`, or when the owner ends it.
 */
class ControlConnection {
  readonly #socket: Socket;
  readonly #pending = new Map<number, Pending>();
  #next = 1;
  #ended: Error | undefined;

  private constructor(socket: Socket, onEvent: (event: ControlEvent) => void, onEnd: () => void) {
    this.#socket = socket;
    const fail = (err: Error) => {
      if (this.#ended) return;
      this.#ended = err;
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
      onEnd();
    };
    socket.on(
      'data',
      lineReader(
        (line) => {
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(line) as Record<string, unknown>;
          } catch {
            return socket.destroy(new DaskCloudError('E_PROTOCOL', "the cluster's owner answered something that is not JSON"));
          }
          if (typeof msg?.event === 'string') return onEvent(msg as ControlEvent);
          const p = typeof msg?.id === 'number' ? this.#pending.get(msg.id) : undefined;
          if (!p) return;
          this.#pending.delete(msg.id as number);
          const e = msg.error as { code?: unknown; message?: unknown } | undefined;
          if (e !== undefined) {
            const code = (typeof e?.code === 'string' && ERROR_CODE.test(e.code) ? e.code : 'E_REMOTE') as ErrorCode;
            p.reject(new DaskCloudError(code, `the cluster's owner: ${typeof e?.message === 'string' ? e.message : 'failed'}`));
          } else {
            p.resolve(msg.result);
          }
        },
        () => socket.destroy(new DaskCloudError('E_PROTOCOL', "the cluster's owner sent an over-long line")),
      ),
    );
    socket.on('error', (err) => fail(err));
    socket.on('close', () => fail(new DaskCloudError('E_CONNECTION_CLOSED', "the cluster's owner closed the connection")));
  }

  /** Connects, at most `timeoutMs`. ENOENT / ECONNREFUSED become `E_CONNECT_REFUSED` (see `isUnreachable`). */
  static connect(path: string, timeoutMs: number, onEvent: (event: ControlEvent) => void = () => undefined, onEnd: () => void = () => undefined): Promise<ControlConnection> {
    return new Promise((resolve, reject) => {
      const socket = loadNet().createConnection({ path, allowHalfOpen: false });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new DaskCloudError('E_TIMEOUT', `no connection to the cluster's owner at ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const gone = err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'ENOTDIR';
        reject(
          gone
            ? new DaskCloudError('E_CONNECT_REFUSED', `nothing listens on ${path} (${err.code})`, { cause: err, details: { socket: path } })
            : new DaskCloudError('E_CONNECT_REFUSED', `cannot reach the cluster's owner at ${path}: ${err.message}`, { cause: err, details: { socket: path, errno: err.code } }),
        );
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new ControlConnection(socket, onEvent, onEnd));
      });
    });
  }

  /** One request, answered within `timeoutMs` or failed with `E_TIMEOUT`. */
  request(op: string, params: Record<string, unknown>, timeoutMs: number): Promise<unknown> {
    if (this.#ended) return Promise.reject(this.#ended);
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new DaskCloudError('E_TIMEOUT', `the cluster's owner did not answer ${op} within ${timeoutMs} ms`, { details: { op } }));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#socket.write(`${JSON.stringify({ ...params, id, op })}\n`);
    });
  }

  /** Whether the connection may keep this process alive (a watcher must not). */
  unref(): void {
    this.#socket.unref();
  }

  close(): void {
    this.#ended ??= new DaskCloudError('E_CONNECTION_CLOSED', 'closed');
    this.#socket.destroy();
  }
}

/**
 * One request on a connection of its own (connect, ask, close): an attached handle keeps nothing
 * open between calls, so a script that attached can exit whenever it likes.
 */
export async function controlRequest(path: string, op: string, params: Record<string, unknown>, timeoutMs: number): Promise<unknown> {
  const started = Date.now();
  const conn = await ControlConnection.connect(path, timeoutMs);
  try {
    return await conn.request(op, params, Math.max(1, timeoutMs - (Date.now() - started)));
  } finally {
    conn.close();
  }
}

/** A watching connection: `events` arrive until `close()`, or `onEnd` when the owner ends it. */
export interface ControlWatch {
  /** The `watch` op's result. */
  result: unknown;
  close(): void;
}

/**
 * Opens a connection that receives the owner's events. It never keeps this process alive. `onEnd`
 * runs once when it ends for any reason other than `close()` (the owner closed the cluster or died).
 */
export async function controlWatch(path: string, timeoutMs: number, onEvent: (event: ControlEvent) => void, onEnd: () => void): Promise<ControlWatch> {
  let closedByUs = false;
  const conn = await ControlConnection.connect(path, timeoutMs, onEvent, () => {
    if (!closedByUs) onEnd();
  });
  let result: unknown;
  try {
    result = await conn.request('watch', {}, timeoutMs);
  } catch (err) {
    closedByUs = true;
    conn.close();
    throw err;
  }
  conn.unref();
  return {
    result,
    close: () => {
      closedByUs = true;
      conn.close();
    },
  };
}
