/**
 * dask-cloudprovider's startup strategy, driven through the same fakes and stand-in (child
 * process). Modelled from its source (dask/dask-cloudprovider, commit 80a2df8 of 2025-10-14):
 *
 * - `SpecCluster._start` starts the scheduler first and waits for it: `create_vm()` (below), then
 *   `wait_for_scheduler()`, a plain TCP connect to the scheduler's address every 0.1 s
 *   (`utils/socket.is_socket_open`). Workers are created only after that.
 * - Workers: `SpecCluster._correct_state_internal` creates one `create_vm()` per worker and awaits
 *   them all with `asyncio.wait` — concurrently, one create call per worker (no batching).
 *   GCP and DigitalOcean run their blocking SDK calls through `loop.run_in_executor(None, ...)`,
 *   i.e. Python's default thread pool, `min(32, os.cpu_count() + 4)` threads: 12 here (an 8-core
 *   laptop). EC2 uses aiobotocore: no pool, every worker at once.
 * - EC2 `create_vm` (aws/ec2.py) per instance: DescribeVpcs (default VPC), DescribeSubnets,
 *   DescribeSecurityGroups `dask-default` (CreateSecurityGroup + AuthorizeSecurityGroupIngress when
 *   missing), DescribeImages (latest Canonical Ubuntu; the fake has jammy, not focal), RunInstances
 *   MinCount=MaxCount=1, CreateTags (Name), then DescribeInstances with backoff 0.1 s doubling (cap
 *   10 s) until the public IP is there. botocore `retries={'max_attempts': 10}`: modelled with the
 *   AWS SDK's own retry, 10 attempts.
 * - GCP `create_vm` (gcp/instances.py): instances.insert (the operation is not waited on), then
 *   instances.list(filter name=…) every 0.5 s until RUNNING, then one list for the internal IP and
 *   one for the external IP. googleapiclient's `execute()` retries nothing (num_retries=0): a 403
 *   rateLimitExceeded fails the worker. No firewall is created (it assumes one exists).
 * - DigitalOcean `create_vm` (digitalocean/droplet.py, python-digitalocean): POST a single droplet,
 *   then `droplet.get_actions()` and `action.load()` every 0.1 s until the create action completed
 *   — both *synchronous* calls inside the coroutine, so they block the event loop (one at a time
 *   across all workers) — then `droplet.load()` every 0.1 s (through the pool) until it has an IP.
 *   The fake has no actions API: each action request is modelled as a GET of the droplet (the
 *   action completes when the droplet is active), with the same rate-limit cost. python-digitalocean
 *   does not retry a 429.
 * - Readiness of N workers: the user's `client.wait_for_workers(N)`; here the library's own wire
 *   client polls `identity` every 0.5 s, which is what Dask's client does too (it asks the scheduler).
 * - Close: every worker's `close()` → `destroy_vm()` concurrently (EC2 TerminateInstances per
 *   instance; GCP instances.delete; DigitalOcean DELETE per droplet), then the scheduler's.
 *
 * The user-data is the library's own (the stand-in reads it), not dask-cloudprovider's; its
 * content does not change any API cost here. The EC2 security group is named per run here (the
 * original shares one `dask-default` group and never deletes it, so it is left after close).
 */
import * as net from 'node:net';
import type { ChildConfig } from './child';
import { loadLibrary } from './lib';
import type { ChildTarget } from './clouds';

type Step = <T>(name: string, ms: number, fn: () => Promise<T>, detail?: (r: T) => Record<string, unknown>) => Promise<{ ok: boolean; value?: T; error?: string }>;

/** Python's default executor size on an 8-core machine: min(32, cpu_count + 4). */
const PY_THREADS = 12;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A counting semaphore (the thread pool, or the event loop blocked by a synchronous call). */
class Pool {
  #free: number;
  #queue: (() => void)[] = [];
  constructor(size: number) {
    this.#free = size;
  }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((r) => this.#queue.push(r));
    try {
      return await fn();
    } finally {
      const next = this.#queue.shift();
      if (next) next();
      else this.#free++;
    }
  }
}

