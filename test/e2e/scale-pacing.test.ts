/**
 * A thousand workers on the EC2 and DigitalOcean fakes, each enforcing its cloud's documented
 * rate limits, with stand-in VMs (test/sim/standin.ts: a scheduler speaking Dask's wire protocol
 * with the cluster's certificates, workers that register as their VMs boot):
 * - EC2: after a start spent the instance-launch budget, scaling down and back up by 500 is
 *   paced (a `pacing` event) and never answered RequestLimitExceeded;
 * - DigitalOcean at 250 requests a minute: start and close() never surface a 429, close()
 *   deletes every Droplet, the firewall and the tags; when another client spent the budget,
 *   scale() waits as DigitalOcean asks (a `pacing` event);
 * - GCP under a per-minute API quota: start, scale to 500 and back, and close() of 1,000;
 * - no Node warning (MaxListenersExceededWarning or any other) is printed during any of it.
 *
 * Network safety: the fakes hand out addresses of 127.220.0.0/16 (loopback, used by no other test
 * file), and the stand-in refuses any other address.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FakeEc2 } from '../fakes/ec2';
import { FakeDigitalOcean } from '../fakes/digitalocean';
import { FakeGcp } from '../fakes/gcp';
import { StandInBooter } from '../sim/standin';
import { EC2Cluster } from '../../providers/ec2';
import { DropletCluster } from '../../providers/digitalocean';
import { GCPCluster } from '../../providers/gcp';
import type { ClusterEvent } from '../../src/cluster/events';

const N = 1000;
/** A short simulated boot: these tests are about API calls, not boot time. */
const BOOT_MS = 500;
const IMAGE = 'ghcr.io/dask/dask:2024.12.1-py3.12';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

/**
 * Node warnings printed while `fn` runs. The AWS SDK's notice that its releases from 2027 need
 * Node 22 is printed once per process at its first request, at any scale: it is not counted.
 */
async function warningsDuring<T>(fn: () => Promise<T>): Promise<{ value: T; warnings: string[] }> {
  const warnings: string[] = [];
  const onWarning = (w: Error & { code?: string }) => {
    if (w.name === 'NodeVersionSupportWarning' || /NodeVersionSupportWarning/.test(w.message)) return;
    warnings.push(`${w.name}${w.code ? ` ${w.code}` : ''}: ${w.message}`);
  };
  process.on('warning', onWarning);
  try {
    const value = await fn();
    await new Promise((r) => setImmediate(r));
    return { value, warnings };
  } finally {
    process.off('warning', onWarning);
  }
}

