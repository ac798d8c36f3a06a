/**
 * One error hierarchy for the whole library. Every error has a stable, machine-readable `code`;
 * messages are written for people and never contain private key material.
 *
 * `isInstance` checks a brand symbol rather than the prototype chain, so it works across
 * duplicate copies of the package (ESM + CJS, or two versions in one tree).
 */

import { inspect, type InspectOptions } from 'node:util';

const BRAND = Symbol.for('dask-cloud.error');

/**
 * Keys whose values no summary shows, whatever object carries them: the HTTP request / config
 * objects SDK errors keep (with their Authorization headers), and anything named like a secret.
 */
const SECRET_KEY =
  /^(authorization|proxy-authorization|cookie|set-cookie|x-amz-security-token|headers|config|request|options|token|access_?token|refresh_?token|id_?token|session_?token|secret_?access_?key|client_?secret|secret|password|private_?key|key|credentials)$/i;

/** The fields of a foreign (SDK, Node) error a summary shows; its request, config and response stay out. */
const FOREIGN_ERROR_FIELDS = ['code', 'Code', 'status', 'statusCode', 'reason', 'errno', 'syscall', '$fault'] as const;

/** How deep a summary follows nested details and causes. */
const SUMMARY_DEPTH = 6;

function safeValue(value: unknown, depth: number): unknown {
  if (typeof value === 'function') return '[Function]';
  if (typeof value === 'bigint' || typeof value === 'symbol') return String(value);
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Error) return errorSummary(value, depth);
  if (depth <= 0) return '[...]';
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? 'Invalid Date' : value.toISOString();
  if (Array.isArray(value)) return value.map((v) => safeValue(v, depth - 1));
  const proto = Object.getPrototypeOf(value) as object | null;
  // Plain data only: an SDK client, a socket or a Security is named, never walked.
  if (proto !== Object.prototype && proto !== null) return `[${(value as { constructor?: { name?: string } }).constructor?.name ?? 'object'}]`;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? '[redacted]' : safeValue(v, depth - 1);
  return out;
}

/**
 * A summary of any error that is safe to print or serialise: name, code, message and plain
 * details, and the same for its cause chain. An SDK error's request, config, headers and
 * response are left out (they can carry credentials); of its `$metadata` only the HTTP status
 * and request id are kept.
 */
export function errorSummary(err: unknown, depth = SUMMARY_DEPTH): unknown {
  if (!(err instanceof Error) && !DaskCloudError.isInstance(err)) return safeValue(err, depth);
  const e = err as Error & Record<string, unknown>;
  const out: Record<string, unknown> = { name: e.name, message: e.message };
  if (DaskCloudError.isInstance(err)) {
    out.code = err.code;
    out.details = safeValue(err.details, depth - 1);
  } else {
    for (const f of FOREIGN_ERROR_FIELDS) {
      const v = e[f];
      if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[f] = v;
    }
    const meta = e.$metadata as { httpStatusCode?: unknown; requestId?: unknown } | undefined;
    if (meta && typeof meta === 'object') out.$metadata = { httpStatusCode: meta.httpStatusCode, requestId: meta.requestId };
  }
  if (e.cause !== undefined) out.cause = depth > 0 ? errorSummary(e.cause, depth - 1) : '[...]';
  return out;
}

export type ErrorCode =
  // option / input validation
  | 'E_INVALID_OPTION'
  // security material
  | 'E_PEM_FILE'
  | 'E_PEM_INVALID'
  | 'E_KEY_MISMATCH'
  | 'E_CERT_NOT_ISSUED_BY_CA'
  | 'E_CERT_EXPIRED'
  | 'E_CERT_NOT_YET_VALID'
  | 'E_KEY_TOO_SMALL'
  | 'E_CERT_USAGE'
  | 'E_TLS_VERSION'
  | 'E_TLS_CIPHERS'
  | 'E_SECURITY_INCOMPLETE'
  // cloud-init
  | 'E_TEMPLATE'
  | 'E_USER_DATA_TOO_LARGE'
  // dask comm
  | 'E_CONNECT_REFUSED'
  | 'E_TLS_REFUSED'
  | 'E_UNTRUSTED_SCHEDULER'
  | 'E_PLAINTEXT_PEER'
  | 'E_TLS_PEER'
  | 'E_TIMEOUT'
  | 'E_ABORTED'
  | 'E_PROTOCOL'
  | 'E_REMOTE'
  | 'E_CONNECTION_CLOSED'
  // processes / local runtime
  | 'E_PYTHON_NOT_FOUND'
  | 'E_PROCESS_EXITED'
  // lifecycle
  | 'E_START_FAILED'
  | 'E_CLUSTER_STATE'
  | 'E_CLOUD_API'
  | 'E_TEARDOWN'
  // a cluster started elsewhere: its local directory, or the cluster itself, is missing
  | 'E_NO_LOCAL_STATE'
  | 'E_NOT_FOUND'
  // read-only checks before anything is created
  | 'E_CREDENTIALS'
  | 'E_PREFLIGHT'
  | 'E_VERSION_MISMATCH'
  // packaging
  | 'E_MISSING_DEPENDENCY';

