// gRPC mechanism: one server per worker, ONE long-lived bidirectional stream per peer pair. No RPC semantics here.
//
// The service has a single bidi method whose messages are raw Buffers (custom identity (de)serializers, no protobuf
// codegen). Each gRPC message is a segment of frame.ts. Writes are queued and flushed on process.nextTick, so
// many small calls issued together share one gRPC message (this is where the throughput comes from).

import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { FrameError, SegmentReader, packSegments, SEGMENT_BYTES } from './frame.js';
import type { TlsOptions } from './api.js';
import {
  DataHub,
  TransferReader,
  connectData,
  nextTransferId,
  writeTransfers,
  type DataChannelOptions,
} from './data-channel.js';
import { loadAddon, type NativeAddon } from '../collective/native/addon.js';
import {
  HelloReader,
  helloRecord,
  acceptOffer,
  decodeOffer,
  encodeOffer,
  ShmProbe,
  ShmReceiver,
  ShmSender,
  trimPeriodically,
  SHM_MIN_BYTES,
  SHM_OFFER_BYTES,
} from './shm-transfer.js';

const KIND_DATA_PORT = 0x50; // 'P'
const KIND_DATA_SWITCH = 0x58; // 'X'
// 'P' u16 port, 16-byte token, u16 path length, path (UTF-8), then optionally a shared-memory offer (shm-transfer.ts)
const DATA_PORT_MIN_BYTES = 21;

export const defaultDataChannel: DataChannelOptions = { enabled: true, unixSocket: undefined, sharedMemory: true };

/**
 * Test hooks: advertise another data port than the real one and no Unix socket (to test the unreachable fallback);
 * offer shared memory with a wrong probe token (to test that a failed probe keeps the socket path).
 */
export const dataChannelTestHooks: { advertisedPort?: number; noUds?: boolean; badShmProbe?: boolean } = {};

/** The addon when it has the shared-memory transfer calls, else null (then shared memory is neither offered nor accepted). */
function xferAddon(): NativeAddon | null {
  const l = loadAddon();
  return l.ok && typeof l.addon.xferSegCreate === 'function' ? l.addon : null;
}

/**
 * How a receive socket allocates large frames: reused native receive buffers on SharedArrayBuffers when the addon has
 * them (V8 counts an ordinary Buffer of 16 MB as external memory and collects after every few; xfer.cc), else
 * TransferReader's default.
 */
function receiveBuffers(): ((bytes: number) => Buffer) | undefined {
  const addon = xferAddon();
  if (!addon || typeof addon.xferAlloc !== 'function') return undefined;
  trimPeriodically(addon); // kept receive buffers unused for a minute are let go
  return (n) => Buffer.from(addon.xferAlloc(n));
}

/** The data-channel side of a stream: our listener (if any), how to reach the peer's, the options. */
interface DataRole {
  readonly hub: DataHub | null;
  /** The peer's address for a TCP data connection. */
  readonly peerHost: string;
  readonly opts: DataChannelOptions;
}

