// The elastic training-state helper: what a training script needs to survive restarts and world-size changes.
//
// The script declares what to save (`track('model', model)`, `track('optimizer', opt)`, `trackJson(...)`); the
// helper keeps the step, the epoch and the sampler position (global samples consumed this epoch). `restore()`
// loads the newest valid checkpoint from the directory (TENSILE_CHECKPOINT_DIR by default), falling back to an older
// one, with a warning naming the file, when the newest is corrupt. `stepDone()` saves every `saveEverySteps` steps
// and on SIGTERM (preemption): rank 0 writes, atomically (temp file + rename, via `saveSafetensors`), keeping the
// last `keepLast` files. `shard()` gives this rank's sample indices for the current epoch, re-sharded for the
// current world size and skipping what this epoch already consumed, so a 3 → 2 change continues where it left off.
//
// Checkpoint file: `ckpt-<step, 12 digits>.safetensors`. Tensors are stored under `<tracked name>/<path>`; the
// non-tensor parts (optimizer hyper-parameters, JSON state, counters) go in the `tensile.state` metadata entry as
// JSON, with a SHA-256 over all tensor bytes (`tensile.sha256`) so a bit flip is detected, not only truncation.
//
// The directory must be visible to every rank (on one node it is; across nodes use shared storage): every rank
// reads it on restore, and rank 0 broadcasts which step it restored so that a mismatch fails loudly.
// Longer than ~500 lines on purpose: save, restore, checkpoint validation and re-sharding share the state
// declaration and the snapshot format.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { ProcessGroup } from '../collective/api.js';
import { noopLogger, type Logger } from '../common/logger.js';
import { TensorError } from './api.js';
import { loadSafetensors, saveSafetensors } from './safetensors.js';
import { Tensor } from './tensor.js';

/** Anything with a state dict: nn.Module, optimizers. */
export interface Stateful {
  stateDict(): unknown;
  loadStateDict(state: never): unknown;
}

export type BatchPolicy = 'keepGlobalBatch' | 'keepPerWorkerBatch';

export interface ElasticStateOptions {
  /** Checkpoint directory; default `TENSILE_CHECKPOINT_DIR`. Required one way or the other. */
  readonly dir?: string;
  /** Save every N completed steps (0 = only on SIGTERM and explicit `save()`). Default 100. */
  readonly saveEverySteps?: number;
  /** Keep the newest K checkpoints. Default 3. */
  readonly keepLast?: number;
  /** Default RANK from the environment, else 0. */
  readonly rank?: number;
  /** Default WORLD_SIZE from the environment, else 1. */
  readonly worldSize?: number;
  /** Used to agree on the restored step across ranks. Optional for world size 1. */
  readonly processGroup?: ProcessGroup;
  /** Install a SIGTERM handler that requests a save at the next step boundary. Default true. */
  readonly handleSigterm?: boolean;
  readonly batchPolicy?: BatchPolicy;
  /** With keepGlobalBatch: the global batch; with keepPerWorkerBatch: the per-worker batch. */
  readonly batchSize: number;
  /** Shuffle seed; the epoch is mixed in so each epoch has its own order, the same on every world size. */
  readonly seed?: number;
  readonly shuffle?: boolean;
  readonly logger?: Logger;
  /** Called on rank 0 after each checkpoint is written (e.g. to append to a run history). */
  readonly onSaved?: (info: { file: string; step: number; reason: string }) => void;
}

export type ElasticErrorCode = 'INVALID_ARGUMENT' | 'NO_CHECKPOINT_DIR' | 'RESTORE_MISMATCH';

