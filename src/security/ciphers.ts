/** Kept apart from settings.ts so the wire client can use it without loading node:tls eagerly. */

/**
 * The TLS 1.2 suites both sides use unless `tlsCiphers` says otherwise: ECDHE key exchange with
 * AEAD encryption only (AES-GCM, ChaCha20-Poly1305), the ECDHE suites of Mozilla's
 * "intermediate" TLS profile. No CBC suite (padding oracles, SHA-1 MACs), no RSA key exchange
 * (no forward secrecy). TLS 1.3 suites are all AEAD and stay at OpenSSL's defaults.
 */
export const DEFAULT_TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');
