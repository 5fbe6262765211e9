// bench/operator-scale: 1,000 ElasticJobs × 10 workers = 10,000 pods (and 10,000 headless services) on the in-repo
// test API server. The operator runs as its own process (`tensile operator`, from source through tsx); a
// kubelet-less stand-in in this process marks every pod Running as soon as it is created (no processes).
// Figures: operator peak RSS (target ≤ 200 MB), p99 reconcile latency from its Prometheus histogram (≤ 100 ms),
// and the time until every job reports all of its workers running. The reconcile latency includes the API round
// trips (status write, pod/service creates) to a test API server that shares this process with the pod stand-in;
// reconcile_plan_p99 is the operator's own work (snapshot + plan). No peer can run here: absolute figures
// (peer=- ratio=-; target on the value, or target=- for figures reported for information).
// The operator process gets the environment the Helm chart gives its container (NODE_OPTIONS: V8 heap flags),
// rendered with real helm (test/helpers/helm.ts), so the memory figure is the one a chart install has.
// Usage: npm run bench -- operator-scale [--jobs 1000] [--replicas 10] [--timeout-s 420] [--operator-js DIR]
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freePort } from '../../common/free-port.js';
import { absoluteFigure } from '../lib/figures.js';
import { startTensile } from '../../test/helpers/cli.js';
import { kubectl, startTestApiServer, waitFor, type KObject } from '../../test/k8s/index.js';
import { CRD_PATH, clientFor } from '../../test/e2e/operator/harness.js';
import { helmTemplate, operatorContainer } from '../../test/helpers/helm.js';

const { values } = parseArgs({
  options: {
    jobs: { type: 'string', default: '1000' },
    replicas: { type: 'string', default: '10' },
    'timeout-s': { type: 'string', default: '420' },
    // A compiled build (`npx tsc -p tsconfig.json --outDir DIR`): run `node DIR/agent/cli.js operator`, as the image
    // does, instead of the CLI from source through tsx (whose loader alone adds tens of MB of resident memory).
    'operator-js': { type: 'string' },
  },
});
const JOBS = Number(values.jobs);
const REPLICAS = Number(values.replicas);
const TIMEOUT_MS = Number(values['timeout-s']) * 1000;

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

function buckets(text: string, metric: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const m of text.matchAll(new RegExp(`^${metric}_bucket\\{le="([^"]+)"\\} (\\d+)`, 'gm'))) {
    out.push([m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])]);
  }
  return out;
}

/**
 * p-th percentile from a Prometheus histogram, interpolating linearly inside the bucket. With `before`, only the
 * observations made between the two scrapes count.
 */
function histogramPercentile(text: string, metric: string, p: number, before?: string): number {
  const base = before !== undefined ? buckets(before, metric) : [];
  const buckets_ = buckets(text, metric).map(([le, n], i): [number, number] => [le, n - (base[i]?.[1] ?? 0)]);
  return percentileOf(buckets_, p);
}

function percentileOf(buckets: Array<[number, number]>, p: number): number {
  const total = buckets.at(-1)?.[1] ?? 0;
  const want = (p / 100) * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= want) {
      if (le === Infinity) return prevLe;
      return prevLe + ((want - prevCount) / Math.max(1, count - prevCount)) * (le - prevLe);
    }
    prevLe = le;
    prevCount = count;
  }
  return NaN;
}

/** The plain `value` env entries of the chart's operator container (the downward-API ones need a pod). */
const chartEnv: Record<string, string> = {};
for (const e of operatorContainer(await helmTemplate()).env ?? [])
  if (e.value !== undefined) chartEnv[e.name] = e.value;
console.error(`operator-scale: operator env from the chart: ${JSON.stringify(chartEnv)}`);

