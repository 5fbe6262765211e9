// Goodput from a run's history: live recoveries and restarts as outages, repeated steps as lost work.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { computeGoodput, medianStepMs } from '../../../examples/train/goodput.js';
import type { HistoryEvent } from '../../../examples/train/history.js';

const round = (timeMs: number, r: number, resumedStep: number): HistoryEvent => ({
  type: 'round',
  timeMs,
  round: r,
  restartCount: r,
  worldSize: 2,
  resumedStep,
  resumedFrom: null,
});
const step = (timeMs: number, s: number): HistoryEvent => ({
  type: 'step',
  timeMs,
  step: s,
  epoch: 0,
  loss: 1,
  worldSize: 2,
});
const failure = (timeMs: number, s: number, r: number): HistoryEvent => ({
  type: 'failure',
  timeMs,
  rank: 1,
  step: s,
  round: r,
  message: 'chaos',
});
const done = (timeMs: number): HistoryEvent => ({
  type: 'done',
  timeMs,
  step: 100,
  testAccuracy: 0.9,
  target: 0.9,
  reached: true,
});

describe('goodput', () => {
  it('is 1 for a run without faults', () => {
    const g = computeGoodput([round(0, 0, 0), step(1000, 10), step(2000, 20), done(10_000)]);
    assert.equal(g.goodput, 1);
    assert.equal(g.wallMs, 10_000);
    assert.deepEqual(g.outages, []);
  });

  it('takes the median step time within rounds only', () => {
    const ev = [round(0, 0, 0), step(1000, 10), step(2000, 20), step(2500, 30), round(3000, 1, 20), step(9000, 30)];
    assert.equal(medianStepMs(ev), 100); // 100 and 50 ms per step; the pair across the round is skipped
  });

  it('counts a restart from the failure to the next round, plus the steps repeated since the checkpoint', () => {
    const ev = [
      round(0, 0, 0),
      step(1000, 10),
      step(2000, 20),
      step(3000, 30),
      failure(3500, 35, 0),
      round(5500, 1, 20), // resumed at the step-20 checkpoint: 15 steps to train again
      done(10_000),
    ];
    const g = computeGoodput(ev);
    assert.deepEqual(g.outages, [
      { kind: 'restart', startMs: 3500, endMs: 5500, stepsLost: 15, lostWorkMs: 1500, round: 1 },
    ]);
    assert.equal(g.downtimeMs, 2000);
    assert.equal(g.goodput, (10_000 - 2000 - 1500) / 10_000);
  });

  it('counts a live recovery from the fault to ready, with no steps lost, and not also as a restart', () => {
    const ev: HistoryEvent[] = [
      round(0, 0, 0),
      step(1000, 10),
      step(2000, 20),
      failure(2500, 25, 0),
      round(2700, 1, 25),
      {
        type: 'recovery',
        timeMs: 2700,
        round: 1,
        worldSize: 2,
        stateFrom: 'self',
        recoveryMs: 150,
        sinceFaultMs: 200,
        stepsLost: 0,
        step: 25,
        cause: 'PEER_LOST',
      },
      done(10_000),
    ];
    const g = computeGoodput(ev);
    assert.deepEqual(g.outages, [{ kind: 'live', startMs: 2500, endMs: 2700, stepsLost: 0, lostWorkMs: 0, round: 1 }]);
    assert.equal(g.goodput, 0.98);
  });
});
