/**
 * One abort listener per signal, however many waiters share it.
 *
 * A cluster's operations share one signal. A thousand requests queued behind a rate limit, each
 * adding its own `abort` listener, make Node print `MaxListenersExceededWarning` on the user's
 * stderr (and cost a closure each). Waiters register here instead: the first registration on a
 * signal adds the single real listener, which calls every waiter still registered when it fires.
 */
const waiters = new WeakMap<AbortSignal, Set<() => void>>();

/** The waiters of `signal`, with the one real listener added on first use. */
function waitersOf(signal: AbortSignal): Set<() => void> {
  let set = waiters.get(signal);
  if (set === undefined) {
    const fresh = new Set<() => void>();
    signal.addEventListener(
      'abort',
      () => {
        waiters.delete(signal);
        for (const f of [...fresh]) f();
        fresh.clear();
      },
      { once: true },
    );
    waiters.set(signal, fresh);
    set = fresh;
  }
  return set;
}

/**
 * Calls `fn` once when `signal` aborts. Returns the function that unregisters it; call it when
 * the wait ends another way. `fn` is not called for a signal that has already aborted: check
 * `signal.aborted` first.
 */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  const set = waitersOf(signal);
  // A wrapper of its own, so that the same `fn` registered twice is two waiters.
  const entry = () => fn();
  set.add(entry);
  return () => void set.delete(entry);
}
