/**
 * Security.fromFiles / fromPem: every validation error, the role fallback rule, and that no
 * error echoes key material. Bad inputs are minted with our own generator (dates) or the
 * openssl CLI (RSA-1024, encrypted keys, traditional key format, intermediates).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as util from 'node:util';
import { execFileSync } from 'node:child_process';
import { Security, type SecurityPemOptions, type TlsRole } from '../../src/security';
import { createCa, issueLeaf, validityWindow } from '../../src/security/generate';
import { SecurityError, ValidationError, type ErrorCode } from '../../src/errors';
import { have, openssl } from '../helpers/prereq';

const DAY = 24 * 60 * 60 * 1000;
let tmp: string;

/** Material of a temporary() Security, read back through tlsFiles (the only way keys come out). */
interface Material {
  ca: string;
  cert: Record<TlsRole, string>;
  key: Record<TlsRole, string>;
}
function material(sec: Security): Material {
  const m: Material = { ca: sec.caCertPem, cert: {} as Record<TlsRole, string>, key: {} as Record<TlsRole, string> };
  for (const role of ['scheduler', 'worker', 'client'] as const) {
    const files = sec.tlsFiles(role, '/x');
    m.cert[role] = files.find((f) => f.path === `/x/${role}.pem`)!.content;
    m.key[role] = files.find((f) => f.path === `/x/${role}.key`)!.content;
  }
  return m;
}

function write(name: string, content: string): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, content, { mode: 0o600 });
  return p;
}

