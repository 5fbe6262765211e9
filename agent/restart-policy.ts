// Pure decisions of the agent loop: what to do when the local group ends or the rendezvous says the round ended.
// No timers, no I/O: the agent executes what these return.

import type { RendezvousEvent } from '../rendezvous/api.js';

export interface PolicySnapshot {
  /** Failure restarts used so far, job-wide (the rendezvous counts them). */
  readonly restartsUsed: number;
  readonly maxRestarts: number;
  /** The round this agent's workers run in. */
  readonly round: number;
  /** Set once any member marked the job finished. */
  readonly jobClosed: boolean;
  readonly scaleUpPolicy: 'immediate' | 'deferred';
}

export type GroupEndDecision =
  | { readonly kind: 'succeed' }
  | { readonly kind: 'restart'; readonly restartsUsed: number }
  | { readonly kind: 'fail'; readonly reason: string };

/** The local worker group finished: all succeeded, or one failed. */
export function onGroupEnd(s: PolicySnapshot, outcome: 'succeeded' | 'failed'): GroupEndDecision {
  if (outcome === 'succeeded') return { kind: 'succeed' };
  if (s.restartsUsed < s.maxRestarts) return { kind: 'restart', restartsUsed: s.restartsUsed + 1 };
  return {
    kind: 'fail',
    reason:
      s.maxRestarts === 0
        ? 'a worker failed and --max-restarts is 0'
        : `a worker failed after all ${s.maxRestarts} restart(s) were used`,
  };
}

export type EventDecision =
  | { readonly kind: 'ignore' }
  /** Stop the local workers and join the next round (membership change: no restart is used). */
  | { readonly kind: 'rejoin'; readonly reason: string }
  /** Ask the rendezvous to end the round so waiting nodes are admitted. */
  | { readonly kind: 'end-round-for-scale-up' }
  /** Another member finished the job: keep waiting for the local workers. */
  | { readonly kind: 'job-closed' };

export function onRendezvousEvent(s: PolicySnapshot, event: RendezvousEvent): EventDecision {
  switch (event.type) {
    case 'nodes-waiting':
      return event.count > 0 && s.scaleUpPolicy === 'immediate' && !s.jobClosed
        ? { kind: 'end-round-for-scale-up' }
        : { kind: 'ignore' };
    case 'round-ended':
      if (event.round !== s.round) return { kind: 'ignore' };
      if (event.reason === 'closed') return { kind: 'job-closed' };
      if (s.jobClosed) return { kind: 'ignore' };
      return { kind: 'rejoin', reason: `${event.reason}${event.detail ? `: ${event.detail}` : ''}` };
    case 'connection-lost':
    case 'connection-restored':
      return { kind: 'ignore' };
  }
}

/** The restart count at which the job as a whole has given up (another node exhausted the budget). */
export function budgetExhausted(s: Pick<PolicySnapshot, 'restartsUsed' | 'maxRestarts'>): boolean {
  return s.restartsUsed > s.maxRestarts;
}

export interface LocalFailureContext {
  /** Nodes in the round the failed workers ran in. */
  readonly groupWorldSize: number;
  /** The rendezvous lease TTL: a dead peer is reported at most about this long after its last keep-alive. */
  readonly leaseTtlMs: number;
}

export type LocalFailureDecision =
  /** Count the failure now (restart or give up by onGroupEnd). */
  | { readonly kind: 'count-failure' }
  /**
   * Wait up to `waitMs` for the rendezvous to end the round first: a worker in a multi-node job often fails
   * *because* a peer node died (a collective's socket reset) before the peer's lease expired. When the round ends
   * within the wait, it is a membership change and uses no restart (torchrun would count it).
   */
  | { readonly kind: 'await-membership-verdict'; readonly waitMs: number };

/** etcd grants at least this TTL (its minimum with default election settings), whatever is asked. */
export const MIN_EFFECTIVE_LEASE_TTL_MS = 2000;
/** etcd checks lease expiry every 500 ms and the watch needs a moment: margin on top of the TTL. */
export const VERDICT_MARGIN_MS = 2000;

/** A local worker failed (the group is already stopped): count it now or first wait for a membership verdict. */
export function onLocalFailure(c: LocalFailureContext): LocalFailureDecision {
  if (c.groupWorldSize <= 1) return { kind: 'count-failure' };
  return {
    kind: 'await-membership-verdict',
    waitMs: Math.max(c.leaseTtlMs, MIN_EFFECTIVE_LEASE_TTL_MS) + VERDICT_MARGIN_MS,
  };
}
