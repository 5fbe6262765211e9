// ElasticJob v1alpha1: the zod schemas are the single source of truth. The TypeScript types, the operator's
// validation, the CRD's OpenAPI schema (`operator/gen-crd.ts`) and the printer columns all come from here.
//
// Spec field names follow pytorch/elastic's ElasticJob (`rdzvEndpoint`, `minReplicas`, `maxReplicas`,
// `replicaSpecs.Worker.{replicas,template,restartPolicy}`, `cleanPodPolicy`, `ttlSecondsAfterFinished`,
// `activeDeadlineSeconds`, `backoffLimit`) so a manifest migrates by changing its apiVersion.
import { z } from 'zod';

export const GROUP = 'tensile.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'ElasticJob';
export const PLURAL = 'elasticjobs';
export const SINGULAR = 'elasticjob';
export const SHORT_NAMES = ['ej', 'ejob'] as const;

/** Labels the operator puts on every Pod and Service it owns. */
export const LABELS = {
  jobName: 'tensile.dev/job-name',
  replicaType: 'tensile.dev/replica-type',
  replicaIndex: 'tensile.dev/replica-index',
  managedBy: 'app.kubernetes.io/managed-by',
} as const;
export const MANAGED_BY = 'tensile-operator';

/** Exit codes that mean "killed from outside" (SIGKILL, SIGTERM): a preemption, not an application failure. */
export const DEFAULT_PREEMPTION_EXIT_CODES = [137, 143] as const;
export const DEFAULT_BACKOFF_LIMIT = 3;
export const DEFAULT_BELOW_MIN_TIMEOUT_SECONDS = 600;

const int32 = (min: number) => z.number().int().min(min).max(2147483647);

export const restartPolicySchema = z
  .enum(['Always', 'OnFailure', 'Never', 'ExitCode'])
  .describe(
    'What happens when a worker pod fails. ExitCode (default): the pod is replaced; preemption exit codes never count against backoffLimit, other codes do. Never: a real failure fails the job. OnFailure/Always: passed to the pod (containers restart in place; restarts count against backoffLimit).',
  );
export type RestartPolicy = z.infer<typeof restartPolicySchema>;

export const cleanPodPolicySchema = z
  .enum(['All', 'Running', 'None'])
  .describe('Which pods are deleted when the job finishes. Default Running.');
export type CleanPodPolicy = z.infer<typeof cleanPodPolicySchema>;

/** A PodTemplateSpec. Its inside is Kubernetes' own schema; we only require that a spec with containers exists. */
export const podTemplateSchema = z
  .object({
    metadata: z
      .object({
        labels: z.record(z.string(), z.string()).optional(),
        annotations: z.record(z.string(), z.string()).optional(),
      })
      .loose()
      .optional(),
    spec: z
      .object({
        containers: z
          .array(z.object({ name: z.string().min(1), image: z.string().optional() }).loose())
          .min(1, 'must list at least one container'),
      })
      .loose(),
  })
  .describe('Pod template for every worker (core/v1 PodTemplateSpec).');

export const replicaSpecSchema = z.object({
  replicas: int32(0).optional().describe('Desired number of worker pods; kept within [minReplicas, maxReplicas].'),
  template: podTemplateSchema,
  restartPolicy: restartPolicySchema.optional(),
});

export const preemptionPolicySchema = z
  .object({
    belowMinTimeoutSeconds: int32(0)
      .optional()
      .describe(
        `Seconds the job may run with fewer than minReplicas running workers before it fails (default ${DEFAULT_BELOW_MIN_TIMEOUT_SECONDS}).`,
      ),
    exitCodes: z
      .array(z.number().int().min(0).max(255))
      .optional()
      .describe('Container exit codes treated as preemption (default [137, 143]).'),
    nodeTaints: z
      .array(z.string().min(1))
      .optional()
      .describe(
        'Node taint keys that mean "this node is going away" (termination handlers); pods on such nodes count as preempted.',
      ),
  })
  .describe('How preemption (spot reclaim, eviction, deletion) is told apart from failure.');

export const elasticJobSpecSchema = z.object({
  rdzvEndpoint: z
    .string()
    .optional()
    .describe('etcd v3 endpoint host:port for the rendezvous. Empty: the operator runs an etcd per namespace.'),
  minReplicas: int32(1).optional().describe('Fewest workers the job trains with (default: replicas).'),
  maxReplicas: int32(1).optional().describe('Most workers the job trains with (default: replicas).'),
  replicaSpecs: z.object({ Worker: replicaSpecSchema }),
  nprocPerNode: int32(1).optional().describe('Worker processes per pod (PET_NPROC_PER_NODE).'),
  maxRestarts: int32(0).optional().describe('Worker-group restarts each agent may do (PET_MAX_RESTARTS).'),
  preemption: preemptionPolicySchema.optional(),
  cleanPodPolicy: cleanPodPolicySchema.optional(),
  ttlSecondsAfterFinished: int32(0).optional().describe('Delete the job this many seconds after it finishes.'),
  activeDeadlineSeconds: z
    .number()
    .int()
    .min(1)
    .max(Number.MAX_SAFE_INTEGER)
    .optional()
    .describe('Fail the job when it has been active this long.'),
  backoffLimit: int32(0)
    .optional()
    .describe(`Real (non-preemption) pod failures allowed before the job fails (default ${DEFAULT_BACKOFF_LIMIT}).`),
  suspend: z.boolean().optional().describe('When true, all pods are deleted and none are created.'),
});
export type ElasticJobSpec = z.infer<typeof elasticJobSpecSchema>;

