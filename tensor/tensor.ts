// The Tensor class with its operations: the class and its constructors live in tensor-core.ts; this module installs
// the differentiable operations of ops.ts (and `backward` of autograd.ts) on its prototype. ops.ts and autograd.ts
// import tensor-core.ts, never this module, so the runtime imports have no cycle; importing Tensor from here (or
// index.ts) guarantees that the methods are there.
import { TensorError, type BackwardOptions, type Shape } from './api.js';
import { backward as runBackward } from './autograd.js';
import * as ops from './ops.js';
import { Tensor } from './tensor-core.js';

export * from './tensor-core.js';

type OpMethods = Pick<
  Tensor,
  | 'backward'
  | 'add'
  | 'sub'
  | 'mul'
  | 'div'
  | 'neg'
  | 'exp'
  | 'log'
  | 'pow'
  | 'sqrt'
  | 'abs'
  | 'relu'
  | 'sigmoid'
  | 'tanh'
  | 'matmul'
  | 'sum'
  | 'mean'
  | 'max'
  | 'argmax'
  | 'reshape'
  | 'view'
  | 'flatten'
  | 'unsqueeze'
  | 'squeeze'
  | 'transpose'
  | 'permute'
  | 't'
  | 'slice'
  | 'clone'
  | 'softmax'
  | 'logSoftmax'
>;

const methods: OpMethods & ThisType<Tensor> = {
  backward(grad?: Tensor, opts?: BackwardOptions): Promise<void> {
    return runBackward([this], grad === undefined ? undefined : [grad], opts);
  },
  add(o: Tensor | number): Tensor {
    return ops.add(this, o);
  },
  sub(o: Tensor | number): Tensor {
    return ops.sub(this, o);
  },
  mul(o: Tensor | number): Tensor {
    return ops.mul(this, o);
  },
  div(o: Tensor | number): Tensor {
    return ops.div(this, o);
  },
  neg(): Tensor {
    return ops.neg(this);
  },
  exp(): Tensor {
    return ops.exp(this);
  },
  log(): Tensor {
    return ops.log(this);
  },
  pow(e: number): Tensor {
    return ops.pow(this, e);
  },
  sqrt(): Tensor {
    return ops.sqrt(this);
  },
  abs(): Tensor {
    return ops.abs(this);
  },
  relu(): Tensor {
    return ops.relu(this);
  },
  sigmoid(): Tensor {
    return ops.sigmoid(this);
  },
  tanh(): Tensor {
    return ops.tanh(this);
  },
  matmul(o: Tensor): Tensor {
    return ops.matmul(this, o);
  },
  sum(dim?: number | readonly number[], keepdim = false): Tensor {
    return ops.sum(this, dim, keepdim);
  },
  mean(dim?: number | readonly number[], keepdim = false): Tensor {
    return ops.mean(this, dim, keepdim);
  },
  max: function (this: Tensor, dim?: number, keepdim?: boolean): Tensor | { values: Tensor; indices: Tensor } {
    return dim === undefined ? ops.maxAll(this) : ops.max(this, dim, keepdim ?? false);
  } as Tensor['max'],
  argmax(dim?: number, keepdim = false): Tensor {
    return ops.argmax(this, dim, keepdim);
  },
  reshape(shape: Shape): Tensor {
    return ops.reshape(this, shape);
  },
  view(shape: Shape): Tensor {
    return ops.reshape(this, shape);
  },
  flatten(startDim = 0, endDim = -1): Tensor {
    return ops.flatten(this, startDim, endDim);
  },
  unsqueeze(dim: number): Tensor {
    return ops.unsqueeze(this, dim);
  },
  squeeze(dim?: number): Tensor {
    return ops.squeeze(this, dim);
  },
  transpose(dim0: number, dim1: number): Tensor {
    return ops.transpose(this, dim0, dim1);
  },
  permute(dims: readonly number[]): Tensor {
    return ops.permute(this, dims);
  },
  t(): Tensor {
    if (this.ndim !== 2) throw new TensorError('INVALID_ARGUMENT', `t(): expected a 2-D tensor, got [${this.shape}]`);
    return ops.transpose(this, 0, 1);
  },
  slice(dim: number, start: number, end?: number): Tensor {
    return ops.slice(this, dim, start, end);
  },
  clone(): Tensor {
    return ops.clone(this);
  },
  softmax(dim: number): Tensor {
    return ops.softmax(this, dim);
  },
  logSoftmax(dim: number): Tensor {
    return ops.logSoftmax(this, dim);
  },
};

// Non-enumerable, writable and configurable, as class methods are.
for (const [name, value] of Object.entries(methods)) {
  Object.defineProperty(Tensor.prototype, name, { value, writable: true, configurable: true, enumerable: false });
}
