/**
 * `Security`: the TLS material of one cluster (CA certificate, a certificate and key per role)
 * plus the TLS settings, and everything derived from it that Dask processes and clients need:
 * files, environment, CLI flags, Dask config, Node `tls.connect` options.
 */
import * as path from 'node:path';
import * as util from 'node:util';
import type { X509Certificate } from 'node:crypto';
import { SecurityError, ValidationError } from '../errors';
import { checkPositive, describeValue, MAX_BACKDATE_MINUTES, MAX_VALIDITY_DAYS, readOptions } from '../config/bounds';
import type { DaskFile } from '../dask/command';
import { validityWindow, ROLES } from './validity';
import { loadCrypto, loadGenerator, loadYaml } from '../lazy';
import {
  checkDates,
  checkKeySize,
  describe,
  hasPrivateKey,
  issuedBy,
  parseCertificates,
  parsePrivateKey,
  readPemFile,
  subjectOf,
  validity,
  type ParsedCert,
  type PemSource,
} from './pem';
import { writePrivateFiles } from './private-dir';
import { DEFAULT_TLS12_CIPHERS, nodeTlsVersion, resolveSettings, type ResolvedSettings } from './settings';
import type {
  ClientConfigFiles,
  ClientTlsOptions,
  SecurityFileOptions,
  SecurityPemOptions,
  TemporaryOptions,
  TlsRole,
  TlsVersion,
} from './types';

export type { ClientConfigFiles, ClientTlsOptions, SecurityFileOptions, SecurityPemOptions, TemporaryOptions, TlsRole, TlsVersion } from './types';

/** Order in which a role without its own material borrows another's. */
const FALLBACK_ORDER: readonly TlsRole[] = ['client', 'scheduler', 'worker'];

const ROLE_OPTION: Record<TlsRole, { cert: 'tlsClientCert' | 'tlsSchedulerCert' | 'tlsWorkerCert'; key: 'tlsClientKey' | 'tlsSchedulerKey' | 'tlsWorkerKey' }> = {
  client: { cert: 'tlsClientCert', key: 'tlsClientKey' },
  scheduler: { cert: 'tlsSchedulerCert', key: 'tlsSchedulerKey' },
  worker: { cert: 'tlsWorkerCert', key: 'tlsWorkerKey' },
};

const SETTING_KEYS = ['requireEncryption', 'tlsMinVersion', 'tlsMaxVersion', 'tlsCiphers'] as const;
const ROLE_KEYS = ['tlsClientCert', 'tlsClientKey', 'tlsSchedulerCert', 'tlsSchedulerKey', 'tlsWorkerCert', 'tlsWorkerKey'] as const;
const FILE_KEYS = new Set<string>(['tlsCaFile', ...ROLE_KEYS, ...SETTING_KEYS]);
const PEM_KEYS = new Set<string>(['tlsCa', ...ROLE_KEYS, ...SETTING_KEYS]);
const TEMPORARY_KEYS = new Set<string>(['keyAlgorithm', 'validityDays', 'backdateMinutes', 'clusterName', ...SETTING_KEYS]);

/** Names of the files {@link Security.tlsFiles} lays out under a directory. */
export const TLS_FILE_NAMES = {
  ca: 'ca.pem',
  cert: (role: TlsRole) => `${role}.pem`,
  key: (role: TlsRole) => `${role}.key`,
  config: 'dask.yaml',
} as const;

interface RoleCert {
  /** Leaf first, then any intermediates. */
  pem: string;
  leaf: X509Certificate;
  /** The role whose material this is (differs from the role when borrowed). */
  source: TlsRole;
}

interface SecurityInit {
  caCertPem: string;
  certs: Record<TlsRole, RoleCert>;
  keys: Record<TlsRole, string>;
  settings: ResolvedSettings;
  generated: boolean;
}

// Lets only the static factories construct a Security at runtime, not only at compile time.
const CONSTRUCT = Symbol('Security.construct');

