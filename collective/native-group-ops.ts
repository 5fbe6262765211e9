// What a process group whose bytes move on a native plane (ShmProcessGroup in shm-plane.ts, NetProcessGroup in
// net-plane.ts) does the same way on every plane: every collective's arguments are checked here, once, as on the TCP
// group (reduce-ops.ts), and turned into one native operation (kind, dtype, reduction, root, element count, send and
// receive buffers) that the plane runs with `runOp`; `track` gives every native operation the same life (refused
// once the group failed, bounded by its timeout, tracked until settled, a lost peer or a timeout failing the whole
// world as on the JS path). Failing, destroying and aborting the plane's native groups, and the TCP half of newGroup,
// are the same on every plane too. send/recv stay on the group's TCP group.
import {
  CollectiveError,
  type CollectiveErrorCode,
  type CollectiveOptions,
  type HostBuffer,
  type ProcessGroup,
  type ReduceOp,
} from './api.js';
import { ShmDType, ShmKind, ShmOp, type NativeShmResult } from './native/addon.js';
import { checkReduceOp, checkRoot, opTimeoutMs, pairOperands, tcpDType, type TcpBuffer } from './reduce-ops.js';
import type { TcpTransport } from './tcp-transport.js';

/** The native planes' dtype code of a buffer the TCP group accepts. */
export const DTYPE_OF = (b: TcpBuffer): number =>
  b instanceof Float32Array ? ShmDType.float32 : b instanceof Float64Array ? ShmDType.float64 : ShmDType.int32;

/**
 * One checked native operation, in the plane's numbering: `dtype` a ShmDType, `rop` a ShmOp (0 where the kind has no
 * reduction), `root` a group rank (0 where the kind has none), `count` elements of `recv` (of `send` for allgather).
 */
export interface NativeCall {
  readonly kind: ShmKind;
  readonly dtype: number;
  readonly rop: number;
  readonly root: number;
  readonly count: number;
  readonly send?: TcpBuffer;
  readonly recv?: TcpBuffer;
}

const nameOf = (table: Record<string, number>, v: number): string =>
  Object.keys(table).find((k) => table[k] === v) ?? String(v);

/** One native operation as the planes' mismatch errors name it: `allreduce float32 × 8 (sum)`, `broadcast … root 1`. */
export function describeCall({ kind, dtype, rop, root, count }: NativeCall): string {
  const k = nameOf(ShmKind, kind);
  if (kind === ShmKind.barrier) return k;
  let s = `${k} ${nameOf(ShmDType, dtype)} × ${count}`;
  if (kind === ShmKind.allreduce || kind === ShmKind.reduce || kind === ShmKind.reduceScatter)
    s += ` (${nameOf(ShmOp, rop)})`;
  if (kind === ShmKind.broadcast || kind === ShmKind.reduce) s += ` root ${root}`;
  return s;
}

export abstract class NativeOpsGroup {
  readonly backend = 'tcp' as const;
  readonly rank: number;
  readonly worldSize: number;
  readonly timeoutMs: number;
  /** Why this group can run nothing more (failed, aborted, destroyed); null while it works. */
  protected state: CollectiveError | null = null;
  /** Native operations not settled yet (destroy waits for them). */
  protected readonly pending = new Set<Promise<unknown>>();
  /** World rank of each rank of this group (the native planes number ranks within the group). */
  protected readonly worldRanks: readonly number[];
  protected readonly isSubGroup: boolean;
  private readonly unsubscribe: () => void;
  /** Sub-groups made so far; numbers the next one's store prefix alike on every rank. */
  private children = 0;

