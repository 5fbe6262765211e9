import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { assignBuckets } from '../../../tensor/ddp.js';
import { add } from '../../../tensor/index.js';
import { TinyModel, batchFor, rowsOf, IN, OUT } from './fixtures/tiny-model.js';
import { allSucceed, spawnGroup, tempDir } from './helpers.js';

const WORKER = 'test/integration/train/fixtures/ddp-worker.ts';

async function reference(steps: number, rowsTotal: number, accumulate: boolean): Promise<number[]> {
  const model = new TinyModel(0);
  for (let s = 0; s < steps; s++) {
    const { x, y } = batchFor(s, rowsTotal * 2);
    const lossA = model.loss(rowsOf(x, IN, 0, rowsTotal), rowsOf(y, OUT, 0, rowsTotal));
    const loss = accumulate
      ? add(lossA, model.loss(rowsOf(x, IN, rowsTotal, 2 * rowsTotal), rowsOf(y, OUT, rowsTotal, 2 * rowsTotal)))
      : lossA;
    await loss.backward();
    model.sgd(0.1);
  }
  return model.flat();
}

function assertClose(actual: number[], expected: number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  assert.ok(worst <= tol, `${what}: max abs difference ${worst} > ${tol}`);
}

describe('DistributedDataParallel', () => {
  it('assigns buckets in reverse parameter order with a small first bucket', () => {
    // 4-byte floats: caps of 40 bytes (first) and 100 bytes hold 10 and 25 elements.
    assert.deepEqual(assignBuckets([10, 10, 5, 5, 8], 100, 40), [[4], [3, 2, 1], [0]]);
    assert.deepEqual(assignBuckets([100, 1], 40, 40), [[1], [0]]);
    assert.deepEqual(assignBuckets([1, 2, 3], 1e9, 1e9), [[2, 1, 0]]);
  });

  for (const ws of [2, 3]) {
    it(`with ${ws} workers trains to the same parameters as one process on the full batch`, async (t) => {
      const dir = tempDir(t, 'ddp');
      const steps = 5;
      const rows = 4;
      // A tiny cap puts every parameter in its own bucket, so several allreduces overlap one backward pass.
      const workers = await spawnGroupWithOut(t, dir, ws, steps, rows, 'plain', 0.0001);
      await allSucceed(workers, 60_000, `${ws} DDP workers`);
      const expected = await reference(steps, rows * ws, false);
      const results = readResults(dir, ws);
      for (const r of results) {
        assertClose(r.initial, new TinyModel(0).flat(), 0, `rank ${r.rank} initial parameters (broadcast)`);
        assert.equal(r.scale, 1, `rank ${r.rank} buffer broadcast from rank 0`);
        assertClose(r.final, expected, 1e-5, `rank ${r.rank} final parameters`);
      }
      assert.equal(results[0]!.buckets.length, 4, 'one bucket per parameter at this cap');
      assert.deepEqual(
        results[0]!.buckets.map((b) => b.names),
        [['b2'], ['w2'], ['b1'], ['w1']],
      );
    });
  }

  it('accumulates gradients inside noSync and all-reduces them on the next synchronised pass', async (t) => {
    const dir = tempDir(t, 'ddp-acc');
    const ws = 2;
    const steps = 4;
    const rows = 3;
    const workers = await spawnGroupWithOut(t, dir, ws, steps, rows, 'accumulate', 25);
    await allSucceed(workers, 60_000, 'DDP workers with noSync');
    const expected = await reference(steps, rows * ws, true);
    const results = readResults(dir, ws);
    assert.equal(results[0]!.buckets.length, 1, 'one bucket at the default cap');
    for (const r of results) assertClose(r.final, expected, 1e-5, `rank ${r.rank} final parameters`);
  });
});

interface Result {
  rank: number;
  initial: number[];
  final: number[];
  scale: number;
  buckets: { names: string[]; bytes: number }[];
}

function readResults(dir: string, ws: number): Result[] {
  return Array.from({ length: ws }, (_, r) => JSON.parse(readFileSync(join(dir, `rank${r}.json`), 'utf8')) as Result);
}

async function spawnGroupWithOut(
  t: Parameters<typeof tempDir>[0],
  dir: string,
  ws: number,
  steps: number,
  rows: number,
  mode: string,
  capMb: number,
) {
  // Each rank writes its own file: the worker takes the path from OUT_DIR + RANK.
  return spawnGroup(t, WORKER, [dir, String(steps), String(rows), mode, String(capMb)], ws);
}