export const CONDITION_TYPES = [
  'Created',
  'Running',
  'Restarting',
  'Scaling',
  'Succeeded',
  'Failed',
  'Suspended',
] as const;
export const conditionTypeSchema = z.enum(CONDITION_TYPES);
export type ConditionType = z.infer<typeof conditionTypeSchema>;

export const JOB_STATES = ['Created', 'Running', 'Restarting', 'Suspended', 'Succeeded', 'Failed'] as const;
export const jobStateSchema = z.enum(JOB_STATES);
export type JobState = z.infer<typeof jobStateSchema>;

export const conditionSchema = z.object({
  type: conditionTypeSchema,
  status: z.enum(['True', 'False', 'Unknown']),
  reason: z.string().optional(),
  message: z.string().optional(),
  lastUpdateTime: z.string().optional(),
  lastTransitionTime: z.string().optional(),
});
export type Condition = z.infer<typeof conditionSchema>;

export const replicaStatusSchema = z.object({
  active: z.number().int().optional().describe('Running worker pods.'),
  pending: z.number().int().optional(),
  succeeded: z.number().int().optional(),
  failed: z.number().int().optional(),
  selector: z.string().optional().describe('Label selector of the worker pods (scale subresource).'),
});

export const elasticJobStatusSchema = z.object({
  state: jobStateSchema.optional(),
  conditions: z.array(conditionSchema).optional(),
  replicaStatuses: z.object({ Worker: replicaStatusSchema.optional() }).optional(),
  observedGeneration: z.number().int().optional(),
  rounds: z
    .number()
    .int()
    .optional()
    .describe('Membership changes the operator has seen (each forces a new rendezvous round).'),
  restarts: z.number().int().optional().describe('Worker pods replaced, for any reason.'),
  failures: z.number().int().optional().describe('Real failures counted against backoffLimit.'),
  preemptions: z
    .number()
    .int()
    .optional()
    .describe('Pods lost to preemption, eviction or deletion (never counted against backoffLimit).'),
  startTime: z.string().optional(),
  completionTime: z.string().optional(),
  belowMinSince: z.string().optional(),
  lastReconcileTime: z.string().optional(),
  rdzvEndpoint: z
    .string()
    .optional()
    .describe('The endpoint the workers use (operator-managed etcd when spec.rdzvEndpoint is empty).'),
});
export type ElasticJobStatus = z.infer<typeof elasticJobStatusSchema>;

export const objectMetaSchema = z
  .object({
    name: z.string().min(1),
    namespace: z.string().optional(),
    uid: z.string().optional(),
    generation: z.number().int().optional(),
    resourceVersion: z.string().optional(),
    creationTimestamp: z.string().optional(),
    deletionTimestamp: z.string().optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
  })
  .loose();

export const elasticJobSchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(KIND),
  metadata: objectMetaSchema,
  spec: elasticJobSpecSchema,
  status: elasticJobStatusSchema.optional(),
});
export type ElasticJob = z.infer<typeof elasticJobSchema>;

/** A spec with every default applied; what the planner works with. */
export interface ResolvedSpec {
  readonly rdzvEndpoint: string;
  readonly minReplicas: number;
  readonly maxReplicas: number;
  /** Desired workers, always within [minReplicas, maxReplicas]. */
  readonly replicas: number;
  readonly restartPolicy: RestartPolicy;
  readonly nprocPerNode?: number;
  readonly maxRestarts?: number;
  readonly belowMinTimeoutSeconds: number;
  readonly preemptionExitCodes: readonly number[];
  readonly preemptionNodeTaints: readonly string[];
  readonly cleanPodPolicy: CleanPodPolicy;
  readonly ttlSecondsAfterFinished?: number;
  readonly activeDeadlineSeconds?: number;
  readonly backoffLimit: number;
  readonly suspend: boolean;
}

/** One problem with a manifest: `path` is the dotted field path, e.g. `spec.minReplicas`. */
export interface SpecIssue {
  readonly path: string;
  readonly message: string;
}