const server = await startTestApiServer({ scheduler: false, watchWindowEvents: 200_000, gcIntervalMs: 1000 });
const http = clientFor(server);
const podsDef = server.state.def('', 'pods');
const jobsDef = () => server.state.def('tensile.dev', 'elasticjobs');
// Kubelet-less stand-in: every new pod is marked Running (status subresource), batched off the watch callback.
const toRun: KObject[] = [];
let flushing = false;
const flush = () => {
  flushing = false;
  for (const pod of toRun.splice(0)) {
    try {
      const cur = server.state.get(podsDef, pod.metadata.namespace, pod.metadata.name ?? '');
      const now = new Date().toISOString();
      server.state.update(
        podsDef,
        pod.metadata.namespace,
        pod.metadata.name ?? '',
        {
          ...cur,
          status: {
            phase: 'Running',
            startTime: now,
            conditions: [{ type: 'Ready', status: 'True' }],
            containerStatuses: [
              {
                name: 'worker',
                ready: true,
                restartCount: 0,
                image: 'x',
                imageID: '',
                state: { running: { startedAt: now } },
              },
            ],
          },
        },
        'status',
      );
    } catch {
      // deleted meanwhile
    }
  }
};
const unwatch = server.state.watch(podsDef, {}, (ev) => {
  if (ev.type !== 'ADDED') return;
  toRun.push(ev.object);
  if (!flushing) {
    flushing = true;
    setImmediate(flush);
  }
});

const port = await freePort();
let op: { child: ChildProcess; kill(sig?: NodeJS.Signals): void; result: Promise<unknown> } | undefined;

