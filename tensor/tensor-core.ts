// The Tensor class (storage, shape, autograd state) and its constructors. The differentiable operations are
// declared here and installed on the prototype by tensor.ts, which imports ops.ts: this module imports neither
// ops.ts nor autograd.ts, so the runtime imports go one way (tensor.ts → ops.ts → autograd.ts → tensor-core.ts).
// Import Tensor from tensor.ts (or index.ts), never from here, outside ops.ts and autograd.ts.
import {
  TensorError,
  type BackwardOptions,
  type GradNode,
  type GradReadyHook,
  type NestedArray,
  type RandomGenerator,
  type RandomOptions,
  type Shape,
  type TensorOptions,
} from './api.js';
import { defaultGenerator } from './generator.js';

export function numelOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** `dim` (negative counts from the end) as an index into `ndim` dims; INVALID_ARGUMENT naming `op` when out of range. */
export function normDim(dim: number, ndim: number, op: string): number {
  const d = dim < 0 ? dim + ndim : dim;
  if (!Number.isInteger(dim) || d < 0 || d >= Math.max(ndim, 1)) {
    throw new TensorError('INVALID_ARGUMENT', `${op}: dim ${dim} is out of range for a ${ndim}-d tensor`);
  }
  return d;
}

export function checkShape(shape: Shape, what = 'shape'): number[] {
  if (!Array.isArray(shape)) throw new TensorError('INVALID_ARGUMENT', `${what}: expected an array of dims`);
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new TensorError('INVALID_ARGUMENT', `${what} [${shape}]: dim ${d} is not a non-negative integer`);
    }
  }
  return [...shape];
}

