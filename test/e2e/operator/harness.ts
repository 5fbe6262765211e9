// Shared setup for the operator end-to-end tests and benchmarks: a test API server with the ElasticJob CRD,
// simulated kubelets whose PATH has a `tensile` shim running the CLI from source, helpers to read jobs, and a test
// file's cluster started before its tests and stopped after them (`useOperatorCluster`).
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  kubectl,
  startKubelet,
  startTestApiServer,
  type Kubelet,
  type KubeletOptions,
  type TestApiServer,
} from '../../k8s/index.js';
import { KubeApis, loadKubeConfig } from '../../../operator/kube/client-node.js';
import { runOperator, type OperatorHandle } from '../../../operator/index.js';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const CRD_PATH = join(REPO, 'charts/tensile/crds/elasticjob.yaml');
export const WORKER_SCRIPT = join(REPO, 'test/e2e/operator/worker.mjs');

/** A temp dir with a `tensile` executable that runs the CLI from source through tsx. */
export function makeShimDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-shim-'));
  const tsx = join(REPO, 'node_modules/tsx/dist/esm/index.mjs');
  const shim = join(dir, 'tensile');
  writeFileSync(shim, `#!/bin/sh\nexec "${process.execPath}" --import "${tsx}" "${join(REPO, 'agent/cli.ts')}" "$@"\n`);
  chmodSync(shim, 0o755);
  return dir;
}

export function removeDir(dir: string | undefined): void {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
}

/** Starts a test API server and registers the ElasticJob CRD with the real kubectl. */
export async function startClusterWithCrd(): Promise<TestApiServer> {
  const server = await startTestApiServer({ bookmarkIntervalMs: 1000 });
  const r = await kubectl(server, ['apply', '-f', CRD_PATH]);
  if (r.code !== 0) {
    await server.stop();
    throw new Error(`kubectl apply CRD failed: ${r.stderr}`);
  }
  return server;
}

export interface JobView {
  state?: string;
  active?: number;
  failures?: number;
  preemptions?: number;
  conditions: Array<{ type: string; status: string; reason?: string; message?: string }>;
}

/** Reads a job's status through client-node (`apis` from `clientFor`). */
export async function jobView(apis: KubeApis, name: string, namespace = 'default'): Promise<JobView | undefined> {
  let obj: { status?: Record<string, unknown> };
  try {
    obj = (await apis.custom.getNamespacedCustomObject({
      group: 'tensile.dev',
      version: 'v1alpha1',
      namespace,
      plural: 'elasticjobs',
      name,
    })) as { status?: Record<string, unknown> };
  } catch {
    return undefined;
  }
  const s = (obj.status ?? {}) as {
    state?: string;
    failures?: number;
    preemptions?: number;
    replicaStatuses?: { Worker?: { active?: number } };
    conditions?: JobView['conditions'];
  };
  return {
    ...(s.state !== undefined ? { state: s.state } : {}),
    ...(s.replicaStatuses?.Worker?.active !== undefined ? { active: s.replicaStatuses.Worker.active } : {}),
    ...(s.failures !== undefined ? { failures: s.failures } : {}),
    ...(s.preemptions !== undefined ? { preemptions: s.preemptions } : {}),
    conditions: s.conditions ?? [],
  };
}

/** client-node's typed APIs on the test API server's kubeconfig (the operator's own boundary module). */
export function clientFor(server: TestApiServer): KubeApis {
  return new KubeApis(loadKubeConfig(server.kubeconfigPath));
}

/** Pods of a job as the API server has them: name → phase (terminating ones marked with a trailing '*'). */
export async function jobPods(apis: KubeApis, job: string, namespace = 'default'): Promise<Map<string, string>> {
  const list = await apis.core.listNamespacedPod({ namespace, labelSelector: `tensile.dev/job-name=${job}` });
  return new Map(
    list.items.map((p) => [
      p.metadata?.name ?? '',
      `${p.status?.phase ?? 'Pending'}${p.metadata?.deletionTimestamp !== undefined ? '*' : ''}`,
    ]),
  );
}

/** The operator in this process against `server`: no leader election, metrics on an ephemeral loopback port. */
export function startTestOperator(server: TestApiServer, over: { resyncMs?: number } = {}): Promise<OperatorHandle> {
  return runOperator({
    kubeconfig: server.kubeconfigPath,
    leaderElection: false,
    metricsPort: 0,
    metricsHost: '127.0.0.1',
    ...over,
  });
}

/** A test file's cluster (`useOperatorCluster`); its fields are set by the file's `before` hook. */
export interface OperatorCluster {
  server: TestApiServer;
  kubelet: Kubelet;
  /** client-node on `server` (`clientFor`). */
  http: KubeApis;
  /** The operator in process: started by the hook when asked, or set by a test; stopped after the file's tests. */
  op?: OperatorHandle;
}

/**
 * Registers the calling test file's `before` and `after` hooks: a test API server (with the ElasticJob CRD when
 * `crd`), a simulated kubelet on node `node-a` (with the extra options `kubelet(server)` gives), a client, and the
 * operator in process when `operator` is given. After the file's tests everything started is stopped, operator
 * first, even when a test or the setup failed. Call it at the top level of a test file.
 */
export function useOperatorCluster(
  o: {
    crd?: boolean;
    kubelet?: (server: TestApiServer) => Omit<KubeletOptions, 'server' | 'nodeName'>;
    operator?: { resyncMs?: number };
  } = {},
): OperatorCluster {
  const c = {} as Partial<OperatorCluster>;
  before(async () => {
    const server = (c.server = o.crd ? await startClusterWithCrd() : await startTestApiServer());
    c.kubelet = await startKubelet({ ...o.kubelet?.(server), server, nodeName: 'node-a' });
    c.http = clientFor(server);
    if (o.operator) c.op = await startTestOperator(server, o.operator);
  });
  after(async () => {
    await c.op?.stop();
    c.http?.close();
    await c.kubelet?.stop();
    await c.server?.stop();
  });
  return c as OperatorCluster;
}
