// Command-line flags of the main job, parsed once with zod; defaults live here and nowhere else.

import { z } from 'zod';

export class UsageError extends Error {
  readonly code = 'INVALID_ARGUMENT' as const;
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

const int = (name: string, min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number().refine((v) => Number.isInteger(v) && v >= min && v <= max, {
    message: `${name}: expected an integer in [${min}, ${max}]`,
  });

const num = (name: string, min: number, max: number) =>
  z.coerce.number().refine((v) => Number.isFinite(v) && v > min && v <= max, {
    message: `${name}: expected a number in (${min}, ${max}]`,
  });

/**
 * How `--chaos` fails a worker: exit (code 1, with an error file), kill (SIGKILL itself: a crash), hang (a busy
 * loop: only a watchdog or a timeout notices), stop (SIGSTOP itself: a frozen process), node (SIGKILL its agent,
 * then itself: a node lost, for multi-node runs).
 */
export const CHAOS_MODES = ['exit', 'kill', 'hang', 'stop', 'node'] as const;
export type ChaosMode = (typeof CHAOS_MODES)[number];

export const FlagsSchema = z.object({
  epochs: int('--epochs', 1, 1000),
  batchSize: int('--batch-size', 1, 65536),
  batchPolicy: z.enum(['keep-global', 'keep-per-worker']),
  lr: num('--lr', 0, 10),
  momentum: z.coerce.number().refine((v) => v >= 0 && v < 1, { message: '--momentum: expected a number in [0, 1)' }),
  hidden: z.string().transform((s, ctx) => {
    const parts = s.split(',').map((p) => Number(p.trim()));
    if (parts.length === 0 || parts.some((p) => !Number.isInteger(p) || p < 1 || p > 8192)) {
      ctx.addIssue({ code: 'custom', message: `--hidden ${s}: expected comma-separated layer widths in [1, 8192]` });
      return z.NEVER;
    }
    return parts;
  }),
  trainSize: int('--train-size', 10, 10_000_000),
  testSize: int('--test-size', 10, 10_000_000),
  seed: int('--seed', 0, 2 ** 31 - 1),
  checkpointDir: z.string().min(1),
  saveEvery: int('--save-every', 0),
  keepLast: int('--keep-last', 1, 1000),
  chaos: z
    .string()
    .nullable()
    .transform((s, ctx) => {
      if (s === null) return null;
      const m = /^(\d+):(\d+)(?::([a-z]+))?$/.exec(s);
      const mode = (m?.[3] ?? 'exit') as ChaosMode;
      if (!m || !CHAOS_MODES.includes(mode)) {
        ctx.addIssue({
          code: 'custom',
          message: `--chaos ${s}: expected RANK:STEP or RANK:STEP:MODE with MODE one of ${CHAOS_MODES.join(', ')} (e.g. 1:30:kill)`,
        });
        return z.NEVER;
      }
      return { rank: Number(m[1]), step: Number(m[2]), mode };
    }),
  mnist: z.string().nullable(),
  report: z.string().nullable(),
  targetAccuracy: z.coerce
    .number()
    .refine((v) => v >= 0 && v <= 1, { message: '--target-accuracy: expected a fraction in [0, 1]' }),
  logEvery: int('--log-every', 1),
  requireTarget: z.boolean(),
  stepDelayMs: int('--step-delay-ms', 0, 60_000),
  timeoutMs: int('--timeout-ms', 1000),
});

export type Flags = z.output<typeof FlagsSchema>;

const DEFAULTS: Record<string, string | boolean | null> = {
  epochs: '6',
  batchSize: '64',
  batchPolicy: 'keep-global',
  lr: '0.05',
  momentum: '0.9',
  hidden: '256,128',
  trainSize: '16000',
  testSize: '2000',
  seed: '1',
  checkpointDir: null,
  saveEvery: '50',
  keepLast: '3',
  chaos: null,
  mnist: null,
  report: null,
  targetAccuracy: '0.95',
  logEvery: '10',
  requireTarget: false,
  stepDelayMs: '0',
  timeoutMs: '60000',
};

/** `--small`: the CI size (a few seconds per epoch on 2 cores). */
const SMALL: Record<string, string> = {
  epochs: '4',
  hidden: '64',
  trainSize: '3000',
  testSize: '500',
  saveEvery: '10',
  targetAccuracy: '0.9',
  logEvery: '5',
};

const BOOLEAN = new Set(['requireTarget']);

export const USAGE = `Usage: train.ts [flags]
  Elastic data-parallel training of an MLP on synthetic digits (or MNIST). Run it under the launcher:
    tensile run --standalone --nproc-per-node 2 --max-restarts 3 examples/train/train.ts [flags]

  --epochs N             epochs (default ${DEFAULTS.epochs})
  --batch-size N         global batch, or per-worker batch with --batch-policy keep-per-worker (default ${DEFAULTS.batchSize})
  --batch-policy P       keep-global | keep-per-worker: what stays fixed when the world size changes (default keep-global)
  --lr X --momentum X    SGD hyper-parameters (default ${DEFAULTS.lr}, ${DEFAULTS.momentum})
  --hidden A,B           hidden layer widths (default ${DEFAULTS.hidden})
  --train-size N         synthetic training samples (default ${DEFAULTS.trainSize}); --test-size N (default ${DEFAULTS.testSize})
  --seed N               data and initialisation seed (default ${DEFAULTS.seed})
  --checkpoint-dir DIR   checkpoints, history and report (default $TENSILE_CHECKPOINT_DIR, else ./tensile-train)
  --save-every N         checkpoint every N steps (default ${DEFAULTS.saveEvery}); --keep-last K (default ${DEFAULTS.keepLast})
  --chaos RANK:STEP[:MODE]  once per run, RANK fails at global step STEP; MODE: exit (default: exit code 1),
                         kill (SIGKILL itself), hang (busy loop), stop (SIGSTOP itself), node (SIGKILL its agent too)
  --mnist DIR            train on MNIST IDX files in DIR instead (train-*/t10k-*-ubyte, optionally .gz)
  --report FILE          HTML report path (default <checkpoint dir>/report.html)
  --target-accuracy X    held-out accuracy to reach (default ${DEFAULTS.targetAccuracy}); --require-target exits 3 below it
  --log-every N          progress line every N steps (default ${DEFAULTS.logEvery})
  --step-delay-ms N      sleep per step (to give tests time to interrupt a run)
  --timeout-ms N         collective timeout (default ${DEFAULTS.timeoutMs})
  --small                CI size: ${Object.entries(SMALL)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ')}
`;

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** Parses argv (without node and script). Throws UsageError naming the flag and the expectation. */
export function parseFlags(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Flags | 'help' {
  const given: Record<string, string | boolean> = {};
  let small = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') return 'help';
    if (arg === '--small') {
      small = true;
      continue;
    }
    if (!arg.startsWith('--'))
      throw new UsageError(`unexpected argument ${JSON.stringify(arg)}: expected --flag value`);
    const eq = arg.indexOf('=');
    const name = camel(eq >= 0 ? arg.slice(2, eq) : arg.slice(2));
    if (!(name in DEFAULTS)) throw new UsageError(`unknown flag ${arg.split('=')[0]}: see --help`);
    if (BOOLEAN.has(name)) {
      given[name] = true;
      continue;
    }
    const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new UsageError(`${arg}: expected a value`);
    given[name] = value;
  }
  const merged: Record<string, string | boolean | null> = { ...DEFAULTS, ...(small ? SMALL : {}), ...given };
  merged.checkpointDir ??= env.TENSILE_CHECKPOINT_DIR || './tensile-train';
  const parsed = FlagsSchema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const key = String(issue.path[0] ?? '');
    const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    const shown = JSON.stringify(merged[key] ?? null);
    throw new UsageError(
      issue.message.startsWith('--') ? `${issue.message} (got ${shown})` : `${flag} ${shown}: ${issue.message}`,
    );
  }
  return parsed.data;
}
