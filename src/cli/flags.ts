/**
 * The cluster flags of `start`, `up`, `local` and `doctor`, derived from the option table
 * (src/config/schema.ts): every option with a `flag` becomes `--flag`, for the cluster kinds
 * that have it. Values are read with the table's own `optionFromText`, so a flag, a DASK_CLOUD_*
 * variable and a config-file entry are checked alike; a flag the user did not give is not set at
 * all, so the config file and the environment are never masked by a command-line default.
 */
import { Option, type Command } from 'commander';
import type { ClusterKind } from '../config';
import { optionFromText, optionSpecs, suggestOption, type OptionSpec } from '../config/schema';
import { DaskCloudError } from '../errors';
import { UsageError } from './usage';

export const KINDS: readonly ClusterKind[] = ['local', 'gcp', 'ec2', 'digitalocean'];
export const CLOUDS: readonly ClusterKind[] = ['gcp', 'ec2', 'digitalocean'];

/** Flags the command line defines itself: the table's options of the same name are not flags of their own. */
export const OWN_FLAGS = new Set(['provider', 'json', 'client-config', 'security', 'no-security', 'endpoint', 'native', 'help', 'version']);

/** One `--flag`: the option it sets in each cluster kind that has it (the name may differ by kind). */
export interface ClusterFlag {
  flag: string;
  /** commander's key for the value (`machine-type` → `machineType`). */
  attribute: string;
  specs: Map<ClusterKind, OptionSpec>;
}

function camel(flag: string): string {
  return flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** The flags of the cluster kinds `kinds`, in the table's order (shared options first). */
export function clusterFlags(kinds: readonly ClusterKind[]): ClusterFlag[] {
  const byFlag = new Map<string, ClusterFlag>();
  for (const kind of kinds) {
    for (const spec of optionSpecs(kind)) {
      if (spec.flag === undefined || OWN_FLAGS.has(spec.flag)) continue;
      let def = byFlag.get(spec.flag);
      if (def === undefined) {
        def = { flag: spec.flag, attribute: camel(spec.flag), specs: new Map() };
        byFlag.set(spec.flag, def);
      }
      def.specs.set(kind, spec);
    }
  }
  return [...byFlag.values()];
}

/** `<n>`, `<duration>`, `<docker|native>`: what a flag's value looks like, for --help. */
function valueName(spec: OptionSpec, flag: string): string {
  if (spec.enum !== undefined && spec.enum.length <= 4) return spec.enum.join('|');
  switch (spec.type) {
    case 'integer':
      return 'n';
    case 'number':
      return 'number';
    case 'duration':
      return 'duration';
    case 'bytes':
      return 'size';
    case 'string[]':
      return 'list';
    case 'json':
      return 'json';
    default:
      return flag.split('-').pop() ?? 'value';
  }
}

/**
 * Adds the flags to a command, in --help groups: the options every kind has, then those of some
 * kinds only ("Only with --provider gcp:"). A flag whose option reads differently by kind (EC2's
 * and DigitalOcean's --region) gives each kind's description.
 */
export function addClusterFlags(cmd: Command, defs: readonly ClusterFlag[], kinds: readonly ClusterKind[]): void {
  for (const def of defs) {
    const all = [...def.specs.values()];
    const spec = all[0]!;
    // A flag that is a switch for one kind and takes a value for another (--spot: GCP's boolean,
    // EC2's `true` or an object) takes an optional value.
    const switches = all.map((s) => s.type === 'boolean');
    const syntax = switches.every(Boolean) ? `--${def.flag}` : switches.some(Boolean) ? `--${def.flag} [${valueName(all.find((s) => s.type !== 'boolean')!, def.flag)}]` : `--${def.flag} <${valueName(spec, def.flag)}>`;
    const texts = new Set(all.map((s) => s.description));
    const byText = new Map<string, ClusterKind[]>();
    for (const [k, s] of def.specs) byText.set(s.description, [...(byText.get(s.description) ?? []), k]);
    const description = texts.size === 1 ? spec.description : [...byText].map(([text, ks]) => `${ks.join(', ')}: ${text}`).join(' ');
    const only = kinds.filter((k) => def.specs.has(k));
    const option = new Option(syntax, description);
    option.helpGroup(only.length === kinds.length ? 'Cluster options (also from the config file and DASK_CLOUD_* variables):' : `Only with --provider ${only.join(' or ')}:`);
    cmd.addOption(option);
  }
}

/**
 * The cluster options the flags given on the command line set for `kind`. Flags of other kinds are
 * refused (exit 2, naming the kinds they belong to); values go through the table's reader.
 */
export function optionsFromFlags(cmd: Command, defs: readonly ClusterFlag[], kind: ClusterKind): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const misplaced: ClusterFlag[] = [];
  for (const def of defs) {
    if (cmd.getOptionValueSource(def.attribute) !== 'cli') continue;
    const spec = def.specs.get(kind);
    if (spec === undefined) {
      misplaced.push(def);
      continue;
    }
    const raw = cmd.getOptionValue(def.attribute) as unknown;
    // A switch given without a value is true, whatever the kind's type (EC2's --spot: true or an object).
    out[spec.name] = raw === true ? (spec.type === 'boolean' ? true : readFlag(spec, 'true', `--${def.flag}`)) : readFlag(spec, String(raw), `--${def.flag}`);
  }
  if (misplaced.length > 0) {
    const names = misplaced.map((d) => `--${d.flag}`);
    const owners = [...new Set(misplaced.flatMap((d) => [...d.specs.keys()]))];
    const forWhom = owners.every((k) => k !== 'local') && kind === 'local' ? 'cloud providers' : `--provider ${owners.join(' or ')}`;
    // --machine-type with --provider ec2: the table knows EC2 calls it an instance type.
    const meant = misplaced
      .map((d) => {
        const name = [...d.specs.values()][0]!.name;
        const option = suggestOption(kind, name);
        return option === undefined ? undefined : flagOf(kind, option);
      })
      .filter((f): f is string => f !== undefined);
    const hint = meant.length > 0 ? ` (Did you mean ${meant.join(', ')}?)` : '';
    throw new UsageError(`${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} for ${forWhom}, not --provider ${kind}${hint}`);
  }
  return out;
}