interface Vm {
  id: string;
  privateIp: string;
  publicIp?: string;
}

interface Strategy {
  createVm(role: 'scheduler' | 'worker', name: string, userData: Buffer): Promise<Vm>;
  destroyVm(vm: Vm): Promise<void>;
}

async function tcpOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(2_000, () => done(false));
  });
}

// ---------------------------------------------------------------------------------------------

async function ec2Strategy(t: Extract<ChildTarget, { cloud: 'ec2' }>, clusterId: string): Promise<Strategy> {
  const ec2 = await import('@aws-sdk/client-ec2');
  const client = new ec2.EC2Client({ region: t.region, endpoint: t.endpoint, credentials: t.credentials, maxAttempts: 10 });
  const SG = `dask-default-${clusterId}`;
  return {
    async createVm(role, name, userData) {
      const vpcs = await client.send(new ec2.DescribeVpcsCommand({ Filters: [{ Name: 'isDefault', Values: ['true'] }] }));
      const vpc = vpcs.Vpcs?.[0]?.VpcId;
      const subnets = await client.send(new ec2.DescribeSubnetsCommand({ Filters: [{ Name: 'vpc-id', Values: [vpc!] }] }));
      const subnet = subnets.Subnets?.[0]?.SubnetId;
      let group: string | undefined;
      try {
        const g = await client.send(new ec2.DescribeSecurityGroupsCommand({ GroupNames: [SG] }));
        group = g.SecurityGroups?.[0]?.GroupId;
      } catch {
        group = undefined;
      }
      if (!group) {
        const created = await client.send(new ec2.CreateSecurityGroupCommand({ GroupName: SG, Description: 'A default security group for Dask', VpcId: vpc }));
        group = created.GroupId!;
        await client.send(
          new ec2.AuthorizeSecurityGroupIngressCommand({
            GroupId: group,
            IpPermissions: [
              { IpProtocol: 'tcp', FromPort: 8786, ToPort: 8787, IpRanges: [{ CidrIp: '0.0.0.0/0' }] },
              { IpProtocol: 'tcp', FromPort: 0, ToPort: 65535, UserIdGroupPairs: [{ GroupId: group }] },
            ],
          }),
        );
      }
      const images = await client.send(
        new ec2.DescribeImagesCommand({ Owners: ['099720109477'], Filters: [{ Name: 'name', Values: ['ubuntu/images/hvm-ssd/ubuntu-*-amd64-server-*'] }] }),
      );
      const ami = [...(images.Images ?? [])].sort((a, b) => String(b.CreationDate).localeCompare(String(a.CreationDate)))[0]?.ImageId;
      const run = await client.send(
        new ec2.RunInstancesCommand({
          ImageId: ami,
          InstanceType: 't3.small',
          MinCount: 1,
          MaxCount: 1,
          UserData: userData.toString('base64'),
          InstanceInitiatedShutdownBehavior: 'terminate',
          NetworkInterfaces: [{ AssociatePublicIpAddress: true, DeleteOnTermination: true, DeviceIndex: 0, Groups: [group], SubnetId: subnet }],
          TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'dask-baseline', Value: clusterId }] }],
        }),
      );
      let inst = run.Instances![0]!;
      const id = inst.InstanceId!;
      for (let backoff = 0.1; ; backoff *= 2) {
        try {
          await client.send(new ec2.CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'Name', Value: name }, { Key: 'Dask Cluster', Value: clusterId }] }));
          break;
        } catch {
          await sleep((Math.min(backoff, 10) + (backoff % 1)) * 1000);
        }
      }
      for (let backoff = 0.1; !inst.PublicIpAddress; backoff *= 2) {
        try {
          const d = await client.send(new ec2.DescribeInstancesCommand({ InstanceIds: [id] }));
          inst = d.Reservations?.[0]?.Instances?.[0] ?? inst;
        } catch {
          // Timeout(300) collects the exception and keeps polling.
        }
        if (inst.PublicIpAddress) break;
        await sleep((Math.min(backoff, 10) + (backoff % 1)) * 1000);
      }
      return { id, privateIp: inst.PrivateIpAddress!, publicIp: inst.PublicIpAddress };
    },
    async destroyVm(vm) {
      await client.send(new ec2.TerminateInstancesCommand({ InstanceIds: [vm.id] }));
    },
  };
}

