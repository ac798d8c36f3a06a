/**
 * The DigitalOcean contract the fake validates against: the generated
 * `test/fakes/contracts/digitalocean.json` plus operations the extraction script does not list yet
 * but that the provider needs. Each is written by hand from the DigitalOcean OpenAPI
 * specification (github.com/digitalocean/openapi, `specification/resources/...`) and marked
 * `x-added` with the spec file it comes from:
 *
 * - `firewalls_update`, `firewalls_delete_rules`, `vpcs_delete` (derived from generated schemas)
 * - `tags_list`, `tags_create`, `tags_get`, `tags_delete`,
 *   `tags_assign_resources`                                (resources/tags/*.yml)
 * - `images_get`                                           (resources/images/images_get.yml)
 * - `vpcnatgateways_list`, `vpcnatgateways_get`            (resources/vpc_nat_gateways/*.yml)
 *
 * When the lead adds these ids to scripts/extract-contracts.mjs, the generated versions win (see
 * `withSupplement`).
 */
import { Contract, loadContract, type ContractFile, type ContractOperation, type ContractParam, type ContractSchema } from '../core';

const ADDED = 'digitalocean fake supplement: not yet in scripts/extract-contracts.mjs';

/** `parameters.yml#/tag_id` of resources/tags: a tag name as a path segment. */
const TAG_NAME: ContractSchema = { type: 'string', maxLength: 255, pattern: '^[a-zA-Z0-9_\\-\\:]+$' };

function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

function uuidParam(): ContractParam {
  return { in: 'path', required: true, schema: { type: 'string', format: 'uuid' } };
}

/** `shared/parameters.yml#/per_page` and `#/page`. */
function pageParams(): Record<string, ContractParam> {
  return {
    per_page: { in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 200 } },
    page: { in: 'query', required: false, schema: { type: 'integer', minimum: 1 } },
  };
}

function added(source: string): string {
  return `${ADDED}; from digitalocean/openapi ${source}`;
}

/** The generated contract plus the supplement (generated operations take precedence). */
export function withSupplement(base: ContractFile = loadContract('digitalocean')): ContractFile {
  const ops = base.operations;
  const supplement: Record<string, ContractOperation & { 'x-added': string }> = {};
  if (ops.firewalls_create?.body) {
    // PUT takes the full firewall (name required); the create-only "at least one rule list" is dropped.
    const schema = clone(ops.firewalls_create.body.schema) as ContractSchema;
    delete schema.anyOf;
    supplement.firewalls_update = {
      method: 'PUT',
      path: '/v2/firewalls/{firewall_id}',
      params: { firewall_id: uuidParam() },
      body: { required: true, schema },
      'x-added': added('specification/resources/firewalls/firewalls_update.yml'),
    };
  }
  if (ops.firewalls_add_rules?.body) {
    supplement.firewalls_delete_rules = {
      method: 'DELETE',
      path: '/v2/firewalls/{firewall_id}/rules',
      params: { firewall_id: uuidParam() },
      body: clone(ops.firewalls_add_rules.body),
      'x-added': added('specification/resources/firewalls/firewalls_delete_rules.yml'),
    };
  }
  supplement.vpcs_delete = {
    method: 'DELETE',
    path: '/v2/vpcs/{vpc_id}',
    params: { vpc_id: uuidParam() },
    body: null,
    'x-added': added('specification/resources/vpcs/vpcs_delete.yml'),
  };
  supplement.tags_list = {
    method: 'GET',
    path: '/v2/tags',
    params: pageParams(),
    body: null,
    'x-added': added('specification/resources/tags/tags_list.yml'),
  };
  supplement.tags_create = {
    method: 'POST',
    path: '/v2/tags',
    params: {},
    // models/tags.yml: `resources` is readOnly, so a request carries the name only.
    body: { required: true, schema: { type: 'object', properties: { name: TAG_NAME }, required: ['name'] } },
    'x-added': added('specification/resources/tags/tags_create.yml'),
  };
  supplement.tags_get = {
    method: 'GET',
    path: '/v2/tags/{tag_id}',
    params: { tag_id: { in: 'path', required: true, schema: TAG_NAME } },
    body: null,
    'x-added': added('specification/resources/tags/tags_get.yml'),
  };
  supplement.tags_delete = {
    method: 'DELETE',
    path: '/v2/tags/{tag_id}',
    params: { tag_id: { in: 'path', required: true, schema: TAG_NAME } },
    body: null,
    'x-added': added('specification/resources/tags/tags_delete.yml'),
  };
  supplement.tags_assign_resources = {
    method: 'POST',
    path: '/v2/tags/{tag_id}/resources',
    params: { tag_id: { in: 'path', required: true, schema: TAG_NAME } },
    // The request body of tags_assign_resources.yml: `resources`, each a `resource_id` (the
    // resource's id as a string) and a `resource_type`; no maximum number of resources is stated.
    body: {
      required: true,
      schema: {
        type: 'object',
        properties: {
          resources: {
            type: 'array',
            items: {
              type: 'object',
              properties: {
                resource_id: { type: 'string' },
                resource_type: { type: 'string', enum: ['droplet', 'database', 'image', 'volume', 'volume_snapshot'] },
              },
              required: ['resource_id', 'resource_type'],
            },
          },
        },
        required: ['resources'],
      },
    },
    'x-added': added('specification/resources/tags/tags_assign_resources.yml'),
  };
  supplement.images_get = {
    method: 'GET',
    path: '/v2/images/{image_id}',
    // images/parameters.yml#/image_id: an id (integer) or a public image's slug (string).
    params: { image_id: { in: 'path', required: true, schema: {} } },
    body: null,
    'x-added': added('specification/resources/images/images_get.yml'),
  };
  supplement.vpcnatgateways_list = {
    method: 'GET',
    path: '/v2/vpc_nat_gateways',
    params: {
      ...pageParams(),
      state: { in: 'query', required: false, schema: { type: 'string', enum: ['new', 'provisioning', 'active', 'deleting', 'error', 'invalid'] } },
      region: { in: 'query', required: false, schema: { type: 'string' } },
      type: { in: 'query', required: false, schema: { type: 'string', enum: ['public'] } },
      name: { in: 'query', required: false, schema: { type: 'string' } },
    },
    body: null,
    'x-added': added('specification/resources/vpc_nat_gateways/vpc_nat_gateway_list.yml'),
  };
  supplement.vpcnatgateways_get = {
    method: 'GET',
    path: '/v2/vpc_nat_gateways/{id}',
    params: { id: { in: 'path', required: true, schema: { type: 'string' } } },
    body: null,
    'x-added': added('specification/resources/vpc_nat_gateways/vpc_nat_gateway_get.yml'),
  };
  return { ...base, operations: { ...supplement, ...ops } };
}

/** A Contract for the fake (reject unknown body properties, as for every cloud). */
export function digitalOceanContract(): Contract {
  return new Contract(withSupplement());
}
