/**
 * Security.temporary(): what the minted certificates contain, that strict X.509 verification
 * (openssl -x509_strict) accepts them, option checks, and how long generation takes.
 */
import 'reflect-metadata';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { Security, type TlsRole } from '../../src/security';
import { ValidationError } from '../../src/errors';
import { have, openssl } from '../helpers/prereq';

const ROLES: TlsRole[] = ['scheduler', 'worker', 'client'];
const DAY = 24 * 60 * 60 * 1000;
const MINUTE = 60 * 1000;

function keyOf(sec: Security, role: TlsRole): string {
  return sec.tlsFiles(role, '/t').find((f) => f.mode === '0600')!.content;
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-sec-tmp-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('defaults', () => {
  it('mints an ECDSA P-256 CA and leaves valid 3 days, back-dated 5 minutes, requiring encryption', async () => {
    const before = Date.now();
    const sec = await Security.temporary();
    const after = Date.now();
    expect(sec.generated).toBe(true);
    expect(sec.requireEncryption).toBe(true);
    expect(sec.tlsMinVersion).toBeUndefined();
    expect(sec.tlsMaxVersion).toBeUndefined();
    expect(sec.tlsCiphers).toBeUndefined();
    for (const pem of [sec.caCertPem, ...ROLES.map((r) => sec.certPem(r))]) {
      const cert = new X509Certificate(pem);
      const notBefore = new Date(cert.validFrom).getTime();
      const notAfter = new Date(cert.validTo).getTime();
      // One-second resolution in X.509 times.
      expect(notBefore).toBeGreaterThanOrEqual(before - 5 * MINUTE - 1000);
      expect(notBefore).toBeLessThanOrEqual(after - 5 * MINUTE);
      expect(notAfter).toBeGreaterThanOrEqual(before + 3 * DAY - 1000);
      expect(notAfter).toBeLessThanOrEqual(after + 3 * DAY);
      expect(cert.publicKey.asymmetricKeyType).toBe('ec');
      expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    }
    expect(sec.expiresAt.getTime()).toBe(new Date(new X509Certificate(sec.caCertPem).validTo).getTime());
  });

  it('honours validityDays (fractional), backdateMinutes 0 and requireEncryption false', async () => {
    const before = Date.now();
    const sec = await Security.temporary({ validityDays: 0.5, backdateMinutes: 0, requireEncryption: false });
    const cert = new X509Certificate(sec.certPem('worker'));
    expect(new Date(cert.validFrom).getTime()).toBeGreaterThanOrEqual(before - 1000);
    expect(new Date(cert.validTo).getTime() - before).toBeGreaterThan(12 * 60 * MINUTE - 2000);
    expect(new Date(cert.validTo).getTime() - before).toBeLessThan(12 * 60 * MINUTE + 5000);
    expect(sec.requireEncryption).toBe(false);
  });

  it('makes a fresh CA on every call', async () => {
    const [a, b] = await Promise.all([Security.temporary(), Security.temporary()]);
    expect(a.caCertPem).not.toBe(b.caCertPem);
    expect(new X509Certificate(a.certPem('client')).checkIssued(new X509Certificate(b.caCertPem))).toBe(false);
  });

  it('puts clusterName into the subject CNs', async () => {
    const sec = await Security.temporary({ clusterName: 'analytics-7' });
    expect(new X509Certificate(sec.caCertPem).subject).toContain('CN=dask-cloud CA analytics-7');
    expect(new X509Certificate(sec.certPem('scheduler')).subject).toContain('CN=dask-cloud scheduler analytics-7');
  });

  it('takes TLS settings and validates them', async () => {
    const sec = await Security.temporary({ tlsMinVersion: '1.3', tlsCiphers: 'ECDHE+AESGCM' });
    expect(sec.tlsMinVersion).toBe('1.3');
    expect(sec.tlsCiphers).toBe('ECDHE+AESGCM');
    await expect(Security.temporary({ tlsMinVersion: '1.1' as '1.2' })).rejects.toMatchObject({ code: 'E_TLS_VERSION' });
    await expect(Security.temporary({ tlsCiphers: 'nope' })).rejects.toMatchObject({ code: 'E_TLS_CIPHERS' });
  });

  it('refuses bad options with a ValidationError', async () => {
    for (const bad of [
      { validityDays: 0 },
      { validityDays: -1 },
      { validityDays: Number.NaN },
      { validityDays: '3' },
      { backdateMinutes: -1 },
      { keyAlgorithm: 'ed25519' },
      { clusterName: 7 },
      { validity: 3 },
    ]) {
      await expect(Security.temporary(bad as never), JSON.stringify(bad)).rejects.toBeInstanceOf(ValidationError);
    }
    await expect(Security.temporary(null as never)).rejects.toBeInstanceOf(ValidationError);
  });
});

describe('certificate contents', () => {
  for (const keyAlgorithm of ['ecdsa-p256', 'rsa-2048'] as const) {
    it(`${keyAlgorithm}: CA and leaves carry what strict verification needs`, async () => {
      const sec = await Security.temporary({ keyAlgorithm });
      const ca = new x509.X509Certificate(sec.caCertPem);
      const bc = ca.getExtension(x509.BasicConstraintsExtension)!;
      expect(bc.critical).toBe(true);
      expect(bc.ca).toBe(true);
      const caKu = ca.getExtension(x509.KeyUsagesExtension)!;
      expect(caKu.critical).toBe(true);
      expect(caKu.usages & x509.KeyUsageFlags.keyCertSign).toBeTruthy();
      expect(caKu.usages & x509.KeyUsageFlags.cRLSign).toBeTruthy();
      const caSki = ca.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;
      expect(caSki).toMatch(/^[0-9a-f]{40}$/);

      const serials = new Set<string>([ca.serialNumber]);
      for (const role of ROLES) {
        const leaf = new x509.X509Certificate(sec.certPem(role));
        const lbc = leaf.getExtension(x509.BasicConstraintsExtension)!;
        expect(lbc.ca).toBe(false);
        const ku = leaf.getExtension(x509.KeyUsagesExtension)!;
        expect(ku.usages & x509.KeyUsageFlags.digitalSignature).toBeTruthy();
        expect(Boolean(ku.usages & x509.KeyUsageFlags.keyEncipherment)).toBe(keyAlgorithm === 'rsa-2048');
        expect(ku.usages & x509.KeyUsageFlags.keyCertSign).toBeFalsy();
        expect(leaf.getExtension(x509.ExtendedKeyUsageExtension)!.usages).toEqual([
          x509.ExtendedKeyUsage.serverAuth,
          x509.ExtendedKeyUsage.clientAuth,
        ]);
        expect(leaf.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId).toMatch(/^[0-9a-f]{40}$/);
        expect(leaf.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId).toBe(caSki);
        const san = leaf.getExtension(x509.SubjectAlternativeNameExtension)!;
        expect(san.critical).toBe(false);
        expect(san.names.items.map((n) => n.value)).toEqual([`dask-${role}`]);
        // Positive serial: the top bit of the first byte is clear.
        expect(Number.parseInt(leaf.serialNumber.slice(0, 2), 16)).toBeLessThan(0x80);
        serials.add(leaf.serialNumber);

        const native = new X509Certificate(sec.certPem(role));
        expect(native.verify(new X509Certificate(sec.caCertPem).publicKey)).toBe(true);
        const key = createPrivateKey(keyOf(sec, role));
        expect(native.checkPrivateKey(key)).toBe(true);
        if (keyAlgorithm === 'rsa-2048') expect(key.asymmetricKeyDetails?.modulusLength).toBe(2048);
        else expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
      }
      expect(serials.size).toBe(4);
    });
  }

  it('ships one key per role, each its own, none of them the CA key', async () => {
    const sec = await Security.temporary();
    const ca = new X509Certificate(sec.caCertPem);
    const keys = ROLES.map((r) => keyOf(sec, r));
    expect(new Set(keys).size).toBe(3);
    for (const [i, role] of ROLES.entries()) {
      const files = sec.tlsFiles(role, '/t');
      expect(files.filter((f) => f.content.includes('PRIVATE KEY'))).toHaveLength(1);
      expect(new X509Certificate(sec.certPem(role)).checkPrivateKey(createPrivateKey(keys[i]))).toBe(true);
      expect(ca.checkPrivateKey(createPrivateKey(keys[i]))).toBe(false);
    }
    // Nothing reachable on the instance is a key object.
    for (const value of Object.values(sec)) expect(String(value?.constructor?.name)).not.toMatch(/Key/);
  });
});

describe('openssl verify -x509_strict', () => {
  for (const keyAlgorithm of ['ecdsa-p256', 'rsa-2048'] as const) {
    it(`accepts every ${keyAlgorithm} leaf for TLS server and client use`, async ({ skip }) => {
      if (!have(openssl())) skip();
      const sec = await Security.temporary({ keyAlgorithm });
      const dir = fs.mkdtempSync(path.join(tmp, `${keyAlgorithm}-`));
      fs.writeFileSync(path.join(dir, 'ca.pem'), sec.caCertPem);
      for (const role of ROLES) {
        const leaf = path.join(dir, `${role}.pem`);
        fs.writeFileSync(leaf, sec.certPem(role));
        for (const purpose of ['sslserver', 'sslclient']) {
          const out = execFileSync('openssl', ['verify', '-x509_strict', '-purpose', purpose, '-CAfile', path.join(dir, 'ca.pem'), leaf], {
            encoding: 'utf8',
            timeout: 30_000,
          });
          expect(out.trim()).toBe(`${leaf}: OK`);
        }
      }
      // The CA itself passes as a trust anchor under strict checks too.
      const out = execFileSync('openssl', ['verify', '-x509_strict', '-check_ss_sig', '-CAfile', path.join(dir, 'ca.pem'), path.join(dir, 'ca.pem')], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(out).toContain(': OK');
    });
  }

  it('is a live check: it refuses what lax verification accepts (a CA whose basicConstraints is not critical)', ({ skip }) => {
    if (!have(openssl())) skip();
    const dir = fs.mkdtempSync(path.join(tmp, 'lax-'));
    const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', timeout: 30_000, stdio: 'pipe' });
    fs.writeFileSync(path.join(dir, 'ext.cnf'), '[leaf]\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n');
    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem',
      '-subj', '/CN=lax ca', '-days', '1', '-addext', 'basicConstraints=CA:TRUE', '-addext', 'keyUsage=keyCertSign');
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=leaf');
    run('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1',
      '-extfile', 'ext.cnf', '-extensions', 'leaf', '-out', 'leaf.pem');
    expect(run('verify', '-CAfile', 'ca.pem', 'leaf.pem').trim()).toBe('leaf.pem: OK');
    const strict = (() => {
      try {
        return run('verify', '-x509_strict', '-CAfile', 'ca.pem', 'leaf.pem');
      } catch (err) {
        return String((err as { stdout?: string }).stdout ?? '') + String((err as { stderr?: string }).stderr ?? '');
      }
    })();
    expect(strict).not.toMatch(/leaf\.pem: OK/);
    expect(strict).toMatch(/Basic Constraints of CA cert not marked critical/);
  });
});
// Generation speed is measured by bench/run.ts (`npm run bench temporary`), not by a timed test.