async function gcpStrategy(t: Extract<ChildTarget, { cloud: 'gcp' }>, clusterId: string): Promise<Strategy> {
  // googleapiclient stands in as a plain REST client without retries: the library's own REST
  // client, outside its pipeline (no retries, no limiter), is the same thing.
  const { ComputeRest } = await import('../../providers/gcp/rest');
  const { OAuth2Client } = await import('google-auth-library');
  const authClient = new OAuth2Client();
  authClient.setCredentials({ access_token: 'fake-gcp-token', expiry_date: Date.now() + 365 * 24 * 3_600_000 });
  const { instances } = new ComputeRest({ apiEndpoint: '127.0.0.1', port: t.port, protocol: 'http', auth: authClient });
  const pool = new Pool(PY_THREADS);
  const list = (name: string) => pool.run(async () => (await instances.list({ project: t.project, zone: t.zone, filter: `name=${name}`, maxResults: 500 }, { autoPaginate: false }))[0]);
  return {
    async createVm(role, name, userData) {
      await pool.run(() =>
        instances.insert(
          {
            project: t.project,
            zone: t.zone,
            instanceResource: {
              name,
              machineType: `zones/${t.zone}/machineTypes/n1-standard-1`,
              disks: [{ boot: true, autoDelete: true, initializeParams: { sourceImage: 'projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts', diskSizeGb: '50' } }],
              networkInterfaces: [{ network: 'global/networks/default', accessConfigs: [{ name: 'External NAT', type: 'ONE_TO_ONE_NAT' }] }],
              metadata: { items: [{ key: 'user-data', value: userData.toString('utf8') }] },
              labels: { 'dask-baseline': clusterId },
            },
          },
        ),
      );
      for (;;) {
        const items = await list(name);
        const status = items?.[0]?.status;
        if (!items?.length) throw new Error(`Missing Instance ${name}`);
        if (status === 'RUNNING') break;
        await sleep(500);
      }
      const internal = (await list(name))?.[0]?.networkInterfaces?.[0]?.networkIP ?? undefined;
      const external = (await list(name))?.[0]?.networkInterfaces?.[0]?.accessConfigs?.[0]?.natIP ?? undefined;
      return { id: name, privateIp: internal!, publicIp: external };
    },
    async destroyVm(vm) {
      await pool.run(() => instances.delete({ project: t.project, zone: t.zone, instance: vm.id }));
    },
  };
}

