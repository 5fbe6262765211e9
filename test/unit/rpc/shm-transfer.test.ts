// Shared-memory transfers of RPC frames, without sockets: offers, hello records, the sender's segment pool and its
// hand-back by the receiver's garbage collector, and the records the receiver must refuse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { loadAddon, type NativeAddon } from '../../../collective/native/addon.js';
import { TRANSFER_HEADER_BYTES, TRANSFER_MAGIC, TransferReader } from '../../../rpc/data-channel.js';
import { FrameError } from '../../../rpc/frame.js';
import {
  HelloReader,
  acceptOffer,
  decodeOffer,
  encodeOffer,
  helloRecord,
  parseShmRecord,
  SHM_MIN_BYTES,
  SHM_RECORD_BYTES,
  ShmProbe,
  ShmReceiver,
  ShmSender,
} from '../../../rpc/shm-transfer.js';

const loaded = loadAddon();
const skip = loaded.ok ? false : `the native addon does not load: ${loaded.reason}`;
const addon = (): NativeAddon => (loaded as { addon: NativeAddon }).addon;

const viewBytes = (): { live: number; reported: number } => {
  const { live, reported } = addon().xferViewBytes();
  return { live, reported };
};

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Collects garbage until the finalizers of dropped views have run (they may be deferred to the next turns). */
async function collect(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
}

function frameOf(bytes: number, seed: number): { parts: Buffer[]; bytes: number } {
  const head = Buffer.alloc(16, seed);
  const body = Buffer.alloc(bytes - 16);
  for (let i = 0; i < body.byteLength; i += 4096) body[i] = (i / 4096 + seed) & 0xff;
  return { parts: [head, body], bytes };
}

test('an offer round-trips, and a wrong size is a FrameError', () => {
  const o = { pid: 1234, fd: 17, token: Buffer.alloc(16, 9) };
  assert.deepEqual(decodeOffer(encodeOffer(o)), o);
  assert.throws(() => decodeOffer(Buffer.alloc(23)), /shared-memory offer of 23 bytes \(expected 24\)/);
});

test('hello records are read across any split; anything else from the receiving side is refused', () => {
  const wire = Buffer.concat([helloRecord(), helloRecord()]);
  for (let cut = 0; cut <= wire.byteLength; cut++) {
    let hellos = 0;
    const r = new HelloReader(() => hellos++);
    r.push(wire.subarray(0, cut));
    r.push(wire.subarray(cut));
    assert.equal(hellos, 2, `cut at ${cut}`);
  }
  assert.throws(() => new HelloReader(() => {}).push(Buffer.from('garbage!')), FrameError);
  const notHello = helloRecord();
  notHello.writeUInt32LE(7, 4);
  assert.throws(() => new HelloReader(() => {}).push(notHello), /unexpected bytes from the receiving side/);
});

test('a shared-memory record where none was agreed is refused by the transfer parser', () => {
  const rec = Buffer.alloc(SHM_RECORD_BYTES);
  rec.writeUInt32LE(0x31534454, 0);
  rec.writeUInt32LE(1, 4);
  const r = new TransferReader({ onTransfer: () => assert.fail('no frame expected') });
  assert.throws(() => r.push(rec), /shared memory was not agreed/);
});

test('the probe of this process opens here and a wrong token does not', { skip }, () => {
  const p = ShmProbe.create(addon())!;
  try {
    assert.equal(acceptOffer(addon(), p.offer), true);
    assert.equal(acceptOffer(addon(), { ...p.offer, token: Buffer.alloc(16) }), false);
    assert.equal(acceptOffer(addon(), { ...p.offer, fd: 999_999 }), false);
  } finally {
    p.close();
  }
});

