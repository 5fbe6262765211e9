import assert from 'node:assert/strict';
import { test } from 'node:test';
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
