#!/usr/bin/env node
// The `tensile` binary: a registry of subcommands (run, status, operator), each loaded on demand.

import { AgentError, UsageError } from './api.js';

type Command = (argv: readonly string[]) => Promise<number>;

const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  run: {
    summary: 'launch workers on this node, torchrun-compatible (tensile run --help)',
    load: async () => (await import('./commands/run.js')).runCommand,
  },
  status: {
    summary: "show a job's round, members, waiting nodes and restarts (tensile status --help)",
    load: async () => (await import('./commands/status.js')).statusCommand,
  },
  operator: {
    summary: 'run the ElasticJob Kubernetes operator (tensile operator --help)',
    load: async () => (await import('./commands/operator.js')).operatorCommand,
  },
};

function usage(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `usage: tensile <command> [options]\n\ncommands:\n${rows.join('\n')}\n  version    print the version\n`;
}

export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === 'version' || name === '--version') {
    const { readFileSync, existsSync } = await import('node:fs');
    const candidates = ['../package.json', '../../package.json'].map((p) => new URL(p, import.meta.url));
    const found = candidates.find((u) => existsSync(u));
    const pkg = found ? (JSON.parse(readFileSync(found, 'utf8')) as { version: string }) : { version: 'unknown' };
    process.stdout.write(`tensile ${pkg.version}\n`);
    return 0;
  }
  const entry = COMMANDS[name];
  if (!entry) {
    process.stderr.write(`tensile: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  try {
    const command = await entry.load();
    return await command(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`tensile ${name}: error: ${err.message}\n`);
      return 2;
    }
    if (err instanceof AgentError) {
      process.stderr.write(`tensile ${name}: ${err.message}\n`);
      return err.exitCode;
    }
    const e = err as Error & { code?: string };
    process.stderr.write(`tensile ${name}: ${e.code ? `[${e.code}] ` : ''}${e.message}\n`);
    return e.code === 'INVALID_ARGUMENT' || e.name === 'ZodError' ? 2 : 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Whatever a library left open (an idle socket, a timer) must not keep a finished CLI alive.
    setTimeout(() => process.exit(code), 200).unref();
  },
  (err: Error) => {
    process.stderr.write(`tensile: ${err.stack ?? err.message}\n`);
    process.exitCode = 1;
  },
);
