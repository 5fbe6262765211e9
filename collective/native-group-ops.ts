// The collective calls of a process group whose bytes move on a native plane (ShmProcessGroup in shm-plane.ts,
// NetProcessGroup in net-plane.ts): every argument is checked here, once, the same way as on the TCP group
// (reduce-ops.ts), and turned into one native operation (kind, dtype, reduction, root, element count, send and
// receive buffers) that the plane runs with `runOp`. send/recv stay on the group's TCP group.
import type { CollectiveOptions, HostBuffer, ProcessGroup, ReduceOp } from './api.js';
import { ShmDType, ShmKind, ShmOp } from './native/addon.js';
import { checkReduceOp, checkRoot, pairOperands, tcpDType, type TcpBuffer } from './reduce-ops.js';

/** The native planes' dtype code of a buffer the TCP group accepts. */
export const DTYPE_OF = (b: TcpBuffer): number =>
  b instanceof Float32Array ? ShmDType.float32 : b instanceof Float64Array ? ShmDType.float64 : ShmDType.int32;

export abstract class NativeOpsGroup {
  abstract readonly worldSize: number;
  /** The TCP group of the same ranks: point-to-point traffic and failure detection. */
  protected abstract readonly tcp: ProcessGroup;

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
