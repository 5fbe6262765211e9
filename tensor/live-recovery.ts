// The worker side of live recovery: a training loop keeps its process alive across membership changes and peer
// failures, and continues from the newest state any rank holds (issue 10; protocol in common/control-protocol.ts).
//
// Usage (examples/train/train.ts does this):
//
//   const control = await connectControl({ logger });             // live only under an agent with --recovery live
//   const live = await LiveRecovery.start({ control, state, initial: roundFromEnv(), timeoutMs,
//                                           onGroup: async (pg) => { ddp?.detach(); ddp = await DDP.create(...) } });
//   while (state.epoch < epochs) {
//     const shard = state.shard(n);                                // re-computed after every recovery
//     for (let s = 0; s < shard.stepsLeft; s++) {
//       const r = await live.step(async (pg) => { ...forward, ddp.backward, opt.step(), await state.stepDone() });
//       if (!r.done) break;                                         // recovered: state may have moved; re-shard
//       live.heartbeat(state.step, state.epoch);
//     }
//   }
//
// What happens:
// - `start` builds the group of the round in the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
//   TENSILE_ROUND), agrees on state with the peers (state-transfer.ts) and sends `ready`.
// - A `round` message for a newer round aborts the current group at once (pending collectives reject with
//   ABORTED). A step that fails with PEER_LOST / TIMEOUT / ABORTED / CLOSED / STORE waits (bounded, roundWaitMs,
//   default 30 s) for the next round instead of crashing; none → LiveRecoveryError('NO_ROUND') with the cause.
// - Recovery: the interrupted step is discarded as a whole. Its parameters are untouched because the optimizer
//   steps only after a successful gradient allreduce (tensor/ddp.ts), and the step counter moves in the same
//   synchronous stretch as the update, so every rank holds a consistent state of some step. The new group is built
//   from the round's fields (the round's rank 0 binds the store at masterAddr:masterPort); the ranks then agree:
//   allgather (hasState, step, fingerprint); the holder with the highest step (lowest rank on ties) broadcasts
//   model, optimizer, step/epoch/sampler position and JSON state to the ranks that lack it or differ; a transfer
//   whose checksum fails is retried once, then everyone falls back to the newest disk checkpoint with a warning;
//   no rank holding state (a fresh start, or every worker lost) → the newest disk checkpoint (today's path).
//   A newer round during any of this supersedes the one being built. Then `onGroup(pg)` (rebuild DDP) and `ready`.
// - Steps lost: 0 whenever a holder existed (everyone continues from the newest step any rank completed); after a
//   disk fallback, the difference is logged as a warning and returned in the record.
// Longer than ~500 lines on purpose: it is the worker's central recovery loop (STYLE habit 8); state agreement and
// transfer live in state-transfer.ts.

import { CollectiveError, type Backend, type ProcessGroup } from '../collective/api.js';
import type { ControlClient } from '../collective/control-client.js';
import { initProcessGroup, resolveWorkerConfig } from '../collective/index.js';
import { STANDBY_ENV, type RoundMessage } from '../common/control-protocol.js';
import { noopLogger, type Logger } from '../common/logger.js';
import { TensorError } from './api.js';
import type { ElasticState } from './elastic-state.js';
import {
  StateTransferError,
  exchangeClaims,
  planStateAgreement,
  receiveState,
  sendState,
  stateFingerprint,
  type StateClaim,
} from './state-transfer.js';

/** The fields of a round a worker needs (a `round` message, or the environment for the first one). */
export interface RoundSpec {
  readonly round: number;
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly masterAddr: string;
  readonly masterPort: number;
  readonly restartCount: number;
}

export type StateFrom = 'self' | 'peer' | 'disk' | 'fresh';

