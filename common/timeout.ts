// One bounded wait for the whole tree: every wait has a timeout (never hang).

/** Thrown by withTimeout; `what` names the wait, `timeoutMs` the bound. */
export class TimeoutError extends Error {
  readonly code = 'TIMEOUT' as const;
  constructor(
    readonly what: string,
    readonly timeoutMs: number,
  ) {
    super(`${what} did not finish within ${timeoutMs} ms`);
    this.name = 'TimeoutError';
  }
}

/**
 * Resolves or rejects as `promise` does, or rejects after `timeoutMs` with `onTimeout()` (default: a TimeoutError
 * naming `what`). The timer is cleared when the promise settles. The promise itself is not cancelled: pass an
 * AbortSignal to the work when it must stop.
 *
 * The timer keeps the process alive by default: a wait whose work holds no handle of its own (a timer-driven lease
 * expiry in the embedded rendezvous, a child that never answers) must end with the timeout error, not with Node
 * exiting silently in the middle of the await. Pass `{ unref: true }` where the work holds its own sockets and the
 * bound must not delay a process that is otherwise done.
 */
export function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  what: string,
  onTimeout: () => Error = () => new TimeoutError(what, timeoutMs),
  opts: { readonly unref?: boolean } = {},
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), timeoutMs);
    if (opts.unref === true) timer.unref();
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}
