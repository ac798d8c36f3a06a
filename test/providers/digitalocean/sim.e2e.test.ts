/**
 * DropletCluster end to end in simulated VMs: the DigitalOcean fake boots every Droplet it creates
 * as a systemd-nspawn VM (test/sim) where the real cloud-init runs our real user-data and real
 * Dask (native runtime: the image's python3-distributed) comes up with our TLS files, behind
 * nftables rules translated from the cluster's DigitalOcean firewall.
 *
 * The VMs run Debian trixie's Dask (2024.12.1, Python 3.13); the clients, and the cluster's
 * `python` option, are the same Dask through scripts/trixie-python.
 *
 * Network safety (test/sim/README.md, FACTS.md): the network is created with `hostAccess`, and
 * before the library dials anything from this process, `assertHostRoute` proves that both address
 * blocks the fake hands out go through this network's own host links (the rest of 10.77.0.0/16 is
 * a blackhole). Python clients run inside the network's namespaces through `net.run(..., { dials })`,
 * which checks the route first. Every wait is bounded; the network is destroyed in afterAll.
 *
 * Needs root, systemd-nspawn, nftables and the VM image (`sudo bash scripts/build-vm-image.sh`).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { assertNoContractViolations } from '../../fakes/core';
import { FakeDigitalOcean } from '../../fakes/digitalocean';
import { have, trixieDask, trixiePython } from '../../helpers/prereq';
import { pythonIn } from '../../helpers/python';
import { SimNetwork, SimVmBooter, simulatedVms } from '../../sim';
import { expectMismatchWarnsThenStrictRollsBack, mismatchedClient } from '../../sim/versions';
import { DropletCluster } from '../../../providers/digitalocean';
import type { ClusterEvent } from '../../../src/cluster/events';
import { sequenceAfterPreflight } from './helpers';

const enabled = have(simulatedVms()) && have(trixieDask());

/** The first VM address of a /20 (the fake's allocators start at base+2). */
function firstHost(cidr: string): string {
  const [base] = cidr.split('/');
  const parts = base!.split('.').map(Number);
  parts[3] = parts[3]! + 2;
  return parts.join('.');
}

describe.skipIf(!enabled)('DropletCluster in simulated VMs (real cloud-init, real Dask, nftables firewall)', () => {
  let net: SimNetwork;
  let fake: FakeDigitalOcean;
  const dirs: string[] = [];

  beforeAll(async () => {
    net = await SimNetwork.create({ name: 'dosim', hostAccess: true });
    // Before anything dials: both blocks leave this process only through our own host links.
    await net.assertHostRoute(firstHost(net.privateCidr));
    await net.assertHostRoute(firstHost(net.publicCidr));
  }, 60_000);

  afterEach(async () => {
    try {
      assertNoContractViolations(fake);
      expect(fake.server.handlerErrors).toEqual([]);
      expect(fake.bootErrors).toEqual([]);
    } finally {
      await fake?.stop();
    }
  });

  afterAll(async () => {
    await net?.destroy();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  async function startFake(): Promise<FakeDigitalOcean> {
    fake = await FakeDigitalOcean.start({ privateCidr: net.privateCidr, publicCidr: net.publicCidr, booter: new SimVmBooter(net), lifecycleMs: 500 });
    return fake;
  }

  function cluster(extra: ConstructorParameters<typeof DropletCluster>[0] = {}): DropletCluster {
    return new DropletCluster({
      token: fake.token,
      endpoint: fake.endpoint,
      image: 'debian-12-x64',
      runtime: 'native', // the simulated image has python3-distributed, not Docker
      python: trixiePython()!,
      pollIntervalMs: 200,
      activeTimeoutMs: 30_000,
      schedulerTimeoutMs: 60_000,
      workersTimeoutMs: 60_000,
      closeOnSignals: false,
      consoleOutput: (d) => fake.consoleOutput(d.id),
      ...extra,
    });
  }

  function hostOf(address: string): string {
    return address.replace(/^\w+:\/\//, '').replace(/:\d+$/, '');
  }

  it('public mode: start, a client on the internet computes, the dashboard stays closed, scale down retires by host, close leaves nothing', async () => {
    await startFake();
    const events: ClusterEvent[] = [];
    const c = cluster({ nWorkers: 2, onEvent: (e) => events.push(e) });
    try {
      await c.start();
      expect(sequenceAfterPreflight(fake)).toEqual(['tags_create', 'firewalls_create', 'droplets_create', 'droplets_get', 'droplets_create', 'droplets_list']);
      const publicIp = hostOf(c.schedulerAddress);
      expect(fake.pools.public.contains(publicIp)).toBe(true); // the client dials the public address

      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-do-sim-'));
      dirs.push(dir);
      await c.writeClientConfig(dir);
      const client = await pythonIn(net, 'internet', dir, publicIp, "from distributed import Client\nc = Client(timeout='30s')\nprint('result', sum(c.gather(c.map(lambda x: x * 2, range(10)))))\nc.close()");
      expect(client.stdout, client.stderr).toMatch(/^result 90$/m);
      // The firewall opened 8786 and the dashboard's terminator 8788 to the internet (mutual TLS
      // guards both): the plain dashboard is not reachable there.
      expect(await net.probeTcp('internet', publicIp, 8788)).toBe('open');
      expect(await net.probeTcp('internet', publicIp, 8787, { timeoutMs: 1_500 })).toBe('timeout');

      await c.scale(1);
      const retired = events.find((e) => e.type === 'workers-retired') as Extract<ClusterEvent, { type: 'workers-retired' }>;
      expect(retired.retired).toEqual([`${c.id}-worker-1`]);
      expect(await c.workers()).toHaveLength(1);
    } finally {
      await c.close();
    }
    expect(fake.leaked()).toEqual({});
  }, 180_000);

  it('private mode: Private Droplets, the scheduler on its private address, a client inside the VPC computes, none outside can', async () => {
    await startFake();
    const c = cluster({ nWorkers: 1, privateNetworking: true });
    try {
      await c.start();
      expect(c.schedulerAddress).toBe(c.schedulerPrivateAddress);
      for (const d of fake.droplets() as { networks: { v4: { type: string }[] } }[]) expect(d.networks.v4.map((n) => n.type)).toEqual(['private']);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-do-sim-'));
      dirs.push(dir);
      await c.writeClientConfig(dir);
      const privateIp = hostOf(c.schedulerAddress);
      const client = await pythonIn(net, 'vpc', dir, privateIp, "from distributed import Client\nc = Client(timeout='30s')\nprint('result', c.submit(lambda: 41 + 1).result())\nc.close()");
      expect(client.stdout, client.stderr).toMatch(/^result 42$/m);
      // From the internet there is no route to a private address at all.
      await expect(net.checkRoute('internet', privateIp)).rejects.toThrow();
    } finally {
      await c.close();
    }
    expect(fake.leaked()).toEqual({});
  }, 180_000);

  it('a client of another Dask: the versions warning names each package; strictVersions fails the start and leaves nothing', async () => {
    await startFake();
    await expectMismatchWarnsThenStrictRollsBack({
      net,
      make: (extra) => cluster({ nWorkers: 1, python: mismatchedClient(), ...extra }),
      leftovers: () => Object.values(fake.leaked()).flat(),
    });
  }, 300_000);
});
