/**
 * EC2Cluster against FakeEc2 whose instances really run: each instance's Dask process (from the
 * launch spec in its user-data, TLS files included) runs as a local process bound to the
 * instance's loopback address, and the instance's public address forwards the scheduler port to
 * its private one like EC2's NAT. So start() completes against real Dask, a Python client
 * computes with only the written client config, and scale-down goes through retire_workers.
 *
 * Every address is loopback (test/providers/ec2/helpers.ts).
 */
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { checkFakesAndClose, expectListed, failedStart } from '../../helpers/fakes';
import { parse as parseYaml } from 'yaml';
import { EC2Cluster, type EC2ClusterOptions } from '../../../providers/ec2';
import { LABELS } from '../../../src/cluster/vm';
import type { ClusterEvent } from '../../../src/cluster/events';
import { ClusterStartError, type CloudApiError } from '../../../src/errors';
import { presentedCertificate, userSecurity } from '../../helpers/tls';
import type { FakeEc2 } from '../../fakes/ec2';
import { have, pythonWithDask, realDask } from '../../helpers/prereq';
import { COMPUTE, pythonWithConfig } from '../../helpers/python';
import { collapsed, eventually, fakeOptions, NatProcessBooter, PREFLIGHT_OPS, startFake, tagMap, takePreflight } from './helpers';

const enabled = have(realDask());

/** Loopback slot of this file (ec2-cluster.test.ts uses another): see helpers.ts. */
const SLOT = 2;
const fakes: FakeEc2[] = [];
const booters: NatProcessBooter[] = [];
const clusters: EC2Cluster[] = [];
const dirs: string[] = [];

afterEach(() => checkFakesAndClose(fakes, clusters, () => Promise.all(booters.splice(0).map((b) => b.stopAll()))));

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function setup(options: EC2ClusterOptions = {}, fakeOpts: Parameters<typeof startFake>[1] = {}): Promise<{ f: FakeEc2; booter: NatProcessBooter; cluster: EC2Cluster; events: ClusterEvent[] }> {
  const booter = new NatProcessBooter({ python: pythonWithDask() as string, ports: [options.schedulerPort ?? 8786] });
  booters.push(booter);
  const f = await startFake(SLOT, { booter, lifecycleMs: { pendingMs: 100, shuttingDownMs: 100 }, ...fakeOpts });
  fakes.push(f);
  const events: ClusterEvent[] = [];
  const cluster = new EC2Cluster({
    ...fakeOptions(f),
    schedulerTimeoutMs: 60_000,
    workersTimeoutMs: 60_000,
    ...options,
    onEvent: (e) => {
      events.push(e);
      options.onEvent?.(e);
    },
  });
  clusters.push(cluster);
  return { f, booter, cluster, events };
}

async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), 'dc-ec2-test-'));
  dirs.push(d);
  return d;
}

function leakedCount(f: FakeEc2): number {
  return Object.values(f.leaked()).flat().length;
}