const identity = (b: Buffer): Buffer => b;
export const serviceDefinition: grpc.ServiceDefinition = {
  stream: {
    path: '/tensile.rpc.Rpc/Stream',
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

const RpcClient = grpc.makeGenericClientConstructor(serviceDefinition, 'Rpc');

export const channelOptions: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': 4 * 1024 * 1024 + 1024,
  'grpc.max_send_message_length': 4 * 1024 * 1024 + 1024,
  'grpc-node.flow_control_window': 32 * 1024 * 1024,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 20_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_time_between_pings_ms': 5_000,
  'grpc.http2.max_pings_without_data': 0,
};

type Duplex = grpc.ClientDuplexStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>;

/**
 * One end of a peer stream. `onFrames` gets complete raw frames in arrival order; `onClose` fires once, with an
 * error unless the stream ended cleanly or `close()` was called here.
 */
export class StreamConn {
  onFrames: (frames: Buffer[]) => void = () => {};
  onClose: (err?: Error) => void = () => {};
  /** A segment that could not be parsed: the stream is out of sync and is closed after this is reported. */
  onProtocolError: (err: FrameError) => void = () => {};
  /** The way large frames to the peer travel, at the first one and whenever it changes (for one log line each). */
  onLargeFramePath: (path: 'shared memory' | 'data socket' | 'gRPC', why: string) => void = () => {};
  private largeFramePath = '';
  private queue: { parts: Buffer[]; bytes: number }[] = [];
  private scheduled = false;
  private closed = false;
  private readonly reader = new SegmentReader();
  bytesOut = 0;
  /** Bytes sent over the data channel (frames and transfer headers). */
  dataBytesOut = 0;
  /** Largest gRPC message written (tests and benchmarks may lower it; the receiver accepts up to 4 MiB). */
  segmentBytes = SEGMENT_BYTES;
  /** Accepted by our hub: large frames to the peer go here. */
  private sendSock: Socket | null = null;
  /** Connected by us to the peer's hub: large frames from the peer arrive here. */
  private recvSock: Socket | null = null;
  private registration: { unregister(): void } | null = null;
  private recvRequested = false;
  private nextTransferId = 1;
  /** We told the peer (an 'X' segment) that every later frame comes on the data channel. */
  private switchedOut = false;
  /** The peer told us so: frames from the data channel may be delivered (all its gRPC frames came before). */
  private switchedIn = false;
  /** Data-channel frames that arrived before the peer's 'X' (delivered right after it, keeping the order). */
  private early: Buffer[] = [];
  private batch: Buffer[] = [];
  private readonly readyWaiters: (() => void)[] = [];
  /** Shared memory for large frames to the peer (after its hello) and from it (after we accepted its offer). */
  private shmOut: ShmSender | null = null;
  private shmIn: ShmReceiver | null = null;

  constructor(
    private readonly duplex: Duplex,
    private readonly client?: grpc.Client,
    private readonly data?: DataRole,
  ) {
    duplex.on('data', (seg: Buffer) => {
      if (this.closed) return;
      try {
        this.onSegment(seg);
      } catch (err) {
        if (err instanceof FrameError) {
          this.onProtocolError(err);
          this.fail(err);
          return;
        }
        throw err;
      }
    });
    duplex.on('error', (err: Error) => this.fail(err));
    duplex.on('end', () => this.fail(new Error('stream ended by peer')));
    duplex.on('close', () => this.fail(new Error('stream closed')));
    const hub = data?.opts.enabled ? data.hub : null;
    if (hub) {
      const reg = hub.register((sock, rest) => this.attachSend(sock, rest));
      this.registration = reg;
      const path = Buffer.from(dataChannelTestHooks.noUds ? '' : hub.udsPath);
      const offer = hub.probe
        ? encodeOffer(
            dataChannelTestHooks.badShmProbe ? { ...hub.probe.offer, token: Buffer.alloc(16) } : hub.probe.offer,
          )
        : Buffer.alloc(0);
      const p = Buffer.allocUnsafe(DATA_PORT_MIN_BYTES + path.byteLength + offer.byteLength);
      p.writeUInt8(KIND_DATA_PORT, 0);
      p.writeUInt16LE(dataChannelTestHooks.advertisedPort ?? hub.port, 1);
      reg.token.copy(p, 3);
      p.writeUInt16LE(path.byteLength, 19);
      path.copy(p, DATA_PORT_MIN_BYTES);
      offer.copy(p, DATA_PORT_MIN_BYTES + path.byteLength);
      duplex.write(p);
    }
  }

  /** The data sockets when the fast path is up in that direction (tests use them to break the connection). */
  get dataSockets(): { send: Socket | null; recv: Socket | null } {
    return { send: this.sendSock, recv: this.recvSock };
  }

  /** Frames that went through shared memory, each way (tests and benchmarks check which path was taken). */
  get shmTransfers(): { out: number; in: number } {
    return { out: this.shmOut?.transfers ?? 0, in: this.shmIn?.transfers ?? 0 };
  }

  /** Resolves when `cond` holds for the data sockets, or when the stream closes (tests and benchmarks wait on it). */
  async waitData(
    cond: (s: { send: Socket | null; recv: Socket | null; shmOut: boolean; shmIn: boolean }) => boolean,
  ): Promise<void> {
    const state = () => ({ ...this.dataSockets, shmOut: this.shmOut !== null, shmIn: this.shmIn !== null });
    while (!this.closed && !cond(state())) await new Promise<void>((r) => this.readyWaiters.push(r));
  }

  private wakeReady(): void {
    for (const w of this.readyWaiters.splice(0)) w();
  }

  private onSegment(seg: Buffer): void {
    if (!this.reader.inChunk && seg.byteLength > 0) {
      if (seg[0] === KIND_DATA_PORT) return this.onDataPort(seg);
      if (seg[0] === KIND_DATA_SWITCH) {
        if (seg.byteLength !== 1) throw new FrameError(`data switch segment of ${seg.byteLength} bytes (expected 1)`);
        if (!this.recvSock) throw new FrameError('peer switched to the data channel but no data connection is open');
        this.switchedIn = true;
        const early = this.early;
        this.early = [];
        if (early.length > 0) this.onFrames(early);
        return;
      }
    }
    const frames = this.reader.push(seg);
    if (frames.length > 0) this.onFrames(frames);
  }

  /** The peer advertised its data listener: connect our receive socket to it (once). */
  private onDataPort(seg: Buffer): void {
    const pathEnd = seg.byteLength >= DATA_PORT_MIN_BYTES ? DATA_PORT_MIN_BYTES + seg.readUInt16LE(19) : -1;
    if (pathEnd < 0 || (seg.byteLength !== pathEnd && seg.byteLength !== pathEnd + SHM_OFFER_BYTES)) {
      throw new FrameError(`data port segment of ${seg.byteLength} bytes does not match its declared path length`);
    }
    const d = this.data;
    if (!d?.opts.enabled || this.recvRequested) return; // fast path off here: the peer keeps sending over gRPC
    this.recvRequested = true;
    const port = seg.readUInt16LE(1);
    const token = Buffer.from(seg.subarray(3, 19));
    const udsPath = seg.subarray(DATA_PORT_MIN_BYTES, pathEnd).toString('utf8');
    const offer = seg.byteLength > pathEnd ? decodeOffer(seg.subarray(pathEnd)) : null;
    const addon = offer && d.opts.sharedMemory ? xferAddon() : null;
    const shmIn = addon && acceptOffer(addon, offer!) ? new ShmReceiver(addon) : null;
    const reader = new TransferReader(
      {
        onTransfer: (_id, frame) => {
          if (this.switchedIn) this.batch.push(frame);
          else this.early.push(frame);
        },
        onBatchEnd: () => {
          if (this.batch.length === 0 || this.closed) return;
          const b = this.batch;
          this.batch = [];
          this.onFrames(b);
        },
        readShm: shmIn ? (r) => shmIn.read(r) : undefined,
      },
      receiveBuffers(),
    );
    const onReadError = (err: FrameError): void => {
      if (this.closed) return;
      this.onProtocolError(err);
      this.fail(err);
    };
    void connectData(d.peerHost, port, udsPath, token, reader, onReadError).then((sock) => {
      if (!sock) return; // unreachable: the peer keeps sending over gRPC
      if (this.closed) {
        sock.destroy();
        return;
      }
      this.recvSock = sock;
      sock.on('close', () => this.fail(new Error('data connection closed')));
      if (shmIn) {
        this.shmIn = shmIn;
        sock.write(helloRecord()); // hello: the peer may now send large frames through shared memory
      }
      this.wakeReady();
    });
  }

  /** Our hub accepted the peer's receive socket: large frames to the peer go over it from now on. */
  private attachSend(sock: Socket, rest: Buffer): void {
    if (this.closed || this.sendSock) {
      sock.destroy();
      return;
    }
    this.registration = null;
    this.sendSock = sock;
    // The receiving side writes only its shared-memory hello back (shm-transfer.ts); anything else fails the stream.
    const probe = this.data?.hub?.probe ?? null;
    const hellos = new HelloReader(() => {
      if (!probe) throw new FrameError('data channel: a shared-memory hello, but none was offered');
      const addon = xferAddon();
      if (addon && !this.shmOut) this.shmOut = new ShmSender(addon);
      this.wakeReady();
    });
    const onHelloBytes = (chunk: Buffer): void => {
      try {
        hellos.push(chunk);
      } catch (err) {
        const e = err instanceof FrameError ? err : new FrameError(String(err));
        this.onProtocolError(e);
        this.fail(e);
      }
    };
    sock.on('data', onHelloBytes);
    sock.on('close', () => this.fail(new Error('data connection closed')));
    this.wakeReady();
    if (rest.byteLength > 0) onHelloBytes(rest);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Queues an encoded frame; the queue is flushed once the current job and its microtasks are done. Never throws. */
  send(frame: { parts: Buffer[]; bytes: number }): void {
    if (this.closed) return;
    this.queue.push(frame);
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(() => this.flush());
    }
  }

  /** Writes raw segment bytes as they are (tests use it to send malformed data). */
  sendRawSegment(seg: Buffer): void {
    if (!this.closed) this.duplex.write(seg);
  }

  private flush(): void {
    this.scheduled = false;
    if (this.closed || this.queue.length === 0) return;
    const q = this.queue;
    this.queue = [];
    if (q.some((f) => f.bytes >= SHM_MIN_BYTES)) this.reportLargeFramePath();
    const sock = this.sendSock;
    if (sock && !sock.destroyed) {
      if (!this.switchedOut) {
        // Everything before this went over gRPC; the peer delivers data-channel frames only after seeing this.
        this.switchedOut = true;
        this.duplex.write(Buffer.of(KIND_DATA_SWITCH));
        this.bytesOut += 1;
      }
      this.dataBytesOut += writeTransfers(sock, this.nextTransferId, q, this.shmOut);
      for (let i = 0; i < q.length; i++) this.nextTransferId = nextTransferId(this.nextTransferId);
      return;
    }
    this.writeGrpc(q);
  }

  private reportLargeFramePath(): void {
    const path = this.shmOut ? 'shared memory' : this.sendSock ? 'data socket' : 'gRPC';
    if (path === this.largeFramePath) return;
    this.largeFramePath = path;
    const d = this.data;
    const why =
      path === 'shared memory'
        ? 'the peer runs on this host'
        : !d?.opts.enabled
          ? 'the data channel is off (or TLS is on)'
          : !this.sendSock
            ? 'no data connection from the peer (yet)'
            : !d.opts.sharedMemory
              ? 'sharedMemory is off'
              : !d.hub?.probe
                ? 'the native addon is not available here'
                : "the peer cannot open this host's shared memory (another host or container, or no addon there)";
    this.onLargeFramePath(path, why);
  }

  private writeGrpc(frames: { parts: Buffer[]; bytes: number }[]): void {
    if (frames.length === 0) return;
    for (const seg of packSegments(frames, this.segmentBytes)) {
      this.bytesOut += seg.byteLength;
      this.duplex.write(seg);
    }
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.early = [];
    this.batch = [];
    this.onClose(err);
    this.teardown();
  }

  /** Closes this end (pending queued frames are flushed first). */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.onClose();
    this.teardown(true);
  }

  private teardown(graceful = false): void {
    this.registration?.unregister();
    this.registration = null;
    const send = this.sendSock;
    const shmOut = this.shmOut;
    if (send && graceful) {
      // Let what was just flushed reach the peer (a final answer, the shutdown barrier), then close; segments that
      // the peer may still have to open stay until then.
      send.end();
      send.once('close', () => shmOut?.close());
      setTimeout(() => send.destroy(), 1_000).unref();
    } else {
      send?.destroy();
      shmOut?.close();
    }
    this.recvSock?.destroy();
    this.shmIn?.close();
    this.wakeReady();
    try {
      if ('cancel' in this.duplex && this.client) {
        this.duplex.end();
        this.duplex.cancel();
      } else {
        this.duplex.end();
      }
    } catch {
      // already gone
    }
    this.client?.close();
  }
}

