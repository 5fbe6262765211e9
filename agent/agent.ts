// The elastic agent: INIT → RENDEZVOUS → RUNNING → (SUCCEEDED | FAILED | RESTARTING → RENDEZVOUS), plus STOPPING.
// Live recovery adds RUNNING → RENDEZVOUS → RUNNING: the round changes while the (live) workers keep running.
//
// Worker exits, rendezvous events and signals are all events raced in one place per attempt; nothing polls.
// Decisions come from restart-policy.ts and live-policy.ts; this file executes them (the control channel's
// mechanism is worker-control.ts, the run directories run-dirs.ts). Why it is longer than ~500 lines: it is the
// central loop (STYLE §8), one method per event and path; its helpers are pushed out to the files above.

import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../common/logger.js';
import { freePortPair } from '../common/free-port.js';
import { CONTROL_ENV, STANDBY_ENV } from '../common/control-protocol.js';
import type {
  NodeDescriptor,
  RecoveryEntry,
  RendezvousEvent,
  RendezvousHandler,
  RoundInfo,
} from '../rendezvous/api.js';
import { PUBLISHED_RECOVERIES, RendezvousError } from '../rendezvous/api.js';
import { AgentError, type AgentState, type RunOptions, type WorkerExit } from './api.js';
import type { AgentConsole } from './console.js';
import { formatFailureSummary, rootCauseOrder } from './failure-summary.js';
import { GoodputTracker, toRecoveryEntry, type RecoveryCause, type RecoveryRecord } from './goodput.js';
import { recoveryPath } from './live-policy.js';
import type { AgentMetrics } from './metrics.js';
import { Reaper, type ReaperHandle } from './reaper.js';
import { cleanUpRunDirs, prepareRunDirs, type RunDirs } from './run-dirs.js';
import {
  budgetExhausted,
  onGroupEnd,
  onLocalFailure,
  onRendezvousEvent,
  type PolicySnapshot,
} from './restart-policy.js';
import { buildWorkerSpecs, worldSize } from './worker-env.js';
import { WorkerControl } from './worker-control.js';
import { WorkerGroup, type WorkerGroupFactory, type WorkerGroupHandle, type WorkerSpec } from './worker-group.js';
import type { HangInfo } from './worker-monitor.js';

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

/** What one pass of the loop decided: run another round, or the run's result. */
type Step = { readonly kind: 'next-round' } | { readonly kind: 'done'; readonly result: AgentResult };
const NEXT_ROUND: Step = { kind: 'next-round' };

/** A live recovery either continues with the same group (and the next end to wait for) or ends the pass. */
type LiveOutcome = { readonly kind: 'continue'; readonly next: Promise<AttemptEnd> } | Step;

/** How long the agent waits for every local worker's `ready` after a round change before restarting them. */
export const LIVE_READY_TIMEOUT_MS = 60_000;
/** How long a probe of the peer agents waits for each connection (a dead agent on a live host refuses at once). */
export const PEER_PROBE_TIMEOUT_MS = 500;
/** How often each standby slot's process may die before promotion and be replaced, per group. */
export const STANDBY_RETRIES_PER_SLOT = 3;
/** Variables of the worker environment a standby does not get: its round message carries them. */
const STANDBY_UNSET_ENV = [
  'RANK',
  'GROUP_RANK',
  'ROLE_RANK',
  'WORLD_SIZE',
  'ROLE_WORLD_SIZE',
  'MASTER_ADDR',
  'MASTER_PORT',
  'TENSILE_ROUND',
] as const;
/** Probes per suspicion, and the pause between them (a dying agent may still hold its port for a moment). */
export const PEER_PROBE_ATTEMPTS = 3;
export const PEER_PROBE_SPACING_MS = 250;

