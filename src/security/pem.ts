/**
 * Reading and checking user-supplied PEM material with Node's native crypto
 * (`X509Certificate`, `createPrivateKey`).
 *
 * Rule for every message built here: it may name an option, a path, a subject, a date or an
 * OpenSSL error code, and never quotes file content: a key that fails to parse must not end up in
 * a log through its error.
 */
import * as fs from 'node:fs';
import type { X509Certificate, KeyObject } from 'node:crypto';
import { loadCrypto } from '../lazy';
import { SecurityError } from '../errors';

/** Where a piece of PEM text came from, for error messages: the option and, for files, the path. */
export interface PemSource {
  option: string;
  path?: string;
  text: string;
}

export function describe(src: Pick<PemSource, 'option' | 'path'>): string {
  return src.path === undefined ? src.option : `${src.option} (${src.path})`;
}

function details(src: Pick<PemSource, 'option' | 'path'>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return src.path === undefined ? { option: src.option, ...extra } : { option: src.option, path: src.path, ...extra };
}

const MAX_PEM_FILE_BYTES = 1 << 20;

/** Read a PEM file named by an option; unreadable → `E_PEM_FILE` naming option and path. */
export function readPemFile(option: string, path: unknown): PemSource {
  if (typeof path !== 'string' || path === '') {
    throw new SecurityError('E_PEM_FILE', `${option} must be a path to a PEM file`, { details: { option } });
  }
  let text: string;
  try {
    // A path to a device or a huge file would hang or exhaust memory; PEM material is a few KB.
    const st = fs.statSync(path);
    if (st.isFile() && st.size > MAX_PEM_FILE_BYTES) {
      throw new SecurityError('E_PEM_INVALID', `${option}: ${path} is ${st.size} bytes, too large to be PEM material`, { details: { option, path } });
    }
    if (!st.isFile()) {
      throw new SecurityError('E_PEM_FILE', `${option}: ${path} is not a regular file`, { details: { option, path } });
    }
    text = fs.readFileSync(path, 'utf8');
  } catch (err) {
    if (SecurityError.isInstance(err)) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new SecurityError('E_PEM_FILE', `${option}: cannot read ${path} (${code})`, { details: { option, path, errno: code } });
  }
  return { option, path, text };
}

interface PemBlock {
  label: string;
  /** The whole block, normalised to `\n` line ends, ending with a newline. */
  pem: string;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;

function blocks(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK)) {
    const body = m[2].replace(/\r\n/g, '\n');
    out.push({ label: m[1], pem: `-----BEGIN ${m[1]}-----\n${body.endsWith('\n') ? body : `${body}\n`}-----END ${m[1]}-----\n` });
  }
  return out;
}

const KEY_LABELS = new Set(['PRIVATE KEY', 'RSA PRIVATE KEY', 'EC PRIVATE KEY', 'DSA PRIVATE KEY', 'ENCRYPTED PRIVATE KEY']);

export interface ParsedCert {
  cert: X509Certificate;
  pem: string;
}

function subjectOf(cert: X509Certificate): string {
  return cert.subject.replace(/\n/g, ', ');
}

/** All certificates in `src`, in order; none → `E_PEM_INVALID`. */
export function parseCertificates(src: PemSource): ParsedCert[] {
  const found = blocks(src.text).filter((b) => b.label === 'CERTIFICATE');
  if (found.length === 0) {
    throw new SecurityError('E_PEM_INVALID', `${describe(src)} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`, {
      details: details(src),
    });
  }
  return found.map((b, i) => {
    try {
      return { cert: new (loadCrypto().X509Certificate)(b.pem), pem: b.pem };
    } catch (err) {
      throw new SecurityError('E_PEM_INVALID', `${describe(src)}: certificate #${i + 1} is not a valid X.509 certificate (${codeOf(err)})`, {
        details: details(src),
      });
    }
  });
}

function codeOf(err: unknown): string {
  const e = err as { code?: unknown; reason?: unknown };
  // Only the code/reason: Node's messages are generic today, but the rule is never to risk echoing input.
  if (typeof e.code === 'string') return e.code;
  if (typeof e.reason === 'string') return e.reason;
  return 'parse error';
}

