// What a process group whose bytes move on a native plane (ShmProcessGroup in shm-plane.ts, NetProcessGroup in
// net-plane.ts) does the same way on every plane: every collective's arguments are checked here, once, as on the TCP
// group (reduce-ops.ts), and turned into one native operation (kind, dtype, reduction, root, element count, send and
// receive buffers) that the plane runs with `runOp`; `track` gives every native operation the same life (refused
// once the group failed, bounded by its timeout, tracked until settled, a lost peer or a timeout failing the whole
// world as on the JS path). send/recv stay on the group's TCP group.
import {
  CollectiveError,
  type CollectiveErrorCode,
  type CollectiveOptions,
  type HostBuffer,
  type ProcessGroup,
  type ReduceOp,
} from './api.js';
import { ShmDType, ShmKind, ShmOp, type NativeShmResult } from './native/addon.js';
import { checkReduceOp, checkRoot, pairOperands, tcpDType, type TcpBuffer } from './reduce-ops.js';
import type { TcpTransport } from './tcp-transport.js';

/** The native planes' dtype code of a buffer the TCP group accepts. */
export const DTYPE_OF = (b: TcpBuffer): number =>
  b instanceof Float32Array ? ShmDType.float32 : b instanceof Float64Array ? ShmDType.float64 : ShmDType.int32;

const nameOf = (table: Record<string, number>, v: number): string =>
  Object.keys(table).find((k) => table[k] === v) ?? String(v);

/** One native operation as the planes' mismatch errors name it: `allreduce float32 × 8 (sum)`, `broadcast … root 1`. */
export function describeCall(kind: number, dtype: number, rop: number, root: number, count: number): string {
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
    const timeoutMs = opts?.timeoutMs ?? this.timeoutMs;
    if (!(timeoutMs > 0))
      return Promise.reject(
        new CollectiveError('INVALID_ARGUMENT', `${op}: timeoutMs ${timeoutMs}: expected > 0`, { op }),
      );
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
   * TIMEOUT, ABORTED, CLOSED, a mismatch naming both sides). Never throws.
   */
  protected abstract runOp<T>(
    op: string,
    opts: CollectiveOptions | undefined,
    kind: ShmKind,
    dtype: number,
    rop: number,
    root: number,
    count: number,
    send: TcpBuffer | undefined,
    recv: TcpBuffer | undefined,
    value: T,
  ): Promise<T>;

  allreduce<T extends HostBuffer>(buf: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    try {
      const b = tcpDType(buf, opts, 'allreduce');
      const rop = ShmOp[checkReduceOp(op, 'allreduce')];
      return this.runOp('allreduce', opts, ShmKind.allreduce, DTYPE_OF(b), rop, 0, b.length, b, b, buf);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  allreduceInto<T extends HostBuffer>(input: T, output: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    try {
      const { inp, out } = pairOperands(input, output, opts, 'allreduceInto', 'same', this.worldSize);
      const rop = ShmOp[checkReduceOp(op, 'allreduceInto')];
      return this.runOp('allreduceInto', opts, ShmKind.allreduce, DTYPE_OF(inp), rop, 0, inp.length, inp, out, output);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  broadcast<T extends HostBuffer>(buf: T, root: number, opts?: CollectiveOptions): Promise<T> {
    try {
      const b = tcpDType(buf, opts, 'broadcast');
      checkRoot(root, this.worldSize, 'broadcast');
      return this.runOp('broadcast', opts, ShmKind.broadcast, DTYPE_OF(b), 0, root, b.length, undefined, b, buf);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  reduce<T extends HostBuffer>(buf: T, root: number, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    try {
      const b = tcpDType(buf, opts, 'reduce');
      checkRoot(root, this.worldSize, 'reduce');
      const rop = ShmOp[checkReduceOp(op, 'reduce')];
      return this.runOp('reduce', opts, ShmKind.reduce, DTYPE_OF(b), rop, root, b.length, b, b, buf);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  allgather<T extends HostBuffer>(input: T, output: T, opts?: CollectiveOptions): Promise<T> {
    try {
      const { inp, out } = pairOperands(input, output, opts, 'allgather', 'gather', this.worldSize);
      return this.runOp('allgather', opts, ShmKind.allgather, DTYPE_OF(inp), 0, 0, inp.length, inp, out, output);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  reduceScatter<T extends HostBuffer>(input: T, output: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    try {
      const { inp, out } = pairOperands(input, output, opts, 'reduceScatter', 'scatter', this.worldSize);
      const rop = ShmOp[checkReduceOp(op, 'reduceScatter')];
      const dtype = DTYPE_OF(out);
      return this.runOp('reduceScatter', opts, ShmKind.reduceScatter, dtype, rop, 0, out.length, inp, out, output);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async barrier(opts?: CollectiveOptions): Promise<void> {
    await this.runOp('barrier', opts, ShmKind.barrier, 0, 0, 0, 0, undefined, undefined, undefined);
  }

  send(buf: HostBuffer, dst: number, opts?: CollectiveOptions & { tag?: number }): Promise<void> {
    return this.tcp.send(buf, dst, opts);
  }

  recv<T extends HostBuffer>(buf: T, src: number, opts?: CollectiveOptions & { tag?: number }): Promise<T> {
    return this.tcp.recv(buf, src, opts);
  }
}
