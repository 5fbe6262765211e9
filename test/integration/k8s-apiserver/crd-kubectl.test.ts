import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ApiException, ApiextensionsV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { kubectl, startTestApiServer, waitFor, type TestApiServer } from '../../k8s/index.js';

const CRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.test.tensile.dev
spec:
  group: test.tensile.dev
  scope: Namespaced
  names: { plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd] }
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources:
        status: {}
        scale: { specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.selector }
      additionalPrinterColumns:
        - { name: Min, type: integer, jsonPath: .spec.minReplicas }
        - { name: Max, type: integer, jsonPath: .spec.maxReplicas }
        - { name: Current, type: integer, jsonPath: .status.replicas }
        - { name: State, type: string, jsonPath: '.status.conditions[?(@.status=="True")].type' }
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [replicas, template]
              x-kubernetes-validations:
                - rule: "!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas"
                  message: spec.minReplicas must be ≤ spec.maxReplicas
                  fieldPath: .minReplicas
              properties:
                replicas: { type: integer, minimum: 0 }
                minReplicas: { type: integer, minimum: 1, default: 1 }
                maxReplicas: { type: integer, maximum: 8 }
                restartPolicy: { type: string, enum: [Never, OnFailure, ExitCode] }
                template: { type: object, x-kubernetes-preserve-unknown-fields: true }
            status:
              type: object
              properties:
                replicas: { type: integer }
                selector: { type: string }
                conditions:
                  type: array
                  items:
                    type: object
                    properties: { type: { type: string }, status: { type: string } }
`;

const gadget = (name: string, replicas: number, extra = ''): string => `apiVersion: test.tensile.dev/v1alpha1
kind: Gadget
metadata: { name: ${name} }
spec:
  replicas: ${replicas}
  maxReplicas: 4
  template: { spec: { containers: [{ name: w, image: x }] } }
