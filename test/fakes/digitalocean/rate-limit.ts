/**
 * DigitalOcean's API rate limits, as documented: 5,000 requests per hour (a sliding window: a
 * request "expires" an hour after it was made) and 250 per minute (bursty). Every answer carries
 * the *hourly* state in `ratelimit-limit` / `ratelimit-remaining` / `ratelimit-reset` (epoch
 * seconds at which the oldest counted request expires). Over either limit → 429
 * `{ id: 'too_many_requests', message: 'API Rate limit exceeded.' }`; the burst (per-minute) 429
 * also carries `Retry-After` in seconds (DigitalOcean release note, Aug 2023).
 *
 * Built on the core's `Faults.throttle` (one rule per window).
 */
import { TokenBucket, type BucketState, type Clock, type FailureSpec, type FaultHandle, type Faults } from '../core';

export interface RateLimitOptions {
  /** Requests per minute, bursty (token bucket). DigitalOcean: 250. */
  perMinute?: number;
  /** Requests per hour, sliding window. DigitalOcean: 5,000. */
  perHour?: number;
}

export const DO_RATE_LIMITS = { perMinute: 250, perHour: 5_000 } as const;

export const TOO_MANY_REQUESTS = { id: 'too_many_requests', message: 'API Rate limit exceeded.' } as const;

/**
 * A sliding window that fits the core's throttle rule (which takes a TokenBucket): `take()`
 * counts requests made during the last `windowMs`; `resetAt` is when the oldest one expires.
 */
export class SlidingWindow extends TokenBucket {
  private readonly stamps: number[] = [];
  private readonly limit: number;
  private readonly windowMs: number;
  private readonly time: Clock;

  constructor(opts: { limit: number; windowMs: number; clock: Clock }) {
    super({ capacity: opts.limit, refill: opts.limit, intervalMs: opts.windowMs, clock: opts.clock });
    this.limit = opts.limit;
    this.windowMs = opts.windowMs;
    this.time = opts.clock;
  }

  override take(n = 1): BucketState {
    this.expire();
    const allowed = this.stamps.length + n <= this.limit;
    if (allowed) for (let i = 0; i < n; i++) this.stamps.push(this.time.now());
    return this.snapshot(allowed);
  }

  override peek(): BucketState {
    this.expire();
    return this.snapshot(this.stamps.length < this.limit);
  }

  private expire(): void {
    const cutoff = this.time.now() - this.windowMs;
    let drop = 0;
    while (drop < this.stamps.length && this.stamps[drop] <= cutoff) drop++;
    if (drop) this.stamps.splice(0, drop);
  }

  private snapshot(allowed: boolean): BucketState {
    const now = this.time.now();
    const oldest = this.stamps[0];
    const resetAt = oldest === undefined ? now : oldest + this.windowMs;
    return {
      allowed,
      limit: this.limit,
      remaining: Math.max(0, this.limit - this.stamps.length),
      resetAt,
      retryAfterMs: allowed ? 0 : Math.max(0, resetAt - now),
    };
  }
}

/** The DigitalOcean rate limiter: installs its rules on `faults`, removable as a whole. */
export class DoRateLimiter {
  readonly minute: TokenBucket;
  readonly hour: SlidingWindow;
  private readonly handles: FaultHandle[];

  constructor(faults: Faults, clock: Clock, opts: RateLimitOptions = {}) {
    const perMinute = opts.perMinute ?? DO_RATE_LIMITS.perMinute;
    const perHour = opts.perHour ?? DO_RATE_LIMITS.perHour;
    this.minute = new TokenBucket({ capacity: perMinute, refill: perMinute, intervalMs: 60_000, clock });
    this.hour = new SlidingWindow({ limit: perHour, windowMs: 3_600_000, clock });
    const reject = (headers: Record<string, string>): FailureSpec => ({
      status: 429,
      code: TOO_MANY_REQUESTS.id,
      message: TOO_MANY_REQUESTS.message,
      headers,
    });
    this.handles = [
      // Burst first: a request refused for the burst does not count against the hour. Its answer
      // carries the hourly headers (peeked) plus Retry-After.
      faults.throttle(/.*/, {
        bucket: this.minute,
        reject: (s) => reject({ ...headersFor(this.hour.peek()), 'retry-after': String(Math.max(1, Math.ceil(s.retryAfterMs / 1000))) }),
      }),
      faults.throttle(/.*/, { bucket: this.hour, headers: headersFor, reject: () => reject({}) }),
    ];
  }

  /** The headers an answer that bypassed the throttle rules (contract / routing errors) carries. */
  currentHeaders(): Record<string, string> {
    return headersFor(this.hour.peek());
  }

  remove(): void {
    for (const h of this.handles) h.remove();
  }
}

export function headersFor(s: BucketState): Record<string, string> {
  return {
    'ratelimit-limit': String(s.limit),
    'ratelimit-remaining': String(s.remaining),
    'ratelimit-reset': String(Math.ceil(s.resetAt / 1000)),
  };
}
