import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { V1Pod } from '@kubernetes/client-node';
import { toPodView } from '../../../operator/controller/pod-view.js';
import { slimNode, slimPod, slimService } from '../../../operator/kube/transforms.js';

const pod: V1Pod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: {
    name: 'j-worker-1',
    namespace: 'ml',
    uid: 'u1',
    resourceVersion: '7',
    labels: { 'tensile.dev/job-name': 'j', 'tensile.dev/replica-index': '1' },
    annotations: { big: 'x'.repeat(1000) },
    managedFields: [{ manager: 'kubectl', operation: 'Update' }],
    ownerReferences: [{ apiVersion: 'tensile.dev/v1alpha1', kind: 'ElasticJob', name: 'j', uid: 'owner' }],
    deletionTimestamp: new Date(0),
  },
  spec: {
    nodeName: 'node-a',
    containers: [{ name: 'worker', image: 'img', env: [{ name: 'A', value: 'a'.repeat(1000) }] }],
  },
  status: {
    phase: 'Failed',
    reason: 'Evicted',
    hostIP: '10.0.0.1',
    conditions: [{ type: 'DisruptionTarget', status: 'True', reason: 'PreemptionByScheduler' }],
    containerStatuses: [
      {
        name: 'worker',
        image: 'img',
        imageID: 'sha',
        ready: false,
        restartCount: 2,
        state: { terminated: { exitCode: 137 } },
      },
    ],
  },
};

test('a slimmed pod gives the controller exactly the same view as the full pod', () => {
  const opts = {
    handled: false,
    terminationTaints: ['t'],
    nodeOf: () => ({ exists: true, taintKeys: ['t'] }),
  };
  const slim = slimPod(pod);
  assert.deepEqual(toPodView(slim, opts), toPodView(pod, opts));
  assert.equal(toPodView(slim, opts)?.nodeLost, true);
  assert.equal(slim.metadata?.annotations, undefined);
  assert.equal(slim.metadata?.managedFields, undefined);
  assert.deepEqual(slim.spec?.containers, []);
  assert.ok(JSON.stringify(slim).length < JSON.stringify(pod).length / 3);
});

test('a slimmed service keeps only identity, labels and owners; a slimmed node keeps its taints', () => {
  const svc = slimService({
    metadata: {
      name: 's',
      namespace: 'ml',
      uid: 'u',
      labels: { a: 'b' },
      ownerReferences: pod.metadata?.ownerReferences,
    },
    spec: { clusterIP: 'None', ports: [{ port: 1 }] },
  });
  assert.deepEqual(svc, {
    metadata: {
      name: 's',
      namespace: 'ml',
      uid: 'u',
      labels: { a: 'b' },
      ownerReferences: pod.metadata?.ownerReferences,
    },
  });
  const node = slimNode({
    metadata: { name: 'n' },
    spec: { taints: [{ key: 'k', effect: 'NoSchedule' }] },
    status: { images: [{ names: ['a'], sizeBytes: 1 }] },
  });
  assert.deepEqual(node, { metadata: { name: 'n' }, spec: { taints: [{ key: 'k', effect: 'NoSchedule' }] } });
});

test('a slimmed pod keeps only what the view reads of its conditions and container states', () => {
  const opts = { handled: false, terminationTaints: [] };
  const startedAt = new Date(0);
  const variants: V1Pod[] = [
    {
      metadata: { name: 'j-worker-0', labels: { 'tensile.dev/replica-index': '0' } },
      status: {
        phase: 'Pending',
        conditions: [
          { type: 'Ready', status: 'False', lastTransitionTime: startedAt, message: 'x'.repeat(200) },
          { type: 'DisruptionTarget', status: 'False', reason: 'None' },
        ],
        containerStatuses: [
          {
            name: 'worker',
            image: 'registry/img:tag',
            imageID: 'sha256:'.padEnd(71, 'f'),
            containerID: 'containerd://abc',
            ready: false,
            restartCount: 3,
            state: { waiting: { reason: 'ImagePullBackOff', message: 'Back-off pulling image "img"' } },
            lastState: { terminated: { exitCode: 127, reason: 'StartError', message: 'no such file', startedAt } },
          },
          { name: 'sidecar', image: 'b', imageID: '', ready: true, restartCount: 1, state: { running: { startedAt } } },
        ],
      },
    },
    {
      metadata: { name: 'j-worker-1', labels: { 'tensile.dev/replica-index': '1' } },
      status: {
        phase: 'Running',
        conditions: [{ type: 'DisruptionTarget', status: 'True', reason: 'TerminationByKubelet' }],
        containerStatuses: [
          {
            name: 'worker',
            image: 'img',
            imageID: '',
            ready: true,
            restartCount: 1,
            state: { running: { startedAt } },
            lastState: { terminated: { exitCode: 128, reason: 'ContainerCannotRun' } },
          },
        ],
      },
    },
  ];
  for (const p of variants) {
    const slim = slimPod(p);
    assert.deepEqual(toPodView(slim, opts), toPodView(p, opts));
    assert.ok(
      (slim.status?.conditions ?? []).every((c) => c.type === 'DisruptionTarget' && c.lastTransitionTime === undefined),
    );
    for (const c of slim.status?.containerStatuses ?? []) {
      assert.equal(c.image, '');
      assert.equal(c.containerID, undefined);
      assert.equal(c.state?.running?.startedAt, undefined);
      assert.equal(c.lastState?.terminated?.startedAt, undefined);
    }
  }
  assert.equal(toPodView(slimPod(variants[0]!), opts)?.startFailure, 'ImagePullBackOff: Back-off pulling image "img"');
  assert.equal(toPodView(slimPod(variants[1]!), opts)?.disruption, 'DisruptionTarget: TerminationByKubelet');
});
