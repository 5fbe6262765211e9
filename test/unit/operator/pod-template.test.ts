import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { V1Pod } from '@kubernetes/client-node';
import { resolveSpec, type ElasticJobSpec } from '../../../operator/v1alpha1/elasticjob-types.js';
import { buildWorkerPod, buildWorkerService } from '../../../operator/controller/pod-template.js';
import { cannotStart, toPodView } from '../../../operator/controller/pod-view.js';

const raw: ElasticJobSpec = {
  rdzvEndpoint: '127.0.0.1:2379',
  minReplicas: 2,
  maxReplicas: 4,
  nprocPerNode: 2,
  maxRestarts: 5,
  replicaSpecs: {
    Worker: { replicas: 3, template: { spec: { containers: [{ name: 'worker', image: 'img', args: ['train.js'] }] } } },
  },
};
const job = { name: 'j', namespace: 'ns', uid: 'u-1' };

test('a worker pod has a stable name, labels, owner reference, PET_* env and runs tensile run', () => {
  const pod = buildWorkerPod(job, raw, resolveSpec(raw), '127.0.0.1:2379', 1);
  assert.equal(pod.metadata?.name, 'j-worker-1');
  assert.equal(pod.metadata?.labels?.['tensile.dev/replica-index'], '1');
  assert.equal(pod.metadata?.ownerReferences?.[0]?.uid, 'u-1');
  assert.equal(pod.spec?.restartPolicy, 'Never');
  const c = pod.spec!.containers[0]!;
  assert.deepEqual(c.command, ['tensile', 'run']);
  assert.deepEqual(c.args, ['train.js']);
  const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));
  assert.deepEqual(
    {
      n: env.PET_NNODES,
      b: env.PET_RDZV_BACKEND,
      e: env.PET_RDZV_ENDPOINT,
      id: env.PET_RDZV_ID,
      p: env.PET_NPROC_PER_NODE,
      r: env.PET_MAX_RESTARTS,
    },
    { n: '2:4', b: 'etcd', e: '127.0.0.1:2379', id: 'u-1', p: '2', r: '5' },
  );
});

test('a worker advertises its pod IP (downward API) to the other nodes, not its hostname', () => {
  const pod = buildWorkerPod(job, raw, resolveSpec(raw), '127.0.0.1:2379', 0);
  const addr = (pod.spec!.containers[0]!.env ?? []).find((e) => e.name === 'PET_LOCAL_ADDR');
  assert.deepEqual(addr?.valueFrom, { fieldRef: { fieldPath: 'status.podIP' } });
});

test('a user-set env var wins over the operator default', () => {
  const spec: ElasticJobSpec = {
    ...raw,
    replicaSpecs: {
      Worker: {
        template: { spec: { containers: [{ name: 'worker', env: [{ name: 'PET_MAX_RESTARTS', value: '9' }] }] } },
      },
    },
  };
  const pod = buildWorkerPod(job, spec, resolveSpec(spec), 'e:1', 0);
  const values = (pod.spec!.containers[0]!.env ?? []).filter((e) => e.name === 'PET_MAX_RESTARTS').map((e) => e.value);
  assert.deepEqual(values, ['9']);
});

test('the worker service is headless and selects exactly its index', () => {
  const svc = buildWorkerService(job, 2);
  assert.equal(svc.spec?.clusterIP, 'None');
  assert.deepEqual(svc.spec?.selector, { 'tensile.dev/job-name': 'j', 'tensile.dev/replica-index': '2' });
});

const failedPod = (over: Partial<V1Pod['status']>, nodeName?: string): V1Pod => ({
  metadata: { name: 'j-worker-0', uid: 'p', labels: { 'tensile.dev/replica-index': '0' } },
  spec: { containers: [], ...(nodeName ? { nodeName } : {}) },
  status: { phase: 'Failed', ...over },
});