/** One recovery (or the start), as this rank saw it. */
export interface RecoveryRecord {
  readonly round: number;
  /** The round this worker ran in before (null at the start). */
  readonly previousRound: number | null;
  readonly rank: number;
  readonly worldSize: number;
  readonly stateFrom: StateFrom;
  /** The rank the state came from ('peer'), else null. */
  readonly sourceRank: number | null;
  /** The step training continues from. */
  readonly step: number;
  /** Completed steps that were lost (0 with live state; > 0 only after a disk fallback; null when unknown). */
  readonly stepsLost: number | null;
  /** From receiving the round message (or the start) to `ready`. */
  readonly recoveryMs: number;
  /** From noticing the fault (a failed collective or the round, whichever came first) to `ready`. */
  readonly sinceFaultMs: number;
  /** State bytes this rank received (receivers) or sent to each receiver (source); 0 otherwise. */
  readonly bytes: number;
  /** Milliseconds this rank spent sending or receiving `bytes` (the peer copy's duration; 0 without one). */
  readonly transferMs: number;
  /** The checkpoint file restored ('disk'), else null. */
  readonly checkpoint: string | null;
  readonly cause: string;
}

export type StepOutcome<T> =
  { readonly done: true; readonly value: T } | { readonly done: false; readonly recovery: RecoveryRecord };

export type LiveRecoveryErrorCode = 'NOT_LIVE' | 'NO_ROUND' | 'BAD_ROUND' | 'STATE_REFUSED' | 'NO_STATE' | 'STOPPED';

/** Terminal: the worker cannot continue live (the agent then handles it as a failed worker). */
export class LiveRecoveryError extends Error {
  readonly code: LiveRecoveryErrorCode;
  readonly rank: number | undefined;
  readonly round: number | undefined;
  constructor(
    code: LiveRecoveryErrorCode,
    message: string,
    opts: { rank?: number; round?: number; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'LiveRecoveryError';
    this.code = code;
    this.rank = opts.rank;
    this.round = opts.round;
  }
}

export interface LiveRecoveryOptions {
  /** A live control client (connectControl()); throws NOT_LIVE otherwise. */
  readonly control: ControlClient;
  readonly state: ElasticState;
  /** The first round; default `roundFromEnv()`. */
  readonly initial?: RoundSpec;
  /** Collective (and group set-up) timeout of every group. */
  readonly timeoutMs: number;
  /** How long a failed step waits for the agent's next round. Default 30 000 ms. */
  readonly roundWaitMs?: number;
  /** Default 'tcp'. */
  readonly backend?: Backend;
  /** Builds the group of a round; default initProcessGroup with the round's fields. */
  readonly createGroup?: (spec: RoundSpec, timeoutMs: number) => Promise<ProcessGroup>;
  /**
   * Ends a wait for the next round at once with LiveRecoveryError('STOPPED') (e.g. aborted on SIGTERM: a worker
   * being preempted must save within the grace period, not wait for a round that will not come).
   */
  readonly signal?: AbortSignal;
  /** Called on every new group after the state is agreed (every rank at the same point): rebuild DDP here. */
  readonly onGroup?: (pg: ProcessGroup, spec: RoundSpec) => Promise<void> | void;
  readonly logger?: Logger;
}

const RECOVERABLE = new Set(['PEER_LOST', 'TIMEOUT', 'ABORTED', 'CLOSED', 'STORE']);

/** A collective failure the next round can cure (as opposed to a bug or bad input). */
export function isRecoverableFault(err: unknown): boolean {
  return err instanceof CollectiveError && RECOVERABLE.has(err.code);
}

function intEnv(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = /^\d+$/.test(raw.trim()) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(v)) {
    throw new LiveRecoveryError('BAD_ROUND', `${name}=${JSON.stringify(raw)}: expected an integer ≥ 0`);
  }
  return v;
}

/** The first round from the worker environment. Throws CollectiveError('INVALID_ARGUMENT') naming a bad variable. */
export function roundFromEnv(env: NodeJS.ProcessEnv = process.env): RoundSpec {
  const cfg = resolveWorkerConfig({}, env);
  const restartCount = intEnv(env, 'TORCHELASTIC_RESTART_COUNT', 0);
  return {
    round: intEnv(env, 'TENSILE_ROUND', restartCount),
    rank: cfg.rank,
    worldSize: cfg.worldSize,
    localRank: cfg.localRank,
    masterAddr: cfg.masterAddr,
    masterPort: cfg.masterPort,
    restartCount,
  };
}

