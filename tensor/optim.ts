// Optimizers with PyTorch 1.13's update rules (SGD with momentum/dampening/Nesterov/weight decay; Adam with
// bias correction and L2 weight decay). They update `param.data` in place, outside autograd.
import { TensorError } from './api.js';
import { vectorOps, type VectorOps } from './sgemm.js';
import { Tensor } from './tensor.js';

export interface OptimizerStateDict {
  /** Per-parameter state, keyed by the parameter's index in the optimizer's list (as PyTorch does). */
  readonly state: Record<string, Record<string, Tensor | number>>;
  readonly paramGroups: Record<string, number | boolean | number[]>[];
}

export abstract class Optimizer<O extends Record<string, number | boolean> = Record<string, number | boolean>> {
  readonly params: Tensor[];
  /** Hyper-parameters; mutable (learning-rate schedules change `options.lr`). */
  options: O;
  protected state = new Map<Tensor, Record<string, Tensor | number>>();

  constructor(params: Iterable<Tensor>, options: O) {
    this.params = [...params];
    if (this.params.length === 0)
      throw new TensorError('INVALID_ARGUMENT', `${this.constructor.name}: got an empty parameter list`);
    this.params.forEach((p, i) => {
      if (!(p instanceof Tensor))
        throw new TensorError('INVALID_ARGUMENT', `${this.constructor.name}: parameter ${i} is not a Tensor`);
    });
    for (const [k, v] of Object.entries(options)) {
      if (typeof v === 'number' && (!Number.isFinite(v) || v < 0)) {
        throw new TensorError('INVALID_ARGUMENT', `${this.constructor.name}: ${k} ${v} must be a finite number ≥ 0`);
      }
    }
    this.options = options;
  }

  get lr(): number {
    return this.options.lr as number;
  }
  set lr(v: number) {
    (this.options as Record<string, number | boolean>).lr = v;
  }

  /** Clears gradients (to null, like PyTorch's default set_to_none=True). */
  zeroGrad(): void {
    for (const p of this.params) p.grad = null;
  }

  /** Applies one update to every parameter that has a gradient. */
  abstract step(): void;

  stateDict(): OptimizerStateDict {
    const state: Record<string, Record<string, Tensor | number>> = {};
    this.params.forEach((p, i) => {
      const s = this.state.get(p);
      if (s === undefined) return;
      const copy: Record<string, Tensor | number> = {};
      for (const [k, v] of Object.entries(s)) copy[k] = v instanceof Tensor ? new Tensor(v.data.slice(), v.shape) : v;
      state[String(i)] = copy;
    });
    return { state, paramGroups: [{ ...this.options, params: this.params.map((_, i) => i) }] };
  }

  /** Restores state saved by `stateDict()` of an optimizer over same-shaped parameters. */
  loadStateDict(sd: OptimizerStateDict): void {
    const group = sd.paramGroups?.[0];
    if (group === undefined || sd.state === undefined) {
      throw new TensorError(
        'STATE_DICT_MISMATCH',
        `${this.constructor.name}.loadStateDict: expected { state, paramGroups }`,
      );
    }
    const ids = group.params;
    if (Array.isArray(ids) && ids.length !== this.params.length) {
      throw new TensorError(
        'STATE_DICT_MISMATCH',
        `${this.constructor.name}.loadStateDict: saved for ${ids.length} parameters, this optimizer has ${this.params.length}`,
      );
    }
    const next = new Map<Tensor, Record<string, Tensor | number>>();
    for (const [key, s] of Object.entries(sd.state)) {
      const p = this.params[Number(key)];
      if (p === undefined) {
        throw new TensorError(
          'STATE_DICT_MISMATCH',
          `${this.constructor.name}.loadStateDict: state for parameter ${key}, which does not exist`,
          { tensorName: key },
        );
      }
      const copy: Record<string, Tensor | number> = {};
      for (const [k, v] of Object.entries(s)) {
        if (v instanceof Tensor) {
          if (v.numel !== p.numel) {
            throw new TensorError(
              'STATE_DICT_MISMATCH',
              `${this.constructor.name}.loadStateDict: state "${key}.${k}" has shape [${v.shape}], parameter ${key} has [${p.shape}]`,
              { tensorName: `${key}.${k}` },
            );
          }
          copy[k] = new Tensor(v.data.slice(), p.shape);
        } else copy[k] = v;
      }
      next.set(p, copy);
    }
    const { params: _ids, ...hyper } = group;
    this.options = { ...this.options, ...hyper } as O;
    this.state = next;
  }
}

export interface SgdOptions extends Record<string, number | boolean> {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}

export class SGD extends Optimizer<SgdOptions> {
  constructor(params: Iterable<Tensor>, opts: Partial<SgdOptions> & { lr: number }) {
    super(params, { momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, ...opts });
    if (this.options.nesterov && (this.options.momentum <= 0 || this.options.dampening !== 0)) {
      throw new TensorError('INVALID_ARGUMENT', 'SGD: nesterov needs momentum > 0 and dampening 0');
    }
  }

