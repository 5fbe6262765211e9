import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadAddon, ShmDType, ShmOp } from '../../../collective/native/addon.js';

// The vectorised kernel of the shared-memory plane against a scalar reference, for every dtype and op, with lengths
// around the vector width and the 4 KiB block, 1 to 8 sources, NaN propagation and in-place use (dst = srcs[0]).
const addon = loadAddon();
const skip = addon.ok ? false : `native addon not built: ${addon.reason}`;

type Arr = Float32Array | Float64Array | Int32Array;
const ctor = { float32: Float32Array, float64: Float64Array, int32: Int32Array } as const;
const reference = (op: keyof typeof ShmOp, xs: number[], n: number, isInt: boolean): number => {
  let acc = xs[0]!;
  for (const x of xs.slice(1)) {
    if (op === 'sum' || op === 'avg') acc += x;
    else if (op === 'prod') acc *= x;
    else if (op === 'min') acc = x < acc || x !== x ? x : acc;
    else acc = x > acc || x !== x ? x : acc;
  }
  return op === 'avg' ? (isInt ? Math.trunc(acc / n) : acc / n) : acc;
};

describe('shared-memory reduction kernel', { skip }, () => {
  const a = addon.ok ? addon.addon : null;
  for (const dtype of ['float32', 'float64', 'int32'] as const) {
    for (const op of ['sum', 'prod', 'min', 'max', 'avg'] as const) {
      it(`${dtype} ${op} matches the scalar reference for 1–8 sources and awkward lengths`, () => {
        for (const nsrc of [1, 2, 3, 8]) {
          for (const len of [0, 1, 15, 16, 17, 1023, 1024, 1025, 5000]) {
            const C = ctor[dtype];
            const srcs: Arr[] = Array.from(
              { length: nsrc },
              (_, q) => new C(Array.from({ length: len }, (_, i) => ((i * 7 + q * 5) % 9) - 4 || 3)),
            );
            if (dtype !== 'int32' && len > 17) srcs[nsrc - 1]![17] = NaN;
            const dst = new C(len);
            a!.shmReduce(ShmDType[dtype], ShmOp[op], dst, srcs, nsrc);
            for (let i = 0; i < len; i++) {
              const want = reference(
                op,
                srcs.map((s) => s[i]!),
                nsrc,
                dtype === 'int32',
              );
              const got = dst[i]!;
              const same = Number.isNaN(want) ? Number.isNaN(got) : got === new C([want])[0];
              assert.ok(same, `${dtype} ${op} nsrc=${nsrc} len=${len} i=${i}: got ${got}, want ${want}`);
            }
            // In place: dst is the first source.
            const first = srcs[0]!.slice() as Arr;
            a!.shmReduce(ShmDType[dtype], ShmOp[op], first, [first, ...srcs.slice(1)], nsrc);
            assert.deepEqual(first, dst);
          }
        }
      });
    }
  }
});
