/**
 * The one request pipeline for DigitalOcean. Every dots-wrapper call, and the raw requests
 * dots-wrapper cannot make (a create with `public_networking: false`, VPC NAT gateways), goes
 * through {@link DoApi.call} / {@link DoApi.post} / {@link DoApi.get}, which
 * - bounds the number of requests in flight,
 * - retries throttling (429) honouring `retry-after` / `ratelimit-reset`, and — for idempotent
 *   operations only — 5xx answers and network errors, with the core's `retry()`,
 * - maps every failure to a {@link CloudApiError} carrying DigitalOcean's `{ id, message }`, the
 *   HTTP status and the operation name.
 *
 * DigitalOcean has no idempotency tokens, so a create is never blindly retried after an answer
 * that may have come after the work was done (5xx, timeout): the adapter reconciles by listing
 * what carries the cluster tag instead (see adapter.ts).
 *
 * The API token lives in a private field and in the Authorization header only. Errors never keep
 * the HTTP client's error as `cause`: axios errors hold the request config, headers included.
 */
import { inspect, type InspectOptions } from 'node:util';
import { Limiter, type LimiterRate } from '../../src/cluster/limiter';
import type * as DotsModule from 'dots-wrapper';
import { CloudApiError, DaskCloudError } from '../../src/errors';
import { loadCloudSdk } from '../../src/peer';
import { realClock, retry, type RetryClock } from '../../src/cluster/retry';

/** A dots-wrapper client (`createApiClient(...)`). */
export type DotsClient = ReturnType<typeof DotsModule.createApiClient>;

export const DEFAULT_ENDPOINT = 'https://api.digitalocean.com/v2';

/**
 * DigitalOcean's documented request budget is 250 requests a minute, bursty (and 5,000 an hour,
 * which the `retry-after` of its 429 answers covers). Requests are started a little slower than
 * that (240 at once, then 4 a second), so that our bucket and DigitalOcean's, whose clocks differ
 * by each request's travel time, agree: a thousand requests are paced instead of answered 429.
 */
export const DO_REQUEST_RATE: LimiterRate = Object.freeze({ burst: 240, perSecond: 4 });

type Log = (format: string, ...args: unknown[]) => void;

export interface DoApiOptions {
  /** API token; needed unless `client` is given (and for raw requests). */
  token?: string;
  /** API base URL including `/v2`. */
  endpoint?: string;
  /** A ready-made dots-wrapper client. */
  client?: DotsClient;
  /** Per-request timeout (default 30 s). */
  requestTimeoutMs?: number;
  /** Deadline for one operation including its retries (default 2 min). */
  operationTimeoutMs?: number;
  /** Requests in flight at most (default 16: a thousand workers are a hundred creates, ten names each). */
  maxConcurrentRequests?: number;
  /** Requests started at most (default {@link DO_REQUEST_RATE}); `false` for no pacing. */
  rate?: LimiterRate | false;
  /** For tests: backoff clock and randomness. */
  clock?: RetryClock;
  random?: () => number;
}

export interface CallOptions {
  signal?: AbortSignal;
  /**
   * Safe to repeat after an answer that may have come after the work was done (GET, DELETE).
   * Creates are not: only 429 and refused connections are retried for them.
   */
  idempotent: boolean;
  log?: Log;
  /** Told when requests wait for the request budget (the caller decides how often to say so). */
  pacing?: (info: { operation: string; message: string; remaining: number; perSecond: number }) => void;
}

/** A non-2xx answer to a raw request, shaped like what we read from axios errors. */
class RawHttpError extends Error {
  constructor(readonly status: number, readonly data: unknown, readonly headers: Record<string, string>) {
    super(`HTTP ${status}`);
  }
}

interface Failure {
  status?: number;
  /** DigitalOcean's error id, e.g. `too_many_requests`, `unprocessable_entity`. */
  id?: string;
  message: string;
  requestId?: string;
  /** Network error code (ECONNRESET, ECONNABORTED, ...) when there was no answer. */
  code?: string;
  headers: Record<string, string>;
}

function lowerHeaders(h: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h || typeof h !== 'object') return out;
  const plain = typeof (h as { toJSON?: unknown }).toJSON === 'function' ? (h as { toJSON: () => unknown }).toJSON() : h;
  for (const [k, v] of Object.entries(plain as Record<string, unknown>)) {
    if (v !== undefined && v !== null) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : String(v);
  }
  return out;
}

