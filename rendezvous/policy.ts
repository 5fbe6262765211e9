// Pure rendezvous policy: round-closing decisions, sticky rank assignment, and reactions to a running round.
// No timers, no I/O: callers pass a snapshot and execute the returned action.
import type { NodeDescriptor, RendezvousConfig, RoundEndReason, RoundMember } from './api.js';

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
