/**
 * FakeServer: the HTTP core every cloud API fake is built on.
 *
 * Loopback only (127.0.0.1, random port). Each request is parsed, matched to an operation,
 * logged, checked against the cloud's published contract, passed through fault injection and
 * finally to the fake's handler. Errors are turned into the cloud's real error shape by a function
 * the cloud fake supplies.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { Contract, type ContractViolation } from './contract';
import { Faults, realClock, type Clock, type FailureSpec } from './faults';

/** A parsed request, as handlers and dispatchers see it. */
export interface FakeRequest {
  /** Unique per request; use it for EC2 `requestId`, DigitalOcean `request_id`, ... */
  id: string;
  method: string;
  /** URL path without query string, still percent-encoded as sent. */
  path: string;
  url: URL;
  /** Decoded query; a repeated key gives an array. */
  query: Record<string, string | string[]>;
  headers: IncomingHttpHeaders;
  /** Raw body bytes. */
  body: Buffer;
  /** Body as UTF-8. */
  text: string;
  /** Parsed JSON body when the body is JSON (content type or shape), else undefined. */
  json?: unknown;
  /** Parsed form fields (application/x-www-form-urlencoded), else undefined. */
  form?: Record<string, string>;
  /** Path parameters from the route pattern (`:instance` → params.instance), decoded. */
  params: Record<string, string>;
  /** The operation this request was routed to. */
  operation: string;
  /** EC2: the flattened form rebuilt as nested values (from the contract), when a contract is set. */
  normalized?: Record<string, unknown>;
}

/** What a handler returns. An object body is sent as JSON unless a content type says otherwise. */
export interface FakeResponse {
  status?: number;
  headers?: Record<string, string>;
  body?: string | Buffer | object;
}

export type Handler = (req: FakeRequest) => FakeResponse | Promise<FakeResponse>;

/**
 * Where an error comes from, so the shaper can pick the cloud's code:
 * - `handler`: a FakeApiError thrown by the fake (resource not found, conflict, ...)
 * - `contract`: the request broke the published contract (answer 400)
 * - `fault`: injected by `faults.fail` / `faults.throttle`
 * - `no-route`: the fake does not implement this path / action
 * - `internal`: the handler crashed (a bug in the fake; also recorded in `handlerErrors`)
 */
export type ErrorSource = 'handler' | 'contract' | 'fault' | 'no-route' | 'internal';

/** Input to the cloud's error shaper. */
export interface ApiErrorInfo {
  status: number;
  /** Cloud error code when the thrower knows it (`InvalidInstanceID.NotFound`, `notFound`, `not_found`), else a generic one: `ContractViolation`, `UnknownOperation`, `InternalError`. */
  code: string;
  message: string;
  source: ErrorSource;
  operation?: string;
  request: FakeRequest;
  violations?: ContractViolation[];
  /** Free-form extra data a cloud fake may use (e.g. GCP `errors[].reason`). */
  details?: Record<string, unknown>;
}

/** Turns an error into the cloud's real error response (status, headers, body). */
export type ErrorShaper = (err: ApiErrorInfo) => FakeResponse;

/** Throw from a handler to answer with a cloud-shaped error. */
export class FakeApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
    readonly headers?: Record<string, string>,
  ) {
    super(message);
    this.name = 'FakeApiError';
  }
}

/** One entry of the request log. */
export interface ReceivedCall {
  /** Operation name (route's), or `undefined` when nothing matched. */
  operation?: string;
  method: string;
  path: string;
  /**
   * Everything the caller sent as one flat record: path params, query, then form fields (EC2,
   * flattened as sent: `TagSpecification.1.Tag.1.Key`) or, for JSON bodies, the top-level keys.
   */
  params: Record<string, unknown>;
  /** JSON body, if any. */
  json?: unknown;
  /** EC2: nested values rebuilt from the form by the contract. */
  normalized?: Record<string, unknown>;
  status: number;
  /** Why it did not reach the handler, if it did not. */
  rejectedBy?: 'contract' | 'fault' | 'throttle' | 'no-route';
  at: number;
  requestId: string;
  /** For a call that came inside a batch request: that request's `requestId`. */
  batch?: string;
}

