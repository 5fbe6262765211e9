// Full-mesh TCP connections between the ranks of one world, with tagged message matching.
//
// Setup: every rank listens on an ephemeral port on the address its store connection uses, publishes `host:port`
// under `<prefix>/addr/<rank>`, connects to every other rank (sending an 8-byte hello: magic, rank) and accepts one
// connection from every other rank. Each pair thus has two connections, each used in one direction: a rank reads
// from peer p on the connection it dialed (a client socket, so it can use Node's `onread` to read straight into the
// destination buffer or into one reused staging buffer, skipping the stream machinery) and writes to p on the
// connection it accepted from p. `create` resolves once all 2(n−1) connections exist, or rejects after timeoutMs.
//
// Same host: each rank also listens on a Unix domain socket and publishes its path with a host identity (hostname +
// boot id, or TENSILE_HOST_ID: host-identity.ts); a peer with the same identity dials the Unix socket (measured
// faster than loopback TCP, see docs/collective.md), falling back to TCP if that fails. TENSILE_TCP_UDS=0 turns this
// off.
//
// Messages: a 16-byte header `u32 groupId | u32 seq | u32 step | u32 bytes` then the payload. A receive is posted
// with its key (groupId, seq, step) and destination bytes; payloads are copied straight from socket chunks into a
// posted destination (no copy for large payloads: the socket reads into it directly; one copy from the staging buffer
// otherwise), or into a temporary buffer when nothing is posted yet. Messages with the same key
// match in FIFO order (TCP keeps per-peer order). Payloads are written from the caller's typed-array memory without
// copying; `send` resolves when the kernel has taken the bytes, so the caller may then reuse the memory.
//
// Failure: a peer's close/error/end fails the whole transport with PEER_LOST naming the peer; `fail` rejects every
// posted receive and pending send at once and destroys all sockets. Nothing keeps the process alive afterwards.
// Longer than ~500 lines on purpose: mesh set-up, framing and tagged matching are one state machine per connection.
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../common/logger.js';
import { withTimeout } from '../common/timeout.js';
import { CollectiveError, type Store } from './api.js';
import { hostIdentity } from './host-identity.js';

const HELLO_MAGIC = 0x54534c31; // "TSL1"
const HEADER_BYTES = 16;
const STAGING_BYTES = 256 * 1024;
/** Payload remainders at least this large are read by the kernel straight into their destination. */
const DIRECT_READ_MIN_BYTES = 16 * 1024;
export const P2P_SEQ = 0xffffffff;
/** Header group id of the goodbye a rank sends before an orderly close (no payload follows). */
const GOODBYE_GROUP = 0xffffffff;
/** Header group id of a failure notice: `seq` names the lost rank. Sent before a rank tears down on PEER_LOST, so
 * that the others blame the rank that died rather than the rank that reacted first. */
const FAILURE_GROUP = 0xfffffffe;

interface Posted {
  readonly dst: Uint8Array;
  readonly resolve: () => void;
  readonly reject: (e: CollectiveError) => void;
}

interface Incoming {
  readonly key: string;
  readonly target: Uint8Array;
  readonly posted: Posted | null;
  readonly discard: boolean;
  filled: number;
}

class PeerLink {
  readonly posted = new Map<string, Posted[]>();
  readonly arrived = new Map<string, Uint8Array[]>();
  private readonly header = Buffer.allocUnsafe(HEADER_BYTES);
  private headerFill = 0;
  private current: Incoming | null = null;
  /** Set when the peer said goodbye: it destroyed its group in order, so its end of stream is not a failure. */
  peerClosed: CollectiveError | null = null;

  /** Written to (the connection this rank accepted from the peer). */
  sendSocket: Socket | null = null;
  /** Read from (the connection this rank dialed), with `onread` using nextReadBuffer/onRead. */
  recvSocket: Socket | null = null;
  readonly staging = Buffer.allocUnsafe(STAGING_BYTES);
  private directRead = false;

  constructor(
    readonly peer: number,
    private readonly transport: TcpTransport,
  ) {}

  get sockets(): Socket[] {
    return [this.sendSocket, this.recvSocket].filter((s): s is Socket => s !== null);
  }