/** Whether this process is a warm standby (TENSILE_STANDBY=1): its environment's rank and round are not its own. */
export function isStandby(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[STANDBY_ENV] === '1';
}

/**
 * A warm standby's wait to be promoted: resolves with the first `round` the agent sends it, whose rank, localRank,
 * worldSize and master are authoritative (the environment's RANK, LOCAL_RANK, WORLD_SIZE, MASTER_* are not; pass
 * the result as `initial` to LiveRecovery.start). Waits without bound while the channel is live (a standby may
 * wait as long as the job runs); rejects LiveRecoveryError NOT_LIVE when the channel is or becomes non-live,
 * STOPPED on `signal`, BAD_ROUND for an inconsistent round.
 */
export async function waitForPromotion(control: ControlClient, signal?: AbortSignal): Promise<RoundSpec> {
  const pollMs = 1000;
  for (;;) {
    if (signal?.aborted) throw new LiveRecoveryError('STOPPED', 'standby: stopped while waiting for a round');
    if (!control.live) {
      throw new LiveRecoveryError('NOT_LIVE', `standby: the control channel is not live: ${control.reason ?? '?'}`);
    }
    const msg = await control.nextRound(pollMs);
    if (msg) return roundSpecOf(msg);
  }
}

/** Checks a round message's cross-field invariants (the schema checks each field). */
export function roundSpecOf(msg: RoundMessage): RoundSpec {
  if (msg.rank >= msg.worldSize) {
    throw new LiveRecoveryError(
      'BAD_ROUND',
      `round ${msg.round}: rank ${msg.rank}: expected < worldSize (${msg.worldSize})`,
      { round: msg.round },
    );
  }
  if (msg.localRank >= msg.localWorldSize) {
    throw new LiveRecoveryError(
      'BAD_ROUND',
      `round ${msg.round}: localRank ${msg.localRank}: expected < localWorldSize (${msg.localWorldSize})`,
      { round: msg.round },
    );
  }
  return {
    round: msg.round,
    rank: msg.rank,
    worldSize: msg.worldSize,
    localRank: msg.localRank,
    masterAddr: msg.masterAddr,
    masterPort: msg.masterPort,
    restartCount: msg.restartCount,
  };
}

interface Agreement {
  readonly checkpoint?: string;
  readonly stateFrom: StateFrom;
  readonly sourceRank: number | null;
  readonly stepsLost: number | null;
  readonly bytes: number;
  /** Milliseconds this rank spent sending or receiving `bytes` (absent: no transfer). */
  readonly transferMs?: number;
}

const DEFAULT_ROUND_WAIT_MS = 30_000;

export class LiveRecovery {
  private group: ProcessGroup | null = null;
  private spec: RoundSpec;
  private hasState = false;
  private lastReady: RecoveryRecord | null = null;
  private readonly newerRound = new Set<() => void>();
  private readonly receivedAtMs = new Map<number, number>();
  private readonly unsubscribe: () => void;
  private readonly logger: Logger;
  private readonly roundWaitMs: number;
  private readonly createGroup: (spec: RoundSpec, timeoutMs: number) => Promise<ProcessGroup>;
  /** Every start and recovery of this worker, oldest first. */
  readonly history: RecoveryRecord[] = [];

