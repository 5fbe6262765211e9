// Data loading: datasets that gather a batch of rows at once, samplers, DataLoader and DistributedSampler.
import { TensorError, type RandomGenerator } from './api.js';
import { noGrad } from './autograd.js';
import { defaultGenerator, randperm, torchRandperm } from './generator.js';
import { indexSelect } from './ops.js';
import type { Tensor } from './tensor.js';

/** A dataset that returns a whole batch for a list of indices. */
export interface Dataset<B> {
  readonly length: number;
  getBatch(indices: readonly number[]): B;
}

/** Rows of tensors that share their first dim (features, labels, ...); a batch is the rows at the indices. */
export class TensorDataset implements Dataset<Tensor[]> {
  readonly tensors: readonly Tensor[];
  constructor(...tensors: Tensor[]) {
    if (tensors.length === 0) throw new TensorError('INVALID_ARGUMENT', 'TensorDataset: needs at least one tensor');
    const n = tensors[0]!.shape[0];
    tensors.forEach((t, i) => {
      if (t.ndim === 0 || t.shape[0] !== n) {
        throw new TensorError(
          'SHAPE_MISMATCH',
          `TensorDataset: tensor ${i} has shape [${t.shape}], expected first dim ${n}`,
        );
      }
    });
    this.tensors = tensors;
  }
  get length(): number {
    return this.tensors[0]!.shape[0]!;
  }
  getBatch(indices: readonly number[]): Tensor[] {
    return noGrad(() => this.tensors.map((t) => indexSelect(t, indices)));
  }
}

/** An ordered collection of dataset indices, re-drawn on each iteration. */
export interface Sampler {
  readonly length: number;
  indices(): number[];
}

export interface DistributedSamplerOptions {
  /** Dataset size; or give `dataset` (anything with a `length`). */
  readonly length?: number;
  readonly dataset?: { readonly length: number };
  readonly numReplicas: number;
  readonly rank: number;
  /** Default true. */
  readonly shuffle?: boolean;
  /** Default 0; every replica must use the same seed. */
  readonly seed?: number;
  /** Default 0; change it with setEpoch() so each epoch shuffles differently. */
  readonly epoch?: number;
  /** Drop the tail so every replica gets the same number without padding (default false: pad by repeating). */
  readonly dropLast?: boolean;
}

/**
 * Shards dataset indices by rank exactly as PyTorch's DistributedSampler does: the permutation
 * `torch.randperm(n, generator=manual_seed(seed + epoch))` (reproduced bit for bit, so a tensile worker and a
 * PyTorch worker with the same seed and epoch get the same indices), padded by repeating indices from the start to
 * a multiple of numReplicas (or truncated with dropLast), then every numReplicas-th index from `rank`.
 */
export class DistributedSampler implements Sampler {
  readonly datasetLength: number;
  readonly numReplicas: number;
  readonly rank: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  epoch: number;

  constructor(opts: DistributedSamplerOptions) {
    const { numReplicas, rank } = opts;
    const length = opts.length ?? opts.dataset?.length;
    if (length === undefined) {
      throw new TensorError('INVALID_ARGUMENT', 'DistributedSampler: give the dataset size as `length` or a `dataset`');
    }
    if (!Number.isInteger(length) || length < 0) {
      throw new TensorError('INVALID_ARGUMENT', `DistributedSampler: length ${length} must be a non-negative integer`);
    }
    if (!Number.isInteger(numReplicas) || numReplicas < 1) {
      throw new TensorError(
        'INVALID_ARGUMENT',
        `DistributedSampler: numReplicas ${numReplicas} must be a positive integer`,
      );
    }
    if (!Number.isInteger(rank) || rank < 0 || rank >= numReplicas) {
      throw new TensorError('INVALID_ARGUMENT', `DistributedSampler: rank ${rank} must be in [0, ${numReplicas - 1}]`);
    }
    this.datasetLength = length;
    this.numReplicas = numReplicas;
    this.rank = rank;
    this.shuffle = opts.shuffle ?? true;
    this.seed = opts.seed ?? 0;
    this.epoch = opts.epoch ?? 0;
    this.dropLast = opts.dropLast ?? false;
  }

  setEpoch(epoch: number): void {
    this.epoch = epoch;
  }

  /** Samples per replica (the same on every rank). */
  get length(): number {
    const n = this.datasetLength;
    if (this.dropLast && n % this.numReplicas !== 0) return Math.ceil((n - this.numReplicas) / this.numReplicas);
    return Math.ceil(n / this.numReplicas);
  }

  get totalSize(): number {
    return this.length * this.numReplicas;
  }

  indices(): number[] {
    const n = this.datasetLength;
    let all = this.shuffle ? torchRandperm(n, this.seed + this.epoch) : Array.from({ length: n }, (_, i) => i);
    const total = this.totalSize;
    if (!this.dropLast) {
      const pad = total - all.length;
      if (pad > 0 && all.length > 0) {
        const extra: number[] = [];
        while (extra.length < pad) extra.push(...all.slice(0, pad - extra.length));
        all = all.concat(extra);
      }
    } else {
      all = all.slice(0, total);
    }
    const out: number[] = [];
    for (let i = this.rank; i < total; i += this.numReplicas) out.push(all[i]!);
    return out;
  }
}

export interface DataLoaderOptions {
  readonly batchSize: number;
  /** Reshuffle every iteration (ignored when a sampler is given). Default false. */
  readonly shuffle?: boolean;
  readonly sampler?: Sampler;
  readonly dropLast?: boolean;
  readonly generator?: RandomGenerator;
}

/** Iterates over batches: each one is `dataset.getBatch(indices)` for the next batchSize indices. */
export class DataLoader<B> implements Iterable<B> {
  readonly batchSize: number;
  private readonly opts: DataLoaderOptions;
  constructor(
    readonly dataset: Dataset<B>,
    opts: DataLoaderOptions,
  ) {
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) {
      throw new TensorError('INVALID_ARGUMENT', `DataLoader: batchSize ${opts.batchSize} must be a positive integer`);
    }
    this.batchSize = opts.batchSize;
    this.opts = opts;
  }

  private sampleCount(): number {
    return this.opts.sampler?.length ?? this.dataset.length;
  }

  /** Number of batches per iteration. */
  get length(): number {
    const n = this.sampleCount();
    return this.opts.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  *[Symbol.iterator](): Iterator<B> {
    const idx = this.opts.sampler
      ? this.opts.sampler.indices()
      : this.opts.shuffle
        ? randperm(this.dataset.length, this.opts.generator ?? defaultGenerator)
        : Array.from({ length: this.dataset.length }, (_, i) => i);
    for (let at = 0; at < idx.length; at += this.batchSize) {
      const batch = idx.slice(at, at + this.batchSize);
      if (this.opts.dropLast && batch.length < this.batchSize) break;
      yield this.dataset.getBatch(batch);
    }
  }
}
