/**
 * waitForWorkers' reconnect bound, with scripted connections: each poll's outcome is given, so
 * the count of reconnections is exact. (Real drops against a real scheduler: test/e2e/dask-client.)
 */
import { describe, expect, it } from 'vitest';
import { MAX_RECONNECTS, waitForWorkers, type SchedulerClient, type WorkerIdentity } from '../../src/dask';
import { DaskCommError } from '../../src/errors';

const dropped = (): DaskCommError => new DaskCommError('E_CONNECTION_CLOSED', 'scheduler tls://10.0.0.2:8786 closed the connection', { details: {} });

/** A connection whose polls answer from `script` in turn: a worker count, or 'drop'. */
function scripted(script: Array<number | 'drop'>, log: string[]): () => Promise<SchedulerClient> {
  let n = 0;
  return async () => {
    const id = ++n;
    log.push(`open ${id}`);
    return {
      address: 'tls://10.0.0.2:8786',
      async workers(): Promise<WorkerIdentity[]> {
        const next = script.shift();
        if (next === undefined || next === 'drop') throw dropped();
        return Array.from({ length: next }, (_, i) => ({ address: `tls://10.0.0.${i + 3}:1`, name: `w${i}`, host: `10.0.0.${i + 3}`, status: 'running' }) as WorkerIdentity);
      },
      async close(): Promise<void> {
        log.push(`close ${id}`);
      },
    } as unknown as SchedulerClient;
  };
}

describe('waitForWorkers with reconnect', () => {
  it('reconnects after each drop, counts only drops in a row, and closes every connection it opened', async () => {
    const log: string[] = [];
    const open = scripted([0, 'drop', 1, 'drop', 'drop', 'drop', 2], log);
    const first = await open();
    const workers = await waitForWorkers(first, 2, { timeoutMs: 10_000, intervalMs: 1, reconnect: open });
    expect(workers).toHaveLength(2);
    // 1 is the caller's (left open), 2..5 were opened by the wait and all closed by it.
    expect(log).toEqual(['open 1', 'open 2', 'close 2', 'open 3', 'close 3', 'open 4', 'close 4', 'open 5', 'close 5']);
  });

  it(`gives up after ${MAX_RECONNECTS} reconnections in a row, saying so`, async () => {
    const log: string[] = [];
    const open = scripted(Array(10).fill('drop'), log);
    const first = await open();
    const err = await waitForWorkers(first, 1, { timeoutMs: 10_000, intervalMs: 1, reconnect: open }).catch((e: unknown) => e);
    expect(DaskCommError.isInstance(err) && err.code).toBe('E_CONNECTION_CLOSED');
    expect((err as Error).message).toContain(`${MAX_RECONNECTS} times in a row`);
    expect(log.filter((l) => l.startsWith('open'))).toHaveLength(MAX_RECONNECTS + 1);
    expect(log.filter((l) => l.startsWith('close'))).toHaveLength(MAX_RECONNECTS);
  });

  it('without reconnect, the first drop ends the wait', async () => {
    const log: string[] = [];
    const open = scripted(['drop', 5], log);
    const err = await waitForWorkers(await open(), 1, { timeoutMs: 10_000, intervalMs: 1 }).catch((e: unknown) => e);
    expect(DaskCommError.isInstance(err) && err.code).toBe('E_CONNECTION_CLOSED');
    expect(log).toEqual(['open 1']);
  });
});