/** Runs `fn`, expects a SecurityError with `code`, returns it for further checks. */
function expectSecurityError(fn: () => unknown, code: ErrorCode): SecurityError {
  try {
    fn();
  } catch (err) {
    expect(SecurityError.isInstance(err), `expected SecurityError, got ${String(err)}`).toBe(true);
    expect((err as SecurityError).code, (err as Error).message).toBe(code);
    return err as SecurityError;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}

/** Base64 lines of a PEM body: none of them may appear in any message. */
function bodyLines(pem: string): string[] {
  return pem.split('\n').filter((l) => l !== '' && !l.startsWith('-----'));
}
function expectNoKeyIn(text: string, keyPem: string): void {
  for (const line of bodyLines(keyPem)) expect(text).not.toContain(line.slice(0, 40));
}

let good: Material;
let other: Material;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-sec-val-'));
  good = material(await Security.temporary({ clusterName: 'good' }));
  other = material(await Security.temporary({ clusterName: 'other' }));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const pemOpts = (m: Material, extra: Partial<SecurityPemOptions> = {}): SecurityPemOptions => ({
  tlsCa: m.ca,
  tlsClientCert: m.cert.client,
  tlsClientKey: m.key.client,
  ...extra,
});

describe('valid material', () => {
  it('fromPem accepts what temporary() minted and keeps the settings', () => {
    const sec = Security.fromPem({
      tlsCa: good.ca,
      tlsClientCert: good.cert.client,
      tlsClientKey: good.key.client,
      tlsSchedulerCert: good.cert.scheduler,
      tlsSchedulerKey: good.key.scheduler,
      tlsWorkerCert: good.cert.worker,
      tlsWorkerKey: good.key.worker,
      requireEncryption: false,
      tlsMinVersion: 'TLSv1.2',
      tlsMaxVersion: '1.3',
      tlsCiphers: 'ECDHE-ECDSA-AES128-GCM-SHA256',
    });
    expect(sec.generated).toBe(false);
    expect(sec.requireEncryption).toBe(false);
    expect(sec.tlsMinVersion).toBe('1.2');
    expect(sec.tlsMaxVersion).toBe('1.3');
    expect(sec.tlsCiphers).toBe('ECDHE-ECDSA-AES128-GCM-SHA256');
    for (const role of ['scheduler', 'worker', 'client'] as const) {
      expect(sec.hasRole(role)).toBe(true);
      expect(sec.certPem(role)).toBe(good.cert[role]);
    }
  });

  it('fromFiles accepts the same material from files, requireEncryption defaults to true', () => {
    const sec = Security.fromFiles({
      tlsCaFile: write('ok-ca.pem', good.ca),
      tlsClientCert: write('ok-client.pem', good.cert.client),
      tlsClientKey: write('ok-client.key', good.key.client),
    });
    expect(sec.requireEncryption).toBe(true);
    expect(sec.tlsMinVersion).toBeUndefined();
    expect(sec.caCertPem).toBe(good.ca);
  });

  it('accepts certificate and key in one file with the key option omitted', () => {
    const combined = write('combined.pem', good.cert.worker + good.key.worker);
    const sec = Security.fromFiles({ tlsCaFile: write('ca2.pem', good.ca), tlsWorkerCert: combined });
    expect(sec.hasRole('worker')).toBe(true);
    const files = sec.tlsFiles('worker', '/etc/dask');
    // Split into the usual two files: the cert file carries no key.
    expect(files.find((f) => f.path.endsWith('worker.pem'))!.content).not.toContain('PRIVATE KEY');
    expect(files.find((f) => f.path.endsWith('worker.key'))!.content).toBe(good.key.worker);
  });

  it('accepts CRLF line endings', () => {
    const crlf = (s: string) => s.replace(/\n/g, '\r\n');
    const sec = Security.fromPem({ tlsCa: crlf(good.ca), tlsClientCert: crlf(good.cert.client), tlsClientKey: crlf(good.key.client) });
    expect(sec.certPem('client')).toBe(good.cert.client);
  });

  it('never keeps a private key found in the CA file', () => {
    const sec = Security.fromPem(pemOpts(good, { tlsCa: good.ca + good.key.scheduler }));
    expect(sec.caCertPem).not.toContain('PRIVATE KEY');
    const all = (['scheduler', 'worker', 'client'] as const).flatMap((r) => sec.tlsFiles(r, '/d'));
    expect(all.find((f) => f.path === '/d/ca.pem')!.content).not.toContain('PRIVATE KEY');
  });
});

describe('role fallback', () => {
  it('roles without their own material use the client pair', () => {
    const sec = Security.fromPem(pemOpts(good));
    expect(sec.hasRole('client')).toBe(true);
    expect(sec.hasRole('scheduler')).toBe(false);
    expect(sec.hasRole('worker')).toBe(false);
    expect(sec.certPem('scheduler')).toBe(good.cert.client);
    expect(sec.certPem('worker')).toBe(good.cert.client);
    expect(sec.tlsFiles('worker', '/d').find((f) => f.mode === '0600')!.content).toBe(good.key.client);
    expect((sec.toJSON() as { roles: Record<string, { source: string }> }).roles.worker.source).toBe('client');
  });

  it('without client material the client uses the scheduler pair, then the worker pair', () => {
    const both = Security.fromPem({
      tlsCa: good.ca,
      tlsSchedulerCert: good.cert.scheduler,
      tlsSchedulerKey: good.key.scheduler,
      tlsWorkerCert: good.cert.worker,
      tlsWorkerKey: good.key.worker,
    });
    expect(both.hasRole('client')).toBe(false);
    expect(both.certPem('client')).toBe(good.cert.scheduler);
    expect(both.certPem('worker')).toBe(good.cert.worker);
    expect(both.clientTlsOptions().key).toBe(good.key.scheduler);

    const workerOnly = Security.fromPem({ tlsCa: good.ca, tlsWorkerCert: good.cert.worker, tlsWorkerKey: good.key.worker });
    for (const role of ['scheduler', 'worker', 'client'] as const) expect(workerOnly.certPem(role)).toBe(good.cert.worker);
    expect(workerOnly.hasRole('worker')).toBe(true);
    expect(workerOnly.hasRole('scheduler')).toBe(false);
  });
});

describe('E_PEM_FILE', () => {
  it('names the option and the path of a missing file', () => {
    const missing = path.join(tmp, 'nope', 'ca.pem');
    const err = expectSecurityError(() => Security.fromFiles({ tlsCaFile: missing, tlsClientCert: 'x', tlsClientKey: 'y' }), 'E_PEM_FILE');
    expect(err.message).toContain('tlsCaFile');
    expect(err.message).toContain(missing);
    expect(err.message).toContain('ENOENT');
  });

  it('names the failing role option', () => {
    const missing = path.join(tmp, 'missing-client.key');
    const err = expectSecurityError(
      () => Security.fromFiles({ tlsCaFile: write('ca3.pem', good.ca), tlsClientCert: write('c3.pem', good.cert.client), tlsClientKey: missing }),
      'E_PEM_FILE',
    );
    expect(err.message).toContain('tlsClientKey');
    expect(err.message).toContain(missing);
  });

  it('refuses a directory, a device and an unreadable file', () => {
    expectSecurityError(() => Security.fromFiles({ tlsCaFile: tmp, tlsClientCert: 'x' }), 'E_PEM_FILE');
    // A device would never finish reading.
    expectSecurityError(() => Security.fromFiles({ tlsCaFile: '/dev/zero', tlsClientCert: 'x' }), 'E_PEM_FILE');
    if (process.getuid?.() !== 0) {
      const p = write('unreadable.pem', good.ca);
      fs.chmodSync(p, 0o000);
      expectSecurityError(() => Security.fromFiles({ tlsCaFile: p, tlsClientCert: 'x' }), 'E_PEM_FILE');
    }
  });
});

describe('E_PEM_INVALID', () => {
  it('refuses text that is not PEM', () => {
    const err = expectSecurityError(
      () => Security.fromFiles({ tlsCaFile: write('garbage.pem', 'hello world\n'), tlsClientCert: write('c5.pem', good.cert.client), tlsClientKey: write('c5.key', good.key.client) }),
      'E_PEM_INVALID',
    );
    expect(err.message).toContain('tlsCaFile');
    expect(err.message).toContain('garbage.pem');
    expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsClientCert: good.key.client })), 'E_PEM_INVALID');
    expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsClientKey: good.cert.client })), 'E_PEM_INVALID');
  });

  it('refuses a corrupt certificate block', () => {
    const broken = good.cert.client.replace(/\n[A-Za-z0-9+/]{10}/, '\nAAAAAAAAAA');
    expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsClientCert: broken })), 'E_PEM_INVALID');
  });

  it('refuses a CA file holding a leaf certificate', () => {
    const err = expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsCa: good.cert.scheduler })), 'E_PEM_INVALID');
    expect(err.message).toMatch(/not a CA certificate/);
  });

  it('refuses a corrupt key without echoing it', () => {
    const lines = good.key.client.split('\n');
    // Keep it base64 but break the DER inside.
    lines[1] = `AAAA${lines[1].slice(4)}`;
    const corrupt = lines.join('\n');
    const keyFile = write('corrupt.key', corrupt);
    const err = expectSecurityError(
      () => Security.fromFiles({ tlsCaFile: write('ca4.pem', good.ca), tlsClientCert: write('c4.pem', good.cert.client), tlsClientKey: keyFile }),
      'E_PEM_INVALID',
    );
    expect(err.message).toContain('tlsClientKey');
    expect(err.message).toContain(keyFile);
    expect(err.cause).toBeUndefined();
    for (const text of [err.message, err.stack ?? '', JSON.stringify(err), util.inspect(err, { depth: 10 })]) expectNoKeyIn(text, corrupt);
  });

  it('refuses two keys in one file', () => {
    expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsClientKey: good.key.client + good.key.worker })), 'E_PEM_INVALID');
  });
});

