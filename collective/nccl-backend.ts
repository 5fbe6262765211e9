// The NCCL process group. Host typed arrays are staged through device scratch memory (copy in, run, copy out) on
// the communicator's native worker thread; `group.device` runs the same collectives on device buffers without host
// copies. Every operation returns a promise and never blocks the event loop; the worker's watchdog aborts the
// communicator on a timeout or an asynchronous NCCL error, so a dead peer rejects pending operations instead of
// hanging them (see docs/gpu.md).
// Longer than ~500 lines on purpose: the ProcessGroup contract's ten operations, each staging host buffers through
// device memory with its own checks; the shared parts are helpers in this file and reduce-ops.ts.
import {
  CollectiveError,
  type CollectiveErrorCode,
  type CollectiveOptions,
  type DType,
  type HostBuffer,
  type ProcessGroup,
  type ReduceOp,
  type Store,
} from './api.js';
import { noopLogger, type Logger } from '../common/logger.js';
import {
  NativeKind,
  type NativeAddon,
  type NativeBuffer,
  type NativeComm,
  type NativeDeviceBuffer,
  type NativeOpResult,
} from './native/addon.js';
import { loadNative } from './native/loader.js';

/** ncclDataType_t values. */
export const NCCL_DTYPE: Readonly<Record<DType, number>> = {
  int32: 2,
  float16: 6,
  float32: 7,
  float64: 8,
  bfloat16: 9,
};
/** ncclRedOp_t values. */
export const NCCL_OP: Readonly<Record<ReduceOp, number>> = { sum: 0, prod: 1, max: 2, min: 3, avg: 4 };
/**
 * The ncclRedOp_t to send for `op` on a communicator of `worldSize` ranks. On one rank, avg is the identity and is
 * sent as sum: NCCL 2.28.3's single-rank reduceScatter with ncclAvg left the last element of odd-sized outputs
 * unwritten on an H100 (see docs/gpu.md), while sum is a plain copy there.
 */
export function ncclOpFor(op: ReduceOp, worldSize: number): number {
  return worldSize === 1 && op === 'avg' ? NCCL_OP.sum : NCCL_OP[op];
}

const DTYPE_BYTES: Readonly<Record<DType, number>> = { int32: 4, float16: 2, float32: 4, float64: 8, bfloat16: 2 };

export interface NcclGroupOptions {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly store: Store;
  readonly timeoutMs: number;
  readonly logger?: Logger;
  /** CUDA device; default localRank. */
  readonly device?: number;
  /** Store key prefix for the unique-id exchange; default 'tensile/nccl'. */
  readonly storePrefix?: string;
  /** Called once after this world group is destroyed or aborted (closes the store it was built on); not sub-groups. */
  readonly onClose?: () => Promise<void>;
}

/** Device memory owned by the addon; freed by `free()` or when garbage-collected. */
export interface DeviceBuffer {
  readonly bytes: number;
  /** @internal the addon's handle */
  readonly handle: NativeDeviceBuffer;
}

export interface DeviceOpOptions {
  readonly dtype: DType;
  readonly op?: ReduceOp;
  readonly timeoutMs?: number;
  readonly sendOffsetBytes?: number;
  readonly recvOffsetBytes?: number;
}

/**
 * Collectives on device buffers (no host copies). `count` is in elements; for allgather it is the per-rank input
 * count, for reduceScatter the per-rank output count (NCCL's convention). Passing the same buffer (and offsets) as
 * send and recv runs in place. The buffers must not be freed before the promise settles.
 */
