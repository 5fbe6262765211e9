// The run's history: one JSON object per line in `<checkpoint dir>/history.jsonl`, appended by rank 0 (and by a
// failing rank for its own failure). It survives restarts, so the report can draw every round of the run.

import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export type HistoryEvent =
  | {
      type: 'round';
      timeMs: number;
      round: number;
      restartCount: number;
      worldSize: number;
      resumedStep: number;
      resumedFrom: string | null;
    }
  | { type: 'step'; timeMs: number; step: number; epoch: number; loss: number; worldSize: number }
  | {
      type: 'epoch';
      timeMs: number;
      epoch: number;
      step: number;
      loss: number;
      trainAccuracy: number;
      testAccuracy: number;
      samplesPerSec: number;
      worldSize: number;
      restartCount: number;
    }
  | { type: 'checkpoint'; timeMs: number; step: number; file: string; reason: string }
  | { type: 'failure'; timeMs: number; rank: number; step: number; round: number; message: string }
  | { type: 'done'; timeMs: number; step: number; testAccuracy: number; target: number; reached: boolean }
  | {
      /** A live recovery (tensor/live-recovery.ts), written by the new round's rank 0 when it is ready. */
      type: 'recovery';
      timeMs: number;
      round: number;
      worldSize: number;
      stateFrom: 'self' | 'peer' | 'disk' | 'fresh';
      /** From the round message to ready. */
      recoveryMs: number;
      /** From noticing the fault to ready: the downtime as this rank saw it. */
      sinceFaultMs: number;
      stepsLost: number | null;
      step: number;
      cause: string;
    };

export const HISTORY_FILE = 'history.jsonl';

export function historyPath(dir: string): string {
  return join(dir, HISTORY_FILE);
}

/** Appends one event (a single write of one line, so concurrent appenders do not interleave). */
export function appendHistory(dir: string, event: HistoryEvent): void {
  appendFileSync(historyPath(dir), `${JSON.stringify(event)}\n`);
}

/** Reads all events; a torn last line (a crash mid-append) is skipped. */
export function readHistory(dir: string): HistoryEvent[] {
  const path = historyPath(dir);
  if (!existsSync(path)) return [];
  const out: HistoryEvent[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    try {
      out.push(JSON.parse(line) as HistoryEvent);
    } catch {
      // A partial line from a killed writer: ignore it.
    }
  }
  return out;
}
