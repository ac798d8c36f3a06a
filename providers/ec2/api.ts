/**
 * The one request pipeline to EC2: lazy SDK loading, bounded concurrency, retries (throttling,
 * 5xx, transient network errors and — where the caller says so — eventual-consistency codes) with
 * the core's `retry()`, and errors mapped to `CloudApiError` carrying the EC2 code and operation.
 *
 * The SDK's own retries are off (`maxAttempts: 1`) so that exactly one layer decides about
 * retries, honours the cluster's abort signal and shows up in logs.
 */
import { inspect, type InspectOptions } from 'node:util';
import { Limiter } from '../../src/cluster/limiter';
import type * as Ec2Sdk from '@aws-sdk/client-ec2';
import type { EC2Client, EC2ClientConfig } from '@aws-sdk/client-ec2';
import { retry, type RetryClock } from '../../src/cluster/retry';
import type { AdapterContext } from '../../src/cluster/vm';
import { CloudApiError, CredentialsError, DaskCloudError } from '../../src/errors';
import { loadCloudSdk } from '../../src/peer';

type Sdk = typeof Ec2Sdk;

/** The EC2 operations dask-cloud uses, with their input and output shapes. */
export interface Ec2Operations {
  DescribeImages: [Ec2Sdk.DescribeImagesCommandInput, Ec2Sdk.DescribeImagesCommandOutput];
  DescribeVpcs: [Ec2Sdk.DescribeVpcsCommandInput, Ec2Sdk.DescribeVpcsCommandOutput];
  DescribeSubnets: [Ec2Sdk.DescribeSubnetsCommandInput, Ec2Sdk.DescribeSubnetsCommandOutput];
  DescribeSecurityGroups: [Ec2Sdk.DescribeSecurityGroupsCommandInput, Ec2Sdk.DescribeSecurityGroupsCommandOutput];
  CreateSecurityGroup: [Ec2Sdk.CreateSecurityGroupCommandInput, Ec2Sdk.CreateSecurityGroupCommandOutput];
  AuthorizeSecurityGroupIngress: [Ec2Sdk.AuthorizeSecurityGroupIngressCommandInput, Ec2Sdk.AuthorizeSecurityGroupIngressCommandOutput];
  DeleteSecurityGroup: [Ec2Sdk.DeleteSecurityGroupCommandInput, Ec2Sdk.DeleteSecurityGroupCommandOutput];
  RunInstances: [Ec2Sdk.RunInstancesCommandInput, Ec2Sdk.RunInstancesCommandOutput];
  DescribeInstances: [Ec2Sdk.DescribeInstancesCommandInput, Ec2Sdk.DescribeInstancesCommandOutput];
  TerminateInstances: [Ec2Sdk.TerminateInstancesCommandInput, Ec2Sdk.TerminateInstancesCommandOutput];
  GetConsoleOutput: [Ec2Sdk.GetConsoleOutputCommandInput, Ec2Sdk.GetConsoleOutputCommandOutput];
  DescribeInstanceTypeOfferings: [Ec2Sdk.DescribeInstanceTypeOfferingsCommandInput, Ec2Sdk.DescribeInstanceTypeOfferingsCommandOutput];
  DescribeInstanceTypes: [Ec2Sdk.DescribeInstanceTypesCommandInput, Ec2Sdk.DescribeInstanceTypesCommandOutput];
  DescribeRouteTables: [Ec2Sdk.DescribeRouteTablesCommandInput, Ec2Sdk.DescribeRouteTablesCommandOutput];
  DescribeRegions: [Ec2Sdk.DescribeRegionsCommandInput, Ec2Sdk.DescribeRegionsCommandOutput];
  DescribeAvailabilityZones: [Ec2Sdk.DescribeAvailabilityZonesCommandInput, Ec2Sdk.DescribeAvailabilityZonesCommandOutput];
}
export type Ec2Operation = keyof Ec2Operations;

