/**
 * A light simulated VM: instead of booting an image, it reads the instance's cloud-config, writes
 * its `write_files` under a private root directory and runs the Dask process described by the
 * shipped launch spec (`/etc/dask/launch.json`) as a local process bound to the instance's
 * address. It proves that the user-data a provider sends carries a working Dask command, TLS
 * files and addresses, in a second, without root or an image.
 *
 * Safety: use it only with fakes whose address pools are on loopback (127.77.0.0/16 — every
 * 127/8 address is local on Linux), so nothing ever dials off the machine. `boot` refuses any
 * other address. Not modelled: cloud-init itself (runcmd, units), firewalls — the nspawn VMs in
 * this folder cover those.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { parse } from 'yaml';
import type { BootRequest, BootedVm, FirewallRule, VmBooter } from '../fakes/core/state';
import { pidExists } from './exec';

/** Loopback blocks for fakes whose instances this booter runs. */
export const LOOPBACK_POOLS = Object.freeze({ private: '127.77.0.0/20', public: '127.77.128.0/20' });

const TAIL = 200;
const VM_DASK_DIR = '/etc/dask';

interface WriteFile {
  path: string;
  content?: string;
  encoding?: string;
  permissions?: string;
}

function decodeUserData(raw: Buffer): Record<string, unknown> {
  const text = raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw).toString('utf8') : raw.toString('utf8');
  if (!text.startsWith('#cloud-config')) throw new Error('user-data is not a #cloud-config document');
  return parse(text) as Record<string, unknown>;
}

function fileContent(f: WriteFile): Buffer {
  const content = f.content ?? '';
  switch (f.encoding) {
    case undefined:
    case 'text/plain':
      return Buffer.from(content, 'utf8');
    case 'b64':
    case 'base64':
      return Buffer.from(content, 'base64');
    case 'gz+b64':
    case 'gzip+base64':
      return gunzipSync(Buffer.from(content, 'base64'));
    default:
      throw new Error(`unsupported write_files encoding ${f.encoding}`);
  }
}

export interface ProcessVm extends BootedVm {
  readonly id: string;
  readonly pid: number | undefined;
  /** Resolves when the Dask process exits (a VM with auto-shutdown powers off then). */
  readonly exited: Promise<number | null>;
}

export class ProcessBooter implements VmBooter {
  readonly #python: string;
  readonly #vms = new Map<string, { child: ChildProcess; root: string; stopped: boolean }>();
  /** Last firewall each VM was given (recorded, not enforced). */
  readonly firewalls = new Map<string, FirewallRule[]>();

  constructor(options: { python: string }) {
    this.#python = options.python;
  }

  async boot(vm: BootRequest): Promise<ProcessVm> {
    for (const ip of [vm.privateIp, vm.publicIp]) {
      if (ip !== undefined && !ip.startsWith('127.')) {
        throw new Error(`ProcessBooter only runs VMs on loopback addresses; ${ip} is not (configure the fake with LOOPBACK_POOLS)`);
      }
    }
    this.firewalls.set(vm.id, vm.firewall);
    const doc = decodeUserData(vm.userData);
    const root = await mkdtemp(path.join(os.tmpdir(), `dc-pvm-${vm.id.replace(/[^A-Za-z0-9-]/g, '')}-`));
    const files = (doc.write_files ?? []) as WriteFile[];
    for (const f of files) {
      const target = path.join(root, f.path);
      await mkdir(path.dirname(target), { recursive: true });
      await writeFile(target, fileContent(f));
      await chmod(target, parseInt(f.permissions ?? '0644', 8));
    }
    const spec = JSON.parse(fileContent(files.find((f) => f.path === `${VM_DASK_DIR}/launch.json`) ?? { path: '', content: '{}' }).toString('utf8')) as {
      args?: string[];
      env?: Record<string, string>;
    };
    if (!spec.args) throw new Error(`instance ${vm.id}: no ${VM_DASK_DIR}/launch.json in its user-data`);
    const relocate = (v: string) => v.split(`${VM_DASK_DIR}/`).join(`${root}${VM_DASK_DIR}/`);
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DASK_')) env[k] = v;
    for (const [k, v] of Object.entries(spec.env ?? {})) env[k] = relocate(v);
    const args = spec.args.map(relocate);
    // Bind to this "VM's" own address, as a VM would have it to itself.
    if (!args.includes('--host')) args.push('--host', vm.privateIp);
    if (args[0] === 'scheduler' && !args.includes('--dashboard-address') && !args.includes('--no-dashboard')) {
      args.push('--dashboard-address', `${vm.privateIp}:8787`);
    }
    const child = spawn(this.#python, ['-m', 'dask', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const lines: string[] = [`[process-vm ${vm.id}] dask ${args.join(' ')}`];
    const collect = (b: Buffer) => {
      for (const l of b.toString('utf8').split('\n')) if (l) lines.push(l);
      if (lines.length > TAIL) lines.splice(0, lines.length - TAIL);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    const exited = new Promise<number | null>((resolve) => {
      child.on('exit', (code) => resolve(code));
      child.on('error', () => resolve(null));
    });
    const entry = { child, root, stopped: false };
    this.#vms.set(vm.id, entry);
    const stop = async () => {
      if (entry.stopped) return;
      entry.stopped = true;
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
        await exited;
      }
      await rm(root, { recursive: true, force: true });
      this.#vms.delete(vm.id);
    };
    return {
      id: vm.id,
      pid: child.pid,
      exited,
      consoleOutput: async () => lines.join('\n'),
      stop,
    };
  }

  setFirewall(id: string, rules: FirewallRule[]): void {
    this.firewalls.set(id, rules);
  }

  /** Process ids still running (a test asserts this is empty after close). */
  pids(): number[] {
    return [...this.#vms.values()].map((v) => v.child.pid).filter((p): p is number => p !== undefined && pidExists(p));
  }

  /** Kill everything (afterAll safety net). */
  async stopAll(): Promise<void> {
    for (const [, v] of this.#vms) {
      if (v.child.pid !== undefined) {
        try {
          process.kill(-v.child.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      await rm(v.root, { recursive: true, force: true });
    }
    this.#vms.clear();
  }
}

