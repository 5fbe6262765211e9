import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiError } from '../../../operator/api.js';
import type { WatchEventType } from '../../../operator/kube/client-node.js';
import { Informer, type KObj, type ListWatchSource } from '../../../operator/kube/informer.js';

type Item = KObj & {
  metadata: { name: string; namespace: string; resourceVersion: string; labels?: Record<string, string> };
};
const item = (name: string, rv: string, job = 'j'): Item => ({
  metadata: { name, namespace: 'ns', resourceVersion: rv, labels: { job } },
});

/** A scripted API: each list returns the next snapshot; each watch plays the next script then ends or fails. */
function fakeSource(
  path: string,
  lists: Array<{ rv: string; items: Item[] }>,
  watches: Array<(emit: (t: WatchEventType, o: unknown) => void) => Promise<void>>,
) {
  const calls: string[] = [];
  const source: ListWatchSource<Item> = {
    path,
    async list() {
      calls.push(`GET ${path}`);
      const l = lists.shift();
      if (l === undefined) throw new ApiError('no more lists', 500);
      return { resourceVersion: l.rv, items: l.items };
    },
    async watch(query: Record<string, unknown>, onEvent: (t: WatchEventType, o: unknown) => void, signal: AbortSignal) {
      calls.push(`WATCH rv=${String(query.resourceVersion)}`);
      const script = watches.shift();
      if (script === undefined) {
        await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
        return;
      }
      await script(onEvent);
    },
  };
  return { source, calls };
}

test('a 410 Gone watch relists and delivers the deletes missed while disconnected', async (t) => {
  const { source, calls } = fakeSource(
    '/api/v1/configmaps',
    [
      { rv: '10', items: [item('a', '5'), item('b', '6')] },
      { rv: '20', items: [item('a', '5'), item('c', '19')] },
    ],
    [
      async (emit) => {
        emit('MODIFIED', item('a', '11'));
        emit('ERROR', { kind: 'Status', code: 410, message: 'too old resource version' });
      },
    ],
  );
  const inf = new Informer<Item>(source, { indexBy: (o) => o.metadata?.labels?.job });
  const seen: string[] = [];
  inf.on('add', (o) => seen.push(`add ${o.metadata.name}`));
  inf.on('update', (o) => seen.push(`update ${o.metadata.name}@${o.metadata.resourceVersion}`));
  inf.on('delete', (o) => seen.push(`delete ${o.metadata.name}`));
  t.after(() => inf.stop());
  await inf.start();
  const deadline = Date.now() + 5000;
  while (!seen.includes('add c') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(seen, ['add a', 'add b', 'update a@11', 'update a@5', 'add c', 'delete b']);
  assert.deepEqual(calls.slice(0, 4), [
    'GET /api/v1/configmaps',
    'WATCH rv=10',
    'GET /api/v1/configmaps',
    'WATCH rv=20',
  ]);
  assert.deepEqual(
    inf
      .byIndex('j')
      .map((o) => o.metadata.name)
      .sort(),
    ['a', 'c'],
  );
});

test('a watch the server ends is resumed from the last resourceVersion seen, bookmarks included', async (t) => {
  const { source, calls } = fakeSource(
    '/api/v1/pods',
    [{ rv: '10', items: [] }],
    [
      async (emit) => {
        emit('ADDED', item('x', '12'));
        emit('BOOKMARK', { metadata: { resourceVersion: '15' } });
      },
    ],
  );
  const inf = new Informer<Item>(source);
  t.after(() => inf.stop());
  await inf.start();
  const deadline = Date.now() + 5000;
  while (calls.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(calls, ['GET /api/v1/pods', 'WATCH rv=10', 'WATCH rv=15']);
  assert.equal(inf.get('x', 'ns')?.metadata?.resourceVersion, '12');
  assert.equal(inf.get('bookmark', 'ns'), undefined);
});
