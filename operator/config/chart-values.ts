// The Helm chart's values, as a zod schema: `operator/gen-crd.ts` writes `charts/tensile/values.schema.json` from it,
// and `charts/tensile/values.yaml` must parse against it (unit test).
import { z } from 'zod';

const open = z.record(z.string(), z.unknown());

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
    leaderElection: z.object({
      enabled: z.boolean(),
      leaseName: z.string().min(1),
      leaseDurationSeconds: z.number().int().min(1),
      renewDeadlineSeconds: z.number().int().min(1),
      retryPeriodSeconds: z.number().int().min(1),
    }),
    metrics: z.object({ port: z.number().int().min(1).max(65535) }),
    managedEtcd: z.object({
      enabled: z.boolean().describe('Run an etcd per namespace for jobs whose spec.rdzvEndpoint is empty.'),
      image: z.string().min(1),
    }),
    serviceAccount: z.object({ create: z.boolean(), name: z.string() }),
    resources: open,
    nodeSelector: z.record(z.string(), z.string()),
    tolerations: z.array(open),
    affinity: open,
  })
  .strict();
export type ChartValues = z.infer<typeof chartValuesSchema>;
