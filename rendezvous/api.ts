// The rendezvous contract: who is in the job this round, their group ranks, and when the round ends.
//
// One agent per node holds one RendezvousHandler. The agent loop is:
//   const round = await handler.next({ signal })      // join the next round; resolves when it closes with us in it
//   ...start workers with round.groupRank / round.groupWorldSize / round.master...
//   handler.watch(listener)                            // learns of waiting nodes and of the round ending
//   on local worker failure: await handler.endRound({ reason })   // moves every agent to round + 1
//   on clean exit / SIGTERM: await handler.leave()    // revokes liveness so the others move on at once
//   when a worker reports a lost peer (PEER_LOST):     // a dead agent on a live host is evicted at once
//     await handler.probeMembers(500)                  //   instead of after its lease TTL
//
// Backends (`embedded-backend.ts`, `etcd-backend.ts`) are loaded lazily by name through `index.ts`'s
// `createRendezvousHandler`. Both pass `test/integration/rendezvous/contract.ts`.

/** What a node says about itself when it joins a round. */
export interface NodeDescriptor {
  /** Stable for the lifetime of the agent process: `<host>-<pid>-<random>`. */
  readonly nodeId: string;
  /** Host name shown in logs and status. */
  readonly host: string;
  /** Address other nodes use to reach this node's workers (MASTER_ADDR when this node is rank 0). */
  readonly addr: string;
  /** A port on `addr` that is free now and that the workers' rank 0 binds when this node is group rank 0. */
  readonly masterPort: number;
  /** Number of workers this node runs (LOCAL_WORLD_SIZE). */
  readonly localWorldSize: number;
}

export interface RoundMember extends NodeDescriptor {
  readonly groupRank: number;
}

/** The result of a closed round, identical on every member. */
export interface RoundInfo {
  readonly runId: string;
  /** Monotonic round number, starting at 0 for the job's first round. */
  readonly round: number;
  /** This node's group rank in the round. */
  readonly groupRank: number;
  readonly groupWorldSize: number;
  /** All members sorted by group rank. */
  readonly members: readonly RoundMember[];
  /** MASTER_ADDR/MASTER_PORT for the workers: the group-rank-0 member's addr and masterPort. */
  readonly master: { readonly addr: string; readonly port: number };
  /** Job-wide count of failure restarts so far (every endRound with kind 'failure' adds one). */
  readonly failureRestarts: number;
}

export type RendezvousEvent =
  /** Nodes that registered while this round runs and wait to be admitted. */
  | { readonly type: 'nodes-waiting'; readonly count: number }
  /**
   * The round this node is in has ended: a member failed, left, or was lost; the agent must stop its workers and
   * call next(). Reason `member-lost` with `byNodeId` = this node: it fenced itself out because no lease renewal
   * was confirmed within the lease TTL (cut off from the store, or the store is down): the others may move on
   * without it, so its workers must stop now (no split brain); next() waits until the store is reachable again.
   */
  | {
      readonly type: 'round-ended';
      readonly round: number;
      readonly reason: RoundEndReason;
      /** nodeId of the member that ended it, when known. */
      readonly byNodeId?: string;
      readonly detail?: string;
    }
  /** The backend lost its connection; running workers keep running while it reconnects. */
  | { readonly type: 'connection-lost'; readonly error: Error }
  | { readonly type: 'connection-restored' };

export type RoundEndReason = 'failure' | 'member-left' | 'member-lost' | 'scale-up' | 'closed';

export interface RendezvousConfig {
  readonly runId: string;
  readonly minNodes: number;
  readonly maxNodes: number;
  /** How long next() waits for at least minNodes before failing with RendezvousTimeoutError. */
  readonly joinTimeoutMs: number;
  /** After minNodes have joined, how long to wait for more before closing the round. */
  readonly lastCallTimeoutMs: number;
  /**
   * How long markClosed() may take to mark the job closed (torchrun's close_timeout, which bounds set_closed and
   * shutdown): store errors and lost races are retried until then, then it throws RendezvousTimeoutError.
   */
  readonly closeTimeoutMs: number;
  /** Liveness lease TTL: a crashed node is noticed after at most this long. */
  readonly leaseTtlMs: number;
  /** Timeout of a single backend read/write. */
  readonly readTimeoutMs: number;
  /** How long the backend may stay unreachable before next()/watch report a terminal error. */
  readonly outageTimeoutMs: number;
  /** When a node arrives during a running round: 'immediate' ends the round, 'deferred' waits for the next restart. */
  readonly scaleUpPolicy: 'immediate' | 'deferred';
}

