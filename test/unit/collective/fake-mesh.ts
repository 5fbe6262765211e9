// An in-memory MeshTransport for n ranks in one process, recording every message, so that the TCP process group's
// schedules can be checked without sockets (ring-schedule.test.ts).
//
// Semantics are those of tcp-transport.ts (see MeshTransport) and no more: messages are matched per (sender, receiver)
// by key (groupId, seq, step), FIFO among equal keys. Delivery is one message per microtask, picked by a seeded
// random generator among the oldest message of every (sender, receiver, key): messages of different keys, even on one
// link, arrive in any order, which is stricter than TCP (that keeps the order of one link), so a schedule that passes
// here does not lean on arrival order. A send resolves when its message reaches the receiver (matched or queued), and
// the bytes it carries are those given at the call: if the caller changes them before the send resolves, that is
// recorded as a violation (the real transport writes from the caller's memory until then).
import { CollectiveError } from '../../../collective/api.js';
import type { MeshTransport } from '../../../collective/tcp-transport.js';
import { mulberry32 } from '../../../common/random.js';

export interface MessageKey {
  readonly from: number;
  readonly to: number;
  readonly groupId: number;
  readonly seq: number;
  readonly step: number;
}

export interface SendEvent extends MessageKey {
  readonly bytes: number;
}

interface InFlight extends SendEvent {
  readonly data: Uint8Array;
  readonly source: Uint8Array;
  readonly resolve: () => void;
  readonly reject: (e: CollectiveError) => void;
}

interface Posted {
  readonly dst: Uint8Array;
  readonly resolve: () => void;
  readonly reject: (e: CollectiveError) => void;
}

const keyOf = (m: MessageKey): string => `${m.from}>${m.to}:${m.groupId}:${m.seq}:${m.step}`;

export class FakeMesh {
  readonly endpoints: FakeEndpoint[];
  /** Every send, in call order. */
  readonly sends: SendEvent[] = [];
  /** Every message handed to a receive, in delivery order. */
  readonly received: SendEvent[] = [];
  /** Broken transport rules (a send buffer changed in flight, a size mismatch). */
  readonly violations: string[] = [];
  private readonly wire: InFlight[] = [];
  private readonly next: () => number;

  constructor(
    readonly worldSize: number,
    seed = 1,
  ) {
    this.next = mulberry32(seed); // a failing delivery order can be replayed from its seed
    this.endpoints = Array.from({ length: worldSize }, (_, r) => new FakeEndpoint(this, r));
  }

  /** Puts a message on the wire; it is delivered by a later microtask. */
  post(m: InFlight): void {
    this.sends.push({ from: m.from, to: m.to, groupId: m.groupId, seq: m.seq, step: m.step, bytes: m.bytes });
    this.wire.push(m);
    queueMicrotask(() => this.deliverOne());
  }

  private deliverOne(): void {
    const seen = new Set<string>();
    const eligible: number[] = [];
    this.wire.forEach((m, i) => {
      const k = keyOf(m);
      if (!seen.has(k)) eligible.push(i);
      seen.add(k);
    });
    if (eligible.length === 0) return;
    const [m] = this.wire.splice(eligible[Math.floor(this.next() * eligible.length)]!, 1);
    if (!m) return;
    if (!bytesEqual(m.source, m.data))
      this.violations.push(`send ${keyOf(m)}: the buffer changed before the send resolved`);
    const to = this.endpoints[m.to]!;
    const from = this.endpoints[m.from]!;
    const err = from.failed ?? to.failed;
    if (err) {
      m.reject(err);
      return;
    }
    to.arrive(m);
    m.resolve();
  }

  /** Matched receive: counted for the one-send-one-receive property. */
  matched(m: SendEvent): void {
    this.received.push({ from: m.from, to: m.to, groupId: m.groupId, seq: m.seq, step: m.step, bytes: m.bytes });
  }

  /** Simulates a dead rank: it fails with ABORTED, every other endpoint with PEER_LOST naming it. */
  kill(rank: number): void {
    this.endpoints[rank]!.fail(new CollectiveError('ABORTED', `rank ${rank} killed by the test`, { rank }));
    for (const e of this.endpoints)
      if (e.rank !== rank)
        e.fail(new CollectiveError('PEER_LOST', `rank ${rank}: lost`, { rank: e.rank, peerRank: rank }));
  }

