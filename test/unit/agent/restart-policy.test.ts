import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { onGroupEnd, onLocalFailure, onRendezvousEvent, type PolicySnapshot } from '../../../agent/restart-policy.js';
import type { RendezvousEvent } from '../../../rendezvous/api.js';

const base: PolicySnapshot = {
  restartsUsed: 0,
  maxRestarts: 2,
  round: 3,
  jobClosed: false,
  scaleUpPolicy: 'immediate',
};

describe('agent restart policy', () => {
  test('a finished group succeeds, a failed one restarts while restarts remain, then fails', () => {
    const table: Array<[Partial<PolicySnapshot>, 'succeeded' | 'failed', string, number | string | undefined]> = [
      [{}, 'succeeded', 'succeed', undefined],
      [{ restartsUsed: 0 }, 'failed', 'restart', 1],
      [{ restartsUsed: 1 }, 'failed', 'restart', 2],
      [{ restartsUsed: 2 }, 'failed', 'fail', 'a worker failed after all 2 restart(s) were used'],
      [{ maxRestarts: 0 }, 'failed', 'fail', 'a worker failed and --max-restarts is 0'],
    ];
    for (const [patch, outcome, kind, detail] of table) {
      const d = onGroupEnd({ ...base, ...patch }, outcome);
      assert.equal(d.kind, kind, JSON.stringify(patch));
      if (d.kind === 'restart') assert.equal(d.restartsUsed, detail);
      if (d.kind === 'fail') assert.equal(d.reason, detail);
    }
  });

  test('rendezvous events map to rejoin, scale-up, job-closed or nothing', () => {
    const table: Array<[Partial<PolicySnapshot>, RendezvousEvent, string]> = [
      [{}, { type: 'round-ended', round: 3, reason: 'failure' }, 'rejoin'],
      [{}, { type: 'round-ended', round: 3, reason: 'member-lost' }, 'rejoin'],
      [{}, { type: 'round-ended', round: 3, reason: 'member-left' }, 'rejoin'],
      [{}, { type: 'round-ended', round: 2, reason: 'failure' }, 'ignore'],
      [{}, { type: 'round-ended', round: 3, reason: 'closed' }, 'job-closed'],
      [{ jobClosed: true }, { type: 'round-ended', round: 3, reason: 'member-left' }, 'ignore'],
      [{}, { type: 'nodes-waiting', count: 1 }, 'end-round-for-scale-up'],
      [{}, { type: 'nodes-waiting', count: 0 }, 'ignore'],
      [{ scaleUpPolicy: 'deferred' }, { type: 'nodes-waiting', count: 2 }, 'ignore'],
      [{}, { type: 'connection-lost', error: new Error('x') }, 'ignore'],
    ];
    for (const [patch, event, kind] of table) {
      assert.equal(
        onRendezvousEvent({ ...base, ...patch }, event).kind,
        kind,
        `${JSON.stringify(patch)} ${JSON.stringify(event)}`,
      );
    }
  });

  test('a local failure waits for a membership verdict only in a multi-node round, for a lease TTL plus margin', () => {
    const table: Array<[number, number, string, number | undefined]> = [
      [1, 10_000, 'count-failure', undefined],
      [2, 10_000, 'await-membership-verdict', 12_000],
      // etcd grants at least 2 s whatever is asked: the wait never drops below 2 s + margin.
      [2, 500, 'await-membership-verdict', 4_000],
      [8, 3_000, 'await-membership-verdict', 5_000],
    ];
    for (const [groupWorldSize, leaseTtlMs, kind, waitMs] of table) {
      const d = onLocalFailure({ groupWorldSize, leaseTtlMs });
      assert.equal(d.kind, kind, `${groupWorldSize} nodes, ttl ${leaseTtlMs}`);
      if (d.kind === 'await-membership-verdict') assert.equal(d.waitMs, waitMs);
    }
  });
});
