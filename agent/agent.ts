// The elastic agent: INIT → RENDEZVOUS → RUNNING → (SUCCEEDED | FAILED | RESTARTING → RENDEZVOUS), plus STOPPING.
//
// Worker exits, rendezvous events and signals are all events raced in one place per attempt; nothing polls.
// Decisions come from restart-policy.ts; this file executes them.

import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { hostname as osHostname, tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import type { Logger } from '../common/logger.js';
import { freePortPair } from '../common/free-port.js';
import type { NodeDescriptor, RendezvousEvent, RendezvousHandler, RoundInfo } from '../rendezvous/api.js';
import { RendezvousError } from '../rendezvous/api.js';
import { AgentError, type AgentState, type RunOptions, type WorkerExit } from './api.js';
import type { AgentConsole } from './console.js';
import { formatFailureSummary, rootCauseOrder } from './failure-summary.js';
import type { AgentMetrics } from './metrics.js';
import { Reaper, type ReaperHandle } from './reaper.js';
import {
  budgetExhausted,
  onGroupEnd,
  onLocalFailure,
  onRendezvousEvent,
  type PolicySnapshot,
} from './restart-policy.js';
import { buildWorkerSpecs, worldSize } from './worker-env.js';
import { WorkerGroup, type WorkerGroupFactory, type WorkerGroupHandle } from './worker-group.js';

export type RendezvousFactory = (self: NodeDescriptor) => Promise<RendezvousHandler>;

export interface AgentDeps {
  readonly logger: Logger;
  readonly console: AgentConsole;
  readonly metrics: AgentMetrics;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly rendezvous: RendezvousFactory;
  readonly host?: string;
  /** Observes every state transition, in order (tests assert the exact sequence). */
  readonly onState?: (state: AgentState) => void;
  /** Builds each attempt's worker group (default: real processes). The seam for unit tests. */
  readonly workerGroup?: WorkerGroupFactory;
  /** Starts the orphan reaper (default: the real one). The seam for unit tests. */
  readonly reaper?: () => ReaperHandle;
}

export interface AgentResult {
  readonly exitCode: number;
  readonly state: AgentState;
  readonly failures: readonly WorkerExit[];
  readonly rounds: number;
}

type AttemptEnd =
  | { kind: 'group'; outcome: 'succeeded' | 'failed' }
  | { kind: 'rejoin'; reason: string }
  | { kind: 'signal'; signal: NodeJS.Signals }
  | { kind: 'rendezvous-error'; error: Error };

const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129, SIGQUIT: 131 };

/** The directories of one `tensile run`. */
interface RunDirs {
  /** --log-dir, or a private temporary directory when none was given. */
  readonly runDir: string;
  /** True when runDir is the temporary one this agent made (it removes it unless something worth keeping is in it). */
  readonly owned: boolean;
  readonly checkpointDir: string;
}

/** What one pass of the loop decided: run another round, or the run's result. */
type Step = { readonly kind: 'next-round' } | { readonly kind: 'done'; readonly result: AgentResult };
const NEXT_ROUND: Step = { kind: 'next-round' };

export class ElasticAgent {
  private state: AgentState = 'INIT';
  private readonly host: string;
  private readonly nodeId: string;
  private stopSignal: NodeJS.Signals | null = null;
  private wake: ((end: AttemptEnd) => void) | null = null;
  private currentGroup: WorkerGroupHandle | null = null;
  private readonly abort = new AbortController();
  private jobClosed = false;
  private roundNo = -1;
  private restartsUsed = 0;
  private scaleUpPolicy: 'immediate' | 'deferred' = 'immediate';
  private attempt = 0;
  private readonly allFailures: WorkerExit[] = [];

  constructor(
    private readonly opts: RunOptions,
    private readonly deps: AgentDeps,
  ) {
    this.host = deps.host ?? osHostname();
    this.nodeId = `${this.host}-${process.pid}-${randomBytes(3).toString('hex')}`;
  }

