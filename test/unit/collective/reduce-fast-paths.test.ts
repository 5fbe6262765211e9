import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { reduceInto, reductionBlas, useBlasForReductions } from '../../../collective/reduce-ops.js';

// Integer-valued floats keep every sum exact, so the BLAS and JS kernels must agree bit for bit.
function filled<T extends Float32Array | Float64Array | Int32Array>(a: T, seed: number): T {
  for (let i = 0; i < a.length; i++) a[i] = ((i * 7919 + seed * 104729) % 2001) - 1000;
  return a;
}

describe('fast reduction paths', () => {
  after(() => useBlasForReductions(true));

  it('sum a long float32 array the same with BLAS and with the JS loop, subarrays included', (t) => {
    const n = 10_007; // above the BLAS threshold and not a multiple of the unroll width
    const src = filled(new Float32Array(n + 5), 1);
    const base = filled(new Float32Array(n + 5), 2);
    const results: Float32Array[] = [];
    let blasLoaded = false;
    for (const blas of [true, false]) {
      useBlasForReductions(blas);
      if (blas) {
        const b = reductionBlas();
        blasLoaded = b !== null;
        // Sums take the BLAS path only while BLAS runs one thread.
        if (b && b.threads() !== 1) {
          const before = b.threads();
          b.setThreads(1);
          t.after(() => b.setThreads(before));
        }
      }
      const dst = base.slice();
      reduceInto(dst.subarray(3, 3 + n), src.subarray(2, 2 + n), 'sum');
      results.push(dst);
    }
    const want = base.slice();
    for (let i = 0; i < n; i++) want[3 + i] = base[3 + i]! + src[2 + i]!;
    assert.deepEqual(results[1], want, 'JS loop');
    assert.deepEqual(results[0], want, `BLAS path (${blasLoaded ? 'loaded' : 'not loaded: JS fallback'})`);
  });

  it('sum float64 and int32 arrays with the unrolled loop, leaving elements past the end untouched', () => {
    for (const make of [(k: number) => new Float64Array(k), (k: number) => new Int32Array(k)]) {
      const dst = filled(make(4099), 3);
      const src = filled(make(4099), 4);
      const want = dst.slice();
      for (let i = 0; i < 4098; i++) want[i] = want[i]! + src[i]!;
      reduceInto(dst.subarray(0, 4098), src.subarray(0, 4098), 'avg');
      assert.deepEqual(dst, want, dst.constructor.name);
    }
  });
});