/** What went wrong, read from an axios error, a raw answer or anything else. */
function readFailure(err: unknown): Failure {
  let status: number | undefined;
  let data: unknown;
  let headers: Record<string, string> = {};
  if (err instanceof RawHttpError) {
    ({ status, data } = err);
    headers = err.headers;
  } else {
    const response = (err as { response?: { status?: unknown; data?: unknown; headers?: unknown } } | null)?.response;
    if (response && typeof response.status === 'number') {
      status = response.status;
      data = response.data;
      headers = lowerHeaders(response.headers);
    }
  }
  const body = (data && typeof data === 'object' ? data : {}) as { id?: unknown; message?: unknown; request_id?: unknown };
  const code = (err as { code?: unknown } | null)?.code;
  const cause = (err as { cause?: { code?: unknown } } | null)?.cause?.code;
  const timedOut = (err as { name?: unknown } | null)?.name === 'TimeoutError' ? 'ETIMEDOUT' : undefined;
  return {
    status,
    id: typeof body.id === 'string' ? body.id : undefined,
    message: typeof body.message === 'string' ? body.message : err instanceof Error ? err.message : String(err),
    requestId: typeof body.request_id === 'string' ? body.request_id : headers['x-request-id'],
    code: status === undefined ? (typeof code === 'string' ? code : typeof cause === 'string' ? cause : timedOut) : undefined,
    headers,
  };
}

/** Milliseconds DigitalOcean asks us to wait before the next request, when it says. */
function serverDelayMs(f: Failure, now: number): number | undefined {
  const ra = f.headers['retry-after'];
  if (ra !== undefined) {
    const seconds = Number(ra);
    if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
    const date = Date.parse(ra);
    if (!Number.isNaN(date)) return Math.max(0, date - now);
  }
  // Without Retry-After, ratelimit-reset (epoch seconds) says when the exhausted window frees a slot.
  const reset = Number(f.headers['ratelimit-reset']);
  if (f.headers['ratelimit-remaining'] === '0' && Number.isFinite(reset)) return Math.max(0, reset * 1000 - now);
  return undefined;
}

/** The CloudApiError for one failed attempt. `details` serve retry decisions and callers. */
function toApiError(operation: string, f: Failure, now: number): CloudApiError {
  const what = f.status !== undefined ? `HTTP ${f.status}${f.id ? ` ${f.id}` : ''}: ${f.message}` : `${f.code ?? 'request failed'}: ${f.message}`;
  return new CloudApiError(`DigitalOcean ${operation} failed (${what})${f.requestId ? ` [request ${f.requestId}]` : ''}`, {
    details: {
      provider: 'digitalocean',
      operation,
      status: f.status,
      id: f.id,
      doMessage: f.message,
      requestId: f.requestId,
      networkCode: f.code,
      retryAfterMs: f.status === 429 ? serverDelayMs(f, now) : undefined,
    },
  });
}

/**
 * Whether `v` is a CloudApiError (also from another copy of the package). `CloudApiError.isInstance`
 * does not type-check: its constructor's signature differs from DaskCloudError's.
 */
export function isCloudApiError(v: unknown): v is CloudApiError {
  return DaskCloudError.isInstance(v) && v.code === 'E_CLOUD_API';
}

/** HTTP status of a DigitalOcean API error (undefined: no answer, or not an API error). */
export function statusOf(err: unknown): number | undefined {
  return isCloudApiError(err) ? (err.details.status as number | undefined) : undefined;
}

/**
 * An error after which a create may or may not have happened: a 5xx or a lost connection. The
 * caller reconciles (lists by tag) rather than repeats blindly.
 */
export function isAmbiguous(err: unknown): boolean {
  if (!isCloudApiError(err)) return false;
  const status = err.details.status as number | undefined;
  if (status === undefined) return err.details.networkCode !== 'ECONNREFUSED' && err.details.networkCode !== undefined;
  return status >= 500;
}

function isRetryable(err: unknown, idempotent: boolean): boolean {
  if (!isCloudApiError(err)) return false;
  const status = err.details.status as number | undefined;
  if (status === 429) return true;
  // A refused connection never reached the API: safe even for a create.
  if (status === undefined && err.details.networkCode === 'ECONNREFUSED') return true;
  return idempotent && (status === undefined ? err.details.networkCode !== undefined : status >= 500);
}

