// A one-shot local timer armed for one round at a time (the last-call window, the backup closer's delay). Local and
// monotonic: deadlines are never compared across machines.

export type RoundTimerState = 'none' | 'running' | 'elapsed';

export class RoundTimer {
  private armed: { round: number; timer: NodeJS.Timeout | null; elapsed: boolean } | null = null;

  /** `onElapsed` runs once when an armed timer fires (the handler reconciles then). */
  constructor(private readonly onElapsed: () => void) {}

  /** 'none' when not armed for `round` (never armed, cleared, or armed for another round). */
  stateFor(round: number): RoundTimerState {
    const a = this.armed;
    if (a === null || a.round !== round) return 'none';
    return a.elapsed ? 'elapsed' : 'running';
  }

  /** Arms the timer for `round`, replacing any earlier one. */
  start(round: number, delayMs: number): void {
    this.clear();
    const a: { round: number; timer: NodeJS.Timeout | null; elapsed: boolean } = { round, timer: null, elapsed: false };
    a.timer = setTimeout(() => {
      a.elapsed = true;
      a.timer = null;
      this.onElapsed();
    }, delayMs);
    this.armed = a;
  }

  clear(): void {
    if (this.armed?.timer) clearTimeout(this.armed.timer);
    this.armed = null;
  }
}
