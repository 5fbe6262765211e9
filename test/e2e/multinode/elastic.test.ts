// Several agents as separate processes against one real etcd: forming, scaling up and down, node loss, failure
// anywhere, etcd restarts, two jobs on one etcd, and clear errors for bad endpoints. Every test asserts ranks and
// world sizes, and that no worker is left behind.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { runTensile, startTensile, waitFor, type TensileProcess } from '../../helpers/cli.js';
import {
  agentsOnEtcd,
  cleanupAgents,
  readEvents,
  startAgent,
  waitForRound,
  workerPids,
} from '../../helpers/elastic.js';

const { etcd, outDir, keep } = agentsOnEtcd();
let job = 0;

function newJob(): { out: string; runId: string } {
  return { out: outDir('tensile-e2e-'), runId: `e2e-${process.pid}-${job++}` };
}
const agent = (o: Parameters<typeof startAgent>[0]): TensileProcess => keep(startAgent(o));
async function finish(out: string, group: TensileProcess[]): Promise<void> {
  writeFileSync(join(out, 'stop'), '');
  const results = await Promise.all(group.map((a) => a.result));
  results.forEach((r, i) => assert.equal(r.code, 0, `agent ${i} exit: ${r.stderr.slice(-3000)}`));
  const left = await cleanupAgents([], [out]);
  assert.deepEqual(left, [], 'no worker is left running');
}

