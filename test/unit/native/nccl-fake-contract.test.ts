// The collective contract suite on the NCCL backend without a GPU: world size 1 against the fake libnccl/libcudart
// (fixtures/fake-cuda-nccl.c, whose world-1 collectives are copies, which is what every op means on one rank). The
// same suite runs on a real GPU in test/gpu/nccl.test.ts; this keeps its NCCL plumbing honest in CI.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildFakeNccl } from './fixtures/build-fake-nccl.js';

const here = fileURLToPath(new URL('.', import.meta.url));

test('the collective contract suite passes on the NCCL backend against a fake NCCL (world size 1)', (t) => {
  const lib = buildFakeNccl(t);
  if (lib === null) return;
  const env: NodeJS.ProcessEnv = { ...process.env, TENSILE_NCCL_LIB: lib, TENSILE_CUDART_LIB: lib };
  delete env.TENSILE_NATIVE_ADDON;
  delete env.NODE_TEST_CONTEXT;
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(here, 'fixtures/fake-nccl-contract-child.ts')], {
    cwd: join(here, '../../..'),
    env,
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { total: number; failed: unknown[] };
  assert.deepEqual(out.failed, []);
  assert.ok(out.total > 200, `only ${out.total} checks ran`);
});
