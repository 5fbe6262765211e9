import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NodeDescriptor } from '../../../rendezvous/api.js';
import {
  type CloserDecision,
  type CurrentRoundDecision,
  type LateJoinDecision,
  type ProbedNode,
  assignGroupRanks,
  decideCloser,
  decideCurrentRound,
  decideEvictions,
  decideFence,
  decideJoining,
  decideLateJoin,
  decideRunning,
} from '../../../rendezvous/policy.js';

const node = (id: string): NodeDescriptor => ({
  nodeId: id,
  host: id,
  addr: '127.0.0.1',
  masterPort: 1,
  localWorldSize: 1,
});
const ids = (ms: { nodeId: string; groupRank: number }[]): string[] => ms.map((m) => `${m.groupRank}:${m.nodeId}`);

test('decideJoining closes a later round at once when every live node has joined, but never below min', () => {
  const table: [number, number, number, boolean | undefined, string][] = [
    // joined, min, max, everyLiveNodeJoined, expected (last call not elapsed)
    [1, 1, 2, true, 'close'],
    [2, 2, 3, true, 'close'],
    [1, 2, 3, true, 'wait-min'],
    [2, 2, 3, false, 'last-call'],
    [2, 2, 3, undefined, 'last-call'],
  ];
  for (const [joinedCount, minNodes, maxNodes, everyLiveNodeJoined, expected] of table) {
    assert.equal(
      decideJoining({ joinedCount, minNodes, maxNodes, lastCallElapsed: false, everyLiveNodeJoined }).kind,
      expected,
      `${joinedCount} of ${minNodes}:${maxNodes}, all live joined: ${everyLiveNodeJoined}`,
    );
  }
});

test('decideJoining closes at max at once, at min only after the last call, and waits below min', () => {
  const table: [number, number, number, boolean, string][] = [
    // joined, min, max, lastCallElapsed, expected
    [0, 1, 1, false, 'wait-min'],
    [1, 1, 1, false, 'close'],
    [1, 2, 3, true, 'wait-min'],
    [2, 2, 3, false, 'last-call'],
    [2, 2, 3, true, 'close'],
    [3, 2, 3, false, 'close'],
    [4, 2, 3, false, 'close'],
  ];
  for (const [joinedCount, minNodes, maxNodes, lastCallElapsed, expected] of table) {
    assert.equal(
      decideJoining({ joinedCount, minNodes, maxNodes, lastCallElapsed }).kind,
      expected,
      `${joinedCount} of ${minNodes}:${maxNodes}`,
    );
  }
});

test('assignGroupRanks numbers a first round in join order', () => {
  assert.deepEqual(ids(assignGroupRanks([node('c'), node('a'), node('b')], [], 8)), ['0:c', '1:a', '2:b']);
});

test('assignGroupRanks keeps previous ranks and fills the gaps in join order', () => {
  const table: [string[], [string, number][], number, string[]][] = [
    // joined (join order), previous ranks, max, expected
    [
      ['b', 'a'],
      [
        ['a', 0],
        ['b', 1],
      ],
      8,
      ['0:a', '1:b'],
    ],
    [
      ['new', 'c'],
      [
        ['a', 0],
        ['b', 1],
        ['c', 2],
      ],
      8,
      ['0:new', '1:c'],
    ], // c's rank 2 no longer fits in 2 nodes
    [
      ['x', 'b', 'c'],
      [
        ['a', 0],
        ['b', 1],
        ['c', 2],
      ],
      8,
      ['0:x', '1:b', '2:c'],
    ], // a lost: x takes rank 0
    [['a', 'b', 'c', 'd'], [['d', 0]], 3, ['0:a', '1:b', '2:c']], // only the first max are admitted
    [
      ['a', 'b'],
      [
        ['a', 1],
        ['b', 1],
      ],
      8,
      ['0:b', '1:a'],
    ], // a duplicate previous rank goes to the first claimant
  ];
  for (const [joined, prev, max, expected] of table) {
    const previous = prev.map(([nodeId, groupRank]) => ({ nodeId, groupRank }));
    assert.deepEqual(ids(assignGroupRanks(joined.map(node), previous, max)), expected, joined.join(','));
  }
});

