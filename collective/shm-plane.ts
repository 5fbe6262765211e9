// The same-host shared-memory data plane of the TCP process group (native side: collective/native/src/shm.cc).
//
// Choice: the store vote and the pure decision between this plane, the socket plane and the JS path live in
// net-plane.ts (`decidePlane`, `openDataPlane`); this file maps the segment once the plane is chosen.
//
// Setup (`mapShmSegment`): rank 0 creates the segment (an anonymous memfd), publishes where to open it, every rank
// maps it and says whether that worked; rank 0 closes its descriptor once all have answered. If any rank failed to
// map, all destroy their handles and use the JS path (or fail, when forced). Nothing is ever created in /dev/shm.
//
// The world group's collectives (allreduce, allreduceInto, broadcast, reduce, allgather, reduceScatter, barrier) then
// run on the plane; send/recv and sub-groups stay on the TCP connections, which also carry failure detection: a
// peer's socket closing fails the plane (shmFail → PEER_LOST naming it), and a plane failure (timeout, lost peer)
// fails the transport, so every op of every group rejects, exactly as on the JS path.
import type { Logger } from '../common/logger.js';
import {
  CollectiveError,
  type CollectiveErrorCode,
  type CollectiveOptions,
  type HostBuffer,
  type ProcessGroup,
  type ReduceOp,
  type Store,
} from './api.js';
import { ShmDType, ShmKind, ShmOp, type NativeAddon, type NativeShmGroup } from './native/addon.js';
import { checkReduceOp, checkRoot, pairOperands, tcpDType, type TcpBuffer } from './reduce-ops.js';
import type { TcpTransport } from './tcp-transport.js';

export type TransportChoice = 'js' | 'native';

export interface ShmTuning {
  /** Bytes of each rank's input slot (and of the output slot): the unit in which large buffers are moved. */
  readonly slotBytes: number;
  /** allreduce payloads up to this many bytes are reduced whole by every rank (one wait instead of two). */
  readonly smallBytes: number;
  /**
   * Busy-wait polls before sleeping on a futex; 0 sleeps at once. Single-step ops (barrier, allreduce/reduce up to
   * smallBytes) start on the calling thread and finish there when every peer has already arrived (or arrives within
   * `spin` polls); otherwise the group's worker thread finishes them.
   */
  readonly spin: number;
}

/**
 * Defaults. No spinning: on the shared 2-core development machine a 2000-poll spin made the 4 KB two-rank allreduce
 * 4.5× slower (0.18 against 0.04 ms: the spinner takes the core its peer needs); with idle cores it may pay, so
 * TENSILE_SHM_SPIN turns it on (the worker's waits, and a bounded poll on the calling thread for single-step ops).
 */
export function defaultShmTuning(): ShmTuning {
  return { slotBytes: 2 << 20, smallBytes: 64 << 10, spin: 0 };
}

/** What one rank answers in the agreement round. */
export interface ShmVote {
  readonly hostId: string;
  /** Empty when this rank can and wants to use the plane; otherwise why not. */
  readonly veto: string;
  readonly forced: boolean;
}

export type ShmDecision = { readonly use: true } | { readonly use: false; readonly reason: string };

/** The decision every rank takes from the same votes (pure). */
export function decideShm(votes: readonly ShmVote[]): ShmDecision {
  const vetoes = votes.map((v, r) => (v.veto ? `rank ${r}: ${v.veto}` : '')).filter((s) => s !== '');
  if (vetoes.length > 0) return { use: false, reason: vetoes.join('; ') };
  const hosts = new Set(votes.map((v) => v.hostId));
  if (hosts.size > 1) return { use: false, reason: `the ranks run on ${hosts.size} hosts` };
  return { use: true };
}

/** TENSILE_COLLECTIVE_TRANSPORT, parsed; throws INVALID_ARGUMENT naming a bad value. */
export function transportFromEnv(env: NodeJS.ProcessEnv): TransportChoice | undefined {
  const raw = env.TENSILE_COLLECTIVE_TRANSPORT;
  if (raw === undefined || raw === '') return undefined;
  if (raw === 'js' || raw === 'native') return raw;
  throw new CollectiveError(
    'INVALID_ARGUMENT',
    `TENSILE_COLLECTIVE_TRANSPORT=${JSON.stringify(raw)}: expected 'js' or 'native'`,
  );
}

export interface ShmSegmentOptions {
  /** Rank within the ranks sharing the segment (the whole world, or one host's ranks on the hierarchical path). */
  readonly rank: number;
  readonly worldSize: number;
  readonly store: Store;
  readonly timeoutMs: number;
  readonly logger: Logger;
  /** Store key namespace of this segment (one per world generation and host). */
  readonly prefix: string;
  readonly addon: NativeAddon;
  /** When a rank fails to map the segment: throw BACKEND_UNAVAILABLE (true) or return null for the JS path. */
  readonly mustMap: boolean;
  readonly tuning: ShmTuning;
}

