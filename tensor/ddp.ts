// DistributedDataParallel: data-parallel training over a ProcessGroup, after PyTorch's DDP
// (torch/nn/parallel/distributed.py and the C++ Reducer).
//
// - `DistributedDataParallel.create(model, pg, opts)` broadcasts rank 0's parameters and buffers so that replicas
//   start identical (every rank must call it, in the same order relative to other collectives).
// - Gradients are grouped into buckets in reverse parameter order (≈ the order backward produces them): a small first
//   bucket (`firstBucketCapMb`, default 1 MB) and then `bucketCapMb` (default 25 MB) buckets, like PyTorch.
// - After the first synchronised pass the buckets are rebuilt once in the order gradients actually arrived (PyTorch's
//   rebuild_buckets), keeping the parameters one graph node delivers (a Linear's weight and bias) in one bucket, so
//   that a bucket completes as soon as its layers' backward has run instead of waiting for the next layer. Rank 0's
//   observed order is broadcast so that every rank builds the same layout.
// - A grad-ready hook per parameter copies its gradient into the bucket's flat buffer; when a bucket is complete its
//   allreduce is launched at once and the hook returns its promise, which makes the autograd engine yield an
//   event-loop turn after each later node, so the allreduce's socket I/O progresses during the rest of the backward
//   pass. Allreduces are always
//   launched in bucket-index order on every rank (a later bucket that is ready first waits for the earlier ones):
//   mismatched order would pair different buckets across ranks.
// - `await ddp.finishGradSync()` (or `await ddp.backward(loss)`, which is `loss.backward()` + `finishGradSync()`)
//   launches what is left — parameters that got no gradient this pass count as zero, so unused parameters never
//   hang a rank — waits for every bucket, and writes the averaged gradients (sum ÷ world size) into `param.grad`.
//   `loss.backward()` alone does NOT wait for communication: call one of the two before `optimizer.step()`.
// - `noSync(fn)`: inside it, gradients only accumulate locally in `param.grad`; the first synchronised backward after
//   it all-reduces the accumulated sums (gradient accumulation).
//
// - `gradientAsBucketView: true` (PyTorch's gradient_as_bucket_view): after sync, `param.grad` is a view of its bucket
//   instead of a copy, saving a copy of every gradient per step; the gradient then changes when a later pass
//   overwrites the bucket, so do not keep a `.grad` across steps with it.
//
// - Failure: an allreduce that fails (peer lost, timeout, group aborted) rejects finishGradSync()/backward(). Some
//   `param.grad` may then hold averaged and others local gradients, but the parameters are untouched: a caller that
//   steps the optimizer only after a successful sync (and zeroes gradients before each step) never applies half an
//   update. Live recovery relies on this: it discards the interrupted step, `detach()`es this wrapper and wraps the
//   model again over the new round's group.
//
// Not done (PyTorch has them): comm hooks, broadcasting buffers on every forward.

import type { ProcessGroup } from '../collective/api.js';
import { noopLogger, type Logger } from '../common/logger.js';
import { TensorError } from './api.js';
import { backwardNodesRun } from './autograd.js';
import { vectorOps } from './sgemm.js';
import { Tensor, zeros } from './tensor.js';

export interface DdpOptions {
  /** Bucket capacity in MiB (PyTorch's bucket_cap_mb). Default 25. */
  readonly bucketCapMb?: number;
  /** Capacity of the first bucket (the last parameters) in MiB. Default 1. */
  readonly firstBucketCapMb?: number;
  /**
   * Rebuild the buckets once, after the first synchronised pass, in the order gradients arrived (rank 0's order).
   * Default true.
   */
  readonly rebuildBuckets?: boolean;
  /**
   * After sync, make `param.grad` a view of its bucket rather than a copy (PyTorch's gradient_as_bucket_view).
   * Default false.
   */
  readonly gradientAsBucketView?: boolean;
  /** Broadcast rank 0's buffers (not only parameters) at construction. Default true. */
  readonly broadcastBuffers?: boolean;
  /**
   * Broadcast rank 0's parameters (and buffers) at construction. Default true. Live recovery passes false: the
   * ranks have just agreed on their state over the new group, so the broadcast would only repeat it.
   */
  readonly broadcastInitialState?: boolean;
  readonly logger?: Logger;
}

/** What DDP needs from a model: named parameters (leaf tensors) and optionally named buffers. */
export interface DdpModule {
  namedParameters(): Iterable<readonly [string, Tensor]>;
  namedBuffers?(): Iterable<readonly [string, Tensor]>;
}

interface Bucket {
  readonly index: number;
  /** Parameter indices (into DDP's parameter list), with their offsets into `flat`. */
  readonly params: readonly number[];
  readonly offsets: readonly number[];
  readonly flat: Float32Array;
  ready: number;
  launched: Promise<void> | null;
}