  /** Messages still on the wire or queued unclaimed, and receives still posted: all should be empty between ops. */
  leftovers(): string[] {
    const out = this.wire.map((m) => `on the wire: ${keyOf(m)}`);
    for (const e of this.endpoints) out.push(...e.leftovers());
    return out;
  }
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class FakeEndpoint implements MeshTransport {
  private failure: CollectiveError | null = null;
  private readonly listeners = new Set<(e: CollectiveError) => void>();
  private readonly arrived = new Map<string, InFlight[]>();
  private readonly posted = new Map<string, Posted[]>();

  constructor(
    private readonly mesh: FakeMesh,
    readonly rank: number,
  ) {}

  get failed(): CollectiveError | null {
    return this.failure;
  }

  onFailure(cb: (e: CollectiveError) => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  send(peer: number, groupId: number, seq: number, step: number, data: Uint8Array): Promise<void> {
    const bad = this.failure ?? this.badPeer(peer);
    if (bad) return Promise.reject(bad);
    return new Promise<void>((resolve, reject) =>
      this.mesh.post({
        from: this.rank,
        to: peer,
        groupId,
        seq,
        step,
        bytes: data.byteLength,
        data: data.slice(),
        source: data,
        resolve,
        reject,
      }),
    );
  }

  recv(peer: number, groupId: number, seq: number, step: number, dst: Uint8Array): Promise<void> {
    const bad = this.failure ?? this.badPeer(peer);
    if (bad) return Promise.reject(bad);
    const key = keyOf({ from: peer, to: this.rank, groupId, seq, step });
    return new Promise<void>((resolve, reject) => {
      const p: Posted = { dst, resolve, reject };
      const m = take(this.arrived, key);
      if (m) this.hand(p, m);
      else push(this.posted, key, p);
    });
  }

  /** A message reached this rank: it goes to the oldest receive posted under its key, or waits for one. */
  arrive(m: InFlight): void {
    const key = keyOf(m);
    const p = take(this.posted, key);
    if (p) this.hand(p, m);
    else push(this.arrived, key, m);
  }

  private hand(p: Posted, m: InFlight): void {
    if (p.dst.byteLength !== m.bytes) {
      const why = `message ${keyOf(m)} has ${m.bytes} bytes but ${p.dst.byteLength} were expected`;
      this.mesh.violations.push(why);
      p.reject(new CollectiveError('INVALID_ARGUMENT', why, { rank: this.rank, peerRank: m.from }));
      return;
    }
    p.dst.set(m.data);
    this.mesh.matched(m);
    p.resolve();
  }

  fail(err: CollectiveError): void {
    if (this.failure) return;
    this.failure = err;
    for (const q of this.posted.values()) for (const p of q) p.reject(err);
    this.posted.clear();
    this.arrived.clear();
    for (const cb of this.listeners) cb(err);
  }

  close(): Promise<void> {
    this.fail(new CollectiveError('CLOSED', 'process group destroyed', { rank: this.rank }));
    return Promise.resolve();
  }

  leftovers(): string[] {
    const out: string[] = [];
    for (const [k, q] of this.arrived) if (q.length > 0) out.push(`arrived, never received: ${k} ×${q.length}`);
    for (const [k, q] of this.posted) if (q.length > 0) out.push(`posted, never matched: ${k} ×${q.length}`);
    return out;
  }

  private badPeer(peer: number): CollectiveError | null {
    return Number.isInteger(peer) && peer >= 0 && peer < this.mesh.worldSize && peer !== this.rank
      ? null
      : new CollectiveError('INVALID_ARGUMENT', `rank ${this.rank}: no connection to rank ${peer}`, {
          rank: this.rank,
        });
  }
}

function take<T>(m: Map<string, T[]>, key: string): T | undefined {
  const q = m.get(key);
  const v = q?.shift();
  if (q && q.length === 0) m.delete(key);
  return v;
}

function push<T>(m: Map<string, T[]>, key: string, v: T): void {
  let q = m.get(key);
  if (!q) m.set(key, (q = []));
  q.push(v);
}
