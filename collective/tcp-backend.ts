// The TCP process group (CPU, Gloo-like), over the full mesh of tcp-transport.ts.
//
// Algorithms (n ranks, S bytes):
//   allreduce  S ≤ smallBytes: recursive doubling (non-powers of two fold the extra ranks in and out first);
//              otherwise ring reduce-scatter + allgather, each chunk cut into segments of ≤ segmentBytes with
//              `pipelineDepth` segment rings in flight.
//   reduceScatter / allgather: the same ring phases; broadcast / reduce: binomial trees; barrier: a 1-int allreduce.
// Every rank gives a collective the next sequence number of its group when it is called, so collectives must be
// called in the same order on every rank (as with NCCL/Gloo), but several may be in flight at once. send/recv take
// no sequence number (they are matched by peer and tag under P2P_SEQ), so ranks may make different numbers of them.
// Failure: a lost peer fails the shared transport and every pending/later op rejects with PEER_LOST; an op past its
// timeout rejects with TIMEOUT and fails the transport too (peers then see PEER_LOST instead of hanging);
// abort() rejects everything with ABORTED. Sub-groups share the parent's connections, so aborting any group (or a
// timeout in any group) tears down all groups of this world.
// Longer than ~500 lines on purpose: every collective algorithm of the contract over one mesh (the transport is
// tcp-transport.ts, the argument checks reduce-ops.ts).
import type { Logger } from '../common/logger.js';
import {
  CollectiveError,
  type CollectiveOptions,
  type HostBuffer,
  type ProcessGroup,
  type ReduceOp,
  type Store,
} from './api.js';
import {
  bytesOf,
  checkReduceOp,
  checkRoot,
  finishAvg,
  opTimeoutMs,
  pairOperands,
  reduceInto,
  tcpDType,
  type TcpBuffer,
} from './reduce-ops.js';
import { openDataPlane, type NetTuning } from './net-plane.js';
import type { ShmTuning, TransportChoice } from './shm-plane.js';
import { P2P_SEQ, TcpTransport, type MeshTransport } from './tcp-transport.js';

export interface TcpTuning {
  /** allreduce payloads up to this many bytes use recursive doubling instead of the ring. */
  readonly smallBytes: number;
  /** Ring segment size in bytes. */
  readonly segmentBytes: number;
  /** Segment rings in flight at once. */
  readonly pipelineDepth: number;
}

// smallBytes: recursive doubling beat the ring up to 256 KB with 2 and 4 ranks in bench/allreduce (docs/collective.md).
// segmentBytes/pipelineDepth: 1 MiB segments, 2 in flight (gloo's choice too) took 9–13 ms for a 16 MB two-rank
// allreduce against 16–18 ms for 256 KB × 4, and 51–61 ms against 71–78 ms with 4 ranks (docs/collective.md).
export const DEFAULT_TUNING: TcpTuning = { smallBytes: 256 * 1024, segmentBytes: 1024 * 1024, pipelineDepth: 2 };

export interface TcpGroupOptions {
  readonly rank: number;
  readonly worldSize: number;
  readonly store: Store & { readonly localAddress?: string };
  readonly timeoutMs: number;
  readonly logger: Logger;
  readonly tuning?: Partial<TcpTuning>;
  /** Unix domain sockets between ranks on one host (default true). */
  readonly unixSockets?: boolean;
  /** Called once after the world group is destroyed or aborted (closes the store the group was built on). */
  readonly onClose?: () => Promise<void>;
  /**
   * The world group's data plane: undefined = native when possible (shared memory on one host, sockets across hosts:
   * see net-plane.ts), else js.
   */
  readonly transport?: TransportChoice;
  readonly shmTuning?: Partial<ShmTuning>;
  readonly netTuning?: Partial<NetTuning>;
}

