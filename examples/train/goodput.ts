// Goodput of a training run from its history (history.jsonl): the share of wall time spent on training that was
// kept. Pure: no I/O.
//
// - Downtime of a live recovery: its `recovery` event, from the fault (timeMs − sinceFaultMs) to ready (timeMs).
// - Downtime of a restart: from a `failure` to the next `round` (new processes running, checkpoint restored), when
//   that round was not entered live (no `recovery` event for it).
// - Lost work: steps completed before a fault and trained again after it (a restart resumes at the last checkpoint;
//   live recovery loses none), at the run's median time per step.
// goodput = (wall − downtime − lost work) / wall, wall = first round → done (or the last event).

import type { HistoryEvent } from './history.js';

export interface Outage {
  readonly kind: 'live' | 'restart';
  readonly startMs: number;
  readonly endMs: number;
  readonly stepsLost: number | null;
  /** Time of the lost steps (stepsLost × median step time), 0 when none or unknown. */
  readonly lostWorkMs: number;
  readonly round: number;
}

export interface Goodput {
  readonly startMs: number;
  readonly endMs: number;
  readonly wallMs: number;
  readonly downtimeMs: number;
  readonly lostWorkMs: number;
  /** In [0, 1]; 1 when the run had no wall time yet. */
  readonly goodput: number;
  readonly medianStepMs: number | null;
  readonly outages: readonly Outage[];
}

type Ev<T extends HistoryEvent['type']> = Extract<HistoryEvent, { type: T }>;

function of<T extends HistoryEvent['type']>(events: readonly HistoryEvent[], type: T): Ev<T>[] {
  return events.filter((e): e is Ev<T> => e.type === type);
}

/** Median milliseconds per step between consecutive `step` events of one round (world size unchanged). */
export function medianStepMs(events: readonly HistoryEvent[]): number | null {
  const steps = of(events, 'step');
  const per: number[] = [];
  for (let i = 1; i < steps.length; i++) {
    const a = steps[i - 1]!;
    const b = steps[i]!;
    const between = events.some(
      (e) => (e.type === 'round' || e.type === 'failure') && e.timeMs > a.timeMs && e.timeMs <= b.timeMs,
    );
    if (between || b.step <= a.step || b.worldSize !== a.worldSize) continue;
    per.push((b.timeMs - a.timeMs) / (b.step - a.step));
  }
  if (per.length === 0) return null;
  per.sort((x, y) => x - y);
  return per[Math.floor(per.length / 2)]!;
}

export function computeGoodput(events: readonly HistoryEvent[]): Goodput {
  const rounds = of(events, 'round');
  const times = events.map((e) => e.timeMs);
  const startMs = rounds.length > 0 ? rounds[0]!.timeMs : times.length > 0 ? Math.min(...times) : 0;
  const done = of(events, 'done').at(-1);
  const endMs = done?.timeMs ?? (times.length > 0 ? Math.max(...times) : startMs);
  const median = medianStepMs(events);
  const lostMs = (n: number | null): number => (n !== null && n > 0 && median !== null ? n * median : 0);
  const liveRounds = new Set(of(events, 'recovery').map((r) => r.round));
  const outages: Outage[] = of(events, 'recovery').map((r) => ({
    kind: 'live',
    startMs: r.timeMs - r.sinceFaultMs,
    endMs: r.timeMs,
    stepsLost: r.stepsLost,
    lostWorkMs: lostMs(r.stepsLost),
    round: r.round,
  }));
  for (const f of of(events, 'failure')) {
    const next = rounds.find((r) => r.timeMs >= f.timeMs);
    if (next === undefined || liveRounds.has(next.round)) continue;
    // Several failures before one restart (a whole group going down) are one outage.
    if (outages.some((o) => o.kind === 'restart' && o.round === next.round)) continue;
    const stepsLost = Math.max(0, f.step - next.resumedStep);
    outages.push({
      kind: 'restart',
      startMs: f.timeMs,
      endMs: next.timeMs,
      stepsLost,
      lostWorkMs: lostMs(stepsLost),
      round: next.round,
    });
  }
  outages.sort((a, b) => a.startMs - b.startMs);
  const wallMs = Math.max(0, endMs - startMs);
  const downtimeMs = outages.reduce((a, o) => a + Math.max(0, o.endMs - o.startMs), 0);
  const lostWorkMs = outages.reduce((a, o) => a + o.lostWorkMs, 0);
  const goodput = wallMs === 0 ? 1 : Math.min(1, Math.max(0, (wallMs - downtimeMs - lostWorkMs) / wallMs));
  return { startMs, endMs, wallMs, downtimeMs, lostWorkMs, goodput, medianStepMs: median, outages };
}
