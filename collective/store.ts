// Bootstrap store client (PyTorch TCPStore semantics) and the server entry point.
//
// `connectStore` retries the connection until the server is up or `timeoutMs` has passed (rank 0 may still be
// starting its server). Requests are pipelined over one connection and matched by id. Every call has a timeout:
// blocking reads (get/wait) carry it to the server, which answers TIMEOUT; a client-side timer (with a grace) backs it
// up. A lost connection rejects every pending and later call with CollectiveError('STORE').
import { connect, type Socket } from 'node:net';
import { Backoff } from '../common/backoff.js';
import type { Logger } from '../common/logger.js';
import { CollectiveError, type Store } from './api.js';
import { FrameReader, Op, Status, decodeResponse, encodeRequest, toBytes, type Response } from './store-protocol.js';

export { createStoreServer, type StoreServer, type StoreServerOptions } from './store-server.js';

export interface StoreClientOptions {
  readonly host: string;
  readonly port: number;
  /** Connect timeout and default per-call timeout. */
  readonly timeoutMs: number;
  readonly logger?: Logger;
}

export interface StoreClient extends Store {
  /** The local address of the store connection: an address of this host that the master can route to. */
  readonly localAddress: string;
}

const CLIENT_GRACE_MS = 2000;
const decoder = new TextDecoder();
// Not unref'd: while a client waits for the store to come up, nothing else may keep the process alive.
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function validateEndpoint(host: string, port: number, timeoutMs: number): void {
  if (typeof host !== 'string' || host.length === 0)
    throw new CollectiveError('INVALID_ARGUMENT', `store host ${JSON.stringify(host)}: expected a non-empty host name`);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new CollectiveError('INVALID_ARGUMENT', `store port ${port}: expected an integer in [1, 65535]`);
  if (!(timeoutMs > 0)) throw new CollectiveError('INVALID_ARGUMENT', `store timeoutMs ${timeoutMs}: expected > 0`);
}

function connectOnce(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port });
    const onError = (err: Error): void => {
      s.destroy();
      reject(err);
    };
    s.once('error', onError);
    s.once('connect', () => {
      s.off('error', onError);
      resolve(s);
    });
  });
}

/** Connects to the store at host:port, retrying with backoff until it answers or `timeoutMs` elapses. */
export async function connectStore(opts: StoreClientOptions): Promise<StoreClient> {
  validateEndpoint(opts.host, opts.port, opts.timeoutMs);
  const deadline = Date.now() + opts.timeoutMs;
  const backoff = new Backoff({ initialMs: 20, multiplier: 2, maxMs: 500, jitter: 0.5 });
  let lastErr: unknown;
  for (;;) {
    try {
      const socket = await connectOnce(opts.host, opts.port);
      return new TcpStoreClient(socket, opts);
    } catch (err) {
      lastErr = err;
    }
    const left = deadline - Date.now();
    if (left <= 0) break;
    await sleep(Math.min(left, backoff.next()));
  }
  const reason = (lastErr as NodeJS.ErrnoException | undefined)?.code ?? String(lastErr);
  throw new CollectiveError(
    'TIMEOUT',
    `store at ${opts.host}:${opts.port} did not accept a connection within ${opts.timeoutMs} ms (last error: ${reason})`,
    { cause: lastErr },
  );
}

interface Pending {
  readonly resolve: (r: Response) => void;
  readonly reject: (e: CollectiveError) => void;
  readonly timer: NodeJS.Timeout;
}

