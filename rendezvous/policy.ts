// Pure rendezvous policy: round-closing decisions, sticky rank assignment, who closes a round, late joins, and
// reactions to a running round. No timers, no I/O: the handler (kv-handler.ts) passes a snapshot and executes the
// returned action.
import type { NodeDescriptor, RendezvousConfig, RendezvousEvent, RoundEndReason, RoundMember } from './api.js';
import type { StateDoc } from './job-keys.js';

/** What to do with an open round, given how many nodes have joined it. */
export type JoiningDecision =
  | { readonly kind: 'close' }
  /** At least min joined: wait out the last-call window, then close. */
  | { readonly kind: 'last-call' }
  /** Fewer than min joined: wait (the join timeout bounds it). */
  | { readonly kind: 'wait-min' };

export function decideJoining(snapshot: {
  readonly joinedCount: number;
  readonly minNodes: number;
  readonly maxNodes: number;
  readonly lastCallElapsed: boolean;
  /**
   * Every node with a live lease in this job has joined the round, and it is not the job's first round. Then
   * nobody is left to wait for (a newcomer would register and be admitted by scale-up), so the round closes
   * without the last-call wait: this is what makes recovery after a failure or a node loss fast.
   */
  readonly everyLiveNodeJoined?: boolean;
}): JoiningDecision {
  const { joinedCount, minNodes, maxNodes, lastCallElapsed } = snapshot;
  if (joinedCount >= maxNodes) return { kind: 'close' };
  if (joinedCount >= minNodes && snapshot.everyLiveNodeJoined === true) return { kind: 'close' };
  if (joinedCount >= minNodes) return lastCallElapsed ? { kind: 'close' } : { kind: 'last-call' };
  return { kind: 'wait-min' };
}

/**
 * Assigns group ranks 0..n-1 to the nodes of a closing round. `joined` is in join order; at most `maxNodes` of
 * them (the earliest) are admitted. Ranks are sticky: a node that held rank r in `previous` keeps r when r < n and
 * nobody else kept it; the remaining nodes fill the free ranks in join order.
 */
export function assignGroupRanks(
  joined: readonly NodeDescriptor[],
  previous: readonly Pick<RoundMember, 'nodeId' | 'groupRank'>[],
  maxNodes: number,
): RoundMember[] {
  const admitted = joined.slice(0, maxNodes);
  const n = admitted.length;
  const prevRank = new Map(previous.map((m) => [m.nodeId, m.groupRank]));
  const byRank: (NodeDescriptor | undefined)[] = new Array<NodeDescriptor | undefined>(n);
  const rest: NodeDescriptor[] = [];
  for (const node of admitted) {
    const r = prevRank.get(node.nodeId);
    if (r !== undefined && r < n && byRank[r] === undefined) byRank[r] = node;
    else rest.push(node);
  }
  let next = 0;
  for (const node of rest) {
    while (byRank[next] !== undefined) next++;
    byRank[next] = node;
  }
  return byRank.map((node, groupRank) => ({ ...(node as NodeDescriptor), groupRank }));
}

/** What a member of a running round does about the others. */
export type RunningDecision =
  | { readonly kind: 'none' }
  | {
      readonly kind: 'end-round';
      readonly reason: Extract<RoundEndReason, 'member-lost' | 'scale-up'>;
      readonly byNodeId?: string;
    };

export function decideRunning(snapshot: {
  /** nodeIds of round members whose liveness key is gone. */
  readonly lostMembers: readonly string[];
  readonly memberCount: number;
  readonly waitingCount: number;
  readonly config: Pick<RendezvousConfig, 'maxNodes' | 'scaleUpPolicy'>;
}): RunningDecision {
  const { lostMembers, memberCount, waitingCount, config } = snapshot;
  if (lostMembers.length > 0) return { kind: 'end-round', reason: 'member-lost', byNodeId: lostMembers[0] };
  if (waitingCount > 0 && config.scaleUpPolicy === 'immediate' && memberCount < config.maxNodes) {
    return { kind: 'end-round', reason: 'scale-up' };
  }
  return { kind: 'none' };
}

/** Whether this node should write the transaction that closes a round it has joined (the round may close now). */
export type CloserDecision =
  | { readonly kind: 'close' }
  /** Not the earliest joiner: arm the backup timer (one lease TTL) in case the earliest joiner hangs. */
  | { readonly kind: 'start-backup'; readonly delayMs: number }
  /** The backup timer for this round runs: leave the close to the earliest joiner meanwhile. */
  | { readonly kind: 'wait-backup' };

/**
 * One node closes a round: the earliest joiner at once, the others only after a backup delay (one lease TTL) in
 * case it hangs or died. This keeps N agents from racing N transactions at the same revision.
 */
export function decideCloser(snapshot: {
  readonly isFirstJoiner: boolean;
  /** The backup timer for this round: not armed (or armed for another round), running, or elapsed. */
  readonly backup: 'none' | 'running' | 'elapsed';
  readonly leaseTtlMs: number;
}): CloserDecision {
  if (snapshot.isFirstJoiner) return { kind: 'close' };
  if (snapshot.backup === 'elapsed') return { kind: 'close' };
  if (snapshot.backup === 'running') return { kind: 'wait-backup' };
  return { kind: 'start-backup', delayMs: snapshot.leaseTtlMs };
}

