// bench/preemption: a worker pod of a running ElasticJob is deleted (preemption) →
//   1. operator: the job's status shows it running at the new size (2 of 3) — target ≤ 2 s after the pod is gone;
//   2. operator: the replacement pod is Running and the status is back at full size;
//   3. end to end (real `tensile run` agents + real etcd): the surviving workers train again at WORLD_SIZE 2,
//      and all three are back at WORLD_SIZE 3 after the replacement starts;
//   plus the operator's reconcile latency percentiles (in process with the API server and kubelet, so they share
//   one event loop: bench/operator-scale measures the operator alone). There is no peer (pytorch/elastic's controller cannot be
//   run here): absolute figures (peer=- ratio=-; target on the value, or target=- for information).
// Usage: npm run bench -- preemption [--iterations N] [--e2e-iterations N]
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { startEtcd } from '../../test/helpers/etcd.js';
import { kubectl, startKubelet, waitFor } from '../../test/k8s/index.js';
import {
  REPO,
  WORKER_SCRIPT,
  clientFor,
  jobPods,
  jobView,
  makeShimDir,
  startClusterWithCrd,
} from '../../test/e2e/operator/harness.js';
import { runOperator } from '../../operator/index.js';
import { absoluteFigure } from '../lib/figures.js';

const { values } = parseArgs({
  options: { iterations: { type: 'string', default: '10' }, 'e2e-iterations': { type: 'string', default: '3' } },
});
const ITER = Number(values.iterations);
const E2E_ITER = Number(values['e2e-iterations']);

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};
const median = (xs: number[]) => pct(xs, 50);

const dir = mkdtempSync(join(tmpdir(), 'tensile-bench-preempt-'));
const shimDir = makeShimDir();
const etcd = await startEtcd();
const server = await startClusterWithCrd();
const kubelet = await startKubelet({ server, nodeName: 'node-a', pathPrepend: shimDir, workDir: REPO });
const http = clientFor(server);
const reconcileMs: number[] = [];
const op = await runOperator(
  { kubeconfig: server.kubeconfigPath, leaderElection: false, metricsPort: 0, metricsHost: '127.0.0.1' },
  undefined,
  { onReconciled: (_k, ms) => reconcileMs.push(ms) },
);
const hardStop = setTimeout(() => {
  console.error('bench/preemption: time limit (240 s) reached');
  process.exit(1);
}, 240_000);
hardStop.unref();

function job(name: string, command: string[] | undefined, args: string[], env: Array<{ name: string; value: string }>) {
  return stringify({
    apiVersion: 'tensile.dev/v1alpha1',
    kind: 'ElasticJob',
    metadata: { name, namespace: 'default' },
    spec: {
      rdzvEndpoint: etcd.endpoint,
      minReplicas: 2,
      maxReplicas: 3,
      nprocPerNode: 1,
      maxRestarts: 100,
      replicaSpecs: {
        Worker: {
          replicas: 3,
          template: {
            spec: {
              terminationGracePeriodSeconds: 2,
              containers: [{ name: 'worker', image: 'tensile:test', ...(command ? { command } : {}), args, env }],
            },
          },
        },
      },
    },
  });
}