export interface NcclDeviceOps {
  readonly cudaDevice: number;
  alloc(bytes: number): DeviceBuffer;
  free(buf: DeviceBuffer): void;
  /** Synchronous copies (setup and checks; they block the JS thread for the copy). */
  upload(dst: DeviceBuffer, src: ArrayBufferView, dstOffsetBytes?: number): void;
  download(dst: ArrayBufferView, src: DeviceBuffer, srcOffsetBytes?: number): void;
  allreduce(send: DeviceBuffer, recv: DeviceBuffer, count: number, opts: DeviceOpOptions): Promise<void>;
  broadcast(send: DeviceBuffer, recv: DeviceBuffer, count: number, root: number, opts: DeviceOpOptions): Promise<void>;
  reduce(send: DeviceBuffer, recv: DeviceBuffer, count: number, root: number, opts: DeviceOpOptions): Promise<void>;
  allgather(send: DeviceBuffer, recv: DeviceBuffer, count: number, opts: DeviceOpOptions): Promise<void>;
  reduceScatter(send: DeviceBuffer, recv: DeviceBuffer, count: number, opts: DeviceOpOptions): Promise<void>;
  send(buf: DeviceBuffer, count: number, peer: number, opts: DeviceOpOptions): Promise<void>;
  recv(buf: DeviceBuffer, count: number, peer: number, opts: DeviceOpOptions): Promise<void>;
  /** ncclSend + ncclRecv with one peer in one NCCL group (works with oneself). */
  sendRecv(send: DeviceBuffer, recv: DeviceBuffer, count: number, peer: number, opts: DeviceOpOptions): Promise<void>;
}

export interface NcclProcessGroup extends ProcessGroup {
  readonly backend: 'nccl';
  /** NCCL_VERSION_CODE of the loaded libnccl, e.g. 22809. */
  readonly ncclVersion: number;
  readonly device: NcclDeviceOps;
  /** ncclSend + ncclRecv with one peer in one NCCL group, host buffers (works with oneself). */
  sendRecv<T extends HostBuffer>(send: T, recv: T, peer: number, opts?: CollectiveOptions): Promise<T>;
}

const KNOWN_CODES = new Set<CollectiveErrorCode>(['PEER_LOST', 'TIMEOUT', 'ABORTED', 'CLOSED', 'INVALID_ARGUMENT']);

/** Maps a native result to a CollectiveError. NCCL/CUDA failures that are not a peer's loss become ABORTED. */
export function nativeError(r: NativeOpResult, op: string, rank: number): CollectiveError {
  const code: CollectiveErrorCode = KNOWN_CODES.has(r.code as CollectiveErrorCode)
    ? (r.code as CollectiveErrorCode)
    : 'ABORTED';
  const detail = code === r.code ? r.message : `${r.code} error: ${r.message}`;
  return new CollectiveError(code, `nccl ${op} on rank ${rank}: ${detail}`, { rank, op });
}

/** The dtype of a host buffer: inferred from its type, or opts.dtype for Uint16Array (float16/bfloat16). */
export function hostDType(buf: unknown, dtype: DType | undefined, op: string): DType {
  let actual: DType | undefined;
  if (buf instanceof Float32Array) actual = 'float32';
  else if (buf instanceof Float64Array) actual = 'float64';
  else if (buf instanceof Int32Array) actual = 'int32';
  else if (buf instanceof Uint16Array) {
    if (dtype !== 'float16' && dtype !== 'bfloat16') {
      throw new CollectiveError(
        'INVALID_ARGUMENT',
        `${op}: a Uint16Array needs opts.dtype 'float16' or 'bfloat16' (got ${JSON.stringify(dtype)})`,
        { op },
      );
    }
    return dtype;
  } else {
    const name = (buf as object | null | undefined)?.constructor?.name ?? String(buf);
    throw new CollectiveError(
      'INVALID_ARGUMENT',
      `${op}: buffer of type ${name}: expected Float32Array, Float64Array, Int32Array or Uint16Array`,
      { op },
    );
  }
  if (dtype !== undefined && dtype !== actual) {
    throw new CollectiveError('INVALID_ARGUMENT', `${op}: dtype '${dtype}' does not match the ${actual} buffer given`, {
      op,
    });
  }
  return actual;
}

/** The addon throws TypeError/RangeError for bad buffers; callers see INVALID_ARGUMENT like every other bad input. */
function translate(err: unknown, op: string): unknown {
  if (err instanceof TypeError || err instanceof RangeError) {
    return new CollectiveError('INVALID_ARGUMENT', `${op}: ${err.message}`, { op, cause: err });
  }
  return err;
}

function checkOp(op: unknown, name: string): ReduceOp {
  if (typeof op === 'string' && op in NCCL_OP) return op as ReduceOp;
  throw new CollectiveError(
    'INVALID_ARGUMENT',
    `${name}: reduce op ${JSON.stringify(op)}: expected one of ${Object.keys(NCCL_OP).join(', ')}`,
    { op: name },
  );
}

