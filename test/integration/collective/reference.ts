// Reference data and results for the collective tests: inputs are small integers, so every reduction is exact in
// float32/float64/int32 regardless of order, and the expected values are computed here independently of the backend.
export type DTypeName = 'float32' | 'float64' | 'int32';
export type Op = 'sum' | 'prod' | 'min' | 'max' | 'avg';
export type Arr = Float32Array | Float64Array | Int32Array;

export const DTYPES: readonly DTypeName[] = ['float32', 'float64', 'int32'];
export const OPS: readonly Op[] = ['sum', 'prod', 'min', 'max', 'avg'];

export function make(dtype: DTypeName, length: number): Arr {
  return dtype === 'float32'
    ? new Float32Array(length)
    : dtype === 'float64'
      ? new Float64Array(length)
      : new Int32Array(length);
}

/** Input element i of `rank` (in [-5, 5]; never 0 so prod keeps information). */
export function value(rank: number, i: number, salt = 0): number {
  const v = ((rank + 1) * 7 + i * 13 + salt * 3) % 11;
  return v === 5 ? 6 : v - 5;
}

export function input(dtype: DTypeName, length: number, rank: number, salt = 0): Arr {
  const a = make(dtype, length);
  for (let i = 0; i < length; i++) a[i] = value(rank, i, salt);
  return a;
}

export function reduced(dtype: DTypeName, length: number, worldSize: number, op: Op, salt = 0): Arr {
  const out = make(dtype, length);
  for (let i = 0; i < length; i++) {
    let acc = value(0, i, salt);
    for (let r = 1; r < worldSize; r++) {
      const v = value(r, i, salt);
      if (op === 'sum' || op === 'avg') acc += v;
      else if (op === 'prod') acc *= v;
      else if (op === 'min') acc = Math.min(acc, v);
      else acc = Math.max(acc, v);
    }
    out[i] = op === 'avg' ? (dtype === 'int32' ? Math.trunc(acc / worldSize) : acc / worldSize) : acc;
  }
  return out;
}

/** Index of the first difference, or -1. */
export function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return -2;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}
