// Shared toy data for the RPC examples: two Gaussian blobs in 2-D (class 0 around (-1,-1), class 1 around (1,1)).
import { Generator, randn, tensor, type Tensor } from '../../tensor/index.js';

export function blobs(n: number, seed: number): { x: Tensor; y: Float32Array } {
  const g = new Generator(seed);
  const noise = randn([n, 2], { generator: g }).data;
  const x = new Float32Array(n * 2);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % 2;
    y[i] = c;
    const m = c === 0 ? -1 : 1;
    x[2 * i] = m + 0.7 * noise[2 * i]!;
    x[2 * i + 1] = m + 0.7 * noise[2 * i + 1]!;
  }
  return { x: tensor(x, [n, 2]), y };
}

/** Rows [start, end) of a [n, d] tensor and its labels. */
export function batch(x: Tensor, y: Float32Array, start: number, end: number): { x: Tensor; y: Float32Array } {
  const d = x.shape[1]!;
  return { x: tensor(x.data.slice(start * d, end * d), [end - start, d]), y: y.slice(start, end) };
}

export function accuracy(logits: Tensor, y: Float32Array): number {
  const c = logits.shape[1]!;
  let ok = 0;
  for (let i = 0; i < y.length; i++) {
    let best = 0;
    for (let j = 1; j < c; j++) if (logits.data[i * c + j]! > logits.data[i * c + best]!) best = j;
    if (best === y[i]) ok++;
  }
  return ok / y.length;
}
