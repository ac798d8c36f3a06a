/**
 * The DigitalOcean contract the fake validates against: the generated
 * `test/fakes/contracts/digitalocean.json` plus three operations the extraction script does not
 * list yet but that dots-wrapper has and a provider needs for a clean teardown:
 *
 * - `firewalls_update`       PUT    /v2/firewalls/{firewall_id}        (dots: firewall.updateFirewall)
 * - `firewalls_delete_rules` DELETE /v2/firewalls/{firewall_id}/rules  (dots: firewall.removeRulesFromFirewall)
 * - `vpcs_delete`            DELETE /v2/vpcs/{vpc_id}                  (dots: vpc.deleteVpc)
 *
 * Their schemas are derived from operations already in the file (the public API reuses the same
 * `firewall` / `firewall_rules` schemas), each marked `x-added`. When the lead adds these ids to
 * scripts/extract-contracts.mjs, the generated versions win (see `withSupplement`).
 */
import { Contract, loadContract, type ContractFile, type ContractOperation, type ContractSchema } from '../core';

const ADDED = 'digitalocean fake supplement: not yet in scripts/extract-contracts.mjs';

function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

function uuidParam(): ContractOperation['params'][string] {
  return { in: 'path', required: true, schema: { type: 'string', format: 'uuid' } };
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
      'x-added': ADDED,
    };
  }
  if (ops.firewalls_add_rules?.body) {
    supplement.firewalls_delete_rules = {
      method: 'DELETE',
      path: '/v2/firewalls/{firewall_id}/rules',
      params: { firewall_id: uuidParam() },
      body: clone(ops.firewalls_add_rules.body),
      'x-added': ADDED,
    };
  }
  supplement.vpcs_delete = {
    method: 'DELETE',
    path: '/v2/vpcs/{vpc_id}',
    params: { vpc_id: uuidParam() },
    body: null,
    'x-added': ADDED,
  };
  return { ...base, operations: { ...supplement, ...ops } };
}

/** A Contract for the fake (reject unknown body properties, as for every cloud). */
export function digitalOceanContract(): Contract {
  return new Contract(withSupplement());
}