describe.runIf(enabled)('EC2Cluster with real Dask on FakeEc2 instances', () => {
  it('start (2 workers, mutual TLS) → Python client computes → scale(3) → scale(1) via retire_workers → close; exact API calls', async () => {
    const { f, booter, cluster, events } = await setup({ nWorkers: 2 });
    const startedAt = Date.now();
    await cluster.start();
    expect(cluster.state).toBe('running');
    const startOps = collapsed(f.server.operations());
    // Read-only preflight first (DryRuns included), then the creates.
    expect(takePreflight(startOps)).toEqual([...PREFLIGHT_OPS]);
    expect(startOps.slice(0, 3)).toEqual([
      'CreateSecurityGroup',
      'AuthorizeSecurityGroupIngress',
      'RunInstances', // scheduler: its private address is in the answer
    ]);
    // Concurrently: both workers in one RunInstances (before the scheduler runs), and
    // DescribeInstances until the scheduler has its public address.
    expect(startOps.slice(3).filter((op) => op !== 'DescribeInstances')).toEqual(['RunInstances']);
    expect(startOps.slice(3)).toContain('DescribeInstances');
    expect(f.server.calls('RunInstances').filter((r) => r.params.DryRun === undefined)[1]!.normalized).toMatchObject({ MinCount: 2, MaxCount: 2 });
    const sched = f.instances().find((i) => tagMap(i.tags)[LABELS.role] === 'scheduler')!;
    expect(cluster.schedulerAddress).toBe(`tls://${sched.publicIpAddress}:8786`);
    expect(cluster.schedulerPrivateAddress).toBe(`tls://${sched.privateIpAddress}:8786`);
    expect(sched.publicIpAddress).toMatch(/^127\.77\./);
    for (const inst of f.instances()) {
      expect(inst.state).toBe('running');
      expect(inst.metadataOptions.httpTokens).toBe('required');
      expect(inst.instanceInitiatedShutdownBehavior).toBe('terminate');
    }
    const workers = await cluster.workers();
    const workerHosts = f.instances().filter((i) => i !== sched).map((i) => i.privateIpAddress).sort();
    expect(workers.map((w) => w.host).sort()).toEqual(workerHosts);

    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    const out = await pythonWithConfig(dir, COMPUTE);
    expect(out.split('\n').pop()).toBe('90');

    // Scale up: one RunInstances for the new worker.
    f.server.clearLog();
    await cluster.scale(3);
    expect(f.server.operations()).toEqual(['RunInstances']);
    expect(f.server.calls('RunInstances')[0]!.normalized).toMatchObject({ MinCount: 1, MaxCount: 1 });
    await cluster.waitForWorkers(3, { timeoutMs: 60_000 });

    // Scale down: the scheduler retires the two newest workers, then exactly their instances go.
    const members = cluster.members.filter((m) => m.role === 'worker');
    const [keep, ...victims] = members;
    f.server.clearLog();
    await cluster.scale(1);
    expect(f.server.operations()).toEqual(['TerminateInstances']);
    expect((f.server.calls('TerminateInstances')[0]!.normalized as { InstanceId: string[] }).InstanceId.sort()).toEqual(victims.map((m) => m.id).sort());
    const retired = events.find((e): e is Extract<ClusterEvent, { type: 'workers-retired' }> => e.type === 'workers-retired')!;
    expect(retired.retired.sort()).toEqual(victims.map((m) => m.name).sort());
    expect(retired.notRetired).toEqual([]);
    const left = await cluster.workers();
    expect(left.map((w) => w.host)).toEqual([keep!.privateHost]);
    expect(f.instance(keep!.id)!.state).toBe('running');
    for (const v of victims) expect(['shutting-down', 'terminated']).toContain(f.instance(v.id)!.state);

    // Listed from the tags alone, by a call that knows only the region and credentials.
    await expectListed(() => EC2Cluster.list(fakeOptions(f)), cluster, { workers: 1, location: sched.availabilityZone, startedAt });

    // Close: terminate, sweep by tag, delete the group once the instances are gone.
    f.server.clearLog();
    await cluster.close();
    expect(collapsed(f.server.operations())).toEqual(['TerminateInstances', 'DescribeInstances', 'DeleteSecurityGroup']);
    await cluster.close(); // idempotent: no more calls
    expect(collapsed(f.server.operations())).toEqual(['TerminateInstances', 'DescribeInstances', 'DeleteSecurityGroup']);
    expect(cluster.state).toBe('closed');
    expect(leakedCount(f)).toBe(0);
    await eventually(() => booter.pids().length === 0 && booter.natCount() === 0);
    expect((await EC2Cluster.list(fakeOptions(f))).map((c) => c.id)).not.toContain(cluster.id);
  });

  it('security: false with private networking: plain tcp:// on private addresses, no public IPs', async () => {
    const { f, cluster } = await setup({ nWorkers: 1, security: false, privateNetworking: true });
    f.routeThroughNat(); // private mode with the docker runtime needs egress
    await cluster.start();
    expect(cluster.schedulerAddress).toMatch(/^tcp:\/\/127\.77\.\d+\.\d+:8786$/);
    expect(cluster.schedulerAddress).toBe(cluster.schedulerPrivateAddress);
    for (const inst of f.instances()) expect(inst.publicIpAddress).toBeUndefined();
    const dir = await tempDir();
    await cluster.writeClientConfig(dir);
    const out = await pythonWithConfig(dir, "from distributed import Client\nc = Client(timeout='20s')\nprint(c.submit(lambda: 41 + 1).result())\nc.close()");
    expect(out.split('\n').pop()).toBe('42');
    // The listing gives the plain tcp:// private address: the protocol and port are labels too.
    const [listed] = (await EC2Cluster.list(fakeOptions(f))).filter((c) => c.id === cluster.id);
    expect(listed?.address).toBe(cluster.schedulerAddress);
    await cluster.close();
    expect(leakedCount(f)).toBe(0);
  });

  it('a user Security (own CA, distinct scheduler/worker/client certs) is what the scheduler presents', async () => {
    const { security, ca, scheduler, worker, client } = await userSecurity();
    const { f, cluster } = await setup({ nWorkers: 1, security });
    await cluster.start();
    expect(cluster.security).toBe(security);
    const { hostname: host, port } = new URL(cluster.schedulerAddress.replace('tls:', 'https:'));
    expect(host).toMatch(/^127\./);
    const presented = await presentedCertificate(host, Number(port), { ca: ca.certPem, cert: client.certPem, key: client.keyPem });
    expect(presented.cert.fingerprint256).toBe(new X509Certificate(scheduler.certPem).fingerprint256);
    // Each VM got only its own role's key; the client key went to none of them.
    for (const inst of f.instances()) {
      const role = tagMap(inst.tags)[LABELS.role];
      const files = shippedFiles(Buffer.from(inst.userData));
      // The first base64 line of a key is unique to it.
      const has = (pem: string) => files.some((content) => content.includes(pem.split('\n')[1] as string));
      expect(has(client.keyPem)).toBe(false);
      expect(has(scheduler.keyPem)).toBe(role === 'scheduler');
      expect(has(worker.keyPem)).toBe(role === 'worker');
    }
    expect(await cluster.workers()).toHaveLength(1);
  });

  it('RequestLimitExceeded from a tight request budget is retried and start succeeds', async () => {
    const { f, cluster } = await setup({ nWorkers: 2 });
    f.throttle({ burst: 3, perSecond: 4 });
    await cluster.start();
    const throttled = f.server.received.filter((r) => r.rejectedBy === 'throttle');
    expect(throttled.length).toBeGreaterThan(0);
    expect(await cluster.workers()).toHaveLength(2);
    await cluster.close();
    expect(leakedCount(f)).toBe(0);
  });

  it("the workers' RunInstances failing fails start during workers; the running scheduler is deleted too", async () => {
    const { f, booter, cluster } = await setup({ nWorkers: 2 });
    // Request 4: after preflight's two DryRuns and the scheduler's create. (A capacity error
    // would move the workers to another zone: a vCPU limit does not depend on the zone.)
    f.faults.fail('RunInstances', { status: 400, code: 'VcpuLimitExceeded', message: 'You have requested more vCPU capacity than your current vCPU limit of 4 allows for the instance bucket that the specified instance type belongs to.' }, { nth: 4 });
    const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
    expect(ClusterStartError.isInstance(err)).toBe(true);
    expect(err.details.phase).toBe('workers');
    expect(err.message).toContain('ec2 RunInstances failed: VcpuLimitExceeded');
    expect((err.cause as CloudApiError).details).toMatchObject({ operation: 'RunInstances', ec2Code: 'VcpuLimitExceeded' });
    expect(leakedCount(f)).toBe(0);
    await eventually(() => booter.pids().length === 0);
  });

  it('a scheduler whose Dask exits at boot (the VM powers off) fails start at once, with its output, not after the readiness timeout', async () => {
    // An option Dask does not know: the process exits, and the instance terminates itself as
    // autoShutdown + InstanceInitiatedShutdownBehavior=terminate make it do.
    const { f, booter, cluster } = await setup({ nWorkers: 1, schedulerOptions: ['--no-such-dask-option'], schedulerTimeoutMs: 120_000, memberWatchIntervalMs: 250 });
    const t0 = Date.now();
    const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
    const ms = Date.now() - t0;
    expect(ClusterStartError.isInstance(err), String(err)).toBe(true);
    expect(err.details.phase).toBe('scheduler');
    // Whichever notices first: the member watch, or the wait for the scheduler's public address
    // (which may catch the instance while it is still shutting-down, or once it is terminated).
    expect(err.message).toMatch(/the scheduler VM dask-[0-9a-f]+-scheduler (is gone \(terminated, or deleted outside dask-cloud\)|stopped on its own \(state (shutting-down|terminated)\))|instance i-[0-9a-f]+ is (shutting-down|terminated) before it got its address/);
    // The tail of its console output says why.
    expect(err.message).toMatch(/no such option/i);
    expect(ms).toBeLessThan(60_000); // well inside the 120 s readiness timeout
    expect(leakedCount(f)).toBe(0);
    await eventually(() => booter.pids().length === 0);
  });

  it('after start, a worker VM that goes away is reported as member-failed and no longer counted', async () => {
    const { f, cluster, events } = await setup({ nWorkers: 2, memberWatchIntervalMs: 250 });
    await cluster.start();
    const [victim, survivor] = cluster.members.filter((m) => m.role === 'worker');
    f.guestShutdown(victim!.id);
    await eventually(() => events.some((e) => e.type === 'member-failed'), 'a member-failed event', 20_000);
    expect(events.filter((e) => e.type === 'member-failed')).toEqual([
      expect.objectContaining({ role: 'worker', memberId: victim!.id, message: expect.stringMatching(/worker VM .* stopped on its own \(state (shutting-down|terminated)\)/) }),
    ]);
    await eventually(() => cluster.members.filter((m) => m.role === 'worker').length === 1, 'one worker left', 20_000);
    expect(cluster.members.find((m) => m.role === 'worker')!.id).toBe(survivor!.id);
    await cluster.close();
    expect(leakedCount(f)).toBe(0);
  });

  it('after start, a scheduler VM that goes away breaks the cluster: scale refuses, close deletes the rest', async () => {
    const { f, booter, cluster, events } = await setup({ nWorkers: 1, memberWatchIntervalMs: 250 });
    await cluster.start();
    const scheduler = cluster.members.find((m) => m.role === 'scheduler')!;
    f.guestShutdown(scheduler.id);
    await eventually(() => cluster.state === 'broken', 'the cluster to be broken', 20_000);
    expect(events.filter((e) => e.type === 'member-failed')).toEqual([
      expect.objectContaining({ role: 'scheduler', memberId: scheduler.id, message: expect.stringMatching(/scheduler VM .* stopped on its own \(state (shutting-down|terminated)\)/) }),
    ]);
    const launches = f.server.calls('RunInstances').length;
    const err = (await cluster.scale(3).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/cannot scale cluster dask-[0-9a-f]+: its scheduler is gone \(.*\); close\(\) it and start a new cluster/);
    expect(f.server.calls('RunInstances')).toHaveLength(launches); // nothing was launched for it
    await cluster.close();
    expect(cluster.state).toBe('closed');
    expect(leakedCount(f)).toBe(0);
    await eventually(() => booter.pids().length === 0);
  });

  it('abort once the scheduler answered: rollback stops every process and deletes everything', async () => {
    const controller = new AbortController();
    const { f, booter, cluster } = await setup({ nWorkers: 2, signal: controller.signal, onEvent: (e) => e.type === 'scheduler-ready' && controller.abort() });
    const err = (await cluster.start().catch((e: unknown) => e)) as ClusterStartError;
    expect(err.code).toBe('E_ABORTED');
    expect(leakedCount(f)).toBe(0);
    await eventually(() => booter.pids().length === 0);
  });
});

