/**
 * The logger the library passes around: a `debug` instance (namespaces `dask-cloud:*`, enabled by
 * `DEBUG=`). Declared here rather than as `debug`'s own `Debugger`, so the public types do not
 * need `@types/debug`, which only this project's build uses.
 */
export interface Log {
  (formatter: unknown, ...args: unknown[]): void;
  /** A child logger: `dask-cloud:cluster:local:control`. */
  extend(namespace: string): Log;
  readonly enabled: boolean;
  readonly namespace: string;
}

/**
 * A logger for `namespace` that loads `debug` on its first use rather than at import: `debug`
 * (with supports-color and tty) is a tenth of what `import 'dask-cloud'` would otherwise cost, and
 * most programs log nothing. `DEBUG=` and `debug.enable()` work as with `debug` itself.
 */
export function createLog(namespace: string): Log {
  let real: Log | undefined;
  const instance = (): Log => (real ??= (require('debug') as (ns: string) => Log)(namespace));
  const log = ((formatter: unknown, ...args: unknown[]) => instance()(formatter, ...args)) as Log;
  Object.defineProperties(log, {
    enabled: { get: () => instance().enabled, enumerable: true },
    namespace: { value: namespace, enumerable: true },
    extend: { value: (sub: string) => createLog(`${namespace}:${sub}`) },
  });
  return log;
}
