/**
 * GCPCluster end to end on simulated VMs: FakeGcp boots every instance it creates as a Debian VM
 * (systemd-nspawn, own network namespace) that runs the real cloud-init on our real user-data,
 * behind an nftables firewall that follows the cluster's GCP firewall rules (tags translated to
 * peer addresses). This process proves readiness over mutual TLS on the scheduler's external
 * address; a Python client on the simulated internet computes with only the written client
 * config; the dashboard is open to the subnetwork and closed to the internet.
 *
 * The VMs run Debian trixie's Dask (2024.12.1, Python 3.13); the clients, and the cluster's
 * `python` option (which picks the Docker image), are the same Dask through scripts/trixie-python.
 *
 * Network safety (test/sim/README.md): the simulated cloud is 10.77.0.0/16, blackholed in the
 * root namespace. `hostAccess` adds links into this network's bridges only; every address this
 * process can learn is checked with `assertHostRoute`: a probe of each block before anything is
 * created, and each VM's own addresses before it boots (SimVmBooter does that with host access). Python clients run inside
 * our namespaces (`net.run`, which checks its routes), which have no default route.
 *
 * Needs root, systemd-nspawn, nftables and the VM image (`sudo bash scripts/build-vm-image.sh`).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GCPCluster } from '../../../providers/gcp';
import { parseAddress } from '../../../src/dask';
import type { ClusterEvent } from '../../../src/cluster/events';
import { assertNoContractViolations } from '../../fakes/core';
import { FakeGcp } from '../../fakes/gcp';
import { have, trixieDask, trixiePython } from '../../helpers/prereq';
import { pythonIn } from '../../helpers/python';
import { SimNetwork, SimVmBooter, simulatedVms } from '../../sim';
import { intToIp, ipToInt } from '../../sim/net-util';
import { expectMismatchWarnsThenStrictRollsBack, mismatchedClient } from '../../sim/versions';
import { eventually, fakeOptions } from './helpers';

const enabled = have(simulatedVms()) && have(trixieDask());

describe.skipIf(!enabled)('GCPCluster on simulated VMs (real cloud-init, firewall from the GCP rules)', () => {
  let net: SimNetwork;
  let fake: FakeGcp | undefined;

  beforeAll(async () => {
    net = await SimNetwork.create({ name: 'gcp', hostAccess: true });
    for (const block of [net.privateCidr, net.publicCidr]) {
      await net.assertHostRoute(intToIp(ipToInt(block.split('/')[0] as string) + 4));
    }
  }, 60_000);

  afterAll(async () => {
    await fake?.stop();
    await net?.destroy();
  }, 60_000);

  /** close() deletes everything, every VM booted cleanly, and every request met the contract. */
  async function closeLeavesNothing(cluster: GCPCluster, fake: FakeGcp): Promise<void> {
    await cluster.close();
    expect(fake.leaked()).toEqual({});
    expect(fake.bootErrors).toEqual([]);
    assertNoContractViolations(fake);
  }

  async function startFakeOnNet(booterOptions: { containers?: boolean } = {}): Promise<FakeGcp> {
    await fake?.stop();
    fake = await FakeGcp.start({ booter: new SimVmBooter(net, booterOptions), privateCidr: net.privateCidr, publicCidr: net.publicCidr, lifecycleMs: { provisioningMs: 300, stagingMs: 300, stoppingMs: 300 } });
    return fake;
  }

  it('start (2 workers, mutual TLS) → a client on the internet computes → scale(1) → close leaves nothing', async () => {
    const fake = await startFakeOnNet();
    const cluster = new GCPCluster({
      ...fakeOptions(fake),
      nWorkers: 2,
      // The image has Dask (Debian's python3-distributed) and no internet for Docker.
      runtime: 'native',
      python: trixiePython()!,
      schedulerTimeoutMs: 90_000,
      workersTimeoutMs: 90_000,
    });
    const clientDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-gcp-sim-'));
    try {
      await cluster.start();
      const pub = parseAddress(cluster.schedulerAddress).host;
      const priv = parseAddress(cluster.schedulerPrivateAddress).host;
      expect(fake.pools.public.contains(pub)).toBe(true);

      await cluster.writeClientConfig(clientDir);
      const client = await pythonIn(net, 'internet', clientDir, pub, "from distributed import Client\nc = Client(timeout='30s')\nprint('result', sum(c.gather(c.map(lambda x: x * 2, range(10)))))\nc.close()");
      expect(client.code, client.code === 0 ? '' : `${client.stderr.slice(-2000)}\n${await net.firewallDump()}`).toBe(0);
      expect(client.stdout).toMatch(/^result 90$/m);
      // The firewall rules: 8786 and the dashboard's terminator 8788 open to the internet (mutual
      // TLS guards both); the plain dashboard 8787 to no one, and it listens on loopback only.
      expect(await net.probeTcp('internet', pub, 8786)).toBe('open');
      expect(await net.probeTcp('internet', pub, 8788)).toBe('open');
      expect(await net.probeTcp('internet', pub, 8787, { timeoutMs: 1_500 })).toBe('timeout');
      expect(await net.probeTcp('vpc', priv, 8788)).toBe('open');
      expect(await net.probeTcp('vpc', priv, 8787, { timeoutMs: 1_500 })).toBe('timeout');

      const [keep, victim] = cluster.members.filter((m) => m.role === 'worker');
      await cluster.scale(1);
      expect((await cluster.workers()).map((w) => w.host)).toEqual([keep!.privateHost]);
      expect(fake.resources().instances!.map((i) => i.id)).not.toContain(`zones/us-central1-a/instances/${victim!.name}`);

      const vmIds = fake.resources().instances!.map((r) => String((r.value as { id: string }).id));
      await cluster.close();
      expect(fake.leaked()).toEqual({});
      // Deleted instances' VMs are stopped by the fake as they go (nspawn takes a moment).
      await eventually(() => vmIds.every((id) => !(net.vm(id)?.running ?? false)), 'the VMs to stop', 30_000);
      assertNoContractViolations(fake);
      expect(fake.bootErrors).toEqual([]);
    } finally {
      await cluster.close();
      fs.rmSync(clientDir, { recursive: true, force: true });
    }
  }, 240_000);

  it('the default Docker runtime: cloud-init starts Docker, Dask runs in the container with its TLS files, a client computes', async () => {
    // The image stands in for ghcr.io/dask/dask: when cloud-init starts Docker, the VM imports a
    // local Dask image as if pulled, but only under the tags the library picks for the Dask inside
    // it (scripts/build-vm-image.sh, /opt/dask-cloud-sim/image-tags). The client's Dask (the
    // `python` option: trixie's 2024.12.1 on Python 3.13) must make the library pick one of them.
    const fake = await startFakeOnNet({ containers: true });
    const events: ClusterEvent[] = [];
    const cluster = new GCPCluster({ ...fakeOptions(fake), nWorkers: 1, python: trixiePython()!, onEvent: (e) => events.push(e), schedulerTimeoutMs: 120_000, workersTimeoutMs: 120_000 });
    const clientDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-gcp-sim-docker-'));
    try {
      await cluster.start();
      const pub = parseAddress(cluster.schedulerAddress).host;
      await cluster.writeClientConfig(clientDir);
      const client = await pythonIn(net, 'internet', clientDir, pub, "from distributed import Client\nc = Client(timeout='30s')\nprint('result', c.submit(lambda: 6 * 7).result())\nc.close()");
      expect(client.code, client.code === 0 ? '' : client.stderr.slice(-2000)).toBe(0);
      expect(client.stdout).toMatch(/^result 42$/m);
      // The library picked the image of the client's Dask, the one the VMs can "pull".
      const picked = events.find((e): e is Extract<ClusterEvent, { type: 'image' }> => e.type === 'image');
      expect(picked?.image).toBe('ghcr.io/dask/dask:2024.12.1-py3.12');
      expect(cluster.versions?.mismatches).toEqual([]);
      // Each member's Dask runs in a container of that image, not on the VM itself.
      for (const m of cluster.members) {
        const id = String((fake.resources().instances!.find((i) => (i.value as { name: string }).name === m.name)!.value as { id: string }).id);
        const vm = net.vm(id)!;
        const tags = await vm.exec('cat', ['/opt/dask-cloud-sim/image-tags'], { timeoutMs: 15_000 });
        expect(tags.stdout.trim().split('\n')).toContain(picked?.image);
        const ps = await vm.exec('docker', ['ps', '--format', '{{.Names}} {{.Image}}'], { timeoutMs: 15_000 });
        // The scheduler also runs the dashboard's terminator, from the same image.
        const expected = m.role === 'scheduler' ? [`dask-dashboard-tls ${picked?.image}`, `dask-scheduler ${picked?.image}`] : [`dask-worker ${picked?.image}`];
        expect(ps.stdout.trim().split('\n').sort()).toEqual(expected);
      }
      await closeLeavesNothing(cluster, fake);
    } finally {
      await cluster.close();
      fs.rmSync(clientDir, { recursive: true, force: true });
    }
  }, 240_000);

  it('privateNetworking + security: false: plain tcp:// inside the VPC only, no external addresses', async () => {
    const fake = await startFakeOnNet();
    const cluster = new GCPCluster({ ...fakeOptions(fake), nWorkers: 1, security: false, privateNetworking: true, runtime: 'native', python: trixiePython()!, schedulerTimeoutMs: 90_000, workersTimeoutMs: 90_000 });
    try {
      await cluster.start();
      const priv = parseAddress(cluster.schedulerAddress).host;
      expect(cluster.schedulerAddress).toBe(`tcp://${priv}:8786`);
      expect(fake.pools.public.inUse()).toEqual([]);
      // From the internet there is no way in: no external address, and no route to an internal one.
      await expect(net.checkRoute('internet', priv)).rejects.toThrow();
      const client = await net.run(
        'vpc',
        trixiePython()!,
        ['-c', `from distributed import Client\nc = Client(${JSON.stringify(cluster.schedulerAddress)}, timeout='30s')\nprint('result', c.submit(lambda: 41 + 1).result())\nc.close()`],
        { dials: [priv], timeoutMs: 60_000, check: false },
      );
      expect(client.code, client.code === 0 ? '' : `${client.stderr.slice(-2000)}\n${await net.firewallDump()}`).toBe(0);
      expect(client.stdout).toMatch(/^result 42$/m);
      await closeLeavesNothing(cluster, fake);
    } finally {
      await cluster.close();
    }
  }, 240_000);

  it('a client of another Dask: the versions warning names each package; strictVersions fails the start and leaves nothing', async () => {
    const fake = await startFakeOnNet();
    await expectMismatchWarnsThenStrictRollsBack({
      net,
      make: (extra) => new GCPCluster({ ...fakeOptions(fake), nWorkers: 1, runtime: 'native', python: mismatchedClient(), schedulerTimeoutMs: 90_000, workersTimeoutMs: 90_000, ...extra }),
      leftovers: () => Object.values(fake.leaked()).flat(),
    });
    expect(fake.bootErrors).toEqual([]);
    assertNoContractViolations(fake);
  }, 300_000);
});