export class ElasticStateError extends Error {
  readonly code: ElasticErrorCode;
  readonly rank: number | undefined;
  constructor(code: ElasticErrorCode, message: string, opts: { rank?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ElasticStateError';
    this.code = code;
    this.rank = opts.rank;
  }
}

export interface RestoreInfo {
  /** The file restored from, or null for a fresh start. */
  readonly file: string | null;
  readonly step: number;
  readonly epoch: number;
  /** World size when the checkpoint was written (null on a fresh start). */
  readonly savedWorldSize: number | null;
  /** Files skipped because they were corrupt, newest first. */
  readonly skipped: readonly string[];
}

export interface Shard {
  /** This rank's sample indices for the rest of the epoch, in batch order: batch b is indices [b*B, (b+1)*B). */
  readonly indices: Int32Array;
  /** Samples per worker per step. */
  readonly perWorkerBatch: number;
  /** Samples per global step (perWorkerBatch × worldSize). */
  readonly globalBatch: number;
  /** Steps left in this epoch (the last incomplete global batch is dropped). */
  readonly stepsLeft: number;
}

export interface SavedState {
  step: number;
  epoch: number;
  samplesConsumed: number;
  worldSize: number;
  timeMs: number;
  json: Record<string, unknown>;
  tracked: Record<string, unknown>;
}

const FILE_RE = /^ckpt-(\d{12})\.safetensors$/;
const TENSOR_REF = '__tensile_tensor__';

export function checkpointFileName(step: number): string {
  return `ckpt-${String(step).padStart(12, '0')}.safetensors`;
}

/** Checkpoint files in `dir`, newest (highest step) first. */
export function listCheckpoints(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => FILE_RE.test(f))
    .sort()
    .reverse()
    .map((f) => join(dir, f));
}

/** Deterministic permutation of [0, n) for an epoch (Fisher–Yates on a splitmix-seeded xorshift). */
export function epochPermutation(n: number, seed: number, epoch: number, shuffle: boolean): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  if (!shuffle) return out;
  let s = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0 || 1;
  const next = (): number => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    const t = out[i]!;
    out[i] = out[j]!;
    out[j] = t;
  }
  return out;
}

/** Per-worker and global batch for a world size under a policy. Pure. */
export function batchFor(
  policy: BatchPolicy,
  batchSize: number,
  worldSize: number,
): { perWorkerBatch: number; globalBatch: number } {
  if (policy === 'keepPerWorkerBatch') return { perWorkerBatch: batchSize, globalBatch: batchSize * worldSize };
  const perWorkerBatch = Math.floor(batchSize / worldSize);
  if (perWorkerBatch < 1) {
    throw new ElasticStateError(
      'INVALID_ARGUMENT',
      `keepGlobalBatch: global batch ${batchSize} is smaller than the world size ${worldSize}: expected ≥ ${worldSize}`,
    );
  }
  return { perWorkerBatch, globalBatch: perWorkerBatch * worldSize };
}

/**
 * This rank's indices for the rest of an epoch. Global step s uses the permutation's samples
 * [consumed + s·G, consumed + (s+1)·G); rank r takes the r-th slice of B = G / worldSize of them. Because a global
 * batch is a contiguous run of one world-size-independent permutation, the samples a step sees do not depend on
 * how many workers share it, and "consumed" is one number that survives any world-size change. Pure.
 */
export function shardIndices(
  perm: Int32Array,
  consumed: number,
  rank: number,
  worldSize: number,
  perWorkerBatch: number,
): Int32Array {
  const globalBatch = perWorkerBatch * worldSize;
  const stepsLeft = Math.max(0, Math.floor((perm.length - consumed) / globalBatch));
  const out = new Int32Array(stepsLeft * perWorkerBatch);
  for (let s = 0; s < stepsLeft; s++) {
    const from = consumed + s * globalBatch + rank * perWorkerBatch;
    out.set(perm.subarray(from, from + perWorkerBatch), s * perWorkerBatch);
  }
  return out;
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  return Number.isInteger(n) ? n : undefined;
}

