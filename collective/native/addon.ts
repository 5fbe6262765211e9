// The one place that finds and requires the compiled addon (build/Release/tensile_native.node). Everything native is
// declared here as a typed face; other modules in collective/native/ use these declarations, never `require` directly.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** Opaque handle to a communicator owned by the addon (one native worker thread and one CUDA stream each). */
export interface NativeComm {
  readonly __brand: 'NativeComm';
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

/**
 * A native operation, as the addon's `ncclSubmit` takes it. Pointers are device buffers or host typed arrays
 * (host arrays are copied to the communicator's device scratch, the op runs, and the result is copied back).
 */
export interface NativeOp {
  /** 0 allreduce, 1 broadcast, 2 reduce, 3 allgather, 4 reduceScatter, 5 send, 6 recv, 7 barrier, 8 sendrecv-self. */
  kind: number;
  /** Element count as NCCL takes it (per rank for allgather/reduceScatter). */
  count: number;
  /** ncclDataType_t value. */
  dtype: number;
  /** ncclRedOp_t value. */
  op: number;
  /** Root or peer rank. */
  peer: number;
  timeoutMs: number;
  send?: NativeDeviceBuffer | ArrayBufferView;
  recv?: NativeDeviceBuffer | ArrayBufferView;
  /** Byte offsets into device buffers. */
  sendOffset?: number;
  recvOffset?: number;
}

export interface NativeAddon {
  abiVersion: number;
  blasLoad(): NativeBlasStatus;
  blasSgemm(
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
  ): void;
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
  ncclSubmit(comm: NativeComm, op: NativeOp): Promise<NativeOpResult>;
  /** Waits for queued work, then ncclCommDestroy; the worker thread exits. */
  ncclCommDestroy(comm: NativeComm): Promise<NativeOpResult>;
  /** Asks the worker to ncclCommAbort now; pending and later operations complete with code 'ABORTED'. */
  ncclCommAbort(comm: NativeComm, reason: string): void;
  cudaMalloc(bytes: number, device: number): NativeDeviceBuffer;
  cudaFree(buf: NativeDeviceBuffer): void;
  /** Synchronous copies between device memory and host typed arrays (setup and checks, not the hot path). */
  cudaCopyToDevice(dst: NativeDeviceBuffer, dstOffsetBytes: number, src: ArrayBufferView): void;
  cudaCopyFromDevice(dst: ArrayBufferView, src: NativeDeviceBuffer, srcOffsetBytes: number): void;
  cudaBufferBytes(buf: NativeDeviceBuffer): number;
}

export type AddonLoad = { ok: true; addon: NativeAddon; path: string } | { ok: false; reason: string };

let cached: AddonLoad | undefined;

/** Candidate locations: an explicit override, beside the sources, and from dist/ back to the source tree. */
export function addonCandidates(): string[] {
  const out: string[] = [];
  const env = process.env.TENSILE_NATIVE_ADDON;
  if (env !== undefined && env !== '') out.push(env);
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