/** One HTTP request as the pipeline takes it: read off the socket, or unwrapped from a batch. */
export interface RawHttpRequest {
  method: string;
  /** Path and query (`/compute/v1/projects/p?fields=name`); no scheme or host. */
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** The answer the pipeline produced, as it goes on the wire. */
export interface RawHttpResponse {
  status: number;
  headers: Record<string, string>;
  payload: Buffer;
}

/**
 * An endpoint that answers one HTTP request by running several inner requests (GCP's
 * `/batch/compute/v1`). The outer request is recorded under `operation` but skips the contract
 * and faults: it is no API call. `runInner` sends one inner request through the whole per-request
 * pipeline (routing, contract, faults, handler, shapeResponse, recording with `batch` set) and
 * resolves with its answer; start them together so their latencies overlap. Throw a FakeApiError
 * for a malformed batch.
 */
export interface BatchEndpoint {
  /** Absolute path, not under basePath. Only POST reaches it. */
  path: string;
  operation: string;
  handle(req: FakeRequest, runInner: (inner: RawHttpRequest) => Promise<RawHttpResponse>): FakeResponse | Promise<FakeResponse>;
}

/** Chooses an operation for a request when routing is not by path (EC2: the `Action` field). */
export type Dispatcher = (req: Omit<FakeRequest, 'operation' | 'params'>) => { operation: string; params?: Record<string, string> } | undefined;

export interface FakeServerOptions {
  /** For log lines and errors: 'gcp', 'ec2', 'digitalocean'. */
  name: string;
  /** The cloud's error shape. Default: JSON `{ error: { code, message } }`. */
  errorShape?: ErrorShaper;
  /** Validate every request against this contract (a Contract, or the cloud's name). */
  contract?: Contract | 'gcp' | 'ec2' | 'digitalocean';
  /** 'reject' (default): answer contract violations with a 400 and record them. 'record': record only, still handle. */
  contractMode?: 'reject' | 'record';
  /** Custom routing (EC2). Tried before the route table. */
  dispatch?: Dispatcher;
  /** Time source for faults and lifecycles. Default: real time. */
  clock?: Clock;
  /** Shared fault injector (default: a new one). */
  faults?: Faults;
  /** Path prefix every route pattern is relative to, e.g. '/compute/v1' or '/v2'. Default ''. */
  basePath?: string;
  /**
   * Applied to every handler's answer before it is sent, for what the cloud's API does on every
   * method alike (GCP's `fields` system parameter). May throw a FakeApiError, answered as a handler's.
   */
  shapeResponse?: (req: FakeRequest, operation: string, response: FakeResponse) => FakeResponse;
  /** A batch endpoint (see BatchEndpoint). */
  batch?: BatchEndpoint;
}

interface Route {
  method: string;
  pattern: string;
  regex: RegExp;
  names: string[];
  operation: string;
  literalLength: number;
}

export class FakeServer {
  readonly name: string;
  readonly faults: Faults;
  readonly clock: Clock;
  readonly contract?: Contract;
  /** Every request received, in order. */
  readonly received: ReceivedCall[] = [];
  /** Requests that broke the published contract (cleared by assertNoContractViolations). */
  readonly contractViolations: ContractViolation[] = [];
  /** Exceptions thrown by handlers other than FakeApiError: bugs in the fake. */
  readonly handlerErrors: { operation?: string; error: unknown }[] = [];

  private readonly routes: Route[] = [];
  private readonly handlers = new Map<string, Handler>();
  private readonly errorShape: ErrorShaper;
  private readonly contractMode: 'reject' | 'record';
  private readonly dispatch?: Dispatcher;
  private readonly basePath: string;
  private readonly shapeResponse?: FakeServerOptions['shapeResponse'];
  private readonly batch?: BatchEndpoint;
  private server?: Server;
  private port?: number;
  private readonly sockets = new Set<import('node:net').Socket>();

