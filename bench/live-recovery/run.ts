// bench/live-recovery: live recovery against the restart path and torchrun, with the main job
// (dist/examples/train/train.js --small) as the worker. Every fault is injected by the job's own --chaos (once per
// run), which leaves a marker file in the checkpoint directory: its mtime is the moment of the fault. "Training
// again" is the time the surviving agent logs its recovery record (every local worker ready in the new round, or
// on the restart path every restarted worker ready after reloading its checkpoint). Steps lost are the agent's.
//
// Figures (one run of each, side by side, repeated --repeats N times, default 1; medians):
//   worker_crash_to_training_again   1 node × 2 workers, rank 1 SIGKILLs itself: live vs --recovery restart
//   worker_crash_steps_lost          same runs: live (target 0), and the restart path's beside it
//   worker_hang_to_training_again    1 node × 2 workers, rank 1 SIGSTOPs itself; the default hang timeout
//                                    (max(10 s, 5 × median step)): live vs --recovery restart (DESIGN: ≤ 12 s)
//   node_loss_live_to_training_again 2 agents × 1 worker on etcd, rank 1 SIGKILLs its agent and itself:
//                                    live vs torchrun etcd-v2 (bench/node-loss's run, PyTorch gloo workers)
//   node_loss_live_vs_restart        same fault: live vs --recovery restart
//   node_loss_steps_lost             same runs
//   node_rejoin_to_full_size         2 agents × 1 worker on etcd (live), rank 1 SIGKILLs its agent and itself, the
//                                    survivor trains on alone, then a new agent is started: from its start to training
//                                    at full size again (the survivor's recovery record for the new round of two and
//                                    the joiner's worker line "state from rank 0 (… MB in … ms)", the later of both).
//                                    No peer runs this (torchrun restarts every worker): absolute target ≤ 1.5 s.
//   state_copy_bandwidth             same runs: the joiner's received state bytes / its receive time (information)
// Live worker faults run with --standby-workers N (default 1: a warm standby takes the failed rank; 0 compares
// against starting a fresh process). --only-worker-faults skips the node-loss and rejoin runs (and torchrun).
// Usage: npm run build && node --import tsx bench/live-recovery/run.ts [--repeats N] [--only-rejoin]
//        [--standby-workers N] [--only-worker-faults]
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeLossOnce } from '../node-loss/run.js';
import {
  absoluteFigure,
  CLI,
  figure,
  killHard,
  median,
  repeatsFromArgv,
  ROOT,
  startBenchEtcd,
  until,
  type BenchEtcd,
} from '../lib/figures.js';

const TRAIN = join(ROOT, 'dist/examples/train/train.js');
const REPEATS = repeatsFromArgv(1);
const STANDBY_WORKERS = standbyFromArgv(1);
const ONLY_WORKER_FAULTS = process.argv.includes('--only-worker-faults');

function standbyFromArgv(fallback: number): number {
  const i = process.argv.indexOf('--standby-workers');
  if (i < 0) return fallback;
  const v = process.argv[i + 1];
  if (v === undefined || !/^\d+$/.test(v)) {
    throw new Error(`--standby-workers ${v === undefined ? '(missing)' : JSON.stringify(v)}: expected an integer ≥ 0`);
  }
  return Number(v);
}
const RUN_TIMEOUT_MS = 240_000;

type Mode = 'live' | 'restart';

interface Measured {
  /** Seconds from the fault to training again. */
  readonly seconds: number;
  readonly stepsLost: number;
}

interface Agent {
  readonly child: ChildProcess;
  readonly done: Promise<{ code: number | null; stderr: string }>;
  /** Everything the agent wrote so far (its JSON log, the workers' stderr), and its workers' stdout lines with when they arrived. */
  readonly stderr: () => string;
  readonly stdoutLines: { readonly atMs: number; readonly line: string }[];
}

function startAgent(args: readonly string[], chaos: string, dir: string, trainArgs: readonly string[] = []): Agent {
  const child = spawn(
    process.execPath,
    [
      CLI,
      'run',
      '--log-format',
      'json',
      '--checkpoint-dir',
      dir,
      ...args,
      TRAIN,
      '--small',
      '--chaos',
      chaos,
      ...trainArgs,
    ],
    { env: { ...process.env, OMP_NUM_THREADS: '1' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const stdoutLines: { atMs: number; line: string }[] = [];
  let rest = '';
  child.stdout?.on('data', (d: Buffer) => {
    const parts = (rest + d.toString()).split('\n');
    rest = parts.pop() ?? '';
    const atMs = Date.now();
    for (const line of parts) stdoutLines.push({ atMs, line });
  });
  const timer = setTimeout(() => child.pid && killHard(child.pid), RUN_TIMEOUT_MS);
  const done = new Promise<{ code: number | null; stderr: string }>((resolve) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    }),
  );
  return { child, done, stderr: () => stderr, stdoutLines };
}

interface AgentRecovery {
  readonly time: number;
  readonly round: number;
  readonly path: string;
  readonly cause: string;
}

/** The agent's recovery records in its JSON log (not the workers' `ready`, which carries recoveryMs too). */
function recoveriesIn(stderr: string): AgentRecovery[] {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('{') && l.includes('"recoveryMs"') && l.includes('"path"'))
    .map((l) => JSON.parse(l) as AgentRecovery);
}

