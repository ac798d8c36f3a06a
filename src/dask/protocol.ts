/**
 * Dask messages ↔ frames (distributed `protocol/core.py`).
 *
 * Frame 0 is msgpack (str as str, bytes as bin, never compressed). Objects msgpack cannot carry
 * are sent out of band: the value in frame 0 becomes `{"__Serialized__": k}` (or
 * `{"__Pickled__": k}`), frame `k` is a msgpack sub-header with `num-sub-frames`, and the next
 * frames are the payload. Error replies use this for the pickled exception and traceback. We
 * never unpickle: such values decode to {@link SerializedValue} holding the raw bytes, and
 * the plain-text `exception_text` / `traceback_text` fields carry what a person needs.
 */
import { loadMsgpack } from '../lazy';
import { DaskCommError } from '../errors';

/** What we announce in the connection handshake. Dask reads only `compression` and
 * `pickle-protocol` (and hangs without them); `python` is informational. No compression
 * means the scheduler never compresses what it sends us, so we need no codecs. */
export const CLIENT_HANDSHAKE: Readonly<Record<string, unknown>> = Object.freeze({
  compression: null,
  python: [3, 11, 2],
  'pickle-protocol': 5,
});

/** A value Dask sent out of band (pickled or with a custom serializer); kept as raw bytes. */
export class SerializedValue {
  constructor(
    /** `'serialized'` for `__Serialized__`, `'pickled'` for `__Pickled__`. */
    readonly kind: 'serialized' | 'pickled',
    /** The decoded sub-header (e.g. `{serializer: 'pickle', ...}`). */
    readonly header: unknown,
    /** The payload frames, not decoded. */
    readonly frames: readonly Uint8Array[],
  ) {}

  /** Name of the serializer that produced it, when the header says. */
  get serializer(): string | undefined {
    const h = this.header;
    if (h !== null && typeof h === 'object' && typeof (h as Record<string, unknown>).serializer === 'string') {
      return (h as Record<string, string>).serializer;
    }
    return this.kind === 'pickled' ? 'pickle' : undefined;
  }

  /** Total payload size in bytes. */
  get byteLength(): number {
    return this.frames.reduce((n, f) => n + f.byteLength, 0);
  }
}

/** Deeper nesting than this is not something a scheduler reply has; refuse instead of recursing. */
const MAX_DEPTH = 512;

// Python dict keys may be ints, tuples or None; JS object keys are strings.
function mapKeyConverter(key: unknown): string | number {
  if (typeof key === 'string' || typeof key === 'number') return key;
  if (key === null) return 'None';
  if (typeof key === 'bigint' || typeof key === 'boolean') return String(key);
  try {
    return JSON.stringify(key, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  } catch {
    return String(key);
  }
}

function protocolError(message: string, cause?: unknown): DaskCommError {
  return new DaskCommError('E_PROTOCOL', message, { cause });
}

function decodeMsgpack(frame: Uint8Array, what: string): unknown {
  try {
    return loadMsgpack().decode(frame, { mapKeyConverter });
  } catch (err) {
    throw protocolError(`${what} is not valid msgpack: ${(err as Error).message}`, err);
  }
}

/** Encode one message as Dask frames (a single msgpack frame: we never send out-of-band data). */
export function encodeMessage(message: unknown): Uint8Array[] {
  return [loadMsgpack().encode(message, { ignoreUndefined: true })];
}

/** Decode the frames of one message, resolving out-of-band references to {@link SerializedValue}. */
export function decodeMessage(frames: readonly Uint8Array[]): unknown {
  if (frames.length === 0) throw protocolError('message without frames');
  const root = decodeMsgpack(frames[0]!, 'frame 0');

  const subFrames = (kind: 'serialized' | 'pickled', index: unknown): SerializedValue => {
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 1 || index >= frames.length) {
      throw protocolError(`out-of-band reference ${String(index)} outside the ${frames.length} frames received`);
    }
    const header = decodeMsgpack(frames[index]!, `sub-header in frame ${index}`);
    const count = (header as Record<string, unknown> | null)?.['num-sub-frames'];
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 0 || index + 1 + count > frames.length) {
      throw protocolError(`sub-header in frame ${index} declares ${String(count)} sub-frames; ${frames.length} frames received`);
    }
    return new SerializedValue(kind, header, frames.slice(index + 1, index + 1 + count));
  };

  const walk = (value: unknown, depth: number): unknown => {
    if (depth > MAX_DEPTH) throw protocolError(`message nested deeper than ${MAX_DEPTH} levels`);
    if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return value;
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) value[i] = walk(value[i], depth + 1);
      return value;
    }
    const obj = value as Record<string, unknown>;
    const ser = obj.__Serialized__;
    if (typeof ser === 'number' && ser > 0) return subFrames('serialized', ser);
    if (ser === true && Array.isArray(obj.data) && obj.data.length === 2) {
      // In-band form (msgpack_encode_default): data = [header, frames].
      const [header, payload] = obj.data as [unknown, unknown];
      const list = Array.isArray(payload) ? payload.filter((f): f is Uint8Array => f instanceof Uint8Array) : [];
      return new SerializedValue('serialized', walk(header, depth + 1), list);
    }
    const pickled = obj.__Pickled__;
    if (typeof pickled === 'number' && pickled > 0) return subFrames('pickled', pickled);
    if (obj.__Set__ === true && Array.isArray(obj['as-list'])) return walk(obj['as-list'], depth + 1);
    for (const key of Object.keys(obj)) obj[key] = walk(obj[key], depth + 1);
    return obj;
  };
  return walk(root, 0);
}

/** What we can tell about an `uncaught-error` reply without unpickling anything. */
export interface RemoteErrorInfo {
  /** `repr()` of the Python exception, when sent as plain text. */
  exceptionText?: string;
  /** Formatted Python traceback, when sent as plain text. */
  tracebackText?: string;
  /** One line for people: the exception text, or what is known about the pickled payload. */
  summary: string;
}

/** True when a reply is Dask's `{status: 'uncaught-error', ...}` shape. */
export function isRemoteError(reply: unknown): reply is Record<string, unknown> {
  return (
    reply !== null &&
    typeof reply === 'object' &&
    !Array.isArray(reply) &&
    (reply as Record<string, unknown>).status === 'uncaught-error'
  );
}

/** Extract the readable parts of an error reply. */
export function remoteErrorInfo(reply: Record<string, unknown>): RemoteErrorInfo {
  const text = (v: unknown): string | undefined => (typeof v === 'string' && v.length > 0 ? v : undefined);
  const exceptionText = text(reply.exception_text);
  const tracebackText = text(reply.traceback_text);
  let summary = exceptionText;
  if (summary === undefined) {
    const exc = reply.exception;
    summary =
      exc instanceof SerializedValue
        ? `an exception serialized with ${exc.serializer ?? 'an unknown serializer'} (${exc.byteLength} bytes, not decoded)`
        : typeof exc === 'string'
          ? exc
          : 'an error without text';
  }
  return { exceptionText, tracebackText, summary };
}
