// NCCL correctness at world size 1 on a real GPU: the collective contract suite that the tcp backend's data planes
// pass (float32/float64/int32 host buffers), plus float16/bfloat16 host buffers and device buffers for every dtype
// against the same reference. Skips with the loader's reason where there is no GPU or no NCCL.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CollectiveError } from '../../collective/api.js';
import { createNcclGroup, type NcclProcessGroup } from '../../collective/nccl-backend.js';
import { ncclAvailability } from '../../collective/native/loader.js';
import { runContract } from '../integration/collective/contract.js';
import { checkDevice, checkHost } from './nccl-checks.js';
import { memoryStore } from '../helpers/memory-store.js';

const avail = ncclAvailability();

async function group(t: { after(fn: () => Promise<void>): void }): Promise<NcclProcessGroup> {
  const g = await createNcclGroup({ rank: 0, worldSize: 1, localRank: 0, store: memoryStore(), timeoutMs: 60_000 });
  t.after(() => g.destroy());
  return g;
}

test('the collective contract suite passes with nccl', async (t) => {
  if (!avail.ok) {
    t.skip(`no NVIDIA GPU: ${avail.reason}`);
    return;
  }
  const g = await group(t);
  const results = await runContract(g);
  assert.deepEqual(
    results.filter((r) => !r.ok),
    [],
  );
  assert.ok(results.length > 200, `only ${results.length} checks ran`);
});

test('NCCL float16/bfloat16 host-buffer collectives match the reference for every op', async (t) => {
  if (!avail.ok) {
    t.skip(`no NVIDIA GPU: ${avail.reason}`);
    return;
  }
  const g = await group(t);
  const report = await checkHost(g);
  assert.deepEqual(report.failures, []);
  assert.ok(report.passed > 100, `only ${report.passed} checks ran`);
});

test('NCCL device-buffer collectives match the CPU reference in place and out of place', async (t) => {
  if (!avail.ok) {
    t.skip(`no NVIDIA GPU: ${avail.reason}`);
    return;
  }
  const g = await group(t);
  const report = await checkDevice(g);
  assert.deepEqual(report.failures, []);
  assert.ok(report.passed > 50, `only ${report.passed} checks ran`);
});

test('an aborted NCCL group rejects later operations with ABORTED', async (t) => {
  if (!avail.ok) {
    t.skip(`no NVIDIA GPU: ${avail.reason}`);
    return;
  }
  const g = await createNcclGroup({ rank: 0, worldSize: 1, localRank: 0, store: memoryStore(), timeoutMs: 60_000 });
  await g.allreduce(new Float32Array(8));
  g.abort('test');
  await assert.rejects(
    g.allreduce(new Float32Array(8)),
    (e: unknown) => e instanceof CollectiveError && e.code === 'ABORTED',
  );
  await g.destroy();
});