/** Splits a state dict into tensors (by path) and a JSON skeleton with references in their place. */
function flatten(value: unknown, path: string, tensors: Record<string, Tensor>): unknown {
  if (value instanceof Tensor) {
    tensors[path] = value;
    return { [TENSOR_REF]: path };
  }
  if (value instanceof Map) {
    return { __tensile_map__: [...value.entries()].map(([k, v]) => [k, flatten(v, `${path}/${String(k)}`, tensors)]) };
  }
  if (Array.isArray(value)) return value.map((v, i) => flatten(v, `${path}/${i}`, tensors));
  if (ArrayBuffer.isView(value)) {
    return { __tensile_typed__: Array.from(value as unknown as ArrayLike<number>) };
  }
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = flatten(v, `${path}/${k}`, tensors);
    return out;
  }
  return value;
}

function unflatten(value: unknown, tensors: Record<string, Tensor>, file: string): unknown {
  if (Array.isArray(value)) return value.map((v) => unflatten(v, tensors, file));
  if (value !== null && typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    if (typeof obj[TENSOR_REF] === 'string') {
      const t = tensors[obj[TENSOR_REF]];
      if (t === undefined) {
        throw new TensorError('CHECKPOINT_CORRUPT', `${file}: tensor ${obj[TENSOR_REF]} is referenced but missing`, {
          tensorName: obj[TENSOR_REF],
        });
      }
      return t;
    }
    if (Array.isArray(obj.__tensile_map__)) {
      return new Map(
        (obj.__tensile_map__ as [unknown, unknown][]).map(([k, v]) => [k, unflatten(v, tensors, file)] as const),
      );
    }
    if (Array.isArray(obj.__tensile_typed__)) return Float32Array.from(obj.__tensile_typed__ as number[]);
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(obj)) out[k] = unflatten(v, tensors, file);
    return out;
  }
  return value;
}

function digest(tensors: Record<string, Tensor>): string {
  const h = createHash('sha256');
  for (const name of Object.keys(tensors).sort()) {
    const t = tensors[name]!;
    h.update(name);
    h.update(JSON.stringify(t.shape));
    const d = t.data;
    h.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  }
  return h.digest('hex');
}

export class ElasticState {
  /** Completed global optimizer steps since the start of training. */
  step = 0;
  epoch = 0;
  /** Global samples consumed in the current epoch (the sampler position). */
  samplesConsumed = 0;
  /** Set by SIGTERM (or `requestStop()`): the script should stop after `stepDone()` returns 'stop'. */
  preempted = false;

  readonly dir: string;
  private _rank: number;
  private _worldSize: number;
  readonly batchPolicy: BatchPolicy;
  readonly batchSize: number;
  private readonly saveEverySteps: number;
  private readonly keepLast: number;
  private readonly seed: number;
  private readonly shuffle: boolean;
  private pg: ProcessGroup | undefined;
  private readonly logger: Logger;
  private readonly onSaved: ElasticStateOptions['onSaved'];
  private readonly tracked = new Map<string, Stateful>();
  private readonly jsonTracked = new Map<string, { get(): unknown; set(v: unknown): void }>();
  private lastSavedStep = -1;
  private readonly onSigterm = (): void => {
    this.preempted = true;
    this.logger.warn({ rank: this.rank, step: this.step }, 'SIGTERM: saving at the next step boundary');
  };
  private sigtermInstalled = false;

