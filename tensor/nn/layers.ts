// Standard layers. Initialisation follows PyTorch's defaults (Linear: kaiming_uniform_(a=√5) on the weight,
// i.e. U(-1/√fan_in, 1/√fan_in), and the same bound for the bias), drawn from a seedable generator.
import { TensorError, type RandomGenerator } from '../api.js';
import { noGrad } from '../autograd.js';
import { defaultGenerator } from '../generator.js';
import * as ops from '../ops.js';
import { Tensor, uniform } from '../tensor.js';
import { conv2d, type Conv2dOptions } from '../conv.js';
import { dropout } from './functional.js';
import { Module } from './module.js';

export interface LinearOptions {
  readonly bias?: boolean;
  readonly generator?: RandomGenerator;
}

export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    opts: LinearOptions = {},
  ) {
    super();
    for (const [what, v] of [
      ['inFeatures', inFeatures],
      ['outFeatures', outFeatures],
    ] as const) {
      if (!Number.isInteger(v) || v <= 0) {
        throw new TensorError('INVALID_ARGUMENT', `Linear: ${what} ${v} must be a positive integer`);
      }
    }
    const g = opts.generator ?? defaultGenerator;
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = uniform([outFeatures, inFeatures], -bound, bound, { generator: g, requiresGrad: true });
    this.bias =
      opts.bias === false ? null : uniform([outFeatures], -bound, bound, { generator: g, requiresGrad: true });
  }
  forward(x: Tensor): Tensor {
    return ops.linear(x, this.weight, this.bias);
  }
}

/** 2-D convolution layer (groups 1, no dilation), PyTorch's default init: U(±1/√(C·kh·kw)). */
export class Conv2d extends Module {
  weight: Tensor;
  bias: Tensor | null;
  readonly stride: Conv2dOptions['stride'];
  readonly padding: Conv2dOptions['padding'];
  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    kernelSize: number | readonly [number, number],
    opts: Conv2dOptions & { bias?: boolean; generator?: RandomGenerator } = {},
  ) {
    super();
    const [kh, kw] = typeof kernelSize === 'number' ? [kernelSize, kernelSize] : kernelSize;
    for (const [what, v] of [
      ['inChannels', inChannels],
      ['outChannels', outChannels],
      ['kernel height', kh],
      ['kernel width', kw],
    ] as const) {
      if (!Number.isInteger(v) || v <= 0)
        throw new TensorError('INVALID_ARGUMENT', `Conv2d: ${what} ${v} must be a positive integer`);
    }
    const g = opts.generator ?? defaultGenerator;
    const bound = 1 / Math.sqrt(inChannels * kh * kw);
    this.weight = uniform([outChannels, inChannels, kh, kw], -bound, bound, { generator: g, requiresGrad: true });
    this.bias =
      opts.bias === false ? null : uniform([outChannels], -bound, bound, { generator: g, requiresGrad: true });
    this.stride = opts.stride;
    this.padding = opts.padding;
  }
  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, { stride: this.stride, padding: this.padding });
  }
}

export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return ops.relu(x);
  }
}

export class Sigmoid extends Module {
  forward(x: Tensor): Tensor {
    return ops.sigmoid(x);
  }
}

export class Tanh extends Module {
  forward(x: Tensor): Tensor {
    return ops.tanh(x);
  }
}

export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}

export class Flatten extends Module {
  constructor(
    readonly startDim = 1,
    readonly endDim = -1,
  ) {
    super();
  }
  forward(x: Tensor): Tensor {
    return ops.flatten(x, this.startDim, this.endDim);
  }
}

/** Zeroes elements with probability p while training and scales the rest by 1/(1-p); identity in eval mode. */
export class Dropout extends Module {
  readonly #generator: RandomGenerator;
  constructor(
    readonly p = 0.5,
    opts: { generator?: RandomGenerator } = {},
  ) {
    super();
    if (!(p >= 0 && p <= 1)) throw new TensorError('INVALID_ARGUMENT', `Dropout: p ${p} must be in [0, 1]`);
    this.#generator = opts.generator ?? defaultGenerator;
  }
  forward(x: Tensor): Tensor {
    return dropout(x, this.p, this.training, this.#generator);
  }
}

/** Runs modules in order; they are registered as children "0", "1", ... */
export class Sequential extends Module {
  readonly #modules: Module[];
  constructor(...modules: Module[]) {
    super();
    this.#modules = modules;
    modules.forEach((m, i) => {
      if (!(m instanceof Module)) throw new TensorError('INVALID_ARGUMENT', `Sequential: item ${i} is not a Module`);
      (this as unknown as Record<string, Module>)[String(i)] = m;
    });
  }
  get length(): number {
    return this.#modules.length;
  }
  at(i: number): Module {
    const m = this.#modules.at(i);
    if (m === undefined)
      throw new TensorError('INVALID_ARGUMENT', `Sequential.at(${i}): only ${this.#modules.length} modules`);
    return m;
  }
  /**
   * Runs the modules in order. A Linear directly followed by a ReLU (both exactly those classes, not subclasses)
   * runs as one fused `linearRelu` node: same values and gradients, one output buffer and one elementwise pass less.
   */
  forward(x: Tensor): Tensor {
    let y = x;
    const mods = this.#modules;
    for (let i = 0; i < mods.length; i++) {
      const m = mods[i]!;
      const next = mods[i + 1];
      if (m.constructor === Linear && next !== undefined && next.constructor === ReLU) {
        const lin = m as Linear;
        y = ops.linearRelu(y, lin.weight, lin.bias);
        i += 1;
      } else y = m.forward(y);
    }
    return y;
  }
}

/** Re-initialises a tensor in place with U(-bound, bound) (outside autograd). */
export function uniformInit_(t: Tensor, bound: number, generator: RandomGenerator = defaultGenerator): Tensor {
  return noGrad(() => t.uniform_(-bound, bound, generator));
}

/** Kaiming (He) uniform init in place, PyTorch's `kaiming_uniform_` with the given negative slope `a` (leaky ReLU). */
export function kaimingUniform_(t: Tensor, a = 0, generator: RandomGenerator = defaultGenerator): Tensor {
  if (t.ndim < 2) throw new TensorError('INVALID_ARGUMENT', `kaimingUniform_: needs at least 2 dims, got [${t.shape}]`);
  const fanIn = t.numel / t.shape[0]!;
  const gain = Math.sqrt(2 / (1 + a * a));
  return uniformInit_(t, gain * Math.sqrt(3 / fanIn), generator);
}
