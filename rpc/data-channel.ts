// Data channel beside gRPC: raw socket connections per peer stream that carry the frames once they are up.
//
// gRPC stays the control plane. Each end of a peer stream that has a data listener (a DataHub: a TCP port and,
// opt-in, an abstract Unix socket) advertises, as its first segment on the stream, the port, the socket name and a
// random 16-byte token ('P' segment, see frame.ts). The other end connects its RECEIVE socket there (the Unix
// socket when offered and reachable, i.e. same machine and network namespace; else TCP to the peer's address) and
// sends "TDC1" | token; the advertiser matches the token and uses the accepted socket to SEND. So each direction has
// its own socket, and the receiver always owns the connecting end, which lets Node read each large transfer
// straight into its final buffer (`onread`; accepted sockets cannot do that). Once a direction's send socket is
// attached, the sender writes one 'X' segment on gRPC and from then on sends every frame as
//   data:  "TDX1" u32 transferId u32 totalBytes | the frame's bytes (header, body, tensors: zero-copy views)
// with consecutive ids; the receiver delivers data-channel frames only after the peer's 'X', so the stream's order
// is kept exactly across the switch. Between workers of one host, a large frame may instead travel as a
// shared-memory record with the same id (shm-transfer.ts; agreed per direction with a hello the receiver writes
// back on its socket, the only bytes that ever travel that way). If a direction's connection cannot be made, that
// direction keeps sending over
// gRPC. If an established data socket breaks, or carries bytes that do not parse, the whole peer stream is failed
// (callers see PEER_LOST, as for a broken gRPC stream). With TLS the data channel is off (it is not encrypted).

import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { createServer, connect, type NetConnectOpts, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FrameError } from './frame.js';
import {
  parseShmRecord,
  SHM_MAGIC,
  SHM_RECORD_BYTES,
  type ShmProbe,
  type ShmRecord,
  type ShmSender,
} from './shm-transfer.js';

export const HANDSHAKE_MAGIC = 0x31434454; // "TDC1" little-endian
export const TRANSFER_MAGIC = 0x31584454; // "TDX1" little-endian
export const HANDSHAKE_BYTES = 20;
export const TRANSFER_HEADER_BYTES = 12;
/** Staging buffer of a receive socket: small transfers are read many at a time into it. */
export const STAGE_BYTES = 256 * 1024;
/** Largest transfer a receiver accepts (a corrupt header must not allocate without bound). */
export const MAX_TRANSFER_BYTES = 2 ** 32 - 1;

/** Transfer ids count 1..0xfffffffe and wrap (0 is the shared-memory hello's, never a transfer's). */
export function nextTransferId(id: number): number {
  return id >= 0xfffffffe ? 1 : id + 1;
}

export interface DataChannelOptions {
  /** Use the data channel at all (default true; forced off with TLS). */
  readonly enabled: boolean;
  /**
   * Offer a Unix socket to peers on the same host (else TCP only). Undefined: offered when shared memory is (then
   * large frames do not use the socket, whose fixed buffer made them slower than on TCP, and small ones gain).
   */
  readonly unixSocket: boolean | undefined;
  /** Large frames between workers of one host through shared memory (shm-transfer.ts) when the addon loads. */
  readonly sharedMemory: boolean;
}

/** What the receiving side of a data socket does with complete transfers and failures. */
export interface DataSink {
  onTransfer(id: number, frame: Buffer): void;
  /**
   * A shared-memory record (shm-transfer.ts): returns its frame, in place. Absent when no offer was
   * accepted in this direction, which makes such a record a FrameError. Throws FrameError when it cannot be read.
   */
  readShm?(r: ShmRecord): Buffer;
  /** After each read's transfers were handed over (so the receiver can deliver them as one batch). */
  onBatchEnd?(): void;
}

/**
 * Parses the data socket's byte stream into transfers; used as the socket's `onread` buffer source. Small transfers
 * are read many at a time into a staging buffer and copied out; a transfer larger than what the staging buffer has
 * left gets a buffer of its final size, and the kernel writes the rest of it straight there (no chunks, no copy).
 * Transfer ids must count up from 1 (anything else is a desynchronized or forged stream).
 */
