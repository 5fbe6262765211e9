import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NodeDescriptor } from '../../../rendezvous/api.js';
import { assignGroupRanks, decideJoining, decideRunning } from '../../../rendezvous/policy.js';

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
