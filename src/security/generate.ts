/**
 * Minting of cluster-scoped credentials: one CA and one leaf certificate per role, with
 * `@peculiar/x509` over Node's WebCrypto.
 *
 * Internal module: `Security.temporary()` is the public entry point. The CA key returned by
 * {@link createCa} is only held for as long as the leaves are being signed; `temporary()` drops it.
 * Tests use these functions directly to mint deliberately bad material (expired, not yet valid).
 */
import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { TlsRole } from './types';
import { ROLES, validityWindow, type Validity } from './validity';

export { ROLES, validityWindow, type Validity };

// @peculiar/x509 resolves some internal operations through its default provider, so it must be
// set; every call below also passes the provider explicitly.
// (The project compiles without the DOM lib, so WebCrypto types come from node:crypto's namespace.)
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
const subtle = webcrypto.subtle;
const cryptoImpl = webcrypto as unknown as Parameters<typeof x509.X509CertificateGenerator.create>[1];
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

export type KeyAlgorithm = 'ecdsa-p256' | 'rsa-2048';

const DAY_MS = 24 * 60 * 60 * 1000;
const MINUTE_MS = 60 * 1000;
/** RFC 5280 upper bound for a commonName. */
const MAX_CN = 64;

interface AlgorithmSet {
  generate: webcrypto.EcKeyGenParams | webcrypto.RsaHashedKeyGenParams;
  sign: webcrypto.EcdsaParams | webcrypto.Algorithm;
  leafKeyUsage: x509.KeyUsagesExtension;
}

// Extensions that are the same in every certificate, built once: each construction costs an
// ASN.1 encoding (~0.3 ms), a noticeable share of the generation budget.
const CA_EXTENSIONS = [
  // Strict verification (Python 3.13 default) wants a critical basicConstraints on a CA.
  new x509.BasicConstraintsExtension(true, 0, true),
  new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
];
const LEAF_EXTENSIONS = [
  new x509.BasicConstraintsExtension(false, undefined, true),
  // Every Dask process is both a TLS server and a TLS client (the scheduler dials workers).
  new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
];
const EC_LEAF_KEY_USAGE = new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true);
// RSA key exchange (TLS 1.2 non-ECDHE suites) needs keyEncipherment.
const RSA_LEAF_KEY_USAGE = new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true);
const SAN: Record<TlsRole, x509.SubjectAlternativeNameExtension> = {
  // Dask checks no hostnames, but a SAN is where modern verifiers look for names, and strict
  // verification rejects an empty one.
  scheduler: new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'dask-scheduler' }], false),
  worker: new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'dask-worker' }], false),
  client: new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'dask-client' }], false),
};

function algorithms(keyAlgorithm: KeyAlgorithm): AlgorithmSet {
  if (keyAlgorithm === 'rsa-2048') {
    const rsa = {
      name: 'RSASSA-PKCS1-v1_5',
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: 'SHA-256',
    };
    return {
      generate: rsa,
      sign: rsa,
      leafKeyUsage: RSA_LEAF_KEY_USAGE,
    };
  }
  return {
    generate: { name: 'ECDSA', namedCurve: 'P-256' },
    sign: { name: 'ECDSA', hash: 'SHA-256' },
    leafKeyUsage: EC_LEAF_KEY_USAGE,
  };
}

/** A random, positive, minimally-encoded 128-bit serial number (hex). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  // Clear the sign bit (serials must be positive) and set the next one so the DER encoding has no
  // leading zero byte and the value is never zero.
  bytes[0] = (bytes[0] & 0x7f) | 0x40;
  return bytes.toString('hex');
}

function commonName(base: string, clusterName: string | undefined): string {
  const cn = clusterName === undefined || clusterName === '' ? base : `${base} ${clusterName}`;
  return cn.slice(0, MAX_CN);
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

function certToPem(cert: x509.X509Certificate): string {
  return toPem(cert.rawData, 'CERTIFICATE');
}


/** Validity window starting `backdateMinutes` before now and ending `validityDays` after now. */

/** A CA able to sign leaves. Holds the CA private key: keep it no longer than needed. */
export interface MintedCa {
  certPem: string;
  keyAlgorithm: KeyAlgorithm;
  /** Non-extractable: it can sign, but can never be exported or written anywhere. */
  signingKey: CryptoKey;
  name: x509.Name;
  /** The AKI extension every leaf carries: the CA's key id. */
  authorityKeyId: x509.AuthorityKeyIdentifierExtension;
}

