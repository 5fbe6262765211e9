// Heartbeats of the local workers: the newest step, recent step times, and the hang watchdog.
//
// Contract: `heartbeat()` (or `expect()`, on `ready`) arms the rank's watchdog and re-arms it whenever the step advances; no
// advance for the hang timeout (live-policy.ts hangTimeoutMs: the flag, else max(10 s, 5 × the recent median step
// time)) calls `onHang` once for that rank. `pause()` stops every watchdog (while a round is being formed: between
// `round` and `ready`), `resume()` re-arms them from now with a fresh step baseline. Timers are unref'd.

import { hangTimeoutMs, median } from './live-policy.js';

const STEP_SAMPLES = 32;

export interface HangInfo {
  readonly localRank: number;
  readonly step: number;
  readonly silentMs: number;
  readonly timeoutMs: number;
}

interface RankState {
  step: number | null;
  stepAtMs: number;
  timer: NodeJS.Timeout | null;
  armed: boolean;
}

export class WorkerMonitor {
  private readonly ranks = new Map<number, RankState>();
  private readonly stepMs: number[] = [];
  private paused = false;
  private newest: number | null = null;

  constructor(
    private readonly flagMs: number | null,
    private readonly onHang: (info: HangInfo) => void,
  ) {}

  heartbeat(localRank: number, step: number, atMs: number): void {
    let r = this.ranks.get(localRank);
    if (!r) {
      r = { step: null, stepAtMs: atMs, timer: null, armed: false };
      this.ranks.set(localRank, r);
    }
    this.newest = this.newest === null ? step : Math.max(this.newest, step);
    if (r.step !== null && step <= r.step) return; // no progress: the watchdog keeps running
    if (r.step !== null && atMs > r.stepAtMs) {
      this.stepMs.push((atMs - r.stepAtMs) / (step - r.step));
      if (this.stepMs.length > STEP_SAMPLES) this.stepMs.shift();
    }
    r.step = step;
    r.stepAtMs = atMs;
    r.armed = true;
    this.arm(localRank, r);
  }

  /**
   * The rank said `ready`: it is expected to make progress from now, so its watchdog is armed even before the first
   * heartbeat (a worker that hangs right after joining a round is caught too).
   */
  expect(localRank: number, atMs: number): void {
    if (this.ranks.has(localRank)) return;
    const r: RankState = { step: null, stepAtMs: atMs, timer: null, armed: true };
    this.ranks.set(localRank, r);
    this.arm(localRank, r);
  }

  /** The newest step any local worker reported, or null before the first heartbeat. */
  get newestStep(): number | null {
    return this.newest;
  }

  get medianStepMs(): number | null {
    return median(this.stepMs);
  }

  /** The hang timeout in force now. */
  get timeoutMs(): number {
    return hangTimeoutMs(this.flagMs, this.stepMs);
  }

  pause(): void {
    this.paused = true;
    for (const r of this.ranks.values()) this.disarm(r);
  }

  /** Re-arms every watched rank from now; the next heartbeat sets a new step baseline (a resumed step may be lower). */
  resume(): void {
    this.paused = false;
    const now = Date.now();
    for (const [rank, r] of this.ranks) {
      r.step = null;
      r.stepAtMs = now;
      if (r.armed) this.arm(rank, r);
    }
  }

  /** The rank's process is gone (exited or replaced): stop watching it until its successor's first heartbeat. */
  forget(localRank: number): void {
    const r = this.ranks.get(localRank);
    if (r) this.disarm(r);
    this.ranks.delete(localRank);
  }

  close(): void {
    for (const r of this.ranks.values()) this.disarm(r);
    this.ranks.clear();
  }

  private arm(localRank: number, r: RankState): void {
    this.disarm(r);
    if (this.paused) return;
    const timeoutMs = this.timeoutMs;
    r.timer = setTimeout(() => {
      r.timer = null;
      r.armed = false; // once per hang: the agent replaces the worker
      this.onHang({ localRank, step: r.step ?? -1, silentMs: Date.now() - r.stepAtMs, timeoutMs });
    }, timeoutMs);
    r.timer.unref();
  }

  private disarm(r: RankState): void {
    if (r.timer) clearTimeout(r.timer);
    r.timer = null;
  }
}
