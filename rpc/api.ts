// The RPC contract: remote calls between workers, remote references (RRefs), distributed autograd.
//
// Layout:
//   frame.ts           pure wire format: frames (header + JSON body + raw tensor bytes) packed into gRPC segments
//   codec.ts           values <-> JSON body + tensor list (typed arrays, tensors, RRefs travel beside the body)
//   grpc-transport.ts  one gRPC server per worker and ONE long-lived bidirectional stream per peer pair
//   data-channel.ts    raw sockets beside gRPC for bulk frames (same host: Unix socket or TCP)
//   agent.ts           RpcAgent: the parts' life cycle, the face users and extensions call
//   bootstrap.ts       joining the world, one stream per peer pair;  worker-table.ts  members and connections
//   dispatcher.ts      requests out, answers matched by id (pending-calls.ts), incoming requests served
//   shutdown-barrier.ts  graceful shutdown's barrier on rank 0;  function-registry.ts  the served functions
//   agent-extension.ts the agent's face for RRefs and extensions, and the extension hooks
//   rref.ts            RRef owner/user bookkeeping (PyTorch's fork/confirm/delete protocol)
//   dist-autograd.ts   distributed autograd and DistributedOptimizer, an agent extension
//   index.ts           module-level API (initRpc, rpcSync, rpcAsync, remote, shutdown, ...) over a default agent

import type { Logger } from '../common/logger.js';

/** The tree's one logger contract (common/logger.ts), re-exported for callers of this contract. */
export { noopLogger, type Logger } from '../common/logger.js';

export interface WorkerInfo {
  readonly name: string;
  /** The worker's rank in this RPC world (PyTorch's WorkerInfo.id). */
  readonly id: number;
}

/** A worker named by name, rank, or WorkerInfo. */
export type WorkerRef = string | number | WorkerInfo;

export interface TlsOptions {
  /** PEM files. With `caFile` set, both sides verify the peer against it (mutual TLS). */
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
}

export interface InitRpcOptions {
  /** Default `worker<rank>`; must match ^[A-Za-z0-9_:-]{1,127}$. */
  readonly name?: string;
  /** Default env RANK. */
  readonly rank?: number;
  /** Default env WORLD_SIZE. */
  readonly worldSize?: number;
  /** Default env MASTER_ADDR, else 127.0.0.1. */
  readonly masterAddr?: string;
  /** Default env MASTER_PORT. The RPC bootstrap listens on `bootstrapPort` (default MASTER_PORT + 1, env TENSILE_RPC_PORT). */
  readonly masterPort?: number;
  readonly bootstrapPort?: number;
  /** Address other workers use to reach this one; default 127.0.0.1 when the master is loopback, else the hostname. */
  readonly advertiseAddr?: string;
  /** Default per-call timeout; 0 = no timeout. Default 60 000. */
  readonly rpcTimeoutMs?: number;
  /** How long init waits for the whole world to join. Default 60 000. */
  readonly initTimeoutMs?: number;
  readonly tls?: TlsOptions;
  /**
   * Data channel: once a peer pair's streams are up, frames travel on raw sockets beside gRPC (a Unix socket on the
   * same host, else TCP), one per direction; gRPC remains the control plane and the fallback. Default on; off with
   * TLS (the sockets are not encrypted). Env TENSILE_RPC_DATA_CHANNEL=0 turns it off. `unixSocket` (env
   * TENSILE_RPC_DATA_UDS=0|1) offers a Unix socket to peers on the same host; by default it is offered when shared
   * memory is (large frames then skip the socket, and a Unix socket's writes cost less than loopback TCP's; without
   * shared memory TCP's autotuned buffers gave more bandwidth for large frames). `sharedMemory` (default true, env
   * TENSILE_RPC_SHM=0 turns it off): frames of 256 KiB and more between workers of one host go through shared memory
   * (the native addon's memfd segments) instead of the socket, when both sides have the addon.
   */
  readonly dataChannel?: { readonly enabled?: boolean; readonly unixSocket?: boolean; readonly sharedMemory?: boolean };
  readonly logger?: Logger;
}

export interface CallOptions {
  /** Per-call timeout; 0 = no timeout; default the agent's rpcTimeoutMs. */
  readonly timeoutMs?: number;
}

export interface ShutdownOptions {
  /** Wait for outstanding work on every worker (a barrier) before closing. Default true. */
  readonly graceful?: boolean;
  /** Bound on the graceful part; after it the agent closes anyway. Default 30 000. */
  readonly timeoutMs?: number;
}

export interface RegisterOptions<A extends unknown[]> {
  /** A zod-like schema checked against the argument array before the function runs. */
  readonly validate?: { safeParse(v: unknown): { success: true; data: unknown } | { success: false; error: unknown } };
  /** Marker for the argument type only. */
  readonly _args?: A;
}

/** The closed set of RPC error codes (docs/errors.md). Bare words: the class names the subsystem. */
export type RpcErrorCode =
  | 'NOT_INITIALIZED'
  | 'ALREADY_INITIALIZED'
  /** Bad options or arguments, here or in the callee's argument schema (`worker` names the callee then). */
  | 'INVALID_ARGUMENT'
  | 'UNKNOWN_WORKER'
  | 'UNKNOWN_FUNCTION'
  | 'REMOTE_ERROR'
  | 'TIMEOUT'
  | 'PEER_LOST'
  | 'SHUTDOWN'
  | 'PROTOCOL'
  | 'BOOTSTRAP'
  | 'RREF_INVALID'
  | 'AUTOGRAD';

/**
 * Which codes are terminal. Only TIMEOUT may be retried as it is (tensile's own control messages do, with backoff);
 * PEER_LOST and SHUTDOWN mean the RPC world has to be re-established (initRpc in the next round) to reach that
 * worker again; the rest are the caller's or the callee's bug.
 */
export const RPC_TERMINAL: Readonly<Record<RpcErrorCode, boolean>> = {
  NOT_INITIALIZED: true,
  ALREADY_INITIALIZED: true,
  INVALID_ARGUMENT: true,
  UNKNOWN_WORKER: true,
  UNKNOWN_FUNCTION: true,
  REMOTE_ERROR: true,
  TIMEOUT: false,
  PEER_LOST: true,
  SHUTDOWN: true,
  PROTOCOL: true,
  BOOTSTRAP: true,
  RREF_INVALID: true,
  AUTOGRAD: true,
};

/** Every failure of this package; `terminal` comes from RPC_TERMINAL. */
export class RpcError extends Error {
  readonly code: RpcErrorCode;
  readonly terminal: boolean;
  /** The worker at the other end, when known. */
  readonly worker?: string;
  constructor(code: RpcErrorCode, message: string, opts: { worker?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RpcError';
    this.code = code;
    // A code from a newer peer that this side does not know is terminal.
    this.terminal = RPC_TERMINAL[code] ?? true;
    this.worker = opts.worker;
  }
}

/** A user function threw on the callee: its type (constructor name), message and stack come along. */
export class RemoteError extends RpcError {
  readonly remoteType: string;
  readonly remoteStack: string;
  constructor(worker: string, remoteType: string, remoteMessage: string, remoteStack: string) {
    super('REMOTE_ERROR', `On ${worker}: ${remoteType}: ${remoteMessage}`, { worker });
    this.name = 'RemoteError';
    this.remoteType = remoteType;
    this.remoteStack = remoteStack;
  }
}

export type RpcFunction = (...args: never[]) => unknown;
