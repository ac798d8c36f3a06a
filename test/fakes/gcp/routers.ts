/**
 * Cloud Routers and their Cloud NAT configs (read-only for the fake's callers: tests seed them
 * with `FakeGcp.addRouter` / `addCloudNat`). Served by `routers.list` and `routers.aggregatedList`
 * in the wire shape of the Compute v1 `Router` resource
 * (https://cloud.google.com/compute/docs/reference/rest/v1/routers).
 */
import { API, REGIONS } from './catalog';
import { invalidField } from './errors';
import { listResponse } from './filter';
import type { FakeRequest, FakeResponse, FakeServer, IdAllocator } from '../core';

type Json = Record<string, any>;

/** One `nats[]` entry: which subnetworks' ranges it translates. */
export interface NatSpec {
  name?: string;
  /** Default `ALL_SUBNETWORKS_ALL_IP_RANGES`. */
  sourceSubnetworkIpRangesToNat?: 'ALL_SUBNETWORKS_ALL_IP_RANGES' | 'ALL_SUBNETWORKS_ALL_PRIMARY_IP_RANGES' | 'LIST_OF_SUBNETWORKS';
  /** For LIST_OF_SUBNETWORKS: subnetwork names (in the router's region) and their ranges. */
  subnetworks?: { name: string; sourceIpRangesToNat?: ('ALL_IP_RANGES' | 'PRIMARY_IP_RANGE' | 'LIST_OF_SECONDARY_IP_RANGES')[] }[];
}

export interface RouterSpec {
  name: string;
  /** Network name (default `default`). */
  network?: string;
  nats?: NatSpec[];
}

export class Routers {
  private readonly byRegion = new Map<string, Json[]>();

  constructor(
    private readonly project: string,
    private readonly ids: IdAllocator,
    private readonly checkProject: (p: string) => void,
  ) {}

  add(region: string, spec: RouterSpec): void {
    if (!REGIONS.includes(region)) throw new Error(`fake-gcp: unknown region ${region}`);
    const regionUrl = `${API}/projects/${this.project}/regions/${region}`;
    const wire: Json = {
      kind: 'compute#router',
      id: this.ids.nextUint64(),
      creationTimestamp: '2024-01-01T00:00:00.000-08:00',
      name: spec.name,
      region: regionUrl,
      network: `${API}/projects/${this.project}/global/networks/${spec.network ?? 'default'}`,
      selfLink: `${regionUrl}/routers/${spec.name}`,
      encryptedInterconnectRouter: false,
      ...(spec.nats?.length
        ? {
            nats: spec.nats.map((n, i) => ({
              name: n.name ?? `nat-${i}`,
              sourceSubnetworkIpRangesToNat: n.sourceSubnetworkIpRangesToNat ?? 'ALL_SUBNETWORKS_ALL_IP_RANGES',
              natIpAllocateOption: 'AUTO_ONLY',
              endpointTypes: ['ENDPOINT_TYPE_VM'],
              type: 'PUBLIC',
              ...(n.subnetworks
                ? { subnetworks: n.subnetworks.map((s) => ({ name: `${regionUrl}/subnetworks/${s.name}`, sourceIpRangesToNat: s.sourceIpRangesToNat ?? ['ALL_IP_RANGES'] })) }
                : {}),
            })),
          }
        : {}),
    };
    this.byRegion.set(region, [...(this.byRegion.get(region) ?? []), wire]);
  }

  register(server: FakeServer): void {
    server.route('GET', '/projects/:project/regions/:region/routers', 'compute.routers.list', (req) => this.list(req));
    server.route('GET', '/projects/:project/aggregated/routers', 'compute.routers.aggregatedList', (req) => this.aggregatedList(req));
  }

  private list(req: FakeRequest): FakeResponse {
    const { project, region } = req.params;
    this.checkProject(project);
    if (!REGIONS.includes(region)) throw invalidField('region', region, 'Unknown region.');
    const selfLink = `${API}/projects/${project}/regions/${region}/routers`;
    return { body: listResponse(this.byRegion.get(region) ?? [], req.query, { kind: 'compute#routerList', id: `projects/${project}/regions/${region}/routers`, selfLink }) };
  }

  private aggregatedList(req: FakeRequest): FakeResponse {
    const { project } = req.params;
    this.checkProject(project);
    const all = REGIONS.flatMap((r) => this.byRegion.get(r) ?? []);
    const selfLink = `${API}/projects/${project}/aggregated/routers`;
    const page = listResponse(all, req.query, { kind: 'compute#routerAggregatedList', id: `projects/${project}/aggregated/routers`, selfLink });
    const scopes: Record<string, Json> = {};
    for (const r of REGIONS) {
      const scope = `regions/${r}`;
      scopes[scope] = { warning: { code: 'NO_RESULTS_ON_PAGE', message: `There are no results for scope '${scope}' on this page.`, data: [{ key: 'scope', value: scope }] } };
    }
    for (const wire of (page.items as Json[] | undefined) ?? []) {
      const scope = `regions/${String(wire.region).split('/').pop()}`;
      scopes[scope] = { routers: [...((scopes[scope]!.routers as Json[] | undefined) ?? []), wire] };
    }
    return { body: { ...page, items: scopes } };
  }
}
