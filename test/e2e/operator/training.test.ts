// End to end with the real agent: an ElasticJob of 3 replicas whose pods run `tensile run` (through a PATH shim
// that runs the CLI from source) against a real etcd; the workers are a small stand-in script (worker.mjs) that
// records WORLD_SIZE, not the full training demo, to keep the test to seconds.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { startEtcd, type EtcdServer } from '../../helpers/etcd.js';
import { kubectl, startKubelet, waitFor, type Kubelet, type TestApiServer } from '../../k8s/index.js';
import type { OperatorHandle } from '../../../operator/index.js';
import type { KubeApis } from '../../../operator/kube/client-node.js';
import {
  REPO,
  WORKER_SCRIPT,
  clientFor,
  jobPods,
  jobView,
  makeShimDir,
  removeDir,
  startClusterWithCrd,
  startTestOperator,
} from './harness.js';

let server: TestApiServer;
let kubelet: Kubelet;
let op: OperatorHandle;
let http: KubeApis;
let etcd: EtcdServer;
let shimDir: string;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tensile-op-train-'));
  shimDir = makeShimDir();
  etcd = await startEtcd();
  server = await startClusterWithCrd();
  kubelet = await startKubelet({ server, nodeName: 'node-a', pathPrepend: shimDir, workDir: REPO });
  http = clientFor(server);
  op = await startTestOperator(server);
});

after(async () => {
  if (dir !== undefined) writeFileSync(join(dir, 'stop'), '');
  await op?.stop();
  http?.close();
  await kubelet?.stop();
  await server?.stop();
  await etcd?.stop();
  removeDir(shimDir);
  removeDir(dir);
});

/** Observations "<index> <WORLD_SIZE> <RANK> <ms>" written by the workers. */
function observations(): Array<{ idx: string; world: number; ms: number }> {
  const f = join(dir, 'obs.log');
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const [idx, world, , ms] = l.split(' ');
      return { idx: idx!, world: Number(world), ms: Number(ms) };
    });
}

test(
  'an ElasticJob of 3 trains, keeps training at 2 when a pod is preempted, and returns to 3',
  { timeout: 180_000 },
  async () => {
    const job = {
      apiVersion: 'tensile.dev/v1alpha1',
      kind: 'ElasticJob',
      metadata: { name: 'train', namespace: 'default' },
      spec: {
        rdzvEndpoint: etcd.endpoint,
        minReplicas: 2,
        maxReplicas: 3,
        nprocPerNode: 1,
        maxRestarts: 10,
        replicaSpecs: {
          Worker: {
            replicas: 3,
            template: {
              spec: {
                terminationGracePeriodSeconds: 5,
                containers: [
                  {
                    name: 'worker',
                    image: 'tensile:test',
                    args: [WORKER_SCRIPT],
                    env: [
                      { name: 'OBS_FILE', value: join(dir, 'obs.log') },
                      { name: 'STOP_FILE', value: join(dir, 'stop') },
                      { name: 'PET_RDZV_CONF', value: 'last_call_timeout=0.5' },
                    ],
                  },
                ],
              },
            },
          },
        },
      },
    };
    const r = await kubectl(server, ['apply', '-f', '-'], { stdin: stringify(job) });
    assert.equal(r.code, 0, r.stderr);
    await waitFor(
      '3 workers at WORLD_SIZE 3',
      () =>
        new Set(
          observations()
            .filter((o) => o.world === 3)
            .map((o) => o.idx),
        ).size === 3,
      90_000,
      200,
    );
    assert.equal((await jobView(http, 'train'))?.state, 'Running');

    // Preempt worker-2 while the node has no room for a replacement: the survivors must go on at 2.
    kubelet.setReady(false);
    const t0 = Date.now();
    const del = await kubectl(server, ['delete', 'pod', 'train-worker-2', '--wait=false']);
    assert.equal(del.code, 0, del.stderr);
    await waitFor(
      'survivors at WORLD_SIZE 2',
      () =>
        new Set(
          observations()
            .filter((o) => o.ms > t0 && o.world === 2)
            .map((o) => o.idx),
        ).size === 2,
      60_000,
      200,
    );
    // The survivors can re-form before the operator has written the preemption into the job's status.
    const mid = await waitFor(
      'the preemption in the job status',
      async () => {
        const v = await jobView(http, 'train');
        return v && v.preemptions === 1 ? v : undefined;
      },
      15_000,
      100,
    );
    assert.equal(mid?.state, 'Running');
    assert.equal(mid?.preemptions, 1);
    assert.equal(mid?.failures ?? 0, 0);
    await waitFor(
      'the replacement worker-2 pending (no room on the node)',
      async () => (await jobPods(http, 'train')).get('train-worker-2') === 'Pending',
      15_000,
      100,
    );

    // Capacity returns: the replacement runs and the job is back at 3.
    const t1 = Date.now();
    kubelet.setReady(true);
    await waitFor(
      '3 workers at WORLD_SIZE 3 again',
      () =>
        new Set(
          observations()
            .filter((o) => o.ms > t1 && o.world === 3)
            .map((o) => o.idx),
        ).size === 3,
      90_000,
      200,
    );
    const end = await waitFor('status back at 3', async () => {
      const v = await jobView(http, 'train');
      return v?.active === 3 ? v : undefined;
    });
    assert.equal(end.state, 'Running');
  },
);
