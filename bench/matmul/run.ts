// bench/matmul: GFLOP/s of tensile's matmul op on its two kernels (blocked JS sgemm, native BLAS through the
// addon) against torch.mm, same shapes, one thread each, measured side by side in this run.
// Usage: npm run bench -- matmul [--budget-s 0.5]
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { figure } from '../lib/figures.js';

// One BLAS thread on both sides; must be set before OpenBLAS loads.
process.env.OPENBLAS_NUM_THREADS = '1';
process.env.OMP_NUM_THREADS = '1';
const { Generator, blasName, initBlas, matmul, randn, setBlas } = await import('../../tensor/index.js');

const budgetArg = process.argv.indexOf('--budget-s');
const budgetS = budgetArg > 0 ? Number(process.argv[budgetArg + 1]) : 0.5;
// m x k x n: the MLP's layers at batch 64 (784-512-256-10), their backward shapes, and a square one.
const SHAPES = ['64x784x512', '64x512x256', '784x64x512', '512x512x512'];

function measure(m: number, k: number, n: number): number {
  const g = new Generator(0);
  const a = randn([m, k], { generator: g });
  const b = randn([k, n], { generator: g });
  for (let i = 0; i < 2; i++) matmul(a, b);
  let iters = 0;
  const t0 = performance.now();
  let dt: number;
  do {
    matmul(a, b);
    iters++;
    dt = (performance.now() - t0) / 1000;
  } while (dt < budgetS);
  return (2 * m * n * k * iters) / dt / 1e9;
}

const native = await initBlas();
const results: { shape: string; js: number; blas: number | null }[] = [];
for (const shape of SHAPES) {
  const [m, k, n] = shape.split('x').map(Number) as [number, number, number];
  setBlas(null);
  const js = measure(m, k, n);
  let blas: number | null = null;
  if (native !== null) {
    setBlas(native);
    blas = measure(m, k, n);
  }
  results.push({ shape, js, blas });
}

let peer: Record<string, number> = {};
try {
  const out = execFileSync(
    '/usr/bin/python3',
    [join(import.meta.dirname, 'torch_matmul.py'), String(budgetS), ...SHAPES],
    {
      timeout: 120_000,
      env: { ...process.env, OMP_NUM_THREADS: '1' },
    },
  );
  peer = (JSON.parse(out.toString()) as { gflops: Record<string, number> }).gflops;
} catch (err) {
  console.error(`bench/matmul: PyTorch peer unavailable (${(err as Error).message.split('\n')[0]})`);
}

for (const r of results) {
  figure(`matmul_js_${r.shape}`, r.js, peer[r.shape], 'GFLOP/s', '>=', 0.05, 2);
  if (r.blas !== null) figure(`matmul_blas_${r.shape}`, r.blas, peer[r.shape], 'GFLOP/s', '>=', 0.5, 2);
}
if (native === null) console.error('bench/matmul: native BLAS not loaded; only the JS kernel was measured');
else console.error(`bench/matmul: native kernel ${blasName()}`);