  /** Where the next socket read lands: the current payload's destination when much of it remains, else staging. */
  nextReadBuffer(): Uint8Array {
    const cur = this.current;
    if (cur && cur.target.byteLength - cur.filled >= DIRECT_READ_MIN_BYTES) {
      this.directRead = true;
      return cur.target.subarray(cur.filled);
    }
    this.directRead = false;
    return this.staging;
  }

  onRead(bytes: number): void {
    if (this.directRead) {
      const cur = this.current!;
      cur.filled += bytes;
      if (cur.filled === cur.target.byteLength) this.finish(cur);
      return;
    }
    this.onData(this.staging.subarray(0, bytes));
  }

  onData(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      const cur = this.current;
      if (cur === null) {
        const n = Math.min(HEADER_BYTES - this.headerFill, chunk.length - off);
        chunk.copy(this.header, this.headerFill, off, off + n);
        this.headerFill += n;
        off += n;
        if (this.headerFill < HEADER_BYTES) return;
        this.headerFill = 0;
        this.begin();
        continue;
      }
      const n = Math.min(cur.target.byteLength - cur.filled, chunk.length - off);
      cur.target.set(chunk.subarray(off, off + n), cur.filled);
      cur.filled += n;
      off += n;
      if (cur.filled === cur.target.byteLength) this.finish(cur);
    }
  }

  private begin(): void {
    const h = this.header;
    if (h.readUInt32BE(0) === GOODBYE_GROUP) {
      this.peerClosed = new CollectiveError('PEER_LOST', `rank ${this.peer} has destroyed its process group`, {
        rank: this.transport.rank,
        peerRank: this.peer,
      });
      for (const q of this.posted.values()) for (const p of q) p.reject(this.peerClosed);
      this.posted.clear();
      return;
    }
    if (h.readUInt32BE(0) === FAILURE_GROUP) {
      const lost = h.readUInt32BE(4);
      this.transport.fail(
        new CollectiveError('PEER_LOST', `rank ${lost}: lost (reported by rank ${this.peer})`, {
          rank: this.transport.rank,
          peerRank: lost,
        }),
      );
      return;
    }
    const key = `${h.readUInt32BE(0)}:${h.readUInt32BE(4)}:${h.readUInt32BE(8)}`;
    const bytes = h.readUInt32BE(12);
    const p = this.takePosted(key);
    let cur: Incoming;
    if (p && p.dst.byteLength !== bytes) {
      p.reject(this.mismatch(key, p.dst.byteLength, bytes));
      cur = { key, target: Buffer.allocUnsafe(bytes), posted: null, discard: true, filled: 0 };
    } else if (p) cur = { key, target: p.dst, posted: p, discard: false, filled: 0 };
    else cur = { key, target: Buffer.allocUnsafe(bytes), posted: null, discard: false, filled: 0 };
    this.current = cur;
    if (bytes === 0) this.finish(cur);
  }

  private finish(cur: Incoming): void {
    this.current = null;
    if (cur.discard) return;
    if (cur.posted) {
      cur.posted.resolve();
      return;
    }
    const p = this.takePosted(cur.key);
    if (p) this.deliver(p, cur.key, cur.target);
    else {
      let q = this.arrived.get(cur.key);
      if (!q) this.arrived.set(cur.key, (q = []));
      q.push(cur.target);
    }
  }

  /** The oldest receive posted under `key`, dropping the key once its queue is empty (keys are per op and step). */
  private takePosted(key: string): Posted | null {
    const q = this.posted.get(key);
    if (!q) return null;
    const p = q.shift() ?? null;
    if (q.length === 0) this.posted.delete(key);
    return p;
  }

  deliver(p: Posted, key: string, data: Uint8Array): void {
    if (p.dst.byteLength !== data.byteLength) p.reject(this.mismatch(key, p.dst.byteLength, data.byteLength));
    else {
      p.dst.set(data);
      p.resolve();
    }
  }

  mismatch(key: string, expected: number, got: number): CollectiveError {
    return new CollectiveError(
      'INVALID_ARGUMENT',
      `message ${key} from rank ${this.peer} has ${got} bytes but ${expected} were expected: buffer lengths differ between ranks`,
      { rank: this.transport.rank, peerRank: this.peer },
    );
  }
}

