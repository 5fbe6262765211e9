// THE MAIN JOB: elastic data-parallel training of an MLP on handwritten-style digits.
//
//   tensile run --standalone --nproc-per-node 2 --max-restarts 3 examples/train/train.ts [--chaos 1:40]
//
// Every worker builds the same deterministic data set (synthetic digits rendered from a bitmap font, or MNIST with
// --mnist DIR), restores the newest checkpoint from the checkpoint directory, joins the process group and trains
// with DistributedDataParallel. Rank 0 prints progress, appends the run's history (history.jsonl) and, at the end,
// writes an HTML report. With --chaos RANK:STEP[:MODE], that rank fails at that step once per run.
//
// Recovery: under `tensile run --recovery live` (TENSILE_RECOVERY=live with a control socket in TENSILE_CONTROL)
// the workers recover live (tensor/live-recovery.ts): the healthy ones keep running, a replacement gets the state
// from a peer, and the log says how long recovery took and how many steps were lost (0). Otherwise (restart mode,
// or no agent) the launcher restarts the whole group and training resumes from the last checkpoint.
// Longer than ~500 lines on purpose: the main job reads as one script (flags, data, model, both recovery modes,
// progress, report); data, goodput and the report live in the files beside it.

import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { initProcessGroup } from '../../collective/index.js';
import type { ProcessGroup } from '../../collective/api.js';
import { connectControl, nonLiveControl, type ControlClient } from '../../collective/control-client.js';
import { CONTROL_ENV, RECOVERY_ENV } from '../../common/control-protocol.js';
import { DistributedDataParallel } from '../../tensor/ddp.js';
import {
  LiveRecovery,
  isStandby,
  waitForPromotion,
  type RecoveryRecord,
  type RoundSpec,
  type StepOutcome,
} from '../../tensor/live-recovery.js';
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
import { IMAGE_PIXELS, NUM_CLASSES, cachedSyntheticSplit, loadMnist, type Dataset } from './data.js';
import { USAGE, UsageError, parseFlags, type Flags } from './flags.js';

type ChaosSpec = NonNullable<Flags['chaos']>;
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

