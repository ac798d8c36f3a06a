/**
 * Cloud fakes set up for a dask-cloud CLI child process, one per provider: the fake on loopback
 * blocks with process VMs, and the flags and environment that point the CLI at it (a user with no
 * cloud configuration but those). Shared by the CLI tests that run whole commands.
 *
 * Network safety: the fakes hand out loopback addresses only (127.79/16 for EC2 and 127.76/16 for
 * DigitalOcean, blocks no other test file uses; GCP's helper picks from 127.80-207). The library
 * dials the scheduler's public address, which the fakes' process-VM booters (NatProcessBooter,
 * LocalVmBooter) serve on loopback. The CLI gets its GCP token from a metadata server on
 * 127.0.0.1 (GCE_METADATA_HOST; K_SERVICE makes google-auth-library trust it without probing
 * 169.254.169.254, gcp-metadata 8's `getGCPResidency`), and its AWS credentials from the
 * environment (the instance metadata service is disabled).
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { expect } from 'vitest';
import { FakeEc2 } from '../fakes/ec2';
import { FakeDigitalOcean } from '../fakes/digitalocean';
import type { StepWatch } from './kill-at-step';
import { pythonWithDask } from './prereq';
import { assertLoopbackFake } from '../providers/ec2/helpers';
import { startFake as startGcp } from '../providers/gcp/helpers';
import { LocalVmBooter } from '../providers/digitalocean/helpers';
import { NatProcessBooter } from '../sim/nat-booter';

/** Every mutating request is held this long (holdMutating): a signal sent on its arrival lands while it is in flight. */
export const HOLD_MS = 150;

export type Provider = 'ec2' | 'gcp' | 'digitalocean' | 'local';

export interface Target {
  provider: Provider;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** Mutating requests at the fake; undefined for local, whose steps are its progress lines. */
  mutating?: StepWatch;
  /** The delays the fake injects into one start and its teardown (lifecycle steps, held requests). */
  injectedMs: number;
  /** What is left of the cluster: empty when nothing. */
  leftovers(clusterId: string): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

const cleanups: Array<() => Promise<unknown>> = [];

/** Stops every fake, booter and metadata server the targets started, and removes their directories (afterAll). */
export async function stopTargets(): Promise<void> {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
}

export async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A user with no cloud configuration but what each test passes (no ~/.aws, no config file, no IMDS). */
export async function cleanEnv(): Promise<NodeJS.ProcessEnv> {
  return {
    HOME: await tempDir('dc-sig-home-'),
    XDG_CONFIG_HOME: '/nonexistent-config',
    DASK_CLOUD_CONFIG: '',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: '/nonexistent/aws-config',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/aws-credentials',
    GOOGLE_APPLICATION_CREDENTIALS: '',
    DEBUG: '',
  };
}

/** A latency hook that reports each mutating request and holds it HOLD_MS. */
export function holdMutating(faults: { latency(m: RegExp, ms: () => number): { remove(): void } }, match: RegExp): StepWatch {
  return (on) => {
    const hook = faults.latency(match, () => {
      on('');
      return HOLD_MS;
    });
    return () => hook.remove();
  };
}

/** EC2: the fake on 127.79.<16k>/20 blocks, instances run as local Dask processes behind a NAT. */
export async function ec2Target(block: number, timings: { pendingMs: number; shuttingDownMs: number }): Promise<Target & { fake: FakeEc2 }> {
  const booter = new NatProcessBooter({ python: pythonWithDask()!, ports: [8786] });
  const fake = await FakeEc2.start({ privateCidr: `127.79.${16 * block}.0/20`, publicCidr: `127.79.${128 + 16 * block}.0/20`, booter, lifecycleMs: timings });
  assertLoopbackFake(fake);
  cleanups.push(async () => {
    await fake.stop();
    await booter.stopAll();
  });
  const cfg = fake.clientConfig();
  return {
    fake,
    provider: 'ec2',
    args: ['--provider', 'ec2', '--region', cfg.region, '--endpoint', cfg.endpoint],
    env: { ...(await cleanEnv()), AWS_ACCESS_KEY_ID: cfg.credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: cfg.credentials.secretAccessKey },
    mutating: holdMutating(fake.server.faults, /^(Create|Authorize|Revoke|Run|Terminate|Delete|Modify)/),
    injectedMs: timings.pendingMs + timings.shuttingDownMs + HOLD_MS,
    leftovers: async () => withProcesses(fake.leaked(), booter.pids()),
    stop: () => fake.stop(),
  };
}

/** GCP: the fake on its helper's loopback blocks, a token from a loopback metadata server. */
export async function gcpTarget(): Promise<Target & { tokenRequests: () => number }> {
  const booter = new NatProcessBooter({ python: pythonWithDask()!, ports: [8786] });
  const timings = { provisioningMs: 200, stagingMs: 300, stoppingMs: 200, globalOperationMs: 100 };
  const fake = await startGcp({ booter, lifecycleMs: timings });
  const metadata = await metadataServer();
  cleanups.push(async () => {
    await fake.stop();
    await booter.stopAll();
    await new Promise((r) => metadata.server.close(r));
  });
  return {
    provider: 'gcp',
    args: ['--provider', 'gcp', '--project', fake.project, '--zone', 'us-central1-a', '--endpoint', `http://127.0.0.1:${fake.port}`],
    env: {
      ...(await cleanEnv()),
      GOOGLE_CLOUD_PROJECT: fake.project,
      K_SERVICE: 'dask-cloud-test',
      GCE_METADATA_HOST: `127.0.0.1:${(metadata.server.address() as AddressInfo).port}`,
      METADATA_SERVER_DETECTION: 'assume-present',
    },
    mutating: holdMutating(fake.server.faults, /\.(insert|bulkInsert|delete|patch|update|set[A-Z]\w*)$/),
    injectedMs: timings.provisioningMs + timings.stagingMs + timings.stoppingMs + 2 * timings.globalOperationMs + HOLD_MS,
    leftovers: async () => withProcesses(fake.leaked(), booter.pids()),
    stop: () => fake.stop(),
    tokenRequests: () => metadata.tokens,
  };
}

/**
 * The GCE metadata server's token endpoint, as google-auth-library's Compute client reads it
 * (https://cloud.google.com/compute/docs/access/authenticate-workloads#applications, "Metadata-Flavor:
 * Google" on every answer); anything else is 404, which the library treats as "not set".
 */
export async function metadataServer(): Promise<{ server: Server; tokens: number }> {
  const state = { server: undefined as unknown as Server, tokens: 0 };
  state.server = createServer((req, res) => {
    res.setHeader('Metadata-Flavor', 'Google');
    if (req.url?.startsWith('/computeMetadata/v1/instance/service-accounts/default/token')) {
      state.tokens++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ access_token: 'fake-gcp-token', expires_in: 3599, token_type: 'Bearer' }));
      return;
    }
    res.statusCode = 404;
    res.end('not found');
  });
  await new Promise<void>((r) => state.server.listen(0, '127.0.0.1', () => r()));
  return state;
}

