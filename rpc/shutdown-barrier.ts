// The barrier of a graceful shutdown, served by rank 0. Each worker arrives only when no call of its own is in
// flight, so once every live worker has arrived no work is left anywhere and all may close. A worker that left
// (its stream closed) counts as arrived. Rank 0 answers every waiting BARRIER request at that moment.

import type { Dispatcher } from './dispatcher.js';
import { MsgType } from './frame.js';
import type { Conn } from './loopback-conn.js';
import type { WorkerTable } from './worker-table.js';

export class ShutdownBarrier {
  private readonly waiters = new Map<number, { conn: Conn; requestId: number }>();

  constructor(
    private readonly rank: number,
    private readonly table: WorkerTable,
    private readonly dispatcher: Dispatcher,
  ) {}

  /**
   * This worker arrives and resolves when every live worker has. On rank 0 it waits for the others; elsewhere it
   * sends BARRIER to rank 0 without timeout (the caller bounds the shutdown) and resolves as well when rank 0 is
   * gone or the request fails.
   */
  async arrive(): Promise<void> {
    if (this.rank === 0) {
      await new Promise<void>((resolve) => {
        this.waiters.set(0, { conn: { send: () => resolve(), close() {}, isClosed: false }, requestId: 0 });
        this.check();
      });
      return;
    }
    if (this.table.isLost(0)) return;
    await this.dispatcher
      .request(0, MsgType.BARRIER, { rank: this.rank }, 0, 'shutdown barrier')
      .catch(() => undefined);
  }

  /** Rank 0 takes a BARRIER request from `src` and answers it once all have arrived; false elsewhere. */
  take(src: number, conn: Conn, requestId: number): boolean {
    if (this.rank !== 0) return false;
    this.waiters.set(src, { conn, requestId });
    this.check();
    return true;
  }

  /** Rank 0: answers all waiters once every live worker has arrived (call again when a peer is lost). */
  check(): void {
    if (this.rank !== 0) return;
    for (const [r, p] of this.table.all()) {
      if (!p.lost && !this.waiters.has(r)) return;
    }
    const ws = [...this.waiters.values()];
    this.waiters.clear();
    for (const w of ws) this.dispatcher.reply(w.conn, w.requestId, MsgType.RET, { v: true });
  }
}
