// The collectives contract: process groups for worker code.
//
// `initProcessGroup` (in index.ts) reads the worker environment that `tensile run` sets (RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT, LOCAL_RANK), connects to the bootstrap store served by rank 0, and returns a
// ProcessGroup of the chosen backend (`tcp-backend.ts`, `nccl-backend.ts`), loaded lazily by name.
// Both backends pass `test/integration/collective/contract.ts`.

import type { Logger } from '../common/logger.js';

export type Backend = 'auto' | 'tcp' | 'nccl';
export type ReduceOp = 'sum' | 'prod' | 'min' | 'max' | 'avg';
export type DType = 'float32' | 'float64' | 'int32' | 'float16' | 'bfloat16';

/** Host buffers the TCP backend accepts. float16/bfloat16 travel as Uint16Array (NCCL only). */
export type HostBuffer = Float32Array | Float64Array | Int32Array | Uint16Array;

export interface CollectiveOptions {
  /** Per-operation timeout; default the group's timeoutMs. */
  readonly timeoutMs?: number;
  /** Required for Uint16Array buffers ('float16' | 'bfloat16'); otherwise inferred from the array type. */
  readonly dtype?: DType;
}

export interface ProcessGroup {
  readonly backend: 'tcp' | 'nccl';
  /**
   * Where the bytes move: 'js' (the TCP transport in JavaScript), 'shm' (the native shared-memory plane for ranks on
   * one host; tcp backend, the world group and its sub-groups of two or more ranks), 'net' (native peer sockets across
   * hosts, hierarchical with shared memory within a host; tcp backend, the world group and its sub-groups that span
   * hosts) or 'nccl'.
   */
  readonly dataPlane: 'js' | 'shm' | 'net' | 'nccl';
  readonly rank: number;
  readonly worldSize: number;
  readonly timeoutMs: number;

  /** In place: every rank's `buf` ends as the reduction over all ranks. */
  allreduce<T extends HostBuffer>(buf: T, op?: ReduceOp, opts?: CollectiveOptions): Promise<T>;
  /** Out of place variant: `input` unchanged, result in `output` (same length and type). */
  allreduceInto<T extends HostBuffer>(input: T, output: T, op?: ReduceOp, opts?: CollectiveOptions): Promise<T>;
  broadcast<T extends HostBuffer>(buf: T, root: number, opts?: CollectiveOptions): Promise<T>;
  /** Only `root`'s buffer holds the result afterwards; others' are unspecified (left unchanged by tcp). */
  reduce<T extends HostBuffer>(buf: T, root: number, op?: ReduceOp, opts?: CollectiveOptions): Promise<T>;
  /** `output.length === input.length * worldSize`; rank r's input lands at offset r * input.length. */
  allgather<T extends HostBuffer>(input: T, output: T, opts?: CollectiveOptions): Promise<T>;
  /** `input.length === output.length * worldSize`; rank r receives the reduction of chunk r. */
  reduceScatter<T extends HostBuffer>(input: T, output: T, op?: ReduceOp, opts?: CollectiveOptions): Promise<T>;
  send(buf: HostBuffer, dst: number, opts?: CollectiveOptions & { tag?: number }): Promise<void>;
  recv<T extends HostBuffer>(buf: T, src: number, opts?: CollectiveOptions & { tag?: number }): Promise<T>;
  barrier(opts?: CollectiveOptions): Promise<void>;

  /** A sub-group of the given global ranks (every rank of this group must call it, with the same list). */
  newGroup(ranks: readonly number[]): Promise<ProcessGroup | null>;

  /** Waits for pending operations, then closes connections. */
  destroy(): Promise<void>;
  /** Tears down at once; pending and later operations reject with CollectiveError('ABORTED'). */
  abort(reason?: string): void;
}

export interface InitOptions {
  readonly backend?: Backend;
  readonly timeoutMs?: number;
  /** Defaults from the environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK. */
  readonly rank?: number;
  readonly worldSize?: number;
  readonly masterAddr?: string;
  readonly masterPort?: number;
  readonly localRank?: number;
  readonly logger?: Logger;
}

/** The closed set of collective error codes (docs/errors.md); PEER_LOST, TIMEOUT and ABORTED are public API. */
export type CollectiveErrorCode =
  'PEER_LOST' | 'TIMEOUT' | 'ABORTED' | 'CLOSED' | 'INVALID_ARGUMENT' | 'BACKEND_UNAVAILABLE' | 'STORE';

/**
 * Every collective error is terminal: retrying the same call cannot succeed. Bad input stays bad; after PEER_LOST,
 * TIMEOUT, ABORTED or CLOSED the group (and its sub-groups) is torn down; the store and mesh bootstrap already
 * retried until their deadline before reporting TIMEOUT or STORE. Recovery is a new group in the next round (the
 * agent's restart, or live recovery), never a retry on the same group.
 */
export const COLLECTIVE_TERMINAL: Readonly<Record<CollectiveErrorCode, boolean>> = {
  PEER_LOST: true,
  TIMEOUT: true,
  ABORTED: true,
  CLOSED: true,
  INVALID_ARGUMENT: true,
  BACKEND_UNAVAILABLE: true,
  STORE: true,
};

export class CollectiveError extends Error {
  readonly code: CollectiveErrorCode;
  /** From COLLECTIVE_TERMINAL. */
  readonly terminal: boolean;
  readonly rank?: number;
  /** The peer whose loss or silence caused this error, when known. */
  readonly peerRank?: number;
  readonly op?: string;
  constructor(
    code: CollectiveErrorCode,
    message: string,
    opts: { rank?: number; peerRank?: number; op?: string; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CollectiveError';
    this.code = code;
    this.terminal = COLLECTIVE_TERMINAL[code];
    this.rank = opts.rank;
    this.peerRank = opts.peerRank;
    this.op = opts.op;
  }
}

/**
 * Bootstrap key-value store (PyTorch TCPStore semantics), served by rank 0 at MASTER_ADDR:MASTER_PORT.
 * Every call has a timeout (default the store's) and rejects with CollectiveError('STORE' | 'TIMEOUT').
 */
export interface Store {
  set(key: string, value: Uint8Array | string): Promise<void>;
  /** Waits until the key exists, then returns its value. */
  get(key: string, timeoutMs?: number): Promise<Uint8Array>;
  /** Waits until all keys exist. */
  wait(keys: readonly string[], timeoutMs?: number): Promise<void>;
  /** Atomically adds `delta` to an integer counter (missing = 0) and returns the new value. */
  add(key: string, delta: number): Promise<number>;
  /** Sets `key` to `desired` if its current value equals `expected` (empty expected = key absent); returns the value now stored. */
  compareSet(key: string, expected: Uint8Array | string, desired: Uint8Array | string): Promise<Uint8Array>;
  delete(key: string): Promise<boolean>;
  close(): Promise<void>;
}
