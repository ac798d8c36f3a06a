/**
 * Every user-data variant passes the real `cloud-init schema`, uses only real top-level
 * cloud-config keys, and carries no private key other than the VM's own role's key.
 */
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderUserData, VM_PATHS } from '../../src/cloud-init';
import { Security } from '../../src/security';
import { cloudInitSchema, have } from '../helpers/prereq';
import { decode, variants, type SecurityCases, type Variant } from './cloud-init.shared';

const run = promisify(execFile);

/** Top-level keys our templates may use. Each is checked against cloud-init's own schema below. */
const ALLOWED_TOP_LEVEL_KEYS = ['write_files', 'runcmd', 'packages', 'package_update', 'bootcmd'];

/**
 * Reads user-data the way cloud-init does (its YAML loader, its write_files decoding and
 * permission parsing, its runcmd script builder) and reports what it would write and run.
 */
const AS_CLOUD_INIT = `
import base64, json, sys
from cloudinit import util
from cloudinit.config import cc_write_files as wf
cfg = util.load_yaml(sys.stdin.read())
files = []
for f in cfg.get("write_files", []):
    data = wf.extract_contents(f.get("content", ""), wf.canonicalize_extraction(f.get("encoding")))
    if isinstance(data, str):
        data = data.encode()
    files.append({"path": f["path"], "content": base64.b64encode(data).decode(), "mode": wf.decode_perms(f.get("permissions"), 0o644)})
json.dump({"files": files, "runcmd": util.shellify(cfg.get("runcmd", []))}, sys.stdout)
`;

