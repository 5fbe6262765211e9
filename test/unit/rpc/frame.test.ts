import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameError, MsgType, SegmentReader, decodeFrame, encodeFrame, packSegments } from '../../../rpc/frame.js';
import { decodeValue, encodeValue } from '../../../rpc/codec.js';

const body = (s: string): Uint8Array => new TextEncoder().encode(s);
const whole = (f: { parts: Buffer[]; bytes: number }): Buffer => Buffer.concat(f.parts, f.bytes);

test('a frame round-trips its type, id, body and tensors of every dtype', () => {
  const ts = [new Float32Array([1, 2, 3]), new Float64Array([4.5]), new Int32Array([-7, 8]), new Uint8Array([9])];
  const f = decodeFrame(whole(encodeFrame(MsgType.CALL, 42, body('{"x":1}'), ts)));
  assert.equal(f.type, MsgType.CALL);
  assert.equal(f.requestId, 42);
  assert.equal(new TextDecoder().decode(f.body), '{"x":1}');
  assert.deepEqual(f.tensors, ts);
});

test('tensor bytes travel beside the JSON body, not inside it', () => {
  const t = new Float32Array(1000).fill(3);
  const enc = encodeValue({ w: t, note: 'hi' });
  assert.equal(enc.tensors.length, 1);
  assert.ok(enc.body.byteLength < 40, `body is ${enc.body.byteLength} bytes`);
  assert.deepEqual(decodeValue(enc.body, enc.tensors), { w: t, note: 'hi' });
});

test('the codec keeps undefined, non-finite numbers and user keys that start with a dollar sign', () => {
  const v = { a: undefined, b: Infinity, c: NaN, $a: 5, list: [null, -Infinity] };
  const enc = encodeValue(v);
  assert.deepEqual(decodeValue(enc.body, enc.tensors), v);
});

test('small frames written together share one segment and come out in order', () => {
  const frames = [1, 2, 3].map((i) => encodeFrame(MsgType.RET, i, body(`{"v":${i}}`)));
  const segs = packSegments(frames);
  assert.equal(segs.length, 1);
  const out = new SegmentReader().push(segs[0]!).map((b) => decodeFrame(b).requestId);
  assert.deepEqual(out, [1, 2, 3]);
});

test('a frame larger than one segment is chunked and reassembled byte for byte', () => {
  const t = new Float32Array(300_000).map((_, i) => i);
  const frames = [encodeFrame(MsgType.CALL, 1, body('{}'), [t]), encodeFrame(MsgType.RET, 2, body('{}'))];
  const segs = packSegments(frames, 64 * 1024);
  assert.ok(segs.length > 10);
  for (const s of segs) assert.ok(s.byteLength <= 64 * 1024);
  const r = new SegmentReader();
  const got = segs.flatMap((s) => r.push(s)).map(decodeFrame);
  assert.deepEqual(
    got.map((f) => f.requestId),
    [1, 2],
  );
  assert.deepEqual(got[0]!.tensors[0], t);
});

test('a truncated frame is rejected with its request id so the caller can be answered', () => {
  const full = whole(encodeFrame(MsgType.CALL, 77, body('{"f":"x"}'), [new Float32Array(8)]));
  const cut = full.subarray(0, full.byteLength - 12);
  assert.throws(
    () => decodeFrame(cut),
    (e: unknown) => e instanceof FrameError && e.requestId === 77 && /truncated/.test(e.message),
  );
});

test('a segment whose length prefix overruns it is rejected as truncated', () => {
  const seg = packSegments([encodeFrame(MsgType.CALL, 5, body('{"a":1}'))])[0]!;
  assert.throws(
    () => new SegmentReader().push(seg.subarray(0, seg.byteLength - 3)),
    (e: unknown) => e instanceof FrameError && e.requestId === 5,
  );
});

test('garbage segments, bad versions and unknown dtypes are rejected with FrameError', () => {
  assert.throws(() => new SegmentReader().push(Buffer.from('Zhello')), FrameError);
  assert.throws(() => new SegmentReader().push(Buffer.alloc(0)), FrameError);
  assert.throws(() => new SegmentReader().push(Buffer.from('C123')), /unknown segment kind 0x43/);
  assert.throws(() => new SegmentReader().push(Buffer.from('S12')), /chunk start segment of 3 bytes/);
  const bad = whole(encodeFrame(MsgType.CALL, 1, body('{}')));
  bad.writeUInt8(9, 0);
  assert.throws(() => decodeFrame(bad), /version 9/);
  const dt = whole(encodeFrame(MsgType.CALL, 1, body('{}'), [new Float32Array(2)]));
  dt.writeUInt8(99, 16);
  assert.throws(() => decodeFrame(dt), /unknown tensor dtype 99/);
  assert.throws(() => decodeFrame(Buffer.alloc(5)), /shorter than/);
});

test('a body that is not JSON, or refers to a missing tensor, is rejected', () => {
  assert.throws(() => decodeValue(body('{nope'), []), /malformed message body/);
  assert.throws(() => decodeValue(body('{"$a":3}'), []), /refers to tensor 3 but carries 0/);
});

test('functions and bigints cannot be sent', () => {
  assert.throws(() => encodeValue({ f: () => 1 }), /type function/);
  assert.throws(() => encodeValue(1n), /type bigint/);
});