function assertRole(role: unknown): asserts role is TlsRole {
  if (role !== 'scheduler' && role !== 'worker' && role !== 'client') {
    throw new ValidationError(`unknown TLS role ${describeValue(role)}: expected 'scheduler', 'worker' or 'client'`, { option: 'role' });
  }
}

function assertDir(dir: unknown): asserts dir is string {
  if (typeof dir !== 'string' || dir === '') throw new ValidationError('dir must be a non-empty path', { option: 'dir' });
}

function assertKnownKeys(options: object, allowed: Set<string>, what: string): void {
  for (const key of Object.keys(options)) {
    if (allowed.has(key)) continue;
    const hint =
      key === 'tlsCaFile' ? ' (tlsCaFile is for Security.fromFiles; fromPem takes tlsCa)' : key === 'tlsCa' ? ' (tlsCa is for Security.fromPem; fromFiles takes tlsCaFile)' : '';
    throw new ValidationError(`${what}: unknown option ${JSON.stringify(key)}${hint}`, { option: key });
  }
}

function checkSchedulerAddress(address: string | undefined): void {
  if (address === undefined) return;
  if (typeof address !== 'string' || !/^tls:\/\/\S+$/.test(address)) {
    throw new ValidationError(`schedulerAddress must be a tls:// address when TLS is on, got ${describeValue(address)}`, {
      option: 'schedulerAddress',
    });
  }
}

/**
 * A dashboard URL for `distributed.dashboard.link`: http(s), no whitespace, and no braces (Dask
 * fills `{host}`-style fields into that template with `str.format`).
 */
export function checkDashboardLink(link: string | undefined): void {
  if (link === undefined) return;
  if (typeof link !== 'string' || !/^https?:\/\/[^\s{}]+$/.test(link)) {
    throw new ValidationError(`dashboardLink must be an http:// or https:// URL without spaces or braces, got ${describeValue(link)}`, { option: 'dashboardLink' });
  }
}

/**
 * Checks {@link Security.temporary}'s options without minting anything (clusters call it in
 * their constructor) and returns them with defaults. `what` names them in messages.
 */
export function validateTemporaryOptions(
  input: TemporaryOptions,
  what = 'Security.temporary',
): { keyAlgorithm: 'ecdsa-p256' | 'rsa-2048'; validityDays: number; backdateMinutes: number; clusterName: string | undefined; settings: ResolvedSettings } {
  const options = readOptions(input, `${what} options`);
  assertKnownKeys(options, TEMPORARY_KEYS, what);
  const keyAlgorithm = options.keyAlgorithm ?? 'ecdsa-p256';
  if (keyAlgorithm !== 'ecdsa-p256' && keyAlgorithm !== 'rsa-2048') {
    throw new ValidationError(`keyAlgorithm must be 'ecdsa-p256' or 'rsa-2048', got ${describeValue(keyAlgorithm)}`, { option: 'keyAlgorithm' });
  }
  const validityDays = options.validityDays ?? 3;
  // Bounded so every date is a valid X.509 time and JavaScript Date.
  checkPositive(validityDays, 'validityDays', MAX_VALIDITY_DAYS, 'days (about ten years)');
  const backdateMinutes = options.backdateMinutes ?? 5;
  checkPositive(backdateMinutes, 'backdateMinutes', MAX_BACKDATE_MINUTES, 'minutes (one day)', { allowZero: true });
  if (options.clusterName !== undefined && (typeof options.clusterName !== 'string' || options.clusterName.length > 200)) {
    throw new ValidationError(`clusterName must be a string of at most 200 characters, got ${describeValue(options.clusterName)}`, { option: 'clusterName' });
  }
  return { keyAlgorithm, validityDays, backdateMinutes, clusterName: options.clusterName, settings: resolveSettings(options) };
}

