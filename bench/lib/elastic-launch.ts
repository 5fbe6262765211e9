// The command lines of an elastic job's node agent, for tensile and for torchrun side by side: one place for the
// flags the benchmarks share, each spelled the way its launcher takes it.
import { CLI } from './figures.js';

export interface ElasticLaunch {
  /** '--nnodes' as MIN:MAX. */
  nnodes: string;
  nprocPerNode: number;
  /** Omitted: the launcher's default. */
  maxRestarts?: number;
  endpoint: string;
  runId: string;
  /** '--rdzv-conf', e.g. 'last_call_timeout=1'; omitted when absent. */
  rdzvConf?: string;
  /** The worker script. */
  script: string;
}

/** `tensile run` with the etcd rendezvous, bound to loopback, logging warnings only. */
export function tensileAgentCommand(l: ElasticLaunch): [string, string[]] {
  const args = ['run', '--nnodes', l.nnodes, '--nproc-per-node', String(l.nprocPerNode)];
  if (l.maxRestarts !== undefined) args.push('--max-restarts', String(l.maxRestarts));
  args.push('--rdzv-backend', 'etcd', '--rdzv-endpoint', l.endpoint, '--rdzv-id', l.runId);
  if (l.rdzvConf !== undefined) args.push('--rdzv-conf', l.rdzvConf);
  args.push('--local-addr', '127.0.0.1', '--log-level', 'warn', l.script);
  return [process.execPath, [CLI, ...args]];
}

/** torchrun with `backend`, polling its workers every 0.1 s, worker output redirected and tee'd (-r 1 -t 1). */
export function torchrunAgentCommand(l: ElasticLaunch, backend: 'etcd-v2' | 'c10d'): [string, string[]] {
  const args = ['--nnodes', l.nnodes, '--nproc_per_node', String(l.nprocPerNode)];
  if (l.maxRestarts !== undefined) args.push('--max_restarts', String(l.maxRestarts));
  args.push('--rdzv_backend', backend, '--rdzv_endpoint', l.endpoint, '--rdzv_id', l.runId);
  if (l.rdzvConf !== undefined) args.push('--rdzv_conf', l.rdzvConf);
  args.push('--monitor_interval', '0.1', '-r', '1', '-t', '1', l.script);
  return ['/usr/bin/torchrun', args];
}