export class TransferReader {
  private readonly stage = Buffer.allocUnsafeSlow(STAGE_BYTES);
  private start = 0;
  private end = 0;
  private cur: Buffer | null = null;
  private curId = 0;
  private fill = 0;
  private expectId = 1;

  /**
   * `alloc`: the buffer of a transfer too large for the staging buffer (default Buffer.allocUnsafeSlow; with the
   * native addon, a reused receive buffer on a SharedArrayBuffer, which V8 does not count: see xfer.cc's xferAlloc).
   */
  constructor(
    private readonly sink: DataSink,
    private readonly alloc: (bytes: number) => Buffer = (n) => Buffer.allocUnsafeSlow(n),
  ) {}

  /** Where the next bytes go. Never empty. */
  nextBuffer(): Buffer {
    if (this.cur) return this.cur.subarray(this.fill);
    if (this.end === this.stage.byteLength) {
      this.stage.copy(this.stage, 0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    return this.stage.subarray(this.end);
  }

  /** `n` bytes were written into the last nextBuffer(). Throws FrameError on a header that does not parse. */
  advance(n: number): void {
    if (this.cur) {
      this.fill += n;
      if (this.fill < this.cur.byteLength) return;
      const done = this.cur;
      this.cur = null;
      this.sink.onTransfer(this.curId, done);
    } else {
      this.end += n;
      this.parse();
    }
    this.sink.onBatchEnd?.();
  }

  private parse(): void {
    while (this.end - this.start >= TRANSFER_HEADER_BYTES) {
      const st = this.stage;
      const magic = st.readUInt32LE(this.start);
      if (magic !== TRANSFER_MAGIC && magic !== SHM_MAGIC) {
        throw new FrameError(
          `data channel: bad transfer magic 0x${magic.toString(16)} (expected 0x${TRANSFER_MAGIC.toString(16)})`,
        );
      }
      const id = st.readUInt32LE(this.start + 4);
      if (id !== this.expectId)
        throw new FrameError(`data channel: transfer id ${id} out of sequence (expected ${this.expectId})`);
      if (magic === SHM_MAGIC) {
        if (this.end - this.start < SHM_RECORD_BYTES) break;
        if (!this.sink.readShm)
          throw new FrameError('data channel: a shared-memory transfer, but shared memory was not agreed');
        const frame = this.sink.readShm(parseShmRecord(st, this.start));
        this.expectId = nextTransferId(id);
        this.start += SHM_RECORD_BYTES;
        this.sink.onTransfer(id, frame);
        continue;
      }
      const total = st.readUInt32LE(this.start + 8);
      if (total < 16) throw new FrameError(`data channel: transfer of ${total} bytes is shorter than a frame header`);
      this.expectId = nextTransferId(id);
      const bodyAt = this.start + TRANSFER_HEADER_BYTES;
      const have = this.end - bodyAt;
      if (have >= total) {
        const frame = Buffer.allocUnsafe(total);
        st.copy(frame, 0, bodyAt, bodyAt + total);
        this.start = bodyAt + total;
        this.sink.onTransfer(id, frame);
        continue;
      }
      if (total <= st.byteLength - TRANSFER_HEADER_BYTES) {
        // Fits in the staging buffer: wait for the rest there (undo the id bump; the header is parsed again).
        this.expectId = id;
        break;
      }
      this.cur = this.alloc(total);
      st.copy(this.cur, 0, bodyAt, this.end);
      this.fill = have;
      this.curId = id;
      this.start = this.end = 0;
      return;
    }
    if (this.start === this.end) this.start = this.end = 0;
  }

  /** Feeds bytes that arrived as ordinary chunks (copying them in). */
  push(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.byteLength) {
      const dst = this.nextBuffer();
      const n = Math.min(dst.byteLength, chunk.byteLength - off);
      chunk.copy(dst, 0, off, off + n);
      off += n;
      this.advance(n);
    }
  }
}

/**
 * Writes transfers with consecutive ids from `firstId`: small ones are packed into one buffer, large ones' parts go
 * as they are (no copy; the socket keeps references), or, with `shm`, through shared memory as a record in their
 * place. Returns the bytes written.
 */
export function writeTransfers(
  sock: Socket,
  firstId: number,
  frames: { parts: Buffer[]; bytes: number }[],
  shm: ShmSender | null = null,
): number {
  let id = firstId;
  let total = 0;
  const out: Buffer[] = [];
  let small: Buffer[] = [];
  let smallBytes = 0;
  const flushSmall = (): void => {
    if (small.length === 0) return;
    out.push(small.length === 1 ? small[0]! : Buffer.concat(small, smallBytes));
    small = [];
    smallBytes = 0;
  };
  for (const f of frames) {
    const rec = shm?.record(id, f);
    if (rec) {
      id = nextTransferId(id);
      total += rec.byteLength;
      small.push(rec);
      smallBytes += rec.byteLength;
      continue;
    }
    const h = Buffer.allocUnsafe(TRANSFER_HEADER_BYTES);
    h.writeUInt32LE(TRANSFER_MAGIC, 0);
    h.writeUInt32LE(id >>> 0, 4);
    h.writeUInt32LE(f.bytes, 8);
    id = nextTransferId(id);
    total += TRANSFER_HEADER_BYTES + f.bytes;
    if (f.bytes <= 64 * 1024) {
      small.push(h, ...f.parts);
      smallBytes += TRANSFER_HEADER_BYTES + f.bytes;
      continue;
    }
    flushSmall();
    out.push(h, ...f.parts);
  }
  flushSmall();
  sock.cork();
  for (const b of out) sock.write(b);
  sock.uncork();
  return total;
}

function tune(sock: Socket): void {
  // Both are no-ops on Unix sockets.
  sock.setNoDelay(true);
  sock.setKeepAlive(true, 10_000);
}

/**
 * The data listener of one worker. Every server-side peer stream registers itself with a fresh token; a connecting
 * socket that does not present a registered token within `handshakeTimeoutMs` is dropped.
 */
export class DataHub {
  private readonly waiting = new Map<string, (sock: Socket, head: Buffer) => void>();
  private readonly sockets = new Set<Socket>();
  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly udsServer: Server | null,
    /** Unix socket path ('' when none could be made). */
    readonly udsPath: string,
    private readonly handshakeTimeoutMs: number,
    /** What peers on this host can open to agree on shared memory (null: not offered). */
    readonly probe: ShmProbe | null,
  ) {}

