// Agents as separate hosts: each in its own network namespace, joined to etcd by veth pairs and a bridge. Node
// loss (SIGKILL) and a network partition (its link taken down) must leave the rest training at the smaller size.
// Needs root; skips with the reason otherwise.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isAlive, waitFor, type TensileProcess } from '../../helpers/cli.js';
import { cleanupAgents, startAgent, waitForRound } from '../../helpers/elastic.js';
import { startEtcd, type EtcdServer } from '../../helpers/etcd.js';
import { createTopology, netnsUnavailable, type Topology } from '../../helpers/netns.js';

const reason = netnsUnavailable();
let topo: Topology | null = null;
let etcd: EtcdServer | null = null;
let endpoint = '';
const agents: TensileProcess[] = [];
const dirs: string[] = [];

function nodeAgent(i: number, out: string, runId: string): TensileProcess {
  const node = topo!.nodes[i]!;
  const a = startAgent({
    endpoint,
    runId,
    out,
    nnodes: '1:3',
    localAddr: node.ip,
    wrap: ['ip', 'netns', 'exec', node.ns],
    rdzvConf: 'last_call_timeout=0.5,join_timeout=30,lease_ttl=1,outage_timeout=30',
  });
  agents.push(a);
  return a;
}

describe('agents on separate network hosts', { skip: reason ?? false }, () => {
  before(async () => {
    topo = createTopology(3);
    etcd = await startEtcd({ clientHost: topo.hostIp });
    endpoint = etcd.endpoint;
  });
  after(async () => {
    await cleanupAgents(agents, dirs);
    await etcd?.stop();
    topo?.destroy();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  test('a node killed on its own host is dropped and the others go on at the smaller size', async () => {
    const out = mkdtempSync(join(tmpdir(), 'tensile-netns-'));
    dirs.push(out);
    const group = [0, 1, 2].map((i) => nodeAgent(i, out, 'netns-loss'));
    const first = await waitForRound(out, 3, 'three hosts');
    assert.deepEqual(first.map((e) => e.rank).sort(), [0, 1, 2]);
    const idx = group.findIndex((a) => a.stderr().includes('"groupRank":2'));
    const [victim] = group.splice(idx, 1) as [TensileProcess];
    victim.child.kill('SIGKILL');
    const second = await waitForRound(out, 2, 'two hosts after the loss', 30_000, first[0]!.round + 1);
    assert.deepEqual(second.map((e) => e.rank).sort(), [0, 1]);
    writeFileSync(join(out, 'stop'), '');
    for (const r of await Promise.all(group.map((a) => a.result))) assert.equal(r.code, 0, r.stderr.slice(-2000));
  });

  test('a host cut off by taking its link down is dropped; the rest train on without it', async () => {
    const out = mkdtempSync(join(tmpdir(), 'tensile-netns-'));
    dirs.push(out);
    const group = [0, 1, 2].map((i) => nodeAgent(i, out, 'netns-partition'));
    const first = await waitForRound(out, 3, 'three hosts');
    const cut = group.findIndex((a) => a.stderr().includes('"groupRank":2'));
    const nsIndex = cut; // agent i runs in namespace i
    topo!.linkDown(nsIndex);
    let second;
    try {
      second = await waitForRound(out, 2, 'two hosts after the partition', 30_000, first[0]!.round + 1);
      assert.deepEqual(second.map((e) => e.rank).sort(), [0, 1]);
      const cutNode = first.find((e) => e.groupRank === 2)!.node;
      assert.ok(
        second.every((e) => e.node !== cutNode),
        'the cut-off host is not in the new round',
      );
      // No split brain: while still cut off, that host learns on its own that it is out (its lease may have
      // lapsed) and stops its workers.
      const cutPids = first.filter((e) => e.node === cutNode).map((e) => e.pid);
      await waitFor(() => cutPids.every((p) => !isAlive(p)), 'the cut-off host to stop its workers', 15_000);
    } finally {
      topo!.linkUp(nsIndex);
    }
    // When its link returns, the cut-off agent learns that its round is over, stops its stale workers and joins
    // again: the job grows back to three hosts.
    const third = await waitForRound(out, 3, 'three hosts after the link returns', 45_000, second[0]!.round + 1);
    assert.deepEqual(third.map((e) => e.rank).sort(), [0, 1, 2]);
    writeFileSync(join(out, 'stop'), '');
    for (const r of await Promise.all(group.map((a) => a.result))) assert.equal(r.code, 0, r.stderr.slice(-2000));
  });
});
