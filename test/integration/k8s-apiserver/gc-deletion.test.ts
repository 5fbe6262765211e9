import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CoreV1Api, KubeConfig, type V1ConfigMap, type V1OwnerReference } from '@kubernetes/client-node';
import { kubectl, startTestApiServer, waitFor, type TestApiServer } from '../../k8s/index.js';

describe('test API server: owner-reference garbage collection, finalizers and namespaces', () => {
  let server: TestApiServer;
  let core: CoreV1Api;

  before(async () => {
    server = await startTestApiServer({ gcIntervalMs: 20 });
    const kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'gc' } } });
  });
  after(async () => {
    await server?.stop();
  });

  const names = async (ns = 'gc'): Promise<string[]> =>
    (await core.listNamespacedConfigMap({ namespace: ns })).items.map((i) => i.metadata!.name!);

  async function family(owner: string, n: number): Promise<V1OwnerReference> {
    const o = await core.createNamespacedConfigMap({ namespace: 'gc', body: { metadata: { name: owner } } });
    const ref: V1OwnerReference = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      name: owner,
      uid: o.metadata!.uid!,
      controller: true,
    };
    for (let i = 0; i < n; i++)
      await core.createNamespacedConfigMap({
        namespace: 'gc',
        body: { metadata: { name: `${owner}-dep-${i}`, ownerReferences: [ref] } },
      });
    return ref;
  }

  it('deletes dependents after their owner with the default background policy', async () => {
    await family('bg', 2);
    await core.deleteNamespacedConfigMap({ namespace: 'gc', name: 'bg' });
    await waitFor('dependents collected', async () => !(await names()).some((n) => n.startsWith('bg')));
  });

  it('keeps a foreground-deleted owner until its dependents are gone', async () => {
    await family('fg', 2);
    const dep = await core.readNamespacedConfigMap({ namespace: 'gc', name: 'fg-dep-0' });
    await core.replaceNamespacedConfigMap({
      namespace: 'gc',
      name: 'fg-dep-0',
      body: { ...dep, metadata: { ...dep.metadata, finalizers: ['test/hold'] } },
    });
    await core.deleteNamespacedConfigMap({ namespace: 'gc', name: 'fg', propagationPolicy: 'Foreground' });
    const owner = await core.readNamespacedConfigMap({ namespace: 'gc', name: 'fg' });
    assert.ok(owner.metadata?.deletionTimestamp);
    assert.ok(owner.metadata?.finalizers?.includes('foregroundDeletion'));
    await waitFor('the free dependent goes', async () => !(await names()).includes('fg-dep-1'));
    assert.ok((await names()).includes('fg'), 'the owner waits for the held dependent');
    const held = await core.readNamespacedConfigMap({ namespace: 'gc', name: 'fg-dep-0' });
    await core.replaceNamespacedConfigMap({
      namespace: 'gc',
      name: 'fg-dep-0',
      body: { ...held, metadata: { ...held.metadata, finalizers: [] } },
    });
    await waitFor('owner and dependents gone', async () => !(await names()).some((n) => n.startsWith('fg')));
  });

  it('orphans dependents with the Orphan policy, removing only the owner reference', async () => {
    await family('or', 1);
    await core.deleteNamespacedConfigMap({ namespace: 'gc', name: 'or', propagationPolicy: 'Orphan' });
    await waitFor('owner gone', async () => !(await names()).includes('or'));
    const dep: V1ConfigMap = await core.readNamespacedConfigMap({ namespace: 'gc', name: 'or-dep-0' });
    assert.deepEqual(dep.metadata?.ownerReferences ?? [], []);
  });

  it('collects an object whose owner does not exist', async () => {
    await core.createNamespacedConfigMap({
      namespace: 'gc',
      body: {
        metadata: {
          name: 'dangling',
          ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'ghost', uid: 'no-such-uid' }],
        },
      },
    });
    await waitFor('dangling collected', async () => !(await names()).includes('dangling'));
  });

  it('removes a terminating pod bound to a node that does not exist, as pod GC does', async () => {
    await core.createNamespacedPod({
      namespace: 'gc',
      body: { metadata: { name: 'lost' }, spec: { nodeName: 'ghost', containers: [{ name: 'c', image: 'i' }] } },
    });
    await core.deleteNamespacedPod({ namespace: 'gc', name: 'lost' });
    await waitFor('lost removed', async () => (await core.listNamespacedPod({ namespace: 'gc' })).items.length === 0);
  });

  it('deletes a namespace with kubectl after emptying it', async () => {
    await core.createNamespace({ body: { metadata: { name: 'doomed' } } });
    await core.createNamespacedConfigMap({ namespace: 'doomed', body: { metadata: { name: 'x' } } });
    await core.createNamespacedPod({
      namespace: 'doomed',
      body: { metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'i' }] } },
    });
    const r = await kubectl(server, ['delete', 'namespace', 'doomed', '--timeout=20s']);
    assert.equal(r.code, 0, r.stderr);
    const left = (await core.listNamespace()).items.map((n) => n.metadata!.name);
    assert.ok(!left.includes('doomed'));
    assert.deepEqual(await names('doomed'), []);
  });
});
