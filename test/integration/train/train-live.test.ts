// The main job's live mode with the test harness in the agent's role: `--chaos 1:25:kill` kills rank 1 at step 25,
// a replacement joins, rank 0 keeps running, and the log says how long recovery took and that 0 steps were lost.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readHistory } from '../../../examples/train/history.js';
import { checkpointFileName } from '../../../tensor/elastic-state.js';
import { FakeAgent } from './fake-agent.js';
import { tempDir, within } from './helpers.js';

const SMALL = ['--small', '--epochs', '2', '--train-size', '2000', '--test-size', '400', '--log-every', '10'];

describe('the main job in live mode', () => {
  it('recovers a killed worker live: the survivor keeps running and 0 steps are lost', async (t) => {
    const dir = tempDir(t, 'train-live');
    const agent = await FakeAgent.start(
      t,
      'examples/train/train.ts',
      [...SMALL, '--checkpoint-dir', dir, '--chaos', '1:25:kill', '--step-delay-ms', '5'],
      {},
      50,
    );
    const start = await agent.nextPlan(0, 2);
    agent.spawn(0, start);
    const victim = agent.spawn(1, start);
    await agent.readyFor(0, [0, 1]);
    const killed = await within(120_000, 'the chaos kill of rank 1', victim.proc.exited);
    assert.equal(killed.signal, 'SIGKILL', `rank 1 killed itself:\n${victim.proc.output()}`);
    const plan = await agent.nextPlan(1, 2);
    agent.spawn(1, plan); // the replacement; the chaos marker keeps it from failing again
    agent.announce(agent.workers.get(0)!, plan);
    const ready = await agent.readyFor(1, [0, 1]);
    assert.equal(ready.get(1)!.stateFrom, 'peer');
    assert.equal(ready.get(0)!.stateFrom, 'self');
    assert.equal(ready.get(0)!.step, 25, 'continues at the step the victim died in');
    const survivor = agent.workers.get(0)!;
    const [e0, e1] = await within(
      120_000,
      'the run to finish',
      Promise.all([survivor.proc.exited, agent.workers.get(1)!.proc.exited]),
    );
    assert.equal(e0.code, 0, `rank 0:\n${survivor.proc.output()}`);
    assert.equal(e1.code, 0, `rank 1 (replacement):\n${agent.workers.get(1)!.proc.output()}`);
    const out = e0.stdout;
    assert.match(out, /recovery live/);
    assert.match(
      out,
      /live recovery: round 1, world size 2, rank 0: training again \d+ ms after the fault \(round → ready \d+ ms\), own state kept, 0 steps lost, continuing at step 25/,
    );
    assert.match(out, /live recoveries: 1, steps lost in all: 0/);
    t.diagnostic(out.split('\n').find((l) => l.startsWith('live recovery:')) ?? '');
    assert.match(out, /final held-out accuracy/);
    assert.doesNotMatch(out, /resumed from/, 'nothing was reloaded from disk');
    const recoveries = readHistory(dir).filter((e) => e.type === 'recovery');
    assert.equal(recoveries.length, 1);
    assert.equal(recoveries[0]!.type === 'recovery' && recoveries[0]!.stepsLost, 0);
    const report = readFileSync(join(dir, 'report.html'), 'utf8');
    assert.match(report, /Goodput/);
  });

  it('saves and exits at once when preempted while waiting for the next round', async (t) => {
    const dir = tempDir(t, 'train-live-preempt');
    const agent = await FakeAgent.start(
      t,
      'examples/train/train.ts',
      [...SMALL, '--checkpoint-dir', dir, '--step-delay-ms', '20', '--save-every', '1000'],
      {},
      50,
    );
    const plan = await agent.nextPlan(0, 2);
    const [r0, r1] = [agent.spawn(0, plan), agent.spawn(1, plan)];
    await agent.readyFor(0, [0, 1]);
    await agent.until(() => agent.highestStep() >= 15, 'step 15');
    // Rank 1 is preempted first and leaves at its step boundary; rank 0's allreduce breaks (PEER_LOST) and it waits
    // for a round. Its own SIGTERM then arrives: it must save and exit within the grace time, not after the
    // 30 s round wait.
    r1.proc.child.kill('SIGTERM');
    const e1 = await within(30_000, 'rank 1 to leave', r1.proc.exited);
    assert.equal(e1.code, 143, r1.proc.output());
    await agent.until(() => /waiting up to 30000 ms for the next round/.test(r0.proc.output()), 'rank 0 to wait');
    r0.proc.child.kill('SIGTERM');
    const e0 = await within(10_000, 'rank 0 to save and exit', r0.proc.exited);
    assert.equal(e0.code, 143, r0.proc.output());
    const m = /preempted \(SIGTERM\) during a collective: checkpoint saved at step (\d+); exiting/.exec(e0.stdout);
    assert.ok(m !== null, r0.proc.output());
    assert.ok(existsSync(join(dir, checkpointFileName(Number(m[1])))), `checkpoint of step ${m[1]} written`);
  });
});
