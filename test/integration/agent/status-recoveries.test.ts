// `tensile status` shows the last recoveries: two agents on a real etcd with one live fixture worker each; one
// agent is SIGKILLed, the survivor recovers live, and `tensile status` (table and --json) then lists that recovery
// under the survivor's host, with its path, cause, time, steps lost and round.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { runTensile, waitFor, killTree } from '../../helpers/cli.js';
import { cleanupAgents, liveJobsOnEtcd, readEvents } from '../../helpers/elastic.js';
import type { JobStatus } from '../../../rendezvous/api.js';

interface Ev {
  kind: 'start' | 'round' | 'ready';
  pid: number;
  node: string;
  round: number;
  world: number;
}

const events = (out: string): Ev[] => readEvents<Ev>(out);

const etcd = liveJobsOnEtcd();

test('after a live recovery, tensile status lists it (table and --json)', async () => {
  const runId = `status-rec-${process.pid}`;
  const { out, start } = etcd.job('tensile-status-rec-', runId);
  const a = start();
  await waitFor(() => events(out).some((e) => e.kind === 'start'), 'the first worker', 30_000);
  const b = start();
  await waitFor(
    () =>
      new Set(
        events(out)
          .filter((e) => e.kind === 'ready' && e.world === 2)
          .map((e) => e.pid),
      ).size === 2,
    'both workers ready in a round of two',
    40_000,
  );
  const statusArgs = ['status', '--rdzv-endpoint', etcd.endpoint(), '--rdzv-id', runId];
  const readJson = async (): Promise<JobStatus> => {
    const r = await runTensile([...statusArgs, '--json'], { timeoutMs: 20_000 });
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as JobStatus;
  };
  // B joining A's running round was itself a live membership change for A: it may already be listed.
  const before = await readJson();
  const roundBefore = before.round ?? 0;
  const newest = (s: JobStatus) =>
    s.recoveries?.flatMap((n) => n.recoveries).sort((x, y) => y.startedAtMs - x.startedAtMs)[0];

  const killedAtMs = Date.now();
  killTree(b.child, 'SIGKILL');
  await waitFor(
    () => events(out).some((e) => e.kind === 'ready' && e.world === 1),
    'the survivor ready alone after the node loss',
    40_000,
  );
  let s = before;
  await waitFor(
    async () => {
      s = await readJson();
      return (newest(s)?.round ?? -1) > roundBefore && s.recoveries?.length === 1;
    },
    'tensile status --json to list the recovery after the node loss (and only the survivor)',
    30_000,
  );
  const rec = newest(s);
  assert.equal(rec?.path, 'live');
  assert.equal(rec?.cause, 'membership');
  assert.ok((rec?.recoveryMs ?? 0) > 0, `a recovery time > 0 (${rec?.recoveryMs})`);
  assert.ok((rec?.startedAtMs ?? 0) >= killedAtMs - 1000, 'it began after the kill');
  assert.equal(rec?.round, s.round, 'the recovery resumed in the current round');
  assert.equal(rec?.stepsLost, 0, 'a live recovery loses no step');

  const table = await runTensile(statusArgs, { timeoutMs: 20_000 });
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /recent recoveries \(newest first\):/, table.stdout);
  const row = table.stdout.split('\n').find((l) => /\blive\s+membership\b/.test(l));
  assert.ok(row, `a live membership recovery row in:\n${table.stdout}`);
  const m = /^(\S+)\s+(\S+)\s+live\s+membership\s+([\d.]+) s\s+(\d+)\s+(\d+)$/.exec(row);
  assert.ok(m, `row format: ${row}`);
  assert.equal(m[1], new Date(rec?.startedAtMs ?? 0).toISOString(), 'newest first');
  assert.equal(m[3], ((rec?.recoveryMs ?? 0) / 1000).toFixed(2));
  assert.equal(Number(m[5]), s.round);

  writeFileSync(join(out, 'stop'), '');
  const r = await a.result;
  assert.equal(r.code, 0, r.stderr.slice(-3000));
  const left = await cleanupAgents([], [out]);
  assert.deepEqual(left, [], 'no worker is left running');
});
