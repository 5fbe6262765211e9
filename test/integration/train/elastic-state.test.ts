import assert from 'node:assert/strict';
import { readdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { noopLogger, type Logger } from '../../../common/logger.js';
import {
  ElasticState,
  ElasticStateError,
  batchFor,
  checkpointFileName,
  epochPermutation,
  listCheckpoints,
  shardIndices,
} from '../../../tensor/elastic-state.js';
import { Generator, Linear, ReLU, SGD, Adam, Sequential, crossEntropy, randn } from '../../../tensor/index.js';
import { tempDir } from './helpers.js';

function makeModel(seed: number): Sequential {
  const g = new Generator(seed);
  return new Sequential(new Linear(5, 7, { generator: g }), new ReLU(), new Linear(7, 3, { generator: g }));
}

async function trainSteps(model: Sequential, opt: SGD | Adam, steps: number, from: number): Promise<void> {
  for (let s = from; s < from + steps; s++) {
    const g = new Generator(100 + s);
    const x = randn([4, 5], { generator: g });
    const y = [s % 3, (s + 1) % 3, (s + 2) % 3, s % 3];
    opt.zeroGrad();
    await crossEntropy(model.call(x), y).backward();
    opt.step();
  }
}

function flat(model: Sequential): number[] {
  return model.parameters().flatMap((p) => Array.from(p.data));
}

interface Logged {
  level: string;
  obj: unknown;
  msg: string | undefined;
}

function captureLogger(): { logs: Logged[]; logger: Logger } {
  const logs: Logged[] = [];
  const at =
    (level: string) =>
    (obj: object | string, msg?: string): void => {
      logs.push({ level, obj, msg });
    };
  return {
    logs,
    logger: { ...noopLogger, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') },
  };
}

function makeState(dir: string, logger?: Logger): ElasticState {
  return new ElasticState({
    dir,
    saveEverySteps: 2,
    keepLast: 2,
    rank: 0,
    worldSize: 1,
    batchSize: 8,
    handleSigterm: false,
    logger,
  });
}

describe('elastic training state', () => {
  it('round-trips model, optimizer, counters and JSON state through a checkpoint', async (t) => {
    const dir = tempDir(t, 'es');
    const model = makeModel(1);
    const opt = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
    let best = 0.25;
    const state = makeState(dir).track('model', model).track('optimizer', opt);
    state.trackJson('best', { get: () => best, set: (v) => (best = v as number) });
    t.after(() => state.close());
    assert.equal((await state.restore()).file, null, 'fresh start');
    await trainSteps(model, opt, 3, 0);
    for (let i = 0; i < 3; i++) assert.equal(await state.stepDone(), 'continue');
    best = 0.75;
    const file = await state.save('test');
    assert.equal(file, join(dir, checkpointFileName(3)));

    // A fresh process: new objects, restored from the directory, then both continue identically.
    const model2 = makeModel(2);
    const opt2 = new SGD(model2.parameters(), { lr: 0.1, momentum: 0.9 });
    let best2 = 0;
    const state2 = makeState(dir).track('model', model2).track('optimizer', opt2);
    state2.trackJson('best', { get: () => best2, set: (v) => (best2 = v as number) });
    t.after(() => state2.close());
    const info = await state2.restore();
    assert.equal(info.file, file);
    assert.equal(info.step, 3);
    assert.equal(state2.samplesConsumed, 24);
    assert.equal(best2, 0.75);
    assert.deepEqual(flat(model2), flat(model));
    await trainSteps(model, opt, 2, 3);
    await trainSteps(model2, opt2, 2, 3);
    assert.deepEqual(flat(model2), flat(model), 'momentum buffers were restored too');
  });

  it('keeps only the last K checkpoints', async (t) => {
    const dir = tempDir(t, 'es-keep');
    const model = makeModel(1);
    const state = makeState(dir).track('model', model);
    t.after(() => state.close());
    for (let i = 0; i < 7; i++) await state.stepDone(); // saves at steps 2, 4, 6
    assert.deepEqual(
      readdirSync(dir)
        .filter((f) => f.endsWith('.safetensors'))
        .sort(),
      [checkpointFileName(4), checkpointFileName(6)],
    );
  });

  it('falls back to the previous checkpoint with a warning naming the corrupt file', async (t) => {
    const dir = tempDir(t, 'es-corrupt');
    const model = makeModel(1);
    const opt = new Adam(model.parameters(), { lr: 0.01 });
    const state = makeState(dir).track('model', model).track('optimizer', opt);
    t.after(() => state.close());
    await trainSteps(model, opt, 2, 0);
    await state.stepDone();
    await state.stepDone(); // saves step 2
    const atStep2 = flat(model);
    await trainSteps(model, opt, 2, 2);
    await state.stepDone();
    await state.stepDone(); // saves step 4
    const newest = listCheckpoints(dir)[0]!;
    assert.equal(newest, join(dir, checkpointFileName(4)));
    // Flip one byte near the end (tensor data): the header still parses, the SHA-256 no longer matches.
    const bytes = readFileSync(newest);
    bytes[bytes.length - 3]! ^= 0xff;
    writeFileSync(newest, bytes);

    const { logs, logger } = captureLogger();
    const model2 = makeModel(9);
    const state2 = makeState(dir, logger)
      .track('model', model2)
      .track('optimizer', new Adam(model2.parameters(), { lr: 0.01 }));
    t.after(() => state2.close());
    const info = await state2.restore();
    assert.equal(info.step, 2);
    assert.deepEqual(info.skipped, [newest]);
    assert.deepEqual(flat(model2), atStep2);
    const warn = logs.find((l) => l.level === 'warn');
    assert.ok(warn !== undefined && String(warn.msg).includes(newest), `a warning names ${newest}`);

    // A truncated file is skipped the same way.
    writeFileSync(newest, bytes.subarray(0, 20));
    const state3 = makeState(dir).track('model', makeModel(3));
    t.after(() => state3.close());
    assert.equal((await state3.restore()).step, 2);
  });

  it('rejects bad options with a message naming the value', () => {
    assert.throws(
      () => new ElasticState({ dir: '/tmp/x', batchSize: 0, rank: 0, worldSize: 1, handleSigterm: false }),
      (e: unknown) =>
        e instanceof ElasticStateError &&
        e.code === 'INVALID_ARGUMENT' &&
        /batchSize=0: expected an integer ≥ 1/.test(e.message),
    );
    assert.throws(
      () => new ElasticState({ batchSize: 4, rank: 0, worldSize: 1, handleSigterm: false, dir: '' }),
      /no checkpoint directory/,
    );
    assert.throws(() => batchFor('keepGlobalBatch', 2, 3), /global batch 2 is smaller than the world size 3/);
  });

  it('re-shards the rest of an epoch for a new world size without repeating or skipping samples', () => {
    const n = 103;
    const perm = epochPermutation(n, 7, 0, true);
    assert.deepEqual(
      [...perm].sort((a, b) => a - b),
      Array.from({ length: n }, (_, i) => i),
      'a permutation',
    );
    assert.notDeepEqual(
      [...perm],
      Array.from({ length: n }, (_, i) => i),
      'shuffled',
    );
    // 3 workers × 4 per worker consume 5 global steps (60 samples), then 2 workers × 6 go on (global batch kept).
    const seen: number[] = [];
    for (let r = 0; r < 3; r++) seen.push(...shardIndices(perm, 0, r, 3, 4).subarray(0, 5 * 4));
    const consumed = 60;
    const after = [0, 1].map((r) => shardIndices(perm, consumed, r, 2, 6));
    assert.equal(after[0]!.length, 18, '3 more full global batches of 12 in the remaining 43: 3 × 6 per rank');
    for (const a of after) seen.push(...a);
    assert.equal(new Set(seen).size, seen.length, 'no sample twice');
    assert.deepEqual(
      [...seen].sort((a, b) => a - b),
      [...perm.subarray(0, 96)].sort((a, b) => a - b),
      'exactly the first 96 of the permutation (the last partial batch is dropped)',
    );
    // Global step s always covers the same samples whatever the world size.
    const step2at3 = [0, 1, 2].flatMap((r) => [...shardIndices(perm, 0, r, 3, 4).subarray(8, 12)]);
    const step2at2 = [0, 1].flatMap((r) => [...shardIndices(perm, 0, r, 2, 6).subarray(12, 18)]);
    assert.deepEqual(step2at2, step2at3);
    assert.deepEqual(step2at3, [...perm.subarray(24, 36)]);
    assert.deepEqual(batchFor('keepPerWorkerBatch', 16, 3), { perWorkerBatch: 16, globalBatch: 48 });
    assert.deepEqual(batchFor('keepGlobalBatch', 64, 3), { perWorkerBatch: 21, globalBatch: 63 });
  });
});
