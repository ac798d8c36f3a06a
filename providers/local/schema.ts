/**
 * LocalCluster's options, declared once (see src/config/schema.ts). TypeScript checks that this
 * table and `LocalClusterOptions` have the same keys.
 */
import { CLUSTER_OPTIONS, optionTable } from '../../src/config/option-table';
import type { LocalClusterOptions } from './index';

export const LOCAL_OPTIONS = optionTable<LocalClusterOptions>()({
  ...CLUSTER_OPTIONS,
  host: { type: 'string', flag: 'host', description: 'Interface every process binds to (default 127.0.0.1): an IPv4 address or a host name.' },
  schedulerPort: { type: 'integer', flag: 'scheduler-port', description: 'Scheduler port (default: a free port).' },
  dashboardAddress: {
    type: 'string',
    alsoAccepts: ['false'],
    flag: 'dashboard-address',
    description: "Dashboard address such as ':8787' or '127.0.0.1:8787' (default: a free port on host), or false for none.",
  },
});