class TcpStoreClient implements StoreClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private failure: CollectiveError | null = null;
  readonly localAddress: string;

  constructor(
    private readonly socket: Socket,
    private readonly opts: StoreClientOptions,
  ) {
    this.localAddress = socket.localAddress ?? '127.0.0.1';
    socket.setNoDelay(true);
    const reader = new FrameReader();
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const body of reader.push(chunk)) this.dispatch(decodeResponse(body));
      } catch (err) {
        this.fail(
          new CollectiveError('STORE', `store sent a malformed frame: ${(err as Error).message}`, { cause: err }),
        );
      }
    });
    socket.on('error', (err) =>
      this.fail(new CollectiveError('STORE', `store connection error: ${err.message}`, { cause: err })),
    );
    socket.on('close', () =>
      this.fail(new CollectiveError('STORE', `store connection to ${opts.host}:${opts.port} closed`)),
    );
  }

  private dispatch(res: Response): void {
    const p = this.pending.get(res.requestId);
    if (!p) return; // answered after our own timer fired
    this.pending.delete(res.requestId);
    clearTimeout(p.timer);
    p.resolve(res);
  }

  private fail(err: CollectiveError): void {
    if (this.failure) return;
    this.failure = err;
    this.socket.destroy();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
  }

  private request(
    op: number,
    fields: Uint8Array[],
    what: string,
    timeoutMs: number,
    serverTimeoutMs = 0,
  ): Promise<Response> {
    if (this.failure) return Promise.reject(this.failure);
    const requestId = this.nextId++ >>> 0;
    return new Promise<Response>((resolve, reject) => {
      const timer = setTimeout(
        () => {
          this.pending.delete(requestId);
          reject(new CollectiveError('TIMEOUT', `store ${what}: no answer within ${timeoutMs} ms`));
        },
        timeoutMs + (serverTimeoutMs > 0 ? CLIENT_GRACE_MS : 0),
      );
      timer.unref();
      this.pending.set(requestId, { resolve, reject, timer });
      this.socket.write(encodeRequest({ op, requestId, timeoutMs: serverTimeoutMs, fields }));
    }).then((res) => {
      if (res.status === Status.ok) return res;
      const msg = res.fields[0] ? decoder.decode(res.fields[0]) : 'no detail';
      throw new CollectiveError(res.status === Status.timeout ? 'TIMEOUT' : 'STORE', `store ${what}: ${msg}`);
    });
  }

  private timeout(t: number | undefined): number {
    const v = t ?? this.opts.timeoutMs;
    if (!(v > 0)) throw new CollectiveError('INVALID_ARGUMENT', `store timeoutMs ${v}: expected > 0`);
    return v;
  }

  async set(key: string, value: Uint8Array | string): Promise<void> {
    await this.request(Op.set, [toBytes(key), toBytes(value)], `set "${key}"`, this.opts.timeoutMs);
  }

  async get(key: string, timeoutMs?: number): Promise<Uint8Array> {
    const t = this.timeout(timeoutMs);
    const res = await this.request(Op.get, [toBytes(key)], `get "${key}"`, t, t);
    return res.fields[0]!;
  }

  async wait(keys: readonly string[], timeoutMs?: number): Promise<void> {
    const t = this.timeout(timeoutMs);
    if (keys.length === 0) return;
    await this.request(Op.wait, keys.map(toBytes), `wait [${keys.join(', ')}]`, t, t);
  }

  async add(key: string, delta: number): Promise<number> {
    if (!Number.isSafeInteger(delta))
      throw new CollectiveError('INVALID_ARGUMENT', `store add "${key}": delta ${delta} is not a safe integer`);
    const res = await this.request(Op.add, [toBytes(key), toBytes(String(delta))], `add "${key}"`, this.opts.timeoutMs);
    return Number(decoder.decode(res.fields[0]));
  }

  async compareSet(key: string, expected: Uint8Array | string, desired: Uint8Array | string): Promise<Uint8Array> {
    const res = await this.request(
      Op.compareSet,
      [toBytes(key), toBytes(expected), toBytes(desired)],
      `compareSet "${key}"`,
      this.opts.timeoutMs,
    );
    return res.fields[0]!;
  }

  async delete(key: string): Promise<boolean> {
    const res = await this.request(Op.delete, [toBytes(key)], `delete "${key}"`, this.opts.timeoutMs);
    return decoder.decode(res.fields[0]) === '1';
  }

  async close(): Promise<void> {
    this.fail(new CollectiveError('STORE', 'store client closed'));
  }
}
