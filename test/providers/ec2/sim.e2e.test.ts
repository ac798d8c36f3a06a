/**
 * EC2Cluster end to end on simulated VMs: FakeEc2 boots every instance it launches as a Debian
 * VM (systemd-nspawn, own network namespace) running the real cloud-init on our real user-data,
 * with an nftables firewall that follows the security group. The library (this process) proves
 * readiness over mutual TLS on the scheduler's public address; a Python client on the simulated
 * internet computes with only the written client config; the dashboard stays closed to it.
 *
 * The VMs run Debian trixie's Dask (2024.12.1, Python 3.13); the clients, and the cluster's
 * `python` option, are the same Dask through scripts/trixie-python.
 *
 * Network safety (test/sim/README.md): the simulated cloud is 10.77.0.0/16, blackholed in the
 * root namespace; `hostAccess` adds links into this network's bridges only, and every address
 * this process can learn is checked with `assertHostRoute` — for each block before anything is
 * created, and for each VM's own addresses before it boots. Python clients run inside our
 * namespaces (`net.run`, which checks its routes), which have no default route.
 *
 * Needs root, systemd-nspawn, nftables and the VM image (`sudo bash scripts/build-vm-image.sh`).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EC2Cluster } from '../../../providers/ec2';
import { LABELS } from '../../../src/cluster/vm';
import { assertNoContractViolations } from '../../fakes/core';
import { FakeEc2 } from '../../fakes/ec2';
import { have, trixieDask, trixiePython } from '../../helpers/prereq';
import { pythonIn } from '../../helpers/python';
import { chromium, loadPage, screenshotPath } from '../../helpers/browser';
import { spawnTsx, type SpawnedScript } from '../../helpers/spawn';
import { Security } from '../../../src/security';
import { SimNetwork, SimVmBooter, simulatedVms } from '../../sim';
import { intToIp, ipToInt } from '../../sim/net-util';
import { expectMismatchWarnsThenStrictRollsBack, mismatchedClient } from '../../sim/versions';
import { eventually, fakeOptions, tagMap } from './helpers';

const enabled = have(simulatedVms()) && have(trixieDask()) && have(chromium());

/**
 * Four connections to the dashboard's terminator (argv: host, port, CA file, the cluster's client
 * config dir, another CA's client config dir): each says what came back to an HTTP request.
 */
const TERMINATOR_PROBE = `
import json, socket, ssl, sys
host, port, ca, good, other = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def ctx(d=None):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.load_verify_locations(ca)
    if d:
        c.load_cert_chain(d + '/client.pem', d + '/client.key')
    return c
def attempt(c):
    try:
        s = socket.create_connection((host, port), timeout=10)
        if c is not None:
            s = c.wrap_socket(s)
        s.sendall(b'GET /info/main/workers.html HTTP/1.1\\r\\nHost: dashboard\\r\\nConnection: close\\r\\n\\r\\n')
        data = s.recv(64)
        return ('answered: ' + repr(data)) if data else 'closed'
    except (ssl.SSLError, OSError) as e:
        return 'refused: ' + type(e).__name__ + ' ' + str(e)[:120]
print(json.dumps({'good': attempt(ctx(good)), 'nocert': attempt(ctx()), 'othercert': attempt(ctx(other)), 'plain': attempt(None)}))
`;