export interface TransportOptions {
  readonly rank: number;
  readonly worldSize: number;
  readonly store: Store & { readonly localAddress?: string };
  readonly timeoutMs: number;
  readonly logger: Logger;
  /** Store key namespace for this world's addresses. */
  readonly prefix: string;
  /** Use Unix domain sockets between ranks on the same host (default true). */
  readonly unixSockets?: boolean;
}

interface PeerAddress {
  readonly host: string;
  readonly port: number;
  readonly hostId?: string;
  readonly path?: string;
}

function listen(server: Server, where: { port: number; host: string } | { path: string }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if ('path' in where) server.listen(where.path, done);
    else server.listen(where.port, where.host, done);
  });
}

/**
 * What a TCP process group needs from its transport (TcpTransport here; an in-memory fake in
 * test/unit/collective/ring-schedule.test.ts). Messages are matched per peer by key (groupId, seq, step), FIFO among
 * equal keys; `send` resolves once the bytes are taken (the caller may then reuse its memory); a size mismatch rejects
 * the receive with INVALID_ARGUMENT; after `fail` (or a lost peer) every posted and later call rejects with the
 * failure, and `onFailure` listeners are told once.
 */
export interface MeshTransport {
  readonly failed: CollectiveError | null;
  onFailure(cb: (e: CollectiveError) => void): () => void;
  send(peer: number, groupId: number, seq: number, step: number, data: Uint8Array): Promise<void>;
  recv(peer: number, groupId: number, seq: number, step: number, dst: Uint8Array): Promise<void>;
  fail(err: CollectiveError): void;
  /** Orderly close; later calls reject with CLOSED. */
  close(): Promise<void>;
}

export class TcpTransport implements MeshTransport {
  private readonly links: (PeerLink | null)[];
  private failure: CollectiveError | null = null;
  private readonly failureListeners = new Set<(e: CollectiveError) => void>();
  private closing = false;

  private constructor(
    readonly rank: number,
    readonly worldSize: number,
    private readonly logger: Logger,
  ) {
    this.links = new Array<PeerLink | null>(worldSize).fill(null);
  }

  get failed(): CollectiveError | null {
    return this.failure;
  }

  /** Builds the mesh; rejects with TIMEOUT (naming the missing ranks) or STORE. */
  static async create(o: TransportOptions): Promise<TcpTransport> {
    const t = new TcpTransport(o.rank, o.worldSize, o.logger);
    if (o.worldSize > 1) await t.connectMesh(o);
    return t;
  }