/** DigitalOcean: the fake on 127.76.<16k>/20 blocks, Droplets run as local Dask processes. */
export async function doTarget(block: number): Promise<Target> {
  const booter = new LocalVmBooter();
  const lifecycleMs = 500;
  const firewallApplyMs = 50;
  const fake = await FakeDigitalOcean.start({ privateCidr: `127.76.${16 * block}.0/20`, publicCidr: `127.76.${128 + 16 * block}.0/20`, booter, lifecycleMs, firewallApplyMs });
  expect(fake.pools.private.cidr.startsWith('127.') && fake.pools.public.cidr.startsWith('127.'), 'loopback addresses only').toBe(true);
  cleanups.push(async () => {
    await fake.stop();
    await booter.stopAll();
  });
  return {
    provider: 'digitalocean',
    args: ['--provider', 'digitalocean', '--endpoint', fake.endpoint],
    env: { ...(await cleanEnv()), DIGITALOCEAN_TOKEN: fake.token, DASK_CLOUD_DIGITALOCEAN_POLL_INTERVAL_MS: '50' },
    mutating: holdMutating(fake.server.faults, /_(create|delete|destroy|update|add\w*|remove\w*|assign\w*|unassign\w*)$/),
    injectedMs: lifecycleMs + firewallApplyMs + HOLD_MS,
    leftovers: async () => {
      await fake.settle();
      return withProcesses(fake.leaked(), booter.pids());
    },
    stop: () => fake.stop(),
  };
}

/** Local processes: what is left is a Dask process naming the cluster, or its key directory. */
export async function localTarget(): Promise<Target> {
  return {
    provider: 'local',
    args: ['--provider', 'local'],
    env: await cleanEnv(),
    // Local processes stop within the backend's grace period; no fake delays anything.
    injectedMs: 0,
    leftovers: async (clusterId) => {
      const dirs = (await readdir(os.tmpdir())).filter((d) => d.startsWith(`${clusterId}-`));
      return withProcesses(dirs.length > 0 ? { keyDirs: dirs } : {}, processesOf(clusterId));
    },
    stop: async () => undefined,
  };
}

export function processesOf(clusterId: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', clusterId], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export function withProcesses(leaked: Record<string, unknown>, pids: number[]): Record<string, unknown> {
  return pids.length > 0 ? { ...leaked, processes: pids } : { ...leaked };
}

