// bench/packed.sh as a device session runs it: packs the benchmarks (without node.xz: NODE is given), then runs
// bench/allreduce and bench/rpc from the carry, with tiny iteration counts, and writes a results file that
// scripts/figures-table.mjs renders. Proves the carry needs nothing from the source tree's node_modules but zod.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));

test('bench/packed.sh packs both benchmarks and runs them from the carry, writing a results file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-packed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const carry = join(dir, 'carry');
  const env = { ...process.env, TENSILE_CARRY: carry, TENSILE_PACK_NODE: '0', NODE: process.execPath };
  const sh = (...args: string[]) =>
    spawnSync('bash', ['bench/packed.sh', ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 300_000 });

  const pack = sh('--pack');
  assert.equal(pack.status, 0, pack.stdout + pack.stderr);

  const bad = sh('nope');
  assert.equal(bad.status, 2);
  assert.match(bad.stdout, /'nope': expected allreduce, rpc or all/);

  const results = join(dir, 'small-box.txt');
  const small = {
    BENCH_ROUNDS: '1',
    BENCH_LAT_ITERS: '40',
    BENCH_THR_CALLS: '200',
    BENCH_WINDOW: '50',
    BENCH_BW_ITERS: '2',
    BENCH_BW_WARMUP: '1',
    BENCH_MB: '1',
    BENCH_WARMUP: '20',
    BENCH_REM_WARMUP: '20',
    BENCH_ITERS: '5',
  };
  const runBoth = (args: string[]) =>
    spawnSync('bash', ['bench/packed.sh', '--results', results, ...args], {
      cwd: ROOT,
      env: { ...env, ...small },
      encoding: 'utf8',
      timeout: 300_000,
    });
  const ar = runBoth(['allreduce', '--worlds', '2', '--sizes', '4096', '--no-js', '--no-uds', '--no-net']);
  assert.equal(ar.status, 0, ar.stdout + ar.stderr);
  assert.match(ar.stdout, /^figure=allreduce_latency_n2_4KB tensile=[\d.]+ peer=[\d.]+ /m);
  const text = readFileSync(results, 'utf8');
  assert.match(text, /^# machine: small-box \(/);
  assert.match(text, /^## allreduce \S+Z load=[\d.]+ args=--worlds 2 --sizes 4096/m);

  const rpc = runBoth(['rpc']);
  assert.equal(rpc.status, 0, rpc.stdout + rpc.stderr);
  for (const f of [
    'rpc_noop_latency',
    'rpc_async_throughput',
    'rpc_tensor_echo_1mb_bandwidth',
    'rpc_remote_to_here_latency',
  ])
    assert.match(rpc.stdout, new RegExp(`^figure=${f} tensile=[\\d.]+ peer=[\\d.]+ `, 'm'), f);
  const rpcText = readFileSync(results, 'utf8');
  assert.match(rpcText, /^## rpc \S+Z load=[\d.]+ args=--repeats 5\nfigure=rpc_noop_latency /m);
});