describe.runIf(have(cloudInitSchema()))('cloud-init user-data: schema and secrets', () => {
  let sec: SecurityCases;
  let all: Variant[];
  let tmp: string;

  beforeAll(async () => {
    const [ec, rsa] = await Promise.all([Security.temporary(), Security.temporary({ keyAlgorithm: 'rsa-2048' })]);
    sec = { ec, rsa };
    all = variants(sec);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dask-cloud-init-schema-'));
  });
  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('allow-listed keys are real cloud-config keys (per the installed cloud-init schema)', () => {
    // Top-level keys are the properties of the schema's $defs that its allOf references.
    const schemaFile = execFileSync('/usr/bin/python3', [
      '-c',
      'import cloudinit.config.schema as s, os; print(os.path.join(os.path.dirname(s.__file__), "schemas", "schema-cloud-config-v1.json"))',
    ])
      .toString()
      .trim();
    const schema = JSON.parse(fs.readFileSync(schemaFile, 'utf8'));
    const real = new Set<string>();
    for (const ref of schema.allOf as { $ref: string }[]) {
      const def = schema.$defs[ref.$ref.replace('#/$defs/', '')];
      for (const key of Object.keys(def.properties ?? {})) real.add(key);
    }
    expect(real.size).toBeGreaterThan(50);
    for (const key of ALLOWED_TOP_LEVEL_KEYS) expect(real.has(key), key).toBe(true);
    expect(real.has('write_file')).toBe(false);
  });

  it('every variant validates with `cloud-init schema` and uses only allowed top-level keys', async () => {
    expect(all.length).toBeGreaterThanOrEqual(28);
    const failures: string[] = [];
    // cloud-init takes ~0.3 s per file: a few at a time.
    const queue = [...all];
    const worker = async () => {
      for (let v = queue.shift(); v; v = queue.shift()) {
        const rendered = renderUserData(v.options);
        expect(rendered.text.split('\n')[0], v.name).toBe('#cloud-config');
        const keys = Object.keys(decode(rendered.text).doc);
        for (const key of keys) expect(ALLOWED_TOP_LEVEL_KEYS, `${v.name}: top-level key ${key}`).toContain(key);
        const file = path.join(tmp, `${v.name.replaceAll('/', '_')}.yaml`);
        fs.writeFileSync(file, rendered.text);
        try {
          await run('cloud-init', ['schema', '--config-file', file], { timeout: 30_000 });
        } catch (err) {
          const e = err as { stdout?: string; stderr?: string; message: string };
          failures.push(`${v.name}: ${e.stdout ?? ''}${e.stderr ?? ''}${e.message}`);
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    expect(failures).toEqual([]);
  }, 180_000);

  it("cloud-init's own modules would write exactly our files and modes, and a runcmd script sh can parse", async () => {
    const problems: string[] = [];
    const queue = [...all];
    const worker = async () => {
      for (let v = queue.shift(); v; v = queue.shift()) {
        const rendered = renderUserData(v.options);
        // A file without a permissions line is meant to be 0644: cloud-init's own decode_perms, above, supplies its default.
        const expected = decode(rendered.text).files.map((f) => ({ path: f.path, content: f.content, mode: parseInt((f.permissions as string | undefined) ?? '0644', 8) }));
        const child = execFile('/usr/bin/python3', ['-c', AS_CLOUD_INIT], { timeout: 30_000, maxBuffer: 1 << 24 });
        child.stdin!.end(rendered.text);
        const out = await new Promise<string>((resolve, reject) => {
          let buf = '';
          let err = '';
          child.stdout!.on('data', (d) => (buf += d));
          child.stderr!.on('data', (d) => (err += d));
          child.on('close', (code) => (code === 0 ? resolve(buf) : reject(new Error(`${v.name}: ${err}`))));
        });
        const seen = JSON.parse(out) as { files: { path: string; content: string; mode: number }[]; runcmd: string };
        const got = seen.files.map((f) => ({ ...f, content: Buffer.from(f.content, 'base64').toString('utf8') }));
        try {
          expect(got).toEqual(expected);
          expect(got.find((f) => f.path.endsWith('.key'))?.mode ?? 0o600).toBe(0o600);
          expect(got.find((f) => f.path.endsWith('launch.json'))!.mode).toBe(0o600);
          // Bootstrap commands live in their own script (cloud-init-bootstrap.test.ts runs it), never in runcmd.
          const bootstrap = v.options.bootstrap ?? [];
          const script = got.find((f) => f.path === VM_PATHS.bootstrapScript);
          expect(script ? { content: script.content, mode: script.mode } : undefined).toEqual(
            bootstrap.length > 0 ? { content: `set -eu\n${bootstrap.join('\n')}\n`, mode: 0o700 } : undefined,
          );
          for (const cmd of bootstrap) expect(seen.runcmd).not.toContain(cmd);
          // The Dask unit last, or right before the dashboard terminator's (a TLS scheduler's).
          const units = seen.runcmd.trimEnd().split('\n').filter((l) => l.startsWith(`'systemctl' 'enable'`));
          const terminator = v.options.dashboardTlsPort !== undefined && v.options.security !== false;
          expect(units).toEqual([
            `'systemctl' 'enable' '--now' 'dask-${v.options.role}.service'`,
            ...(terminator ? [`'systemctl' 'enable' '--now' 'dask-dashboard-tls.service'`] : []),
          ]);
          expect(seen.runcmd.trimEnd().split('\n').pop()).toBe(units.at(-1));
        } catch (err) {
          problems.push(`${v.name}: ${(err as Error).message}`);
          continue;
        }
        const script = path.join(tmp, `${v.name.replaceAll('/', '_')}.runcmd.sh`);
        fs.writeFileSync(script, seen.runcmd);
        await run('sh', ['-n', script]).catch((err) => problems.push(`${v.name}: sh -n: ${(err as { stderr: string }).stderr}`));
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    expect(problems).toEqual([]);
  }, 180_000);

  it('cloud-init schema does reject a broken variant (the check is live)', async () => {
    const good = renderUserData({ role: 'worker', security: sec.ec, schedulerAddress: 'tls://10.0.0.2:8786' }).text;
    const broken = good.replace('permissions: "0600"', 'permissions: 0600');
    expect(broken).not.toBe(good);
    const file = path.join(tmp, 'broken.yaml');
    fs.writeFileSync(file, broken);
    await expect(run('cloud-init', ['schema', '--config-file', file])).rejects.toMatchObject({ code: 1 });
  });

  it('no variant carries a private key other than its own role key; never the client key', () => {
    const tlsDir = VM_PATHS.tlsDir;
    const keyOf = (s: Security, role: 'scheduler' | 'worker') => s.tlsFiles(role, tlsDir).find((f) => f.path.endsWith('.key'))!.content;
    const keyBody = (pem: string) => pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
    for (const v of all) {
      const rendered = renderUserData(v.options);
      const { files, runcmd } = decode(rendered.text);
      // Everything a VM can read from its user-data: the raw text, every decoded file, every command.
      const haystack = [rendered.text, ...files.map((f) => f.content), ...runcmd.map((c) => JSON.stringify(c))].join('\n');
      const compact = haystack.replace(/\s+/g, '');
      // PEM blocks as the VM will see them (decoded files and commands; the raw YAML holds the
      // same text JSON-escaped, which the compact probes below cover).
      const decoded = [...files.map((f) => f.content), ...runcmd.map((c) => JSON.stringify(c))].join('\n');
      const blocks = decoded.match(/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----/g) ?? [];
      const security = v.options.security;
      if (security === false) {
        expect(blocks, v.name).toEqual([]);
        expect(files.some((f) => f.path.startsWith(tlsDir)), v.name).toBe(false);
        continue;
      }
      const own = keyOf(security, v.options.role);
      expect(blocks.map((b) => b.trim()), v.name).toEqual([own.trim()]);
      const keyFiles = files.filter((f) => f.content.includes('PRIVATE KEY'));
      expect(keyFiles.map((f) => [f.path, f.permissions]), v.name).toEqual([[`${tlsDir}/${v.options.role}.key`, '0600']]);
      // The probe finds a key that is there (so its absence below means something).
      expect(compact.includes(keyBody(own).slice(56, 96)), v.name).toBe(true);
      const other = v.options.role === 'scheduler' ? 'worker' : 'scheduler';
      // Every key of every Security in play, except this VM's own, must be absent — also as bare base64.
      for (const s of [sec.ec, sec.rsa]) {
        const forbidden = [s.clientTlsOptions().key, keyOf(s, other)];
        if (s !== security) forbidden.push(keyOf(s, v.options.role));
        for (const key of forbidden) {
          // Past the algorithm header (identical for all keys of one type): the secret itself.
          expect(compact.includes(keyBody(key).slice(56, 96)), `${v.name}: a foreign key leaked`).toBe(false);
        }
      }
      expect(haystack).not.toMatch(/CA PRIVATE|ca\.key/i);
    }
  });
});