export interface DaskCloudErrorOptions {
  cause?: unknown;
  /** Extra machine-readable details. Must never hold key material. */
  details?: Record<string, unknown>;
}

export class DaskCloudError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  readonly [BRAND] = true;

  constructor(code: ErrorCode, message: string, options: DaskCloudErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details ?? {};
  }

  /** True for any dask-cloud error (or subclass instance when called on a subclass). */
  // `this` is typed structurally so every subclass can call it, whatever its constructor takes.
  static isInstance<T extends DaskCloudError>(this: abstract new (...args: never[]) => T, value: unknown): value is T {
    if (typeof value !== 'object' || value === null || (value as Record<symbol, unknown>)[BRAND] !== true) {
      return false;
    }
    if ((this as unknown) === DaskCloudError) return true;
    // Walk the prototype chain by constructor name so duplicated copies still match.
    for (let p = Object.getPrototypeOf(value); p; p = Object.getPrototypeOf(p)) {
      if (p.constructor?.name === this.name) return true;
    }
    return false;
  }

  /**
   * A safe summary: name, code, message, plain details and the cause chain summarised the same
   * way (see {@link errorSummary}). `JSON.stringify(err)` uses it.
   */
  toJSON(): { name: string; code: ErrorCode; message: string; details: unknown; cause?: unknown } {
    return errorSummary(this) as { name: string; code: ErrorCode; message: string; details: unknown; cause?: unknown };
  }

  /** `console.log(err)` shows the stack, then the summary's code, details and cause: never an SDK's request or headers. */
  [inspect.custom](depth: number, options: InspectOptions, render: typeof inspect): string {
    const { name: _name, message: _message, ...fields } = this.toJSON();
    const head = this.stack ?? `${this.name}: ${this.message}`;
    return depth < 0 ? `[${this.name}: ${this.message}]` : `${head} ${render(fields, { ...options, depth: SUMMARY_DEPTH + 2 })}`;
  }
}

/** An option passed by the caller is missing, of the wrong type, or out of range. */
export class ValidationError extends DaskCloudError {
  constructor(message: string, options: DaskCloudErrorOptions & { option?: string } = {}) {
    super('E_INVALID_OPTION', message, { ...options, details: { option: options.option, ...options.details } });
  }
}

/** TLS material is missing, malformed, inconsistent or out of date. */
export class SecurityError extends DaskCloudError {}

/**
 * Client and cluster run different Dask, distributed, Python, cloudpickle or msgpack
 * (`strictVersions`). `details.mismatches` lists each package with both sides' versions.
 */
export class VersionMismatchError extends DaskCloudError {
  constructor(message: string, options: DaskCloudErrorOptions = {}) {
    super('E_VERSION_MISMATCH', message, options);
  }
}

/** A template failed to render, or rendered user-data does not fit the provider's limit. */
export class UserDataError extends DaskCloudError {}

/** Talking to a Dask scheduler failed: connection, TLS, handshake, timeout or a remote error. */
export class DaskCommError extends DaskCloudError {}

/** No usable Python with `distributed`, or a local Dask process exited. */
export class LocalRuntimeError extends DaskCloudError {}

/** Starting a cluster failed; everything it created has been deleted before this is thrown. */
export class ClusterStartError extends DaskCloudError {}

/** An operation is not allowed in the cluster's current state (e.g. scale before start). */
export class ClusterStateError extends DaskCloudError {
  constructor(message: string, options: DaskCloudErrorOptions = {}) {
    super('E_CLUSTER_STATE', message, options);
  }
}

/** A cloud API call failed after retries. */
export class CloudApiError extends DaskCloudError {
  constructor(message: string, options: DaskCloudErrorOptions = {}) {
    super('E_CLOUD_API', message, options);
  }
}

/**
 * No usable cloud credentials were found, or the cloud refused them. Thrown by `preflight()` and
 * `start()` before any other call; the message says how that cloud's own tools set them up.
 */
export class CredentialsError extends DaskCloudError {
  constructor(message: string, options: DaskCloudErrorOptions = {}) {
    super('E_CREDENTIALS', message, options);
  }
}

/**
 * A read-only check of the account failed before anything was created (a missing NAT, no quota
 * left, a permission the cluster needs). `details.checks` lists every failed check with its fix.
 */
export class PreflightError extends DaskCloudError {
  constructor(message: string, options: DaskCloudErrorOptions = {}) {
    super('E_PREFLIGHT', message, options);
  }
}

/**
 * Deleting a cluster's resources failed part way. Every deletion was still tried;
 * `details.leftovers` names what may remain, and the message gives the cleanup command.
 */
export class TeardownError extends DaskCloudError {
  readonly leftovers: string[];
  constructor(message: string, leftovers: string[], options: DaskCloudErrorOptions = {}) {
    super('E_TEARDOWN', message, { ...options, details: { ...options.details, leftovers } });
    this.leftovers = leftovers;
  }
}

/**
 * A cloud's SDK is an optional peer dependency and is not installed. `details.install` is the
 * exact command that fixes it, e.g. `npm install google-auth-library@^10.5.0`.
 */
export class MissingDependencyError extends DaskCloudError {
  constructor(message: string, options: DaskCloudErrorOptions = {}) {
    super('E_MISSING_DEPENDENCY', message, options);
  }
}
