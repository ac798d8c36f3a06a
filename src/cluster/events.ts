/** Typed progress events a cluster emits through `onEvent`. Each carries the cluster id. */
export type ClusterPhase = 'validate' | 'credentials' | 'preflight' | 'network' | 'scheduler' | 'workers' | 'ready' | 'scale' | 'close';

export type ClusterEvent =
  | { type: 'phase-start'; clusterId: string; phase: ClusterPhase; at: number }
  | { type: 'phase-end'; clusterId: string; phase: ClusterPhase; at: number; durationMs: number }
  | { type: 'member-launched'; clusterId: string; role: 'scheduler' | 'worker'; memberId: string; name: string; at: number }
  | { type: 'member-stopped'; clusterId: string; role: 'scheduler' | 'worker'; memberId: string; name: string; at: number }
  /** A member died on its own after start (a process exited, a VM was preempted). */
  | { type: 'member-failed'; clusterId: string; role: 'scheduler' | 'worker'; memberId: string; name: string; message: string; at: number }
  | { type: 'scheduler-ready'; clusterId: string; address: string; at: number }
  | { type: 'workers-ready'; clusterId: string; count: number; at: number }
  | { type: 'workers-retired'; clusterId: string; retired: string[]; notRetired: string[]; at: number }
  | { type: 'warning'; clusterId: string; message: string; at: number }
  | { type: 'rollback'; clusterId: string; reason: string; at: number }
  | { type: 'closed'; clusterId: string; at: number };

export type ClusterEventListener = (event: ClusterEvent) => void;