describe('a thousand workers within the clouds\' rate limits', () => {
  it('EC2: scaling back up by 500 after the start spent the launch budget is paced, and no refusal reaches the caller', { timeout: 600_000 }, async () => {
    // AWS's bucket is 1,000 instances refilled at 2/s; 20/s here keeps the test short, and the
    // cluster is told the same rate, as a user whose limit AWS raised would. The start and the
    // scale-down must not give the bucket time to refill the 500 (at 100/s, 5 s did on a loaded
    // machine, and the scale-up needed no pacing): at 20/s that takes 25 s.
    const launchRate = { burst: N, perSecond: 20 };
    const booter = new StandInBooter({ bootMs: BOOT_MS });
    cleanups.push(() => booter.stopAll());
    const fake = await FakeEc2.start({ privateCidr: '127.220.0.0/18', publicCidr: '127.220.64.0/18', booter, runInstancesRate: launchRate });
    cleanups.push(() => fake.stop());
    const cfg = fake.clientConfig();
    const events: ClusterEvent[] = [];
    const cluster = new EC2Cluster({
      region: cfg.region,
      endpoint: cfg.endpoint,
      credentials: cfg.credentials,
      closeOnSignals: false,
      saveState: false,
      nWorkers: N,
      launchRate,
      // The stand-in runs no image; naming one keeps the image choice (and its warnings) out of this test.
      dockerImage: IMAGE,
      onEvent: (e) => events.push(e),
    });
    cleanups.push(() => cluster.close());
    const { warnings } = await warningsDuring(async () => {
      await cluster.start();
      expect((await cluster.workers()).length).toBe(N);
      await cluster.scale(N / 2);
      await cluster.waitForWorkers(N / 2, { timeoutMs: 60_000 });
      const before = events.length;
      await cluster.scale(N);
      await cluster.waitForWorkers(N, { timeoutMs: 120_000 });
      const pacing = events.slice(before).filter((e): e is Extract<ClusterEvent, { type: 'pacing' }> => e.type === 'pacing');
      expect(pacing.length).toBeGreaterThan(0);
      expect(pacing[0]).toMatchObject({ provider: 'ec2', operation: 'RunInstances', perSecond: 20 });
      expect(pacing[0]!.message).toMatch(/^EC2 is launching 20\/s: \d+ instances left/);
    });
    expect(warnings).toEqual([]);
    const runs = fake.server.calls('RunInstances').filter((c) => String(c.params.DryRun) !== 'true');
    // Paced steps go out as the library's budget refills, counted from when each is sent; the
    // fake (as EC2) counts from when it arrives. On a loaded machine a step in flight beside
    // another can arrive early and be refused: the pipeline sends it again. Launching unpaced
    // would meet the empty bucket with most of the 500.
    const refused = runs.filter((c) => c.status !== 200);
    const timeline = runs.map((c) => `${c.at - runs[0]!.at}:${String(c.params.MaxCount)}:${c.status}`).join(' ');
    expect(refused.map((c) => c.status), timeline).toEqual(refused.map(() => 503));
    expect(refused.length, timeline).toBeLessThanOrEqual(Math.max(1, Math.floor(runs.length / 10)));
    await cluster.close();
    expect(fake.leaked()).toEqual({});
  });

  it('DigitalOcean at 250 requests a minute: start and close() of 1000 never surface a 429, and close() leaves nothing', { timeout: 600_000 }, async () => {
    const booter = new StandInBooter({ bootMs: BOOT_MS });
    cleanups.push(() => booter.stopAll());
    const fake = await FakeDigitalOcean.start({ privateCidr: '127.220.128.0/19', publicCidr: '127.220.160.0/19', booter, lifecycleMs: 200, firewallApplyMs: 50, dropletLimit: 2 * N, rateLimit: { perMinute: 250, perHour: 5_000 } });
    cleanups.push(() => fake.stop());
    const events: ClusterEvent[] = [];
    const cluster = new DropletCluster({
      token: fake.token,
      endpoint: fake.endpoint,
      closeOnSignals: false,
      saveState: false,
      nWorkers: N,
      dockerImage: IMAGE,
      onEvent: (e) => events.push(e),
    });
    cleanups.push(() => cluster.close());
    const { warnings } = await warningsDuring(async () => {
      await cluster.start();
      expect((await cluster.workers()).length).toBe(N);
      await cluster.close();
    });
    expect(warnings).toEqual([]);
    expect(fake.leaked()).toEqual({});
    const statuses = fake.server.received.map((c) => c.status);
    // The pacing keeps under the budget; a 429 that the fake's bucket still answered was absorbed.
    expect(statuses.filter((s) => s === 429).length).toBeLessThanOrEqual(2);
  });

  it('GCP: start, scale(500), scale(1000) and close() of 1000 under a per-minute quota, with no warning and nothing left', { timeout: 600_000 }, async () => {
    const booter = new StandInBooter({ bootMs: BOOT_MS });
    cleanups.push(() => booter.stopAll());
    const fake = await FakeGcp.start({ privateCidr: '127.220.224.0/20', publicCidr: '127.220.240.0/20', booter });
    cleanups.push(() => fake.stop());
    // A per-minute API rate quota (Compute Engine's api-quotas page): excess calls get 403 rateLimitExceeded.
    fake.throttle({ perMinute: 1_500 });
    const o = fake.clientOptions();
    const cluster = new GCPCluster({
      projectId: fake.project,
      zone: 'us-central1-a',
      endpoint: { apiEndpoint: o.apiEndpoint, port: o.port, protocol: o.protocol },
      authClient: o.authClient,
      closeOnSignals: false,
      saveState: false,
      nWorkers: N,
      dockerImage: IMAGE,
    });
    cleanups.push(() => cluster.close());
    const { warnings } = await warningsDuring(async () => {
      await cluster.start();
      expect((await cluster.workers()).length).toBe(N);
      await cluster.scale(N / 2);
      await cluster.scale(N);
      await cluster.waitForWorkers(N, { timeoutMs: 120_000 });
      await cluster.close();
    });
    expect(warnings).toEqual([]);
    expect(fake.leaked()).toEqual({});
  });

  it('DigitalOcean: when another client spent the 250 a minute, scale() waits as told (a pacing event), and no 429 reaches the caller', { timeout: 300_000 }, async () => {
    const booter = new StandInBooter({ bootMs: BOOT_MS });
    cleanups.push(() => booter.stopAll());
    const fake = await FakeDigitalOcean.start({ privateCidr: '127.220.192.0/20', publicCidr: '127.220.208.0/20', booter, lifecycleMs: 200, firewallApplyMs: 50, dropletLimit: 100, rateLimit: { perMinute: 250 } });
    cleanups.push(() => fake.stop());
    const events: ClusterEvent[] = [];
    const cluster = new DropletCluster({ token: fake.token, endpoint: fake.endpoint, closeOnSignals: false, saveState: false, nWorkers: 20, dockerImage: IMAGE, onEvent: (e) => events.push(e) });
    cleanups.push(() => cluster.close());
    await cluster.start();
    // Another process of the same account spends what is left of the minute's budget.
    const other = async () => {
      for (;;) {
        const r = await fetch(`${fake.endpoint}/account`, { headers: { authorization: `Bearer ${fake.token}` } });
        await r.arrayBuffer();
        if (r.status === 429) return;
      }
    };
    await other();
    const before = events.length;
    await cluster.scale(40);
    await cluster.waitForWorkers(40, { timeoutMs: 120_000 });
    await cluster.scale(10);
    const pacing = events.slice(before).filter((e): e is Extract<ClusterEvent, { type: 'pacing' }> => e.type === 'pacing');
    expect(pacing.length).toBeGreaterThan(0);
    expect(pacing[0]!.provider).toBe('digitalocean');
    expect(pacing[0]!.message).toMatch(/^DigitalOcean answered 429 .*requests wait \d+ s as it asks$/);
    expect((await cluster.workers()).length).toBe(10);
    await cluster.close();
    expect(fake.leaked()).toEqual({});
  });
});
