/**
 * Where the measured library comes from: this working tree (default), or a commit extracted with
 * `git archive` (read-only on the repository) into a temporary directory, so that a measurement
 * is of one known version even while the tree is being edited. The child process loads the
 * providers through {@link loadLibrary}; the copy's `node_modules` is a symlink to this
 * repository's (removed with the copy: `rm` does not follow it).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');

export interface LibrarySource {
  /** Directory holding `src/`, `providers/`, `cloud-init/`, `package.json`. */
  root: string;
  /** For the header: `commit abc1234 (subject)` or `working tree at abc1234 (+ modified files)`. */
  description: string;
  /** Removes the extracted copy (nothing for the working tree). */
  dispose(): Promise<void>;
}

function git(args: string[]): string {
  return execFileSync('git', args, { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

export async function librarySource(rev: string | undefined): Promise<LibrarySource> {
  if (rev === undefined) {
    let description = 'working tree';
    try {
      const head = git(['rev-parse', '--short', 'HEAD']);
      // Each line is a status column ("M", " M", "??") and a path; git() trims the first line.
      const dirty = git(['status', '--short', '--', 'src', 'providers', 'cloud-init']).split('\n').filter(Boolean).map((l) => l.trim().replace(/^\S+\s+/, ''));
      description = `working tree at ${head}${dirty.length ? ` with uncommitted changes in ${dirty.join(', ')}` : ' (no uncommitted library changes)'}`;
    } catch {
      // not a git checkout: the description stays generic
    }
    return { root: REPO_ROOT, description, dispose: async () => undefined };
  }
  const sha = git(['rev-parse', '--verify', `${rev}^{commit}`]);
  const subject = git(['log', '-1', '--format=%h %s (%ci)', sha]);
  const root = await mkdtemp(path.join(os.tmpdir(), `dask-cloud-bench-lib-${sha.slice(0, 8)}-`));
  try {
    await new Promise<void>((resolve, reject) => {
      const archive = spawn('git', ['archive', '--format=tar', sha, 'src', 'providers', 'cloud-init', 'package.json'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      const tar = spawn('tar', ['-x', '-C', root], { stdio: ['pipe', 'ignore', 'pipe'] });
      archive.stdout.pipe(tar.stdin);
      let err = '';
      archive.stderr.on('data', (b: Buffer) => (err += b.toString()));
      tar.stderr.on('data', (b: Buffer) => (err += b.toString()));
      let pending = 2;
      const done = (code: number | null) => {
        if (code !== 0) reject(new Error(`extracting ${sha}: ${err.trim() || `exit ${code}`}`));
        else if (--pending === 0) resolve();
      };
      archive.on('close', done);
      tar.on('close', done);
    });
    // Its dependencies: the library's lazy `import()`s resolve by walking up to a node_modules.
    await symlink(path.join(REPO_ROOT, 'node_modules'), path.join(root, 'node_modules'), 'dir');
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
  return { root, description: `commit ${subject}`, dispose: () => rm(root, { recursive: true, force: true }) };
}

/** Loads a module of the library from `root` (e.g. `providers/gcp`), typed as the working tree's. */
export function loadLibrary<T>(root: string, rel: string): T {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(path.join(root, rel)) as T;
}
