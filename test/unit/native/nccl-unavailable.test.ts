// On machines without NCCL/CUDA (CI), the NCCL backend must fail with one clear, typed error and `auto` must be
// told why, so that it falls back to tcp.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { CollectiveError, type Store } from '../../../collective/api.js';
import { createNcclGroup } from '../../../collective/nccl-backend.js';
import { loadAddon } from '../../../collective/native/addon.js';
import { loadNative, ncclAvailability } from '../../../collective/native/loader.js';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const nccl = ncclAvailability();

test('the native addon builds and loads here', () => {
  const a = loadAddon();
  assert.ok(a.ok, a.ok ? '' : a.reason);
  assert.equal(a.addon.abiVersion, 1);
});

test('without NCCL, ncclAvailability says so and names the library and the paths tried', (t) => {
  if (nccl.ok) {
    t.skip('NCCL and a CUDA device are present on this machine');
    return;
  }
  assert.equal(nccl.ok, false);
  assert.match(nccl.reason, /NCCL backend unavailable: /);
  assert.match(nccl.reason, /libnccl\.so\.2 not found \(tried: .*libnccl\.so\.2 /);
  assert.match(nccl.reason, /TENSILE_NCCL_LIB/);
});

test('without NCCL, loadNative and createNcclGroup reject with BACKEND_UNAVAILABLE', async (t) => {
  if (nccl.ok) {
    t.skip('NCCL and a CUDA device are present on this machine');
    return;
  }
  assert.throws(
    () => loadNative(),
    (err: unknown) =>
      err instanceof CollectiveError && err.code === 'BACKEND_UNAVAILABLE' && /libnccl/.test(err.message),
  );
  const store = {} as Store; // never reached: the loader fails first
  await assert.rejects(
    createNcclGroup({ rank: 0, worldSize: 1, localRank: 0, store, timeoutMs: 1000 }),
    (err: unknown) => err instanceof CollectiveError && err.code === 'BACKEND_UNAVAILABLE',
  );
});

test('when the addon is not built, both NCCL and BLAS explain how to build it', async (t) => {
  const script = `
    const { ncclAvailability } = await import('./collective/native/loader.ts');
    const { loadBlas, blasUnavailableReason } = await import('./collective/native/blas.ts');
    console.log(JSON.stringify({ nccl: ncclAvailability(), blas: loadBlas(), why: blasUnavailableReason() }));
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: root,
    env: { ...process.env, TENSILE_NATIVE_ADDON: '/nonexistent/tensile_native.node' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('child did not exit within 30 s')), 30_000);
    child.on('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  assert.equal(code, 0, err);
  const r = JSON.parse(out) as { nccl: { ok: boolean; reason: string }; blas: null; why: string };
  assert.equal(r.nccl.ok, false);
  assert.match(
    r.nccl.reason,
    /native addon is not built.*node-gyp rebuild -C collective\/native.*\/nonexistent\/tensile_native\.node \(missing\)/,
  );
  assert.equal(r.blas, null);
  assert.match(r.why, /native addon is not built/);
});
