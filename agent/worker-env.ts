// The worker contract (DESIGN §2): torchrun's environment, the command line per runner, `${local_rank}`.

import { join } from 'node:path';
import type { RoundInfo } from '../rendezvous/api.js';
import { UsageError, type RunOptions, type StdMask, type StdSpec } from './api.js';
import type { WorkerSpec } from './worker-group.js';

export interface AttemptContext {
  readonly round: RoundInfo;
  readonly attempt: number;
  /** Directory of this attempt's files: `<runDir>/attempt_<attempt>`. */
  readonly attemptDir: string;
  readonly checkpointDir: string;
  readonly host: string;
  readonly nodeId: string;
  /** The control channel (live recovery, watchdog): each worker's socket path and the recovery mode. */
  readonly control?: { readonly socketPath: (localRank: number) => string; readonly recovery: 'live' | 'restart' };
}

function maskFor(spec: StdSpec, localRank: number): StdMask {
  return spec.perRank[localRank] ?? spec.all;
}

let tsxImport: string | null = null;
function tsxLoader(): string {
  if (tsxImport) return tsxImport;
  try {
    tsxImport = import.meta.resolve('tsx');
    return tsxImport;
  } catch {
    throw new UsageError(`running a .ts script needs the 'tsx' package (npm install tsx), or compile it to .js first`);
  }
}

/** The argv for one worker: interpreter (if any), script and arguments with `${local_rank}` substituted. */
export function workerArgv(
  opts: RunOptions,
  env: Readonly<Record<string, string | undefined>>,
  localRank: number,
): string[] {
  const args = opts.scriptArgs.map((a) => a.replaceAll('${local_rank}', String(localRank)));
  const python = env.PYTHON_EXEC && env.PYTHON_EXEC !== '' ? env.PYTHON_EXEC : 'python3';
  switch (opts.runner) {
    case 'python':
      return [python, '-u', opts.script, ...args];
    case 'python-module':
      return [python, '-u', '-m', opts.script, ...args];
    case 'node':
      return [process.execPath, opts.script, ...args];
    case 'node-ts':
      return [process.execPath, '--import', tsxLoader(), opts.script, ...args];
    case 'exec':
      return [opts.script, ...args];
  }
}

/** Global rank of this node's local rank 0: the sum of the local world sizes of lower group ranks. */
export function baseRank(round: RoundInfo): number {
  let base = 0;
  for (const m of round.members) if (m.groupRank < round.groupRank) base += m.localWorldSize;
  return base;
}

export function worldSize(round: RoundInfo): number {
  return round.members.reduce((sum, m) => sum + m.localWorldSize, 0);
}

export function buildWorkerSpecs(
  opts: RunOptions,
  ctx: AttemptContext,
  env: Readonly<Record<string, string | undefined>>,
): WorkerSpec[] {
  const { round } = ctx;
  const base = baseRank(round);
  const world = worldSize(round);
  const specs: WorkerSpec[] = [];
  const shared: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) shared[k] = v;
  if (shared.OMP_NUM_THREADS === undefined && opts.nprocPerNode > 1) shared.OMP_NUM_THREADS = '1';
  if (shared.TORCH_NCCL_ASYNC_ERROR_HANDLING === undefined) shared.TORCH_NCCL_ASYNC_ERROR_HANDLING = '1';

  for (let localRank = 0; localRank < opts.nprocPerNode; localRank++) {
    const rank = base + localRank;
    const logDir = join(ctx.attemptDir, String(localRank));
    const red = maskFor(opts.redirects, localRank);
    const tee = maskFor(opts.tee, localRank);
    const shown = opts.localRanksFilter === null || opts.localRanksFilter.includes(localRank);
    const errorFile = join(logDir, 'error.json');
    const workerEnv: Record<string, string> = {
      ...shared,
      LOCAL_RANK: String(localRank),
      RANK: String(rank),
      GROUP_RANK: String(round.groupRank),
      ROLE_RANK: String(rank),
      ROLE_NAME: opts.role,
      LOCAL_WORLD_SIZE: String(opts.nprocPerNode),
      WORLD_SIZE: String(world),
      GROUP_WORLD_SIZE: String(round.groupWorldSize),
      ROLE_WORLD_SIZE: String(world),
      MASTER_ADDR: round.master.addr,
      MASTER_PORT: String(round.master.port),
      TORCHELASTIC_RESTART_COUNT: String(round.failureRestarts),
      TORCHELASTIC_MAX_RESTARTS: String(opts.maxRestarts),
      TORCHELASTIC_RUN_ID: opts.rdzvId,
      TORCHELASTIC_USE_AGENT_STORE: 'False',
      TORCHELASTIC_ERROR_FILE: errorFile,
      TENSILE_ROUND: String(round.round),
      TENSILE_ATTEMPT: String(ctx.attempt),
      TENSILE_RDZV_ID: opts.rdzvId,
      TENSILE_RDZV_BACKEND: opts.rdzvBackend,
      TENSILE_NODE_ID: ctx.nodeId,
      TENSILE_HOST: ctx.host,
      TENSILE_CHECKPOINT_DIR: ctx.checkpointDir,
      TENSILE_LOG_DIR: logDir,
      ...(ctx.control ? controlEnv(opts, shared, ctx.control, localRank, logDir) : {}),
    };
    specs.push({
      localRank,
      globalRank: rank,
      argv: workerArgv(opts, env, localRank),
      env: workerEnv,
      logDir,
      fileStdout: (red & 1) !== 0 || (tee & 1) !== 0 || opts.logDir !== null,
      fileStderr: (red & 2) !== 0 || (tee & 2) !== 0 || opts.logDir !== null,
      consoleStdout: shown && (red & 1) === 0,
      consoleStderr: shown && (red & 2) === 0,
      errorFile,
    });
  }
  return specs;
}

/**
 * The control-channel variables, and what lets the hang watchdog take stacks: Node workers write a diagnostic
 * report into their log dir on SIGUSR2, Python workers dump their traceback to stderr on SIGABRT (faulthandler).
 */
function controlEnv(
  opts: RunOptions,
  shared: Readonly<Record<string, string>>,
  control: NonNullable<AttemptContext['control']>,
  localRank: number,
  logDir: string,
): Record<string, string> {
  const env: Record<string, string> = {
    TENSILE_CONTROL: control.socketPath(localRank),
    TENSILE_RECOVERY: control.recovery,
  };
  if (opts.runner === 'node' || opts.runner === 'node-ts') {
    const dir = logDir.includes(' ') ? `"${logDir}"` : logDir;
    const report = `--report-on-signal --report-signal=SIGUSR2 --report-directory=${dir}`;
    env.NODE_OPTIONS = shared.NODE_OPTIONS ? `${shared.NODE_OPTIONS} ${report}` : report;
  }
  if ((opts.runner === 'python' || opts.runner === 'python-module') && shared.PYTHONFAULTHANDLER === undefined) {
    env.PYTHONFAULTHANDLER = '1';
  }
  return env;
}
