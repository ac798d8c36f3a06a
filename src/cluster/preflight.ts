/**
 * Read-only checks of an account against the exact options a cluster would use. `start()` runs
 * them before it creates anything and fails fast; `dask-cloud doctor` prints them as a checklist.
 * A provider records one result per check it makes; every failure carries the fix.
 */
import { inspect, type InspectOptions } from 'node:util';
import { CredentialsError, DaskCloudError, PreflightError } from '../errors';

/** The checks, in the order they are made and printed. */
export const CHECK_IDS = ['user-data', 'credentials', 'location', 'image', 'network', 'nat', 'quota', 'permissions'] as const;
export type CheckId = (typeof CHECK_IDS)[number];

const TITLES: Record<CheckId, string> = {
  'user-data': 'user-data renders and fits',
  credentials: 'credentials',
  location: 'project / region / zone',
  image: 'image',
  network: 'network and instance types',
  nat: 'NAT for private mode',
  quota: 'quota headroom',
  permissions: 'permissions',
};

export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  id: CheckId;
  title: string;
  status: CheckStatus;
  /** What was found (pass, warn, skip) or what is wrong (fail). */
  message: string;
  /** For a failure or warning: what to do about it. */
  fix?: string;
  /** For a failure: the typed error `start()` throws for it. */
  error?: DaskCloudError;
}

/** A failure's error may carry its own fix in `details.fix`; it wins over the check's default. */
function fixOf(err: DaskCloudError, fallback: string | undefined): string | undefined {
  const own = err.details.fix;
  return typeof own === 'string' ? own : fallback;
}

export class PreflightReport {
  readonly provider: string;
  readonly #results = new Map<CheckId, CheckResult>();

  constructor(provider: string) {
    this.provider = provider;
  }

  /** Results in check order (not recording order). */
  get checks(): CheckResult[] {
    return CHECK_IDS.flatMap((id) => {
      const r = this.#results.get(id);
      return r ? [r] : [];
    });
  }

  get failures(): CheckResult[] {
    return this.checks.filter((c) => c.status === 'fail');
  }

  get ok(): boolean {
    return this.failures.length === 0;
  }

  /** The status of one check, if it was recorded. */
  status(id: CheckId): CheckStatus | undefined {
    return this.#results.get(id)?.status;
  }

  #record(result: Omit<CheckResult, 'title'>): void {
    const prev = this.#results.get(result.id);
    // A check made of several parts keeps its worst outcome; pass/warn messages accumulate.
    if (prev && rank(prev.status) > rank(result.status)) return;
    if (prev && prev.status === result.status && result.status !== 'fail') {
      this.#results.set(result.id, { ...prev, message: `${prev.message}; ${result.message}`, fix: prev.fix ?? result.fix });
      return;
    }
    this.#results.set(result.id, { ...result, title: TITLES[result.id] });
  }

  pass(id: CheckId, message: string): void {
    this.#record({ id, status: 'pass', message });
  }

  warn(id: CheckId, message: string, fix?: string): void {
    this.#record({ id, status: 'warn', message, fix });
  }

  skip(id: CheckId, message: string): void {
    this.#record({ id, status: 'skip', message });
  }

  fail(id: CheckId, error: DaskCloudError, fix?: string): void {
    this.#record({ id, status: 'fail', message: error.message, fix: fixOf(error, fix), error });
  }

  /**
   * Run `fn` as check `id`: its result (a short description of what was found) passes the check,
   * a thrown error fails it with `fix` (an error's own `details.fix` wins). Errors that are not
   * dask-cloud errors become a `PreflightError`. An abort is rethrown, never recorded.
   * Returns whether the check passed (or warned).
   */
  async check(id: CheckId, fn: () => Promise<string | void> | string | void, fix?: string, signal?: AbortSignal): Promise<boolean> {
    try {
      const message = await fn();
      if (this.#results.get(id)?.status !== 'fail') this.pass(id, message || 'ok');
      return this.#results.get(id)?.status !== 'fail';
    } catch (err) {
      if (signal?.aborted) throw err;
      const typed = DaskCloudError.isInstance(err)
        ? err
        : new PreflightError(`${this.provider}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      if (typed.code === 'E_ABORTED') throw typed;
      this.fail(id, typed, fix);
      return false;
    }
  }

  /** Mark every check not recorded yet as skipped, with the reason. */
  skipRest(reason: string): void {
    for (const id of CHECK_IDS) if (!this.#results.has(id)) this.skip(id, reason);
  }

  /**
   * Throw when a check failed: a credentials failure or a single failure as its own typed error
   * (`CredentialsError`, `ValidationError` naming the option, ...) with the fix added to its
   * message; several failures as one `PreflightError` listing each with its fix.
   */
  throwIfFailed(): void {
    const failures = this.failures;
    if (failures.length === 0) return;
    const creds = failures.find((f) => f.id === 'credentials');
    const only = creds ?? (failures.length === 1 ? failures[0] : undefined);
    if (only?.error) {
      const err = only.error;
      if (only.fix && !err.message.includes(only.fix)) err.message = `${err.message}\n  fix: ${only.fix}`;
      if (only.fix) (err.details as Record<string, unknown>).fix = only.fix;
      throw err;
    }
    const lines = failures.map((f) => `  - ${f.title}: ${f.message}${f.fix ? `\n    fix: ${f.fix}` : ''}`);
    throw new PreflightError(`${this.provider}: ${failures.length} preflight checks failed; nothing was created:\n${lines.join('\n')}`, {
      cause: failures[0]?.error,
      details: { checks: failures.map((f) => ({ id: f.id, message: f.message, fix: f.fix, code: f.error?.code })) },
    });
  }

  /** The checklist as text: one line per check, the fix under each failure or warning. */
  format(): string {
    const mark: Record<CheckStatus, string> = { pass: 'ok  ', warn: 'warn', fail: 'FAIL', skip: 'skip' };
    return this.checks
      .map((c) => `[${mark[c.status]}] ${c.title}: ${c.message.replace(/\n/g, '\n       ')}${c.fix && c.status !== 'pass' ? `\n       fix: ${c.fix}` : ''}`)
      .join('\n');
  }

  /** Plain data (no error objects), for `--json` output. */
  toJSON(): { provider: string; ok: boolean; checks: Array<Omit<CheckResult, 'error'> & { code?: string }> } {
    return {
      provider: this.provider,
      ok: this.ok,
      checks: this.checks.map(({ error, ...rest }) => ({ ...rest, ...(error ? { code: error.code } : {}) })),
    };
  }

  /** `console.log(report)` shows {@link PreflightReport.toJSON}: the errors' causes (SDK errors) stay out. */
  [inspect.custom](depth: number, options: InspectOptions, render: typeof inspect): string {
    return depth < 0 ? '[PreflightReport]' : `PreflightReport ${render(this.toJSON(), { ...options, depth: 4 })}`;
  }
}

function rank(s: CheckStatus): number {
  return { skip: 0, pass: 1, warn: 2, fail: 3 }[s];
}

/** True when `err` is a credentials failure (any copy of the package). */
export function isCredentialsError(err: unknown): err is CredentialsError {
  return CredentialsError.isInstance(err);
}
