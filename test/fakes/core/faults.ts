/**
 * Fault and load injection for the API fakes, plus the injectable clock every lifecycle uses.
 *
 * The mechanism lives here; the *shape* of an error (DigitalOcean 429 JSON, EC2
 * `RequestLimitExceeded` XML, GCP 403 `rateLimitExceeded`) lives in each cloud fake.
 */
import type { FakeResponse } from './server';

// ---------------------------------------------------------------------------------------------
// Clock

/** Time source for fakes. Real by default; `ManualClock` in tests that must not sleep. */
export interface Clock {
  now(): number;
  /** Resolves after `ms` of this clock's time. */
  sleep(ms: number): Promise<void>;
  /** Runs `fn` after `ms` of this clock's time; returns a cancel function. */
  setTimeout(fn: () => void, ms: number): () => void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms))),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, Math.max(0, ms));
    t.unref?.();
    return () => clearTimeout(t);
  },
};

/** A clock that only moves when told to. Timers fire in time order during `advance()`. */
export class ManualClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: { at: number; seq: number; fn: () => void }[] = [];

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.setTimeout(resolve, ms));
  }

  setTimeout(fn: () => void, ms: number): () => void {
    const timer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((x) => x !== timer);
    };
  }

  /** Moves time forward by `ms`, firing due timers in order (and letting promises settle between them). */
  async advance(ms: number): Promise<void> {
    const target = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.timers[0];
      if (!next || next.at > target) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
      await flushMicrotasks();
    }
    this.t = target;
    await flushMicrotasks();
  }

  /** Number of timers waiting. */
  pending(): number {
    return this.timers.length;
  }
}

async function flushMicrotasks(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
  await new Promise((r) => setImmediate(r));
}

// ---------------------------------------------------------------------------------------------
// Token bucket

export interface TokenBucketOptions {
  /** Bucket size = the advertised limit (DigitalOcean: 250). */
  capacity: number;
  /** Tokens added per `intervalMs`, continuously (DigitalOcean: 250 per 60 000 ms). */
  refill: number;
  intervalMs: number;
  clock?: Clock;
}

/** What a take() saw: enough for any cloud's rate-limit headers. */
export interface BucketState {
  allowed: boolean;
  limit: number;
  /** Whole tokens left after this take. */
  remaining: number;
  /** Epoch ms at which the bucket is full again. */
  resetAt: number;
  /** Ms until one token is available (0 when allowed). */
  retryAfterMs: number;
}

export class TokenBucket {
  readonly capacity: number;
  private tokens: number;
  private last: number;
  private readonly ratePerMs: number;
  private readonly clock: Clock;

  constructor(opts: TokenBucketOptions) {
    this.capacity = opts.capacity;
    this.tokens = opts.capacity;
    this.ratePerMs = opts.refill / opts.intervalMs;
    this.clock = opts.clock ?? realClock;
    this.last = this.clock.now();
  }

  private refill(): void {
    const now = this.clock.now();
    this.tokens = Math.min(this.capacity, this.tokens + (now - this.last) * this.ratePerMs);
    this.last = now;
  }

  /** Takes `n` tokens if available. */
  take(n = 1): BucketState {
    this.refill();
    const allowed = this.tokens >= n;
    if (allowed) this.tokens -= n;
    return this.state(allowed, n);
  }

  /** Current state without taking. */
  peek(): BucketState {
    this.refill();
    return this.state(this.tokens >= 1, 1);
  }

