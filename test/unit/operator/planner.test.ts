import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  resolveSpec,
  type ElasticJobStatus,
  type ElasticJobSpec,
} from '../../../operator/v1alpha1/elasticjob-types.js';
import { planReconcile, type Action, type JobSnapshot, type PodView } from '../../../operator/controller/planner.js';

const T0 = Date.parse('2026-01-01T00:00:00.000Z');

function spec(over: Partial<ElasticJobSpec> = {}, replicas = 3): ElasticJobSpec {
  return {
    rdzvEndpoint: 'etcd:2379',
    minReplicas: 2,
    maxReplicas: 4,
    replicaSpecs: { Worker: { replicas, template: { spec: { containers: [{ name: 'worker', image: 'x' }] } } } },
    ...over,
  };
}

function pod(index: number, phase: PodView['phase'], over: Partial<PodView> = {}): PodView {
  return {
    name: `job-worker-${index}`,
    uid: `uid-${index}`,
    index,
    phase,
    terminating: false,
    handled: false,
    restartCount: 0,
    nodeLost: false,
    ...over,
  };
}

const running3 = [pod(0, 'Running'), pod(1, 'Running'), pod(2, 'Running')];
const services3 = ['job-worker-0', 'job-worker-1', 'job-worker-2'];
const runningStatus: ElasticJobStatus = {
  state: 'Running',
  startTime: new Date(T0).toISOString(),
  conditions: [
    { type: 'Created', status: 'True' },
    { type: 'Running', status: 'True', reason: 'ElasticJobRunning' },
  ],
  replicaStatuses: { Worker: { active: 3 } },
};

function snap(over: Partial<JobSnapshot> & { rawSpec?: ElasticJobSpec } = {}): JobSnapshot {
  const { rawSpec, ...rest } = over;
  return {
    nowMs: T0 + 10_000,
    name: 'job',
    namespace: 'ns',
    uid: 'job-uid',
    generation: 1,
    spec: resolveSpec(rawSpec ?? spec()),
    status: runningStatus,
    pods: running3,
    serviceNames: services3,
    deletedExternally: 0,
    rdzvEndpoint: 'etcd:2379',
    ...rest,
  };
}

const kinds = (actions: readonly Action[]) =>
  actions.map((a) =>
    a.type === 'deletePod'
      ? `deletePod:${a.name}:${a.reason}`
      : a.type === 'createPod' || a.type === 'createService'
        ? `${a.type}:${a.index}`
        : a.type === 'deleteService'
          ? `deleteService:${a.name}`
          : a.type,
  );

/** The actions tearing the 3-worker job down: its pods at `indexes` deleted for `reason`, then all three services. */
const teardown = (reason: string, indexes: readonly number[] = [0, 1, 2]) => [
  ...indexes.map((i) => `deletePod:job-worker-${i}:${reason}`),
  ...services3.map((name) => `deleteService:${name}`),
];
const failedCondition = (p: ReturnType<typeof planReconcile>) => p.status.conditions?.find((c) => c.type === 'Failed');

