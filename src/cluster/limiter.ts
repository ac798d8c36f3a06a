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

interface Waiter {
  grant: () => void;
  reject: (reason: unknown) => void;
  dispose?: () => void;
}

export class Limiter {
  #active = 0;
  readonly #waiting: Waiter[] = [];
  readonly #rate: LimiterRate | undefined;
  readonly #now: () => number;
  #tokens: number;
  #refilledAt: number;
  /** No call starts before this time (a throttled answer said when to come back). */
  #holdUntil = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    readonly max: number,
    options: LimiterOptions = {},
  ) {
    this.#rate = options.rate;
    this.#now = options.now ?? Date.now;
    this.#tokens = options.rate?.burst ?? 0;
    this.#refilledAt = this.#now();
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
    return this.#rate;
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
    if (this.#rate) {
      // The budget starts refilling when the hold ends: calls resume at the rate, not in a burst.
      this.#tokens = 0;
      this.#refilledAt = Math.max(this.#refilledAt, this.#holdUntil);
    }
  }

  #acquire(signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#waiting.length === 0 && this.#active < this.max && this.#waitMs() === 0) {
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
      const wait = this.#waitMs();
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

  /** Ms until the next call may start (0: now). */
  #waitMs(): number {
    const held = Math.max(0, this.#holdUntil - this.#now());
    if (!this.#rate) return held;
    this.#refill();
    const forToken = this.#tokens >= 1 ? 0 : Math.ceil(((1 - this.#tokens) / this.#rate.perSecond) * 1000);
    return Math.max(held, forToken);
  }

  #take(): void {
    this.#active++;
    if (this.#rate) this.#tokens -= 1;
  }

  #refill(): void {
    const rate = this.#rate!;
    const now = this.#now();
    if (now <= this.#refilledAt) return;
    this.#tokens = Math.min(rate.burst, this.#tokens + ((now - this.#refilledAt) / 1000) * rate.perSecond);
    this.#refilledAt = now;
  }
}