test('decideRunning ends the round for a lost member first, then for waiting nodes under the immediate policy', () => {
  const immediate = { maxNodes: 3, scaleUpPolicy: 'immediate' as const };
  const deferred = { maxNodes: 3, scaleUpPolicy: 'deferred' as const };
  assert.deepEqual(decideRunning({ lostMembers: ['b'], memberCount: 2, waitingCount: 1, config: immediate }), {
    kind: 'end-round',
    reason: 'member-lost',
    byNodeId: 'b',
  });
  assert.deepEqual(decideRunning({ lostMembers: [], memberCount: 2, waitingCount: 1, config: immediate }), {
    kind: 'end-round',
    reason: 'scale-up',
  });
  assert.deepEqual(decideRunning({ lostMembers: [], memberCount: 2, waitingCount: 1, config: deferred }), {
    kind: 'none',
  });
  assert.deepEqual(decideRunning({ lostMembers: [], memberCount: 3, waitingCount: 1, config: immediate }), {
    kind: 'none',
  });
  assert.deepEqual(decideRunning({ lostMembers: [], memberCount: 2, waitingCount: 0, config: immediate }), {
    kind: 'none',
  });
});

test('decideCloser lets the earliest joiner close at once and the others only after the backup delay', () => {
  const table: [boolean, 'none' | 'running' | 'elapsed', CloserDecision][] = [
    // isFirstJoiner, backup timer for this round, expected
    [true, 'none', { kind: 'close' }],
    [true, 'running', { kind: 'close' }],
    [false, 'none', { kind: 'start-backup', delayMs: 2000 }],
    [false, 'running', { kind: 'wait-backup' }],
    [false, 'elapsed', { kind: 'close' }],
  ];
  for (const [isFirstJoiner, backup, expected] of table) {
    assert.deepEqual(decideCloser({ isFirstJoiner, backup, leaseTtlMs: 2000 }), expected, `${isFirstJoiner} ${backup}`);
  }
});

test('decideLateJoin takes its round, waits for one it ended, and registers for the next round when late', () => {
  const base: Parameters<typeof decideLateJoin>[0] = {
    round: 3,
    selfEndedRound: -1,
    fencedRound: -1,
    membersRound: 3,
    registeredRound: 3,
    isMember: true,
    lostMembers: [],
  };
  const table: [string, Partial<typeof base>, LateJoinDecision][] = [
    ['a member of the running round takes it', {}, { kind: 'take-round' }],
    ['the round this node ended is not taken', { selfEndedRound: 3 }, { kind: 'wait', why: 'self-ended' }],
    ['an older round it ended is no reason to wait', { selfEndedRound: 2 }, { kind: 'take-round' }],
    ['the members document must match the round', { membersRound: 2 }, { kind: 'wait', why: 'members-pending' }],
    [
      'a node with no key registers for the next round',
      { registeredRound: null, isMember: false },
      { kind: 'wait-next', registerFor: 4, endForLost: null },
    ],
    [
      'a node registered for an earlier round registers again',
      { registeredRound: 2, isMember: false },
      { kind: 'wait-next', registerFor: 4, endForLost: null },
    ],
    [
      'a node already waiting for the next round does not write again',
      { registeredRound: 4, isMember: false },
      { kind: 'wait-next', registerFor: null, endForLost: null },
    ],
    [
      'listed as a member under a key for another round is not taking the round',
      { registeredRound: 4, isMember: true },
      { kind: 'wait-next', registerFor: null, endForLost: null },
    ],
    [
      'a round this node fenced itself out of still runs: it ends it so nobody waits on it',
      { selfEndedRound: 3, fencedRound: 3 },
      { kind: 'end-fenced-round' },
    ],
    [
      'a later round than the fenced one is joined as usual',
      { selfEndedRound: 2, fencedRound: 2, registeredRound: 2, isMember: false },
      { kind: 'wait-next', registerFor: 4, endForLost: null },
    ],
    [
      'members lost while this node joins: it ends the round itself',
      { registeredRound: null, isMember: false, lostMembers: ['a', 'b'] },
      { kind: 'wait-next', registerFor: 4, endForLost: 'a' },
    ],
  ];
  for (const [what, over, expected] of table) assert.deepEqual(decideLateJoin({ ...base, ...over }), expected, what);
});

