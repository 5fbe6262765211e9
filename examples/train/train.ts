// THE MAIN JOB: elastic data-parallel training of an MLP on handwritten-style digits.
//
//   tensile run --standalone --nproc-per-node 2 --max-restarts 3 examples/train/train.ts [--chaos 1:40]
//
// Every worker builds the same deterministic data set (synthetic digits rendered from a bitmap font, or MNIST with
// --mnist DIR), restores the newest checkpoint from the checkpoint directory, joins the process group and trains
// with DistributedDataParallel. Rank 0 prints progress, appends the run's history (history.jsonl) and, at the end,
// writes an HTML report. With --chaos RANK:STEP, that rank fails at that step on the first attempt, so the launcher
// restarts the group and training visibly resumes from the last checkpoint.

import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { initProcessGroup } from '../../collective/index.js';
import type { ProcessGroup } from '../../collective/api.js';
import { DistributedDataParallel } from '../../tensor/ddp.js';
import { noopLogger, type Logger } from '../../common/logger.js';
import { ElasticState } from '../../tensor/elastic-state.js';
import {
  Generator,
  Linear,
  ReLU,
  SGD,
  Sequential,
  Tensor,
  argmax,
  blasName,
  crossEntropy,
  noGrad,
  type Module,
} from '../../tensor/index.js';
import { IMAGE_PIXELS, NUM_CLASSES, loadMnist, syntheticSplit, type Dataset } from './data.js';
import { USAGE, UsageError, parseFlags, type Flags } from './flags.js';
import { appendHistory, readHistory } from './history.js';
import { renderReport } from './report.js';

const EXIT_PREEMPTED = 143;
const EXIT_BELOW_TARGET = 3;

function envInt(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`${name}=${JSON.stringify(v)}: expected an integer ≥ 0`);
  return n;
}

function makeLogger(rank: number): Logger {
  const line = (level: string, obj: object | string, msg?: string): void => {
    const text = typeof obj === 'string' ? obj : `${msg ?? ''} ${JSON.stringify(obj)}`;
    process.stderr.write(`[train rank ${rank}] ${level}: ${text}\n`);
  };
  return {
    ...noopLogger, // debug and info dropped: the script prints its own progress; checkpoints are in the report
    warn: (o, m) => line('warn', o, m),
    error: (o, m) => line('error', o, m),
  };
}

function buildModel(hidden: readonly number[], seed: number): Sequential {
  const g = new Generator(seed);
  const layers: Module[] = [];
  let width = IMAGE_PIXELS;
  for (const h of hidden) {
    layers.push(new Linear(width, h, { generator: g }), new ReLU());
    width = h;
  }
  layers.push(new Linear(width, NUM_CLASSES, { generator: g }));
  return new Sequential(...layers);
}

function gather(data: Dataset, idx: ArrayLike<number>): { x: Tensor; y: Int32Array } {
  const x = new Float32Array(idx.length * IMAGE_PIXELS);
  const y = new Int32Array(idx.length);
  for (let i = 0; i < idx.length; i++) {
    const j = idx[i]!;
    x.set(data.images.subarray(j * IMAGE_PIXELS, (j + 1) * IMAGE_PIXELS), i * IMAGE_PIXELS);
    y[i] = data.labels[j]!;
  }
  return { x: new Tensor(x, [idx.length, IMAGE_PIXELS]), y };
}

function countCorrect(logits: Tensor, y: Int32Array): number {
  const pred = argmax(logits, 1).data;
  let hit = 0;
  for (let i = 0; i < y.length; i++) if (pred[i] === y[i]) hit++;
  return hit;
}

/** Held-out accuracy: each rank scores a strided share, then one allreduce of [correct, count]. */
async function evaluate(
  model: Module,
  test: Dataset,
  rank: number,
  ws: number,
  pg: ProcessGroup | null,
): Promise<number> {
  const idx: number[] = [];
  for (let i = rank; i < test.n; i += ws) idx.push(i);
  let correct = 0;
  const chunk = 512;
  noGrad(() => {
    for (let from = 0; from < idx.length; from += chunk) {
      const { x, y } = gather(test, idx.slice(from, from + chunk));
      correct += countCorrect(model.call(x), y);
    }
  });
  const sums = new Float64Array([correct, idx.length]);
  if (pg !== null) await pg.allreduce(sums, 'sum');
  return sums[1]! === 0 ? 0 : sums[0]! / sums[1]!;
}