function readTls(tls: TlsOptions): { ca: Buffer; cert: Buffer; key: Buffer } {
  return { ca: readFileSync(tls.caFile), cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) };
}

const hubs = new WeakMap<grpc.Server, DataHub>();

/** "1.2.3.4:5678" / "::1:5678" (grpc-js getPeer) -> the address part. */
function peerHostOf(peer: string): string {
  const i = peer.lastIndexOf(':');
  const h = i > 0 ? peer.slice(0, i) : peer;
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

/**
 * Starts a server on host:port (0 = any free port). `onStream` gets every incoming peer stream. Unless TLS is on or
 * `data.enabled` is false, a data-channel listener (any free port on `host`, and a Unix socket) is started beside
 * it; pass the returned `hub` to openStream so that this worker's outgoing streams use it too.
 */
export async function startServer(
  host: string,
  port: number,
  onStream: (conn: StreamConn) => void,
  tls?: TlsOptions,
  data: DataChannelOptions = defaultDataChannel,
): Promise<{ server: grpc.Server; port: number; hub: DataHub | null }> {
  const useData = data.enabled && !tls;
  const addon = useData && data.sharedMemory ? xferAddon() : null;
  const probe = addon ? ShmProbe.create(addon) : null;
  const hub = useData ? await DataHub.listen(host, { uds: data.unixSocket ?? probe !== null, probe }) : null;
  const server = new grpc.Server(channelOptions);
  if (hub) hubs.set(server, hub);
  server.addService(serviceDefinition, {
    stream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) =>
      onStream(
        new StreamConn(
          call,
          undefined,
          useData ? { hub, peerHost: peerHostOf(call.getPeer()), opts: data } : undefined,
        ),
      ),
  });
  const creds = tls
    ? (() => {
        const t = readTls(tls);
        return grpc.ServerCredentials.createSsl(t.ca, [{ private_key: t.key, cert_chain: t.cert }], true);
      })()
    : grpc.ServerCredentials.createInsecure();
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, creds, (err, p) =>
      err ? reject(err) : resolve(p),
    );
  }).catch(async (err: unknown) => {
    await hub?.close();
    throw err;
  });
  widenServerWindows(server);
  return { server, port: bound, hub };
}