  /**
   * `tcp`: the TCP group of the same ranks (point-to-point traffic and failure detection), on `transport`.
   * `worldRanks`: given for a sub-group (its members' world ranks, in group order).
   */
  constructor(
    protected readonly tcp: ProcessGroup,
    protected readonly transport: Pick<TcpTransport, 'failed' | 'onFailure' | 'fail'>,
    worldRanks?: readonly number[],
  ) {
    this.rank = tcp.rank;
    this.worldSize = tcp.worldSize;
    this.timeoutMs = tcp.timeoutMs;
    this.isSubGroup = worldRanks !== undefined;
    this.worldRanks = worldRanks ?? Array.from({ length: tcp.worldSize }, (_, i) => i);
    // The TCP connections saw a peer go (or the group was aborted or timed out): the native groups fail the same way.
    this.unsubscribe = transport.onFailure((e) => {
      if (!this.state) this.state = e;
      this.failNative(e.code, e.message, e.peerRank ?? -1);
      // Queued after the ops in flight, which fail at once now; a later destroy() finds it done.
      if (this.isSubGroup) void this.destroyNative();
    });
  }

  /** Fails every native group of this group at once (ops in flight reject); `peer` is a world rank, -1 if none. */
  protected abstract failNative(code: string, message: string, peer: number): void;

  /** Releases every native group of this group (peers still waiting on this rank get PEER_LOST). */
  protected abstract destroyNative(): Promise<void>;

  /**
   * newGroup's first half on every plane: refuses once the group failed, numbers the child at the call (so that
   * concurrent calls agree on every rank, like the TCP group's children) and makes the TCP sub-group.
   */
  protected async newTcpGroup(ranks: readonly number[]): Promise<{ sub: ProcessGroup | null; index: number }> {
    const err = this.state ?? this.transport.failed;
    if (err) throw err;
    const index = this.children++;
    return { sub: await this.tcp.newGroup(ranks), index };
  }

  /**
   * Runs one native operation `run(timeoutMs)` and resolves with `value` when it succeeds. Rejects at once when the
   * group failed or the timeout is not positive (INVALID_ARGUMENT); a failed result becomes a CollectiveError with
   * the wording, culprit and (when it tells more than the plane's) code `describe` gives; a TIMEOUT, PEER_LOST or
   * ABORTED result also fails the whole world (peers then see PEER_LOST), and when the world had already failed that
   * first error is the one reported (unless `describe` gave a code of its own).
   */
  protected track<T, R extends NativeShmResult>(
    op: string,
    opts: CollectiveOptions | undefined,
    run: (timeoutMs: number) => Promise<R>,
    value: T,
    describe: (r: R) => Promise<{ message: string; peerRank?: number; code?: CollectiveErrorCode }>,
  ): Promise<T> {
    const err = this.state ?? this.transport.failed;
    if (err) return Promise.reject(err);
    const timeoutMs = opTimeoutMs(op, opts, this.timeoutMs);
    if (timeoutMs instanceof CollectiveError) return Promise.reject(timeoutMs);
    const p = run(timeoutMs).then(async (r) => {
      if (r.ok) return value;
      const { message, peerRank, code } = await describe(r);
      const e = new CollectiveError(code ?? (r.code as CollectiveErrorCode), `${op}: ${message}`, {
        rank: this.rank,
        op,
        peerRank,
      });
      if (r.code === 'TIMEOUT' || r.code === 'PEER_LOST' || r.code === 'ABORTED') {
        if (!this.state) this.state = e;
        this.transport.fail(e);
        // What `describe` found out about this op's own failure beats whatever failed the world meanwhile.
        throw code ? e : this.state;
      }
      throw e;
    });
    this.pending.add(p);
    const forget = (): void => void this.pending.delete(p);
    p.then(forget, forget);
    return p;
  }

  /**
   * Runs one checked operation on the plane and resolves with `value`; rejects with the plane's errors (PEER_LOST,
   * TIMEOUT, ABORTED, CLOSED, a mismatch naming both sides). May throw; `checked` turns that into a rejection.
   */
  protected abstract runOp<T>(op: string, opts: CollectiveOptions | undefined, call: NativeCall, value: T): Promise<T>;

