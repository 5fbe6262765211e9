// Shared-memory transfers of large RPC frames between two workers of one host, inside the data channel
// (data-channel.ts; native side: collective/native/src/xfer.cc, which explains the segments and the copies).
//
// Negotiation, per direction of a peer stream: the advertiser's 'P' segment (grpc-transport.ts) may end with an offer
// — its pid, the descriptor of a small probe memfd and the probe's random 16-byte token. The receiving side opens
// /proc/<pid>/fd/<fd>; when that works and holds the token, it writes a hello record on its receive socket (the one
// direction of that socket nobody else uses):
//   "TDA1" u32 0                                                                                      (8 bytes)
// From the hello on, the sender may send any frame of at least `SHM_MIN_BYTES` as a shared-memory record in the
// transfer stream, in place of the frame's bytes:
//   "TDS1" u32 transferId u32 frameBytes u32 pid u32 fd u32 inoLow u32 inoHigh u32 segmentBytes      (32 bytes)
// The receiver delivers the frame in place (a view on the segment); the segment returns to the sender's pool when
// the receiver's garbage collector drops that view (a flag in the segment, no message). Records keep the stream's
// transfer ids, so frames stay in order whichever way each one travels. A record that cannot be honoured (descriptor
// gone, inode or size not as stated, no offer was accepted) is a FrameError, which fails the peer stream (PEER_LOST
// for its calls), like any corrupt transfer. A segment the sender cannot create (memfd limits, memory, the pool is
// full of frames the receiver still holds) just means that frame goes over the socket.

import { randomBytes } from 'node:crypto';
import type { NativeAddon, NativeXferSeg } from '../collective/native/addon.js';
import { FrameError } from './frame.js';

export const SHM_MAGIC = 0x31534454; // "TDS1" little-endian
export const HELLO_MAGIC = 0x31414454; // "TDA1" little-endian
export const SHM_RECORD_BYTES = 32;
export const HELLO_BYTES = 8;
export const SHM_OFFER_BYTES = 24;
/** Frames from this size on go through shared memory when it was negotiated (below, the socket is as fast). */
export const SHM_MIN_BYTES = 256 * 1024;
/** Segments are sized in these steps, so that frames of similar sizes reuse one. */
const SEGMENT_STEP_BYTES = 1024 * 1024;
/** The segment header (the busy flag, xfer.cc) before the frame. */
const SEGMENT_HEADER_BYTES = 64;
/**
 * Segments per direction, in bytes. When every one holds a frame the receiver has not dropped yet and no more fit,
 * frames go over the socket until the receiver's garbage collector hands some back.
 */
const POOL_BYTES = 512 * 1024 * 1024;
/** Peer segments kept mapped by a receiver (beyond, the least recently used is unmapped once no view holds it). */
const RECEIVER_CACHE = 64;
/**
 * Segments, mappings and kept receive buffers (xfer.cc's xferAlloc) unused for this long are let go, checked every
 * TRIM_EVERY_MS: a burst of large frames does not hold its memory for the life of the process.
 */
export const TRIM_IDLE_MS = 60_000;
const TRIM_EVERY_MS = 30_000;

/** What the process-wide trimmer visits: live senders and receivers. */
const trimmed = new Set<{ trim(idleMs: number): void }>();
let trimmer: NodeJS.Timeout | null = null;

/** Starts (once per process) the timer that trims idle segments, mappings and receive buffers; it holds nothing up. */
export function trimPeriodically(addon: NativeAddon): void {
  if (trimmer) return;
  trimmer = setInterval(() => {
    for (const t of trimmed) t.trim(TRIM_IDLE_MS);
    if (typeof addon.xferTrim === 'function') addon.xferTrim(TRIM_IDLE_MS);
  }, TRIM_EVERY_MS);
  trimmer.unref();
}

/** What an advertiser offers: where its probe is and what it holds. */
export interface ShmOffer {
  readonly pid: number;
  readonly fd: number;
  readonly token: Buffer;
}

export function encodeOffer(o: ShmOffer): Buffer {
  const b = Buffer.allocUnsafe(SHM_OFFER_BYTES);
  b.writeUInt32LE(o.pid, 0);
  b.writeUInt32LE(o.fd, 4);
  o.token.copy(b, 8);
  return b;
}

export function decodeOffer(b: Buffer): ShmOffer {
  if (b.byteLength !== SHM_OFFER_BYTES)
    throw new FrameError(`shared-memory offer of ${b.byteLength} bytes (expected ${SHM_OFFER_BYTES})`);
  return { pid: b.readUInt32LE(0), fd: b.readUInt32LE(4), token: Buffer.from(b.subarray(8, 24)) };
}

