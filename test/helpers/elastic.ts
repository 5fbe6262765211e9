// Helpers for multi-node agent tests: start agents against one etcd job, read worker start events, clean up.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { startTensile, waitFor, isAlive, type TensileProcess } from './cli.js';
import { startEtcd, type EtcdServer } from './etcd.js';

export const LIVE_WORKER = new URL('../fixtures/workers/live-worker.mjs', import.meta.url).pathname;
export const ELASTIC_WORKER = new URL('../fixtures/workers/elastic-loop.mjs', import.meta.url).pathname;

export interface WorkerEvent {
  node: string;
  round: number;
  rank: number;
  groupRank: number;
  world: number;
  groupWorld: number;
  restart: number;
  pid: number;
  resumeFrom: number;
}

/** The JSON lines a fixture worker appended to `<out>/events` (elastic-loop.mjs: WorkerEvent; live-worker.mjs: its own). */
export function readEvents<T = WorkerEvent>(out: string): T[] {
  const f = join(out, 'events');
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as T);
}

/** Waits until some round has `world` workers started, all in that round; returns that round's events. */
export async function waitForRound(
  out: string,
  world: number,
  what: string,
  timeoutMs = 30_000,
  minRound = 0,
): Promise<WorkerEvent[]> {
  let found: WorkerEvent[] = [];
  await waitFor(
    () => {
      const byRound = new Map<number, WorkerEvent[]>();
      for (const e of readEvents(out)) {
        if (e.round < minRound || e.world !== world) continue;
        byRound.set(e.round, [...(byRound.get(e.round) ?? []), e]);
      }
      for (const [, evs] of [...byRound].sort((a, b) => b[0] - a[0])) {
        if (evs.length >= world) {
          found = evs;
          return true;
        }
      }
      return false;
    },
    what,
    timeoutMs,
  );
  return found;
}

export interface AgentOptions {
  readonly endpoint: string;
  readonly runId: string;
  readonly out: string;
  readonly nnodes: string;
  readonly nproc?: number;
  readonly extra?: readonly string[];
  readonly rdzvConf?: string;
  readonly script?: string;
  readonly scriptArgs?: readonly string[];
  readonly env?: Record<string, string>;
  readonly timeoutMs?: number;
  readonly localAddr?: string;
  readonly wrap?: readonly string[];
}

export function startAgent(o: AgentOptions): TensileProcess {
  return startTensile(
    [
      'run',
      '--nnodes',
      o.nnodes,
      '--nproc-per-node',
      String(o.nproc ?? 1),
      '--rdzv-backend',
      'etcd',
      '--rdzv-endpoint',
      o.endpoint,
      '--rdzv-id',
      o.runId,
      '--rdzv-conf',
      o.rdzvConf ?? 'last_call_timeout=0.5,join_timeout=30,lease_ttl=1',
      '--local-addr',
      o.localAddr ?? '127.0.0.1',
      '--shutdown-timeout',
      '3',
      '--log-format',
      'json',
      ...(o.extra ?? []),
      o.script ?? ELASTIC_WORKER,
      ...(o.scriptArgs ?? []),
    ],
    { env: { OUT_DIR: o.out, ...o.env }, timeoutMs: o.timeoutMs ?? 90_000, wrap: o.wrap },
  );
}

export function workerPids(out: string): number[] {
  const f = join(out, 'pids');
  return existsSync(f) ? readFileSync(f, 'utf8').split('\n').filter(Boolean).map(Number) : [];
}

/** Kills every agent (and its process group) and every worker pid recorded; asserts nothing is left. */
export async function cleanupAgents(agents: readonly TensileProcess[], outs: readonly string[]): Promise<number[]> {
  for (const a of agents) a.kill('SIGKILL');
  await Promise.all(agents.map((a) => a.result));
  const pids = outs.flatMap(workerPids);
  try {
    await waitFor(() => pids.every((p) => !isAlive(p)), 'workers to be reaped', 10_000);
  } catch {
    // reported by the caller
  }
  const left = pids.filter(isAlive);
  for (const p of left) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // gone
    }
  }
  return left;
}

/**
 * One etcd for the file (started in `before`, stopped in `after`) and what its tests start: every agent passed to
 * `keep` is killed, with its workers, and every dir made by `outDir` removed in `after`, even when a test failed.
 */
export function agentsOnEtcd(): {
  etcd(): EtcdServer;
  outDir(prefix: string): string;
  keep(a: TensileProcess): TensileProcess;
} {
  let etcd: EtcdServer | undefined;
  const agents: TensileProcess[] = [];
  const outs: string[] = [];
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await cleanupAgents(agents, outs);
    await etcd?.stop();
    for (const o of outs) rmSync(o, { recursive: true, force: true });
  });
  return {
    etcd: () => etcd!,
    outDir(prefix) {
      const out = mkdtempSync(join(tmpdir(), prefix));
      outs.push(out);
      return out;
    },
    keep(a) {
      agents.push(a);
      return a;
    },
  };
}

/**
 * agentsOnEtcd for live jobs: `job(prefix, runId)` makes an output dir and returns a `start()` that launches one more
 * live agent (LIVE_WORKER, 1 to 2 nodes, no restarts) of that job.
 */
export function liveJobsOnEtcd(): {
  endpoint(): string;
  job(prefix: string, runId: string): { out: string; start(): TensileProcess };
} {
  const files = agentsOnEtcd();
  const endpoint = (): string => files.etcd().endpoint;
  return {
    endpoint,
    job(prefix, runId) {
      const out = files.outDir(prefix);
      const start = (): TensileProcess =>
        files.keep(
          startAgent({
            endpoint: endpoint(),
            runId,
            out,
            nnodes: '1:2',
            script: LIVE_WORKER,
            extra: ['--max-restarts', '0'],
          }),
        );
      return { out, start };
    },
  };
}