function progressBar(done: number, total: number, width = 24): string {
  const filled = total === 0 ? width : Math.round((done / total) * width);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(Math.floor((100 * done) / Math.max(total, 1))).padStart(3)}%`;
}

function writeErrorFile(message: string): void {
  const path = process.env.TORCHELASTIC_ERROR_FILE;
  if (path === undefined || path === '') return;
  const timestamp = Math.floor(Date.now() / 1000);
  try {
    writeFileSync(
      path,
      JSON.stringify({ message: { message, extraInfo: { py_callstack: message, timestamp: String(timestamp) } } }),
    );
  } catch {
    // Best effort: the exit code still reports the failure.
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(flags: Flags): Promise<number> {
  const rank = envInt('RANK', 0);
  const ws = envInt('WORLD_SIZE', 1);
  const restartCount = envInt('TORCHELASTIC_RESTART_COUNT', 0);
  const round = envInt('TENSILE_ROUND', restartCount);
  const dir = resolve(flags.checkpointDir);
  const logger = makeLogger(rank);
  const say = (s: string): void => {
    if (rank === 0) process.stdout.write(`${s}\n`);
  };

  // Keep the event loop alive while joining (an earlier store client retried on an unref'd timer, so a rank that
  // started before rank 0's store listened exited with code 13; fixed there since, harmless here).
  const keepAlive = setInterval(() => undefined, 1000);
  const pg = await (ws > 1 ? initProcessGroup({ backend: 'tcp', timeoutMs: flags.timeoutMs }) : null);
  clearInterval(keepAlive);
  const data = flags.mnist
    ? loadMnist(flags.mnist, { train: flags.trainSize, test: flags.testSize })
    : syntheticSplit(flags.trainSize, flags.testSize, flags.seed);
  const model = buildModel(flags.hidden, flags.seed);
  const opt = new SGD(model.parameters(), { lr: flags.lr, momentum: flags.momentum });
  let lastTestAccuracy = 0;
  const state = new ElasticState({
    dir,
    saveEverySteps: flags.saveEvery,
    keepLast: flags.keepLast,
    rank,
    worldSize: ws,
    processGroup: pg ?? undefined,
    batchSize: flags.batchSize,
    batchPolicy: flags.batchPolicy === 'keep-global' ? 'keepGlobalBatch' : 'keepPerWorkerBatch',
    seed: flags.seed,
    logger,
    onSaved: ({ file, step, reason }) =>
      appendHistory(dir, { type: 'checkpoint', timeMs: Date.now(), step, file, reason }),
  })
    .track('model', model)
    .track('optimizer', opt);
  state.trackJson('lastTestAccuracy', {
    get: () => lastTestAccuracy,
    set: (v) => (lastTestAccuracy = Number(v)),
  });
  const restored = await state.restore();
  const ddp = pg !== null ? await DistributedDataParallel.create(model, pg) : null;

  const { perWorkerBatch, globalBatch } = state.batch;
  say(
    `tensile train: ${data.source}, ${data.train.n} train / ${data.test.n} held-out, MLP 784-${flags.hidden.join('-')}-10, ` +
      `world size ${ws}, batch ${perWorkerBatch}×${ws}=${globalBatch}, BLAS ${blasName().split(' ').slice(0, 2).join(' ')}, round ${round}, restarts ${restartCount}`,
  );
  if (restored.file !== null) {
    say(
      `resumed from ${restored.file} (step ${restored.step}, epoch ${restored.epoch + 1}` +
        `${restored.savedWorldSize !== ws ? `, saved at world size ${restored.savedWorldSize}: data re-sharded for ${ws}` : ''})`,
    );
  } else {
    say(`fresh start; checkpoints in ${dir}`);
  }
  if (rank === 0) {
    appendHistory(dir, {
      type: 'round',
      timeMs: Date.now(),
      round,
      restartCount,
      worldSize: ws,
      resumedStep: restored.step,
      resumedFrom: restored.file,
    });
  }
  const chaos = flags.chaos !== null && restartCount === 0 ? flags.chaos : null;
  if (chaos !== null && chaos.rank >= ws)
    logger.warn(`--chaos rank ${chaos.rank} ≥ world size ${ws}: no failure injected`);

  try {
    while (state.epoch < flags.epochs) {
      const shard = state.shard(data.train.n);
      const B = shard.perWorkerBatch;
      const epochStartMs = Date.now();
      const epochStartStep = state.step;
      const stepsInEpoch = Math.floor(data.train.n / shard.globalBatch);
      const stats = new Float64Array([0, 0, 0]); // loss sum (per batch), correct, samples — this rank
      for (let s = 0; s < shard.stepsLeft; s++) {
        if (chaos !== null && rank === chaos.rank && state.step === chaos.step) {
          const message = `--chaos: rank ${rank} fails on purpose at step ${state.step} (first attempt only)`;
          appendHistory(dir, { type: 'failure', timeMs: Date.now(), rank, step: state.step, round, message });
          writeErrorFile(message);
          process.stderr.write(`${message}\n`);
          process.exit(1);
        }
        const { x, y } = gather(data.train, shard.indices.subarray(s * B, (s + 1) * B));
        opt.zeroGrad();
        const logits = model.call(x);
        const loss = crossEntropy(logits, y);
        if (ddp !== null) await ddp.backward(loss);
        else await loss.backward();
        opt.step();
        const lossValue = loss.item();
        stats[0]! += lossValue;
        stats[1]! += countCorrect(logits, y);
        stats[2]! += B;
        const verdict = await state.stepDone();
        if (flags.stepDelayMs > 0) await sleep(flags.stepDelayMs);
        const done = stepsInEpoch - (shard.stepsLeft - s - 1);
        if (rank === 0 && (state.step % flags.logEvery === 0 || s === shard.stepsLeft - 1)) {
          const secs = (Date.now() - epochStartMs) / 1000;
          const rate = ((state.step - epochStartStep) * shard.globalBatch) / Math.max(secs, 1e-3);
          say(
            `epoch ${state.epoch + 1}/${flags.epochs} ${progressBar(done, stepsInEpoch)} step ${state.step} ` +
              `loss ${lossValue.toFixed(4)} acc ${((100 * stats[1]!) / stats[2]!).toFixed(1)}% ` +
              `${rate.toFixed(0)} samples/s ws ${ws} restarts ${restartCount}`,
          );
          appendHistory(dir, {
            type: 'step',
            timeMs: Date.now(),
            step: state.step,
            epoch: state.epoch,
            loss: lossValue,
            worldSize: ws,
          });
        }
        if (verdict === 'stop') {
          say(`preempted (SIGTERM): checkpoint saved at step ${state.step}; exiting`);
          pg?.abort('preempted');
          return EXIT_PREEMPTED;
        }
      }
      // End of epoch: global training stats and held-out accuracy, then the epoch boundary is checkpointed.
      const steps = Math.max(1, state.step - epochStartStep);
      const sums = new Float64Array([stats[0]! / steps, stats[1]!, stats[2]!]);
      if (pg !== null) await pg.allreduce(sums, 'sum');
      const trainLoss = sums[0]! / ws;
      const trainAccuracy = sums[2]! > 0 ? sums[1]! / sums[2]! : 0;
      lastTestAccuracy = await evaluate(model, data.test, rank, ws, pg);
      const secs = (Date.now() - epochStartMs) / 1000;
      const samplesPerSec = ((state.step - epochStartStep) * shard.globalBatch) / Math.max(secs, 1e-3);
      say(
        `epoch ${state.epoch + 1}/${flags.epochs} done: loss ${trainLoss.toFixed(4)} train acc ${(100 * trainAccuracy).toFixed(2)}% ` +
          `held-out acc ${(100 * lastTestAccuracy).toFixed(2)}% ${samplesPerSec.toFixed(0)} samples/s ` +
          `(${secs.toFixed(1)} s) ws ${ws} restarts ${restartCount}`,
      );
      if (rank === 0) {
        appendHistory(dir, {
          type: 'epoch',
          timeMs: Date.now(),
          epoch: state.epoch,
          step: state.step,
          loss: trainLoss,
          trainAccuracy,
          testAccuracy: lastTestAccuracy,
          samplesPerSec,
          worldSize: ws,
          restartCount,
        });
      }
      state.nextEpoch();
      await state.save('epoch');
      if (state.preempted) {
        say(`preempted (SIGTERM): checkpoint saved at step ${state.step}; exiting`);
        pg?.abort('preempted');
        return EXIT_PREEMPTED;
      }
    }
  } catch (err) {
    // A peer that stopped at its own step boundary on SIGTERM breaks our collective: the model and optimizer are
    // still exactly at the last completed step (the optimizer only steps after a successful allreduce), so save it.
    // Our own SIGTERM may be queued behind the peer's disconnect: give it a moment to arrive.
    if (!state.preempted) await sleep(300);
    if (state.preempted) {
      await state.save('preempted');
      say(`preempted (SIGTERM) during a collective: checkpoint saved at step ${state.step}; exiting`);
      pg?.abort('preempted');
      return EXIT_PREEMPTED;
    }
    throw err;
  }

  const reached = lastTestAccuracy >= flags.targetAccuracy;
  let exitCode = 0;
  if (rank === 0) {
    appendHistory(dir, {
      type: 'done',
      timeMs: Date.now(),
      step: state.step,
      testAccuracy: lastTestAccuracy,
      target: flags.targetAccuracy,
      reached,
    });
    const reportPath = resolve(flags.report ?? join(dir, 'report.html'));
    writeFileSync(reportPath, renderReport(readHistory(dir), { title: 'tensile training run', source: data.source }));
    say(
      `final held-out accuracy ${(100 * lastTestAccuracy).toFixed(2)}% after ${state.step} steps ` +
        `(target ${(100 * flags.targetAccuracy).toFixed(0)}%: ${reached ? 'reached' : 'NOT reached'})`,
    );
    say(`report: ${reportPath}`);
    if (!reached && flags.requireTarget) exitCode = EXIT_BELOW_TARGET;
  }
  state.close();
  await pg?.destroy();
  return exitCode;
}

let flags: Flags | 'help';
try {
  flags = parseFlags(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`train: ${(err as Error).message}\n`);
  process.exit(2);
}
if (flags === 'help') {
  process.stdout.write(USAGE);
  process.exit(0);
}
try {
  // Exit explicitly: after a preemption or a peer's loss, sockets of the aborted group may still hold the loop.
  process.exit(await main(flags));
} catch (err) {
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  writeErrorFile(message);
  process.stderr.write(
    `train (rank ${process.env.RANK ?? 0}): ${err instanceof Error ? (err.stack ?? message) : message}\n`,
  );
  process.exit(err instanceof UsageError ? 2 : 1);
}