export class DoApi {
  readonly endpoint: string;
  readonly #token: string | undefined;
  readonly #requestTimeoutMs: number;
  readonly #operationTimeoutMs: number;
  readonly #clock: RetryClock | undefined;
  readonly #random: (() => number) | undefined;
  #client: DotsClient | undefined;
  readonly #limiter: Limiter;

  constructor(options: DoApiOptions) {
    this.#token = options.token;
    this.#client = options.client;
    this.endpoint = (options.endpoint ?? options.client?._options.endpoint ?? DEFAULT_ENDPOINT).replace(/\/+$/, '');
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#operationTimeoutMs = options.operationTimeoutMs ?? 120_000;
    const rate = options.rate === undefined ? DO_REQUEST_RATE : options.rate;
    this.#limiter = new Limiter(options.maxConcurrentRequests ?? 16, rate === false ? {} : { rate });
    this.#clock = options.clock;
    this.#random = options.random;
  }

  /** Whether requests can authenticate at all (a token, or a ready-made client that has one). */
  get hasCredentials(): boolean {
    return this.#token !== undefined || this.#client !== undefined;
  }

  /** Never show the token: not in `util.inspect`, not in JSON. */
  toJSON(): Record<string, unknown> {
    return { endpoint: this.endpoint };
  }

  /** `console.log(api)` shows {@link DoApi.toJSON}. */
  [inspect.custom](depth: number, options: InspectOptions, render: typeof inspect): string {
    return depth < 0 ? '[DoApi]' : `DoApi ${render(this.toJSON(), options)}`;
  }

  /** The dots-wrapper client, loaded on first use so `import 'dask-cloud'` never pays for it. */
  async client(): Promise<DotsClient> {
    this.#client ??= this.#createClient();
    return this.#client;
  }