const MIB = 1024 * 1024;

/**
 * Assigns parameters (given by element counts, in `parameters()` order) to buckets: reverse order, first bucket
 * capped at `firstCapBytes`, later ones at `capBytes`; a parameter larger than the cap gets a bucket of its own.
 * Returns parameter indices per bucket, bucket 0 first. Pure.
 */
export function assignBuckets(numels: readonly number[], capBytes: number, firstCapBytes: number): number[][] {
  const buckets: number[][] = [];
  let current: number[] = [];
  let bytes = 0;
  for (let i = numels.length - 1; i >= 0; i--) {
    const cap = buckets.length === 0 ? firstCapBytes : capBytes;
    const b = numels[i]! * 4;
    if (current.length > 0 && bytes + b > cap) {
      buckets.push(current);
      current = [];
      bytes = 0;
    }
    current.push(i);
    bytes += b;
  }
  if (current.length > 0) buckets.push(current);
  return buckets;
}

/**
 * Assigns parameters to buckets in arrival order, where `units[i]` groups consecutive entries of `order` that
 * arrived together (one graph node delivered them): a unit is never split, a bucket is closed before a unit that
 * would overflow it, and a unit larger than the cap gets a bucket of its own. Caps as in `assignBuckets`. Pure.
 */
export function assignBucketsByArrival(
  order: readonly number[],
  units: readonly number[],
  numels: readonly number[],
  capBytes: number,
  firstCapBytes: number,
): number[][] {
  const buckets: number[][] = [];
  let current: number[] = [];
  let bytes = 0;
  for (let i = 0; i < order.length;) {
    let j = i;
    let unitBytes = 0;
    while (j < order.length && units[j] === units[i]) unitBytes += numels[order[j++]!]! * 4;
    const cap = buckets.length === 0 ? firstCapBytes : capBytes;
    if (current.length > 0 && bytes + unitBytes > cap) {
      buckets.push(current);
      current = [];
      bytes = 0;
    }
    for (let k = i; k < j; k++) current.push(order[k]!);
    bytes += unitBytes;
    i = j;
  }
  if (current.length > 0) buckets.push(current);
  return buckets;
}

export class DistributedDataParallel<M extends DdpModule = DdpModule> {
  readonly module: M;
  readonly processGroup: ProcessGroup;
  private readonly params: Tensor[];
  private readonly paramNames: string[];
  private buckets: Bucket[] = [];
  /** Parameter index → [bucket index, offset]. */
  private readonly where = new Map<Tensor, { bucket: number; offset: number; param: number }>();
  private readonly capBytes: number;
  private readonly firstCapBytes: number;
  /** Arrival order of this pass (parameter indices) and the engine's node counter at each arrival. */
  private readonly arrivalOrder: number[] = [];
  private readonly arrivalNode: number[] = [];
  private rebuildPending: boolean;
  private readonly gradAsView: boolean;
  private readonly seenThisPass: Uint8Array;
  private nextToLaunch = 0;
  private syncEnabled = true;
  private passActive = false;
  private readonly logger: Logger;
  private unhook: (() => void)[] = [];

  /**
   * Wraps `model` and broadcasts rank 0's parameters (and buffers) to every rank. Every rank must call it.
   * Rejects with the process group's CollectiveError when a peer is lost.
   */
  static async create<M extends DdpModule>(
    model: M,
    processGroup: ProcessGroup,
    opts: DdpOptions = {},
  ): Promise<DistributedDataParallel<M>> {
    const ddp = new DistributedDataParallel(model, processGroup, opts);
    if (opts.broadcastInitialState ?? true) await ddp.broadcastState(opts.broadcastBuffers ?? true);
    return ddp;
  }

  private constructor(model: M, processGroup: ProcessGroup, opts: DdpOptions) {
    const capMb = opts.bucketCapMb ?? 25;
    const firstCapMb = opts.firstBucketCapMb ?? 1;
    for (const [name, v] of [
      ['bucketCapMb', capMb],
      ['firstBucketCapMb', firstCapMb],
    ] as const) {
      if (!(typeof v === 'number' && Number.isFinite(v) && v > 0)) {
        throw new TensorError(
          'INVALID_ARGUMENT',
          `DistributedDataParallel: ${name}=${String(v)}: expected a number > 0`,
        );
      }
    }
    this.module = model;
    this.processGroup = processGroup;
    this.logger = opts.logger ?? noopLogger;
    const named = [...model.namedParameters()].filter(([, p]) => p.requiresGrad);
    if (named.length === 0) {
      throw new TensorError(
        'INVALID_ARGUMENT',
        'DistributedDataParallel: the model has no parameters that require grad',
      );
    }
    this.params = named.map(([, p]) => p);
    this.paramNames = named.map(([n]) => n);
    this.capBytes = capMb * MIB;
    this.firstCapBytes = firstCapMb * MIB;
    this.rebuildPending = opts.rebuildBuckets ?? true;
    this.gradAsView = opts.gradientAsBucketView ?? false;
    this.setBuckets(
      assignBuckets(
        this.params.map((p) => p.data.length),
        this.capBytes,
        this.firstCapBytes,
      ),
    );
    this.seenThisPass = new Uint8Array(this.params.length);
    this.unhook = this.params.map((p) => p.registerGradReadyHook((leaf) => this.onGradReady(leaf)));
  }

