/**
 * The one retry primitive: jittered exponential backoff under a deadline, with an abort signal
 * and an injectable clock so waiting logic is testable without real sleeps. On timeout the
 * error says what was being attempted and the last failure observed.
 */
import { DaskCloudError } from '../errors';
import { onAbort } from './abort';

export interface RetryClock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: RetryClock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      // One shared listener per signal: a thousand calls backing off together add no more.
      const dispose = signal
        ? onAbort(signal, () => {
            clearTimeout(t);
            reject(signal.reason);
          })
        : undefined;
      const t = setTimeout(() => {
        dispose?.();
        resolve();
      }, ms);
    }),
};

export interface RetryOptions {
  /** Which errors are worth another attempt (default: none). */
  retryable: (err: unknown) => boolean;
  /** Overall deadline. */
  timeoutMs: number;
  /** What is being attempted, for the timeout message. */
  what: string;
  /** First delay (default 500 ms), doubled each attempt up to `maxDelayMs` (default 10 s), with full jitter. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Server-suggested delay for an error (e.g. Retry-After), used instead of the backoff when given. */
  retryAfterMs?: (err: unknown) => number | undefined;
  /**
   * Ms of the time elapsed so far that do not count against `timeoutMs`: time spent queued
   * behind the pipeline's own pacing is waiting the library chose, not the cloud failing.
   */
  notCountedMs?: () => number;
  signal?: AbortSignal;
  clock?: RetryClock;
  random?: () => number;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const clock = options.clock ?? realClock;
  const random = options.random ?? Math.random;
  const base = options.baseDelayMs ?? 500;
  const max = options.maxDelayMs ?? 10_000;
  const deadline = clock.now() + options.timeoutMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (!options.retryable(err)) throw err;
      const suggested = options.retryAfterMs?.(err);
      const delay = suggested ?? Math.floor(random() * Math.min(max, base * 2 ** (attempt - 1)));
      if (clock.now() - (options.notCountedMs?.() ?? 0) + delay > deadline) {
        throw new DaskCloudError('E_TIMEOUT', `${options.what}: gave up after ${attempt} attempts in ${options.timeoutMs} ms; last error: ${err instanceof Error ? err.message : String(err)}`, {
          cause: err,
          details: { attempts: attempt },
        });
      }
      options.onRetry?.(err, attempt, delay);
      await clock.sleep(delay, options.signal);
    }
  }
}