async function doStrategy(t: Extract<ChildTarget, { cloud: 'digitalocean' }>, clusterId: string): Promise<Strategy> {
  const pool = new Pool(PY_THREADS);
  const loop = new Pool(1); // synchronous calls inside the coroutine block the event loop
  const api = async (method: string, path: string, body?: unknown): Promise<Record<string, unknown>> => {
    const res = await fetch(`${t.endpoint}${path}`, {
      method,
      headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`DigitalOcean ${method} ${path}: ${res.status} ${text.slice(0, 200)}`);
    return text ? (JSON.parse(text) as Record<string, unknown>) : {};
  };
  type Droplet = { id: number; status: string; networks?: { v4?: { ip_address: string; type: string }[] } };
  const get = async (id: number) => (await api('GET', `/droplets/${id}`)).droplet as Droplet;
  const ip = (d: Droplet, type: string) => d.networks?.v4?.find((n) => n.type === type)?.ip_address;
  return {
    async createVm(role, name, userData) {
      const created = await pool.run(() =>
        api('POST', '/droplets', { name, region: 'nyc3', size: 's-1vcpu-1gb', image: 'ubuntu-24-04-x64', backups: false, user_data: userData.toString('utf8'), tags: [`dask-baseline-${clusterId}`] }),
      );
      const id = (created.droplet as Droplet).id;
      // droplet.get_actions() and action.load() until the create action is completed (blocking the loop).
      let d = await loop.run(() => get(id));
      while (d.status !== 'active') {
        d = await loop.run(() => get(id));
        await sleep(100);
      }
      // droplet.load() until ip_address.
      while (!ip(d, 'public')) {
        d = await pool.run(() => get(id));
        await sleep(100);
      }
      return { id: String(id), privateIp: ip(d, 'private') ?? ip(d, 'public')!, publicIp: ip(d, 'public') };
    },
    async destroyVm(vm) {
      await pool.run(() => api('DELETE', `/droplets/${vm.id}`));
    },
  };
}

// ---------------------------------------------------------------------------------------------

export async function runBaseline(cfg: ChildConfig, step: Step): Promise<number> {
  // The library's credentials, renderer and wire client serve as tools here (same version as measured).
  const { Security } = loadLibrary<typeof import('../../src/security')>(cfg.libRoot, 'src/security');
  const { renderUserData } = loadLibrary<typeof import('../../src/cloud-init')>(cfg.libRoot, 'src/cloud-init');
  const { SchedulerClient, waitForWorkers } = loadLibrary<typeof import('../../src/dask')>(cfg.libRoot, 'src/dask');
  type Security = import('../../src/security').Security;
  const clusterId = `b${Date.now().toString(36)}`;
  const t = cfg.target;
  let strategy: Strategy | undefined;
  let security: Security | undefined;
  let rssAfterImportKb = 0;
  await step('construct', 60_000, async () => {
    security = await Security.temporary();
    strategy = t.cloud === 'ec2' ? await ec2Strategy(t, clusterId) : t.cloud === 'gcp' ? await gcpStrategy(t, clusterId) : await doStrategy(t, clusterId);
    rssAfterImportKb = Math.round(process.memoryUsage().rss / 1024);
  });
  if (!strategy || !security) return rssAfterImportKb;
  const s = strategy;
  const sec = security;
  const vms: Vm[] = [];
  const started = await step('start', cfg.stepTimeoutMs, async () => {
    const schedUd = renderUserData({ role: 'scheduler', security: sec, gzip: 'never' }).body;
    const scheduler = await s.createVm('scheduler', `dask-${clusterId}-scheduler`, schedUd);
    vms.push(scheduler);
    const host = scheduler.publicIp ?? scheduler.privateIp;
    if (!host.startsWith('127.')) throw new Error(`refusing to dial ${host}`);
    while (!(await tcpOpen(host, 8786))) await sleep(100);
    const workerUd = renderUserData({ role: 'worker', security: sec, schedulerAddress: `tls://${scheduler.privateIp}:8786`, gzip: 'never' }).body;
    const results = await Promise.allSettled(
      Array.from({ length: cfg.n }, (_, i) => s.createVm('worker', `dask-${clusterId}-worker-${i.toString(16).padStart(8, '0')}`, workerUd).then((vm) => (vms.push(vm), vm))),
    );
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length) throw new Error(`${failed.length} of ${cfg.n} worker creates failed; first: ${(failed[0]!.reason as Error)?.message ?? failed[0]!.reason}`);
    const client = await SchedulerClient.connect(`tls://${host}:8786`, { security: sec });
    try {
      await waitForWorkers(client, cfg.n, { timeoutMs: cfg.stepTimeoutMs, intervalMs: 500 });
    } finally {
      await client.close();
    }
  });
  void started;
  await step('close', cfg.stepTimeoutMs, async () => {
    const workers = vms.slice(1);
    const res = await Promise.allSettled(workers.map((vm) => s.destroyVm(vm)));
    if (vms[0]) await s.destroyVm(vms[0]);
    const failed = res.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length) throw new Error(`${failed.length} deletes failed; first: ${(failed[0]!.reason as Error)?.message ?? failed[0]!.reason}`);
  });
  return rssAfterImportKb;
}
