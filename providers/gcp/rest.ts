/**
 * A small Compute Engine v1 REST client: the methods the provider calls, with the call shapes of
 * `@google-cloud/compute` (a request object, then call options; results in an array), over
 * `fetch` and a google-auth-library client. It replaces the SDK, whose import and twelve
 * clients cost ~1.5 s of CPU and ~110 MB at every start (measured), for some twenty REST calls.
 *
 * It does no retries, waits or limits: `GcpApi` (./api.ts) is the one pipeline around it. What it
 * does: builds each path as in Compute's REST reference, signs it, sends `requestId` (mutating
 * calls) as a query parameter and the resource as the JSON body, follows `nextPageToken`, and
 * turns a non-2xx answer into an {@link HttpError} that `gcpErrorInfo` reads.
 */
import { packageVersion } from '../../src/version';
import { BATCH_PATH, decodeBatch, encodeBatch, type BatchAnswer, type BatchCall } from './batch';
import type {
  BulkInsertInstanceResource,
  ComputeOperation,
  Firewall,
  Image,
  Instance,
  InstancesScopedList,
  MachineType,
  Network,
  Project,
  Region,
  Router,
  SerialPortOutput,
  Subnetwork,
  Zone,
} from './types';

/** What signs a request: any google-auth-library client (`OAuth2Client`, `JWT`, `GoogleAuth`, ...). */
export interface RequestAuth {
  /** The headers that authorise a request to `url` (google-auth-library 10 returns `Headers`, older ones a plain object). */
  getRequestHeaders(url?: string): Promise<Headers | Record<string, string>>;
}

/** Where the Compute API lives (the connection's `apiEndpoint`, `port`, `protocol`). */
export interface ComputeEndpoint {
  apiEndpoint?: string;
  port?: number;
  protocol?: 'http' | 'https';
}

/** Google's endpoint, when none is given. */
export const DEFAULT_COMPUTE_HOST = 'compute.googleapis.com';

/**
 * `protocol://host[:port]`: what the REST paths (`/compute/v1/...`) and the batch path
 * (`/batch/compute/v1`) both go under, and what `GcpApi` shows as its endpoint.
 */
export function computeOrigin(endpoint: ComputeEndpoint): string {
  const host = endpoint.apiEndpoint ?? DEFAULT_COMPUTE_HOST;
  // A bare IPv6 address needs its brackets back inside a URL.
  const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return `${endpoint.protocol ?? 'https'}://${h}${endpoint.port === undefined ? '' : `:${endpoint.port}`}`;
}

/**
 * A non-2xx answer. `message` is the body as Compute sent it (`{"error": {"errors": [{"reason"}]}}`)
 * and `response` carries status and headers (Retry-After), the shape `gcpErrorInfo` reads.
 */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  readonly response: { status: number; headers: Headers };
  constructor(
    readonly status: number,
    body: string,
    headers: Headers,
  ) {
    super(body || `HTTP ${status}`);
    this.response = { status, headers };
  }
}

/**
 * A request that got no answer within its deadline. The request may still have been processed,
 * which is why every mutating call carries a requestId and the retry reuses it.
 */
export class RequestTimeoutError extends Error {
  override readonly name = 'RequestTimeoutError';
  readonly reason = 'DEADLINE_EXCEEDED';
}

/** A request that failed before any answer (reset, refused, DNS); `code` is the system's (ECONNRESET, ...). */
export class NetworkError extends Error {
  override readonly name = 'NetworkError';
  constructor(
    message: string,
    readonly code: string | undefined,
    options: { cause: unknown },
  ) {
    super(message, options);
  }
}

/** Per-call options, as the provider passes them (google-gax's names, where it had them). */
export interface RestCallOptions {
  /** Milliseconds for each HTTP request of the call; the request is aborted then. */
  timeout?: number;
  /** Aborts the requests of the call. */
  signal?: AbortSignal;
  /** `list`: follow `nextPageToken` to the end (default true). */
  autoPaginate?: boolean;
  /** Extra headers, e.g. `X-Goog-FieldMask` for a partial response. */
  otherArgs?: { headers?: Record<string, string> };
}

