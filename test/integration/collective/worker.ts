// A worker process for the collective integration tests. Reads RANK/WORLD_SIZE/MASTER_* from the env, runs the mode
// given as argv[2] and prints one JSON line `{"rank":..,"results":[{name, ok, detail}]}` (or progress lines) to stdout.
import { CollectiveError, initProcessGroup, type ProcessGroup } from '../../../collective/index.js';
import { DTYPES, OPS, firstDiff, input, make, reduced, type Arr, type DTypeName } from './reference.js';

interface Result {
  name: string;
  ok: boolean;
  detail?: string;
}
const results: Result[] = [];
const emit = (obj: object): void => {
  process.stdout.write(JSON.stringify(obj) + '\n');
};

function check(name: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
  const d = firstDiff(got, want);
  results.push(d === -1 ? { name, ok: true } : { name, ok: false, detail: `at ${d}: got ${got[d]} want ${want[d]} (len ${got.length}/${want.length})` });
}

async function expectError(name: string, p: Promise<unknown>, code: string): Promise<CollectiveError | null> {
  try {
    await p;
    results.push({ name, ok: false, detail: 'resolved, expected ' + code });
    return null;
  } catch (e) {
    const ok = e instanceof CollectiveError && e.code === code;
    results.push({ name, ok, detail: ok ? undefined : `got ${(e as Error).name} ${(e as CollectiveError).code}: ${(e as Error).message}` });
    return e as CollectiveError;
  }
}

async function matrix(pg: ProcessGroup): Promise<void> {
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
        check(`allreduce ${dt} ${op} len=${lenFor}`, buf, reduced(dt, lenFor, n, op));
        const inp = input(dt, lenFor, r, 1);
        const out = make(dt, lenFor);
        await pg.allreduceInto(inp, out, op);
        check(`allreduceInto ${dt} ${op} len=${lenFor} output`, out, reduced(dt, lenFor, n, op, 1));
        check(`allreduceInto ${dt} ${op} len=${lenFor} input unchanged`, inp, input(dt, lenFor, r, 1));
      }
      const m = Math.ceil(len / n); // per-rank chunk for reduceScatter / allgather
      for (const op of OPS) {
        const rsIn = input(dt, m * n, r, 2);
        const rsOut = make(dt, m);
        await pg.reduceScatter(rsIn, rsOut, op);
        check(`reduceScatter ${dt} ${op} chunk=${m}`, rsOut, reduced(dt, m * n, n, op, 2).subarray(r * m, (r + 1) * m));
        const root = (len + OPS.indexOf(op)) % n;
        const red = input(dt, len, r, 3);
        await pg.reduce(red, root, op);
        check(`reduce ${dt} ${op} len=${len} root=${root}`, red, r === root ? reduced(dt, len, n, op, 3) : input(dt, len, r, 3));
      }
      const agOut = make(dt, m * n);
      await pg.allgather(input(dt, m, r, 4), agOut);
      const agWant = make(dt, m * n);
      for (let q = 0; q < n; q++) agWant.set(input(dt, m, q, 4), q * m);
      check(`allgather ${dt} chunk=${m}`, agOut, agWant);
      // In place allgather: the input is this rank's slot of the output.
      const agIn = make(dt, m * n);
      agIn.set(input(dt, m, r, 4), r * m);
      await pg.allgather(agIn.subarray(r * m, (r + 1) * m) as Arr, agIn);
      check(`allgather in place ${dt} chunk=${m}`, agIn, agWant);
      for (const root of new Set([0, n - 1])) {
        const b = r === root ? input(dt, len, root, 5) : make(dt, len);
        await pg.broadcast(b, root);
        check(`broadcast ${dt} len=${len} root=${root}`, b, input(dt, len, root, 5));
      }
    }
  }
  if (n > 1) {
    // Point to point around the ring, two tags in flight, received in the opposite order.
    const next = (r + 1) % n;
    const prev = (r - 1 + n) % n;
    const a = make('float32', 5);
    const b = make('float32', 5);
    const sends = Promise.all([pg.send(input('float32', 5, r, 6), next, { tag: 1 }), pg.send(input('float32', 5, r, 7), next, { tag: 2 })]);
    await pg.recv(b, prev, { tag: 2 });
    await pg.recv(a, prev, { tag: 1 });
    await sends;
    check('send/recv tag 1', a, input('float32', 5, prev, 6));
    check('send/recv tag 2', b, input('float32', 5, prev, 7));
  }
  // Several collectives in flight at once (as DDP does with buckets).
  const bufs = [0, 1, 2, 3].map((s) => input('float32', 5000 * (s + 1), r, 10 + s));
  await Promise.all(bufs.map((bb) => pg.allreduce(bb, 'sum')));
  bufs.forEach((bb, s) => check(`concurrent allreduce ${s}`, bb, reduced('float32', 5000 * (s + 1), n, 'sum', 10 + s)));
  await pg.barrier();
  results.push({ name: 'barrier', ok: true });
  // A sub-group of the even ranks.
  const evens = Array.from({ length: n }, (_, i) => i).filter((i) => i % 2 === 0);
  const sub = await pg.newGroup(evens);
  if (r % 2 === 0) {
    const sb = make('int32', 3).fill(r + 1);
    await sub!.allreduce(sb, 'sum');
    const want = evens.reduce((acc, q) => acc + q + 1, 0);
    check('sub-group allreduce', sb, [want, want, want]);
    results.push({ name: 'sub-group rank', ok: sub!.rank === evens.indexOf(r) && sub!.worldSize === evens.length });
  } else results.push({ name: 'sub-group null for non-members', ok: sub === null });
  await pg.barrier();
  if (n === 2) {
    // Lengths differ between ranks: both sides reject with INVALID_ARGUMENT, naming the mismatch.
    await expectError('mismatched lengths across ranks', pg.allreduce(make('float32', 10 + r), 'sum'), 'INVALID_ARGUMENT');
  }
}

