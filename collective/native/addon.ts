// The one place that finds and requires the compiled addon (build/Release/tensile_native.node). Everything native is
// declared here as a typed face; other modules in collective/native/ use these declarations, never `require` directly.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** Opaque handle to a communicator owned by the addon (one native worker thread and one CUDA stream each). */
export interface NativeComm {
  readonly __brand: 'NativeComm';
}

/** Opaque handle to a shared-memory segment of an RPC transfer (src/xfer.cc). */
export interface NativeXferSeg {
  readonly __brand: 'NativeXferSeg';
}

/** Opaque handle to device memory owned by the addon. */
export interface NativeDeviceBuffer {
  readonly __brand: 'NativeDeviceBuffer';
}

export interface NativeBlasStatus {
  ok: boolean;
  name: string;
  path: string;
  reason: string;
  canSetThreads: boolean;
  hasSaxpy: boolean;
  hasSscal: boolean;
  tried: string[];
}

export interface NativeNcclStatus {
  ok: boolean;
  /** What is missing, in words, when !ok. */
  reason: string;
  ncclPath: string;
  cudartPath: string;
  ncclTried: string[];
  cudartTried: string[];
  /** NCCL_VERSION_CODE of the loaded library (e.g. 22809), 0 if not loaded. */
  ncclVersion: number;
  cudaRuntimeVersion: number;
  cudaDriverVersion: number;
  deviceCount: number;
}

/** Completion of a native operation as delivered to JS. */
export interface NativeOpResult {
  ok: boolean;
  /** 'TIMEOUT' | 'PEER_LOST' | 'ABORTED' | 'INVALID_ARGUMENT' | 'NCCL' | 'CUDA' | 'CLOSED' when !ok. */
  code: string;
  message: string;
}

/** Operation kinds as ncclSubmit takes them. `sendRecv` is ncclSend + ncclRecv to one peer in one NCCL group. */
export const NativeKind = {
  allreduce: 0,
  broadcast: 1,
  reduce: 2,
  allgather: 3,
  reduceScatter: 4,
  send: 5,
  recv: 6,
  barrier: 7,
  sendRecv: 8,
} as const;
export type NativeKind = (typeof NativeKind)[keyof typeof NativeKind];

/** Opaque handle to a shared-memory collective group (one native worker thread each; see src/shm.cc). */
export interface NativeShmGroup {
  readonly __brand: 'NativeShmGroup';
}

/** Where rank 0's segment can be opened: /proc/<pid>/fd/<fd>, checked against `token`. */
export interface NativeShmSource {
  readonly pid: number;
  readonly fd: number;
  readonly token: string;
}

/** Completion of a shared-memory operation; `peer` names the rank at fault (-1 when none). */
export interface NativeShmResult {
  ok: boolean;
  /** 'TIMEOUT' | 'PEER_LOST' | 'ABORTED' | 'INVALID_ARGUMENT' | 'CLOSED' when !ok. */
  code: string;
  message: string;
  peer: number;
}

/** Opaque handle to a socket-plane collective group (one native worker thread and a socket mesh each; src/net.cc). */
export interface NativeNetGroup {
  readonly __brand: 'NativeNetGroup';
}

/** Where a rank's socket plane listens, as published in the store; `token` is checked in the handshake. */
export interface NativeNetAddress {
  readonly host: string;
  readonly port: number;
  readonly token: string;
}

/** Operation kinds as shmSubmit and netSubmit take them (src/shm.cc and src/net.cc `Kind`). */
export const ShmKind = { allreduce: 0, broadcast: 1, reduce: 2, allgather: 3, reduceScatter: 4, barrier: 5 } as const;
export type ShmKind = (typeof ShmKind)[keyof typeof ShmKind];
/** dtype and reduce-op numbering of src/reduce.h. */
export const ShmDType = { float32: 0, float64: 1, int32: 2 } as const;
export const ShmOp = { sum: 0, prod: 1, min: 2, max: 3, avg: 4 } as const;