/** Contents of every file a user-data ships (`write_files`, decoded). */
function shippedFiles(raw: Buffer): string[] {
  const text = raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw).toString('utf8') : raw.toString('utf8');
  const doc = parseYaml(text) as { write_files?: { content?: string; encoding?: string }[] };
  return (doc.write_files ?? []).map((f) => (f.encoding === 'b64' ? Buffer.from(f.content ?? '', 'base64').toString('utf8') : (f.content ?? '')));
}

/**
 * A stand-in client interpreter: answers the library's version probe (one `python -c`) with the
 * given versions, as a Python with that Dask installed would. The cluster itself runs the host's
 * real Dask, so what the library reads from the scheduler and workers is real.
 */
async function clientClaiming(versions: { python: string; dask: string; cloudpickle?: string; msgpack?: string }): Promise<string> {
  const dir = await tempDir();
  const file = path.join(dir, 'python');
  const answer = JSON.stringify({
    python: versions.python,
    packages: { dask: versions.dask, distributed: versions.dask, msgpack: versions.msgpack ?? '1.1.0', cloudpickle: versions.cloudpickle ?? '3.1.1', toolz: '1.0.0', tornado: '6.4.2', lz4: null },
  });
  await writeFile(file, `#!/bin/sh\nprintf '%s\\n' '${answer}'\n`, { mode: 0o755 });
  return file;
}