  /** Checks a collective's arguments (`build` throws INVALID_ARGUMENT) and runs it; never throws, only rejects. */
  private checked<T>(op: string, opts: CollectiveOptions | undefined, value: T, build: () => NativeCall): Promise<T> {
    try {
      return this.runOp(op, opts, build(), value);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  allreduce<T extends HostBuffer>(buf: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    return this.checked('allreduce', opts, buf, () => {
      const b = tcpDType(buf, opts, 'allreduce');
      const rop = ShmOp[checkReduceOp(op, 'allreduce')];
      return { kind: ShmKind.allreduce, dtype: DTYPE_OF(b), rop, root: 0, count: b.length, send: b, recv: b };
    });
  }

  allreduceInto<T extends HostBuffer>(input: T, output: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    return this.checked('allreduceInto', opts, output, () => {
      const { inp, out } = pairOperands(input, output, opts, 'allreduceInto', 'same', this.worldSize);
      const rop = ShmOp[checkReduceOp(op, 'allreduceInto')];
      return { kind: ShmKind.allreduce, dtype: DTYPE_OF(inp), rop, root: 0, count: inp.length, send: inp, recv: out };
    });
  }

  broadcast<T extends HostBuffer>(buf: T, root: number, opts?: CollectiveOptions): Promise<T> {
    return this.checked('broadcast', opts, buf, () => {
      const b = tcpDType(buf, opts, 'broadcast');
      checkRoot(root, this.worldSize, 'broadcast');
      return { kind: ShmKind.broadcast, dtype: DTYPE_OF(b), rop: 0, root, count: b.length, recv: b };
    });
  }

  reduce<T extends HostBuffer>(buf: T, root: number, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    return this.checked('reduce', opts, buf, () => {
      const b = tcpDType(buf, opts, 'reduce');
      checkRoot(root, this.worldSize, 'reduce');
      const rop = ShmOp[checkReduceOp(op, 'reduce')];
      return { kind: ShmKind.reduce, dtype: DTYPE_OF(b), rop, root, count: b.length, send: b, recv: b };
    });
  }

  allgather<T extends HostBuffer>(input: T, output: T, opts?: CollectiveOptions): Promise<T> {
    return this.checked('allgather', opts, output, () => {
      const { inp, out } = pairOperands(input, output, opts, 'allgather', 'gather', this.worldSize);
      return {
        kind: ShmKind.allgather,
        dtype: DTYPE_OF(inp),
        rop: 0,
        root: 0,
        count: inp.length,
        send: inp,
        recv: out,
      };
    });
  }

  reduceScatter<T extends HostBuffer>(input: T, output: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    return this.checked('reduceScatter', opts, output, () => {
      const { inp, out } = pairOperands(input, output, opts, 'reduceScatter', 'scatter', this.worldSize);
      const rop = ShmOp[checkReduceOp(op, 'reduceScatter')];
      const kind = ShmKind.reduceScatter;
      return { kind, dtype: DTYPE_OF(out), rop, root: 0, count: out.length, send: inp, recv: out };
    });
  }

  async barrier(opts?: CollectiveOptions): Promise<void> {
    await this.checked('barrier', opts, undefined, () => ({
      kind: ShmKind.barrier,
      dtype: 0,
      rop: 0,
      root: 0,
      count: 0,
    }));
  }

  /** Waits for pending ops, closes the native groups (peers still waiting on this rank get PEER_LOST), then TCP. */
  async destroy(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    if (!this.state)
      this.state = new CollectiveError('CLOSED', `process group (rank ${this.rank}) is destroyed`, { rank: this.rank });
    this.unsubscribe();
    await this.destroyNative();
    await this.tcp.destroy();
  }

  abort(reason = 'aborted by the caller'): void {
    const e = new CollectiveError('ABORTED', `process group aborted: ${reason}`, { rank: this.rank });
    if (!this.state) this.state = e;
    this.failNative('ABORTED', e.message, -1);
    this.tcp.abort(reason);
    void this.destroyNative();
  }

  send(buf: HostBuffer, dst: number, opts?: CollectiveOptions & { tag?: number }): Promise<void> {
    return this.tcp.send(buf, dst, opts);
  }

  recv<T extends HostBuffer>(buf: T, src: number, opts?: CollectiveOptions & { tag?: number }): Promise<T> {
    return this.tcp.recv(buf, src, opts);
  }
}
