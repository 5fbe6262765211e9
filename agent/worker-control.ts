// The agent's side of live recovery as one mechanism: the control server, what each local rank's current process
// declared, which round it runs in, the hang watchdog, and the stack dump of a hung worker. Policy stays in
// live-policy.ts; agent.ts decides when to call what.
//
// Contract: `started()` is called for every process the agent spawns (before it can say hello); `sendRound()` and
// `waitReady()` carry a round change; `waitReady()` is bounded by its timeout and never rejects; `dumpAndKill()` is
// bounded by JS_STACK_REQUEST_MS + DUMP_GRACE_MS; `close()` removes the sockets.

import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { JS_STACK_INTERRUPT_TIMEOUT_MS, requestJsStack, stackScopeOf } from '../collective/js-stacks.js';
import type { RoundMessage } from '../common/control-protocol.js';
import type { Logger } from '../common/logger.js';
import type { RoundInfo } from '../rendezvous/api.js';
import type { RunOptions, WorkerExit } from './api.js';
import { ControlServer } from './control-server.js';
import type { WorkerView } from './live-policy.js';
import { WorkerMonitor, type HangInfo } from './worker-monitor.js';
import { worldSize } from './worker-env.js';
import type { WorkerGroupHandle, WorkerSpec } from './worker-group.js';

/** How often live workers send heartbeats (they throttle to this). */
export const HEARTBEAT_INTERVAL_MS = 500;
/** How long a hung worker gets to write its stacks before SIGKILL. */
export const DUMP_GRACE_MS = 2000;
/** Bound on asking a Node worker's stack dumper (its own interrupt wait, JS_STACK_INTERRUPT_TIMEOUT_MS, is less). */
export const JS_STACK_REQUEST_MS = JS_STACK_INTERRUPT_TIMEOUT_MS + 500;

interface RankInfo {
  /** The round the current process was started in (its environment). */
  startedInRound: number;
  /** The current process said hello with live: true (kept after it exits: its replacement is expected live too). */
  declaredLive: boolean;
  /** The newest round this process reported ready for. */
  readyRound: number;
  readyStep: number | null;
  logDir: string | null;
}

export interface ReadyResult {
  /** Local ranks that did not report ready in time. */
  readonly missing: readonly number[];
  /** The lowest step the ready workers hold (where training resumes), or null when none said. */
  readonly step: number | null;
}

export class WorkerControl {
  readonly monitor: WorkerMonitor;
  private readonly ranks = new Map<number, RankInfo>();
  private currentRound: RoundMessage[] = [];
  private liveRound = -1;
  private readyWaiter: (() => void) | null = null;
  private heartbeatListener: ((localRank: number, step: number, atMs: number) => void) | null = null;
  private peerLostListener: ((localRank: number) => void) | null = null;
  private readyListener: ((localRank: number, step: number, round: number) => void) | null = null;

  private constructor(
    private readonly server: ControlServer,
    private readonly opts: RunOptions,
    private readonly log: Logger,
    onHang: (info: HangInfo) => void,
  ) {
    this.monitor = new WorkerMonitor(opts.hangTimeoutMs, onHang);
    server.setListener({
      hello: (r, msg) => {
        const info = this.ranks.get(r);
        if (!info) return;
        info.declaredLive = msg.live;
        log.debug({ localRank: r, pid: msg.pid, live: msg.live }, 'worker connected to the control channel');
        // The round changed between this process's spawn and its hello: tell it now.
        const pending = this.currentRound[r];
        if (msg.live && opts.recovery === 'live' && pending && info.startedInRound < this.liveRound)
          server.send(r, pending);
      },
      heartbeat: (r, msg, atMs) => {
        if (!this.ranks.has(r)) return; // a standby slot: not a rank, never watched
        this.monitor.heartbeat(r, msg.step, atMs);
        this.heartbeatListener?.(r, msg.step, atMs);
      },
      ready: (r, msg) => {
        const info = this.ranks.get(r);
        if (!info) return;
        info.readyRound = Math.max(info.readyRound, msg.round);
        info.readyStep = msg.step;
        this.monitor.expect(r, Date.now());
        this.readyListener?.(r, msg.step, msg.round);
        log.info(
          { localRank: r, round: msg.round, step: msg.step, stateFrom: msg.stateFrom, recoveryMs: msg.recoveryMs },
          'worker ready',
        );
        this.readyWaiter?.();
      },
      peerLost: (r) => this.peerLostListener?.(r),
    });
  }

