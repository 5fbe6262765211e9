// What the rendezvous stores in etcd (or the embedded store): the key layout of one job and the JSON documents under
// it. The handler writes them (kv-handler.ts), the job view and `tensile status` read them (job-view.ts, status.ts).
//
// Keys under the job prefix `/tensile/v1/<runId>/`:
//   state            StateDoc (small): round number, phase (joining|running), restarts, closed, why the last round
//                    ended. Written only by transactions that compare its mod revision: joining → running (close a
//                    round), running → joining r+1 (end a round), and markClosed.
//   members          MembersDoc: the members of the last closed round with their ranks. Written once per round, in
//                    the same transaction that closes it (so both arrive in one watch event batch); it is also what
//                    sticky ranks are computed from.
//   nodes/<nodeId>   NodeDoc, attached to the agent's lease: "I take part in round `round`". One put per agent per
//                    round. While round r runs, a key with round r+1 is a waiting node. Its deletion (lease expiry or
//                    revoke) is how the others learn that a node is gone.
//   recoveries/<nodeId>  RecoveriesDoc, attached to the agent's lease: its last few recoveries, for `tensile status`.
//                    One put per recovery (never per step); it goes away with the agent.
import type { NodeDescriptor, NodeRecoveries, RendezvousConfig, RoundEndReason, RoundMember } from './api.js';

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

/** The state of a new job (or of a finished job id that is run again): joining round 0. */
export function freshState(config: Pick<RendezvousConfig, 'minNodes' | 'maxNodes'>): StateDoc {
  return {
    v: 1,
    round: 0,
    phase: 'joining',
    closed: false,
    failureRestarts: 0,
    minNodes: config.minNodes,
    maxNodes: config.maxNodes,
  };
}

/** `doc`'s running round ended: joining round + 1, one more failure restart when the reason is 'failure'. */
export function endedState(
  doc: StateDoc,
  end: { readonly reason: RoundEndReason; readonly byNodeId: string; readonly detail?: string },
): StateDoc {
  const { reason, byNodeId, detail } = end;
  return {
    ...doc,
    round: doc.round + 1,
    phase: 'joining',
    failureRestarts: doc.failureRestarts + (reason === 'failure' ? 1 : 0),
    lastEnd: { round: doc.round, reason, byNodeId, ...(detail === undefined ? {} : { detail }) },
  };
}

export interface MembersDoc {
  readonly round: number;
  readonly members: readonly RoundMember[];
}

export interface NodeDoc {
  readonly node: NodeDescriptor;
  readonly round: number;
  /**
   * The agent's liveness port (liveness.ts) on `node.addr`: accepts connections for as long as the agent process
   * lives, so `probeMembers` can tell a dead agent on a live host at once. Absent when the agent could not open
   * one: it is then only caught by its lease.
   */
  readonly livenessPort?: number;
}

export interface RecoveriesDoc extends NodeRecoveries {
  readonly v: 1;
}

/** The keys of one job. */
export interface JobKeys {
  readonly prefix: string;
  readonly state: string;
  readonly members: string;
  readonly nodesPrefix: string;
  node(nodeId: string): string;
  readonly recoveriesPrefix: string;
  recoveries(nodeId: string): string;
}

export const jobPrefix = (runId: string): string => `/tensile/v1/${runId}/`;

export function jobKeys(runId: string): JobKeys {
  return keysUnder(jobPrefix(runId));
}

/** The key layout under an explicit job prefix (a JobView is keyed by its prefix). */
export function keysUnder(prefix: string): JobKeys {
  const nodesPrefix = `${prefix}nodes/`;
  const recoveriesPrefix = `${prefix}recoveries/`;
  return {
    recoveriesPrefix,
    recoveries: (nodeId) => `${recoveriesPrefix}${nodeId}`,
    prefix,
    state: `${prefix}state`,
    members: `${prefix}members`,
    nodesPrefix,
    node: (nodeId) => `${nodesPrefix}${nodeId}`,
  };
}
