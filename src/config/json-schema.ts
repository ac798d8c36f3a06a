/**
 * The config file's JSON Schema, derived from the option table, so editors complete and check
 * the file with the same names, types and enums the library enforces. `config.schema.json` at
 * the repository root is this, written by `scripts/config-schema.ts` (a test keeps them equal).
 */
import { CLUSTER_CLASSES, CLUSTER_KINDS, optionSpecs, type JsonSchema, type OptionSpec } from './schema';
import { envVariableName, type ClusterKind } from './index';

/** The schema of one option's value. */
export function optionValueSchema(spec: OptionSpec): JsonSchema {
  const numbers = spec.alsoAccepts?.includes('number') === true;
  const text: JsonSchema = numbers ? { type: ['string', 'number'] } : { type: 'string' };
  let schema: JsonSchema;
  switch (spec.type) {
    case 'integer':
      schema = { type: 'integer' };
      break;
    case 'number':
      schema = { type: 'number' };
      break;
    case 'boolean':
      schema = { type: 'boolean' };
      break;
    case 'string':
      schema = spec.enum !== undefined ? { type: 'string', enum: [...spec.enum] } : text;
      break;
    case 'string[]':
      schema = { type: 'array', items: text };
      break;
    case 'duration':
    case 'bytes':
      schema = text;
      break;
    default:
      schema = spec.jsonSchema ?? {};
  }
  return spec.alsoAccepts?.includes('false') ? { anyOf: [schema, { const: false }] } : schema;
}

function describe(spec: OptionSpec, env: string): string {
  return `${spec.description} Env: ${env}.`;
}

function section(description: string, properties: Record<string, JsonSchema>): JsonSchema {
  return { type: ['object', 'null'], description, additionalProperties: false, properties };
}

/** Options a file may hold for `kind` (secrets and code-only objects stay out). */
function fileOptions(kind: ClusterKind): OptionSpec[] {
  return optionSpecs(kind).filter((s) => s.fileAndEnv);
}

/** The JSON Schema (draft-07) of the config file. */
export function configJsonSchema(): JsonSchema {
  // The shared section: every option any kind takes from a file, applied to the kinds that have it.
  const shared = new Map<string, { specs: OptionSpec[]; kinds: ClusterKind[] }>();
  for (const kind of CLUSTER_KINDS) {
    for (const spec of fileOptions(kind)) {
      const entry = shared.get(spec.name) ?? { specs: [], kinds: [] };
      entry.specs.push(spec);
      entry.kinds.push(kind);
      shared.set(spec.name, entry);
    }
  }
  const cluster: Record<string, JsonSchema> = {};
  for (const [name, { specs, kinds }] of shared) {
    const distinct = [...new Map(specs.map((s) => [JSON.stringify(optionValueSchema(s)), optionValueSchema(s)])).values()];
    const only = kinds.length === CLUSTER_KINDS.length ? '' : ` For ${kinds.map((k) => CLUSTER_CLASSES[k]).join(', ')}.`;
    cluster[name] = { ...(distinct.length === 1 ? distinct[0] : { anyOf: distinct }), description: `${describe(specs[0]!, envVariableName(name))}${only}` };
  }
  const properties: Record<string, JsonSchema> = {
    cluster: section("Options for every kind of cluster; each kind takes those it has. A kind's own section overrides them.", cluster),
  };
  for (const kind of CLUSTER_KINDS) {
    properties[kind] = section(
      `${CLUSTER_CLASSES[kind]} options (over the cluster section).`,
      Object.fromEntries(fileOptions(kind).map((s) => [s.name, { ...optionValueSchema(s), description: describe(s, envVariableName(s.name, kind)) }])),
    );
  }
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'dask-cloud configuration',
    description:
      'The dask-cloud config file (DASK_CLOUD_CONFIG, else $XDG_CONFIG_HOME/dask-cloud/config.yaml). Precedence: defaults < this file < DASK_CLOUD_* variables < options in code or flags. Generated from the option table by scripts/config-schema.ts.',
    type: 'object',
    additionalProperties: false,
    properties,
  };
}

/** The schema as config.schema.json holds it. */
export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}
