/**
 * The limits every numeric and typed option is checked against, once, so a constructor,
 * `scale()`, `adapt()` and the CLI refuse the same values with the same typed error before
 * anything is created or launched.
 */
import { ValidationError } from '../errors';

/**
 * The longest delay Node's timers honour: `setTimeout` treats anything above 2^31−1 ms (about
 * 24.8 days) as 1 ms, so a larger `*Ms` option would turn a wait into a busy loop.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Most workers one cluster may have, by kind. From each cloud's reality:
 * - `gcp`: one `instances.bulkInsert` request creates at most 5,000 VMs;
 * - `ec2`: RunInstances' resource bucket bursts to 1,000 instances, then refills 2 a second: the
 *   next 1,000 take about 8 minutes, inside the default 10-minute deadline for workers;
 * - `digitalocean`: 10 Droplets per create and 250 requests a minute: 1,000 is 100 creates;
 * - `local`: every worker is a Python process on this machine (~100 MB each).
 * No kind goes above {@link MAX_WORKERS_ANY}.
 */
export const MAX_WORKERS: Readonly<Record<'local' | 'gcp' | 'ec2' | 'digitalocean', number>> = Object.freeze({
  local: 1_000,
  gcp: 5_000,
  ec2: 2_000,
  digitalocean: 1_000,
});

/** Cap for a cluster kind this table does not know (a custom backend). */
export const MAX_WORKERS_ANY = 10_000;

/** Most workers a cluster of `kind` may have. */
export function maxWorkersFor(kind: string): number {
  return (MAX_WORKERS as Record<string, number>)[kind] ?? MAX_WORKERS_ANY;
}

/** Threads per worker: more than any machine has cores. */
export const MAX_WORKER_NTHREADS = 1_024;

/**
 * Longest validity of generated certificates: ten years and ten days, so a cluster with the
 * longest `expiresAfterHours` still gets certificates that outlive it by their hour. Every date
 * stays a valid X.509 time (and a valid JavaScript Date).
 */
export const MAX_VALIDITY_DAYS = 3_660;

/** Longest `expiresAfterHours` of a VM cluster: ten years. */
export const MAX_EXPIRES_AFTER_HOURS = 87_600;

/** Longest back-dating of `notBefore`: one day of clock skew is already a broken clock. */
export const MAX_BACKDATE_MINUTES = 1_440;

/** `adapt()`'s `waitCount`: consecutive lower targets before scaling down. */
export const MAX_WAIT_COUNT = 10_000;

function describe(value: unknown): string {
  // A long string in the wrong option may be a token or key pasted there: never echo it back.
  if (typeof value === 'string') return value.length > 32 ? `a string of ${value.length} characters` : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint' || value === undefined || value === null) {
    return Object.is(value, -0) ? '-0' : String(value);
  }
  if (Array.isArray(value)) return 'an array';
  return `a ${typeof value}`;
}

/**
 * A timer option: a finite number of milliseconds, above 0 (or 0 with `allowZero`, which means
 * "off"), at most {@link MAX_TIMER_MS}. `undefined` passes (the default applies).
 */
export function checkTimerMs(value: unknown, option: string, opts: { allowZero?: boolean } = {}): void {
  if (value === undefined) return;
  const ok =
    typeof value === 'number' && Number.isFinite(value) && value <= MAX_TIMER_MS && (opts.allowZero ? value >= 0 && !Object.is(value, -0) : value > 0);
  if (!ok) {
    const what = opts.allowZero ? 'a number of milliseconds >= 0 (0 turns it off)' : 'a positive number of milliseconds';
    throw new ValidationError(
      `${option} must be ${what}, got ${describe(value)} (at most ${MAX_TIMER_MS}, 2^31-1 ms or about 24.8 days: Node's timers cannot wait longer)`,
      { option },
    );
  }
}

/**
 * An integer in `[min, max]`. `undefined` passes. `why` explains the maximum in the message
 * (e.g. the cloud limit it comes from).
 */
export function checkInteger(value: unknown, option: string, min: number, max: number, why = ''): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || Object.is(value, -0) || value < min || value > max) {
    const what = min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : 'a whole number';
    const range = min === 0 || min === 1 ? `at most ${max}` : `from ${min} to ${max}`;
    throw new ValidationError(`${option} must be ${what}, got ${describe(value)} (${range}${why ? `: ${why}` : ''})`, { option });
  }
}

/** A worker count for a cluster of `kind`: a whole number from `min` to the kind's cap. */
export function checkWorkerCount(value: unknown, option: string, kind: string, min = 0): void {
  const max = maxWorkersFor(kind);
  checkInteger(value, option, min, max, `the most a ${kind} cluster may have; ask for a larger quota and split the work over clusters beyond it`);
}

/** A finite number in `(0, max]` (or `[0, max]` with `allowZero`). `undefined` passes. */
export function checkPositive(value: unknown, option: string, max: number, unit = '', opts: { allowZero?: boolean } = {}): void {
  if (value === undefined) return;
  const ok = typeof value === 'number' && Number.isFinite(value) && (opts.allowZero ? value >= 0 : value > 0) && value <= max && !Object.is(value, -0);
  if (!ok) {
    const what = opts.allowZero ? 'a number >= 0' : 'a positive number';
    throw new ValidationError(`${option} must be ${what}, got ${describe(value)} (at most ${max}${unit ? ` ${unit}` : ''})`, { option });
  }
}

/** An `AbortSignal` (or `undefined`). */
export function checkSignal(value: unknown, option = 'signal'): void {
  if (value === undefined) return;
  if (!(value instanceof AbortSignal)) {
    throw new ValidationError(`${option} must be an AbortSignal (e.g. AbortSignal.timeout(60_000) or an AbortController's signal), got ${describe(value)}`, { option });
  }
}

/** A function (or `undefined`). */
export function checkFunction(value: unknown, option: string): void {
  if (value !== undefined && typeof value !== 'function') throw new ValidationError(`${option} must be a function, got ${describe(value)}`, { option });
}

/** `true` or `false` (or `undefined`). */
export function checkBoolean(value: unknown, option: string): void {
  if (value !== undefined && typeof value !== 'boolean') throw new ValidationError(`${option} must be true or false, got ${describe(value)}`, { option });
}

/** A plain options object (not `null`, an array or a primitive); `what` names it. */
export function checkOptionsObject(value: unknown, what: string): asserts value is object {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ValidationError(`${what} must be an object of options, got ${describe(value)}`, { option: what });
  }
}

/**
 * A plain copy of an options object, read once: a getter or proxy trap that throws becomes a
 * ValidationError, and a getter cannot return something else after validation.
 */
export function readOptions<T extends object>(value: T, what: string): T {
  checkOptionsObject(value, what);
  try {
    return Object.fromEntries(Object.entries(value)) as T;
  } catch (err) {
    throw new ValidationError(`${what} could not be read: ${err instanceof Error ? err.message : String(err)}`, { option: what, cause: err });
  }
}

export { describe as describeValue };