/** How the pipeline reaches EC2. */
export interface Ec2ApiConfig {
  /** Region; undefined only when `client` is given (it knows its own). */
  region?: string;
  endpoint?: string;
  credentials?: EC2ClientConfig['credentials'];
  /** A ready-made client: used as is, never destroyed by us. */
  client?: EC2Client;
  /** Attempts per request, the first included. */
  maxAttempts: number;
  /** Requests in flight at once. */
  concurrency: number;
  /** Deadline of one attempt: a request with no answer by then is cut and retried (a hung connection never stalls a start or a teardown). */
  requestTimeoutMs: number;
  /** Overall deadline per request, across its retries. */
  deadlineMs: number;
  /** First backoff delay (doubled per attempt, full jitter). */
  baseDelayMs: number;
  maxDelayMs: number;
  clock?: RetryClock;
}

export interface CallOptions {
  /** EC2 error codes worth another attempt for this call (e.g. `InvalidInstanceID.NotFound` right after create). */
  retryCodes?: readonly string[];
  /**
   * Whether the HTTP request itself may be cancelled by `ctx.signal` (default true). Creates pass
   * false: a RunInstances cut off mid-flight may still have launched instances whose ids we would
   * never learn, so we let it answer and hand the ids to the rollback instead.
   */
  abortable?: boolean;
}

/** Codes EC2 uses for throttling and transient server trouble. */
const RETRYABLE_CODES = new Set([
  'RequestLimitExceeded',
  'Throttling',
  'ThrottlingException',
  'RequestThrottled',
  'TooManyRequestsException',
  'InternalError',
  'InternalFailure',
  'ServiceUnavailable',
  'Unavailable',
  'RequestTimeout',
  'RequestTimeoutException',
]);

/** Node / SDK network failures where the request may not have reached EC2, or its answer was lost. */
const TRANSIENT_NETWORK = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENETUNREACH', 'TimeoutError', 'RequestTimeout']);

interface SdkErrorShape {
  name?: string;
  code?: string;
  Code?: string;
  message?: string;
  $fault?: 'client' | 'server';
  $metadata?: { httpStatusCode?: number; requestId?: string };
}

/** The EC2 error code of an SDK error (`RequestLimitExceeded`, `DependencyViolation`, ...), or of our mapped error. */
export function ec2ErrorCode(err: unknown): string | undefined {
  if (DaskCloudError.isInstance(err)) {
    const code = err.details.ec2Code;
    return typeof code === 'string' ? code : undefined;
  }
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as SdkErrorShape;
  return e.Code ?? (e.$metadata ? e.name : undefined) ?? e.code;
}

function httpStatus(err: unknown): number | undefined {
  return (err as SdkErrorShape | undefined)?.$metadata?.httpStatusCode;
}

/** Throttling, 5xx and transient network errors: safe to retry for every call we make (creates carry a ClientToken). */
export function isTransient(err: unknown): boolean {
  if (DaskCloudError.isInstance(err)) return false;
  const code = ec2ErrorCode(err);
  if (code !== undefined && (RETRYABLE_CODES.has(code) || TRANSIENT_NETWORK.has(code))) return true;
  const status = httpStatus(err);
  if (status !== undefined && status >= 500) return true;
  if (status === undefined && (err as SdkErrorShape | undefined)?.name === 'TimeoutError') return true;
  return false;
}


/** An attempt that got no answer in time: a TimeoutError, which isTransient retries. */
function attemptTimedOut(operation: string, ms: number): Error {
  const err = new Error(`ec2 ${operation}: no answer within ${ms} ms`);
  err.name = 'TimeoutError';
  return err;
}

/** EC2 requests for one cluster. Creates its client (and loads the SDK) on the first call. */
export class Ec2Api {
  readonly #config: Ec2ApiConfig;
  readonly #limiter: Limiter;
  #loaded: Promise<{ sdk: Sdk; client: EC2Client }> | undefined;
  #ownsClient = false;

  constructor(config: Ec2ApiConfig) {
    this.#config = config;
    this.#limiter = new Limiter(config.concurrency);
  }