  constructor(opts: FakeServerOptions) {
    this.name = opts.name;
    this.errorShape = opts.errorShape ?? defaultErrorShape;
    this.contract = typeof opts.contract === 'string' ? new Contract(opts.contract) : opts.contract;
    this.contractMode = opts.contractMode ?? 'reject';
    this.dispatch = opts.dispatch;
    this.clock = opts.clock ?? realClock;
    this.faults = opts.faults ?? new Faults();
    this.basePath = (opts.basePath ?? '').replace(/\/$/, '');
    this.shapeResponse = opts.shapeResponse;
    this.batch = opts.batch;
  }

  /**
   * Registers a route: `route('GET', '/projects/:project/zones/:zone/instances/:instance',
   * 'compute.instances.get', handler)`. The pattern is relative to `basePath`. `:name` matches one
   * path segment; a literal segment beats a parameter (`/instances/bulkInsert` before
   * `/instances/:instance`). Use the contract's operation id as the operation name.
   */
  route(method: string, pattern: string, operation: string, handler: Handler): this {
    const names: string[] = [];
    const full = this.basePath + pattern;
    const src = full
      .split('/')
      .map((seg) => {
        if (seg.startsWith(':')) {
          names.push(seg.slice(1));
          return '([^/]+)';
        }
        return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      })
      .join('/');
    this.routes.push({
      method: method.toUpperCase(),
      pattern: full,
      regex: new RegExp(`^${src}/?$`),
      names,
      operation,
      literalLength: full.split('/').filter((s) => s && !s.startsWith(':')).join('/').length,
    });
    this.routes.sort((a, b) => b.literalLength - a.literalLength);
    this.handlers.set(operation, handler);
    return this;
  }

  /** Registers the handler of an operation chosen by the dispatcher (EC2: `handle('RunInstances', fn)`). */
  handle(operation: string, handler: Handler): this {
    this.handlers.set(operation, handler);
    return this;
  }

  /** Starts listening on 127.0.0.1 and a free port. `endpoint` is `http://127.0.0.1:PORT` + basePath. */
  async start(): Promise<{ port: number; endpoint: string }> {
    if (this.server && this.port !== undefined) return { port: this.port, endpoint: this.endpoint };
    const server = createServer((req, res) => {
      this.onRequest(req, res).catch((error) => {
        this.handlerErrors.push({ error });
        if (!res.headersSent) res.writeHead(500).end();
      });
    });
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    return { port: this.port, endpoint: this.endpoint };
  }

  /** `http://127.0.0.1:PORT` + basePath (throws before start()). */
  get endpoint(): string {
    if (this.port === undefined) throw new Error(`${this.name} fake is not started`);
    return `http://127.0.0.1:${this.port}${this.basePath}`;
  }

  /** `http://127.0.0.1:PORT` without basePath. */
  get origin(): string {
    if (this.port === undefined) throw new Error(`${this.name} fake is not started`);
    return `http://127.0.0.1:${this.port}`;
  }

  /** Stops listening and drops open connections. Idempotent. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    this.port = undefined;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Logged calls of one operation (or all calls when omitted). */
  calls(operation?: string): ReceivedCall[] {
    return operation === undefined ? [...this.received] : this.received.filter((c) => c.operation === operation);
  }

  /** Operation names in the order received (handy: `expect(fake.operations()).toEqual([...])`). */
  operations(): (string | undefined)[] {
    return this.received.map((c) => c.operation);
  }

  /** Clears the request log, violations and handler errors (not faults or state). */
  clearLog(): void {
    this.received.length = 0;
    this.contractViolations.length = 0;
    this.handlerErrors.length = 0;
  }