test('pod views carry exit codes, disruption conditions and node loss', () => {
  const opts = { handled: false, terminationTaints: ['aws-node-termination-handler/spot-itn'] };
  const v1 = toPodView(
    failedPod({
      containerStatuses: [
        {
          name: 'worker',
          image: 'i',
          imageID: '',
          ready: false,
          restartCount: 0,
          state: { terminated: { exitCode: 137 } },
        },
      ],
    }),
    opts,
  );
  assert.equal(v1?.exitCode, 137);
  const v2 = toPodView(
    failedPod({ conditions: [{ type: 'DisruptionTarget', status: 'True', reason: 'EvictionByEvictionAPI' }] }),
    opts,
  );
  assert.equal(v2?.disruption, 'DisruptionTarget: EvictionByEvictionAPI');
  const v3 = toPodView(failedPod({}, 'n1'), {
    ...opts,
    nodeOf: () => ({ exists: true, taintKeys: ['aws-node-termination-handler/spot-itn'] }),
  });
  assert.equal(v3?.nodeLost, true);
  const v4 = toPodView(failedPod({}, 'n1'), { ...opts, nodeOf: () => undefined });
  assert.equal(v4?.nodeLost, false);
});

test('cannotStart: image pull, invalid image, create errors and missing commands; not crashes or signals', () => {
  const table: Array<[string, Parameters<typeof cannotStart>[0], string | undefined]> = [
    [
      'ErrImagePull',
      {
        name: 'worker',
        image: 'x',
        imageID: '',
        ready: false,
        restartCount: 0,
        state: { waiting: { reason: 'ErrImagePull', message: 'pull access denied' } },
      },
      'ErrImagePull: pull access denied',
    ],
    [
      'ImagePullBackOff',
      {
        name: 'worker',
        image: 'x',
        imageID: '',
        ready: false,
        restartCount: 0,
        state: { waiting: { reason: 'ImagePullBackOff' } },
      },
      'ImagePullBackOff',
    ],
    [
      'InvalidImageName',
      {
        name: 'worker',
        image: 'x',
        imageID: '',
        ready: false,
        restartCount: 0,
        state: { waiting: { reason: 'InvalidImageName', message: 'bad ref' } },
      },
      'InvalidImageName: bad ref',
    ],
    [
      'exit 127',
      {
        name: 'worker',
        image: 'x',
        imageID: '',
        ready: false,
        restartCount: 0,
        state: { terminated: { exitCode: 127, reason: 'Error' } },
      },
      'Error (exit code 127)',
    ],
    [
      'StartError 128',
      {
        name: 'worker',
        image: 'x',
        imageID: '',
        ready: false,
        restartCount: 0,
        state: { terminated: { exitCode: 128, reason: 'StartError', message: 'exec: "trian": not found' } },
      },
      'StartError (exit code 128): exec: "trian": not found',
    ],
    [
      'ContainerCannotRun',
      {
        name: 'worker',
        image: 'x',
        imageID: '',
        ready: false,
        restartCount: 0,
        state: { terminated: { exitCode: 1, reason: 'ContainerCannotRun' } },
      },
      'ContainerCannotRun (exit code 1)',
    ],
    [
      'crash loop after 127',
      {
        name: 'worker',
        image: 'x',
        imageID: '',
        ready: false,
        restartCount: 2,
        state: { waiting: { reason: 'CrashLoopBackOff' } },
        lastState: { terminated: { exitCode: 127, reason: 'StartError' } },
      },
      'StartError (exit code 127)',
    ],
    [
      'running again after a 127',
      {
        name: 'worker',
        image: 'x',
        imageID: '',
        ready: true,
        restartCount: 1,
        state: { running: {} },
        lastState: { terminated: { exitCode: 127 } },
      },
      undefined,
    ],
    [
      'an ordinary crash',
      {
        name: 'worker',
        image: 'x',
        imageID: '',
        ready: false,
        restartCount: 0,
        state: { terminated: { exitCode: 1, reason: 'Error' } },
      },
      undefined,
    ],
    [
      'SIGKILL',
      {
        name: 'worker',
        image: 'x',
        imageID: '',
        ready: false,
        restartCount: 0,
        state: { terminated: { exitCode: 137, reason: 'Error' } },
      },
      undefined,
    ],
    [
      'crash-looping on a crash',
      {
        name: 'worker',
        image: 'x',
        imageID: '',
        ready: false,
        restartCount: 3,
        state: { waiting: { reason: 'CrashLoopBackOff' } },
        lastState: { terminated: { exitCode: 1 } },
      },
      undefined,
    ],
    [
      'creating',
      {
        name: 'worker',
        image: 'x',
        imageID: '',
        ready: false,
        restartCount: 0,
        state: { waiting: { reason: 'ContainerCreating' } },
      },
      undefined,
    ],
    ['no status', undefined, undefined],
  ];
  for (const [name, status, want] of table) assert.equal(cannotStart(status), want, name);
});
