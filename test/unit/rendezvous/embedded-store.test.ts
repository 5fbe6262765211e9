import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EmbeddedRendezvousState } from '../../../rendezvous/embedded-backend.js';
import { JobView } from '../../../rendezvous/job-view.js';
import type { KvEvent } from '../../../rendezvous/kv.js';

const nextTick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('the embedded store applies a transaction only when every compared revision matches', () => {
  const s = new EmbeddedRendezvousState();
  assert.equal(
    s.commit({ compares: [{ key: 'a', modRevision: 0 }], puts: [{ key: 'a', value: '1' }], deletes: [] }, null),
    true,
  );
  assert.equal(s.currentRevision, 1);
  assert.equal(
    s.commit({ compares: [{ key: 'a', modRevision: 0 }], puts: [{ key: 'a', value: '2' }], deletes: [] }, null),
    false,
  );
  assert.equal(
    s.commit({ compares: [{ key: 'a', modRevision: 1 }], puts: [{ key: 'a', value: '3' }], deletes: [] }, null),
    true,
  );
  assert.deepEqual(s.entries(), [{ key: 'a', value: '3', modRevision: 2 }]);
});

test('the embedded store delivers one batch per revision, in order, only for the watched prefix', async () => {
  const s = new EmbeddedRendezvousState();
  const seen: (readonly KvEvent[])[] = [];
  const sub = s.subscribe('/j/', (events) => seen.push(events));
  s.commit(
    {
      compares: [],
      puts: [
        { key: '/j/x', value: 'a' },
        { key: '/j/y', value: 'b' },
      ],
      deletes: [],
    },
    null,
  );
  s.commit({ compares: [], puts: [{ key: '/other', value: 'c' }], deletes: [] }, null);
  s.commit({ compares: [], puts: [], deletes: ['/j/x'] }, null);
  await nextTick();
  sub.unsubscribe();
  assert.deepEqual(
    seen.map((b) => b.map((e) => `${e.type} ${e.key}@${e.modRevision}`)),
    [['put /j/x@1', 'put /j/y@1'], ['delete /j/x@3']],
  );
});

test('keys attached to a lease vanish when it is revoked, with a delete event', async () => {
  const s = new EmbeddedRendezvousState();
  const lease = s.grant(60_000);
  s.commit(
    {
      compares: [],
      puts: [
        { key: '/j/n', value: 'x', leased: true },
        { key: '/j/keep', value: 'y' },
      ],
      deletes: [],
    },
    lease,
  );
  const seen: string[] = [];
  s.subscribe('/j/', (events) => seen.push(...events.map((e) => `${e.type} ${e.key}`)));
  s.revoke(lease);
  await nextTick();
  assert.deepEqual(seen, ['delete /j/n']);
  assert.deepEqual(
    s.entries().map((e) => e.key),
    ['/j/keep'],
  );
  assert.equal(s.hasLease(lease), false);
  assert.throws(
    () => s.commit({ compares: [], puts: [{ key: '/j/z', value: 'z', leased: true }], deletes: [] }, lease),
    /lease/,
  );
});

test('a job view counts nodes per round, finds the earliest joiner, and reports members whose key is gone', () => {
  const v = new JobView('/p/');
  const node = (id: string, round: number) =>
    JSON.stringify({ node: { nodeId: id, host: id, addr: 'a', masterPort: 1, localWorldSize: 1 }, round });
  v.load([
    { key: '/p/nodes/b', value: node('b', 0), modRevision: 5 },
    { key: '/p/nodes/a', value: node('a', 0), modRevision: 7 },
    { key: '/p/nodes/c', value: node('c', 1), modRevision: 8 },
  ]);
  assert.equal(v.countByRound.get(0), 2);
  assert.equal(v.countAbove(0), 1);
  assert.equal(v.firstJoiner(0), 'b');
  assert.deepEqual(
    v.joined(0).map((n) => n.doc.node.nodeId),
    ['b', 'a'],
  );
  const members = [
    { nodeId: 'b', host: 'b', addr: 'a', masterPort: 1, localWorldSize: 1, groupRank: 0 },
    { nodeId: 'a', host: 'a', addr: 'a', masterPort: 1, localWorldSize: 1, groupRank: 1 },
  ];
  v.applyBatch([{ type: 'put', key: '/p/members', value: JSON.stringify({ round: 0, members }), modRevision: 9 }]);
  assert.equal(v.member('a')?.groupRank, 1);
  assert.deepEqual(v.lostMembers(), []);
  v.applyBatch([{ type: 'delete', key: '/p/nodes/b', value: '', modRevision: 10 }]);
  assert.deepEqual(v.lostMembers(), ['b']);
  assert.equal(v.firstJoiner(0), 'a');
  assert.equal(v.deletions, 1);
});
