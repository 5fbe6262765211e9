// Requests out and frames in: matches answers to this worker's calls by request id, serves incoming requests
// (user calls through the function registry, RRef messages through the RRef context, anything else through the
// extensions) and answers them. Knows nothing of sockets: frames go out through a peer's Conn from the worker
// table, and come in through onFrames, called by whoever bound the connection (rpc/bootstrap.ts).

import { RpcError, type Logger } from './api.js';
import type { AgentExtension } from './agent-extension.js';
import { decodeValue, encodeValue, type DecodeHook, type EncodeHook } from './codec.js';
import { errorFromBody, errorToBody } from './error-body.js';
import { FrameError, MsgType, decodeFrame, encodeFrame, isKnownType, isRequestType, type Frame } from './frame.js';
import type { FunctionRegistry } from './function-registry.js';
import type { Conn } from './loopback-conn.js';
import { PendingCalls } from './pending-calls.js';
import type { RRefContext } from './rref.js';
import type { WorkerTable } from './worker-table.js';

/** Where the agent is in its life; the dispatcher serves requests only from 'running' on. */
export type AgentPhase = 'new' | 'starting' | 'running' | 'stopping' | 'closed';

export interface DispatcherDeps {
  readonly name: string;
  readonly rank: number;
  readonly logger: Logger;
  /** Default per-call timeout; 0 = none. */
  readonly rpcTimeoutMs: number;
  readonly table: WorkerTable;
  readonly registry: FunctionRegistry;
  readonly rrefs: RRefContext;
  readonly extensions: readonly AgentExtension[];
  phase(): AgentPhase;
  /** Resolves when the agent reaches 'running' (requests that arrive while it starts wait for it). */
  readonly running: Promise<void>;
  /** Rank 0's shutdown barrier takes BARRIER requests and answers them later; false: dispatch as usual. */
  takeBarrier(src: number, conn: Conn, requestId: number): boolean;
}

/** Envelope key of a user call's extension metadata: { [extension.key]: metadata }. */
const METADATA_KEY = 'x';

export class Dispatcher {
  readonly pending = new PendingCalls();
  /** Requests being handled right now (for shutdown accounting and metrics). */
  activeServerCalls = 0;

  constructor(private readonly d: DispatcherDeps) {}

  /**
   * Sends a request and resolves with the decoded RET value. Rejects with NOT_INITIALIZED, PEER_LOST,
   * INVALID_ARGUMENT (the body cannot be encoded), TIMEOUT, SHUTDOWN, or the remote error. `timeoutMs` 0 = none;
   * undefined = the agent default.
   */
  request(rank: number, type: number, body: unknown, timeoutMs?: number, what = ''): Promise<unknown> {
    const { table } = this.d;
    const peer = table.get(rank);
    const phase = this.d.phase();
    if (phase !== 'running' && phase !== 'stopping') {
      return Promise.reject(new RpcError('NOT_INITIALIZED', 'RPC has not been initialized or was shut down'));
    }
    if (!peer || peer.lost || !peer.conn || peer.conn.isClosed) {
      return Promise.reject(
        new RpcError('PEER_LOST', `worker '${table.name(rank)}' (rank ${rank}) has left the RPC group`, {
          worker: table.name(rank),
        }),
      );
    }
    const id = this.pending.allocId();
    if (type === MsgType.CALL || type === MsgType.REMOTE) body = this.withMetadata(body);
    let frame: { parts: Buffer[]; bytes: number };
    try {
      const enc = encodeValue(body, this.encodeHook(rank));
      frame = encodeFrame(type, id, enc.body, enc.tensors);
    } catch (err) {
      return Promise.reject(
        err instanceof RpcError ? err : new RpcError('INVALID_ARGUMENT', (err as Error).message, { cause: err }),
      );
    }
    const tmo = timeoutMs ?? this.d.rpcTimeoutMs;
    const result = this.pending.add(
      id,
      rank,
      tmo,
      () =>
        new RpcError(
          'TIMEOUT',
          `RPC ${what} to '${peer.name}' ran for more than the set timeout (${tmo} ms) and was marked as failed`,
          { worker: peer.name },
        ),
    );
    peer.conn.send(frame);
    return result;
  }