/**
 * grpc-js applies 'grpc-node.flow_control_window' (and TCP_NODELAY) to client sessions only; server sessions keep HTTP/2's 64 KiB
 * window, so a 16 MB request would wait for ~256 WINDOW_UPDATE round trips. Widen the server side the same way
 * through grpc-js's (internal) http2 server map. If that internal shape changes this silently does nothing:
 * calls still work, large requests are just slower.
 */
function widenServerWindows(server: grpc.Server): void {
  const win = channelOptions['grpc-node.flow_control_window'] as number;
  const map = (
    server as unknown as { http2Servers?: Map<{ on?: (ev: string, fn: (s: unknown) => void) => void }, unknown> }
  ).http2Servers;
  if (!(map instanceof Map)) return;
  for (const h2 of map.keys()) {
    h2.on?.('session', (session) => {
      const s = session as {
        setLocalWindowSize?(n: number): void;
        settings?(x: object): void;
        socket?: { setNoDelay?(v: boolean): void };
      };
      try {
        s.socket?.setNoDelay?.(true); // grpc-js sets TCP_NODELAY on client sockets only
        s.settings?.({ initialWindowSize: win, maxFrameSize: 16_777_215 });
        s.setLocalWindowSize?.(win);
      } catch {
        // session already closing
      }
    });
  }
}

