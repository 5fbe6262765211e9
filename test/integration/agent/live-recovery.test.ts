// Live recovery on one node with real processes: a fixture worker that speaks the control protocol
// (test/fixtures/workers/live-worker.mjs). Each fault is repeated in one run; the survivors keep their pids,
// take each new round, and nothing is left running.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LIVE_WORKER, readEvents } from '../../helpers/elastic.js';
import { after, describe, test } from 'node:test';
import { isAlive, startTensile, waitFor, type TensileProcess } from '../../helpers/cli.js';

const WORKER = LIVE_WORKER;
const dirs: string[] = [];
const procs: TensileProcess[] = [];
after(() => {
  for (const p of procs) p.kill('SIGKILL');
  for (const d of dirs) {
    for (const pid of pidsOf(d)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    rmSync(d, { recursive: true, force: true });
  }
});

interface Ev {
  kind: 'start' | 'round' | 'ready' | 'standby' | 'promoted';
  pid: number;
  node: string;
  localRank: number;
  round: number;
  rank: number;
  world: number;
  masterPort: number;
  step: number;
  recovery?: string;
}

const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'tensile-live-test-'));
  dirs.push(d);
  return d;
};
function pidsOf(out: string): number[] {
  const f = join(out, 'pids');
  return existsSync(f) ? readFileSync(f, 'utf8').split('\n').filter(Boolean).map(Number) : [];
}
const events = (out: string): Ev[] => readEvents<Ev>(out);
/** The pid of each local rank's newest process. */
function currentPids(out: string): Map<number, number> {
  const m = new Map<number, number>();
  for (const e of events(out)) if (e.kind === 'start' || e.kind === 'promoted') m.set(e.localRank, e.pid);
  return m;
}
/** Waits until every one of `n` local ranks' current process reported ready in one round ≥ minRound. */
async function allReady(out: string, n: number, minRound: number, what: string): Promise<number> {
  let round = -1;
  await waitFor(
    () => {
      const cur = currentPids(out);
      if (cur.size < n) return false;
      const evs = events(out);
      const rounds = [...cur.values()].map((pid) =>
        Math.max(-1, ...evs.filter((e) => e.kind === 'ready' && e.pid === pid).map((e) => e.round)),
      );
      round = Math.min(...rounds);
      return rounds.every((r) => r === rounds[0]) && round >= minRound;
    },
    what,
    30_000,
  );
  return round;
}

function run(args: string[], out: string, env: Record<string, string> = {}): TensileProcess {
  const p = startTensile(['run', '--standalone', '--shutdown-timeout', '3', ...args, WORKER], {
    env: { OUT_DIR: out, ...env },
    timeoutMs: 120_000,
  });
  procs.push(p);
  return p;
}

async function finish(p: TensileProcess, out: string): Promise<string> {
  writeFileSync(join(out, 'stop'), '');
  const res = await p.result;
  assert.equal(res.code, 0, res.stderr.slice(-4000));
  await waitFor(() => pidsOf(out).every((pid) => !isAlive(pid)), 'every worker to be gone', 10_000);
  return res.stderr;
}

