// gRPC mechanism: one server per worker, ONE long-lived bidirectional stream per peer pair. No RPC semantics here.
//
// The service has a single bidi method whose messages are raw Buffers (custom identity (de)serializers, no protobuf
// codegen). Each gRPC message is a segment of frame.ts. Writes are queued and flushed on process.nextTick, so
// many small calls issued together share one gRPC message (this is where the throughput comes from).

import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { FrameError, SegmentReader, packSegments, SEGMENT_BYTES } from './frame.js';
import type { TlsOptions } from './api.js';

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
  /** Largest gRPC message written (tests and benchmarks may lower it; the receiver accepts up to 4 MiB). */
  segmentBytes = SEGMENT_BYTES;

  constructor(
    private readonly duplex: Duplex,
    private readonly client?: grpc.Client,
  ) {
    duplex.on('data', (seg: Buffer) => {
      if (this.closed) return;
      let frames: Buffer[];
      try {
        frames = this.reader.push(seg);
      } catch (err) {
        if (err instanceof FrameError) {
          this.onProtocolError(err);
          this.fail(err);
          return;
        }
        throw err;
      }
      if (frames.length > 0) this.onFrames(frames);
    });
    duplex.on('error', (err: Error) => this.fail(err));
    duplex.on('end', () => this.fail(new Error('stream ended by peer')));
    duplex.on('close', () => this.fail(new Error('stream closed')));
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
    for (const seg of packSegments(q, this.segmentBytes)) {
      this.bytesOut += seg.byteLength;
      this.duplex.write(seg);
    }
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
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
export async function startServer(
  host: string,
  port: number,
  onStream: (conn: StreamConn) => void,
  tls?: TlsOptions,
): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server(channelOptions);
  server.addService(serviceDefinition, {
    stream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => onStream(new StreamConn(call)),
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
  });
  widenServerWindows(server);
  return { server, port: bound };
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

/** Opens a stream to host:port. The stream is usable at once; connection failure shows up as onClose(err). */
export function openStream(host: string, port: number, tls?: TlsOptions): StreamConn {
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
  return new StreamConn(call, client);
}

export function stopServer(server: grpc.Server, graceMs = 1000): Promise<void> {
  return new Promise((resolve) => {
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
