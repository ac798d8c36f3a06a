/**
 * How a listing becomes summaries (summarizeClusters), and listClusters' input check. The
 * listings of each cloud are tested against its fake (test/providers/*: list after start and
 * after close; test/e2e/cli.test.ts: `dask-cloud ls`).
 */
import { describe, expect, it } from 'vitest';
import { LABELS, summarizeClusters, type ListedInstance } from '../../src/cluster/vm';
import { listClusters } from '../../src/cluster/list';
import { ValidationError } from '../../src/errors';

const t = (iso: string) => new Date(iso);
function inst(role: 'scheduler' | 'worker', extra: Partial<ListedInstance> = {}, labels: Record<string, string> = {}): ListedInstance {
  return { id: `${role}-${Math.random()}`, name: role, role, labels: { [LABELS.role]: role, ...labels }, ...extra };
}

describe('summarizeClusters', () => {
  it('running: counts by role, the public address with the labelled protocol and port, the oldest creation; newest cluster first', () => {
    const [newer, older] = summarizeClusters('gcp', [
      {
        clusterId: 'dask-00000001',
        expiresAt: t('2026-12-07T00:00:00Z'),
        instances: [
          inst('scheduler', { privateIp: '10.0.0.2', publicIp: '34.1.2.3', createdAt: t('2026-12-06T01:00:05Z'), location: 'europe-west4-a' }, { [LABELS.protocol]: 'tls', [LABELS.port]: '8800' }),
          inst('worker', { privateIp: '10.0.0.3', createdAt: t('2026-12-06T01:00:03Z'), location: 'europe-west4-a' }),
          inst('worker', { privateIp: '10.0.0.4', stoppedState: 'TERMINATED' }),
        ],
      },
      {
        clusterId: 'dask-00000002',
        instances: [inst('scheduler', { privateIp: '10.0.0.9', createdAt: t('2026-12-06T02:00:00Z') }, { [LABELS.protocol]: 'tcp', [LABELS.port]: '8786' })],
      },
    ]);
    expect(older).toEqual({
      id: 'dask-00000001',
      kind: 'gcp',
      location: 'europe-west4-a',
      state: 'running',
      counts: { scheduler: 1, workers: 1 },
      address: 'tls://34.1.2.3:8800',
      created: t('2026-12-06T01:00:03Z'),
      expires: t('2026-12-07T00:00:00Z'),
    });
    // Private mode: the private address; the protocol label says tcp.
    expect(newer).toMatchObject({ id: 'dask-00000002', address: 'tcp://10.0.0.9:8786', counts: { scheduler: 1, workers: 0 } });
  });

  it('stopped: the scheduler powered off (no address); partial: no scheduler at all, or only a firewall; unlabelled schedulers default to tls:8786', () => {
    const rows = summarizeClusters('ec2', [
      { clusterId: 'a', instances: [inst('scheduler', { publicIp: '1.2.3.4', stoppedState: 'stopping' }), inst('worker')] },
      { clusterId: 'b', instances: [inst('worker', { location: 'eu-west-1b' })] },
      { clusterId: 'c', createdAt: t('2026-12-01T00:00:00Z') },
      { clusterId: 'd', instances: [inst('scheduler', { privateIp: '172.31.0.5' })] },
    ]);
    const by = Object.fromEntries(rows.map((r) => [r.id, r]));
    expect(by.a).toMatchObject({ state: 'stopped', counts: { scheduler: 0, workers: 1 } });
    expect(by.a!.address).toBeUndefined();
    expect(by.b).toMatchObject({ state: 'partial', location: 'eu-west-1b', counts: { scheduler: 0, workers: 1 } });
    expect(by.c).toEqual({ id: 'c', kind: 'ec2', state: 'partial', counts: { scheduler: 0, workers: 0 }, created: t('2026-12-01T00:00:00Z') });
    expect(by.d!.address).toBe('tls://172.31.0.5:8786');
  });
});

describe('listClusters', () => {
  it('refuses an unknown provider before loading anything', async () => {
    for (const provider of [undefined, 'local', 'aws', 42]) {
      const err = await listClusters({ provider } as never).catch((e: unknown) => e);
      expect(ValidationError.isInstance(err) && err.details.option).toBe('provider');
    }
  });
});
