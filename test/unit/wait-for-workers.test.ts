/**
 * waitForWorkers' reconnect bound, with scripted connections: each poll's outcome is given, so
 * the count of reconnections is exact. (Real drops against a real scheduler: test/e2e/dask-client.)
 */
import { describe, expect, it } from 'vitest';
import { MAX_RECONNECTS, SchedulerClient, waitForWorkers, type WorkerIdentity } from '../../src/dask';
import { DaskCommError } from '../../src/errors';

const dropped = (): DaskCommError => new DaskCommError('E_CONNECTION_CLOSED', 'scheduler tls://10.0.0.2:8786 closed the connection', { details: {} });

/**
 * A connection whose polls (worker counts) answer from `script` in turn: a count, or 'drop'. The
 * records asked for once the count is enough are that many workers.
 */
function scripted(script: Array<number | 'drop'>, log: string[]): () => Promise<SchedulerClient> {
  let n = 0;
  let last = 0;
  return async () => {
    const id = ++n;
    log.push(`open ${id}`);
    return {
      address: 'tls://10.0.0.2:8786',
      async workerCount(): Promise<number> {
        const next = script.shift();
        if (next === undefined || next === 'drop') throw dropped();
        last = next;
        return next;
      },
      async workers(): Promise<WorkerIdentity[]> {
        return Array.from({ length: last }, (_, i) => ({ address: `tls://10.0.0.${i + 3}:1`, name: `w${i}`, host: `10.0.0.${i + 3}`, status: 'running' }) as WorkerIdentity);
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

describe('SchedulerClient.workerCount', () => {
  /** `request` answers `reply` and records the op; `workers` (identity) answers `records`. */
  const stub = (reply: unknown, records: Array<Partial<WorkerIdentity>>) => {
    const ops: string[] = [];
    const client = {
      async request(op: string): Promise<unknown> {
        ops.push(op);
        return reply;
      },
      async workers(): Promise<WorkerIdentity[]> {
        ops.push('identity');
        return records as WorkerIdentity[];
      },
    };
    return { ops, count: (o?: { running?: boolean }) => SchedulerClient.prototype.workerCount.call(client as unknown as SchedulerClient, o) };
  };

  it('counts the workers of ncores (ncores_running with running), without identity', async () => {
    const a = stub({ 'tls://10.0.0.3:1': 2, 'tls://10.0.0.4:1': 2 }, []);
    expect(await a.count()).toBe(2);
    expect(await a.count({ running: true })).toBe(2);
    expect(a.ops).toEqual(['ncores', 'ncores_running']);
  });

  it('a scheduler that answers ncores with nil (an unknown op) is counted through identity', async () => {
    const b = stub(null, [{ status: 'running' }, { status: 'init' }]);
    expect(await b.count()).toBe(2);
    expect(await b.count({ running: true })).toBe(1);
    expect(b.ops).toEqual(['ncores', 'identity', 'ncores_running', 'identity']);
  });
});
