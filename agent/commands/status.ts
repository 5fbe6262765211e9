// `tensile status`: a job's current round, members with ranks and hosts, waiting nodes and restarts.

import { formatHelp, scanArgs, type FlagSpec } from '../args.js';
import { UsageError } from '../api.js';
import { splitRdzvConf } from '../run-config.js';
import type { JobStatus } from '../../rendezvous/api.js';

/** How many recoveries the table shows, newest first, over all nodes. */
const SHOWN_RECOVERIES = 10;

const FLAGS: readonly FlagSpec[] = [
  { name: 'rdzv-endpoint', env: true, metavar: 'HOST:PORT', help: 'etcd endpoint of the job' },
  { name: 'rdzv-id', env: true, metavar: 'ID', help: 'job id' },
  { name: 'rdzv-conf', env: true, metavar: 'K=V,...', help: 'TLS/auth settings as for tensile run' },
  { name: 'watch', short: 'w', boolean: true, help: 'follow the job live' },
  { name: 'json', boolean: true, help: 'print JSON instead of a table' },
  { name: 'help', short: 'h', boolean: true, help: 'show this help' },
];

export function formatStatus(s: JobStatus): string {
  const lines = [
    `job ${s.runId}: ${s.state}${s.round === null ? '' : `, round ${s.round}`}, ${s.failureRestarts} failure restart(s)` +
      (s.minNodes !== undefined ? `, nodes ${s.minNodes}:${s.maxNodes}` : ''),
    'RANK  HOST                 ADDR                  WORKERS  NODE',
  ];
  for (const m of s.members) {
    lines.push(
      `${String(m.groupRank).padEnd(5)} ${m.host.padEnd(20)} ${m.addr.padEnd(21)} ${String(m.localWorldSize).padEnd(8)} ${m.nodeId}`,
    );
  }
  if (s.members.length === 0) lines.push('(no members)');
  lines.push(
    `waiting: ${s.waiting.length === 0 ? 'none' : s.waiting.map((w) => `${w.host} (${w.nodeId})`).join(', ')}`,
  );
  const recent = (s.recoveries ?? [])
    .flatMap((n) => n.recoveries.map((r) => ({ ...r, host: n.host })))
    .sort((a, b) => b.startedAtMs - a.startedAtMs)
    .slice(0, SHOWN_RECOVERIES);
  if (recent.length === 0) {
    lines.push('recoveries: none');
  } else {
    lines.push('recent recoveries (newest first):');
    lines.push('TIME                      HOST                 PATH     CAUSE           RECOVERY  STEPS LOST  ROUND');
    for (const r of recent) {
      lines.push(
        `${new Date(r.startedAtMs).toISOString().padEnd(25)} ${r.host.padEnd(20)} ${r.path.padEnd(8)} ` +
          `${r.cause.padEnd(15)} ${`${(r.recoveryMs / 1000).toFixed(2)} s`.padEnd(9)} ` +
          `${(r.stepsLost === null ? 'unknown' : String(r.stepsLost)).padEnd(11)} ${r.round}`,
      );
    }
  }
  return lines.join('\n') + '\n';
}

export async function statusCommand(argv: readonly string[]): Promise<number> {
  const { values, positional } = scanArgs(argv, FLAGS, process.env);
  if (values.get('help') === 'true') {
    process.stdout.write(formatHelp('usage: tensile status --rdzv-endpoint HOST:PORT --rdzv-id ID [--watch]', FLAGS));
    return 0;
  }
  if (positional.length > 0) throw new UsageError(`unexpected argument '${positional[0]}'`);
  const endpoint = values.get('rdzv-endpoint');
  const runId = values.get('rdzv-id');
  if (!endpoint) throw new UsageError('--rdzv-endpoint HOST:PORT is required');
  if (!runId) throw new UsageError('--rdzv-id ID is required');
  const conf = splitRdzvConf(values.get('rdzv-conf') ?? '');
  const status = await import('../../rendezvous/status.js');
  const json = values.get('json') === 'true';
  const print = (s: JobStatus): void => {
    process.stdout.write(json ? JSON.stringify(s) + '\n' : formatStatus(s));
  };
  if (values.get('watch') !== 'true') {
    print(await status.getJobStatus({ endpoint, runId, conf }));
    return 0;
  }
  const ac = new AbortController();
  const stop = (): void => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await status.watchJobStatus({ endpoint, runId, conf, signal: ac.signal }, (s: JobStatus) => {
      if (!json) process.stdout.write(`--- ${new Date().toISOString()}\n`);
      print(s);
    });
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  return 0;
}
