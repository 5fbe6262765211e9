// The simulated ring (issue 11): n TcpProcessGroup instances (n = 1..8) run in this one process over an in-memory
// transport (fake-mesh.ts), so every algorithm's schedule is checked without processes or sockets: each op × dtype ×
// reduction against reference.ts, and the schedule itself: every send matched by exactly one receive (same peer, seq,
// step), no step sent twice, the bytes each rank sends equal to the algorithm's formula, the message and segment
// counts of the pipelined ring, and the depth of its pipeline. Messages of different keys arrive in a seeded random
// order (stricter than TCP), so no schedule may lean on arrival order.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CollectiveError } from '../../../collective/api.js';
import { TcpProcessGroup, type TcpTuning } from '../../../collective/tcp-backend.js';
import { P2P_SEQ } from '../../../collective/tcp-transport.js';
import {
  DTYPES,
  OPS,
  firstDiff,
  input,
  make,
  reduced,
  type Arr,
  type DTypeName,
} from '../../integration/collective/reference.js';
import { FakeMesh, type SendEvent } from './fake-mesh.js';

const WORLDS = [1, 2, 3, 4, 5, 6, 7, 8];
/** Tiny thresholds, so that small buffers take every path: the ring from 65 bytes, 24-byte segments, 3 in flight. */
const TINY: TcpTuning = { smallBytes: 64, segmentBytes: 24, pipelineDepth: 3 };
const BYTES: Record<DTypeName, number> = { float32: 4, float64: 8, int32: 4 };

interface World {
  readonly mesh: FakeMesh;
  readonly groups: TcpProcessGroup[];
}

function world(n: number, tuning: TcpTuning = TINY, seed = n): World {
  const mesh = new FakeMesh(n, seed);
  const ranks = Array.from({ length: n }, (_, r) => r);
  const groups = ranks.map(
    (r) => new TcpProcessGroup(mesh.endpoints[r]!, 0, ranks, r, 30_000, tuning, () => Promise.resolve()),
  );
  return { mesh, groups };
}

/**
 * Runs one collective on every rank at once and returns the messages it sent, after checking the properties every
 * schedule has: nothing left on the wire or unclaimed, every send received exactly once under the same key, no key
 * sent twice, no send buffer changed in flight, and one sequence number shared by all ranks.
 */
async function collective(w: World, name: string, op: (g: TcpProcessGroup, r: number) => Promise<unknown>) {
  const from = w.mesh.sends.length;
  const fromReceived = w.mesh.received.length;
  await Promise.all(w.groups.map((g, r) => op(g, r)));
  const sent = w.mesh.sends.slice(from);
  const received = w.mesh.received.slice(fromReceived);
  assert.deepEqual(w.mesh.leftovers(), [], `${name}: messages or receives left over`);
  assert.deepEqual(w.mesh.violations, [], `${name}: transport rules broken`);
  const key = (m: SendEvent): string => `${m.from}>${m.to} g${m.groupId} seq ${m.seq} step ${m.step} ${m.bytes}B`;
  assert.deepEqual(received.map(key).sort(), sent.map(key).sort(), `${name}: every send has exactly one receive`);
  // Point to point may repeat a key (same tag): those match in FIFO order. A collective never does.
  const keys = sent.filter((m) => m.seq !== P2P_SEQ).map(key);
  const dup = keys.find((k, i) => keys.indexOf(k) !== i);
  assert.equal(dup, undefined, `${name}: a step was sent twice: ${dup}`);
  assert.ok(new Set(sent.map((m) => m.seq)).size <= 1, `${name}: one sequence number for the op on every rank`);
  return sent;
}

const bytesSentBy = (sent: readonly SendEvent[], n: number): number[] => {
  const out = new Array<number>(n).fill(0);
  for (const m of sent) out[m.from]! += m.bytes;
  return out;
};

const bytesReceivedBy = (sent: readonly SendEvent[], n: number): number[] => {
  const out = new Array<number>(n).fill(0);
  for (const m of sent) out[m.to]! += m.bytes;
  return out;
};

const sameResult = (got: ArrayLike<number>, want: ArrayLike<number>, name: string): void => {
  const d = firstDiff(got, want);
  assert.equal(d, -1, `${name}: at ${d}: got ${got[d]} want ${want[d]} (len ${got.length}/${want.length})`);
};

