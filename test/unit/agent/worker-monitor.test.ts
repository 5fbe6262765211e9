// The hang watchdog and the goodput record with real (short) timers.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GoodputTracker } from '../../../agent/goodput.js';
import { WorkerMonitor, type HangInfo } from '../../../agent/worker-monitor.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('the hang watchdog', () => {
  test('fires once for a rank whose step stops advancing; progress re-arms it; a repeated step does not', async () => {
    const hangs: HangInfo[] = [];
    const m = new WorkerMonitor(300, (h) => hangs.push(h));
    m.heartbeat(0, 1, Date.now());
    m.heartbeat(1, 1, Date.now());
    for (let i = 2; i < 10; i++) {
      await sleep(50);
      m.heartbeat(0, i, Date.now()); // rank 0 progresses
      m.heartbeat(1, 1, Date.now()); // rank 1 repeats its step: no progress
    }
    // Rank 1 fired during the loop (300 ms after its last progress); rank 0's last progress was just now.
    assert.deepEqual(
      hangs.map((h) => [h.localRank, h.step, h.timeoutMs]),
      [[1, 1, 300]],
    );
    assert.ok((hangs[0] as HangInfo).silentMs >= 300);
    await sleep(600);
    assert.deepEqual(
      hangs.map((h) => h.localRank),
      [1, 0],
      'rank 0 stopped too, later; rank 1 is not reported twice',
    );
    assert.equal(m.newestStep, 9);
    m.close();
  });

  test('pause stops every watchdog, resume re-arms them from now; expect() arms one before its first heartbeat', async () => {
    const hangs: number[] = [];
    const m = new WorkerMonitor(100, (h) => hangs.push(h.localRank));
    m.heartbeat(0, 1, Date.now());
    m.pause();
    await sleep(200);
    assert.deepEqual(hangs, [], 'paused: nothing fires');
    m.resume();
    m.expect(1, Date.now());
    await sleep(200);
    assert.deepEqual(hangs.sort(), [0, 1]);
    m.forget(0);
    m.close();
  });

  test('the default timeout is 10 s at least and follows the median step time', () => {
    const m = new WorkerMonitor(null, () => {});
    const t0 = 1_000_000;
    m.heartbeat(0, 0, t0);
    m.heartbeat(0, 1, t0 + 3000);
    m.heartbeat(0, 3, t0 + 9000); // 3 s per step
    assert.equal(m.medianStepMs, 3000);
    assert.equal(m.timeoutMs, 15_000);
    m.close();
    assert.equal(new WorkerMonitor(null, () => {}).timeoutMs, 10_000);
  });
});

describe('the goodput record', () => {
  test('recoveries are timed, steps lost counted, and goodput is productive time over wall time', () => {
    const t0 = 0;
    const g = new GoodputTracker(t0);
    g.begin('worker-failure', 'live', 100, 'rank 1 failed', 1000);
    assert.ok(g.inRecovery);
    const r1 = g.end(100, 1500);
    assert.deepEqual(r1, {
      cause: 'worker-failure',
      path: 'live',
      startedAtMs: 1000,
      recoveryMs: 500,
      stepsLost: 0,
      detail: 'rank 1 failed',
    });
    g.begin('membership', 'restart', 200, 'member-lost', 5000);
    const r2 = g.end(150, 7000);
    assert.equal(r2?.stepsLost, 50);
    assert.equal(g.stepsLostTotal, 50);
    assert.equal(g.end(1, 8000), null, 'nothing open');
    // 10 s wall, 2.5 s recovering, 50 steps × 20 ms redone = 1 s: 6.5 / 10.
    assert.equal(g.ratio(20, 10_000), 0.65);
    g.begin('hang', 'live', null, 'rank 0 hung', 9000);
    assert.equal(g.ratio(20, 10_000), 0.55, 'an open recovery counts as not productive');
    assert.equal(g.end(null, 10_000)?.stepsLost, null, 'unknown without heartbeats');
    assert.equal(g.recoveries.length, 3);
  });
});
