import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allExited, killRank1ExpectPeerLost, spawnWorld } from './spawn-world.js';

type Res = { name: string; ok: boolean; detail?: string };

describe('tcp backend failures', () => {
  it('a peer SIGKILLed mid-allreduce makes the others reject with PEER_LOST naming it, and they exit cleanly', async (t) => {
    const world = await spawnWorld(3, 'kill', {
      TEST_OP_TIMEOUT_MS: '20000',
      TENSILE_TCP_UDS: '0',
      TENSILE_COLLECTIVE_TRANSPORT: 'js',
    });
    t.after(() => world.kill());
    const victim = world.workers[1]!;
    await victim.waitFor((l) => l.progress === true || 'fatal' in l, 60_000);
    await killRank1ExpectPeerLost(world);
  });

  it('abort rejects pending and later ops with ABORTED and the peer sees PEER_LOST', async (t) => {
    const world = await spawnWorld(2, 'faults');
    t.after(() => world.kill());
    const lines = await Promise.all(world.workers.map((w) => w.waitFor((l) => 'results' in l || 'fatal' in l, 60_000)));
    for (const line of lines) {
      assert.equal(line.fatal, undefined, String(line.fatal));
      const res = line.results as Res[];
      assert.ok(res.length >= 2);
      assert.deepEqual(
        res.filter((r) => !r.ok),
        [],
      );
    }
    assert.deepEqual(await allExited(world, 20_000), [0, 0]);
  });

  it('an op past its timeout rejects with TIMEOUT and its peer is released with PEER_LOST', async (t) => {
    const world = await spawnWorld(2, 'timeout');
    t.after(() => world.kill());
    const lines = await Promise.all(world.workers.map((w) => w.waitFor((l) => 'results' in l || 'fatal' in l, 60_000)));
    for (const line of lines) {
      assert.equal(line.fatal, undefined, String(line.fatal));
      const res = line.results as Res[];
      assert.equal(res.length, 1);
      assert.deepEqual(
        res.filter((r) => !r.ok),
        [],
      );
    }
    assert.deepEqual(await allExited(world, 20_000), [0, 0]);
  });
});