type Query = Record<string, string | number | boolean | undefined>;

interface ListRequest {
  project: string;
  filter?: string;
  maxResults?: number;
  orderBy?: string;
  pageToken?: string;
  returnPartialSuccess?: boolean;
}

interface ListPage<T> {
  items?: T[];
  nextPageToken?: string;
}

/** `list`'s answer: every item with autoPaginate, else one page, the request for the next (or null) and the page itself. */
export type ListResult<T, R> = [T[], R | null, ListPage<T> | undefined];

const seg = encodeURIComponent;

export interface ComputeRestOptions extends ComputeEndpoint {
  auth: RequestAuth;
  /** Replaces the global `fetch` (tests). */
  fetch?: typeof fetch;
}

export class ComputeRest {
  readonly #origin: string;
  readonly #auth: RequestAuth;
  readonly #fetch: typeof fetch;
  readonly #client: string;

  constructor(options: ComputeRestOptions) {
    this.#origin = computeOrigin(options);
    this.#auth = options.auth;
    this.#fetch = options.fetch ?? fetch;
    this.#client = `dask-cloud/${packageVersion()}`;
  }

  /** One HTTP request: signed, with our client headers, bounded by `timeout` (the body's reading too); its body, or an HttpError. */
  async #send(method: string, url: string, init: { body?: string; contentType?: string; options?: RestCallOptions }): Promise<{ text: string; headers: Headers }> {
    const o = init.options ?? {};
    const headers = new Headers(await this.#auth.getRequestHeaders(url));
    headers.set('user-agent', this.#client);
    headers.set('x-goog-api-client', `gl-node/${process.versions.node} ${this.#client}`);
    if (init.contentType !== undefined) headers.set('content-type', init.contentType);
    for (const [k, v] of Object.entries(o.otherArgs?.headers ?? {})) headers.set(k, v);
    const timeout = o.timeout === undefined ? undefined : AbortSignal.timeout(o.timeout);
    const signals = [timeout, o.signal].filter((s): s is AbortSignal => s !== undefined);
    // AbortSignal.any arrived in Node 20.3; before it, the deadline alone bounds the request.
    const signal = signals.length > 1 && typeof AbortSignal.any === 'function' ? AbortSignal.any(signals) : signals[0];
    let res: Response;
    let text: string;
    try {
      res = await this.#fetch(url, { method, headers, body: init.body, signal });
      text = await res.text();
    } catch (err) {
      throw this.#fetchFailure(err, method, url, o, timeout);
    }
    if (!res.ok) throw new HttpError(res.status, text, res.headers);
    return { text, headers: res.headers };
  }

  #fetchFailure(err: unknown, method: string, url: string, o: RestCallOptions, timeout: AbortSignal | undefined): unknown {
    const where = `${method} ${new URL(url).pathname}`;
    // The deadline, as the pipeline's own: retried with the same requestId.
    if (timeout?.aborted && !o.signal?.aborted) return new RequestTimeoutError(`${where}: no answer within ${o.timeout} ms`);
    if (o.signal?.aborted) return o.signal.reason;
    // undici's "fetch failed" carries the system error as its cause.
    const cause = (err as { cause?: { code?: unknown; message?: unknown } } | null)?.cause;
    const code = typeof cause?.code === 'string' ? cause.code : undefined;
    const why = typeof cause?.message === 'string' ? cause.message : err instanceof Error ? err.message : String(err);
    return new NetworkError(`${where}: ${why}`, code, { cause: err });
  }

