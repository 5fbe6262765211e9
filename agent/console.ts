// Worker output on the agent's console, and the live status line on a TTY (redrawn under the output).

import type { ConsoleSink } from './worker-group.js';

export interface StatusFields {
  state: string;
  workersUp: number;
  workersTotal: number;
  restartsUsed: number;
  maxRestarts: number;
  round: number | null;
  worldSize: number | null;
  /** Productive time / wall time, 0..1, or null before it is known. */
  goodput: number | null;
  /** The most recent recovery, e.g. "live 0.21 s, 0 steps lost". */
  lastRecovery: string | null;
}

export class AgentConsole implements ConsoleSink {
  private status: StatusFields | null = null;
  private readonly startedMs = Date.now();
  private drawn = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly err: NodeJS.WriteStream,
    private readonly statusLine: boolean,
  ) {
    if (statusLine) {
      this.timer = setInterval(() => this.draw(), 1000);
      this.timer.unref();
    }
  }

  line(stream: 'stdout' | 'stderr', prefix: string, text: string): void {
    this.clear();
    (stream === 'stdout' ? this.out : this.err).write(`${prefix} ${text}\n`);
    this.draw();
  }

  /** A message from the agent itself that must not be garbled by the status line. */
  message(text: string): void {
    this.clear();
    this.err.write(text.endsWith('\n') ? text : `${text}\n`);
    this.draw();
  }

  update(fields: Partial<StatusFields>): void {
    if (!this.statusLine) return;
    this.status = { ...(this.status ?? emptyStatus()), ...fields };
    this.draw();
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.clear();
  }

  private clear(): void {
    if (!this.drawn) return;
    this.err.write('\r\x1b[2K');
    this.drawn = false;
  }

  private draw(): void {
    if (!this.statusLine || !this.status) return;
    const s = this.status;
    const secs = Math.floor((Date.now() - this.startedMs) / 1000);
    const elapsed = `${String(Math.floor(secs / 60)).padStart(2, '0')}:${String(secs % 60).padStart(2, '0')}`;
    const parts = [
      `tensile ${s.state.toLowerCase()}`,
      `workers ${s.workersUp}/${s.workersTotal} up`,
      `restarts ${s.restartsUsed}/${s.maxRestarts}`,
      s.round === null ? null : `round ${s.round}`,
      s.worldSize === null ? null : `world ${s.worldSize}`,
      s.goodput === null ? null : `goodput ${(s.goodput * 100).toFixed(1)}%`,
      s.lastRecovery === null ? null : `last recovery ${s.lastRecovery}`,
      elapsed,
    ].filter(Boolean);
    this.err.write(`\r\x1b[2K\x1b[2m${parts.join(' · ')}\x1b[0m`);
    this.drawn = true;
  }
}

function emptyStatus(): StatusFields {
  return {
    state: 'INIT',
    workersUp: 0,
    workersTotal: 0,
    restartsUsed: 0,
    maxRestarts: 0,
    round: null,
    worldSize: null,
    goodput: null,
    lastRecovery: null,
  };
}
