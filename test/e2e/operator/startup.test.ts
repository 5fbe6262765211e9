// The operator starts before its CRD is installed (a common install order): it keeps retrying, and reconciles once
// the CRD appears.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import {
  kubectl,
  startKubelet,
  startTestApiServer,
  waitFor,
  type Kubelet,
  type TestApiServer,
} from '../../k8s/index.js';
import type { OperatorHandle } from '../../../operator/index.js';
import type { KubeApis } from '../../../operator/kube/client-node.js';
import { CRD_PATH, clientFor, jobPods, startTestOperator } from './harness.js';

let server: TestApiServer;
let kubelet: Kubelet;
let op: OperatorHandle;
let http: KubeApis;

before(async () => {
  server = await startTestApiServer();
  kubelet = await startKubelet({ server, nodeName: 'node-a' });
  http = clientFor(server);
});

after(async () => {
  await op?.stop();
  http?.close();
  await kubelet?.stop();
  await server?.stop();
});

test('an operator started before the CRD exists reconciles once the CRD is applied', { timeout: 60_000 }, async () => {
  op = await startTestOperator(server);
  const readyz = async () => (await fetch(`http://127.0.0.1:${op.metricsPort}/readyz`)).status;
  assert.equal(await readyz(), 503);
  assert.equal((await kubectl(server, ['apply', '-f', CRD_PATH])).code, 0);
  await waitFor('operator ready', async () => (await readyz()) === 200, 30_000, 100);
  const job = {
    apiVersion: 'tensile.dev/v1alpha1',
    kind: 'ElasticJob',
    metadata: { name: 'late', namespace: 'default' },
    spec: {
      rdzvEndpoint: '127.0.0.1:1',
      replicaSpecs: {
        Worker: {
          replicas: 2,
          template: { spec: { containers: [{ name: 'worker', image: 'x', command: ['sleep', '30'] }] } },
        },
      },
    },
  };
  assert.equal((await kubectl(server, ['apply', '-f', '-'], { stdin: stringify(job) })).code, 0);
  await waitFor('2 pods', async () => (await jobPods(http, 'late')).size === 2, 20_000, 100);
});