export class ElasticAgent {
  private state: AgentState = 'INIT';
  private readonly host: string;
  private readonly nodeId: string;
  private stopSignal: NodeJS.Signals | null = null;
  private wake: ((end: AttemptEnd) => void) | null = null;
  /** The latest armed wait for an end (ended by an event, a signal or the rendezvous). */
  private ended: Promise<AttemptEnd> = new Promise(() => {});
  private currentGroup: WorkerGroupHandle | null = null;
  private readonly abort = new AbortController();
  private jobClosed = false;
  private roundNo = -1;
  private restartsUsed = 0;
  private scaleUpPolicy: 'immediate' | 'deferred' = 'immediate';
  private attempt = 0;
  private readonly allFailures: WorkerExit[] = [];
  /** pids whose failure is already in allFailures (live restarts keep the group, so exits accumulate). */
  private readonly counted = new Set<number>();
  private control: WorkerControl | null = null;
  private readonly goodput = new GoodputTracker();
  /** Where recoveries are published for `tensile status` (the run's handler), and what was published. */
  private rdzv: RendezvousHandler | null = null;
  private readonly published: RecoveryEntry[] = [];
  /** A restart-path recovery waits for the first heartbeat of the new workers to end. */
  private restartRecoveryOpen = false;
  /** Local ranks the watchdog killed (their exit is a hang, not a crash). */
  private readonly hung = new Set<number>();
  /** When the newest hang began (its last progress), so the recovery it causes is timed from there. */
  private hangSinceMs: number | null = null;
  /** Nodes in the current round. */
  private groupWorldSize = 1;
  /** A peer probe is in flight. */
  private probing = false;
  /** Local rank 0's spec of the newest round: what a new warm standby's environment is made from. */
  private standbyBase: WorkerSpec | null = null;
  /** Standbys started (for unique log dirs) and replacements of dead standbys left (bounded retries). */
  private standbysStarted = 0;
  private standbyRetriesLeft = 0;
  /** The spec each standby slot's current process was started with (its log dir and error file). */
  private readonly standbySpecs = new Map<number, WorkerSpec>();

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

