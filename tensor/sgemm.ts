// Matrix multiply kernels. `sgemm` dispatches to a native BLAS (OpenBLAS through `collective/native/blas.js`)
// when one loads, else to `jsSgemm`: a blocked, cache-friendly kernel in plain JavaScript.
//
// All matrices are row-major, cblas_sgemm semantics: C = alpha * op(A) @ op(B) + beta * C, op(X) = X or Xᵀ,
// op(A) is m×k, op(B) is k×n, C is m×n. `a`, `b`, `c` may be subarrays (views) of larger buffers.
import type { Blas } from './api.js';

let scratch = new Float32Array(0);

function scratchOf(size: number): Float32Array {
  if (scratch.length < size) scratch = new Float32Array(Math.max(size, scratch.length * 2));
  return scratch;
}

const BLOCK_I = 32;
const BLOCK_K = 128;
const BLOCK_J = 512;

/** Blocked i-k-j kernel, four rows of C at a time. No allocation except a reusable packing buffer for Bᵀ. */
export function jsSgemm(
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: Float32Array,
  lda: number,
  b: Float32Array,
  ldb: number,
  beta: number,
  c: Float32Array,
  ldc: number,
): void {
  // C = beta * C
  for (let i = 0; i < m; i++) {
    const row = i * ldc;
    if (beta === 0) c.fill(0, row, row + n);
    else if (beta !== 1) for (let j = 0; j < n; j++) c[row + j] *= beta;
  }
  if (m === 0 || n === 0 || k === 0 || alpha === 0) return;
  // Make B row-major k×n with contiguous rows (pack Bᵀ once; the hot loop then reads B rows sequentially).
  let bb = b;
  let ldbb = ldb;
  if (transB) {
    bb = scratchOf(k * n);
    for (let j = 0; j < n; j++) {
      const src = j * ldb;
      for (let p = 0; p < k; p++) bb[p * n + j] = b[src + p]!;
    }
    ldbb = n;
  }
  const aRow = transA ? 1 : lda; // stride between A(i, ·) rows
  const aCol = transA ? lda : 1; // stride between A(·, p) columns
  for (let j0 = 0; j0 < n; j0 += BLOCK_J) {
    const j1 = Math.min(n, j0 + BLOCK_J);
    for (let i0 = 0; i0 < m; i0 += BLOCK_I) {
      const i1 = Math.min(m, i0 + BLOCK_I);
      for (let p0 = 0; p0 < k; p0 += BLOCK_K) {
        const p1 = Math.min(k, p0 + BLOCK_K);
        let i = i0;
        for (; i + 3 < i1; i += 4) {
          const c0 = i * ldc;
          const c1 = c0 + ldc;
          const c2 = c1 + ldc;
          const c3 = c2 + ldc;
          for (let p = p0; p < p1; p++) {
            const ap = i * aRow + p * aCol;
            const a0 = alpha * a[ap]!;
            const a1 = alpha * a[ap + aRow]!;
            const a2 = alpha * a[ap + 2 * aRow]!;
            const a3 = alpha * a[ap + 3 * aRow]!;
            const bo = p * ldbb;
            for (let j = j0; j < j1; j++) {
              const bv = bb[bo + j]!;
              c[c0 + j] += a0 * bv;
              c[c1 + j] += a1 * bv;
              c[c2 + j] += a2 * bv;
              c[c3 + j] += a3 * bv;
            }
          }
        }
        for (; i < i1; i++) {
          const c0 = i * ldc;
          for (let p = p0; p < p1; p++) {
            const a0 = alpha * a[i * aRow + p * aCol]!;
            if (a0 === 0) continue;
            const bo = p * ldbb;
            for (let j = j0; j < j1; j++) c[c0 + j] += a0 * bb[bo + j]!;
          }
        }
      }
    }
  }
}

let active: Blas | null = null;
let loaded = false;

async function tryLoadNative(): Promise<Blas | null> {
  if (process.env.TENSILE_BLAS === 'js') return null;
  try {
    // A variable specifier: the addon's loader may be absent from a checkout; then the JS kernel is used.
    const spec = '../collective/native/blas.js';
    const mod = (await import(spec)) as { loadBlas?: () => Blas | null };
    return typeof mod.loadBlas === 'function' ? mod.loadBlas() : null;
  } catch {
    return null;
  }
}

/**
 * Loads the native BLAS once (idempotent). Tensor code works before and without it, on the JS kernel;
 * `index.ts` awaits it at import so that users get the native path without doing anything.
 * Set TENSILE_BLAS=js to force the JS kernel.
 */
export async function initBlas(): Promise<Blas | null> {
  if (!loaded) {
    loaded = true;
    active = await tryLoadNative();
  }
  return active;
}

/** Overrides the kernel (null → JS); for benchmarks and tests. */
export function setBlas(blas: Blas | null): void {
  loaded = true;
  active = blas;
}

/** The name of the kernel `sgemm` uses now: the BLAS's name or "js". */
export function blasName(): string {
  return active === null ? 'js' : active.name;
}

export function sgemm(
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: Float32Array,
  lda: number,
  b: Float32Array,
  ldb: number,
  beta: number,
  c: Float32Array,
  ldc: number,
): void {
  if (active !== null && m * n * k >= 4096) {
    active.sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    jsSgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}