/**
 * TLS material and settings for one Dask cluster.
 *
 * Create it with {@link Security.temporary} (fresh CA and per-role certificates, the default for
 * clusters), {@link Security.fromFiles} or {@link Security.fromPem} (your own material, validated
 * at construction). Private keys stay in a private field: they appear only in the files and
 * options produced for a specific role, never in `JSON.stringify`, `util.inspect` or errors.
 *
 * **Role fallback.** A role (scheduler, worker, client) without its own certificate and key uses
 * the client's; if there is no client material either, the scheduler's; then the worker's. At
 * least one complete pair is required. {@link Security.hasRole} tells whether a role has its own.
 */
export class Security {
  /** Refuse unencrypted connections (`distributed.comm.require-encryption`). */
  readonly requireEncryption: boolean;
  /** Lowest TLS version, or `undefined` for Dask's default (1.2). */
  readonly tlsMinVersion: TlsVersion | undefined;
  /** Highest TLS version, or `undefined` for no limit. */
  readonly tlsMaxVersion: TlsVersion | undefined;
  /**
   * The caller's OpenSSL cipher string for TLS 1.2, or `undefined` for dask-cloud's default
   * (`DEFAULT_TLS12_CIPHERS`: ECDHE with AES-GCM or ChaCha20-Poly1305 only). Either way both Dask
   * (env, config) and the Node client get an explicit list.
   */
  readonly tlsCiphers: string | undefined;
  /** The CA certificate(s), PEM. Public. */
  readonly caCertPem: string;
  /** True when the material was minted by {@link Security.temporary}. */
  readonly generated: boolean;
  readonly #expiresAt: number;
  readonly #certs: Record<TlsRole, RoleCert>;
  readonly #keys: Record<TlsRole, string>;

  /** @internal Use {@link Security.temporary}, {@link Security.fromFiles} or {@link Security.fromPem}. */
  private constructor(token: symbol, init: SecurityInit) {
    if (token !== CONSTRUCT) throw new TypeError('use Security.temporary(), Security.fromFiles() or Security.fromPem()');
    this.requireEncryption = init.settings.requireEncryption;
    this.tlsMinVersion = init.settings.tlsMinVersion;
    this.tlsMaxVersion = init.settings.tlsMaxVersion;
    this.tlsCiphers = init.settings.tlsCiphers;
    this.caCertPem = init.caCertPem;
    this.generated = init.generated;
    this.#certs = init.certs;
    this.#keys = init.keys;
    const ends = [
      ...parseCertificates({ option: 'tlsCa', text: init.caCertPem }).map((c) => validity(c.cert).notAfter.getTime()),
      ...ROLES.map((r) => validity(init.certs[r].leaf).notAfter.getTime()),
    ];
    this.#expiresAt = Math.min(...ends);
    Object.freeze(this);
  }

  /**
   * True only for a Security made by {@link Security.temporary}, {@link Security.fromFiles} or
   * {@link Security.fromPem} (a brand check: an object built on Security.prototype is not one).
   */
  static isSecurity(value: unknown): value is Security {
    return typeof value === 'object' && value !== null && #keys in value;
  }

