import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allExited, spawnWorld } from './spawn-world.js';

// One set of worker processes per world size runs every op × dtype × reduction × size (0, 1, odd, ~1 MB), in place
// and out of place, and checks each result against reference.ts. Worlds 3 and 5 use small ring segments so the
// pipelined ring runs many segments. Worlds 2 and 3 use TCP between all ranks, the others Unix domain sockets.
const worlds: { n: number; env: Record<string, string> }[] = [
  { n: 1, env: {} },
  { n: 2, env: { TENSILE_TCP_UDS: '0' } },
  { n: 3, env: { TENSILE_TCP_SEGMENT_BYTES: '16384', TENSILE_TCP_PIPELINE_DEPTH: '3', TENSILE_TCP_UDS: '0' } },
  { n: 4, env: {} },
  { n: 5, env: { TENSILE_TCP_SEGMENT_BYTES: '8192', TENSILE_TCP_SMALL_BYTES: '0' } },
];

describe('tcp backend collectives against a reference', () => {
  for (const { n, env } of worlds) {
    it(`every op, dtype, reduction and size gives the reference result with ${n} rank(s)`, async (t) => {
      const world = await spawnWorld(n, 'matrix', env);
      t.after(() => world.kill());
      const lines = await Promise.all(
        world.workers.map((w) => w.waitFor((l) => 'results' in l || 'fatal' in l, 120_000)),
      );
      const codes = await allExited(world, 20_000);
      for (const [rank, line] of lines.entries()) {
        assert.equal(line.fatal, undefined, `rank ${rank} crashed: ${String(line.fatal)}`);
        const results = line.results as { name: string; ok: boolean; detail?: string }[];
        const failed = results.filter((r) => !r.ok);
        assert.deepEqual(failed, [], `rank ${rank} failures`);
        assert.ok(results.length > 200, `rank ${rank} ran only ${results.length} checks`);
      }
      assert.deepEqual(codes, new Array(n).fill(0), 'every worker exits cleanly with code 0');
    });
  }
});
