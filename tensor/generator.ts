// Seedable pseudo random numbers: xoshiro128** seeded through splitmix32. Deterministic across platforms.
import { TensorError, type RandomGenerator } from './api.js';

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Generator implements RandomGenerator {
  private s = new Uint32Array(4);
  private spareNormal: number | null = null;

  constructor(seed = 0) {
    this.manualSeed(seed);
  }

  manualSeed(seed: number): void {
    if (!Number.isFinite(seed)) {
      throw new TensorError('INVALID_ARGUMENT', `manualSeed(${seed}): the seed must be a finite number`);
    }
    // Fold the high bits in so that seeds above 2^32 still differ.
    const next = splitmix32((seed >>> 0) ^ Math.floor(seed / 4294967296));
    for (let i = 0; i < 4; i++) this.s[i] = next();
    if ((this.s[0]! | this.s[1]! | this.s[2]! | this.s[3]!) === 0) this.s[0] = 1;
    this.spareNormal = null;
  }

  /** Next 32-bit unsigned integer. */
  nextUint32(): number {
    const s = this.s;
    const s1 = s[1]!;
    const r = Math.imul(rotl(Math.imul(s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (s1 << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s1;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return r;
  }

  nextFloat(): number {
    // 24 random bits → exactly representable in float32, strictly below 1.
    return (this.nextUint32() >>> 8) / 16777216;
  }

  nextInt(bound: number): number {
    if (!Number.isInteger(bound) || bound <= 0) {
      throw new TensorError('INVALID_ARGUMENT', `nextInt(${bound}): bound must be a positive integer`);
    }
    return Math.floor(((this.nextUint32() * 4294967296 + this.nextUint32()) / 18446744073709551616) * bound);
  }

  nextNormal(): number {
    if (this.spareNormal !== null) {
      const v = this.spareNormal;
      this.spareNormal = null;
      return v;
    }
    let u1 = this.nextFloat();
    while (u1 === 0) u1 = this.nextFloat();
    const u2 = this.nextFloat();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spareNormal = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  getState(): number[] {
    return [...this.s, this.spareNormal === null ? NaN : this.spareNormal];
  }

  setState(state: readonly number[]): void {
    if (state.length !== 5) {
      throw new TensorError('INVALID_ARGUMENT', `Generator.setState: expected 5 numbers, got ${state.length}`);
    }
    for (let i = 0; i < 4; i++) this.s[i] = state[i]! >>> 0;
    this.spareNormal = Number.isNaN(state[4]) ? null : state[4]!;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The generator used when an op is given none. */
export const defaultGenerator = new Generator(0);

/** Reseeds the default generator (like `torch.manual_seed`). */
export function manualSeed(seed: number): void {
  defaultGenerator.manualSeed(seed);
}

/** A random permutation of 0..n-1 (Fisher–Yates). */
export function randperm(n: number, generator: RandomGenerator = defaultGenerator): number[] {
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = generator.nextInt(i + 1);
    const tmp = out[i]!;
    out[i] = out[j]!;
    out[j] = tmp;
  }
  return out;
}

/** MT19937, seeded like PyTorch's CPU generator (`torch.Generator().manual_seed(seed)`). */
export class Mt19937 {
  private readonly mt = new Uint32Array(624);
  private index = 624;

  constructor(seed: number) {
    const mt = this.mt;
    mt[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      // 1812433253 * prev + i, modulo 2^32, without losing precision.
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  /** Next 32-bit output (what PyTorch's `generator->random()` returns). */
  nextUint32(): number {
    const mt = this.mt;
    if (this.index >= 624) {
      for (let i = 0; i < 624; i++) {
        const y = (mt[i]! & 0x80000000) | (mt[(i + 1) % 624]! & 0x7fffffff);
        mt[i] = mt[(i + 397) % 624]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.index = 0;
    }
    let y = mt[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

/**
 * `torch.randperm(n, generator=torch.Generator().manual_seed(seed))` on the CPU, bit for bit (PyTorch 1.13's
 * algorithm: swap position i with i + random() % (n - i)). Used by DistributedSampler so that shards match
 * PyTorch's for the same seed and epoch.
 */
export function torchRandperm(n: number, seed: number): number[] {
  const out = Array.from({ length: n }, (_, i) => i);
  const g = new Mt19937(seed);
  for (let i = 0; i < n - 1; i++) {
    const z = g.nextUint32() % (n - i);
    const tmp = out[i]!;
    out[i] = out[z + i]!;
    out[z + i] = tmp;
  }
  return out;
}