function checkRank(r: unknown, worldSize: number, what: string, op: string): number {
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 0 || r >= worldSize) {
    throw new CollectiveError(
      'INVALID_ARGUMENT',
      `${op}: ${what} ${String(r)}: expected an integer in [0, ${worldSize})`,
      {
        op,
      },
    );
  }
  return r;
}

function checkTimeout(ms: number, op: string): number {
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new CollectiveError('INVALID_ARGUMENT', `${op}: timeoutMs ${ms}: expected a positive number`, { op });
  }
  return ms;
}

const groupSeq = new WeakMap<Store, number>();

/** Per-store sequence number: every rank creates groups in the same order, so the numbers agree without talking. */
function nextSeq(store: Store): number {
  const n = (groupSeq.get(store) ?? 0) + 1;
  groupSeq.set(store, n);
  return n;
}

interface CommCtx {
  addon: NativeAddon;
  comm: NativeComm;
  rank: number;
  worldSize: number;
  cudaDevice: number;
  ncclVersion: number;
  timeoutMs: number;
  store: Store;
  prefix: string;
  logger: Logger;
}

async function initComm(o: {
  rank: number;
  worldSize: number;
  device: number;
  timeoutMs: number;
  store: Store;
  key: string;
  logger: Logger;
}): Promise<{ addon: NativeAddon; comm: NativeComm; ncclVersion: number }> {
  const { addon, status } = loadNative();
  let id: Uint8Array;
  if (o.rank === 0) {
    // NCCL's bootstrap root listener runs in this process until every rank has joined.
    id = addon.ncclGetUniqueId();
    await o.store.set(o.key, id);
  } else {
    id = await o.store.get(o.key, o.timeoutMs);
  }
  if (id.byteLength !== 128) {
    throw new CollectiveError(
      'STORE',
      `nccl: unique id at store key ${o.key} has ${id.byteLength} bytes, expected 128`,
    );
  }
  const { comm, ready } = addon.ncclCommInit(id, o.worldSize, o.rank, o.device, o.timeoutMs);
  const r = await ready;
  if (!r.ok) throw nativeError(r, 'init', o.rank);
  o.logger.info(
    { rank: o.rank, worldSize: o.worldSize, device: o.device, nccl: status.ncclVersion },
    'collective: NCCL communicator ready',
  );
  return { addon, comm, ncclVersion: status.ncclVersion };
}

/**
 * Creates the NCCL process group: rank 0 makes the unique id and publishes it through the store, every rank
 * initialises a non-blocking communicator on device `localRank` (or `device`). Rejects with BACKEND_UNAVAILABLE
 * (no NCCL/CUDA/device here), INVALID_ARGUMENT, TIMEOUT (a rank did not join within timeoutMs) or STORE.
 */
export async function createNcclGroup(opts: NcclGroupOptions): Promise<NcclProcessGroup> {
  const { rank, worldSize, localRank, store } = opts;
  const logger = opts.logger ?? noopLogger;
  if (!Number.isInteger(worldSize) || worldSize < 1) {
    throw new CollectiveError('INVALID_ARGUMENT', `nccl: worldSize ${worldSize}: expected an integer ≥ 1`);
  }
  checkRank(rank, worldSize, 'rank', 'nccl');
  const timeoutMs = checkTimeout(opts.timeoutMs, 'nccl');
  const { status } = loadNative();
  const cudaDevice = opts.device ?? localRank;
  if (!Number.isInteger(cudaDevice) || cudaDevice < 0 || cudaDevice >= status.deviceCount) {
    throw new CollectiveError(
      'INVALID_ARGUMENT',
      `nccl: CUDA device ${cudaDevice} (from ${opts.device !== undefined ? 'device' : 'LOCAL_RANK'}): ` +
        `${status.deviceCount} device(s) visible, expected 0..${status.deviceCount - 1}`,
      { rank },
    );
  }
  const prefix = opts.storePrefix ?? 'tensile/nccl';
  const key = `${prefix}/${nextSeq(store)}/uid`;
  const c = await initComm({ rank, worldSize, device: cudaDevice, timeoutMs, store, key, logger });
  return new NcclGroup({ ...c, rank, worldSize, cudaDevice, timeoutMs, store, prefix, logger }, opts.onClose);
}

