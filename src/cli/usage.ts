/** Exit codes and the errors that choose them. */
import * as os from 'node:os';
import { DaskCloudError } from '../errors';

/**
 * The exit codes, as `dask-cloud --help` documents them. A signal that ends the process before
 * its teardown finished (the second Ctrl-C) exits 128 + the signal's number, as a shell does.
 */
export const EXIT = {
  ok: 0,
  /** The operation failed (a start rolled back, a failed check, a cloud refusal). */
  failed: 1,
  /** Bad input: flags, arguments, the config file or DASK_CLOUD_* variables. Nothing was created. */
  usage: 2,
} as const;

export const EXIT_CODES_HELP = `Exit codes:
  0    done (start: the cluster ran and everything it created is deleted)
  1    the operation failed: a start that failed or was interrupted (it deleted what it
       created), a failed doctor check, a cloud refusal
  2    bad input (flags, arguments, the config file, DASK_CLOUD_* variables); nothing was done
  ${128 + (os.constants.signals.SIGHUP ?? 1)}  a second SIGHUP while deleting: stopped waiting (the cleanup command is printed)
  ${128 + (os.constants.signals.SIGINT ?? 2)}  a second Ctrl-C (SIGINT) while deleting: stopped waiting (same)
  ${128 + (os.constants.signals.SIGTERM ?? 15)}  a second SIGTERM while deleting: stopped waiting (same)`;

/** Bad command-line input: exit code 2, one line on stderr, no stack trace. */
export class UsageError extends Error {}

/** Exit code 2 (bad input: flags, options, config file, DASK_CLOUD_* variables) versus 1 (it failed). */
export function isBadInput(err: unknown): boolean {
  if (err instanceof UsageError) return true;
  if (DaskCloudError.isInstance(err)) return ['E_INVALID_OPTION', 'E_TLS_VERSION', 'E_TLS_CIPHERS'].includes(err.code);
  return false;
}