  private constructor(private readonly opts: LiveRecoveryOptions) {
    if (!opts.control.live) {
      throw new LiveRecoveryError(
        'NOT_LIVE',
        `LiveRecovery needs a live control channel: ${opts.control.reason ?? 'not connected'}`,
      );
    }
    this.logger = opts.logger ?? noopLogger;
    this.roundWaitMs = opts.roundWaitMs ?? DEFAULT_ROUND_WAIT_MS;
    this.spec = opts.initial ?? roundFromEnv();
    this.createGroup =
      opts.createGroup ??
      ((s, timeoutMs) =>
        initProcessGroup({
          backend: opts.backend ?? 'tcp',
          rank: s.rank,
          worldSize: s.worldSize,
          localRank: s.localRank,
          masterAddr: s.masterAddr,
          masterPort: s.masterPort,
          timeoutMs,
        }));
    this.unsubscribe = opts.control.onRound((r) => this.onRoundMessage(r));
  }

  /**
   * Builds the first round's group, agrees on state (disk or fresh at a job's start; a peer's for a replacement
   * worker) and sends `ready`. Rejects with LiveRecoveryError (terminal) or, when no next round comes after a
   * failure during start, NO_ROUND.
   */
  static async start(opts: LiveRecoveryOptions): Promise<LiveRecovery> {
    const live = new LiveRecovery(opts);
    const t0 = performance.now();
    live.receivedAtMs.set(live.spec.round, t0);
    await live.recover(live.spec, 'start', t0, null);
    return live;
  }

  /** The current round's process group. */
  get pg(): ProcessGroup {
    if (this.group === null) throw new CollectiveError('CLOSED', 'live recovery: no process group (closed)');
    return this.group;
  }

  get round(): number {
    return this.spec.round;
  }

  get rank(): number {
    return this.spec.rank;
  }

  get worldSize(): number {
    return this.spec.worldSize;
  }

  /** Reports progress to the agent (throttled by the control client). */
  heartbeat(step: number, epoch?: number): void {
    this.opts.control.heartbeat(step, epoch);
  }

  /**
   * Runs one unit of work (a training step, an evaluation) on the current group. Resolves `{ done: true }` when it
   * completed; `{ done: false, recovery }` when a round arrived before it or a collective in it failed: the work was
   * discarded, the new group is built and the state agreed (it may have moved to a peer's newer step), so the
   * caller re-reads its position from the state and carries on. Other errors reject unchanged.
   */
  async step<T>(fn: (pg: ProcessGroup) => Promise<T>): Promise<StepOutcome<T>> {
    const pending = await this.takeNewerRound();
    if (pending !== null) return { done: false, recovery: await this.recover(pending, 'round announced', null, null) };
    try {
      return { done: true, value: await fn(this.pg) };
    } catch (err) {
      if (!isRecoverableFault(err)) throw err;
      const detectedMs = performance.now();
      const code = (err as CollectiveError).code;
      if (code === 'PEER_LOST') {
        const peer = (err as CollectiveError).peerRank;
        this.opts.control.peerLost(peer === undefined ? undefined : [peer]);
      }
      if (code !== 'ABORTED') {
        this.logger.warn(
          { round: this.spec.round, rank: this.spec.rank, step: this.opts.state.step, err: (err as Error).message },
          `live recovery: a collective failed (${code}); waiting up to ${this.roundWaitMs} ms for the next round`,
        );
      }
      const next = await this.waitRound(err);
      return {
        done: false,
        recovery: await this.recover(next, `${code}: ${(err as Error).message}`, null, detectedMs),
      };
    }
  }

  /** Destroys the group (waiting for pending operations) and closes the control channel. */
  async close(): Promise<void> {
    this.unsubscribe();
    const g = this.group;
    this.group = null;
    await g?.destroy();
    this.opts.control.close();
  }

  // ---- rounds ------------------------------------------------------------------------------------------------

  private onRoundMessage(r: RoundMessage): void {
    if (!this.receivedAtMs.has(r.round)) this.receivedAtMs.set(r.round, performance.now());
    if (r.round <= this.spec.round) return; // a repeat: answered when taken (takeNewerRound / waitRound)
    this.logger.info({ round: r.round, from: this.spec.round }, 'live recovery: new round announced');
    this.group?.abort(`round ${r.round} announced`);
    for (const fn of [...this.newerRound]) fn();
  }