/** The fault's time (the chaos marker's mtime) and the first recovery record logged after it. */
function measure(dir: string, stderrs: readonly string[], what: string): Measured {
  const marker = readdirSync(dir).find((f) => f.startsWith('.chaos-'));
  if (!marker) throw new Error(`${what}: no chaos marker in ${dir}: the fault was not injected`);
  const faultMs = statSync(join(dir, marker)).mtimeMs;
  for (const stderr of stderrs) {
    for (const line of stderr.split('\n')) {
      // The agent's recovery record (not a worker's `ready`, which carries recoveryMs too).
      if (!line.includes('"recoveryMs"') || !line.includes('"path"')) continue;
      const rec = JSON.parse(line) as { time: number; stepsLost: number | null; path: string };
      return { seconds: (rec.time - faultMs) / 1000, stepsLost: rec.stepsLost ?? NaN };
    }
  }
  throw new Error(`${what}: no agent logged a recovery:\n${stderrs.map((s) => s.slice(-2000)).join('\n---\n')}`);
}

async function workerFault(mode: Mode, chaos: string): Promise<Measured> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-live-crash-'));
  try {
    const a = startAgent(
      [
        '--standalone',
        '--nproc-per-node',
        '2',
        '--max-restarts',
        '3',
        '--recovery',
        mode,
        ...(mode === 'live' ? ['--standby-workers', String(STANDBY_WORKERS)] : []),
      ],
      chaos,
      dir,
    );
    const res = await a.done;
    if (res.code !== 0) throw new Error(`${chaos} (${mode}): agent exit ${res.code}\n${res.stderr.slice(-3000)}`);
    return measure(dir, [res.stderr], `${chaos} (${mode})`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function nodeLoss(mode: Mode, etcd: BenchEtcd, i: number): Promise<Measured> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-live-node-'));
  const agents: Agent[] = [];
  try {
    for (let n = 0; n < 2; n++) {
      agents.push(startAgent(nodeArgs(etcd, `live-${mode}-${process.pid}-${i}`, mode), '1:60:node', dir));
    }
    const results = await Promise.all(agents.map((a) => a.done));
    if (!results.some((r) => r.code === 0))
      throw new Error(
        `node loss (${mode}): no agent finished\n${results.map((r) => r.stderr.slice(-2000)).join('\n')}`,
      );
    return measure(
      dir,
      results.map((r) => r.stderr),
      `node loss (${mode})`,
    );
  } finally {
    for (const a of agents) if (a.child.pid) killHard(a.child.pid);
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Rejoin {
  /** Seconds from starting the new agent to training at full size. */
  readonly seconds: number;
  /** Bytes of state the joiner received, and how long its receive took. */
  readonly bytes: number;
  readonly transferMs: number;
}

function nodeArgs(etcd: BenchEtcd, runId: string, mode: Mode): string[] {
  return [
    '--nnodes',
    '1:2',
    '--nproc-per-node',
    '1',
    '--max-restarts',
    '3',
    '--rdzv-backend',
    'etcd',
    '--rdzv-endpoint',
    etcd.endpoint,
    '--rdzv-id',
    runId,
    '--local-addr',
    '127.0.0.1',
    '--recovery',
    mode,
  ];
}

const STATE_FROM_PEER = /state from rank \d+ \(([\d.]+) MB in ([\d.]+) ms\)/;

async function nodeRejoin(etcd: BenchEtcd, i: number): Promise<Rejoin> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-live-rejoin-'));
  const args = nodeArgs(etcd, `rejoin-${process.pid}-${i}`, 'live');
  // Enough epochs that the survivor is still training when the joiner arrives (the run is stopped once measured).
  const trainArgs = ['--epochs', '200'];
  const agents: Agent[] = [];
  try {
    for (let n = 0; n < 2; n++) agents.push(startAgent(args, '1:60:node', dir, trainArgs));
    let survivor: Agent | null = null;
    await until(
      () => (survivor = agents.find((a) => recoveriesIn(a.stderr()).length > 0) ?? null) !== null,
      'node rejoin: the survivor recovering from the node loss',
      RUN_TIMEOUT_MS,
    );
    const s = survivor as unknown as Agent;
    const lossRound = Math.max(...recoveriesIn(s.stderr()).map((r) => r.round));
    const joinedAtMs = Date.now();
    const joiner = startAgent(args, '1:60:node', dir, trainArgs);
    agents.push(joiner);
    await until(
      () =>
        recoveriesIn(s.stderr()).some((r) => r.round > lossRound) &&
        joiner.stdoutLines.some((l) => STATE_FROM_PEER.test(l.line)),
      'node rejoin: the survivor and the joiner training together',
      RUN_TIMEOUT_MS,
    );
    const back = recoveriesIn(s.stderr()).find((r) => r.round > lossRound) as AgentRecovery;
    const line = joiner.stdoutLines.find((l) => STATE_FROM_PEER.test(l.line))!;
    const m = STATE_FROM_PEER.exec(line.line)!;
    const fullSizeAtMs = Math.max(back.time, line.atMs);
    return { seconds: (fullSizeAtMs - joinedAtMs) / 1000, bytes: Number(m[1]) * 1e6, transferMs: Number(m[2]) };
  } catch (err) {
    const logs = agents.map((a) => a.stderr().slice(-2000)).join('\n---\n');
    throw new Error(`${(err as Error).message}\n${logs}`, { cause: err });
  } finally {
    for (const a of agents) if (a.child.pid) killHard(a.child.pid);
    await Promise.all(agents.map((a) => a.done));
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (!existsSync(CLI) || !existsSync(TRAIN)) throw new Error(`run npm run build first (${CLI}, ${TRAIN})`);
  const crash: Record<Mode, Measured[]> = { live: [], restart: [] };
  const hang: Record<Mode, Measured[]> = { live: [], restart: [] };
  const node: Record<Mode, Measured[]> = { live: [], restart: [] };
  const torchrun: number[] = [];
  const rejoin: Rejoin[] = [];
  const only = process.argv.includes('--only-rejoin');
  for (let i = 0; i < REPEATS && only; i++) {
    const etcd = await startBenchEtcd(false);
    try {
      rejoin.push(await nodeRejoin(etcd, i));
    } finally {
      await etcd.stop();
    }
  }
  for (let i = 0; i < REPEATS && !only; i++) {
    for (const mode of ['restart', 'live'] as const) crash[mode].push(await workerFault(mode, '1:60:kill'));
    for (const mode of ['restart', 'live'] as const) hang[mode].push(await workerFault(mode, '1:60:stop'));
    if (ONLY_WORKER_FAULTS) continue;
    const etcd = await startBenchEtcd(false);
    try {
      for (const mode of ['restart', 'live'] as const) node[mode].push(await nodeLoss(mode, etcd, i));
      rejoin.push(await nodeRejoin(etcd, i));
    } finally {
      await etcd.stop();
    }
    torchrun.push(await nodeLossOnce('torchrun', i));
  }
  const rejoinFigures = (): void => {
    absoluteFigure('node_rejoin_to_full_size', median(rejoin.map((r) => r.seconds)), 's', { op: '<=', value: 1.5 });
    const mbps = median(rejoin.map((r) => r.bytes / 1e6 / (r.transferMs / 1000)));
    absoluteFigure('state_copy_bandwidth', mbps, 'MB/s', undefined, 1);
  };
  if (only) return rejoinFigures();
  const secs = (ms: Measured[]): number => median(ms.map((m) => m.seconds));
  const lost = (ms: Measured[]): number => median(ms.map((m) => m.stepsLost));
  figure('worker_crash_to_training_again', secs(crash.live), secs(crash.restart), 's', '<=', 0.5);
  // Steps lost: live must lose none (an absolute target); the restart path's count is printed beside it.
  absoluteFigure('worker_crash_steps_lost', lost(crash.live), 'steps', { op: '<=', value: 0 }, 0);
  absoluteFigure('worker_crash_steps_lost_restart_path', lost(crash.restart), 'steps', undefined, 0);
  figure('worker_hang_to_training_again', secs(hang.live), secs(hang.restart), 's', '<=', 1);
  absoluteFigure('worker_hang_to_training_again_live', secs(hang.live), 's', { op: '<=', value: 12 });
  absoluteFigure('worker_hang_steps_lost', lost(hang.live), 'steps', { op: '<=', value: 0 }, 0);
  absoluteFigure('worker_hang_steps_lost_restart_path', lost(hang.restart), 'steps', undefined, 0);
  console.error(`# worker faults: live mode with --standby-workers ${STANDBY_WORKERS}`);
  if (ONLY_WORKER_FAULTS) return;
  figure('node_loss_live_to_training_again', secs(node.live), median(torchrun), 's', '<=', 0.03);
  figure('node_loss_live_vs_restart', secs(node.live), secs(node.restart), 's', '<=', 0.5);
  absoluteFigure('node_loss_steps_lost', lost(node.live), 'steps', { op: '<=', value: 0 }, 0);
  absoluteFigure('node_loss_steps_lost_restart_path', lost(node.restart), 'steps', undefined, 0);
  rejoinFigures();
}

main().catch((err: Error) => {
  console.error(`bench/live-recovery: ${err.message}`);
  process.exit(1);
});
