// The rendezvous handler both backends share, written against the narrow RendezvousKv face (kv.ts).
//
// It stores the documents of job-keys.ts under the job's prefix, mirrors them through one prefix subscription into
// a JobView (job-view.ts, shared with the other handlers on the same store source), and decides with the pure
// functions of policy.ts; this file executes their decisions (transactions, local timers, events). Timers are
// local and monotonic (last call, join timeout, backup closer), never compared across machines.
// It is longer than ~500 lines because it is the rendezvous's central loop (STYLE habit 8): the RendezvousHandler
// methods, the reconcile step that runs after every watch batch, and the executors of each decision; the decisions,
// the documents and the mirror live in policy.ts, job-keys.ts and job-view.ts.
import {
  type JobStatus,
  type Logger,
  type NextOptions,
  type NodeDescriptor,
  type RecoveryEntry,
  type RendezvousConfig,
  type RendezvousEvent,
  type RendezvousHandler,
  type RoundEndReason,
  type RoundInfo,
  type RoundMember,
  type EndRoundOptions,
  PUBLISHED_RECOVERIES,
  RendezvousClosedError,
  RendezvousConfigError,
  RendezvousConnectionError,
  RendezvousError,
  RendezvousTimeoutError,
} from './api.js';
import { noopLogger } from '../common/logger.js';
import { withTimeout } from '../common/timeout.js';
import {
  type JobKeys,
  type MembersDoc,
  type NodeDoc,
  type RecoveriesDoc,
  type StateDoc,
  endedState,
  freshState,
  jobKeys,
} from './job-keys.js';
import { type JobView, sharedJobViews, statusFromView } from './job-view.js';
import type { KvConnectionEvent, KvStats, RendezvousKv } from './kv.js';
import {
  assignGroupRanks,
  decideCloser,
  decideCurrentRound,
  decideFence,
  decideJoining,
  decideLateJoin,
  decideRunning,
} from './policy.js';
import { evictDeadNodes } from './evict-dead-nodes.js';
import { type LivenessListener, openLivenessPort } from './liveness.js';
import { RoundTimer } from './round-timer.js';

interface PendingNext {
  resolve(info: RoundInfo): void;
  reject(err: unknown): void;
}

/** The job view this handler mirrors, and how to stop mirroring it. */
interface Mirror {
  readonly view: JobView;
  /** Stops listening and releases the shared view. */
  close(): void;
}

export class KvRendezvousHandler implements RendezvousHandler {
  private readonly keys: JobKeys;
  private readonly myKey: string;
  private readonly log: Logger;
  private mirror: Mirror | null = null;
  /** The last recoveries document this node published (put again with a new lease). */
  private recoveriesDoc: RecoveriesDoc | null = null;
  /** This agent's liveness port (probeMembers); null when it could not be opened. */
  private liveness: LivenessListener | null = null;
  /** view.deletions when we last found every member alive (-1: check again). */
  private seenDeletions = -1;

  // ---- this node in the job: what it registered for, what it waits for, what it runs in ----
  /** The round in our node key, once the put is issued; null = no key. */
  private myRound: number | null = null;
  /** NextOptions.masterPort of the latest next() call, advertised in this node's document instead of self.masterPort. */
  private advertisedMasterPort: number | null = null;
  private pending: PendingNext | null = null;
  private current: RoundInfo | null = null;
  /** The last round whose end this node asked for: next() does not resolve with it. */
  private selfEndedRound = -1;
  /** The last round this node fenced itself out of (its lease may have lapsed: decideFence). */
  private fencedRound = -1;
  private lastWaitingCount = 0;

  // ---- local timers and de-duplicated writes ----
  private readonly lastCall = new RoundTimer(() => this.reconcile());
  private readonly backup = new RoundTimer(() => this.reconcile());
  /** State revision at which we last tried to close / to end a round (one attempt per revision); -1: none. */
  private readonly attempted = { closing: -1, ending: -1 };
  private retryTimer: NodeJS.Timeout | null = null;
  /** Checks this node's lease while it runs in a round (checkFence). */
  private fenceTimer: NodeJS.Timeout | null = null;

