/** Validation of the non-PEM TLS settings: versions, ciphers, require-encryption. */
import { loadTls } from '../lazy';
import { SecurityError, ValidationError } from '../errors';
import type { SecuritySettings, TlsVersion } from './types';
import { DEFAULT_TLS12_CIPHERS } from './ciphers';

export interface ResolvedSettings {
  requireEncryption: boolean;
  tlsMinVersion: TlsVersion | undefined;
  tlsMaxVersion: TlsVersion | undefined;
  tlsCiphers: string | undefined;
}

const OLD_VERSIONS = new Set(['1', '1.0', '1.1', 'ssl2', 'ssl3', 'sslv2', 'sslv3', 'tls1', 'tlsv1', 'tls1.0', 'tlsv1.0', 'tls1.1', 'tlsv1.1', 'tlsv1_1', 'tlsv1_0']);

/**
 * Accepts `'1.2'`, `'1.3'`, `'TLSv1.2'`, `'TLSv1.3'` (any case, `_` for `.`) and the numbers 1.2 and
 * 1.3 (what a Dask YAML config holds). Anything older is refused, as is anything unknown.
 */
export function parseTlsVersion(value: unknown, option: string): TlsVersion | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' && typeof value !== 'number') {
    throw new SecurityError('E_TLS_VERSION', `${option} must be '1.2' or '1.3', got a ${typeof value}`, { details: { option } });
  }
  const text = String(value).trim().toLowerCase().replace('_', '.');
  const bare = text.replace(/^tls\s*v?/, '');
  if (bare === '1.2' || bare === '1.3') return bare;
  if (OLD_VERSIONS.has(text) || OLD_VERSIONS.has(bare)) {
    throw new SecurityError('E_TLS_VERSION', `${option} ${JSON.stringify(value)} is below TLS 1.2, which Dask and dask-cloud do not allow`, {
      details: { option, value: String(value) },
    });
  }
  throw new SecurityError('E_TLS_VERSION', `${option} ${JSON.stringify(value)} is not a TLS version: use '1.2' or '1.3'`, {
    details: { option, value: String(value) },
  });
}

export { DEFAULT_TLS12_CIPHERS };

/**
 * Cipher families every suite the string enables must avoid, each as the OpenSSL rules that
 * remove every suite *outside* the family. Appending them to the caller's string leaves exactly
 * the suites of the family it enabled; OpenSSL refuses an empty list, so a list that still
 * builds means the string enables one. OpenSSL does the expansion (aliases, `+`, `-`, `!`,
 * `ALL`, `COMPLEMENTOFALL`, ...), not a substring match; a family OpenSSL adds later that these
 * rules do not remove is refused too, which is the safe way to be wrong.
 */
const FORBIDDEN_FAMILIES: ReadonlyArray<{ what: string; rest: string }> = [
  // Every suite with encryption is HIGH, MEDIUM or LOW; the others (eNULL) have none.
  { what: 'suites without encryption (eNULL / NULL)', rest: '!HIGH:!MEDIUM:!LOW' },
  // Below HIGH: RC4, 3DES, SEED, IDEA, DES (where the OpenSSL build still has them).
  { what: 'suites with weak encryption (below 128-bit: RC4, 3DES, DES, ...)', rest: '!HIGH' },
  // Every authenticated suite has one of these; the rest (aNULL: ADH, AECDH) authenticate nobody.
  { what: 'suites without authentication (aNULL: ADH, AECDH)', rest: '!aRSA:!aDSS:!aECDSA:!aPSK:!aSRP:!aGOST01:!aGOST12:!aGOST' },
];

/** True when OpenSSL builds a non-empty TLS <= 1.2 suite list from `list`. */
function opensslSelects(list: string): boolean {
  try {
    loadTls().createSecureContext({ ciphers: list });
    return true;
  } catch {
    return false;
  }
}

/**
 * Check an OpenSSL cipher string the way it will be used: Dask passes it to Python's
 * `SSLContext.set_ciphers`, which fails unless it selects at least one TLS 1.2 cipher (TLS 1.3
 * suite names are ignored there), so the TLS 1.3 names are split off before OpenSSL checks the
 * rest. Refused too: a string that enables any suite without encryption, with weak encryption or
 * without authentication, and `@SECLEVEL=0` (which lets OpenSSL negotiate all of those, and tiny keys).
 */
export function parseCiphers(value: unknown, option = 'tlsCiphers'): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || value.trim() === '') {
    throw new SecurityError('E_TLS_CIPHERS', `${option} must be a non-empty OpenSSL cipher string`, { details: { option } });
  }
  const tls12 = value
    .split(':')
    .filter((c) => c !== '' && !c.startsWith('TLS_'))
    .join(':');
  let reason: string | undefined;
  if (value.length > 4096) reason = 'it is longer than any real cipher string';
  else if (tls12 === '') reason = 'it names only TLS 1.3 suites, and Dask can only restrict TLS 1.2 ciphers';
  // OpenSSL reads `@SECLEVEL=n` anywhere a rule may start, even without a separator before it.
  else if ([...value.matchAll(/@SECLEVEL=(\d+)/gi)].some((m) => Number(m[1]) === 0)) {
    reason = '@SECLEVEL=0 lets OpenSSL accept suites without encryption or authentication and keys of any size';
  } else if (!opensslSelects(tls12)) {
    let why = 'unknown error';
    try {
      loadTls().createSecureContext({ ciphers: tls12 });
    } catch (err) {
      why = (err as Error).message;
    }
    reason = `OpenSSL selects no cipher from it (${why})`;
  } else {
    const bad = FORBIDDEN_FAMILIES.find((f) => opensslSelects(`${tls12}:${f.rest}`));
    if (bad) reason = `it enables ${bad.what}; add !aNULL:!eNULL:!MEDIUM:!LOW, or start from the default (${DEFAULT_TLS12_CIPHERS})`;
  }
  if (reason !== undefined) {
    throw new SecurityError('E_TLS_CIPHERS', `${option} ${JSON.stringify(value.slice(0, 200))} is not usable: ${reason}`, {
      details: { option, value: value.slice(0, 200) },
    });
  }
  return value;
}

/** Validate and default the shared settings. `requireEncryption` defaults to true. */
export function resolveSettings(options: SecuritySettings): ResolvedSettings {
  const { requireEncryption } = options;
  if (requireEncryption !== undefined && typeof requireEncryption !== 'boolean') {
    throw new ValidationError(`requireEncryption must be a boolean, got ${typeof requireEncryption}`, { option: 'requireEncryption' });
  }
  const tlsMinVersion = parseTlsVersion(options.tlsMinVersion, 'tlsMinVersion');
  const tlsMaxVersion = parseTlsVersion(options.tlsMaxVersion, 'tlsMaxVersion');
  if (tlsMinVersion !== undefined && tlsMaxVersion !== undefined && Number(tlsMinVersion) > Number(tlsMaxVersion)) {
    throw new SecurityError('E_TLS_VERSION', `tlsMinVersion ${tlsMinVersion} is above tlsMaxVersion ${tlsMaxVersion}`, {
      details: { option: 'tlsMinVersion' },
    });
  }
  return {
    requireEncryption: requireEncryption ?? true,
    tlsMinVersion,
    tlsMaxVersion,
    tlsCiphers: parseCiphers(options.tlsCiphers),
  };
}

/** Node's spelling of a TLS version. */
export function nodeTlsVersion(v: TlsVersion): 'TLSv1.2' | 'TLSv1.3' {
  return v === '1.2' ? 'TLSv1.2' : 'TLSv1.3';
}
