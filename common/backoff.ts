// One jittered exponential backoff for every retry loop of the tree (the shape of grpc-js's BackoffTimeout).

export interface BackoffOptions {
  /** First delay. */
  readonly initialMs: number;
  /** Each delay is the previous one times this (≥ 1). */
  readonly multiplier: number;
  /** Upper bound of a delay before jitter. */
  readonly maxMs: number;
  /** Fraction of the delay drawn at random on either side: 0.2 → delay × [0.8, 1.2]. */
  readonly jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 100, multiplier: 1.6, maxMs: 5_000, jitter: 0.2 };

/**
 * Delays for successive attempts: `next()` returns the delay before the next try and grows it; `reset()` starts
 * over after a success. Pure apart from `random` (injectable for tests).
 */
export class Backoff {
  private currentMs: number;

  constructor(
    private readonly opts: BackoffOptions = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {
    if (!(opts.initialMs >= 0) || !(opts.multiplier >= 1) || !(opts.maxMs >= opts.initialMs)) {
      throw new RangeError(
        `backoff: need initialMs ≥ 0, multiplier ≥ 1, maxMs ≥ initialMs; got ${JSON.stringify(opts)}`,
      );
    }
    if (!(opts.jitter >= 0 && opts.jitter <= 1)) throw new RangeError(`backoff: jitter ${opts.jitter} not in [0, 1]`);
    this.currentMs = opts.initialMs;
  }

  /** The delay to wait now, jittered; the following call returns a longer one (up to maxMs). */
  next(): number {
    const base = this.currentMs;
    this.currentMs = Math.min(this.opts.maxMs, this.currentMs * this.opts.multiplier);
    const spread = base * this.opts.jitter;
    return Math.max(0, base - spread + 2 * spread * this.random());
  }

  reset(): void {
    this.currentMs = this.opts.initialMs;
  }
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. Never keeps the process alive. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    timer.unref();
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
