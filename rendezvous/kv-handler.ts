// The rendezvous handler both backends share, written against the narrow RendezvousKv face (kv.ts).
//
// Keys under the job prefix `/tensile/v1/<runId>/`:
//   state            JSON StateDoc (small): round number, phase (joining|running), restarts, closed, why the last
//                    round ended. Written only by transactions that compare its mod revision: joining → running
//                    (close a round), running → joining r+1 (end a round), and markClosed.
//   members          JSON MembersDoc: the members of the last closed round with their ranks. Written once per round,
//                    in the same transaction that closes it (so both arrive in one watch event batch); it is also
//                    what sticky ranks are computed from.
//   nodes/<nodeId>   JSON { node, round }, attached to the agent's lease: "I take part in round `round`". One put per
//                    agent per round. While round r runs, a key with round r+1 is a waiting node. Its deletion (lease
//                    expiry or revoke) is how the others learn that a node is gone.
// Every handler mirrors these keys through one prefix watch and decides with the pure functions in policy.ts; timers
// are local and monotonic (last call, join timeout), never compared across machines.
import { noopLogger, type Logger } from '../common/logger.js';
import {
  type JobStatus,
  type NextOptions,
  type NodeDescriptor,
  type RendezvousConfig,
  type RendezvousEvent,
  type RendezvousHandler,
  type RoundEndReason,
  type RoundInfo,
  type RoundMember,
  type EndRoundOptions,
  RendezvousClosedError,
  RendezvousConnectionError,
  RendezvousError,
  RendezvousTimeoutError,
} from './api.js';
import { type JobView, statusFromView } from './job-view.js';
import type { KvConnectionEvent, KvStats, RendezvousKv } from './kv.js';
import { assignGroupRanks, decideJoining, decideRunning } from './policy.js';

export interface StateDoc {
  readonly v: 1;
  readonly round: number;
  readonly phase: 'joining' | 'running';
  readonly closed: boolean;
  readonly failureRestarts: number;
  readonly minNodes: number;
  readonly maxNodes: number;
  readonly lastEnd?: {
    readonly round: number;
    readonly reason: RoundEndReason;
    readonly byNodeId?: string;
    readonly detail?: string;
  };
}

export interface MembersDoc {
  readonly round: number;
  readonly members: readonly RoundMember[];
}

export interface NodeDoc {
  readonly node: NodeDescriptor;
  readonly round: number;
}

export const jobPrefix = (runId: string): string => `/tensile/v1/${runId}/`;

interface PendingNext {
  resolve(info: RoundInfo): void;
  reject(err: unknown): void;
}

export class KvRendezvousHandler implements RendezvousHandler {
  private readonly prefix: string;
  private readonly stateKey: string;
  private readonly membersKey: string;
  private readonly nodesPrefix: string;
  private readonly myKey: string;
  private readonly log: Logger;
  /** The job's keys as the watch has delivered them; shared with other handlers on the same connection. */
  private view: JobView | null = null;
  private releaseView: (() => void) | null = null;
  private unlistenView: (() => void) | null = null;
  /** view.deletions when we last found every member alive (-1: check again). */
  private seenDeletions = -1;