export interface ShmPlane {
  readonly addon: NativeAddon;
  readonly group: NativeShmGroup;
}

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/**
 * Creates (rank 0) or maps the segment on every rank and agrees through the store that all mapped it. Returns null
 * when one could not and `mustMap` is false (every rank then takes the JS path); rejects with BACKEND_UNAVAILABLE
 * when `mustMap`, TIMEOUT/STORE when the store fails. Every rank of the segment must call it at the same point.
 */
export async function mapShmSegment(o: ShmSegmentOptions): Promise<ShmPlane | null> {
  const { addon, tuning } = o;
  let handle: NativeShmGroup | null = null;
  let failure = '';
  try {
    if (o.rank === 0) {
      const made = addon.shmOpen(o.worldSize, 0, tuning.slotBytes, tuning.smallBytes, tuning.spin);
      handle = made.group;
      await o.store.set(`${o.prefix}/segment`, JSON.stringify({ pid: made.pid, fd: made.fd, token: made.token }));
    } else {
      const source = JSON.parse(text(await o.store.get(`${o.prefix}/segment`, o.timeoutMs))) as {
        pid: number;
        fd: number;
        token: string;
      };
      handle = addon.shmOpen(o.worldSize, o.rank, tuning.slotBytes, tuning.smallBytes, tuning.spin, source).group;
    }
  } catch (err) {
    if (err instanceof CollectiveError) throw err;
    failure = (err as Error).message;
  }
  await o.store.set(`${o.prefix}/mapped/${o.rank}`, failure);
  const answers = await Promise.all(
    Array.from({ length: o.worldSize }, async (_, r) =>
      r === o.rank ? failure : text(await o.store.get(`${o.prefix}/mapped/${r}`, o.timeoutMs)),
    ),
  );
  if (handle && o.rank === 0) addon.shmSeal(handle);
  const failed = answers.map((a, r) => (a ? `rank ${r}: ${a}` : '')).filter((s) => s !== '');
  if (failed.length > 0) {
    if (handle) await addon.shmDestroy(handle);
    const reason = `mapping the segment failed: ${failed.join('; ')}`;
    if (o.mustMap) throw new CollectiveError('BACKEND_UNAVAILABLE', `shared-memory plane: ${reason}`);
    if (o.rank === 0) o.logger.info({ transport: 'js', reason }, 'collective: data plane is the JS TCP transport');
    return null;
  }
  return { addon, group: handle! };
}

export const DTYPE_OF = (b: TcpBuffer): number =>
  b instanceof Float32Array ? ShmDType.float32 : b instanceof Float64Array ? ShmDType.float64 : ShmDType.int32;

/**
 * The world group with its collectives on the shared-memory plane; everything else is the TCP group's. Ops are
 * queued in call order on the plane's worker thread (the ordering rule of every backend: the same collectives in the
 * same order on every rank).
 */
export class ShmProcessGroup implements ProcessGroup {
  readonly backend = 'tcp' as const;
  readonly dataPlane = 'shm' as const;
  readonly rank: number;
  readonly worldSize: number;
  readonly timeoutMs: number;
  private state: CollectiveError | null = null;
  private readonly pending = new Set<Promise<unknown>>();

  constructor(
    private readonly tcp: ProcessGroup,
    private readonly transport: TcpTransport,
    private readonly plane: ShmPlane,
  ) {
    this.rank = tcp.rank;
    this.worldSize = tcp.worldSize;
    this.timeoutMs = tcp.timeoutMs;
    // The TCP connections saw a peer go (or the group was aborted or timed out): the plane fails the same way.
    transport.onFailure((e) => {
      if (!this.state) this.state = e;
      plane.addon.shmFail(plane.group, e.code, e.message, e.peerRank ?? -1);
    });
  }

  private submit<T>(
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
  ): Promise<T> {
    const err = this.state ?? this.transport.failed;
    if (err) return Promise.reject(err);
    const timeoutMs = opts?.timeoutMs ?? this.timeoutMs;
    if (!(timeoutMs > 0))
      return Promise.reject(
        new CollectiveError('INVALID_ARGUMENT', `${op}: timeoutMs ${timeoutMs}: expected > 0`, { op }),
      );
    const p = this.plane.addon
      .shmSubmit(this.plane.group, kind, dtype, rop, root, count, send, recv, timeoutMs)
      .then((r) => {
        if (r.ok) return value;
        const e = new CollectiveError(r.code as CollectiveErrorCode, `${op}: ${r.message}`, {
          rank: this.rank,
          op,
          peerRank: r.peer >= 0 ? r.peer : undefined,
        });
        // A timeout or a lost peer ends the whole world, as on the JS path (peers then see PEER_LOST).
        if (r.code === 'TIMEOUT' || r.code === 'PEER_LOST' || r.code === 'ABORTED') {
          if (!this.state) this.state = e;
          this.transport.fail(e);
          throw this.state;
        }
        throw e;
      });
    this.pending.add(p);
    const forget = (): void => void this.pending.delete(p);
    p.then(forget, forget);
    return p;
  }