  /** Answers a repeated round with `ready` again; returns true when `r` is newer than the current round. */
  private isNewer(r: RoundMessage): boolean {
    if (r.round > this.spec.round) return true;
    if (r.round === this.spec.round && this.lastReady !== null && this.lastReady.round === r.round) {
      this.sendReady(this.lastReady);
    }
    return false;
  }

  /** A newer round already received, if any (taken from the client). Older or repeated ones are consumed. */
  private async takeNewerRound(): Promise<RoundSpec | null> {
    while (this.opts.control.peekRound() !== null) {
      const r = await this.opts.control.nextRound(0);
      if (r !== null && this.isNewer(r)) return roundSpecOf(r);
    }
    return null;
  }

  /** Waits (bounded) for a round newer than the current one; throws NO_ROUND with `cause` when none comes. */
  private async waitRound(cause: unknown): Promise<RoundSpec> {
    const deadline = performance.now() + this.roundWaitMs;
    for (;;) {
      const left = deadline - performance.now();
      const r = left > 0 ? await this.nextRoundOrStop(left) : null;
      if (r === 'stopped') {
        throw new LiveRecoveryError(
          'STOPPED',
          `rank ${this.spec.rank} (round ${this.spec.round}): ${(cause as Error).message}; stopped while waiting for the next round`,
          { rank: this.spec.rank, round: this.spec.round, cause },
        );
      }
      if (r === null) {
        const why = this.opts.control.live ? `none within ${this.roundWaitMs} ms` : `${this.opts.control.reason}`;
        throw new LiveRecoveryError(
          'NO_ROUND',
          `rank ${this.spec.rank} (round ${this.spec.round}): ${(cause as Error).message}; no new round from the agent: ${why}`,
          { rank: this.spec.rank, round: this.spec.round, cause },
        );
      }
      if (this.isNewer(r)) return roundSpecOf(r);
    }
  }

  /** The control client's nextRound, ended early by the stop signal. */
  private nextRoundOrStop(timeoutMs: number): Promise<RoundMessage | null | 'stopped'> {
    const signal = this.opts.signal;
    if (signal === undefined) return this.opts.control.nextRound(timeoutMs);
    if (signal.aborted) return Promise.resolve('stopped');
    return new Promise((resolve) => {
      const onAbort = (): void => resolve('stopped');
      signal.addEventListener('abort', onAbort, { once: true });
      void this.opts.control.nextRound(timeoutMs).then((r) => {
        signal.removeEventListener('abort', onAbort);
        resolve(r);
      });
    });
  }

  /** Builds the group of `spec`, or rejects with ABORTED as soon as a newer round arrives (the build then is
   * left to finish or fail on its own and is torn down). */
  private buildGroup(spec: RoundSpec): Promise<ProcessGroup> {
    const build = this.createGroup(spec, this.opts.timeoutMs);
    return new Promise((resolve, reject) => {
      let settled = false;
      const superseded = (): void => {
        if (settled) return;
        settled = true;
        this.newerRound.delete(superseded);
        reject(new CollectiveError('ABORTED', `round ${spec.round} superseded while its group was being built`));
        build.then(
          (g) => g.abort('superseded'),
          () => undefined,
        );
      };
      this.newerRound.add(superseded);
      build.then(
        (g) => {
          if (settled) return;
          settled = true;
          this.newerRound.delete(superseded);
          resolve(g);
        },
        (e: unknown) => {
          if (settled) return;
          settled = true;
          this.newerRound.delete(superseded);
          reject(e);
        },
      );
    });
  }

  // ---- recovery ----------------------------------------------------------------------------------------------