  get currentState(): AgentState {
    return this.state;
  }

  /** SIGINT/SIGTERM/...: forward to workers, give them the grace period, leave the rendezvous, exit 128+n. */
  requestStop(signal: NodeJS.Signals): void {
    if (this.stopSignal) {
      // A second signal: stop waiting for the grace period.
      this.currentGroup?.signal('SIGKILL');
      return;
    }
    this.stopSignal = signal;
    this.abort.abort(new AgentError('SIGNALLED', `received ${signal}`));
    this.wake?.({ kind: 'signal', signal });
  }

  /** Runs the job until the workers succeed, restarts run out, a signal stops it, or the rendezvous fails. */
  async run(): Promise<AgentResult> {
    this.transition('INIT');
    const dirs = this.prepareRunDirs();
    const reaper = this.deps.reaper ? this.deps.reaper() : new Reaper();
    let handler: RendezvousHandler | null = null;
    let unwatch: () => void = () => {};
    let result: AgentResult | null = null;
    try {
      handler = await this.deps.rendezvous(await this.describeSelf());
      this.scaleUpPolicy = handler.config.scaleUpPolicy;
      const h = handler;
      unwatch = handler.watch((ev) => this.onEvent(ev, h));
      for (;;) {
        const step = await this.runRound(handler, dirs, reaper);
        if (step.kind === 'done') {
          result = step.result;
          break;
        }
      }
    } catch (err) {
      result = await this.failWith(err);
    } finally {
      unwatch();
      if (handler) {
        await handler.leave().catch(() => {});
        await handler.close().catch(() => {});
      }
      reaper.dispose();
      this.cleanUpRunDirs(dirs, result);
    }
    return result;
  }

  /** One pass: join a round, run the workers in it, decide what their end means. */
  private async runRound(handler: RendezvousHandler, dirs: RunDirs, reaper: ReaperHandle): Promise<Step> {
    if (this.stopSignal) return this.finishSignalled(handler);
    this.transition('RENDEZVOUS');
    let round: RoundInfo;
    try {
      round = await handler.next({ signal: this.abort.signal });
    } catch (err) {
      if (this.stopSignal) return this.finishSignalled(handler);
      throw err;
    }
    this.enterRound(round);
    const { group, ended } = this.startWorkers(round, dirs, reaper);
    if (this.stopSignal) this.wake?.({ kind: 'signal', signal: this.stopSignal });
    const end = await Promise.race([
      group.outcome.then((o): AttemptEnd => ({ kind: 'group', outcome: o.kind })),
      ended,
    ]);
    if (end.kind !== 'group' || end.outcome === 'succeeded') this.wake = null;
    switch (end.kind) {
      case 'signal':
        return this.finishSignalled(handler);
      case 'rendezvous-error':
        throw end.error;
      case 'rejoin':
        this.transition('RESTARTING');
        this.deps.logger.warn(
          { round: round.round, reason: end.reason },
          'round ended by the rendezvous; restarting workers',
        );
        await group.stop(this.opts.shutdownGraceMs);
        this.deps.metrics.restart('membership');
        return NEXT_ROUND;
      case 'group':
        return end.outcome === 'succeeded'
          ? this.succeed(handler, round, group)
          : this.onWorkersFailed(handler, round, group, ended);
    }
  }

  /** Records the new round; throws when the job as a whole has used up its restarts. */
  private enterRound(round: RoundInfo): void {
    const { opts, deps } = this;
    this.roundNo = round.round;
    this.restartsUsed = round.failureRestarts;
    if (budgetExhausted({ restartsUsed: round.failureRestarts, maxRestarts: opts.maxRestarts })) {
      throw new AgentError(
        'WORKERS_FAILED',
        `the job used ${round.failureRestarts} failure restarts, more than --max-restarts ${opts.maxRestarts}: giving up`,
      );
    }
    const world = worldSize(round);
    deps.metrics.round(round.round, world);
    deps.logger.info(
      { round: round.round, groupRank: round.groupRank, groupWorldSize: round.groupWorldSize, worldSize: world },
      'rendezvous complete',
    );
  }

