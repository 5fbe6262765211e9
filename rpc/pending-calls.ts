// This worker's own requests in flight, by request id: their timers, and the ways they end (answer, timeout,
// peer lost, shutdown). Each call settles exactly once: whoever takes it from the table settles it.

export interface PendingCall {
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout | null;
  /** The rank the request went to (an answer from another rank is ignored). */
  readonly peer: number;
}

export class PendingCalls {
  private readonly calls = new Map<number, PendingCall>();
  private nextId = 1;

  get size(): number {
    return this.calls.size;
  }

  /** The next request id: 1..0xfffffffe, wrapping (0 is never used). */
  allocId(): number {
    const id = this.nextId;
    this.nextId = this.nextId >= 0xfffffffe ? 1 : this.nextId + 1;
    return id;
  }

  /**
   * Registers call `id` to `peer` and returns its result. With `timeoutMs` > 0 it rejects with `onTimeout()` once
   * that time has passed without an answer (and leaves the table); 0 = no timeout.
   */
  add(id: number, peer: number, timeoutMs: number, onTimeout: () => Error): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const p: PendingCall = { resolve, reject, timer: null, peer };
      if (timeoutMs > 0) {
        p.timer = setTimeout(() => {
          if (this.calls.delete(id)) p.reject(onTimeout());
        }, timeoutMs);
      }
      this.calls.set(id, p);
    });
  }

  get(id: number): PendingCall | undefined {
    return this.calls.get(id);
  }

  /** Removes call `id` and stops its timer; the caller settles it. */
  take(id: number): PendingCall | undefined {
    const p = this.calls.get(id);
    if (p?.timer) clearTimeout(p.timer);
    this.calls.delete(id);
    return p;
  }

  /** Rejects every call to `rank` with `err`. */
  rejectPeer(rank: number, err: Error): void {
    for (const [id, p] of [...this.calls]) {
      if (p.peer !== rank) continue;
      this.take(id);
      p.reject(err);
    }
  }

  rejectAll(err: Error): void {
    for (const [id, p] of [...this.calls]) {
      this.take(id);
      p.reject(err);
    }
  }

  /** Resolves once no call is in flight (calls added meanwhile are waited for too). Never rejects. */
  async drain(): Promise<void> {
    while (this.calls.size > 0) {
      const ps = [...this.calls.values()];
      await Promise.allSettled(
        ps.map(
          (p) =>
            new Promise<void>((r) => {
              const { resolve, reject } = p;
              p.resolve = (v) => (resolve(v), r());
              p.reject = (e) => (reject(e), r());
            }),
        ),
      );
    }
  }
}