  /**
   * Moves this worker into `first` (or a newer round that supersedes it): abort the old group, build the new one,
   * agree on state, onGroup, ready. A recoverable failure on the way waits for the next round.
   */
  private async recover(
    first: RoundSpec,
    cause: string,
    startMs: number | null,
    detectedMs: number | null,
  ): Promise<RecoveryRecord> {
    const previousRound = this.group === null && this.history.length === 0 ? null : this.spec.round;
    const t0 = startMs ?? this.receivedAtMs.get(first.round) ?? performance.now();
    const fault = Math.min(detectedMs ?? t0, t0);
    let spec = first;
    for (;;) {
      this.group?.abort(`moving to round ${spec.round}`);
      this.group = null;
      this.spec = spec;
      try {
        const newer = await this.takeNewerRound();
        if (newer !== null) {
          spec = newer;
          continue;
        }
        const pg = await this.buildGroup(spec);
        this.group = pg;
        this.opts.state.rebind({ rank: spec.rank, worldSize: spec.worldSize, processGroup: pg });
        const agreed = await this.agree(pg);
        this.hasState = true;
        await this.opts.onGroup?.(pg, spec);
        const now = performance.now();
        const record: RecoveryRecord = {
          round: spec.round,
          previousRound,
          rank: spec.rank,
          worldSize: spec.worldSize,
          stateFrom: agreed.stateFrom,
          sourceRank: agreed.sourceRank,
          step: this.opts.state.step,
          stepsLost: agreed.stepsLost,
          recoveryMs: now - (this.receivedAtMs.get(spec.round) ?? t0),
          sinceFaultMs: now - fault,
          bytes: agreed.bytes,
          transferMs: agreed.transferMs ?? 0,
          checkpoint: agreed.checkpoint ?? null,
          cause,
        };
        this.history.push(record);
        this.sendReady(record);
        for (const k of this.receivedAtMs.keys()) if (k <= spec.round) this.receivedAtMs.delete(k);
        return record;
      } catch (err) {
        if (!isRecoverableFault(err)) throw err;
        this.logger.warn(
          { round: spec.round, rank: spec.rank, err: (err as Error).message },
          'live recovery: the new round failed before it was ready; waiting for the next round',
        );
        spec = await this.waitRound(err);
      }
    }
  }

  private sendReady(r: RecoveryRecord): void {
    this.lastReady = r;
    this.opts.control.ready({
      round: r.round,
      step: r.step,
      stateFrom: r.stateFrom,
      recoveryMs: Math.max(0, Math.round(r.recoveryMs * 1000) / 1000),
    });
  }

  /** The state agreement of state-transfer.ts, with one retry of a corrupt transfer and the disk fallbacks. */
  private async agree(pg: ProcessGroup): Promise<Agreement> {
    const state = this.opts.state;
    const mine = state.snapshot();
    const claim: StateClaim = this.hasState
      ? { hasState: true, step: state.step, fingerprint: stateFingerprint(mine) }
      : { hasState: false, step: 0, fingerprint: 0 };
    const plan = planStateAgreement(await exchangeClaims(pg, claim));
    if (plan.kind === 'keep') return { stateFrom: 'self', sourceRank: null, stepsLost: 0, bytes: 0 };
    if (plan.kind === 'disk') return this.fromDisk(pg, null, 'no rank holds live state');
    if (plan.divergent.includes(pg.rank)) {
      this.logger.warn(
        { rank: pg.rank, step: plan.step, source: plan.source },
        'live recovery: this rank holds a different state at the same step as the source; replacing it',
      );
    }
    let pending = plan.receivers;
    for (let attempt = 0; ; attempt++) {
      const members = [plan.source, ...pending];
      const group = members.length === pg.worldSize && plan.source === 0 ? pg : await pg.newGroup(members);
      let status = 0; // 0 fine (or not involved), 1 corrupt/undecodable (retry), 2 refused (terminal)
      let refusal: Error | null = null;
      let bytes = 0;
      const transferStart = performance.now();
      let transferMs = 0;
      if (pg.rank === plan.source) {
        bytes = (await sendState(group!, mine)).bytes;
        transferMs = performance.now() - transferStart;
      } else if (pending.includes(pg.rank)) {
        try {
          const got = await receiveState(group!, mine, plan.source);
          transferMs = performance.now() - transferStart;
          state.applySnapshot(got.tensors, got.state, `state from rank ${plan.source}`);
          this.hasState = true;
          bytes = got.bytes;
        } catch (err) {
          if (err instanceof StateTransferError && err.code !== 'STATE_MISMATCH') {
            status = 1;
            this.logger.warn({ rank: pg.rank, attempt, err: err.message }, 'live recovery: state transfer failed');
          } else if (
            (err instanceof StateTransferError && err.code === 'STATE_MISMATCH') ||
            (err instanceof TensorError && err.code === 'STATE_DICT_MISMATCH')
          ) {
            status = 2;
            refusal = err as Error;
          } else throw err;
        }
      }
      const statuses = await exchangeStatus(pg, status);
      const refused = statuses.findIndex((s) => s === 2);
      if (refused >= 0) {
        throw new LiveRecoveryError(
          'STATE_REFUSED',
          refusal !== null
            ? `rank ${pg.rank} refuses the state of rank ${plan.source}: ${refusal.message}`
            : `rank ${refused} refused the state of rank ${plan.source} (its log names the tensor)`,
          { rank: pg.rank, round: this.spec.round, cause: refusal ?? undefined },
        );
      }
      const failed = statuses.flatMap((s, r) => (s === 1 ? [r] : []));
      if (failed.length === 0) {
        const stateFrom: StateFrom = pg.rank === plan.source || !plan.receivers.includes(pg.rank) ? 'self' : 'peer';
        return { stateFrom, sourceRank: stateFrom === 'peer' ? plan.source : null, stepsLost: 0, bytes, transferMs };
      }
      if (attempt >= 1) {
        return this.fromDisk(pg, plan.step, `the state transfer to ranks ${failed.join(', ')} failed twice`);
      }
      this.logger.warn({ ranks: failed, source: plan.source }, 'live recovery: retrying the state transfer once');
      pending = failed;
    }
  }

