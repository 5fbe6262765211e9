// The elastic agent: INIT → RENDEZVOUS → RUNNING → (SUCCEEDED | FAILED | RESTARTING → RENDEZVOUS), plus STOPPING.
//
// Worker exits, rendezvous events and signals are all events raced in one place per attempt; nothing polls.
// Decisions come from restart-policy.ts; this file executes them.

import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { hostname as osHostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePortPair } from '../common/free-port.js';
import type { Logger } from '../common/logger.js';
import type { NodeDescriptor, RendezvousEvent, RendezvousHandler, RoundInfo } from '../rendezvous/api.js';
import { RendezvousError } from '../rendezvous/api.js';
import { AgentError, type AgentState, type RunOptions, type WorkerExit } from './api.js';
import type { AgentConsole } from './console.js';
import { formatFailureSummary } from './failure-summary.js';
import type { AgentMetrics } from './metrics.js';
import { Reaper } from './reaper.js';
import { budgetExhausted, onGroupEnd, onRendezvousEvent, type PolicySnapshot } from './restart-policy.js';
import { buildWorkerSpecs, worldSize } from './worker-env.js';
import { WorkerGroup } from './worker-group.js';

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

export class ElasticAgent {
  private state: AgentState = 'INIT';
  private readonly host: string;
  private readonly nodeId: string;
  private stopSignal: NodeJS.Signals | null = null;
  private wake: ((end: AttemptEnd) => void) | null = null;
  private currentGroup: WorkerGroup | null = null;
  private readonly abort = new AbortController();
  private jobClosed = false;
  private roundNo = -1;
  private restartsUsed = 0;
  private scaleUpPolicy: 'immediate' | 'deferred' = 'immediate';

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

