/** The dashboard over mutual TLS: the user's local tunnel to the scheduler VM's terminator. */
export { openDashboardTunnel, DEFAULT_DASHBOARD_TLS_PORT, DEFAULT_DASHBOARD_PATH } from './tunnel';
export type { DashboardTunnel, DashboardTunnelOptions } from './tunnel';