describe('multi-node jobs on etcd', () => {
  test('three agents with two workers each form one job with group ranks 0..2 and global ranks 0..5', async () => {
    const { out, runId } = newJob();
    const group = [0, 1, 2].map(() => agent({ endpoint: etcd().endpoint, runId, out, nnodes: '3', nproc: 2 }));
    const evs = await waitForRound(out, 6, 'six workers in one round');
    assert.deepEqual(evs.map((e) => e.rank).sort(), [0, 1, 2, 3, 4, 5]);
    assert.deepEqual([...new Set(evs.map((e) => e.groupRank))].sort(), [0, 1, 2]);
    assert.ok(evs.every((e) => e.groupWorld === 3));
    for (const g of [0, 1, 2]) {
      const nodes = new Set(evs.filter((e) => e.groupRank === g).map((e) => e.node));
      assert.equal(nodes.size, 1, `group rank ${g} is one node`);
      assert.deepEqual(
        evs
          .filter((e) => e.groupRank === g)
          .map((e) => e.rank)
          .sort(),
        [2 * g, 2 * g + 1],
      );
    }
    await finish(out, group);
  });

  test('a node that arrives while two run is admitted in a new round, keeping ranks and restart count', async () => {
    const { out, runId } = newJob();
    const group = [0, 1].map(() => agent({ endpoint: etcd().endpoint, runId, out, nnodes: '2:3' }));
    const first = await waitForRound(out, 2, 'two workers');
    group.push(agent({ endpoint: etcd().endpoint, runId, out, nnodes: '2:3' }));
    const second = await waitForRound(out, 3, 'three workers after scale-up', 30_000, first[0]!.round + 1);
    assert.ok(
      second.every((e) => e.restart === 0),
      'a membership change uses no restart',
    );
    for (const e of first) {
      const again = second.find((s) => s.node === e.node);
      assert.equal(again?.groupRank, e.groupRank, 'group ranks are sticky');
    }
    assert.ok(second.find((e) => e.rank === 0)!.resumeFrom > 0, 'training resumes from the checkpointed step');
    await finish(out, group);
  });

  test('SIGTERM on one agent shrinks the job at once (clean leave) and the agent exits 143', async () => {
    const { out, runId } = newJob();
    const group = [0, 1, 2].map(() => agent({ endpoint: etcd().endpoint, runId, out, nnodes: '2:3' }));
    const first = await waitForRound(out, 3, 'three workers');
    const leaving = group.pop()!;
    leaving.kill('SIGTERM');
    const res = await leaving.result;
    assert.equal(res.code, 143, res.stderr.slice(-2000));
    const second = await waitForRound(out, 2, 'two workers after the leave', 30_000, first[0]!.round + 1);
    assert.deepEqual(second.map((e) => e.rank).sort(), [0, 1]);
    await finish(out, group);
  });

  test('SIGKILL of an agent loses its workers too, and the survivor trains on alone from the checkpoint', async () => {
    const { out, runId } = newJob();
    const group = [0, 1].map(() => agent({ endpoint: etcd().endpoint, runId, out, nnodes: '1:2' }));
    const first = await waitForRound(out, 2, 'two workers');
    // Kill the node that is not group rank 0, so the survivor keeps rank 0 and its checkpoint.
    const idx = group.findIndex((a) => a.stderr().includes('"groupRank":1'));
    assert.ok(idx >= 0, 'one agent reports group rank 1');
    const [victim] = group.splice(idx, 1) as [TensileProcess];
    const victimWorker = first.find((e) => e.groupRank === 1)!;
    // The worker writes its start event, then its pid: wait for both before the kill.
    await waitFor(() => workerPids(out).includes(victimWorker.pid), 'the victim worker’s pid', 10_000);
    victim.child.kill('SIGKILL');
    await victim.result;
    const second = await waitForRound(out, 1, 'one worker after node loss', 30_000, first[0]!.round + 1);
    assert.equal(second[0]!.rank, 0);
    assert.ok(second[0]!.resumeFrom > 0, 'resumes from the last checkpointed step');
    await finish(out, group);
    assert.throws(() => process.kill(victimWorker.pid, 0), 'the lost node’s worker is gone');
  });

  test('a worker failure on one node restarts the workers of every node and counts one restart', async () => {
    const { out, runId } = newJob();
    const group = [0, 1].map(() =>
      agent({
        endpoint: etcd().endpoint,
        runId,
        out,
        nnodes: '2',
        extra: ['--max-restarts', '1'],
        env: { FAIL_RANK_ONCE: '1' },
      }),
    );
    const first = await waitForRound(out, 2, 'two workers');
    const second = await waitForRound(out, 2, 'two workers after the failure', 30_000, first[0]!.round + 1);
    assert.ok(
      second.every((e) => e.restart === 1),
      `restart count is 1 on every node: ${JSON.stringify(second)}`,
    );
    await finish(out, group);
  });

  test('a node below min waits, then fails with a timeout error naming the shortfall', async () => {
    const { out, runId } = newJob();
    const a = agent({
      endpoint: etcd().endpoint,
      runId,
      out,
      nnodes: '2:2',
      rdzvConf: 'join_timeout=2,last_call_timeout=0.2',
    });
    const res = await a.result;
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /timed out|timeout/i);
    assert.match(res.stderr, /1 node\(s\) joined, min is 2/);
    assert.deepEqual(readEvents(out), [], 'no worker started');
  });

  test('an etcd restart shorter than the lease TTL does not stop running workers', async () => {
    const { out, runId } = newJob();
    // The TTL must exceed the outage (down 1 s plus etcd's start-up): past it every agent fences itself.
    const group = [0, 1].map(() =>
      agent({ endpoint: etcd().endpoint, runId, out, nnodes: '2', rdzvConf: 'last_call_timeout=0.5,lease_ttl=8' }),
    );
    await waitForRound(out, 2, 'two workers');
    await etcd().restart({ downMs: 1000 });
    await new Promise((r) => setTimeout(r, 4000));
    assert.equal(readEvents(out).length, 2, 'no worker was restarted by the outage');
    await finish(out, group);
  });

  test('two jobs on one etcd do not interfere', async () => {
    const a = newJob();
    const b = newJob();
    const ga = [0, 1].map(() => agent({ endpoint: etcd().endpoint, runId: a.runId, out: a.out, nnodes: '2' }));
    const gb = [0, 1].map(() =>
      agent({ endpoint: etcd().endpoint, runId: b.runId, out: b.out, nnodes: '2', nproc: 2 }),
    );
    const ea = await waitForRound(a.out, 2, 'job a');
    const eb = await waitForRound(b.out, 4, 'job b');
    assert.deepEqual(ea.map((e) => e.rank).sort(), [0, 1]);
    assert.deepEqual(eb.map((e) => e.rank).sort(), [0, 1, 2, 3]);
    await finish(a.out, ga);
    await finish(b.out, gb);
  });
});

