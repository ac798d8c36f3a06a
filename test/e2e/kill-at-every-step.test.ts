/**
 * Issue 7, "Must show": killing the process (SIGKILL) at every step of a start, then running
 * `cleanup` for its cluster, leaves each fake empty.
 *
 * A child process starts a cluster against a fake that runs in this process. For k = 1, 2, ...
 * the child is SIGKILLed the moment the fake receives its k-th mutating request (firewall, tag,
 * security group, instance creates): the request still takes effect, the child never learns of
 * it, which is the hardest case for a sweep. The last round kills it while it waits for the
 * scheduler, after every create. After each kill the library's cleanup for that cluster id runs,
 * and the fake must hold nothing of it.
 *
 * Network safety: every fake hands out loopback addresses (its provider helpers assert it), so the
 * child's readiness probes stay on this machine.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { FakeServer } from '../fakes/core';
import { killStartAt } from '../helpers/kill-at-step';
import { startFake as startGcp } from '../providers/gcp/helpers';
import { startFake as startEc2 } from '../providers/ec2/helpers';
import { startFake as startDo } from '../providers/digitalocean/helpers';
import type { CleanupReport } from '../../src/cluster/vm';

/** EC2 and DigitalOcean loopback slots no other test file uses. */
const EC2_SLOT = 6;
const DO_SLOT = 6;

interface Target {
  provider: 'gcp' | 'ec2' | 'digitalocean';
  server: FakeServer;
  /** Requests that create, change or delete something. */
  mutating: RegExp;
  options: Record<string, string | number>;
  leaked(): Record<string, unknown[]>;
  cleanup(clusterId: string): Promise<CleanupReport>;
  stop(): Promise<void>;
}

const targets: Target[] = [];
afterEach(async () => {
  await Promise.all(targets.splice(0).map((t) => t.stop()));
});

async function everyStep(t: Target): Promise<string[]> {
  const steps: string[] = [];
  for (let k = 1; k <= 20; k++) {
    const { clusterId, killedAt } = await killStartAt(
      {
        provider: t.provider,
        options: t.options,
        watchMutating: (on) => {
          const hook = t.server.faults.latency(t.mutating, () => {
            on('');
            return 0;
          });
          return () => hook.remove();
        },
      },
      k,
    );
    steps.push(killedAt);
    const report = await t.cleanup(clusterId);
    expect(report.clusters.map((c) => c.error ?? 'ok'), killedAt).toEqual(['ok']);
    expect(t.leaked(), `after a kill at ${killedAt} and cleanup`).toEqual({});
    if (killedAt === 'waiting for the scheduler') return steps;
  }
  throw new Error(`a start made more than 20 mutating requests: ${steps.join(', ')}`);
}

describe('SIGKILL at every step of start, then cleanup, leaves the fake empty', () => {
  it('GCP', async () => {
    const fake = await startGcp();
    const o = fake.clientOptions();
    const { GCPCluster } = await import('../../providers/gcp');
    targets.push({
      provider: 'gcp',
      server: fake.server,
      mutating: /\.(insert|bulkInsert|delete|patch|update|set[A-Z]\w*)$/,
      options: { projectId: fake.project, zone: 'us-central1-a', port: o.port },
      leaked: () => fake.leaked(),
      cleanup: (id) => GCPCluster.cleanup({ projectId: fake.project, endpoint: { apiEndpoint: o.apiEndpoint, port: o.port, protocol: o.protocol }, authClient: o.authClient, clusterIds: [id] }),
      stop: () => fake.stop(),
    });
    const steps = await everyStep(targets[0]!);
    expect(steps.length).toBeGreaterThanOrEqual(4); // firewall(s), scheduler, workers, then waiting
  }, 300_000);

  it('EC2', async () => {
    const fake = await startEc2(EC2_SLOT, { lifecycleMs: { pendingMs: 100, shuttingDownMs: 100 } });
    const cfg = fake.clientConfig();
    const { EC2Cluster } = await import('../../providers/ec2');
    targets.push({
      provider: 'ec2',
      server: fake.server,
      mutating: /^(Create|Authorize|Revoke|Run|Terminate|Delete|Modify)/,
      options: { region: cfg.region, endpoint: cfg.endpoint, accessKeyId: cfg.credentials.accessKeyId, secretAccessKey: cfg.credentials.secretAccessKey },
      leaked: () => fake.leaked(),
      cleanup: (id) => EC2Cluster.cleanup({ region: cfg.region, endpoint: cfg.endpoint, credentials: cfg.credentials, clusterIds: [id] }),
      stop: () => fake.stop(),
    });
    const steps = await everyStep(targets[0]!);
    expect(steps.length).toBeGreaterThanOrEqual(4); // security group, its rules, scheduler, workers, then waiting
  }, 300_000);

  it('DigitalOcean', async () => {
    const fake = await startDo(DO_SLOT);
    const { DropletCluster } = await import('../../providers/digitalocean');
    targets.push({
      provider: 'digitalocean',
      server: fake.server,
      mutating: /_(create|delete|update|add\w*|remove\w*|assign\w*|unassign\w*)$/,
      options: { token: fake.token, endpoint: fake.endpoint },
      leaked: () => fake.leaked(),
      cleanup: (id) => DropletCluster.cleanup({ token: fake.token, endpoint: fake.endpoint, clusterIds: [id] }),
      stop: () => fake.stop(),
    });
    const steps = await everyStep(targets[0]!);
    expect(steps.length).toBeGreaterThanOrEqual(4); // tag, firewall, scheduler, workers, then waiting
  }, 300_000);
});