  step(): void {
    const { lr, momentum, dampening, weightDecay, nesterov } = this.options;
    for (const p of this.params) {
      if (p.grad === null) continue;
      let s = this.state.get(p);
      if (momentum !== 0 && s === undefined) {
        // First step: the buffer starts as the (decayed) gradient itself, as in PyTorch.
        const buf = p.grad.data.slice();
        if (weightDecay !== 0) sgdDecay(buf, p.data, weightDecay);
        s = { momentum_buffer: new Tensor(buf, p.shape) };
        this.state.set(p, s);
        sgdApply(p.data, p.grad.data, buf, lr, momentum, weightDecay, nesterov);
        continue;
      }
      if (momentum === 0) {
        sgdPlain(p.data, p.grad.data, lr, weightDecay);
        continue;
      }
      const buf = (s!.momentum_buffer as Tensor).data;
      const vec = nesterov ? null : vectorOps();
      if (vec !== null) sgdMomentumBlas(vec, p.data, p.grad.data, buf, lr, momentum, 1 - dampening, weightDecay);
      else sgdMomentum(p.data, p.grad.data, buf, lr, momentum, 1 - dampening, weightDecay, nesterov);
    }
  }
}

// The update loops are separate monomorphic functions so that V8 optimises each once, without per-element branches.
function sgdDecay(buf: Float32Array, w: Float32Array, wd: number): void {
  for (let i = 0; i < buf.length; i++) buf[i] += wd * w[i];
}

/** The same update as sgdMomentum (without Nesterov) as BLAS vector passes. */
function sgdMomentumBlas(
  vec: VectorOps,
  w: Float32Array,
  g: Float32Array,
  buf: Float32Array,
  lr: number,
  mom: number,
  damp: number,
  wd: number,
): void {
  const n = w.length;
  vec.sscal(n, mom, buf); // buf = mom·buf
  vec.saxpy(n, damp, g, buf); // + (1 - dampening)·g
  if (wd !== 0) vec.saxpy(n, damp * wd, w, buf); // + (1 - dampening)·wd·w
  vec.saxpy(n, -lr, buf, w); // w -= lr·buf
}

function sgdPlain(w: Float32Array, g: Float32Array, lr: number, wd: number): void {
  const vec = vectorOps();
  if (vec !== null) {
    if (wd !== 0) vec.sscal(w.length, 1 - lr * wd, w);
    vec.saxpy(w.length, -lr, g, w);
    return;
  }
  if (wd === 0) for (let i = 0; i < w.length; i++) w[i] -= lr * g[i];
  else for (let i = 0; i < w.length; i++) w[i] -= lr * (g[i] + wd * w[i]);
}

function sgdApply(
  w: Float32Array,
  g: Float32Array,
  buf: Float32Array,
  lr: number,
  mom: number,
  wd: number,
  nesterov: boolean,
): void {
  if (nesterov) for (let i = 0; i < w.length; i++) w[i] -= lr * (g[i] + wd * w[i] + mom * buf[i]);
  else for (let i = 0; i < w.length; i++) w[i] -= lr * buf[i];
}

function sgdMomentum(
  w: Float32Array,
  g: Float32Array,
  buf: Float32Array,
  lr: number,
  mom: number,
  damp: number,
  wd: number,
  nesterov: boolean,
): void {
  const n = w.length;
  if (nesterov) {
    for (let i = 0; i < n; i++) {
      const d = g[i] + wd * w[i];
      buf[i] = mom * buf[i] + damp * d;
      w[i] -= lr * (d + mom * buf[i]);
    }
  } else if (wd === 0) {
    for (let i = 0; i < n; i++) {
      buf[i] = mom * buf[i] + damp * g[i];
      w[i] -= lr * buf[i];
    }
  } else {
    for (let i = 0; i < n; i++) {
      buf[i] = mom * buf[i] + damp * (g[i] + wd * w[i]);
      w[i] -= lr * buf[i];
    }
  }
}

export interface AdamOptions extends Record<string, number | boolean> {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export class Adam extends Optimizer<AdamOptions> {
  constructor(params: Iterable<Tensor>, opts: Partial<AdamOptions> = {}) {
    super(params, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, ...opts });
    const { beta1, beta2 } = this.options;
    if (beta1 >= 1 || beta2 >= 1)
      throw new TensorError('INVALID_ARGUMENT', `Adam: betas (${beta1}, ${beta2}) must be in [0, 1)`);
  }

  step(): void {
    const { lr, beta1, beta2, eps, weightDecay } = this.options;
    for (const p of this.params) {
      if (p.grad === null) continue;
      let s = this.state.get(p);
      if (s === undefined) {
        s = {
          step: 0,
          exp_avg: new Tensor(new Float32Array(p.numel), p.shape),
          exp_avg_sq: new Tensor(new Float32Array(p.numel), p.shape),
        };
        this.state.set(p, s);
      }
      const step = (s.step as number) + 1;
      s.step = step;
      const m = (s.exp_avg as Tensor).data;
      const v = (s.exp_avg_sq as Tensor).data;
      const w = p.data;
      const g = p.grad.data;
      const stepSize = lr / (1 - Math.pow(beta1, step));
      const bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
      for (let i = 0; i < w.length; i++) {
        const gi = g[i] + weightDecay * w[i];
        m[i] = beta1 * m[i] + (1 - beta1) * gi;
        v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
        w[i] -= (stepSize * m[i]) / (Math.sqrt(v[i]) / bc2Sqrt + eps);
      }
    }
  }
}
