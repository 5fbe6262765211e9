// A worker process for the collective integration tests. Reads RANK/WORLD_SIZE/MASTER_* from the env, runs the mode
// given as argv[2] (backend: TEST_BACKEND, default tcp) and prints one JSON line `{"rank":..,"results":[{name, ok, detail}]}` (or progress lines) to stdout.
import { CollectiveError, initProcessGroup } from '../../../collective/index.js';
import { expectError as expectErrorIn, runContract, type Result } from './contract.js';
import { make, type DTypeName } from './reference.js';

const emit = (obj: object): void => {
  process.stdout.write(JSON.stringify(obj) + '\n');
};
const results: Result[] = [];
const expectError = (name: string, p: Promise<unknown>, code: string): Promise<CollectiveError | null> =>
  expectErrorIn(results, name, p, code);

async function main(): Promise<void> {
  const mode = process.argv[2] ?? 'matrix';
  const backend = (process.env.TEST_BACKEND ?? 'tcp') as 'tcp' | 'nccl' | 'auto';
  const pg = await initProcessGroup({ backend, timeoutMs: Number(process.env.TEST_OP_TIMEOUT_MS ?? 20000) });
  const r = pg.rank;
  if (mode === 'matrix') {
    const wantPlane = process.env.TEST_DATA_PLANE;
    if (wantPlane !== undefined)
      results.push({ name: `data plane is ${wantPlane}`, ok: pg.dataPlane === wantPlane, detail: pg.dataPlane });
    const wantLayout = process.env.TEST_NET_LAYOUT;
    if (wantLayout !== undefined) {
      const layout = (pg as { layout?: string }).layout;
      results.push({ name: `socket plane layout is ${wantLayout}`, ok: layout === wantLayout, detail: layout });
    }
    results.push(...(await runContract(pg)));
    if (pg.worldSize === 2) {
      // Lengths differ between ranks: tcp detects it, and both sides reject with INVALID_ARGUMENT naming the mismatch.
      await expectError(
        'mismatched lengths across ranks',
        pg.allreduce(make('float32', 10 + r), 'sum'),
        'INVALID_ARGUMENT',
      );
    }
    if (pg.worldSize === 2 && pg.dataPlane === 'shm') {
      // The shared-memory plane compares every rank's op descriptor, so a dtype mismatch of equal byte size is
      // caught too, and the message names both sides.
      const e = await expectError(
        'mismatched dtypes across ranks',
        r === 0 ? pg.allreduce(make('float32', 8), 'sum') : pg.allreduce(make('int32', 8), 'sum'),
        'INVALID_ARGUMENT',
      );
      results.push({
        name: 'mismatch names both sides',
        ok: /rank 0 called allreduce float32 × 8 \(sum\) but rank 1 called allreduce int32 × 8/.test(e?.message ?? ''),
        detail: e?.message,
      });
      const after = make('float32', 3).fill(r + 1);
      await pg.allreduce(after, 'sum');
      results.push({ name: 'the group works after a mismatch', ok: after[0] === 3, detail: String(after[0]) });
    }
    await pg.destroy();
    await expectError('op after destroy', pg.allreduce(make('float32', 1)), 'CLOSED');
    emit({ rank: r, results });
    return;
  }
  if (mode === 'kill' || mode === 'kill-sub') {
    // Every rank loops over allreduces (in 'kill-sub': of a sub-group of every rank, numbered [1, 2, 0, 3, ...], so
    // that group and world ranks differ); the test SIGKILLs rank 1 after it reports progress.
    const buf = make('float32' as DTypeName, 1 << 20);
    const order = [1, 2, 0, ...Array.from({ length: pg.worldSize - 3 }, (_, i) => i + 3)];
    const group = mode === 'kill' ? pg : (await pg.newGroup(order))!;
    emit({ rank: r, dataPlane: group.dataPlane });
    const started = Date.now();
    let iterations = 0;
    try {
      for (;;) {
        await group.allreduce(buf, 'sum');
        if (++iterations === 2) emit({ rank: r, progress: true });
      }
    } catch (e) {
      const err = e as CollectiveError;
      const later = await pg.barrier().then(
        () => 'resolved',
        (e2: CollectiveError) => e2.code,
      );
      emit({
        rank: r,
        code: err.code,
        peerRank: err.peerRank,
        message: err.message,
        laterCode: later,
        elapsedMs: Date.now() - started,
      });
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
  if (mode === 'collective-abort') {
    // Rank 1 aborts while its allreduce waits for rank 0; rank 0 joins later and must learn that rank 1 is gone.
    if (r === 1) {
      const pending = pg.allreduce(make('float32', 1 << 16), 'sum');
      setTimeout(() => pg.abort('test abort'), 300);
      await expectError('pending allreduce after abort', pending, 'ABORTED');
      await expectError('allreduce after abort', pg.allreduce(make('float32', 4)), 'ABORTED');
    } else {
      await new Promise((res) => setTimeout(res, 1500));
      const e = await expectError(
        'allreduce with an aborted peer',
        pg.allreduce(make('float32', 1 << 16)),
        'PEER_LOST',
      );
      results.push({ name: 'aborted peer is named', ok: e?.peerRank === 1, detail: `peerRank ${e?.peerRank}` });
      await pg.destroy();
    }
    emit({ rank: r, dataPlane: pg.dataPlane, results });
    return;
  }
  if (mode === 'sub-destroyed') {
    // A sub-group [1, 0] (world rank 1 is its rank 0): world rank 1 destroys it while world rank 0 still calls an
    // allreduce on it. The plane sees its rank 0 leave; the error must name world rank 1 and say how ranks map.
    const sub = (await pg.newGroup([1, 0]))!;
    const one = make('int32', 4).fill(r + 1);
    await sub.allreduce(one, 'sum');
    results.push({ name: 'sub-group allreduce', ok: one[0] === 3, detail: String(one[0]) });
    if (r === 1) {
      await sub.destroy();
      await expectError('world op after the peer failed', pg.barrier(), 'PEER_LOST');
    } else {
      await new Promise((res) => setTimeout(res, 500));
      const e = await expectError(
        'allreduce on a sub-group its peer destroyed',
        sub.allreduce(one, 'sum'),
        'PEER_LOST',
      );
      results.push({ name: 'names the world rank', ok: e?.peerRank === 1, detail: `peerRank ${e?.peerRank}` });
      results.push({
        name: 'the message names world ranks',
        ok: /rank 1 has destroyed its process group.*sub-group of world ranks 1, 0/.test(e?.message ?? ''),
        detail: e?.message,
      });
    }
    await pg.destroy();
    emit({ rank: r, dataPlane: sub.dataPlane, results });
    return;
  }
  if (mode === 'collective-timeout') {
    // Rank 0's allreduce times out while rank 1 sleeps; rank 1's later allreduce learns that rank 0 failed.
    if (r === 0)
      await expectError(
        'allreduce past its timeout',
        pg.allreduce(make('float32', 64), 'sum', { timeoutMs: 300 }),
        'TIMEOUT',
      );
    else {
      await new Promise((res) => setTimeout(res, 1500));
      const e = await expectError('peer of a timed-out rank', pg.allreduce(make('float32', 64)), 'PEER_LOST');
      results.push({ name: 'timed-out peer is named', ok: e?.peerRank === 0, detail: `peerRank ${e?.peerRank}` });
    }
    await pg.destroy();
    emit({ rank: r, dataPlane: pg.dataPlane, results });
    return;
  }
  if (mode === 'straddle') {
    // Rank 0's allreduce is 32 KiB, everyone else's 128 KiB: on the hierarchical layout they take different paths
    // (flat group / host groups), so the plane cannot compare them; after the timeout the ranks name the mismatch.
    const n = r === 0 ? 8192 : 32768;
    const e = await expectError(
      'allreduce sizes across the hierarchical threshold',
      pg.allreduce(make('float32', n), 'sum', { timeoutMs: 1500 }),
      'INVALID_ARGUMENT',
    );
    emit({
      rank: r,
      dataPlane: pg.dataPlane,
      layout: (pg as { layout?: string }).layout,
      message: e?.message,
      results,
    });
    // Rank 0 serves the store the others read: stay until they are done (the test kills the world).
    await new Promise((res) => setTimeout(res, 30_000));
    return;
  }
  if (mode === 'plane') {
    // TEST_SUBS: sub-groups given as "0,1;1,2" (world ranks); each reports its plane and an int32 sum of rank + 1.
    const subs: { ranks: number[]; dataPlane?: string; sum?: number }[] = [];
    for (const list of (process.env.TEST_SUBS ?? '').split(';').filter((x) => x !== '')) {
      const ranks = list.split(',').map(Number);
      const sub = await pg.newGroup(ranks);
      if (!sub) {
        subs.push({ ranks });
        continue;
      }
      const v = make('int32', 3).fill(r + 1);
      await sub.allreduce(v, 'sum');
      subs.push({ ranks, dataPlane: sub.dataPlane, sum: v[0] });
      await sub.destroy();
    }
    emit({ rank: r, dataPlane: pg.dataPlane, subs });
    await pg.destroy();
    return;
  }
  if (mode === 'garbage') {
    // Rank 0 writes garbage on its native data socket to rank 1 (socket plane only), then both run an allreduce:
    // rank 1 must reject it as a corrupt stream naming rank 0, and both processes stay alive.
    const inject = (pg as { injectRawBytes?: (peer: number, b: Uint8Array) => Promise<void> }).injectRawBytes;
    if (r === 0) await inject!.call(pg, 1, new Uint8Array(64).fill(0xab));
    // Rank 0's own allreduce may complete (rank 1's frames to it are sound) or fail once rank 1 fails the world.
    const e =
      r === 1
        ? await expectError(
            'allreduce after garbage on a data socket',
            pg.allreduce(make('float32', 1000)),
            'PEER_LOST',
          )
        : await pg.allreduce(make('float32', 1000)).then(
            () => null,
            (err: CollectiveError) => err,
          );
    const later = await pg.barrier().then(
      () => 'resolved',
      (e2: CollectiveError) => e2.code,
    );
    await pg.destroy();
    emit({ rank: r, dataPlane: pg.dataPlane, results, peerRank: e?.peerRank, message: e?.message, laterCode: later });
    return;
  }
  if (mode === 'timeout') {
    if (r === 0)
      await expectError('recv past its timeout', pg.recv(make('float32', 4), 1, { timeoutMs: 300 }), 'TIMEOUT');
    else
      await expectError('peer of a timed-out rank', pg.recv(make('float32', 4), 0, { timeoutMs: 15000 }), 'PEER_LOST');
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