  private async connectMesh(o: TransportOptions): Promise<void> {
    const host = o.store.localAddress ?? '127.0.0.1';
    const server: Server = createServer();
    await listen(server, { port: 0, host });
    const port = (server.address() as { port: number }).port;
    const hostId = hostIdentity();
    let udsServer: Server | null = null;
    let udsPath: string | undefined;
    if (o.unixSockets !== false) {
      udsPath = join(tmpdir(), `tensile-${process.pid}-${randomBytes(6).toString('hex')}.sock`);
      udsServer = createServer();
      try {
        await listen(udsServer, { path: udsPath });
      } catch {
        udsServer = null;
        udsPath = undefined;
      }
    }
    const expectAccepted = o.worldSize - 1;
    const link = (peer: number): PeerLink => (this.links[peer] ??= new PeerLink(peer, this));
    try {
      const accepted = new Promise<void>((resolve, reject) => {
        let count = 0;
        const onConnection = (socket: Socket): void => {
          socket.setNoDelay(true);
          let hello = Buffer.alloc(0);
          const onHello = (chunk: Buffer): void => {
            hello = Buffer.concat([hello, chunk]);
            if (hello.length < 8) return;
            socket.off('data', onHello);
            const peer = hello.readUInt32BE(4);
            if (
              hello.readUInt32BE(0) !== HELLO_MAGIC ||
              peer === o.rank ||
              peer >= o.worldSize ||
              this.links[peer]?.sendSocket
            ) {
              socket.destroy();
              reject(
                new CollectiveError(
                  'STORE',
                  `bad hello from ${socket.remoteAddress}:${socket.remotePort} (claimed rank ${peer})`,
                ),
              );
              return;
            }
            link(peer).sendSocket = socket;
            this.watch(peer, socket);
            if (++count === expectAccepted) resolve();
          };
          socket.on('data', onHello);
          socket.on('error', () => {});
        };
        server.on('connection', onConnection);
        udsServer?.on('connection', onConnection);
      });
      const mine: PeerAddress = { host, port, hostId, path: udsPath };
      await o.store.set(`${o.prefix}/addr/${o.rank}`, JSON.stringify(mine));
      const peers = Array.from({ length: o.worldSize }, (_, i) => i).filter((i) => i !== o.rank);
      const dialed = Promise.all(
        peers.map(async (peer) => {
          const addr = JSON.parse(
            new TextDecoder().decode(await o.store.get(`${o.prefix}/addr/${peer}`, o.timeoutMs)),
          ) as PeerAddress;
          const l = link(peer);
          const onread = { buffer: () => l.nextReadBuffer(), callback: (bytes: number) => (l.onRead(bytes), true) };
          const dial = (to: { path: string } | { host: string; port: number }): Promise<Socket> =>
            new Promise<Socket>((resolve, reject) => {
              const s = connect({ ...to, onread });
              s.once('error', reject);
              s.once('connect', () => {
                s.off('error', reject);
                resolve(s);
              });
            });
          let socket: Socket | null = null;
          if (udsServer && addr.path && addr.hostId === hostId)
            socket = await dial({ path: addr.path }).catch(() => null);
          socket ??= await dial({ host: addr.host, port: addr.port });
          socket.setNoDelay(true);
          const hello = Buffer.allocUnsafe(8);
          hello.writeUInt32BE(HELLO_MAGIC, 0);
          hello.writeUInt32BE(o.rank, 4);
          socket.write(hello);
          l.recvSocket = socket;
          this.watch(peer, socket);
        }),
      );
      const meshTimeout = (): CollectiveError => {
        const missing = this.links
          .map((l, i) => (i === o.rank || (l?.sendSocket && l.recvSocket) ? -1 : i))
          .filter((i) => i >= 0);
        return new CollectiveError(
          'TIMEOUT',
          `tcp mesh not connected within ${o.timeoutMs} ms; missing ranks ${missing.join(', ')}`,
          { rank: o.rank, peerRank: missing[0] },
        );
      };
      // The listening server and the dials hold the process; the bound must not.
      await withTimeout(Promise.all([accepted, dialed]), o.timeoutMs, 'tcp mesh', meshTimeout, { unref: true });
    } catch (err) {
      this.fail(
        err instanceof CollectiveError
          ? err
          : new CollectiveError('STORE', `tcp mesh setup failed: ${String(err)}`, { cause: err }),
      );
      throw this.failure;
    } finally {
      server.close();
      if (udsServer) {
        udsServer.close();
        rmSync(udsPath!, { force: true });
      }
    }
  }

  private watch(peer: number, socket: Socket): void {
    const link = this.links[peer]!;
    const lost = (why: string, cause?: unknown): void => {
      if (this.closing || link.peerClosed) return;
      this.fail(
        new CollectiveError('PEER_LOST', `rank ${peer}: connection ${why}`, { rank: this.rank, peerRank: peer, cause }),
      );
    };
    socket.on('error', (err) => lost(`error (${(err as NodeJS.ErrnoException).code ?? err.message})`, err));
    // End of stream is judged on the read side only: the goodbye that makes it orderly arrives there, in order,
    // while the write side's end may overtake it. A dead peer closes both, so the read side always sees it.
    if (socket !== link.recvSocket) return;
    socket.on('end', () => lost('closed by the peer'));
    socket.on('close', () => lost('closed'));
  }

  onFailure(cb: (e: CollectiveError) => void): () => void {
    this.failureListeners.add(cb);
    return () => this.failureListeners.delete(cb);
  }