describe('tensile status', () => {
  test('shows the round, members with ranks and hosts, waiting nodes and restarts of a live job, once and live', async () => {
    const { out, runId } = newJob();
    const group = [0, 1].map(() => agent({ endpoint: etcd().endpoint, runId, out, nnodes: '2', nproc: 2 }));
    const evs = await waitForRound(out, 4, 'four workers');
    const res = await runTensile(['status', '--rdzv-endpoint', etcd().endpoint, '--rdzv-id', runId, '--json'], {
      timeoutMs: 20_000,
    });
    assert.equal(res.code, 0, res.stderr);
    const st = JSON.parse(res.stdout) as {
      runId: string;
      round: number;
      state: string;
      members: Array<{ groupRank: number; host: string; localWorldSize: number; nodeId: string }>;
      waiting: unknown[];
      failureRestarts: number;
    };
    assert.equal(st.runId, runId);
    assert.equal(st.state, 'running');
    assert.equal(st.round, evs[0]!.round);
    assert.deepEqual(st.members.map((m) => m.groupRank).sort(), [0, 1]);
    assert.ok(st.members.every((m) => m.localWorldSize === 2 && m.host.length > 0));
    assert.deepEqual(new Set(st.members.map((m) => m.nodeId)), new Set(evs.map((e) => e.node)));
    assert.deepEqual(st.waiting, []);
    assert.equal(st.failureRestarts, 0);

    const table = await runTensile(['status', '--rdzv-endpoint', etcd().endpoint, '--rdzv-id', runId], {
      timeoutMs: 20_000,
    });
    assert.match(table.stdout, new RegExp(`job ${runId}: running, round ${st.round}, 0 failure restart\\(s\\)`));
    assert.match(table.stdout, /^0 +\S+ +127\.0\.0\.1 +2 +\S+$/m);

    const watch = startTensile(['status', '--rdzv-endpoint', etcd().endpoint, '--rdzv-id', runId, '--watch'], {
      timeoutMs: 30_000,
    });
    keep(watch);
    await waitFor(() => /running, round/.test(watch.stdout()), 'the first status', 15_000);
    writeFileSync(join(out, 'stop'), '');
    await waitFor(() => /closed/.test(watch.stdout()), 'the job to show as closed', 15_000);
    watch.kill('SIGINT');
    assert.equal((await watch.result).code, 0);
    for (const r of await Promise.all(group.map((a) => a.result))) assert.equal(r.code, 0, r.stderr.slice(-2000));
  });

  test('asks for the endpoint and id it needs', async () => {
    const res = await runTensile(['status', '--rdzv-id', 'x'], { timeoutMs: 20_000 });
    assert.equal(res.code, 2);
    assert.match(res.stderr, /--rdzv-endpoint HOST:PORT is required/);
  });
});

describe('rendezvous connection errors are clear', () => {
  test('an unreachable etcd fails within the read timeout and names the endpoint', async () => {
    const res = await runTensile(
      [
        'run',
        '--nnodes',
        '1:2',
        '--rdzv-endpoint',
        '127.0.0.1:1',
        '--rdzv-id',
        'x',
        '--rdzv-conf',
        'read_timeout=2',
        'true',
      ],
      { timeoutMs: 30_000 },
    );
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /127\.0\.0\.1:1/);
  });

  test('a malformed endpoint is rejected with the value', async () => {
    const res = await runTensile(
      ['run', '--nnodes', '1:2', '--rdzv-endpoint', 'http://:::x', '--rdzv-id', 'x', 'true'],
      {
        timeoutMs: 30_000,
      },
    );
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /:::x/);
  });

  test('a missing TLS file is named in the error', async () => {
    const res = await runTensile(
      [
        'run',
        '--nnodes',
        '1:2',
        '--rdzv-endpoint',
        etcd().endpoint,
        '--rdzv-id',
        'x',
        '--rdzv-conf',
        'cacert=/nonexistent/ca.pem',
        'true',
      ],
      { timeoutMs: 30_000 },
    );
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /\/nonexistent\/ca\.pem/);
  });
});