/** What a node waiting in next() does while a round runs (a late join, or the round it is about to get). */
export type LateJoinDecision =
  /**
   * Nothing yet: this node asked for this round to end (`self-ended`: wait for the next one), or the members
   * document of the round has not arrived (`members-pending`: it comes in the same watch batch as the state).
   */
  | { readonly kind: 'wait'; readonly why: 'self-ended' | 'members-pending' }
  /** This node is a member of the running round: next() resolves with it. */
  | { readonly kind: 'take-round' }
  /**
   * This node fenced itself out of the running round (its lease may have lapsed) but the round still runs: end it,
   * so that nobody waits on a member that stopped its workers (e.g. after an etcd outage longer than the TTL,
   * every member fenced itself and nobody else would).
   */
  | { readonly kind: 'end-fenced-round' }
  /**
   * The round runs without this node: register for the next round (`registerFor`, null when already registered
   * for it or later), and end the running round when members of it are gone (`endForLost`: the first lost one):
   * when every agent of an earlier run was killed nobody else is left to end it.
   */
  | { readonly kind: 'wait-next'; readonly registerFor: number | null; readonly endForLost: string | null };

export function decideLateJoin(snapshot: {
  /** The running round. */
  readonly round: number;
  /** The last round this node asked to end (-1: none). */
  readonly selfEndedRound: number;
  /** The last round this node fenced itself out of (-1: none). */
  readonly fencedRound: number;
  /** The round of the members document. */
  readonly membersRound: number;
  /** The round in this node's key, as issued (null: no key). */
  readonly registeredRound: number | null;
  /** This node is listed in the members document. */
  readonly isMember: boolean;
  /** Members of the round whose key is gone. */
  readonly lostMembers: readonly string[];
}): LateJoinDecision {
  const { round, registeredRound } = snapshot;
  if (round === snapshot.fencedRound) return { kind: 'end-fenced-round' };
  if (round <= snapshot.selfEndedRound) return { kind: 'wait', why: 'self-ended' };
  if (snapshot.membersRound !== round) return { kind: 'wait', why: 'members-pending' };
  if (registeredRound === round && snapshot.isMember) return { kind: 'take-round' };
  return {
    kind: 'wait-next',
    registerFor: registeredRound === null || registeredRound <= round ? round + 1 : null,
    endForLost: snapshot.lostMembers[0] ?? null,
  };
}

export type RoundEndedEvent = Extract<RendezvousEvent, { readonly type: 'round-ended' }>;

/** Has the round this node runs in ended, and with which event? */
export type CurrentRoundDecision =
  { readonly kind: 'running' } | { readonly kind: 'ended'; readonly event: RoundEndedEvent };

export function decideCurrentRound(snapshot: {
  /** The round this node runs in. */
  readonly round: number;
  readonly state: Pick<StateDoc, 'round' | 'phase' | 'closed' | 'lastEnd'>;
}): CurrentRoundDecision {
  const { round, state } = snapshot;
  if (!state.closed && state.round === round && state.phase === 'running') return { kind: 'running' };
  if (state.closed) return { kind: 'ended', event: { type: 'round-ended', round, reason: 'closed' } };
  if (state.lastEnd && state.lastEnd.round === round) {
    return { kind: 'ended', event: { type: 'round-ended', ...state.lastEnd } };
  }
  // The state moved on past a later round we never saw end (we were disconnected): members were lost.
  return { kind: 'ended', event: { type: 'round-ended', round, reason: 'member-lost' } };
}

/** One probed node and what its liveness port said (liveness.ts). */
export interface ProbedNode {
  readonly nodeId: string;
  readonly result: 'alive' | 'refused' | 'no-answer' | 'unreachable';
}

/**
 * Which probed nodes to evict (revoke their lease): only those whose host refused the connection, i.e. answered
 * that no agent process listens any more. A timeout or an unreachable host says nothing certain (the host may be
 * partitioned from us but not from etcd, or just slow): those are left to their lease.
 */
export function decideEvictions(probed: readonly ProbedNode[]): string[] {
  return probed.filter((p) => p.result === 'refused').map((p) => p.nodeId);
}

/** Whether this node may still count itself in its running round, judged by its own lease. */
export type FenceDecision =
  /** The store confirmed the lease recently enough; look again after `checkAgainInMs`. */
  | { readonly kind: 'renewed'; readonly checkAgainInMs: number }
  /**
   * No renewal confirmed for a keep-alive sent within the last TTL: the store may have expired the lease, and the
   * others may be moving on without this node. It must stop its workers now (no split brain) and rejoin.
   */
  | { readonly kind: 'fence' };

/**
 * Fencing by lease: a node cut off from the store (a partitioned minority) stops before the store can expire its
 * lease, i.e. before the others can see it lost, because the store counts the TTL from when it *received* the
 * last keep-alive, which is no earlier than when this node sent it. Local monotonic time only.
 */
export function decideFence(snapshot: {
  readonly nowMs: number;
  /** When the newest request the store confirmed the lease for was sent (RendezvousKv.leaseConfirmedAtMs). */
  readonly leaseConfirmedAtMs: number;
  readonly leaseTtlMs: number;
}): FenceDecision {
  const leftMs = snapshot.leaseConfirmedAtMs + snapshot.leaseTtlMs - snapshot.nowMs;
  return leftMs > 0 ? { kind: 'renewed', checkAgainInMs: leftMs } : { kind: 'fence' };
}
