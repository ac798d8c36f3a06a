/**
 * The VM image: the tarball built by scripts/build-vm-image.sh, extracted once into tmpfs as the
 * read-only lower layer every VM's overlay shares. Extractions are keyed by the image's hash and
 * reused by later test files and runs (`tsx test/sim/cleanup.ts --all` frees the memory).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { buildScriptHash, storedBuildHash } from '../helpers/build-hash';
import { SHM_ROOT, STATE_ROOT, ownerAlive, readNetRecord } from './state';
import { SimError, debug, run } from './exec';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const BUILD_SCRIPT = path.join(REPO_ROOT, 'scripts', 'build-vm-image.sh');

/** The image tarball: `DASK_CLOUD_VM_IMAGE` or `.cache/vm-image.tar.gz` in the repository. */
export function imagePath(): string {
  return process.env.DASK_CLOUD_VM_IMAGE ?? path.join(REPO_ROOT, '.cache', 'vm-image.tar.gz');
}

export interface ImageStatus {
  ok: boolean;
  path: string;
  /** Why it cannot be used, and how to build it. */
  reason: string;
}

/** Is the image there and built by the current script? */
export function imageStatus(): ImageStatus {
  const p = imagePath();
  const how = `build it with \`sudo bash scripts/build-vm-image.sh\` (~1 min, needs Debian's mirror)`;
  if (!fs.existsSync(p)) return { ok: false, path: p, reason: `no simulated-VM image at ${p}; ${how}` };
  if (process.env.DASK_CLOUD_VM_IMAGE === undefined) {
    const stored = storedBuildHash(p);
    const current = buildScriptHash(BUILD_SCRIPT);
    if (stored !== current) {
      return { ok: false, path: p, reason: `the image at ${p} was built by another version of build-vm-image.sh; re${how}` };
    }
  }
  return { ok: true, path: p, reason: '' };
}

export interface BaseImage {
  dir: string;
  /** Time spent extracting in this call (0 when an earlier extraction was reused). */
  extractMs: number;
}

/** Extracts the image into tmpfs once (per image content), then reuses it. */
export async function ensureBaseImage(): Promise<BaseImage> {
  const status = imageStatus();
  if (!status.ok) throw new SimError(status.reason);
  const st = fs.statSync(status.path);
  const key = createHash('sha256').update(`${status.path}:${st.size}:${st.mtimeMs}`).digest('hex').slice(0, 16);
  const dir = path.join(SHM_ROOT, `base-${key}`);
  if (fs.existsSync(path.join(dir, 'etc', 'dask-cloud-sim-image'))) return { dir, extractMs: 0 };
  fs.mkdirSync(SHM_ROOT, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  const started = Date.now();
  try {
    await run('tar', ['-C', tmp, '--numeric-owner', '-xzf', status.path], { timeoutMs: 60_000 });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const extractMs = Date.now() - started;
  try {
    fs.renameSync(tmp, dir);
  } catch {
    // Another process finished first: use its copy.
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  debug('base image extracted to %s in %d ms', dir, extractMs);
  // Extractions of other images only hold memory (tmpfs): drop them, unless another live process
  // has a network (another checkout's run, which may boot VMs on its own image at this moment).
  if (!otherLiveNetworks()) {
    for (const d of fs.readdirSync(SHM_ROOT)) {
      if (d.startsWith('base-') && !d.includes('.tmp-') && path.join(SHM_ROOT, d) !== dir) {
        fs.rmSync(path.join(SHM_ROOT, d), { recursive: true, force: true });
      }
    }
  }
  return { dir, extractMs };
}

/** Whether a live process other than this one owns a simulated network. */
function otherLiveNetworks(): boolean {
  let nets: string[] = [];
  try {
    nets = fs.readdirSync(path.join(STATE_ROOT, 'nets'));
  } catch {
    return false;
  }
  return nets.some((net) => {
    const owner = readNetRecord(net)?.owner ?? null;
    return owner !== null && owner.pid !== process.pid && ownerAlive(owner);
  });
}