/** Connects the full mesh through `store` and returns the world group. */
export async function createTcpGroup(o: TcpGroupOptions): Promise<ProcessGroup> {
  const generation = Math.ceil((await o.store.add('tensile/tcp/init', 1)) / o.worldSize);
  const transport = await TcpTransport.create({ ...o, prefix: `tensile/tcp/${generation}` });
  const ranks = Array.from({ length: o.worldSize }, (_, i) => i);
  let closed: Promise<void> | null = null;
  const closeOnce = (): Promise<void> => (closed ??= o.onClose ? o.onClose() : Promise.resolve());
  const group = new TcpProcessGroup(
    transport,
    0,
    ranks,
    o.rank,
    o.timeoutMs,
    { ...DEFAULT_TUNING, ...o.tuning },
    closeOnce,
  );
  // Nobody leaves init (and perhaps closes the store on rank 0) before every rank has its mesh.
  await group.barrier();
  try {
    return await openDataPlane(group, transport, { ...o, prefix: `tensile/tcp/${generation}/plane` });
  } catch (err) {
    group.abort(String((err as Error).message));
    throw err;
  }
}

const mod = (a: number, n: number): number => ((a % n) + n) % n;

function fnv32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  // 0 is the world group; 0xfffffffe and up are reserved by the transport (failure notice, goodbye).
  return h === 0 || h >= 0xfffffffe ? 1 : h;
}

function alloc(like: TcpBuffer, length: number): TcpBuffer {
  return new (like.constructor as new (n: number) => TcpBuffer)(length);
}

/**
 * The TCP process group over a MeshTransport. Exported for the simulated-ring unit test, which runs n of them in one
 * process over an in-memory transport; workers get one from createTcpGroup.
 */
export class TcpProcessGroup implements ProcessGroup {
  readonly backend = 'tcp' as const;
  readonly dataPlane = 'js' as const;
  readonly worldSize: number;
  private seq = 0;
  private children = 0;
  private state: CollectiveError | null = null;
  private readonly inFlight = new Set<{ promise: Promise<unknown>; reject: (e: CollectiveError) => void }>();

  constructor(
    private readonly transport: MeshTransport,
    private readonly groupId: number,
    /** Global rank of each group rank. */
    private readonly ranks: readonly number[],
    readonly rank: number,
    readonly timeoutMs: number,
    private readonly tuning: TcpTuning,
    private readonly onClose: (() => Promise<void>) | null,
  ) {
    this.worldSize = ranks.length;
    transport.onFailure((e) => {
      for (const op of this.inFlight) op.reject(e);
    });
  }

  // ---- op plumbing -------------------------------------------------------------------------------------------

  /**
   * Runs a collective: takes the group's next sequence number (at call time, so concurrent collectives are numbered
   * in call order) and tracks the op like `track`. Only collectives may call this: every rank must take the same
   * numbers in the same order, so an op that not every rank makes (send/recv) must never consume one.
   */
  private run<T>(op: string, opts: CollectiveOptions | undefined, body: (seq: number) => Promise<T>): Promise<T> {
    return this.track(op, opts, () => body(this.seq++ >>> 0));
  }