  /**
   * Removes this wrapper's gradient hooks from the parameters, so that a new wrapper (over the process group of a
   * new round, after live recovery) can take over the same model. Gradients of a pass this wrapper had started are
   * abandoned. Idempotent.
   */
  detach(): void {
    for (const off of this.unhook) off();
    this.unhook = [];
    this.passActive = false;
  }

  private setBuckets(assignment: readonly (readonly number[])[]): void {
    this.where.clear();
    this.buckets = assignment.map((idxs, b) => {
      const offsets: number[] = [];
      let size = 0;
      for (const i of idxs) {
        offsets.push(size);
        this.where.set(this.params[i]!, { bucket: b, offset: size, param: i });
        size += this.params[i]!.data.length;
      }
      return { index: b, params: idxs, offsets, flat: new Float32Array(size), ready: 0, launched: null };
    });
    this.logger.debug(
      { buckets: this.buckets.map((b) => ({ params: b.params.length, bytes: b.flat.byteLength })) },
      'DDP buckets',
    );
  }

  /**
   * Rebuilds the buckets from rank 0's arrival order of the pass that just finished (every rank calls it at the
   * same point, in finishGradSync, so the broadcast pairs up). Parameters that got no gradient go last, in reverse
   * parameter order, each a unit of its own.
   */
  private async rebuildFromArrival(): Promise<void> {
    const n = this.params.length;
    const order: number[] = [...this.arrivalOrder];
    const units: number[] = [...this.arrivalNode];
    const seen = new Uint8Array(n);
    for (const i of order) seen[i] = 1;
    let unit = -1;
    for (let i = n - 1; i >= 0; i--) {
      if (seen[i] === 1) continue;
      order.push(i);
      units.push(unit--);
    }
    // Sent as float32: parameter indices and densely renumbered unit ids are < 2^24, so they travel exactly.
    const dense = new Map<number, number>();
    const packed = new Float32Array(2 * n);
    for (let k = 0; k < n; k++) {
      packed[k] = order[k]!;
      let u = dense.get(units[k]!);
      if (u === undefined) dense.set(units[k]!, (u = dense.size));
      packed[n + k] = u;
    }
    if (this.processGroup.worldSize > 1) await this.processGroup.broadcast(packed, 0);
    const rank0Order = Array.from(packed.subarray(0, n));
    const rank0Units = Array.from(packed.subarray(n));
    const check = new Uint8Array(n);
    for (const i of rank0Order) check[i] = 1;
    if (check.some((v) => v === 0)) {
      this.logger.warn({ order: rank0Order }, 'DDP: rank 0 sent an invalid arrival order; keeping the buckets');
      return;
    }
    this.setBuckets(
      assignBucketsByArrival(
        rank0Order,
        rank0Units,
        this.params.map((p) => p.data.length),
        this.capBytes,
        this.firstCapBytes,
      ),
    );
  }

  /** Bucket layout: parameter names per bucket, bucket 0 (launched first) first. */
  get bucketLayout(): { names: string[]; bytes: number }[] {
    return this.buckets.map((b) => ({ names: b.params.map((i) => this.paramNames[i]!), bytes: b.flat.byteLength }));
  }

  private async broadcastState(withBuffers: boolean): Promise<void> {
    if (this.processGroup.worldSize === 1) return;
    const tensors = [...this.params];
    if (withBuffers && this.module.namedBuffers) {
      for (const [, b] of this.module.namedBuffers()) tensors.push(b);
    }
    const total = tensors.reduce((s, t) => s + t.data.length, 0);
    const flat = new Float32Array(total);
    let off = 0;
    for (const t of tensors) {
      flat.set(t.data, off);
      off += t.data.length;
    }
    await this.processGroup.broadcast(flat, 0);
    off = 0;
    for (const t of tensors) {
      t.data.set(flat.subarray(off, off + t.data.length));
      off += t.data.length;
    }
  }

  /** Runs the wrapped module's forward. */
  forward(...args: M extends { forward(...a: infer A): unknown } ? A : never[]): M extends {
    forward(...a: never[]): infer R;
  }
    ? R
    : never {
    const m = this.module as unknown as { forward(...a: unknown[]): unknown };
    return m.forward(...(args as unknown[])) as never;
  }

