// RPC hands received tensors out on SharedArrayBuffers (rpc/shm-transfer.ts, collective/native/src/xfer.cc), so every
// native entry that takes a typed array must take one on a SharedArrayBuffer as well as on an ArrayBuffer
// (node-addon-api's TypedArray::ArrayBuffer() refuses those; src/args.h TypedArrayBytes does not).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadAddon, ShmDType, ShmKind, ShmOp, type NativeAddon } from '../../../collective/native/addon.js';

const loaded = loadAddon();
const skip = loaded.ok ? false : `native addon not built: ${loaded.reason}`;
const shared = (n: number, v: number): Float32Array => new Float32Array(new SharedArrayBuffer(n * 4)).fill(v);

describe('native entries take typed arrays on SharedArrayBuffers', { skip }, () => {
  const a = loaded.ok ? loaded.addon : (null as unknown as NativeAddon);

  it('the reduction kernel (shmReduce)', () => {
    const dst = shared(1000, 1);
    a.shmReduce(ShmDType.float32, ShmOp.sum, dst, [dst, shared(1000, 2), new Float32Array(1000).fill(4)], 1);
    assert.deepEqual([dst[0], dst[999]], [7, 7]);
  });

  it('an allreduce on the shared-memory plane, small and large', async () => {
    const made = a.shmOpen(2, 0, 1 << 20, 16 << 10, 0);
    const ranks = [made.group, a.shmOpen(2, 1, 1 << 20, 16 << 10, 0, made).group];
    a.shmSeal(ranks[0]!);
    try {
      for (const len of [100, 300_001]) {
        const bufs = [shared(len, 1), new Float32Array(len).fill(2)];
        const done = await Promise.all(
          ranks.map((g, r) =>
            a.shmSubmit(g, ShmKind.allreduce, ShmDType.float32, ShmOp.sum, 0, len, bufs[r], bufs[r], 10_000),
          ),
        );
        assert.deepEqual(
          done.map((r) => r.ok),
          [true, true],
          JSON.stringify(done),
        );
        for (const b of bufs) assert.deepEqual([b[0], b[len - 1]], [3, 3], `${len} elements`);
      }
    } finally {
      await Promise.all(ranks.map((g) => a.shmDestroy(g)));
    }
  });

  it('an allreduce on the socket plane, by recursive doubling and by the ring', async () => {
    for (const smallBytes of [1 << 30, 0]) {
      const ranks = [0, 1].map((r) => a.netOpen(2, r, '127.0.0.1', smallBytes, 8192));
      try {
        const peers = ranks.map((m) => ({ host: '127.0.0.1', port: m.port, token: m.token }));
        const up = await Promise.all(ranks.map((m) => a.netConnect(m.group, peers, 10_000)));
        assert.deepEqual(
          up.map((r) => r.ok),
          [true, true],
          JSON.stringify(up),
        );
        const len = 50_001;
        const bufs = [shared(len, 1), shared(len, 2)];
        const done = await Promise.all(
          ranks.map((m, r) =>
            a.netSubmit(m.group, ShmKind.allreduce, ShmDType.float32, ShmOp.sum, 0, len, bufs[r], bufs[r], 10_000),
          ),
        );
        assert.deepEqual(
          done.map((r) => r.ok),
          [true, true],
          JSON.stringify(done),
        );
        for (const b of bufs) assert.deepEqual([b[0], b[len - 1]], [3, 3], `smallBytes ${smallBytes}`);
      } finally {
        await Promise.all(ranks.map((m) => a.netDestroy(m.group)));
      }
    }
  });
});