/** A flag's text as the option's value. Counts are whole numbers written in digits: '', '-1', '1.5', '1e3' and '0x10' are refused here. */
export function readFlag(spec: OptionSpec, raw: string, where: string): unknown {
  if (spec.type === 'integer' && !/^\d{1,9}$/.test(raw)) throw new UsageError(`${where} must be a whole number >= 0, got ${JSON.stringify(raw)}`);
  if (raw.trim() === '') throw new UsageError(`${where} needs a value, got ""`);
  return optionFromText(spec, raw, where);
}

/** The flag that sets `option` for `kind`, if one does. */
export function flagOf(kind: ClusterKind | undefined, option: string): string | undefined {
  for (const k of kind === undefined ? KINDS : [kind]) {
    const spec = optionSpecs(k).find((s) => s.name === option);
    // `security` is the table's switch; the command line only has its negation, --no-security.
    if (spec?.flag !== undefined && spec.flag !== 'security') return `--${spec.flag}`;
  }
  return undefined;
}

/**
 * A library error's message phrased for the command line: an option that has a flag is named by
 * its flag when the user gave that flag, or when the message shows code (`pass { region: "x" }`
 * becomes `pass --region x`). A message about the config file or a variable keeps its names:
 * that is where the user wrote them.
 */
export function phraseForCli(err: unknown, kind: ClusterKind | undefined, given: ReadonlySet<string>): string {
  const message = err instanceof Error ? err.message : String(err);
  if (!DaskCloudError.isInstance(err)) return message;
  let text = message.replace(/\{ (\w+): ("[^"]*"|'[^']*'|[^}\s]+) \}/g, (whole, name: string, value: string) => {
    const flag = flagOf(kind, name);
    return flag === undefined ? whole : `${flag} ${value.replace(/^["']|["']$/g, '')}`;
  });
  const option = err.details.option;
  if (typeof option === 'string') {
    const flag = flagOf(kind, option);
    if (flag !== undefined && (given.has(flag) || text !== message)) {
      text = text.replace(new RegExp(`(?<![\\w.-])${option.replace(/[$^.*+?()[\]{}|\\]/g, '\\$&')}(?![\\w-])`, 'g'), flag);
      // "idleTimeout (--idle-timeout) must be ..." has become "--idle-timeout (--idle-timeout) ...".
      text = text.split(`${flag} (${flag})`).join(flag);
    }
  }
  return text;
}

/**
 * For an unknown `--flag`: the flag of the option the table says was meant (it knows
 * dask-cloudprovider's snake_case names too), among the flags `known` of this command.
 */
export function suggestFlag(unknown: string, known: ReadonlySet<string>, kind?: ClusterKind): string | undefined {
  const bare = unknown.replace(/^-+/, '').split('=')[0]!;
  // The kind the command line names first: --ngpus means --gpu on EC2 and --accelerator on GCP.
  const kinds = kind === undefined ? KINDS : [kind, ...KINDS.filter((k) => k !== kind)];
  for (const name of [...new Set([bare.replace(/-/g, '_'), camel(bare.replace(/_/g, '-')), bare])]) {
    for (const kind of kinds) {
      const option = optionSpecs(kind).some((s) => s.name === name) ? name : suggestOption(kind, name);
      if (option === undefined) continue;
      const flag = flagOf(kind, option);
      if (flag !== undefined && known.has(flag)) return flag;
    }
  }
  return undefined;
}
