// The summary printed when restarts run out: torchrun's layout, with the root cause (first failure by time) first.

import { constants } from 'node:os';
import type { WorkerExit } from './api.js';

export function describeExit(e: Pick<WorkerExit, 'exitCode' | 'signal' | 'pid'>): string {
  if (e.signal) {
    const num = (constants.signals as Record<string, number>)[e.signal];
    return `signal ${num ?? '?'} (${e.signal}) received by PID ${e.pid}`;
  }
  return `exit code ${e.exitCode} (pid ${e.pid})`;
}

/** Orders failures by time; the first is the root cause. Agent-stopped workers are not failures. */
export function rootCauseOrder(exits: readonly WorkerExit[]): WorkerExit[] {
  return exits
    .filter((e) => !e.stoppedByAgent && e.exitCode !== 0)
    .sort((a, b) => a.timestampMs - b.timestampMs || a.globalRank - b.globalRank);
}

export function formatFailureSummary(entrypoint: string, exits: readonly WorkerExit[], reason: string): string {
  const ordered = rootCauseOrder(exits);
  const width = 72;
  const bar = '='.repeat(width);
  const lines: string[] = [bar, `${entrypoint} FAILED: ${reason}`, '-'.repeat(width)];
  const block = (e: WorkerExit, idx: number): string[] => {
    const out = [
      `[${idx}]:`,
      `  time       : ${new Date(e.timestampMs).toISOString()}`,
      `  host       : ${e.host}`,
      `  rank       : ${e.globalRank} (local_rank: ${e.localRank})`,
      `  exitcode   : ${describeExit(e)}`,
      `  error_file : ${e.errorFile ?? '<N/A>'}`,
    ];
    if (e.errorMessage) out.push(`  message    : ${e.errorMessage.split('\n').join('\n               ')}`);
    if (e.stderrTail.length > 0) {
      out.push('  last stderr lines:');
      for (const l of e.stderrTail.slice(-10)) out.push(`    | ${l}`);
    }
    return out;
  };
  const [root, ...others] = ordered;
  lines.push('Failures:');
  if (others.length === 0) lines.push('  <NO_OTHER_FAILURES>');
  others.forEach((e, i) => lines.push(...block(e, i + 1).map((l) => `  ${l}`)));
  lines.push('-'.repeat(width), 'Root Cause (first observed failure):');
  if (root) lines.push(...block(root, 0).map((l) => `  ${l}`));
  else lines.push('  <no worker failure recorded>');
  lines.push(bar);
  return lines.join('\n');
}