  /** The earliest `notAfter` among the CA and role certificates: after this, connections fail. */
  get expiresAt(): Date {
    return new Date(this.#expiresAt);
  }

  /**
   * Mint fresh cluster-scoped credentials: a new CA and a certificate per role (scheduler, worker,
   * client) signed by it. The CA private key is non-extractable and dropped once the leaves are
   * signed: nothing can issue further certificates for this cluster.
   *
   * Certificates carry what strict X.509 verification needs (critical CA basicConstraints,
   * keyCertSign, SKI/AKI, serverAuth+clientAuth, a SAN `DNS:dask-<role>`).
   */
  static async temporary(options: TemporaryOptions = {}): Promise<Security> {
    const { keyAlgorithm, validityDays, backdateMinutes, clusterName, settings } = validateTemporaryOptions(options);
    const minted = await (await loadGenerator()).mintCredentials({
      keyAlgorithm,
      validity: validityWindow(validityDays, backdateMinutes),
      clusterName,
    });
    const certs = {} as Record<TlsRole, RoleCert>;
    const keys = {} as Record<TlsRole, string>;
    for (const role of ROLES) {
      const leaf = minted.leaves[role];
      certs[role] = { pem: leaf.certPem, leaf: new (loadCrypto().X509Certificate)(leaf.certPem), source: role };
      keys[role] = leaf.keyPem;
    }
    return new Security(CONSTRUCT, { caCertPem: minted.caCertPem, certs, keys, settings, generated: true });
  }

  /**
   * Load and validate TLS material from PEM files.
   *
   * Checks, each failing with a {@link SecurityError} whose `code` says what is wrong: file readable
   * (`E_PEM_FILE`), PEM parses (`E_PEM_INVALID`), the CA file holds CA certificates, each key
   * matches its certificate (`E_KEY_MISMATCH`), each certificate chains to the CA
   * (`E_CERT_NOT_ISSUED_BY_CA`), dates (`E_CERT_EXPIRED`, `E_CERT_NOT_YET_VALID`), RSA at least
   * 2048 bits (`E_KEY_TOO_SMALL`), extended key usage fit for the role (`E_CERT_USAGE`), TLS
   * versions (`E_TLS_VERSION`), ciphers (`E_TLS_CIPHERS`), and
   * at least one certificate/key pair (`E_SECURITY_INCOMPLETE`).
   *
   * A certificate file may also hold its key (omit the key option then). A role without its own
   * pair uses the client's, else the scheduler's, else the worker's.
   */
  static fromFiles(options: SecurityFileOptions): Security {
    options = readOptions(options, 'Security.fromFiles options');
    assertKnownKeys(options, FILE_KEYS, 'Security.fromFiles');
    if (options.tlsCaFile === undefined) {
      throw new SecurityError('E_SECURITY_INCOMPLETE', 'tlsCaFile is required: the CA certificate every cluster member must chain to', {
        details: { option: 'tlsCaFile' },
      });
    }
    const settings = resolveSettings(options);
    const ca = readPemFile('tlsCaFile', options.tlsCaFile);
    const pairs: Partial<Record<TlsRole, { cert?: PemSource; key?: PemSource }>> = {};
    for (const role of ROLES) {
      const names = ROLE_OPTION[role];
      const certPath = options[names.cert];
      const keyPath = options[names.key];
      pairs[role] = {
        cert: certPath === undefined ? undefined : readPemFile(names.cert, certPath),
        key: keyPath === undefined ? undefined : readPemFile(names.key, keyPath),
      };
    }
    return Security.#fromSources(ca, pairs, settings);
  }

  /**
   * Validate TLS material given as PEM text. Same checks and role fallback as
   * {@link Security.fromFiles}; `E_PEM_FILE` cannot occur.
   */
  static fromPem(options: SecurityPemOptions): Security {
    options = readOptions(options, 'Security.fromPem options');
    assertKnownKeys(options, PEM_KEYS, 'Security.fromPem');
    const text = (option: string, value: unknown): PemSource | undefined => {
      if (value === undefined) return undefined;
      if (typeof value !== 'string') throw new SecurityError('E_PEM_INVALID', `${option} must be PEM text (a string)`, { details: { option } });
      return { option, text: value };
    };
    if (options.tlsCa === undefined) {
      throw new SecurityError('E_SECURITY_INCOMPLETE', 'tlsCa is required: the CA certificate every cluster member must chain to', {
        details: { option: 'tlsCa' },
      });
    }
    const settings = resolveSettings(options);
    const ca = text('tlsCa', options.tlsCa) as PemSource;
    const pairs: Partial<Record<TlsRole, { cert?: PemSource; key?: PemSource }>> = {};
    for (const role of ROLES) {
      const names = ROLE_OPTION[role];
      pairs[role] = { cert: text(names.cert, options[names.cert]), key: text(names.key, options[names.key]) };
    }
    return Security.#fromSources(ca, pairs, settings);
  }

  static #fromSources(
    caSource: PemSource,
    pairs: Partial<Record<TlsRole, { cert?: PemSource; key?: PemSource }>>,
    settings: ResolvedSettings,
  ): Security {
    const cas = validateCa(caSource);
    const own: Partial<Record<TlsRole, { cert: RoleCert; key: string }>> = {};
    for (const role of ROLES) {
      const pair = pairs[role];
      const checked = pair === undefined ? undefined : validatePair(role, pair.cert, pair.key, cas, caSource);
      if (checked !== undefined) own[role] = checked;
    }
    const donor = FALLBACK_ORDER.find((r) => own[r] !== undefined);
    if (donor === undefined) {
      throw new SecurityError(
        'E_SECURITY_INCOMPLETE',
        'no certificate/key pair given: set at least tlsClientCert and tlsClientKey (the client is how dask-cloud and you reach the scheduler)',
        { details: { option: 'tlsClientCert' } },
      );
    }
    const certs = {} as Record<TlsRole, RoleCert>;
    const keys = {} as Record<TlsRole, string>;
    for (const role of ROLES) {
      const chosen = own[role] ?? own[donor]!;
      checkExtendedKeyUsage(role, chosen.cert, pairs[chosen.cert.source]?.cert);
      certs[role] = chosen.cert;
      keys[role] = chosen.key;
    }
    return new Security(CONSTRUCT, { caCertPem: cas.map((c) => c.pem).join(''), certs, keys, settings, generated: false });
  }

