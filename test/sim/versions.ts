/**
 * A cloud cluster started for a client whose Dask differs from the VMs': shared by the three
 * providers' simulated-VM tests.
 *
 * The VMs run Debian trixie's Dask (2024.12.1, Python 3.13, cloudpickle 3.1); the client is this
 * machine's Debian bookworm Dask (2022.12.1, Python 3.11, cloudpickle 2.2). msgpack is 1.0.3 on
 * both. The library reads the client's versions from the `python` option, so the pair is real
 * Dask on both sides, compared over the scheduler's own `versions` handler.
 */
import { expect } from 'vitest';
import type { Cluster } from '../../src/cluster/cluster';
import type { ClusterEvent } from '../../src/cluster/events';
import { VersionMismatchError } from '../../src/errors';
import { eventually } from '../helpers/eventually';
import { pythonWithDask } from '../helpers/prereq';
import type { SimNetwork } from './network';

/** What differs between the host's Dask and the VM image's; msgpack (1.0.3 on both) does not. */
export const MISMATCHED_PACKAGES = ['dask', 'distributed', 'python', 'cloudpickle'];

export interface MismatchCase {
  /** A cluster of the provider under test, with `python: mismatchedClient()` and these extras. */
  make(extra: { strictVersions: boolean; onEvent: (e: ClusterEvent) => void }): Cluster;
  /** The fake's resources still present (empty when nothing is left). */
  leftovers(): unknown[];
  /** The simulated network the fake boots its VMs on. */
  net: SimNetwork;
}

/** The client whose Dask the VMs do not run: the host's Python (bookworm's Dask 2022.12.1). */
export function mismatchedClient(): string {
  const python = pythonWithDask();
  if (!python) throw new Error('the host has no Python with Dask (apt-get install python3-distributed)');
  return python;
}

/**
 * 1. Without strictVersions the start succeeds: the `versions` event and the
 *    DASK_CLOUD_VERSION_MISMATCH warning (an event and a process warning) name each package that
 *    differs, with both versions; close leaves nothing.
 * 2. With strictVersions the start fails with VersionMismatchError naming the same packages,
 *    rolls back, and leaves nothing.
 */
export async function expectMismatchWarnsThenStrictRollsBack(c: MismatchCase): Promise<void> {
  const processWarnings: Array<{ code?: string; message: string }> = [];
  const onWarning = (w: Error & { code?: string }): void => void processWarnings.push({ code: w.code, message: w.message });
  process.on('warning', onWarning);
  try {
    const events: ClusterEvent[] = [];
    const lenient = c.make({ strictVersions: false, onEvent: (e) => events.push(e) });
    try {
      await lenient.start();
      const report = lenient.versions!;
      expect(report.mismatches.map((m) => m.package).sort()).toEqual([...MISMATCHED_PACKAGES].sort());
      const distributed = report.mismatches.find((m) => m.package === 'distributed')!;
      expect(distributed.client).toMatch(/^2022\.12\.1/);
      expect(distributed.cluster.map((x) => x.version)).toEqual(['2024.12.1']);
      // Scheduler and worker both answered: the comparison covers every member.
      expect(distributed.cluster[0]!.members).toContain('scheduler');
      expect(distributed.cluster[0]!.members.length).toBe(lenient.members.length);
      expect(events.some((e) => e.type === 'versions')).toBe(true);
      const warning = events.find((e): e is Extract<ClusterEvent, { type: 'warning' }> => e.type === 'warning' && e.code === 'DASK_CLOUD_VERSION_MISMATCH');
      expect(warning, JSON.stringify(events.filter((e) => e.type === 'warning'))).toBeDefined();
      for (const p of MISMATCHED_PACKAGES) expect(warning!.message).toContain(`${p}: client `);
      expect(warning!.message).toContain('cluster 2024.12.1 on the scheduler and 1 worker');
      expect(warning!.message).not.toContain('msgpack');
      // The same text reaches the process, for scripts without an onEvent listener.
      await new Promise((r) => setImmediate(r));
      expect(processWarnings.filter((w) => w.code === 'DASK_CLOUD_VERSION_MISMATCH').map((w) => w.message)).toContainEqual(expect.stringContaining('distributed: client 2022.12.1'));
    } finally {
      await lenient.close();
    }
    expect(c.leftovers()).toEqual([]);

    const strictEvents: ClusterEvent[] = [];
    const strict = c.make({ strictVersions: true, onEvent: (e) => strictEvents.push(e) });
    const err = await strict.start().then(
      () => null,
      (e: unknown) => e,
    );
    await strict.close();
    expect(err, 'strictVersions must fail the start').toBeInstanceOf(Error);
    const cause = (err as Error & { cause?: unknown }).cause;
    expect(cause).toBeInstanceOf(VersionMismatchError);
    const message = (err as Error).message;
    expect(message).toMatch(/failed during versions/);
    for (const p of MISMATCHED_PACKAGES) expect(message).toContain(`${p}: client `);
    expect(message).toContain('Everything created for this cluster has been deleted.');
    expect(strictEvents.some((e) => e.type === 'rollback')).toBe(true);
    expect(strict.state).toBe('failed');
    expect(c.leftovers()).toEqual([]);
    // Deleted instances' VMs are stopped as they go (nspawn takes a moment).
    await eventually(() => c.net.listVms().every((vm) => !vm.running), 'the VMs to stop', 30_000);
  } finally {
    process.off('warning', onWarning);
  }
}