  /** Sends `data` to `peer` under key (groupId, seq, step); resolves once the kernel holds the bytes. */
  send(peer: number, groupId: number, seq: number, step: number, data: Uint8Array): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const link = this.links[peer];
    if (!link)
      return Promise.reject(
        new CollectiveError('INVALID_ARGUMENT', `no connection to rank ${peer}`, { rank: this.rank }),
      );
    if (link.peerClosed) return Promise.reject(link.peerClosed);
    const h = Buffer.allocUnsafe(HEADER_BYTES);
    h.writeUInt32BE(groupId, 0);
    h.writeUInt32BE(seq, 4);
    h.writeUInt32BE(step, 8);
    h.writeUInt32BE(data.byteLength, 12);
    const s = link.sendSocket!;
    return new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null): void => {
        if (!err) resolve();
        else
          reject(
            this.failure ??
              new CollectiveError('PEER_LOST', `rank ${peer}: write failed: ${err.message}`, {
                rank: this.rank,
                peerRank: peer,
              }),
          );
      };
      if (data.byteLength === 0) {
        s.write(h, done);
        return;
      }
      s.cork();
      s.write(h);
      s.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength), done);
      s.uncork();
    });
  }

  /** Receives the message with key (groupId, seq, step) from `peer` into `dst` (whose length must match). */
  recv(peer: number, groupId: number, seq: number, step: number, dst: Uint8Array): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const link = this.links[peer];
    if (!link)
      return Promise.reject(
        new CollectiveError('INVALID_ARGUMENT', `no connection to rank ${peer}`, { rank: this.rank }),
      );
    const key = `${groupId}:${seq}:${step}`;
    return new Promise<void>((resolve, reject) => {
      const p: Posted = { dst, resolve, reject };
      const q = link.arrived.get(key);
      const data = q?.shift();
      if (q && q.length === 0) link.arrived.delete(key);
      if (data) {
        link.deliver(p, key, data);
        return;
      }
      if (link.peerClosed) {
        reject(link.peerClosed);
        return;
      }
      let posted = link.posted.get(key);
      if (!posted) link.posted.set(key, (posted = []));
      posted.push(p);
    });
  }

  /** Fails everything at once: posted receives reject with `err`, sockets are destroyed. Idempotent. */
  fail(err: CollectiveError): void {
    if (this.failure) return;
    this.failure = err;
    if (err.code !== 'CLOSED')
      this.logger.warn({ code: err.code, peerRank: err.peerRank, msg: err.message }, 'tcp transport failed');
    for (const link of this.links) {
      if (!link) continue;
      for (const q of link.posted.values()) for (const p of q) p.reject(err);
      link.posted.clear();
      link.arrived.clear();
      const notify =
        err.code === 'PEER_LOST' && err.peerRank !== undefined && err.peerRank !== link.peer && !link.peerClosed;
      if (notify && link.sendSocket && !link.sendSocket.destroyed) {
        const notice = Buffer.alloc(HEADER_BYTES);
        notice.writeUInt32BE(FAILURE_GROUP, 0);
        notice.writeUInt32BE(err.peerRank!, 4);
        const sock = link.sendSocket;
        sock.end(notice);
        setTimeout(() => sock.destroy(), 1000).unref();
        link.recvSocket?.destroy();
      } else for (const sock of link.sockets) sock.destroy();
    }
    for (const cb of this.failureListeners) cb(err);
  }

  /** Orderly close: ends every connection (waiting up to 1 s for each to close); later calls reject with CLOSED. */
  async close(): Promise<void> {
    if (this.failure) return;
    this.closing = true;
    const closed = this.links
      .filter((l): l is PeerLink => l !== null)
      .flatMap((l) => l.sockets.map((sock) => ({ l, sock })))
      .map(
        ({ l, sock }) =>
          new Promise<void>((resolve) => {
            if (sock.destroyed) return resolve();
            const timer = setTimeout(() => resolve(), 1000);
            timer.unref();
            sock.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
            if (sock === l.sendSocket) {
              const bye = Buffer.alloc(HEADER_BYTES);
              bye.writeUInt32BE(GOODBYE_GROUP, 0);
              sock.end(bye);
            } else sock.end();
          }),
      );
    await Promise.all(closed);
    this.fail(new CollectiveError('CLOSED', 'process group destroyed', { rank: this.rank }));
  }
}
