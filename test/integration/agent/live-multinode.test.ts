// Live recovery across nodes: two agents on a real etcd, each with one live fixture worker. A node killed with
// SIGKILL and a node joining again are both round changes the surviving worker takes without a restart (same
// pid), repeated in one run; nothing is left running.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { isAlive, killTree, waitFor } from '../../helpers/cli.js';
import { cleanupAgents, liveJobsOnEtcd, readEvents } from '../../helpers/elastic.js';

interface Ev {
  kind: 'start' | 'round' | 'ready';
  pid: number;
  node: string;
  round: number;
  rank: number;
  world: number;
}

const events = (out: string): Ev[] => readEvents<Ev>(out);

/** Waits until `pids` all reported ready in one round ≥ minRound with world size `world`; returns that round. */
async function readyIn(
  out: string,
  pids: () => number[],
  world: number,
  minRound: number,
  what: string,
): Promise<number> {
  let found = -1;
  await waitFor(
    () => {
      const ps = pids();
      const evs = events(out).filter((e) => e.kind === 'ready' && e.world === world && e.round >= minRound);
      const rounds = new Set(evs.map((e) => e.round));
      for (const r of [...rounds].sort((a, b) => b - a)) {
        if (ps.every((p) => evs.some((e) => e.pid === p && e.round === r))) {
          found = r;
          return true;
        }
      }
      return false;
    },
    what,
    40_000,
  );
  return found;
}

/** The newest worker pid started by the agent whose worker env named `node`. */
function workerOf(out: string, node: string): number {
  const starts = events(out).filter((e) => e.kind === 'start' && e.node === node);
  return starts[starts.length - 1]?.pid ?? -1;
}

const etcd = liveJobsOnEtcd();

describe('live recovery with two agents on etcd', () => {
  test('node SIGKILLed and node rejoining, twice: the surviving worker keeps its pid through every round', async () => {
    const runId = `live-${process.pid}`;
    const { out, start } = etcd.job('tensile-live-mn-', runId);
    const a = start();
    await waitFor(() => events(out).some((e) => e.kind === 'start'), 'the first worker', 30_000);
    const nodeA = (events(out).find((e) => e.kind === 'start') as Ev).node;
    const keeper = workerOf(out, nodeA);
    let b = start();
    const bWorker = (): number => {
      const other = events(out).filter((e) => e.kind === 'start' && e.node !== nodeA);
      return other[other.length - 1]?.pid ?? -1;
    };
    let round = await readyIn(out, () => [keeper, bWorker()], 2, 0, 'both workers ready in a round of two');
    for (let i = 0; i < 2; i++) {
      const victim = bWorker();
      killTree(b.child, 'SIGKILL');
      round = await readyIn(out, () => [keeper], 1, round + 1, `the survivor alone after node loss ${i + 1}`);
      await waitFor(() => !isAlive(victim), 'the lost node’s worker to be gone', 10_000);
      b = start();
      round = await readyIn(out, () => [keeper, bWorker()], 2, round + 1, `two again after rejoin ${i + 1}`);
      assert.notEqual(bWorker(), victim);
      assert.equal(workerOf(out, nodeA), keeper, 'the surviving worker was never restarted');
    }
    const keeperRounds = events(out).filter((e) => e.pid === keeper && e.kind === 'round');
    assert.ok(keeperRounds.length >= 4, `the survivor took every round live (${keeperRounds.length} round messages)`);
    writeFileSync(join(out, 'stop'), '');
    for (const r of await Promise.all([a.result, b.result])) assert.equal(r.code, 0, r.stderr.slice(-3000));
    const left = await cleanupAgents([], [out]);
    assert.deepEqual(left, [], 'no worker is left running');
  });
});
