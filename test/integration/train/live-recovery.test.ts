// Live recovery end to end on the worker side, with real worker processes over the TCP backend and a harness in
// the agent's role (fake-agent.ts): workers are SIGKILLed or SIGSTOPped again and again in one run, replacements
// start and get the state from a peer, the survivors never restart, no step is lost, and the final model equals
// what an uninterrupted run holds at that step.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { FakeAgent, type Worker } from './fake-agent.js';
import { tempDir, within } from './helpers.js';

const SCRIPT = 'test/integration/train/fixtures/live-worker.ts';
const TOTAL_STEPS = 150;
const STEP_DELAY_MS = 15;

interface Result {
  rank: number;
  round: number;
  step: number;
  params: number[][];
  history: { round: number; stateFrom: string; stepsLost: number | null; step: number }[];
}

async function startJob(t: TestContext, ws: number): Promise<{ agent: FakeAgent; out: string }> {
  const out = tempDir(t, 'live-out');
  const ckpt = tempDir(t, 'live-ckpt');
  const agent = await FakeAgent.start(t, SCRIPT, [out, String(TOTAL_STEPS), String(STEP_DELAY_MS)], {
    TENSILE_CHECKPOINT_DIR: ckpt,
  });
  const plan = await agent.nextPlan(0, ws);
  for (let r = 0; r < ws; r++) agent.spawn(r, plan);
  const ready = await agent.readyFor(
    0,
    Array.from({ length: ws }, (_, r) => r),
  );
  for (const [r, m] of ready) assert.equal(m.stateFrom, 'fresh', `rank ${r} starts fresh (no checkpoint)`);
  return { agent, out };
}

async function finish(agent: FakeAgent, out: string, ranks: readonly number[]): Promise<Result[]> {
  await within(120_000, 'the workers to finish', Promise.all(ranks.map((r) => agent.workers.get(r)!.proc.exited)));
  return ranks.map((r) => {
    const w = agent.workers.get(r)!;
    assert.equal(w.proc.child.exitCode, 0, `rank ${r} exits 0\n${agent.dump()}`);
    return JSON.parse(readFileSync(join(out, `rank-${r}.json`), 'utf8')) as Result;
  });
}

let referenceRun: Promise<number[][]> | null = null;
/** Final parameters of an uninterrupted 3-worker run (computed once). */
function reference(t: TestContext): Promise<number[][]> {
  referenceRun ??= (async () => {
    const { agent, out } = await startJob(t, 3);
    const results = await finish(agent, out, [0, 1, 2]);
    for (const r of results) assert.deepEqual(r.params, results[0]!.params, 'replicas agree in the reference run');
    return results[0]!.params;
  })();
  return referenceRun;
}

async function fault(w: Worker, mode: 'kill' | 'stop'): Promise<void> {
  if (mode === 'stop') {
    // A hung worker: stopped, then (as the agent's watchdog would) killed.
    w.proc.child.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 400));
  }
  w.proc.child.kill('SIGKILL');
  await within(10_000, `rank ${w.rank} to die`, w.proc.exited);
}

function maxAbsDiff(a: number[][], b: number[][]): number {
  let worst = 0;
  a.forEach((p, i) => p.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - b[i]![j]!)))));
  return worst;
}