  // ---- connection and lifetime ----
  private outage: { since: number; timer: NodeJS.Timeout } | null = null;
  private fatal: RendezvousError | null = null;
  private done = false;
  private readonly listeners = new Set<(e: RendezvousEvent) => void>();
  private readonly changeWaiters = new Set<() => void>();

  constructor(
    readonly backend: string,
    readonly config: RendezvousConfig,
    readonly self: NodeDescriptor,
    private readonly kv: RendezvousKv,
    logger: Logger = noopLogger,
  ) {
    this.keys = jobKeys(config.runId);
    this.myKey = this.keys.node(self.nodeId);
    this.log = logger;
  }

  /** Write counters of this handler's backend connection (for benchmarks). */
  get stats(): KvStats {
    return this.kv.stats;
  }

  private get view(): JobView | null {
    return this.mirror?.view ?? null;
  }

  private get state(): JobView['state'] {
    return this.mirror?.view.state ?? null;
  }

  /** Opens the liveness port, grants the lease, mirrors the job's keys and creates the job's state when absent. */
  async start(): Promise<void> {
    this.liveness = await openLivenessPort(this.self.addr, this.log);
    try {
      await this.attach();
    } catch (err) {
      // The caller closes the key-value face; what this handler opened is closed here.
      this.mirror?.close();
      this.mirror = null;
      await this.liveness?.close();
      this.liveness = null;
      throw err;
    }
  }

  private async attach(): Promise<void> {
    this.kv.onConnection((e) => this.onConnection(e));
    await this.kv.grantLease(this.config.leaseTtlMs);
    const { view, release } = await sharedJobViews(this.kv).acquire(this.keys.prefix);
    const unlisten = view.onChange(() => this.onChange());
    this.mirror = {
      view,
      close: () => {
        unlisten();
        release();
      },
    };
    const st = this.state;
    const fresh = freshState(this.config);
    if (st === null) {
      await this.kv.txn({
        compares: [{ key: this.keys.state, modRevision: 0 }],
        puts: [{ key: this.keys.state, value: JSON.stringify(fresh) }],
        deletes: [],
      });
    } else if (st.doc.closed && view.nodes.size === 0) {
      // A finished job with nobody left in it: the same rdzv id is being run again, so start it afresh
      // (torchrun's c10d store vanishes with the job; a closed etcd state must not block a re-run forever).
      this.log.info({ runId: this.config.runId }, 'rendezvous: previous job under this id finished; starting afresh');
      await this.kv.txn({
        compares: [{ key: this.keys.state, modRevision: st.modRevision }],
        puts: [{ key: this.keys.state, value: JSON.stringify(fresh) }],
        deletes: [this.keys.members],
      });
      // Let next() see the fresh state rather than the closed one still in the view.
      const deadline = Date.now() + this.config.readTimeoutMs;
      while (this.state?.doc.closed && Date.now() < deadline) await this.waitForChange();
    }
  }

  // ---- RendezvousHandler -------------------------------------------------------------------------------------