/** The probe of one data listener: a memfd with a random token that peers on this host can open. */
export class ShmProbe {
  private constructor(
    private readonly addon: NativeAddon,
    readonly offer: ShmOffer,
  ) {}

  /** Null when the addon cannot make one (then nothing is offered). */
  static create(addon: NativeAddon): ShmProbe | null {
    const token = randomBytes(16);
    try {
      return new ShmProbe(addon, { pid: process.pid, fd: addon.xferProbe(token), token });
    } catch {
      return null;
    }
  }

  close(): void {
    this.addon.xferClose(this.offer.fd);
  }
}

/** Receiving side: whether the offer's probe opens here (same host, same PID namespace, permitted). */
export function acceptOffer(addon: NativeAddon, o: ShmOffer): boolean {
  try {
    return addon.xferCheck(o.pid, o.fd, o.token);
  } catch {
    return false;
  }
}

/** The receiver's hello: it can open our segments. */
export function helloRecord(): Buffer {
  const b = Buffer.allocUnsafe(HELLO_BYTES);
  b.writeUInt32LE(HELLO_MAGIC, 0);
  b.writeUInt32LE(0, 4);
  return b;
}

interface OwnSeg {
  readonly seg: NativeXferSeg;
  readonly fd: number;
  readonly ino: number;
  /** The whole segment (header included), as the receiver maps it. */
  readonly bytes: number;
  /** When a frame last went through it (Date.now()). */
  usedMs: number;
}

/** Sending side of one direction: the segment pool. */
export class ShmSender {
  /** Smallest first, so that a frame takes the smallest segment it fits. */
  private readonly pool: OwnSeg[] = [];
  private poolBytes = 0;
  private closed = false;
  /** Frames sent through shared memory (tests and benchmarks read it). */
  transfers = 0;

  constructor(private readonly addon: NativeAddon) {
    trimmed.add(this);
    trimPeriodically(addon);
  }

  /**
   * Copies the frame into a segment and returns the record to send in its place, or null to send the frame itself
   * (too small, or no segment is idle and none can be made).
   */
  record(transferId: number, frame: { parts: Buffer[]; bytes: number }): Buffer | null {
    if (this.closed || frame.bytes < SHM_MIN_BYTES) return null;
    const s = this.take(frame.bytes);
    if (!s) return null;
    try {
      this.addon.xferSegWrite(s.seg, frame.parts);
    } catch {
      this.drop(s); // claimed and half written: never offer it again
      return null;
    }
    this.transfers++;
    const r = Buffer.allocUnsafe(SHM_RECORD_BYTES);
    r.writeUInt32LE(SHM_MAGIC, 0);
    r.writeUInt32LE(transferId >>> 0, 4);
    r.writeUInt32LE(frame.bytes, 8);
    r.writeUInt32LE(process.pid, 12);
    r.writeUInt32LE(s.fd, 16);
    r.writeUInt32LE(s.ino % 2 ** 32, 20);
    r.writeUInt32LE(Math.floor(s.ino / 2 ** 32), 24);
    r.writeUInt32LE(s.bytes, 28);
    return r;
  }

  /** Segments in the pool (tests check that they are reused, not made per frame). */
  get segments(): number {
    return this.pool.length;
  }

  /** Drops the segments no frame went through for `idleMs` and the receiver holds nothing of; returns how many. */
  trim(idleMs: number): number {
    const before = Date.now() - idleMs;
    const idle = this.pool.filter((s) => s.usedMs <= before && this.addon.xferSegClaim(s.seg));
    for (const s of idle) this.drop(s);
    return idle.length;
  }

  /** Drops every segment (the receiver's mappings keep what it still holds alive). Idempotent. */
  close(): void {
    trimmed.delete(this);
    this.closed = true;
    for (const s of this.pool) this.addon.xferSegDestroy(s.seg);
    this.pool.length = 0;
    this.poolBytes = 0;
  }

  private drop(s: OwnSeg): void {
    this.pool.splice(this.pool.indexOf(s), 1);
    this.poolBytes -= s.bytes;
    this.addon.xferSegDestroy(s.seg);
  }

  /** An idle pooled segment the frame fits in, claimed; else a new one while the pool has room; else null. */
  private take(frameBytes: number): OwnSeg | null {
    for (const s of this.pool)
      if (s.bytes >= frameBytes + SEGMENT_HEADER_BYTES && this.addon.xferSegClaim(s.seg)) {
        s.usedMs = Date.now();
        return s;
      }
    const size = Math.ceil(frameBytes / SEGMENT_STEP_BYTES) * SEGMENT_STEP_BYTES;
    if (this.poolBytes + size > POOL_BYTES) return null;
    let s: OwnSeg;
    try {
      s = { ...this.addon.xferSegCreate(size), usedMs: Date.now() };
    } catch {
      return null;
    }
    this.pool.push(s);
    this.pool.sort((x, y) => x.bytes - y.bytes);
    this.poolBytes += s.bytes;
    return s;
  }
}

