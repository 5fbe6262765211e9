import assert from 'node:assert/strict';
import { test } from 'node:test';

import { blasThreadsFromEnv, blasUnavailableReason, loadBlas, type SgemmFn } from '../../../collective/native/blas.js';

// Deterministic pseudo-random fill so that failures reproduce.
function fill(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 0x100000000) * 2 - 1;
  }
  return out;
}

// Reference row-major GEMM in float64.
function naive(...[ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc]: Parameters<SgemmFn>): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let p = 0; p < k; p++) {
        const av = ta ? a[p * lda + i]! : a[i * lda + p]!;
        const bv = tb ? b[j * ldb + p]! : b[p * ldb + j]!;
        acc += av * bv;
      }
      out[i * n + j] = alpha * acc + beta * c[i * ldc + j]!;
    }
  }
  return out;
}

test('loadBlas finds the system OpenBLAS on this machine', () => {
  const blas = loadBlas();
  assert.ok(blas, `expected a BLAS, got reason: ${blasUnavailableReason()}`);
  assert.equal(blasUnavailableReason(), null);
  assert.match(blas.name, /\S/);
});

test('sgemm matches a naive matmul for every transpose combination and odd sizes', () => {
  const blas = loadBlas();
  assert.ok(blas);
  const shapes: Array<[number, number, number]> = [
    [1, 1, 1],
    [3, 5, 7],
    [17, 1, 9],
    [1, 13, 4],
    [33, 31, 29],
    [64, 65, 63],
  ];
  let seed = 1;
  for (const [m, n, k] of shapes) {
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        // Padded leading dimensions exercise lda/ldb/ldc > row length.
        const lda = (ta ? m : k) + 2;
        const ldb = (tb ? k : n) + 1;
        const ldc = n + 3;
        const a = fill((ta ? k : m) * lda, seed++);
        const b = fill((tb ? n : k) * ldb, seed++);
        const c = fill(m * ldc, seed++);
        const alpha = 0.75;
        const beta = -0.5;
        const want = naive(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        blas.sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            const got = c[i * ldc + j]!;
            const w = want[i * n + j]!;
            assert.ok(
              Math.abs(got - w) <= 1e-4 * (1 + Math.abs(w)) * Math.sqrt(k),
              `m=${m} n=${n} k=${k} ta=${ta} tb=${tb} at (${i},${j}): got ${got}, want ${w}`,
            );
          }
        }
      }
    }
  }
});

test('sgemm works on subarrays without copying them', () => {
  const blas = loadBlas();
  assert.ok(blas);
  const backing = new Float32Array(100);
  const a = backing.subarray(10, 14); // 2×2
  a.set([1, 2, 3, 4]);
  const b = backing.subarray(50, 54);
  b.set([5, 6, 7, 8]);
  const c = backing.subarray(80, 84);
  blas.sgemm(false, false, 2, 2, 2, 1, a, 2, b, 2, 0, c, 2);
  assert.deepEqual(Array.from(c), [19, 22, 43, 50]);
  assert.equal(backing[84], 0);
  assert.equal(backing[79], 0);
});

test('sgemm with k = 0 scales C by beta and m = 0 is a no-op', () => {
  const blas = loadBlas();
  assert.ok(blas);
  const c = new Float32Array([1, 2, 3, 4]);
  blas.sgemm(false, false, 2, 2, 0, 1, new Float32Array(0), 1, new Float32Array(0), 2, 2, c, 2);
  assert.deepEqual(Array.from(c), [2, 4, 6, 8]);
  blas.sgemm(false, false, 0, 2, 2, 1, new Float32Array(0), 2, new Float32Array(4), 2, 0, c, 2);
  assert.deepEqual(Array.from(c), [2, 4, 6, 8]);
});

test('sgemm rejects arrays too short for their shape with a message naming the array and sizes', () => {
  const blas = loadBlas();
  assert.ok(blas);
  assert.throws(
    () =>
      blas.sgemm(false, false, 2, 2, 2, 1, new Float32Array(3), 2, new Float32Array(4), 2, 0, new Float32Array(4), 2),
    /sgemm: a has 3 elements; a 2×2 matrix with leading dimension 2 needs 4/,
  );
  assert.throws(
    () =>
      blas.sgemm(false, false, 2, 2, 2, 1, new Float32Array(4), 1, new Float32Array(4), 2, 0, new Float32Array(4), 2),
    /leading dimension of a \(1\) must be an integer ≥ max\(1, 2\)/,
  );
  assert.throws(
    () =>
      blas.sgemm(false, false, -1, 2, 2, 1, new Float32Array(4), 2, new Float32Array(4), 2, 0, new Float32Array(4), 2),
    /m \(-1\) must be an integer/,
  );
});

test('saxpy and sscal update the first n elements in place', () => {
  const blas = loadBlas();
  assert.ok(blas);
  const x = new Float32Array([1, 2, 3, 4]);
  const y = new Float32Array([10, 20, 30, 40]);
  blas.saxpy(3, 2, x, y);
  assert.deepEqual(Array.from(y), [12, 24, 36, 40]);
  blas.sscal(2, -1, x);
  assert.deepEqual(Array.from(x), [-1, -2, 3, 4]);
  assert.throws(() => blas.saxpy(5, 1, x, y), /saxpy: x has 4 elements; n is 5/);
});

test('the BLAS thread count can be set and read back', () => {
  const blas = loadBlas();
  assert.ok(blas);
  const before = blas.threads();
  try {
    if (blas.setThreads(1)) assert.equal(blas.threads(), 1);
  } finally {
    blas.setThreads(Math.max(1, before));
  }
  assert.throws(() => blas.setThreads(0), /BLAS threads \(0\) must be an integer ≥ 1/);
});

test('TENSILE_BLAS_THREADS is parsed strictly', () => {
  assert.equal(blasThreadsFromEnv({}), undefined);
  assert.equal(blasThreadsFromEnv({ TENSILE_BLAS_THREADS: '2' }), 2);
  assert.throws(
    () => blasThreadsFromEnv({ TENSILE_BLAS_THREADS: 'two' }),
    /TENSILE_BLAS_THREADS="two": expected an integer ≥ 1/,
  );
});
