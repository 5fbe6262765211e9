// The data channel's transfer parser: headers split anywhere, several transfers in one chunk, bad input refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TRANSFER_MAGIC, TransferReader } from '../../../rpc/data-channel.js';
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
  const wire = Buffer.concat([transfer(5, bodies[0]!), transfer(6, bodies[1]!)]);
  for (let cut = 1; cut < wire.byteLength; cut++) {
    const got: [number, Buffer][] = [];
    const r = new TransferReader({ onTransfer: (id, f) => void got.push([id, f]) });
    r.push(wire.subarray(0, cut));
    r.push(wire.subarray(cut));
    assert.deepEqual(got, [
      [5, bodies[0]],
      [6, bodies[1]],
    ]);
  }
});

test('reads into nextBuffer and advance deliver the same bytes as push', () => {
  const body = Buffer.from('the frame bytes, header and all');
  const wire = transfer(9, body);
  const got: Buffer[] = [];
  const r = new TransferReader({ onTransfer: (_id, f) => void got.push(f) });
  let off = 0;
  while (off < wire.byteLength) {
    const dst = r.nextBuffer();
    assert.ok(dst.byteLength > 0, 'the reader never offers an empty buffer');
    const n = Math.min(dst.byteLength, 7, wire.byteLength - off);
    wire.copy(dst, 0, off, off + n);
    off += n;
    r.advance(n);
  }
  assert.deepEqual(got, [body]);
});

test('a bad magic or a transfer shorter than a frame header is refused with a FrameError', () => {
  const r = new TransferReader({ onTransfer: () => assert.fail('nothing should be delivered') });
  assert.throws(() => r.push(Buffer.from('garbage garbage garbage')), (e: FrameError) => /bad transfer magic/.test(e.message));
  const short = transfer(1, Buffer.alloc(3));
  const r2 = new TransferReader({ onTransfer: () => assert.fail('nothing should be delivered') });
  assert.throws(() => r2.push(short), (e: FrameError) => e instanceof FrameError && /shorter than a frame header/.test(e.message));
});