describe.skipIf(!enabled)('EC2Cluster on simulated VMs (real cloud-init, firewall from the security group)', () => {
  let net: SimNetwork;
  let fake: FakeEc2 | undefined;

  beforeAll(async () => {
    net = await SimNetwork.create({ name: 'ec2', hostAccess: true });
    // Every address the fake can hand out routes through our links (a /20 route covers its block).
    for (const block of [net.privateCidr, net.publicCidr]) {
      const probe = intToIp(ipToInt(block.split('/')[0] as string) + 4);
      await net.assertHostRoute(probe);
    }
  }, 60_000);

  afterAll(async () => {
    await fake?.stop();
    await net?.destroy();
  }, 60_000);

  it('start (2 workers, mutual TLS) → a client on the internet computes → scale(1) → close leaves nothing', async () => {
    fake = await FakeEc2.start({ booter: new SimVmBooter(net), privateCidr: net.privateCidr, publicCidr: net.publicCidr, lifecycleMs: { pendingMs: 500, shuttingDownMs: 500 } });
    const cluster = new EC2Cluster({
      ...fakeOptions(fake),
      nWorkers: 2,
      // The image has Dask (Debian's python3-distributed) and no internet for Docker.
      runtime: 'native',
      python: trixiePython()!,
      schedulerTimeoutMs: 90_000,
      workersTimeoutMs: 90_000,
    });
    const clientDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-ec2-sim-'));
    try {
      await cluster.start();
      const sched = fake.instances().find((i) => tagMap(i.tags)[LABELS.role] === 'scheduler')!;
      expect(cluster.schedulerAddress).toBe(`tls://${sched.publicIpAddress}:8786`);
      // Client and cluster run the same Dask: the comparison after start found nothing.
      expect(cluster.versions?.mismatches).toEqual([]);

      await cluster.writeClientConfig(clientDir);
      const client = await pythonIn(net, 'internet', clientDir, sched.publicIpAddress as string, "from distributed import Client\nc = Client(timeout='30s')\nprint('result', sum(c.gather(c.map(lambda x: x * 2, range(10)))))\nc.close()");
      // On failure, show what each VM's firewall holds: most failures here are rules.
      const why = client.code === 0 ? '' : `${client.stderr.slice(-2000)}\n${await net.firewallDump()}`;
      expect(client.code, why).toBe(0);
      expect(client.stdout).toMatch(/^result 90$/m);
      // The security group: 8786 and the dashboard's terminator 8788 open to the internet (mutual
      // TLS guards both); the plain dashboard 8787 not even inside the VPC: it listens on the
      // VM's loopback only.
      expect(await net.probeTcp('internet', sched.publicIpAddress as string, 8786)).toBe('open');
      expect(await net.probeTcp('internet', sched.publicIpAddress as string, 8788)).toBe('open');
      expect(await net.probeTcp('internet', sched.publicIpAddress as string, 8787, { timeoutMs: 1_500 })).toBe('timeout');
      expect(await net.probeTcp('vpc', sched.privateIpAddress, 8787, { timeoutMs: 1_500 })).toBe('timeout');

      const [keep, victim] = cluster.members.filter((m) => m.role === 'worker');
      await cluster.scale(1);
      expect((await cluster.workers()).map((w) => w.host)).toEqual([keep!.privateHost]);
      expect(['shutting-down', 'terminated']).toContain(fake.instance(victim!.id)!.state);

      await cluster.close();
      expect(Object.values(fake.leaked()).flat()).toEqual([]);
      // Terminated instances' VMs are stopped by the fake as they shut down (nspawn takes a moment).
      await eventually(() => fake!.instances().every((inst) => !(net.vm(inst.instanceId)?.running ?? false)), 'the VMs to stop', 30_000);
      assertNoContractViolations(fake);
      expect(fake.bootErrors).toEqual([]);
    } finally {
      await cluster.close();
      fs.rmSync(clientDir, { recursive: true, force: true });
    }
  }, 240_000);

  it('the dashboard: dask-cloud dashboard tunnels over mutual TLS, Chromium shows the workers, Python\'s dashboard_link is the tunnel; the internet gets nothing without the certificate', async () => {
    await fake?.stop();
    const f = (fake = await FakeEc2.start({ booter: new SimVmBooter(net), privateCidr: net.privateCidr, publicCidr: net.publicCidr, lifecycleMs: { pendingMs: 500, shuttingDownMs: 500 } }));
    const cluster = new EC2Cluster({ ...fakeOptions(f), nWorkers: 2, runtime: 'native', python: trixiePython()!, schedulerTimeoutMs: 90_000, workersTimeoutMs: 90_000 });
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-ec2-sim-dash-'));
    let tunnel: SpawnedScript | undefined;
    try {
      await cluster.start();
      const sched = f.instances().find((i) => tagMap(i.tags)[LABELS.role] === 'scheduler')!;
      const publicIp = sched.publicIpAddress as string;
      const link = cluster.dashboardLink!;
      expect(link).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/status$/);

      // `dask-cloud dashboard ID` from another process: it attaches through the cluster's directory.
      const cfg = f.clientConfig();
      tunnel = spawnTsx(path.resolve(__dirname, '../../../src/cli.ts'), ['dashboard', cluster.id], {
        AWS_ACCESS_KEY_ID: cfg.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: cfg.credentials.secretAccessKey,
        AWS_EC2_METADATA_DISABLED: 'true',
      });
      await tunnel.until(/^http:\/\/127\.0\.0\.1:\d+\/status$/m, 60_000);
      expect(tunnel.stdout().trim()).toBe(link);

      // A real browser through the tunnel: the workers page lists both workers (Debian's Dask has
      // no Bokeh, so /status shows Dask's note in place of the plots; see the README).
      const shot = screenshotPath(`${cluster.id}-workers`);
      const page = await loadPage(link.replace('/status', '/info/main/workers.html'), { screenshot: shot, timeoutMs: 90_000 });
      const rows = page.dom.match(/<a href="\.\.\/worker\/tls%3A%2F%2F[\d.]+%3A\d+\.html">tls:\/\/[\d.]+:\d+<\/a>/g) ?? [];
      expect(rows, page.dom.slice(0, 2000)).toHaveLength(2);
      const workerHosts = cluster.members.filter((m) => m.role === 'worker').map((m) => m.privateHost);
      for (const host of workerHosts) expect(page.dom).toContain(`tls://${host}:`);
      expect(fs.statSync(shot).size).toBeGreaterThan(1_000);
      const status = await loadPage(link, { timeoutMs: 90_000 });
      expect(status.dom).toMatch(/bokeh/i);
      // eslint-disable-next-line no-console
      console.log(`[dashboard, simulated EC2] screenshot ${shot}; ${rows.length} worker rows; stopped at the sinkhole: ${[...page.blocked, ...status.blocked].join(' | ') || 'none'}`);

      // Python's client.dashboard_link, from the written config alone, is the tunnel's URL.
      const clientDir = path.join(work, 'client');
      await cluster.writeClientConfig(clientDir);
      const py = await pythonIn(net, 'internet', clientDir, publicIp, "from distributed import Client\nc = Client(timeout='30s')\nprint('link', c.dashboard_link)\nc.close()");
      expect(py.code, py.stderr.slice(-2000)).toBe(0);
      expect(py.stdout).toContain(`link ${link}`);

      // From the internet, at the terminator: the right certificate gets HTTP; none, another CA's,
      // or plain HTTP get nothing.
      const other = await Security.temporary();
      const otherDir = path.join(work, 'other');
      await other.writeClientConfig(otherDir);
      const probe = await net.run('internet', trixiePython()!, ['-c', TERMINATOR_PROBE, publicIp, '8788', path.join(clientDir, 'ca.pem'), clientDir, otherDir], { dials: [publicIp], timeoutMs: 60_000, check: false });
      expect(probe.code, probe.stderr).toBe(0);
      const seen = JSON.parse(probe.stdout) as Record<string, string>;
      expect(seen.good).toMatch(/^answered: b'HTTP\/1\.1 200/);
      // At most a TLS alert comes back, never an HTTP answer.
      for (const k of ['nocert', 'othercert', 'plain']) expect(seen[k], k).not.toMatch(/HTTP\//);
      expect(seen.nocert).toMatch(/^(refused|closed)/);
      expect(seen.othercert).toMatch(/^(refused|closed)/);

      tunnel.child.kill('SIGINT');
      expect(await tunnel.exitWithin(30_000)).toBe(0);
      await cluster.close();
      expect(Object.values(f.leaked()).flat()).toEqual([]);
      expect(f.bootErrors).toEqual([]);
      assertNoContractViolations(f);
    } finally {
      if (tunnel && tunnel.child.exitCode === null) tunnel.child.kill('SIGKILL');
      await cluster.close();
      fs.rmSync(work, { recursive: true, force: true });
    }
  }, 300_000);

  it('up from the CLI exits and leaves the cluster running; later processes scale it to 3 and read a log; down leaves nothing', async () => {
    await fake?.stop();
    const f = (fake = await FakeEc2.start({ booter: new SimVmBooter(net), privateCidr: net.privateCidr, publicCidr: net.publicCidr, lifecycleMs: { pendingMs: 500, shuttingDownMs: 500 } }));
    const cfg = f.clientConfig();
    const env = {
      AWS_ACCESS_KEY_ID: cfg.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: cfg.credentials.secretAccessKey,
      AWS_EC2_METADATA_DISABLED: 'true',
      // The VM image has Dask; the client is the same Dask (trixie's).
      DASK_CLOUD_EC2_RUNTIME: 'native',
      DASK_CLOUD_PYTHON: trixiePython()!,
      DASK_CLOUD_SCHEDULER_TIMEOUT_MS: '90000',
      DASK_CLOUD_WORKERS_TIMEOUT_MS: '90000',
    };
    const cli = async (args: string[]) => {
      const c = spawnTsx(path.resolve(__dirname, '../../../src/cli.ts'), args, env);
      const code = await c.exitWithin(180_000);
      return { code, stdout: c.stdout(), stderr: c.stderr() };
    };
    const up = await cli(['up', '--provider', 'ec2', '--region', cfg.region, '--endpoint', cfg.endpoint, '--workers', '1', '--json']);
    expect(up.code, up.stderr).toBe(0);
    const { id, schedulerAddress, stateDir } = JSON.parse(up.stdout) as { id: string; schedulerAddress: string; stateDir: string };
    expect(f.instances().filter((i) => i.state === 'running' || i.state === 'pending')).toHaveLength(2);

    const scaled = await cli(['scale', id, '3']);
    expect(scaled.code, scaled.stderr).toBe(0);
    expect(scaled.stdout).toContain(`${id}: 3 workers asked (was 1), 3 registered`);
    const logs = await cli(['logs', id, 'scheduler']);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toContain(`==> ${id}-scheduler <==`);
    // A client on the simulated internet computes through the directory up wrote.
    const py = await pythonIn(net, 'internet', stateDir, schedulerAddress.replace(/^tls:\/\/|:\d+$/g, ''), "from distributed import Client\nc = Client(timeout='30s')\nprint('workers', len(c.scheduler_info()['workers']))\nprint('result', c.submit(lambda: 41 + 1).result())\nc.close()");
    expect(py.code, py.stderr.slice(-2000)).toBe(0);
    expect(py.stdout).toMatch(/^workers 3$/m);

    const down = await cli(['down', id]);
    expect(down.code, down.stderr).toBe(0);
    expect(Object.values(f.leaked()).flat()).toEqual([]);
    expect(fs.existsSync(stateDir)).toBe(false);
    await eventually(() => f.instances().every((inst) => !(net.vm(inst.instanceId)?.running ?? false)), 'the VMs to stop', 30_000);
    expect(f.bootErrors).toEqual([]);
    assertNoContractViolations(f);
  }, 400_000);

  it('security: false + privateNetworking: plain tcp:// inside the VPC only, no public addresses', async () => {
    await fake?.stop();
    fake = await FakeEc2.start({ booter: new SimVmBooter(net), privateCidr: net.privateCidr, publicCidr: net.publicCidr, lifecycleMs: { pendingMs: 500, shuttingDownMs: 500 } });
    const cluster = new EC2Cluster({ ...fakeOptions(fake), nWorkers: 1, security: false, privateNetworking: true, runtime: 'native', python: trixiePython()!, schedulerTimeoutMs: 90_000, workersTimeoutMs: 90_000 });
    try {
      await cluster.start();
      const sched = fake.instances().find((i) => tagMap(i.tags)[LABELS.role] === 'scheduler')!;
      expect(cluster.schedulerAddress).toBe(`tcp://${sched.privateIpAddress}:8786`);
      for (const inst of fake.instances()) expect(inst.publicIpAddress).toBeUndefined();
      // From the internet there is no way in: no public address, and no route to a private one.
      await expect(net.checkRoute('internet', sched.privateIpAddress as string)).rejects.toThrow();
      const client = await net.run(
        'vpc',
        trixiePython()!,
        ['-c', `from distributed import Client\nc = Client(${JSON.stringify(cluster.schedulerAddress)}, timeout='30s')\nprint('result', c.submit(lambda: 41 + 1).result())\nc.close()`],
        { dials: [sched.privateIpAddress], timeoutMs: 60_000, check: false },
      );
      const why = client.code === 0 ? '' : `${client.stderr.slice(-2000)}\n${await net.firewallDump()}`;
      expect(client.code, why).toBe(0);
      expect(client.stdout).toMatch(/^result 42$/m);
      await cluster.close();
      expect(Object.values(fake.leaked()).flat()).toEqual([]);
      expect(fake.bootErrors).toEqual([]);
      assertNoContractViolations(fake);
    } finally {
      await cluster.close();
    }
  }, 240_000);

  it('a client of another Dask: the versions warning names each package; strictVersions fails the start and leaves nothing', async () => {
    await fake?.stop();
    const f = (fake = await FakeEc2.start({ booter: new SimVmBooter(net), privateCidr: net.privateCidr, publicCidr: net.publicCidr, lifecycleMs: { pendingMs: 500, shuttingDownMs: 500 } }));
    await expectMismatchWarnsThenStrictRollsBack({
      net,
      make: (extra) => new EC2Cluster({ ...fakeOptions(f), nWorkers: 1, runtime: 'native', python: mismatchedClient(), schedulerTimeoutMs: 90_000, workersTimeoutMs: 90_000, ...extra }),
      leftovers: () => Object.values(f.leaked()).flat(),
    });
    expect(f.bootErrors).toEqual([]);
    assertNoContractViolations(f);
  }, 300_000);
});

