import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allExited, spawnWorld } from './spawn-world.js';

// The plane choice across (simulated) hosts, end to end: the store vote, decidePlane and its executor.
const hostsOf = (hosts: string) => (rank: number) => ({ TENSILE_HOST_ID: hosts[rank]! });
// Rank 1 cannot load the addon: TENSILE_NATIVE_ADDON points at a file that does not exist.
const noAddonOnRank1 = (hosts: string) => (rank: number) => ({
  ...hostsOf(hosts)(rank),
  ...(rank === 1 ? { TENSILE_NATIVE_ADDON: '/nonexistent/tensile_native.node' } : {}),
});

describe('choosing the data plane across hosts', () => {
  it('ranks on two hosts choose the socket plane by themselves', async (t) => {
    const world = await spawnWorld(2, 'plane', {}, hostsOf('ab'));
    t.after(() => world.kill());
    const lines = await Promise.all(
      world.workers.map((w) => w.waitFor((l) => 'dataPlane' in l || 'fatal' in l, 60_000)),
    );
    assert.deepEqual(
      lines.map((l) => l.dataPlane),
      ['net', 'net'],
    );
    assert.deepEqual(await allExited(world, 20_000), [0, 0]);
  });

  it('sub-groups of a socket-plane world get shared memory on one host and sockets across hosts', async (t) => {
    const world = await spawnWorld(3, 'plane', { TEST_SUBS: '0,1;1,2;2,0' }, hostsOf('aab'));
    t.after(() => world.kill());
    const lines = await Promise.all(world.workers.map((w) => w.waitFor((l) => 'subs' in l || 'fatal' in l, 60_000)));
    const want = [
      { ranks: [0, 1], plane: 'shm', sum: 3 },
      { ranks: [1, 2], plane: 'net', sum: 5 },
      { ranks: [2, 0], plane: 'net', sum: 4 },
    ];
    for (const [rank, line] of lines.entries()) {
      assert.equal(line.fatal, undefined, String(line.fatal));
      assert.equal(line.dataPlane, 'net');
      const subs = line.subs as { ranks: number[]; dataPlane?: string; sum?: number }[];
      assert.deepEqual(
        subs,
        want.map((w) =>
          w.ranks.includes(rank) ? { ranks: w.ranks, dataPlane: w.plane, sum: w.sum } : { ranks: w.ranks },
        ),
        `rank ${rank}`,
      );
    }
    assert.deepEqual(await allExited(world, 20_000), [0, 0, 0]);
  });

  it('one rank without the addon moves every rank to the JS path', async (t) => {
    const world = await spawnWorld(2, 'plane', {}, noAddonOnRank1('ab'));
    t.after(() => world.kill());
    const lines = await Promise.all(
      world.workers.map((w) => w.waitFor((l) => 'dataPlane' in l || 'fatal' in l, 60_000)),
    );
    assert.deepEqual(
      lines.map((l) => l.dataPlane),
      ['js', 'js'],
    );
    assert.deepEqual(await allExited(world, 20_000), [0, 0]);
  });

  it('TENSILE_COLLECTIVE_TRANSPORT=native with one rank lacking the addon fails init on every rank, naming why', async (t) => {
    const world = await spawnWorld(2, 'plane', { TENSILE_COLLECTIVE_TRANSPORT: 'native' }, noAddonOnRank1('ab'));
    t.after(() => world.kill());
    const lines = await Promise.all(
      world.workers.map((w) => w.waitFor((l) => 'dataPlane' in l || 'fatal' in l, 60_000)),
    );
    for (const line of lines)
      assert.match(
        String(line.fatal),
        /TENSILE_COLLECTIVE_TRANSPORT=native: no native data plane: rank 1: the tensile native addon is not built or cannot load.*\/nonexistent\/tensile_native\.node \(missing\)/,
      );
    assert.deepEqual(await allExited(world, 20_000), [1, 1], 'both workers exit with the error');
  });
});
