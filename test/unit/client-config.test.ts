/**
 * writeClientConfig's rules, with real files (Security.writeClientConfig and the security-off
 * path in src/cluster/client-config.ts): a directory it creates is 0700, an existing one keeps
 * its mode and must be a real directory of ours that others cannot write; a symbolic link (the
 * directory or a file in it) is refused and what it points at stays untouched; files are
 * replaced by rename, so a planted hard link never receives the key; an impossible path (under
 * /proc, under a file) is a typed error at once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Security } from '../../src/security';
import { ValidationError } from '../../src/errors';
import { writeClientConfig } from '../../src/cluster/client-config';

const isRoot = process.getuid?.() === 0;
/** The uid of `nobody` on Debian: a user that is not us. */
const OTHER_UID = 65534;

let sec: Security;
let key: string;
let tmp: string;
let n = 0;

beforeAll(async () => {
  sec = await Security.temporary({ clusterName: 'cc' });
  key = sec.tlsFiles('client', '/k').find((f) => f.path.endsWith('client.key'))!.content;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-client-config-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function fresh(prefix: string): string {
  return path.join(tmp, `${prefix}-${n++}`);
}

const mode = (p: string) => fs.lstatSync(p).mode & 0o777;

/** Runs `fn` and returns the ValidationError it rejects with (failing the test otherwise). */
async function refused(fn: () => Promise<unknown>): Promise<ValidationError> {
  const err = await fn().then(
    () => new Error('expected a refusal, but it wrote the files'),
    (e: unknown) => e,
  );
  expect(ValidationError.isInstance(err), String(err)).toBe(true);
  const v = err as ValidationError;
  expect(v.code).toBe('E_INVALID_OPTION');
  expect(v.details.option).toBe('dir');
  return v;
}

/** Warnings with `code` emitted while `fn` runs. */
async function warningsDuring(code: string, fn: () => Promise<unknown>): Promise<string[]> {
  const seen: string[] = [];
  const on = (w: Error & { code?: string }) => {
    if (w.code === code) seen.push(w.message);
  };
  process.on('warning', on);
  try {
    await fn();
    // emitWarning delivers on the next tick.
    await new Promise((r) => setImmediate(r));
  } finally {
    process.off('warning', on);
  }
  return seen;
}

function leftovers(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'));
}

describe('a directory it creates', () => {
  for (const umask of [0o022, 0o277]) {
    it(`is 0700 with its missing parents, files 0600/0644, whatever the umask (${umask.toString(8)})`, async () => {
      const old = process.umask(umask);
      try {
        const parent = fresh('new');
        const dir = path.join(parent, 'nested');
        const res = await sec.writeClientConfig(dir, { schedulerAddress: 'tls://127.0.0.1:8786' });
        expect(res.dir).toBe(dir);
        expect(mode(parent)).toBe(0o700);
        expect(mode(dir)).toBe(0o700);
        expect(mode(res.keyFile)).toBe(0o600);
        expect(mode(res.caFile)).toBe(0o644);
        expect(mode(res.certFile)).toBe(0o644);
        expect(mode(res.configFile)).toBe(0o644);
        expect(fs.readFileSync(res.keyFile, 'utf8')).toBe(key);
        expect(leftovers(dir)).toEqual([]);
      } finally {
        process.umask(old);
      }
    });
  }

  it('security off: only dask.yaml, under the same rules', async () => {
    const dir = fresh('plain');
    const res = await writeClientConfig(false, dir, 'tcp://127.0.0.1:8786');
    expect(res).toEqual({ dir, configFile: path.join(dir, 'dask.yaml') });
    expect(mode(dir)).toBe(0o700);
    expect(fs.readdirSync(dir)).toEqual(['dask.yaml']);
    expect(fs.readFileSync(res.configFile, 'utf8')).toContain('tcp://127.0.0.1:8786');
  });
});

describe('an existing directory', () => {
  it('keeps its mode: 0700 silently, 0750 with a warning (never chmodded)', async () => {
    const quiet = fresh('own');
    fs.mkdirSync(quiet, { mode: 0o700 });
    expect(await warningsDuring('DASK_CLOUD_CLIENT_DIR_MODE', () => sec.writeClientConfig(quiet))).toEqual([]);
    expect(mode(quiet)).toBe(0o700);

    const listed = fresh('listed');
    fs.mkdirSync(listed);
    fs.chmodSync(listed, 0o750);
    const warnings = await warningsDuring('DASK_CLOUD_CLIENT_DIR_MODE', () => sec.writeClientConfig(listed));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('0750');
    expect(mode(listed)).toBe(0o750);
    expect(mode(path.join(listed, 'client.key'))).toBe(0o600);
  });

  it('refuses one that group or others can write, and leaves it as it was', async () => {
    for (const m of [0o770, 0o707, 0o1777]) {
      const dir = fresh('writable');
      fs.mkdirSync(dir);
      fs.chmodSync(dir, m);
      const err = await refused(() => sec.writeClientConfig(dir));
      expect(err.message).toMatch(/group or others can write/);
      expect(fs.lstatSync(dir).mode & 0o7777).toBe(m);
      expect(fs.readdirSync(dir)).toEqual([]);
    }
  });

  it('refuses a directory that is not a directory', async () => {
    const file = fresh('file');
    fs.writeFileSync(file, 'x');
    await refused(() => sec.writeClientConfig(file));
    expect(fs.readFileSync(file, 'utf8')).toBe('x');
  });

  it.runIf(isRoot)('refuses a directory owned by another user, and leaves it as it was', async () => {
    const dir = fresh('theirs');
    fs.mkdirSync(dir);
    fs.chmodSync(dir, 0o755);
    fs.chownSync(dir, OTHER_UID, OTHER_UID);
    const err = await refused(() => sec.writeClientConfig(dir));
    expect(err.message).toMatch(new RegExp(`belongs to uid ${OTHER_UID}`));
    expect(mode(dir)).toBe(0o755);
    expect(fs.lstatSync(dir).uid).toBe(OTHER_UID);
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});

describe('symbolic links are refused, never followed', () => {
  it('the directory itself: its target stays empty and keeps its mode', async () => {
    const target = fresh('real');
    fs.mkdirSync(target);
    fs.chmodSync(target, 0o755);
    const link = fresh('link');
    fs.symlinkSync(target, link);
    const err = await refused(() => sec.writeClientConfig(link));
    expect(err.message).toMatch(/symbolic link/);
    expect(fs.readdirSync(target)).toEqual([]);
    expect(mode(target)).toBe(0o755);
  });

  it('a planted link in place of the key: the victim file is untouched and nothing is written', async () => {
    const dir = fresh('planted');
    fs.mkdirSync(dir, { mode: 0o700 });
    const victim = fresh('victim');
    fs.writeFileSync(victim, 'victim data\n', { mode: 0o644 });
    fs.chmodSync(victim, 0o644);
    fs.symlinkSync(victim, path.join(dir, 'client.key'));
    const err = await refused(() => sec.writeClientConfig(dir));
    expect(err.message).toMatch(/client\.key is a symbolic link/);
    expect(fs.readFileSync(victim, 'utf8')).toBe('victim data\n');
    expect(mode(victim)).toBe(0o644);
    // Refused before any file: no CA or certificate half-written next to the link.
    expect(fs.readdirSync(dir)).toEqual(['client.key']);
  });

  it('a dangling link: nothing appears where it points', async () => {
    const dir = fresh('dangling');
    fs.mkdirSync(dir, { mode: 0o700 });
    const where = fresh('would-be-created');
    fs.symlinkSync(where, path.join(dir, 'dask.yaml'));
    await refused(() => writeClientConfig(false, dir, 'tcp://127.0.0.1:8786'));
    expect(fs.existsSync(where)).toBe(false);
  });

  it('a directory in place of a file is refused too', async () => {
    const dir = fresh('dir-as-file');
    fs.mkdirSync(path.join(dir, 'ca.pem'), { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, 0o700);
    await refused(() => sec.writeClientConfig(dir));
  });
});

describe('files are replaced, not written through', () => {
  it('a hard link to the old key file keeps the old content; the new key file is 0600', async () => {
    const dir = fresh('hardlink');
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.writeFileSync(path.join(dir, 'client.key'), 'old', { mode: 0o666 });
    fs.chmodSync(path.join(dir, 'client.key'), 0o666);
    const outside = path.join(tmp, `outside-${n++}`);
    fs.linkSync(path.join(dir, 'client.key'), outside);
    const res = await sec.writeClientConfig(dir);
    expect(fs.readFileSync(res.keyFile, 'utf8')).toBe(key);
    expect(mode(res.keyFile)).toBe(0o600);
    // Written in place, the key would have reached this file (and whoever planted the link).
    expect(fs.readFileSync(outside, 'utf8')).toBe('old');
    expect(leftovers(dir)).toEqual([]);
  });
});

describe('impossible paths fail at once with a typed error', () => {
  // Each of these used to spin or throw a bare error. A spin would hang here until the test's
  // own timeout; a typed error arrives as soon as the file system answers.
  for (const dir of ['/proc/1/x', '/proc/self/x/y', '/dev/null/x', '/etc/hostname/x']) {
    it(dir, async () => {
      const err = await refused(() => sec.writeClientConfig(dir));
      expect(err.details.errno).toMatch(/^E[A-Z]+$/);
      expect(err.message).toContain(dir);
    });
  }

  it('not a path: empty, NUL, not a string', async () => {
    for (const dir of ['', 'a\0b', 42, ['x'], null]) {
      const err = await sec.writeClientConfig(dir as string).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(ValidationError.isInstance(err), String(dir)).toBe(true);
    }
  });
});

describe('the dashboard link', () => {
  it("is written as distributed.dashboard.link, with security on and off, and a bad one is refused before any file", async () => {
    const { parse } = await import('yaml');
    const link = 'http://127.0.0.1:40123/status';
    const on = await writeClientConfig(sec, fresh('dash-on'), 'tls://127.0.0.1:8786', link);
    expect(parse(fs.readFileSync(on.configFile, 'utf8')).distributed.dashboard).toEqual({ link });
    const off = await writeClientConfig(false, fresh('dash-off'), 'tcp://127.0.0.1:8786', link);
    expect(parse(fs.readFileSync(off.configFile, 'utf8'))).toEqual({ 'scheduler-address': 'tcp://127.0.0.1:8786', distributed: { dashboard: { link } } });
    // No link, no dashboard key.
    const none = await writeClientConfig(sec, fresh('dash-none'), 'tls://127.0.0.1:8786');
    expect(parse(fs.readFileSync(none.configFile, 'utf8')).distributed.dashboard).toBeUndefined();
    for (const bad of ['ftp://x/status', 'http://h:1/{host}', 'http://h :1/', '']) {
      for (const security of [sec, false] as const) {
        const dir = fresh('dash-bad');
        const err = await writeClientConfig(security, dir, security ? 'tls://127.0.0.1:8786' : 'tcp://127.0.0.1:8786', bad).catch((e: unknown) => e);
        expect(ValidationError.isInstance(err) && err.details.option).toBe('dashboardLink');
        expect(fs.existsSync(dir)).toBe(false);
      }
    }
  });
});