  // -------------------------------------------------------------------------------------------

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req);
    const answer = await this.process({ method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, body });
    res.writeHead(answer.status, answer.headers);
    res.end(answer.payload);
  }

  /**
   * The per-request pipeline: parse, route, record, contract, faults, handler, shapeResponse.
   * `batchId` is set for the inner requests of a batch (the outer request's id).
   */
  private async process(raw: RawHttpRequest, batchId?: string): Promise<RawHttpResponse> {
    const base = parseRequest(raw);
    const batch = batchId === undefined && base.method === 'POST' && base.path === this.batch?.path ? this.batch : undefined;

    // Route: the batch endpoint, the dispatcher (EC2), then the table.
    let operation: string | undefined;
    let params: Record<string, string> = {};
    const d = batch ? { operation: batch.operation } : this.dispatch?.(base);
    if (d) {
      operation = d.operation;
      params = d.params ?? {};
    } else {
      for (const r of this.routes) {
        if (r.method !== base.method) continue;
        const m = r.regex.exec(base.path);
        if (!m) continue;
        operation = r.operation;
        r.names.forEach((n, i) => (params[n] = safeDecode(m[i + 1])));
        break;
      }
    }
    const { query, form, json } = base;
    const fakeReq: FakeRequest = { ...base, params, operation: operation ?? '' };
    const call: ReceivedCall = {
      operation,
      method: base.method,
      path: base.path,
      params: { ...params, ...query, ...(form ?? {}), ...(isPlainObject(json) ? json : {}) },
      json,
      status: 0,
      at: this.clock.now(),
      requestId: base.id,
      ...(batchId === undefined ? {} : { batch: batchId }),
    };
    this.received.push(call);

    // The batch request itself is no API call: no contract (its inner calls get it). Fault rules
    // that name its operation apply, so a test can fail a whole batch.
    if (batch) {
      const faulted = await this.applyFaults(call, fakeReq);
      if ('failure' in faulted) return faulted.failure;
      return this.answer(call, fakeReq, () => batch.handle(fakeReq, (inner) => this.process(inner, base.id)), faulted.headers);
    }

    // Contract.
    let violations: ContractViolation[] = [];
    if (this.contract) {
      const result = this.contract.validate({ method: base.method, path: base.path, query, json, form, bodyLength: base.body.length });
      violations = result.violations;
      if (result.normalized) fakeReq.normalized = call.normalized = result.normalized;
      this.contractViolations.push(...violations);
    }
    if (violations.length && this.contractMode === 'reject') {
      call.rejectedBy = 'contract';
      const unknown = violations.every((v) => v.kind === 'unknown-operation');
      return this.renderError(call, {
        status: 400,
        code: unknown ? 'UnknownOperation' : 'ContractViolation',
        message: violations.map((v) => `${v.location}: ${v.message}`).join('; '),
        source: 'contract',
        operation,
        request: fakeReq,
        violations,
      });
    }

    const handler = operation === undefined ? undefined : this.handlers.get(operation);
    if (!operation || !handler) {
      call.rejectedBy = 'no-route';
      return this.renderError(call, {
        status: operation ? 501 : 404,
        code: 'UnknownOperation',
        message: operation ? `the ${this.name} fake does not implement ${operation}` : `no route for ${base.method} ${base.path}`,
        source: 'no-route',
        operation,
        request: fakeReq,
      });
    }

    const faulted = await this.applyFaults(call, fakeReq);
    if ('failure' in faulted) return faulted.failure;

    return this.answer(
      call,
      fakeReq,
      async () => {
        const response = await handler(fakeReq);
        return this.shapeResponse ? this.shapeResponse(fakeReq, operation, response) : response;
      },
      faulted.headers,
    );
  }

  /** The fault rules of the call's operation: its delay, then the failure to answer with, or the headers to add. */
  private async applyFaults(call: ReceivedCall, req: FakeRequest): Promise<{ failure: RawHttpResponse } | { headers: Record<string, string> }> {
    const decision = this.faults.decide(req.operation);
    if (decision.delayMs > 0) await this.clock.sleep(decision.delayMs);
    if (!decision.failure) return { headers: decision.headers };
    call.rejectedBy = decision.reason === 'throttle' ? 'throttle' : 'fault';
    return { failure: this.renderFailure(call, decision.failure, decision.headers, req) };
  }

  /** Runs a handler: its answer, or its FakeApiError shaped by the cloud, or a 500 for a crash. */
  private async answer(call: ReceivedCall, req: FakeRequest, run: () => FakeResponse | Promise<FakeResponse>, headers: Record<string, string>): Promise<RawHttpResponse> {
    const operation = req.operation;
    try {
      return this.render(call, await run(), headers);
    } catch (error) {
      if (error instanceof FakeApiError) {
        return this.renderError(
          call,
          { status: error.status, code: error.code, message: error.message, source: 'handler', operation, request: req, details: error.details },
          { ...headers, ...(error.headers ?? {}) },
        );
      }
      this.handlerErrors.push({ operation, error });
      return this.renderError(call, {
        status: 500,
        code: 'InternalError',
        message: `the ${this.name} fake failed in ${operation}: ${error instanceof Error ? error.message : String(error)}`,
        source: 'internal',
        operation,
        request: req,
      });
    }
  }

  private renderFailure(call: ReceivedCall, spec: FailureSpec, headers: Record<string, string>, req: FakeRequest): RawHttpResponse {
    if ('response' in spec) return this.render(call, spec.response, headers);
    return this.renderError(
      call,
      { status: spec.status, code: spec.code, message: spec.message ?? spec.code, source: 'fault', operation: req.operation, request: req },
      { ...headers, ...(spec.headers ?? {}) },
    );
  }

  private renderError(call: ReceivedCall, info: ApiErrorInfo, headers: Record<string, string> = {}): RawHttpResponse {
    const shaped = this.errorShape(info);
    return this.render(call, { status: info.status, ...shaped }, headers);
  }

  /** The wire form of an answer (JSON-encodes objects, sets content-type / content-length); records its status. */
  private render(call: ReceivedCall, r: FakeResponse, extraHeaders: Record<string, string>): RawHttpResponse {
    const status = r.status ?? 200;
    const headers: Record<string, string> = { ...extraHeaders, ...(r.headers ?? {}) };
    const lower = new Set(Object.keys(headers).map((h) => h.toLowerCase()));
    let payload: Buffer;
    let defaultType = 'text/plain; charset=utf-8';
    if (r.body === undefined) payload = Buffer.alloc(0);
    else if (Buffer.isBuffer(r.body)) payload = r.body;
    else if (typeof r.body === 'string') payload = Buffer.from(r.body, 'utf8');
    else {
      payload = Buffer.from(JSON.stringify(r.body), 'utf8');
      defaultType = 'application/json; charset=utf-8';
    }
    if (!lower.has('content-type') && payload.length > 0) headers['content-type'] = defaultType;
    headers['content-length'] = String(payload.length);
    call.status = status;
    return { status, headers, payload };
  }
}

/** Parses what every request shares: url, query, and a JSON or form body. */
function parseRequest(raw: RawHttpRequest): Omit<FakeRequest, 'operation' | 'params'> {
  const { body, headers } = raw;
  const url = new URL(raw.url, 'http://127.0.0.1');
  const query: Record<string, string | string[]> = {};
  for (const [k, v] of url.searchParams) {
    const prev = query[k];
    query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  const text = body.toString('utf8');
  const ctype = String(headers['content-type'] ?? '');
  let json: unknown;
  let form: Record<string, string> | undefined;
  if (body.length > 0 && ctype.includes('application/x-www-form-urlencoded')) {
    form = Object.fromEntries(new URLSearchParams(text));
  } else if (body.length > 0 && (ctype.includes('json') || /^\s*[[{]/.test(text))) {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  return { id: randomUUID(), method: raw.method.toUpperCase(), path: url.pathname, url, query, headers, body, text, json, form };
}

/** Fallback error shape (each cloud fake supplies its real one). */
export const defaultErrorShape: ErrorShaper = (e) => ({
  status: e.status,
  body: { error: { code: e.code, message: e.message } },
});

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