function userDataText(f: FakeEc2): string {
  const raw = Buffer.from(f.instances()[0]!.userData);
  return (raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw).toString('utf8');
}

describe.runIf(enabled)('EC2Cluster: the image follows the client, and versions are compared after start', () => {
  it("daskVersion 'auto': the image matches the client's Dask and Python; a cluster running other versions warns, naming each package", async () => {
    const python = await clientClaiming({ python: '3.12.7', dask: '2025.11.0' });
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => {
      if (w.code === 'DASK_CLOUD_VERSION_MISMATCH') warnings.push(w.message);
    };
    process.on('warning', onWarning);
    try {
      const { f, cluster, events } = await setup({ nWorkers: 1, python });
      await cluster.start();
      const image = events.find((e): e is Extract<ClusterEvent, { type: 'image' }> => e.type === 'image')!;
      expect(image).toMatchObject({ image: 'ghcr.io/dask/dask:2025.11.0-py3.12', basis: 'client', differences: [] });
      expect(userDataText(f)).toContain('ghcr.io/dask/dask:2025.11.0-py3.12');
      // The instances run the host's Dask (the booter runs the launch spec as a local process).
      const report = cluster.versions!;
      expect(report.client).toMatchObject({ dask: '2025.11.0', python: '3.12.7' });
      expect(report.scheduler.distributed).toMatch(/^\d{4}\.\d+\.\d+/);
      expect(Object.keys(report.workers)).toHaveLength(1);
      const packages = report.mismatches.map((m) => m.package);
      expect(packages).toEqual(expect.arrayContaining(['dask', 'distributed', 'python']));
      expect(packages).not.toContain('msgpack'); // 1.1.0 against 1.0.x: same major, which Dask accepts
      await eventually(() => warnings.length > 0, 'the version warning on process warnings', 5_000);
      expect(warnings[0]).toMatch(/client and cluster run different versions: dask: client 2025\.11\.0, cluster 20\d\d\.\d+\.\d+\S* on the scheduler and 1 worker \(/);
      expect(warnings[0]).toMatch(/distributed: .*wire protocol/);
      expect(events.some((e) => e.type === 'warning' && e.code === 'DASK_CLOUD_VERSION_MISMATCH')).toBe(true);
      await cluster.close();
      expect(leakedCount(f)).toBe(0);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('strictVersions: the same mismatch fails the start, which deletes everything', async () => {
    const python = await clientClaiming({ python: '3.12.7', dask: '2025.11.0' });
    const { f, cluster } = await setup({ nWorkers: 1, python, strictVersions: true });
    const err = await failedStart(cluster);
    expect(err.details.phase).toBe('versions');
    expect((err.cause as { code?: string }).code).toBe('E_VERSION_MISMATCH');
    expect(err.message).toMatch(/client and cluster run different versions: dask: client 2025\.11\.0/);
    expect(err.message).toContain('Everything created for this cluster has been deleted.');
    expect(leakedCount(f)).toBe(0);
  });

  it('explicit daskVersion and pythonVersion pick that image; a release without one picks the nearest and says so', async () => {
    const { f, cluster, events } = await setup({ nWorkers: 0, daskVersion: '2024.10.0', pythonVersion: '3.12' });
    await cluster.start();
    const image = events.find((e): e is Extract<ClusterEvent, { type: 'image' }> => e.type === 'image')!;
    expect(image).toMatchObject({ image: 'ghcr.io/dask/dask:2024.9.1-py3.12', basis: 'requested' });
    expect(image.differences).toEqual([expect.stringMatching(/^Dask 2024\.10\.0 has no published image; using 2024\.9\.1/)]);
    expect(userDataText(f)).toContain('ghcr.io/dask/dask:2024.9.1-py3.12');
    await cluster.close();
  });

  it('the version probe runs beside preflight: the reads go out while the client interpreter is still answering, and the image it picks is the one the VMs get', async () => {
    // An interpreter that answers once the fake has seen a request, and fails if none comes
    // within 20 s: a start that waited for the probe before its first request gets no versions.
    const dir = await tempDir();
    const go = path.join(dir, 'go');
    const python = path.join(dir, 'python');
    const answer = JSON.stringify({ python: '3.12.7', packages: { dask: '2025.11.0', distributed: '2025.11.0', msgpack: '1.1.0', cloudpickle: '3.1.1', toolz: '1.0.0', tornado: '6.4.2', lz4: null } });
    await writeFile(python, `#!/bin/sh\ni=0\nwhile [ ! -e '${go}' ]; do i=$((i+1)); [ $i -gt 200 ] && exit 1; sleep 0.1; done\nprintf '%s\\n' '${answer}'\n`, { mode: 0o755 });
    const { f, cluster, events } = await setup({ nWorkers: 0, python });
    const watcher = (async () => {
      while (cluster.state === 'new' || cluster.state === 'starting') {
        if (f.server.operations().length > 0) return writeFile(go, '');
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await cluster.start();
    await watcher;
    const image = events.find((e): e is Extract<ClusterEvent, { type: 'image' }> => e.type === 'image')!;
    expect(image).toMatchObject({ image: 'ghcr.io/dask/dask:2025.11.0-py3.12', basis: 'client' });
    // Still decided before anything was created.
    const order = events.map((e) => (e.type === 'phase-start' ? `start:${e.phase}` : e.type));
    expect(order.indexOf('image')).toBeLessThan(order.indexOf('start:network'));
    expect(userDataText(f)).toContain('ghcr.io/dask/dask:2025.11.0-py3.12');
    await cluster.close();
  });

  it('no local Python with Dask: the pinned image, and a warning saying how to match it; strictVersions then refuses before any request', async () => {
    const { f, cluster, events } = await setup({ nWorkers: 0, python: '/nonexistent/python3' });
    await cluster.start();
    const image = events.find((e): e is Extract<ClusterEvent, { type: 'image' }> => e.type === 'image')!;
    expect(image).toMatchObject({ image: 'ghcr.io/dask/dask:2025.11.0', basis: 'pinned' });
    expect(image.differences[0]).toMatch(/no local Python with Dask was found.*Dask 2025\.11\.0 on Python 3\.10/);
    expect(cluster.versions?.client).toBeUndefined();
    await cluster.close();

    const strict = await setup({ nWorkers: 0, python: '/nonexistent/python3', strictVersions: true });
    const before = strict.f.server.operations().length;
    await expect(strict.cluster.start()).rejects.toMatchObject({ code: 'E_INVALID_OPTION', details: { option: 'strictVersions' } });
    expect(strict.f.server.operations().slice(before)).toEqual([]);
    expect(leakedCount(f)).toBe(0);
  });
});
