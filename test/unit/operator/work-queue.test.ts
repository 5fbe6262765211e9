import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WorkQueue } from '../../../operator/controller/work-queue.js';

test('a key added many times is handed out once', async (t) => {
  const q = new WorkQueue();
  t.after(() => q.shutDown());
  q.add('ns/a');
  q.add('ns/a');
  q.add('ns/b');
  assert.equal(q.length, 2);
  assert.equal(await q.get(), 'ns/a');
  assert.equal(await q.get(), 'ns/b');
});

test('a key added while it is processed comes back only after done', async (t) => {
  const q = new WorkQueue();
  t.after(() => q.shutDown());
  q.add('ns/a');
  const k = await q.get();
  q.add('ns/a');
  assert.equal(q.length, 0);
  q.done(k!);
  assert.equal(q.length, 1);
  assert.equal(await q.get(), 'ns/a');
});

test('rate-limited re-adds back off exponentially per key and forget resets them', (t) => {
  const q = new WorkQueue({ baseDelayMs: 10, maxDelayMs: 50 });
  t.after(() => q.shutDown());
  assert.deepEqual(
    [q.addRateLimited('k'), q.addRateLimited('k'), q.addRateLimited('k'), q.addRateLimited('k')],
    [10, 20, 40, 50],
  );
  q.forget('k');
  assert.equal(q.addRateLimited('k'), 10);
});

test('get resolves undefined after shutDown', async () => {
  const q = new WorkQueue();
  const pending = q.get();
  q.shutDown();
  assert.equal(await pending, undefined);
});
