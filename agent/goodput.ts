// Recoveries and goodput of this agent's run: what each recovery cost (time, steps lost) and productive time over
// wall time (live-policy.ts goodput). Mechanism only: the agent says when a recovery begins and ends.

import type { RecoveryEntry } from '../rendezvous/api.js';
import { goodput, stepsLost } from './live-policy.js';

export type RecoveryCause = 'worker-failure' | 'membership' | 'hang';

export interface RecoveryRecord {
  readonly cause: RecoveryCause;
  readonly path: 'live' | 'restart';
  readonly startedAtMs: number;
  readonly recoveryMs: number;
  /** Null when the workers send no heartbeats (the step is unknown). */
  readonly stepsLost: number | null;
  readonly detail: string;
}

interface Open {
  readonly cause: RecoveryCause;
  readonly path: 'live' | 'restart';
  readonly startedAtMs: number;
  readonly lastStep: number | null;
  readonly detail: string;
}

const KEEP = 20;

export class GoodputTracker {
  private open: Open | null = null;
  private readonly done: RecoveryRecord[] = [];
  private recoveryMsTotal = 0;
  private lostTotal = 0;

  constructor(private readonly startedAtMs = Date.now()) {}

  /** A recovery begins (an open one is closed first, as it ended when the next began). */
  begin(
    cause: RecoveryCause,
    path: 'live' | 'restart',
    lastStep: number | null,
    detail: string,
    atMs = Date.now(),
  ): void {
    if (this.open) this.end(null, atMs);
    this.open = { cause, path, startedAtMs: atMs, lastStep, detail };
  }

  get inRecovery(): boolean {
    return this.open !== null;
  }

  /** Training runs again from `resumedStep` (null: unknown). Returns the record, or null when none was open. */
  end(resumedStep: number | null, atMs = Date.now()): RecoveryRecord | null {
    const o = this.open;
    if (!o) return null;
    this.open = null;
    const rec: RecoveryRecord = {
      cause: o.cause,
      path: o.path,
      startedAtMs: o.startedAtMs,
      recoveryMs: Math.max(0, atMs - o.startedAtMs),
      stepsLost: stepsLost(o.lastStep, resumedStep),
      detail: o.detail,
    };
    this.done.push(rec);
    if (this.done.length > KEEP) this.done.shift();
    this.recoveryMsTotal += rec.recoveryMs;
    this.lostTotal += rec.stepsLost ?? 0;
    return rec;
  }

  /** The most recent recoveries, oldest first (at most 20). */
  get recoveries(): readonly RecoveryRecord[] {
    return this.done;
  }

  get stepsLostTotal(): number {
    return this.lostTotal;
  }

  ratio(medianStepMs: number | null, atMs = Date.now()): number {
    const openMs = this.open ? atMs - this.open.startedAtMs : 0;
    return goodput(atMs - this.startedAtMs, this.recoveryMsTotal + openMs, this.lostTotal, medianStepMs);
  }
}

/** A finished recovery as published for `tensile status` (`round`: the round training resumed in). */
export function toRecoveryEntry(rec: RecoveryRecord, round: number): RecoveryEntry {
  return {
    cause: rec.cause,
    path: rec.path,
    recoveryMs: rec.recoveryMs,
    stepsLost: rec.stepsLost,
    round,
    startedAtMs: rec.startedAtMs,
    detail: rec.detail,
  };
}
