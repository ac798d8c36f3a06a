/**
 * The simulated cloud itself: network isolation and firewalls, cloud-init on a booted VM, and a
 * real Dask cluster (scheduler + 2 workers) on three VMs with mutual TLS.
 *
 * The VMs run Debian trixie's Dask (2024.12.1, Python 3.13); the clients that compute on them run
 * the same Dask through scripts/trixie-python (the host's bookworm Dask 2022.12.1 cannot).
 *
 * Needs root, systemd-nspawn, nftables and the VM image (`sudo bash scripts/build-vm-image.sh`).
 * Outside CI a missing prerequisite skips with a message; with CI=true it fails.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { have, trixieDask, trixiePython } from '../helpers/prereq';
import { spawnTsx } from '../helpers/spawn';
import { SimNetwork, SimVmBooter, simulatedVms, cleanupStale, type SimVm, type FirewallRule } from './index';
import type { FirewallRule as FakeFirewallRule } from '../fakes/core/state';
import { routeGet } from './net-util';
import { listOurNamespaces } from './cleanup';
import { pidAlive, waitFor } from './exec';

const enabled = have(simulatedVms());

/** Numbers the run reports at the end (console), for the record. */
const timings: Record<string, number> = {};

describe.skipIf(!enabled)('simulated cloud', () => {
  let net: SimNetwork;

  beforeAll(async () => {
    const t0 = Date.now();
    net = await SimNetwork.create({ name: 'simtest' });
    timings.networkCreateMs = Date.now() - t0;
  });

  afterAll(async () => {
    const id = net?.id;
    await net?.destroy();
    if (id) expect(listOurNamespaces().filter((ns) => ns.includes(`-${id}-`))).toEqual([]);
    // eslint-disable-next-line no-console
    console.log(`[sim timings] ${JSON.stringify(timings)}`);
  });

  const listenerUserData = (ports: number[]) =>
    [
      '#cloud-config',
      'runcmd:',
      ...ports.map((p) => `  - [sh, -c, "nohup python3 -m http.server ${p} --bind 0.0.0.0 >/var/log/http-${p}.log 2>&1 &"]`),
    ].join('\n') + '\n';

  it('keeps every namespace off the outside and enforces live-updatable firewalls', async () => {
    const privateIp = net.allocatePrivateIp();
    const publicIp = net.allocatePublicIp();
    const rules: FirewallRule[] = [
      { protocol: 'all', sources: [net.privateCidr] },
      { protocol: 'tcp', ports: [8786, 8786], sources: [`${net.internetClientIp}/32`] },
    ];
    const vm = await net.bootVm({ id: 'fw-1', userData: listenerUserData([8786, 9000]), privateIp, publicIp, firewall: rules });

    // Routing: the VPC client reaches the private address directly; the internet client has no
    // route to it at all; nothing outside our block is routable from any of our namespaces.
    const vpcRoute = await net.checkRoute('vpc', privateIp);
    expect(vpcRoute.dev).toBe('eth0');
    expect(vpcRoute.gateway).toBeUndefined();
    expect((await net.checkRoute('internet', publicIp)).gateway).toBeUndefined();
    await expect(net.checkRoute('internet', privateIp)).rejects.toThrow(/no route/);
    await expect(net.checkRoute('vpc', '192.0.2.1')).rejects.toThrow(/outside the simulated cloud/);
    for (const where of ['vpc', 'internet', { vm: 'fw-1' }] as const) {
      const ns = net.namespaceOf(where);
      for (const outside of ['8.8.8.8', '192.0.2.1', '10.0.0.1', '172.16.0.1']) {
        expect(await routeGet(ns, outside), `${ns} → ${outside}`).toBeNull();
      }
    }
    // The root namespace (default route to the outside) blackholes our whole block.
    expect(await routeGet(null, privateIp)).toBeNull();
    expect(await routeGet(null, publicIp)).toBeNull();

    // Wait for the VM's listeners (from the VPC, which the firewall admits).
    await waitFor('listener on 8786', async () => ((await net.probeTcp('vpc', privateIp, 8786)) === 'open' ? true : undefined), {
      timeoutMs: 45_000,
      describe: () => vm.consoleOutput(),
    });
    expect(await net.probeTcp('vpc', privateIp, 9000)).toBe('open');
    expect(await net.probeTcp('vpc', privateIp, 9999)).toBe('ECONNREFUSED'); // admitted, nothing listening
    expect(await net.probeTcp('internet', publicIp, 8786)).toBe('open');
    expect(await net.probeTcp('internet', publicIp, 9000, { timeoutMs: 1_000 })).toBe('timeout'); // dropped

    // Clouds change firewalls on running VMs: close 8786 to the internet, then open it to everyone.
    await net.setFirewall('fw-1', [{ protocol: 'all', sources: [net.privateCidr] }]);
    expect(await net.probeTcp('internet', publicIp, 8786, { timeoutMs: 1_000 })).toBe('timeout');
    expect(await net.probeTcp('vpc', privateIp, 8786)).toBe('open');
    await net.setFirewall('fw-1', [{ protocol: 'tcp', ports: [8786, 8787], sources: ['0.0.0.0/0'] }]);
    expect(await net.probeTcp('internet', publicIp, 8786)).toBe('open');
    expect(await net.probeTcp('vpc', privateIp, 9000, { timeoutMs: 1_000 })).toBe('timeout');
    expect(await net.firewallRules('fw-1')).toMatch(/tcp dport 8786-8787 accept/);

    // Bad rules are refused before touching nftables.
    await expect(net.setFirewall('fw-1', [{ protocol: 'tcp', ports: [1, 2], sources: ['10.0.0.0/33'] }])).rejects.toThrow(/CIDR/);

    await vm.stop();
    expect(net.vm('fw-1')).toBeUndefined();
    expect(listOurNamespaces()).not.toContain(vm.netns);
  });

  it('runs cloud-init (gzip user-data: write_files + runcmd) and shows its console output; shutdown stops only that VM', async () => {
    const cloudConfig = [
      '#cloud-config',
      'write_files:',
      '  - path: /etc/dcsim-marker',
      "    content: 'written by write_files'",
      "    permissions: '0644'",
      'runcmd:',
      '  - [sh, -c, "echo runcmd-says-hello; cat /etc/dcsim-marker > /var/lib/dcsim-runcmd-marker"]',
    ].join('\n');
    const t0 = Date.now();
    const vm = await net.bootVm({
      id: 'tiny-1',
      userData: gzipSync(cloudConfig),
      metaData: { instanceId: 'i-0123456789', hostname: 'tiny' },
      privateIp: net.allocatePrivateIp(), // no public IP: a private-only VM
    });
    timings.bootVmCallMs = Date.now() - t0;
    if (net.baseExtractMs > 0) timings.baseExtractMs = net.baseExtractMs;
    const result = await vm.waitForCloudInit({ timeoutMs: 45_000 });
    timings.launchToCloudInitFinalMs = result.elapsedMs;
    expect(result.errors).toEqual([]);
    expect(result.datasource).toMatch(/NoCloud/);
    expect(await vm.readFile('/var/lib/dcsim-runcmd-marker')).toBe('written by write_files');
    const out = await vm.consoleOutput();
    expect(out).toContain('runcmd-says-hello');
    expect(out).toMatch(/Cloud-init v\. [\d.]+ finished/);
    // The image's config and the user-data pass the schema; the one warning left is about the ssh
    // server the image does not have.
    expect(out).not.toMatch(/Invalid cloud-config/);
    expect(out.split('\n').filter((l) => /WARNING/.test(l) && !/ssh_pwauth/.test(l))).toEqual([]);
    expect(await vm.readFile('/var/lib/cloud/data/instance-id')).toContain('i-0123456789');
    expect((await vm.exec('hostname', [])).stdout.trim()).toBe('tiny');
    // Private-only: no interface on the internet bridge.
    const links = (await net.run({ vm: 'tiny-1' }, 'ip', ['-br', 'link'])).stdout;
    expect(links).toMatch(/^eth0@/m);
    expect(links).not.toMatch(/^eth1@/m);

    // A VM that powers itself off (as our templates do when Dask exits) ends alone, with code 0.
    const halting = await net.bootVm({
      id: 'halt-1',
      userData: '#cloud-config\nruncmd:\n  - [shutdown, -h, now]\n',
      privateIp: net.allocatePrivateIp(),
    });
    const code = await Promise.race([halting.exited, new Promise<string>((r) => setTimeout(() => r('still running'), 45_000))]);
    expect(code).toBe(0);
    expect(vm.running).toBe(true);
    expect(vm.initPid()).not.toBeNull();
    expect((await vm.exec('true', [])).code).toBe(0);
    await halting.stop();
    await vm.stop();
    // Console output stays readable after the VM is gone.
    expect(await vm.consoleOutput()).toContain('runcmd-says-hello');
  }, 90_000);

  it('SimVmBooter (the fakes’ hook): group rules by VM id, re-translated when a peer boots', async () => {
    const booter = new SimVmBooter(net);
    const groupRule: FakeFirewallRule[] = [
      { direction: 'ingress', protocol: 'tcp', fromPort: 8786, toPort: 8786, cidrs: [], peerVmIds: ['i-peer-a', 'i-peer-b'] },
      { direction: 'egress', protocol: 'all', cidrs: ['0.0.0.0/0'] },
    ];
    const a = await booter.boot({
      id: 'i-peer-a',
      name: 'Peer_A',
      userData: Buffer.from(listenerUserData([8786])),
      privateIp: net.allocatePrivateIp(),
      firewall: groupRule,
    });
    const b = await booter.boot({ id: 'i-peer-b', userData: Buffer.from('#cloud-config\n'), privateIp: net.allocatePrivateIp(), firewall: groupRule });
    const aIp = net.vm('i-peer-a')!.privateIp;
    try {
      await net.vm('i-peer-a')!.waitForCloudInit({ timeoutMs: 30_000 });
      expect((await net.vm('i-peer-a')!.exec('hostname', [])).stdout.trim()).toBe('peer-a');
      // b booted after a's rules were set: the booter re-translates a's group rule when b boots,
      // so b gets in without the fake having to resend a's firewall.
      await waitFor('b → a:8786', async () => ((await net.probeTcp({ vm: 'i-peer-b' }, aIp, 8786)) === 'open' ? true : undefined), {
        timeoutMs: 30_000,
      });
      // A resent firewall keeps it so.
      await booter.setFirewall('i-peer-a', groupRule);
      expect(await net.probeTcp({ vm: 'i-peer-b' }, aIp, 8786, { timeoutMs: 5_000 })).toBe('open');
      expect(await net.probeTcp('vpc', aIp, 8786, { timeoutMs: 1_000 })).toBe('timeout'); // not in the group
      expect(await a.consoleOutput()).toMatch(/finished/);
    } finally {
      await Promise.all([a.stop(), b.stop(), a.stop()]); // idempotent
    }
  }, 90_000);

  it('the Docker stand-in "pulls" only the image tags of the Dask inside it; a unit naming another image gets nothing', async () => {
    // Two units in the shape the docker runtime renders (cloud-init/dask-docker.service.hbs); only
    // their ExecStart line matters to the preload. Neither is started: dockerd's start imports.
    const tagsOf = async (vm: SimVm) => (await vm.exec('cat', ['/opt/dask-cloud-sim/image-tags'])).stdout.trim().split('\n');
    const unit = (role: string, image: string) =>
      `[Service]\nExecStart=/usr/bin/docker run --rm --name dask-${role} --network host --restart no -v /etc/dask:/etc/dask:ro "${image}" python /etc/dask/launch.py /etc/dask/launch.json\n`;
    const userData = (good: string) =>
      [
        '#cloud-config',
        'write_files:',
        ...[['scheduler', good], ['worker', 'ghcr.io/dask/dask:2022.12.1-py3.11']].flatMap(([role, image]) => [
          `  - path: /etc/systemd/system/dask-${role}.service`,
          `    content: ${JSON.stringify(unit(role!, image!))}`,
          "    permissions: '0644'",
        ]),
        'runcmd:',
        '  - [systemctl, start, docker]',
      ].join('\n') + '\n';
    // The tags are read from the image itself (scripts/build-vm-image.sh writes them in one place).
    const probe = await net.bootVm({ id: 'tags-0', userData: '#cloud-config\n', privateIp: net.allocatePrivateIp() });
    const tags = await tagsOf(probe);
    await probe.stop();
    expect(tags).toEqual(['ghcr.io/dask/dask:2024.12.1-py3.12']); // what the library picks for trixie's Dask 2024.12.1 on Python 3.13
    const vm = await net.bootVm({ id: 'tags-1', userData: userData(tags[0]!), privateIp: net.allocatePrivateIp(), containers: true });
    try {
      expect((await vm.waitForCloudInit({ timeoutMs: 60_000 })).errors).toEqual([]);
      const images = await vm.exec('docker', ['image', 'ls', '--format', '{{.Repository}}:{{.Tag}}'], { timeoutMs: 15_000 });
      expect(images.stdout.trim().split('\n')).toEqual(tags);
      const journal = await vm.exec('journalctl', ['-u', 'docker', '--no-pager'], { check: false });
      expect(journal.stdout).toContain('not importing ghcr.io/dask/dask:2022.12.1-py3.11 for dask-worker.service');
    } finally {
      await vm.stop({ graceful: false });
    }
  }, 120_000);

  describe('Dask on three VMs', () => {
    // Clients of the VMs' own Dask (scripts/trixie-python).
    const dask = have(trixieDask());

    /**
     * Boots a scheduler (with a public IP) and two private-only workers, all admitting anything
     * from the VPC and nothing from the internet; a Python client in the VPC waits for both workers
     * and computes 1+1; a client on the internet must not get through. Records launch-to-2-workers.
     */
    async function daskCluster(label: string, o: {
      schedulerIp: string;
      schedulerUserData: Buffer | string;
      workerUserData: Buffer | string;
      /** Client arguments (Python source) and environment. */
      clientArgs: string;
      clientEnv?: Record<string, string>;
      schedulerUnit: string;
    }): Promise<void> {
      const schedulerPublicIp = net.allocatePublicIp();
      const firewall: FirewallRule[] = [{ protocol: 'all', sources: [net.privateCidr] }];
      const launchedAt = Date.now();
      const vms: SimVm[] = await Promise.all([
        net.bootVm({ id: `${label}-scheduler`, userData: o.schedulerUserData, privateIp: o.schedulerIp, publicIp: schedulerPublicIp, firewall }),
        net.bootVm({ id: `${label}-worker-1`, userData: o.workerUserData, privateIp: net.allocatePrivateIp(), firewall }),
        net.bootVm({ id: `${label}-worker-2`, userData: o.workerUserData, privateIp: net.allocatePrivateIp(), firewall }),
      ]);
      const [schedVm] = vms as [SimVm, SimVm, SimVm];
      try {
        const py = trixiePython()!;
        const client = await net.run(
          'vpc',
          py,
          [
            '-c',
            [
              'import time',
              'from distributed import Client',
              `c = Client(${o.clientArgs})`,
              'c.wait_for_workers(2, timeout=45)',
              'print("registered", time.time())',
              'print("result", c.submit(lambda x: x + 1, 1).result(timeout=20))',
              'print("workers", len(c.scheduler_info()["workers"]))',
              'c.close()',
            ].join('\n'),
          ],
          { env: o.clientEnv, dials: [o.schedulerIp], timeoutMs: 60_000, check: false },
        );
        if (client.code !== 0) {
          const consoles = await Promise.all(vms.map(async (v) => `--- ${v.id}\n${await v.consoleOutput()}`));
          throw new Error(`client failed (${client.code}): ${client.stderr.slice(-3000)}\n${consoles.join('\n')}`);
        }
        expect(client.stdout).toMatch(/^result 2$/m);
        expect(client.stdout).toMatch(/^workers 2$/m);
        const seen = Number(/^registered ([\d.]+)$/m.exec(client.stdout)![1]) * 1000;
        timings[`${label}LaunchTo2WorkersClientSeenMs`] = Math.round(seen - launchedAt);
        // Precise: when the scheduler logged the second worker's registration.
        const journal = await schedVm.exec('journalctl', ['-u', o.schedulerUnit, '-o', 'short-unix', '--no-pager'], { check: false });
        const regs = journal.stdout
          .split('\n')
          .filter((l) => /Register worker/.test(l))
          .map((l) => Number.parseFloat(l) * 1000);
        expect(regs.length).toBeGreaterThanOrEqual(2);
        timings[`${label}LaunchTo2WorkersRegisteredMs`] = Math.round(regs[1]! - launchedAt);

        // The internet client (credentials included) cannot reach 8786: the firewall keeps it closed.
        expect(await net.probeTcp('internet', schedulerPublicIp, 8786, { timeoutMs: 1_500 })).toBe('timeout');
        const outsider = await net.run(
          'internet',
          py,
          ['-c', `from distributed import Client\nClient(${JSON.stringify(`${o.clientArgs.includes('tcp://') ? 'tcp' : 'tls'}://${schedulerPublicIp}:8786`)}, timeout=3)`],
          { env: o.clientEnv, dials: [schedulerPublicIp], timeoutMs: 30_000, check: false },
        );
        expect(outsider.code).not.toBe(0);
        expect(outsider.stderr).toMatch(/OSError|TimeoutError|Timed out/);
        for (const v of vms) {
          expect((await v.waitForCloudInit({ timeoutMs: 10_000 })).errors, v.id).toEqual([]);
          expect(await v.consoleOutput(), v.id).not.toMatch(/Invalid cloud-config/);
        }
      } finally {
        await Promise.all(vms.map((v) => v.stop({ graceful: false })));
      }
    }

    it.skipIf(!dask)('hand-written cloud-config: plain tcp scheduler + 2 workers via runcmd', async () => {
      const schedulerIp = net.allocatePrivateIp();
      const runcmd = (args: string[]) => `#cloud-config\nruncmd:\n  - ${JSON.stringify(['systemd-run', ...args])}\n`;
      await daskCluster('plain', {
        schedulerIp,
        schedulerUserData: runcmd(['--unit=dask-scheduler', '/usr/bin/dask', 'scheduler', '--host', '0.0.0.0', '--port', '8786']),
        workerUserData: runcmd(['--unit=dask-worker', '/usr/bin/dask', 'worker', `tcp://${schedulerIp}:8786`]),
        clientArgs: `"tcp://${schedulerIp}:8786", timeout=45`,
        schedulerUnit: 'dask-scheduler',
      });
    }, 120_000);

    it.skipIf(!dask)('renderUserData (native runtime) + Security.temporary(): mutual TLS, client from writeClientConfig', async () => {
      const { renderUserData } = await import('../../src/cloud-init');
      const { Security } = await import('../../src/security');
      const security = await Security.temporary();
      const schedulerIp = net.allocatePrivateIp();
      const schedulerAddress = `tls://${schedulerIp}:8786`;
      const clientDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dcsim-client-'));
      try {
        await security.writeClientConfig(clientDir, { schedulerAddress });
        await daskCluster('tls', {
          schedulerIp,
          schedulerUserData: renderUserData({ role: 'scheduler', security, runtime: 'native' }).body,
          workerUserData: renderUserData({ role: 'worker', security, runtime: 'native', schedulerAddress }).body,
          clientArgs: 'timeout=45', // everything else from DASK_CONFIG
          clientEnv: { DASK_CONFIG: clientDir },
          schedulerUnit: 'dask-scheduler',
        });
      } finally {
        fs.rmSync(clientDir, { recursive: true, force: true });
      }
    }, 120_000);
  });
});

describe.skipIf(!enabled)('simulated cloud: host access and leftovers', () => {
  it('hostAccess: the test process reaches VMs through its own links, the blackhole covers the rest', async () => {
    const hostNet = await SimNetwork.create({ name: 'host', hostAccess: true });
    let links: string[] = [];
    try {
      expect(hostNet.hostIps).not.toBeNull();
      const privateIp = hostNet.allocatePrivateIp();
      const publicIp = hostNet.allocatePublicIp();
      const vm = await hostNet.bootVm({
        id: 'host-1',
        userData: '#cloud-config\nruncmd:\n  - [systemd-run, --unit=web, python3, -m, http.server, "8786"]\n',
        privateIp,
        publicIp,
        firewall: [{ protocol: 'tcp', ports: [8786, 8786], sources: [`${hostNet.hostIps!.private}/32`] }],
      });
      const route = await hostNet.assertHostRoute(privateIp);
      expect(route.dev).toMatch(/^dcsimv\d$/);
      expect(route.gateway).toBeUndefined();
      expect((await hostNet.assertHostRoute(publicIp)).dev).toMatch(/^dcsimi\d$/);
      links = [route.dev!, `dcsimi${route.dev!.slice(-1)}`];
      // Another address of our block that is not this network's still hits the blackhole.
      expect(await routeGet(null, '10.77.127.1')).toBeNull();
      const { connect } = await import('node:net');
      const tryConnect = (host: string) =>
        new Promise<string>((resolve) => {
          const sock = connect({ host, port: 8786 });
          sock.setTimeout(1_000, () => (sock.destroy(), resolve('timeout')));
          sock.on('connect', () => (sock.destroy(), resolve('open')));
          sock.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
        });
      await waitFor('web server on the VM', async () => ((await tryConnect(privateIp)) === 'open' ? true : undefined), {
        timeoutMs: 30_000,
        describe: () => vm.consoleOutput(),
      });
      // From the root namespace's public-side address, the firewall drops it.
      await hostNet.assertHostRoute(publicIp);
      expect(await tryConnect(publicIp)).toBe('timeout');
    } finally {
      await hostNet.destroy();
    }
    // Links gone, the block is a blackhole again in the root namespace.
    const { execFileSync } = await import('node:child_process');
    const linkList = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
    for (const l of links) expect(linkList).not.toContain(`${l}@`);
    expect(await routeGet(null, hostNet.vpcClientIp)).toBeNull();
  }, 90_000);

  it('a SIGKILLed owner leaves no VM running; cleanupStale removes its namespaces and files', async () => {
    const crashChild = spawnTsx(path.join(__dirname, 'fixtures/crash-child.ts'));
    const { child } = crashChild;
    const info = await waitFor(
      'the child to boot its VM',
      () => {
        if (child.exitCode !== null) throw new Error(`child exited ${child.exitCode}: ${crashChild.stderr()}`);
        const line = crashChild.stdout().split('\n').find((l) => l.startsWith('{'));
        return line ? (JSON.parse(line) as { netId: string; launcherPid: number; initPid: number; netns: string }) : undefined;
      },
      { timeoutMs: 45_000 },
    );
    expect(pidAlive(info.launcherPid)).toBe(true);
    expect(pidAlive(info.initPid)).toBe(true);
    // SIGKILL: no exit handler runs. The launcher's parent-death signal takes the VM down anyway.
    child.kill('SIGKILL');
    // Until this process reaps it, the killed owner is a zombie whose /proc entry (pid and start
    // time) still reads as alive, and cleanupStale rightly leaves its network alone.
    await waitFor('the killed owner to be reaped', () => (child.exitCode !== null || child.signalCode !== null ? true : undefined), { timeoutMs: 15_000 });
    await waitFor('the orphaned VM to die', () => (!pidAlive(info.launcherPid) && !pidAlive(info.initPid) ? true : undefined), {
      timeoutMs: 15_000,
    });
    expect(listOurNamespaces()).toContain(info.netns);
    const report = cleanupStale();
    expect(report.networks).toContain(info.netId);
    expect(listOurNamespaces().some((n) => n.includes(`-${info.netId}-`))).toBe(false);
    expect(fs.existsSync(`/dev/shm/dcsim/nets/${info.netId}`)).toBe(false);
  }, 90_000);

  it('cleanupStale removes namespaces and processes of a dead owner, and nothing of a live one', async () => {
    const live = await SimNetwork.create({ name: 'live' });
    try {
      // Forge a dead owner's leftovers: a namespace with a process in it, and an ownership record.
      const { execFileSync, spawn } = await import('node:child_process');
      const { writeNetRecord } = await import('./state');
      const dead = 'deadbeef00';
      const ns = `dcsim-${dead}-core`;
      execFileSync('ip', ['netns', 'add', ns]);
      writeNetRecord(dead, { owner: { pid: 999_999_999, startTime: 'gone' } });
      const sleeper = spawn('ip', ['netns', 'exec', ns, 'sleep', '50'], { stdio: 'ignore' });
      await waitFor('sleeper in namespace', () => (sleeper.pid && fs.existsSync(`/proc/${sleeper.pid}`) ? true : undefined));
      await new Promise((r) => setTimeout(r, 200));
      const report = cleanupStale();
      expect(report.networks).toContain(dead);
      expect(report.namespaces).toContain(ns);
      expect(report.pidsKilled.length).toBeGreaterThan(0);
      expect(listOurNamespaces()).not.toContain(ns);
      expect(listOurNamespaces().some((n) => n.includes(`-${live.id}-`))).toBe(true);
      await new Promise((r) => sleeper.once('exit', r));
    } finally {
      await live.destroy();
    }
  });
});