export function stridesOf(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

/** A float32 tensor: contiguous row-major storage in `data`, plus autograd state. */
export class Tensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];
  /** Accumulated gradient of a leaf (after `backward`); null until then. */
  grad: Tensor | null = null;
  private _requiresGrad: boolean;
  private _gradFn: GradNode | null = null;
  private _hooks: GradReadyHook[] = [];

  /** Wraps `data` (no copy). `data.length` must equal the product of `shape`. */
  constructor(data: Float32Array, shape: Shape, opts: TensorOptions = {}) {
    const s = checkShape(shape);
    if (data.length !== numelOf(s)) {
      throw new TensorError(
        'SHAPE_MISMATCH',
        `Tensor: ${data.length} values do not fill shape [${s}] (${numelOf(s)} elements)`,
      );
    }
    this.data = data;
    this.shape = Object.freeze(s);
    this._requiresGrad = opts.requiresGrad ?? false;
  }

  get requiresGrad(): boolean {
    return this._requiresGrad;
  }
  set requiresGrad(v: boolean) {
    if (!v && this._gradFn !== null) {
      throw new TensorError(
        'INVALID_ARGUMENT',
        'requiresGrad = false on a non-leaf tensor: use detach() to get a tensor outside the graph',
      );
    }
    this._requiresGrad = v;
  }
  /** Sets requiresGrad and returns this (like `requires_grad_()`). */
  requiresGrad_(v = true): this {
    this.requiresGrad = v;
    return this;
  }
  /** The node that produced this tensor; null for leaves and tensors outside the graph. */
  get gradFn(): GradNode | null {
    return this._gradFn;
  }
  get isLeaf(): boolean {
    return this._gradFn === null;
  }
  get numel(): number {
    return this.data.length;
  }
  get ndim(): number {
    return this.shape.length;
  }
  get strides(): number[] {
    return stridesOf(this.shape);
  }
  /** Size of `dim` (negative counts from the end), or the whole shape. */
  size(): readonly number[];
  size(dim: number): number;
  size(dim?: number): number | readonly number[] {
    if (dim === undefined) return this.shape;
    return this.shape[normDim(dim, this.ndim, 'size')]!;
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.data.length !== 1) {
      throw new TensorError(
        'INVALID_ARGUMENT',
        `item(): tensor of shape [${this.shape}] has ${this.numel} elements, not 1`,
      );
    }
    return this.data[0]!;
  }
  /** The values, flat, as a plain array. */
  toArray(): number[] {
    return Array.from(this.data);
  }
  /** The values as nested arrays following `shape` (a number for a 0-d tensor). */
  tolist(): NestedArray {
    const rec = (dim: number, off: number): NestedArray => {
      if (dim === this.shape.length) return this.data[off]!;
      const stride = numelOf(this.shape.slice(dim + 1));
      return Array.from({ length: this.shape[dim]! }, (_, i) => rec(dim + 1, off + i * stride));
    };
    return rec(0, 0);
  }
  toString(): string {
    return `Tensor(shape=[${this.shape}]${this.requiresGrad ? ', requiresGrad' : ''})`;
  }

  /** A tensor sharing this storage, outside the graph. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape);
  }
  /**
   * `fn` runs once per backward pass when this leaf's gradient for the pass is fully accumulated (after it was
   * added to `.grad` or handed to `accumulate`). Returns a function that removes the hook.
   */
  registerGradReadyHook(fn: GradReadyHook): () => void {
    this._hooks.push(fn);
    return () => {
      this._hooks = this._hooks.filter((h) => h !== fn);
    };
  }

  /** @internal */
  _attachGradFn(node: GradNode): void {
    this._gradFn = node;
    this._requiresGrad = true;
  }
  /** @internal a tensor of the same shape over new storage. */
  _withData(data: Float32Array): Tensor {
    return new Tensor(data, this.shape);
  }
  /** @internal `adopt`: g's buffer is referenced nowhere else, so it may become `.grad` without a copy. */
  _accumulateGrad(g: Tensor, adopt = false): void {
    if (this.grad === null) {
      this.grad = new Tensor(adopt ? g.data : g.data.slice(), this.shape);
      return;
    }
    const d = this.grad.data;
    const s = g.data;
    for (let i = 0; i < d.length; i++) d[i] += s[i];
  }
  /** @internal */
  _fireGradReady(): Promise<unknown>[] | null {
    let started: Promise<unknown>[] | null = null;
    for (const h of this._hooks) {
      const r = h(this);
      if (r instanceof Promise) (started ??= []).push(r);
    }
    return started;
  }

  // In-place helpers (outside autograd; for optimizers, initialisation and loading).
  /** Copies `src`'s values into this tensor (same number of elements). */
  copy_(src: Tensor | Float32Array): this {
    const s = src instanceof Tensor ? src.data : src;
    if (s.length !== this.data.length) {
      throw new TensorError(
        'SHAPE_MISMATCH',
        `copy_: source has ${s.length} elements, target [${this.shape}] ${this.numel}`,
      );
    }
    this.data.set(s);
    return this;
  }
  fill_(value: number): this {
    this.data.fill(value);
    return this;
  }
  zero_(): this {
    return this.fill_(0);
  }
  uniform_(low = 0, high = 1, generator: RandomGenerator = defaultGenerator): this {
    for (let i = 0; i < this.data.length; i++) this.data[i] = low + (high - low) * generator.nextFloat();
    return this;
  }
  normal_(mean = 0, std = 1, generator: RandomGenerator = defaultGenerator): this {
    for (let i = 0; i < this.data.length; i++) this.data[i] = mean + std * generator.nextNormal();
    return this;
  }

  // Installed on the prototype by tensor.ts (each delegates to the function of the same name in ops.ts).
  /** Runs the backward pass from this tensor (see `backward` in autograd.ts). */
  declare backward: (grad?: Tensor, opts?: BackwardOptions) => Promise<void>;
  declare add: (o: Tensor | number) => Tensor;
  declare sub: (o: Tensor | number) => Tensor;
  declare mul: (o: Tensor | number) => Tensor;
  declare div: (o: Tensor | number) => Tensor;
  declare neg: () => Tensor;
  declare exp: () => Tensor;
  declare log: () => Tensor;
  declare pow: (e: number) => Tensor;
  declare sqrt: () => Tensor;
  declare abs: () => Tensor;
  declare relu: () => Tensor;
  declare sigmoid: () => Tensor;
  declare tanh: () => Tensor;
  declare matmul: (o: Tensor) => Tensor;
  declare sum: (dim?: number | readonly number[], keepdim?: boolean) => Tensor;
  declare mean: (dim?: number | readonly number[], keepdim?: boolean) => Tensor;
  declare max: {
    (): Tensor;
    (dim: number, keepdim?: boolean): { values: Tensor; indices: Tensor };
  };
  declare argmax: (dim?: number, keepdim?: boolean) => Tensor;
  declare reshape: (shape: Shape) => Tensor;
  declare view: (shape: Shape) => Tensor;
  declare flatten: (startDim?: number, endDim?: number) => Tensor;
  declare unsqueeze: (dim: number) => Tensor;
  declare squeeze: (dim?: number) => Tensor;
  declare transpose: (dim0: number, dim1: number) => Tensor;
  declare permute: (dims: readonly number[]) => Tensor;
  /** Transpose of a 2-D tensor. */
  declare t: () => Tensor;
  declare slice: (dim: number, start: number, end?: number) => Tensor;
  declare clone: () => Tensor;
  declare softmax: (dim: number) => Tensor;
  declare logSoftmax: (dim: number) => Tensor;
}