  /** Frames that arrived from `src` on `conn`, in order. */
  onFrames(src: number, conn: Conn, raws: Buffer[]): void {
    for (const raw of raws) {
      let frame: Frame;
      try {
        frame = decodeFrame(raw);
      } catch (err) {
        this.rejectBadFrame(conn, err as FrameError);
        continue;
      }
      this.onFrame(src, conn, frame);
    }
  }

  /** A frame that failed to parse: answer the request id when we have one, else drop it with a log line. */
  rejectBadFrame(conn: Conn, err: FrameError): void {
    this.d.logger.warn({ err: err.message, requestId: err.requestId }, 'rpc: rejected malformed frame');
    if (err.requestId === undefined) return;
    if (err.type !== undefined && isRequestType(err.type)) {
      this.reply(conn, err.requestId, MsgType.ERR, { code: 'PROTOCOL', message: err.message, worker: this.d.name });
    } else {
      const p = this.pending.take(err.requestId);
      p?.reject(new RpcError('PROTOCOL', `malformed response: ${err.message}`));
    }
  }

  /** Encodes and sends an answer; a value that cannot be encoded is answered with the encoding error instead. */
  reply(conn: Conn, requestId: number, type: number, body: unknown, dest?: number): void {
    let enc: ReturnType<typeof encodeValue>;
    try {
      enc = encodeValue(body, dest === undefined ? undefined : this.encodeHook(dest));
    } catch (err) {
      enc = encodeValue(errorToBody(err, this.d.name));
      type = MsgType.ERR;
    }
    conn.send(encodeFrame(type, requestId, enc.body, enc.tensors));
  }

  /** The error an ERR body from rank `src` stands for. */
  toError(body: unknown, src: number): Error {
    return errorFromBody(body, this.d.table.name(src));
  }

  private onFrame(src: number, conn: Conn, frame: Frame): void {
    const { type, requestId } = frame;
    if (type === MsgType.RET || type === MsgType.ERR) {
      this.onAnswer(src, frame);
      return;
    }
    if (!isRequestType(type)) {
      this.reply(conn, requestId, MsgType.ERR, {
        code: 'PROTOCOL',
        message: `unknown message type ${type}`,
        worker: this.d.name,
      });
      return;
    }
    if (this.d.phase() === 'starting') {
      // A peer that finished init first may call before our own init has resolved: serve it once we are running.
      void this.d.running.then(() => this.onFrame(src, conn, frame));
      return;
    }
    if (type === MsgType.BARRIER && this.d.takeBarrier(src, conn, requestId)) return;
    this.onRequest(src, conn, frame);
  }

  private onAnswer(src: number, frame: Frame): void {
    const p = this.pending.get(frame.requestId);
    if (!p || p.peer !== src) return; // late answer to a timed-out call, or not ours
    this.pending.take(frame.requestId);
    let value: unknown;
    try {
      value = decodeValue(frame.body, frame.tensors, this.decodeHook(src, []));
    } catch (err) {
      p.reject(
        new RpcError('PROTOCOL', `malformed response from '${this.d.table.name(src)}': ${(err as Error).message}`),
      );
      return;
    }
    if (frame.type === MsgType.RET) p.resolve((value as { v?: unknown } | undefined)?.v);
    else p.reject(this.toError(value, src));
  }

