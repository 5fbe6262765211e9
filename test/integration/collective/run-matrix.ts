// Runs the contract suite (worker.ts 'matrix' mode) in one world and asserts that every check of every rank passed.
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { allExited, spawnWorld } from './spawn-world.js';

export async function runMatrix(
  t: TestContext,
  n: number,
  env: Record<string, string>,
  rankEnv?: (rank: number) => Record<string, string>,
): Promise<void> {
  const world = await spawnWorld(n, 'matrix', env, rankEnv);
  t.after(() => world.kill());
  const lines = await Promise.all(
    world.workers.map((w) => w.waitFor((l) => 'results' in l || 'fatal' in l, 120_000 + 20_000 * n)),
  );
  // A crash (e.g. an op that timed out) is reported as such, not as the exit wait that follows it.
  for (const [rank, line] of lines.entries())
    assert.equal(line.fatal, undefined, `rank ${rank} crashed: ${String(line.fatal)}`);
  const codes = await allExited(world, 20_000);
  for (const [rank, line] of lines.entries()) {
    const results = line.results as { name: string; ok: boolean; detail?: string }[];
    const failed = results.filter((r) => !r.ok);
    assert.deepEqual(failed, [], `rank ${rank} failures`);
    assert.ok(results.length > 200, `rank ${rank} ran only ${results.length} checks`);
  }
  assert.deepEqual(codes, new Array(n).fill(0), 'every worker exits cleanly with code 0');
}
