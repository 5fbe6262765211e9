// End to end: the operator (in process, its real REST client) against the in-repo test API server, driven by the
// real kubectl, with a simulated kubelet running each pod's command as local processes.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { kubectl, startKubelet, waitFor, type Kubelet, type TestApiServer } from '../../k8s/index.js';
import { runOperator, type OperatorHandle } from '../../../operator/index.js';
import type { KubeApis } from '../../../operator/kube/client-node.js';
import { clientFor, jobPods, jobView, removeDir, startClusterWithCrd } from './harness.js';

interface JobOpts {
  name: string;
  replicas: number;
  min: number;
  max: number;
  command: string[];
  extra?: Record<string, unknown>;
  podSpec?: Record<string, unknown>;
  env?: Array<{ name: string; value: string }>;
}

function manifest(o: JobOpts): string {
  return stringify({
    apiVersion: 'tensile.dev/v1alpha1',
    kind: 'ElasticJob',
    metadata: { name: o.name, namespace: 'default' },
    spec: {
      rdzvEndpoint: '127.0.0.1:1',
      minReplicas: o.min,
      maxReplicas: o.max,
      ...o.extra,
      replicaSpecs: {
        Worker: {
          replicas: o.replicas,
          template: {
            spec: {
              terminationGracePeriodSeconds: 1,
              ...o.podSpec,
              containers: [{ name: 'worker', image: 'tensile:test', command: o.command, env: o.env ?? [] }],
            },
          },
        },
      },
    },
  });
}