/** Bytes each rank sends in recursive doubling of S bytes: the extra ranks fold in (S), the others exchange log2(p2)
 * times and send the result back to their extra rank. */
function recursiveDoublingBytes(n: number, S: number): number[] {
  let p2 = 1;
  while (p2 * 2 <= n) p2 *= 2;
  const rounds = Math.log2(p2);
  return Array.from({ length: n }, (_, r) => (r >= p2 ? S : rounds * S + (r + p2 < n ? S : 0)));
}

/** Elements of chunk c when `len` elements are cut into n chunks (the first len % n one longer). */
const chunkLen = (len: number, n: number, c: number): number => Math.floor(len / n) + (c < len % n ? 1 : 0);

/**
 * Ring allreduce: reduce-scatter sends every chunk but the rank's own, allgather every chunk but the next rank's, so
 * rank r sends 2S − S_r − S_{r+1}; 2(n−1)/n·S when the chunks are equal.
 */
const ringAllreduceBytes = (n: number, len: number, elem: number): number[] =>
  Array.from({ length: n }, (_, r) => (2 * len - chunkLen(len, n, r) - chunkLen(len, n, (r + 1) % n)) * elem);

/** Ring segments per chunk: the largest chunk cut into pieces of at most segmentBytes. */
const segmentsOf = (maxChunkBytes: number, t: TcpTuning): number =>
  Math.max(1, Math.ceil(maxChunkBytes / t.segmentBytes));

/**
 * The ring's pipeline as one rank issued it: a segment opens at its first send and closes at its last
 * (stepsPerSegment sends each, steps numbered segment × 2n + step); returns the most segments open at once.
 */
function pipelineDepthOf(sent: readonly SendEvent[], rank: number, n: number, sendsPerSegment: number): number {
  const left = new Map<number, number>();
  let most = 0;
  for (const m of sent) {
    if (m.from !== rank) continue;
    const k = Math.floor(m.step / (2 * n));
    const l = left.get(k) ?? sendsPerSegment;
    left.set(k, l - 1);
    most = Math.max(most, left.size);
    if (l === 1) left.delete(k);
  }
  return most;
}

