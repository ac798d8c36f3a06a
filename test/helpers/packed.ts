/**
 * The package as `npm pack` makes it, built in a private copy of the sources so that the
 * project's own dist/ (which other tests read and rebuild) is never touched while it is built.
 */
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readdir, symlink } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const root = path.resolve(__dirname, '../..');
/** What the build reads: the package's sources and build configuration. */
const SOURCES = ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'config.schema.json', 'scripts/build.mjs', 'src', 'providers', 'cloud-init'];

export const run = promisify(execFile);

/** Builds and packs the package in a temporary directory; returns the tarball's path. */
export async function packPackage(): Promise<{ tarball: string; dir: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dc-pack-'));
  for (const s of SOURCES) {
    await cp(path.join(root, s), path.join(dir, s), { recursive: true, filter: (f) => !f.endsWith('.test.ts') });
  }
  await symlink(path.join(root, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  await run(process.execPath, [path.join(dir, 'scripts/build.mjs')], { cwd: dir, timeout: 240_000 });
  await run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], { cwd: dir, timeout: 120_000 });
  const tgz = (await readdir(dir)).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw new Error('npm pack made no tarball');
  return { tarball: path.join(dir, tgz), dir };
}