  /** Starts the round's local workers (state RUNNING); `ended` resolves when an event or signal ends the attempt. */
  private startWorkers(
    round: RoundInfo,
    dirs: RunDirs,
    reaper: ReaperHandle,
  ): { group: WorkerGroupHandle; ended: Promise<AttemptEnd> } {
    const { opts, deps } = this;
    const attemptDir = join(dirs.runDir, `attempt_${this.attempt}`);
    rmSync(attemptDir, { recursive: true, force: true });
    const specs = buildWorkerSpecs(
      opts,
      {
        round,
        attempt: this.attempt,
        attemptDir,
        checkpointDir: dirs.checkpointDir,
        host: this.host,
        nodeId: this.nodeId,
      },
      deps.env,
    );
    this.attempt++;
    const makeGroup: WorkerGroupFactory = deps.workerGroup ?? ((...args) => new WorkerGroup(...args));
    const group = makeGroup(specs, this.host, reaper, deps.console, (exit) => {
      if (exit.exitCode !== 0 && !exit.stoppedByAgent) deps.metrics.workerFailed();
      deps.metrics.workersRunning(this.currentGroup?.runningCount ?? 0);
      deps.console.update({ workersUp: this.currentGroup?.runningCount ?? 0 });
    });
    this.currentGroup = group;
    const ended = new Promise<AttemptEnd>((resolveEnd) => {
      this.wake = resolveEnd;
    });
    group.start();
    deps.metrics.workerStarted(specs.length);
    deps.metrics.workersRunning(group.runningCount);
    this.transition('RUNNING');
    deps.console.update({
      workersUp: group.runningCount,
      workersTotal: specs.length,
      restartsUsed: round.failureRestarts,
      maxRestarts: opts.maxRestarts,
      round: round.round,
      worldSize: worldSize(round),
    });
    deps.logger.info({ pids: group.pids, ranks: specs.map((s) => s.globalRank), attemptDir }, 'workers started');
    return { group, ended };
  }

  private async succeed(handler: RendezvousHandler, round: RoundInfo, group: WorkerGroupHandle): Promise<Step> {
    await group.waitAll();
    await handler
      .markClosed()
      .catch((err: Error) => this.deps.logger.warn({ err: err.message }, 'could not mark the job closed'));
    this.transition('SUCCEEDED');
    this.deps.logger.info({ round: round.round }, 'all workers succeeded');
    return {
      kind: 'done',
      result: { exitCode: 0, state: 'SUCCEEDED', failures: this.allFailures, rounds: round.round + 1 },
    };
  }

