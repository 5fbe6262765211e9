// Drives the NCCL backend against a fake libcudart/libnccl (test/unit/native/fixtures/fake-cuda-nccl.c, compiled here
// with the system C compiler) so that the worker thread, the watchdog and the promise plumbing are tested without a GPU.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { NCCL_OP, ncclOpFor } from '../../../collective/nccl-backend.js';
import { buildFakeNccl } from './fixtures/build-fake-nccl.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const root = join(here, '../../..');

function runChild(
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(here, 'fixtures/fake-nccl-child.ts')], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(`child did not exit within ${timeoutMs} ms (an idle communicator kept it alive?); stderr: ${stderr}`),
      );
    }, timeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test('the NCCL backend runs every operation, times out hung ones and reports lost peers against a fake NCCL', async (t) => {
  const lib = buildFakeNccl(t);
  if (lib === null) return;

  const env: NodeJS.ProcessEnv = { ...process.env, TENSILE_NCCL_LIB: lib, TENSILE_CUDART_LIB: lib };
  delete env.TENSILE_NATIVE_ADDON;
  const r = await runChild(env, 60_000);
  assert.equal(r.code, 0, `child failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;

  assert.deepEqual(out.availability, { ok: true });
  assert.deepEqual(out.values, {
    f: [1.5, -2, 3],
    o: [1.5, -2, 3],
    ints: [7, -8],
    d: [0.25, 1e300],
    ag: [1.5, -2, 3],
    rs: [0.25, 1e300],
    ho: [1, 2.5, -3],
    bo: [0.5, 1024],
    device: [1, 2, 3, 4, 1, 2],
    rsAvg: [1, 2, 3],
  });
  assert.match(
    String(out.tooSmall),
    /^INVALID_ARGUMENT: allreduce: send buffer: offset 0 \+ 400 bytes exceeds the buffer's 64 bytes/,
  );
  assert.match(String(out.selfSend), /^INVALID_ARGUMENT: send: peer 0 is this rank/);
  assert.match(String(out.uint16NoDtype), /^INVALID_ARGUMENT: .*Uint16Array needs opts.dtype/);
  assert.match(String(out.afterDestroy), /^CLOSED: /);
  assert.equal(out.hangFirst, 'ok');
  assert.match(String(out.hangSecond), /^TIMEOUT: .*did not complete within 300 ms/);
  assert.match(String(out.hangThird), /^ABORTED: /);
  assert.equal(out.remoteFirst, 'ok');
  assert.match(String(out.remoteSecond), /^PEER_LOST: .*remote process exited/);
  assert.match(String(out.abortPending), /^ABORTED: .*test abort/);
  assert.match(String(out.abortLater), /^ABORTED: .*test abort/);
  assert.match(String(out.initHang), /^TIMEOUT: .*ncclCommInitRankConfig timed out/);
  assert.match(
    String(out.badDevice),
    /^INVALID_ARGUMENT: nccl: CUDA device 3 \(from LOCAL_RANK\): 1 device\(s\) visible/,
  );
});

test('avg on a single-rank communicator is sent to NCCL as sum, and stays avg on larger ones', () => {
  assert.equal(ncclOpFor('avg', 1), NCCL_OP.sum);
  assert.equal(ncclOpFor('avg', 2), NCCL_OP.avg);
  assert.equal(ncclOpFor('max', 1), NCCL_OP.max);
});