function inferShape(data: NestedArray): number[] {
  const shape: number[] = [];
  let cur: NestedArray = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    cur = (cur as readonly NestedArray[])[0] ?? 0;
  }
  return shape;
}

function flattenInto(data: NestedArray, shape: number[], dim: number, out: number[]): void {
  if (dim === shape.length) {
    if (typeof data !== 'number')
      throw new TensorError('INVALID_ARGUMENT', `tensor(): ragged nested array at depth ${dim}`);
    out.push(data);
    return;
  }
  if (!Array.isArray(data) || data.length !== shape[dim]) {
    throw new TensorError(
      'INVALID_ARGUMENT',
      `tensor(): ragged nested array: expected ${shape[dim]} elements at depth ${dim}, got ${Array.isArray(data) ? data.length : typeof data}`,
    );
  }
  for (const d of data as readonly NestedArray[]) flattenInto(d, shape, dim + 1, out);
}

/**
 * A tensor from values: a nested array (shape inferred), or flat values plus `shape`. Copies the values
 * (a Float32Array given with a shape is wrapped, not copied).
 */
export function tensor(
  data: NestedArray | Float32Array | ArrayLike<number>,
  shapeOrOpts?: Shape | TensorOptions,
  opts: TensorOptions = {},
): Tensor {
  // tensor(data, { requiresGrad }) is accepted as well as tensor(data, shape, { requiresGrad }).
  let shape: Shape | undefined;
  if (shapeOrOpts !== undefined && !Array.isArray(shapeOrOpts)) opts = shapeOrOpts as TensorOptions;
  else shape = shapeOrOpts as Shape | undefined;
  if (data instanceof Float32Array) return new Tensor(data, shape ?? [data.length], opts);
  if (typeof data === 'number') return new Tensor(Float32Array.of(data), shape ?? [], opts);
  if (shape !== undefined) {
    const flat = Array.isArray(data) && data.some((d) => Array.isArray(d)) ? nestedFlat(data as NestedArray) : data;
    return new Tensor(Float32Array.from(flat as ArrayLike<number>), shape, opts);
  }
  const inferred = inferShape(data as NestedArray);
  return new Tensor(Float32Array.from(nestedFlat(data as NestedArray)), inferred, opts);
}

function nestedFlat(data: NestedArray): number[] {
  const shape = inferShape(data);
  const out: number[] = [];
  flattenInto(data, shape, 0, out);
  return out;
}

export function scalar(value: number, opts: TensorOptions = {}): Tensor {
  return new Tensor(Float32Array.of(value), [], opts);
}
export function zeros(shape: Shape, opts: TensorOptions = {}): Tensor {
  return new Tensor(new Float32Array(numelOf(checkShape(shape))), shape, opts);
}
export function ones(shape: Shape, opts: TensorOptions = {}): Tensor {
  return full(shape, 1, opts);
}
export function full(shape: Shape, value: number, opts: TensorOptions = {}): Tensor {
  return new Tensor(new Float32Array(numelOf(checkShape(shape))).fill(value), shape, opts);
}
export function zerosLike(t: Tensor, opts: TensorOptions = {}): Tensor {
  return zeros(t.shape, opts);
}
export function onesLike(t: Tensor, opts: TensorOptions = {}): Tensor {
  return ones(t.shape, opts);
}
/** Standard normal values. */
export function randn(shape: Shape, opts: RandomOptions = {}): Tensor {
  const t = zeros(shape);
  t.normal_(0, 1, opts.generator ?? defaultGenerator);
  t.requiresGrad = opts.requiresGrad ?? false;
  return t;
}
/** Uniform values in [0, 1). */
export function rand(shape: Shape, opts: RandomOptions = {}): Tensor {
  const t = zeros(shape);
  t.uniform_(0, 1, opts.generator ?? defaultGenerator);
  t.requiresGrad = opts.requiresGrad ?? false;
  return t;
}
/** Uniform values in [low, high). */
export function uniform(shape: Shape, low: number, high: number, opts: RandomOptions = {}): Tensor {
  const t = zeros(shape);
  t.uniform_(low, high, opts.generator ?? defaultGenerator);
  t.requiresGrad = opts.requiresGrad ?? false;
  return t;
}
/** 0, 1, ..., n-1 (as float32). */
export function arange(n: number): Tensor {
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = i;
  return new Tensor(d, [n]);
}