  /**
   * Runs `body` under the op timeout (TIMEOUT, which also fails the transport so that peers see PEER_LOST) and keeps
   * it in `inFlight`, so abort/transport failure reject it and destroy waits for it. Rejects at once, without calling
   * `body`, when the group is closed/failed or the timeout is not positive.
   */
  private track<T>(op: string, opts: CollectiveOptions | undefined, body: () => Promise<T>): Promise<T> {
    const err = this.state ?? this.transport.failed;
    if (err) return Promise.reject(err);
    const timeoutMs = opTimeoutMs(op, opts, this.timeoutMs);
    if (timeoutMs instanceof CollectiveError) return Promise.reject(timeoutMs);
    let entry!: { promise: Promise<unknown>; reject: (e: CollectiveError) => void };
    const promise = new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const e = new CollectiveError('TIMEOUT', `${op} on rank ${this.rank} did not complete within ${timeoutMs} ms`, {
          rank: this.rank,
          op,
        });
        reject(e);
        this.transport.fail(e);
      }, timeoutMs);
      timer.unref();
      entry = {
        promise: null as unknown as Promise<unknown>,
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      let work: Promise<T>;
      try {
        work = body();
      } catch (e) {
        work = Promise.reject(e);
      }
      work.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(timer);
          reject(e);
        },
      );
    });
    entry.promise = promise;
    this.inFlight.add(entry);
    const forget = (): void => {
      this.inFlight.delete(entry);
    };
    promise.then(forget, forget);
    return promise;
  }

  private sendTo(peer: number, seq: number, step: number, buf: TcpBuffer): Promise<void> {
    return this.transport.send(this.ranks[peer]!, this.groupId, seq, step, bytesOf(buf));
  }

  private recvFrom(peer: number, seq: number, step: number, buf: TcpBuffer): Promise<void> {
    return this.transport.recv(this.ranks[peer]!, this.groupId, seq, step, bytesOf(buf));
  }

  // ---- collectives -------------------------------------------------------------------------------------------

  allreduce<T extends HostBuffer>(buf: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    try {
      const b = tcpDType(buf, opts, 'allreduce');
      const rop = checkReduceOp(op, 'allreduce');
      return this.run('allreduce', opts, async (seq) => {
        await this.allreduceBody(b, rop, seq);
        return buf;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  allreduceInto<T extends HostBuffer>(input: T, output: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    try {
      const { inp, out } = pairOperands(input, output, opts, 'allreduceInto', 'same', this.worldSize);
      const rop = checkReduceOp(op, 'allreduceInto');
      return this.run('allreduceInto', opts, async (seq) => {
        if (out !== inp) out.set(inp);
        await this.allreduceBody(out, rop, seq);
        return output;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private async allreduceBody(buf: TcpBuffer, op: ReduceOp, seq: number): Promise<void> {
    const n = this.worldSize;
    if (n > 1 && buf.length > 0) {
      if (buf.byteLength <= this.tuning.smallBytes || buf.length < n) await this.recursiveDoubling(buf, op, seq);
      else {
        const base = Math.floor(buf.length / n);
        const rem = buf.length % n;
        await this.ring(
          buf,
          op,
          seq,
          (c) => c * base + Math.min(c, rem),
          (c) => base + (c < rem ? 1 : 0),
          true,
          true,
        );
      }
    }
    if (op === 'avg') finishAvg(buf, n);
  }

  /** Recursive doubling; ranks ≥ the largest power of two p2 first hand their data to rank − p2 and get the result back. */
  private async recursiveDoubling(buf: TcpBuffer, op: ReduceOp, seq: number): Promise<void> {
    const n = this.worldSize;
    const r = this.rank;
    let p2 = 1;
    while (p2 * 2 <= n) p2 *= 2;
    const FOLD_BACK = 0xffff;
    if (r >= p2) {
      await this.sendTo(r - p2, seq, 0, buf);
      await this.recvFrom(r - p2, seq, FOLD_BACK, buf);
      return;
    }
    const scratch = alloc(buf, buf.length);
    if (r + p2 < n) {
      await this.recvFrom(r + p2, seq, 0, scratch);
      reduceInto(buf, scratch, op);
    }
    for (let mask = 1, step = 1; mask < p2; mask <<= 1, step++) {
      const partner = r ^ mask;
      await Promise.all([this.sendTo(partner, seq, step, buf), this.recvFrom(partner, seq, step, scratch)]);
      reduceInto(buf, scratch, op);
    }
    if (r + p2 < n) await this.sendTo(r + p2, seq, FOLD_BACK, buf);
  }

  /**
   * Ring over n chunks (chunk c = [start(c), start(c)+size(c))): reduce-scatter leaves rank r owning reduced chunk r;
   * allgather then circulates the owned chunks. Each chunk is cut into K segments; segment k of all chunks forms an
   * independent ring, and up to pipelineDepth of those run at once.
   */
  private async ring(
    buf: TcpBuffer,
    op: ReduceOp,
    seq: number,
    start: (c: number) => number,
    size: (c: number) => number,
    doReduceScatter: boolean,
    doAllgather: boolean,
  ): Promise<void> {
    const n = this.worldSize;
    const r = this.rank;
    const next = mod(r + 1, n);
    const prev = mod(r - 1, n);
    let maxChunk = 0;
    for (let c = 0; c < n; c++) maxChunk = Math.max(maxChunk, size(c));
    if (maxChunk === 0) return;
    const K = Math.max(1, Math.ceil((maxChunk * buf.BYTES_PER_ELEMENT) / this.tuning.segmentBytes));
    const seg = (c: number, k: number): TcpBuffer => {
      const s = start(c);
      const len = size(c);
      return buf.subarray(s + Math.floor((k * len) / K), s + Math.floor(((k + 1) * len) / K));
    };
    const stepsPerSegment = 2 * n;
    let nextK = 0;
    const worker = async (): Promise<void> => {
      const scratchAll = doReduceScatter ? alloc(buf, Math.ceil(maxChunk / K) + 1) : null;
      for (let k = nextK++; k < K; k = nextK++) {
        const base = k * stepsPerSegment;
        if (doReduceScatter) {
          for (let s = 0; s < n - 1; s++) {
            const out = seg(mod(r - s - 1, n), k);
            const into = seg(mod(r - s - 2, n), k);
            const scratch = scratchAll!.subarray(0, into.length);
            await Promise.all([this.sendTo(next, seq, base + s, out), this.recvFrom(prev, seq, base + s, scratch)]);
            reduceInto(into, scratch, op);
          }
        }
        if (doAllgather) {
          // Every allgather receive lands in its final place, so all of them are posted at once: data that arrives
          // early goes straight into the buffer instead of through a temporary one.
          const recvs = Array.from({ length: n - 1 }, (_, s) =>
            this.recvFrom(prev, seq, base + n + s, seg(mod(r - s - 1, n), k)),
          );
          // A rejection that surfaces while an earlier step is awaited is still reported by that await.
          for (const p of recvs) p.catch(() => {});
          for (let s = 0; s < n - 1; s++) {
            await Promise.all([this.sendTo(next, seq, base + n + s, seg(mod(r - s, n), k)), recvs[s]!]);
          }
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.tuning.pipelineDepth, K) }, worker));
  }

  reduceScatter<T extends HostBuffer>(input: T, output: T, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    try {
      const { inp, out } = pairOperands(input, output, opts, 'reduceScatter', 'scatter', this.worldSize);
      const m = out.length;
      const rop = checkReduceOp(op, 'reduceScatter');
      return this.run('reduceScatter', opts, async (seq) => {
        const acc = inp.slice();
        if (this.worldSize > 1)
          await this.ring(
            acc,
            rop,
            seq,
            (c) => c * m,
            () => m,
            true,
            false,
          );
        out.set(acc.subarray(this.rank * m, (this.rank + 1) * m));
        if (rop === 'avg') finishAvg(out, this.worldSize);
        return output;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  allgather<T extends HostBuffer>(input: T, output: T, opts?: CollectiveOptions): Promise<T> {
    try {
      const { inp, out } = pairOperands(input, output, opts, 'allgather', 'gather', this.worldSize);
      const m = inp.length;
      return this.run('allgather', opts, async (seq) => {
        out.set(inp, this.rank * m);
        if (this.worldSize > 1)
          await this.ring(
            out,
            'sum',
            seq,
            (c) => c * m,
            () => m,
            false,
            true,
          );
        return output;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  broadcast<T extends HostBuffer>(buf: T, root: number, opts?: CollectiveOptions): Promise<T> {
    try {
      const b = tcpDType(buf, opts, 'broadcast');
      checkRoot(root, this.worldSize, 'broadcast');
      return this.run('broadcast', opts, async (seq) => {
        const n = this.worldSize;
        const vr = mod(this.rank - root, n);
        let mask = 1;
        while (mask < n) {
          if (vr & mask) {
            await this.recvFrom(mod(vr - mask + root, n), seq, 0, b);
            break;
          }
          mask <<= 1;
        }
        const sends: Promise<void>[] = [];
        for (mask >>= 1; mask > 0; mask >>= 1)
          if (vr + mask < n) sends.push(this.sendTo(mod(vr + mask + root, n), seq, 0, b));
        await Promise.all(sends);
        return buf;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  reduce<T extends HostBuffer>(buf: T, root: number, op: ReduceOp = 'sum', opts?: CollectiveOptions): Promise<T> {
    try {
      const b = tcpDType(buf, opts, 'reduce');
      checkRoot(root, this.worldSize, 'reduce');
      const rop = checkReduceOp(op, 'reduce');
      return this.run('reduce', opts, async (seq) => {
        const n = this.worldSize;
        const vr = mod(this.rank - root, n);
        const acc = vr === 0 ? b : b.slice();
        const scratch = alloc(b, b.length);
        for (let mask = 1; mask < n; mask <<= 1) {
          if (vr & mask) {
            await this.sendTo(mod(vr - mask + root, n), seq, 0, acc);
            break;
          }
          if (vr + mask < n) {
            await this.recvFrom(mod(vr + mask + root, n), seq, 0, scratch);
            reduceInto(acc, scratch, rop);
          }
        }
        if (vr === 0 && rop === 'avg') finishAvg(b, n);
        return buf;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  send(buf: HostBuffer, dst: number, opts?: CollectiveOptions & { tag?: number }): Promise<void> {
    try {
      const b = tcpDType(buf, opts, 'send');
      const tag = this.checkPeer(dst, opts?.tag, 'send');
      // Point to point is matched by (peer, tag) under P2P_SEQ and takes no collective sequence number.
      return this.track('send', opts, () => this.sendTo(dst, P2P_SEQ, tag, b));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  recv<T extends HostBuffer>(buf: T, src: number, opts?: CollectiveOptions & { tag?: number }): Promise<T> {
    try {
      const b = tcpDType(buf, opts, 'recv');
      const tag = this.checkPeer(src, opts?.tag, 'recv');
      return this.track('recv', opts, async () => {
        await this.recvFrom(src, P2P_SEQ, tag, b);
        return buf;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private checkPeer(peer: number, tag: number | undefined, op: string): number {
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.worldSize || peer === this.rank)
      throw new CollectiveError(
        'INVALID_ARGUMENT',
        `${op}: peer ${peer}: expected an integer in [0, ${this.worldSize}) other than own rank ${this.rank}`,
        {
          op,
        },
      );
    const t = tag ?? 0;
    if (!Number.isInteger(t) || t < 0 || t >= 0xffffffff)
      throw new CollectiveError('INVALID_ARGUMENT', `${op}: tag ${t}: expected an integer in [0, 4294967295)`, { op });
    return t;
  }

  async barrier(opts?: CollectiveOptions): Promise<void> {
    await this.run('barrier', opts, (seq) =>
      this.worldSize > 1 ? this.recursiveDoubling(new Int32Array(1), 'sum', seq) : Promise.resolve(),
    );
  }

  async newGroup(ranks: readonly number[]): Promise<ProcessGroup | null> {
    const err = this.state ?? this.transport.failed;
    if (err) throw err;
    const seen = new Set<number>();
    for (const r of ranks) {
      if (!Number.isInteger(r) || r < 0 || r >= this.worldSize || seen.has(r))
        throw new CollectiveError(
          'INVALID_ARGUMENT',
          `newGroup: rank ${r} in [${ranks.join(', ')}]: expected distinct integers in [0, ${this.worldSize})`,
          {
            op: 'newGroup',
          },
        );
      seen.add(r);
    }
    if (ranks.length === 0)
      throw new CollectiveError('INVALID_ARGUMENT', 'newGroup: empty rank list', { op: 'newGroup' });
    const id = fnv32(`${this.groupId}/${this.children++}`);
    const me = ranks.indexOf(this.rank);
    if (me < 0) return null;
    return new TcpProcessGroup(
      this.transport,
      id,
      ranks.map((r) => this.ranks[r]!),
      me,
      this.timeoutMs,
      this.tuning,
      null,
    );
  }

  async destroy(): Promise<void> {
    await Promise.allSettled([...this.inFlight].map((op) => op.promise));
    if (!this.state)
      this.state = new CollectiveError('CLOSED', `process group (rank ${this.rank}) is destroyed`, { rank: this.rank });
    if (this.onClose) {
      const close = this.onClose;
      await this.transport.close();
      await close();
    }
  }

  abort(reason = 'aborted by the caller'): void {
    const e = new CollectiveError('ABORTED', `process group aborted: ${reason}`, { rank: this.rank });
    if (!this.state) this.state = e;
    for (const op of this.inFlight) op.reject(e);
    this.transport.fail(e);
    if (this.onClose) {
      const close = this.onClose;
      void close().catch(() => {});
    }
  }
}
