// Matrix multiply kernels. `sgemm` dispatches to a native BLAS (OpenBLAS through `collective/native/blas.js`)
// when one loads, else to `jsSgemm`: a blocked, cache-friendly kernel in plain JavaScript.
//
// All matrices are row-major, cblas_sgemm semantics: C = alpha * op(A) @ op(B) + beta * C, op(X) = X or Xᵀ,
// op(A) is m×k, op(B) is k×n, C is m×n. `a`, `b`, `c` may be subarrays (views) of larger buffers.
import type { Blas } from './api.js';

/** The cblas_sgemm signature, declared once in `collective/native/addon.ts`. */
type Sgemm = Blas['sgemm'];

let packA = new Float32Array(0);
let packB = new Float32Array(0);
const edge = new Float64Array(16);

/** Depth of one pass over K: a 4×KC panel of A and of B (4 KB each) stay in L1 while a tile accumulates. */
const KC = 256;

/**
 * Packs op(A) (m×k) into panels of 4 rows, element (i, p) of panel i/4 at [p*4 + i%4], zero-padded to a multiple
 * of 4 rows; op(B) (k×n) likewise into panels of 4 columns. Transposes are absorbed here, so the micro-kernel
 * reads both operands sequentially whatever the flags.
 */
function pack(
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  a: Float32Array,
  lda: number,
  b: Float32Array,
  ldb: number,
): void {
  const mp = (m + 3) >> 2;
  const np = (n + 3) >> 2;
  if (packA.length < mp * 4 * k) packA = new Float32Array(mp * 4 * k);
  if (packB.length < np * 4 * k) packB = new Float32Array(np * 4 * k);
  const A = packA;
  const B = packB;
  for (let ip = 0; ip < mp; ip++) {
    const base = ip * 4 * k;
    for (let ii = 0; ii < 4; ii++) {
      const i = ip * 4 + ii;
      if (i >= m) {
        for (let p = 0; p < k; p++) A[base + p * 4 + ii] = 0;
      } else if (transA) {
        for (let p = 0; p < k; p++) A[base + p * 4 + ii] = a[p * lda + i];
      } else {
        const row = i * lda;
        for (let p = 0; p < k; p++) A[base + p * 4 + ii] = a[row + p];
      }
    }
  }
  for (let jp = 0; jp < np; jp++) {
    const base = jp * 4 * k;
    for (let jj = 0; jj < 4; jj++) {
      const j = jp * 4 + jj;
      if (j >= n) {
        for (let p = 0; p < k; p++) B[base + p * 4 + jj] = 0;
      } else if (transB) {
        const row = j * ldb;
        for (let p = 0; p < k; p++) B[base + p * 4 + jj] = b[row + p];
      } else {
        for (let p = 0; p < k; p++) B[base + p * 4 + jj] = b[p * ldb + j];
      }
    }
  }
}

function store(c: Float32Array, o: number, v: number, alpha: number, beta: number): void {
  c[o] = beta === 0 ? alpha * v : alpha * v + beta * c[o];
}

/**
 * Portable kernel: packs both operands into 4-wide panels, then a 4×4 register-tiled micro-kernel accumulates
 * 16 outputs over KC-deep slices of K. No allocation per call beyond growing the two reusable packing buffers.
 */
export const jsSgemm: Sgemm = function jsSgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
  if (m === 0 || n === 0) return;
  if (k === 0 || alpha === 0) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) store(c, i * ldc + j, 0, 0, beta);
    }
    return;
  }
  pack(transA, transB, m, n, k, a, lda, b, ldb);
  const A = packA;
  const B = packB;
  const mp = (m + 3) >> 2;
  const np = (n + 3) >> 2;
  for (let p0 = 0; p0 < k; p0 += KC) {
    const p1 = Math.min(k, p0 + KC);
    const bt = p0 === 0 ? beta : 1; // later slices add onto the first one's result
    for (let jp = 0; jp < np; jp++) {
      const bo = jp * 4 * k;
      const j0 = jp * 4;
      for (let ip = 0; ip < mp; ip++) {
        const ao = ip * 4 * k;
        // prettier-ignore
        let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0,
          c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        // prettier-ignore
        for (let p = p0; p < p1; p++) {
          const x = ao + p * 4;
          const y = bo + p * 4;
          const a0 = A[x], a1 = A[x + 1], a2 = A[x + 2], a3 = A[x + 3];
          const b0 = B[y], b1 = B[y + 1], b2 = B[y + 2], b3 = B[y + 3];
          c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
          c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
          c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
          c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
        }
        const i0 = ip * 4;
        // prettier-ignore
        if (i0 + 4 <= m && j0 + 4 <= n) {
          let o = i0 * ldc + j0;
          store(c, o, c00, alpha, bt); store(c, o + 1, c01, alpha, bt); store(c, o + 2, c02, alpha, bt); store(c, o + 3, c03, alpha, bt);
          o += ldc;
          store(c, o, c10, alpha, bt); store(c, o + 1, c11, alpha, bt); store(c, o + 2, c12, alpha, bt); store(c, o + 3, c13, alpha, bt);
          o += ldc;
          store(c, o, c20, alpha, bt); store(c, o + 1, c21, alpha, bt); store(c, o + 2, c22, alpha, bt); store(c, o + 3, c23, alpha, bt);
          o += ldc;
          store(c, o, c30, alpha, bt); store(c, o + 1, c31, alpha, bt); store(c, o + 2, c32, alpha, bt); store(c, o + 3, c33, alpha, bt);
        } else {
          edge[0] = c00; edge[1] = c01; edge[2] = c02; edge[3] = c03;
          edge[4] = c10; edge[5] = c11; edge[6] = c12; edge[7] = c13;
          edge[8] = c20; edge[9] = c21; edge[10] = c22; edge[11] = c23;
          edge[12] = c30; edge[13] = c31; edge[14] = c32; edge[15] = c33;
          for (let ii = 0; ii < 4 && i0 + ii < m; ii++) {
            for (let jj = 0; jj < 4 && j0 + jj < n; jj++) store(c, (i0 + ii) * ldc + j0 + jj, edge[ii * 4 + jj], alpha, bt);
          }
        }
      }
    }
  }
};

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

export interface VectorOps {
  saxpy(n: number, alpha: number, x: Float32Array, y: Float32Array): void;
  sscal(n: number, alpha: number, x: Float32Array): void;
}

/**
 * SIMD vector kernels (BLAS saxpy/sscal) when the native BLAS provides them, else null. On a loaded 2-core machine
 * they update an optimizer's 400k-element buffers about 5× faster than a JavaScript loop.
 */
export function vectorOps(): VectorOps | null {
  const b = active;
  if (b === null || typeof b.saxpy !== 'function' || typeof b.sscal !== 'function') return null;
  return b as VectorOps;
}

/** The name of the kernel `sgemm` uses now: the BLAS's name or "js". */
export function blasName(): string {
  return active === null ? 'js' : active.name;
}

export const sgemm: Sgemm = function sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
  if (active !== null && m * n * k >= 4096) {
    active.sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    jsSgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
};
