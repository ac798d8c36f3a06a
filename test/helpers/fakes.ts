/** Shared pieces of provider tests that run clusters against API fakes. */
import { expect } from 'vitest';
import { ClusterStartError } from '../../src/errors';
import type { ClusterSummary } from '../../src/cluster/vm';
import { assertNoContractViolations, type HasContractViolations } from '../fakes/core';
import type { ReceivedCall } from '../fakes/core/server';

export interface CheckedFake extends HasContractViolations {
  server: { handlerErrors: unknown[] };
  bootErrors: unknown[];
  stop(): Promise<void>;
}

/**
 * Fails the test on any contract violation, fake handler crash or boot error, then — whatever
 * happened — closes every cluster, stops every fake and runs `more` (e.g. stopping booters).
 * Empties both lists for the next test.
 */
export async function checkFakesAndClose(
  fakes: CheckedFake[],
  clusters: Array<{ close(): Promise<void> }>,
  more?: () => Promise<unknown>,
): Promise<void> {
  try {
    assertNoContractViolations(...fakes);
    for (const f of fakes) {
      expect(f.server.handlerErrors).toEqual([]);
      expect(f.bootErrors).toEqual([]);
    }
  } finally {
    await Promise.all(clusters.splice(0).map((c) => c.close().catch(() => undefined)));
    await Promise.all(fakes.splice(0).map((f) => f.stop()));
    await more?.();
  }
}

/** Starts `cluster`, expecting the start to fail; returns the ClusterStartError. */
export async function failedStart(cluster: { start(): Promise<unknown> }): Promise<ClusterStartError> {
  const err = await cluster.start().then(
    () => {
      throw new Error('start() should have failed');
    },
    (e: unknown) => e,
  );
  expect(ClusterStartError.isInstance(err), String(err)).toBe(true);
  return err as ClusterStartError;
}

/**
 * What `list()` says of a running cluster: read back from the fake's labels alone, so a process
 * with nothing but credentials sees the same. `location` is the zone or region the test expects.
 */
export async function expectListed(
  list: () => Promise<ClusterSummary[]>,
  cluster: { id: string; schedulerAddress: string; toJSON(): { kind: string } },
  expected: { workers: number; location: string | RegExp; startedAt: number },
): Promise<void> {
  const found = (await list()).filter((c) => c.id === cluster.id);
  expect(found).toHaveLength(1);
  const c = found[0]!;
  expect(c).toMatchObject({ kind: cluster.toJSON().kind, state: 'running', counts: { scheduler: 1, workers: expected.workers }, address: cluster.schedulerAddress });
  expect(c.location).toMatch(expected.location);
  // Created by this start (the fakes keep real clocks), and expiring after it.
  expect(c.created!.getTime()).toBeGreaterThanOrEqual(Math.floor(expected.startedAt / 1000) * 1000 - 1000);
  expect(c.created!.getTime()).toBeLessThanOrEqual(Date.now());
  expect(c.expires!.getTime()).toBeGreaterThan(Date.now());
}

/** Calls as `operation +ms` from the first one (or from `t0`), for a failing timing assertion's message. */
export function callTimeline(calls: ReceivedCall[], t0 = calls[0]?.at ?? 0): string {
  return calls
    .filter((c) => c.at >= t0)
    .map((c) => `${c.operation} +${c.at - t0}`)
    .join(', ');
}