  private state(allowed: boolean, n: number): BucketState {
    const now = this.clock.now();
    return {
      allowed,
      limit: this.capacity,
      remaining: Math.floor(this.tokens),
      resetAt: now + Math.ceil((this.capacity - this.tokens) / this.ratePerMs),
      retryAfterMs: allowed ? 0 : Math.ceil((n - this.tokens) / this.ratePerMs),
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Faults

/** Which operations a rule applies to: an operation id, several, a RegExp, or '*' for all. */
export type OperationMatcher = string | string[] | RegExp;

/**
 * How a failing call answers. Either a complete response (`response`), or a status + code +
 * message that the cloud fake's error shaper turns into the cloud's real error body.
 */
export type FailureSpec =
  | { response: FakeResponse }
  | { status: number; code: string; message?: string; headers?: Record<string, string> };

export interface FailWhen {
  /** Fail only the k-th call (1-based) of the matched operation(s), counted from when the rule was added. */
  nth?: number;
  /** Fail the next n calls. */
  times?: number;
  /** Fail every call (the default when neither nth nor times is given). */
  always?: boolean;
}

export interface ThrottleOptions {
  bucket: TokenBucket;
  /** The cloud's throttling answer. */
  reject: (state: BucketState) => FailureSpec;
  /** Headers on every answer, allowed or not (DigitalOcean `ratelimit-*`). */
  headers?: (state: BucketState) => Record<string, string>;
}

interface FailRule {
  kind: 'fail';
  match: OperationMatcher;
  spec: FailureSpec;
  nth?: number;
  remaining?: number;
  seen: number;
}
interface LatencyRule {
  kind: 'latency';
  match: OperationMatcher;
  ms: number | (() => number);
}
interface ThrottleRule extends ThrottleOptions {
  kind: 'throttle';
  match: OperationMatcher;
}
type Rule = FailRule | LatencyRule | ThrottleRule;

/** What the server must do for one call, decided before the handler runs. */
export interface FaultDecision {
  delayMs: number;
  failure?: FailureSpec;
  /** Extra headers for the answer (rate-limit state). */
  headers: Record<string, string>;
  /** Why it failed (for the request log): 'fail' | 'throttle'. */
  reason?: 'fail' | 'throttle';
}

/** Handle returned by each injection, to remove it again. */
export interface FaultHandle {
  remove(): void;
}

function matches(m: OperationMatcher, op: string): boolean {
  if (m === '*') return true;
  if (typeof m === 'string') return m === op;
  if (Array.isArray(m)) return m.includes(op);
  return m.test(op);
}

/**
 * Per-operation fault injection. Rules are checked in the order added; latency adds up; the
 * first throttle or failure that fires decides the answer.
 */
export class Faults {
  private rules: Rule[] = [];
  private bootDelays: { ms: number; remaining?: number }[] = [];
  private readonly calls = new Map<string, number>();

  /** Adds `ms` (or a function's result, for jitter) before matched calls are answered. */
  latency(match: OperationMatcher, ms: number | (() => number)): FaultHandle {
    return this.add({ kind: 'latency', match, ms });
  }

  /** Fails matched calls: every call, the k-th (`{ nth: k }`) or the next n (`{ times: n }`). */
  fail(match: OperationMatcher, spec: FailureSpec, when: FailWhen = {}): FaultHandle {
    const remaining = when.times;
    return this.add({ kind: 'fail', match, spec, nth: when.nth, remaining, seen: 0 });
  }

  /** Rate-limits matched calls through a token bucket (shared across every operation it matches). */
  throttle(match: OperationMatcher, opts: ThrottleOptions): FaultHandle {
    return this.add({ kind: 'throttle', match, ...opts });
  }

  /**
   * Slow boots: the next `times` VMs (all, when omitted) take `ms` longer to reach "running" /
   * boot. Lifecycles ask with `takeBootDelay()`.
   */
  slowBoot(ms: number, times?: number): FaultHandle {
    const entry = { ms, remaining: times };
    this.bootDelays.push(entry);
    return { remove: () => (this.bootDelays = this.bootDelays.filter((e) => e !== entry)) };
  }

  /** Extra boot delay for one VM (sum of the slowBoot rules that still apply). Consumes counted rules. */
  takeBootDelay(): number {
    let total = 0;
    for (const e of this.bootDelays) {
      if (e.remaining === 0) continue;
      total += e.ms;
      if (e.remaining !== undefined) e.remaining--;
    }
    this.bootDelays = this.bootDelays.filter((e) => e.remaining !== 0);
    return total;
  }

  /** Removes every rule. */
  clear(): void {
    this.rules = [];
    this.bootDelays = [];
    this.calls.clear();
  }

  /** How many calls of `operation` the fault layer has seen. */
  callCount(operation: string): number {
    return this.calls.get(operation) ?? 0;
  }

  /** Called by FakeServer once per routed call. */
  decide(operation: string): FaultDecision {
    this.calls.set(operation, (this.calls.get(operation) ?? 0) + 1);
    const decision: FaultDecision = { delayMs: 0, headers: {} };
    for (const rule of [...this.rules]) {
      if (!matches(rule.match, operation)) continue;
      if (rule.kind === 'latency') {
        decision.delayMs += typeof rule.ms === 'function' ? rule.ms() : rule.ms;
      } else if (rule.kind === 'throttle') {
        if (decision.failure) continue;
        const state = rule.bucket.take();
        Object.assign(decision.headers, rule.headers?.(state) ?? {});
        if (!state.allowed) {
          decision.failure = rule.reject(state);
          decision.reason = 'throttle';
        }
      } else {
        rule.seen++;
        if (decision.failure) continue;
        let fire: boolean;
        if (rule.nth !== undefined) fire = rule.seen === rule.nth;
        else if (rule.remaining !== undefined) fire = rule.remaining > 0;
        else fire = true;
        if (!fire) continue;
        if (rule.remaining !== undefined) rule.remaining--;
        decision.failure = rule.spec;
        decision.reason = 'fail';
        if ((rule.nth !== undefined && rule.seen >= rule.nth) || rule.remaining === 0) this.remove(rule);
      }
    }
    return decision;
  }

  private add(rule: Rule): FaultHandle {
    this.rules.push(rule);
    return { remove: () => this.remove(rule) };
  }

  private remove(rule: Rule): void {
    this.rules = this.rules.filter((r) => r !== rule);
  }
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

export interface LifecycleStep<S extends string> {
  state: S;
  /** Ms spent in the *previous* state before this one is entered. */
  afterMs: number;
}

/**
 * A resource's state machine driven by the clock, e.g. PROVISIONING → STAGING (after 500 ms) →
 * RUNNING (after 1 500 ms more). `onEnter` runs when a state is entered (boot the VM on RUNNING).
 * With a ManualClock, `await clock.advance(ms)` moves it; nothing sleeps.
 */
export class Lifecycle<S extends string> {
  private current: S;
  private cancel?: () => void;
  private readonly listeners: ((state: S) => void)[] = [];

  constructor(
    private readonly clock: Clock,
    initial: S,
    steps: LifecycleStep<S>[],
    onEnter?: (state: S) => void,
  ) {
    this.current = initial;
    if (onEnter) this.listeners.push(onEnter);
    this.schedule(steps);
  }

  get state(): S {
    return this.current;
  }

  /** Jumps to a state now (deletion, failure), cancelling the remaining steps. */
  set(state: S): void {
    this.cancel?.();
    this.cancel = undefined;
    this.enter(state);
  }

  /** Resolves when `state` is entered (immediately if current). */
  until(state: S): Promise<void> {
    if (this.current === state) return Promise.resolve();
    return new Promise((resolve) => {
      const l = (s: S) => {
        if (s === state) {
          this.listeners.splice(this.listeners.indexOf(l), 1);
          resolve();
        }
      };
      this.listeners.push(l);
    });
  }

  private schedule(steps: LifecycleStep<S>[]): void {
    const [next, ...rest] = steps;
    if (!next) return;
    this.cancel = this.clock.setTimeout(() => {
      this.enter(next.state);
      this.schedule(rest);
    }, next.afterMs);
  }

  private enter(state: S): void {
    this.current = state;
    for (const l of [...this.listeners]) l(state);
  }
}
