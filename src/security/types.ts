import type { TlsClientOptions } from '../dask/comm';

/** The three roles Dask distinguishes in its TLS configuration. */
export type TlsRole = 'scheduler' | 'worker' | 'client';

/** TLS protocol versions Dask accepts (`distributed.comm.tls.min-version` / `max-version`). */
export type TlsVersion = '1.2' | '1.3';

/** Options for {@link Security.temporary}. */
export interface TemporaryOptions {
  /** Key type of the CA and of every leaf. Default `'ecdsa-p256'` (small PEMs, fast). */
  keyAlgorithm?: 'ecdsa-p256' | 'rsa-2048';
  /** Days the certificates stay valid, counted from now. Positive; fractions allowed. Default 3. */
  validityDays?: number;
  /** Minutes `notBefore` is back-dated so that machines with a slow clock accept the certs. Default 5. */
  backdateMinutes?: number;
  /** Refuse unencrypted connections (`distributed.comm.require-encryption`). Default `true`. */
  requireEncryption?: boolean;
  /** Lowest TLS version allowed. Dask's own default is 1.2. */
  tlsMinVersion?: TlsVersion;
  /** Highest TLS version allowed. Default: no limit. */
  tlsMaxVersion?: TlsVersion;
  /** OpenSSL cipher string (TLS 1.2 ciphers; Python does not let Dask restrict TLS 1.3 suites). */
  tlsCiphers?: string;
  /** Goes into the certificates' subject CNs, e.g. `dask-cloud CA <clusterName>`. */
  clusterName?: string;
}

/** TLS settings shared by {@link SecurityFileOptions} and {@link SecurityPemOptions}. */
export interface SecuritySettings {
  /** Refuse unencrypted connections. Default `true`. */
  requireEncryption?: boolean;
  /** Lowest TLS version: `'1.2'`, `'1.3'` (also spelled `'TLSv1.2'`, `'TLSv1.3'`). */
  tlsMinVersion?: TlsVersion | string;
  /** Highest TLS version, same spellings as `tlsMinVersion`. */
  tlsMaxVersion?: TlsVersion | string;
  /** OpenSSL cipher string; must select at least one TLS 1.2 cipher (Dask hands it to Python's `set_ciphers`). */
  tlsCiphers?: string;
}

/**
 * Paths to PEM files. A certificate file may also hold its private key (the key option may then
 * be omitted) and intermediate certificates after the leaf. A role without its own material
 * borrows another role's: see {@link Security.fromFiles}.
 */
export interface SecurityFileOptions extends SecuritySettings {
  /** CA certificate(s) every cluster member's certificate must chain to. */
  tlsCaFile: string;
  tlsClientCert?: string;
  tlsClientKey?: string;
  tlsSchedulerCert?: string;
  tlsSchedulerKey?: string;
  tlsWorkerCert?: string;
  tlsWorkerKey?: string;
}

/** Like {@link SecurityFileOptions}, with PEM text instead of paths. */
export interface SecurityPemOptions extends SecuritySettings {
  /** CA certificate(s), PEM. */
  tlsCa: string;
  tlsClientCert?: string;
  tlsClientKey?: string;
  tlsSchedulerCert?: string;
  tlsSchedulerKey?: string;
  tlsWorkerCert?: string;
  tlsWorkerKey?: string;
}

/** Options for `node:tls.connect` that make a connection as a Dask client (the wire client's type). */
export type ClientTlsOptions = TlsClientOptions;

/** What {@link Security.writeClientConfig} wrote (absolute paths). */
export interface ClientConfigFiles {
  dir: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  /** The Dask config YAML (`dask.yaml`); point `DASK_CONFIG` at `dir`. */
  configFile: string;
}