  static async listen(
    host: string,
    opts: { uds?: boolean; handshakeTimeoutMs?: number; probe?: ShmProbe | null } = {},
  ): Promise<DataHub> {
    // (Unix socket off by default: loopback TCP's autotuned buffers gave more bandwidth for large tensors here.)
    const server = createServer({ noDelay: true });
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, () => {
        server.off('error', reject);
        resolve((server.address() as { port: number }).port);
      });
    });
    let uds: Server | null = null;
    let udsPath = '';
    if (opts.uds ?? false) {
      // Linux: an abstract socket (no file to leave behind when a worker is killed); elsewhere a file in tmpdir.
      const name = `tensile-rpc-${process.pid}-${randomBytes(8).toString('hex')}.sock`;
      const path = process.platform === 'linux' ? `\0${name}` : join(tmpdir(), name);
      const s = createServer();
      const ok = await new Promise<boolean>((resolve) => {
        s.once('error', () => resolve(false));
        s.listen(path, () => resolve(true));
      });
      if (ok && Buffer.byteLength(path) < 1024) {
        uds = s;
        udsPath = path;
      } else {
        s.close();
      }
    }
    const hub = new DataHub(server, port, uds, udsPath, opts.handshakeTimeoutMs ?? 10_000, opts.probe ?? null);
    for (const s of [server, uds]) {
      s?.on('connection', (sock) => hub.accept(sock));
      s?.on('error', () => undefined);
    }
    return hub;
  }

  /**
   * Registers a stream waiting for its send socket (the peer connects, presents the token, then only reads); returns
   * the token to advertise and an unregister function. `rest` is anything the peer sent after the token (garbage).
   */
  register(onSocket: (sock: Socket, rest: Buffer) => void): { token: Buffer; unregister(): void } {
    const token = randomBytes(16);
    const key = token.toString('hex');
    this.waiting.set(key, onSocket);
    return { token, unregister: () => this.waiting.delete(key) };
  }

  private accept(sock: Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => undefined);
    tune(sock);
    let head = Buffer.alloc(0);
    const timer = setTimeout(() => sock.destroy(), this.handshakeTimeoutMs);
    timer.unref();
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      if (head.byteLength >= 4 && head.readUInt32LE(0) !== HANDSHAKE_MAGIC) {
        clearTimeout(timer);
        sock.destroy(); // not ours: drop it at once
        return;
      }
      if (head.byteLength < HANDSHAKE_BYTES) return;
      sock.off('data', onData);
      clearTimeout(timer);
      const magic = head.readUInt32LE(0);
      const key = head.subarray(4, HANDSHAKE_BYTES).toString('hex');
      const claim = magic === HANDSHAKE_MAGIC ? this.waiting.get(key) : undefined;
      if (!claim) {
        sock.destroy(); // garbage or a stale token: drop it, keep serving everyone else
        return;
      }
      this.waiting.delete(key);
      claim(sock, head.subarray(HANDSHAKE_BYTES));
    };
    sock.on('data', onData);
  }

  async close(): Promise<void> {
    this.waiting.clear();
    for (const s of this.sockets) s.destroy();
    await Promise.all(
      [this.server, this.udsServer].map((s) => (s ? new Promise<void>((r) => s.close(() => r())) : undefined)),
    );
    if (this.udsPath && !this.udsPath.startsWith('\0')) rmSync(this.udsPath, { force: true });
    this.probe?.close();
  }
}