  /**
   * Runs `fn` with gradient synchronisation off: backward passes inside only accumulate into `param.grad`.
   * Like PyTorch's `no_sync()`; the next synchronised pass all-reduces the accumulated gradients.
   */
  async noSync<T>(fn: () => T | Promise<T>): Promise<T> {
    const prev = this.syncEnabled;
    this.syncEnabled = false;
    try {
      return await fn();
    } finally {
      this.syncEnabled = prev;
    }
  }

  /** Returns the promise of the allreduces it launched, if any (the engine then yields while they run). */
  private onGradReady(leaf: Tensor): Promise<void> | undefined {
    if (!this.syncEnabled) return undefined;
    const w = this.where.get(leaf);
    if (w === undefined) return undefined;
    if (!this.passActive) this.beginPass();
    if (this.seenThisPass[w.param] === 1) {
      throw new TensorError(
        'INVALID_ARGUMENT',
        `DistributedDataParallel: parameter ${this.paramNames[w.param]} got a second gradient in one pass: call ` +
          'finishGradSync() (or ddp.backward()) after each backward, or use noSync() to accumulate',
        { tensorName: this.paramNames[w.param] },
      );
    }
    this.seenThisPass[w.param] = 1;
    if (this.rebuildPending) {
      this.arrivalOrder.push(w.param);
      this.arrivalNode.push(backwardNodesRun());
    }
    const bucket = this.buckets[w.bucket]!;
    const g = leaf.grad;
    if (g === null) bucket.flat.fill(0, w.offset, w.offset + leaf.data.length);
    else bucket.flat.set(g.data, w.offset);
    bucket.ready += 1;
    return this.launchReady();
  }

  private beginPass(): void {
    this.passActive = true;
    this.seenThisPass.fill(0);
    this.nextToLaunch = 0;
    this.arrivalOrder.length = 0;
    this.arrivalNode.length = 0;
    for (const b of this.buckets) {
      b.ready = 0;
      b.launched = null;
    }
  }

  /** Launches complete buckets strictly in index order; returns the last launched allreduce, if any. */
  private launchReady(): Promise<void> | undefined {
    let last: Promise<void> | undefined;
    while (this.nextToLaunch < this.buckets.length) {
      const b = this.buckets[this.nextToLaunch]!;
      if (b.ready < b.params.length) break;
      b.launched = this.processGroup.allreduce(b.flat, 'sum').then(() => undefined);
      // Keep an early rejection from surfacing as unhandled before finishGradSync awaits it.
      b.launched.catch(() => undefined);
      last = b.launched;
      this.nextToLaunch += 1;
    }
    return last;
  }

  /**
   * Completes this pass's gradient synchronisation: parameters without a gradient count as zero, every bucket is
   * all-reduced (in index order), and `param.grad` receives the average over ranks. Returns at once when no
   * synchronised backward ran since the last call. Rejects with the process group's CollectiveError on peer loss
   * or timeout (the pass is then abandoned; gradients are undefined).
   */
  async finishGradSync(): Promise<void> {
    if (!this.passActive) return;
    try {
      for (let i = 0; i < this.params.length; i++) {
        if (this.seenThisPass[i] === 1) continue;
        const p = this.params[i]!;
        const w = this.where.get(p)!;
        this.seenThisPass[i] = 1;
        const bucket = this.buckets[w.bucket]!;
        const g = p.grad;
        if (g === null) bucket.flat.fill(0, w.offset, w.offset + p.data.length);
        else bucket.flat.set(g.data, w.offset);
        bucket.ready += 1;
      }
      this.launchReady();
      const scale = 1 / this.processGroup.worldSize;
      const vec = vectorOps();
      for (const b of this.buckets) {
        await b.launched;
        const flat = b.flat;
        // Average by scaling the whole bucket once (BLAS sscal when available).
        if (scale !== 1) {
          if (vec !== null) vec.sscal(flat.length, scale, flat);
          else for (let k = 0; k < flat.length; k++) flat[k] *= scale;
        }
        b.params.forEach((pi, j) => {
          const p = this.params[pi]!;
          const off = b.offsets[j]!;
          const part = flat.subarray(off, off + p.data.length);
          if (this.gradAsView) {
            p.grad = new Tensor(part, p.shape);
            return;
          }
          if (p.grad === null) p.grad = zeros(p.shape);
          p.grad.data.set(part);
        });
      }
      if (this.rebuildPending) {
        this.rebuildPending = false;
        await this.rebuildFromArrival();
      }
    } finally {
      this.passActive = false;
    }
  }

  /** `await root.backward()` then `await finishGradSync()`: gradients are averaged when it resolves. */
  async backward(root: Tensor): Promise<void> {
    await root.backward();
    if (this.syncEnabled) await this.finishGradSync();
  }
}