  /**
   * Every rank restores the newest disk checkpoint (`state.restore()`, which checks that all restored the same
   * step). `heldStep` is the newest live step that is being given up (null when nobody held live state).
   * A fresh start (no checkpoint) copies rank 0's initial state to everyone, so replicas start identical.
   */
  private async fromDisk(pg: ProcessGroup, heldStep: number | null, why: string): Promise<Agreement> {
    const state = this.opts.state;
    if (heldStep !== null) {
      this.logger.warn({ rank: pg.rank, heldStep }, `live recovery: ${why}; falling back to the newest checkpoint`);
    }
    const info = await state.restore();
    if (info.file !== null) this.hasState = true;
    if (info.file === null) {
      if (heldStep !== null) {
        throw new LiveRecoveryError(
          'NO_STATE',
          `${why}, and ${state.dir} holds no checkpoint to fall back to: cannot continue with consistent state`,
          { rank: pg.rank, round: this.spec.round },
        );
      }
      let bytes = 0;
      if (pg.worldSize > 1) {
        if (pg.rank === 0) bytes = (await sendState(pg, state.snapshot())).bytes;
        else {
          const got = await receiveState(pg, state.snapshot(), 0);
          state.applySnapshot(got.tensors, got.state, 'initial state from rank 0');
          bytes = got.bytes;
        }
      }
      return { stateFrom: 'fresh', sourceRank: null, stepsLost: null, bytes };
    }
    const stepsLost = heldStep === null ? null : Math.max(0, heldStep - info.step);
    if (stepsLost !== null && stepsLost > 0) {
      this.logger.warn(
        { rank: pg.rank, file: info.file, step: info.step, stepsLost },
        `live recovery: resumed from ${info.file}: ${stepsLost} steps lost`,
      );
    }
    return { stateFrom: 'disk', sourceRank: null, stepsLost, bytes: 0, checkpoint: info.file };
  }
}

async function exchangeStatus(pg: ProcessGroup, status: number): Promise<number[]> {
  const all = new Int32Array(pg.worldSize);
  if (pg.worldSize === 1) all[0] = status;
  else await pg.allgather(new Int32Array([status]), all);
  return Array.from(all);
}