${extra}`;

describe('test API server: CRDs, schema validation and subresources with kubectl and client-node', () => {
  let server: TestApiServer;
  let kc: KubeConfig;
  let dir: string;
  const file = (name: string, text: string): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  before(async () => {
    server = await startTestApiServer();
    kc = new KubeConfig();
    kc.loadFromFile(server.kubeconfigPath);
    dir = mkdtempSync(join(tmpdir(), 'tensile-crd-test-'));
  });
  after(async () => {
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('registers a CRD with kubectl apply and serves the new resource at once', async () => {
    const r = await kubectl(server, ['apply', '-f', file('crd.yaml', CRD)]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /customresourcedefinition.apiextensions.k8s.io\/gadgets.test.tensile.dev created/);
    const crd = await kc
      .makeApiClient(ApiextensionsV1Api)
      .readCustomResourceDefinition({ name: 'gadgets.test.tensile.dev' });
    assert.ok(crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True'));
    const list = await kubectl(server, ['get', 'gadgets']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stderr + list.stdout, /No resources found/);
  });

  it('creates then updates a custom resource with kubectl apply, bumping generation on spec changes', async () => {
    const p = file('g1.yaml', gadget('g1', 2));
    const c = await kubectl(server, ['apply', '-f', p]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /gadget.test.tensile.dev\/g1 created/);
    const u = await kubectl(server, ['apply', '-f', file('g1.yaml', gadget('g1', 3))]);
    assert.equal(u.code, 0, u.stderr);
    assert.match(u.stdout, /configured/);
    const same = await kubectl(server, ['apply', '-f', p.replace('g1.yaml', 'g1.yaml')]);
    assert.match(same.stdout, /unchanged/);
    const obj = await kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
      group: 'test.tensile.dev',
      version: 'v1alpha1',
      namespace: 'default',
      plural: 'gadgets',
      name: 'g1',
    });
    assert.equal(obj.spec.replicas, 3);
    assert.equal(obj.spec.minReplicas, 1, 'the schema default is applied');
    assert.equal(obj.metadata.generation, 2);
  });

  it('rejects invalid custom resources with 422 naming each bad field, and unknown fields with 400', async () => {
    const r = await kubectl(server, [
      'apply',
      '-f',
      file('bad.yaml', gadget('bad', -1, '').replace('maxReplicas: 4', 'maxReplicas: 9\n  restartPolicy: Sometimes')),
    ]);
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /spec\.replicas: Invalid value: -1: spec\.replicas in body should be greater than or equal to 0/,
    );
    assert.match(
      r.stderr,
      /spec\.maxReplicas: Invalid value: 9: spec\.maxReplicas in body should be less than or equal to 8/,
    );
    assert.match(
      r.stderr,
      /spec\.restartPolicy: Unsupported value: "Sometimes": supported values: "Never", "OnFailure", "ExitCode"/,
    );
    const cel = await kubectl(server, [
      'apply',
      '-f',
      file('cel.yaml', gadget('cel', 1).replace('maxReplicas: 4', 'maxReplicas: 4\n  minReplicas: 5')),
    ]);
    assert.notEqual(cel.code, 0);
    assert.match(
      cel.stderr,
      /spec\.minReplicas: Invalid value: "object": spec\.minReplicas must be ≤ spec\.maxReplicas/,
    );
    const missing = await kubectl(server, [
      'apply',
      '-f',
      file(
        'missing.yaml',
        'apiVersion: test.tensile.dev/v1alpha1\nkind: Gadget\nmetadata: { name: m }\nspec: { replicas: 1 }\n',
      ),
    ]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /spec\.template: Required value/);
    const unknown = await kubectl(server, [
      'apply',
      '-f',
      file('unknown.yaml', gadget('u', 1).replace('replicas: 1', 'replicas: 1\n  replicaz: 2')),
    ]);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /unknown field "spec\.replicaz"/);
    try {
      await kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
        group: 'test.tensile.dev',
        version: 'v1alpha1',
        namespace: 'default',
        plural: 'gadgets',
        body: {
          apiVersion: 'test.tensile.dev/v1alpha1',
          kind: 'Gadget',
          metadata: { name: 'typed' },
          spec: { replicas: 'two', template: {} },
        },
      });
      assert.fail('expected 422');
    } catch (err) {
      assert.ok(err instanceof ApiException);
      assert.equal(err.code, 422);
      const body = typeof err.body === 'string' ? JSON.parse(err.body) : err.body;
      assert.equal(body.reason, 'Invalid');
      assert.deepEqual(
        body.details.causes.map((c: { field: string }) => c.field),
        ['spec.replicas'],
      );
    }
  });

  it('keeps status out of main updates and spec out of status updates', async () => {
    const api = kc.makeApiClient(CustomObjectsApi);
    const key = { group: 'test.tensile.dev', version: 'v1alpha1', namespace: 'default', plural: 'gadgets', name: 'g1' };
    const cur = await api.getNamespacedCustomObject(key);
    const st = await api.replaceNamespacedCustomObjectStatus({
      ...key,
      body: {
        ...cur,
        spec: { ...cur.spec, replicas: 7 },
        status: { replicas: 3, selector: 'app=g1', conditions: [{ type: 'Running', status: 'True' }] },
      },
    });
    assert.equal(st.spec.replicas, 3, 'a status update does not change spec');
    assert.equal(st.status.replicas, 3);
    assert.equal(st.metadata.generation, cur.metadata.generation, 'status updates leave generation alone');
    const main = await api.replaceNamespacedCustomObject({ ...key, body: { ...st, status: { replicas: 99 } } });
    assert.equal(main.status.replicas, 3, 'a main update does not change status');
    const stale = await api.replaceNamespacedCustomObject({ ...key, body: cur }).then(
      () => 0,
      (e: ApiException<unknown>) => e.code,
    );
    assert.equal(stale, 409);
  });

  it('prints the CRD printer columns in kubectl get', async () => {
    const r = await kubectl(server, ['get', 'gadgets']);
    assert.equal(r.code, 0, r.stderr);
    const [header, row] = r.stdout.trim().split('\n');
    assert.deepEqual(header.split(/\s+/), ['NAME', 'MIN', 'MAX', 'CURRENT', 'STATE', 'AGE']);
    assert.deepEqual(row.split(/\s+/).slice(0, 5), ['g1', '1', '4', '3', 'Running']);
    const short = await kubectl(server, ['get', 'gd', 'g1', '-o', 'jsonpath={.spec.replicas}']);
    assert.equal(short.stdout, '3');
  });

  it('serves the scale subresource so that kubectl scale changes spec.replicas', async () => {
    const r = await kubectl(server, ['scale', 'gadget/g1', '--replicas=2']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /scaled/);
    const res = await fetch(`${server.url}/apis/test.tensile.dev/v1alpha1/namespaces/default/gadgets/g1/scale`);
    const scale = (await res.json()) as {
      kind: string;
      spec: { replicas: number };
      status: { replicas: number; selector: string };
    };
    assert.equal(scale.kind, 'Scale');
    assert.deepEqual([scale.spec.replicas, scale.status.replicas, scale.status.selector], [2, 3, 'app=g1']);
    const bad = await fetch(`${server.url}/apis/test.tensile.dev/v1alpha1/namespaces/default/gadgets/g1/scale`, {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/merge-patch+json' },
      body: JSON.stringify({ spec: { replicas: -3 } }),
    });
    assert.equal(bad.status, 422);
  });

  it('deletes custom resources with kubectl delete, waiting for finalizers to clear', async () => {
    const api = kc.makeApiClient(CustomObjectsApi);
    const key = { group: 'test.tensile.dev', version: 'v1alpha1', namespace: 'default', plural: 'gadgets', name: 'g1' };
    const cur = await api.getNamespacedCustomObject(key);
    await api.replaceNamespacedCustomObject({
      ...key,
      body: { ...cur, metadata: { ...cur.metadata, finalizers: ['test.tensile.dev/hold'] } },
    });
    const del = kubectl(server, ['delete', 'gadget', 'g1', '--timeout=20s']);
    const held = await waitFor('deletionTimestamp', async () => {
      const o = await api.getNamespacedCustomObject(key);
      return o.metadata.deletionTimestamp ? o : undefined;
    });
    await api.replaceNamespacedCustomObject({
      ...key,
      body: { ...held, metadata: { ...held.metadata, finalizers: [] } },
    });
    const r = await del;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /gadget.test.tensile.dev "g1" deleted/);
    const gone = await api.getNamespacedCustomObject(key).then(
      () => 200,
      (e: ApiException<unknown>) => e.code,
    );
    assert.equal(gone, 404);
  });

  it('supports kubectl apply --server-side and --dry-run=server without persisting the dry run', async () => {
    const p = file('g3.yaml', gadget('g3', 1));
    const c = await kubectl(server, ['apply', '--server-side', '-f', p]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /gadget.test.tensile.dev\/g3 serverside-applied/);
    const u = await kubectl(server, ['apply', '--server-side', '-f', file('g3.yaml', gadget('g3', 2))]);
    assert.equal(u.code, 0, u.stderr);
    const dry = await kubectl(server, ['apply', '--dry-run=server', '-f', file('g3-dry.yaml', gadget('g3', 4))]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /server dry run/);
    const got = await kubectl(server, ['get', 'gadget', 'g3', '-o', 'jsonpath={.spec.replicas}']);
    assert.equal(got.stdout, '2');
  });

  it('stops serving the resource when its CRD is deleted', async () => {
    await kubectl(server, ['apply', '-f', file('g2.yaml', gadget('g2', 1))]);
    const r = await kubectl(server, ['delete', 'crd', 'gadgets.test.tensile.dev']);
    assert.equal(r.code, 0, r.stderr);
    const res = await fetch(`${server.url}/apis/test.tensile.dev/v1alpha1/namespaces/default/gadgets`);
    assert.equal(res.status, 404);
  });
});
