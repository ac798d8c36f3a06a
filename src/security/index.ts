/** TLS material for Dask clusters: generation, validation, and the files/env/config Dask needs. */
export { Security, TLS_FILE_NAMES } from './security';
export { DEFAULT_TLS12_CIPHERS } from './ciphers';
export type {
  ClientConfigFiles,
  ClientTlsOptions,
  SecurityFileOptions,
  SecurityPemOptions,
  SecuritySettings,
  TemporaryOptions,
  TlsRole,
  TlsVersion,
} from './types';