describe('live recovery (worker side)', () => {
  it('replaces killed and hung workers ten times in one run with state from a peer, losing no step, and ends with the uninterrupted model', async (t) => {
    const expected = await reference(t);
    const { agent, out } = await startJob(t, 3);
    const faults: { victim: number; mode: 'kill' | 'stop'; atStep: number }[] = [
      { victim: 1, mode: 'kill', atStep: 8 },
      { victim: 0, mode: 'stop', atStep: 22 },
      { victim: 2, mode: 'kill', atStep: 36 },
      { victim: 0, mode: 'kill', atStep: 50 },
      { victim: 1, mode: 'stop', atStep: 64 },
      { victim: 2, mode: 'kill', atStep: 78 },
      { victim: 0, mode: 'stop', atStep: 90 },
      { victim: 1, mode: 'kill', atStep: 102 },
      { victim: 2, mode: 'stop', atStep: 114 },
      { victim: 0, mode: 'kill', atStep: 126 },
    ];
    let round = 0;
    let survivorsBehind = 0;
    const recoveryMs: number[] = [];
    for (const f of faults) {
      await agent.until(() => agent.highestStep() >= f.atStep, `step ${f.atStep}`);
      const reached = agent.highestStep();
      await fault(agent.workers.get(f.victim)!, f.mode);
      const plan = await agent.nextPlan(++round, 3);
      const survivors = [0, 1, 2].filter((r) => r !== f.victim).map((r) => agent.workers.get(r)!);
      agent.spawn(f.victim, plan);
      for (const s of survivors) agent.announce(s, plan);
      const ready = await agent.readyFor(round, [0, 1, 2]);
      recoveryMs.push(...survivors.map((s) => ready.get(s.rank)!.recoveryMs));
      const steps = new Set([...ready.values()].map((m) => m.step));
      assert.equal(steps.size, 1, `round ${round}: every rank continues from one step (${[...steps]})`);
      const step = [...steps][0]!;
      assert.ok(step >= reached, `round ${round}: 0 steps lost (continues at ${step}, had reached ${reached})`);
      assert.equal(ready.get(f.victim)!.stateFrom, 'peer', `round ${round}: the replacement's state came from a peer`);
      // A survivor keeps its own state, or takes a peer's when it had not completed the interrupted step while
      // another rank had (that step then counts: the newest completed step wins).
      for (const s of survivors) {
        assert.ok(['self', 'peer'].includes(ready.get(s.rank)!.stateFrom), `round ${round}: survivor state source`);
        assert.doesNotMatch(s.proc.output(), /holds a different state/, 'no replica ever diverged');
      }
      survivorsBehind += survivors.filter((s) => ready.get(s.rank)!.stateFrom === 'peer').length;
      for (const s of survivors)
        assert.equal(s.proc.child.exitCode, null, `round ${round}: survivor rank ${s.rank} was not restarted`);
    }
    recoveryMs.sort((a, b) => a - b);
    t.diagnostic(
      `survivors' round → ready (includes the replacement's process start): median ` +
        `${recoveryMs[recoveryMs.length >> 1]!.toFixed(0)} ms, max ${recoveryMs.at(-1)!.toFixed(0)} ms`,
    );
    t.diagnostic(`survivors that were a step behind and took a peer's newer state: ${survivorsBehind}`);
    const results = await finish(agent, out, [0, 1, 2]);
    for (const r of results) {
      assert.equal(r.step, TOTAL_STEPS);
      assert.equal(r.round, faults.length);
      assert.deepEqual(
        r.params,
        expected,
        `rank ${r.rank}: the model equals the uninterrupted run's at step ${TOTAL_STEPS}`,
      );
    }
  });

  it('survives a second fault while recovering from the first: the newer round supersedes the one being entered', async (t) => {
    const expected = await reference(t);
    const { agent, out } = await startJob(t, 3);
    await agent.until(() => agent.highestStep() >= 30, 'step 30');
    const reached = agent.highestStep();
    await fault(agent.workers.get(1)!, 'kill');
    const first = await agent.nextPlan(1, 3);
    agent.spawn(1, first);
    for (const r of [0, 2]) agent.announce(agent.workers.get(r)!, first);
    // Before round 1 is ready, rank 2 dies too: round 2 replaces it; the replacement of rank 1, still starting
    // in round 1, gets round 2 right after its welcome.
    await fault(agent.workers.get(2)!, 'kill');
    const second = await agent.nextPlan(2, 3);
    agent.spawn(2, second);
    for (const r of [0, 1]) agent.announce(agent.workers.get(r)!, second);
    const ready = await agent.readyFor(2, [0, 1, 2]);
    assert.equal(ready.get(0)!.stateFrom, 'self', 'the only survivor keeps its state');
    assert.equal(ready.get(1)!.stateFrom, 'peer');
    assert.equal(ready.get(2)!.stateFrom, 'peer');
    for (const m of ready.values()) assert.ok(m.step >= reached, `0 steps lost (${m.step} ≥ ${reached})`);
    const results = await finish(agent, out, [0, 1, 2]);
    for (const r of results) assert.deepEqual(r.params, expected, `rank ${r.rank}: the uninterrupted model`);
  });

  it('shrinks to two workers when one is lost and grows back with a newcomer, continuing from the live state', async (t) => {
    const expected = await reference(t);
    const { agent, out } = await startJob(t, 3);
    await agent.until(() => agent.highestStep() >= 20, 'step 20');
    await fault(agent.workers.get(2)!, 'kill');
    const small = await agent.nextPlan(1, 2);
    for (const r of [0, 1]) agent.announce(agent.workers.get(r)!, small);
    const shrunk = await agent.readyFor(1, [0, 1]);
    for (const m of shrunk.values()) assert.equal(m.stateFrom, 'self');
    t.diagnostic(`shrink: round → ready ${[...shrunk.values()].map((m) => m.recoveryMs.toFixed(0)).join(', ')} ms`);
    await agent.until(() => agent.highestStep() >= 70, 'step 70 at world size 2');
    // Grow: a new worker joins as rank 2 (a scale-up round: nobody failed, the group is aborted and rebuilt).
    const big = await agent.nextPlan(2, 3);
    agent.spawn(2, big);
    for (const r of [0, 1]) agent.announce(agent.workers.get(r)!, big);
    const grown = await agent.readyFor(2, [0, 1, 2]);
    assert.equal(grown.get(2)!.stateFrom, 'peer');
    t.diagnostic(`grow: round → ready ${[...grown.values()].map((m) => m.recoveryMs.toFixed(0)).join(', ')} ms`);
    assert.equal(new Set([...grown.values()].map((m) => m.step)).size, 1);
    const results = await finish(agent, out, [0, 1, 2]);
    for (const r of results) {
      assert.equal(r.step, TOTAL_STEPS);
      assert.deepEqual(r.params, results[0]!.params, 'replicas agree');
    }
    // Two workers share each global batch differently than three: the same samples and the same mean gradient,
    // summed in another order, so equal up to float rounding.
    const diff = maxAbsDiff(results[0]!.params, expected);
    assert.ok(diff < 1e-4, `the model is the uninterrupted run's up to rounding (max abs difference ${diff})`);
  });
});