describe('E_KEY_MISMATCH', () => {
  it('refuses a key that does not belong to the certificate, without echoing the key', () => {
    const err = expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsClientKey: good.key.worker })), 'E_KEY_MISMATCH');
    expect(err.message).toContain('tlsClientKey');
    expect(err.message).toContain('dask-cloud client good');
    for (const text of [err.message, JSON.stringify(err), util.inspect(err)]) {
      expectNoKeyIn(text, good.key.worker);
      expectNoKeyIn(text, good.key.client);
    }
  });

  it('refuses a combined file whose key is another role’s', () => {
    expectSecurityError(
      () => Security.fromPem({ tlsCa: good.ca, tlsSchedulerCert: good.cert.scheduler + good.key.client }),
      'E_KEY_MISMATCH',
    );
  });
});

describe('E_CERT_NOT_ISSUED_BY_CA', () => {
  it('refuses a certificate from another CA', () => {
    const err = expectSecurityError(
      () => Security.fromPem({ tlsCa: good.ca, tlsClientCert: other.cert.client, tlsClientKey: other.key.client }),
      'E_CERT_NOT_ISSUED_BY_CA',
    );
    expect(err.message).toContain('dask-cloud CA other');
  });

  it('refuses a certificate whose issuer name matches but whose signature does not', async () => {
    // Same subject name as good's CA, different key: only the signature check can tell.
    const now = Date.now();
    const opts = { keyAlgorithm: 'ecdsa-p256' as const, validity: validityWindow(1, 5, now), clusterName: 'good' };
    const impostor = await createCa(opts);
    const leaf = await issueLeaf(impostor, 'client', opts);
    expectSecurityError(() => Security.fromPem({ tlsCa: good.ca, tlsClientCert: leaf.certPem, tlsClientKey: leaf.keyPem }), 'E_CERT_NOT_ISSUED_BY_CA');
  });
});

