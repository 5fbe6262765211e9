// A small torchrun-compatible argument scanner: `--flag value`, `--flag=value`, dash and underscore spellings,
// short aliases, boolean flags, `PET_<DEST>` environment fallbacks (explicit flags win), and argparse's REMAINDER
// (everything after the script is the script's).

import { UsageError } from './api.js';

export interface FlagSpec {
  /** Canonical name with dashes, e.g. `nproc-per-node`. */
  readonly name: string;
  readonly short?: string;
  readonly boolean?: boolean;
  /** Read `PET_<NAME_UPPER_UNDERSCORE>` when the flag is absent (torchrun's `action=env`). */
  readonly env?: boolean;
  readonly help: string;
  readonly metavar?: string;
}

export interface ScannedArgs {
  /** Canonical flag name → raw string value ('true'/'false' for booleans). */
  readonly values: ReadonlyMap<string, string>;
  /** Where each value came from, for error messages: `--flag` or `PET_FLAG`. */
  readonly sources: ReadonlyMap<string, string>;
  readonly positional: readonly string[];
}

export function envName(flag: FlagSpec): string {
  return `PET_${flag.name.replace(/-/g, '_').toUpperCase()}`;
}

function normalise(raw: string): string {
  return raw.replace(/_/g, '-');
}

/**
 * Scans argv against the flag table. The first non-flag argument starts the positional remainder.
 * Throws UsageError for unknown flags and flags missing their value.
 */
export function scanArgs(
  argv: readonly string[],
  flags: readonly FlagSpec[],
  env: Readonly<Record<string, string | undefined>>,
): ScannedArgs {
  const byName = new Map(flags.map((f) => [f.name, f]));
  const byShort = new Map(flags.filter((f) => f.short).map((f) => [f.short as string, f]));
  const values = new Map<string, string>();
  const sources = new Map<string, string>();
  const positional: string[] = [];

  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      i++;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    let spec: FlagSpec | undefined;
    let inline: string | undefined;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const key = normalise(eq >= 0 ? arg.slice(2, eq) : arg.slice(2));
      inline = eq >= 0 ? arg.slice(eq + 1) : undefined;
      spec = byName.get(key);
      if (!spec) throw new UsageError(`unknown option '${arg}'; run 'tensile run --help' for the list`);
    } else {
      const key = arg.slice(1, 2);
      spec = byShort.get(key);
      if (!spec) throw new UsageError(`unknown option '${arg}'; run 'tensile run --help' for the list`);
      if (arg.length > 2) inline = arg.slice(2).replace(/^=/, '');
    }
    if (spec.boolean) {
      values.set(spec.name, inline ?? 'true');
    } else {
      let value = inline;
      if (value === undefined) {
        value = argv[i + 1];
        if (value === undefined)
          throw new UsageError(`option '--${spec.name}' needs a value (${spec.metavar ?? 'VALUE'})`);
        i++;
      }
      values.set(spec.name, value);
    }
    sources.set(spec.name, `--${spec.name}`);
  }
  positional.push(...argv.slice(i));

  for (const spec of flags) {
    if (!spec.env || values.has(spec.name)) continue;
    const name = envName(spec);
    const fromEnv = env[name];
    if (fromEnv !== undefined && fromEnv !== '') {
      values.set(
        spec.name,
        spec.boolean ? (fromEnv === '0' || fromEnv.toLowerCase() === 'false' ? 'false' : 'true') : fromEnv,
      );
      sources.set(spec.name, name);
    }
  }
  return { values, sources, positional };
}

/** Renders the flag table as help text. */
export function formatHelp(usage: string, flags: readonly FlagSpec[]): string {
  const rows = flags.map((f) => {
    const left = `${f.short ? `-${f.short}, ` : '    '}--${f.name}${f.boolean ? '' : ` ${f.metavar ?? 'VALUE'}`}`;
    return `  ${left.padEnd(36)} ${f.help}${f.env ? ` [env ${envName(f)}]` : ''}`;
  });
  return `${usage}\n\noptions:\n${rows.join('\n')}\n`;
}
