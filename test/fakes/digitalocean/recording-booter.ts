/**
 * A VmBooter that boots nothing and records every call: for tests of the fake's boot hook and
 * firewall translation (and of providers, when no simulated VM is needed).
 */
import type { BootRequest, BootedVm, FirewallRule, VmBooter } from '../core';

export type BooterEvent =
  | { kind: 'boot'; id: string; request: BootRequest }
  | { kind: 'setFirewall'; id: string; rules: FirewallRule[] }
  | { kind: 'stop'; id: string };

export class RecordingBooter implements VmBooter {
  readonly events: BooterEvent[] = [];
  /** Running VMs by id, with their current rules. */
  readonly running = new Map<string, { request: BootRequest; firewall: FirewallRule[] }>();
  /** Make the next boots fail (for error paths). */
  failBoots = 0;
  /** While set, boots wait for it (to act on a VM that is still booting). */
  gate?: Promise<void>;

  readonly #exits = new Map<string, () => void>();

  /** The VM `id` exits on its own, as after `shutdown -h now` inside it. */
  exit(id: string): void {
    this.#exits.get(id)?.();
  }

  async boot(request: BootRequest): Promise<BootedVm & { exited: Promise<void> }> {
    this.events.push({ kind: 'boot', id: request.id, request });
    if (this.gate) await this.gate;
    if (this.failBoots > 0) {
      this.failBoots--;
      throw new Error(`simulated boot failure for ${request.id}`);
    }
    this.running.set(request.id, { request, firewall: request.firewall });
    let stopped = false;
    const exited = new Promise<void>((resolve) => this.#exits.set(request.id, resolve));
    return {
      exited,
      consoleOutput: async () => `[recording-booter] ${request.name ?? request.id} booted with ${request.userData.length} bytes of user-data\n`,
      stop: async () => {
        if (stopped) return;
        stopped = true;
        this.running.delete(request.id);
        this.events.push({ kind: 'stop', id: request.id });
      },
    };
  }

  setFirewall(id: string, rules: FirewallRule[]): void {
    this.events.push({ kind: 'setFirewall', id, rules });
    const vm = this.running.get(id);
    if (vm) vm.firewall = rules;
  }

  /** Events of one kind (and optionally one VM). */
  of<K extends BooterEvent['kind']>(kind: K, id?: string): Extract<BooterEvent, { kind: K }>[] {
    return this.events.filter((e): e is Extract<BooterEvent, { kind: K }> => e.kind === kind && (id === undefined || e.id === id));
  }
}