describe('live recovery on one node', () => {
  test('a SIGKILLed worker is restarted alone, three times; the others keep their pids and take each round', async () => {
    const out = tmp();
    const p = run(['--nproc-per-node', '3', '--max-restarts', '5'], out);
    let round = await allReady(out, 3, 0, 'three workers ready');
    const first = currentPids(out);
    assert.ok(
      events(out).every((e) => e.kind !== 'start' || e.recovery === 'live'),
      'TENSILE_RECOVERY=live',
    );
    for (let i = 0; i < 3; i++) {
      const victim = currentPids(out).get(1) as number;
      process.kill(victim, 'SIGKILL');
      const next = await allReady(out, 3, round + 1, `all ready after kill ${i + 1}`);
      const now = currentPids(out);
      assert.notEqual(now.get(1), victim, 'local rank 1 runs in a new process');
      assert.equal(now.get(0), first.get(0), 'local rank 0 kept its process');
      assert.equal(now.get(2), first.get(2), 'local rank 2 kept its process');
      const evs = events(out);
      const rounds = evs.filter((e) => e.kind === 'round' && e.round === next);
      assert.deepEqual(rounds.map((e) => e.localRank).sort(), [0, 2], 'the survivors got the round message');
      const starts = evs.filter((e) => e.kind === 'start' && e.pid === now.get(1));
      assert.equal(starts[0]?.round, next, 'the replacement started with the new round in its environment');
      const prevPort = evs.find((e) => e.round === round)?.masterPort;
      assert.notEqual(rounds[0]?.masterPort, prevPort, 'each round has a fresh master port');
      round = next;
    }
    const stderr = await finish(p, out);
    assert.equal((stderr.match(/restarting it alone, the others keep running/g) ?? []).length, 3);
    // The fixture's ranks count steps independently (no collectives), so "steps lost" is only checked for shape.
    assert.match(stderr, /live recovery \(worker-failure: rank 1 failed\) took \d+\.\d+ s, \d+ steps lost/);
    assert.doesNotMatch(stderr, /restarting the group/);
  });

  test('--standby-workers 1: a crashed worker is replaced by the warm standby, three times; no orphan', async () => {
    const out = tmp();
    const p = run(['--nproc-per-node', '2', '--max-restarts', '5', '--standby-workers', '1'], out);
    let round = await allReady(out, 2, 0, 'two workers ready');
    const keeper = currentPids(out).get(0);
    for (let i = 0; i < 3; i++) {
      // The standby of this try: started (and connected) before the fault.
      await waitFor(() => events(out).filter((e) => e.kind === 'standby').length > i, `standby ${i + 1}`, 30_000);
      const standby = events(out).filter((e) => e.kind === 'standby')[i] as Ev;
      await new Promise((r) => setTimeout(r, 500)); // let it say hello
      const victim = currentPids(out).get(1) as number;
      const startsBefore = events(out).filter((e) => e.kind === 'start').length;
      process.kill(victim, 'SIGKILL');
      const next = await allReady(out, 2, round + 1, `all ready after kill ${i + 1}`);
      const now = currentPids(out);
      assert.equal(now.get(1), standby.pid, 'local rank 1 is now the pre-started standby');
      assert.equal(now.get(0), keeper, 'local rank 0 kept its process');
      const evs = events(out);
      assert.equal(evs.filter((e) => e.kind === 'start').length, startsBefore, 'no worker process was started');
      const promoted = evs.find((e) => e.kind === 'promoted' && e.pid === standby.pid);
      assert.equal(promoted?.round, next, 'the standby took the new round from the round message');
      assert.equal(promoted?.rank, 1, 'and the rank of the failed worker');
      assert.equal(promoted?.localRank, 1);
      const readyAt = evs.findIndex((e) => e.kind === 'ready' && e.pid === standby.pid && e.round === next);
      assert.ok(readyAt >= 0, 'the promoted standby reported ready');
      const nextStandby = evs.filter((e) => e.kind === 'standby')[i + 1];
      if (nextStandby) {
        assert.ok(evs.indexOf(nextStandby) > readyAt, 'the next standby starts only after the promoted one is ready');
      }
      round = next;
    }
    const stderr = await finish(p, out);
    assert.equal((stderr.match(/promoted standby/g) ?? []).length, 3);
    assert.equal((stderr.match(/restarting it alone, the others keep running/g) ?? []).length, 3);
    assert.match(stderr, /restart 3\/5/, 'each promotion counts against --max-restarts');
    assert.doesNotMatch(stderr, /restarting the group|standby worker exited/);
  });

  test('--recovery restart restarts the whole group on the same fault', async () => {
    const out = tmp();
    const p = run(['--nproc-per-node', '2', '--max-restarts', '2', '--recovery', 'restart'], out);
    const round = await allReady(out, 2, 0, 'two workers ready');
    const before = currentPids(out);
    assert.ok(
      events(out).every((e) => e.kind !== 'start' || e.recovery === 'restart'),
      'TENSILE_RECOVERY=restart',
    );
    process.kill(before.get(0) as number, 'SIGKILL');
    await allReady(out, 2, round + 1, 'both restarted');
    const after = currentPids(out);
    assert.notEqual(after.get(0), before.get(0));
    assert.notEqual(after.get(1), before.get(1), 'the healthy worker was restarted too');
    const stderr = await finish(p, out);
    assert.match(stderr, /restarting the group \(restart 1\/2\)/);
    assert.match(stderr, /restart recovery \(worker-failure: rank 0\) took \d+\.\d+ s/);
  });

  test('workers that are not live (live: false, or garbage on the channel) take the restart path', async () => {
    const cases: Array<Record<string, string>> = [{ LIVE: '0' }, { BAD_CONTROL: '1' }];
    for (const env of cases) {
      const out = tmp();
      const p = run(['--nproc-per-node', '2', '--max-restarts', '1'], out, env);
      await waitFor(() => currentPids(out).size === 2 && events(out).length >= 2, 'two workers', 30_000);
      await new Promise((r) => setTimeout(r, 1000)); // let them reach the agent
      const before = currentPids(out);
      process.kill(before.get(1) as number, 'SIGKILL');
      await waitFor(
        () => [...currentPids(out).values()].every((pid) => ![...before.values()].includes(pid)),
        `both restarted (${JSON.stringify(env)})`,
        30_000,
      );
      const stderr = await finish(p, out);
      assert.match(stderr, /restarting the group/);
      if (env.BAD_CONTROL)
        assert.match(stderr, /control: local rank \d: worker message: localRank: .*handled as non-live/);
    }
  });

  test('a hung (SIGSTOPped) worker is dumped and restarted alone, twice; its report lands in the log dir', async () => {
    const out = tmp();
    const logDir = join(out, 'logs');
    const p = run(['--nproc-per-node', '2', '--max-restarts', '3', '--hang-timeout', '1', '--log-dir', logDir], out);
    let round = await allReady(out, 2, 0, 'two workers ready');
    const keeper = currentPids(out).get(0);
    for (let i = 0; i < 2; i++) {
      const victim = currentPids(out).get(1) as number;
      await new Promise((r) => setTimeout(r, 300)); // a few steps: the hang is one of a worker in training
      process.kill(victim, 'SIGSTOP');
      round = await allReady(out, 2, round + 1, `recovered from hang ${i + 1}`);
      assert.notEqual(currentPids(out).get(1), victim);
      assert.equal(currentPids(out).get(0), keeper, 'the healthy worker kept running');
      assert.ok(!isAlive(victim), 'the hung worker was killed');
    }
    const stderr = await finish(p, out);
    assert.equal((stderr.match(/worker hung: no step progress/g) ?? []).length, 2);
    // Timed from the last progress: at least the 1 s hang timeout.
    assert.match(stderr, /live recovery \(hang: rank 1 hung\) took [1-9]\.\d+ s/);
    const reports = readdirSync(logDir, { recursive: true }).filter((f) => /report\..*\.json$/.test(String(f)));
    assert.ok(reports.length >= 2, `a diagnostic report per hang: ${reports.join(', ')}`);
    const report = JSON.parse(readFileSync(join(logDir, String(reports[0])), 'utf8')) as {
      javascriptStack?: unknown;
    };
    assert.ok(report.javascriptStack, 'the report has the JavaScript stack');
  });
});
