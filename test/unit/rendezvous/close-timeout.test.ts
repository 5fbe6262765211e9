// close_timeout bounds markClosed(): store errors are retried until then, then RendezvousTimeoutError.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RendezvousTimeoutError } from '../../../rendezvous/api.js';
import { RDZV_DEFAULTS } from '../../../rendezvous/config.js';
import { EmbeddedKv, EmbeddedRendezvousState } from '../../../rendezvous/embedded-backend.js';
import type { KvTxn } from '../../../rendezvous/kv.js';
import { KvRendezvousHandler } from '../../../rendezvous/kv-handler.js';

/** The embedded store with a switch that makes every write fail as an unreachable etcd would. */
class FailingKv extends EmbeddedKv {
  failures = 0;
  failing = false;
  override async txn(txn: KvTxn): Promise<boolean> {
    if (this.failing) {
      this.failures++;
      throw new Error('store unreachable (test)');
    }
    return super.txn(txn);
  }
}

const self = { nodeId: 'n0', host: 'h', addr: '127.0.0.1', masterPort: 1, localWorldSize: 1 };
const config = (closeTimeoutMs: number) => ({
  ...RDZV_DEFAULTS,
  runId: 'close-timeout',
  minNodes: 1,
  maxNodes: 1,
  closeTimeoutMs,
});

test('markClosed retries store errors and fails with RendezvousTimeoutError after close_timeout', async () => {
  const kv = new FailingKv(new EmbeddedRendezvousState());
  const h = new KvRendezvousHandler('embedded', config(600), self, kv);
  await h.start();
  try {
    await h.next();
    kv.failing = true;
    await assert.rejects(h.markClosed(), (err: unknown) => {
      assert.ok(err instanceof RendezvousTimeoutError, String(err));
      assert.match(err.message, /could not mark the job closed within the close timeout \(600 ms\): store unreachable/);
      assert.equal(err.runId, 'close-timeout');
      return true;
    });
    assert.ok(kv.failures >= 2, `retried: ${kv.failures} attempt(s)`);
  } finally {
    await h.close();
  }
});

test('markClosed succeeds when the store comes back within close_timeout', async () => {
  const state = new EmbeddedRendezvousState();
  const kv = new FailingKv(state);
  const h = new KvRendezvousHandler('embedded', config(30_000), self, kv);
  await h.start();
  try {
    await h.next();
    kv.failing = true;
    const closing = h.markClosed();
    setTimeout(() => (kv.failing = false), 300);
    await closing;
    assert.ok(kv.failures >= 1);
    const stored = state.entries('/tensile/v1/close-timeout/state')[0];
    assert.equal((JSON.parse(stored!.value) as { closed: boolean }).closed, true);
  } finally {
    await h.close();
  }
});
