/** Test helpers for the GCP fake: real SDK clients, a recording booter, polling. */
import * as compute from '@google-cloud/compute';
import type { BootRequest, BootedVm, FirewallRule, VmBooter } from '../core';
import type { FakeGcp } from './fake-gcp';
import type { Instance } from '../../../providers/gcp/types';

export type Clients = ReturnType<typeof sdkClients>;

/** The real SDK clients, pointed at the fake. Close them with `closeClients`. */
export function sdkClients(fake: FakeGcp) {
  const o = fake.clientOptions();
  return {
    instances: new compute.InstancesClient(o),
    zoneOps: new compute.ZoneOperationsClient(o),
    globalOps: new compute.GlobalOperationsClient(o),
    firewalls: new compute.FirewallsClient(o),
    networks: new compute.NetworksClient(o),
    subnetworks: new compute.SubnetworksClient(o),
    images: new compute.ImagesClient(o),
    zones: new compute.ZonesClient(o),
    projects: new compute.ProjectsClient(o),
    regions: new compute.RegionsClient(o),
    machineTypes: new compute.MachineTypesClient(o),
    routers: new compute.RoutersClient(o),
  };
}

export async function closeClients(c: Clients): Promise<void> {
  await Promise.all(Object.values(c).map((x) => x.close()));
}

/** A minimal instance body as a provider would send it. */
export function instanceBody(name: string, over: Partial<Instance> = {}): Instance {
  return {
    name,
    machineType: 'zones/us-central1-a/machineTypes/e2-standard-2',
    disks: [{ boot: true, autoDelete: true, initializeParams: { sourceImage: 'projects/debian-cloud/global/images/family/debian-12', diskSizeGb: 20 } }],
    networkInterfaces: [{ network: 'global/networks/default' }],
    metadata: { items: [{ key: 'user-data', value: '#cloud-config\n' }] },
    labels: { 'dask-cluster': 'abc' },
    tags: { items: ['dask-abc'] },
    ...over,
  };
}

/** Records what the fake asks of a VmBooter. */
export class RecordingBooter implements VmBooter {
  readonly boots: BootRequest[] = [];
  readonly firewallUpdates: { id: string; rules: FirewallRule[] }[] = [];
  readonly stopped: string[] = [];
  readonly #exits = new Map<string, () => void>();

  async boot(vm: BootRequest): Promise<BootedVm & { exited: Promise<void> }> {
    this.boots.push(vm);
    const exited = new Promise<void>((resolve) => this.#exits.set(vm.id, resolve));
    return {
      consoleOutput: async () => `[booted] ${vm.name} ${vm.privateIp}\nuser-data: ${vm.userData.toString('utf8').split('\n')[0]}\n`,
      stop: async () => {
        this.stopped.push(vm.id);
      },
      exited,
    };
  }

  /** The VM `id` exits on its own, as after `shutdown -h now` inside it. */
  exit(id: string): void {
    this.#exits.get(id)?.();
  }

  setFirewall(id: string, rules: FirewallRule[]): void {
    this.firewallUpdates.push({ id, rules });
  }

  /** The latest rules a VM was given (boot or update). */
  rulesOf(id: string): FirewallRule[] | undefined {
    const updates = this.firewallUpdates.filter((u) => u.id === id);
    return updates.length ? updates[updates.length - 1].rules : this.boots.find((b) => b.id === id)?.firewall;
  }
}

/** Polls (real time, bounded) until `cond` holds: for requests in flight while a ManualClock stands still. */
export async function until(cond: () => boolean, what: string, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