describe('certificate dates', () => {
  it('E_CERT_EXPIRED for an expired leaf, saying the dates', async () => {
    const now = Date.now();
    const ca = await createCa({ keyAlgorithm: 'ecdsa-p256', validity: { notBefore: new Date(now - 10 * DAY), notAfter: new Date(now + DAY) } });
    const expiry = new Date(Math.floor((now - 2 * DAY) / 1000) * 1000);
    const leaf = await issueLeaf(ca, 'client', { keyAlgorithm: 'ecdsa-p256', validity: { notBefore: new Date(now - 9 * DAY), notAfter: expiry } });
    const err = expectSecurityError(() => Security.fromPem({ tlsCa: ca.certPem, tlsClientCert: leaf.certPem, tlsClientKey: leaf.keyPem }), 'E_CERT_EXPIRED');
    expect(err.message).toContain(expiry.toISOString());
    expect(err.message).toContain('tlsClientCert');
  });

  it('E_CERT_NOT_YET_VALID for a leaf from the future, saying the dates', async () => {
    const now = Date.now();
    const ca = await createCa({ keyAlgorithm: 'ecdsa-p256', validity: validityWindow(10, 5, now) });
    const start = new Date(Math.floor((now + 2 * DAY) / 1000) * 1000);
    const leaf = await issueLeaf(ca, 'scheduler', { keyAlgorithm: 'ecdsa-p256', validity: { notBefore: start, notAfter: new Date(now + 5 * DAY) } });
    const err = expectSecurityError(
      () => Security.fromPem({ tlsCa: ca.certPem, tlsSchedulerCert: leaf.certPem, tlsSchedulerKey: leaf.keyPem }),
      'E_CERT_NOT_YET_VALID',
    );
    expect(err.message).toContain(start.toISOString());
  });

  it('E_CERT_EXPIRED for an expired CA', async () => {
    const now = Date.now();
    const validity = { notBefore: new Date(now - 10 * DAY), notAfter: new Date(now - DAY) };
    const ca = await createCa({ keyAlgorithm: 'ecdsa-p256', validity });
    const leaf = await issueLeaf(ca, 'client', { keyAlgorithm: 'ecdsa-p256', validity: validityWindow(1, 5, now) });
    const err = expectSecurityError(() => Security.fromPem({ tlsCa: ca.certPem, tlsClientCert: leaf.certPem, tlsClientKey: leaf.keyPem }), 'E_CERT_EXPIRED');
    expect(err.message).toContain('tlsCa');
  });
});

describe('TLS settings', () => {
  it('E_TLS_VERSION for versions below 1.2, unknown ones and min > max', () => {
    for (const v of ['1.1', '1.0', 'TLSv1', 'TLSv1.1', 'SSLv3', '1']) {
      const err = expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsMinVersion: v })), 'E_TLS_VERSION');
      expect(err.message).toMatch(/below TLS 1\.2/);
    }
    expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsMinVersion: '2.0' })), 'E_TLS_VERSION');
    expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsMaxVersion: 'TLSv1.1' })), 'E_TLS_VERSION');
    expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsMinVersion: '1.3', tlsMaxVersion: '1.2' })), 'E_TLS_VERSION');
  });

  it('accepts the spellings of 1.2 and 1.3', () => {
    for (const [given, want] of [['1.2', '1.2'], ['TLSv1.2', '1.2'], ['tlsv1.3', '1.3'], ['TLSv1_3', '1.3']] as const) {
      expect(Security.fromPem(pemOpts(good, { tlsMinVersion: given })).tlsMinVersion).toBe(want);
    }
  });

  it('E_TLS_CIPHERS for strings OpenSSL (or Dask) cannot use', () => {
    expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsCiphers: 'NOT-A-CIPHER' })), 'E_TLS_CIPHERS');
    expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsCiphers: '' })), 'E_TLS_CIPHERS');
    // Python's set_ciphers refuses a string naming only TLS 1.3 suites.
    expectSecurityError(() => Security.fromPem(pemOpts(good, { tlsCiphers: 'TLS_AES_128_GCM_SHA256' })), 'E_TLS_CIPHERS');
    expect(Security.fromPem(pemOpts(good, { tlsCiphers: 'ECDHE+AESGCM:!aNULL' })).tlsCiphers).toBe('ECDHE+AESGCM:!aNULL');
  });

  it('ValidationError for a non-boolean requireEncryption', () => {
    expect(() => Security.fromPem(pemOpts(good, { requireEncryption: 'yes' as unknown as boolean }))).toThrow(ValidationError);
  });
});

