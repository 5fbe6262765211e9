// Pure decisions of live recovery: live or restart path, the hang timeout, what a recovery cost.
// No timers, no I/O: the agent executes what these return (agent.ts), the control server reports the facts.

export type RecoveryMode = 'live' | 'restart';

/** What the agent knows of one local worker when a round changes or a worker fails. */
export interface WorkerView {
  readonly localRank: number;
  /** Connected and said hello with live: true. */
  readonly live: boolean;
  /** Its process is running. */
  readonly running: boolean;
  /** It exited non-zero on its own (not stopped by the agent). */
  readonly failed: boolean;
}

export type RecoveryPath =
  /** Keep the running workers; announce the new round; start the failed ones alone in it. */
  | { readonly kind: 'live'; readonly respawn: readonly number[] }
  /** Stop the whole local group and start it again (today's path; every worker reloads from disk). */
  | { readonly kind: 'restart'; readonly reason: string };

/**
 * Live when the mode allows it and every local worker that is still running is live, and every failed one was
 * live before it failed (its replacement is expected to speak the protocol too).
 */
export function recoveryPath(mode: RecoveryMode, workers: readonly WorkerView[]): RecoveryPath {
  if (mode === 'restart') return { kind: 'restart', reason: '--recovery restart' };
  const notLive = workers.filter((w) => !w.live && (w.running || w.failed));
  if (notLive.length > 0)
    return {
      kind: 'restart',
      reason: `local rank(s) ${notLive.map((w) => w.localRank).join(',')} did not declare live recovery`,
    };
  const gone = workers.filter((w) => !w.running && !w.failed);
  if (gone.length > 0)
    return { kind: 'restart', reason: `local rank(s) ${gone.map((w) => w.localRank).join(',')} already exited` };
  return { kind: 'live', respawn: workers.filter((w) => w.failed).map((w) => w.localRank) };
}

/** The watchdog never fires sooner than this, whatever the step time. */
export const MIN_HANG_TIMEOUT_MS = 10_000;
/** Default hang timeout as a multiple of the recent median step time. */
export const HANG_STEP_MULTIPLE = 5;

/**
 * The hang timeout for a worker: the --hang-timeout flag when given, else max(10 s, 5 × median of the recent step
 * times). `recentStepMs` may be empty (no step measured yet).
 */
export function hangTimeoutMs(flagMs: number | null, recentStepMs: readonly number[]): number {
  if (flagMs !== null) return flagMs;
  const med = median(recentStepMs);
  return Math.max(MIN_HANG_TIMEOUT_MS, med === null ? 0 : Math.ceil(HANG_STEP_MULTIPLE * med));
}

export function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/**
 * Steps lost by a recovery: the newest step any local worker reported before the event minus the step training
 * resumes from (ready.step on the live path, the first heartbeat after a restart). Null when either is unknown.
 */
export function stepsLost(lastStepBefore: number | null, resumedAt: number | null): number | null {
  if (lastStepBefore === null || resumedAt === null) return null;
  return Math.max(0, lastStepBefore - resumedAt);
}

/**
 * Goodput: productive time over wall time. Productive time is the wall time minus the time spent recovering and
 * minus the time it takes to redo the lost steps (steps lost × median step time).
 */
export function goodput(wallMs: number, recoveryMs: number, lostSteps: number, medianStepMs: number | null): number {
  if (wallMs <= 0) return 1;
  const redoMs = lostSteps * (medianStepMs ?? 0);
  return Math.min(1, Math.max(0, (wallMs - recoveryMs - redoMs) / wallMs));
}
