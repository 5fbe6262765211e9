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
  writeTransfer,
  DEFAULT_DATA_MIN_BYTES,
  type DataChannelOptions,
} from './data-channel.js';

const KIND_DATA_PORT = 0x50; // 'P'
const KIND_DATA_REF = 0x44; // 'D'
const DATA_PORT_SEG_BYTES = 19;
const DATA_REF_SEG_BYTES = 9;

export const defaultDataChannel: DataChannelOptions = { enabled: true, minBytes: DEFAULT_DATA_MIN_BYTES };

/** Test hooks: advertise another data port than the real one (to test the fallback when it is unreachable). */
export const dataChannelTestHooks: { advertisedPort?: number } = {};

type DataRole =
  | { readonly role: 'server'; readonly hub: DataHub; readonly opts: DataChannelOptions }
  | { readonly role: 'client'; readonly host: string; readonly opts: DataChannelOptions };

type InboxItem = { raw: Buffer } | { id: number; bytes: number };

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
  private queue: { parts: Buffer[]; bytes: number }[] = [];
  private scheduled = false;
  private closed = false;
  private readonly reader = new SegmentReader();
  bytesOut = 0;
  /** Bytes sent over the data channel (frames and transfer headers). */
  dataBytesOut = 0;
  /** Largest gRPC message written (tests and benchmarks may lower it; the receiver accepts up to 4 MiB). */
  segmentBytes = SEGMENT_BYTES;
  private dataSock: Socket | null = null;
  private dataRegistration: { unregister(): void } | null = null;
  private dataRequested = false;
  private nextTransferId = 1;
  /** Frames waiting for a data-channel transfer referenced before them (keeps the stream's order). */
  private readonly inbox: InboxItem[] = [];
  private readonly arrived = new Map<number, Buffer>();
  private resolveData: (() => void) | null = null;
  /** Resolves when the data channel is attached (tests and benchmarks wait on it). */
  readonly dataReady: Promise<void>;

  constructor(
    private readonly duplex: Duplex,
    private readonly client?: grpc.Client,
    private readonly data?: DataRole,
  ) {
    this.dataReady = new Promise((r) => (this.resolveData = r));
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
    if (data?.role === 'server' && data.opts.enabled) {
      const reg = data.hub.register((sock, rest) => this.attachData(sock, rest));
      this.dataRegistration = reg;
      const p = Buffer.allocUnsafe(DATA_PORT_SEG_BYTES);
      p.writeUInt8(KIND_DATA_PORT, 0);
      p.writeUInt16LE(dataChannelTestHooks.advertisedPort ?? data.hub.port, 1);
      reg.token.copy(p, 3);
      duplex.write(p);
    }
  }

  /** The data socket when the fast path is up (tests use it to break the connection). */
  get dataSocket(): Socket | null {
    return this.dataSock;
  }

  private onSegment(seg: Buffer): void {
    if (!this.reader.inChunk && seg.byteLength > 0) {
      if (seg[0] === KIND_DATA_PORT) return this.onDataPort(seg);
      if (seg[0] === KIND_DATA_REF) {
        if (seg.byteLength !== DATA_REF_SEG_BYTES) {
          throw new FrameError(`data reference segment of ${seg.byteLength} bytes (expected ${DATA_REF_SEG_BYTES})`);
        }
        this.inbox.push({ id: seg.readUInt32LE(1), bytes: seg.readUInt32LE(5) });
        this.deliver();
        return;
      }
    }
    const frames = this.reader.push(seg);
    if (frames.length === 0) return;
    if (this.inbox.length === 0) {
      this.onFrames(frames);
      return;
    }
    for (const raw of frames) this.inbox.push({ raw });
    this.deliver();
  }

  private onDataPort(seg: Buffer): void {
    if (seg.byteLength !== DATA_PORT_SEG_BYTES) {
      throw new FrameError(`data port segment of ${seg.byteLength} bytes (expected ${DATA_PORT_SEG_BYTES})`);
    }
    const d = this.data;
    if (d?.role !== 'client' || !d.opts.enabled || this.dataRequested) return; // fast path off here: stay on gRPC
    this.dataRequested = true;
    const port = seg.readUInt16LE(1);
    const token = Buffer.from(seg.subarray(3, DATA_PORT_SEG_BYTES));
    void connectData(d.host, port, token).then((sock) => {
      if (!sock) return; // unreachable: everything keeps going over gRPC
      if (this.closed) {
        sock.destroy();
        return;
      }
      this.attachData(sock, Buffer.alloc(0));
    });
  }

  private attachData(sock: Socket, rest: Buffer): void {
    if (this.closed || this.dataSock) {
      sock.destroy();
      return;
    }
    this.dataRegistration?.unregister();
    this.dataRegistration = null;
    this.dataSock = sock;
    const reader = new TransferReader({
      onTransfer: (id, frame) => {
        this.arrived.set(id, frame);
        this.deliver();
      },
      onDataError: (err) => this.fail(err),
    });
    const push = (chunk: Buffer): void => {
      if (this.closed) return;
      try {
        reader.push(chunk);
      } catch (err) {
        const e = err instanceof FrameError ? err : new FrameError(String(err));
        this.onProtocolError(e);
        this.fail(e);
      }
    };
    sock.on('data', push);
    sock.on('close', () => this.fail(new Error('data connection closed')));
    if (rest.byteLength > 0) push(rest);
    sock.resume();
    this.resolveData?.();
  }

  /** Hands frames to onFrames in stream order; stops at a data reference whose bytes have not arrived yet. */
  private deliver(): void {
    const out: Buffer[] = [];
    while (this.inbox.length > 0 && !this.closed) {
      const head = this.inbox[0]!;
      if ('raw' in head) {
        out.push(head.raw);
      } else {
        const buf = this.arrived.get(head.id);
        if (!buf) break;
        this.arrived.delete(head.id);
        if (buf.byteLength !== head.bytes) {
          const e = new FrameError(`data transfer ${head.id} has ${buf.byteLength} bytes, its reference says ${head.bytes}`);
          this.onProtocolError(e);
          this.fail(e);
          return;
        }
        out.push(buf);
      }
      this.inbox.shift();
    }
    if (out.length > 0) this.onFrames(out);
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
    const sock = this.dataSock;
    const min = this.data?.opts.minBytes ?? Infinity;
    let batch: { parts: Buffer[]; bytes: number }[] = [];
    for (const f of q) {
      if (sock && !sock.destroyed && f.bytes >= min) {
        this.writeGrpc(batch);
        batch = [];
        const id = this.nextTransferId;
        this.nextTransferId = this.nextTransferId >= 0xfffffffe ? 1 : this.nextTransferId + 1;
        const ref = Buffer.allocUnsafe(DATA_REF_SEG_BYTES);
        ref.writeUInt8(KIND_DATA_REF, 0);
        ref.writeUInt32LE(id, 1);
        ref.writeUInt32LE(f.bytes, 5);
        this.bytesOut += ref.byteLength;
        this.duplex.write(ref);
        writeTransfer(sock, id, f);
        this.dataBytesOut += f.bytes + 12;
      } else {
        batch.push(f);
      }
    }
    this.writeGrpc(batch);
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
    this.inbox.length = 0;
    this.arrived.clear();
    this.onClose(err);
    this.teardown();
  }

  /** Closes this end (pending queued frames are flushed first). */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.onClose();
    this.teardown();
  }

  private teardown(): void {
    this.dataRegistration?.unregister();
    this.dataRegistration = null;
    this.dataSock?.destroy();
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

/** Starts a server on host:port (0 = any free port). `onStream` gets every incoming peer stream. */
const hubs = new WeakMap<grpc.Server, DataHub>();

/**
 * Starts a server on host:port (0 = any free port). `onStream` gets every incoming peer stream. Unless TLS is on or
 * `data.enabled` is false, a data-channel listener (any free port on `host`) is started beside it.
 */
export async function startServer(
  host: string,
  port: number,
  onStream: (conn: StreamConn) => void,
  tls?: TlsOptions,
  data: DataChannelOptions = defaultDataChannel,
): Promise<{ server: grpc.Server; port: number; dataPort?: number }> {
  const useData = data.enabled && !tls;
  const hub = useData ? await DataHub.listen(host) : null;
  const server = new grpc.Server(channelOptions);
  if (hub) hubs.set(server, hub);
  server.addService(serviceDefinition, {
    stream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) =>
      onStream(new StreamConn(call, undefined, hub ? { role: 'server', hub, opts: data } : undefined)),
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
  return { server, port: bound, dataPort: hub?.port };
}

/**
 * grpc-js applies 'grpc-node.flow_control_window' (and TCP_NODELAY) to client sessions only; server sessions keep HTTP/2's 64 KiB
 * window, so a 16 MB request would wait for ~256 WINDOW_UPDATE round trips. Widen the server side the same way
 * through grpc-js's (internal) http2 server map. If that internal shape changes this silently does nothing:
 * calls still work, large requests are just slower.
 */
function widenServerWindows(server: grpc.Server): void {
  const win = channelOptions['grpc-node.flow_control_window'] as number;
  const map = (server as unknown as { http2Servers?: Map<{ on?: (ev: string, fn: (s: unknown) => void) => void }, unknown> })
    .http2Servers;
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
 * Opens a stream to host:port. The stream is usable at once; connection failure shows up as onClose(err). When the
 * server advertises a data port (and neither TLS nor `data.enabled = false` turns it off) a data channel is opened.
 */
export function openStream(
  host: string,
  port: number,
  tls?: TlsOptions,
  data: DataChannelOptions = defaultDataChannel,
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
  return new StreamConn(call, client, useData ? { role: 'client', host, opts: data } : undefined);
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