test(
  'frames go through a segment intact; a segment is reused only after the receiver dropped its frame',
  {
    skip,
  },
  async () => {
    const tx = new ShmSender(addon());
    const rx = new ShmReceiver(addon());
    try {
      assert.equal(tx.record(1, frameOf(SHM_MIN_BYTES - 8, 1)), null, 'below SHM_MIN_BYTES the socket is used');
      const size = 2 << 20;
      let held: Buffer | null = null;
      for (let id = 1; id <= 3; id++) {
        const f = frameOf(size, id);
        const rec = tx.record(id, f)!;
        assert.ok(rec, `frame ${id} went through shared memory`);
        const got = rx.read(parseShmRecord(rec, 0));
        assert.deepEqual(got, Buffer.concat(f.parts), `frame ${id} arrived intact`);
        got[0] = 0xee; // received frames are writable
        if (id === 1) held = got;
      }
      // Frames 2 and 3 were dropped but not collected, frame 1 is held: three segments.
      assert.equal(tx.segments, 3);
      await collect();
      for (let id = 4; id <= 10; id++) {
        rx.read(parseShmRecord(tx.record(id, frameOf(size, id))!, 0));
        await collect();
      }
      assert.equal(tx.segments, 3, "dropped frames' segments are reused, the held one is not");
      assert.equal(held![0], 0xee, 'a held frame is never overwritten by later transfers');
      assert.equal(held![16 + 4096], (1 + 1) & 0xff);
    } finally {
      tx.close();
      rx.close();
    }
  },
);

test(
  'received frames are SharedArrayBuffer views that V8 does not count, until 128 MiB of them are alive',
  { skip },
  async () => {
    const tx = new ShmSender(addon());
    const rx = new ShmReceiver(addon());
    try {
      for (let i = 0; i < 50 && addon().xferViewBytes().live > 0; i++) await collect(); // earlier tests' frames
      const f = frameOf(8 << 20, 7);
      const external = (): number => process.memoryUsage().external;
      const before = external();
      const held: Buffer[] = [];
      for (let id = 1; id <= 15; id++) held.push(rx.read(parseShmRecord(tx.record(id, f)!, 0)));
      assert.ok(held[0]!.buffer instanceof SharedArrayBuffer);
      const grew = external() - before;
      assert.ok(grew < 16 << 20, `120 MiB of live frames counted ${grew} bytes of external memory (expected < 16 MiB)`);
      assert.equal(addon().xferViewBytes().reported, 0, 'below the threshold nothing is reported');
      for (let id = 16; id <= 20; id++) held.push(rx.read(parseShmRecord(tx.record(id, f)!, 0)));
      // 160 MiB alive: the 32 MiB beyond the threshold are reported, so that V8 collects dropped frames.
      assert.deepEqual(viewBytes(), { live: 160 << 20, reported: 32 << 20 });
      held.length = 0;
      // V8 may free the collected views on a background thread, a little after the collection.
      for (let i = 0; i < 50 && addon().xferViewBytes().live > 0; i++) await collect();
      rx.read(parseShmRecord(tx.record(21, f)!, 0)); // the next view settles the report
      assert.deepEqual(viewBytes(), { live: 8 << 20, reported: 0 });
      assert.equal(tx.segments, 20, 'the collected frames handed their segments back (frame 21 reused one)');
    } finally {
      tx.close();
      rx.close();
    }
  },
);

