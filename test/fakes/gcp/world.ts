/** What the GCP fake's resource modules share (one project, one clock, one registry). */
import type { AddressPools, Clock, Faults, IdAllocator, ResourceRegistry, VmBooter } from '../core';
import type { MachineType } from './catalog';
import type { Operations } from './operations';

/** How long each lifecycle step takes, in ms of the fake's clock. */
export interface GcpTimings {
  /** PROVISIONING → STAGING. */
  provisioningMs: number;
  /** STAGING → RUNNING (plus any `faults.slowBoot`). The insert operation is DONE on RUNNING. */
  stagingMs: number;
  /** STOPPING → TERMINATED, then the instance is gone and the delete operation DONE. */
  stoppingMs: number;
  /** Firewall insert/delete and setLabels: PENDING → DONE. */
  globalOperationMs: number;
}

/** Short by default so real-clock tests stay fast; real GCP takes seconds. */
export const DEFAULT_TIMINGS: GcpTimings = { provisioningMs: 100, stagingMs: 200, stoppingMs: 100, globalOperationMs: 50 };

export interface GcpQuotas {
  /** Regional `CPUS` quota. */
  cpus?: number;
  /** Regional `INSTANCES` quota. */
  instances?: number;
  /** Regional `IN_USE_ADDRESSES` (external IPs). */
  inUseAddresses?: number;
  /** Regional `SSD_TOTAL_GB` (pd-ssd and pd-balanced disks). */
  ssdTotalGb?: number;
  /** Regional `DISKS_TOTAL_GB` (pd-standard disks). */
  disksTotalGb?: number;
}

export interface GcpWorld {
  readonly project: string;
  readonly projectNumber: string;
  readonly clock: Clock;
  readonly ids: IdAllocator;
  readonly registry: ResourceRegistry;
  readonly pools: AddressPools;
  readonly faults: Faults;
  readonly timings: GcpTimings;
  readonly quotas: GcpQuotas;
  readonly operations: Operations;
  readonly booter?: VmBooter;
  /** 404 `projects/X` unless X is the fake's project. */
  checkProject(project: string): void;
  /** 400 `Unknown zone.` unless the zone exists. */
  checkZone(zone: string): void;
  networkUrl(name: string): string;
  /** The machine type if it is offered in `zone` (see FakeGcp.withdrawMachineType). */
  machineTypeIn(zone: string, name: string): MachineType | undefined;
  /** Recomputes every booted VM's firewall and calls `booter.setFirewall` where it changed. */
  syncFirewalls(): void;
  /** Records a failure of the booter (boot, stop, setFirewall): never a fake crash. */
  recordBootError(id: string, error: unknown): void;
}
