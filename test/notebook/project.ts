/**
 * What the notebook and REPL tests share: the built package, and a throw-away project directory
 * in which `dask-cloud` resolves to this checkout as it would after `npm install dask-cloud`.
 *
 * The project's `node_modules/dask-cloud` is a symlink to the repository root, so Node and
 * TypeScript load the package through its own `package.json` (`main`, `types`, `exports`: the
 * built dist/), exactly as a user's project does; its dependencies resolve from the root's
 * node_modules (Node follows the symlink to its real path). Nothing is installed into the
 * repository and nothing is written outside the temporary directory.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

export const root = path.resolve(__dirname, '../..');
/** The notebook kernel's own package (tslab), kept out of the root's dependencies. */
export const notebookPackage = __dirname;

/** Newest modification time under `p` (a file or a directory tree), node_modules skipped. */
function newest(p: string): number {
  if (!existsSync(p)) return 0;
  const st = statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  let max = 0;
  for (const e of readdirSync(p)) if (e !== 'node_modules') max = Math.max(max, newest(path.join(p, e)));
  return max;
}

/** The files `require('dask-cloud')` and TypeScript read first, from the root's package.json. */
function builtEntries(): string[] {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { main?: string; types?: string };
  return [pkg.main, pkg.types].filter((f): f is string => typeof f === 'string').map((f) => path.join(root, f));
}

function distStale(): boolean {
  const entries = builtEntries();
  if (entries.length === 0 || !entries.every(existsSync)) return true;
  const built = Math.min(...entries.map((f) => statSync(f).mtimeMs));
  const sources = ['src', 'providers', 'package.json', 'tsconfig.json', 'tsconfig.build.json', 'scripts/build.mjs'].map((p) => newest(path.join(root, p)));
  return Math.max(...sources) > built;
}

/**
 * Builds the package (`node scripts/build.mjs`) when dist/ is missing or older than its sources.
 * The build empties dist/ first, so test files of this run that build take turns through a lock
 * directory; a lock whose holder is gone is taken over.
 */
export async function ensureBuilt(timeoutMs: number): Promise<void> {
  if (!distStale()) return;
  const lock = path.join(os.tmpdir(), `dask-cloud-build-${Buffer.from(root).toString('hex').slice(-32)}.lock`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await mkdir(lock);
      await writeFile(path.join(lock, 'pid'), String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (!holderAlive(lock)) {
        await rm(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`another build (lock ${lock}) did not finish within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  try {
    // Another test file may have built while this one waited.
    if (distStale()) await promisify(execFile)(process.execPath, [path.join(root, 'scripts/build.mjs')], { cwd: root, timeout: Math.max(1, deadline - Date.now()) });
  } finally {
    await rm(path.join(lock, 'pid'), { force: true });
    await rmdir(lock).catch(() => undefined);
  }
}

function holderAlive(lock: string): boolean {
  let pid: number;
  try {
    pid = Number(readFileSync(path.join(lock, 'pid'), 'utf8'));
  } catch {
    // Just created, pid not written yet: count it as alive.
    return true;
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface TempProject {
  dir: string;
  dispose(): Promise<void>;
}

/**
 * A temporary project: `node_modules/dask-cloud` links to this checkout, each of `links`
 * (package name → directory) is linked beside it, and `files` (relative path → content) are
 * written.
 */
export async function tempProject(prefix: string, links: Record<string, string>, files: Record<string, string> = {}): Promise<TempProject> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  const modules = path.join(dir, 'node_modules');
  for (const [name, target] of Object.entries({ 'dask-cloud': root, ...links })) {
    const at = path.join(modules, name);
    await mkdir(path.dirname(at), { recursive: true });
    await symlink(target, at, 'dir');
  }
  for (const [rel, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
    await writeFile(path.join(dir, rel), content);
  }
  return { dir, dispose: () => rm(dir, { recursive: true, force: true }) };
}