  /** A local worker failed: stop the rest, then (after a membership verdict, if the policy asks) restart or give up. */
  private async onWorkersFailed(
    handler: RendezvousHandler,
    round: RoundInfo,
    group: WorkerGroupHandle,
    ended: Promise<AttemptEnd>,
  ): Promise<Step> {
    const { opts, deps } = this;
    const decision = onGroupEnd(this.snapshot(), 'failed');
    await group.stop(opts.shutdownGraceMs);
    const localFailures = group.observedExits.filter((e) => e.exitCode !== 0 && !e.stoppedByAgent);
    const failure = onLocalFailure({ groupWorldSize: round.groupWorldSize, leaseTtlMs: handler.config.leaseTtlMs });
    if (failure.kind === 'await-membership-verdict') {
      const verdict = await this.awaitMembershipVerdict(ended, failure.waitMs);
      this.wake = null;
      if (verdict?.kind === 'signal') return this.finishSignalled(handler);
      if (verdict?.kind === 'rendezvous-error') throw verdict.error;
      if (verdict?.kind === 'rejoin') {
        this.transition('RESTARTING');
        deps.logger.warn(
          { round: round.round, reason: verdict.reason, ranks: localFailures.map((e) => e.globalRank) },
          'workers failed while the round ended elsewhere; restarting them in the next round',
        );
        deps.metrics.restart('membership');
        return NEXT_ROUND;
      }
    }
    this.wake = null;
    this.allFailures.push(...localFailures);
    // The root cause of this round's failure: the first by time, as the failure summary orders them.
    const root = rootCauseOrder(localFailures)[0];
    if (decision.kind === 'restart') {
      this.transition('RESTARTING');
      deps.logger.warn(
        { rank: root?.globalRank, exitCode: root?.exitCode, signal: root?.signal, restart: decision.restartsUsed },
        `worker failed; restarting the group (restart ${decision.restartsUsed}/${opts.maxRestarts})`,
      );
      deps.metrics.restart('failure');
      await handler.endRound({ reason: 'failure', detail: root ? `rank ${root.globalRank} failed` : undefined });
      return NEXT_ROUND;
    }
    const reason = decision.kind === 'fail' ? decision.reason : 'a worker failed';
    await handler.endRound({ reason: 'failure', detail: 'restarts exhausted' }).catch(() => {});
    this.transition('FAILED');
    deps.console.message(formatFailureSummary(this.entrypoint(), this.allFailures, reason));
    return {
      kind: 'done',
      result: { exitCode: 1, state: 'FAILED', failures: this.allFailures, rounds: round.round + 1 },
    };
  }

  /** An error out of the loop: the agent fails, its workers are stopped, the summary printed. */
  private async failWith(err: unknown): Promise<AgentResult> {
    const { opts, deps } = this;
    if (this.state !== 'FAILED') this.transition('FAILED');
    const e = err as Error;
    const message =
      err instanceof RendezvousError || err instanceof AgentError
        ? e.message
        : `unexpected error: ${e.stack ?? e.message}`;
    deps.console.message(`tensile: ${message}`);
    if (this.allFailures.length > 0)
      deps.console.message(formatFailureSummary(this.entrypoint(), this.allFailures, message));
    await this.currentGroup?.stop(Math.min(opts.shutdownGraceMs, 5000));
    return {
      exitCode: err instanceof AgentError ? err.exitCode : 1,
      state: 'FAILED',
      failures: this.allFailures,
      rounds: this.roundNo + 1,
    };
  }

  private async describeSelf(): Promise<NodeDescriptor> {
    const { opts } = this;
    const addr = opts.localAddr ?? (opts.nnodes.max === 1 ? (opts.masterAddr ?? '127.0.0.1') : this.host);
    return {
      nodeId: this.nodeId,
      host: this.host,
      addr,
      masterPort: opts.masterPort ?? (await freePortPair()),
      localWorldSize: opts.nprocPerNode,
    };
  }

  private prepareRunDirs(): RunDirs {
    const { opts, deps } = this;
    const owned = opts.logDir === null;
    const runDir = opts.logDir
      ? resolve(opts.logDir)
      : mkdtempSync(join(tmpdir(), `tensile-${opts.rdzvId.slice(0, 12)}-`));
    mkdirSync(runDir, { recursive: true });
    const checkpointDir = opts.checkpointDir ? resolve(opts.checkpointDir) : join(runDir, 'checkpoints');
    if (opts.nprocPerNode > 1 && deps.env.OMP_NUM_THREADS === undefined) {
      deps.console.message(
        `tensile: OMP_NUM_THREADS is not set; setting it to 1 for each of the ${opts.nprocPerNode} workers to avoid ` +
          'oversubscribing the CPU. Tune it for best performance.',
      );
    }
    return { runDir, owned, checkpointDir };
  }

