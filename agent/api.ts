// The agent's contract: its states, the options `tensile run` is parsed into, worker failures, and errors.

export type AgentState = 'INIT' | 'RENDEZVOUS' | 'RUNNING' | 'RESTARTING' | 'STOPPING' | 'SUCCEEDED' | 'FAILED';

/** Where a worker's stdout/stderr go: 0 none, 1 stdout, 2 stderr, 3 both (torchrun's Std). */
export type StdMask = 0 | 1 | 2 | 3;

/** A per-local-rank std setting: one value for every rank, or a map local rank → mask. */
export interface StdSpec {
  readonly all: StdMask;
  readonly perRank: Readonly<Record<number, StdMask>>;
}

export type RunnerKind = 'python' | 'python-module' | 'node' | 'node-ts' | 'exec';

export interface RunOptions {
  readonly nnodes: { readonly min: number; readonly max: number };
  readonly nprocPerNode: number;
  readonly standalone: boolean;
  readonly maxRestarts: number;
  readonly role: string;
  readonly rdzvBackend: 'embedded' | 'etcd';
  readonly rdzvEndpoint: string;
  readonly rdzvId: string;
  readonly rdzvConf: Readonly<Record<string, string>>;
  readonly masterAddr: string | null;
  readonly masterPort: number | null;
  readonly localAddr: string | null;
  readonly logDir: string | null;
  readonly redirects: StdSpec;
  readonly tee: StdSpec;
  readonly localRanksFilter: readonly number[] | null;
  readonly runner: RunnerKind;
  readonly script: string;
  readonly scriptArgs: readonly string[];
  readonly shutdownGraceMs: number;
  readonly metricsPort: number | null;
  readonly logFormat: 'pretty' | 'json';
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
  readonly checkpointDir: string | null;
  readonly statusLine: boolean;
  /** live: workers that declare it keep running across round changes; restart: always restart the group. */
  readonly recovery: 'live' | 'restart';
  /** --hang-timeout, or null for the default (max(10 s, 5 × the recent median step time)). */
  readonly hangTimeoutMs: number | null;
  /** --standby-workers: warm spare workers per node in live mode (0 or absent: none). */
  readonly standbyWorkers?: number;
}

/** One worker's end, as the agent observed it. */
export interface WorkerExit {
  readonly localRank: number;
  readonly globalRank: number;
  readonly pid: number;
  /** Exit code, or null when killed by a signal. */
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Epoch milliseconds when the exit was observed (or the error file's timestamp, when it has one). */
  readonly timestampMs: number;
  readonly host: string;
  readonly errorFile: string | null;
  /** Message from the worker's error file, when it wrote one. */
  readonly errorMessage: string | null;
  readonly stderrTail: readonly string[];
  /** True when the agent itself stopped this worker (SIGTERM/SIGKILL during a group stop). */
  readonly stoppedByAgent: boolean;
}

/**
 * The closed set of agent error codes (docs/errors.md). Bare words: the class names the subsystem.
 *   INVALID_ARGUMENT  bad flags, environment variables or script (exit 2)
 *   WORKERS_FAILED    a worker failed with no restart left
 *   RENDEZVOUS        the rendezvous ended the run (its RendezvousError is the cause)
 *   SIGNALLED         the agent was stopped by a signal
 *   INTERNAL          a bug in the agent
 */
export type AgentErrorCode = 'INVALID_ARGUMENT' | 'WORKERS_FAILED' | 'RENDEZVOUS' | 'SIGNALLED' | 'INTERNAL';

/** Every agent error ends the run: the agent's own retries (restarts, rounds) happen before one is thrown. */
export const AGENT_TERMINAL: Readonly<Record<AgentErrorCode, boolean>> = {
  INVALID_ARGUMENT: true,
  WORKERS_FAILED: true,
  RENDEZVOUS: true,
  SIGNALLED: true,
  INTERNAL: true,
};

export class AgentError extends Error {
  readonly code: AgentErrorCode;
  readonly terminal: boolean;
  /** Process exit status this error maps to: 2 for INVALID_ARGUMENT, 1 otherwise (unless given). */
  readonly exitCode: number;
  constructor(code: AgentErrorCode, message: string, opts: { exitCode?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'AgentError';
    this.code = code;
    this.terminal = AGENT_TERMINAL[code];
    this.exitCode = opts.exitCode ?? (code === 'INVALID_ARGUMENT' ? 2 : 1);
  }
}

/** Bad flags, environment variables or scripts: exit code 2 and a message quoting the value. */
export class UsageError extends AgentError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message, { exitCode: 2 });
    this.name = 'UsageError';
  }
}
