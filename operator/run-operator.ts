// `runOperator`: the ElasticJob controller in cluster (service account) or with a kubeconfig.
//
//   const op = await runOperator({ kubeconfig: '/path/kubeconfig', namespace: 'ml', metricsPort: 8080 });
//   ...
//   await op.stop();
//
// With leader election on (the default), only the replica holding the Lease reconciles; the others wait and take
// over when it stops renewing. Serves /metrics, /healthz and /readyz on metricsPort (0 = any free port).
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { noopLogger, type Logger } from './api.js';
import { parseOperatorOptions, type OperatorOptionsInput } from './config/operator-options.js';
import { ElasticJobController } from './controller/elasticjob-controller.js';
import { LeaderElector } from './controller/leader-election.js';
import { OperatorMetrics } from './controller/metrics.js';
import { KubeApis, contextNamespace, loadKubeConfig } from './kube/client-node.js';
import { ClientNodeKubeClient } from './kube/kube-client.js';
import { LeaderHandover } from './leader-handover.js';
import { startProbeServer } from './probe-server.js';

export interface OperatorHandle {
  /** The port /metrics, /healthz and /readyz listen on. */
  readonly metricsPort: number;
  readonly identity: string;
  isLeader(): boolean;
  readonly metrics: OperatorMetrics;
  /** Stops reconciling, releases the Lease, closes the HTTP server. */
  stop(): Promise<void>;
}

/** In-process hooks (benchmarks, tests): not part of the CLI. */
export interface OperatorHooks {
  /** Called after every reconcile with its key and duration. */
  readonly onReconciled?: (key: string, durationMs: number) => void;
}

/** The pod's namespace from its service account mount; undefined outside a cluster. */
async function ownNamespace(): Promise<string | undefined> {
  try {
    return (await readFile('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/**
 * Starts the operator. Resolves once the HTTP server listens (reconciling starts when leadership is won).
 * Throws BadOptionsError on invalid options or an unreadable kubeconfig.
 */
export async function runOperator(
  input: OperatorOptionsInput,
  logger: Logger = noopLogger,
  hooks: OperatorHooks = {},
): Promise<OperatorHandle> {
  const o = parseOperatorOptions(input);
  const kc = loadKubeConfig(o.kubeconfig);
  const apis = new KubeApis(kc);
  const client = new ClientNodeKubeClient(apis);
  const metrics = new OperatorMetrics();
  // The chart sets POD_NAME from the downward API, so the Lease names the pod that holds it.
  const podName = process.env.POD_NAME;
  const identity = o.identity ?? (podName !== undefined && podName !== '' ? podName : `${hostname()}-${process.pid}`);
  const log = logger.child({ identity });
  const handover = new LeaderHandover(
    () =>
      new ElasticJobController({
        apis,
        client,
        ...(o.namespace !== undefined ? { namespace: o.namespace } : {}),
        logger: log,
        metrics,
        identity,
        workers: o.workers,
        resyncMs: o.resyncMs,
        managedEtcd: { enabled: o.managedEtcd, image: o.etcdImage },
        watchNodes: o.watchNodes,
        ...(hooks.onReconciled !== undefined ? { onReconciled: hooks.onReconciled } : {}),
      }),
    metrics,
    log,
  );
  let elector: LeaderElector | undefined;
  if (o.leaderElection) {
    elector = new LeaderElector({
      client,
      namespace: o.leaseNamespace ?? o.namespace ?? contextNamespace(kc) ?? (await ownNamespace()) ?? 'default',
      name: o.leaseName,
      identity,
      leaseDurationMs: o.leaseDurationMs,
      renewDeadlineMs: o.renewDeadlineMs,
      retryPeriodMs: o.retryPeriodMs,
      logger: log,
      onStartedLeading: () => handover.startLeading(),
      onStoppedLeading: () => handover.stopLeading(),
    });
  }
  const server = await startProbeServer({
    host: o.metricsHost,
    port: o.metricsPort,
    metrics,
    // A standby is ready (it can take over); a leader is ready once its caches are synced.
    isReady: () => (elector !== undefined && !elector.isLeader ? true : handover.isSynced),
  });
  log.info(
    { metricsPort: server.port, leaderElection: o.leaderElection, namespace: o.namespace ?? '(all)' },
    'operator started',
  );
  if (elector !== undefined) elector.start();
  else handover.startLeading();

  return {
    metricsPort: server.port,
    identity,
    metrics,
    isLeader: () => (elector !== undefined ? elector.isLeader : true),
    async stop() {
      if (elector !== undefined) await elector.stop();
      else handover.stopLeading();
      await handover.settled();
      await server.close();
      apis.close();
    },
  };
}