describe('simulated ring: allreduce schedules and results', () => {
  for (const n of WORLDS) {
    it(`allreduce gives the reference result for every dtype, op and size, in the expected schedule, with ${n} rank(s)`, async () => {
      const w = world(n);
      for (const dt of DTYPES) {
        const elem = BYTES[dt];
        for (const len of [0, 1, n - 1, 7, 12 * n, 37, 301]) {
          for (const op of OPS) {
            const name = `n=${n} allreduce ${dt} ${op} len=${len}`;
            const bufs = w.groups.map((_, r) => input(dt, len, r));
            const sent = await collective(w, name, (g, r) => g.allreduce(bufs[r]!, op));
            for (const b of bufs) sameResult(b, reduced(dt, len, n, op), name);
            const S = len * elem;
            if (n === 1 || len === 0) {
              assert.equal(sent.length, 0, `${name}: nothing is sent`);
              continue;
            }
            const ring = S > TINY.smallBytes && len >= n;
            if (!ring) {
              assert.deepEqual(bytesSentBy(sent, n), recursiveDoublingBytes(n, S), `${name}: recursive doubling bytes`);
              continue;
            }
            const perRank = bytesSentBy(sent, n);
            assert.deepEqual(perRank, ringAllreduceBytes(n, len, elem), `${name}: ring bytes per rank`);
            assert.deepEqual(
              bytesReceivedBy(sent, n),
              perRank.map((_, r) => perRank[(r + n - 1) % n]!),
              name,
            );
            if (len % n === 0)
              assert.deepEqual(perRank, new Array(n).fill((2 * (n - 1) * S) / n), `${name}: 2(n−1)/n·S per rank`);
            const K = segmentsOf(chunkLen(len, n, 0) * elem, TINY);
            for (let r = 0; r < n; r++) {
              const mine = sent.filter((m) => m.from === r);
              assert.equal(mine.length, 2 * (n - 1) * K, `${name}: rank ${r} sends 2(n−1) steps × ${K} segments`);
              assert.ok(
                mine.every((m) => m.to === (r + 1) % n && m.step < 2 * n * K),
                `${name}: rank ${r} sends only to its ring successor, in step range`,
              );
              assert.equal(
                pipelineDepthOf(sent, r, n, 2 * (n - 1)),
                Math.min(TINY.pipelineDepth, K),
                `${name}: rank ${r} keeps min(pipelineDepth, segments) segment rings in flight`,
              );
            }
          }
        }
      }
    });
  }

  it('allreduceInto leaves the input alone and fills the output, on both algorithms', async () => {
    for (const n of [3, 6]) {
      const w = world(n);
      for (const dt of DTYPES)
        for (const len of [5, 101])
          for (const op of OPS) {
            const name = `n=${n} allreduceInto ${dt} ${op} len=${len}`;
            const ins = w.groups.map((_, r) => input(dt, len, r, 1));
            const outs = w.groups.map(() => make(dt, len));
            await collective(w, name, (g, r) => g.allreduceInto(ins[r]!, outs[r]!, op));
            outs.forEach((o) => sameResult(o, reduced(dt, len, n, op, 1), name));
            ins.forEach((i, r) => sameResult(i, input(dt, len, r, 1), `${name} input`));
          }
    }
  });

  it('pipelineDepth bounds the segment rings in flight (1, 2 and 5), and the default tuning runs the ring above 256 KiB', async () => {
    const n = 5;
    const len = 997;
    for (const pipelineDepth of [1, 2, 5]) {
      const tuning = { smallBytes: 0, segmentBytes: 100, pipelineDepth };
      const w = world(n, tuning, 7 + pipelineDepth);
      const bufs = w.groups.map((_, r) => input('float32', len, r));
      const sent = await collective(w, `depth ${pipelineDepth}`, (g, r) => g.allreduce(bufs[r]!, 'max'));
      bufs.forEach((b) => sameResult(b, reduced('float32', len, n, 'max'), `depth ${pipelineDepth}`));
      const K = segmentsOf(chunkLen(len, n, 0) * 4, tuning);
      assert.equal(K, 8);
      for (let r = 0; r < n; r++)
        assert.equal(pipelineDepthOf(sent, r, n, 2 * (n - 1)), Math.min(pipelineDepth, K), `depth ${pipelineDepth}`);
    }
    const w = world(3, { smallBytes: 256 * 1024, segmentBytes: 1024 * 1024, pipelineDepth: 2 });
    const big = (256 * 1024) / 4 + 3;
    const bufs = w.groups.map((_, r) => input('float32', big, r));
    const sent = await collective(w, 'default tuning', (g, r) => g.allreduce(bufs[r]!, 'sum'));
    bufs.forEach((b) => sameResult(b, reduced('float32', big, 3, 'sum'), 'default tuning'));
    assert.deepEqual(bytesSentBy(sent, 3), ringAllreduceBytes(3, big, 4), 'ring above smallBytes');
    assert.equal(sent.length, 3 * 2 * 2, 'one segment per chunk: 2(n−1) sends per rank');
  });
});

