// The main job end to end, under the real launcher: a chaos failure is recovered from the last checkpoint (restart
// path) or live (the survivor keeps running, 0 steps lost), and the run ends where an undisturbed run ends; a 3-worker run stopped by SIGTERM resumes with 2 workers (re-sharded).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readHistory, type HistoryEvent } from '../../../examples/train/history.js';
import { ElasticState, listCheckpoints } from '../../../tensor/elastic-state.js';
import { runArgv } from '../../helpers/cli.js';
import { allSucceed, spawnGroup, spawnProc, tempDir, within } from '../../integration/train/helpers.js';

const TRAIN = 'examples/train/train.ts';
const AGENT = 'agent/cli.ts';
// CI size: ~1 s per epoch per run on 2 cores.
const SMALL = ['--small', '--epochs', '2', '--train-size', '2000', '--test-size', '400', '--log-every', '10'];

function events<T extends HistoryEvent['type']>(dir: string, type: T): Extract<HistoryEvent, { type: T }>[] {
  return readHistory(dir).filter((e): e is Extract<HistoryEvent, { type: T }> => e.type === type);
}

function launch(t: Parameters<typeof tempDir>[0], dir: string, extra: string[], recovery = 'restart') {
  return spawnProc(
    t,
    process.execPath,
    [
      '--import',
      'tsx',
      AGENT,
      ...runArgv({ standalone: true, nproc: 2, maxRestarts: 1 }, [
        '--recovery',
        recovery,
        TRAIN,
        ...SMALL,
        '--checkpoint-dir',
        dir,
        ...extra,
      ]),
    ],
    {},
  );
}

let calmRun: Promise<string> | null = null;
const calmDirs: string[] = [];
/** The checkpoint dir of an undisturbed run (started once, shared by the tests that compare with it). */
function calm(t: Parameters<typeof tempDir>[0]): Promise<string> {
  calmRun ??= (async () => {
    // Outlives the first test that asks for it: removed when the suite ends (the `after` in the describe below).
    const dir = mkdtempSync(join(tmpdir(), 'tensile-train-calm-'));
    calmDirs.push(dir);
    const a = launch(t, dir, []);
    const ea = await within(150_000, 'the undisturbed run', a.exited);
    assert.equal(ea.code, 0, `undisturbed run failed:\n${a.output()}`);
    return dir;
  })();
  return calmRun;
}

