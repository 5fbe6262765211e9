// `tensile operator`: runs the ElasticJob controller in cluster (service account) or with a kubeconfig.
//
//   const op = await runOperator({ kubeconfig: '/path/kubeconfig', namespace: 'ml', metricsPort: 8080 });
//   ...
//   await op.stop();
//
// With leader election on (the default), only the replica holding the Lease reconciles; the others wait and take
// over when it stops renewing. Serves /metrics, /healthz and /readyz on metricsPort (0 = any free port).
import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { Backoff } from '../common/backoff.js';
import { BadOptionsError, noopLogger, type Logger } from './api.js';
import { ElasticJobController } from './controller/elasticjob-controller.js';
import { LeaderElector } from './controller/leader-election.js';
import { OperatorMetrics } from './controller/metrics.js';
import { ClientNodeKubeClient } from './kube-client.js';
import { KubeApis, contextNamespace, loadKubeConfig } from './kube/client-node.js';

export * from './api.js';
export * from './api/v1alpha1/elasticjob-types.js';
export { planReconcile } from './controller/planner.js';
export type { Action, JobSnapshot, Plan, PodView } from './controller/planner.js';
export { KUBE_API_CALLS } from './kube-client.js';

export const operatorOptionsSchema = z
  .object({
    kubeconfig: z
      .string()
      .min(1)
      .optional()
      .describe('Path to a kubeconfig; default: in-cluster, then $KUBECONFIG/~/.kube/config'),
    namespace: z.string().min(1).optional().describe('Watch only this namespace (default: all)'),
    metricsPort: z.number().int().min(0).max(65535).default(8080),
    metricsHost: z.string().default('0.0.0.0'),
    leaderElection: z.boolean().default(true),
    leaseName: z.string().min(1).default('tensile-operator'),
    leaseNamespace: z
      .string()
      .min(1)
      .optional()
      .describe('Namespace of the leader Lease (default: own namespace or "default")'),
    leaseDurationMs: z.number().int().min(1000).default(15_000),
    renewDeadlineMs: z.number().int().min(500).default(10_000),
    retryPeriodMs: z.number().int().min(100).default(2_000),
    identity: z.string().min(1).optional().describe('Leader identity (default: hostname-pid)'),
    workers: z.number().int().min(1).max(64).default(4),
    resyncMs: z.number().int().min(1000).default(30_000),
    managedEtcd: z.boolean().default(true),
    etcdImage: z.string().min(1).default('quay.io/coreos/etcd:v3.5.17'),
    watchNodes: z.boolean().default(true),
  })
  .refine((o) => o.renewDeadlineMs < o.leaseDurationMs, {
    message: 'renewDeadlineMs must be < leaseDurationMs',
    path: ['renewDeadlineMs'],
  });
export type OperatorOptionsInput = z.input<typeof operatorOptionsSchema>;
export type OperatorOptions = z.output<typeof operatorOptionsSchema>;

export interface OperatorHandle {
  /** The port /metrics, /healthz and /readyz listen on. */
  readonly metricsPort: number;
  readonly identity: string;
  isLeader(): boolean;
  readonly metrics: OperatorMetrics;
  /** Stops reconciling, releases the Lease, closes the HTTP server. */
  stop(): Promise<void>;
}

function parseOptions(input: OperatorOptionsInput): OperatorOptions {
  const r = operatorOptionsSchema.safeParse(input);
  if (!r.success) {
    const msg = r.error.issues.map((i) => `${i.path.join('.') || 'options'}: ${i.message}`).join('; ');
    throw new BadOptionsError(`tensile operator: ${msg}`);
  }
  return r.data;
}

