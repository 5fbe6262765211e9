// The Helm chart's values, as a zod schema built from the operator's options schema: `operator/gen-crd.ts` writes
// `charts/tensile/values.schema.json` from it, and `charts/tensile/values.yaml` must parse against it.
//
// `CHART_OPTION_SOURCES` says, for every operator option, where the chart's Deployment takes it from; it is a
// Record over the option names, so adding an option without deciding what the chart does with it fails to compile.
// `chartOperatorOptions` is that table as a function: test/integration/helm-chart.test.ts renders the chart with
// real helm over a values matrix and checks that the container's args, parsed by the operator's own CLI parser,
// give exactly these options.
import { z } from 'zod';
import { operatorOptionsShape as op, type OperatorOptionName, type OperatorOptionsInput } from './operator-options.js';

const open = z.record(z.string(), z.unknown());
/** An operator option's schema without its default (values.yaml holds the chart's defaults), same description. */
const inner = <T extends z.ZodType>(s: z.ZodDefault<T>): T => s.unwrap().describe(s.description ?? '') as T;
/** Lease timings are whole seconds in values (as in client-go's flags), milliseconds in the operator. */
const seconds = (ms: z.ZodDefault<z.ZodNumber>) =>
  z
    .number()
    .int()
    .min(Math.ceil((ms.def.innerType.minValue ?? 1000) / 1000));

export const chartValuesSchema = z
  .object({
    image: z.object({
      repository: z.string().min(1),
      tag: z.string().min(1),
      pullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']),
    }),
    replicas: z.number().int().min(1).describe('Operator replicas; more than one needs leaderElection.enabled.'),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error']),
    watchNamespace: z.string().describe('Namespace to watch; empty watches all namespaces (ClusterRole).'),
    workers: inner(op.workers),
    leaderElection: z.object({
      enabled: inner(op.leaderElection),
      leaseName: inner(op.leaseName),
      leaseDurationSeconds: seconds(op.leaseDurationMs),
      renewDeadlineSeconds: seconds(op.renewDeadlineMs).describe('Must be < leaseDurationSeconds.'),
      retryPeriodSeconds: seconds(op.retryPeriodMs),
    }),
    metrics: z.object({ port: inner(op.metricsPort).min(1).describe('Port of /metrics, /healthz and /readyz') }),
    managedEtcd: z.object({
      enabled: inner(op.managedEtcd),
      image: inner(op.etcdImage),
    }),
    nodeOptions: z.string().describe('NODE_OPTIONS of the operator container (V8 heap flags); empty: Node defaults.'),
    serviceAccount: z.object({ create: z.boolean(), name: z.string() }),
    resources: open,
    nodeSelector: z.record(z.string(), z.string()),
    tolerations: z.array(open),
    affinity: open,
  })
  .strict();
export type ChartValues = z.infer<typeof chartValuesSchema>;

/** Where the chart's operator Deployment takes each operator option from. */
export const CHART_OPTION_SOURCES: Readonly<Record<OperatorOptionName, string>> = {
  kubeconfig: 'not set: in-cluster service account',
  namespace: 'watchNamespace (when not empty)',
  metricsPort: 'metrics.port',
  metricsHost: 'not set: default 0.0.0.0 (probes come from the kubelet)',
  leaderElection: 'leaderElection.enabled',
  leaseName: 'leaderElection.leaseName',
  leaseNamespace: 'the release namespace',
  leaseDurationMs: 'leaderElection.leaseDurationSeconds × 1000',
  renewDeadlineMs: 'leaderElection.renewDeadlineSeconds × 1000',
  retryPeriodMs: 'leaderElection.retryPeriodSeconds × 1000',
  identity: 'not set: $POD_NAME from the downward API',
  workers: 'workers',
  resyncMs: 'not set: default',
  managedEtcd: 'managedEtcd.enabled',
  etcdImage: 'managedEtcd.image',
  watchNodes: 'off when watchNamespace is set (a namespaced Role cannot read Nodes)',
};

/** The options the chart's Deployment gives the operator for these values (CHART_OPTION_SOURCES as code). */
export function chartOperatorOptions(values: ChartValues, releaseNamespace: string): OperatorOptionsInput {
  const le = values.leaderElection;
  const namespaced = values.watchNamespace !== '';
  return {
    ...(namespaced ? { namespace: values.watchNamespace, watchNodes: false } : {}),
    metricsPort: values.metrics.port,
    leaseName: le.leaseName,
    leaseNamespace: releaseNamespace,
    leaseDurationMs: le.leaseDurationSeconds * 1000,
    renewDeadlineMs: le.renewDeadlineSeconds * 1000,
    retryPeriodMs: le.retryPeriodSeconds * 1000,
    ...(le.enabled ? {} : { leaderElection: false }),
    workers: values.workers,
    ...(values.managedEtcd.enabled ? {} : { managedEtcd: false }),
    etcdImage: values.managedEtcd.image,
  };
}