async function main(): Promise<void> {
  const mode = process.argv[2] ?? 'matrix';
  const pg = await initProcessGroup({ backend: 'tcp', timeoutMs: Number(process.env.TEST_OP_TIMEOUT_MS ?? 20000) });
  const r = pg.rank;
  if (mode === 'matrix') {
    await matrix(pg);
    await pg.destroy();
    await expectError('op after destroy', pg.allreduce(make('float32', 1)), 'CLOSED');
    emit({ rank: r, results });
    return;
  }
  if (mode === 'kill') {
    // Every rank loops over allreduces; the test SIGKILLs rank 1 after it reports progress.
    const buf = make('float32' as DTypeName, 1 << 20);
    const started = Date.now();
    let iterations = 0;
    try {
      for (;;) {
        await pg.allreduce(buf, 'sum');
        if (++iterations === 2) emit({ rank: r, progress: true });
      }
    } catch (e) {
      const err = e as CollectiveError;
      const later = await pg.barrier().then(
        () => 'resolved',
        (e2: CollectiveError) => e2.code,
      );
      emit({ rank: r, code: err.code, peerRank: err.peerRank, message: err.message, laterCode: later, elapsedMs: Date.now() - started });
      await pg.destroy();
    }
    return;
  }
  if (mode === 'faults') {
    if (r === 1) {
      const pending = pg.recv(make('float32', 4), 0, { tag: 9 });
      pg.abort('test abort');
      await expectError('pending recv after abort', pending, 'ABORTED');
      await expectError('allreduce after abort', pg.allreduce(make('float32', 4)), 'ABORTED');
    } else {
      const e = await expectError('peer aborted', pg.recv(make('float32', 4), 1, { tag: 9 }), 'PEER_LOST');
      results.push({ name: 'peer aborted names the peer', ok: e?.peerRank === 1, detail: `peerRank ${e?.peerRank}` });
      await pg.destroy();
    }
    emit({ rank: r, results });
    return;
  }
  if (mode === 'timeout') {
    if (r === 0) await expectError('recv past its timeout', pg.recv(make('float32', 4), 1, { timeoutMs: 300 }), 'TIMEOUT');
    else await expectError('peer of a timed-out rank', pg.recv(make('float32', 4), 0, { timeoutMs: 15000 }), 'PEER_LOST');
    await pg.destroy();
    emit({ rank: r, results });
    return;
  }
  throw new Error(`unknown mode ${mode}`);
}

main().catch((e: unknown) => {
  emit({ rank: Number(process.env.RANK), fatal: String((e as Error)?.stack ?? e) });
  process.exitCode = 1;
});