describe('simulated ring: reduceScatter, allgather, broadcast, reduce, barrier', () => {
  for (const n of WORLDS) {
    it(`every op gives the reference result with the expected bytes per rank with ${n} rank(s)`, async () => {
      const w = world(n);
      for (const dt of DTYPES) {
        const elem = BYTES[dt];
        for (const m of [0, 1, 5, 13]) {
          for (const op of OPS) {
            const name = `n=${n} reduceScatter ${dt} ${op} chunk=${m}`;
            const outs = w.groups.map(() => make(dt, m));
            const sent = await collective(w, name, (g, r) => g.reduceScatter(input(dt, m * n, r, 2), outs[r]!, op));
            const want = reduced(dt, m * n, n, op, 2);
            outs.forEach((o, r) => sameResult(o, want.subarray(r * m, (r + 1) * m), `${name} rank ${r}`));
            assert.deepEqual(bytesSentBy(sent, n), new Array(n).fill((n - 1) * m * elem), `${name}: (n−1)/n·S`);
            const K = segmentsOf(m * elem, TINY);
            if (n > 1 && m > 0)
              assert.equal(sent.length, n * (n - 1) * K, `${name}: (n−1) steps × ${K} segments per rank`);
          }
          const name = `n=${n} allgather ${dt} chunk=${m}`;
          const outs = w.groups.map(() => make(dt, m * n));
          const sent = await collective(w, name, (g, r) => g.allgather(input(dt, m, r, 4), outs[r]!));
          const want = make(dt, m * n);
          for (let q = 0; q < n; q++) want.set(input(dt, m, q, 4), q * m);
          outs.forEach((o) => sameResult(o, want, name));
          assert.deepEqual(bytesSentBy(sent, n), new Array(n).fill((n - 1) * m * elem), `${name}: (n−1)/n·S`);
          // In place: the input is this rank's slot of the output.
          const inPlace = w.groups.map((_, r) => {
            const o = make(dt, m * n);
            o.set(input(dt, m, r, 4), r * m);
            return o;
          });
          await collective(w, `${name} in place`, (g, r) =>
            g.allgather(inPlace[r]!.subarray(r * m, (r + 1) * m) as Arr, inPlace[r]!),
          );
          inPlace.forEach((o) => sameResult(o, want, `${name} in place`));
        }
        for (const len of [0, 1, 37]) {
          const S = len * elem;
          for (let root = 0; root < n; root++) {
            const name = `n=${n} broadcast ${dt} len=${len} root=${root}`;
            const bufs = w.groups.map((_, r) => (r === root ? input(dt, len, root, 5) : make(dt, len)));
            const sent = await collective(w, name, (g, r) => g.broadcast(bufs[r]!, root));
            bufs.forEach((b) => sameResult(b, input(dt, len, root, 5), name));
            // A binomial tree: every rank but the root receives the buffer exactly once.
            const recvCount = new Array<number>(n).fill(0);
            for (const msg of sent) recvCount[msg.to]!++;
            assert.deepEqual(
              recvCount,
              w.groups.map((_, r) => (r === root ? 0 : 1)),
              name,
            );
            assert.ok(
              sent.every((msg) => msg.bytes === S),
              name,
            );
            for (const op of OPS) {
              const rname = `n=${n} reduce ${dt} ${op} len=${len} root=${root}`;
              const rbufs = w.groups.map((_, r) => input(dt, len, r, 3));
              const rsent = await collective(w, rname, (g, r) => g.reduce(rbufs[r]!, root, op));
              rbufs.forEach((b, r) =>
                sameResult(b, r === root ? reduced(dt, len, n, op, 3) : input(dt, len, r, 3), `${rname} rank ${r}`),
              );
              // The reverse tree: every rank but the root sends its partial result exactly once.
              const sendCount = new Array<number>(n).fill(0);
              for (const msg of rsent) sendCount[msg.from]!++;
              assert.deepEqual(
                sendCount,
                w.groups.map((_, r) => (r === root ? 0 : 1)),
                rname,
              );
              assert.ok(
                rsent.every((msg) => msg.bytes === S),
                rname,
              );
            }
          }
        }
      }
      const sent = await collective(w, `n=${n} barrier`, (g) => g.barrier());
      assert.deepEqual(bytesSentBy(sent, n), n === 1 ? [0] : recursiveDoublingBytes(n, 4), `n=${n} barrier`);
    });
  }
});

