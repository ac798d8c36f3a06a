/**
 * What a Security hands out: tlsFiles, env, flags, daskConfig, clientTlsOptions,
 * writeClientConfig; and what it never hands out: key material in JSON, inspect or logs.
 * Dask's own config loader (real Python) reads the env vars and the written dask.yaml.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import * as util from 'node:util';
import { execFileSync } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import YAML from 'yaml';
import { DEFAULT_TLS12_CIPHERS, Security, type TlsRole } from '../../src/security';
import { ValidationError } from '../../src/errors';
import { have, pythonWithDask, realDask } from '../helpers/prereq';

const ROLES: TlsRole[] = ['scheduler', 'worker', 'client'];
let sec: Security;
let tmp: string;
const keys = {} as Record<TlsRole, string>;

beforeAll(async () => {
  sec = await Security.temporary({ clusterName: 'out' });
  for (const role of ROLES) keys[role] = sec.tlsFiles(role, '/k').find((f) => f.path === `/k/${role}.key`)!.content;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-sec-out-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** No line of any key body may appear in `text`. */
function expectNoKeys(text: string): void {
  expect(text).not.toMatch(/PRIVATE KEY/);
  for (const role of ROLES) {
    for (const line of keys[role].split('\n').filter((l) => l && !l.startsWith('-----'))) expect(text).not.toContain(line.slice(0, 32));
  }
}

describe('tlsFiles', () => {
  it('lays out ca.pem, <role>.pem (0644) and only that role’s key (0600)', () => {
    for (const role of ROLES) {
      const files = sec.tlsFiles(role, '/etc/dask/tls');
      expect(files.map((f) => [f.path, f.mode])).toEqual([
        ['/etc/dask/tls/ca.pem', '0644'],
        [`/etc/dask/tls/${role}.pem`, '0644'],
        [`/etc/dask/tls/${role}.key`, '0600'],
      ]);
      expect(files[0].content).toBe(sec.caCertPem);
      expect(files[1].content).toBe(sec.certPem(role));
      const all = files.map((f) => f.content).join('');
      for (const otherRole of ROLES.filter((r) => r !== role)) expect(all).not.toContain(keys[otherRole]);
      expect(all.match(/PRIVATE KEY-----/g)).toHaveLength(2); // BEGIN + END of exactly one key
    }
  });

  it('refuses an unknown role or an empty directory', () => {
    expect(() => sec.tlsFiles('nanny' as TlsRole, '/d')).toThrow(ValidationError);
    expect(() => sec.env('worker', '')).toThrow(ValidationError);
  });
});