  private reject(e: unknown): Promise<never> {
    return Promise.reject(e);
  }

  allreduce<T extends HostBuffer>(buf: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    try {
      const b = tcpDType(buf, opts, 'allreduce');
      const rop = ShmOp[checkReduceOp(op, 'allreduce')];
      return this.submit('allreduce', opts, ShmKind.allreduce, DTYPE_OF(b), rop, 0, b.length, b, b, buf);
    } catch (e) {
      return this.reject(e);
    }
  }

  allreduceInto<T extends HostBuffer>(input: T, output: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    try {
      const { inp, out } = pairOperands(input, output, opts, 'allreduceInto', 'same', this.worldSize);
      const rop = ShmOp[checkReduceOp(op, 'allreduceInto')];
      return this.submit('allreduceInto', opts, ShmKind.allreduce, DTYPE_OF(inp), rop, 0, inp.length, inp, out, output);
    } catch (e) {
      return this.reject(e);
    }
  }

  broadcast<T extends HostBuffer>(buf: T, root: number, opts?: CollectiveOptions): Promise<T> {
    try {
      const b = tcpDType(buf, opts, 'broadcast');
      checkRoot(root, this.worldSize, 'broadcast');
      return this.submit('broadcast', opts, ShmKind.broadcast, DTYPE_OF(b), 0, root, b.length, undefined, b, buf);
    } catch (e) {
      return this.reject(e);
    }
  }

  reduce<T extends HostBuffer>(buf: T, root: number, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    try {
      const b = tcpDType(buf, opts, 'reduce');
      checkRoot(root, this.worldSize, 'reduce');
      const rop = ShmOp[checkReduceOp(op, 'reduce')];
      return this.submit('reduce', opts, ShmKind.reduce, DTYPE_OF(b), rop, root, b.length, b, b, buf);
    } catch (e) {
      return this.reject(e);
    }
  }

  allgather<T extends HostBuffer>(input: T, output: T, opts?: CollectiveOptions): Promise<T> {
    try {
      const { inp, out } = pairOperands(input, output, opts, 'allgather', 'gather', this.worldSize);
      return this.submit('allgather', opts, ShmKind.allgather, DTYPE_OF(inp), 0, 0, inp.length, inp, out, output);
    } catch (e) {
      return this.reject(e);
    }
  }

  reduceScatter<T extends HostBuffer>(input: T, output: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    try {
      const { inp, out } = pairOperands(input, output, opts, 'reduceScatter', 'scatter', this.worldSize);
      const rop = ShmOp[checkReduceOp(op, 'reduceScatter')];
      return this.submit(
        'reduceScatter',
        opts,
        ShmKind.reduceScatter,
        DTYPE_OF(out),
        rop,
        0,
        out.length,
        inp,
        out,
        output,
      );
    } catch (e) {
      return this.reject(e);
    }
  }

  async barrier(opts?: CollectiveOptions): Promise<void> {
    await this.submit('barrier', opts, ShmKind.barrier, 0, 0, 0, 0, undefined, undefined, undefined);
  }

  send(buf: HostBuffer, dst: number, opts?: CollectiveOptions & { tag?: number }): Promise<void> {
    return this.tcp.send(buf, dst, opts);
  }

  recv<T extends HostBuffer>(buf: T, src: number, opts?: CollectiveOptions & { tag?: number }): Promise<T> {
    return this.tcp.recv(buf, src, opts);
  }

  newGroup(ranks: readonly number[]): Promise<ProcessGroup | null> {
    return this.tcp.newGroup(ranks);
  }

  /** Waits for pending ops, leaves the plane (peers still waiting on this rank get PEER_LOST), then closes TCP. */
  async destroy(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    if (!this.state)
      this.state = new CollectiveError('CLOSED', `process group (rank ${this.rank}) is destroyed`, { rank: this.rank });
    await this.plane.addon.shmDestroy(this.plane.group);
    await this.tcp.destroy();
  }

  abort(reason = 'aborted by the caller'): void {
    const e = new CollectiveError('ABORTED', `process group aborted: ${reason}`, { rank: this.rank });
    if (!this.state) this.state = e;
    this.plane.addon.shmFail(this.plane.group, 'ABORTED', e.message, -1);
    this.tcp.abort(reason);
    void this.plane.addon.shmDestroy(this.plane.group);
  }
}
