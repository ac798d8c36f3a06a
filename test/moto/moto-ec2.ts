/**
 * MotoEc2: moto (a third-party EC2 emulator, Debian's python3-moto) as a test backend with the
 * surface of our FakeEc2 where the two overlap (`clientConfig()`, `server.operations()`,
 * `server.calls(op)`, `mutatingCalls()`, `leaked()`, `contractViolations`, `stop()`), so a suite
 * can run against either.
 *
 * moto runs as `python3 -m moto.server -H 127.0.0.1 -p 0` chrooted into the Debian trixie root
 * that scripts/build-trixie-root.sh builds (shared with scripts/trixie-python, the second Dask
 * client), inside a private mount namespace where the AMI catalogue
 * (test/moto/amis.ts) is bound in for `MOTO_AMIS_PATH`. It runs in the caller's network namespace,
 * which must be loopback-only (test/moto/netns.ts): the addresses moto hands out are not ours.
 * A logging proxy (test/moto/proxy.ts) sits between the SDK and moto and records every action.
 *
 * moto is killed by its PID (SIGKILL) in `stop()`, and when this process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { request as httpRequest } from 'node:http';
import { EC2Client, DescribeInstancesCommand, DescribeSecurityGroupsCommand, DescribeVolumesCommand } from '@aws-sdk/client-ec2';
import { LABELS } from '../../src/cluster/vm';
import { buildScriptHash, storedBuildHash } from '../helpers/build-hash';
import { MUTATING_OPERATIONS } from '../fakes/ec2/fake-ec2';
import { debianCatalogue, type MotoAmi } from './amis';
import { LoggingProxy, type MotoCall } from './proxy';

export type { MotoCall, MotoFailure } from './proxy';

const REPO = path.resolve(__dirname, '../..');
/** Where scripts/build-trixie-root.sh puts the root by default. */
export const DEFAULT_MOTO_ROOT = path.join(REPO, '.cache', 'trixie-root');
const BUILD_SCRIPT = path.join(REPO, 'scripts', 'build-trixie-root.sh');
/** Inside the root: the mount point for the per-run catalogue directory (made by the build script). */
const CATALOGUE_MOUNT = '/run/dask-cloud-moto';

/** moto's default account (it accepts any credentials and maps them all to it). */
export const MOTO_ACCOUNT_ID = '123456789012';

export interface MotoEc2Options {
  /** Region the client config names (default eu-west-1). */
  region?: string;
  /** The root built by scripts/build-trixie-root.sh (default: DASK_CLOUD_TRIXIE_ROOT, else .cache/trixie-root). */
  root?: string;
  /** The AMI catalogue (default: Debian 12 images and decoys, test/moto/amis.ts). */
  amis?: MotoAmi[];
  /** `MOTO_ENABLE_AMI_VALIDATION` and `MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION` (default true: real rejections). */
  validation?: boolean;
  /** How long moto may take to listen and answer (default 30 s). */
  startTimeoutMs?: number;
}

/** A resource still there after a test, as `leaked()` reports it. */
export interface MotoResource {
  id: string;
  state?: string;
  tags: Record<string, string>;
}

/** The moto root, or why it is not usable (for test/helpers/prereq's `have`). */
export function motoRoot(root = process.env.DASK_CLOUD_TRIXIE_ROOT || DEFAULT_MOTO_ROOT): { ok: boolean; reason: string; root: string } {
  const fix = 'build it (as root, needs Debian\'s mirror) with `scripts/build-trixie-root.sh`';
  if (!existsSync(path.join(root, 'usr/lib/python3/dist-packages/moto/server.py'))) {
    return { ok: false, root, reason: `no moto root at ${root}: ${fix}` };
  }
  // A root built by an older script may lack what this harness relies on (the default root only:
  // a root named by the caller is theirs to keep current).
  if (root === DEFAULT_MOTO_ROOT) {
    if (storedBuildHash(root) !== buildScriptHash(BUILD_SCRIPT)) return { ok: false, root, reason: `the moto root at ${root} was built by another version of scripts/build-trixie-root.sh: re-run it` };
  }
  return { ok: true, root, reason: '' };
}

/** Kill moto processes still alive when the test process exits (a failed test that skipped stop()). */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) if (child.pid !== undefined) killed(child.pid);
});