/** A send or receive buffer: device memory, or a host typed array (staged through device scratch memory). */
export type NativeBuffer = NativeDeviceBuffer | ArrayBufferView | undefined;

/**
 * The cblas_sgemm(CblasRowMajor, ...) call shape: C = alpha·op(A)·op(B) + beta·C, op(A) m×k, op(B) k×n, C m×n.
 * The one declaration of this signature: the addon, `Blas.sgemm` and the tensor kernels all take it.
 */
export type SgemmFn = (
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: Float32Array,
  lda: number,
  b: Float32Array,
  ldb: number,
  beta: number,
  c: Float32Array,
  ldc: number,
) => void;

export interface NativeAddon {
  abiVersion: number;
  blasLoad(): NativeBlasStatus;
  blasSgemm: SgemmFn;
  blasSaxpy(n: number, alpha: number, x: Float32Array, y: Float32Array): void;
  blasSscal(n: number, alpha: number, x: Float32Array): void;
  blasSetThreads(n: number): boolean;
  blasGetThreads(): number;

  ncclLoad(): NativeNcclStatus;
  /** 128 bytes; starts NCCL's bootstrap root listener in this process. */
  ncclGetUniqueId(): Uint8Array;
  /** Starts the communicator's worker thread, which runs ncclCommInitRankConfig(blocking=0) with a deadline. */
  ncclCommInit(
    uniqueId: Uint8Array,
    worldSize: number,
    rank: number,
    device: number,
    timeoutMs: number,
  ): { comm: NativeComm; ready: Promise<NativeOpResult> };
  /**
   * Queues one operation on the communicator's worker thread; never blocks. `count` is per rank for allgather and
   * reduceScatter (as NCCL takes it); offsets are bytes into device buffers. Throws TypeError/RangeError for bad
   * arguments (buffers too small, unknown dtype); resolves with { ok: false, code } on failure.
   */
  ncclSubmit(
    comm: NativeComm,
    kind: NativeKind,
    count: number,
    dtype: number,
    op: number,
    peer: number,
    timeoutMs: number,
    send: NativeBuffer,
    sendOffsetBytes: number,
    recv: NativeBuffer,
    recvOffsetBytes: number,
  ): Promise<NativeOpResult>;
  /** Waits for queued work, then ncclCommFinalize + ncclCommDestroy (abort on failure); the worker thread exits. */
  ncclCommDestroy(comm: NativeComm, timeoutMs?: number): Promise<NativeOpResult>;
  /** Asks the worker to ncclCommAbort now; pending and later operations complete with code 'ABORTED'. */
  ncclCommAbort(comm: NativeComm, reason: string): void;
  cudaMalloc(bytes: number, device: number): NativeDeviceBuffer;
  cudaFree(buf: NativeDeviceBuffer): void;
  /** Synchronous copies between device memory and host typed arrays (setup and checks, not the hot path). */
  cudaCopyToDevice(dst: NativeDeviceBuffer, dstOffsetBytes: number, src: ArrayBufferView): void;
  cudaCopyFromDevice(dst: ArrayBufferView, src: NativeDeviceBuffer, srcOffsetBytes: number): void;
  cudaBufferBytes(buf: NativeDeviceBuffer): number;

