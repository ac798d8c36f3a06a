/**
 * Writing the client's credentials to disk without handing them to anyone else.
 *
 * The rules (README, "writeClientConfig"):
 * - the directory itself must not be a symbolic link, and an existing one must be a directory
 *   owned by the current user that neither group nor others can write (they could swap the CA
 *   or the config); one others can read or enter is used, with a warning (the key file is 0600);
 * - a directory it creates (and missing parents) is created 0700; an existing directory's mode
 *   is never changed;
 * - each file is written to a fresh temporary file (O_CREAT|O_EXCL|O_NOFOLLOW, its final mode
 *   set before any content, fsynced) and renamed over the target, so a reader never sees half a
 *   file and a planted symbolic link is refused, never followed;
 * - every failure (a path under /proc, a read-only file system, no permission) is a
 *   ValidationError naming the path and the errno, at once.
 */
import { loadCrypto } from '../lazy';
import { constants as fsConstants, type Stats } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { ValidationError } from '../errors';

export interface PrivateFile {
  /** File name inside the directory (no separators). */
  name: string;
  content: string;
  /** Permission bits, e.g. 0o600; set explicitly, whatever the umask. */
  mode: number;
}

const O_NOFOLLOW = fsConstants.O_NOFOLLOW ?? 0;
const O_DIRECTORY = fsConstants.O_DIRECTORY ?? 0;
/** Deepest path we walk up when creating missing parents (PATH_MAX / 2). */
const MAX_DEPTH = 2048;

function fail(dir: string, message: string, errno?: string, cause?: unknown): never {
  throw new ValidationError(`cannot write the client config to ${dir}: ${message}`, {
    option: 'dir',
    cause,
    details: { path: dir, ...(errno === undefined ? {} : { errno }) },
  });
}

function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException)?.code ?? 'error';
}

async function lstatOrUndefined(p: string, dir: string): Promise<Stats | undefined> {
  try {
    return await fs.lstat(p);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    return fail(dir, `cannot look at ${p} (${errnoOf(err)})`, errnoOf(err), err);
  }
}

function currentUid(): number | undefined {
  return typeof process.getuid === 'function' ? process.getuid() : undefined;
}

/** An existing directory: used as it is, or refused; its mode is never changed. */
function checkExisting(dir: string, st: Stats): void {
  if (st.isSymbolicLink()) {
    fail(dir, 'it is a symbolic link, which is never followed (another user could point it anywhere): pass the real directory');
  }
  if (!st.isDirectory()) fail(dir, 'it exists and is not a directory', 'ENOTDIR');
  const uid = currentUid();
  if (uid !== undefined && st.uid !== uid) {
    fail(dir, `it belongs to uid ${st.uid}, not to you (uid ${uid}): its owner could read or replace the credentials. Use a directory of your own`);
  }
  const mode = st.mode & 0o777;
  if (mode & 0o022) {
    fail(
      dir,
      `group or others can write to it (mode ${mode.toString(8).padStart(4, '0')}), so they could replace the CA or the config: chmod go-w it, or use a new directory (created 0700)`,
    );
  }
  if (mode & 0o077) {
    process.emitWarning(
      `${dir} can be listed by group or others (mode ${mode.toString(8).padStart(4, '0')}); the client key is written 0600, but a directory of its own (chmod 700) hides even the names`,
      { code: 'DASK_CLOUD_CLIENT_DIR_MODE' },
    );
  }
}

