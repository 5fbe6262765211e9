// Bulk data channel beside gRPC: one raw TCP connection per peer stream, carrying frames above a size threshold.
//
// gRPC stays the control plane. The server end of every peer stream advertises, as the stream's first segment,
// this worker's data port and a random 16-byte token ('P' segment, see frame.ts). The client end connects a plain
// TCP socket to the same host at that port and sends  "TDC1" | token ; the server matches the token to its stream.
// From then on either end may send a large frame as
//   gRPC:  'D' u32 transferId u32 totalBytes          (a reference, in order with every other frame)
//   data:  "TDX1" u32 transferId u32 totalBytes | the frame's bytes (header, body, tensors: zero-copy views)
// and the receiver delivers it at the place of its reference, so the stream's ordering is kept exactly. The data
// socket never carries anything else. If the data connection cannot be made the stream simply keeps sending
// everything over gRPC. If an established data connection breaks, or carries bytes that do not parse, the whole
// peer stream is failed (callers see PEER_LOST, as for a broken gRPC stream): frames referenced on gRPC could
// otherwise never arrive. With TLS the fast path is off (the data socket would be unencrypted).

import { randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { FrameError } from './frame.js';

export const HANDSHAKE_MAGIC = 0x31434454; // "TDC1" little-endian
export const TRANSFER_MAGIC = 0x31584454; // "TDX1" little-endian
export const HANDSHAKE_BYTES = 20;
export const TRANSFER_HEADER_BYTES = 12;
/** Default smallest frame sent over the data channel (smaller frames batch better on gRPC). */
export const DEFAULT_DATA_MIN_BYTES = 256 * 1024;
/** Largest transfer a receiver accepts (a corrupt header must not allocate without bound). */
export const MAX_TRANSFER_BYTES = 2 ** 32 - 1;

export interface DataChannelOptions {
  /** Use the data channel at all (default true; forced off with TLS). */
  readonly enabled: boolean;
  /** Frames of at least this many bytes go over the data channel. */
  readonly minBytes: number;
}

/** What the receiving side of a data socket does with complete transfers and failures. */
export interface DataSink {
  onTransfer(id: number, frame: Buffer): void;
  onDataError(err: Error): void;
}

/** Parses the data socket's byte stream into transfers, copying each straight into one buffer of its final size. */
export class TransferReader {
  private hdr = Buffer.allocUnsafe(TRANSFER_HEADER_BYTES);
  private hdrFill = 0;
  private cur: Buffer | null = null;
  private curId = 0;
  private fill = 0;

  constructor(private readonly sink: DataSink) {}

  /** Throws FrameError on bytes that do not parse (the socket is then out of sync and must be closed). */
  push(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.byteLength) {
      if (!this.cur) {
        const n = Math.min(TRANSFER_HEADER_BYTES - this.hdrFill, chunk.byteLength - off);
        chunk.copy(this.hdr, this.hdrFill, off, off + n);
        this.hdrFill += n;
        off += n;
        if (this.hdrFill < TRANSFER_HEADER_BYTES) return;
        this.hdrFill = 0;
        const magic = this.hdr.readUInt32LE(0);
        if (magic !== TRANSFER_MAGIC) {
          throw new FrameError(`data channel: bad transfer magic 0x${magic.toString(16)} (expected 0x${TRANSFER_MAGIC.toString(16)})`);
        }
        this.curId = this.hdr.readUInt32LE(4);
        const total = this.hdr.readUInt32LE(8);
        if (total < 16) throw new FrameError(`data channel: transfer of ${total} bytes is shorter than a frame header`);
        this.cur = Buffer.allocUnsafeSlow(total);
        this.fill = 0;
        continue;
      }
      const n = Math.min(this.cur.byteLength - this.fill, chunk.byteLength - off);
      chunk.copy(this.cur, this.fill, off, off + n);
      this.fill += n;
      off += n;
      if (this.fill === this.cur.byteLength) {
        const done = this.cur;
        this.cur = null;
        this.sink.onTransfer(this.curId, done);
      }
    }
  }
}

/** Writes one transfer: header, then the frame's parts as they are (no copy; the socket keeps references). */
export function writeTransfer(sock: Socket, id: number, frame: { parts: Buffer[]; bytes: number }): void {
  const h = Buffer.allocUnsafe(TRANSFER_HEADER_BYTES);
  h.writeUInt32LE(TRANSFER_MAGIC, 0);
  h.writeUInt32LE(id >>> 0, 4);
  h.writeUInt32LE(frame.bytes, 8);
  sock.cork();
  sock.write(h);
  for (const p of frame.parts) sock.write(p);
  sock.uncork();
}

function tune(sock: Socket): void {
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
    private readonly handshakeTimeoutMs: number,
  ) {}

  static async listen(host: string, handshakeTimeoutMs = 10_000): Promise<DataHub> {
    const server = createServer({ noDelay: true });
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, () => {
        server.off('error', reject);
        resolve((server.address() as { port: number }).port);
      });
    });
    const hub = new DataHub(server, port, handshakeTimeoutMs);
    server.on('connection', (s) => hub.accept(s));
    server.on('error', () => undefined);
    return hub;
  }

  /** Registers a stream waiting for its data socket; returns the token to advertise and an unregister function. */
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
      sock.pause();
      claim(sock, head.subarray(HANDSHAKE_BYTES));
    };
    sock.on('data', onData);
  }

  async close(): Promise<void> {
    this.waiting.clear();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/**
 * Client side: connects to host:port and presents the token. Resolves with the socket once connected, or null when
 * the connection cannot be made within `timeoutMs` (the caller then keeps using gRPC only).
 */
export function connectData(host: string, port: number, token: Buffer, timeoutMs = 5_000): Promise<Socket | null> {
  return new Promise((resolve) => {
    const sock = connect({ host, port, noDelay: true });
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