/** A parsed shared-memory record. */
export interface ShmRecord {
  readonly transferId: number;
  readonly frameBytes: number;
  readonly pid: number;
  readonly fd: number;
  readonly ino: number;
  readonly segmentBytes: number;
}

export function parseShmRecord(b: Buffer, at: number): ShmRecord {
  return {
    transferId: b.readUInt32LE(at + 4),
    frameBytes: b.readUInt32LE(at + 8),
    pid: b.readUInt32LE(at + 12),
    fd: b.readUInt32LE(at + 16),
    ino: b.readUInt32LE(at + 20) + b.readUInt32LE(at + 24) * 2 ** 32,
    segmentBytes: b.readUInt32LE(at + 28),
  };
}

/** Receiving side of one direction: the peer's segments mapped here, most recently used last. */
export class ShmReceiver {
  private readonly maps = new Map<string, { seg: NativeXferSeg; usedMs: number }>();
  transfers = 0;

  constructor(private readonly addon: NativeAddon) {
    trimmed.add(this);
    trimPeriodically(addon);
  }

  /** The frame of record `r`, in place. Throws FrameError naming what did not work. */
  read(r: ShmRecord): Buffer {
    if (r.frameBytes + SEGMENT_HEADER_BYTES > r.segmentBytes || r.frameBytes < 16) {
      throw new FrameError(
        `data channel: shared-memory transfer ${r.transferId} of ${r.frameBytes} bytes in a segment of ${r.segmentBytes}`,
      );
    }
    const key = `${r.fd}/${r.ino}/${r.segmentBytes}`;
    let m = this.maps.get(key);
    if (m) {
      this.maps.delete(key); // re-inserted below as most recent
    } else {
      // The sender reuses a descriptor number only after dropping its old segment: forget our mapping of that one
      // (views still held keep it mapped).
      for (const [k, old] of this.maps) {
        if (k.startsWith(`${r.fd}/`)) {
          this.addon.xferSegDestroy(old.seg);
          this.maps.delete(k);
        }
      }
      try {
        m = { seg: this.addon.xferSegOpen(r.pid, r.fd, r.ino, r.segmentBytes), usedMs: 0 };
      } catch (err) {
        throw new FrameError(`data channel: shared-memory transfer ${r.transferId}: ${(err as Error).message}`);
      }
      if (this.maps.size >= RECEIVER_CACHE) {
        const [k, old] = this.maps.entries().next().value!;
        this.addon.xferSegDestroy(old.seg);
        this.maps.delete(k);
      }
    }
    m.usedMs = Date.now();
    this.maps.set(key, m);
    this.transfers++;
    return Buffer.from(this.addon.xferSegView(m.seg, r.frameBytes));
  }

  /** Unmaps the peer segments no frame came through for `idleMs` (views still held keep theirs); returns how many. */
  trim(idleMs: number): number {
    const before = Date.now() - idleMs;
    let n = 0;
    for (const [k, m] of this.maps) {
      if (m.usedMs > before) continue;
      this.addon.xferSegDestroy(m.seg);
      this.maps.delete(k);
      n++;
    }
    return n;
  }

  /** Number of peer segments mapped (tests). */
  get mapped(): number {
    return this.maps.size;
  }

  close(): void {
    trimmed.delete(this);
    for (const m of this.maps.values()) this.addon.xferSegDestroy(m.seg);
    this.maps.clear();
  }
}

/** Parses what a sender reads back from its send socket: hello records only. */
export class HelloReader {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly onHello: () => void) {}

  /** Throws FrameError on bytes that are not hello records. */
  push(chunk: Buffer): void {
    let b = this.pending.byteLength > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    let at = 0;
    for (; b.byteLength - at >= HELLO_BYTES; at += HELLO_BYTES) {
      if (b.readUInt32LE(at) !== HELLO_MAGIC || b.readUInt32LE(at + 4) !== 0)
        throw new FrameError('data channel: unexpected bytes from the receiving side');
      this.onHello();
    }
    b = b.subarray(at);
    if (b.byteLength >= 4 && b.readUInt32LE(0) !== HELLO_MAGIC)
      throw new FrameError('data channel: unexpected bytes from the receiving side');
    this.pending = Buffer.from(b);
  }
}
