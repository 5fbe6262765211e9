// The seam between RpcAgent and what is built on it (RRefs, distributed autograd): the narrow face of the agent
// they may use, and the hooks an extension plugs into the agent. Types only: the agent implements AgentHost and
// calls the hooks; extensions and rref.ts import this file, never agent.ts.

import type { CallOptions, Logger, RegisterOptions, RpcFunction, WorkerRef } from './api.js';
import type { DecodeHook, EncodeHook } from './codec.js';

/** What RRefs and extensions may use of their agent. */
export interface AgentHost {
  readonly name: string;
  readonly rank: number;
  readonly logger: Logger;
  /** Running, or shutting down (calls still allowed). */
  readonly isActive: boolean;
  peerName(rank: number): string;
  /** True once the peer's stream closed (or the rank is unknown). */
  isPeerLost(rank: number): boolean;
  /**
   * Sends a request of wire type `type` and resolves with the decoded answer. Rejects with TIMEOUT, PEER_LOST,
   * SHUTDOWN, or the remote error. `timeoutMs` 0 = none; undefined = the agent's default.
   */
  request(rank: number, type: number, body: unknown, timeoutMs?: number, what?: string): Promise<unknown>;
  /** A control request retried on TIMEOUT with jittered backoff; the receiver must treat it as idempotent. */
  requestWithRetries(rank: number, type: number, body: unknown, maxRetries?: number): Promise<unknown>;
  rpcAsync<T = unknown>(to: WorkerRef, fn: string, args?: unknown[], opts?: CallOptions): Promise<T>;
  registerFunction(name: string, fn: RpcFunction, opts?: RegisterOptions<unknown[]>): void;
}

/**
 * Hooks an extension (distributed autograd) plugs into an agent with `agent.use(ext)`. Every hook is optional;
 * the agent calls them on its own thread of control and never waits on anything but the promises they return.
 */
export interface AgentExtension {
  /** Names this extension's entry in the metadata a user call carries (unique per agent). */
  readonly key: string;
  /** Wraps values sent to `dest` (the first hook that returns a tagged object wins). */
  encodeHook?(dest: number): EncodeHook | undefined;
  /** Turns tagged objects from `src` back into values; returns undefined for tags it does not own. */
  decodeHook?(src: number): DecodeHook | undefined;
  /**
   * Handles a request type the agent does not serve itself (any type in 1..63 that rpc/frame.ts's MsgType does not
   * give to the agent); undefined = not this extension's type.
   */
  handle?(type: number, src: number, body: unknown): Promise<unknown> | undefined;
  /** Metadata sent along with a user call (CALL, REMOTE) made in the current async context; undefined = none. */
  callMetadata?(): unknown;
  /** Runs the handling of a user call that carried `metadata` (this extension's entry) inside what it asks for. */
  enter?<T>(metadata: unknown, src: number, fn: () => Promise<T>): Promise<T>;
  onPeerLost?(rank: number): void;
}
