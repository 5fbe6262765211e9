// The shared contract suite for ProcessGroup backends (tcp and nccl both run it): every op × dtype × reduction ×
// size (0, 1, odd, ~1 MB), in place and out of place, p2p with tags, concurrent ops, barrier, sub-groups, compared
// with reference.ts. Call `runContract(pg)` on every rank of a world (a worker process each); it returns one
// {name, ok, detail} per check instead of throwing, so the test can report all failures of every rank.
import { CollectiveError, type ProcessGroup } from '../../../collective/api.js';
import { DTYPES, OPS, firstDiff, input, make, reduced, type Arr } from './reference.js';

export interface Result {
  name: string;
  ok: boolean;
  detail?: string;
}

export function check(results: Result[], name: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
  const d = firstDiff(got, want);
  results.push(
    d === -1
      ? { name, ok: true }
      : { name, ok: false, detail: `at ${d}: got ${got[d]} want ${want[d]} (len ${got.length}/${want.length})` },
  );
}

export async function expectError(
  results: Result[],
  name: string,
  p: Promise<unknown>,
  code: string,
): Promise<CollectiveError | null> {
  try {
    await p;
    results.push({ name, ok: false, detail: 'resolved, expected ' + code });
    return null;
  } catch (e) {
    const ok = e instanceof CollectiveError && e.code === code;
    results.push({
      name,
      ok,
      detail: ok ? undefined : `got ${(e as Error).name} ${(e as CollectiveError).code}: ${(e as Error).message}`,
    });
    return e as CollectiveError;
  }
}