class NcclGroup implements NcclProcessGroup {
  readonly backend = 'nccl' as const;
  readonly dataPlane = 'nccl' as const;
  readonly rank: number;
  readonly worldSize: number;
  readonly timeoutMs: number;
  readonly ncclVersion: number;
  readonly device: NcclDeviceOps;
  private readonly ctx: CommCtx;
  private state: 'open' | 'destroyed' | 'aborted' = 'open';
  private abortReason = '';

  constructor(
    ctx: CommCtx,
    private readonly onClose?: () => Promise<void>,
  ) {
    this.ctx = ctx;
    this.rank = ctx.rank;
    this.worldSize = ctx.worldSize;
    this.timeoutMs = ctx.timeoutMs;
    this.ncclVersion = ctx.ncclVersion;
    this.device = makeDeviceOps(this, ctx);
  }

  /** Throws when the group can no longer run operations. */
  check(op: string): void {
    if (this.state === 'aborted') {
      throw new CollectiveError('ABORTED', `nccl ${op}: the group was aborted (${this.abortReason})`, {
        rank: this.rank,
        op,
      });
    }
    if (this.state === 'destroyed') {
      throw new CollectiveError('CLOSED', `nccl ${op}: the group was destroyed`, { rank: this.rank, op });
    }
  }

  /** Submits one host-buffer operation and maps its result. */
  private async run(
    op: string,
    kind: NativeKind,
    count: number,
    dtype: DType,
    redOp: ReduceOp,
    peer: number,
    send: NativeBuffer,
    recv: NativeBuffer,
    opts: CollectiveOptions | undefined,
  ): Promise<void> {
    this.check(op);
    const timeoutMs = checkTimeout(opts?.timeoutMs ?? this.timeoutMs, op);
    let pending: Promise<NativeOpResult>;
    try {
      pending = this.ctx.addon.ncclSubmit(
        this.ctx.comm,
        kind,
        count,
        NCCL_DTYPE[dtype],
        ncclOpFor(redOp, this.worldSize),
        peer,
        timeoutMs,
        send,
        0,
        recv,
        0,
      );
    } catch (err) {
      throw translate(err, op);
    }
    const r = await pending;
    if (!r.ok) throw nativeError(r, op, this.rank);
  }

  async allreduce<T extends HostBuffer>(buf: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    const dtype = hostDType(buf, opts?.dtype, 'allreduce');
    await this.run('allreduce', NativeKind.allreduce, buf.length, dtype, checkOp(op, 'allreduce'), 0, buf, buf, opts);
    return buf;
  }

  async allreduceInto<T extends HostBuffer>(
    input: T,
    output: T,
    op: ReduceOp = 'sum',
    opts?: CollectiveOptions,
  ): Promise<T> {
    const dtype = hostDType(input, opts?.dtype, 'allreduceInto');
    sameShape(input, output, input.length, 'allreduceInto', 'output');
    const o = checkOp(op, 'allreduceInto');
    await this.run('allreduceInto', NativeKind.allreduce, input.length, dtype, o, 0, input, output, opts);
    return output;
  }

  async broadcast<T extends HostBuffer>(buf: T, root: number, opts?: CollectiveOptions): Promise<T> {
    const dtype = hostDType(buf, opts?.dtype, 'broadcast');
    checkRank(root, this.worldSize, 'root', 'broadcast');
    await this.run('broadcast', NativeKind.broadcast, buf.length, dtype, 'sum', root, buf, buf, opts);
    return buf;
  }

  async reduce<T extends HostBuffer>(buf: T, root: number, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    const dtype = hostDType(buf, opts?.dtype, 'reduce');
    checkRank(root, this.worldSize, 'root', 'reduce');
    await this.run('reduce', NativeKind.reduce, buf.length, dtype, checkOp(op, 'reduce'), root, buf, buf, opts);
    return buf;
  }