test('large frames from a socket land in reused native receive buffers on SharedArrayBuffers', { skip }, async () => {
  const alloc = (n: number): Buffer => Buffer.from(addon().xferAlloc(n));
  const frames: Buffer[] = [];
  const reader = new TransferReader({ onTransfer: (_id, f) => frames.push(f) }, alloc);
  const body = Buffer.alloc((3 << 20) + 5);
  for (let i = 0; i < body.byteLength; i += 4096) body[i] = (i / 4096) & 0xff;
  const header = Buffer.alloc(TRANSFER_HEADER_BYTES);
  header.writeUInt32LE(TRANSFER_MAGIC, 0);
  header.writeUInt32LE(1, 4);
  header.writeUInt32LE(body.byteLength, 8);
  reader.push(Buffer.concat([header, body]));
  assert.equal(frames.length, 1);
  assert.ok(frames[0]!.buffer instanceof SharedArrayBuffer, 'a large frame is a native receive buffer');
  assert.ok(frames[0]!.equals(body), 'and arrives intact');
  for (let i = 0; i < 50 && addon().xferViewBytes().live > 0; i++) await collect(); // earlier tests' frames
  const before = addon().xferViewBytes();
  const held = alloc(3 << 20);
  assert.equal(addon().xferViewBytes().live, before.live + (3 << 20));
  frames.length = 0; // the frame's buffer goes back to the cache once collected
  for (let i = 0; i < 50 && addon().xferViewBytes().cached === before.cached; i++) await collect();
  const cached = addon().xferViewBytes().cached;
  assert.equal(cached, before.cached + (4 << 20), 'a freed buffer is kept (sizes round up to 1 MiB)');
  const again = alloc((3 << 20) + 100);
  assert.equal(addon().xferViewBytes().cached, cached - (4 << 20), 'and the next frame of that size takes it');
  assert.equal(again.byteLength + held.byteLength, (6 << 20) + 100);
});

test('idle segments, mappings and kept receive buffers are let go; busy ones stay', { skip }, async () => {
  const tx = new ShmSender(addon());
  const rx = new ShmReceiver(addon());
  try {
    const size = 2 << 20;
    let held: Buffer | null = rx.read(parseShmRecord(tx.record(1, frameOf(size, 1))!, 0));
    rx.read(parseShmRecord(tx.record(2, frameOf(size, 2))!, 0)); // dropped at once
    assert.deepEqual([tx.segments, rx.mapped], [2, 2]);
    for (let i = 0; i < 50 && addon().xferViewBytes().live > size; i++) await collect();
    assert.equal(tx.trim(60_000), 0, 'recently used segments stay');
    assert.equal(tx.trim(0), 1, 'the idle segment whose frame was dropped goes');
    assert.equal(tx.segments, 1, 'the one whose frame the receiver holds stays');
    assert.equal(held[0], 1, 'and the held frame is intact');
    assert.equal(rx.trim(0), 2, 'the receiver unmaps both (the held view keeps its own mapping)');
    assert.equal(held[16 + 4096], (1 + 1) & 0xff);
    held = null;
    for (let i = 0; i < 50 && addon().xferViewBytes().live > 0; i++) await collect();
    assert.equal(tx.trim(0), 1, 'once the held frame is collected its segment goes too');
    // Kept receive buffers.
    let buf: Buffer | null = Buffer.from(addon().xferAlloc(3 << 20));
    buf.fill(7);
    buf = null;
    for (let i = 0; i < 50 && addon().xferViewBytes().cached === 0; i++) await collect();
    assert.ok(addon().xferViewBytes().cached >= 3 << 20);
    assert.equal(addon().xferTrim(60_000), 0, 'recently freed buffers stay');
    assert.ok(addon().xferTrim(0) >= 3 << 20, 'idle ones are unmapped');
    assert.equal(addon().xferViewBytes().cached, 0);
  } finally {
    tx.close();
    rx.close();
  }
});

test('a record naming a descriptor that is gone or a file of another inode is a FrameError naming it', { skip }, () => {
  const tx = new ShmSender(addon());
  const rx = new ShmReceiver(addon());
  try {
    const rec = tx.record(1, frameOf(1 << 20, 1))!;
    const r = parseShmRecord(rec, 0);
    assert.throws(
      () => rx.read({ ...r, ino: r.ino + 1 }),
      (e: unknown) => e instanceof FrameError && /is inode \d+ of \d+ bytes \(expected inode/.test(e.message),
    );
    assert.throws(
      () => rx.read({ ...r, fd: 999_999 }),
      (e: unknown) => e instanceof FrameError && /open \/proc\/\d+\/fd\/999999/.test(e.message),
    );
    assert.throws(() => rx.read({ ...r, frameBytes: r.segmentBytes }), /of \d+ bytes in a segment of/);
    assert.equal(rx.read(r).byteLength, 1 << 20, 'the real record still reads');
  } finally {
    tx.close();
    rx.close();
  }
});