describe('ElasticJob operator end to end (pods run simple commands)', () => {
  let server: TestApiServer;
  let kubelet: Kubelet;
  let op: OperatorHandle;
  let http: KubeApis;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tensile-op-e2e-'));
    server = await startClusterWithCrd();
    kubelet = await startKubelet({ server, nodeName: 'node-a', maxPods: 50 });
    http = clientFor(server);
    const { pino } = await import('pino');
    const logger = process.env.TENSILE_TEST_DEBUG ? pino({ level: 'debug' }, pino.destination(2)) : undefined;
    op = await runOperator(
      {
        kubeconfig: server.kubeconfigPath,
        leaderElection: false,
        metricsPort: 0,
        metricsHost: '127.0.0.1',
        resyncMs: 5000,
      },
      logger as never,
    );
  });
  after(async () => {
    await op?.stop();
    http?.close();
    await kubelet?.stop();
    await server?.stop();
    removeDir(dir);
  });

  const apply = async (yamlText: string) => kubectl(server, ['apply', '-f', '-'], { stdin: yamlText });

  test('a job gets one pod and one headless service per index and reaches Running', async () => {
    const r = await apply(manifest({ name: 'sleepy', replicas: 3, min: 2, max: 3, command: ['sleep', '60'] }));
    assert.equal(r.code, 0, r.stderr);
    await waitFor(
      '3 running pods',
      async () => [...(await jobPods(http, 'sleepy')).values()].filter((p) => p === 'Running').length === 3,
      20_000,
    );
    const v = await waitFor('state Running', async () => {
      const j = await jobView(http, 'sleepy');
      return j?.state === 'Running' && j.active === 3 ? j : undefined;
    });
    assert.equal(v.conditions.find((c) => c.type === 'Running')?.status, 'True');
    const svc = await http.core.readNamespacedService({ namespace: 'default', name: 'sleepy-worker-2' });
    assert.equal(svc.spec?.clusterIP, 'None');
    const get = await kubectl(server, ['get', 'elasticjobs']);
    assert.match(get.stdout, /MIN\s+MAX\s+DESIRED\s+CURRENT\s+STATE/);
    assert.match(get.stdout, /sleepy\s+2\s+3\s+3\s+3\s+Running/);
  });

  test('kubectl scale shrinks the job within [min, max] by deleting the highest index', async () => {
    const r = await kubectl(server, ['scale', 'elasticjob/sleepy', '--replicas=2']);
    assert.equal(r.code, 0, r.stderr);
    await waitFor('worker-2 gone', async () => !(await jobPods(http, 'sleepy')).has('sleepy-worker-2'), 20_000);
    const j = await waitFor('2 active', async () => {
      const v = await jobView(http, 'sleepy');
      return v?.active === 2 ? v : undefined;
    });
    assert.equal(j.state, 'Running');
  });

  test('a deleted pod is a preemption: replaced, job stays Running, backoffLimit untouched', async () => {
    const r = await kubectl(server, ['delete', 'pod', 'sleepy-worker-1', '--wait=false']);
    assert.equal(r.code, 0, r.stderr);
    const j = await waitFor(
      'replacement running and preemption counted',
      async () => {
        const v = await jobView(http, 'sleepy');
        const pods = await jobPods(http, 'sleepy');
        return v?.preemptions === 1 && pods.get('sleepy-worker-1') === 'Running' && v.active === 2 ? v : undefined;
      },
      20_000,
    );
    assert.equal(j.state, 'Running');
    assert.equal(j.failures ?? 0, 0);
    await kubectl(server, ['delete', 'elasticjob', 'sleepy', '--wait=false']);
  });

  test('exit code 137 counts as preemption, a real failure uses the backoff budget until the job fails', async () => {
    // Each pod fails with 137 the first time (marker file absent), then with exit 3.
    const marker = join(dir, 'killed-once');
    const script = `if [ ! -e ${marker} ]; then touch ${marker}; kill -9 $$; fi; sleep 0.2; exit 3`;
    const r = await apply(
      manifest({
        name: 'flaky',
        replicas: 1,
        min: 1,
        max: 1,
        command: ['sh', '-c', script],
        extra: { backoffLimit: 1 },
      }),
    );
    assert.equal(r.code, 0, r.stderr);
    const j = await waitFor(
      'job Failed',
      async () => {
        const v = await jobView(http, 'flaky');
        return v?.state === 'Failed' ? v : undefined;
      },
      30_000,
    );
    assert.equal(j.preemptions, 1);
    assert.equal(j.failures, 2);
    assert.equal(j.conditions.find((c) => c.type === 'Failed')?.reason, 'BackoffLimitExceeded');
    assert.equal(j.conditions.find((c) => c.type === 'Running')?.status ?? 'False', 'False');
    const events = await kubectl(server, [
      'get',
      'events',
      '--field-selector',
      'involvedObject.name=flaky',
      '-o',
      'jsonpath={.items[*].reason}',
    ]);
    assert.match(events.stdout, /Preempted/);
    assert.match(events.stdout, /WorkerFailed/);
    assert.match(events.stdout, /BackoffLimitExceeded/);
  });

  test('a job that stays below minReplicas past its timeout fails with reason BelowMinReplicas', async () => {
    const r = await apply(
      manifest({
        name: 'starved',
        replicas: 2,
        min: 2,
        max: 2,
        command: ['sleep', '60'],
        extra: { preemption: { belowMinTimeoutSeconds: 2 } },
        podSpec: { nodeSelector: { pool: 'does-not-exist' } },
      }),
    );
    assert.equal(r.code, 0, r.stderr);
    const j = await waitFor(
      'job Failed',
      async () => {
        const v = await jobView(http, 'starved');
        return v?.state === 'Failed' ? v : undefined;
      },
      20_000,
    );
    const failed = j.conditions.find((c) => c.type === 'Failed');
    assert.equal(failed?.reason, 'BelowMinReplicas');
    assert.match(failed?.message ?? '', /0 running worker\(s\) < minReplicas \(2\)/);
  });

  test('kubectl apply rejects invalid manifests with field-named messages', async () => {
    const bad = manifest({ name: 'bad', replicas: 1, min: 0, max: 1, command: ['true'] }).replace(
      'replicas: 1\n',
      'replicas: 1\n      restartPolicy: Sometimes\n',
    );
    const r = await apply(bad);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /spec\.minReplicas/);
    assert.match(r.stderr, /spec\.replicaSpecs\.Worker\.restartPolicy/);
  });

  test('a manifest with min > max is rejected by the CRD rules, or else failed by the operator, naming the fields', async () => {
    const r = await apply(manifest({ name: 'inverted', replicas: 3, min: 4, max: 2, command: ['true'] }));
    if (r.code !== 0) {
      // The API server evaluates the CRD's x-kubernetes-validations (CEL) rules.
      assert.match(r.stderr, /spec\.minReplicas must be ≤ spec\.maxReplicas/);
      return;
    }
    // An API server that skips CEL accepts it: the operator's own validation fails the job with the same rule.
    const j = await waitFor('job Failed', async () => {
      const v = await jobView(http, 'inverted');
      return v?.state === 'Failed' ? v : undefined;
    });
    assert.match(
      j.conditions.find((c) => c.type === 'Failed')?.message ?? '',
      /spec\.minReplicas: 4 must be ≤ spec\.maxReplicas \(2\)/,
    );
    assert.deepEqual([...(await jobPods(http, 'inverted'))], []);
  });

  test('pods on a node tainted by a termination handler are replaced early on other nodes, as preemptions', async (t) => {
    const nodeB = await startKubelet({ server, nodeName: 'node-b', maxPods: 50 });
    t.after(() => nodeB.stop());
    // Fill node-b first: node-a is cordoned while the job starts.
    assert.equal((await kubectl(server, ['cordon', 'node-a'])).code, 0);
    const r = await apply(
      manifest({ name: 'spot', replicas: 2, min: 1, max: 2, command: ['sleep', '60'], extra: { backoffLimit: 0 } }),
    );
    assert.equal(r.code, 0, r.stderr);
    const nodeOf = async (pod: string) =>
      (await http.core.readNamespacedPod({ namespace: 'default', name: pod })) ?? {};
    await waitFor(
      'both pods running on node-b',
      async () => {
        const ps = await Promise.all(
          ['spot-worker-0', 'spot-worker-1'].map((n) => nodeOf(n).catch(() => ({}) as never)),
        );
        return ps.every((p) => p.spec?.nodeName === 'node-b' && p.status?.phase === 'Running');
      },
      20_000,
    );
    assert.equal((await kubectl(server, ['uncordon', 'node-a'])).code, 0);
    const taint = await kubectl(server, [
      'taint',
      'nodes',
      'node-b',
      'aws-node-termination-handler/spot-itn=true:NoSchedule',
    ]);
    assert.equal(taint.code, 0, taint.stderr);
    const j = await waitFor(
      'both pods replaced on node-a',
      async () => {
        const ps = await Promise.all(
          ['spot-worker-0', 'spot-worker-1'].map((n) => nodeOf(n).catch(() => ({}) as never)),
        );
        const v = await jobView(http, 'spot');
        return ps.every((p) => p.spec?.nodeName === 'node-a' && p.status?.phase === 'Running') && v?.active === 2
          ? v
          : undefined;
      },
      30_000,
    );
    assert.equal(j.state, 'Running');
    assert.equal(j.preemptions, 2);
    assert.equal(j.failures ?? 0, 0);
    await kubectl(server, ['delete', 'elasticjob', 'spot', '--wait=false']);
  });

  test('suspend deletes every worker and resuming recreates them', async () => {
    const r = await apply(manifest({ name: 'pausable', replicas: 2, min: 1, max: 2, command: ['sleep', '60'] }));
    assert.equal(r.code, 0, r.stderr);
    await waitFor('running', async () => (await jobView(http, 'pausable'))?.active === 2, 20_000);
    const p1 = await kubectl(server, [
      'patch',
      'elasticjob',
      'pausable',
      '--type=merge',
      '-p',
      '{"spec":{"suspend":true}}',
    ]);
    assert.equal(p1.code, 0, p1.stderr);
    await waitFor(
      'suspended with no pods',
      async () =>
        (await jobView(http, 'pausable'))?.state === 'Suspended' && (await jobPods(http, 'pausable')).size === 0,
      20_000,
    );
    const p2 = await kubectl(server, [
      'patch',
      'elasticjob',
      'pausable',
      '--type=merge',
      '-p',
      '{"spec":{"suspend":false}}',
    ]);
    assert.equal(p2.code, 0, p2.stderr);
    const j = await waitFor(
      'running again',
      async () => {
        const v = await jobView(http, 'pausable');
        return v?.state === 'Running' && v.active === 2 ? v : undefined;
      },
      20_000,
    );
    assert.equal(j.conditions.find((c) => c.type === 'Suspended')?.status, 'False');
    await kubectl(server, ['delete', 'elasticjob', 'pausable', '--wait=false']);
  });

  test('a job without rdzvEndpoint gets the operator-managed etcd (StatefulSet + Service) as its endpoint', async () => {
    const m = manifest({ name: 'selfhosted', replicas: 1, min: 1, max: 1, command: ['sleep', '30'] }).replace(
      / *rdzvEndpoint: .*\n/,
      '',
    );
    const r = await apply(m);
    assert.equal(r.code, 0, r.stderr);
    const pod = await waitFor('pod with env', async () => {
      try {
        return await http.core.readNamespacedPod({ namespace: 'default', name: 'selfhosted-worker-0' });
      } catch {
        return undefined;
      }
    });
    const env = Object.fromEntries((pod.spec?.containers[0]!.env ?? []).map((e) => [e.name, e.value]));
    assert.equal(env.PET_RDZV_ENDPOINT, 'tensile-etcd.default.svc:2379');
    const sts = await http.apps.readNamespacedStatefulSet({ namespace: 'default', name: 'tensile-etcd' });
    assert.match(JSON.stringify(sts.spec?.template.spec?.affinity), /scalesetpriority/);
    await http.core.readNamespacedService({ namespace: 'default', name: 'tensile-etcd' });
    await kubectl(server, ['delete', 'elasticjob', 'selfhosted', '--wait=false']);
  });

  test('the operator serves /healthz, /readyz and Prometheus metrics', async () => {
    const base = `http://127.0.0.1:${op.metricsPort}`;
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const text = await (await fetch(`${base}/metrics`)).text();
    assert.match(text, /tensile_operator_pods_created_total \d+/);
    assert.match(text, /tensile_operator_reconcile_duration_seconds_bucket/);
    assert.match(text, /tensile_operator_jobs\{state="Failed"\} [1-9]/);
  });
});
