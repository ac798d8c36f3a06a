/**
 * The one request pipeline of the GCP provider. Every Compute call goes through `GcpApi.call`:
 * bounded concurrency, retries (the core's `retry`) on throttling and server errors honouring
 * Retry-After, a `requestId` that stays the same across the retries of one logical call (so a
 * retried insert never creates twice), and errors turned into `CloudApiError`s that name the call.
 * `waitOperation` waits on zonal and global operations, bounded and abortable, and turns an
 * operation's `error.errors[]` into a `CloudApiError` naming the operation.
 *
 * Requests go through our own REST client (./rest.ts) over `fetch`; google-auth-library, which
 * finds and refreshes the credentials, is imported on the first call only.
 */
import { onAbort } from '../../src/cluster/abort';
import { inspect, type InspectOptions } from 'node:util';
import { Limiter } from '../../src/cluster/limiter';
import { randomUUID } from 'node:crypto';
import type { Log } from '../../src/log';
import { CloudApiError, CredentialsError, DaskCloudError } from '../../src/errors';
import { loadCloudSdk } from '../../src/peer';
import { CREDENTIALS_FIX, findCredentials, type CredentialSource } from './credentials';
import { retry, type RetryClock } from '../../src/cluster/retry';
import type { GcpClientOptions, ResolvedConnection } from './options';
import type { BatchAnswer, BatchCall } from './batch';
import { ComputeRest, computeOrigin, RequestTimeoutError, type RequestAuth, type RestCallOptions } from './rest';
import type { ComputeOperation } from './types';

export type { ComputeOperation };
export { HttpError, RequestTimeoutError } from './rest';

/** What google-auth-library asks for: Compute's own scopes, as Google's client libraries request them. */
export const COMPUTE_SCOPES: readonly string[] = Object.freeze(['https://www.googleapis.com/auth/compute', 'https://www.googleapis.com/auth/cloud-platform']);

/** Where an operation lives. */
export type OperationScope = { project: string; zone: string } | { project: string; global: true };

/** What a failed Compute request said: the HTTP status and Google's error reason. */
export interface GcpErrorInfo {
  status?: number;
  reason?: string;
  message: string;
  retryAfterMs?: number;
}

/** Reasons Compute uses for per-minute quotas and overload; all worth another attempt. */
const RETRY_REASONS = new Set(['rateLimitExceeded', 'userRateLimitExceeded', 'RATE_LIMIT_EXCEEDED', 'backendError', 'internalError']);
/** Network failures before any answer: safe to repeat, every mutating call carries its requestId. */
const RETRY_NETWORK = new Set(['ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ECONNABORTED', 'UND_ERR_SOCKET']);

function headerValue(headers: unknown, name: string): string | undefined {
  if (!headers || typeof headers !== 'object') return undefined;
  const h = headers as { get?: (n: string) => string | null } & Record<string, unknown>;
  if (typeof h.get === 'function') return h.get(name) ?? undefined;
  const v = h[name] ?? h[name.toLowerCase()];
  return typeof v === 'string' ? v : undefined;
}

