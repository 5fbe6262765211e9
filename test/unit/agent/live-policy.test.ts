import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  goodput,
  hangTimeoutMs,
  median,
  recoveryPath,
  stepsLost,
  type RecoveryMode,
  type WorkerView,
} from '../../../agent/live-policy.js';

const w = (localRank: number, live: boolean, running = true, failed = false): WorkerView => ({
  localRank,
  live,
  running,
  failed,
});

describe('live recovery policy', () => {
  test('the live path needs live mode and every running or failed local worker live', () => {
    const table: Array<[RecoveryMode, WorkerView[], string, readonly number[] | string]> = [
      ['live', [w(0, true), w(1, true)], 'live', []],
      ['live', [w(0, true), w(1, true, false, true)], 'live', [1]],
      ['live', [w(0, true, false, true), w(1, true, false, true)], 'live', [0, 1]],
      ['restart', [w(0, true), w(1, true)], 'restart', '--recovery restart'],
      ['live', [w(0, true), w(1, false)], 'restart', 'local rank(s) 1 did not declare live recovery'],
      ['live', [w(0, false, false, true), w(1, true)], 'restart', 'local rank(s) 0 did not declare live recovery'],
      ['live', [w(0, true), w(1, true, false, false)], 'restart', 'local rank(s) 1 already exited'],
      ['live', [], 'live', []],
    ];
    for (const [mode, workers, kind, detail] of table) {
      const d = recoveryPath(mode, workers);
      const label = `${mode} ${JSON.stringify(workers)}`;
      assert.equal(d.kind, kind, label);
      if (d.kind === 'live') assert.deepEqual(d.respawn, detail, label);
      else assert.equal(d.reason, detail, label);
    }
  });

  test('the hang timeout is the flag, else max(10 s, 5 × the median step time)', () => {
    const table: Array<[number | null, number[], number]> = [
      [null, [], 10_000],
      [null, [100, 200, 300], 10_000],
      [null, [3000, 1000, 2000], 10_000],
      [null, [3000, 2500, 1000, 9000], 13_750],
      [null, [4000], 20_000],
      [2500, [4000], 2500],
    ];
    for (const [flag, steps, ms] of table) assert.equal(hangTimeoutMs(flag, steps), ms, `${flag} ${steps}`);
  });

  test('median, steps lost and goodput', () => {
    assert.equal(median([]), null);
    assert.equal(median([5, 1, 3]), 3);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.equal(stepsLost(120, 120), 0);
    assert.equal(stepsLost(120, 100), 20);
    assert.equal(stepsLost(100, 120), 0, 'a worker never resumes ahead of what it had: clamp');
    assert.equal(stepsLost(null, 10), null);
    assert.equal(stepsLost(10, null), null);
    assert.equal(goodput(10_000, 0, 0, null), 1);
    assert.equal(goodput(10_000, 1_000, 0, 100), 0.9);
    assert.equal(goodput(10_000, 1_000, 10, 100), 0.8);
    assert.equal(goodput(10_000, 20_000, 0, null), 0);
    assert.equal(goodput(0, 0, 0, null), 1);
  });
});