function pathOf(path: readonly PropertyKey[]): string {
  return path
    .map((p) => (typeof p === 'number' ? `[${p}]` : String(p)))
    .join('.')
    .replace(/\.\[/g, '[');
}

/**
 * Cross-field rules the OpenAPI schema cannot express: min ≤ max, min ≤ replicas ≤ max. Messages quote the values
 * and the bound, e.g. `spec.minReplicas: 4 must be ≤ spec.maxReplicas (2)`.
 */
export function crossFieldIssues(spec: ElasticJobSpec): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const replicas = spec.replicaSpecs.Worker.replicas;
  const min = spec.minReplicas;
  const max = spec.maxReplicas;
  if (min !== undefined && max !== undefined && min > max) {
    issues.push({ path: 'spec.minReplicas', message: `${min} must be ≤ spec.maxReplicas (${max})` });
  }
  if (replicas !== undefined && min !== undefined && replicas < min) {
    issues.push({
      path: 'spec.replicaSpecs.Worker.replicas',
      message: `${replicas} must be ≥ spec.minReplicas (${min})`,
    });
  }
  if (replicas !== undefined && max !== undefined && replicas > max) {
    issues.push({
      path: 'spec.replicaSpecs.Worker.replicas',
      message: `${replicas} must be ≤ spec.maxReplicas (${max})`,
    });
  }
  if (replicas === undefined && min === undefined && max === undefined) {
    issues.push({
      path: 'spec.replicaSpecs.Worker.replicas',
      message: 'is required when neither spec.minReplicas nor spec.maxReplicas is set',
    });
  }
  return issues;
}

export type ValidationResult =
  { readonly ok: true; readonly job: ElasticJob } | { readonly ok: false; readonly issues: readonly SpecIssue[] };

/** Validates a whole ElasticJob object (as read from the API server or a manifest). Never throws. */
export function validateElasticJob(input: unknown): ValidationResult {
  const parsed = elasticJobSchema.safeParse(input);
  if (!parsed.success) {
    return {
      ok: false,
      issues: parsed.error.issues.map((i) => ({ path: pathOf(i.path), message: i.message })),
    };
  }
  const issues = crossFieldIssues(parsed.data.spec);
  return issues.length > 0 ? { ok: false, issues } : { ok: true, job: parsed.data };
}

/** `spec.minReplicas: 4 must be ≤ spec.maxReplicas (2); ...` */
export function formatIssues(issues: readonly SpecIssue[]): string {
  return issues.map((i) => `${i.path}: ${i.message}`).join('; ');
}

/** Applies defaults in one place. The spec must already have passed `validateElasticJob`. */
export function resolveSpec(spec: ElasticJobSpec): ResolvedSpec {
  const w = spec.replicaSpecs.Worker;
  const base = w.replicas ?? spec.maxReplicas ?? spec.minReplicas ?? 1;
  const minReplicas = spec.minReplicas ?? Math.min(base, spec.maxReplicas ?? base);
  const maxReplicas = spec.maxReplicas ?? Math.max(base, minReplicas);
  const replicas = Math.min(Math.max(w.replicas ?? maxReplicas, minReplicas), maxReplicas);
  return {
    rdzvEndpoint: spec.rdzvEndpoint ?? '',
    minReplicas,
    maxReplicas,
    replicas,
    restartPolicy: w.restartPolicy ?? 'ExitCode',
    ...(spec.nprocPerNode !== undefined ? { nprocPerNode: spec.nprocPerNode } : {}),
    ...(spec.maxRestarts !== undefined ? { maxRestarts: spec.maxRestarts } : {}),
    belowMinTimeoutSeconds: spec.preemption?.belowMinTimeoutSeconds ?? DEFAULT_BELOW_MIN_TIMEOUT_SECONDS,
    preemptionExitCodes: spec.preemption?.exitCodes ?? DEFAULT_PREEMPTION_EXIT_CODES,
    preemptionNodeTaints: spec.preemption?.nodeTaints ?? DEFAULT_TERMINATION_TAINTS,
    cleanPodPolicy: spec.cleanPodPolicy ?? 'Running',
    ...(spec.ttlSecondsAfterFinished !== undefined ? { ttlSecondsAfterFinished: spec.ttlSecondsAfterFinished } : {}),
    ...(spec.activeDeadlineSeconds !== undefined ? { activeDeadlineSeconds: spec.activeDeadlineSeconds } : {}),
    backoffLimit: spec.backoffLimit ?? DEFAULT_BACKOFF_LIMIT,
    suspend: spec.suspend ?? false,
  };
}

/** Taints set by termination handlers on nodes about to disappear (aws-node-termination-handler, AKS spot, k8s). */
export const DEFAULT_TERMINATION_TAINTS: readonly string[] = [
  'aws-node-termination-handler/spot-itn',
  'aws-node-termination-handler/scheduled-maintenance',
  'aws-node-termination-handler/asg-lifecycle-termination',
  'aws-node-termination-handler/rebalance-recommendation',
  'node.kubernetes.io/out-of-service',
  'node.kubernetes.io/unreachable',
  'ToBeDeletedByClusterAutoscaler',
];