  async allgather<T extends HostBuffer>(input: T, output: T, opts?: CollectiveOptions): Promise<T> {
    const dtype = hostDType(input, opts?.dtype, 'allgather');
    sameShape(input, output, input.length * this.worldSize, 'allgather', 'output');
    await this.run('allgather', NativeKind.allgather, input.length, dtype, 'sum', 0, input, output, opts);
    return output;
  }

  async reduceScatter<T extends HostBuffer>(
    input: T,
    output: T,
    op: ReduceOp = 'sum',
    opts?: CollectiveOptions,
  ): Promise<T> {
    const dtype = hostDType(input, opts?.dtype, 'reduceScatter');
    if (input.length !== output.length * this.worldSize) {
      throw new CollectiveError(
        'INVALID_ARGUMENT',
        `reduceScatter: input has ${input.length} elements; expected output.length (${output.length}) × worldSize (${this.worldSize})`,
        { op: 'reduceScatter' },
      );
    }
    sameShape(input, output, output.length, 'reduceScatter', 'output');
    const o = checkOp(op, 'reduceScatter');
    await this.run('reduceScatter', NativeKind.reduceScatter, output.length, dtype, o, 0, input, output, opts);
    return output;
  }

  /** NCCL has no tags: sends and receives between two ranks match in the order they are issued. */
  async send(buf: HostBuffer, dst: number, opts?: CollectiveOptions & { tag?: number }): Promise<void> {
    const dtype = hostDType(buf, opts?.dtype, 'send');
    this.peer(dst, 'send');
    await this.run('send', NativeKind.send, buf.length, dtype, 'sum', dst, buf, undefined, opts);
  }

  async recv<T extends HostBuffer>(buf: T, src: number, opts?: CollectiveOptions & { tag?: number }): Promise<T> {
    const dtype = hostDType(buf, opts?.dtype, 'recv');
    this.peer(src, 'recv');
    await this.run('recv', NativeKind.recv, buf.length, dtype, 'sum', src, undefined, buf, opts);
    return buf;
  }

  async sendRecv<T extends HostBuffer>(send: T, recv: T, peer: number, opts?: CollectiveOptions): Promise<T> {
    const dtype = hostDType(send, opts?.dtype, 'sendRecv');
    sameShape(send, recv, send.length, 'sendRecv', 'recv');
    checkRank(peer, this.worldSize, 'peer', 'sendRecv');
    await this.run('sendRecv', NativeKind.sendRecv, send.length, dtype, 'sum', peer, send, recv, opts);
    return recv;
  }

  async barrier(opts?: CollectiveOptions): Promise<void> {
    await this.run('barrier', NativeKind.barrier, 1, 'int32', 'sum', 0, undefined, undefined, opts);
  }

  async newGroup(ranks: readonly number[]): Promise<ProcessGroup | null> {
    this.check('newGroup');
    const seen = new Set<number>();
    for (const r of ranks) {
      checkRank(r, this.worldSize, 'rank', 'newGroup');
      if (seen.has(r))
        throw new CollectiveError('INVALID_ARGUMENT', `newGroup: rank ${r} listed twice`, { op: 'newGroup' });
      seen.add(r);
    }
    const seq = nextSeq(this.ctx.store);
    const mine = ranks.indexOf(this.rank);
    if (mine < 0) return null;
    const key = `${this.ctx.prefix}/${seq}/uid`;
    const c = await initComm({
      rank: mine,
      worldSize: ranks.length,
      device: this.ctx.cudaDevice,
      timeoutMs: this.timeoutMs,
      store: this.ctx.store,
      key,
      logger: this.ctx.logger,
    });
    return new NcclGroup({ ...this.ctx, ...c, rank: mine, worldSize: ranks.length });
  }

  async destroy(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'destroyed';
    try {
      const r = await this.ctx.addon.ncclCommDestroy(this.ctx.comm, this.timeoutMs);
      if (!r.ok) throw nativeError(r, 'destroy', this.rank);
    } finally {
      await this.onClose?.();
    }
  }

  abort(reason = 'abort()'): void {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    this.abortReason = reason;
    this.ctx.addon.ncclCommAbort(this.ctx.comm, reason);
    void this.onClose?.().catch(() => {});
  }