describe('simulated ring: sequence numbers, point to point, sub-groups and failures', () => {
  it('collectives take consecutive sequence numbers, also when several are in flight, and p2p takes none', async () => {
    const n = 5;
    const w = world(n);
    const start = w.mesh.sends.length;
    // Rank 0 sends rank 1 three messages (two under one tag: FIFO), the others make no p2p call.
    const got = [make('int32', 2), make('int32', 2), make('int32', 3)];
    await collective(w, 'uneven p2p', (g, r) =>
      r === 0
        ? Promise.all([
            g.send(input('int32', 2, 0, 20), 1, { tag: 7 }),
            g.send(input('int32', 2, 0, 21), 1, { tag: 7 }),
            g.send(input('int32', 3, 0, 22), 1),
          ])
        : r === 1
          ? Promise.all([g.recv(got[0]!, 0, { tag: 7 }), g.recv(got[1]!, 0, { tag: 7 }), g.recv(got[2]!, 0)])
          : Promise.resolve(),
    );
    sameResult(got[0]!, input('int32', 2, 0, 20), 'same tag, first message first');
    sameResult(got[1]!, input('int32', 2, 0, 21), 'same tag, second message second');
    sameResult(got[2]!, input('int32', 3, 0, 22), 'tag 0');
    const bufs = [0, 1, 2].map((s) => w.groups.map((_, r) => input('float64', 40 + s, r, 30 + s)));
    await Promise.all(w.groups.map((g, r) => Promise.all(bufs.map((b) => g.allreduce(b[r]!, 'sum')))));
    bufs.forEach((b, s) => b.forEach((x) => sameResult(x, reduced('float64', 40 + s, n, 'sum', 30 + s), `op ${s}`)));
    assert.deepEqual(w.mesh.leftovers(), []);
    const sent = w.mesh.sends.slice(start);
    assert.ok(
      sent.filter((m) => m.seq === P2P_SEQ).every((m) => m.from === 0 && m.to === 1),
      'only the p2p messages carry P2P_SEQ',
    );
    assert.deepEqual(
      [...new Set(sent.filter((m) => m.seq !== P2P_SEQ).map((m) => m.seq))].sort(),
      [0, 1, 2],
      'the three concurrent allreduces are collectives 0, 1 and 2 on every rank',
    );
  });

  it('a sub-group runs its own schedule among its members under its own group id', async () => {
    const n = 7;
    const w = world(n);
    const members = [1, 3, 4, 6];
    const subs = await Promise.all(w.groups.map((g) => g.newGroup(members)));
    subs.forEach((s, r) => assert.equal(s === null, !members.includes(r), `rank ${r} membership`));
    const len = 50;
    const bufs = members.map((_, i) => input('int32', len, i, 40));
    const from = w.mesh.sends.length;
    await Promise.all(members.map((r, i) => subs[r]!.allreduce(bufs[i]!, 'min')));
    bufs.forEach((b) => sameResult(b, reduced('int32', len, members.length, 'min', 40), 'sub-group allreduce'));
    const sent = w.mesh.sends.slice(from);
    assert.ok(sent.length > 0);
    assert.ok(
      sent.every((m) => members.includes(m.from) && members.includes(m.to)),
      'only members talk',
    );
    const ids = new Set(sent.map((m) => m.groupId));
    assert.equal(ids.size, 1);
    assert.notEqual([...ids][0], 0, 'not the world group id');
    assert.deepEqual(
      bytesSentBy(sent, n).filter((_, r) => members.includes(r)),
      ringAllreduceBytes(4, len, 4),
    );
    assert.deepEqual(w.mesh.leftovers(), []);
    // The world group's numbering is untouched by the sub-group's ops.
    const after = await collective(w, 'world after sub-group', (g) => g.barrier());
    assert.deepEqual([...new Set(after.map((m) => m.seq))], [0]);
  });

  it('lengths that differ between ranks reject with INVALID_ARGUMENT on both sides, naming the sizes', async () => {
    const w = world(2);
    const errs = await Promise.all(
      w.groups.map((g, r) =>
        g.allreduce(new Float32Array(10 + r), 'sum').then(
          () => null,
          (e: unknown) => e,
        ),
      ),
    );
    for (const e of errs) {
      assert.ok(e instanceof CollectiveError, String(e));
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.match(e.message, /has (40|44) bytes but (44|40) were expected/);
    }
  });

  it('a lost rank makes every pending op reject with PEER_LOST naming it; abort rejects with ABORTED', async () => {
    const n = 4;
    const w = world(n);
    // Rank 3 never joins the allreduce; the others wait for it, then lose it.
    const pending = w.groups.slice(0, 3).map((g, r) => g.allreduce(input('float32', 200, r), 'sum'));
    await new Promise<void>((resolve) => setImmediate(resolve));
    w.mesh.kill(3);
    const errs = await Promise.all(
      pending.map((p) =>
        p.then(
          () => null,
          (e: unknown) => e,
        ),
      ),
    );
    for (const e of errs) {
      assert.ok(e instanceof CollectiveError, String(e));
      assert.equal(e.code, 'PEER_LOST');
      assert.equal(e.peerRank, 3);
    }
    await assert.rejects(
      w.groups[0]!.barrier(),
      (e: unknown) => e instanceof CollectiveError && e.code === 'PEER_LOST',
    );

    const v = world(2);
    const waiting = v.groups[0]!.recv(make('float32', 3), 1, { tag: 1 });
    v.groups[0]!.abort('test');
    await assert.rejects(waiting, (e: unknown) => e instanceof CollectiveError && e.code === 'ABORTED');
    await assert.rejects(
      v.groups[0]!.allreduce(make('float32', 3) as Arr),
      (e: unknown) => e instanceof CollectiveError && e.code === 'ABORTED',
    );
  });
});
