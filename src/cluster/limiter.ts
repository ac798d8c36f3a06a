/**
 * Bounded concurrency and pacing for a cloud's request pipeline: at most `max` calls in flight,
 * and, with a `rate`, no more calls started than the cloud's documented request budget allows
 * (a token bucket: `burst` at once, then `perSecond`). The rest wait in FIFO order. A waiter
 * whose signal aborts leaves the queue without taking a slot or a token.
 *
 * However many calls are queued, the limiter holds one timer, and one abort listener per signal
 * (see abort.ts): a thousand queued deletes must not print Node's MaxListenersExceededWarning.
 */
import { onAbort } from './abort';

export interface LimiterRate {
  /** Calls that may start at once (the bucket's size). */
  burst: number;
  /** Calls allowed per second after the burst (the refill rate). */
  perSecond: number;
}

export interface LimiterOptions {
  rate?: LimiterRate;
  /** For tests: the time source (ms). */
  now?: () => number;
}

/**
 * A token bucket of a cloud's documented budget (requests, or instances launched): `burst` at
 * once, refilled at `perSecond`. Taking more than is there leaves a debt the refill pays first.
 */
export class Budget {
  readonly rate: LimiterRate;
  readonly #now: () => number;
  #tokens: number;
  #refilledAt: number;

  constructor(rate: LimiterRate, now: () => number = Date.now) {
    this.rate = rate;
    this.#now = now;
    this.#tokens = rate.burst;
    this.#refilledAt = now();
  }

  /** Tokens there now (may be negative: a debt). */
  available(): number {
    this.#refill();
    return this.#tokens;
  }

  /** Ms until `n` tokens are there (0: now). */
  waitMs(n = 1): number {
    const short = n - this.available();
    return short <= 0 ? 0 : Math.ceil((short / this.rate.perSecond) * 1000);
  }

  take(n = 1): void {
    this.#refill();
    this.#tokens -= n;
  }

  /** Nothing left, and no refill before `untilMs` (epoch ms; default now): the cloud said it is spent. */
  empty(untilMs = this.#now()): void {
    this.#refill();
    this.#tokens = Math.min(this.#tokens, 0);
    this.#refilledAt = Math.max(this.#refilledAt, untilMs);
  }

  #refill(): void {
    const now = this.#now();
    if (now <= this.#refilledAt) return;
    this.#tokens = Math.min(this.rate.burst, this.#tokens + ((now - this.#refilledAt) / 1000) * this.rate.perSecond);
    this.#refilledAt = now;
  }
}

interface Waiter {
  grant: () => void;
  reject: (reason: unknown) => void;
  dispose?: () => void;
}

export class Limiter {
  #active = 0;
  readonly #waiting: Waiter[] = [];
  readonly #budget: Budget | undefined;
  readonly #now: () => number;
  /** No call starts before this time (a throttled answer said when to come back). */
  #holdUntil = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    readonly max: number,
    options: LimiterOptions = {},
  ) {
    this.#now = options.now ?? Date.now;
    this.#budget = options.rate ? new Budget(options.rate, this.#now) : undefined;
  }

  /** Calls in flight now. */
  get inFlight(): number {
    return this.#active;
  }

  /** Calls waiting for a slot or for the rate now. */
  get queued(): number {
    return this.#waiting.length;
  }

  /** The pacing, if any (for progress messages). */
  get rate(): LimiterRate | undefined {
    return this.#budget?.rate;
  }

  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.#acquire(signal);
    try {
      return await fn();
    } finally {
      this.#active--;
      this.#pump();
    }
  }

  /**
   * Starts no call for `ms` from now and empties the bucket: the cloud answered "too many
   * requests" and said when to come back, so everything queued waits rather than hitting it.
   */
  hold(ms: number): void {
    this.#holdUntil = Math.max(this.#holdUntil, this.#now() + ms);
    // The budget starts refilling when the hold ends: calls resume at the rate, not in a burst.
    this.#budget?.empty(this.#holdUntil);
  }

  #acquire(signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#waiting.length === 0 && this.#active < this.max && this.waitMs() === 0) {
      this.#take();
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { grant: resolve, reject };
      if (signal) {
        waiter.dispose = onAbort(signal, () => {
          const i = this.#waiting.indexOf(waiter);
          if (i < 0) return;
          this.#waiting.splice(i, 1);
          reject(signal.reason);
          this.#pump();
        });
      }
      this.#waiting.push(waiter);
      this.#pump();
    });
  }

  /** Hands slots to waiters while both a slot and a token are free; else sets the one timer. */
  #pump(): void {
    while (this.#waiting.length > 0 && this.#active < this.max) {
      const wait = this.waitMs();
      if (wait > 0) {
        if (this.#timer === undefined) {
          this.#timer = setTimeout(() => {
            this.#timer = undefined;
            this.#pump();
          }, wait);
        }
        return;
      }
      const next = this.#waiting.shift()!;
      next.dispose?.();
      this.#take();
      next.grant();
    }
    if (this.#waiting.length === 0 && this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  /** Ms until the next call may start for the rate (or a hold); 0 when one may start now. */
  waitMs(): number {
    const held = Math.max(0, this.#holdUntil - this.#now());
    return Math.max(held, this.#budget?.waitMs(1) ?? 0);
  }

  #take(): void {
    this.#active++;
    this.#budget?.take(1);
  }
}
