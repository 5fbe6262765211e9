// Losses and functional layers.
import { TensorError, type RandomGenerator, type Reduction } from '../api.js';
import { record } from '../autograd.js';
import { defaultGenerator } from '../generator.js';
import * as ops from '../ops.js';
import { Tensor } from '../tensor.js';

export interface LossOptions {
  readonly reduction?: Reduction;
}

function targetIndices(target: Tensor | ArrayLike<number>, n: number, c: number, op: string): Int32Array {
  const src = target instanceof Tensor ? target.data : target;
  if (target instanceof Tensor && target.ndim !== 1) {
    throw new TensorError('SHAPE_MISMATCH', `${op}: target must be 1-D class indices, got shape [${target.shape}]`);
  }
  if (src.length !== n) {
    throw new TensorError('SHAPE_MISMATCH', `${op}: ${src.length} targets for a batch of ${n}`);
  }
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = src[i]!;
    if (!Number.isInteger(v) || v < 0 || v >= c) {
      throw new TensorError('INVALID_ARGUMENT', `${op}: target ${i} is ${v}, expected a class index in [0, ${c})`);
    }
    out[i] = v;
  }
  return out;
}

/** Negative log likelihood of class `target[i]` given log-probabilities `logProbs` [N, C]. */
export function nllLoss(logProbs: Tensor, target: Tensor | ArrayLike<number>, opts: LossOptions = {}): Tensor {
  const reduction = opts.reduction ?? 'mean';
  if (logProbs.ndim !== 2) {
    throw new TensorError('SHAPE_MISMATCH', `nllLoss: input must be [N, C], got [${logProbs.shape}]`);
  }
  const [n, c] = logProbs.shape as [number, number];
  const t = targetIndices(target, n, c, 'nllLoss');
  const x = logProbs.data;
  let out: Tensor;
  if (reduction === 'none') {
    const d = new Float32Array(n);
    for (let i = 0; i < n; i++) d[i] = -x[i * c + t[i]!]!;
    out = new Tensor(d, [n]);
  } else {
    let s = 0;
    for (let i = 0; i < n; i++) s -= x[i * c + t[i]!]!;
    out = new Tensor(Float32Array.of(reduction === 'mean' ? s / n : s), []);
  }
  return record(out, 'NllLossBackward', [logProbs], (g) => {
    const gi = new Float32Array(n * c);
    for (let i = 0; i < n; i++) {
      const gv = reduction === 'none' ? g.data[i]! : reduction === 'mean' ? g.data[0]! / n : g.data[0]!;
      gi[i * c + t[i]!] = -gv;
    }
    return [new Tensor(gi, logProbs.shape)];
  });
}

/** Cross-entropy of raw scores `logits` [N, C] against class indices (PyTorch's F.cross_entropy). */
export function crossEntropy(logits: Tensor, target: Tensor | ArrayLike<number>, opts: LossOptions = {}): Tensor {
  return nllLoss(ops.logSoftmax(logits, 1), target, opts);
}

/** Mean squared error (element-wise, shapes broadcast). */
export function mseLoss(input: Tensor, target: Tensor, opts: LossOptions = {}): Tensor {
  const reduction = opts.reduction ?? 'mean';
  const d = ops.sub(input, target);
  const sq = ops.mul(d, d);
  if (reduction === 'none') return sq;
  return reduction === 'sum' ? ops.sum(sq) : ops.mean(sq);
}

/** Inverted dropout: zeroes with probability p while training, scales survivors by 1/(1-p). */
export function dropout(
  x: Tensor,
  p: number,
  training: boolean,
  generator: RandomGenerator = defaultGenerator,
): Tensor {
  if (!training || p === 0) return x;
  if (p === 1) return ops.mul(x, 0);
  const mask = new Float32Array(x.numel);
  const scale = 1 / (1 - p);
  for (let i = 0; i < mask.length; i++) mask[i] = generator.nextFloat() < p ? 0 : scale;
  return ops.mul(x, new Tensor(mask, x.shape));
}

/** Fraction of rows whose argmax equals the target class. */
export function accuracy(logits: Tensor, target: Tensor | ArrayLike<number>): number {
  const pred = ops.argmax(logits, 1).data;
  const t = target instanceof Tensor ? target.data : target;
  let hit = 0;
  for (let i = 0; i < pred.length; i++) if (pred[i] === t[i]) hit++;
  return pred.length === 0 ? 0 : hit / pred.length;
}
