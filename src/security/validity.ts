/** Small pure helpers shared by the generator and Security, kept apart so Security can load without @peculiar/x509. */
import type { TlsRole } from './types';

const DAY_MS = 24 * 60 * 60 * 1000;
const MINUTE_MS = 60 * 1000;

export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

export const ROLES: readonly TlsRole[] = ['scheduler', 'worker', 'client'];

export function validityWindow(validityDays: number, backdateMinutes: number, now = Date.now()): Validity {
  // X.509 times have one-second resolution: round so the certificate says exactly what we mean.
  const notBefore = Math.floor((now - backdateMinutes * MINUTE_MS) / 1000) * 1000;
  const notAfter = Math.floor((now + validityDays * DAY_MS) / 1000) * 1000;
  return { notBefore: new Date(notBefore), notAfter: new Date(notAfter) };
}
