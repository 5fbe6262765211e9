// BLAS for the tensor library: cblas_sgemm (and saxpy/sscal) from the system's OpenBLAS, through the native addon.
// `loadBlas()` returns null when the addon or a CBLAS library is missing; callers then use their JS kernels.
import { loadAddon, type NativeAddon, type SgemmFn } from './addon.js';

export type { SgemmFn } from './addon.js';

export interface Blas {
  /** The library in use, e.g. 'OpenBLAS 0.3.21 DYNAMIC_ARCH ...'. */
  readonly name: string;
  /**
   * C = alpha·op(A)·op(B) + beta·C, row-major, like cblas_sgemm(CblasRowMajor, ...). Synchronous; works on the
   * arrays' memory directly (subarrays included). op(A) is m×k, op(B) is k×n, C is m×n. Throws RangeError when a
   * dimension is negative or an array is too short for its shape and leading dimension.
   */
  sgemm: SgemmFn;
  /** y = alpha·x + y over the first n elements. */
  saxpy(n: number, alpha: number, x: Float32Array, y: Float32Array): void;
  /** x = alpha·x over the first n elements. */
  sscal(n: number, alpha: number, x: Float32Array): void;
  /** Sets the BLAS thread count (OpenBLAS only); returns false when the library cannot. */
  setThreads(n: number): boolean;
  /** The BLAS thread count now (1 when the library does not say). */
  threads(): number;
}

let loaded: { blas: Blas | null; reason: string | null } | undefined;

function dim(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
    throw new RangeError(`sgemm: ${name} (${v}) must be an integer in [0, 2^31)`);
  }
}

function need(name: string, arr: Float32Array, rows: number, cols: number, ld: number): void {
  if (!(arr instanceof Float32Array)) throw new TypeError(`sgemm: ${name} must be a Float32Array`);
  if (!Number.isInteger(ld) || ld < Math.max(1, cols)) {
    throw new RangeError(`sgemm: leading dimension of ${name} (${ld}) must be an integer ≥ max(1, ${cols})`);
  }
  const span = rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
  if (arr.length < span) {
    throw new RangeError(
      `sgemm: ${name} has ${arr.length} elements; a ${rows}×${cols} matrix with leading dimension ${ld} needs ${span}`,
    );
  }
}

function vec(op: string, name: string, arr: Float32Array, n: number): void {
  if (!(arr instanceof Float32Array)) throw new TypeError(`${op}: ${name} must be a Float32Array`);
  if (arr.length < n) throw new RangeError(`${op}: ${name} has ${arr.length} elements; n is ${n}`);
}

function makeBlas(addon: NativeAddon, name: string): Blas {
  return {
    name,
    sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
      dim('m', m);
      dim('n', n);
      dim('k', k);
      need('a', a, transA ? k : m, transA ? m : k, lda);
      need('b', b, transB ? n : k, transB ? k : n, ldb);
      need('c', c, m, n, ldc);
      addon.blasSgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    },
    saxpy(n, alpha, x, y) {
      dim('n', n);
      vec('saxpy', 'x', x, n);
      vec('saxpy', 'y', y, n);
      addon.blasSaxpy(n, alpha, x, y);
    },
    sscal(n, alpha, x) {
      dim('n', n);
      vec('sscal', 'x', x, n);
      addon.blasSscal(n, alpha, x);
    },
    setThreads(n) {
      if (!Number.isInteger(n) || n < 1) throw new RangeError(`BLAS threads (${n}) must be an integer ≥ 1`);
      return addon.blasSetThreads(n);
    },
    threads() {
      return addon.blasGetThreads();
    },
  };
}

/** Parses TENSILE_BLAS_THREADS; undefined when unset. */
export function blasThreadsFromEnv(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const raw = env.TENSILE_BLAS_THREADS;
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    throw new RangeError(`TENSILE_BLAS_THREADS=${JSON.stringify(raw)}: expected an integer ≥ 1`);
  }
  return n;
}

function load(): { blas: Blas | null; reason: string | null } {
  const a = loadAddon();
  if (!a.ok) return { blas: null, reason: a.reason };
  const status = a.addon.blasLoad();
  if (!status.ok) return { blas: null, reason: status.reason };
  if (!status.hasSaxpy || !status.hasSscal) {
    return { blas: null, reason: `${status.path} lacks cblas_saxpy or cblas_sscal` };
  }
  const blas = makeBlas(a.addon, status.name);
  const threads = blasThreadsFromEnv();
  if (threads !== undefined) blas.setThreads(threads);
  return { blas, reason: null };
}

/** The system BLAS, loaded once; null when unavailable (see blasUnavailableReason()). */
export function loadBlas(): Blas | null {
  loaded ??= load();
  return loaded.blas;
}

/** Why loadBlas() returns null, or null when BLAS is available. */
export function blasUnavailableReason(): string | null {
  loaded ??= load();
  return loaded.reason;
}
