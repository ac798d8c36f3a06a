/**
 * cloud-init/dashboard-tls.py as a file that ships in user-data: the copy with full-line comments
 * and blank lines stripped (how launch.py ships) still compiles and runs; it imports nothing but
 * the standard library and uses no syntax newer than Python 3.9 (parsed with feature_version);
 * its header documents every flag it accepts; its size stays small for EC2's 16 KB user-data.
 * What it does on the wire: test/e2e/dashboard-tunnel.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { have, type Prereq } from '../helpers/prereq';

const SCRIPT = path.resolve(__dirname, '..', '..', 'cloud-init', 'dashboard-tls.py');
const source = fs.readFileSync(SCRIPT, 'utf8');

/** The shipped form: what src/cloud-init's stripComments does to launch.py. */
const stripped = source
  .split('\n')
  .filter((line) => line.trim() !== '' && !/^\s*#/.test(line))
  .join('\n')
  .concat('\n');

function findPython(): string | null {
  for (const p of ['/usr/bin/python3', 'python3']) {
    if (spawnSync(p, ['-c', 'import sys; assert sys.version_info >= (3, 9)'], { stdio: 'ignore', timeout: 30_000 }).status === 0) return p;
  }
  return null;
}
const python = findPython();
const pythonPrereq: Prereq = { ok: python !== null, reason: 'no Python 3.9+ on this machine; install it with `apt-get install -y python3`' };
const enabled = have(pythonPrereq);

describe.skipIf(!enabled)('dashboard-tls.py as shipped', () => {
  it('still compiles and runs with comments and blank lines stripped', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-terminator-'));
    try {
      const file = path.join(dir, 'dashboard-tls.py');
      fs.writeFileSync(file, stripped);
      const help = execFileSync(python!, [file, '--help'], { encoding: 'utf8', timeout: 30_000 });
      expect(help).toMatch(/usage: dashboard-tls/);
      // Required files missing: a message and exit 2, not a traceback.
      const run = spawnSync(python!, [file, '--ca', path.join(dir, 'no-ca.pem'), '--cert', path.join(dir, 'c.pem'), '--key', path.join(dir, 'c.key')], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(run.status).toBe(2);
      expect(run.stderr).toMatch(/^dashboard-tls: --ca .*no-ca\.pem: no such file\n$/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('imports only the standard library and parses as Python 3.9', () => {
    const check = `
import ast, sys
tree = ast.parse(sys.stdin.read(), feature_version=(3, 9))
names = set()
for node in ast.walk(tree):
    if isinstance(node, ast.Import):
        names.update(a.name.split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom):
        names.add((node.module or "").split(".")[0])
std = getattr(sys, "stdlib_module_names", None)
print(" ".join(sorted(n for n in names if std is not None and n not in std)))
print(" ".join(sorted(names)))
`;
    const out = execFileSync(python!, ['-c', check], { input: stripped, encoding: 'utf8', timeout: 30_000 }).split('\n');
    expect(out[0]).toBe(''); // nothing outside the standard library (sys.stdlib_module_names, 3.10+)
    expect(out[1].split(' ').sort()).toEqual(['argparse', 'errno', 'os', 'select', 'signal', 'socket', 'ssl', 'sys', 'threading', 'time']);
  });

  it('documents every flag it accepts in its header', () => {
    const header = source.split('\n').filter((l) => l.startsWith('#')).join('\n');
    const flags = [...source.matchAll(/p\.add_argument\("(--[a-z-]+)"/g)].map((m) => m[1]);
    expect(flags.length).toBeGreaterThanOrEqual(10);
    for (const flag of flags) expect(header, flag).toMatch(new RegExp(`#   ${flag} `));
  });

  it('stays small: the shipped copy under 12 KB, under 4 KB gzipped', () => {
    const bytes = Buffer.byteLength(stripped);
    const gz = gzipSync(stripped, { level: 9 }).length;
    // eslint-disable-next-line no-console
    console.log(`[dashboard-tls.py] source ${Buffer.byteLength(source)} B, shipped ${bytes} B, gzipped ${gz} B`);
    expect(bytes).toBeLessThan(12 * 1024);
    expect(gz).toBeLessThan(4 * 1024);
  });
});