  next(options: NextOptions = {}): Promise<RoundInfo> {
    if (this.fatal) return Promise.reject(this.fatal);
    if (this.done)
      return Promise.reject(
        new RendezvousError('STATE', `rendezvous ${this.config.runId}: next() after leave() or close()`, {
          runId: this.config.runId,
        }),
      );
    if (this.pending)
      return Promise.reject(
        new RendezvousError('BUSY', `rendezvous ${this.config.runId}: next() is already in progress`, {
          runId: this.config.runId,
        }),
      );
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (options.masterPort !== undefined) this.advertisedMasterPort = options.masterPort;
    if (this.state?.doc.closed) return Promise.reject(this.closedError());
    return new Promise<RoundInfo>((resolve, reject) => {
      const joinTimer = setTimeout(() => this.onJoinTimeout(), this.config.joinTimeoutMs);
      const onAbort = (): void => {
        this.finishPending();
        this.withdraw();
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = (): void => {
        clearTimeout(joinTimer);
        signal?.removeEventListener('abort', onAbort);
      };
      this.pending = {
        resolve: (info) => {
          cleanup();
          resolve(info);
        },
        reject: (err) => {
          cleanup();
          reject(err);
        },
      };
      // Calling next() while our round still runs ends it for everyone (the agent restarts).
      const cur = this.current;
      if (cur !== null && this.state?.doc.phase === 'running' && this.state.doc.round === cur.round) {
        this.selfEndedRound = cur.round;
        this.current = null;
        void this.endRoundTxn(cur.round, 'member-left', 'rejoined').catch((err: unknown) =>
          this.log.warn({ err, runId: this.config.runId }, 'rendezvous: ending the round failed'),
        );
      }
      this.current = null;
      this.reconcile();
    });
  }

  watch(listener: (event: RendezvousEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async endRound(options: EndRoundOptions): Promise<void> {
    const cur = this.current;
    if (cur === null) return;
    this.selfEndedRound = cur.round;
    await this.endRoundTxn(cur.round, options.reason, options.detail);
  }

  /** What this handler's mirror says about the job (same shape as `tensile status`). */
  status(): JobStatus {
    const view = this.view;
    if (view === null)
      return { runId: this.config.runId, round: null, state: 'unknown', members: [], waiting: [], failureRestarts: 0 };
    return statusFromView(this.config.runId, view);
  }

  /**
   * Nodes waiting for a place in the next round. Like torchrun's, nodes beyond max (its "redundancy list") are not
   * counted: admitting them would not change the job, so they trigger no restart; they join when a place frees.
   */
  numNodesWaiting(): number {
    const doc = this.state?.doc;
    if (!doc || doc.phase !== 'running') return 0;
    const view = this.view!;
    const free = view.members.round === doc.round ? this.config.maxNodes - view.members.members.length : 0;
    return Math.max(0, Math.min(view.countAbove(doc.round), free));
  }

  /**
   * Bounded by config.closeTimeoutMs (torchrun's close_timeout: how long closing the rendezvous may take): store
   * errors and lost races are retried until then, and past it markClosed throws RendezvousTimeoutError (its cause
   * is the last store error, if any).
   */
  async probeMembers(timeoutMs: number): Promise<readonly string[]> {
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new RendezvousConfigError(`probeMembers(timeoutMs = ${timeoutMs}): expected a number of milliseconds > 0`);
    }
    const view = this.view;
    if (view === null || this.done) return [];
    return evictDeadNodes({
      view,
      kv: this.kv,
      selfNodeId: this.self.nodeId,
      timeoutMs,
      runId: this.config.runId,
      log: this.log,
    });
  }

  async markClosed(): Promise<void> {
    const cur = this.current;
    if (cur !== null) this.selfEndedRound = cur.round;
    const deadline = performance.now() + this.config.closeTimeoutMs;
    let lastError: unknown;
    for (;;) {
      const st = this.state;
      if (st === null)
        throw new RendezvousError('STATE', `rendezvous ${this.config.runId}: no job state to close`, {
          runId: this.config.runId,
        });
      if (st.doc.closed) return;
      const leftMs = deadline - performance.now();
      if (leftMs <= 0) {
        throw new RendezvousTimeoutError(
          `rendezvous ${this.config.runId}: could not mark the job closed within the close timeout (${this.config.closeTimeoutMs} ms)` +
            (lastError === undefined ? '' : `: ${lastError instanceof Error ? lastError.message : String(lastError)}`),
          { runId: this.config.runId, round: st.doc.round, cause: lastError },
        );
      }
      const doc: StateDoc = { ...st.doc, closed: true };
      try {
        const ok = await withTimeout(
          this.kv.txn({
            compares: [{ key: this.keys.state, modRevision: st.modRevision }],
            puts: [{ key: this.keys.state, value: JSON.stringify(doc) }],
            deletes: [],
          }),
          leftMs,
          'marking the job closed',
        );
        if (ok) return;
      } catch (err) {
        lastError = err;
      }
      await this.waitForChange();
    }
  }

  async leave(): Promise<void> {
    if (this.done) return;
    const cur = this.current;
    const st = this.state;
    if (cur !== null && st !== null && st.doc.phase === 'running' && st.doc.round === cur.round && !st.doc.closed) {
      this.selfEndedRound = cur.round;
      // One transaction: end the round (reason member-left) and drop our key, so the others move on at once.
      const doc = endedState(st.doc, { reason: 'member-left', byNodeId: this.self.nodeId });
      try {
        await this.kv.txn({
          compares: [{ key: this.keys.state, modRevision: st.modRevision }],
          puts: [{ key: this.keys.state, value: JSON.stringify(doc) }],
          deletes: [this.myKey],
        });
      } catch (err) {
        this.log.warn(
          { err, runId: this.config.runId },
          'rendezvous: leave could not end the round; revoking the lease',
        );
      }
    }
    this.current = null;
    if (this.pending) {
      const p = this.pending;
      this.finishPending();
      p.reject(
        new RendezvousError('ABORTED', `rendezvous ${this.config.runId}: left while waiting for a round`, {
          runId: this.config.runId,
        }),
      );
    }
    this.done = true;
    await this.kv.revokeLease();
    await this.shutdown();
  }

  async close(): Promise<void> {
    if (this.pending) {
      const p = this.pending;
      this.finishPending();
      p.reject(
        new RendezvousError('ABORTED', `rendezvous ${this.config.runId}: handler closed while waiting for a round`, {
          runId: this.config.runId,
        }),
      );
    }
    this.done = true;
    await this.shutdown();
  }

  // ---- mirror ------------------------------------------------------------------------------------------------

  private onChange(): void {
    for (const w of [...this.changeWaiters]) w();
    this.reconcile();
  }

  // ---- decisions ---------------------------------------------------------------------------------------------

  private reconcile(): void {
    if (this.done || this.fatal || this.state === null) return;
    const { doc } = this.state;
    this.reconcileCurrent(doc);
    if (this.pending) this.reconcilePending(doc);
  }

  /** Our running round: did it end, is a member gone, is someone waiting? */
  private reconcileCurrent(doc: StateDoc): void {
    const cur = this.current;
    if (cur === null) return;
    const ended = decideCurrentRound({ round: cur.round, state: doc });
    if (ended.kind === 'ended') {
      this.current = null;
      this.lastWaitingCount = 0;
      this.emit(ended.event);
      return;
    }
    const waiting = this.numNodesWaiting();
    if (waiting > this.lastWaitingCount) this.emit({ type: 'nodes-waiting', count: waiting });
    this.lastWaitingCount = waiting;
    const view = this.view!;
    let lost: string[] = [];
    if (view.deletions !== this.seenDeletions) {
      lost = view.lostMembers();
      if (lost.length === 0) this.seenDeletions = view.deletions;
    }
    const decision = decideRunning({
      lostMembers: lost,
      memberCount: view.members.members.length,
      waitingCount: waiting,
      config: this.config,
    });
    if (decision.kind === 'end-round') this.endRoundOnce(cur.round, decision.reason, decision.byNodeId);
  }

  /** Ends running round `round` on our own initiative, at most one attempt per state revision. */
  private endRoundOnce(round: number, reason: RoundEndReason, byNodeId?: string): void {
    if (this.attempted.ending === this.state!.modRevision) return;
    this.attempted.ending = this.state!.modRevision;
    void this.endRoundTxn(round, reason, undefined, byNodeId).catch((err: unknown) => {
      this.log.warn({ err, runId: this.config.runId, round }, 'rendezvous: ending the round failed; retrying');
      this.attempted.ending = -1;
      this.retrySoon();
    });
  }

  /** next() is waiting: take the running round, register for a round, or drive the joining round to close. */
  private reconcilePending(doc: StateDoc): void {
    if (doc.closed) {
      const p = this.pending!;
      this.finishPending();
      p.reject(this.closedError());
      return;
    }
    const r = doc.round;
    const view = this.view!;
    if (doc.phase === 'running') {
      const me = view.member(this.self.nodeId);
      const late = decideLateJoin({
        round: r,
        selfEndedRound: this.selfEndedRound,
        fencedRound: this.fencedRound,
        membersRound: view.members.round,
        registeredRound: this.myRound,
        isMember: me !== undefined,
        lostMembers: view.members.round === r ? view.lostMembers() : [],
      });
      if (late.kind === 'take-round') this.resolveRound(doc, me!);
      else if (late.kind === 'end-fenced-round') this.endRoundOnce(r, 'member-lost', this.self.nodeId);
      else if (late.kind === 'wait-next') {
        if (late.registerFor !== null) this.putMyNode(late.registerFor); // seen by the members as a waiting node
        if (late.endForLost !== null) this.endRoundOnce(r, 'member-lost', late.endForLost);
      }
      return;
    }
    if (this.myRound !== r) {
      this.putMyNode(r);
      return;
    }
    if (view.nodes.get(this.self.nodeId)?.doc.round !== r) return; // our put is not visible yet
    const joinedCount = view.countByRound.get(r) ?? 0;
    const decision = decideJoining({
      joinedCount,
      minNodes: this.config.minNodes,
      maxNodes: this.config.maxNodes,
      lastCallElapsed: this.lastCall.stateFor(r) === 'elapsed',
      everyLiveNodeJoined: r > 0 && joinedCount >= view.nodes.size,
    });
    if (decision.kind === 'wait-min') {
      this.lastCall.clear();
    } else if (decision.kind === 'last-call') {
      if (this.lastCall.stateFor(r) === 'none') this.lastCall.start(r, this.config.lastCallTimeoutMs);
    } else {
      const closer = decideCloser({
        isFirstJoiner: view.firstJoiner(r) === this.self.nodeId,
        backup: this.backup.stateFor(r),
        leaseTtlMs: this.config.leaseTtlMs,
      });
      if (closer.kind === 'close') this.closeRound(doc);
      else if (closer.kind === 'start-backup') this.backup.start(r, closer.delayMs);
    }
  }

  private closeRound(doc: StateDoc): void {
    const st = this.state!;
    if (this.attempted.closing === st.modRevision) return;
    this.attempted.closing = st.modRevision;
    const view = this.view!;
    const members = assignGroupRanks(
      view.joined(doc.round).map((v) => v.doc.node),
      view.members.members,
      this.config.maxNodes,
    );
    const next: StateDoc = {
      ...doc,
      phase: 'running',
      minNodes: this.config.minNodes,
      maxNodes: this.config.maxNodes,
    };
    this.kv
      .txn({
        compares: [{ key: this.keys.state, modRevision: st.modRevision }],
        puts: [
          { key: this.keys.state, value: JSON.stringify(next) },
          { key: this.keys.members, value: JSON.stringify({ round: doc.round, members } satisfies MembersDoc) },
        ],
        deletes: [],
      })
      .then((ok) => {
        this.log.debug(
          { runId: this.config.runId, round: doc.round, ok, size: members.length },
          'rendezvous: close round',
        );
      })
      .catch((err: unknown) => {
        this.log.warn(
          { err, runId: this.config.runId, round: doc.round },
          'rendezvous: closing the round failed; retrying',
        );
        this.attempted.closing = -1;
        this.retrySoon();
      });
  }

  private resolveRound(doc: StateDoc, me: RoundMember): void {
    const { members } = this.view!.members;
    const master = members[0]!;
    const info: RoundInfo = {
      runId: this.config.runId,
      round: doc.round,
      groupRank: me.groupRank,
      groupWorldSize: members.length,
      members,
      master: { addr: master.addr, port: master.masterPort },
      failureRestarts: doc.failureRestarts,
    };
    this.current = info;
    this.lastWaitingCount = 0;
    this.seenDeletions = -1; // check liveness of the new members against the mirror once
    const p = this.pending!;
    this.finishPending();
    this.checkFence();
    p.resolve(info);
    // A member may already be gone or a node waiting: look again now that we are in the round.
    queueMicrotask(() => this.reconcile());
  }

  /**
   * While this node runs in a round, checks its lease (decideFence) and re-arms itself; when the lease may have
   * lapsed, the node leaves the round on its own: `round-ended` (member-lost, by itself) tells the agent to stop its
   * workers, and next() takes no round until the store is reachable again (then it ends that round if it still
   * runs, and registers anew).
   */
  private checkFence(): void {
    if (this.fenceTimer !== null) clearTimeout(this.fenceTimer);
    this.fenceTimer = null;
    const cur = this.current;
    if (cur === null || this.done) return;
    const decision = decideFence({
      nowMs: performance.now(),
      leaseConfirmedAtMs: this.kv.leaseConfirmedAtMs(),
      leaseTtlMs: this.config.leaseTtlMs,
    });
    if (decision.kind === 'renewed') {
      this.fenceTimer = setTimeout(() => this.checkFence(), decision.checkAgainInMs);
      this.fenceTimer.unref();
      return;
    }
    this.current = null;
    this.lastWaitingCount = 0;
    this.selfEndedRound = Math.max(this.selfEndedRound, cur.round);
    this.fencedRound = cur.round;
    const detail =
      `no lease renewal confirmed by ${this.kv.endpoint} within the lease TTL (${this.config.leaseTtlMs} ms): ` +
      'this node may be cut off and the others may move on without it';
    this.log.warn({ runId: this.config.runId, round: cur.round }, `rendezvous: leaving the round: ${detail}`);
    this.emit({ type: 'round-ended', round: cur.round, reason: 'member-lost', byNodeId: this.self.nodeId, detail });
  }

  private putMyNode(round: number): void {
    this.myRound = round;
    const node =
      this.advertisedMasterPort === null ? this.self : { ...this.self, masterPort: this.advertisedMasterPort };
    const value: NodeDoc = {
      node,
      round,
      ...(this.liveness === null ? {} : { livenessPort: this.liveness.port }),
    };
    this.kv
      .txn({ compares: [], puts: [{ key: this.myKey, value: JSON.stringify(value), leased: true }], deletes: [] })
      .catch((err: unknown) => {
        this.log.warn({ err, runId: this.config.runId, round }, 'rendezvous: joining failed; retrying');
        if (this.myRound === round) this.myRound = null;
        this.retrySoon();
      });
  }

  /** Moves running round `round` to joining round + 1. Resolves once that happened (by us or anyone). */
  private async endRoundTxn(round: number, reason: RoundEndReason, detail?: string, byNodeId?: string): Promise<void> {
    const deadline = Date.now() + this.config.readTimeoutMs;
    for (;;) {
      const st = this.state;
      if (st === null || st.doc.closed || st.doc.round !== round || st.doc.phase !== 'running') return;
      const doc = endedState(st.doc, { reason, detail, byNodeId: byNodeId ?? this.self.nodeId });
      const ok = await this.kv.txn({
        compares: [{ key: this.keys.state, modRevision: st.modRevision }],
        puts: [{ key: this.keys.state, value: JSON.stringify(doc) }],
        deletes: [],
      });
      if (ok) return;
      if (Date.now() > deadline) return;
      await this.waitForChange();
    }
  }

  // ---- timers, connection, teardown --------------------------------------------------------------------------

  private onJoinTimeout(): void {
    const p = this.pending;
    if (!p) return;
    const r = this.state?.doc.round ?? 0;
    const joined = this.view?.countByRound.get(r) ?? 0;
    this.finishPending();
    this.withdraw();
    p.reject(
      new RendezvousTimeoutError(
        `rendezvous ${this.config.runId}: round ${r} did not close with this node within the join timeout (${this.config.joinTimeoutMs} ms): ` +
          `${joined} node(s) joined, min is ${this.config.minNodes}, max is ${this.config.maxNodes}`,
        { runId: this.config.runId, round: r },
      ),
    );
  }

  /** Drops our node key (after a join timeout or abort) so we do not count as joined or waiting. */
  private withdraw(): void {
    if (this.myRound === null) return;
    this.myRound = null;
    this.kv
      .txn({ compares: [], puts: [], deletes: [this.myKey] })
      .catch((err: unknown) => this.log.warn({ err, runId: this.config.runId }, 'rendezvous: withdrawing failed'));
  }

  private onConnection(e: KvConnectionEvent): void {
    if (this.done || this.fatal) return;
    if (e.type === 'lost') {
      if (this.outage) return;
      this.log.warn(
        { err: e.error, runId: this.config.runId, endpoint: this.kv.endpoint },
        'rendezvous: connection lost',
      );
      const timer = setTimeout(() => this.onOutageTimeout(e.error), this.config.outageTimeoutMs);
      this.outage = { since: Date.now(), timer };
      this.emit({ type: 'connection-lost', error: e.error });
    } else if (e.type === 'restored') {
      if (!this.outage) return;
      clearTimeout(this.outage.timer);
      this.outage = null;
      this.log.info({ runId: this.config.runId }, 'rendezvous: connection restored');
      this.emit({ type: 'connection-restored' });
      this.reconcile();
    } else {
      // New lease: our key went with the old one. Re-register for the round we were in (others may have ended it).
      if (this.myRound !== null) this.putMyNode(this.myRound);
      if (this.recoveriesDoc !== null) this.putRecoveries().catch(() => {});
    }
  }

  async publishRecoveries(recoveries: readonly RecoveryEntry[]): Promise<void> {
    this.recoveriesDoc = {
      v: 1,
      nodeId: this.self.nodeId,
      host: this.self.host,
      recoveries: recoveries.slice(-PUBLISHED_RECOVERIES),
    };
    if (this.done) return;
    await this.putRecoveries();
  }

  private async putRecoveries(): Promise<void> {
    const doc = this.recoveriesDoc;
    if (doc === null) return;
    try {
      await this.kv.txn({
        compares: [],
        puts: [{ key: this.keys.recoveries(this.self.nodeId), value: JSON.stringify(doc), leased: true }],
        deletes: [],
      });
    } catch (err) {
      this.log.warn({ err, runId: this.config.runId }, 'rendezvous: could not publish recoveries');
      throw err;
    }
  }

  private onOutageTimeout(cause: Error): void {
    const err = new RendezvousConnectionError(
      `rendezvous ${this.config.runId}: etcd at ${this.kv.endpoint} unreachable for longer than the outage timeout (${this.config.outageTimeoutMs} ms)`,
      { runId: this.config.runId, round: this.current?.round, cause },
    );
    this.fatal = err;
    this.emit({ type: 'connection-lost', error: err });
    if (this.pending) {
      const p = this.pending;
      this.finishPending();
      p.reject(err);
    }
  }

  private retrySoon(): void {
    if (this.retryTimer !== null || this.done) return;
    const delayMs = 100 + Math.random() * 200;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.reconcile();
    }, delayMs);
  }

  private waitForChange(): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, 200);
      const waiters = this.changeWaiters;
      function done(): void {
        clearTimeout(t);
        waiters.delete(done);
        resolve();
      }
      waiters.add(done);
    });
  }

  private finishPending(): void {
    this.pending = null;
    this.lastCall.clear();
    this.backup.clear();
  }

  private closedError(): RendezvousClosedError {
    return new RendezvousClosedError(`rendezvous ${this.config.runId} is closed (the job finished)`, {
      runId: this.config.runId,
      round: this.state?.doc.round,
    });
  }

  private emit(event: RendezvousEvent): void {
    for (const l of [...this.listeners]) {
      try {
        l(event);
      } catch (err) {
        this.log.error({ err, runId: this.config.runId }, 'rendezvous: event listener threw');
      }
    }
  }

  private async shutdown(): Promise<void> {
    this.finishPending();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.fenceTimer) clearTimeout(this.fenceTimer);
    if (this.outage) clearTimeout(this.outage.timer);
    this.outage = null;
    this.mirror?.close();
    this.mirror = null;
    await this.liveness?.close();
    this.liveness = null;
    await this.kv.close();
  }
}
