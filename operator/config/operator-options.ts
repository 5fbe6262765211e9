// The operator's options: one zod schema that yields the type `runOperator` takes, the `tensile operator` flag
// table (`OPERATOR_FLAGS`, derived from the schema: one flag per option, kebab-case) and, through
// `chart-values.ts`, the Helm chart's values schema. Defaults live here and nowhere else.
import { z } from 'zod';
import { BadOptionsError } from '../api.js';

export const operatorOptionsShape = {
  kubeconfig: z
    .string()
    .min(1)
    .optional()
    .describe('Path to a kubeconfig; default: in-cluster, then $KUBECONFIG, then ~/.kube/config'),
  namespace: z.string().min(1).optional().describe('Watch only this namespace (default: all)'),
  metricsPort: z
    .number()
    .int()
    .min(0)
    .max(65535)
    .default(8080)
    .describe('Port of /metrics, /healthz and /readyz (0: any free port)'),
  metricsHost: z.string().min(1).default('0.0.0.0').describe('Address the metrics server binds'),
  leaderElection: z.boolean().default(true).describe('Only the holder of the Lease reconciles'),
  leaseName: z.string().min(1).default('tensile-operator').describe('Name of the leader Lease'),
  leaseNamespace: z
    .string()
    .min(1)
    .optional()
    .describe('Namespace of the leader Lease (default: --namespace, own namespace, or "default")'),
  leaseDurationMs: z.number().int().min(1000).default(15_000).describe('How long a Lease holds without renewal'),
  renewDeadlineMs: z.number().int().min(500).default(10_000).describe('A leader that cannot renew in time steps down'),
  retryPeriodMs: z.number().int().min(100).default(2_000).describe('Interval of Lease acquire/renew attempts'),
  identity: z.string().min(1).optional().describe('Leader identity (default: $POD_NAME, else hostname-pid)'),
  workers: z.number().int().min(1).max(64).default(4).describe('Jobs reconciled concurrently'),
  resyncMs: z.number().int().min(1000).default(30_000).describe('Period of the full resync of every job'),
  managedEtcd: z.boolean().default(true).describe('Run an etcd per namespace for jobs without rdzvEndpoint'),
  etcdImage: z.string().min(1).default('quay.io/coreos/etcd:v3.5.17').describe('Image of the managed etcd'),
  watchNodes: z.boolean().default(true).describe('Watch Nodes to see node loss (needs a ClusterRole)'),
};

export const operatorOptionsSchema = z
  .object(operatorOptionsShape)
  .strict()
  .superRefine((o, ctx) => {
    if (o.renewDeadlineMs >= o.leaseDurationMs)
      ctx.addIssue({
        code: 'custom',
        path: ['renewDeadlineMs'],
        message: `must be < leaseDurationMs (${o.leaseDurationMs})`,
      });
  });
export type OperatorOptionsInput = z.input<typeof operatorOptionsSchema>;
export type OperatorOptions = z.output<typeof operatorOptionsSchema>;
export type OperatorOptionName = keyof typeof operatorOptionsShape;

/** One CLI flag of `tensile operator`, derived from an option of the schema. */
export interface OperatorFlag {
  readonly option: OperatorOptionName;
  /** The flag as typed, without `--`: kebab-case of the option; `no-<name>` for a boolean that defaults to true. */
  readonly flag: string;
  readonly kind: 'string' | 'integer' | 'boolean';
  readonly description: string;
  readonly defaultValue?: unknown;
}

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

function deriveFlags(): OperatorFlag[] {
  const json = z.toJSONSchema(z.object(operatorOptionsShape), { io: 'input' }) as {
    properties: Record<string, { type: string; default?: unknown; description?: string }>;
  };
  return (Object.keys(operatorOptionsShape) as OperatorOptionName[]).map((option) => {
    const p = json.properties[option]!;
    const kind = p.type === 'integer' ? 'integer' : p.type === 'boolean' ? 'boolean' : 'string';
    if (p.type !== kind) throw new Error(`operator option ${option}: no CLI form for JSON type ${p.type}`);
    const negated = kind === 'boolean' && p.default === true;
    return {
      option,
      flag: negated ? `no-${kebab(option)}` : kebab(option),
      kind,
      description: p.description ?? '',
      ...(p.default !== undefined ? { defaultValue: p.default } : {}),
    };
  });
}

/** The flag table, in the schema's order. */
export const OPERATOR_FLAGS: readonly OperatorFlag[] = deriveFlags();

const flagOf = new Map(OPERATOR_FLAGS.map((f) => [f.option as string, f]));

/** `--flag` for an option name (what error messages quote). */
export function flagName(option: string): string {
  const f = flagOf.get(option);
  return f !== undefined ? `--${f.flag}` : option;
}

/**
 * Parses options once at the edge. Throws BadOptionsError quoting each bad value and what was expected, e.g.
 * `tensile operator: --workers 100: Too big: expected number to be <=64`.
 */
export function parseOperatorOptions(input: OperatorOptionsInput): OperatorOptions {
  const r = operatorOptionsSchema.safeParse(input);
  if (r.success) return r.data;
  const msg = r.error.issues
    .map((i) => {
      const key = i.path.join('.');
      if (key === '') return `options: ${i.message}`;
      const value = (input as Record<string, unknown>)[key];
      return `${flagName(key)} ${JSON.stringify(value)}: ${i.message}`;
    })
    .join('; ');
  throw new BadOptionsError(`tensile operator: ${msg}`);
}

/**
 * Turns parsed CLI values (parseArgs' `values`, keyed by flag) into options input. Integers are checked here so the
 * message names the flag and the text given: `--workers abc: expected an integer`.
 */
export function optionsFromFlags(values: Readonly<Record<string, string | boolean | undefined>>): OperatorOptionsInput {
  const input: Record<string, unknown> = {};
  for (const f of OPERATOR_FLAGS) {
    const v = values[f.flag];
    if (v === undefined) continue;
    if (f.kind === 'boolean') input[f.option] = f.flag.startsWith('no-') ? v !== true : v === true;
    else if (f.kind === 'integer') {
      const n = Number(v);
      if (typeof v !== 'string' || v.trim() === '' || !Number.isInteger(n))
        throw new BadOptionsError(`tensile operator: --${f.flag} ${String(v)}: expected an integer`);
      input[f.option] = n;
    } else input[f.option] = v;
  }
  return input as OperatorOptionsInput;
}