describe('the main job', () => {
  after(() => {
    for (const d of calmDirs) rmSync(d, { recursive: true, force: true });
  });
  it('recovers from an injected worker failure on the restart path and ends with the same accuracy as an undisturbed run', async (t) => {
    const chaos = tempDir(t, 'train-chaos');
    const b = launch(t, chaos, ['--chaos', '1:25']);
    const [calmDir, eb] = await within(150_000, 'both training runs', Promise.all([calm(t), b.exited]));
    assert.equal(eb.code, 0, `chaos run failed:\n${b.output()}`);

    const out = b.output();
    assert.match(out, /fails on purpose at step 25/);
    // The last periodic checkpoint is step 20; rank 0 may also save step 25 itself when the launcher's SIGTERM (sent
    // to stop the group after rank 1's failure) reaches it while its allreduce is failing: both are consistent.
    const resumed = /resumed from .*ckpt-0+(\d+)\.safetensors \(step (\d+)/.exec(out);
    assert.ok(resumed !== null && ['20', '25'].includes(resumed[2]!), `resumed from the last checkpoint:\n${out}`);
    assert.match(out, /report: .*report\.html/);
    const rounds = events(chaos, 'round');
    assert.deepEqual(
      rounds.map((r) => [r.restartCount, r.resumedStep]),
      [
        [0, 0],
        [1, Number(resumed[2])],
      ],
    );
    assert.equal(events(chaos, 'failure').length, 1);

    const doneCalm = events(calmDir, 'done').at(-1)!;
    const doneChaos = events(chaos, 'done').at(-1)!;
    assert.equal(doneChaos.step, doneCalm.step);
    assert.equal(doneChaos.testAccuracy, doneCalm.testAccuracy, 'replaying from the checkpoint is deterministic');
    assert.ok(doneChaos.reached, `reached the target (${doneChaos.testAccuracy} ≥ ${doneChaos.target})`);

    const html = readFileSync(join(chaos, 'report.html'), 'utf8');
    assert.match(html, /<svg/);
    assert.match(html, /rank 1 failed at step 25/);
    assert.doesNotMatch(html, /<script|<link|src="http/, 'self-contained');
  });

  it('recovers from the same failure live: the survivor keeps running, 0 steps are lost, the result is the same', async (t) => {
    const chaos = tempDir(t, 'train-live');
    const b = launch(t, chaos, ['--chaos', '1:25'], 'live');
    const [calmDir, eb] = await within(150_000, 'both training runs', Promise.all([calm(t), b.exited]));
    assert.equal(eb.code, 0, `live chaos run failed:\n${b.output()}`);
    const out = b.output();
    assert.match(out, /fails on purpose at step 25/);
    assert.match(out, /recovery live/);
    assert.match(
      out,
      /live recovery: round 1, world size 2, rank 0: training again \d+ ms after the fault \(round → ready \d+ ms\), own state kept, 0 steps lost, continuing at step 25/,
    );
    assert.match(out, /live recoveries: 1, steps lost in all: 0/);
    assert.doesNotMatch(out, /resumed from/, 'nothing was reloaded from disk');
    t.diagnostic(out.split('\n').find((l) => l.includes('live recovery: round 1')) ?? '');
    const recoveries = events(chaos, 'recovery');
    assert.equal(recoveries.length, 1);
    assert.equal(recoveries[0]!.stepsLost, 0);
    const doneCalm = events(calmDir, 'done').at(-1)!;
    const doneLive = events(chaos, 'done').at(-1)!;
    assert.equal(doneLive.step, doneCalm.step);
    assert.equal(doneLive.testAccuracy, doneCalm.testAccuracy, 'live recovery continues exactly where it stopped');
    assert.match(readFileSync(join(chaos, 'report.html'), 'utf8'), /Goodput <b>/);
  });

  it('continues a 3-worker run stopped by SIGTERM with 2 workers, re-sharding the epoch', async (t) => {
    const dir = tempDir(t, 'train-shrink');
    const args = [...SMALL, '--epochs', '3', '--checkpoint-dir', dir, '--save-every', '1000'];
    const three = await spawnGroup(t, TRAIN, [...args, '--step-delay-ms', '30'], 3);
    // Wait until the run is well into its first epoch, then preempt every worker (as the agent would).
    await within(
      60_000,
      'step 20 of the 3-worker run',
      (async () => {
        for (;;) {
          if (events(dir, 'step').some((s) => s.step >= 20)) return;
          if (three.some((p) => p.child.exitCode !== null))
            throw new Error(`a worker exited early:\n${three.map((p) => p.output()).join('\n')}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      })(),
    );
    for (const p of three) p.child.kill('SIGTERM');
    const exits = await within(30_000, 'the 3 workers to stop', Promise.all(three.map((p) => p.exited)));
    assert.equal(exits[0]!.code, 143, `rank 0 saves and exits 143 on SIGTERM:\n${three[0]!.output()}`);
    assert.match(three[0]!.output(), /preempted \(SIGTERM\)/);
    const saved = listCheckpoints(dir)[0];
    assert.ok(saved !== undefined && existsSync(saved), 'a checkpoint was written on SIGTERM');
    const { state } = await ElasticState.readCheckpoint(saved);
    assert.equal(state.worldSize, 3);
    assert.ok(state.step >= 20 && state.samplesConsumed > 0, `saved mid-epoch (step ${state.step})`);

    const two = await spawnGroup(t, TRAIN, args, 2);
    await allSucceed(two, 90_000, 'the 2-worker run');
    assert.match(
      two[0]!.output(),
      new RegExp(`resumed from .* \\(step ${state.step}, epoch 1, saved at world size 3: data re-sharded for 2\\)`),
    );
    const rounds = events(dir, 'round');
    assert.deepEqual(
      rounds.map((r) => [r.worldSize, r.resumedStep]),
      [
        [3, 0],
        [2, state.step],
      ],
    );
    // The interrupted epoch is finished (not restarted) by the 2 workers: still 3 epochs in all.
    const epochs = events(dir, 'epoch');
    assert.equal(epochs.length, 3);
    const done = events(dir, 'done').at(-1)!;
    assert.ok(done.reached, `reached the target (${done.testAccuracy} ≥ ${done.target})`);
  });

  it('saves on a SIGTERM forwarded by tensile run and a second run resumes from that checkpoint', async (t) => {
    const dir = tempDir(t, 'train-preempt');
    const first = launch(t, dir, ['--step-delay-ms', '30']);
    await within(
      60_000,
      'step 15 of the first run',
      (async () => {
        for (;;) {
          if (events(dir, 'step').some((s) => s.step >= 15)) return;
          if (first.child.exitCode !== null) throw new Error(`the launcher exited early:\n${first.output()}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      })(),
    );
    first.child.kill('SIGTERM'); // the launcher itself: it forwards SIGTERM to the workers and waits out the grace
    await within(40_000, 'the preempted launcher to exit', first.exited);
    const m = /preempted \(SIGTERM\)[^\n]*checkpoint saved at step (\d+)/.exec(first.output());
    assert.ok(m !== null, `rank 0 saved on SIGTERM:\n${first.output()}`);
    const savedStep = Number(m[1]);
    assert.ok(listCheckpoints(dir)[0]!.endsWith(`ckpt-${String(savedStep).padStart(12, '0')}.safetensors`));

    const second = launch(t, dir, []);
    const e = await within(90_000, 'the resumed run', second.exited);
    assert.equal(e.code, 0, second.output());
    assert.match(second.output(), new RegExp(`resumed from .*\\(step ${savedStep}, epoch 1\\)`));
    assert.ok(events(dir, 'done').at(-1)!.reached);
  });
});