export interface NextOptions {
  readonly signal?: AbortSignal;
  /**
   * The master port this node advertises from this round on (instead of self.masterPort): live recovery gives
   * every round a fresh free port, since the previous round's store may still be bound by a running worker.
   */
  readonly masterPort?: number;
}

export interface EndRoundOptions {
  readonly reason: Extract<RoundEndReason, 'failure' | 'scale-up'>;
  readonly detail?: string;
}

export interface RendezvousHandler {
  /** Backend name as given to --rdzv-backend. */
  readonly backend: string;
  readonly config: RendezvousConfig;
  readonly self: NodeDescriptor;

  /**
   * Joins the next round (round 0 at first, then current + 1) and resolves once it closes with this node in it.
   * Group ranks are sticky: a member of the previous round keeps its rank when it can.
   * Throws RendezvousTimeoutError past joinTimeoutMs below minNodes, RendezvousClosedError when the job was
   * closed, RendezvousConnectionError after outageTimeoutMs without the backend, or the signal's reason on abort.
   */
  next(options?: NextOptions): Promise<RoundInfo>;

  /** Subscribes to events for the rounds this node is in. Returns an unsubscribe function. Never throws. */
  watch(listener: (event: RendezvousEvent) => void): () => void;

  /** Ends the current round for every member (a local failure, or admitting waiting nodes). Idempotent per round. */
  endRound(options: EndRoundOptions): Promise<void>;

  /** Number of nodes registered as waiting for the next round. */
  numNodesWaiting(): number;

  /**
   * Faster loss detection. Connects once to the liveness port of every other node registered in the job (members
   * of the running round and waiting nodes; each handler listens on an ephemeral TCP port of its `addr` and
   * advertises it in its node key). A refused connection (ECONNREFUSED: the host answered, no agent listens any
   * more) means that agent process is dead: its lease is revoked, so every agent sees the node lost by watch at
   * once (a member: `round-ended` with reason `member-lost`), instead of after the lease TTL. A node that is slow,
   * stopped (the kernel still accepts), partitioned or on a vanished host (no answer within `timeoutMs`, or
   * unreachable) is left alone: its lease decides.
   * Call it when there is reason to suspect a peer (e.g. a worker reports a lost peer); it is not run
   * periodically. Resolves within about `timeoutMs` plus one store request with the nodeIds evicted (empty when
   * none); never rejects for a probe or revoke failure (logged), only RendezvousConfigError for a `timeoutMs` that
   * is not a finite number > 0. Nodes whose agent could not open a liveness port are not probed.
   */
  probeMembers(timeoutMs: number): Promise<readonly string[]>;

  /**
   * Marks the job finished (all workers succeeded): later next() calls anywhere throw RendezvousClosedError.
   * Retries store errors for up to config.closeTimeoutMs, then throws RendezvousTimeoutError.
   */
  markClosed(): Promise<void>;

  /** Clean leave: drop membership and liveness at once so the others react without waiting for a TTL. */
  leave(): Promise<void>;

  /**
   * Publishes this node's most recent recoveries (newest last) for `tensile status`: one leased put, so they vanish
   * with this node's lease. Call it once per recovery, never per step. Rejects on a store error (the caller logs it;
   * losing the record costs nothing but the status line).
   */
  publishRecoveries(recoveries: readonly RecoveryEntry[]): Promise<void>;

  /** Releases connections and timers. Does not leave (a crash-like stop); call leave() first for a clean one. */
  close(): Promise<void>;
}

/** How many recoveries a node publishes: its newest. */
export const PUBLISHED_RECOVERIES = 5;

/** One finished recovery of an agent, as `tensile status` shows it. */
export interface RecoveryEntry {
  /** What caused it: 'worker-failure' | 'membership' | 'hang'. */
  readonly cause: string;
  readonly path: 'live' | 'restart';
  readonly recoveryMs: number;
  /** Null when the workers send no heartbeats (the step is unknown). */
  readonly stepsLost: number | null;
  /** The round training resumed in. */
  readonly round: number;
  /** Epoch milliseconds when the recovery began. */
  readonly startedAtMs: number;
  readonly detail: string;
}

/** The recoveries one node published (RendezvousHandler.publishRecoveries). */
export interface NodeRecoveries {
  readonly nodeId: string;
  readonly host: string;
  readonly recoveries: readonly RecoveryEntry[];
}