export async function runContract(pg: ProcessGroup): Promise<Result[]> {
  const results: Result[] = [];
  const n = pg.worldSize;
  const r = pg.rank;
  const BIG = 262147; // ~1 MB of float32, odd
  const sizes = [0, 1, 37, BIG];
  for (const dt of DTYPES) {
    for (const len of sizes) {
      for (const op of OPS) {
        const lenFor = dt === 'float64' && len === BIG ? (BIG >> 1) | 1 : len;
        const buf = input(dt, lenFor, r);
        await pg.allreduce(buf, op);
        check(results, `allreduce ${dt} ${op} len=${lenFor}`, buf, reduced(dt, lenFor, n, op));
        const inp = input(dt, lenFor, r, 1);
        const out = make(dt, lenFor);
        await pg.allreduceInto(inp, out, op);
        check(results, `allreduceInto ${dt} ${op} len=${lenFor} output`, out, reduced(dt, lenFor, n, op, 1));
        check(results, `allreduceInto ${dt} ${op} len=${lenFor} input unchanged`, inp, input(dt, lenFor, r, 1));
      }
      const m = Math.ceil(len / n); // per-rank chunk for reduceScatter / allgather
      for (const op of OPS) {
        const rsIn = input(dt, m * n, r, 2);
        const rsOut = make(dt, m);
        await pg.reduceScatter(rsIn, rsOut, op);
        check(
          results,
          `reduceScatter ${dt} ${op} chunk=${m}`,
          rsOut,
          reduced(dt, m * n, n, op, 2).subarray(r * m, (r + 1) * m),
        );
        const root = (len + OPS.indexOf(op)) % n;
        const red = input(dt, len, r, 3);
        await pg.reduce(red, root, op);
        check(
          results,
          `reduce ${dt} ${op} len=${len} root=${root}`,
          red,
          r === root ? reduced(dt, len, n, op, 3) : input(dt, len, r, 3),
        );
      }
      const agOut = make(dt, m * n);
      await pg.allgather(input(dt, m, r, 4), agOut);
      const agWant = make(dt, m * n);
      for (let q = 0; q < n; q++) agWant.set(input(dt, m, q, 4), q * m);
      check(results, `allgather ${dt} chunk=${m}`, agOut, agWant);
      // In place allgather: the input is this rank's slot of the output.
      const agIn = make(dt, m * n);
      agIn.set(input(dt, m, r, 4), r * m);
      await pg.allgather(agIn.subarray(r * m, (r + 1) * m) as Arr, agIn);
      check(results, `allgather in place ${dt} chunk=${m}`, agIn, agWant);
      for (const root of new Set([0, n - 1])) {
        const b = r === root ? input(dt, len, root, 5) : make(dt, len);
        await pg.broadcast(b, root);
        check(results, `broadcast ${dt} len=${len} root=${root}`, b, input(dt, len, root, 5));
      }
    }
  }
  if (n > 1) {
    // Point to point around the ring, two tags in flight, received in the opposite order.
    const next = (r + 1) % n;
    const prev = (r - 1 + n) % n;
    const a = make('float32', 5);
    const b = make('float32', 5);
    const sends = Promise.all([
      pg.send(input('float32', 5, r, 6), next, { tag: 1 }),
      pg.send(input('float32', 5, r, 7), next, { tag: 2 }),
    ]);
    await pg.recv(b, prev, { tag: 2 });
    await pg.recv(a, prev, { tag: 1 });
    await sends;
    check(results, 'send/recv tag 1', a, input('float32', 5, prev, 6));
    check(results, 'send/recv tag 2', b, input('float32', 5, prev, 7));
  }
  if (n > 2) {
    // Uneven point-to-point counts: rank 0 sends rank 1 two messages, every other rank makes no p2p call at all.
    // Point to point must not take a collective sequence number, or the ranks now disagree on the next collective's
    // and it times out; the allreduce and broadcasts that follow must run and give the reference result.
    if (r === 0)
      await Promise.all([
        pg.send(input('int32', 3, r, 8), 1, { tag: 3 }),
        pg.send(input('int32', 4, r, 9), 1, { tag: 4 }),
      ]);
    if (r === 1) {
      const x = make('int32', 3);
      const y = make('int32', 4);
      await Promise.all([pg.recv(x, 0, { tag: 3 }), pg.recv(y, 0, { tag: 4 })]);
      check(results, 'uneven p2p: first message', x, input('int32', 3, 0, 8));
      check(results, 'uneven p2p: second message', y, input('int32', 4, 0, 9));
    }
    const after = input('float64', 37, r, 11);
    await pg.allreduce(after, 'sum');
    check(results, 'allreduce after uneven p2p', after, reduced('float64', 37, n, 'sum', 11));
    for (const root of [1, n - 1]) {
      const b = r === root ? input('int32', 9, root, 12) : make('int32', 9);
      await pg.broadcast(b, root);
      check(results, `broadcast root=${root} after uneven p2p`, b, input('int32', 9, root, 12));
    }
    // And once more with the p2p calls in flight while the next collective starts on the other ranks.
    const late = r === 2 ? pg.send(input('float32', 6, r, 13), 0) : null;
    const got = make('float32', 6);
    const early = r === 0 ? pg.recv(got, 2) : null;
    const ar = input('int32', 11, r, 14);
    await pg.allreduce(ar, 'max');
    await Promise.all([late, early]);
    check(results, 'allreduce with p2p in flight', ar, reduced('int32', 11, n, 'max', 14));
    if (r === 0) check(results, 'p2p in flight delivered', got, input('float32', 6, 2, 13));
  }
  // Several collectives in flight at once (as DDP does with buckets).
  const bufs = [0, 1, 2, 3].map((s) => input('float32', 5000 * (s + 1), r, 10 + s));
  await Promise.all(bufs.map((bb) => pg.allreduce(bb, 'sum')));
  bufs.forEach((bb, s) =>
    check(results, `concurrent allreduce ${s}`, bb, reduced('float32', 5000 * (s + 1), n, 'sum', 10 + s)),
  );
  await pg.barrier();
  results.push({ name: 'barrier', ok: true });
  // A sub-group of the even ranks.
  const evens = Array.from({ length: n }, (_, i) => i).filter((i) => i % 2 === 0);
  const sub = await pg.newGroup(evens);
  if (r % 2 === 0) {
    const sb = make('int32', 3).fill(r + 1);
    await sub!.allreduce(sb, 'sum');
    const want = evens.reduce((acc, q) => acc + q + 1, 0);
    check(results, 'sub-group allreduce', sb, [want, want, want]);
    results.push({ name: 'sub-group rank', ok: sub!.rank === evens.indexOf(r) && sub!.worldSize === evens.length });
    // Larger than the shm plane's small path and its 8 KiB test slots: the sliced path, many steps.
    const k = evens.length;
    const big = input('float32', 30011, sub!.rank, 15);
    await sub!.allreduce(big, 'max');
    check(results, 'sub-group allreduce, large', big, reduced('float32', 30011, k, 'max', 15));
    const bc = sub!.rank === k - 1 ? input('float64', 2049, k - 1, 16) : make('float64', 2049);
    await sub!.broadcast(bc, k - 1);
    check(results, 'sub-group broadcast from its last rank', bc, input('float64', 2049, k - 1, 16));
    // A sub-group of two or more ranks of a world on a native plane has a plane of its own (on the socket plane: 'net'
    // when its members span hosts, as the suites' do; 'shm' when they share one, checked by net-choice.test.ts).
    const plane = (pg.dataPlane === 'shm' || pg.dataPlane === 'net') && k < 2 ? 'js' : pg.dataPlane;
    results.push({ name: 'sub-group data plane', ok: sub!.dataPlane === plane, detail: sub!.dataPlane });
  } else results.push({ name: 'sub-group null for non-members', ok: sub === null });
  // A second sub-group (the odd ranks, in reverse order) destroyed explicitly; the world and the first sub-group go on.
  const odds = Array.from({ length: n }, (_, i) => n - 1 - i).filter((i) => i % 2 === 1);
  const sub2 = n > 1 ? await pg.newGroup(odds) : null;
  if (sub2) {
    const v = make('int32', 5).fill(r);
    await sub2.allreduce(v, 'sum');
    const want = odds.reduce((acc, q) => acc + q, 0);
    check(results, 'second sub-group allreduce', v, new Array(5).fill(want));
    results.push({ name: 'second sub-group rank', ok: sub2.rank === odds.indexOf(r), detail: String(sub2.rank) });
    await sub2.destroy();
    await expectError(results, 'second sub-group op after its destroy', sub2.allreduce(make('int32', 1)), 'CLOSED');
  }
  if (sub) {
    const again = make('int32', 2).fill(1);
    await sub.allreduce(again, 'sum');
    check(results, 'first sub-group after the second is destroyed', again, [evens.length, evens.length]);
  }
  await pg.barrier();
  return results;
}