describe('E_SECURITY_INCOMPLETE', () => {
  it('refuses a CA without any certificate/key pair', () => {
    const err = expectSecurityError(() => Security.fromPem({ tlsCa: good.ca }), 'E_SECURITY_INCOMPLETE');
    expect(err.message).toContain('tlsClientCert');
    expectSecurityError(() => Security.fromFiles({ tlsCaFile: write('only-ca.pem', good.ca) }), 'E_SECURITY_INCOMPLETE');
  });

  it('refuses a missing CA, a certificate without key and a key without certificate', () => {
    expectSecurityError(() => Security.fromPem({ tlsClientCert: good.cert.client, tlsClientKey: good.key.client } as SecurityPemOptions), 'E_SECURITY_INCOMPLETE');
    const err = expectSecurityError(() => Security.fromPem({ tlsCa: good.ca, tlsClientCert: good.cert.client }), 'E_SECURITY_INCOMPLETE');
    expect(err.message).toContain('tlsClientKey');
    expectSecurityError(() => Security.fromPem({ tlsCa: good.ca, tlsWorkerKey: good.key.worker }), 'E_SECURITY_INCOMPLETE');
  });

  it('names the other factory when its option is passed by mistake', () => {
    expect(() => Security.fromPem({ tlsCaFile: 'ca.pem' } as unknown as SecurityPemOptions)).toThrow(/tlsCaFile is for Security.fromFiles/);
    expect(() => Security.fromPem({ ...pemOpts(good), tlsClientCrt: 'x' } as unknown as SecurityPemOptions)).toThrow(ValidationError);
  });
});