  /**
   * Creates (no `source`: rank 0) or opens (rank 0's `source`) the group's shared-memory segment, maps it and starts
   * the group's worker thread. Synchronous (a few system calls). Throws Error naming the failed call (memfd_create,
   * open of /proc/<pid>/fd/<fd>, mmap, a token/size mismatch), RangeError for bad arguments.
   */
  shmOpen(
    world: number,
    rank: number,
    slotBytes: number,
    smallBytes: number,
    spin: number,
    source?: NativeShmSource,
  ): NativeShmSource & { group: NativeShmGroup };
  /** Rank 0 closes its segment descriptor once every rank has mapped the segment. */
  shmSeal(group: NativeShmGroup): void;
  /**
   * Queues one collective on the group's worker thread; never blocks. `count` is elements of the whole buffer
   * (allreduce, broadcast, reduce) or per rank (allgather, reduceScatter). The buffers are held until it settles.
   * Throws TypeError/RangeError for bad arguments (a buffer too small, unknown kind/dtype/op).
   */
  shmSubmit(
    group: NativeShmGroup,
    kind: ShmKind,
    dtype: number,
    op: number,
    root: number,
    count: number,
    send: ArrayBufferView | undefined,
    recv: ArrayBufferView | undefined,
    timeoutMs: number,
  ): Promise<NativeShmResult>;
  /** Fails the group now: the running op and every queued and later op complete with `code`; peers are told. */
  shmFail(group: NativeShmGroup, code: string, message: string, peer: number): void;
  /** After every queued op: marks this rank as gone for the peers, unmaps the segment, ends the worker thread. */
  shmDestroy(group: NativeShmGroup): Promise<NativeShmResult>;

  /**
   * Binds the group's listening socket (port 0 on `host`) and starts its worker thread. Synchronous. Throws Error
   * naming the failed call (getaddrinfo, bind/listen, eventfd), RangeError for bad arguments.
   */
  netOpen(
    world: number,
    rank: number,
    host: string,
    smallBytes: number,
    segmentBytes: number,
  ): { group: NativeNetGroup; port: number; token: string };
  /**
   * Builds the mesh on the worker thread: dials every lower rank, accepts every higher one (token handshake).
   * `peers[rank]` is ignored. Resolves { ok: false, code: 'TIMEOUT' | 'PEER_LOST' } naming who could not be reached.
   */
  netConnect(group: NativeNetGroup, peers: (NativeNetAddress | null)[], timeoutMs: number): Promise<NativeShmResult>;
  /**
   * Queues one collective on the group's worker thread; never blocks. As shmSubmit; `divisor` is what avg divides
   * by (default: this group's world size). Throws TypeError/RangeError for bad arguments.
   */
  netSubmit(
    group: NativeNetGroup,
    kind: ShmKind,
    dtype: number,
    op: number,
    root: number,
    count: number,
    send: ArrayBufferView | undefined,
    recv: ArrayBufferView | undefined,
    timeoutMs: number,
    divisor?: number,
  ): Promise<NativeShmResult>;
  /** Fault tests: writes raw bytes on the data socket to `peer`, in queue order. */
  netInject(group: NativeNetGroup, peer: number, bytes: Uint8Array): Promise<NativeShmResult>;
  /** Fails the group now: the running op and every queued and later op complete with `code`. */
  netFail(group: NativeNetGroup, code: string, message: string, peer: number): void;
  /** After every queued op: closes the sockets and ends the worker thread. */
  netDestroy(group: NativeNetGroup): Promise<NativeShmResult>;
  /** The vectorised reduction kernel on the calling thread: dst = srcs[0] op srcs[1] ... (avg divides by `divisor`). */
  shmReduce(dtype: number, op: number, dst: ArrayBufferView, srcs: ArrayBufferView[], divisor: number): void;

