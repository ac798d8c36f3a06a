/**
 * GCP's error shape and the handful of errors the Compute API really answers with.
 *
 * Body: `{"error": {"code": 404, "message": "...", "errors": [{"message", "domain", "reason"}],
 * "status": "NOT_FOUND"}}`. google-gax maps `status` to the SDK error's gRPC `code` (NOT_FOUND → 5,
 * ALREADY_EXISTS → 6, INVALID_ARGUMENT → 3, PERMISSION_DENIED → 7) and keeps `message`; an
 * `ErrorInfo` detail becomes `err.reason` / `err.domain`.
 */
import { FakeApiError, type ApiErrorInfo, type ErrorShaper, type FakeResponse } from '../core';

/** The canonical status string Google puts next to each HTTP code. */
const STATUS_BY_HTTP: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'ALREADY_EXISTS',
  412: 'FAILED_PRECONDITION',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  501: 'UNIMPLEMENTED',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};

/** Reasons that live in the `usageLimits` domain (everything else is `global`). */
const USAGE_LIMIT_REASONS = new Set(['rateLimitExceeded', 'userRateLimitExceeded', 'quotaExceeded', 'dailyLimitExceeded']);

/** Details a handler can attach to a FakeApiError (`details` argument). */
export interface GcpErrorDetails {
  /** `errors[0].reason`; default: the FakeApiError code. */
  reason?: string;
  domain?: string;
}

/** Turns any error the FakeServer meets into Compute's JSON error. */
export const gcpErrorShape: ErrorShaper = (e: ApiErrorInfo): FakeResponse => {
  let status = e.status;
  let reason = (e.details as GcpErrorDetails | undefined)?.reason ?? e.code;
  let message = e.message;
  switch (e.source) {
    case 'contract':
      // Google answers a malformed request with 400 `invalid` ("Invalid value for field ...") or
      // `badRequest` (unknown name / parameter).
      reason = e.violations?.some((v) => v.kind === 'wrong-type' || v.kind === 'missing-property') ? 'invalid' : 'badRequest';
      message = `Invalid request (rejected by the published Compute contract): ${e.message}`;
      break;
    case 'no-route':
      reason = status === 404 ? 'notFound' : 'notImplemented';
      break;
    case 'internal':
      reason = 'backendError';
      break;
    default:
      break;
  }
  const domain = (e.details as GcpErrorDetails | undefined)?.domain ?? (USAGE_LIMIT_REASONS.has(reason) ? 'usageLimits' : 'global');
  const error: Record<string, unknown> = {
    code: status,
    message,
    errors: [{ message, domain, reason }],
    status: STATUS_BY_HTTP[status] ?? 'UNKNOWN',
  };
  if (reason === 'rateLimitExceeded') {
    // What Google adds for per-minute API quotas; google-gax surfaces it as err.reason = 'RATE_LIMIT_EXCEEDED'.
    error.details = [
      {
        '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
        reason: 'RATE_LIMIT_EXCEEDED',
        domain: 'googleapis.com',
        metadata: { service: 'compute.googleapis.com', quota_limit: 'defaultPerMinutePerProject', quota_location: 'global' },
      },
    ];
  }
  status = status || 500;
  return { status, body: { error } };
};

// ---------------------------------------------------------------------------------------------
// The errors handlers throw, with Compute's wording.

/** 404 `The resource 'projects/p/zones/z/instances/x' was not found`. */
export function notFound(resource: string): FakeApiError {
  return new FakeApiError(404, 'notFound', `The resource '${resource}' was not found`);
}

/** 409 `The resource '...' already exists`. */
export function alreadyExists(resource: string): FakeApiError {
  return new FakeApiError(409, 'alreadyExists', `The resource '${resource}' already exists`);
}

/** 400 `Invalid value for field 'resource.x': 'v'. Why.` */
export function invalidField(field: string, value: unknown, why: string): FakeApiError {
  const shown = typeof value === 'string' ? value : JSON.stringify(value ?? '');
  return new FakeApiError(400, 'invalid', `Invalid value for field '${field}': '${shown}'. ${why}`);
}

/** 400 `Required field 'resource.x' not specified`. */
export function requiredField(field: string): FakeApiError {
  return new FakeApiError(400, 'required', `Required field '${field}' not specified`);
}

/** 400 with reason `badRequest` (or another reason). */
export function badRequest(message: string, reason = 'badRequest'): FakeApiError {
  return new FakeApiError(400, reason, message);
}

/** 400 for a valid request this fake chooses not to model (never silently ignored). */
export function notModelled(what: string): FakeApiError {
  return new FakeApiError(400, 'badRequest', `fake-gcp does not model ${what}`);
}

/** 412 `conditionNotMet` (stale fingerprint). */
export function conditionNotMet(message: string): FakeApiError {
  return new FakeApiError(412, 'conditionNotMet', message);
}
