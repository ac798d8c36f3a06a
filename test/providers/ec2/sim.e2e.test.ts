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
import { SimNetwork, SimVmBooter, simulatedVms } from '../../sim';
import { intToIp, ipToInt } from '../../sim/net-util';
import { expectMismatchWarnsThenStrictRollsBack, mismatchedClient } from '../../sim/versions';
import { eventually, fakeOptions, tagMap } from './helpers';

const enabled = have(simulatedVms()) && have(trixieDask());

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
      // The security group: 8786 open to the internet (mutual TLS guards it), the dashboard not.
      expect(await net.probeTcp('internet', sched.publicIpAddress as string, 8786)).toBe('open');
      expect(await net.probeTcp('internet', sched.publicIpAddress as string, 8787, { timeoutMs: 1_500 })).toBe('timeout');
      expect(await net.probeTcp('vpc', sched.privateIpAddress, 8787)).toBe('open');

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

