/**
 * The options of each cluster kind, declared once. This table drives:
 * - validation: unknown keys are refused everywhere (constructor, config file, env, CLI) with a
 *   "did you mean" suggestion;
 * - the config file's JSON Schema (config.schema.json), for editors;
 * - the DASK_CLOUD_* environment mapping;
 * - the CLI's flags.
 *
 * (Contract shared by the option validation and the CLI; filled in by the options work.)
 */
import type { ClusterKind } from './index';

/** How a value is written in a file, a variable or a flag, and checked. */
export type OptionType =
  | 'string'
  | 'integer'
  | 'number'
  | 'boolean'
  /** Dask's duration text ('2 hours', '90s', '500ms') or a number of seconds. */
  | 'duration'
  /** Dask's byte-size text ('4 GiB', '512MB', 'auto') or a number of bytes. */
  | 'bytes'
  | 'string[]'
  /** Any JSON value (objects such as labels or launchRate). */
  | 'json';

export interface OptionSpec {
  /** The option's camelCase name, e.g. `nWorkers`. */
  readonly name: string;
  readonly type: OptionType;
  /** For strings: the only values allowed. */
  readonly enum?: readonly string[];
  /** One line, for --help and the JSON Schema. */
  readonly description: string;
  /** The CLI flag without dashes (e.g. `workers`, `machine-type`) when the option is one; absent = not a flag. */
  readonly flag?: string;
  /** Whether the option may come from the config file and DASK_CLOUD_* variables (false for secrets and objects only code can build). */
  readonly fileAndEnv: boolean;
}

/** Every option a cluster of `kind` accepts, shared ones first. */
export declare function optionSpecs(kind: ClusterKind): readonly OptionSpec[];

/** The closest known option to a misspelled one (snake_case names from dask-cloudprovider included), if any is close. */
export declare function suggestOption(kind: ClusterKind, unknown: string): string | undefined;

/** A value written as text (an env var or a CLI flag) read as the option's type; throws a ValidationError naming `where` when it does not parse. */
export declare function optionFromText(spec: OptionSpec, raw: string, where: string): unknown;