  /** The SDK module and the client, loaded on first use (`import 'dask-cloud'` never loads the SDK). */
  load(): Promise<{ sdk: Sdk; client: EC2Client }> {
    this.#loaded ??= (async () => {
      const sdk = loadCloudSdk<Sdk>('ec2');
      if (this.#config.client) return { sdk, client: this.#config.client };
      this.#ownsClient = true;
      const client = new sdk.EC2Client({
        region: this.#config.region,
        ...(this.#config.endpoint !== undefined ? { endpoint: this.#config.endpoint } : {}),
        ...(this.#config.credentials !== undefined ? { credentials: this.#config.credentials } : {}),
        // Our pipeline owns retries (see the file comment).
        maxAttempts: 1,
      });
      return { sdk, client };
    })();
    return this.#loaded;
  }

  /** The region requests go to (from the client when one was given). */
  async region(): Promise<string> {
    if (this.#config.region !== undefined) return this.#config.region;
    const { client } = await this.load();
    return client.config.region();
  }

  /**
   * Resolves the client's credentials through the SDK's provider chain (or the given client's own)
   * and says where they came from, never what they are. Throws `CredentialsError` when the chain
   * finds none: nothing has been sent to EC2 then.
   */
  async credentialSource(): Promise<string> {
    const { client } = await this.load();
    let credentials: { $source?: Record<string, unknown> };
    try {
      credentials = (await client.config.credentials()) as { $source?: Record<string, unknown> };
    } catch (err) {
      throw new CredentialsError(
        `ec2: no AWS credentials found (${errorText(err)}). The AWS SDK looked in the environment, the shared config and credentials files (profile ${process.env.AWS_PROFILE || 'default'}), SSO, web identity, and the container and instance metadata endpoints`,
        {
          cause: err,
          details: {
            provider: 'ec2',
            fix: 'run `aws configure` (or `aws sso login --profile NAME`), set AWS_PROFILE to a configured profile, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys) in the environment',
          },
        },
      );
    }
    if (this.#config.credentials !== undefined) return 'the credentials option';
    return describeSource(Object.keys(credentials.$source ?? {}));
  }

  /**
   * Sends one EC2 request through the pipeline. Failures become `CloudApiError` with
   * `details: { provider: 'ec2', operation, ec2Code, httpStatus, requestId, attempts }`.
   */
  async call<K extends Ec2Operation>(ctx: AdapterContext, operation: K, input: Ec2Operations[K][0], options: CallOptions = {}): Promise<Ec2Operations[K][1]> {
    const { sdk, client } = await this.load();
    const Command = (sdk as unknown as Record<string, new (input: unknown) => Parameters<EC2Client['send']>[0]>)[`${operation}Command`];
    const extra = new Set(options.retryCodes ?? []);
    const abortable = options.abortable ?? true;
    let attempts = 0;
    const started = Date.now();
    try {
      return await retry(
        async (attempt) => {
          attempts = attempt;
          // An aborted create is not started; once started it is retried to the end with its
          // ClientToken, so that the ids of whatever it launched reach the rollback.
          if (ctx.signal.aborted && (abortable || attempt === 1)) throw abortError(`ec2 ${operation}`, ctx.signal);
          const command = new Command(input);
          const output = await this.#limiter.run(async () => {
            // The attempt's own deadline, started once it holds a slot: it covers a connection
            // that never answers (our own client and a given one alike).
            const late = AbortSignal.timeout(this.#config.requestTimeoutMs);
            try {
              return await client.send(command, { abortSignal: abortable ? AbortSignal.any([ctx.signal, late]) : late });
            } catch (err) {
              if (late.aborted && !(abortable && ctx.signal.aborted)) throw attemptTimedOut(operation, this.#config.requestTimeoutMs);
              throw err;
            }
          });
          ctx.log('ec2 %s ok (attempt %d, %d ms)', operation, attempt, Date.now() - started);
          return output as Ec2Operations[K][1];
        },
        {
          retryable: (err) => {
            if (ctx.signal.aborted && abortable) return false;
            if (attempts >= this.#config.maxAttempts) return false;
            const code = ec2ErrorCode(err);
            return isTransient(err) || (code !== undefined && extra.has(code));
          },
          timeoutMs: this.#config.deadlineMs,
          baseDelayMs: this.#config.baseDelayMs,
          maxDelayMs: this.#config.maxDelayMs,
          what: `ec2 ${operation}`,
          // Retries of a create must not be cut short by an abort either: see CallOptions.abortable.
          signal: abortable ? ctx.signal : undefined,
          clock: this.#config.clock,
          onRetry: (err, attempt, delayMs) => ctx.log('ec2 %s attempt %d failed (%s); retrying in %d ms', operation, attempt, ec2ErrorCode(err) ?? errorText(err), delayMs),
        },
      );
    } catch (err) {
      throw toCloudApiError(operation, err, attempts, ctx.signal);
    }
  }

  /** A safe summary: where requests go, never the credentials or the client. */
  toJSON(): { region?: string; endpoint?: string; credentials: 'given' | 'default chain' | 'client' } {
    const c = this.#config;
    const credentials = c.client !== undefined ? 'client' : c.credentials !== undefined ? 'given' : 'default chain';
    return { ...(c.region === undefined ? {} : { region: c.region }), ...(c.endpoint === undefined ? {} : { endpoint: c.endpoint }), credentials };
  }

  /** `console.log(api)` shows {@link Ec2Api.toJSON}. */
  [inspect.custom](depth: number, options: InspectOptions, render: typeof inspect): string {
    return depth < 0 ? '[Ec2Api]' : `Ec2Api ${render(this.toJSON(), options)}`;
  }

  /** Releases the client's sockets, if we created the client. */
  dispose(): void {
    if (!this.#ownsClient || !this.#loaded) return;
    void this.#loaded.then(({ client }) => client.destroy()).catch(() => undefined);
    this.#loaded = undefined;
    this.#ownsClient = false;
  }
}

/** Where the SDK found credentials, from the features it marks them with (`$source`). */
function describeSource(features: string[]): string {
  const has = (prefix: string) => features.some((f) => f.startsWith(prefix));
  const profile = `profile ${process.env.AWS_PROFILE || 'default'}`;
  if (has('CREDENTIALS_CODE')) return 'credentials passed in code (the client option)';
  if (has('CREDENTIALS_ENV_VARS_STS_WEB_ID_TOKEN')) return 'a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE)';
  if (has('CREDENTIALS_ENV_VARS')) return 'the environment (AWS_ACCESS_KEY_ID)';
  if (has('CREDENTIALS_PROFILE_SSO') || has('CREDENTIALS_SSO')) return `SSO (${profile})`;
  if (has('CREDENTIALS_PROFILE_PROCESS') || has('CREDENTIALS_PROCESS')) return `credential_process (${profile})`;
  if (has('CREDENTIALS_STS_ASSUME_ROLE') || has('CREDENTIALS_PROFILE_SOURCE_PROFILE')) return `an assumed role (${profile})`;
  if (has('CREDENTIALS_PROFILE')) return `the shared credentials/config files (${profile})`;
  if (has('CREDENTIALS_HTTP')) return 'the container credentials endpoint';
  return 'the instance metadata service or a custom provider';
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The error for work cut short by `signal` (`E_ABORTED`, as the rest of the library reports aborts). */
export function abortError(what: string, signal: AbortSignal): DaskCloudError {
  return new DaskCloudError('E_ABORTED', `${what} was aborted`, { cause: signal.reason });
}

/** Maps what the SDK (or our retry) threw to a CloudApiError; aborts become E_ABORTED. */
function toCloudApiError(operation: Ec2Operation, err: unknown, attempts: number, signal: AbortSignal): unknown {
  if (DaskCloudError.isInstance(err) && err.code === 'E_ABORTED') return err;
  if (signal.aborted && (err === signal.reason || (err as Error | undefined)?.name === 'AbortError')) return abortError(`ec2 ${operation}`, signal);
  // retry() wraps the last failure when its deadline passes: report that failure.
  const last = DaskCloudError.isInstance(err) && err.code === 'E_TIMEOUT' && err.cause !== undefined ? err.cause : err;
  if (DaskCloudError.isInstance(last) && last.code === 'E_CLOUD_API') return last;
  const code = ec2ErrorCode(last);
  const status = httpStatus(last);
  const requestId = (last as SdkErrorShape | undefined)?.$metadata?.requestId;
  const tries = attempts > 1 ? ` after ${attempts} attempts` : '';
  return new CloudApiError(`ec2 ${operation} failed${tries}: ${code ?? 'error'}: ${errorText(last)}`, {
    cause: last,
    details: { provider: 'ec2', operation, ec2Code: code, httpStatus: status, requestId, attempts },
  });
}
