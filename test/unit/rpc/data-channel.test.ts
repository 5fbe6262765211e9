// The data channel's transfer parser: headers split anywhere, several transfers in one chunk, bad input refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { STAGE_BYTES, TRANSFER_MAGIC, TransferReader } from '../../../rpc/data-channel.js';
import { FrameError } from '../../../rpc/frame.js';

function transfer(id: number, body: Buffer): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt32LE(TRANSFER_MAGIC, 0);
  h.writeUInt32LE(id, 4);
  h.writeUInt32LE(body.byteLength, 8);
  return Buffer.concat([h, body]);
}

test('transfers split at every byte boundary are reassembled with their ids', () => {
  const bodies = [Buffer.alloc(40, 7), Buffer.from('0123456789abcdef0123')];
  const wire = Buffer.concat([transfer(1, bodies[0]!), transfer(2, bodies[1]!)]);
  for (let cut = 1; cut < wire.byteLength; cut++) {
    const got: [number, Buffer][] = [];
    const r = new TransferReader({ onTransfer: (id, f) => void got.push([id, f]) });
    r.push(wire.subarray(0, cut));
    r.push(wire.subarray(cut));
    assert.deepEqual(got, [
      [1, bodies[0]],
      [2, bodies[1]],
    ]);
  }
});

test('reads into nextBuffer and advance deliver small and larger-than-staging transfers intact', () => {
  const body = Buffer.from('the frame bytes, header and all');
  const big = Buffer.alloc(STAGE_BYTES + 1000);
  for (let i = 0; i < big.byteLength; i++) big[i] = i % 251;
  const wire = Buffer.concat([transfer(1, body), transfer(2, big), transfer(3, body)]);
  const got: Buffer[] = [];
  const r = new TransferReader({ onTransfer: (_id, f) => void got.push(f) });
  let off = 0;
  while (off < wire.byteLength) {
    const dst = r.nextBuffer();
    assert.ok(dst.byteLength > 0, 'the reader never offers an empty buffer');
    const n = Math.min(dst.byteLength, 70_000, wire.byteLength - off);
    wire.copy(dst, 0, off, off + n);
    off += n;
    r.advance(n);
  }
  assert.equal(got.length, 3);
  assert.ok(
    got[0]!.equals(body) && got[1]!.equals(big) && got[2]!.equals(body),
    'transfers arrive intact and in order',
  );
});

test('a transfer id out of sequence is refused (a desynchronized or forged stream)', () => {
  const r = new TransferReader({ onTransfer: () => undefined });
  r.push(transfer(1, Buffer.alloc(16)));
  assert.throws(() => r.push(transfer(3, Buffer.alloc(16))), /transfer id 3 out of sequence \(expected 2\)/);
});

test('a bad magic or a transfer shorter than a frame header is refused with a FrameError', () => {
  const r = new TransferReader({ onTransfer: () => assert.fail('nothing should be delivered') });
  assert.throws(
    () => r.push(Buffer.from('garbage garbage garbage')),
    (e: FrameError) => /bad transfer magic/.test(e.message),
  );
  const short = transfer(1, Buffer.alloc(3));
  const r2 = new TransferReader({ onTransfer: () => assert.fail('nothing should be delivered') });
  assert.throws(
    () => r2.push(short),
    (e: FrameError) => e instanceof FrameError && /shorter than a frame header/.test(e.message),
  );
});