describe('env, flags, daskConfig', () => {
  it('env points Dask at the tlsFiles paths', () => {
    expect(sec.env('worker', '/opt/tls')).toEqual({
      DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION: 'True',
      DASK_DISTRIBUTED__COMM__TLS__CA_FILE: '/opt/tls/ca.pem',
      DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT: '/opt/tls/worker.pem',
      DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY: '/opt/tls/worker.key',
      // Always explicit: Python's own default still allows CBC suites under TLS 1.2.
      DASK_DISTRIBUTED__COMM__TLS__CIPHERS: DEFAULT_TLS12_CIPHERS,
    });
  });

  it('env carries versions only when set, and the caller\'s ciphers instead of the default', async () => {
    const s = await Security.temporary({ requireEncryption: false, tlsMinVersion: '1.2', tlsMaxVersion: '1.3', tlsCiphers: 'ECDHE+AESGCM' });
    expect(s.env('scheduler', '/t')).toEqual({
      DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION: 'False',
      DASK_DISTRIBUTED__COMM__TLS__CA_FILE: '/t/ca.pem',
      DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT: '/t/scheduler.pem',
      DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY: '/t/scheduler.key',
      DASK_DISTRIBUTED__COMM__TLS__MIN_VERSION: '1.2',
      DASK_DISTRIBUTED__COMM__TLS__MAX_VERSION: '1.3',
      DASK_DISTRIBUTED__COMM__TLS__CIPHERS: 'ECDHE+AESGCM',
    });
  });

  it('flags are the dask CLI TLS options', () => {
    expect(sec.flags('scheduler', '/t')).toEqual(['--tls-ca-file', '/t/ca.pem', '--tls-cert', '/t/scheduler.pem', '--tls-key', '/t/scheduler.key']);
  });

  it('daskConfig nests like dask.yaml, with numeric versions and the scheduler address', async () => {
    expect(sec.daskConfig('client', '/c')).toEqual({
      distributed: {
        comm: { 'require-encryption': true, tls: { 'ca-file': '/c/ca.pem', client: { cert: '/c/client.pem', key: '/c/client.key' }, ciphers: DEFAULT_TLS12_CIPHERS } },
      },
    });
    const s = await Security.temporary({ tlsMinVersion: '1.3', tlsCiphers: 'ECDHE+AESGCM' });
    expect(s.daskConfig('worker', '/w', { schedulerAddress: 'tls://10.0.0.2:8786' })).toEqual({
      distributed: {
        comm: {
          'require-encryption': true,
          tls: { 'ca-file': '/w/ca.pem', worker: { cert: '/w/worker.pem', key: '/w/worker.key' }, 'min-version': 1.3, ciphers: 'ECDHE+AESGCM' },
        },
      },
      'scheduler-address': 'tls://10.0.0.2:8786',
    });
    expect(() => s.daskConfig('client', '/c', { schedulerAddress: 'tcp://10.0.0.2:8786' })).toThrow(ValidationError);
  });

  it('Dask itself reads the env into its Security and builds TLS contexts from the files', async ({ skip }) => {
    if (!have(realDask())) skip();
    const s = await Security.temporary({ tlsMinVersion: '1.3', tlsCiphers: 'ECDHE+AESGCM' });
    const dir = fs.mkdtempSync(path.join(tmp, 'env-'));
    for (const f of s.tlsFiles('scheduler', dir)) fs.writeFileSync(f.path, f.content, { mode: Number.parseInt(f.mode, 8) });
    const script = [
      'import json, ssl',
      'from distributed.security import Security',
      's = Security()',
      "ctx = s.get_listen_args('scheduler')['ssl_context']",
      "print(json.dumps({'ca': s.tls_ca_file, 'cert': s.tls_scheduler_cert, 'key': s.tls_scheduler_key,",
      "  'req': s.require_encryption, 'min': s.tls_min_version.name, 'ciphers': s.tls_ciphers, 'ctxmin': ctx.minimum_version.name}))",
    ].join('\n');
    const out = execFileSync(pythonWithDask()!, ['-c', script], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: fs.mkdtempSync(path.join(tmp, 'home-')), ...s.env('scheduler', dir) },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(JSON.parse(out.trim().split('\n').pop()!)).toEqual({
      ca: `${dir}/ca.pem`,
      cert: `${dir}/scheduler.pem`,
      key: `${dir}/scheduler.key`,
      req: true,
      min: 'TLSv1_3',
      ciphers: 'ECDHE+AESGCM',
      ctxmin: 'TLSv1_3',
    });
  });
});