async function ownNamespace(): Promise<string | undefined> {
  try {
    const { readFile } = await import('node:fs/promises');
    return (await readFile('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/** Starts the operator. Resolves once the HTTP server listens (reconciling starts when leadership is won). */
/** In-process hooks (benchmarks, tests): not part of the CLI. */
export interface OperatorHooks {
  /** Called after every reconcile with its key and duration. */
  readonly onReconciled?: (key: string, durationMs: number) => void;
}

export async function runOperator(
  input: OperatorOptionsInput,
  logger: Logger = noopLogger,
  hooks: OperatorHooks = {},
): Promise<OperatorHandle> {
  const o = parseOptions(input);
  const kc = loadKubeConfig(o.kubeconfig);
  const apis = new KubeApis(kc);
  const client = new ClientNodeKubeClient(apis);
  const metrics = new OperatorMetrics();
  const identity = o.identity ?? `${hostname()}-${process.pid}`;
  const log = logger.child({ identity });
  let controller: ElasticJobController | undefined;
  let transition = Promise.resolve();
  const newController = () =>
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
    });
  let leading = false;
  // Starting fails while the API server is unreachable or the CRD is not installed yet: retry with backoff for
  // as long as this replica leads. The wait between tries is outside `transition`, so stopLeading never waits on it.
  const startBackoff = new Backoff({ initialMs: 500, multiplier: 2, maxMs: 30_000, jitter: 0.2 });
  const startController = async (): Promise<void> => {
    if (!leading) return;
    const c = newController();
    controller = c;
    try {
      await c.start();
    } catch (err) {
      const delayMs = startBackoff.next();
      log.error({ err: (err as Error).message, retryInMs: delayMs }, 'controller failed to start');
      await c.stop();
      if (controller === c) controller = undefined;
      setTimeout(() => {
        transition = transition.then(() => startController());
      }, delayMs).unref();
    }
  };
  const startLeading = () => {
    leading = true;
    metrics.isLeader.set(1);
    startBackoff.reset();
    transition = transition.then(() => startController());
  };
  const stopLeading = () => {
    leading = false;
    metrics.isLeader.set(0);
    transition = transition.then(async () => {
      const c = controller;
      controller = undefined;
      await c?.stop();
    });
  };
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
      onStartedLeading: startLeading,
      onStoppedLeading: stopLeading,
    });
  }

  const server: Server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/healthz') {
      res.writeHead(200).end('ok');
    } else if (url === '/readyz') {
      // A standby is ready (it can take over); a leader is ready once its caches are synced.
      const ready = elector !== undefined && !elector.isLeader ? true : (controller?.isSynced ?? false);
      res.writeHead(ready ? 200 : 503).end(ready ? 'ok' : 'caches not synced');
    } else if (url === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    } else {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.metricsPort, o.metricsHost, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : o.metricsPort;
  log.info(
    { metricsPort: port, leaderElection: o.leaderElection, namespace: o.namespace ?? '(all)' },
    'operator started',
  );
  if (elector !== undefined) elector.start();
  else startLeading();

  return {
    metricsPort: port,
    identity,
    metrics,
    isLeader: () => (elector !== undefined ? elector.isLeader : true),
    async stop() {
      if (elector !== undefined) await elector.stop();
      else stopLeading();
      await transition;
      await controller?.stop();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      apis.close();
    },
  };
}

const USAGE = `usage: tensile operator [--kubeconfig PATH] [--namespace NS] [--metrics-port N] [--workers N]
                        [--no-leader-election] [--lease-name NAME] [--lease-namespace NS] [--identity ID]
                        [--lease-duration-ms MS] [--renew-deadline-ms MS] [--retry-period-ms MS]
                        [--no-managed-etcd] [--etcd-image IMAGE] [--no-watch-nodes] [--log-level LEVEL]
Runs the ElasticJob controller in cluster (service account) or with a kubeconfig; serves /metrics, /healthz and
/readyz on --metrics-port (default 8080).`;

/** CLI entry for `tensile operator ...`; resolves with the exit code after SIGTERM/SIGINT. */
export async function operatorMain(argv: readonly string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        kubeconfig: { type: 'string' },
        namespace: { type: 'string' },
        'metrics-port': { type: 'string' },
        'no-leader-election': { type: 'boolean' },
        'lease-name': { type: 'string' },
        'lease-namespace': { type: 'string' },
        'lease-duration-ms': { type: 'string' },
        'renew-deadline-ms': { type: 'string' },
        'retry-period-ms': { type: 'string' },
        identity: { type: 'string' },
        workers: { type: 'string' },
        'no-managed-etcd': { type: 'boolean' },
        'no-watch-nodes': { type: 'boolean' },
        'etcd-image': { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`tensile operator: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const num = (flag: string): number | undefined => {
    const v = values[flag];
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n))
      throw new BadOptionsError(`tensile operator: --${flag} ${String(v)}: expected an integer`);
    return n;
  };
  const str = (flag: string) => values[flag] as string | undefined;
  const { pino } = await import('pino');
  const level = str('log-level') ?? process.env.TENSILE_LOG_LEVEL ?? 'info';
  const logger = pino({ level, base: { component: 'tensile-operator' } }) as unknown as Logger;
  let handle: OperatorHandle;
  try {
    const input: OperatorOptionsInput = {
      leaderElection: values['no-leader-election'] !== true,
      managedEtcd: values['no-managed-etcd'] !== true,
      watchNodes: values['no-watch-nodes'] !== true,
    };
    const opt = (k: keyof OperatorOptionsInput, v: unknown) => {
      if (v !== undefined) (input as Record<string, unknown>)[k] = v;
    };
    opt('kubeconfig', str('kubeconfig'));
    opt('namespace', str('namespace'));
    opt('metricsPort', num('metrics-port'));
    opt('leaseName', str('lease-name'));
    opt('leaseNamespace', str('lease-namespace'));
    opt('leaseDurationMs', num('lease-duration-ms'));
    opt('renewDeadlineMs', num('renew-deadline-ms'));
    opt('retryPeriodMs', num('retry-period-ms'));
    opt('identity', str('identity'));
    opt('workers', num('workers'));
    opt('etcdImage', str('etcd-image'));
    handle = await runOperator(input, logger);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 2;
  }
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await handle.stop();
  return 0;
}