  // Shared-memory transfers of RPC frames (src/xfer.cc; used by rpc/shm-transfer.ts). All synchronous.
  /** A memfd holding `token`, for peers to check that they can open this process's descriptors. Returns the fd. */
  xferProbe(token: Buffer): number;
  /** Whether /proc/<pid>/fd/<fd> opens here and holds `token`. Never throws for an unreachable descriptor. */
  xferCheck(pid: number, fd: number, token: Buffer): boolean;
  /** A fresh segment for frames of up to `frameBytes`, mapped here, already claimed. Throws naming the failing call. */
  xferSegCreate(frameBytes: number): { seg: NativeXferSeg; fd: number; ino: number; bytes: number };
  /** Claims an idle segment for a frame; false while a receiver still holds its last frame. */
  xferSegClaim(seg: NativeXferSeg): boolean;
  /** Copies the parts back to back into the segment's frame area; returns the bytes written. */
  xferSegWrite(seg: NativeXferSeg, parts: Buffer[]): number;
  /** Maps the peer's segment (checked by inode and size). Throws naming what did not match. */
  xferSegOpen(pid: number, fd: number, ino: number, bytes: number): NativeXferSeg;
  /**
   * The frame in place, as a SharedArrayBuffer (V8 does not count those toward its collection limits; xfer.cc says
   * why that matters) whose collection hands the segment back to its sender.
   */
  xferSegView(seg: NativeXferSeg, frameBytes: number): SharedArrayBuffer;
  /**
   * Bytes of frames handed out as views or receive buffers and not yet freed, what of them is reported to V8, and the
   * bytes of freed receive buffers kept for reuse (xfer.cc).
   */
  xferViewBytes(): { live: number; reported: number; cached: number };
  /** A receive buffer for one large frame from a socket (contents undefined), counted like a view (xfer.cc). */
  xferAlloc(bytes: number): SharedArrayBuffer;
  /** Unmaps the kept receive buffers freed more than `idleMs` ago; returns the bytes unmapped. */
  xferTrim(idleMs: number): number;
  /** Drops the handle's reference now (views keep the mapping); idempotent. Otherwise the GC does it. */
  xferSegDestroy(seg: NativeXferSeg): void;
  /** Closes a descriptor from xferProbe. */
  xferClose(fd: number): void;

  // JavaScript stacks of a busy main thread (src/stacks.cc; used by collective/js-stacks.ts).
  /**
   * On the main JS thread: remembers this isolate and starts a native thread serving the abstract Unix socket `name`;
   * a client sending "stack\n" gets the stack text, taken by a V8 interrupt within `timeoutMs`, or a line saying why
   * not. Idempotent for the same name; throws Error when installed under another name or thread, or naming the
   * failed socket call; RangeError for maxFrames outside [1, 1000] or timeoutMs outside [1, 60000].
   */
  stacksInstall(name: string, maxFrames: number, timeoutMs: number): void;
  /** Stops the server (also done by the environment's cleanup at exit). Idempotent. */
  stacksClose(): void;
}

export type AddonLoad = { ok: true; addon: NativeAddon; path: string } | { ok: false; reason: string };

let cached: AddonLoad | undefined;

/**
 * Candidate locations: TENSILE_NATIVE_ADDON alone when set (an explicit override), else beside the sources and
 * from dist/collective/native back to the source tree.
 */
export function addonCandidates(): string[] {
  const out: string[] = [];
  const env = process.env.TENSILE_NATIVE_ADDON;
  if (env !== undefined && env !== '') return [env];
  for (const rel of [
    './build/Release/tensile_native.node',
    '../../../collective/native/build/Release/tensile_native.node',
    '../../../../collective/native/build/Release/tensile_native.node',
  ]) {
    out.push(fileURLToPath(new URL(rel, import.meta.url)));
  }
  return out;
}

/** Loads the compiled addon once; never throws. */
export function loadAddon(): AddonLoad {
  if (cached !== undefined) return cached;
  const candidates = addonCandidates();
  const require = createRequire(import.meta.url);
  const failures: string[] = [];
  for (const path of candidates) {
    if (!existsSync(path)) {
      failures.push(`${path} (missing)`);
      continue;
    }
    try {
      const addon = require(path) as NativeAddon;
      cached = { ok: true, addon, path };
      return cached;
    } catch (err) {
      failures.push(`${path} (${(err as Error).message})`);
    }
  }
  cached = {
    ok: false,
    reason:
      `the tensile native addon is not built or cannot load (run \`npx node-gyp rebuild -C collective/native\`); ` +
      `tried: ${failures.join('; ')}`,
  };
  return cached;
}