/**
 * Receiving side: connects to the peer's Unix socket `udsPath` when it exists here, else to host:port, presents the
 * token, and reads every transfer straight into its destination through `reader`. Resolves with the socket once
 * connected, or null when no connection can be made within `timeoutMs` (the peer then keeps sending over gRPC).
 */
export async function connectData(
  host: string,
  port: number,
  udsPath: string,
  token: Buffer,
  reader: TransferReader,
  onReadError: (err: FrameError) => void,
  timeoutMs = 5_000,
): Promise<Socket | null> {
  const onread = {
    buffer: () => reader.nextBuffer(),
    callback: (n: number): boolean => {
      try {
        reader.advance(n);
        return true;
      } catch (err) {
        onReadError(err instanceof FrameError ? err : new FrameError(String(err)));
        return false;
      }
    },
  };
  if (udsPath && (udsPath.startsWith('\0') || existsSync(udsPath))) {
    const s = await connectOnce({ path: udsPath, onread }, token, timeoutMs);
    if (s) return s;
  }
  return await connectOnce({ host, port, onread }, token, timeoutMs);
}

function connectOnce(
  to: ({ path: string } | { host: string; port: number }) & { onread: object },
  token: Buffer,
  timeoutMs: number,
): Promise<Socket | null> {
  return new Promise((resolve) => {
    const sock = connect({ ...to, noDelay: true } as unknown as NetConnectOpts);
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(null);
    }, timeoutMs);
    timer.unref();
    const onErr = (): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(null);
    };
    sock.once('error', onErr);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.off('error', onErr);
      sock.on('error', () => undefined); // reported through 'close' by the owner
      tune(sock);
      const h = Buffer.allocUnsafe(HANDSHAKE_BYTES);
      h.writeUInt32LE(HANDSHAKE_MAGIC, 0);
      token.copy(h, 4);
      sock.write(h);
      resolve(sock);
    });
  });
}
