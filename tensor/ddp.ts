// DistributedDataParallel: data-parallel training over a ProcessGroup, after PyTorch's DDP
// (torch/nn/parallel/distributed.py and the C++ Reducer).
//
// - `DistributedDataParallel.create(model, pg, opts)` broadcasts rank 0's parameters and buffers so that replicas
//   start identical (every rank must call it, in the same order relative to other collectives).
// - Gradients are grouped into buckets in reverse parameter order (≈ the order backward produces them): a small first
//   bucket (`firstBucketCapMb`, default 1 MB) and then `bucketCapMb` (default 25 MB) buckets, like PyTorch.
// - A grad-ready hook per parameter copies its gradient into the bucket's flat buffer; when a bucket is complete its
//   allreduce is launched at once, so communication overlaps the rest of the backward pass. Allreduces are always
//   launched in bucket-index order on every rank (a later bucket that is ready first waits for the earlier ones):
//   mismatched order would pair different buckets across ranks.
// - `await ddp.finishGradSync()` (or `await ddp.backward(loss)`, which is `loss.backward()` + `finishGradSync()`)
//   launches what is left — parameters that got no gradient this pass count as zero, so unused parameters never
//   hang a rank — waits for every bucket, and writes the averaged gradients (sum ÷ world size) into `param.grad`.
//   `loss.backward()` alone does NOT wait for communication: call one of the two before `optimizer.step()`.
// - `noSync(fn)`: inside it, gradients only accumulate locally in `param.grad`; the first synchronised backward after
//   it all-reduces the accumulated sums (gradient accumulation).
//
// Not done (PyTorch has them): re-bucketing by the observed hook order (`rebuild_buckets`), gradient-as-bucket-view,
// comm hooks, broadcasting buffers on every forward.

import type { ProcessGroup } from '../collective/api.js';
import { TensorError } from './api.js';
import { Tensor, zeros } from './tensor.js';

export interface DdpLogger {
  debug(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
}

const noopLogger: DdpLogger = { debug() {}, warn() {} };

export interface DdpOptions {
  /** Bucket capacity in MiB (PyTorch's bucket_cap_mb). Default 25. */
  readonly bucketCapMb?: number;
  /** Capacity of the first bucket (the last parameters) in MiB. Default 1. */
  readonly firstBucketCapMb?: number;
  /** Broadcast rank 0's buffers (not only parameters) at construction. Default true. */
  readonly broadcastBuffers?: boolean;
  readonly logger?: DdpLogger;
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

export class DistributedDataParallel<M extends DdpModule = DdpModule> {
  readonly module: M;
  readonly processGroup: ProcessGroup;
  private readonly params: Tensor[];
  private readonly paramNames: string[];
  private readonly buckets: Bucket[];
  /** Parameter index → [bucket index, offset]. */
  private readonly where: Map<Tensor, { bucket: number; offset: number; param: number }>;
  private readonly seenThisPass: Uint8Array;
  private nextToLaunch = 0;
  private syncEnabled = true;
  private passActive = false;
  private readonly logger: DdpLogger;

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
    await ddp.broadcastState(opts.broadcastBuffers ?? true);
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
        throw new TensorError('INVALID_ARGUMENT', `DistributedDataParallel: ${name}=${String(v)}: expected a number > 0`);
      }
    }
    this.module = model;
    this.processGroup = processGroup;
    this.logger = opts.logger ?? noopLogger;
    const named = [...model.namedParameters()].filter(([, p]) => p.requiresGrad);
    if (named.length === 0) {
      throw new TensorError('INVALID_ARGUMENT', 'DistributedDataParallel: the model has no parameters that require grad');
    }
    this.params = named.map(([, p]) => p);
    this.paramNames = named.map(([n]) => n);
    const assignment = assignBuckets(
      this.params.map((p) => p.data.length),
      capMb * MIB,
      firstCapMb * MIB,
    );
    this.where = new Map();
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
    this.seenThisPass = new Uint8Array(this.params.length);
    for (const p of this.params) p.registerGradReadyHook((leaf) => this.onGradReady(leaf));
    this.logger.debug(
      { buckets: this.buckets.map((b) => ({ params: b.params.length, bytes: b.flat.byteLength })) },
      'DDP buckets',
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

  private onGradReady(leaf: Tensor): void {
    if (!this.syncEnabled) return;
    const w = this.where.get(leaf);
    if (w === undefined) return;
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
    const bucket = this.buckets[w.bucket]!;
    const g = leaf.grad;
    if (g === null) bucket.flat.fill(0, w.offset, w.offset + leaf.data.length);
    else bucket.flat.set(g.data, w.offset);
    bucket.ready += 1;
    this.launchReady();
  }

  private beginPass(): void {
    this.passActive = true;
    this.seenThisPass.fill(0);
    this.nextToLaunch = 0;
    for (const b of this.buckets) {
      b.ready = 0;
      b.launched = null;
    }
  }

  /** Launches complete buckets strictly in index order. */
  private launchReady(): void {
    while (this.nextToLaunch < this.buckets.length) {
      const b = this.buckets[this.nextToLaunch]!;
      if (b.ready < b.params.length) return;
      b.launched = this.processGroup.allreduce(b.flat, 'sum').then(() => undefined);
      // Keep an early rejection from surfacing as unhandled before finishGradSync awaits it.
      b.launched.catch(() => undefined);
      this.nextToLaunch += 1;
    }
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
      for (const b of this.buckets) {
        await b.launched;
        const flat = b.flat;
        for (let k = 0; k < flat.length; k++) flat[k] *= scale;
        b.params.forEach((pi, j) => {
          const p = this.params[pi]!;
          const off = b.offsets[j]!;
          const part = flat.subarray(off, off + p.data.length);
          if (p.grad === null) p.grad = zeros(p.shape);
          p.grad.data.set(part);
        });
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