  constructor(opts: ElasticStateOptions) {
    const dir = opts.dir ?? process.env.TENSILE_CHECKPOINT_DIR;
    if (dir === undefined || dir === '') {
      throw new ElasticStateError(
        'NO_CHECKPOINT_DIR',
        'ElasticState: no checkpoint directory: pass `dir` or set TENSILE_CHECKPOINT_DIR',
      );
    }
    const posInt = (name: string, v: number, min: number): number => {
      if (!Number.isInteger(v) || v < min) {
        throw new ElasticStateError('INVALID_ARGUMENT', `ElasticState: ${name}=${v}: expected an integer ≥ ${min}`);
      }
      return v;
    };
    this.dir = dir;
    this._rank = posInt('rank', opts.rank ?? opts.processGroup?.rank ?? envInt('RANK') ?? 0, 0);
    this._worldSize = posInt(
      'worldSize',
      opts.worldSize ?? opts.processGroup?.worldSize ?? envInt('WORLD_SIZE') ?? 1,
      1,
    );
    if (this.rank >= this.worldSize) {
      throw new ElasticStateError(
        'INVALID_ARGUMENT',
        `ElasticState: rank ${this.rank} must be < worldSize ${this.worldSize}`,
      );
    }
    this.saveEverySteps = posInt('saveEverySteps', opts.saveEverySteps ?? 100, 0);
    this.keepLast = posInt('keepLast', opts.keepLast ?? 3, 1);
    this.batchSize = posInt('batchSize', opts.batchSize, 1);
    this.batchPolicy = opts.batchPolicy ?? 'keepGlobalBatch';
    if (this.batchPolicy !== 'keepGlobalBatch' && this.batchPolicy !== 'keepPerWorkerBatch') {
      throw new ElasticStateError(
        'INVALID_ARGUMENT',
        `ElasticState: batchPolicy=${String(this.batchPolicy)}: expected keepGlobalBatch or keepPerWorkerBatch`,
      );
    }
    batchFor(this.batchPolicy, this.batchSize, this.worldSize); // validates
    this.seed = opts.seed ?? 0;
    this.shuffle = opts.shuffle ?? true;
    this.pg = opts.processGroup;
    this.logger = opts.logger ?? noopLogger;
    this.onSaved = opts.onSaved;
    if (this.rank === 0) mkdirSync(dir, { recursive: true });
    if (opts.handleSigterm ?? true) {
      process.on('SIGTERM', this.onSigterm);
      this.sigtermInstalled = true;
    }
  }

  /** This worker's rank in the current world. */
  get rank(): number {
    return this._rank;
  }

  /** The current world size (what `shard()` and `batch` re-shard for). */
  get worldSize(): number {
    return this._worldSize;
  }

  /**
   * Moves the helper to a new world (live recovery: a new process group after a membership change). The step,
   * epoch and sampler position stay; `shard()` re-slices the rest of the epoch for the new world. Throws
   * ElasticStateError('INVALID_ARGUMENT') for a rank outside the world or a global batch the world cannot split.
   */
  rebind(world: { rank: number; worldSize: number; processGroup?: ProcessGroup }): void {
    const { rank, worldSize } = world;
    if (!Number.isInteger(worldSize) || worldSize < 1 || !Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
      throw new ElasticStateError(
        'INVALID_ARGUMENT',
        `ElasticState.rebind: rank ${rank}, worldSize ${worldSize}: expected integers with 0 ≤ rank < worldSize`,
      );
    }
    batchFor(this.batchPolicy, this.batchSize, worldSize); // validates before changing anything
    this._rank = rank;
    this._worldSize = worldSize;
    this.pg = world.processGroup;
    if (rank === 0) mkdirSync(this.dir, { recursive: true });
  }

  /**
   * Loads a snapshot taken by `snapshot()` (here or on a peer: live recovery) into every tracked object, the JSON
   * state and the counters. `source` names where it came from in error messages. Throws
   * TensorError('STATE_DICT_MISMATCH' | 'CHECKPOINT_CORRUPT') naming the tracked object or tensor that does not fit.
   */
  applySnapshot(tensors: Record<string, Tensor>, state: SavedState, source: string): void {
    this.apply(tensors, state, source);
  }

  /** Declares an object whose `stateDict()` is saved and whose `loadStateDict()` is called on restore. */
  track(name: string, obj: Stateful): this {
    this.checkName(name);
    this.tracked.set(name, obj);
    return this;
  }

