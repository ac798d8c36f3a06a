/**
 * An in-memory cloud behind the CloudAdapter seam, for the core's VM logic: records every call,
 * and can be told to fail or delay the way real clouds do (a create that times out after
 * creating, a refused create, a delete that fails, a network still in use, a VM that dies).
 * `listInstances` shows live instances only (like EC2's state filter); `describeInstances` shows
 * them in any state.
 */
import { LABELS, type AdapterContext, type CloudAdapter, type Instance, type InstanceRequest, type NetworkPlan } from '../../src/cluster/vm';
import type { PreflightReport } from '../../src/cluster/preflight';

export type MemoryInstance = Instance & { labels: Record<string, string>; userData: Buffer };

export class MemoryCloud implements CloudAdapter {
  readonly kind = 'memory';
  readonly userDataLimit = 16384;
  readonly binaryUserData = true;
  readonly instances = new Map<string, MemoryInstance>();
  readonly calls: string[] = [];
  network: NetworkPlan | undefined;
  seq = 0;
  /** Fail the n-th createInstances call (1-based) after creating its instances (like a timed-out call). */
  failCreateAfterCreating: number | undefined;
  /** Refuse worker creates (nothing created) after this many ms: a cloud rejecting the request. */
  refuseWorkersAfterMs: number | undefined;
  /** The state new scheduler instances die into right after their create (e.g. 'terminated'). */
  schedulerDiesAs: string | undefined;
  /** deleteNetwork fails this many times with a dependency error first. */
  networkBusy = 0;
  /** deleteInstances always fails (an API outage during rollback). */
  failDeletes = false;
  /** Extra work a test wants preflight to do (record checks, throw). */
  onPreflight: ((report: PreflightReport, plan: NetworkPlan) => void) | undefined;
  constructor(readonly maxBatch: number) {}

  async preflight(_ctx: AdapterContext, plan: NetworkPlan, report: PreflightReport): Promise<void> {
    this.calls.push('preflight');
    this.onPreflight?.(report, plan);
  }
  async ensureNetwork(_ctx: AdapterContext, plan: NetworkPlan): Promise<void> {
    this.calls.push('ensureNetwork');
    this.network = plan;
  }
  async createInstances(ctx: AdapterContext, req: InstanceRequest, onCreated: (ids: string[]) => void): Promise<Instance[]> {
    const n = this.calls.filter((c) => c.startsWith('create')).length + 1;
    this.calls.push(`create:${req.role}:${req.names.length}`);
    if (req.role === 'worker' && this.refuseWorkersAfterMs !== undefined) {
      await new Promise((resolve) => setTimeout(resolve, this.refuseWorkersAfterMs));
      throw new Error("InvalidParameterValue: Invalid value 'm9z.huge' for InstanceType.");
    }
    const made = req.names.map((name) => {
      const id = `i-${++this.seq}`;
      const inst: MemoryInstance = { id, name, role: req.role, privateIp: `127.77.0.${this.seq + 1}`, publicIp: `127.77.128.${this.seq + 1}`, labels: req.labels, userData: req.userData.body };
      if (req.role === 'scheduler' && this.schedulerDiesAs !== undefined) inst.stoppedState = this.schedulerDiesAs;
      this.instances.set(id, inst);
      return inst;
    });
    if (n === this.failCreateAfterCreating) throw new Error('create call timed out');
    onCreated(made.map((i) => i.id));
    void ctx;
    return made.map(({ id, name, role, privateIp, publicIp }) => ({ id, name, role, privateIp, publicIp }));
  }
  async waitForAddresses(_ctx: AdapterContext, i: Instance): Promise<Instance> {
    return i;
  }
  async deleteInstances(_ctx: AdapterContext, ids: string[]): Promise<void> {
    this.calls.push(`delete:${ids.length}`);
    if (this.failDeletes) throw new Error('500 InternalError: the delete was not processed');
    for (const id of ids) this.instances.delete(id);
  }
  /** Ids a list does not show yet (a cloud's eventual consistency). */
  readonly unlisted = new Set<string>();
  /** Live instances of the cluster only: a dead one is not listed (EC2's state filter). */
  async listInstances(ctx: AdapterContext): Promise<Instance[]> {
    this.calls.push('list');
    return [...this.instances.values()].filter(
      (i) => i.labels[LABELS.cluster] === ctx.clusterId && !this.unlisted.has(i.id) && !(this.hidesDead && i.stoppedState !== undefined),
    );
  }
  /** Whether listInstances leaves out instances with a stoppedState. */
  hidesDead = false;
  /** When false, the adapter has no describeInstances (the watch falls back to listInstances). */
  describes = true;
  get describeInstances(): CloudAdapter['describeInstances'] {
    if (!this.describes) return undefined;
    return async (_ctx: AdapterContext, ids: string[]) => {
      this.calls.push('describe');
      return ids.flatMap((id) => {
        const i = this.instances.get(id);
        return i && !this.unlisted.has(id) ? [i] : [];
      });
    };
  }
  async listClusters(): Promise<Array<{ clusterId: string; expiresAt?: Date }>> {
    const seen = new Map<string, Date>();
    for (const i of this.instances.values()) seen.set(i.labels[LABELS.cluster]!, new Date(Number(i.labels[LABELS.expires]) * 1000));
    return [...seen].map(([clusterId, expiresAt]) => ({ clusterId, expiresAt }));
  }
  async deleteNetwork(): Promise<void> {
    this.calls.push('deleteNetwork');
    if (this.networkBusy > 0) {
      this.networkBusy--;
      throw Object.assign(new Error('still in use'), { dependency: true });
    }
    this.network = undefined;
  }
  isDependencyError(err: unknown): boolean {
    return (err as { dependency?: boolean }).dependency === true;
  }
  async consoleOutput(_ctx: AdapterContext, id: string): Promise<string> {
    return `console of ${id}\n`.repeat(3);
  }
  cleanupFlags(): string[] {
    return ['--region', 'memory-1'];
  }
}