  /** The round in our node key, once the put is issued; null = no key. */
  private myRound: number | null = null;
  /** NextOptions.masterPort of the latest next() call, advertised in this node's document instead of self.masterPort. */
  private advertisedMasterPort: number | null = null;
  private pending: PendingNext | null = null;
  private current: RoundInfo | null = null;
  /** The last round whose end this node asked for: next() does not resolve with it. */
  private selfEndedRound = -1;
  private lastCall: { round: number; timer: NodeJS.Timeout | null; elapsed: boolean } | null = null;
  private backup: { round: number; timer: NodeJS.Timeout | null; elapsed: boolean } | null = null;
  private closingRevision = -1;
  private endingRevision = -1;
  private lastWaitingCount = 0;
  private retryTimer: NodeJS.Timeout | null = null;
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
    this.prefix = jobPrefix(config.runId);
    this.stateKey = `${this.prefix}state`;
    this.membersKey = `${this.prefix}members`;
    this.nodesPrefix = `${this.prefix}nodes/`;
    this.myKey = `${this.prefix}nodes/${self.nodeId}`;
    this.log = logger;
  }

  /** Write counters of this handler's backend connection (for benchmarks). */
  get stats(): KvStats {
    return this.kv.stats;
  }

  private get state(): JobView['state'] {
    return this.view?.state ?? null;
  }

  /** Grants the lease, mirrors the job's keys and creates the job's state when absent. */
  async start(): Promise<void> {
    this.kv.onConnection((e) => this.onConnection(e));
    await this.kv.grantLease(this.config.leaseTtlMs);
    const { view, release } = await this.kv.view(this.prefix);
    this.view = view;
    this.releaseView = release;
    this.unlistenView = view.onChange(() => this.onChange());
    const st = this.state;
    const fresh: StateDoc = {
      v: 1,
      round: 0,
      phase: 'joining',
      closed: false,
      failureRestarts: 0,
      minNodes: this.config.minNodes,
      maxNodes: this.config.maxNodes,
    };
    if (st === null) {
      await this.kv.txn({
        compares: [{ key: this.stateKey, modRevision: 0 }],
        puts: [{ key: this.stateKey, value: JSON.stringify(fresh) }],
        deletes: [],
      });
    } else if (st.doc.closed && view.nodes.size === 0) {
      // A finished job with nobody left in it: the same rdzv id is being run again, so start it afresh
      // (torchrun's c10d store vanishes with the job; a closed etcd state must not block a re-run forever).
      this.log.info({ runId: this.config.runId }, 'rendezvous: previous job under this id finished; starting afresh');
      await this.kv.txn({
        compares: [{ key: this.stateKey, modRevision: st.modRevision }],
        puts: [{ key: this.stateKey, value: JSON.stringify(fresh) }],
        deletes: [this.membersKey],
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
        new RendezvousError('RDZV_STATE', `rendezvous ${this.config.runId}: next() after leave() or close()`, {
          runId: this.config.runId,
        }),
      );
    if (this.pending)
      return Promise.reject(
        new RendezvousError('RDZV_STATE', `rendezvous ${this.config.runId}: next() is already in progress`, {
          runId: this.config.runId,
          terminal: false,
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

  async markClosed(): Promise<void> {
    const cur = this.current;
    if (cur !== null) this.selfEndedRound = cur.round;
    for (;;) {
      const st = this.state;
      if (st === null)
        throw new RendezvousError('RDZV_STATE', `rendezvous ${this.config.runId}: no job state to close`, {
          runId: this.config.runId,
        });
      if (st.doc.closed) return;
      const doc: StateDoc = { ...st.doc, closed: true };
      const ok = await this.kv.txn({
        compares: [{ key: this.stateKey, modRevision: st.modRevision }],
        puts: [{ key: this.stateKey, value: JSON.stringify(doc) }],
        deletes: [],
      });
      if (ok) return;
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
      const doc = this.endedDoc(st.doc, 'member-left');
      try {
        await this.kv.txn({
          compares: [{ key: this.stateKey, modRevision: st.modRevision }],
          puts: [{ key: this.stateKey, value: JSON.stringify(doc) }],
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
        new RendezvousError('RDZV_ABORTED', `rendezvous ${this.config.runId}: left while waiting for a round`, {
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
        new RendezvousError(
          'RDZV_ABORTED',
          `rendezvous ${this.config.runId}: handler closed while waiting for a round`,
          { runId: this.config.runId },
        ),
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
    if (doc.closed || doc.round !== cur.round || doc.phase !== 'running') {
      this.current = null;
      this.lastWaitingCount = 0;
      if (doc.closed) this.emit({ type: 'round-ended', round: cur.round, reason: 'closed' });
      else if (doc.lastEnd && doc.lastEnd.round === cur.round) this.emit({ type: 'round-ended', ...doc.lastEnd });
      else this.emit({ type: 'round-ended', round: cur.round, reason: 'member-lost' });
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
    if (this.endingRevision === this.state!.modRevision) return;
    this.endingRevision = this.state!.modRevision;
    void this.endRoundTxn(round, reason, undefined, byNodeId).catch((err: unknown) => {
      this.log.warn({ err, runId: this.config.runId, round }, 'rendezvous: ending the round failed; retrying');
      this.endingRevision = -1;
      this.retrySoon();
    });
  }

  private reconcilePending(doc: StateDoc): void {
    if (doc.closed) {
      const p = this.pending!;
      this.finishPending();
      p.reject(this.closedError());
      return;
    }
    const r = doc.round;
    if (doc.phase === 'running') {
      if (r <= this.selfEndedRound) return; // we asked for this round to end: wait for the next one
      if (this.view!.members.round !== r) return; // the members key arrives with the state in one batch
      const me = this.myRound === r ? this.view!.member(this.self.nodeId) : undefined;
      if (me) {
        this.resolveRound(doc, me);
      } else {
        if (this.myRound === null || this.myRound <= r) {
          this.putMyNode(r + 1); // late for round r: wait for r + 1 (seen by the members as a waiting node)
        }
        // Members gone (e.g. every agent of an earlier run was killed): nobody else may be left to end the round.
        const lost = this.view!.lostMembers();
        if (lost.length > 0) this.endRoundOnce(r, 'member-lost', lost[0]);
      }
      return;
    }
    if (this.myRound !== r) {
      this.putMyNode(r);
      return;
    }
    if (this.view!.nodes.get(this.self.nodeId)?.doc.round !== r) return; // our put is not visible yet
    const joinedCount = this.view!.countByRound.get(r) ?? 0;
    const decision = decideJoining({
      joinedCount,
      minNodes: this.config.minNodes,
      maxNodes: this.config.maxNodes,
      lastCallElapsed: this.lastCall?.round === r && this.lastCall.elapsed,
      everyLiveNodeJoined: r > 0 && joinedCount >= this.view!.nodes.size,
    });
    if (decision.kind === 'wait-min') {
      this.clearLastCall();
    } else if (decision.kind === 'last-call') {
      if (this.lastCall?.round !== r) {
        this.clearLastCall();
        const lc: { round: number; timer: NodeJS.Timeout | null; elapsed: boolean } = {
          round: r,
          timer: null,
          elapsed: false,
        };
        lc.timer = setTimeout(() => {
          lc.elapsed = true;
          lc.timer = null;
          this.reconcile();
        }, this.config.lastCallTimeoutMs);
        this.lastCall = lc;
      }
    } else if (this.mayClose(r)) {
      this.closeRound(doc);
    }
  }

  /**
   * One node closes a round: the earliest joiner at once, the others only after a backup delay (one lease TTL)
   * in case it hangs. This keeps N agents from racing N transactions at the same revision.
   */
  private mayClose(round: number): boolean {
    if (this.view!.firstJoiner(round) === this.self.nodeId) return true;
    if (this.backup?.round === round) return this.backup.elapsed;
    if (this.backup?.timer) clearTimeout(this.backup.timer);
    const b: { round: number; timer: NodeJS.Timeout | null; elapsed: boolean } = { round, timer: null, elapsed: false };
    b.timer = setTimeout(() => {
      b.elapsed = true;
      b.timer = null;
      this.reconcile();
    }, this.config.leaseTtlMs);
    this.backup = b;
    return false;
  }

  private closeRound(doc: StateDoc): void {
    const st = this.state!;
    if (this.closingRevision === st.modRevision) return;
    this.closingRevision = st.modRevision;
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
        compares: [{ key: this.stateKey, modRevision: st.modRevision }],
        puts: [
          { key: this.stateKey, value: JSON.stringify(next) },
          { key: this.membersKey, value: JSON.stringify({ round: doc.round, members } satisfies MembersDoc) },
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
        this.closingRevision = -1;
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
    p.resolve(info);
    // A member may already be gone or a node waiting: look again now that we are in the round.
    queueMicrotask(() => this.reconcile());
  }

  private putMyNode(round: number): void {
    this.myRound = round;
    const node =
      this.advertisedMasterPort === null ? this.self : { ...this.self, masterPort: this.advertisedMasterPort };
    const value: NodeDoc = { node, round };
    this.kv
      .txn({ compares: [], puts: [{ key: this.myKey, value: JSON.stringify(value), leased: true }], deletes: [] })
      .catch((err: unknown) => {
        this.log.warn({ err, runId: this.config.runId, round }, 'rendezvous: joining failed; retrying');
        if (this.myRound === round) this.myRound = null;
        this.retrySoon();
      });
  }

  private endedDoc(
    doc: StateDoc,
    reason: RoundEndReason,
    detail?: string,
    byNodeId: string = this.self.nodeId,
  ): StateDoc {
    return {
      ...doc,
      round: doc.round + 1,
      phase: 'joining',
      failureRestarts: doc.failureRestarts + (reason === 'failure' ? 1 : 0),
      lastEnd: { round: doc.round, reason, byNodeId, ...(detail === undefined ? {} : { detail }) },
    };
  }

  /** Moves running round `round` to joining round + 1. Resolves once that happened (by us or anyone). */
  private async endRoundTxn(round: number, reason: RoundEndReason, detail?: string, byNodeId?: string): Promise<void> {
    const deadline = Date.now() + this.config.readTimeoutMs;
    for (;;) {
      const st = this.state;
      if (st === null || st.doc.closed || st.doc.round !== round || st.doc.phase !== 'running') return;
      const doc = this.endedDoc(st.doc, reason, detail, byNodeId);
      const ok = await this.kv.txn({
        compares: [{ key: this.stateKey, modRevision: st.modRevision }],
        puts: [{ key: this.stateKey, value: JSON.stringify(doc) }],
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
    this.clearLastCall();
    if (this.backup?.timer) clearTimeout(this.backup.timer);
    this.backup = null;
  }

  private clearLastCall(): void {
    if (this.lastCall?.timer) clearTimeout(this.lastCall.timer);
    this.lastCall = null;
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
    if (this.outage) clearTimeout(this.outage.timer);
    this.outage = null;
    this.unlistenView?.();
    this.unlistenView = null;
    this.releaseView?.();
    this.releaseView = null;
    await this.kv.close();
  }
}