  private peer(p: number, op: string): void {
    checkRank(p, this.worldSize, 'peer', op);
    if (p === this.rank) {
      throw new CollectiveError(
        'INVALID_ARGUMENT',
        `${op}: peer ${p} is this rank; use sendRecv to exchange with oneself`,
        {
          op,
        },
      );
    }
  }
}

function sameShape(a: HostBuffer, b: HostBuffer, want: number, op: string, name: string): void {
  if (a.constructor !== b.constructor) {
    throw new CollectiveError(
      'INVALID_ARGUMENT',
      `${op}: ${name} is a ${b.constructor.name}, the input a ${a.constructor.name}; they must match`,
      { op },
    );
  }
  if (b.length !== want) {
    throw new CollectiveError('INVALID_ARGUMENT', `${op}: ${name} has ${b.length} elements; expected ${want}`, { op });
  }
}

function makeDeviceOps(group: NcclGroup, ctx: CommCtx): NcclDeviceOps {
  const { addon, comm, rank, worldSize } = ctx;
  const submit = (
    op: string,
    kind: NativeKind,
    count: number,
    peer: number,
    role: 'root' | 'peer' | null,
    send: DeviceBuffer | undefined,
    recv: DeviceBuffer | undefined,
    o: DeviceOpOptions,
  ): Promise<void> => {
    let pending: Promise<NativeOpResult>;
    try {
      group.check(op);
      if (role !== null) checkRank(peer, worldSize, role, op);
      const dtype = NCCL_DTYPE[o.dtype];
      if (dtype === undefined) {
        throw new CollectiveError('INVALID_ARGUMENT', `${op}: dtype ${JSON.stringify(o.dtype)} is not supported`, {
          op,
        });
      }
      if (!Number.isInteger(count) || count < 0) {
        throw new CollectiveError('INVALID_ARGUMENT', `${op}: count ${count}: expected an integer ≥ 0`, { op });
      }
      const redOp = ncclOpFor(checkOp(o.op ?? 'sum', op), worldSize);
      pending = addon.ncclSubmit(
        comm,
        kind,
        count,
        dtype,
        redOp,
        peer,
        o.timeoutMs ?? ctx.timeoutMs,
        send?.handle,
        o.sendOffsetBytes ?? 0,
        recv?.handle,
        o.recvOffsetBytes ?? 0,
      );
    } catch (err) {
      return Promise.reject(translate(err, op));
    }
    return pending.then((r) => {
      if (!r.ok) throw nativeError(r, op, rank);
    });
  };
  return {
    cudaDevice: ctx.cudaDevice,
    alloc(bytes) {
      if (!Number.isInteger(bytes) || bytes <= 0) {
        throw new CollectiveError('INVALID_ARGUMENT', `alloc: bytes ${bytes}: expected a positive integer`);
      }
      return { bytes, handle: addon.cudaMalloc(bytes, ctx.cudaDevice) };
    },
    free(buf) {
      addon.cudaFree(buf.handle);
    },
    upload(dst, src, off = 0) {
      addon.cudaCopyToDevice(dst.handle, off, src);
    },
    download(dst, src, off = 0) {
      addon.cudaCopyFromDevice(dst, src.handle, off);
    },
    allreduce: (s, r, n, o) => submit('allreduce', NativeKind.allreduce, n, 0, null, s, r, o),
    broadcast: (s, r, n, rt, o) => submit('broadcast', NativeKind.broadcast, n, rt, 'root', s, r, o),
    reduce: (s, r, n, rt, o) => submit('reduce', NativeKind.reduce, n, rt, 'root', s, r, o),
    allgather: (s, r, n, o) => submit('allgather', NativeKind.allgather, n, 0, null, s, r, o),
    reduceScatter: (s, r, n, o) => submit('reduceScatter', NativeKind.reduceScatter, n, 0, null, s, r, o),
    send: (b, n, p, o) => submit('send', NativeKind.send, n, p, 'peer', b, undefined, o),
    recv: (b, n, p, o) => submit('recv', NativeKind.recv, n, p, 'peer', undefined, b, o),
    sendRecv: (s, r, n, p, o) => submit('sendRecv', NativeKind.sendRecv, n, p, 'peer', s, r, o),
  };
}

export { DTYPE_BYTES as NCCL_DTYPE_BYTES };