/** Retry-After as seconds or an HTTP date → ms. */
function retryAfterMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (/^\d+(?:\.\d+)?$/.test(value.trim())) return Math.ceil(Number(value) * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/**
 * Reads a Compute error: an {@link HttpError} (its `status` is the HTTP status and its `message`
 * the raw JSON body, `error.errors[0].reason`), a network failure (its `code`), or a gaxios
 * error of google-auth-library, which has the same shape.
 */
export function gcpErrorInfo(err: unknown): GcpErrorInfo {
  if (typeof err !== 'object' || err === null) return { message: String(err) };
  const e = err as { status?: unknown; code?: unknown; message?: unknown; reason?: unknown; response?: { status?: unknown; headers?: unknown } };
  const status =
    typeof e.status === 'number' ? e.status : typeof e.response?.status === 'number' ? e.response.status : typeof e.code === 'number' && e.code >= 100 ? e.code : undefined;
  let message = typeof e.message === 'string' ? e.message : String(err);
  let reason: string | undefined;
  try {
    const body = JSON.parse(message) as { error?: { message?: string; errors?: { reason?: string }[]; status?: string } };
    if (body.error) {
      reason = body.error.errors?.[0]?.reason ?? body.error.status;
      message = body.error.message ?? message;
    }
  } catch {
    // not a JSON body: a network error, or an auth library's own message
  }
  if (reason === undefined && typeof e.reason === 'string') reason = e.reason;
  if (reason === undefined && typeof e.code === 'string') reason = e.code;
  return { status, reason, message, retryAfterMs: retryAfterMs(headerValue(e.response?.headers, 'retry-after')) };
}

/** Throttling (403 rateLimitExceeded, 429), server errors (5xx), deadlines and connection resets. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof RequestTimeoutError) return true;
  const { status, reason } = gcpErrorInfo(err);
  if (status === 429 || (status !== undefined && status >= 500 && status <= 599)) return true;
  if (status === 403) return reason !== undefined && RETRY_REASONS.has(reason);
  return status === undefined && reason !== undefined && RETRY_NETWORK.has(reason);
}

/** HTTP 404, read from an HttpError or from a CloudApiError wrapping one. */
export function isNotFound(err: unknown): boolean {
  if (gcpErrorInfo(err).status === 404) return true;
  const e = err as { details?: { status?: unknown }; cause?: unknown } | null;
  return e?.details?.status === 404 || (e?.cause !== undefined && gcpErrorInfo(e.cause).status === 404);
}

function describe(info: GcpErrorInfo): string {
  const head = [info.status !== undefined ? `HTTP ${info.status}` : undefined, info.reason].filter(Boolean).join(' ');
  return head ? `${head}: ${info.message}` : info.message;
}


function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new RequestTimeoutError(`${what}: no answer within ${ms} ms`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/** Rejects with the signal's reason when it aborts; the awaited work itself carries on. */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(abortReason(signal));
  return new Promise<T>((resolve, reject) => {
    // One shared listener per signal: many calls in flight add no more (abort.ts).
    const dispose = onAbort(signal, () => reject(abortReason(signal)));
    promise.then(
      (v) => {
        dispose();
        resolve(v);
      },
      (e: unknown) => {
        dispose();
        reject(e);
      },
    );
  });
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new DaskCloudError('E_ABORTED', 'aborted');
}

export interface CallOptions {
  signal?: AbortSignal;
  /**
   * A mutating call is not abandoned when the signal aborts: the attempt in flight settles first
   * (bounded by its deadline), so what it creates is known before the rollback sweeps; only its
   * retries stop. Reads are abandoned as soon as the signal aborts.
   */
  mutating?: boolean;
  /** More errors worth another attempt for this call only (e.g. `resourceNotReady` on delete). */
  retryAlso?: (err: unknown) => boolean;
  /** Per-request deadline (default the connection's `requestTimeoutMs`). */
  timeoutMs?: number;
  /** How long this call keeps retrying (default the pipeline's `retryTimeoutMs`). */
  retryTimeoutMs?: number;
}

export interface GcpApiOptions extends Pick<ResolvedConnection, 'clientOptions' | 'maxConcurrentRequests' | 'requestTimeoutMs' | 'operationTimeoutMs'> {
  log: Log;
  /** Where credentials are looked for (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** How long one logical call keeps retrying (default 3 min: per-minute quotas refill within one). */
  retryTimeoutMs?: number;
  /** First backoff delay (default 1 s) and cap (default 30 s). */
  baseDelayMs?: number;
  maxDelayMs?: number;
  clock?: RetryClock;
  /** Observes every retry (tests, metrics). */
  onRetry?: (what: string, err: unknown, attempt: number, delayMs: number) => void;
}

/**
 * What each call's requests get: the deadline, which aborts a request that outlives it, and for
 * reads the caller's signal (a mutating request is never cut off: see `CallOptions.mutating`).
 */
export type RequestOptions = Required<Pick<RestCallOptions, 'timeout'>> & Pick<RestCallOptions, 'signal'>;

export class GcpApi {
  readonly #options: GcpApiOptions;
  readonly #limiter: Limiter;
  #rest: Promise<ComputeRest> | undefined;
  #closed = false;
  #credentials: CredentialSource | undefined;

  constructor(options: GcpApiOptions) {
    this.#options = options;
    this.#limiter = new Limiter(options.maxConcurrentRequests);
  }

  get operationTimeoutMs(): number {
    return this.#options.operationTimeoutMs;
  }

  /** A safe summary: where requests go, never the auth client, key or token. */
  toJSON(): { endpoint?: string; closed: boolean } {
    const o = this.#options.clientOptions;
    const endpoint = o.apiEndpoint === undefined ? undefined : computeOrigin(o);
    return { ...(endpoint === undefined ? {} : { endpoint }), closed: this.#closed };
  }

  /** `console.log(api)` shows {@link GcpApi.toJSON}. */
  [inspect.custom](depth: number, options: InspectOptions, render: typeof inspect): string {
    return depth < 0 ? '[GcpApi]' : `GcpApi ${render(this.toJSON(), options)}`;
  }

  /**
   * Where the credentials come from (found locally, before anything is dialled). Throws a
   * `CredentialsError` when there are none.
   */
  credentialSource(): CredentialSource {
    this.#credentials ??= findCredentials({ clientOptions: this.#options.clientOptions }, this.#options.env ?? process.env);
    return this.#credentials;
  }

  /** The REST client, with credentials resolved on first use. */
  rest(): Promise<ComputeRest> {
    if (this.#closed) return Promise.reject(new CloudApiError('gcp: the API client is closed'));
    this.#rest ??= this.#load();
    return this.#rest;
  }

  /**
   * The client, signed by `clientOptions.authClient`, else by the client google-auth-library
   * makes from the key options or Application Default Credentials. Credentials are found locally
   * first (credentialSource()): with none, nothing is imported and nothing is dialled.
   */
  async #load(): Promise<ComputeRest> {
    const source = this.credentialSource();
    const o = this.#options.clientOptions;
    let auth: RequestAuth | undefined = o.authClient;
    if (auth === undefined) {
      const started = Date.now();
      try {
        auth = await googleAuthClient(o);
      } catch (err) {
        throw credentialsRefused(source, err);
      }
      this.#options.log('made a google-auth-library client in %d ms', Date.now() - started);
    }
    this.#options.log('credentials from %s', source.description);
    return new ComputeRest({ apiEndpoint: o.apiEndpoint, port: o.port, protocol: o.protocol, auth });
  }

  /**
   * One logical API call. `fn` gets the REST client, a requestId (a UUID fixed for this call, the
   * same on every retry: pass it to every mutating method) and the options for its requests.
   */
  async call<T>(what: string, fn: (c: ComputeRest, requestId: string, req: RequestOptions) => Promise<T>, options: CallOptions = {}): Promise<T> {
    const { signal } = options;
    if (signal?.aborted) throw abortReason(signal);
    const rest = await raceAbort(this.rest(), signal).catch((err: unknown) => {
      // Outside preflight (cleanup, a call after a failed start) nobody adds the fix: say it here.
      if (CredentialsError.isInstance(err) && !err.message.includes(CREDENTIALS_FIX)) err.message = `${err.message}\n  fix: ${CREDENTIALS_FIX}`;
      throw err;
    });
    const requestId = randomUUID();
    const timeoutMs = options.timeoutMs ?? this.#options.requestTimeoutMs;
    const req: RequestOptions = { timeout: timeoutMs, ...(signal !== undefined && !options.mutating ? { signal } : {}) };
    const attempt = async () => {
      if (signal?.aborted) throw abortReason(signal);
      const request = this.#limiter.run(() => withDeadline(fn(rest, requestId, req), timeoutMs, what));
      return options.mutating ? request : raceAbort(request, signal);
    };
    try {
      return await retry(attempt, {
        what: `gcp: ${what}`,
        retryable: (err) => !signal?.aborted && (isRetryable(err) || (options.retryAlso?.(err) ?? false)),
        retryAfterMs: (err) => gcpErrorInfo(err).retryAfterMs,
        timeoutMs: options.retryTimeoutMs ?? this.#options.retryTimeoutMs ?? 3 * 60_000,
        baseDelayMs: this.#options.baseDelayMs ?? 1000,
        maxDelayMs: this.#options.maxDelayMs ?? 30_000,
        signal,
        clock: this.#options.clock,
        onRetry: (err, n, delayMs) => {
          this.#options.log('%s: attempt %d failed (%s); retrying in %d ms', what, n, describe(gcpErrorInfo(err)), delayMs);
          this.#options.onRetry?.(what, err, n, delayMs);
        },
      });
    } catch (err) {
      if (signal?.aborted && err === signal.reason) throw err;
      if (DaskCloudError.isInstance(err)) {
        // retry() gave up: keep its message (attempts, last error), as a cloud error.
        if (err.code === 'E_TIMEOUT' && err.cause !== undefined) {
          throw new CloudApiError(err.message, { cause: err.cause, details: { ...gcpErrorInfo(err.cause), call: what } });
        }
        throw err;
      }
      const info = gcpErrorInfo(err);
      throw new CloudApiError(`gcp: ${what} failed: ${describe(info)}`, {
        cause: err,
        details: { status: info.status, reason: info.reason, call: what },
      });
    }
  }

  /**
   * Sends up to {@link BATCH_MAX} calls in one HTTP request to Compute's batch endpoint, through
   * the pipeline (one slot of the limiter, the deadline, retries of the whole batch: its mutating
   * calls carry their requestIds). Answers in the order of the calls; a failed call is an answer
   * with its status, for the caller to redo on its own.
   */
  async batch(what: string, calls: readonly BatchCall[], options: CallOptions = {}): Promise<BatchAnswer[]> {
    return this.call(what, (c, _id, req) => c.batch(calls, req), options);
  }

  /**
   * Waits until `op` is DONE (Compute's `wait` returns after at most ~2 minutes, so it is called
   * again until `operationTimeoutMs`), then throws a CloudApiError naming the operation if it
   * ended with `error.errors[]`.
   */
  async waitOperation(what: string, op: ComputeOperation, scope: OperationScope, signal?: AbortSignal): Promise<ComputeOperation> {
    const name = op.name;
    if (!name) throw new CloudApiError(`gcp: ${what}: the API returned no operation`);
    const deadline = Date.now() + this.#options.operationTimeoutMs;
    const notDone = (cause?: unknown) =>
      new CloudApiError(`gcp: ${what}: operation ${name} not done after ${this.#options.operationTimeoutMs} ms (last status ${String(current.status)})`, {
        cause,
        details: { operation: name, status: current.status },
      });
    let current = op;
    while (current.status !== 'DONE') {
      const left = deadline - Date.now();
      if (left <= 0) throw notDone();
      try {
        current = await this.call(
          `waiting for ${what}`,
          async (c, _id, req) => {
            const [res] =
              'zone' in scope
                ? await c.zoneOperations.wait({ project: scope.project, zone: scope.zone, operation: name }, req)
                : await c.globalOperations.wait({ project: scope.project, operation: name }, req);
            return res;
          },
          // Compute answers a wait within ~2 minutes; allow for that plus the network.
          { signal, timeoutMs: Math.min(left, 150_000), retryTimeoutMs: left },
        );
      } catch (err) {
        if (Date.now() >= deadline && !signal?.aborted) throw notDone(err);
        throw err;
      }
    }
    const errors = current.error?.errors ?? [];
    if (errors.length > 0) {
      const text = errors.map((e) => `${e.code ?? 'ERROR'}: ${e.message ?? ''}`.trim()).join('; ');
      throw new CloudApiError(`gcp: ${what} failed: operation ${name} (${current.operationType ?? 'operation'}) ended with ${text}`, {
        details: { operation: name, operationType: current.operationType, errors: errors.map((e) => ({ code: e.code, message: e.message })), httpStatus: current.httpErrorStatusCode },
      });
    }
    return current;
  }

  /** Refuses further calls. Idempotent. Requests use fetch's shared pool: there is no connection of ours to end. */
  async close(): Promise<void> {
    this.#closed = true;
  }
}

/**
 * google-auth-library's client for the key options or Application Default Credentials, with
 * Compute's scopes. Imported here, on the first call: it costs ~130 ms and ~50 MB (measured),
 * which nobody should pay for constructing a cluster or validating its options.
 */
async function googleAuthClient(o: GcpClientOptions): Promise<RequestAuth> {
  const { GoogleAuth } = loadCloudSdk<typeof import('google-auth-library')>('gcp');
  const auth = new GoogleAuth({
    scopes: o.scopes === undefined ? [...COMPUTE_SCOPES] : o.scopes,
    ...(o.keyFilename !== undefined ? { keyFilename: o.keyFilename } : {}),
    ...(o.keyFile !== undefined ? { keyFile: o.keyFile } : {}),
    ...(o.credentials !== undefined ? { credentials: o.credentials } : {}),
    ...(o.projectId !== undefined ? { projectId: o.projectId } : {}),
  });
  return (await auth.getClient()) as RequestAuth;
}

/** Credentials that were found but could not be used (a bad key file, a refused refresh). */
export function credentialsRefused(source: CredentialSource, err: unknown): CredentialsError {
  const reason = err instanceof Error ? err.message : String(err);
  return new CredentialsError(`gcp: the credentials from ${source.description} could not be used: ${reason}`, {
    cause: err,
    details: { source: source.kind, fix: CREDENTIALS_FIX },
  });
}

/** The Operation a mutating call answered with (`[{ latestResponse, name }]` for insert/delete). */
export function operationOf(result: unknown): ComputeOperation {
  const first = Array.isArray(result) ? result[0] : result;
  const op = (first as { latestResponse?: ComputeOperation } | undefined)?.latestResponse ?? (first as ComputeOperation | undefined);
  if (!op || typeof op !== 'object') throw new CloudApiError('gcp: the API answered a mutating call without an operation');
  return op;
}