export interface MintOptions {
  keyAlgorithm: KeyAlgorithm;
  validity: Validity;
  clusterName?: string;
}

async function generateKeys(keyAlgorithm: KeyAlgorithm, extractable: boolean): Promise<CryptoKeyPair> {
  const alg = algorithms(keyAlgorithm);
  return (await subtle.generateKey(alg.generate, extractable, ['sign', 'verify'])) as CryptoKeyPair;
}

async function createCaFromKeys(keys: CryptoKeyPair, options: MintOptions): Promise<MintedCa> {
  const alg = algorithms(options.keyAlgorithm);
  const name = new x509.Name([{ CN: [commonName('dask-cloud CA', options.clusterName)] }, { O: ['dask-cloud'] }]);
  const ski = await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, cryptoImpl);
  const authorityKeyId = new x509.AuthorityKeyIdentifierExtension(ski.keyId, false);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: name,
      issuer: name,
      notBefore: options.validity.notBefore,
      notAfter: options.validity.notAfter,
      signingAlgorithm: alg.sign,
      publicKey: keys.publicKey,
      signingKey: keys.privateKey,
      extensions: [
        ...CA_EXTENSIONS,
        ski,
        authorityKeyId,
      ],
    },
    cryptoImpl,
  );
  return {
    certPem: certToPem(cert),
    keyAlgorithm: options.keyAlgorithm,
    signingKey: keys.privateKey,
    name,
    authorityKeyId,
  };
}

/** Mint a fresh, self-signed cluster CA with a non-extractable key. */
export async function createCa(options: MintOptions): Promise<MintedCa> {
  return createCaFromKeys(await generateKeys(options.keyAlgorithm, false), options);
}

/** A leaf certificate and its private key (PKCS#8 PEM). */
export interface MintedLeaf {
  certPem: string;
  keyPem: string;
}

async function issueLeafWithKeys(
  ca: MintedCa,
  role: TlsRole,
  keys: CryptoKeyPair,
  options: MintOptions,
): Promise<MintedLeaf> {
  const alg = algorithms(ca.keyAlgorithm);
  const [ski, pkcs8] = await Promise.all([
    x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, cryptoImpl),
    subtle.exportKey('pkcs8', keys.privateKey),
  ]);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: new x509.Name([{ CN: [commonName(`dask-cloud ${role}`, options.clusterName)] }, { O: ['dask-cloud'] }]),
      issuer: ca.name,
      notBefore: options.validity.notBefore,
      notAfter: options.validity.notAfter,
      signingAlgorithm: alg.sign,
      publicKey: keys.publicKey,
      signingKey: ca.signingKey,
      extensions: [...LEAF_EXTENSIONS, algorithms(options.keyAlgorithm).leafKeyUsage, ski, ca.authorityKeyId, SAN[role]],
    },
    cryptoImpl,
  );
  return { certPem: certToPem(cert), keyPem: toPem(pkcs8, 'PRIVATE KEY') };
}

/** Issue a leaf certificate for `role`, signed by `ca`. `options.keyAlgorithm` chooses the leaf's key type. */
export async function issueLeaf(ca: MintedCa, role: TlsRole, options: MintOptions): Promise<MintedLeaf> {
  return issueLeafWithKeys(ca, role, await generateKeys(options.keyAlgorithm, true), options);
}


/** A full credential set: the CA certificate and one leaf per role. No CA key. */
export interface MintedCredentials {
  caCertPem: string;
  leaves: Record<TlsRole, MintedLeaf>;
}

/**
 * Mint a CA and the three role leaves. The four key pairs are generated concurrently (the
 * expensive part for RSA), then the CA key signs the leaves and goes out of scope with this call.
 */
export async function mintCredentials(options: MintOptions): Promise<MintedCredentials> {
  const [caKeys, ...leafKeys] = await Promise.all([
    generateKeys(options.keyAlgorithm, false),
    ...ROLES.map(() => generateKeys(options.keyAlgorithm, true)),
  ]);
  const ca = await createCaFromKeys(caKeys, options);
  const issued = await Promise.all(ROLES.map((role, i) => issueLeafWithKeys(ca, role, leafKeys[i], options)));
  const leaves = Object.fromEntries(ROLES.map((role, i) => [role, issued[i]])) as Record<TlsRole, MintedLeaf>;
  return { caCertPem: ca.certPem, leaves };
}
