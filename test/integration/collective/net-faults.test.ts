import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allExited, killRank1OnPlane, spawnWorld } from './spawn-world.js';

// Failures on the native socket plane, with hosts simulated on loopback by TENSILE_HOST_ID.
type Res = { name: string; ok: boolean; detail?: string };
const hostsOf = (hosts: string) => (rank: number) => ({ TENSILE_HOST_ID: hosts[rank]! });

/** Rank 1 SIGKILLed on the socket plane with the ranks on simulated `hosts` (`killRank1OnPlane`). */
const killRank1OnTheSocketPlane = (t: { after(fn: () => void): void }, mode: string, hosts: string, why: string) =>
  killRank1OnPlane(t, { mode, plane: 'net', why, rankEnv: hostsOf(hosts) });

describe('failures on the native socket plane', () => {
  const layouts: Record<string, string> = {
    abc: 'flat',
    aab: 'hierarchical: rank 1 shares host a with its leader, rank 0',
    abb: 'hierarchical: rank 1 is the leader of host b, shared with rank 2',
  };
  for (const [hosts, layout] of Object.entries(layouts)) {
    it(`a peer SIGKILLed mid-allreduce makes the others reject with PEER_LOST naming it (hosts ${hosts.split('').join(',')}, ${layout})`, async (t) => {
      // No TENSILE_COLLECTIVE_TRANSPORT: ranks on several hosts with the addon built choose the plane by themselves.
      await killRank1OnTheSocketPlane(t, 'kill', hosts, 'the automatic choice across hosts is the socket plane');
    });
  }

  it('a sub-group on the socket plane (hosts a,b,c): a member SIGKILLed mid-allreduce makes the others reject with PEER_LOST naming its world rank', async (t) => {
    // The sub-group is world ranks [1, 2, 0]: world rank 1 is its rank 0.
    await killRank1OnTheSocketPlane(t, 'kill-sub', 'abc', 'the sub-group has a socket plane of its own');
  });

  it('garbage bytes on a data socket fail the group with a clear error naming the sender, and no process crashes', async (t) => {
    const world = await spawnWorld(2, 'garbage', { TENSILE_COLLECTIVE_TRANSPORT: 'native' }, hostsOf('ab'));
    t.after(() => world.kill());
    const lines = await Promise.all(world.workers.map((w) => w.waitFor((l) => 'results' in l || 'fatal' in l, 60_000)));
    for (const line of lines) {
      assert.equal(line.fatal, undefined, String(line.fatal));
      assert.equal(line.dataPlane, 'net');
      assert.deepEqual(
        (line.results as Res[]).filter((r) => !r.ok),
        [],
        JSON.stringify(line),
      );
      assert.equal(line.laterCode, 'PEER_LOST', 'a later op rejects at once too');
    }
    assert.equal(lines[1]!.peerRank, 0, JSON.stringify(lines[1]));
    assert.match(String(lines[1]!.message), /rank 0: corrupt frame on its data socket \(magic 0xabababab/);
    assert.deepEqual(await allExited(world, 20_000), [0, 0], 'both processes exit normally');
  });

  it('allreduce sizes on both sides of the hierarchical threshold: after the timeout every rank names the mismatch, both sides (hosts a,a,b,b)', async (t) => {
    const world = await spawnWorld(4, 'straddle', {}, hostsOf('aabb'));
    t.after(() => world.kill());
    const lines = await Promise.all(world.workers.map((w) => w.waitFor((l) => 'results' in l || 'fatal' in l, 60_000)));
    for (const [rank, line] of lines.entries()) {
      assert.equal(line.fatal, undefined, String(line.fatal));
      assert.equal(line.dataPlane, 'net');
      assert.equal(line.layout, 'hierarchical');
      assert.deepEqual(
        (line.results as Res[]).filter((r) => !r.ok),
        [],
        JSON.stringify(line),
      );
      const [mine, theirs] = rank === 0 ? ['8192', '32768'] : ['32768', '8192'];
      assert.match(
        String(line.message),
        new RegExp(
          `^allreduce: collective mismatch between ranks: rank ${rank} called allreduce float32 × ${mine} \\(sum\\) ` +
            `but rank \\d called allreduce float32 × ${theirs} \\(sum\\)`,
        ),
      );
    }
  });

  for (const mode of ['collective-abort', 'collective-timeout'] as const) {
    const what =
      mode === 'collective-abort'
        ? 'abort during a pending allreduce rejects it with ABORTED and the late peer gets PEER_LOST naming the aborter'
        : 'an allreduce past its timeout rejects with TIMEOUT and the late peer gets PEER_LOST naming it';
    it(`${what} (socket plane)`, async (t) => {
      const world = await spawnWorld(2, mode, { TENSILE_COLLECTIVE_TRANSPORT: 'native' }, hostsOf('ab'));
      t.after(() => world.kill());
      const lines = await Promise.all(
        world.workers.map((w) => w.waitFor((l) => 'results' in l || 'fatal' in l, 60_000)),
      );
      for (const line of lines) {
        assert.equal(line.fatal, undefined, String(line.fatal));
        assert.equal(line.dataPlane, 'net');
        const res = line.results as Res[];
        assert.ok(res.length >= 1);
        assert.deepEqual(
          res.filter((r) => !r.ok),
          [],
        );
      }
      assert.deepEqual(await allExited(world, 20_000), [0, 0]);
    });
  }
});