  /** Declares JSON state (RNG state, best accuracy, anything serialisable). */
  trackJson(name: string, accessors: { get(): unknown; set(v: unknown): void }): this {
    this.checkName(name);
    this.jsonTracked.set(name, accessors);
    return this;
  }

  private checkName(name: string): void {
    if (!/^[A-Za-z0-9_.-]+$/.test(name) || this.tracked.has(name) || this.jsonTracked.has(name)) {
      throw new ElasticStateError(
        'INVALID_ARGUMENT',
        `ElasticState: name ${JSON.stringify(name)}: expected a new [A-Za-z0-9_.-]+ name`,
      );
    }
  }

  /** Samples per worker and per global step at the current world size. */
  get batch(): { perWorkerBatch: number; globalBatch: number } {
    return batchFor(this.batchPolicy, this.batchSize, this.worldSize);
  }

  /** This rank's indices for the rest of the current epoch of a data set of `n` samples. */
  shard(n: number): Shard {
    const { perWorkerBatch, globalBatch } = this.batch;
    const perm = epochPermutation(n, this.seed, this.epoch, this.shuffle);
    const indices = shardIndices(perm, this.samplesConsumed, this.rank, this.worldSize, perWorkerBatch);
    return { indices, perWorkerBatch, globalBatch, stepsLeft: indices.length / perWorkerBatch };
  }

  /** Marks the end of an epoch: the sampler position resets. */
  nextEpoch(): void {
    this.epoch += 1;
    this.samplesConsumed = 0;
  }

  requestStop(): void {
    this.preempted = true;
  }

  /**
   * Records one completed global step (`globalBatch` samples). Rank 0 saves when the step is a multiple of
   * `saveEverySteps` or a stop was requested. Returns 'stop' when the script should exit (after the save).
   */
  async stepDone(): Promise<'continue' | 'stop'> {
    this.step += 1;
    this.samplesConsumed += this.batch.globalBatch;
    if (this.preempted) {
      await this.save('preempted');
      return 'stop';
    }
    if (this.saveEverySteps > 0 && this.step % this.saveEverySteps === 0) await this.save('periodic');
    return 'continue';
  }

  /** Captures everything declared, as a checkpoint would hold it. */
  snapshot(): { tensors: Record<string, Tensor>; state: SavedState } {
    const tensors: Record<string, Tensor> = {};
    const tracked: Record<string, unknown> = {};
    for (const [name, obj] of this.tracked) tracked[name] = flatten(obj.stateDict(), name, tensors);
    const json: Record<string, unknown> = {};
    for (const [name, acc] of this.jsonTracked) json[name] = acc.get();
    const state: SavedState = {
      step: this.step,
      epoch: this.epoch,
      samplesConsumed: this.samplesConsumed,
      worldSize: this.worldSize,
      timeMs: Date.now(),
      json,
      tracked,
    };
    return { tensors, state };
  }

  /**
   * Rank 0 writes a checkpoint for the current step (atomically) and prunes old ones; other ranks return at once.
   * Returns the path written, or null. Saving the same step twice is a no-op.
   */
  async save(reason = 'explicit'): Promise<string | null> {
    if (this.rank !== 0 || this.lastSavedStep === this.step) return null;
    const { tensors, state } = this.snapshot();
    const path = join(this.dir, checkpointFileName(this.step));
    mkdirSync(this.dir, { recursive: true });
    await saveSafetensors(path, tensors, {
      'tensile.state': JSON.stringify(state),
      'tensile.sha256': digest(tensors),
    });
    this.lastSavedStep = this.step;
    this.logger.info({ step: this.step, file: path, reason }, 'checkpoint saved');
    this.onSaved?.({ file: path, step: this.step, reason });
    for (const old of listCheckpoints(this.dir).slice(this.keepLast)) {
      try {
        unlinkSync(old);
      } catch {
        // Already gone: another writer pruned it.
      }
    }
    return path;
  }

