import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import {
  loadAddon,
  ShmDType,
  ShmKind,
  ShmOp,
  type NativeAddon,
  type NativeNetGroup,
  type NativeShmResult,
} from '../../../collective/native/addon.js';

// The native socket plane (src/net.cc) driven directly, with every rank a group in this one process (each group has
// its own worker thread and sockets on loopback): mesh setup and its handshake against stray and wrong connections,
// results, the mismatch message, failure, timeout and destroy. The process-level suites (net-matrix, net-faults)
// cover the same plane under the ProcessGroup API.
const loaded = loadAddon();
const skip = loaded.ok ? false : `native addon not built: ${loaded.reason}`;
const HELLO_MAGIC = 0x4c454854;

interface Rank {
  readonly group: NativeNetGroup;
  readonly port: number;
  readonly token: string;
}

function open(a: NativeAddon, n: number, smallBytes = 64 << 10): Rank[] {
  return Array.from({ length: n }, (_, r) => a.netOpen(n, r, '127.0.0.1', smallBytes, 8192));
}

const peersOf = (ranks: Rank[]) => ranks.map((m) => ({ host: '127.0.0.1', port: m.port, token: m.token }));

async function connectAll(a: NativeAddon, ranks: Rank[], timeoutMs = 10_000): Promise<NativeShmResult[]> {
  return Promise.all(ranks.map((m) => a.netConnect(m.group, peersOf(ranks), timeoutMs)));
}

async function destroyAll(a: NativeAddon, ranks: Rank[]): Promise<void> {
  await Promise.all(ranks.map((m) => a.netDestroy(m.group)));
}

function rawConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

function hello(rank: number, tokenHex: string): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(HELLO_MAGIC, 0);
  b.writeUInt32LE(rank, 4);
  b.writeBigUInt64LE(BigInt(`0x${tokenHex}`), 8);
  return b;
}

