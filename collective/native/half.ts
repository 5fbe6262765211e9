// float16 / bfloat16 conversions for host buffers (NCCL takes them as 16-bit words in a Uint16Array).
// Round to nearest, ties to even, like CUDA's __float2half_rn / __float2bfloat16_rn.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The IEEE 754 binary16 bits nearest to `x`. */
export function toFloat16(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow → ±0
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1) === 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++; // a carry into the exponent is still correct
  return sign | half;
}

/** The number a binary16 bit pattern holds. */
export function fromFloat16(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** The bfloat16 bits nearest to `x`. */
export function toBfloat16(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) return ((bits >>> 16) | 0x40) & 0xffff; // nan
  const rounding = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + rounding) >>> 16) & 0xffff;
}

/** The number a bfloat16 bit pattern holds. */
export function fromBfloat16(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0]!;
}

/** Packs numbers into 16-bit words of the given format. */
export function packHalf(values: ArrayLike<number>, dtype: 'float16' | 'bfloat16'): Uint16Array {
  const out = new Uint16Array(values.length);
  const f = dtype === 'float16' ? toFloat16 : toBfloat16;
  for (let i = 0; i < values.length; i++) out[i] = f(values[i]!);
  return out;
}

/** Unpacks 16-bit words of the given format into float32. */
export function unpackHalf(words: Uint16Array, dtype: 'float16' | 'bfloat16'): Float32Array {
  const out = new Float32Array(words.length);
  const f = dtype === 'float16' ? fromFloat16 : fromBfloat16;
  for (let i = 0; i < words.length; i++) out[i] = f(words[i]!);
  return out;
}