/** `rank()` is read per line: a promoted standby learns its rank from the agent's round message. */
function makeLogger(rank: () => number): Logger {
  const line = (level: string, obj: object | string, msg?: string): void => {
    const text = typeof obj === 'string' ? obj : `${msg ?? ''} ${JSON.stringify(obj)}`;
    process.stderr.write(`[train rank ${rank()}] ${level}: ${text}\n`);
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

/** The process group, DDP wrapper and position of this worker; live recovery replaces them between steps. */
interface World {
  rank: number;
  ws: number;
  round: number;
  restartCount: number;
  pg: ProcessGroup | null;
  ddp: DistributedDataParallel | null;
}

/** Runs one unit of work; live mode may discard it and recover instead (see tensor/live-recovery.ts). */
type Guard = <T>(fn: () => Promise<T>) => Promise<StepOutcome<T>>;

/** Fails this worker on purpose, once per run (a marker in the checkpoint directory remembers it was done). */
function injectChaos(chaos: ChaosSpec, world: World, step: number, dir: string): void {
  const runId = process.env.TORCHELASTIC_RUN_ID ?? 'none';
  const marker = join(dir, `.chaos-${runId.replace(/[^A-Za-z0-9_.-]/g, '_')}-${chaos.rank}-${chaos.step}`);
  if (existsSync(marker)) return;
  writeFileSync(marker, `${process.pid}\n`);
  const how = {
    exit: 'exit code 1',
    kill: 'SIGKILL to itself',
    hang: 'a busy loop',
    stop: 'SIGSTOP to itself',
    node: 'SIGKILL to its agent and itself',
  }[chaos.mode];
  const message = `--chaos: rank ${world.rank} fails on purpose at step ${step} (${how}; once per run)`;
  appendHistory(dir, { type: 'failure', timeMs: Date.now(), rank: world.rank, step, round: world.round, message });
  process.stderr.write(`${message}\n`);
  switch (chaos.mode) {
    case 'exit':
      writeErrorFile(message);
      process.exit(1);
      break;
    case 'kill':
      process.kill(process.pid, 'SIGKILL');
      break;
    case 'node':
      if (process.ppid > 1) process.kill(process.ppid, 'SIGKILL');
      process.kill(process.pid, 'SIGKILL');
      break;
    case 'stop':
      process.kill(process.pid, 'SIGSTOP');
      break;
    case 'hang':
      for (;;) {
        // Spin without yielding: heartbeats stop, collectives of the peers stall.
      }
  }
}

/** Connects the control channel when the agent offers one (heartbeats; live recovery with TENSILE_RECOVERY=live). */
async function openControl(logger: Logger): Promise<ControlClient> {
  if ((process.env[CONTROL_ENV] ?? '') === '') return nonLiveControl(`${CONTROL_ENV} is not set`);
  return connectControl({ logger, live: process.env[RECOVERY_ENV] === 'live' });
}

function describeRecovery(r: RecoveryRecord): string {
  const from =
    r.stateFrom === 'peer'
      ? `state from rank ${r.sourceRank} (${(r.bytes / 1e6).toFixed(2)} MB in ${r.transferMs.toFixed(1)} ms)`
      : r.stateFrom === 'self'
        ? 'own state kept'
        : r.stateFrom === 'disk'
          ? 'state from the newest checkpoint'
          : 'fresh state';
  const lost = r.stepsLost === null ? 'steps lost unknown (no live state)' : `${r.stepsLost} steps lost`;
  return (
    `live recovery: round ${r.round}, world size ${r.worldSize}, rank ${r.rank}: training again ` +
    `${r.sinceFaultMs.toFixed(0)} ms after the fault (round → ready ${r.recoveryMs.toFixed(0)} ms), ${from}, ` +
    `${lost}, continuing at step ${r.step}`
  );
}

async function main(flags: Flags): Promise<number> {
  const restartCount = envInt('TORCHELASTIC_RESTART_COUNT', 0);
  const world: World = {
    rank: envInt('RANK', 0),
    ws: envInt('WORLD_SIZE', 1),
    round: envInt('TENSILE_ROUND', restartCount),
    restartCount,
    pg: null,
    ddp: null,
  };
  const dir = resolve(flags.checkpointDir);
  const logger = makeLogger(() => world.rank);
  const say = (s: string): void => {
    if (world.rank === 0) process.stdout.write(`${s}\n`);
  };
  const control = await openControl(logger);
  const liveMode = control.live && process.env[RECOVERY_ENV] === 'live';

  const data = flags.mnist
    ? loadMnist(flags.mnist, { train: flags.trainSize, test: flags.testSize })
    : cachedSyntheticSplit(dir, flags.trainSize, flags.testSize, flags.seed).split;
  const model = buildModel(flags.hidden, flags.seed);
  const opt = new SGD(model.parameters(), { lr: flags.lr, momentum: flags.momentum });
  // A warm standby (TENSILE_STANDBY=1, live mode only) has loaded everything above; it now waits, in no group, until
  // the agent promotes it. The round message's rank, world size and round are its own, not the environment's.
  // Preemption (SIGTERM) ends a wait for the next round at once, so that the checkpoint is saved in the grace time.
  const stop = new AbortController();
  if (liveMode) process.once('SIGTERM', () => stop.abort());
  let promotedTo: RoundSpec | undefined;
  if (liveMode && isStandby()) {
    promotedTo = await waitForPromotion(control, stop.signal);
    world.rank = promotedTo.rank;
    world.ws = promotedTo.worldSize;
    world.round = promotedTo.round;
    world.restartCount = promotedTo.restartCount;
  }
  let lastTestAccuracy = 0;
  // Live mode: the group comes from LiveRecovery below; restart mode joins the environment's group here.
  // Keep the event loop alive while joining (an earlier store client retried on an unref'd timer, so a rank that
  // started before rank 0's store listened exited with code 13; fixed there since, harmless here).
  const keepAlive = setInterval(() => undefined, 1000);
  if (!liveMode && world.ws > 1) world.pg = await initProcessGroup({ backend: 'tcp', timeoutMs: flags.timeoutMs });
  clearInterval(keepAlive);
  const state = new ElasticState({
    dir,
    saveEverySteps: flags.saveEvery,
    keepLast: flags.keepLast,
    rank: world.rank,
    worldSize: world.ws,
    processGroup: world.pg ?? undefined,
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

  let live: LiveRecovery | null = null;
  let resumed: { file: string | null; step: number; epoch: number; savedWorldSize: number | null };
  if (liveMode) {
    live = await LiveRecovery.start({
      control,
      initial: promotedTo,
      state,
      timeoutMs: flags.timeoutMs,
      signal: stop.signal,
      logger,
      onGroup: async (pg, spec) => {
        world.ddp?.detach();
        world.pg = pg;
        world.rank = spec.rank;
        world.ws = spec.worldSize;
        world.round = spec.round;
        world.restartCount = spec.restartCount;
        world.ddp = await DistributedDataParallel.create(model, pg, { broadcastInitialState: false });
      },
    });
    const first = live.history[0]!;
    resumed = {
      file: first.checkpoint,
      step: state.step,
      epoch: state.epoch,
      savedWorldSize: null,
    };
    // Every rank that joined with a peer's state says so (a joiner is rarely rank 0).
    if (first.stateFrom === 'peer') process.stdout.write(`${describeRecovery(first)}\n`);
  } else {
    const restored = await state.restore();
    resumed = restored;
    world.ddp = world.pg !== null ? await DistributedDataParallel.create(model, world.pg) : null;
  }
  const guard: Guard =
    live !== null ? (fn) => live.step(() => fn()) : async (fn) => ({ done: true as const, value: await fn() });

  const { perWorkerBatch, globalBatch } = state.batch;
  say(
    `tensile train: ${data.source}, ${data.train.n} train / ${data.test.n} held-out, MLP 784-${flags.hidden.join('-')}-10, ` +
      `world size ${world.ws}, batch ${perWorkerBatch}×${world.ws}=${globalBatch}, BLAS ${blasName().split(' ').slice(0, 2).join(' ')}, ` +
      `round ${world.round}, restarts ${world.restartCount}, recovery ${liveMode ? 'live' : 'restart'}`,
  );
  if (resumed.file !== null) {
    say(
      `resumed from ${resumed.file} (step ${resumed.step}, epoch ${resumed.epoch + 1}` +
        `${resumed.savedWorldSize !== null && resumed.savedWorldSize !== world.ws ? `, saved at world size ${resumed.savedWorldSize}: data re-sharded for ${world.ws}` : ''})`,
    );
  } else if (resumed.step === 0) {
    say(`fresh start; checkpoints in ${dir}`);
  }
  const roundEvent = (): void => {
    if (world.rank !== 0) return;
    appendHistory(dir, {
      type: 'round',
      timeMs: Date.now(),
      round: world.round,
      restartCount: world.restartCount,
      worldSize: world.ws,
      resumedStep: state.step,
      resumedFrom: resumed.file,
    });
  };
  roundEvent();
  const onRecovered = (r: RecoveryRecord): void => {
    process.stdout.write(`${describeRecovery(r)}\n`);
    resumed = { file: null, step: r.step, epoch: state.epoch, savedWorldSize: null };
    roundEvent();
    if (world.rank === 0) {
      appendHistory(dir, {
        type: 'recovery',
        timeMs: Date.now(),
        round: r.round,
        worldSize: r.worldSize,
        stateFrom: r.stateFrom,
        recoveryMs: r.recoveryMs,
        sinceFaultMs: r.sinceFaultMs,
        stepsLost: r.stepsLost,
        step: r.step,
        cause: r.cause,
      });
    }
  };
  const chaos = flags.chaos;
  if (chaos !== null && chaos.rank >= world.ws)
    logger.warn(`--chaos rank ${chaos.rank} ≥ world size ${world.ws}: no failure injected`);

  // This rank's training stats of the current epoch: loss sum (per batch), batches, correct, samples.
  const stats = new Float64Array(4);
  let statsEpoch = state.epoch;
  let epochStartMs = Date.now();
  let epochStartStep = state.step;
  try {
    while (state.epoch < flags.epochs) {
      if (statsEpoch !== state.epoch) {
        stats.fill(0);
        statsEpoch = state.epoch;
        epochStartMs = Date.now();
        epochStartStep = state.step;
      }
      const shard = state.shard(data.train.n);
      const B = shard.perWorkerBatch;
      const stepsInEpoch = Math.floor(data.train.n / shard.globalBatch);
      let interrupted = false;
      for (let s = 0; s < shard.stepsLeft; s++) {
        if (chaos !== null && world.rank === chaos.rank && state.step === chaos.step && world.restartCount === 0) {
          injectChaos(chaos, world, state.step, dir);
        }
        const outcome = await guard(async () => {
          const { x, y } = gather(data.train, shard.indices.subarray(s * B, (s + 1) * B));
          opt.zeroGrad();
          const logits = model.call(x);
          const loss = crossEntropy(logits, y);
          if (world.ddp !== null) await world.ddp.backward(loss);
          else await loss.backward();
          // Only after a complete gradient sync: an interrupted step leaves the parameters untouched.
          opt.step();
          const lossValue = loss.item();
          const correct = countCorrect(logits, y);
          return { lossValue, correct, verdict: await state.stepDone() };
        });
        if (!outcome.done) {
          onRecovered(outcome.recovery);
          interrupted = true;
          break;
        }
        const { lossValue, correct, verdict } = outcome.value;
        stats[0]! += lossValue;
        stats[1]! += 1;
        stats[2]! += correct;
        stats[3]! += B;
        control.heartbeat(state.step, state.epoch);
        if (flags.stepDelayMs > 0) await sleep(flags.stepDelayMs);
        const done = stepsInEpoch - (shard.stepsLeft - s - 1);
        if (world.rank === 0 && (state.step % flags.logEvery === 0 || s === shard.stepsLeft - 1)) {
          const secs = (Date.now() - epochStartMs) / 1000;
          const rate = ((state.step - epochStartStep) * shard.globalBatch) / Math.max(secs, 1e-3);
          say(
            `epoch ${state.epoch + 1}/${flags.epochs} ${progressBar(done, stepsInEpoch)} step ${state.step} ` +
              `loss ${lossValue.toFixed(4)} acc ${((100 * stats[2]!) / stats[3]!).toFixed(1)}% ` +
              `${rate.toFixed(0)} samples/s ws ${world.ws} restarts ${world.restartCount}`,
          );
          appendHistory(dir, {
            type: 'step',
            timeMs: Date.now(),
            step: state.step,
            epoch: state.epoch,
            loss: lossValue,
            worldSize: world.ws,
          });
        }
        if (verdict === 'stop') {
          say(`preempted (SIGTERM): checkpoint saved at step ${state.step}; exiting`);
          world.pg?.abort('preempted');
          return EXIT_PREEMPTED;
        }
      }
      if (interrupted) continue; // re-shard from the recovered position
      // End of epoch: global training stats and held-out accuracy, then the epoch boundary is checkpointed.
      const end = await guard(async () => {
        const sums = Float64Array.from(stats);
        if (world.pg !== null) await world.pg.allreduce(sums, 'sum');
        const testAccuracy = await evaluate(model, data.test, world.rank, world.ws, world.pg);
        return { sums, testAccuracy };
      });
      if (!end.done) {
        onRecovered(end.recovery);
        continue; // the epoch's last step is done: the loop comes straight back here in the new world
      }
      const { sums } = end.value;
      lastTestAccuracy = end.value.testAccuracy;
      const trainLoss = sums[1]! > 0 ? sums[0]! / sums[1]! : 0;
      const trainAccuracy = sums[3]! > 0 ? sums[2]! / sums[3]! : 0;
      const secs = (Date.now() - epochStartMs) / 1000;
      const samplesPerSec = ((state.step - epochStartStep) * state.batch.globalBatch) / Math.max(secs, 1e-3);
      say(
        `epoch ${state.epoch + 1}/${flags.epochs} done: loss ${trainLoss.toFixed(4)} train acc ${(100 * trainAccuracy).toFixed(2)}% ` +
          `held-out acc ${(100 * lastTestAccuracy).toFixed(2)}% ${samplesPerSec.toFixed(0)} samples/s ` +
          `(${secs.toFixed(1)} s) ws ${world.ws} restarts ${world.restartCount}`,
      );
      if (world.rank === 0) {
        appendHistory(dir, {
          type: 'epoch',
          timeMs: Date.now(),
          epoch: state.epoch,
          step: state.step,
          loss: trainLoss,
          trainAccuracy,
          testAccuracy: lastTestAccuracy,
          samplesPerSec,
          worldSize: world.ws,
          restartCount: world.restartCount,
        });
      }
      state.nextEpoch();
      await state.save('epoch');
      if (state.preempted) {
        say(`preempted (SIGTERM): checkpoint saved at step ${state.step}; exiting`);
        world.pg?.abort('preempted');
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
      world.pg?.abort('preempted');
      return EXIT_PREEMPTED;
    }
    throw err;
  }

  const reached = lastTestAccuracy >= flags.targetAccuracy;
  let exitCode = 0;
  if (world.rank === 0) {
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
    if (live !== null) {
      const recoveries = live.history.slice(1);
      const lost = recoveries.reduce((a, r) => a + (r.stepsLost ?? 0), 0);
      say(`live recoveries: ${recoveries.length}, steps lost in all: ${lost}`);
    }
    say(`report: ${reportPath}`);
    if (!reached && flags.requireTarget) exitCode = EXIT_BELOW_TARGET;
  }
  state.close();
  if (live !== null) {
    // Everyone has finished its last collective before anyone closes its connections.
    await live.pg.barrier().catch(() => undefined);
    await live.close();
  } else {
    await world.pg?.destroy();
    control.close();
  }
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
