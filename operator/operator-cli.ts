// `tensile operator [flags]`: the CLI face of runOperator. The flags come from the options schema
// (config/operator-options.ts), so the CLI, `runOperator` and the chart's values cannot drift apart.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { Logger } from './api.js';
import { OPERATOR_FLAGS, optionsFromFlags, type OperatorOptionsInput } from './config/operator-options.js';
import { runOperator, type OperatorHandle } from './run-operator.js';

/** Flags of the CLI only (not options of runOperator). */
const CLI_ONLY = {
  'log-level': { type: 'string', description: 'pino level: trace, debug, info, warn, error (default: info)' },
  help: { type: 'boolean', short: 'h', description: 'Print this help' },
} as const;

function usage(): string {
  const rows: Array<[string, string]> = OPERATOR_FLAGS.map((f) => [
    `--${f.flag}${f.kind === 'boolean' ? '' : f.kind === 'integer' ? ' N' : ' VALUE'}`,
    `${f.flag.startsWith('no-') ? 'Turn off: ' : ''}${f.description}${f.defaultValue !== undefined && f.kind !== 'boolean' ? ` (default: ${String(f.defaultValue)})` : ''}`,
  ]);
  for (const [flag, d] of Object.entries(CLI_ONLY))
    rows.push([`--${flag}${d.type === 'string' ? ' LEVEL' : ''}`, d.description]);
  const width = Math.max(...rows.map(([f]) => f.length)) + 2;
  return [
    'usage: tensile operator [flags]',
    'Runs the ElasticJob controller in cluster (service account) or with a kubeconfig; serves /metrics, /healthz',
    'and /readyz on --metrics-port.',
    ...rows.map(([f, d]) => `  ${f.padEnd(width)}${d}`),
  ].join('\n');
}

/** parseArgs over the flag table; throws on an unknown flag or a missing value. */
function parseFlags(argv: readonly string[]): Record<string, string | boolean | undefined> {
  const options: NonNullable<ParseArgsConfig['options']> = {};
  for (const f of OPERATOR_FLAGS) options[f.flag] = { type: f.kind === 'boolean' ? 'boolean' : 'string' };
  for (const [flag, d] of Object.entries(CLI_ONLY))
    options[flag] = { type: d.type, ...('short' in d ? { short: d.short } : {}) };
  return parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values as Record<
    string,
    string | boolean | undefined
  >;
}

/**
 * The options `tensile operator <argv>` would run with (what the chart test checks the rendered args against).
 * Throws on an unknown flag, or BadOptionsError on a bad value.
 */
export function operatorArgvOptions(argv: readonly string[]): OperatorOptionsInput {
  const values = parseFlags(argv);
  delete values['log-level'];
  return optionsFromFlags(values);
}

/** CLI entry for `tensile operator ...`; resolves with the exit code (2: bad flags) after SIGTERM/SIGINT. */
export async function operatorMain(argv: readonly string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseFlags(argv);
  } catch (err) {
    process.stderr.write(`tensile operator: ${(err as Error).message}\n${usage()}\n`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  const { pino } = await import('pino');
  const level = (values['log-level'] as string | undefined) ?? process.env.TENSILE_LOG_LEVEL ?? 'info';
  let handle: OperatorHandle;
  try {
    const logger = pino({ level, base: { component: 'tensile-operator' } }) as unknown as Logger;
    handle = await runOperator(optionsFromFlags(values), logger);
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