  static async start(opts: RunOptions, log: Logger, onHang: (info: HangInfo) => void): Promise<WorkerControl> {
    // Local ranks, then one socket per warm standby slot (nprocPerNode + i).
    const standbys = opts.recovery === 'live' ? (opts.standbyWorkers ?? 0) : 0;
    const ranks = Array.from({ length: opts.nprocPerNode + standbys }, (_, i) => i);
    const server = await ControlServer.start({
      localRanks: ranks,
      heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
      logger: log,
    });
    return new WorkerControl(server, opts, log, onHang);
  }

  socketPath(localRank: number): string {
    return this.server.socketPath(localRank);
  }

  onHeartbeat(fn: (localRank: number, step: number, atMs: number) => void): void {
    this.heartbeatListener = fn;
  }

  onReady(fn: (localRank: number, step: number, round: number) => void): void {
    this.readyListener = fn;
  }

  /** Whether every rank in `ranks` reported ready for `round` (or a later one). */
  allReady(ranks: readonly number[], round: number): boolean {
    return ranks.every((r) => (this.ranks.get(r)?.readyRound ?? -1) >= round);
  }

  onPeerLost(fn: (localRank: number) => void): void {
    this.peerLostListener = fn;
  }

  /** A new process for this rank was (or is about to be) spawned in `round`. */
  started(spec: WorkerSpec, round: number): void {
    this.server.forget(spec.localRank);
    this.monitor.forget(spec.localRank);
    this.ranks.set(spec.localRank, {
      startedInRound: round,
      declaredLive: false,
      readyRound: -1,
      readyStep: null,
      logDir: spec.logDir,
    });
    this.liveRound = Math.max(this.liveRound, round);
  }

  /** The control slot (a socket that is not a rank) of warm standby `i`. */
  standbySlot(i: number): number {
    return this.opts.nprocPerNode + i;
  }

  /** Whether the standby in `slot` said hello live and is still connected (it can be promoted). */
  standbyReady(slot: number): boolean {
    return this.server.isLive(slot);
  }

  /**
   * The standby in `slot` takes `spec.localRank` in `round`: its connection now speaks for that rank. The caller
   * then sends it the round (sendRound without skipping it). False when the standby is not connected.
   */
  promote(slot: number, spec: WorkerSpec, round: number): boolean {
    this.monitor.forget(spec.localRank);
    if (!this.server.adopt(slot, spec.localRank)) return false;
    this.ranks.set(spec.localRank, {
      startedInRound: round,
      declaredLive: true,
      readyRound: -1,
      readyStep: null,
      logDir: spec.logDir,
    });
    this.liveRound = Math.max(this.liveRound, round);
    return true;
  }

  /** What the live/restart policy needs to know of each local rank. */
  views(group: WorkerGroupHandle): WorkerView[] {
    return [...this.ranks.keys()]
      .sort((a, b) => a - b)
      .map((r) => {
        const running = group.pidOf(r) !== null;
        const last = lastExitOf(group.observedExits, r);
        const failed = !running && last !== undefined && last.exitCode !== 0 && !last.stoppedByAgent;
        return {
          localRank: r,
          live: running ? this.server.isLive(r) : (this.ranks.get(r)?.declaredLive ?? false),
          running,
          failed,
        };
      });
  }

  /** Announces `round` to every running rank not started in it; returns the messages per local rank. */
  sendRound(round: RoundInfo, specs: readonly WorkerSpec[], skip: ReadonlySet<number>): void {
    this.liveRound = round.round;
    this.currentRound = [];
    for (const spec of specs) {
      const msg: RoundMessage = {
        type: 'round',
        round: round.round,
        rank: spec.globalRank,
        localRank: spec.localRank,
        worldSize: worldSize(round),
        localWorldSize: this.opts.nprocPerNode,
        groupRank: round.groupRank,
        groupWorldSize: round.groupWorldSize,
        masterAddr: round.master.addr,
        masterPort: round.master.port,
        restartCount: round.failureRestarts,
      };
      this.currentRound[spec.localRank] = msg;
      if (skip.has(spec.localRank)) continue;
      if (!this.server.send(spec.localRank, msg))
        this.log.warn({ localRank: spec.localRank }, 'cannot announce the round: the worker is not connected');
    }
  }