/** `node <dir>/agent/cli.js <args>` in its own process group; killed with SIGKILL after `timeoutMs`. */
function startCompiled(dir: string, args: readonly string[], timeoutMs: number) {
  const child = spawn(process.execPath, [join(dir, 'agent/cli.js'), ...args], {
    env: { ...process.env, NODE_TEST_CONTEXT: undefined, ...chartEnv },
    stdio: ['ignore', 'ignore', 'inherit'],
    detached: true,
  });
  const killGroup = (sig: NodeJS.Signals) => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, sig);
    } catch {
      // gone
    }
  };
  const timer = setTimeout(() => killGroup('SIGKILL'), timeoutMs);
  const result = new Promise<void>((resolve) =>
    child.on('close', () => {
      clearTimeout(timer);
      resolve();
    }),
  );
  return { child, result, kill: (sig: NodeJS.Signals = 'SIGTERM') => killGroup(sig) };
}
let peakRss = 0;
const sampler = setInterval(() => {
  if (op?.child.pid !== undefined) peakRss = Math.max(peakRss, rssMb(op.child.pid));
}, 250);
try {
  const crd = await kubectl(server, ['apply', '-f', CRD_PATH]);
  if (crd.code !== 0) throw new Error(crd.stderr);
  const opArgs = [
    'operator',
    '--kubeconfig',
    server.kubeconfigPath,
    '--no-leader-election',
    '--no-managed-etcd',
    '--metrics-port',
    String(port),
    '--log-level',
    'warn',
    '--workers',
    '4',
  ];
  op =
    values['operator-js'] !== undefined
      ? startCompiled(values['operator-js'], opArgs, TIMEOUT_MS + 60_000)
      : startTensile(opArgs, { timeoutMs: TIMEOUT_MS + 60_000, env: chartEnv });
  await waitFor(
    'operator ready',
    async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200,
    60_000,
    100,
  );
  const t0 = Date.now();
  const names = Array.from({ length: JOBS }, (_, i) => `job-${i}`);
  for (let i = 0; i < names.length; i += 25) {
    await Promise.all(
      names.slice(i, i + 25).map((name) =>
        http.custom.createNamespacedCustomObject({
          group: 'tensile.dev',
          version: 'v1alpha1',
          namespace: 'default',
          plural: 'elasticjobs',
          body: {
            apiVersion: 'tensile.dev/v1alpha1',
            kind: 'ElasticJob',
            metadata: { name },
            spec: {
              rdzvEndpoint: '127.0.0.1:2379',
              minReplicas: Math.max(1, REPLICAS / 2),
              maxReplicas: REPLICAS,
              replicaSpecs: {
                Worker: { replicas: REPLICAS, template: { spec: { containers: [{ name: 'worker', image: 'x' }] } } },
              },
            },
          },
        }),
      ),
    );
  }
  const created = Date.now();
  await waitFor(
    `all ${JOBS} jobs running with ${REPLICAS} workers`,
    () =>
      server.state
        .list(jobsDef(), 'default')
        .every(
          (j) =>
            (j.status as { state?: string; replicaStatuses?: { Worker?: { active?: number } } } | undefined)
              ?.replicaStatuses?.Worker?.active === REPLICAS,
        ),
    TIMEOUT_MS,
    500,
  );
  const allRunningS = (Date.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 2000));
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const p50 = histogramPercentile(metrics, 'tensile_operator_reconcile_duration_seconds', 50) * 1000;
  const p99 = histogramPercentile(metrics, 'tensile_operator_reconcile_duration_seconds', 99) * 1000;
  const planP99 = histogramPercentile(metrics, 'tensile_operator_plan_duration_seconds', 99) * 1000;
  const countOf = (text: string) =>
    Number(/^tensile_operator_reconcile_duration_seconds_count (\d+)/m.exec(text)?.[1] ?? 0);

  // Steady state at full scale: touch every job (an annotation: one reconcile each, nothing to create), then
  // preempt one pod in each of 100 jobs (a reconcile that counts it and creates the replacement).
  const steadyBefore = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  for (let i = 0; i < names.length; i += 50) {
    await Promise.all(
      names.slice(i, i + 50).map((name) =>
        http.custom.patchNamespacedCustomObject(
          {
            group: 'tensile.dev',
            version: 'v1alpha1',
            namespace: 'default',
            plural: 'elasticjobs',
            name,
            body: { metadata: { annotations: { 'bench/touch': '1' } } },
          },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        ),
      ),
    );
  }
  const churn = names.slice(0, Math.min(100, names.length));
  for (const name of churn) {
    await http.core.deleteNamespacedPod({ namespace: 'default', name: `${name}-worker-0`, gracePeriodSeconds: 0 });
  }
  const want = countOf(steadyBefore) + names.length + churn.length;
  await waitFor(
    'steady-state reconciles',
    async () => countOf(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()) >= want,
    120_000,
    250,
  );
  await waitFor(
    'replacements running',
    () =>
      churn.every(
        (n) =>
          (server.state.get(podsDef, 'default', `${n}-worker-0`).status as { phase?: string } | undefined)?.phase ===
          'Running',
      ),
    60_000,
    250,
  );
  const steadyAfter = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const steadyP50 =
    histogramPercentile(steadyAfter, 'tensile_operator_reconcile_duration_seconds', 50, steadyBefore) * 1000;
  const writes = (text: string) => Number(/^tensile_operator_status_writes_total (\d+)/m.exec(text)?.[1] ?? 0);
  console.error(
    `operator-scale: steady phase: ${countOf(steadyAfter) - countOf(steadyBefore)} reconciles, ${writes(steadyAfter) - writes(steadyBefore)} status writes`,
  );
  const steadyP99 =
    histogramPercentile(steadyAfter, 'tensile_operator_reconcile_duration_seconds', 99, steadyBefore) * 1000;
  const count = Number(/^tensile_operator_reconcile_duration_seconds_count (\d+)/m.exec(metrics)?.[1] ?? 0);
  const pods = server.state.list(podsDef, 'default').length;
  console.error(
    `operator-scale: ${JOBS} jobs, ${pods} pods, ${count} reconciles; jobs created in ${((created - t0) / 1000).toFixed(1)} s`,
  );
  absoluteFigure('operator_rss_peak', peakRss, 'MB', { op: '<=', value: 200 });
  // What the operator holds once the burst is over (its own prom-client process metrics): live heap vs resident set.
  const gauge = (name: string) =>
    Number(new RegExp(`^tensile_operator_${name} (\\S+)`, 'm').exec(steadyAfter)?.[1] ?? NaN) / 1e6;
  absoluteFigure('operator_rss_end', gauge('process_resident_memory_bytes'), 'MB');
  absoluteFigure('operator_heap_used_end', gauge('nodejs_heap_size_used_bytes'), 'MB');
  absoluteFigure('reconcile_latency_p50_initial_burst', p50, 'ms');
  absoluteFigure('reconcile_latency_p99_initial_burst', p99, 'ms');
  absoluteFigure('reconcile_latency_p50_steady', steadyP50, 'ms');
  absoluteFigure('reconcile_latency_p99_steady', steadyP99, 'ms', { op: '<=', value: 100 });
  absoluteFigure('reconcile_plan_p99', planP99, 'ms');
  absoluteFigure('jobs_all_running', allRunningS, 's');
} finally {
  clearInterval(sampler);
  op?.kill('SIGTERM');
  await Promise.race([op?.result, new Promise((r) => setTimeout(r, 5000))]);
  op?.kill('SIGKILL');
  unwatch();
  http.close();
  await server.stop();
}