try {
  // 1 + 2: operator only. Containers without a command "run" in the simulated kubelet with no process.
  await kubectl(server, ['apply', '-f', '-'], { stdin: job('op', [], [], []) });
  await waitFor('op running at 3', async () => (await jobView(http, 'op'))?.active === 3, 30_000, 10);
  const toNewSize: number[] = [];
  const toFull: number[] = [];
  for (let i = 0; i < ITER; i += 1) {
    const victim = `op-worker-${i % 3}`;
    kubelet.setReady(false); // the replacement stays Pending until we let it run: measures the two phases apart
    await http.core.deleteNamespacedPod({ namespace: 'default', name: victim, gracePeriodSeconds: 0 });
    const gone = await waitFor(
      'pod gone',
      async () => (((await jobPods(http, 'op')).get(victim) ?? 'gone').startsWith('Running') ? undefined : Date.now()),
      10_000,
      5,
    );
    await waitFor(
      'status at 2',
      async () => {
        const v = await jobView(http, 'op');
        return v?.state === 'Running' && v.active === 2;
      },
      10_000,
      5,
    );
    toNewSize.push(Date.now() - gone);
    const ready = Date.now();
    kubelet.setReady(true);
    await waitFor('status at 3', async () => (await jobView(http, 'op'))?.active === 3, 10_000, 5);
    toFull.push(Date.now() - ready);
  }
  absoluteFigure('preemption_to_running_at_new_size_operator_p50', median(toNewSize) / 1000, 's', {
    op: '<=',
    value: 2,
  });
  absoluteFigure('preemption_to_running_at_new_size_operator_max', Math.max(...toNewSize) / 1000, 's', {
    op: '<=',
    value: 2,
  });
  absoluteFigure('capacity_back_to_full_size_operator_p50', median(toFull) / 1000, 's');

  // 3: end to end with real agents and etcd.
  const obsFile = join(dir, 'obs.log');
  const env = [
    { name: 'OBS_FILE', value: obsFile },
    { name: 'STOP_FILE', value: join(dir, 'stop') },
    { name: 'PET_RDZV_CONF', value: 'last_call_timeout=0.5' },
  ];
  const obs = () =>
    existsSync(obsFile)
      ? readFileSync(obsFile, 'utf8')
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => l.split(' '))
          .map(([idx, world, , ms]) => ({ idx: idx!, world: Number(world), ms: Number(ms) }))
      : [];
  const worldSince = (t: number, world: number) =>
    new Set(
      obs()
        .filter((o) => o.ms > t && o.world === world)
        .map((o) => o.idx),
    ).size;
  await kubectl(server, ['apply', '-f', '-'], { stdin: job('train', undefined, [WORKER_SCRIPT], env) });
  await waitFor('3 workers at world 3', () => worldSince(0, 3) === 3, 90_000, 50);
  const e2eNew: number[] = [];
  const e2eFull: number[] = [];
  for (let i = 0; i < E2E_ITER; i += 1) {
    kubelet.setReady(false);
    const victim = `train-worker-${(i % 2) + 1}`;
    const t0 = Date.now();
    await http.core.deleteNamespacedPod({ namespace: 'default', name: victim });
    await waitFor(
      'pod gone',
      async () =>
        ((await jobPods(http, 'train')).get(victim) ?? 'gone').startsWith('Running') ? undefined : Date.now(),
      30_000,
      5,
    );
    await waitFor('survivors at world 2', () => worldSince(t0, 2) === 2, 60_000, 20);
    // Timed from the delete request (an upper bound of "after the pod is gone") to the moment the later of the two
    // survivors started training at WORLD_SIZE 2, from the workers' own timestamps rather than this poll's.
    const firstAtTwo = new Map<string, number>();
    for (const o of obs()) if (o.ms > t0 && o.world === 2 && !firstAtTwo.has(o.idx)) firstAtTwo.set(o.idx, o.ms);
    e2eNew.push(Math.max(...firstAtTwo.values()) - t0);
    const t1 = Date.now();
    kubelet.setReady(true);
    await waitFor('back at world 3', () => worldSince(t1, 3) === 3, 90_000, 20);
    e2eFull.push(Date.now() - t1);
  }
  absoluteFigure('preemption_to_training_at_new_size_e2e_p50', median(e2eNew) / 1000, 's', { op: '<=', value: 2 });
  absoluteFigure('capacity_back_to_training_at_full_size_e2e_p50', median(e2eFull) / 1000, 's');
  absoluteFigure('reconcile_latency_p50', pct(reconcileMs, 50), 'ms');
  absoluteFigure('reconcile_latency_p90', pct(reconcileMs, 90), 'ms');
  absoluteFigure('reconcile_latency_p99', pct(reconcileMs, 99), 'ms');
} finally {
  writeFileSync(join(dir, 'stop'), '');
  await op.stop();
  await kubelet.stop();
  http.close();
  await server.stop();
  await etcd.stop();
  rmSync(dir, { recursive: true, force: true });
  rmSync(shimDir, { recursive: true, force: true });
}