/** Whether `src` holds a private-key block (used for "certificate and key in one file"). */
export function hasPrivateKey(src: PemSource): boolean {
  return blocks(src.text).some((b) => KEY_LABELS.has(b.label));
}

export interface ParsedKey {
  key: KeyObject;
  /** The key block as given (normalised line ends). */
  pem: string;
}

/** The one private key in `src`; missing, several, encrypted or unparsable → `E_PEM_INVALID`. */
export function parsePrivateKey(src: PemSource): ParsedKey {
  const found = blocks(src.text).filter((b) => KEY_LABELS.has(b.label));
  if (found.length === 0) {
    throw new SecurityError('E_PEM_INVALID', `${describe(src)} holds no PEM private key (-----BEGIN PRIVATE KEY-----)`, {
      details: details(src),
    });
  }
  if (found.length > 1) {
    throw new SecurityError('E_PEM_INVALID', `${describe(src)} holds ${found.length} private keys; give exactly one`, { details: details(src) });
  }
  const block = found[0];
  if (block.label === 'ENCRYPTED PRIVATE KEY' || /^Proc-Type:\s*4,ENCRYPTED/m.test(block.pem)) {
    throw new SecurityError(
      'E_PEM_INVALID',
      `${describe(src)} holds an encrypted private key, which Dask cannot load unattended: decrypt it (openssl pkey -in KEY -out KEY.plain)`,
      { details: details(src) },
    );
  }
  try {
    return { key: loadCrypto().createPrivateKey({ key: block.pem, format: 'pem' }), pem: block.pem };
  } catch (err) {
    // No `cause`: the original error object is deliberately not attached.
    throw new SecurityError('E_PEM_INVALID', `${describe(src)}: the private key cannot be parsed (${codeOf(err)})`, {
      details: details(src),
    });
  }
}

/** Refuse RSA/DSA keys under 2048 bits and EC curves under 224 bits. */
export function checkKeySize(key: KeyObject, what: string): void {
  const d = key.asymmetricKeyDetails ?? {};
  const type = key.asymmetricKeyType;
  if ((type === 'rsa' || type === 'rsa-pss' || type === 'dsa') && d.modulusLength !== undefined && d.modulusLength < 2048) {
    throw new SecurityError('E_KEY_TOO_SMALL', `${what} uses a ${d.modulusLength}-bit ${type.toUpperCase()} key; at least 2048 bits are required`, {
      details: { bits: d.modulusLength, type },
    });
  }
  if (type === 'ec' && d.namedCurve !== undefined && /^(secp(112|128|160|192)|prime192|sect1|c2pnb1|c2tnb1)/.test(d.namedCurve)) {
    throw new SecurityError('E_KEY_TOO_SMALL', `${what} uses the weak EC curve ${d.namedCurve}; use P-256 or larger`, {
      details: { curve: d.namedCurve, type },
    });
  }
}

/** `validFrom`/`validTo` as Dates (Node 20 has no `validFromDate`). */
export function validity(cert: X509Certificate): { notBefore: Date; notAfter: Date } {
  return { notBefore: new Date(cert.validFrom), notAfter: new Date(cert.validTo) };
}

/** Expired → `E_CERT_EXPIRED`, not yet valid → `E_CERT_NOT_YET_VALID`; both say the dates. */
export function checkDates(cert: X509Certificate, what: string, now = new Date()): void {
  const { notBefore, notAfter } = validity(cert);
  if (now.getTime() > notAfter.getTime()) {
    throw new SecurityError(
      'E_CERT_EXPIRED',
      `${what} (subject ${subjectOf(cert)}) expired on ${notAfter.toISOString()} (valid from ${notBefore.toISOString()}; now ${now.toISOString()})`,
      { details: { notBefore: notBefore.toISOString(), notAfter: notAfter.toISOString() } },
    );
  }
  if (now.getTime() < notBefore.getTime()) {
    throw new SecurityError(
      'E_CERT_NOT_YET_VALID',
      `${what} (subject ${subjectOf(cert)}) is not valid before ${notBefore.toISOString()} (now ${now.toISOString()}): check the clock of the machine that made it`,
      { details: { notBefore: notBefore.toISOString(), notAfter: notAfter.toISOString() } },
    );
  }
}

/** True when `issuer` signed `cert` (names/key ids match and the signature verifies). */
export function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

export { subjectOf };