  /** The most recent recoveries of this agent (oldest first). */
  get recoveries(): readonly RecoveryRecord[] {
    return this.goodput.recoveries;
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
      this.control = await WorkerControl.start(this.opts, this.deps.logger, (info) => this.onHang(info));
      this.control.onHeartbeat((_rank, step, atMs) => this.onHeartbeat(step, atMs));
      this.control.onReady((_rank, step, round) => this.onWorkerReady(step, round));
      handler = await this.deps.rendezvous(await this.describeSelf());
      this.rdzv = handler;
      const probing = handler;
      this.control.onPeerLost((rank) => this.probePeers(probing, `local rank ${rank} reported a lost peer`));
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
      await this.control?.close();
      reaper.dispose();
      const last = result ? cleanUpRunDirs(dirs, result.state === 'SUCCEEDED', this.attempt > 0) : null;
      if (last) this.deps.console.message(last);
    }
    return result;
  }

  /** One pass: join a round, run the workers in it (across live round changes), decide what their end means. */
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
    const group = this.startWorkers(round, dirs, reaper);
    let next = this.armEnd(group);
    for (;;) {
      const end = await next;
      if (end.kind !== 'group' || end.outcome === 'succeeded') this.wake = null;
      switch (end.kind) {
        case 'signal':
          return this.finishSignalled(handler);
        case 'rendezvous-error':
          throw end.error;
        case 'rejoin': {
          const path = recoveryPath(this.opts.recovery, this.control?.views(group) ?? []);
          if (path.kind === 'live') {
            this.takeNewFailures(group, false); // collateral of the membership change, not counted
            this.goodput.begin('membership', 'live', this.newestStep(), end.reason);
            this.deps.logger.info({ round: this.roundNo, reason: end.reason }, 'round ended; recovering live');
            const live = await this.recoverLive(handler, group, dirs, path.respawn);
            if (live.kind === 'continue') {
              next = live.next;
              continue;
            }
            return live;
          }
          this.transition('RESTARTING');
          this.beginRestartRecovery('membership', `${end.reason} (${path.reason})`);
          this.deps.logger.warn(
            { round: this.roundNo, reason: end.reason, why: path.reason },
            'round ended by the rendezvous; restarting workers',
          );
          await group.stop(this.opts.shutdownGraceMs);
          this.deps.metrics.restart('membership');
          return NEXT_ROUND;
        }
        case 'group': {
          if (end.outcome === 'succeeded') return this.succeed(handler, group);
          const path = recoveryPath(this.opts.recovery, this.control?.views(group) ?? []);
          const decision = onGroupEnd(this.snapshot(), 'failed');
          if (path.kind === 'live' && path.respawn.length > 0 && decision.kind === 'restart') {
            const live = await this.restartFailedLive(handler, group, dirs, path.respawn, decision.restartsUsed);
            if (live.kind === 'continue') {
              next = live.next;
              continue;
            }
            return live;
          }
          return this.onWorkersFailed(handler, group);
        }
      }
    }
  }

  /** Records the new round; throws when the job as a whole has used up its restarts. */
  private enterRound(round: RoundInfo): void {
    const { opts, deps } = this;
    this.roundNo = round.round;
    this.restartsUsed = round.failureRestarts;
    this.groupWorldSize = round.groupWorldSize;
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

  /** The worker specs of `round` in a new attempt directory (`attempt_<n>`). */
  private specsFor(round: RoundInfo, dirs: RunDirs): WorkerSpec[] {
    const attemptDir = join(dirs.runDir, `attempt_${this.attempt}`);
    rmSync(attemptDir, { recursive: true, force: true });
    const specs = buildWorkerSpecs(
      this.opts,
      {
        round,
        attempt: this.attempt,
        attemptDir,
        checkpointDir: dirs.checkpointDir,
        host: this.host,
        nodeId: this.nodeId,
        control: this.control
          ? { socketPath: (r) => (this.control as WorkerControl).socketPath(r), recovery: this.opts.recovery }
          : undefined,
      },
      this.deps.env,
    );
    this.attempt++;
    return specs;
  }

  /** Starts the round's local workers (state RUNNING). */
  private startWorkers(round: RoundInfo, dirs: RunDirs, reaper: ReaperHandle): WorkerGroupHandle {
    const { opts, deps } = this;
    const specs = this.specsFor(round, dirs);
    const makeGroup: WorkerGroupFactory = deps.workerGroup ?? ((...args) => new WorkerGroup(...args));
    const group = makeGroup(specs, this.host, reaper, deps.console, (exit) => {
      if (exit.exitCode !== 0 && !exit.stoppedByAgent) deps.metrics.workerFailed();
      this.control?.monitor.forget(exit.localRank);
      deps.metrics.workersRunning(this.currentGroup?.runningCount ?? 0);
      deps.console.update({ workersUp: this.currentGroup?.runningCount ?? 0 });
    });
    this.currentGroup = group;
    for (const spec of specs) this.control?.started(spec, round.round);
    this.hung.clear();
    this.control?.resume();
    group.start();
    deps.metrics.workerStarted(specs.length);
    deps.metrics.workersRunning(group.runningCount);
    this.standbyBase = specs[0] ?? null;
    this.standbyRetriesLeft = STANDBY_RETRIES_PER_SLOT * this.standbyCount();
    for (let i = 0; i < this.standbyCount(); i++) this.startStandby(group, i);
    this.transition('RUNNING');
    deps.console.update({
      workersUp: group.runningCount,
      workersTotal: specs.length,
      restartsUsed: round.failureRestarts,
      maxRestarts: opts.maxRestarts,
      round: round.round,
      worldSize: worldSize(round),
    });
    deps.logger.info(
      { pids: group.pids, ranks: specs.map((s) => s.globalRank), attemptDir: join(specs[0]?.logDir ?? '', '..') },
      'workers started',
    );
    if (this.restartRecoveryOpen && !this.control) this.endRestartRecovery(null);
    return group;
  }

  /** Warm standbys per node: --standby-workers in live mode with a control channel, else none. */
  private standbyCount(): number {
    if (!this.control || this.opts.recovery !== 'live') return 0;
    return this.opts.standbyWorkers ?? 0;
  }

  /**
   * Starts warm standby `i` (its own log dir `standby_<n>` beside the attempt dirs, TENSILE_STANDBY=1, LOCAL_RANK =
   * its control slot). A standby that dies before promotion is replaced, at most STANDBY_RETRIES_PER_SLOT times per
   * slot and round of the group; it never counts as a worker failure.
   */
  private startStandby(group: WorkerGroupHandle, i: number): void {
    const base = this.standbyBase;
    const control = this.control;
    if (!base || !control || !group.startStandby || this.stopSignal || group !== this.currentGroup) return;
    const slot = control.standbySlot(i);
    const logDir = base.logDir ? join(base.logDir, '..', '..', `standby_${this.standbysStarted}`) : null;
    const errorFile = logDir ? join(logDir, 'error.json') : null;
    this.standbysStarted++;
    const env: Record<string, string> = {
      ...base.env,
      LOCAL_RANK: String(slot),
      [CONTROL_ENV]: control.socketPath(slot),
      [STANDBY_ENV]: '1',
    };
    // A standby has no rank until promoted: without these, a program that ignores TENSILE_STANDBY fails to join
    // any group (and is replaced a bounded number of times) instead of acting as a duplicate of local rank 0.
    for (const name of STANDBY_UNSET_ENV) delete env[name];
    if (errorFile) env.TORCHELASTIC_ERROR_FILE = errorFile;
    else delete env.TORCHELASTIC_ERROR_FILE;
    if (logDir && base.logDir) {
      env.TENSILE_LOG_DIR = logDir;
      // Stack dumps (--report-directory) of a standby go to its own dir, where dumpAndKill looks after promotion.
      if (env.NODE_OPTIONS) env.NODE_OPTIONS = env.NODE_OPTIONS.split(base.logDir).join(logDir);
    }
    const spec: WorkerSpec = { ...base, localRank: slot, env, logDir, errorFile };
    this.standbySpecs.set(slot, spec);
    group.startStandby(slot, spec, (deadSlot, exit) => {
      if (this.standbyRetriesLeft <= 0) {
        this.deps.logger.warn(
          { slot: deadSlot, pid: exit.pid, exitCode: exit.exitCode, signal: exit.signal },
          'standby worker exited; no standby retries left, failed workers are started fresh',
        );
        return;
      }
      this.standbyRetriesLeft--;
      this.deps.logger.warn(
        { slot: deadSlot, pid: exit.pid, exitCode: exit.exitCode, signal: exit.signal },
        'standby worker exited; replacing it (not a worker failure)',
      );
      this.startStandby(group, deadSlot - this.opts.nprocPerNode);
    });
    this.deps.logger.debug({ slot, pid: group.standbyPid?.(slot) ?? null }, 'standby worker started');
  }

  /** A connected standby's index, or null when none can be promoted now. */
  private readyStandby(group: WorkerGroupHandle, taken: ReadonlySet<number>): number | null {
    const control = this.control;
    if (!control || !group.standbyPid) return null;
    for (let i = 0; i < this.standbyCount(); i++) {
      const slot = control.standbySlot(i);
      if (!taken.has(i) && group.standbyPid(slot) !== null && control.standbyReady(slot)) return i;
    }
    return null;
  }

  /** Arms a wait for the attempt's next end: the group's outcome, a rendezvous event or a signal. */
  private armEnd(group: WorkerGroupHandle): Promise<AttemptEnd> {
    this.ended = new Promise<AttemptEnd>((resolveEnd) => {
      this.wake = resolveEnd;
    });
    if (this.stopSignal) this.wake?.({ kind: 'signal', signal: this.stopSignal });
    return Promise.race([group.outcome.then((o): AttemptEnd => ({ kind: 'group', outcome: o.kind })), this.ended]);
  }

  /**
   * Live workers failed (crashed or hung and killed): count one restart job-wide, end the round so every node
   * re-forms the group, and start the failed ranks alone in the next round while the others keep running.
   */
  private async restartFailedLive(
    handler: RendezvousHandler,
    group: WorkerGroupHandle,
    dirs: RunDirs,
    respawn: readonly number[],
    restartsUsed: number,
  ): Promise<LiveOutcome> {
    const failures = this.takeNewFailures(group);
    const root = rootCauseOrder(failures)[0];
    const hang = respawn.some((r) => this.hung.has(r));
    for (const r of respawn) this.hung.delete(r);
    const cause: RecoveryCause = hang ? 'hang' : 'worker-failure';
    const what = root ? `rank ${root.globalRank} ${hang ? 'hung' : 'failed'}` : 'a worker failed';
    // A hang costs the time since the worker's last progress, not only the time after it was killed.
    this.goodput.begin(cause, 'live', this.newestStep(), what, hang ? (this.hangSinceMs ?? Date.now()) : Date.now());
    this.hangSinceMs = null;
    this.deps.logger.warn(
      { rank: root?.globalRank, exitCode: root?.exitCode, signal: root?.signal, restart: restartsUsed, respawn },
      `${what}; restarting it alone, the others keep running (restart ${restartsUsed}/${this.opts.maxRestarts})`,
    );
    this.deps.metrics.restart('failure');
    await handler.endRound({ reason: 'failure', detail: what });
    return this.recoverLive(handler, group, dirs, respawn);
  }

  /**
   * The live path of a round change: join the next round with a fresh master port, start the failed ranks in it,
   * announce it to the others, and wait (bounded) for every local worker's `ready`. Falls back to the restart
   * path when the workers are not ready in time.
   */
  private async recoverLive(
    handler: RendezvousHandler,
    group: WorkerGroupHandle,
    dirs: RunDirs,
    respawn: readonly number[],
  ): Promise<LiveOutcome> {
    const { deps, opts } = this;
    const control = this.control as WorkerControl;
    const fromRound = this.roundNo;
    control.pause();
    this.transition('RENDEZVOUS');
    let round: RoundInfo;
    try {
      round = await handler.next({ signal: this.abort.signal, masterPort: await freePortPair() });
    } catch (err) {
      if (this.stopSignal) return this.finishSignalled(handler);
      throw err;
    }
    this.enterRound(round);
    const specs = this.specsFor(round, dirs);
    this.standbyBase = specs[0] ?? this.standbyBase;
    const fresh = new Set<number>();
    const promoted = new Set<number>();
    for (const r of respawn) {
      const spec = specs[r] as WorkerSpec;
      // A warm standby takes the rank when one is connected: no process start before the group can re-form.
      const i = this.readyStandby(group, promoted);
      const slot = i === null ? null : control.standbySlot(i);
      const own = slot === null ? undefined : this.standbySpecs.get(slot);
      const promotedSpec: WorkerSpec = own ? { ...spec, logDir: own.logDir, errorFile: own.errorFile } : spec;
      if (i !== null && slot !== null && control.promote(slot, promotedSpec, round.round)) {
        const pid = group.promote?.(slot, spec) ?? null;
        if (pid !== null) {
          promoted.add(i);
          deps.metrics.standbyPromoted?.();
          deps.logger.info(
            { localRank: r, rank: spec.globalRank, pid, round: round.round },
            `promoted standby (pid ${pid}) to local rank ${r}`,
          );
          continue;
        }
      }
      fresh.add(r);
      control.started(spec, round.round);
      group.respawn(spec);
    }
    if (fresh.size > 0) deps.metrics.workerStarted(fresh.size);
    control.sendRound(round, specs, fresh);
    // New standbys for the promoted ones start once this round is ready (below), so that they do not compete
    // for CPU with the recovery.
    const refill = (): void => {
      for (const i of promoted) this.startStandby(group, i);
    };
    this.transition('RUNNING');
    deps.console.update({
      workersUp: group.runningCount,
      restartsUsed: round.failureRestarts,
      round: round.round,
      worldSize: worldSize(round),
    });
    const next = this.armEnd(group);
    const ranks = specs.map((s) => s.localRank);
    const timeoutMs = Math.max(LIVE_READY_TIMEOUT_MS, control.monitor.timeoutMs);
    const raced = await Promise.race([
      control.waitReady(ranks, round.round, timeoutMs).then((r) => ({ kind: 'ready' as const, ...r })),
      next.then(() => ({ kind: 'interrupted' as const })),
    ]);
    if (raced.kind === 'interrupted') {
      refill();
      return { kind: 'continue', next };
    }
    if (raced.missing.length > 0) {
      deps.logger.warn(
        { round: round.round, missing: raced.missing, timeoutMs },
        'workers not ready in the new round in time; falling back to restarting them',
      );
      this.wake = null;
      this.transition('RESTARTING');
      this.goodput.end(null);
      this.beginRestartRecovery('membership', 'live recovery timed out');
      await group.stop(opts.shutdownGraceMs);
      deps.metrics.restart('membership');
      return NEXT_ROUND;
    }
    control.resume();
    const rec = this.goodput.end(raced.step);
    if (rec) this.reportRecovery(rec, fromRound, round.round);
    refill();
    return { kind: 'continue', next };
  }

  private async succeed(handler: RendezvousHandler, group: WorkerGroupHandle): Promise<Step> {
    await group.waitAll();
    await handler
      .markClosed()
      .catch((err: Error) => this.deps.logger.warn({ err: err.message }, 'could not mark the job closed'));
    this.transition('SUCCEEDED');
    this.deps.logger.info(
      { round: this.roundNo, goodput: this.goodput.ratio(this.control?.monitor.medianStepMs ?? null) },
      'all workers succeeded',
    );
    return {
      kind: 'done',
      result: { exitCode: 0, state: 'SUCCEEDED', failures: this.allFailures, rounds: this.roundNo + 1 },
    };
  }

  /** A local worker failed: stop the rest, then (after a membership verdict, if the policy asks) restart or give up. */
  private async onWorkersFailed(handler: RendezvousHandler, group: WorkerGroupHandle): Promise<Step> {
    const { opts, deps } = this;
    const decision = onGroupEnd(this.snapshot(), 'failed');
    const lastStep = this.newestStep();
    const failure = onLocalFailure({ groupWorldSize: this.groupWorldSize, leaseTtlMs: handler.config.leaseTtlMs });
    // A worker often fails because a peer node died: ask the rendezvous to probe the peers now, so a dead agent on
    // a live host is evicted at once and the verdict below comes in milliseconds instead of a lease TTL.
    if (failure.kind === 'await-membership-verdict') this.probePeers(handler, 'a local worker failed');
    await group.stop(opts.shutdownGraceMs);
    if (failure.kind === 'await-membership-verdict') {
      const verdict = await this.awaitMembershipVerdict(this.ended, failure.waitMs);
      this.wake = null;
      if (verdict?.kind === 'signal') return this.finishSignalled(handler);
      if (verdict?.kind === 'rendezvous-error') throw verdict.error;
      if (verdict?.kind === 'rejoin') {
        const collateral = this.takeNewFailures(group, false);
        this.transition('RESTARTING');
        this.beginRestartRecovery('membership', verdict.reason, lastStep);
        deps.logger.warn(
          { round: this.roundNo, reason: verdict.reason, ranks: collateral.map((e) => e.globalRank) },
          'workers failed while the round ended elsewhere; restarting them in the next round',
        );
        deps.metrics.restart('membership');
        return NEXT_ROUND;
      }
    }
    this.wake = null;
    const localFailures = this.takeNewFailures(group);
    // The root cause of this round's failure: the first by time, as the failure summary orders them.
    const root = rootCauseOrder(localFailures)[0];
    if (decision.kind === 'restart') {
      this.transition('RESTARTING');
      const hang = localFailures.some((e) => this.hung.has(e.localRank));
      this.hung.clear();
      this.beginRestartRecovery(hang ? 'hang' : 'worker-failure', root ? `rank ${root.globalRank}` : '', lastStep);
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
      result: { exitCode: 1, state: 'FAILED', failures: this.allFailures, rounds: this.roundNo + 1 },
    };
  }

  /** Failures of the group not yet counted; with `count` they join allFailures (the job's failure record). */
  private takeNewFailures(group: WorkerGroupHandle, count = true): WorkerExit[] {
    const fresh = group.observedExits.filter((e) => e.exitCode !== 0 && !e.stoppedByAgent && !this.counted.has(e.pid));
    for (const e of fresh) this.counted.add(e.pid);
    if (count) this.allFailures.push(...fresh);
    return fresh;
  }

  /** The watchdog found a worker without step progress: take its stacks, kill it; its exit is then a failure. */
  private onHang(info: HangInfo): void {
    const group = this.currentGroup;
    const control = this.control;
    if (!group || !control || this.state !== 'RUNNING') return;
    if (this.hung.size > 0) return; // one hang at a time: the others are likely blocked on this one
    this.hung.add(info.localRank);
    this.hangSinceMs = Date.now() - info.silentMs;
    // Peers blocked in a collective on the hung worker look hung too: stop their watchdogs; they are re-armed when
    // the next round is ready (live) or their replacements start (restart).
    control.pause();
    this.deps.logger.warn(
      { localRank: info.localRank, step: info.step, silentMs: info.silentMs, hangTimeoutMs: info.timeoutMs },
      `worker hung: no step progress for ${(info.silentMs / 1000).toFixed(1)} s; dumping its stacks and killing it`,
    );
    void control.dumpAndKill(group, info.localRank).then((dir) => {
      if (dir) this.deps.logger.warn({ localRank: info.localRank, dir }, 'hung worker stacks written');
    });
  }

  /** Probes the peer agents (rendezvous probeMembers): a dead one is evicted at once. One probe at a time. */
  private probePeers(handler: RendezvousHandler, why: string): void {
    if (this.probing) return;
    this.probing = true;
    void this.probeLoop(handler, why).finally(() => {
      this.probing = false;
    });
  }

  /**
   * A killed agent's process may still hold its liveness port for a moment after its worker's sockets broke (the
   * kernel tears processes down in no fixed order, slower under load): when nobody is found dead, look again
   * PEER_PROBE_ATTEMPTS times, PEER_PROBE_SPACING_MS apart, while the round has not changed.
   */
  private async probeLoop(handler: RendezvousHandler, why: string): Promise<void> {
    const t0 = Date.now();
    const round = this.roundNo;
    for (let attempt = 1; attempt <= PEER_PROBE_ATTEMPTS; attempt++) {
      let evicted: readonly string[];
      try {
        evicted = await handler.probeMembers(PEER_PROBE_TIMEOUT_MS);
      } catch (err) {
        this.deps.logger.warn({ err: (err as Error).message, why }, 'probing the peer agents failed');
        return;
      }
      if (evicted.length > 0) {
        this.deps.logger.warn(
          { evicted, why, probeMs: Date.now() - t0, attempt },
          'peer agents found dead and evicted',
        );
        return;
      }
      if (attempt === PEER_PROBE_ATTEMPTS || this.roundNo !== round) break;
      await new Promise((r) => setTimeout(r, PEER_PROBE_SPACING_MS));
      if (this.roundNo !== round || this.stopSignal) break;
    }
    this.deps.logger.info({ why, probeMs: Date.now() - t0 }, 'peer agents probed: none found dead');
  }

  /** On the restart path, training runs again once every local worker of the new round said ready. */
  private onWorkerReady(step: number, round: number): void {
    if (!this.restartRecoveryOpen || this.state !== 'RUNNING' || round !== this.roundNo) return;
    const ranks = Array.from({ length: this.opts.nprocPerNode }, (_, i) => i);
    if (this.control?.allReady(ranks, round)) this.endRestartRecovery(step);
  }

  private onHeartbeat(step: number, atMs: number): void {
    if (this.restartRecoveryOpen && this.state === 'RUNNING') this.endRestartRecovery(step, atMs);
    this.deps.metrics.progress(this.goodput.ratio(this.control?.monitor.medianStepMs ?? null), step);
  }

  private beginRestartRecovery(cause: RecoveryCause, detail: string, lastStep = this.newestStep()): void {
    this.goodput.begin(cause, 'restart', lastStep, detail);
    this.restartRecoveryOpen = true;
  }

  private endRestartRecovery(step: number | null, atMs = Date.now()): void {
    this.restartRecoveryOpen = false;
    const rec = this.goodput.end(step, atMs);
    if (rec) this.reportRecovery(rec, null, this.roundNo);
  }

  private reportRecovery(rec: RecoveryRecord, fromRound: number | null, round: number): void {
    const ratio = this.goodput.ratio(this.control?.monitor.medianStepMs ?? null);
    const lost = rec.stepsLost === null ? 'steps lost unknown' : `${rec.stepsLost} steps lost`;
    this.deps.logger.info(
      {
        cause: rec.cause,
        path: rec.path,
        recoveryMs: rec.recoveryMs,
        stepsLost: rec.stepsLost,
        fromRound: fromRound ?? undefined,
        round,
        goodput: Number(ratio.toFixed(4)),
      },
      `${rec.path} recovery (${rec.cause}: ${rec.detail}) took ${(rec.recoveryMs / 1000).toFixed(2)} s, ${lost}`,
    );
    this.deps.metrics.recovery(rec);
    this.publishRecovery(toRecoveryEntry(rec, round));
    this.deps.metrics.progress(ratio, this.newestStep());
    this.deps.console.update({
      goodput: ratio,
      lastRecovery: `${rec.path} ${(rec.recoveryMs / 1000).toFixed(2)} s, ${lost}`,
    });
  }

  /** Once per recovery, off the hot path: a failed put costs only the status line. */
  private publishRecovery(entry: RecoveryEntry): void {
    this.published.push(entry);
    if (this.published.length > PUBLISHED_RECOVERIES) this.published.shift();
    this.rdzv
      ?.publishRecoveries([...this.published])
      .catch((err: Error) => this.deps.logger.warn({ err: err.message }, 'could not publish the recovery'));
  }

  private newestStep(): number | null {
    return this.control?.monitor.newestStep ?? null;
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
    if (opts.nprocPerNode > 1 && deps.env.OMP_NUM_THREADS === undefined) {
      deps.console.message(
        `tensile: OMP_NUM_THREADS is not set; setting it to 1 for each of the ${opts.nprocPerNode} workers to avoid ` +
          'oversubscribing the CPU. Tune it for best performance.',
      );
    }
    return prepareRunDirs(opts);
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