/** Creates `dir` and any missing parents (0700 each), one level at a time, never following a planted link. */
async function createDir(dir: string): Promise<void> {
  const missing: string[] = [];
  let p = dir;
  for (let depth = 0; ; depth++) {
    if (depth > MAX_DEPTH) fail(dir, 'the path is too deep');
    // Parents may be symbolic links (as with mkdir -p); only the final directory may not.
    let st: Stats | undefined;
    try {
      st = await fs.stat(p);
    } catch (err) {
      const code = errnoOf(err);
      if (code !== 'ENOENT') fail(dir, `cannot look at ${p} (${code})`, code, err);
    }
    if (st) {
      if (!st.isDirectory()) fail(dir, `${p} is not a directory`, 'ENOTDIR');
      break;
    }
    missing.unshift(p);
    const parent = path.dirname(p);
    if (parent === p) break;
    p = parent;
  }
  for (const m of missing) {
    try {
      await fs.mkdir(m, { mode: 0o700 });
    } catch (err) {
      const code = errnoOf(err);
      // Created meanwhile by someone else: the final directory is then checked like any existing one.
      if (code === 'EEXIST') continue;
      fail(dir, `cannot create ${m} (${code})`, code, err);
    }
    // Ours: the umask may have taken bits from 0700 (umask 0277 would leave it unwritable).
    await makePrivate(dir, m);
  }
}

/** chmod 0700 through a descriptor opened without following links, so a swap cannot redirect it. */
async function makePrivate(dir: string, p: string): Promise<void> {
  // Windows has no POSIX modes, and cannot open a directory as a file.
  if (process.platform === 'win32') return;
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(p, fsConstants.O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    await handle.chmod(0o700);
  } catch (err) {
    fail(dir, `cannot make ${p} private (${errnoOf(err)})`, errnoOf(err), err);
  } finally {
    await handle?.close();
  }
}

/**
 * Make sure `dir` is a private directory of ours (see the file comment) and write `files` into
 * it. Returns the absolute directory.
 */
export async function writePrivateFiles(dirInput: string, files: PrivateFile[]): Promise<string> {
  if (typeof dirInput !== 'string' || dirInput === '' || dirInput.includes('\0') || dirInput.length > 4096) {
    throw new ValidationError('dir must be a non-empty path without NUL characters', { option: 'dir' });
  }
  const dir = path.resolve(dirInput);
  const before = await lstatOrUndefined(dir, dir);
  if (before) {
    checkExisting(dir, before);
  } else {
    await createDir(dir);
    const after = await lstatOrUndefined(dir, dir);
    if (!after) fail(dir, 'it vanished right after it was created', 'ENOENT');
    // Someone else's link or directory created in the meantime is refused like any existing one.
    checkExisting(dir, after);
  }

  // Refuse before writing anything, so a refusal leaves no half-written set behind.
  for (const f of files) {
    const target = path.join(dir, f.name);
    const st = await lstatOrUndefined(target, dir);
    if (st?.isSymbolicLink()) fail(dir, `${target} is a symbolic link, which is never followed: remove it`);
    if (st && !st.isFile()) fail(dir, `${target} exists and is not a regular file`);
  }

  const written: Array<{ tmp: string; target: string }> = [];
  try {
    for (const f of files) {
      const tmp = path.join(dir, `.${f.name}.${loadCrypto().randomBytes(6).toString('hex')}.tmp`);
      let handle: fs.FileHandle | undefined;
      try {
        handle = await fs.open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | O_NOFOLLOW, f.mode);
        written.push({ tmp, target: path.join(dir, f.name) });
        // `mode` on open is masked by the umask; restrict before any content is written.
        await handle.chmod(f.mode);
        await handle.writeFile(f.content, 'utf8');
        await handle.sync();
      } catch (err) {
        fail(dir, `cannot write ${path.join(dir, f.name)} (${errnoOf(err)})`, errnoOf(err), err);
      } finally {
        await handle?.close();
      }
    }
    // rename replaces a link planted meanwhile instead of following it.
    for (const w of written) {
      try {
        await fs.rename(w.tmp, w.target);
      } catch (err) {
        fail(dir, `cannot replace ${w.target} (${errnoOf(err)})`, errnoOf(err), err);
      }
    }
    written.length = 0;
  } finally {
    await Promise.all(written.map((w) => fs.rm(w.tmp, { force: true }).catch(() => undefined)));
  }
  // The renames themselves survive a crash only once the directory is synced; best effort.
  try {
    const d = await fs.open(dir, fsConstants.O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // Some file systems cannot fsync a directory; the files themselves are synced.
  }
  return dir;
}
