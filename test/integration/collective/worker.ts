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
    results.push(...(await runContract(pg)));
    if (pg.worldSize === 2) {
      // Lengths differ between ranks: tcp detects it, and both sides reject with INVALID_ARGUMENT naming the mismatch.
      await expectError(
        'mismatched lengths across ranks',
        pg.allreduce(make('float32', 10 + r), 'sum'),
        'INVALID_ARGUMENT',
      );
    }
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