  /** True when `role` has its own certificate and key (not borrowed through the fallback rule). */
  hasRole(role: TlsRole): boolean {
    assertRole(role);
    return this.#certs[role].source === role;
  }

  /** The role's certificate (and any intermediates), PEM. Public material only. */
  certPem(role: TlsRole): string {
    assertRole(role);
    return this.#certs[role].pem;
  }

  /**
   * The files one process of `role` needs, laid out under `dir` (a POSIX path on the machine that
   * runs it): `ca.pem` (0644), `<role>.pem` (0644) and `<role>.key` (0600). Only this role's key:
   * never the CA key (which does not exist any more) or another role's.
   */
  tlsFiles(role: TlsRole, dir: string): DaskFile[] {
    assertRole(role);
    assertDir(dir);
    const p = this.#paths(role, dir);
    return [
      { path: p.ca, content: this.caCertPem, mode: '0644' },
      { path: p.cert, content: this.#certs[role].pem, mode: '0644' },
      { path: p.key, content: this.#keys[role], mode: '0600' },
    ];
  }

  /**
   * Dask configuration environment variables for `role`, pointing at the {@link Security.tlsFiles}
   * paths: `DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION`, `..._TLS__CA_FILE`,
   * `..._TLS__<ROLE>__CERT` / `__KEY`, and `..._TLS__MIN_VERSION` / `MAX_VERSION` / `CIPHERS` when set.
   */
  env(role: TlsRole, dir: string): Record<string, string> {
    assertRole(role);
    assertDir(dir);
    const p = this.#paths(role, dir);
    const ROLE = role.toUpperCase();
    const env: Record<string, string> = {
      // Dask parses env values with ast.literal_eval: 'True'/'False' become booleans.
      DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION: this.requireEncryption ? 'True' : 'False',
      DASK_DISTRIBUTED__COMM__TLS__CA_FILE: p.ca,
      [`DASK_DISTRIBUTED__COMM__TLS__${ROLE}__CERT`]: p.cert,
      [`DASK_DISTRIBUTED__COMM__TLS__${ROLE}__KEY`]: p.key,
    };
    // '1.2' literal_evals to the float Dask's version table is keyed by.
    if (this.tlsMinVersion !== undefined) env.DASK_DISTRIBUTED__COMM__TLS__MIN_VERSION = this.tlsMinVersion;
    if (this.tlsMaxVersion !== undefined) env.DASK_DISTRIBUTED__COMM__TLS__MAX_VERSION = this.tlsMaxVersion;
    // Always explicit: Python's own default still allows CBC suites under TLS 1.2.
    env.DASK_DISTRIBUTED__COMM__TLS__CIPHERS = this.#ciphers();
    return env;
  }

  /** `dask scheduler` / `dask worker` flags: `--tls-ca-file`, `--tls-cert`, `--tls-key` (tlsFiles paths). */
  flags(role: TlsRole, dir: string): string[] {
    assertRole(role);
    assertDir(dir);
    const p = this.#paths(role, dir);
    return ['--tls-ca-file', p.ca, '--tls-cert', p.cert, '--tls-key', p.key];
  }

  /**
   * Nested Dask config for `role`: `distributed.comm.require-encryption` and
   * `distributed.comm.tls.{ca-file, <role>: {cert, key}, min-version, max-version, ciphers}`,
   * plus top-level `scheduler-address` when given. Versions are numbers, as Dask expects.
   */
  daskConfig(role: TlsRole, dir: string, options: { schedulerAddress?: string } = {}): Record<string, unknown> {
    assertRole(role);
    assertDir(dir);
    checkSchedulerAddress(options.schedulerAddress);
    const config: Record<string, unknown> = {
      distributed: { comm: { 'require-encryption': this.requireEncryption, tls: this.#tlsConfig(role, this.#paths(role, dir)) } },
    };
    if (options.schedulerAddress !== undefined) config['scheduler-address'] = options.schedulerAddress;
    return config;
  }

  /**
   * Options for `node:tls.connect` to reach a scheduler as a Dask client (client certificate and
   * key, CA, versions, ciphers; unset fields omitted). Dask checks no hostnames: callers should
   * also pass `checkServerIdentity: () => undefined`.
   */
  clientTlsOptions(): ClientTlsOptions {
    const options: ClientTlsOptions = { ca: this.caCertPem, cert: this.#certs.client.pem, key: this.#keys.client };
    if (this.tlsMinVersion !== undefined) options.minVersion = nodeTlsVersion(this.tlsMinVersion);
    if (this.tlsMaxVersion !== undefined) options.maxVersion = nodeTlsVersion(this.tlsMaxVersion);
    // Node, like Python's set_ciphers, leaves the default TLS 1.3 suites on unless the string names some.
    options.ciphers = this.#ciphers();
    return options;
  }

  /**
   * Write what a Python client needs into `dir`: `ca.pem`, `client.pem`, `client.key` (0600) and
   * `dask.yaml` (TLS settings for the client role, and `scheduler-address` when given). Then
   * `DASK_CONFIG=<dir> python -c "from distributed import Client; Client()"` connects with no
   * arguments.
   *
   * `dir` is created 0700 when missing. An existing one is used only if it is a real directory
   * (not a symbolic link) owned by you that group and others cannot write; its mode is left as it
   * is (a warning when others can list it). Each file is written to a new temporary file with
   * its final mode, synced, and renamed into place; a symbolic link in place of a file is
   * refused. Any failure is a {@link ValidationError} (`option: 'dir'`) at once.
   */
  async writeClientConfig(dir: string, options: { schedulerAddress?: string; dashboardLink?: string } = {}): Promise<ClientConfigFiles> {
    assertDir(dir);
    checkSchedulerAddress(options.schedulerAddress);
    checkDashboardLink(options.dashboardLink);
    const abs = path.resolve(dir);
    const p = this.#paths('client', abs, path.join);
    const configFile = path.join(abs, TLS_FILE_NAMES.config);
    const config = {
      ...this.daskConfig('client', abs, { schedulerAddress: options.schedulerAddress }),
      distributed: {
        comm: { 'require-encryption': this.requireEncryption, tls: this.#tlsConfig('client', p) },
        ...(options.dashboardLink === undefined ? {} : { dashboard: { link: options.dashboardLink } }),
      },
    };
    await writePrivateFiles(abs, [
      { name: TLS_FILE_NAMES.ca, content: this.caCertPem, mode: 0o644 },
      { name: TLS_FILE_NAMES.cert('client'), content: this.#certs.client.pem, mode: 0o644 },
      { name: TLS_FILE_NAMES.key('client'), content: this.#keys.client, mode: 0o600 },
      { name: TLS_FILE_NAMES.config, content: `# Written by dask-cloud: TLS settings for a Dask client.\n${loadYaml().stringify(config)}`, mode: 0o644 },
    ]);
    return { dir: abs, caFile: p.ca, certFile: p.cert, keyFile: p.key, configFile };
  }

  /** A redacted description: subjects, fingerprints, dates and settings, never key material. */
  toJSON(): object {
    const describeCert = (cert: X509Certificate) => {
      const v = validity(cert);
      return { subject: subjectOf(cert), notBefore: v.notBefore.toISOString(), notAfter: v.notAfter.toISOString(), fingerprint256: cert.fingerprint256 };
    };
    const roles = Object.fromEntries(ROLES.map((r) => [r, { source: this.#certs[r].source, ...describeCert(this.#certs[r].leaf) }]));
    return {
      generated: this.generated,
      requireEncryption: this.requireEncryption,
      tlsMinVersion: this.tlsMinVersion,
      tlsMaxVersion: this.tlsMaxVersion,
      tlsCiphers: this.tlsCiphers,
      expiresAt: this.expiresAt.toISOString(),
      ca: parseCertificates({ option: 'tlsCa', text: this.caCertPem }).map((c) => describeCert(c.cert)),
      roles,
    };
  }

  /** `util.inspect` / `console.log` show the redacted {@link Security.toJSON} view. */
  [util.inspect.custom](_depth: number, options: util.InspectOptions, inspect: typeof util.inspect): string {
    return `Security ${inspect(this.toJSON(), { ...options, depth: 3 })}`;
  }

  #tlsConfig(role: TlsRole, p: { ca: string; cert: string; key: string }): Record<string, unknown> {
    const tlsConfig: Record<string, unknown> = { 'ca-file': p.ca, [role]: { cert: p.cert, key: p.key } };
    if (this.tlsMinVersion !== undefined) tlsConfig['min-version'] = Number(this.tlsMinVersion);
    if (this.tlsMaxVersion !== undefined) tlsConfig['max-version'] = Number(this.tlsMaxVersion);
    tlsConfig.ciphers = this.#ciphers();
    return tlsConfig;
  }

  /** The TLS 1.2 cipher list in effect: the caller's, else the AEAD-only default. */
  #ciphers(): string {
    return this.tlsCiphers ?? DEFAULT_TLS12_CIPHERS;
  }

  /** Remote machines are Linux, so POSIX joins by default; local files use the platform's join. */
  #paths(role: TlsRole, dir: string, join: (...parts: string[]) => string = path.posix.join): { ca: string; cert: string; key: string } {
    return { ca: join(dir, TLS_FILE_NAMES.ca), cert: join(dir, TLS_FILE_NAMES.cert(role)), key: join(dir, TLS_FILE_NAMES.key(role)) };
  }
}

function validateCa(src: PemSource): ParsedCert[] {
  const cas = parseCertificates(src);
  for (const [i, { cert }] of cas.entries()) {
    const what = `${describe(src)} certificate #${i + 1}`;
    checkKeySize(cert.publicKey, what);
    if (!cert.ca) {
      throw new SecurityError('E_PEM_INVALID', `${what} (subject ${subjectOf(cert)}) is not a CA certificate (no basicConstraints CA:TRUE)`, {
        details: { option: src.option, path: src.path },
      });
    }
    checkDates(cert, what);
  }
  return cas;
}

const EKU = { serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2', any: '2.5.29.37.0' } as const;

/**
 * What each role does with its certificate: the scheduler and workers both accept TLS connections
 * and open them to each other; the client only opens them. A leaf with an extendedKeyUsage
 * extension must allow that, or OpenSSL on the VM refuses the handshake later. (No extension at
 * all means any use.)
 */
const ROLE_USAGE: Record<TlsRole, readonly ('serverAuth' | 'clientAuth')[]> = {
  scheduler: ['serverAuth', 'clientAuth'],
  worker: ['serverAuth', 'clientAuth'],
  client: ['clientAuth'],
};

function checkExtendedKeyUsage(role: TlsRole, cert: RoleCert, src: PemSource | undefined): void {
  const allowed = cert.leaf.keyUsage; // Node's name for the extendedKeyUsage OIDs; undefined when absent
  if (allowed === undefined || allowed.includes(EKU.any)) return;
  const missing = ROLE_USAGE[role].filter((u) => !allowed.includes(EKU[u]));
  if (missing.length === 0) return;
  const where = src ? describe(src) : `the ${cert.source} certificate`;
  const borrowed = cert.source === role ? '' : ` (the ${role} role borrows the ${cert.source}'s pair)`;
  throw new SecurityError(
    'E_CERT_USAGE',
    `${where} (subject ${subjectOf(cert.leaf)}) does not allow ${missing.join(' and ')}, which the ${role} needs${borrowed}: ` +
      `its extendedKeyUsage must include ${ROLE_USAGE[role].join(' and ')}, or be absent`,
    { details: { option: src?.option ?? ROLE_OPTION[role].cert, role, missing } },
  );
}

function validatePair(
  role: TlsRole,
  certSrc: PemSource | undefined,
  keySrc: PemSource | undefined,
  cas: ParsedCert[],
  caSrc: PemSource,
): { cert: RoleCert; key: string } | undefined {
  const names = ROLE_OPTION[role];
  if (certSrc === undefined && keySrc === undefined) return undefined;
  if (certSrc === undefined) {
    throw new SecurityError('E_SECURITY_INCOMPLETE', `${names.key} is given without ${names.cert}`, { details: { option: names.cert } });
  }
  const chain = parseCertificates(certSrc);
  const keySource = keySrc ?? (hasPrivateKey(certSrc) ? certSrc : undefined);
  if (keySource === undefined) {
    throw new SecurityError('E_SECURITY_INCOMPLETE', `${describe(certSrc)} holds no private key and ${names.key} is not given`, {
      details: { option: names.key },
    });
  }
  const { key, pem: keyPem } = parsePrivateKey(keySource);
  checkKeySize(key, `the private key in ${describe(keySource)}`);
  const leaf = chain[0].cert;
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(key);
  } catch {
    matches = false;
  }
  if (!matches) {
    throw new SecurityError(
      'E_KEY_MISMATCH',
      `the private key in ${describe(keySource)} does not belong to the certificate in ${describe(certSrc)} (subject ${subjectOf(leaf)})`,
      { details: { option: names.key } },
    );
  }
  for (const [i, { cert }] of chain.entries()) {
    const what = `${describe(certSrc)}${chain.length > 1 ? ` certificate #${i + 1}` : ''}`;
    checkKeySize(cert.publicKey, what);
    checkDates(cert, what);
    if (i + 1 < chain.length && !issuedBy(cert, chain[i + 1].cert)) {
      throw new SecurityError('E_CERT_NOT_ISSUED_BY_CA', `${what} is not issued by the next certificate in the same file`, {
        details: { option: certSrc.option },
      });
    }
  }
  const top = chain[chain.length - 1].cert;
  if (!cas.some((ca) => issuedBy(top, ca.cert))) {
    throw new SecurityError(
      'E_CERT_NOT_ISSUED_BY_CA',
      `${describe(certSrc)} (subject ${subjectOf(leaf)}, issuer ${top.issuer.replace(/\n/g, ', ')}) is not issued by the CA in ${describe(caSrc)}`,
      { details: { option: certSrc.option } },
    );
  }
  return { cert: { pem: chain.map((c) => c.pem).join(''), leaf, source: role }, key: keyPem };
}