  /** Reads and verifies one checkpoint file; throws TensorError('CHECKPOINT_CORRUPT' | 'CHECKPOINT_IO'). */
  static async readCheckpoint(file: string): Promise<{ tensors: Record<string, Tensor>; state: SavedState }> {
    const loaded = await loadSafetensors(file);
    const tensors = loaded.tensors;
    const meta = loaded.metadata ?? {};
    const rawState = meta['tensile.state'];
    if (typeof rawState !== 'string') {
      throw new TensorError('CHECKPOINT_CORRUPT', `${file}: metadata entry tensile.state is missing`);
    }
    if (meta['tensile.sha256'] !== digest(tensors)) {
      throw new TensorError('CHECKPOINT_CORRUPT', `${file}: tensor data does not match its SHA-256 (tensile.sha256)`);
    }
    let state: SavedState;
    try {
      state = JSON.parse(rawState) as SavedState;
    } catch (err) {
      throw new TensorError('CHECKPOINT_CORRUPT', `${file}: tensile.state is not JSON`, { cause: err });
    }
    return { tensors, state };
  }

  /**
   * Restores the newest valid checkpoint (corrupt ones are skipped with a warning naming the file). With a process
   * group, rank 0's choice is broadcast and every rank checks it restored the same step.
   */
  async restore(): Promise<RestoreInfo> {
    const skipped: string[] = [];
    let chosen: { file: string; tensors: Record<string, Tensor>; state: SavedState } | null = null;
    for (const file of listCheckpoints(this.dir)) {
      try {
        const { tensors, state } = await ElasticState.readCheckpoint(file);
        chosen = { file, tensors, state };
        break;
      } catch (err) {
        skipped.push(file);
        this.logger.warn(
          { file, err: err instanceof Error ? err.message : String(err) },
          `checkpoint ${file} is not valid; falling back to the previous one`,
        );
      }
    }
    if (chosen !== null) this.apply(chosen.tensors, chosen.state, chosen.file);
    const step = chosen?.state.step ?? 0;
    if (this.pg !== undefined && this.pg.worldSize > 1) {
      const buf = new Float64Array([step]);
      await this.pg.broadcast(buf, 0);
      if (buf[0] !== step) {
        throw new ElasticStateError(
          'RESTORE_MISMATCH',
          `rank ${this.rank} restored step ${step} but rank 0 restored step ${buf[0]}: is ${this.dir} shared by all ranks?`,
          { rank: this.rank },
        );
      }
    }
    if (chosen !== null) {
      this.lastSavedStep = chosen.state.step;
      this.logger.info(
        {
          file: chosen.file,
          step,
          epoch: this.epoch,
          savedWorldSize: chosen.state.worldSize,
          worldSize: this.worldSize,
        },
        'restored checkpoint',
      );
    }
    return {
      file: chosen?.file ?? null,
      step,
      epoch: this.epoch,
      savedWorldSize: chosen?.state.worldSize ?? null,
      skipped,
    };
  }

  private apply(tensors: Record<string, Tensor>, state: SavedState, file: string): void {
    for (const [name, obj] of this.tracked) {
      if (!(name in state.tracked)) {
        throw new TensorError('STATE_DICT_MISMATCH', `${file}: no saved state for tracked object ${name}`, {
          tensorName: name,
        });
      }
      obj.loadStateDict(unflatten(state.tracked[name], tensors, file) as never);
    }
    for (const [name, acc] of this.jsonTracked) {
      if (name in state.json) acc.set(state.json[name]);
    }
    this.step = state.step;
    this.epoch = state.epoch;
    // After a world-size change the position stays a global sample count; shard() re-slices the rest.
    this.samplesConsumed = state.samplesConsumed;
  }

  /** Removes the SIGTERM handler. */
  close(): void {
    if (this.sigtermInstalled) process.off('SIGTERM', this.onSigterm);
    this.sigtermInstalled = false;
  }
}