  /** Waits until every rank in `ranks` reported ready for `round`, at most `timeoutMs`. Never rejects. */
  async waitReady(ranks: readonly number[], round: number, timeoutMs: number): Promise<ReadyResult> {
    const missing = (): number[] => ranks.filter((r) => (this.ranks.get(r)?.readyRound ?? -1) < round);
    const deadline = Date.now() + timeoutMs;
    while (missing().length > 0 && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.readyWaiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.readyWaiter = null;
    }
    const steps = ranks.map((r) => this.ranks.get(r)?.readyStep).filter((s): s is number => typeof s === 'number');
    return { missing: missing(), step: steps.length > 0 ? Math.min(...steps) : null };
  }

  /**
   * Takes a hung worker's stacks into its log dir and kills it: SIGCONT (a stopped process must run to dump); for a
   * Node worker first its JavaScript stack through the native stack dumper (a V8 interrupt reaches a busy loop, which
   * nothing else does), into js-stack-pid<pid>.txt, bounded by JS_STACK_REQUEST_MS; then a `dump` request and
   * SIGUSR2 (Node: diagnostic report) or SIGABRT (Python: faulthandler traceback on stderr, saved as stacks.txt), up
   * to DUMP_GRACE_MS more, then SIGKILL. Returns where the stacks went.
   */
  async dumpAndKill(group: WorkerGroupHandle, localRank: number): Promise<string | null> {
    const info = this.ranks.get(localRank);
    const dir = info?.logDir ?? null;
    const pid = group.pidOf(localRank);
    if (pid === null) return null;
    const runner = this.opts.runner;
    const node = runner === 'node' || runner === 'node-ts';
    if (dir) mkdirSync(dir, { recursive: true });
    group.signalWorker(localRank, 'SIGCONT');
    // Before the `dump` message: the interrupt runs at the next JavaScript the worker executes, and an idle worker's
    // next JavaScript would be the handler of that message, a stack that says nothing about the hang.
    if (node && dir) await this.writeJsStack(localRank, pid, dir);
    if (dir) {
      this.server.send(localRank, { type: 'dump', dir });
      group.captureStderr(localRank, join(dir, 'stacks.txt'));
    }
    if (runner === 'python' || runner === 'python-module') group.signalWorker(localRank, 'SIGABRT');
    else if (node) group.signalWorker(localRank, 'SIGUSR2');
    const deadline = Date.now() + DUMP_GRACE_MS;
    while (Date.now() < deadline && group.pidOf(localRank) === pid) {
      if (dir && node && hasReport(dir)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (node) await new Promise((r) => setTimeout(r, 100)); // let the report finish writing
    group.signalWorker(localRank, 'SIGKILL');
    return dir;
  }

  /** Asks the worker's stack dumper for its JavaScript stack and writes it beside stacks.txt; logs where, or why not. */
  private async writeJsStack(localRank: number, pid: number, dir: string): Promise<void> {
    const res = await requestJsStack(pid, JS_STACK_REQUEST_MS, stackScopeOf(this.server.socketPath(localRank)));
    if (!res.ok) {
      this.log.warn({ localRank, pid, reason: res.reason }, 'hung worker: no JavaScript stack from its stack dumper');
      return;
    }
    const file = join(dir, `js-stack-pid${pid}.txt`);
    try {
      writeFileSync(file, res.text);
      this.log.warn({ localRank, pid, file }, `hung worker JavaScript stack written to ${file}`);
    } catch (err) {
      this.log.error(
        { localRank, file, err: (err as Error).message },
        'cannot write the hung worker’s JavaScript stack',
      );
    }
  }

  pause(): void {
    this.monitor.pause();
  }

  resume(): void {
    this.monitor.resume();
  }

  async close(): Promise<void> {
    this.monitor.close();
    await this.server.close();
  }
}

function lastExitOf(exits: readonly WorkerExit[], localRank: number): WorkerExit | undefined {
  for (let i = exits.length - 1; i >= 0; i--) if (exits[i]?.localRank === localRank) return exits[i];
  return undefined;
}

function hasReport(dir: string): boolean {
  return existsSync(dir) && readdirSync(dir).some((n) => n.startsWith('report.') && n.endsWith('.json'));
}
