// The tensor contract: what the DDP, elastic-state and RPC code (and user training scripts) rely on.
//
// Tensors are float32, stored contiguous row-major in a Float32Array (`data`). `reshape`/`view` share storage;
// `transpose`, `slice` and `concat` copy (results are always contiguous, so `strides` is the row-major stride of
// `shape`). Reverse-mode autograd builds a graph of `GradNode`s; a node's backward may return a Promise, and the
// engine (`backward()`) awaits it, so distributed autograd can wait on the network inside a backward pass.
import type { Blas as NativeBlas } from '../collective/native/blas.js';
import type { Tensor } from './tensor.js';

export type Shape = readonly number[];

/** Nested numeric arrays accepted by `tensor()`. */
export type NestedArray = number | readonly NestedArray[];

export interface TensorOptions {
  readonly requiresGrad?: boolean;
}

export interface RandomOptions extends TensorOptions {
  /** Seedable source of randomness; default the global generator (`manualSeed` reseeds it). */
  readonly generator?: RandomGenerator;
}

/** A seedable pseudo random generator (xoshiro128**; not bit-compatible with PyTorch's mt19937). */
export interface RandomGenerator {
  /** Uniform in [0, 1). */
  nextFloat(): number;
  /** Uniform integer in [0, bound). */
  nextInt(bound: number): number;
  /** Standard normal. */
  nextNormal(): number;
  manualSeed(seed: number): void;
  /** Opaque state for checkpoints; `setState(getState())` resumes the same sequence. */
  getState(): number[];
  setState(state: readonly number[]): void;
}

/** Gradient of one node's output → gradients of its inputs (null where an input needs none). */
export type BackwardResult = (Tensor | null)[];

/**
 * One node of the autograd graph: the operation that produced a tensor (`tensor.gradFn`). `inputs` are the tensors
 * it was computed from, so a graph can be walked: `t.gradFn.inputs[i].gradFn ...`; leaves have `gradFn === null`.
 */
export interface GradNode {
  readonly name: string;
  readonly inputs: readonly Tensor[];
  /** May return a Promise: the engine awaits it before the node's inputs are processed. */
  backward(gradOutput: Tensor): BackwardResult | Promise<BackwardResult>;
  /** True once a backward pass without `retainGraph` has freed the node's saved tensors. */
  readonly released: boolean;
}

export interface BackwardOptions {
  /** Keep saved tensors so that the graph can be traversed again (default false). */
  readonly retainGraph?: boolean;
  /**
   * When given, leaf gradients are handed to it instead of being added to `leaf.grad` (distributed autograd
   * accumulates into its context). Grad-ready hooks still fire after it returns.
   */
  readonly accumulate?: (leaf: Tensor, grad: Tensor) => void;
}

/** A user-defined differentiable function (RPC inserts send/recv nodes with it). */
export interface CustomFunctionSpec {
  readonly name: string;
  /** Runs with gradient recording disabled; must return a new tensor. */
  forward(inputs: readonly Tensor[]): Tensor;
  /** Returns one gradient (or null) per input, in order; may be async. */
  backward(gradOutput: Tensor): BackwardResult | Promise<BackwardResult>;
  /**
   * Make the output require grad even when no input does (a distributed-autograd recv node has no local
   * inputs but must still be reached by backward). Default false.
   */
  readonly outputRequiresGrad?: boolean;
}

/**
 * Called once per backward pass when a leaf's gradient for the pass is complete. A hook that starts asynchronous work (DDP launching a
 * bucket allreduce) returns its promise: the engine does not await it, but while any such promise is pending it
 * yields one event-loop turn (a macrotask) after each node, so socket I/O progresses during the rest of backward.
 * Any other return value is ignored.
 */
export type GradReadyHook = (leaf: Tensor) => unknown;

export type Reduction = 'mean' | 'sum' | 'none';

export type TensorErrorCode =
  | 'SHAPE_MISMATCH'
  | 'INVALID_ARGUMENT'
  | 'NO_GRAD'
  | 'GRAPH_FREED'
  | 'STATE_DICT_MISMATCH'
  | 'CHECKPOINT_CORRUPT'
  | 'CHECKPOINT_IO';

/** Every error the tensor library throws. `code` is the closed set above. */
export class TensorError extends Error {
  readonly code: TensorErrorCode;
  /** The tensor (state-dict key, checkpoint entry) the error is about, when there is one. */
  readonly tensorName: string | undefined;
  constructor(code: TensorErrorCode, message: string, opts: { tensorName?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'TensorError';
    this.code = code;
    this.tensorName = opts.tensorName;
  }
}

/**
 * Row-major BLAS, as `collective/native/blas.js` exposes it (cblas_sgemm semantics). saxpy/sscal are optional here:
 * vector paths fall back to JS without them.
 */
export type Blas = Pick<NativeBlas, 'name' | 'sgemm'> & Partial<Pick<NativeBlas, 'saxpy' | 'sscal'>>;