/**
 * Opens a stream to host:port. The stream is usable at once; connection failure shows up as onClose(err). Unless TLS
 * is on or `data.enabled` is false, the data channel is set up: server->client when the server advertises a data
 * listener, client->server when `hub` (this worker's listener, from startServer) is given.
 */
export function openStream(
  host: string,
  port: number,
  tls?: TlsOptions,
  data: DataChannelOptions = defaultDataChannel,
  hub: DataHub | null = null,
): StreamConn {
  const creds = tls
    ? (() => {
        const t = readTls(tls);
        // Peers are addressed by IP; trust is the private CA (mutual TLS), not the host name.
        return grpc.credentials.createSsl(t.ca, t.key, t.cert, { checkServerIdentity: () => undefined });
      })()
    : grpc.credentials.createInsecure();
  const target = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const client = new RpcClient(target, creds, channelOptions);
  const call = (client as unknown as { stream(): grpc.ClientDuplexStream<Buffer, Buffer> }).stream();
  const useData = data.enabled && !tls;
  return new StreamConn(call, client, useData ? { hub, peerHost: host, opts: data } : undefined);
}

export async function stopServer(server: grpc.Server, graceMs = 1000): Promise<void> {
  const hub = hubs.get(server);
  hubs.delete(server);
  await hub?.close();
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    t.unref();
    server.tryShutdown(() => {
      clearTimeout(t);
      resolve();
    });
  });
}