  async #json<T>(method: string, path: string, query: Query, body: unknown, options: RestCallOptions | undefined): Promise<T> {
    const url = this.#url(path, query);
    const json = body === undefined ? undefined : JSON.stringify(body);
    const { text } = await this.#send(method, url, { body: json, contentType: json === undefined ? undefined : 'application/json', options });
    return (text === '' ? {} : JSON.parse(text)) as T;
  }

  #url(path: string, query: Query): string {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
    const q = params.toString();
    return `${this.#origin}/compute/v1/${path}${q ? `?${q}` : ''}`;
  }

  async #get<T>(path: string, query: Query, options?: RestCallOptions): Promise<[T]> {
    return [await this.#json<T>('GET', path, query, undefined, options)];
  }

  /** A mutating call: the Operation it started. */
  async #mutate(method: 'POST' | 'DELETE', path: string, requestId: string | undefined, body: unknown, options?: RestCallOptions): Promise<[ComputeOperation]> {
    return [await this.#json<ComputeOperation>(method, path, { requestId }, body, options)];
  }

  async #list<T, R extends ListRequest>(path: string, request: R, options: RestCallOptions | undefined, extra: Query = {}): Promise<ListResult<T, R>> {
    const query = (pageToken: string | undefined): Query => ({
      filter: request.filter,
      maxResults: request.maxResults,
      orderBy: request.orderBy,
      returnPartialSuccess: request.returnPartialSuccess,
      pageToken,
      ...extra,
    });
    if (options?.autoPaginate === false) {
      const page = await this.#json<ListPage<T>>('GET', path, query(request.pageToken), undefined, options);
      return [page.items ?? [], page.nextPageToken ? { ...request, pageToken: page.nextPageToken } : null, page];
    }
    const items: T[] = [];
    let token = request.pageToken;
    do {
      const page = await this.#json<ListPage<T>>('GET', path, query(token), undefined, options);
      items.push(...(page.items ?? []));
      token = page.nextPageToken || undefined;
    } while (token !== undefined);
    return [items, null, undefined];
  }

  /** Zone by zone (`[scope, scopedList]`, scope `zones/<zone>`), page by page. */
  async *#aggregated<T>(path: string, request: ListRequest, options: RestCallOptions | undefined): AsyncGenerator<[string, T]> {
    let token = request.pageToken;
    do {
      const page = await this.#json<{ items?: Record<string, T>; nextPageToken?: string }>(
        'GET',
        path,
        { filter: request.filter, maxResults: request.maxResults, orderBy: request.orderBy, returnPartialSuccess: request.returnPartialSuccess, pageToken: token },
        undefined,
        options,
      );
      for (const entry of Object.entries(page.items ?? {})) yield entry;
      token = page.nextPageToken || undefined;
    } while (token !== undefined);
  }

  /** Up to BATCH_MAX calls in one request to Compute's batch endpoint; the answers in the order of the calls. */
  async batch(calls: readonly BatchCall[], options?: RestCallOptions): Promise<BatchAnswer[]> {
    const { contentType, body } = encodeBatch(calls);
    const res = await this.#send('POST', `${this.#origin}${BATCH_PATH}`, { body, contentType, options });
    return decodeBatch(res.headers.get('content-type') ?? '', res.text, calls.length);
  }

  readonly instances = {
    get: (r: { project: string; zone: string; instance: string }, o?: RestCallOptions) =>
      this.#get<Instance>(`projects/${seg(r.project)}/zones/${seg(r.zone)}/instances/${seg(r.instance)}`, {}, o),
    insert: (r: { project: string; zone: string; requestId?: string; instanceResource: Instance }, o?: RestCallOptions) =>
      this.#mutate('POST', `projects/${seg(r.project)}/zones/${seg(r.zone)}/instances`, r.requestId, r.instanceResource, o),
    bulkInsert: (r: { project: string; zone: string; requestId?: string; bulkInsertInstanceResourceResource: BulkInsertInstanceResource }, o?: RestCallOptions) =>
      this.#mutate('POST', `projects/${seg(r.project)}/zones/${seg(r.zone)}/instances/bulkInsert`, r.requestId, r.bulkInsertInstanceResourceResource, o),
    delete: (r: { project: string; zone: string; instance: string; requestId?: string }, o?: RestCallOptions) =>
      this.#mutate('DELETE', `projects/${seg(r.project)}/zones/${seg(r.zone)}/instances/${seg(r.instance)}`, r.requestId, undefined, o),
    list: <R extends ListRequest & { zone: string }>(r: R, o?: RestCallOptions) =>
      this.#list<Instance, R>(`projects/${seg(r.project)}/zones/${seg(r.zone)}/instances`, r, o),
    /** Every zone's instances; `autoPaginate` is ignored (it always follows the pages, as the SDK's does). */
    aggregatedListAsync: (r: ListRequest, o?: RestCallOptions): AsyncIterable<[string, InstancesScopedList]> =>
      this.#aggregated<InstancesScopedList>(`projects/${seg(r.project)}/aggregated/instances`, r, o),
    /** The serial console; a negative `start` reads the last bytes. */
    getSerialPortOutput: (r: { project: string; zone: string; instance: string; port?: number; start?: number | string }, o?: RestCallOptions) =>
      this.#get<SerialPortOutput>(`projects/${seg(r.project)}/zones/${seg(r.zone)}/instances/${seg(r.instance)}/serialPort`, { port: r.port, start: r.start }, o),
  };

  readonly firewalls = {
    insert: (r: { project: string; requestId?: string; firewallResource: Firewall }, o?: RestCallOptions) =>
      this.#mutate('POST', `projects/${seg(r.project)}/global/firewalls`, r.requestId, r.firewallResource, o),
    delete: (r: { project: string; firewall: string; requestId?: string }, o?: RestCallOptions) =>
      this.#mutate('DELETE', `projects/${seg(r.project)}/global/firewalls/${seg(r.firewall)}`, r.requestId, undefined, o),
    list: <R extends ListRequest>(r: R, o?: RestCallOptions) => this.#list<Firewall, R>(`projects/${seg(r.project)}/global/firewalls`, r, o),
  };

  readonly zoneOperations = {
    /** Returns when the operation is DONE or after about two minutes, whichever comes first. */
    wait: (r: { project: string; zone: string; operation: string }, o?: RestCallOptions) =>
      this.#operation('POST', `projects/${seg(r.project)}/zones/${seg(r.zone)}/operations/${seg(r.operation)}/wait`, o),
  };

  readonly globalOperations = {
    wait: (r: { project: string; operation: string }, o?: RestCallOptions) => this.#operation('POST', `projects/${seg(r.project)}/global/operations/${seg(r.operation)}/wait`, o),
  };

  /** A call without a body or requestId that answers an Operation (the operation waits). */
  async #operation(method: 'POST', path: string, o?: RestCallOptions): Promise<[ComputeOperation]> {
    return [await this.#json<ComputeOperation>(method, path, {}, undefined, o)];
  }

  readonly projects = {
    get: (r: { project: string }, o?: RestCallOptions) => this.#get<Project>(`projects/${seg(r.project)}`, {}, o),
  };

  readonly zones = {
    get: (r: { project: string; zone: string }, o?: RestCallOptions) => this.#get<Zone>(`projects/${seg(r.project)}/zones/${seg(r.zone)}`, {}, o),
  };

  readonly regions = {
    get: (r: { project: string; region: string }, o?: RestCallOptions) => this.#get<Region>(`projects/${seg(r.project)}/regions/${seg(r.region)}`, {}, o),
  };

  readonly images = {
    getFromFamily: (r: { project: string; family: string }, o?: RestCallOptions) =>
      this.#get<Image>(`projects/${seg(r.project)}/global/images/family/${seg(r.family)}`, {}, o),
  };

  readonly networks = {
    get: (r: { project: string; network: string }, o?: RestCallOptions) => this.#get<Network>(`projects/${seg(r.project)}/global/networks/${seg(r.network)}`, {}, o),
  };

  readonly subnetworks = {
    get: (r: { project: string; region: string; subnetwork: string }, o?: RestCallOptions) =>
      this.#get<Subnetwork>(`projects/${seg(r.project)}/regions/${seg(r.region)}/subnetworks/${seg(r.subnetwork)}`, {}, o),
  };

  readonly machineTypes = {
    get: (r: { project: string; zone: string; machineType: string }, o?: RestCallOptions) =>
      this.#get<MachineType>(`projects/${seg(r.project)}/zones/${seg(r.zone)}/machineTypes/${seg(r.machineType)}`, {}, o),
  };

  readonly routers = {
    list: <R extends ListRequest & { region: string }>(r: R, o?: RestCallOptions) => this.#list<Router, R>(`projects/${seg(r.project)}/regions/${seg(r.region)}/routers`, r, o),
  };
}
