/**
 * Dask's TCP/TLS message framing (distributed `comm/tcp.py` + `protocol/utils.py`).
 *
 * One message on the wire:
 *
 * ```
 * u64 L | u64 nframes | u64 len[0] ... u64 len[nframes-1] | frame 0 | frame 1 | ...
 * ```
 *
 * All integers are little-endian. A writer sets `L` to the byte count after itself
 * (prelude + frames). Readers must not trust `L` for the end of the message: from 2023.11 Dask
 * may send an `L` that covers only part of the message, so the end is computed as
 * `8 + 8 * (1 + nframes) + sum(len)`. Lengths are read as BigInt and capped before they are
 * turned into numbers, so a garbage or hostile peer cannot make us allocate absurd buffers.
 *
 * Pure: no sockets, no msgpack. `protocol.ts` turns frames into objects.
 */
import { DaskCommError } from '../errors';

/** Bytes of one little-endian u64 field. */
const U64 = 8;

/** Limits applied while decoding. Exceeding one is an `E_PROTOCOL` error. */
export interface FrameLimits {
  /** Largest total message size accepted (header + frames), in bytes. Default 256 MiB. */
  maxMessageBytes?: number;
  /** Most frames accepted in one message. Default 65 536. */
  maxFrames?: number;
}

/** Control-plane replies (identity of a few thousand workers) are far below this. */
export const DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024;
export const DEFAULT_MAX_FRAMES = 65_536;

/**
 * Frame a message: returns one buffer with the header and every frame, `L` covering everything.
 * Our messages are small control requests, so one contiguous buffer (one `write`) is simplest.
 */
export function encodeFrames(frames: readonly Uint8Array[]): Buffer {
  const headerBytes = U64 * (2 + frames.length);
  let total = headerBytes;
  for (const f of frames) total += f.byteLength;
  const out = Buffer.allocUnsafe(total);
  out.writeBigUInt64LE(BigInt(total - U64), 0);
  out.writeBigUInt64LE(BigInt(frames.length), U64);
  let offset = 2 * U64;
  for (const f of frames) {
    out.writeBigUInt64LE(BigInt(f.byteLength), offset);
    offset += U64;
  }
  for (const f of frames) {
    out.set(f, offset);
    offset += f.byteLength;
  }
  return out;
}

function protocolError(message: string, details: Record<string, unknown> = {}): DaskCommError {
  return new DaskCommError('E_PROTOCOL', message, { details });
}

/**
 * Incremental decoder: feed it whatever the socket delivers, get back every message completed
 * by that chunk (zero, one or several), each as its list of frames.
 *
 * Chunks are collected in a list; a message is copied out once, when all its bytes are there,
 * so a large message arriving in many small reads costs O(size), not O(size²).
 */
export class FrameDecoder {
  private readonly maxMessageBytes: number;
  private readonly maxFrames: number;
  private chunks: Buffer[] = [];
  /** Total bytes held in `chunks`. */
  private buffered = 0;
  /** Frame lengths of the message being read, once its prelude has arrived. */
  private lengths: number[] | null = null;
  /** End offset of the message being read, once known. */
  private end = -1;

  constructor(limits: FrameLimits = {}) {
    this.maxMessageBytes = limits.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.maxFrames = limits.maxFrames ?? DEFAULT_MAX_FRAMES;
  }

  /** Bytes received but not yet part of a returned message. */
  get pendingBytes(): number {
    return this.buffered;
  }

  /**
   * Add received bytes; returns the messages completed so far, in order.
   * Throws `DaskCommError` `E_PROTOCOL` on impossible lengths; the stream is then unusable.
   */
  push(chunk: Uint8Array): Uint8Array[][] {
    if (chunk.byteLength > 0) {
      this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.buffered += chunk.byteLength;
    }
    const out: Uint8Array[][] = [];
    for (;;) {
      const message = this.next();
      if (message === null) return out;
      out.push(message);
    }
  }

  private next(): Uint8Array[] | null {
    if (this.lengths === null) {
      if (this.buffered < 2 * U64) return null;
      const head = this.peek(0, 2 * U64);
      const declared = head.readBigUInt64LE(0);
      const nframes = head.readBigUInt64LE(U64);
      // L is not used to find the end, but a value no writer could produce means we are not
      // talking to Dask (e.g. an HTTP or TLS peer): fail now rather than wait for bytes.
      if (declared > BigInt(this.maxMessageBytes)) {
        throw protocolError(`message length ${declared} exceeds the limit of ${this.maxMessageBytes} bytes`, {
          declaredLength: declared.toString(),
        });
      }
      if (nframes > BigInt(this.maxFrames)) {
        throw protocolError(`message declares ${nframes} frames, more than the limit of ${this.maxFrames}`, {
          nframes: nframes.toString(),
        });
      }
      const n = Number(nframes);
      const preludeEnd = U64 * (2 + n);
      if (this.buffered < preludeEnd) return null;
      const prelude = this.peek(2 * U64, U64 * n);
      const lengths: number[] = [];
      let sum = 0n;
      for (let i = 0; i < n; i++) {
        const len = prelude.readBigUInt64LE(U64 * i);
        sum += len;
        if (sum + BigInt(preludeEnd) > BigInt(this.maxMessageBytes)) {
          throw protocolError(`message size exceeds the limit of ${this.maxMessageBytes} bytes`, {
            frame: i,
            frameLength: len.toString(),
          });
        }
        lengths.push(Number(len));
      }
      this.lengths = lengths;
      this.end = preludeEnd + Number(sum);
    }
    if (this.buffered < this.end) return null;

    const lengths = this.lengths;
    const end = this.end;
    const whole = this.take(end);
    this.lengths = null;
    this.end = -1;
    const frames: Uint8Array[] = [];
    let offset = U64 * (2 + lengths.length);
    for (const len of lengths) {
      frames.push(whole.subarray(offset, offset + len));
      offset += len;
    }
    return frames;
  }

  /** Copy `length` bytes starting at `start` without consuming them. */
  private peek(start: number, length: number): Buffer {
    const out = Buffer.allocUnsafe(length);
    let written = 0;
    let at = start; // absolute offset of the next byte to copy
    let pos = 0; // absolute offset of the current chunk
    for (const c of this.chunks) {
      if (written === length) break;
      const cEnd = pos + c.byteLength;
      if (cEnd > at) {
        const from = at - pos;
        const n = Math.min(c.byteLength - from, length - written);
        c.copy(out, written, from, from + n);
        written += n;
        at += n;
      }
      pos = cEnd;
    }
    return out;
  }

  /** Consume the first `length` bytes as one buffer (a view when they sit in one chunk). */
  private take(length: number): Buffer {
    let whole: Buffer;
    const first = this.chunks[0];
    if (first !== undefined && first.byteLength >= length) {
      whole = first.subarray(0, length);
    } else {
      whole = Buffer.allocUnsafe(length);
      let written = 0;
      for (const c of this.chunks) {
        const n = Math.min(c.byteLength, length - written);
        c.copy(whole, written, 0, n);
        written += n;
        if (written === length) break;
      }
    }
    // Drop consumed chunks, keep the remainder of a partially consumed one as a view.
    let remaining = length;
    while (remaining > 0) {
      const c = this.chunks[0]!;
      if (c.byteLength <= remaining) {
        remaining -= c.byteLength;
        this.chunks.shift();
      } else {
        this.chunks[0] = c.subarray(remaining);
        remaining = 0;
      }
    }
    this.buffered -= length;
    return whole;
  }
}
