// Two operator replicas as separate `tensile operator` processes: exactly one holds the Lease and reconciles;
// when it is SIGKILLed the other takes over and reconciles new jobs.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { startTensile, type TensileProcess } from '../../helpers/cli.js';
import { kubectl, startKubelet, waitFor, type Kubelet, type TestApiServer } from '../../k8s/index.js';
import type { KubeApis } from '../../../operator/kube/client-node.js';
import { clientFor, jobPods, startClusterWithCrd } from './harness.js';

let server: TestApiServer;
let kubelet: Kubelet;
let http: KubeApis;
const ops = new Map<string, TensileProcess>();

before(async () => {
  server = await startClusterWithCrd();
  kubelet = await startKubelet({ server, nodeName: 'node-a' });
  http = clientFor(server);
});

after(async () => {
  for (const p of ops.values()) p.kill('SIGKILL');
  await Promise.all([...ops.values()].map((p) => p.result));
  http?.close();
  await kubelet?.stop();
  await server?.stop();
});

function startOperator(id: string): TensileProcess {
  const p = startTensile(
    [
      'operator',
      '--kubeconfig',
      server.kubeconfigPath,
      '--metrics-port',
      '0',
      '--identity',
      id,
      '--lease-namespace',
      'default',
      '--lease-duration-ms',
      '3000',
      '--renew-deadline-ms',
      '2000',
      '--retry-period-ms',
      '300',
      '--log-level',
      'warn',
    ],
    { timeoutMs: 120_000 },
  );
  ops.set(id, p);
  return p;
}

async function holder(): Promise<string | undefined> {
  try {
    const l = await http.coordination.readNamespacedLease({ namespace: 'default', name: 'tensile-operator' });
    return l.spec?.holderIdentity || undefined;
  } catch {
    return undefined;
  }
}

const job = (name: string) =>
  stringify({
    apiVersion: 'tensile.dev/v1alpha1',
    kind: 'ElasticJob',
    metadata: { name, namespace: 'default' },
    spec: {
      rdzvEndpoint: '127.0.0.1:1',
      minReplicas: 1,
      maxReplicas: 1,
      replicaSpecs: {
        Worker: {
          replicas: 1,
          template: { spec: { containers: [{ name: 'worker', image: 'x', command: ['sleep', '30'] }] } },
        },
      },
    },
  });

test(
  'two operator replicas elect one leader, and the other takes over when the leader dies',
  { timeout: 120_000 },
  async () => {
    startOperator('op-a');
    startOperator('op-b');
    const first = await waitFor('a leader', holder, 60_000, 100);
    assert.ok(first === 'op-a' || first === 'op-b', `holder ${first}`);
    assert.equal((await kubectl(server, ['apply', '-f', '-'], { stdin: job('before') })).code, 0);
    await waitFor('pod of job "before"', async () => (await jobPods(http, 'before')).size === 1, 30_000, 100);

    ops.get(first)!.kill('SIGKILL');
    const second = await waitFor(
      'a new leader',
      async () => {
        const h = await holder();
        return h !== undefined && h !== first ? h : undefined;
      },
      30_000,
      100,
    );
    assert.notEqual(second, first);
    assert.equal((await kubectl(server, ['apply', '-f', '-'], { stdin: job('after') })).code, 0);
    await waitFor(
      'pod of job "after" created by the new leader',
      async () => (await jobPods(http, 'after')).size === 1,
      30_000,
      100,
    );
  },
);