describe('native socket plane, in one process', { skip }, () => {
  const a = loaded.ok ? loaded.addon : (null as unknown as NativeAddon);

  it('allreduce gives every rank the sum, by recursive doubling and by the ring, for 2 to 5 ranks', async () => {
    for (const n of [2, 3, 4, 5]) {
      for (const smallBytes of [1 << 30, 0]) {
        const ranks = open(a, n, smallBytes);
        try {
          assert.deepEqual(
            (await connectAll(a, ranks)).map((r) => r.ok),
            new Array(n).fill(true),
          );
          const len = 100_003;
          const bufs = ranks.map((_, r) => Float64Array.from({ length: len }, (_, i) => (r + 1) * 1000 + (i % 13)));
          const results = await Promise.all(
            ranks.map((m, r) =>
              a.netSubmit(m.group, ShmKind.allreduce, ShmDType.float64, ShmOp.sum, 0, len, bufs[r], bufs[r], 10_000),
            ),
          );
          assert.deepEqual(
            results.map((r) => r.ok),
            new Array(n).fill(true),
            JSON.stringify(results),
          );
          const base = (1000 * n * (n + 1)) / 2;
          for (const [r, b] of bufs.entries())
            for (let i = 0; i < len; i += 997)
              assert.equal(b[i], base + n * (i % 13), `n=${n} small=${smallBytes} rank ${r} element ${i}`);
        } finally {
          await destroyAll(a, ranks);
        }
      }
    }
  });

  it('a size mismatch rejects on both ranks naming both calls, and later collectives fail the same way', async () => {
    const ranks = open(a, 2);
    try {
      await connectAll(a, ranks);
      const [r0, r1] = await Promise.all([
        a.netSubmit(
          ranks[0]!.group,
          ShmKind.allreduce,
          ShmDType.float32,
          ShmOp.sum,
          0,
          10,
          new Float32Array(10),
          new Float32Array(10),
          5000,
        ),
        a.netSubmit(
          ranks[1]!.group,
          ShmKind.allreduce,
          ShmDType.float32,
          ShmOp.sum,
          0,
          11,
          new Float32Array(11),
          new Float32Array(11),
          5000,
        ),
      ]);
      const want =
        /^collective mismatch between ranks: rank 0 called allreduce float32 × 10 \(sum\) but rank 1 called allreduce float32 × 11 \(sum\)/;
      for (const r of [r0!, r1!]) {
        assert.equal(r.code, 'INVALID_ARGUMENT');
        assert.match(r.message, want);
      }
      assert.equal(r0!.peer, 1);
      assert.equal(r1!.peer, 0);
      const later = await a.netSubmit(ranks[0]!.group, ShmKind.barrier, 0, 0, 0, 0, undefined, undefined, 5000);
      assert.equal(later.code, 'INVALID_ARGUMENT');
      assert.match(later.message, want);
    } finally {
      await destroyAll(a, ranks);
    }
  });

  it('stray connections to a listener during setup (garbage, a wrong token, silence) are dropped; the mesh still forms', async () => {
    const ranks = open(a, 2);
    const strays: Socket[] = [];
    try {
      // Rank 0 accepts; its connect task starts first and meets the strays before rank 1's real connection.
      const accepting = a.netConnect(ranks[0]!.group, peersOf(ranks), 30_000);
      const silent = await rawConnect(ranks[0]!.port);
      strays.push(silent);
      const garbage = await rawConnect(ranks[0]!.port);
      garbage.write(Buffer.alloc(16, 0xab));
      strays.push(garbage);
      const wrongToken = await rawConnect(ranks[0]!.port);
      wrongToken.write(hello(1, 'ffffffffffffffff'));
      strays.push(wrongToken);
      const dialing = a.netConnect(ranks[1]!.group, peersOf(ranks), 30_000);
      const [r0, r1] = await Promise.all([accepting, dialing]);
      assert.equal(r0.ok, true, r0.message);
      assert.equal(r1.ok, true, r1.message);
      const bufs = [new Int32Array([1, 2]), new Int32Array([10, 20])];
      const done = await Promise.all(
        ranks.map((m, r) =>
          a.netSubmit(m.group, ShmKind.allreduce, ShmDType.int32, ShmOp.sum, 0, 2, bufs[r], bufs[r], 5000),
        ),
      );
      assert.deepEqual(
        done.map((d) => d.ok),
        [true, true],
      );
      assert.deepEqual([...bufs[0]!], [11, 22]);
    } finally {
      for (const s of strays) s.destroy();
      await destroyAll(a, ranks);
    }
  });

  it('a dialer holding the wrong token fails naming the listener, and the listener times out naming who is missing', async () => {
    const ranks = open(a, 2);
    try {
      const peers = peersOf(ranks);
      const wrong = peers.map((p, q) => (q === 0 ? { ...p, token: '0123456789abcdef' } : p));
      const [r0, r1] = await Promise.all([
        a.netConnect(ranks[0]!.group, peers, 1500),
        a.netConnect(ranks[1]!.group, wrong, 1500),
      ]);
      assert.equal(r1.code, 'PEER_LOST');
      assert.equal(r1.peer, 0);
      assert.match(
        r1.message,
        /^rank 0: handshake on its data socket failed: the connection closed during the handshake/,
      );
      assert.equal(r0.code, 'TIMEOUT');
      assert.match(r0.message, /did not complete within 1500 ms .*; ranks not connected: 1$/);
    } finally {
      await destroyAll(a, ranks);
    }
  });

  it('netFail ends a pending collective at once with its code, and the op deadline gives TIMEOUT', async () => {
    const ranks = open(a, 2);
    try {
      await connectAll(a, ranks);
      // Rank 1 never joins this collective: a broadcast from rank 1, in which rank 0 only receives (so it writes
      // nothing that rank 1 could read later).
      const pending = a.netSubmit(
        ranks[0]!.group,
        ShmKind.broadcast,
        ShmDType.float32,
        0,
        1,
        4,
        undefined,
        new Float32Array(4),
        60_000,
      );
      a.netFail(ranks[0]!.group, 'ABORTED', 'aborted by the test', -1);
      const r = await pending;
      assert.deepEqual([r.code, r.message], ['ABORTED', 'aborted by the test']);
      const timed = await a.netSubmit(ranks[1]!.group, ShmKind.barrier, 0, 0, 0, 0, undefined, undefined, 300);
      // Rank 0's group is dead without closing its sockets: rank 1 waits for its frame until the deadline.
      assert.equal(timed.code, 'TIMEOUT');
      assert.match(timed.message, /^barrier on rank 1 did not complete within 300 ms/);
    } finally {
      await destroyAll(a, ranks);
    }
  });

  it('a destroyed group resolves later submissions with CLOSED, and its peer sees PEER_LOST naming it', async () => {
    const ranks = open(a, 2);
    try {
      await connectAll(a, ranks);
      await a.netDestroy(ranks[0]!.group);
      const after = await a.netSubmit(ranks[0]!.group, ShmKind.barrier, 0, 0, 0, 0, undefined, undefined, 1000);
      assert.equal(after.code, 'CLOSED');
      const peer = await a.netSubmit(ranks[1]!.group, ShmKind.barrier, 0, 0, 0, 0, undefined, undefined, 10_000);
      assert.equal(peer.code, 'PEER_LOST');
      assert.equal(peer.peer, 0);
      assert.match(peer.message, /^rank 0: closed its data connection/);
    } finally {
      await destroyAll(a, ranks);
    }
  });
});