/** SIGKILL to `pid`; false when it was gone already. */
function killed(pid: number): boolean {
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

export class MotoEc2 implements AsyncDisposable {
  readonly region: string;
  readonly accountId = MOTO_ACCOUNT_ID;
  /** The logging proxy: `server.operations()`, `server.calls(op)`, `server.received`, as on FakeEc2. */
  readonly server: LoggingProxy;
  /** Nothing boots on moto (FakeEc2's field, for shared helpers). */
  readonly bootErrors: never[] = [];
  /** Package versions inside the root (`python3-moto 5.1.1-4`, ...). */
  readonly versions: Record<string, string>;
  /** moto's PID (the chrooted python3). */
  readonly pid: number;

  readonly #child: ChildProcess;
  readonly #motoPort: number;
  readonly #dir: string;
  readonly #output: string[];
  #stopped = false;
  readonly #inspectors = new Map<string, EC2Client>();

  private constructor(init: { region: string; child: ChildProcess; motoPort: number; proxy: LoggingProxy; dir: string; output: string[]; versions: Record<string, string> }) {
    this.region = init.region;
    this.#child = init.child;
    this.pid = init.child.pid as number;
    this.#motoPort = init.motoPort;
    this.server = init.proxy;
    this.#dir = init.dir;
    this.#output = init.output;
    this.versions = init.versions;
  }

  /** Starts moto and the proxy. Throws (after killing what it started) if moto does not come up. */
  static async start(opts: MotoEc2Options = {}): Promise<MotoEc2> {
    const found = motoRoot(opts.root);
    if (!found.ok) throw new Error(found.reason);
    const root = found.root;
    const dir = mkdtempSync(path.join(tmpdir(), 'dask-cloud-moto-'));
    writeFileSync(path.join(dir, 'amis.json'), JSON.stringify(opts.amis ?? debianCatalogue()));
    const validation = opts.validation ?? true;
    const env = [
      'PATH=/usr/sbin:/usr/bin:/sbin:/bin',
      'HOME=/tmp',
      'LANG=C.UTF-8',
      // The root is a shared cache: nothing may be written into it.
      'PYTHONDONTWRITEBYTECODE=1',
      'PYTHONUNBUFFERED=1',
      `MOTO_AMIS_PATH=${CATALOGUE_MOUNT}/amis.json`,
      `MOTO_ENABLE_AMI_VALIDATION=${validation}`,
      `MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION=${validation}`,
    ];
    // unshare without --fork execs: the PID we get is the PID of python3 in the end. The bind
    // mount lives in the private mount namespace and dies with it.
    const child = spawn(
      'unshare',
      [
        '--mount',
        '--propagation',
        'private',
        '--',
        'sh',
        '-c',
        `mount --bind "$1" "$2${CATALOGUE_MOUNT}" && exec chroot "$2" /usr/bin/env -i ${env.join(' ')} python3 -m moto.server -H 127.0.0.1 -p 0`,
        'sh',
        dir,
        root,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    if (child.pid === undefined) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error('moto: could not spawn unshare');
    }
    live.add(child);
    const output: string[] = [];
    const kill = () => {
      if (child.exitCode === null && child.signalCode === null) killed(child.pid as number);
      live.delete(child);
      rmSync(dir, { recursive: true, force: true });
    };
    let proxy: LoggingProxy | undefined;
    try {
      const port = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`moto did not listen within ${opts.startTimeoutMs ?? 30_000} ms:\n${output.join('')}`)), opts.startTimeoutMs ?? 30_000);
        const onData = (chunk: Buffer) => {
          output.push(chunk.toString('utf8'));
          const m = / \* Running on http:\/\/127\.0\.0\.1:(\d+)/.exec(output.join(''));
          if (m) {
            clearTimeout(timer);
            resolve(Number(m[1]));
          }
        };
        child.stdout?.on('data', onData);
        child.stderr?.on('data', onData);
        child.once('exit', (code, signal) => {
          clearTimeout(timer);
          reject(new Error(`moto exited (${code ?? signal}) before listening:\n${output.join('')}`));
        });
      });
      // Keep only the tail of moto's request log (it logs every request).
      child.stdout?.on('data', () => output.splice(0, Math.max(0, output.length - 200)));
      proxy = new LoggingProxy({ host: '127.0.0.1', port });
      await proxy.start();
      const versions = Object.fromEntries(
        readFileSync(path.join(root, 'etc/dask-cloud-trixie-root'), 'utf8')
          .split('\n')
          .map((l) => /^(python3[\w-]*) (\S+)$/.exec(l))
          .filter((m): m is RegExpExecArray => m !== null)
          .map((m) => [m[1], m[2]]),
      );
      const moto = new MotoEc2({ region: opts.region ?? 'eu-west-1', child, motoPort: port, proxy, dir, output, versions });
      return moto;
    } catch (err) {
      await proxy?.stop();
      kill();
      throw err;
    }
  }

  /** `http://127.0.0.1:PORT` of the logging proxy. */
  get endpoint(): string {
    return this.server.endpoint;
  }

  /** For `assertNoContractViolations(moto)` / checkFakesAndClose. */
  get contractViolations() {
    return this.server.contractViolations;
  }

  /**
   * What `new EC2Client(...)` (or EC2Cluster's options) needs to reach moto, as
   * FakeEc2.clientConfig(): endpoint (the proxy), region, static credentials (moto accepts any),
   * `maxAttempts` (default 1: the test decides about retries).
   */
  clientConfig(opts: { maxAttempts?: number } = {}): {
    region: string;
    endpoint: string;
    credentials: { accessKeyId: string; secretAccessKey: string };
    maxAttempts: number;
  } {
    return {
      region: this.region,
      endpoint: this.endpoint,
      credentials: { accessKeyId: 'AKIDMOTOEC2', secretAccessKey: 'moto-secret' },
      maxAttempts: opts.maxAttempts ?? 1,
    };
  }

  /** EC2 operation names in the order moto received them. */
  operations(): (string | undefined)[] {
    return this.server.operations();
  }

  /** Logged calls of one operation (or all). */
  calls(operation?: string): MotoCall[] {
    return this.server.calls(operation);
  }

  /** Requests of mutating operations that were not DryRun, in order (refused ones included), as FakeEc2's. */
  mutatingCalls(): MotoCall[] {
    return this.server.received.filter((c) => c.operation !== undefined && MUTATING_OPERATIONS.has(c.operation) && c.params.DryRun !== 'true');
  }

  /** Forgets every resource (POST /moto-api/reset), clears the request log and removes the proxy's hooks. */
  async reset(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: this.#motoPort, method: 'POST', path: '/moto-api/reset' }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`moto reset answered ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end();
    });
    this.server.clearLog();
    this.server.onRequest = this.server.onResponse = this.server.refuse = undefined;
  }

  /**
   * What would still cost money, read from moto itself (not through the proxy, so the log stays
   * the library's): instances not terminated, security groups and volumes carrying the
   * dask-cloud cluster tag. Same use as FakeEc2.leaked(): `Object.values(x).flat().length`.
   */
  async leaked(region = this.region): Promise<{ instances: MotoResource[]; securityGroups: MotoResource[]; volumes: MotoResource[] }> {
    const inspector = this.inspector(region);
    const tags = (t: { Key?: string; Value?: string }[] | undefined) => Object.fromEntries((t ?? []).map((x) => [x.Key ?? '', x.Value ?? '']));
    const reservations = (await inspector.send(new DescribeInstancesCommand({}))).Reservations ?? [];
    const instances = reservations
      .flatMap((r) => r.Instances ?? [])
      .filter((i) => i.State?.Name !== 'terminated')
      .map((i) => ({ id: i.InstanceId ?? '', state: i.State?.Name, tags: tags(i.Tags) }));
    const groups = (await inspector.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'tag-key', Values: [LABELS.cluster] }] }))).SecurityGroups ?? [];
    const volumes = (await inspector.send(new DescribeVolumesCommand({ Filters: [{ Name: 'tag-key', Values: [LABELS.cluster] }] }))).Volumes ?? [];
    return {
      instances,
      securityGroups: groups.map((g) => ({ id: g.GroupId ?? '', tags: tags(g.Tags) })),
      volumes: volumes.map((v) => ({ id: v.VolumeId ?? '', state: v.State, tags: tags(v.Tags) })),
    };
  }

  /**
   * An SDK client straight to moto, bypassing the proxy: for a test's own set-up and checks,
   * which must not show up in the library's call log. Destroyed by `stop()`.
   */
  inspector(region = this.region): EC2Client {
    let client = this.#inspectors.get(region);
    if (!client) {
      client = new EC2Client({
        region,
        endpoint: `http://127.0.0.1:${this.#motoPort}`,
        credentials: { accessKeyId: 'AKIDMOTOINSPECT', secretAccessKey: 'moto-secret' },
        maxAttempts: 1,
      });
      this.#inspectors.set(region, client);
    }
    return client;
  }

  /** The last lines moto printed (its request log and any traceback), for failure messages. */
  output(): string {
    return this.#output.join('');
  }

  /** Stops the proxy and kills moto by its PID. Idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const client of this.#inspectors.values()) client.destroy();
    await this.server.stop();
    const child = this.#child;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      if (killed(this.pid)) await exited;
    }
    live.delete(child);
    rmSync(this.#dir, { recursive: true, force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
