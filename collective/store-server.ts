// The bootstrap store server (PyTorch TCPStore semantics), served by rank 0 at MASTER_ADDR:MASTER_PORT.
// State lives in memory; blocking reads (get/wait) park a waiter that a later set/add/compareSet wakes, or that its
// own timeout (sent by the client) answers with Status.timeout. A malformed frame closes only that connection.
import { createServer, type Server, type Socket } from 'node:net';
import { noopLogger, type Logger } from '../common/logger.js';
import { CollectiveError } from './api.js';
import {
  FrameError,
  FrameReader,
  Op,
  Status,
  decodeRequest,
  encodeResponse,
  utf8,
  type Request,
} from './store-protocol.js';

export interface StoreServerOptions {
  readonly host: string;
  /** 0 picks a free port (tests). */
  readonly port: number;
  readonly logger?: Logger;
}

export interface StoreServer {
  readonly host: string;
  readonly port: number;
  /** Closes the listener and every client connection; parked waiters are dropped. */
  close(): Promise<void>;
}

interface Waiter {
  readonly socket: Socket;
  readonly requestId: number;
  readonly keys: readonly string[];
  readonly reply: 'value' | 'none';
  timer?: NodeJS.Timeout;
}

const decoder = new TextDecoder();

export async function createStoreServer(opts: StoreServerOptions): Promise<StoreServer> {
  const logger = opts.logger ?? noopLogger;
  const data = new Map<string, Uint8Array>();
  const waiters = new Map<string, Set<Waiter>>();
  const sockets = new Set<Socket>();

  const send = (socket: Socket, status: number, requestId: number, fields: Uint8Array[]): void => {
    if (!socket.destroyed) socket.write(encodeResponse({ status, requestId, fields }));
  };

  const dropWaiter = (w: Waiter): void => {
    if (w.timer) clearTimeout(w.timer);
    for (const k of w.keys) {
      const set = waiters.get(k);
      set?.delete(w);
      if (set?.size === 0) waiters.delete(k);
    }
  };

  const tryComplete = (w: Waiter): boolean => {
    if (!w.keys.every((k) => data.has(k))) return false;
    dropWaiter(w);
    send(w.socket, Status.ok, w.requestId, w.reply === 'value' ? [data.get(w.keys[0]!)!] : []);
    return true;
  };

  const put = (key: string, value: Uint8Array): void => {
    data.set(key, value);
    const set = waiters.get(key);
    if (set) for (const w of [...set]) tryComplete(w);
  };

  const park = (socket: Socket, req: Request, keys: string[], reply: Waiter['reply']): void => {
    const w: Waiter = { socket, requestId: req.requestId, keys, reply };
    if (tryComplete(w)) return;
    for (const k of keys) {
      let set = waiters.get(k);
      if (!set) waiters.set(k, (set = new Set()));
      set.add(w);
    }
    if (req.timeoutMs > 0) {
      w.timer = setTimeout(() => {
        dropWaiter(w);
        const missing = keys.filter((k) => !data.has(k));
        send(socket, Status.timeout, req.requestId, [
          utf8.encode(`keys not set after ${req.timeoutMs} ms: ${missing.join(', ')}`),
        ]);
      }, req.timeoutMs);
      w.timer.unref();
    }
  };

  const need = (req: Request, count: number, name: string): void => {
    if (req.fields.length !== count) throw new FrameError(`${name} expects ${count} fields, got ${req.fields.length}`);
  };

  const handle = (socket: Socket, req: Request): void => {
    const key = (): string => decoder.decode(req.fields[0]);
    switch (req.op) {
      case Op.ping:
        send(socket, Status.ok, req.requestId, []);
        return;
      case Op.set:
        need(req, 2, 'set');
        put(key(), Uint8Array.from(req.fields[1]!));
        send(socket, Status.ok, req.requestId, []);
        return;
      case Op.get:
        need(req, 1, 'get');
        park(socket, req, [key()], 'value');
        return;
      case Op.wait:
        park(
          socket,
          req,
          req.fields.map((f) => decoder.decode(f)),
          'none',
        );
        return;
      case Op.add: {
        need(req, 2, 'add');
        const delta = Number(decoder.decode(req.fields[1]));
        const current = data.get(key());
        const before = current === undefined ? 0 : Number(decoder.decode(current));
        if (!Number.isSafeInteger(delta) || !Number.isSafeInteger(before)) {
          const what = !Number.isSafeInteger(delta) ? `delta ${decoder.decode(req.fields[1])}` : `current value`;
          send(socket, Status.error, req.requestId, [utf8.encode(`add "${key()}": ${what} is not an integer`)]);
          return;
        }
        const next = before + delta;
        put(key(), utf8.encode(String(next)));
        send(socket, Status.ok, req.requestId, [utf8.encode(String(next))]);
        return;
      }
      case Op.compareSet: {
        need(req, 3, 'compareSet');
        const [, expected, desired] = req.fields as [Uint8Array, Uint8Array, Uint8Array];
        const current = data.get(key());
        if (current === undefined) {
          if (expected.byteLength === 0) {
            put(key(), Uint8Array.from(desired));
            send(socket, Status.ok, req.requestId, [desired]);
          } else send(socket, Status.ok, req.requestId, [expected]);
        } else if (Buffer.from(current).equals(expected)) {
          put(key(), Uint8Array.from(desired));
          send(socket, Status.ok, req.requestId, [desired]);
        } else send(socket, Status.ok, req.requestId, [current]);
        return;
      }
      case Op.delete: {
        need(req, 1, 'delete');
        const existed = data.delete(key());
        send(socket, Status.ok, req.requestId, [utf8.encode(existed ? '1' : '0')]);
        return;
      }
      default:
        throw new FrameError(`unknown op ${req.op}`);
    }
  };

  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    const reader = new FrameReader();
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const body of reader.push(chunk)) handle(socket, decodeRequest(body));
      } catch (err) {
        logger.warn(
          { err, remote: `${socket.remoteAddress}:${socket.remotePort}` },
          'store: bad frame, closing connection',
        );
        socket.destroy();
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      for (const set of [...waiters.values()]) for (const w of [...set]) if (w.socket === socket) dropWaiter(w);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new CollectiveError(
          'STORE',
          `store server cannot listen on ${opts.host}:${opts.port}: ${err.code ?? err.message}`,
          {
            cause: err,
          },
        ),
      ),
    );
    server.listen(opts.port, opts.host, () => resolve());
  });
  server.on('error', (err) => logger.error({ err }, 'store server error'));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  logger.debug({ host: opts.host, port }, 'store server listening');

  return {
    host: opts.host,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const set of waiters.values()) for (const w of set) if (w.timer) clearTimeout(w.timer);
        waiters.clear();
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
