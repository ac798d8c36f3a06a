/**
 * User-data size limits and the gzip fallback. cloud-init recognises gzip by its magic bytes and
 * inflates it before parsing, so compressing is transparent to the VM.
 */
import { loadZlib } from '../lazy';
import { UserDataError, ValidationError } from '../errors';

/**
 * User-data size limits in bytes, as each cloud counts them.
 *
 * - `ec2`: 16 KB of raw user-data before base64 (the SDK does not encode: the provider must).
 *   Binary (gzipped) user-data is fine.
 * - `digitalocean`: 64 KiB of plain text. `user_data` is a JSON string, so gzip cannot be sent:
 *   render with `gzip: 'never'`.
 * - `gcp`: 256 KiB per metadata value. Metadata values are strings: a gzipped body must be
 *   base64-encoded and marked with the `user-data-encoding: base64` metadata key.
 */
export const USER_DATA_LIMITS = Object.freeze({ ec2: 16384, digitalocean: 65536, gcp: 262144 });

/** When to gzip user-data: only when it would not fit (`auto`, default), always, or never. */
export type GzipMode = 'auto' | 'always' | 'never';

export interface FittedUserData {
  /** What to send: the UTF-8 text, or its gzip. */
  body: Buffer;
  gzipped: boolean;
  /** Size of the UTF-8 text. */
  rawBytes: number;
  /** Size of `body`. */
  bytes: number;
}

/**
 * Chooses between the text and its gzip under `limitBytes`, or throws `E_USER_DATA_TOO_LARGE`
 * with both sizes when neither allowed form fits. No limit means nothing is checked.
 */
export function fitUserData(
  text: string,
  options: { limitBytes?: number; gzip?: GzipMode; what?: string } = {},
): FittedUserData {
  const { limitBytes } = options;
  const mode = options.gzip ?? 'auto';
  if (limitBytes !== undefined && (!Number.isSafeInteger(limitBytes) || limitBytes <= 0)) {
    throw new ValidationError(`limitBytes must be a positive integer, got ${String(limitBytes)}`, { option: 'limitBytes' });
  }
  if (mode !== 'auto' && mode !== 'always' && mode !== 'never') {
    throw new ValidationError(`gzip must be 'auto', 'always' or 'never', got ${String(mode)}`, { option: 'gzip' });
  }
  const raw = Buffer.from(text, 'utf8');
  const fits = (b: Buffer) => limitBytes === undefined || b.length <= limitBytes;
  // Level 9: user-data is small and compressed once per VM, so time is no concern.
  const compress = () => loadZlib().gzipSync(raw, { level: 9 });

  let body: Buffer;
  if (mode === 'always') body = compress();
  else if (mode === 'never' || fits(raw)) body = raw;
  else body = compress();

  if (!fits(body)) {
    const gzBytes = body === raw ? compress().length : body.length;
    const what = options.what ?? 'user-data';
    const hint =
      mode === 'never' && gzBytes <= (limitBytes as number)
        ? "; gzipped it would fit: allow gzip ('auto') if this cloud accepts binary user-data"
        : '; use EC keys instead of RSA and fewer or shorter bootstrap commands and env values';
    throw new UserDataError(
      'E_USER_DATA_TOO_LARGE',
      `${what} is ${raw.length} bytes (${gzBytes} bytes gzipped), over the ${limitBytes}-byte limit${hint}`,
      { details: { rawBytes: raw.length, gzipBytes: gzBytes, limitBytes, gzip: mode } },
    );
  }
  return { body, gzipped: body !== raw, rawBytes: raw.length, bytes: body.length };
}