  private onRequest(src: number, conn: Conn, frame: Frame): void {
    const { type, requestId } = frame;
    this.activeServerCalls++;
    const confirmations: Promise<void>[] = [];
    let body: Record<string, unknown>;
    try {
      body = (decodeValue(frame.body, frame.tensors, this.decodeHook(src, confirmations)) ?? {}) as Record<
        string,
        unknown
      >;
    } catch (err) {
      this.activeServerCalls--;
      const e = err instanceof FrameError ? new RpcError('PROTOCOL', err.message) : err;
      this.reply(conn, requestId, MsgType.ERR, errorToBody(e, this.d.name));
      return;
    }
    let work = async (): Promise<void> => {
      try {
        const v = await this.handle(src, type, body, confirmations);
        this.reply(conn, requestId, MsgType.RET, { v }, src);
      } catch (err) {
        this.reply(conn, requestId, MsgType.ERR, errorToBody(err, this.d.name), src);
      } finally {
        this.activeServerCalls--;
      }
    };
    // Handle and answer inside what the caller's extensions asked for (distributed autograd: its context, so
    // tensors in the answer get send nodes there).
    const meta = type === MsgType.CALL || type === MsgType.REMOTE ? body[METADATA_KEY] : undefined;
    if (meta !== null && typeof meta === 'object') {
      for (const x of this.d.extensions) {
        const m = (meta as Record<string, unknown>)[x.key];
        if (m === undefined || !x.enter) continue;
        const inner = work;
        work = () => x.enter!(m, src, inner);
      }
    }
    void work();
  }

  private async handle(
    src: number,
    type: number,
    body: Record<string, unknown>,
    confirmations: Promise<void>[],
  ): Promise<unknown> {
    const { rrefs } = this.d;
    switch (type) {
      case MsgType.CALL: {
        if (confirmations.length > 0) await Promise.all(confirmations);
        return this.d.registry.run(body.f, body.a);
      }
      case MsgType.REMOTE:
        return rrefs.handleRemote(src, body, confirmations, (f, a) => this.d.registry.run(f, a));
      case MsgType.FETCH:
        return rrefs.handleFetch(body);
      case MsgType.RREF_DELETE:
        return rrefs.handleDelete(body);
      case MsgType.RREF_FORK:
        return rrefs.handleFork(body, src);
      case MsgType.RREF_ACCEPT:
        return rrefs.handleAccept(body);
      case MsgType.BARRIER:
        throw new RpcError('PROTOCOL', `BARRIER sent to rank ${this.d.rank}, only rank 0 serves it`);
      default: {
        // Request types the agent does not serve itself belong to extensions (distributed autograd's BACKWARD and
        // CLEANUP_CONTEXT, or any other): the first that returns a promise handles it.
        for (const x of this.d.extensions) {
          const r = x.handle?.(type, src, body);
          if (r) return r;
        }
        throw new RpcError(
          'PROTOCOL',
          isKnownType(type)
            ? `message type ${type} is not handled by '${this.d.name}'`
            : `unknown message type ${type} (no extension on '${this.d.name}' handles it)`,
        );
      }
    }
  }

  /** `body` with the metadata of every extension that has some for the current async context. */
  private withMetadata(body: unknown): unknown {
    let meta: Record<string, unknown> | undefined;
    for (const x of this.d.extensions) {
      const m = x.callMetadata?.();
      if (m !== undefined) (meta ??= {})[x.key] = m;
    }
    return meta === undefined ? body : { ...(body as object), [METADATA_KEY]: meta };
  }

  private encodeHook(dest: number): EncodeHook {
    const hooks: EncodeHook[] = [this.d.rrefs.encodeHook(dest)];
    for (const x of this.d.extensions) {
      const h = x.encodeHook?.(dest);
      if (h) hooks.push(h);
    }
    return (v, add) => {
      for (const h of hooks) {
        const r = h(v, add);
        if (r) return r;
      }
      return undefined;
    };
  }

  private decodeHook(src: number, confirmations: Promise<void>[]): DecodeHook {
    const ext = this.d.extensions.map((x) => x.decodeHook?.(src)).filter((h): h is DecodeHook => h !== undefined);
    const rrefHook = this.d.rrefs.decodeHook(src, confirmations);
    return (tag, data, tensors) => {
      if (tag === 'rref') return rrefHook(tag, data, tensors);
      for (const h of ext) {
        const r = h(tag, data, tensors);
        if (r !== undefined) return r;
      }
      throw new FrameError(`unknown object tag '${tag}'`);
    };
  }
}
