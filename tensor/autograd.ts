// The reverse-mode autograd engine: grad mode, graph nodes and the (async) backward pass.
import { TensorError, type BackwardOptions, type BackwardResult, type GradNode } from './api.js';
import { onesLike, type Tensor } from './tensor-core.js';

let gradEnabled = true;
let nextSeq = 0;
let nodesRun = 0;

/**
 * How many graph nodes backward passes have run so far (process-wide). Leaves whose grad-ready hooks observe the
 * same value were delivered by the same node: DDP uses it to keep such parameters in one bucket.
 */
export function backwardNodesRun(): number {
  return nodesRun;
}

/** Whether operations record the graph now (false inside `noGrad`). */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/**
 * Runs `fn` without recording the autograd graph (like `torch.no_grad()`). Synchronous on purpose: the flag is
 * global, so an async function's continuations would run with whatever mode is current when they resume.
 */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Sets grad mode; returns the previous value. */
export function setGradEnabled(enabled: boolean): boolean {
  const prev = gradEnabled;
  gradEnabled = enabled;
  return prev;
}

export type BackwardFn = (gradOutput: Tensor) => BackwardResult | Promise<BackwardResult>;

/** A node whose backward is a closure over the tensors the forward saved; `release()` drops them. */
export class FnNode implements GradNode {
  /** Creation order: the engine runs ready nodes newest first, like PyTorch. */
  readonly seq = nextSeq++;
  private fn: BackwardFn | null;
  /**
   * @param builtin true for tensile's own ops, whose backward returns fresh gradient buffers or passes its
   *   gradOutput through; user functions (customFunction) may return buffers they keep, so their results are never
   *   adopted as a leaf's `.grad` without a copy.
   */
  constructor(
    readonly name: string,
    readonly inputs: readonly Tensor[],
    fn: BackwardFn,
    readonly builtin = true,
  ) {
    this.fn = fn;
  }
  get released(): boolean {
    return this.fn === null;
  }
  backward(gradOutput: Tensor): BackwardResult | Promise<BackwardResult> {
    if (this.fn === null) {
      throw new TensorError(
        'GRAPH_FREED',
        `${this.name}: trying to backward through the graph a second time (its saved tensors were freed); ` +
          'pass { retainGraph: true } to the first backward',
      );
    }
    return this.fn(gradOutput);
  }
  release(): void {
    this.fn = null;
  }
}

/** Attaches a grad node to `out` when grad mode is on and some input requires grad; returns `out`. */
export function record(out: Tensor, name: string, inputs: readonly Tensor[], fn: BackwardFn): Tensor {
  if (!gradEnabled) return out;
  let any = false;
  for (const t of inputs) if (t.requiresGrad) any = true;
  if (!any) return out;
  out._attachGradFn(new FnNode(name, inputs, fn));
  return out;
}

function seqOf(node: GradNode): number {
  return node instanceof FnNode ? node.seq : -1;
}

/**
 * Runs the backward pass from `roots` (each with gradient `grads[i]`, default 1 for single-element roots).
 * Nodes run newest first once all their consumers have run; a node's backward may be async and is awaited.
 * A leaf's gradient is delivered (to `opts.accumulate`, else added to `leaf.grad`) as soon as every path to it
 * has contributed, and then its grad-ready hooks fire, so DDP can start communication mid-pass.
 * Throws TensorError('NO_GRAD') when no root requires grad, 'SHAPE_MISMATCH' for a gradient of the wrong shape,
 * 'GRAPH_FREED' when the graph was already consumed.
 */
