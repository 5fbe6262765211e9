import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatStatus } from '../../../agent/commands/status.js';
import type { RecoveryEntry } from '../../../rendezvous/api.js';
import { EmbeddedRendezvousState, createEmbeddedRendezvousHandler } from '../../../rendezvous/embedded-backend.js';
import { parseRdzvConf } from '../../../rendezvous/index.js';
import { statusFromEntries } from '../../../rendezvous/status.js';

test('statusFromEntries reads joining, running and closed states from the job keys', async (t) => {
  const state = new EmbeddedRendezvousState();
  const { config } = parseRdzvConf({ last_call_timeout: '600' }, { runId: 'j', minNodes: 1, maxNodes: 2 });
  const self = (id: string) => ({ nodeId: id, host: `h-${id}`, addr: '127.0.0.1', masterPort: 1, localWorldSize: 1 });
  const a = await createEmbeddedRendezvousHandler({ config, self: self('a'), embeddedState: state });
  const b = await createEmbeddedRendezvousHandler({ config, self: self('b'), embeddedState: state });
  t.after(async () => {
    await a.close();
    await b.close();
  });
  assert.equal(statusFromEntries('j', state.entries()).state, 'joining');
  const ra = a.next();
  await new Promise((r) => setTimeout(r, 20));
  const joining = statusFromEntries('j', state.entries());
  assert.deepEqual(
    [joining.state, joining.round, joining.members.map((m) => `${m.groupRank}:${m.host}`)],
    ['joining', 0, ['0:h-a']],
  );
  await Promise.all([ra, b.next()]);
  const running = statusFromEntries('j', state.entries());
  assert.deepEqual([running.state, running.members.length, running.minNodes, running.maxNodes], ['running', 2, 1, 2]);
  await a.markClosed();
  assert.equal(statusFromEntries('j', state.entries()).state, 'closed');
  assert.equal(statusFromEntries('other', state.entries()).state, 'unknown');
});

test('published recoveries reach the status (newest kept, malformed skipped) and vanish with the node', async (t) => {
  const state = new EmbeddedRendezvousState();
  const { config } = parseRdzvConf({}, { runId: 'r', minNodes: 1, maxNodes: 1 });
  const self = { nodeId: 'n1', host: 'h1', addr: '127.0.0.1', masterPort: 1, localWorldSize: 1 };
  const a = await createEmbeddedRendezvousHandler({ config, self, embeddedState: state });
  t.after(() => a.close());
  await a.next();
  assert.equal(statusFromEntries('r', state.entries()).recoveries, undefined);
  const rec = (i: number): RecoveryEntry => ({
    cause: 'membership',
    path: 'live',
    recoveryMs: 100 + i,
    stepsLost: 0,
    round: i,
    startedAtMs: 1_700_000_000_000 + i,
    detail: 'member-lost',
  });
  await a.publishRecoveries(Array.from({ length: 7 }, (_, i) => rec(i)));
  const s = statusFromEntries('r', state.entries());
  assert.deepEqual(
    s.recoveries?.map((n) => [n.nodeId, n.host, n.recoveries.map((r) => r.round)]),
    [['n1', 'h1', [2, 3, 4, 5, 6]]],
  );
  const malformed = [
    ...state.entries(),
    { key: '/tensile/v1/r/recoveries/bad', value: '{"v":1,"nodeId":"bad","recoveries":"x"}', modRevision: 999 },
    { key: '/tensile/v1/r/recoveries/worse', value: 'not json', modRevision: 1000 },
  ];
  assert.deepEqual(
    statusFromEntries('r', malformed).recoveries?.map((n) => n.nodeId),
    ['n1'],
  );
  const table = formatStatus(s);
  assert.match(table, /recent recoveries \(newest first\):/);
  const rows = table.split('\n').filter((l) => l.includes(' live '));
  assert.equal(rows.length, 5);
  assert.match(rows[0] as string, /^2023-11-14T22:13:20\.006Z\s+h1\s+live\s+membership\s+0\.11 s\s+0\s+6$/);
  assert.match(formatStatus({ ...s, recoveries: undefined }), /^recoveries: none$/m);
  await a.leave();
  assert.equal(statusFromEntries('r', state.entries()).recoveries, undefined, 'gone with the lease');
});
