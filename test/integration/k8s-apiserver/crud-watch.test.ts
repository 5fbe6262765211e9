import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  makeInformer,
  Watch,
  type V1ConfigMap,
} from '@kubernetes/client-node';
import { startTestApiServer, waitFor, type TestApiServer } from '../../k8s/index.js';

function statusOf(err: unknown): { code: number; body: Record<string, unknown> } {
  assert.ok(err instanceof ApiException, `expected ApiException, got ${String(err)}`);
  const body = typeof err.body === 'string' ? JSON.parse(err.body) : err.body;
  return { code: err.code, body };
}

async function rejects(p: Promise<unknown>): Promise<{ code: number; body: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    return statusOf(err);
  }
  assert.fail('expected the call to fail');
}

describe('test API server: CRUD, conflicts and watch with @kubernetes/client-node', () => {
  let server: TestApiServer;
  let kc: KubeConfig;
  let core: CoreV1Api;

  before(async () => {
    server = await startTestApiServer({ watchWindowEvents: 50, bookmarkIntervalMs: 50 });
    kc = new KubeConfig();
    kc.loadFromFile(server.kubeconfigPath);
    core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'crud' } } });
  });
  after(async () => {
    await server?.stop();
  });

  const cm = (name: string, labels: Record<string, string> = {}): V1ConfigMap => ({
    metadata: { name, labels },
    data: { k: 'v' },
  });

  it('creates, reads and lists objects with uid, creationTimestamp and increasing resourceVersions', async () => {
    const a = await core.createNamespacedConfigMap({ namespace: 'crud', body: cm('a', { app: 'x', tier: 'web' }) });
    const b = await core.createNamespacedConfigMap({ namespace: 'crud', body: cm('b', { app: 'y' }) });
    assert.ok(a.metadata?.uid && a.metadata.creationTimestamp);
    assert.ok(Number(b.metadata!.resourceVersion) > Number(a.metadata!.resourceVersion));
    const got = await core.readNamespacedConfigMap({ namespace: 'crud', name: 'a' });
    assert.deepEqual(got.data, { k: 'v' });
    const dup = await rejects(core.createNamespacedConfigMap({ namespace: 'crud', body: cm('a') }));
    assert.equal(dup.code, 409);
    assert.equal(dup.body.reason, 'AlreadyExists');
    const all = await core.listNamespacedConfigMap({ namespace: 'crud' });
    assert.deepEqual(
      all.items.map((i) => i.metadata?.name),
      ['a', 'b'],
    );
    const sel = await core.listNamespacedConfigMap({ namespace: 'crud', labelSelector: 'app in (x,z),tier' });
    assert.deepEqual(
      sel.items.map((i) => i.metadata?.name),
      ['a'],
    );
    const neg = await core.listNamespacedConfigMap({ namespace: 'crud', labelSelector: 'app!=x' });
    assert.deepEqual(
      neg.items.map((i) => i.metadata?.name),
      ['b'],
    );
    const byName = await core.listNamespacedConfigMap({ namespace: 'crud', fieldSelector: 'metadata.name=b' });
    assert.deepEqual(
      byName.items.map((i) => i.metadata?.name),
      ['b'],
    );
    const missing = await rejects(core.readNamespacedConfigMap({ namespace: 'crud', name: 'nope' }));
    assert.equal(missing.code, 404);
    const noNs = await rejects(core.createNamespacedConfigMap({ namespace: 'absent', body: cm('a') }));
    assert.equal(noNs.code, 404);
  });

  it('answers 409 Conflict to an update with a stale resourceVersion and accepts the fresh one', async () => {
    const cur = await core.readNamespacedConfigMap({ namespace: 'crud', name: 'a' });
    const first = await core.replaceNamespacedConfigMap({
      namespace: 'crud',
      name: 'a',
      body: { ...cur, data: { k: 'v2' } },
    });
    assert.notEqual(first.metadata?.resourceVersion, cur.metadata?.resourceVersion);
    const stale = await rejects(
      core.replaceNamespacedConfigMap({ namespace: 'crud', name: 'a', body: { ...cur, data: { k: 'v3' } } }),
    );
    assert.equal(stale.code, 409);
    assert.equal(stale.body.reason, 'Conflict');
    assert.match(String(stale.body.message), /the object has been modified/);
    const ok = await core.replaceNamespacedConfigMap({
      namespace: 'crud',
      name: 'a',
      body: { ...first, data: { k: 'v3' } },
    });
    assert.deepEqual(ok.data, { k: 'v3' });
    const unchanged = await core.replaceNamespacedConfigMap({ namespace: 'crud', name: 'a', body: ok });
    assert.equal(
      unchanged.metadata?.resourceVersion,
      ok.metadata?.resourceVersion,
      'a no-op update keeps the resourceVersion',
    );
  });

  it('applies JSON patches and rejects a bad body with 400 without crashing', async () => {
    const patched = await core.patchNamespacedConfigMap({
      namespace: 'crud',
      name: 'b',
      body: [{ op: 'add', path: '/data/extra', value: '1' }],
    });
    assert.deepEqual(patched.data, { k: 'v', extra: '1' });
    const res = await fetch(`${server.url}/api/v1/namespaces/crud/configmaps`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: '{not json',
    });
    assert.equal(res.status, 400);
    const st = (await res.json()) as Record<string, unknown>;
    assert.equal(st.kind, 'Status');
    assert.equal(st.reason, 'BadRequest');
    const merge = await fetch(`${server.url}/api/v1/namespaces/crud/configmaps/b`, {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/merge-patch+json' },
      body: JSON.stringify({ data: { extra: null }, metadata: { labels: { m: '1' } } }),
    });
    assert.equal(merge.status, 200);
    const merged = (await merge.json()) as V1ConfigMap;
    assert.deepEqual(merged.data, { k: 'v' });
    assert.equal(merged.metadata?.labels?.m, '1');
    const stalePatch = await fetch(`${server.url}/api/v1/namespaces/crud/configmaps/b`, {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/merge-patch+json' },
      body: JSON.stringify({ metadata: { resourceVersion: '1' }, data: { z: '1' } }),
    });
    assert.equal(stalePatch.status, 409);
    const junk = await fetch(
      `${server.url}/api/v1/namespaces/crud/configmaps?labelSelector=${encodeURIComponent('a in (')}`,
    );
    assert.equal(junk.status, 400);
  });

  it('streams watch events in order, resumes from a resourceVersion and sends bookmarks', async () => {
    const start = await core.listNamespacedConfigMap({ namespace: 'crud' });
    const rv0 = start.metadata!.resourceVersion!;
    const events: Array<[string, string, string]> = [];
    let bookmarks = 0;
    const watch = new Watch(kc);
    const ctl = await watch.watch(
      '/api/v1/namespaces/crud/configmaps',
      { resourceVersion: rv0, allowWatchBookmarks: true },
      (type, obj: V1ConfigMap) => {
        if (type === 'BOOKMARK') bookmarks++;
        else events.push([type, obj.metadata!.name!, obj.metadata!.resourceVersion!]);
      },
      () => {},
    );
    try {
      await core.createNamespacedConfigMap({ namespace: 'crud', body: cm('w1') });
      const upd = await core.patchNamespacedConfigMap({
        namespace: 'crud',
        name: 'w1',
        body: [{ op: 'replace', path: '/data/k', value: 'x' }],
      });
      await core.deleteNamespacedConfigMap({ namespace: 'crud', name: 'w1' });
      await waitFor('three watch events', () => events.length >= 3);
      assert.deepEqual(
        events.map(([t, n]) => `${t} ${n}`),
        ['ADDED w1', 'MODIFIED w1', 'DELETED w1'],
      );
      await waitFor('a bookmark', () => bookmarks > 0);
      // Resume after the MODIFIED event: only the DELETED event is replayed.
      const replay: string[] = [];
      const ctl2 = await watch.watch(
        '/api/v1/namespaces/crud/configmaps',
        { resourceVersion: upd.metadata!.resourceVersion },
        (type, obj: V1ConfigMap) => replay.push(`${type} ${obj.metadata!.name}`),
        () => {},
      );
      await waitFor('the replayed event', () => replay.length >= 1);
      ctl2.abort();
      assert.deepEqual(replay, ['DELETED w1']);
    } finally {
      ctl.abort();
    }
  });

  it('answers a watch from an expired resourceVersion with a 410 Expired ERROR event', async () => {
    for (let i = 0; i < 60; i++) await core.createNamespacedConfigMap({ namespace: 'crud', body: cm(`churn-${i}`) });
    const got: Array<{ type: string; obj: Record<string, unknown> }> = [];
    let done = false;
    const ctl = await new Watch(kc).watch(
      '/api/v1/namespaces/crud/configmaps',
      { resourceVersion: '2' },
      (type, obj) => got.push({ type, obj }),
      () => {
        done = true;
      },
    );
    try {
      await waitFor('the ERROR event', () => got.length > 0 && done);
    } finally {
      ctl.abort();
    }
    assert.equal(got[0].type, 'ERROR');
    assert.equal(got[0].obj.code, 410);
    assert.equal(got[0].obj.reason, 'Expired');
  });

  it('feeds an informer that sees adds, updates and deletes selected by label', async () => {
    const informer = makeInformer(
      kc,
      '/api/v1/namespaces/crud/configmaps',
      () => core.listNamespacedConfigMap({ namespace: 'crud', labelSelector: 'inf=yes' }),
      'inf=yes',
    );
    const seen: string[] = [];
    informer.on('add', (o) => seen.push(`add ${o.metadata?.name}`));
    informer.on('update', (o) => seen.push(`update ${o.metadata?.name}`));
    informer.on('delete', (o) => seen.push(`delete ${o.metadata?.name}`));
    await informer.start();
    try {
      await core.createNamespacedConfigMap({ namespace: 'crud', body: cm('i1', { inf: 'yes' }) });
      await core.createNamespacedConfigMap({ namespace: 'crud', body: cm('i2', { inf: 'no' }) });
      await core.patchNamespacedConfigMap({
        namespace: 'crud',
        name: 'i1',
        body: [{ op: 'replace', path: '/data/k', value: 'z' }],
      });
      // Relabelling out of the selector reads as a delete to a selective watch.
      await core.patchNamespacedConfigMap({
        namespace: 'crud',
        name: 'i1',
        body: [{ op: 'replace', path: '/metadata/labels/inf', value: 'no' }],
      });
      await waitFor('informer events', () => seen.length >= 3);
      assert.deepEqual(seen, ['add i1', 'update i1', 'delete i1']);
      assert.equal(informer.list('crud').length, 0);
    } finally {
      await informer.stop();
    }
  });

  it('stores leases and refuses a stale lease renewal, as leader election needs', async () => {
    const coord = kc.makeApiClient(CoordinationV1Api);
    const lease = await coord.createNamespacedLease({
      namespace: 'crud',
      body: {
        metadata: { name: 'leader' },
        spec: { holderIdentity: 'a', leaseDurationSeconds: 15, renewTime: new Date() },
      },
    });
    const renewed = await coord.replaceNamespacedLease({
      namespace: 'crud',
      name: 'leader',
      body: { ...lease, spec: { ...lease.spec, holderIdentity: 'a', renewTime: new Date(Date.now() + 1000) } },
    });
    assert.equal(renewed.spec?.holderIdentity, 'a');
    const takeover = await rejects(
      coord.replaceNamespacedLease({
        namespace: 'crud',
        name: 'leader',
        body: { ...lease, spec: { ...lease.spec, holderIdentity: 'b' } },
      }),
    );
    assert.equal(takeover.code, 409);
    const cur = await coord.readNamespacedLease({ namespace: 'crud', name: 'leader' });
    assert.equal(cur.spec?.holderIdentity, 'a');
  });
});