  /**
   * A temporary run directory goes away after a successful run, unless the workers wrote checkpoints into its
   * default checkpoint directory: nothing the user asked for is deleted silently, and the last line says where.
   */
  private cleanUpRunDirs(dirs: RunDirs, result: AgentResult | null): void {
    if (!dirs.owned) return;
    const checkpointsInside = !relative(dirs.runDir, dirs.checkpointDir).startsWith('..');
    const wroteCheckpoints = checkpointsInside && !isEmptyDir(dirs.checkpointDir);
    if (result?.state === 'SUCCEEDED' || (this.attempt === 0 && !wroteCheckpoints)) {
      if (!wroteCheckpoints) {
        rmSync(dirs.runDir, { recursive: true, force: true });
        return;
      }
      for (const name of readdirSync(dirs.runDir)) {
        if (name.startsWith('attempt_')) rmSync(join(dirs.runDir, name), { recursive: true, force: true });
      }
      this.deps.console.message(`tensile: checkpoints kept in ${dirs.checkpointDir}`);
      return;
    }
    if (result) this.deps.console.message(`tensile: worker logs kept in ${dirs.runDir}`);
  }

  /** Waits up to `ms` for the rendezvous (or a signal) to end the attempt; null when nothing came. */
  private async awaitMembershipVerdict(ended: Promise<AttemptEnd>, ms: number): Promise<AttemptEnd | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolveTimeout) => {
      timer = setTimeout(() => resolveTimeout(null), ms);
    });
    try {
      return await Promise.race([ended, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async finishSignalled(handler: RendezvousHandler): Promise<Step> {
    const sig = this.stopSignal as NodeJS.Signals;
    this.transition('STOPPING');
    this.deps.logger.warn({ signal: sig, graceMs: this.opts.shutdownGraceMs }, 'stopping workers');
    // Forward the same signal first (workers checkpoint on it), then SIGKILL after the grace period.
    await this.currentGroup?.stop(this.opts.shutdownGraceMs, sig);
    await handler.leave().catch(() => {});
    return {
      kind: 'done',
      result: {
        exitCode: SIGNAL_EXIT[sig] ?? 1,
        state: 'STOPPING',
        failures: this.allFailures,
        rounds: this.roundNo + 1,
      },
    };
  }

  private onEvent(event: RendezvousEvent, handler: RendezvousHandler): void {
    const log = this.deps.logger;
    if (event.type === 'connection-lost')
      log.warn({ err: event.error.message }, 'rendezvous connection lost; workers keep running');
    if (event.type === 'connection-restored') log.info('rendezvous connection restored');
    if (this.state !== 'RUNNING') return;
    const decision = onRendezvousEvent(this.snapshot(), event);
    switch (decision.kind) {
      case 'ignore':
        return;
      case 'job-closed':
        this.jobClosed = true;
        return;
      case 'end-round-for-scale-up':
        log.info({ waiting: event.type === 'nodes-waiting' ? event.count : 0 }, 'nodes waiting; starting a new round');
        handler.endRound({ reason: 'scale-up' }).catch((err: Error) => {
          this.wake?.({ kind: 'rendezvous-error', error: err });
        });
        return;
      case 'rejoin':
        this.wake?.({ kind: 'rejoin', reason: decision.reason });
        return;
    }
  }

  private snapshot(): PolicySnapshot {
    return {
      restartsUsed: this.restartsUsed,
      maxRestarts: this.opts.maxRestarts,
      round: this.roundNo,
      jobClosed: this.jobClosed,
      scaleUpPolicy: this.scaleUpPolicy,
    };
  }

  private entrypoint(): string {
    return this.opts.script;
  }

  private transition(next: AgentState): void {
    this.state = next;
    this.deps.metrics.state(next);
    this.deps.console.update({ state: next });
    this.deps.onState?.(next);
  }
}

function isEmptyDir(dir: string): boolean {
  try {
    return readdirSync(dir).length === 0;
  } catch {
    return true;
  }
}
