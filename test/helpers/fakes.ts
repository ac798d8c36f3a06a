/** Shared pieces of provider tests that run clusters against API fakes. */
import { expect } from 'vitest';
import { ClusterStartError } from '../../src/errors';
import { assertNoContractViolations, type HasContractViolations } from '../fakes/core';

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