  async run(): Promise<AgentResult> {
    const { opts, deps } = this;
    const log = deps.logger;
    this.transition('INIT');
    const runDirOwned = opts.logDir === null;
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

    const reaper = new Reaper();
    let handler: RendezvousHandler | null = null;
    let unwatch: () => void = () => {};
    const allFailures: WorkerExit[] = [];
    let attempt = 0;
    let result: AgentResult | null = null;

    try {
      const addr = opts.localAddr ?? (opts.nnodes.max === 1 ? (opts.masterAddr ?? '127.0.0.1') : this.host);
      const self: NodeDescriptor = {
        nodeId: this.nodeId,
        host: this.host,
        addr,
        masterPort: opts.masterPort ?? (await freePortPair()),
        localWorldSize: opts.nprocPerNode,
      };
      handler = await deps.rendezvous(self);
      this.scaleUpPolicy = handler.config.scaleUpPolicy;
      unwatch = handler.watch((ev) => this.onEvent(ev, handler as RendezvousHandler));

      for (;;) {
        if (this.stopSignal) {
          result = await this.finishSignalled(handler, allFailures);
          break;
        }
        this.transition('RENDEZVOUS');
        let round: RoundInfo;
        try {
          round = await handler.next({ signal: this.abort.signal });
        } catch (err) {
          if (this.stopSignal) {
            result = await this.finishSignalled(handler, allFailures);
            break;
          }
          throw err;
        }
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
        log.info(
          { round: round.round, groupRank: round.groupRank, groupWorldSize: round.groupWorldSize, worldSize: world },
          'rendezvous complete',
        );

        const attemptDir = join(runDir, `attempt_${attempt}`);
        rmSync(attemptDir, { recursive: true, force: true });
        const specs = buildWorkerSpecs(
          opts,
          { round, attempt, attemptDir, checkpointDir, host: this.host, nodeId: this.nodeId },
          deps.env,
        );
        attempt++;
        const group = new WorkerGroup(specs, this.host, reaper, deps.console, (exit) => {
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
          worldSize: world,
        });
        log.info({ pids: group.pids, ranks: specs.map((s) => s.globalRank), attemptDir }, 'workers started');

        if (this.stopSignal) this.wake?.({ kind: 'signal', signal: this.stopSignal });
        const end = await Promise.race([
          group.outcome.then((o): AttemptEnd => ({ kind: 'group', outcome: o.kind })),
          ended,
        ]);
        if (end.kind !== 'group' || end.outcome === 'succeeded') this.wake = null;

        if (end.kind === 'signal') {
          result = await this.finishSignalled(handler, allFailures);
          break;
        }
        if (end.kind === 'rendezvous-error') throw end.error;
        if (end.kind === 'rejoin') {
          this.transition('RESTARTING');
          log.warn({ round: round.round, reason: end.reason }, 'round ended by the rendezvous; restarting workers');
          await group.stop(opts.shutdownGraceMs);
          deps.metrics.restart('membership');
          continue;
        }

        const decision = onGroupEnd(this.snapshot(), end.outcome);
        if (decision.kind === 'succeed') {
          await group.waitAll();
          await handler
            .markClosed()
            .catch((err: Error) => log.warn({ err: err.message }, 'could not mark the job closed'));
          this.transition('SUCCEEDED');
          log.info({ round: round.round }, 'all workers succeeded');
          result = { exitCode: 0, state: 'SUCCEEDED', failures: allFailures, rounds: round.round + 1 };
          break;
        }

        // A local worker failed: stop the rest, then restart or give up.
        await group.stop(opts.shutdownGraceMs);
        const localFailures = group.observedExits.filter((e) => e.exitCode !== 0 && !e.stoppedByAgent);
        // In a multi-node job a worker often fails *because* a peer node died (a collective's socket reset) before
        // the peer's lease has expired. Give the rendezvous time to say so: then it is a membership change
        // and uses no restart (torchrun would count it).
        if (round.groupWorldSize > 1) {
          // etcd grants at least 2 s (its minimum lease TTL with default election settings) and checks expiry
          // every 500 ms, so a lost peer shows up up to ~2.5 s after its last keep-alive: wait a TTL plus margin.
          const verdictMs = Math.max(handler.config.leaseTtlMs, 2000) + 2000;
          const verdict = await this.awaitMembershipVerdict(ended, verdictMs);
          this.wake = null;
          if (verdict?.kind === 'signal') {
            result = await this.finishSignalled(handler, allFailures);
            break;
          }
          if (verdict?.kind === 'rendezvous-error') throw verdict.error;
          if (verdict?.kind === 'rejoin') {
            this.transition('RESTARTING');
            log.warn(
              { round: round.round, reason: verdict.reason, ranks: localFailures.map((e) => e.globalRank) },
              'workers failed while the round ended elsewhere; restarting them in the next round',
            );
            deps.metrics.restart('membership');
            continue;
          }
        }
        this.wake = null;
        allFailures.push(...localFailures);
        const first = allFailures[allFailures.length - 1];
        if (decision.kind === 'restart') {
          this.transition('RESTARTING');
          log.warn(
            {
              rank: first?.globalRank,
              exitCode: first?.exitCode,
              signal: first?.signal,
              restart: decision.restartsUsed,
            },
            `worker failed; restarting the group (restart ${decision.restartsUsed}/${opts.maxRestarts})`,
          );
          deps.metrics.restart('failure');
          await handler.endRound({ reason: 'failure', detail: first ? `rank ${first.globalRank} failed` : undefined });
          continue;
        }
        await handler.endRound({ reason: 'failure', detail: 'restarts exhausted' }).catch(() => {});
        this.transition('FAILED');
        deps.console.message(formatFailureSummary(this.entrypoint(), allFailures, decision.reason));
        result = { exitCode: 1, state: 'FAILED', failures: allFailures, rounds: round.round + 1 };
        break;
      }
    } catch (err) {
      if (this.state !== 'FAILED') this.transition('FAILED');
      const e = err as Error;
      const message =
        err instanceof RendezvousError || err instanceof AgentError
          ? e.message
          : `unexpected error: ${e.stack ?? e.message}`;
      deps.console.message(`tensile: ${message}`);
      if (allFailures.length > 0) deps.console.message(formatFailureSummary(this.entrypoint(), allFailures, message));
      result = {
        exitCode: err instanceof AgentError ? err.exitCode : 1,
        state: 'FAILED',
        failures: allFailures,
        rounds: this.roundNo + 1,
      };
      await this.currentGroup?.stop(Math.min(opts.shutdownGraceMs, 5000));
    } finally {
      unwatch();
      if (handler) {
        await handler.leave().catch(() => {});
        await handler.close().catch(() => {});
      }
      reaper.dispose();
      if (runDirOwned && (result?.state === 'SUCCEEDED' || attempt === 0))
        rmSync(runDir, { recursive: true, force: true });
      else if (runDirOwned && result) deps.console.message(`tensile: worker logs kept in ${runDir}`);
    }
    return result as AgentResult;
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

  private async finishSignalled(handler: RendezvousHandler, failures: WorkerExit[]): Promise<AgentResult> {
    const sig = this.stopSignal as NodeJS.Signals;
    this.transition('STOPPING');
    this.deps.logger.warn({ signal: sig, graceMs: this.opts.shutdownGraceMs }, 'stopping workers');
    // Forward the same signal first (workers checkpoint on it), then SIGKILL after the grace period.
    await this.currentGroup?.stop(this.opts.shutdownGraceMs, sig);
    await handler.leave().catch(() => {});
    return { exitCode: SIGNAL_EXIT[sig] ?? 1, state: 'STOPPING', failures, rounds: this.roundNo + 1 };
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
