/**
 * Frame codec and message decoding, against hand-built frames and bytes captured from real
 * Dask 2022.12 (`distributed.protocol.dumps` + the tcp.py header), so no Python is needed here.
 */
import { describe, expect, it } from 'vitest';
import { encode } from '@msgpack/msgpack';
import { DaskCommError } from '../../src/errors';
import {
  CLIENT_HANDSHAKE,
  decodeMessage,
  encodeFrames,
  encodeMessage,
  FrameDecoder,
  isRemoteError,
  parseAddress,
  remoteErrorInfo,
  SerializedValue,
} from '../../src/dask';

const bytes = (...xs: number[]): Uint8Array => Uint8Array.from(xs);
const hex = (h: string): Buffer => Buffer.from(h, 'hex');

/** A header written by hand: `L`, `n`, lengths (as BigInt so absurd values can be expressed). */
function header(L: bigint, lengths: bigint[]): Buffer {
  const b = Buffer.alloc(16 + 8 * lengths.length);
  b.writeBigUInt64LE(L, 0);
  b.writeBigUInt64LE(BigInt(lengths.length), 8);
  lengths.forEach((l, i) => b.writeBigUInt64LE(l, 16 + 8 * i));
  return b;
}

function expectProtocolError(fn: () => unknown): DaskCommError {
  try {
    fn();
  } catch (err) {
    expect(DaskCommError.isInstance(err)).toBe(true);
    expect((err as DaskCommError).code).toBe('E_PROTOCOL');
    return err as DaskCommError;
  }
  throw new Error('expected E_PROTOCOL');
}

// Python: pack(Comm.handshake_info()) from a 3.11.2 scheduler.
const PY_HANDSHAKE = hex(
  '3a0000000000000001000000000000002a0000000000000083ab636f6d7072657373696f6ec0a6707974686f6e93030b02af7069636b6c652d70726f746f636f6c05',
);
// Python: {"a": {1, 2}, "b": b"\x00\x01", "c": (1, "x"), 5: None, (1, 2): 3}
const PY_MIXED = hex(
  '3a0000000000000001000000000000002a0000000000000085a16182a75f5f5365745f5fc3a761732d6c697374920102a162c4020001a1639201a17805c092010203',
);
// Python: error_message(ValueError("boom"), status="uncaught-error") with traceback=None:
// frame 0 refers to the pickled exception as {"__Serialized__": 1}; frames 1-2 hold it.
const PY_ERROR = hex(
  'a2030000000000000300000000000000b700000000000000a0000000000000002b0200000000000085a6737461747573ae756e6361756768742d6572726f72a9657863657074696f6e81ae5f5f53657269616c697a65645f5f01a974726163656261636bc0ae657863657074696f6e5f74657874b256616c75654572726f722827626f6f6d2729ae74726163656261636b5f74657874d947202046696c6520223c737464696e3e222c206c696e652031332c20696e203c6d6f64756c653e0a202046696c6520223c737464696e3e222c206c696e652031312c20696e20660a88aa7375622d68656164657280a474797065a56279746573af747970652d73657269616c697a6564c42180059516000000000000008c086275696c74696e73948c0562797465739493942eaa73657269616c697a6572a46461736bb473706c69742d6e756d2d7375622d6672616d65739101ad73706c69742d6f6666736574739100ab636f6d7072657373696f6e91c0ae6e756d2d7375622d6672616d65730180059520020000000000008c1674626c69622e7069636b6c696e675f737570706f7274948c12756e7069636b6c655f657863657074696f6e949394288c086275696c74696e73948c0a56616c75654572726f729493948c04626f6f6d9485944e68008c12756e7069636b6c655f74726163656261636b9493948c0574626c6962948c054672616d659493942981947d94288c08665f6c6f63616c73947d948c09665f676c6f62616c73947d94288c085f5f6e616d655f5f948c085f5f6d61696e5f5f948c085f5f66696c655f5f948c073c737464696e3e94758c06665f636f646594680a8c04436f64659493942981947d94288c0b636f5f66696c656e616d659468168c07636f5f6e616d65948c083c6d6f64756c653e948c0b636f5f617267636f756e74944b008c11636f5f6b776f6e6c79617267636f756e74944b008c0b636f5f7661726e616d657394298c0a636f5f6e6c6f63616c73944b008c0c636f5f737461636b73697a65944b008c08636f5f666c616773944b408c0e636f5f66697273746c696e656e6f944b0075628c08665f6c696e656e6f944b0f75624b0d680a8c0954726163656261636b9493942981947d94288c0874625f6672616d6594680c2981947d9428680f7d9468117d9428681368146815681675681768192981947d9428681c6816681d8c016694681f4b0068204b0068212968224b0068234b0068244b4068254b00756268264b0b75628c0974625f6c696e656e6f944b0b756287945294749452942e',
);