test('decideCurrentRound reports the end of the round this node runs in with the reason the state gives', () => {
  const running = { round: 2, phase: 'running' as const, closed: false };
  const table: [string, Parameters<typeof decideCurrentRound>[0]['state'], CurrentRoundDecision][] = [
    ['still running', running, { kind: 'running' }],
    [
      'closed job',
      { ...running, closed: true },
      { kind: 'ended', event: { type: 'round-ended', round: 2, reason: 'closed' } },
    ],
    [
      'ended with a recorded reason',
      {
        round: 3,
        phase: 'joining',
        closed: false,
        lastEnd: { round: 2, reason: 'failure', byNodeId: 'b', detail: 'rank 1 exited 1' },
      },
      {
        kind: 'ended',
        event: { type: 'round-ended', round: 2, reason: 'failure', byNodeId: 'b', detail: 'rank 1 exited 1' },
      },
    ],
    [
      'moved on past a round whose end this node missed',
      { round: 4, phase: 'running', closed: false, lastEnd: { round: 3, reason: 'scale-up' } },
      { kind: 'ended', event: { type: 'round-ended', round: 2, reason: 'member-lost' } },
    ],
    [
      'the same round number back in joining without a reason',
      { round: 2, phase: 'joining', closed: false },
      { kind: 'ended', event: { type: 'round-ended', round: 2, reason: 'member-lost' } },
    ],
  ];
  for (const [what, state, expected] of table)
    assert.deepEqual(decideCurrentRound({ round: 2, state }), expected, what);
});

test('decideEvictions evicts only nodes whose host refused the liveness connection', () => {
  const table: [ProbedNode['result'], boolean][] = [
    ['refused', true],
    ['alive', false],
    ['no-answer', false],
    ['unreachable', false],
  ];
  for (const [result, evicted] of table) {
    assert.deepEqual(decideEvictions([{ nodeId: 'x', result }]), evicted ? ['x'] : [], result);
  }
  assert.deepEqual(
    decideEvictions([
      { nodeId: 'a', result: 'refused' },
      { nodeId: 'b', result: 'no-answer' },
      { nodeId: 'c', result: 'refused' },
    ]),
    ['a', 'c'],
  );
});

test('decideFence keeps a node in its round while the lease is confirmed within the TTL, and fences it after', () => {
  const table: [number, number, ReturnType<typeof decideFence>][] = [
    // now, confirmed at (send time of the newest confirmed keep-alive), expected with a 2000 ms TTL
    [1000, 1000, { kind: 'renewed', checkAgainInMs: 2000 }],
    [2500, 1000, { kind: 'renewed', checkAgainInMs: 500 }],
    [2999, 1000, { kind: 'renewed', checkAgainInMs: 1 }],
    [3000, 1000, { kind: 'fence' }],
    [9000, 1000, { kind: 'fence' }],
  ];
  for (const [nowMs, leaseConfirmedAtMs, expected] of table) {
    assert.deepEqual(
      decideFence({ nowMs, leaseConfirmedAtMs, leaseTtlMs: 2000 }),
      expected,
      `${nowMs} ${leaseConfirmedAtMs}`,
    );
  }
});