describe('planReconcile', () => {
  const table: Array<{
    name: string;
    snap: JobSnapshot;
    actions: string[];
    state: string;
    check?: (p: ReturnType<typeof planReconcile>) => void;
  }> = [
    {
      name: 'a new job creates one pod and one service per index and records Created',
      snap: snap({ status: {}, pods: [], serviceNames: [] }),
      actions: ['createPod:0', 'createPod:1', 'createPod:2', 'createService:0', 'createService:1', 'createService:2'],
      state: 'Created',
      check: (p) => {
        assert.equal(p.status.conditions?.find((c) => c.type === 'Created')?.status, 'True');
        assert.ok(p.events.some((e) => e.reason === 'Created'));
        assert.equal(
          p.status.replicaStatuses?.Worker?.selector,
          'tensile.dev/job-name=job,tensile.dev/replica-type=worker',
        );
      },
    },
    {
      name: 'a job at full size plans nothing and is Running without Scaling',
      snap: snap(),
      actions: [],
      state: 'Running',
      check: (p) => {
        assert.equal(
          p.status.conditions?.find((c) => c.type === 'Scaling'),
          undefined,
        );
        assert.equal(p.status.replicaStatuses?.Worker?.active, 3);
      },
    },
    {
      name: 'a pod deleted from outside is recreated, counted as a preemption and not as a failure',
      snap: snap({ pods: [running3[0]!, running3[2]!], deletedExternally: 1 }),
      actions: ['createPod:1'],
      state: 'Running',
      check: (p) => {
        assert.equal(p.status.preemptions, 1);
        assert.equal(p.status.failures, 0);
        assert.equal(p.status.conditions?.find((c) => c.type === 'Scaling')?.status, 'True');
      },
    },
    {
      name: 'exit code 137 is a preemption: the pod is replaced and backoffLimit is untouched',
      snap: snap({
        rawSpec: spec({ backoffLimit: 0 }),
        pods: [running3[0]!, pod(1, 'Failed', { exitCode: 137 }), running3[2]!],
      }),
      actions: ['deletePod:job-worker-1:preempted'],
      state: 'Running',
      check: (p) => {
        assert.equal(p.status.preemptions, 1);
        assert.equal(p.status.failures, 0);
      },
    },
    {
      name: 'a DisruptionTarget condition is a preemption whatever the exit code',
      snap: snap({
        rawSpec: spec({ backoffLimit: 0 }),
        pods: [
          running3[0]!,
          pod(1, 'Failed', { exitCode: 1, disruption: 'DisruptionTarget: EvictionByEvictionAPI' }),
          running3[2]!,
        ],
      }),
      actions: ['deletePod:job-worker-1:preempted'],
      state: 'Running',
    },
    {
      name: 'a running pod on a node tainted by a termination handler is replaced early as a preemption',
      snap: snap({ pods: [running3[0]!, pod(1, 'Running', { nodeLost: true }), running3[2]!] }),
      actions: ['deletePod:job-worker-1:preempted'],
      state: 'Running',
      check: (p) => assert.equal(p.status.preemptions, 1),
    },
    {
      name: 'a real failure counts against backoffLimit and the pod is replaced',
      snap: snap({
        rawSpec: spec({ backoffLimit: 2 }),
        pods: [running3[0]!, pod(1, 'Failed', { exitCode: 1 }), running3[2]!],
      }),
      actions: ['deletePod:job-worker-1:failed'],
      state: 'Running',
      check: (p) => assert.equal(p.status.failures, 1),
    },
    {
      name: 'a real failure past backoffLimit fails the job and cleans up running pods',
      snap: snap({
        rawSpec: spec({ backoffLimit: 1 }),
        status: { ...runningStatus, failures: 1 },
        pods: [running3[0]!, pod(1, 'Failed', { exitCode: 2 }), running3[2]!],
      }),
      actions: teardown('finished', [0, 2]),
      state: 'Failed',
      check: (p) => {
        const failed = failedCondition(p);
        assert.equal(failed?.reason, 'BackoffLimitExceeded');
        assert.equal(p.status.conditions?.find((c) => c.type === 'Running')?.status, 'False');
        assert.ok(p.status.completionTime !== undefined);
      },
    },
    {
      name: 'a pending pod whose image cannot be pulled is a real failure: counted, event, replaced (not a preemption)',
      snap: snap({
        rawSpec: spec({ backoffLimit: 2 }),
        pods: [
          running3[0]!,
          pod(1, 'Pending', { startFailure: 'ImagePullBackOff: Back-off pulling image "nope:1"' }),
          running3[2]!,
        ],
      }),
      actions: ['deletePod:job-worker-1:failed'],
      state: 'Running',
      check: (p) => {
        assert.equal(p.status.failures, 1);
        assert.equal(p.status.preemptions ?? 0, 0);
        assert.deepEqual(
          p.events.filter((e) => e.reason === 'WorkerCannotStart'),
          [
            {
              type: 'Warning',
              reason: 'WorkerCannotStart',
              message:
                'job-worker-1 cannot start: ImagePullBackOff: Back-off pulling image "nope:1": failure 1 of backoffLimit 2 (not a preemption)',
            },
          ],
        );
      },
    },
    {
      name: 'a command missing from the image past backoffLimit fails the job naming the cause',
      snap: snap({
        rawSpec: spec({ backoffLimit: 1 }),
        status: { ...runningStatus, failures: 1 },
        pods: [
          running3[0]!,
          pod(1, 'Failed', {
            exitCode: 127,
            startFailure: 'StartError (exit code 127): spawn trian ENOENT',
          }),
          running3[2]!,
        ],
      }),
      actions: teardown('finished', [0, 2]),
      state: 'Failed',
      check: (p) => {
        const failed = failedCondition(p);
        assert.equal(failed?.reason, 'BackoffLimitExceeded');
        assert.equal(
          failed?.message,
          '2 worker failures > backoffLimit (1); last: job-worker-1 cannot start: StartError (exit code 127): spawn trian ENOENT',
        );
      },
    },
    {
      name: 'a worker that cannot start under restartPolicy Never fails the job with reason WorkerCannotStart',
      snap: snap({
        rawSpec: { ...spec(), replicaSpecs: { Worker: { ...spec().replicaSpecs.Worker, restartPolicy: 'Never' } } },
        pods: [running3[0]!, pod(1, 'Pending', { startFailure: 'InvalidImageName' }), running3[2]!],
      }),
      actions: teardown('finished'),
      state: 'Failed',
      check: (p) => {
        const failed = failedCondition(p);
        assert.equal(failed?.reason, 'WorkerCannotStart');
        assert.equal(failed?.message, 'job-worker-1 cannot start: InvalidImageName (restartPolicy is Never)');
      },
    },
    {
      name: 'a pod evicted while its image cannot be pulled is a preemption, not a failure',
      snap: snap({
        rawSpec: spec({ backoffLimit: 0 }),
        pods: [
          running3[0]!,
          pod(1, 'Failed', { startFailure: 'ErrImagePull', disruption: 'DisruptionTarget: EvictionByEvictionAPI' }),
          running3[2]!,
        ],
      }),
      actions: ['deletePod:job-worker-1:preempted'],
      state: 'Running',
      check: (p) => assert.equal(p.status.failures ?? 0, 0),
    },
    {
      name: 'restartPolicy Never fails the job at the first real failure',
      snap: snap({
        rawSpec: { ...spec(), replicaSpecs: { Worker: { ...spec().replicaSpecs.Worker, restartPolicy: 'Never' } } },
        pods: [running3[0]!, pod(1, 'Failed', { exitCode: 1 }), running3[2]!],
      }),
      actions: teardown('finished', [0, 2]),
      state: 'Failed',
      check: (p) => assert.equal(failedCondition(p)?.reason, 'WorkerFailed'),
    },
    {
      name: 'below min starts the timeout clock and asks to be requeued when it ends',
      snap: snap({ pods: [running3[0]!, pod(1, 'Pending'), pod(2, 'Pending')] }),
      actions: [],
      state: 'Restarting',
      check: (p) => {
        assert.equal(p.status.belowMinSince, new Date(T0 + 10_000).toISOString());
        assert.equal(p.requeueAfterMs, 600_000);
        assert.equal(p.status.conditions?.find((c) => c.type === 'Restarting')?.status, 'True');
        assert.equal(p.status.conditions?.find((c) => c.type === 'Running')?.status, 'False');
      },
    },
    {
      name: 'below min past the timeout fails the job with reason BelowMinReplicas',
      snap: snap({
        rawSpec: spec({ preemption: { belowMinTimeoutSeconds: 5 } }),
        status: { ...runningStatus, state: 'Restarting', belowMinSince: new Date(T0).toISOString() },
        pods: [running3[0]!, pod(1, 'Pending'), pod(2, 'Pending')],
      }),
      actions: teardown('finished'),
      state: 'Failed',
      check: (p) => assert.equal(failedCondition(p)?.reason, 'BelowMinReplicas'),
    },
    {
      name: 'scaling down deletes the pods and services above the new size',
      snap: snap({ rawSpec: spec({}, 2) }),
      actions: ['deletePod:job-worker-2:scale-down', 'deleteService:job-worker-2'],
      state: 'Running',
    },
    {
      name: 'a replaced pod that is still terminating blocks its index until it is gone',
      snap: snap({ pods: [running3[0]!, pod(1, 'Running', { terminating: true }), running3[2]!] }),
      actions: [],
      state: 'Running',
      check: (p) => assert.equal(p.status.replicaStatuses?.Worker?.active, 2),
    },
    {
      name: 'a pod already handled is not counted twice',
      snap: snap({
        status: { ...runningStatus, failures: 1 },
        pods: [running3[0]!, pod(1, 'Failed', { exitCode: 1, handled: true }), running3[2]!],
      }),
      actions: [],
      state: 'Running',
      check: (p) => assert.equal(p.status.failures, 1),
    },
    {
      name: 'the job succeeds when a worker succeeded and none is active, and cleanPodPolicy All deletes every pod',
      snap: snap({
        rawSpec: spec({ cleanPodPolicy: 'All' }),
        pods: [pod(0, 'Succeeded'), pod(1, 'Succeeded'), pod(2, 'Succeeded')],
      }),
      actions: teardown('finished'),
      state: 'Succeeded',
    },
    {
      name: 'a finished job past its TTL is deleted, and before it is requeued for the rest',
      snap: snap({
        rawSpec: spec({ ttlSecondsAfterFinished: 60, cleanPodPolicy: 'None' }),
        status: { ...runningStatus, state: 'Succeeded', completionTime: new Date(T0).toISOString() },
        nowMs: T0 + 20_000,
      }),
      actions: [],
      state: 'Succeeded',
      check: (p) => assert.equal(p.requeueAfterMs, 40_000),
    },
    {
      name: 'a finished job whose TTL has passed is deleted',
      snap: snap({
        rawSpec: spec({ ttlSecondsAfterFinished: 5, cleanPodPolicy: 'None' }),
        status: { ...runningStatus, state: 'Succeeded', completionTime: new Date(T0).toISOString() },
      }),
      actions: ['deleteJob'],
      state: 'Succeeded',
    },
    {
      name: 'activeDeadlineSeconds fails a job that ran too long',
      snap: snap({ rawSpec: spec({ activeDeadlineSeconds: 5, cleanPodPolicy: 'None' }) }),
      actions: [],
      state: 'Failed',
      check: (p) => assert.equal(failedCondition(p)?.reason, 'DeadlineExceeded'),
    },
    {
      name: 'suspend deletes every pod and service and marks the job Suspended',
      snap: snap({ rawSpec: spec({ suspend: true }) }),
      actions: teardown('suspended'),
      state: 'Suspended',
      check: (p) => assert.equal(p.status.conditions?.find((c) => c.type === 'Suspended')?.status, 'True'),
    },
    {
      name: 'an invalid spec fails the job with the field-named issue',
      snap: snap({ spec: { invalid: [{ path: 'spec.minReplicas', message: '4 must be ≤ spec.maxReplicas (2)' }] } }),
      actions: [],
      state: 'Failed',
      check: (p) =>
        assert.match(failedCondition(p)?.message ?? '', /spec\.minReplicas: 4 must be ≤ spec\.maxReplicas \(2\)/),
    },
    {
      name: 'a Failed job stays Failed whatever its pods do',
      snap: snap({
        status: { ...runningStatus, state: 'Failed', completionTime: new Date(T0).toISOString() },
        pods: [],
        serviceNames: [],
        rawSpec: spec({ cleanPodPolicy: 'None' }),
      }),
      actions: [],
      state: 'Failed',
    },
  ];
  for (const row of table) {
    test(row.name, () => {
      const plan = planReconcile(row.snap);
      assert.deepEqual(kinds(plan.actions), row.actions);
      assert.equal(plan.status.state, row.state);
      row.check?.(plan);
    });
  }

  test('the same snapshot always gives the same plan', () => {
    const s = snap({ pods: [running3[0]!], deletedExternally: 2 });
    assert.deepEqual(planReconcile(s), planReconcile(s));
  });

  test('a preempted job goes Running → Running (Scaling) → Running at full size as pods come back', () => {
    const states: string[] = [];
    let status = runningStatus;
    const steps: Array<Partial<JobSnapshot>> = [
      { pods: [running3[0]!, running3[2]!], deletedExternally: 1 },
      { pods: [running3[0]!, pod(1, 'Pending'), running3[2]!] },
      { pods: running3 },
    ];
    for (const step of steps) {
      const plan = planReconcile(snap({ ...step, status }));
      status = plan.status;
      const scaling = plan.status.conditions?.find((c) => c.type === 'Scaling')?.status ?? 'none';
      states.push(`${plan.status.state}/${scaling}`);
    }
    assert.deepEqual(states, ['Running/True', 'Running/True', 'Running/False']);
    assert.equal(status.preemptions, 1);
  });
});