describe('material made by the openssl CLI', () => {
  let dir: string;
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
  const haveOpenssl = have(openssl());

  beforeAll(() => {
    if (!haveOpenssl) return;
    dir = path.join(tmp, 'openssl');
    fs.mkdirSync(dir);
    fs.writeFileSync(
      path.join(dir, 'ext.cnf'),
      [
        '[ca]',
        'basicConstraints=critical,CA:TRUE',
        'keyUsage=critical,keyCertSign,cRLSign',
        'subjectKeyIdentifier=hash',
        '[leaf]',
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth,clientAuth',
        'subjectKeyIdentifier=hash',
        'authorityKeyIdentifier=keyid',
        '[server_only]',
        'basicConstraints=critical,CA:FALSE',
        'extendedKeyUsage=serverAuth',
        '[client_only]',
        'basicConstraints=critical,CA:FALSE',
        'extendedKeyUsage=clientAuth',
        '[any_usage]',
        'basicConstraints=critical,CA:FALSE',
        'extendedKeyUsage=anyExtendedKeyUsage',
        '[no_eku]',
        'basicConstraints=critical,CA:FALSE',
        '',
      ].join('\n'),
    );
    run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'root.key', '-out', 'root.pem', '-subj', '/CN=openssl root', '-days', '2',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    const leaf = (name: string, bits: number, signer: string, ext: string) => {
      run('req', '-newkey', `rsa:${bits}`, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
      run('x509', '-req', '-in', `${name}.csr`, '-CA', `${signer}.pem`, '-CAkey', `${signer}.key`, '-CAcreateserial', '-days', '1',
        '-extfile', 'ext.cnf', '-extensions', ext, '-out', `${name}.pem`);
    };
    leaf('small', 1024, 'root', 'leaf');
    leaf('normal', 2048, 'root', 'leaf');
    leaf('inter', 2048, 'root', 'ca');
    leaf('deep', 2048, 'inter', 'leaf');
    leaf('serveronly', 2048, 'root', 'server_only');
    leaf('clientonly', 2048, 'root', 'client_only');
    leaf('anyusage', 2048, 'root', 'any_usage');
    leaf('noeku', 2048, 'root', 'no_eku');
    run('pkey', '-in', 'normal.key', '-traditional', '-out', 'normal.rsa.key');
    run('pkey', '-in', 'normal.key', '-aes256', '-passout', 'pass:secret', '-out', 'normal.enc.key');
  });
  const f = (name: string) => path.join(dir, name);

  it('accepts an openssl-made RSA pair, PKCS#8 and traditional key format', ({ skip }) => {
    if (!haveOpenssl) skip();
    for (const key of ['normal.key', 'normal.rsa.key']) {
      const sec = Security.fromFiles({ tlsCaFile: f('root.pem'), tlsClientCert: f('normal.pem'), tlsClientKey: f(key) });
      expect(sec.certPem('client')).toContain('BEGIN CERTIFICATE');
    }
  });

  it('E_KEY_TOO_SMALL for an RSA-1024 key', ({ skip }) => {
    if (!haveOpenssl) skip();
    const err = expectSecurityError(
      () => Security.fromFiles({ tlsCaFile: f('root.pem'), tlsClientCert: f('small.pem'), tlsClientKey: f('small.key') }),
      'E_KEY_TOO_SMALL',
    );
    expect(err.message).toContain('1024');
  });

  it('E_CERT_USAGE when a leaf\'s extendedKeyUsage does not cover its role, also for a borrowed pair', ({ skip }) => {
    if (!haveOpenssl) skip();
    const pair = (name: string) => ({ cert: f(`${name}.pem`), key: f(`${name}.key`) });
    const roles = (m: Partial<Record<'client' | 'scheduler' | 'worker', { cert: string; key: string }>>) =>
      Security.fromFiles({
        tlsCaFile: f('root.pem'),
        ...(m.client && { tlsClientCert: m.client.cert, tlsClientKey: m.client.key }),
        ...(m.scheduler && { tlsSchedulerCert: m.scheduler.cert, tlsSchedulerKey: m.scheduler.key }),
        ...(m.worker && { tlsWorkerCert: m.worker.cert, tlsWorkerKey: m.worker.key }),
      });
    // A client-only leaf is right for the client, with servers of their own.
    expect(roles({ client: pair('clientonly'), scheduler: pair('normal'), worker: pair('normal') }).hasRole('client')).toBe(true);
    // ...but not for a scheduler, which must also accept connections.
    let err = expectSecurityError(() => roles({ client: pair('normal'), scheduler: pair('clientonly'), worker: pair('normal') }), 'E_CERT_USAGE');
    expect(err.message).toContain('tlsSchedulerCert');
    expect(err.message).toMatch(/does not allow serverAuth, which the scheduler needs/);
    expect(err.details).toMatchObject({ option: 'tlsSchedulerCert', role: 'scheduler', missing: ['serverAuth'] });
    // A server-only worker cannot dial the scheduler or its peers.
    err = expectSecurityError(() => roles({ client: pair('normal'), scheduler: pair('normal'), worker: pair('serveronly') }), 'E_CERT_USAGE');
    expect(err.details).toMatchObject({ role: 'worker', missing: ['clientAuth'] });
    // One client-only pair for every role: the scheduler borrowing it is refused, and told why.
    err = expectSecurityError(() => roles({ client: pair('clientonly') }), 'E_CERT_USAGE');
    expect(err.message).toMatch(/borrows the client's pair/);
    expect(err.details).toMatchObject({ option: 'tlsClientCert' });
    // anyExtendedKeyUsage, or no extension at all, allows every role.
    for (const name of ['anyusage', 'noeku']) expect(roles({ client: pair(name) }).certPem('worker')).toContain('BEGIN CERTIFICATE');
  });

  it('E_PEM_INVALID for an encrypted key, without echoing it', ({ skip }) => {
    if (!haveOpenssl) skip();
    const err = expectSecurityError(
      () => Security.fromFiles({ tlsCaFile: f('root.pem'), tlsClientCert: f('normal.pem'), tlsClientKey: f('normal.enc.key') }),
      'E_PEM_INVALID',
    );
    expect(err.message).toMatch(/encrypted/);
    expectNoKeyIn(err.message, fs.readFileSync(f('normal.enc.key'), 'utf8'));
  });

  it('follows intermediates given after the leaf, and refuses a leaf whose intermediate is missing', ({ skip }) => {
    if (!haveOpenssl) skip();
    const chain = write('deep-chain.pem', fs.readFileSync(f('deep.pem'), 'utf8') + fs.readFileSync(f('inter.pem'), 'utf8'));
    const sec = Security.fromFiles({ tlsCaFile: f('root.pem'), tlsWorkerCert: chain, tlsWorkerKey: f('deep.key') });
    expect(sec.certPem('worker').match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expectSecurityError(
      () => Security.fromFiles({ tlsCaFile: f('root.pem'), tlsWorkerCert: f('deep.pem'), tlsWorkerKey: f('deep.key') }),
      'E_CERT_NOT_ISSUED_BY_CA',
    );
  });
});