export async function backward(
  roots: readonly Tensor[],
  grads?: readonly (Tensor | null | undefined)[],
  opts: BackwardOptions = {},
): Promise<void> {
  const rootGrads: Tensor[] = roots.map((r, i) => {
    if (!r.requiresGrad) {
      throw new TensorError('NO_GRAD', `backward: root ${i} (shape [${r.shape}]) does not require grad`);
    }
    const g = grads?.[i];
    if (g === undefined || g === null) {
      if (r.numel !== 1) {
        throw new TensorError(
          'INVALID_ARGUMENT',
          `backward: root ${i} has shape [${r.shape}]; a gradient is only implied for single-element roots`,
        );
      }
      return onesLike(r);
    }
    if (!sameShape(g.shape, r.shape)) {
      throw new TensorError('SHAPE_MISMATCH', `backward: gradient ${i} has shape [${g.shape}], root has [${r.shape}]`);
    }
    return g;
  });

  // Discover the graph: dependency counts per node and per leaf.
  const deps = new Map<GradNode, number>();
  const leafDeps = new Map<Tensor, number>();
  const stack: GradNode[] = [];
  const seen = new Set<GradNode>();
  const visit = (t: Tensor): void => {
    const node = t.gradFn;
    if (node === null) {
      leafDeps.set(t, (leafDeps.get(t) ?? 0) + 1);
      return;
    }
    deps.set(node, (deps.get(node) ?? 0) + 1);
    if (!seen.has(node)) {
      seen.add(node);
      stack.push(node);
    }
  };
  for (const r of roots) {
    const node = r.gradFn;
    if (node === null) leafDeps.set(r, (leafDeps.get(r) ?? 0) + 1);
    else if (!seen.has(node)) {
      seen.add(node);
      stack.push(node);
    }
  }
  while (stack.length > 0) {
    const node = stack.pop()!;
    for (const inp of node.inputs) if (inp.requiresGrad) visit(inp);
  }

  const pending = new Map<GradNode, Tensor>();
  const leafPending = new Map<Tensor, Tensor>();
  // Buffers a leaf may not adopt as its `.grad` without copying: the caller's root gradients, results of user
  // functions, and buffers already adopted by another leaf (adopting saves a copy of every parameter gradient).
  const shared = new Set<Float32Array>();
  for (const g of grads ?? []) if (g) shared.add(g.data);
  const ready: GradNode[] = [];
  const queued = new Set<GradNode>();
  // Promises of async work that grad-ready hooks started (DDP allreduces) and that have not settled yet.
  let inflight = 0;

  const deliverLeaf = (leaf: Tensor, g: Tensor | null): void => {
    if (g !== null) leafPending.set(leaf, addGrads(leafPending.get(leaf), g));
    const left = (leafDeps.get(leaf) ?? 1) - 1;
    leafDeps.set(leaf, left);
    if (left > 0) return;
    const total = leafPending.get(leaf);
    leafPending.delete(leaf);
    if (total === undefined) return;
    if (opts.accumulate) opts.accumulate(leaf, total);
    else leaf._accumulateGrad(total, !shared.has(total.data));
    shared.add(total.data);
    const started = leaf._fireGradReady();
    if (started !== null) {
      for (const p of started) {
        inflight += 1;
        const done = (): void => {
          inflight -= 1;
        };
        p.then(done, done);
      }
    }
  };

  roots.forEach((r, i) => {
    const node = r.gradFn;
    if (node === null) deliverLeaf(r, rootGrads[i]!);
    else pending.set(node, addGrads(pending.get(node), rootGrads[i]!));
  });
  for (const r of roots) {
    const node = r.gradFn;
    if (node !== null && !queued.has(node) && (deps.get(node) ?? 0) === 0) {
      queued.add(node);
      ready.push(node);
    }
  }

  while (ready.length > 0) {
    let best = 0;
    for (let i = 1; i < ready.length; i++) if (seqOf(ready[i]!) > seqOf(ready[best]!)) best = i;
    const node = ready[best]!;
    ready[best] = ready[ready.length - 1]!;
    ready.pop();
    const g = pending.get(node);
    pending.delete(node);
    nodesRun += 1;
    let inputGrads: BackwardResult;
    if (g === undefined) {
      inputGrads = node.inputs.map(() => null);
    } else {
      const prev = setGradEnabled(false);
      let res: BackwardResult | Promise<BackwardResult>;
      try {
        res = node.backward(g);
      } finally {
        setGradEnabled(prev);
      }
      inputGrads = res instanceof Promise ? await res : res;
      if (!(node instanceof FnNode && node.builtin) && Array.isArray(inputGrads)) {
        for (const gi of inputGrads) if (gi) shared.add(gi.data);
      }
    }
    if (!opts.retainGraph && node instanceof FnNode) node.release();
    if (!Array.isArray(inputGrads) || inputGrads.length !== node.inputs.length) {
      throw new TensorError(
        'INVALID_ARGUMENT',
        `${node.name}: backward returned ${Array.isArray(inputGrads) ? inputGrads.length : typeof inputGrads} ` +
          `gradients for ${node.inputs.length} inputs`,
      );
    }
    node.inputs.forEach((inp, i) => {
      if (!inp.requiresGrad) return;
      const gi = inputGrads[i] ?? null;
      if (gi !== null && !sameShape(gi.shape, inp.shape)) {
        throw new TensorError(
          'SHAPE_MISMATCH',
          `${node.name}: gradient for input ${i} has shape [${gi.shape}], the input has [${inp.shape}]`,
        );
      }
      const child = inp.gradFn;
      if (child === null) {
        deliverLeaf(inp, gi);
        return;
      }
      if (gi !== null) pending.set(child, addGrads(pending.get(child), gi));
      const left = (deps.get(child) ?? 1) - 1;
      deps.set(child, left);
      if (left === 0 && !queued.has(child)) {
        queued.add(child);
        ready.push(child);
      }
    });
    // Backward is otherwise one synchronous run of kernels: without a macrotask turn here, socket reads and writes
    // of the communication the hooks started could only progress after the whole pass. One setImmediate per node
    // while something is in flight costs microseconds; the single-process path never takes it.
    if (inflight > 0 && ready.length > 0) await yieldMacrotask();
  }
}

function yieldMacrotask(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function addGrads(acc: Tensor | undefined, g: Tensor): Tensor {
  if (acc === undefined) return g;
  const out = new Float32Array(acc.data.length);
  const a = acc.data;
  const b = g.data;
  for (let i = 0; i < out.length; i++) out[i] = a[i] + b[i];
  return acc._withData(out);
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