  #createClient(): DotsClient {
    const dots = loadCloudSdk<typeof DotsModule>('digitalocean');
    const { common } = dots.modules;
    // The client dots-wrapper would make, except for its transport: axios sends through
    // follow-redirects unless redirects are off, and follow-redirects logs every request's
    // options (the Authorization header with the token) to its `debug` namespace, so `DEBUG=*`
    // would print the token. With `maxRedirects: 0` axios uses Node's own http(s) module, which
    // logs nothing; the DigitalOcean API answers our calls without redirects.
    const create = common.createApiClient({
      modules: dots.modules,
      createContext: (input) => {
        const context = common.createContext(input);
        context.httpClient.defaults.maxRedirects = 0;
        return context;
      },
    });
    return create({ token: this.#token as string, endpoint: this.endpoint, requestTimeoutInMs: this.#requestTimeoutMs });
  }

  /** One dots-wrapper call through the pipeline; resolves to the answer's body. */
  async call<T>(operation: string, fn: (client: DotsClient) => Promise<{ data: T }>, options: CallOptions): Promise<T> {
    const client = await this.client();
    return this.#run(operation, async () => (await fn(client)).data, options);
  }

  /**
   * A raw JSON POST (for the fields dots-wrapper drops, e.g. `public_networking`), through the
   * same pipeline. `path` is relative to the endpoint, e.g. `/droplets`.
   */
  async post<T>(operation: string, path: string, body: unknown, options: CallOptions): Promise<T> {
    return this.#raw<T>('POST', operation, path, body, options);
  }

  /** A raw GET (for APIs dots-wrapper lacks, e.g. `/vpc_nat_gateways`), through the same pipeline. */
  async get<T>(operation: string, path: string, options: CallOptions): Promise<T> {
    return this.#raw<T>('GET', operation, path, undefined, options);
  }

  async #raw<T>(method: 'GET' | 'POST', operation: string, path: string, body: unknown, options: CallOptions): Promise<T> {
    if (this.#token === undefined) {
      throw new CloudApiError(`DigitalOcean ${operation}: this request bypasses dots-wrapper and needs the API token (pass token as well as client)`);
    }
    const token = this.#token;
    return this.#run(
      operation,
      async () => {
        const res = await fetch(`${this.endpoint}${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
          // Deliberately not the caller's signal: a create cut off in flight may still happen, and
          // only its answer tells which Droplets to delete (the adapter does, after an abort).
          signal: AbortSignal.timeout(this.#requestTimeoutMs),
        });
        const text = await res.text();
        let data: unknown = text;
        try {
          data = text ? JSON.parse(text) : undefined;
        } catch {
          // not JSON: keep the text for the message
        }
        if (!res.ok) {
          const headers: Record<string, string> = {};
          res.headers.forEach((v, k) => (headers[k.toLowerCase()] = v));
          throw new RawHttpError(res.status, typeof data === 'object' ? data : { message: String(text).slice(0, 200) }, headers);
        }
        return data as T;
      },
      options,
    );
  }

  async #run<T>(operation: string, attempt: () => Promise<T>, options: CallOptions): Promise<T> {
    const log = options.log;
    const clock = this.#clock ?? realClock;
    // Time queued behind our own pacing is not the cloud failing: it does not count against the deadline.
    let queuedMs = 0;
    this.#notePacing(operation, options);
    try {
      return await retry(
        async (n) => {
          options.signal?.throwIfAborted();
          const queuedAt = clock.now();
          return this.#limiter.run(async () => {
            queuedMs += clock.now() - queuedAt;
            const started = Date.now();
            try {
              const result = await attempt();
              log?.('%s ok (%d ms%s)', operation, Date.now() - started, n > 1 ? `, attempt ${n}` : '');
              return result;
            } catch (err) {
              const apiErr = toApiError(operation, readFailure(err), Date.now());
              log?.('%s: %s (%d ms)', operation, apiErr.message, Date.now() - started);
              throw apiErr;
            }
          }, options.signal);
        },
        {
          retryable: (err) => isRetryable(err, options.idempotent),
          retryAfterMs: (err) => {
            const ms = isCloudApiError(err) ? (err.details.retryAfterMs as number | undefined) : undefined;
            // A little jitter, so concurrent requests told the same instant do not all return at once.
            return ms === undefined ? undefined : ms + Math.floor((this.#random ?? Math.random)() * 250);
          },
          timeoutMs: this.#operationTimeoutMs,
          notCountedMs: () => queuedMs,
          what: `DigitalOcean ${operation}`,
          signal: options.signal,
          clock: this.#clock,
          random: this.#random,
          onRetry: (err, n, delay) => {
            // Told to come back later: every queued request waits too, instead of being refused in turn.
            if (statusOf(err) === 429) {
              this.#limiter.hold(delay);
              this.#tellPacing(
                operation,
                options,
                (queued) => `DigitalOcean answered 429 (its 250 requests a minute are spent, also by other clients of the account): ${queued} requests wait ${Math.ceil(delay / 1000)} s as it asks`,
              );
            }
            log?.('%s: retry %d in %d ms (%s)', operation, n, delay, (err as Error).message);
          },
        },
      );
    } catch (err) {
      // retry() gave up: report the last API error, saying that it was retried.
      if (DaskCloudError.isInstance(err) && err.code === 'E_TIMEOUT' && isCloudApiError(err.cause)) {
        const last = err.cause;
        throw new CloudApiError(`${last.message}; gave up after ${String(err.details.attempts)} attempts within ${this.#operationTimeoutMs} ms`, {
          details: { ...last.details, attempts: err.details.attempts },
        });
      }
      throw err;
    }
  }

  /** Tells the caller that this request waits for DigitalOcean's request budget. */
  #notePacing(operation: string, options: CallOptions): void {
    const rate = this.#limiter.rate;
    if (!rate || this.#limiter.waitMs() === 0) return;
    this.#tellPacing(operation, options, (queued) => `DigitalOcean allows 250 requests a minute: ${queued} requests wait, sent at ${rate.perSecond}/s`);
  }

  /** A `pacing` note for the caller: this request and those queued before it wait. */
  #tellPacing(operation: string, options: CallOptions, message: (queued: number) => string): void {
    if (!options.pacing) return;
    const queued = this.#limiter.queued + 1;
    options.pacing({ operation, message: message(queued), remaining: queued, perSecond: this.#limiter.rate?.perSecond ?? 0 });
  }

  /** Requests in flight now (for tests). */
  get inFlight(): number {
    return this.#limiter.inFlight;
  }

  /** Requests waiting for a slot or for the request budget now. */
  get queued(): number {
    return this.#limiter.queued;
  }
}
