import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { allExited, killRank1OnPlane, spawnWorld } from './spawn-world.js';

type Res = { name: string; ok: boolean; detail?: string };
const tensileShm = (): string[] => readdirSync('/dev/shm').filter((f) => /tensile/i.test(f));

describe('failures on the native shared-memory plane', () => {
  it('a peer SIGKILLed mid-allreduce makes the others reject with PEER_LOST naming it, and nothing is left in /dev/shm', async (t) => {
    const before = tensileShm();
    // No TENSILE_COLLECTIVE_TRANSPORT: all ranks on one host with the addon built choose the plane by themselves.
    await killRank1OnPlane(t, {
      mode: 'kill',
      plane: 'shm',
      why: 'the automatic choice on one host is the shared-memory plane',
      beforeKill: (world) => {
        // The segment is an anonymous memfd: mapped by the ranks, never a file in /dev/shm.
        const maps = readFileSync(`/proc/${world.workers[1]!.child.pid}/maps`, 'utf8');
        assert.match(maps, /memfd:tensile-shm/, 'the victim maps the group segment as a memfd');
      },
    });
    assert.deepEqual(tensileShm(), before, '/dev/shm holds no tensile segment afterwards');
  });

  it('a sub-group on the plane: a member SIGKILLed mid-allreduce makes the others reject with PEER_LOST naming its world rank', async (t) => {
    // World rank 1 is rank 0 of the sub-group: the error must name world rank 1.
    await killRank1OnPlane(t, {
      mode: 'kill-sub',
      plane: 'shm',
      why: 'the sub-group has a shared-memory plane of its own',
    });
  });

  for (const mode of ['collective-abort', 'collective-timeout', 'sub-destroyed'] as const) {
    for (const transport of ['native', 'js'] as const) {
      if (mode === 'sub-destroyed' && transport === 'js') continue; // on TCP the survivor would wait to its timeout
      const what =
        mode === 'collective-abort'
          ? 'abort during a pending allreduce rejects it with ABORTED and the late peer gets PEER_LOST naming the aborter'
          : mode === 'collective-timeout'
            ? 'an allreduce past its timeout rejects with TIMEOUT and the late peer gets PEER_LOST naming it'
            : 'a sub-group destroyed by one member fails the other with PEER_LOST naming its world rank';
      it(`${what} (${transport} data plane)`, async (t) => {
        const world = await spawnWorld(2, mode, { TENSILE_COLLECTIVE_TRANSPORT: transport });
        t.after(() => world.kill());
        const lines = await Promise.all(
          world.workers.map((w) => w.waitFor((l) => 'results' in l || 'fatal' in l, 60_000)),
        );
        for (const line of lines) {
          assert.equal(line.fatal, undefined, String(line.fatal));
          assert.equal(line.dataPlane, transport === 'native' ? 'shm' : 'js');
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
  }
});