/** A read-only picture of a job, for `tensile status`. */
export interface JobStatus {
  readonly runId: string;
  readonly round: number | null;
  readonly state: 'joining' | 'running' | 'closed' | 'unknown';
  readonly members: readonly RoundMember[];
  readonly waiting: readonly NodeDescriptor[];
  readonly failureRestarts: number;
  readonly minNodes?: number;
  readonly maxNodes?: number;
  /** What each live node published about its last recoveries (absent: none published). */
  readonly recoveries?: readonly NodeRecoveries[];
}

/**
 * The closed set of rendezvous error codes (docs/errors.md). Bare words: the class names the subsystem.
 *   TIMEOUT           no round formed within join_timeout
 *   CLOSED            the job was marked closed (finished); no further rounds
 *   CONNECTION        the backend stayed unreachable past outage_timeout, or could not be reached at start
 *   UNAVAILABLE       the backend cannot be reached right now (no lease yet); the call may be retried
 *   INVALID_ARGUMENT  bad endpoint, --rdzv-conf key or value, TLS or auth file, unknown backend
 *   STATE             a call the handler's state does not allow (next() after leave(), no job state to close)
 *   BUSY              next() while another next() of the same handler is in progress; the first one continues
 *   ABORTED           leave() or close() ended a next() that was waiting for a round
 */
export type RendezvousErrorCode =
  'TIMEOUT' | 'CLOSED' | 'CONNECTION' | 'UNAVAILABLE' | 'INVALID_ARGUMENT' | 'STATE' | 'BUSY' | 'ABORTED';

/** Which codes are terminal: the handler is finished (or the input is wrong) and retrying the call cannot help. */
export const RENDEZVOUS_TERMINAL: Readonly<Record<RendezvousErrorCode, boolean>> = {
  TIMEOUT: true,
  CLOSED: true,
  CONNECTION: true,
  UNAVAILABLE: false,
  INVALID_ARGUMENT: true,
  STATE: true,
  BUSY: false,
  ABORTED: true,
};

export class RendezvousError extends Error {
  readonly code: RendezvousErrorCode;
  readonly runId?: string;
  readonly round?: number;
  /** Terminal errors end the agent; the others may be retried by the caller (RENDEZVOUS_TERMINAL). */
  readonly terminal: boolean;
  constructor(
    code: RendezvousErrorCode,
    message: string,
    opts: { runId?: string; round?: number; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RendezvousError';
    this.code = code;
    this.runId = opts.runId;
    this.round = opts.round;
    this.terminal = RENDEZVOUS_TERMINAL[code];
  }
}

export class RendezvousTimeoutError extends RendezvousError {
  constructor(message: string, opts: { runId?: string; round?: number; cause?: unknown } = {}) {
    super('TIMEOUT', message, opts);
    this.name = 'RendezvousTimeoutError';
  }
}

export class RendezvousClosedError extends RendezvousError {
  constructor(message: string, opts: { runId?: string; round?: number } = {}) {
    super('CLOSED', message, opts);
    this.name = 'RendezvousClosedError';
  }
}

/** The backend cannot be reached: CONNECTION (terminal) by default, UNAVAILABLE when it is worth retrying now. */
export class RendezvousConnectionError extends RendezvousError {
  constructor(
    message: string,
    opts: { runId?: string; round?: number; cause?: unknown; code?: 'CONNECTION' | 'UNAVAILABLE' } = {},
  ) {
    const { code = 'CONNECTION', ...rest } = opts;
    super(code, message, rest);
    this.name = 'RendezvousConnectionError';
  }
}

/** Bad rendezvous configuration (INVALID_ARGUMENT): endpoint, --rdzv-conf, TLS or auth files, backend name. */
export class RendezvousConfigError extends RendezvousError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super('INVALID_ARGUMENT', message, opts);
    this.name = 'RendezvousConfigError';
  }
}

/** Backend-specific connection settings parsed from --rdzv-endpoint and --rdzv-conf. */
export interface BackendOptions {
  /** `host:port[,host:port...]` for etcd; ignored by embedded. */
  readonly endpoint: string;
  /** Remaining --rdzv-conf keys the backend understands (cacert, cert, key, user, password_file, ...). */
  readonly conf: Readonly<Record<string, string>>;
}

/** The tree's one logger contract (common/logger.ts), re-exported for callers of this contract. */
export type { Logger } from '../common/logger.js';