describe('encodeFrames', () => {
  it('writes L (covering everything after itself), nframes and lengths little-endian', () => {
    const out = encodeFrames([bytes(1, 2, 3), bytes(), bytes(9)]);
    expect(out.byteLength).toBe(8 + 8 * 4 + 4);
    expect(out.readBigUInt64LE(0)).toBe(BigInt(out.byteLength - 8));
    expect(out.readBigUInt64LE(8)).toBe(3n);
    expect([out.readBigUInt64LE(16), out.readBigUInt64LE(24), out.readBigUInt64LE(32)]).toEqual([3n, 0n, 1n]);
    expect([...out.subarray(40)]).toEqual([1, 2, 3, 9]);
  });

  it('produces the same bytes as Python for the same frame 0', () => {
    // Python msgpack packs {compression, python, pickle-protocol} exactly as @msgpack/msgpack does.
    const ours = encodeFrames(encodeMessage({ compression: null, python: [3, 11, 2], 'pickle-protocol': 5 }));
    expect(ours.equals(PY_HANDSHAKE)).toBe(true);
    expect(encodeFrames(encodeMessage(CLIENT_HANDSHAKE)).equals(PY_HANDSHAKE)).toBe(true);
  });
});

describe('FrameDecoder', () => {
  const frames = [bytes(1, 2, 3), bytes(), Uint8Array.from({ length: 300 }, (_, i) => i % 251)];
  const wire = encodeFrames(frames);

  it('round-trips a message delivered in one chunk', () => {
    const d = new FrameDecoder();
    const out = d.push(wire);
    expect(out).toHaveLength(1);
    expect(out[0]!.map((f) => [...f])).toEqual(frames.map((f) => [...f]));
    expect(d.pendingBytes).toBe(0);
  });

  it('reassembles a message split at every possible boundary', () => {
    for (let cut = 1; cut < wire.byteLength; cut++) {
      const d = new FrameDecoder();
      expect(d.push(wire.subarray(0, cut))).toEqual([]);
      const out = d.push(wire.subarray(cut));
      expect(out).toHaveLength(1);
      expect(out[0]!.map((f) => [...f])).toEqual(frames.map((f) => [...f]));
    }
  });

  it('reassembles a message delivered one byte at a time', () => {
    const d = new FrameDecoder();
    const got: Uint8Array[][] = [];
    for (const b of wire) got.push(...d.push(bytes(b)));
    expect(got).toHaveLength(1);
    expect(got[0]!.map((f) => [...f])).toEqual(frames.map((f) => [...f]));
  });

  it('returns several messages from one chunk, in order, and keeps a partial tail', () => {
    const a = encodeFrames([bytes(1)]);
    const b = encodeFrames([bytes(2, 2)]);
    const c = encodeFrames([bytes(3, 3, 3)]);
    const d = new FrameDecoder();
    const out = d.push(Buffer.concat([a, b, c.subarray(0, 20)]));
    expect(out.map((m) => [...m[0]!])).toEqual([[1], [2, 2]]);
    expect(d.pendingBytes).toBe(20);
    expect(d.push(c.subarray(20)).map((m) => [...m[0]!])).toEqual([[3, 3, 3]]);
    expect(d.pendingBytes).toBe(0);
  });

  it('finds the end from the frame lengths when L covers only part of the message (Dask 2023.11+)', () => {
    const payload = [bytes(7, 7), bytes(8, 8, 8)];
    // L covering just the prelude, as a writer that sends frames separately may do.
    const msg = Buffer.concat([header(BigInt(8 * 3), [2n, 3n]), ...payload]);
    const next = encodeFrames([bytes(9)]);
    const d = new FrameDecoder();
    const out = d.push(Buffer.concat([msg, next]));
    expect(out.map((m) => m.map((f) => [...f]))).toEqual([[[7, 7], [8, 8, 8]], [[9]]]);
  });

  it('decodes real Dask bytes', () => {
    const d = new FrameDecoder();
    const [msg] = d.push(PY_ERROR);
    expect(msg).toHaveLength(3);
  });

  it('reads lengths as 64-bit: 2^32 is not mistaken for 0', () => {
    // A 32-bit reader would see a zero-length frame and return a message at once.
    const d = new FrameDecoder({ maxMessageBytes: 2 ** 40 });
    expect(d.push(header(16n, [2n ** 32n]))).toEqual([]);
    expect(d.push(bytes(1, 2, 3))).toEqual([]);
  });

  it('rejects an absurd L with E_PROTOCOL', () => {
    const err = expectProtocolError(() => new FrameDecoder().push(header(2n ** 63n, [1n])));
    expect(err.message).toMatch(/exceeds the limit/);
    // What an HTTP server's reply looks like when read as a header.
    expectProtocolError(() => new FrameDecoder().push(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n')));
  });

  it('rejects an absurd frame count with E_PROTOCOL', () => {
    expectProtocolError(() => new FrameDecoder().push(header(16n, []).fill(0xff, 8, 16)));
    expectProtocolError(() => new FrameDecoder({ maxFrames: 4 }).push(header(48n, [1n, 1n, 1n, 1n, 1n])));
  });

  it('rejects frame lengths above the cap, including ones that only overflow when summed', () => {
    expectProtocolError(() => new FrameDecoder().push(header(24n, [2n ** 64n - 1n])));
    expectProtocolError(() => new FrameDecoder({ maxMessageBytes: 1000 }).push(header(40n, [500n, 500n, 500n])));
    // Within the cap: waits for the bytes instead.
    expect(new FrameDecoder({ maxMessageBytes: 1000 }).push(header(40n, [300n, 300n, 300n]))).toEqual([]);
  });
});

describe('decodeMessage', () => {
  it('decodes str as string, bin as bytes, sets as arrays, non-string keys as strings', () => {
    const [frames] = new FrameDecoder().push(PY_MIXED);
    const msg = decodeMessage(frames!) as Record<string, unknown>;
    expect(msg.a).toEqual([1, 2]);
    expect(msg.b).toBeInstanceOf(Uint8Array);
    expect([...(msg.b as Uint8Array)]).toEqual([0, 1]);
    expect(msg.c).toEqual([1, 'x']);
    expect(msg['5']).toBeNull();
    expect(msg['[1,2]']).toBe(3);
  });

  it('round-trips our own messages', () => {
    const m = { op: 'retire_workers', reply: true, workers: ['tls://127.0.0.1:1'], close_workers: true, skip: undefined };
    const back = decodeMessage(encodeMessage(m)) as Record<string, unknown>;
    expect(back).toEqual({ op: 'retire_workers', reply: true, workers: ['tls://127.0.0.1:1'], close_workers: true });
    expect('skip' in back).toBe(false);
  });

  it('keeps an error reply readable without unpickling the exception', () => {
    const [frames] = new FrameDecoder().push(PY_ERROR);
    const reply = decodeMessage(frames!);
    expect(isRemoteError(reply)).toBe(true);
    const r = reply as Record<string, unknown>;
    expect(r.exception).toBeInstanceOf(SerializedValue);
    const exc = r.exception as SerializedValue;
    expect(exc.kind).toBe('serialized');
    expect(exc.serializer).toBe('dask');
    expect(exc.frames).toHaveLength(1);
    expect(r.traceback).toBeNull();
    const info = remoteErrorInfo(r);
    expect(info.exceptionText).toBe("ValueError('boom')");
    expect(info.tracebackText).toMatch(/line 11, in f/);
    expect(info.summary).toBe("ValueError('boom')");
  });

  it('reports what it can when the exception is only available pickled', () => {
    const frame0 = encode({ status: 'uncaught-error', exception: { __Serialized__: 1 }, traceback: null });
    const sub = encode({ serializer: 'pickle', 'num-sub-frames': 1 });
    const reply = decodeMessage([frame0, sub, bytes(0x80, 5, 0x2e)]) as Record<string, unknown>;
    const info = remoteErrorInfo(reply);
    expect(info.exceptionText).toBeUndefined();
    expect(info.summary).toMatch(/serialized with pickle \(3 bytes, not decoded\)/);
  });

  it('handles __Pickled__ references and rejects references outside the frames', () => {
    const frame0 = encode({ value: { __Pickled__: 1 } });
    const sub = encode({ 'pickled-obj': bytes(1), 'num-sub-frames': 0 });
    const v = (decodeMessage([frame0, sub]) as Record<string, unknown>).value as SerializedValue;
    expect(v.kind).toBe('pickled');
    expect(v.serializer).toBe('pickle');
    expectProtocolError(() => decodeMessage([encode({ x: { __Serialized__: 4 } })]));
    expectProtocolError(() => decodeMessage([encode({ x: { __Serialized__: 1 } }), encode({ 'num-sub-frames': 5 })]));
  });

  it('turns garbage into E_PROTOCOL', () => {
    expectProtocolError(() => decodeMessage([bytes(0xc1)]));
    expectProtocolError(() => decodeMessage([]));
  });
});

describe('parseAddress', () => {
  it('parses tls, tcp and bracketed IPv6', () => {
    expect(parseAddress('tls://127.0.0.1:8786')).toEqual({ protocol: 'tls', host: '127.0.0.1', port: 8786 });
    expect(parseAddress('tcp://sched.internal:1')).toEqual({ protocol: 'tcp', host: 'sched.internal', port: 1 });
    expect(parseAddress('TLS://[::1]:65535')).toEqual({ protocol: 'tls', host: '::1', port: 65535 });
  });

  it.each([
    '127.0.0.1:8786',
    'ucx://127.0.0.1:8786',
    'tls://127.0.0.1',
    'tls://:8786',
    'tls://::1:8786',
    'tls://[::1]8786',
    'tls://[nonsense]:1',
    'tls://127.0.0.1:0',
    'tls://127.0.0.1:65536',
    'tls://127.0.0.1:80a',
    'tls://a b:1',
  ])('rejects %s with a ValidationError', (bad) => {
    expect(() => parseAddress(bad)).toThrow(expect.objectContaining({ code: 'E_INVALID_OPTION' }));
  });
});