describe('clientTlsOptions', () => {
  it('has CA, client cert and key and the AEAD-only ciphers, and omits unset versions', () => {
    const o = sec.clientTlsOptions();
    expect(Object.keys(o).sort()).toEqual(['ca', 'cert', 'ciphers', 'key']);
    expect(o.ciphers).toBe(DEFAULT_TLS12_CIPHERS);
    expect(o.ca).toBe(sec.caCertPem);
    expect(o.cert).toBe(sec.certPem('client'));
    expect(o.key).toBe(keys.client);
  });

  it('maps versions to Node spellings and passes ciphers through', async () => {
    const s = await Security.temporary({ tlsMinVersion: '1.3', tlsMaxVersion: '1.3', tlsCiphers: 'ECDHE+AESGCM' });
    const o = s.clientTlsOptions();
    expect(o.minVersion).toBe('TLSv1.3');
    expect(o.maxVersion).toBe('TLSv1.3');
    expect(o.ciphers).toBe('ECDHE+AESGCM');
  });

  for (const settings of [{}, { tlsMinVersion: '1.3' as const, tlsCiphers: 'ECDHE+AESGCM' }, { tlsMaxVersion: '1.2' as const }]) {
    it(`mutual TLS handshake with a Node server holding the scheduler cert (${JSON.stringify(settings)})`, async () => {
      const s = await Security.temporary(settings);
      const files = s.tlsFiles('scheduler', '/s');
      const server = tls.createServer({
        ca: s.caCertPem,
        cert: s.certPem('scheduler'),
        key: files[2].content,
        requestCert: true,
        rejectUnauthorized: true,
      });
      const seen = new Promise<{ authorized: boolean; cn: string; protocol: string | null }>((resolve) => {
        server.on('secureConnection', (sock) => {
          resolve({ authorized: sock.authorized, cn: String(sock.getPeerCertificate().subject?.CN), protocol: sock.getProtocol() });
          sock.end();
        });
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      try {
        const { port } = server.address() as AddressInfo;
        const sock = tls.connect({ host: '127.0.0.1', port, ...s.clientTlsOptions(), checkServerIdentity: () => undefined });
        await new Promise<void>((resolve, reject) => {
          sock.once('secureConnect', resolve);
          sock.once('error', reject);
          setTimeout(() => reject(new Error('handshake timeout')), 10_000).unref();
        });
        expect(sock.authorized).toBe(true);
        const peer = await seen;
        sock.destroy();
        expect(peer.authorized).toBe(true);
        expect(peer.cn).toBe('dask-cloud client');
        if (settings.tlsMinVersion === '1.3') expect(peer.protocol).toBe('TLSv1.3');
        if ('tlsMaxVersion' in settings) expect(peer.protocol).toBe('TLSv1.2');
      } finally {
        server.close();
      }
    });
  }
});

describe('redaction', () => {
  it('JSON.stringify, util.inspect and String() show no key material', () => {
    const json = JSON.stringify(sec);
    expectNoKeys(json);
    expect(JSON.parse(json)).toMatchObject({ generated: true, requireEncryption: true, roles: { client: { source: 'client' } } });
    expectNoKeys(util.inspect(sec));
    expectNoKeys(util.inspect(sec, { showHidden: true, depth: Infinity, getters: true }));
    expectNoKeys(util.format('%o %O %j %s', sec, sec, sec, sec));
    expectNoKeys(String(sec));
    expectNoKeys(JSON.stringify({ nested: { sec } }));
    expect(util.inspect(sec)).toMatch(/^Security \{/);
  });

  it('enumerable properties hold no key material', () => {
    expectNoKeys(JSON.stringify(Object.getOwnPropertyNames(sec).map((k) => (sec as unknown as Record<string, unknown>)[k])));
    expectNoKeys(JSON.stringify(structuredClone({ ...sec })));
    expect(Object.isFrozen(sec)).toBe(true);
  });

  it('console.log of a Security prints no key material', () => {
    const chunks: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string | Uint8Array) => {
      chunks.push(String(chunk));
      return true;
    }) as typeof process.stdout.write;
    try {
      // eslint-disable-next-line no-console
      console.log(sec, { sec });
    } finally {
      process.stdout.write = write;
    }
    expectNoKeys(chunks.join(''));
  });
});

describe('writeClientConfig', () => {
  it('writes a 0700 dir with a 0600 key whatever the umask, and a dask.yaml pointing at the files', async () => {
    const old = process.umask(0);
    try {
      const dir = path.join(tmp, 'client-a', 'nested');
      const res = await sec.writeClientConfig(dir, { schedulerAddress: 'tls://127.0.0.1:8786' });
      expect(res).toEqual({
        dir,
        caFile: path.join(dir, 'ca.pem'),
        certFile: path.join(dir, 'client.pem'),
        keyFile: path.join(dir, 'client.key'),
        configFile: path.join(dir, 'dask.yaml'),
      });
      const mode = (p: string) => fs.statSync(p).mode & 0o777;
      expect(mode(dir)).toBe(0o700);
      expect(mode(res.keyFile)).toBe(0o600);
      expect(mode(res.caFile)).toBe(0o644);
      expect(mode(res.certFile)).toBe(0o644);
      expect(fs.readFileSync(res.keyFile, 'utf8')).toBe(keys.client);
      const yaml = fs.readFileSync(res.configFile, 'utf8');
      expectNoKeys(yaml);
      expect(YAML.parse(yaml)).toEqual({
        distributed: {
          comm: { 'require-encryption': true, tls: { 'ca-file': res.caFile, client: { cert: res.certFile, key: res.keyFile }, ciphers: DEFAULT_TLS12_CIPHERS } },
        },
        'scheduler-address': 'tls://127.0.0.1:8786',
      });
    } finally {
      process.umask(old);
    }
  });

  it("leaves an existing directory's mode alone, replaces a loose key file with a 0600 one, and resolves relative paths", async () => {
    const dir = path.join(tmp, 'client-b');
    fs.mkdirSync(dir, { mode: 0o755 });
    fs.chmodSync(dir, 0o755);
    fs.writeFileSync(path.join(dir, 'client.key'), 'old', { mode: 0o666 });
    fs.chmodSync(path.join(dir, 'client.key'), 0o666);
    const res = await sec.writeClientConfig(path.relative(process.cwd(), dir));
    expect(res.dir).toBe(dir);
    // Never chmods a directory it did not create (test/unit/client-config.test.ts has the rules).
    expect(fs.statSync(dir).mode & 0o777).toBe(0o755);
    expect(fs.statSync(res.keyFile).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(res.keyFile, 'utf8')).toBe(keys.client);
    expect(YAML.parse(fs.readFileSync(res.configFile, 'utf8'))['scheduler-address']).toBeUndefined();
  });

  it('Dask loads it through DASK_CONFIG alone', async ({ skip }) => {
    if (!have(realDask())) skip();
    const s = await Security.temporary({ tlsMinVersion: '1.2', tlsMaxVersion: '1.3' });
    const res = await s.writeClientConfig(path.join(tmp, 'client-c'), { schedulerAddress: 'tls://127.0.0.1:8786' });
    const script = [
      'import json, dask',
      'from distributed.security import Security',
      's = Security()',
      "ctx = s.get_connection_args('client')['ssl_context']",
      "print(json.dumps({'addr': dask.config.get('scheduler-address'), 'cert': s.tls_client_cert, 'key': s.tls_client_key,",
      "  'ca': s.tls_ca_file, 'req': s.require_encryption, 'max': s.tls_max_version.name, 'ctx': ctx is not None}))",
    ].join('\n');
    const out = execFileSync(pythonWithDask()!, ['-c', script], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: fs.mkdtempSync(path.join(tmp, 'home-')), DASK_CONFIG: res.dir },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(JSON.parse(out.trim().split('\n').pop()!)).toEqual({
      addr: 'tls://127.0.0.1:8786',
      cert: res.certFile,
      key: res.keyFile,
      ca: res.caFile,
      req: true,
      max: 'TLSv1_3',
      ctx: true,
    });
  });

  it('refuses a tcp:// scheduler address', async () => {
    await expect(sec.writeClientConfig(path.join(tmp, 'client-d'), { schedulerAddress: 'tcp://127.0.0.1:8786' })).rejects.toBeInstanceOf(ValidationError);
  });
});
