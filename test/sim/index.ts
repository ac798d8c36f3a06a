/**
 * The simulated cloud's VM layer: network namespaces + bridges, nftables firewalls, and VMs booted
 * with systemd-nspawn from a Debian image with cloud-init and Dask. Fakes in test/fakes/ use it to
 * boot what they create. See network.ts for the layout and the network-safety guarantees.
 */
export { SimNetwork } from './network';
export type { SimNetworkOptions, SimRunOptions, NetLocation, FirewallRule, BootVmOptions } from './network';
export { SimVm } from './vm';
export type { CloudInitResult } from './vm';
export { SimError, MAX_WAIT_MS } from './exec';
export type { RunResult } from './exec';
export { cleanupStale } from './cleanup';
export { imageStatus, imagePath, ensureBaseImage } from './image';
export { simulatedVms } from './prereq';
export { SIM_BLOCK } from './state';
export { renderNftScript } from './firewall';
export { SimVmBooter, toSimRules, toHostname } from './booter';
