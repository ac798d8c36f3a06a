/**
 * One abort listener per signal, however many waiters share it.
 *
 * A cluster's operations share one signal. A thousand requests queued behind a rate limit, each
 * adding its own `abort` listener, make Node print `MaxListenersExceededWarning` on the user's
 * stderr (and cost a closure each). Waiters register here instead: the first registration on a
 * signal adds the single real listener, which calls every waiter still registered when it fires.
 */
const waiters = new WeakMap<AbortSignal, Set<() => void>>();

/**
 * Calls `fn` once when `signal` aborts. Returns the function that unregisters it; call it when
 * the wait ends another way. `fn` is not called for a signal that has already aborted: check
 * `signal.aborted` first.
 */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  let set = waiters.get(signal);
  if (set === undefined) {
    const fresh = new Set<() => void>();
    waiters.set(signal, fresh);
    signal.addEventListener(
      'abort',
      () => {
        waiters.delete(signal);
        for (const f of [...fresh]) f();
        fresh.clear();
      },
      { once: true },
    );
    set = fresh;
  }
  const entry = () => fn();
  set.add(entry);
  const mine = set;
  return () => void mine.delete(entry);
}
