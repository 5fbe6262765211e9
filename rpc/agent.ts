// RpcAgent: one worker's end of the RPC world. Bootstrap, function registry, request/response matching by id,
// per-call timeouts, peer loss, graceful shutdown. Several agents may live in one process (tests do that).
//
// Bootstrap (no external store): rank 0 serves gRPC at masterAddr:bootstrapPort; every other rank listens on a free
// port, opens its stream to rank 0 and sends JOIN {name, rank, addr, port}. When all worldSize ranks have joined,
// rank 0 answers every JOIN with the member table and a fresh session id. Rank i then opens one stream to each rank
// j in 1..i-1 (HELLO carrying the session); so every pair shares exactly one stream, opened by the higher rank.
// A HELLO with another session (a stale worker of an earlier round) is refused.

import { randomUUID } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { Backoff } from '../common/backoff.js';
import { withTimeout } from '../common/timeout.js';
import {
  RemoteError,
  RpcError,
  type CallOptions,
  type Logger,
  type RegisterOptions,
  type RpcFunction,
  type ShutdownOptions,
  type WorkerInfo,
  type WorkerRef,
} from './api.js';
import { decodeValue, encodeValue, type DecodeHook, type EncodeHook } from './codec.js';
import { FrameError, MsgType, decodeFrame, encodeFrame, isKnownType, isRequestType, type Frame } from './frame.js';
import { openStream, startServer, stopServer, StreamConn } from './grpc-transport.js';
import type { ResolvedRpcOptions } from './options.js';
import type { DataHub } from './data-channel.js';
import { RRefContext, type RRef } from './rref.js';

interface Conn {
  send(frame: { parts: Buffer[]; bytes: number }): void;
  close(): void;
  readonly isClosed: boolean;
}

/** Delivers frames to this agent itself (calls to self), asynchronously, through the same encode/decode path. */
class LoopbackConn implements Conn {
  isClosed = false;
  constructor(private readonly deliver: (raw: Buffer) => void) {}
  send(frame: { parts: Buffer[]; bytes: number }): void {
    const raw = Buffer.concat(frame.parts, frame.bytes);
    setImmediate(() => {
      if (!this.isClosed) this.deliver(raw);
    });
  }
  close(): void {
    this.isClosed = true;
  }
}

interface Peer {
  readonly rank: number;
  readonly name: string;
  readonly addr: string;
  readonly port: number;
  conn: Conn | null;
  lost: boolean;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout | null;
  peer: number;
  what: string;
}

interface Member {
  name: string;
  rank: number;
  addr: string;
  port: number;
}

/** Extension point for distributed autograd: wraps values sent/received with autograd bookkeeping. */
export interface AgentExtension {
  encodeHook?(dest: number): EncodeHook | undefined;
  decodeHook?(src: number): DecodeHook | undefined;
  /** Handles request types the agent does not know itself (BACKWARD, CLEANUP_CONTEXT). */
  handle?(type: number, src: number, body: unknown): Promise<unknown> | undefined;
  /** The distributed autograd context of the current async call chain, if any (sent along with calls). */
  currentContextId?(): number | undefined;
  /** Runs the handling of a request that carried context `contextId` inside that context. */
  enter?<T>(contextId: number | undefined, src: number, fn: () => Promise<T>): Promise<T>;
  onPeerLost?(rank: number): void;
}

type Registered = { fn: RpcFunction; validate?: RegisterOptions<unknown[]>['validate'] };

const globalFunctions = new Map<string, Registered>();
/** Registers a function for every agent in this process (module-level API). */
export function registerGlobalFunction(name: string, fn: RpcFunction, opts: RegisterOptions<unknown[]> = {}): void {
  globalFunctions.set(name, { fn, validate: opts.validate });
}

export class RpcAgent {
  readonly name: string;
  readonly rank: number;
  readonly worldSize: number;
  readonly logger: Logger;
  readonly rrefs: RRefContext;
  readonly extensions: AgentExtension[] = [];
  /** Installed by createAgent/initRpc (rpc/dist-autograd.ts). */
  distAutograd?: import('./dist-autograd.js').DistAutograd;
  private readonly opts: ResolvedRpcOptions;
  private state: 'new' | 'starting' | 'running' | 'stopping' | 'closed' = 'new';
  private server: grpc.Server | null = null;
  private dataHub: DataHub | null = null;
  private port = 0;
  private peers = new Map<number, Peer>();
  private byName = new Map<string, number>();
  private functions = new Map<string, Registered>();
  private pending = new Map<number, Pending>();
  private nextRequestId = 1;
  private session = '';
  private tableReady!: Promise<void>;
  private resolveRunning!: () => void;
  private readonly running = new Promise<void>((r) => (this.resolveRunning = r));
  private resolveTable!: () => void;
  private joins = new Map<number, { member: Member; conn: StreamConn; requestId: number }>();
  private barrierWaiters = new Map<number, { conn: Conn; requestId: number }>();
  private helloWaiters = new Set<number>();
  private readyCheck: (() => void) | null = null;
  /** Server-side calls being handled right now (for shutdown accounting and metrics). */
  serverActiveCalls = 0;

  constructor(opts: ResolvedRpcOptions) {
    this.opts = opts;
    this.name = opts.name;
    this.rank = opts.rank;
    this.worldSize = opts.worldSize;
    this.logger = opts.logger;
    this.rrefs = new RRefContext(this);
    this.tableReady = new Promise((r) => (this.resolveTable = r));
    this.registerBuiltins();
  }

  get isRunning(): boolean {
    return this.state === 'running';
  }
  /** Running, or shutting down (calls still allowed). */
  get isActive(): boolean {
    return this.state === 'running' || this.state === 'stopping';
  }
  get clientActiveCalls(): number {
    return this.pending.size;
  }

  // ---------------------------------------------------------------------------------------------- registry

  registerFunction(name: string, fn: RpcFunction, opts: RegisterOptions<unknown[]> = {}): void {
    if (typeof name !== 'string' || name.length === 0) {
      throw new RpcError('INVALID_ARGUMENT', `function name ${JSON.stringify(name)} must be a non-empty string`);
    }
    if (typeof fn !== 'function') throw new RpcError('INVALID_ARGUMENT', `registerFunction('${name}'): not a function`);
    this.functions.set(name, { fn, validate: opts.validate });
  }

  private lookup(name: string): Registered | undefined {
    return this.functions.get(name) ?? globalFunctions.get(name);
  }

  private registerBuiltins(): void {
    // Proxy calls on an RRef's value: rref.rpcSync().method(...args) runs this on the owner.
    this.registerFunction('__rref.call', (async (
      rref: { toHere(): Promise<unknown> },
      method: string,
      args: unknown[],
    ) => {
      const target = (await rref.toHere()) as Record<string, unknown>;
      const m = target?.[method];
      if (typeof m !== 'function') {
        throw new TypeError(`RRef value has no method '${method}'`);
      }
      return (m as (...a: unknown[]) => unknown).apply(target, args);
    }) as RpcFunction);
    this.registerFunction('__noop', (() => null) as RpcFunction);
  }

  // ---------------------------------------------------------------------------------------------- workers

  getWorkerInfo(worker?: WorkerRef): WorkerInfo {
    if (worker === undefined) return { name: this.name, id: this.rank };
    const r = this.resolveRank(worker);
    return { name: this.peers.get(r)!.name, id: r };
  }

  getWorkerInfos(): WorkerInfo[] {
    return [...this.peers.values()].sort((a, b) => a.rank - b.rank).map((p) => ({ name: p.name, id: p.rank }));
  }

  resolveRank(worker: WorkerRef): number {
    this.assertRunning();
    if (typeof worker === 'number') {
      if (!this.peers.has(worker)) {
        throw new RpcError('UNKNOWN_WORKER', `rank ${worker} is not in the RPC world (ranks 0..${this.worldSize - 1})`);
      }
      return worker;
    }
    const name = typeof worker === 'string' ? worker : worker.name;
    const r = this.byName.get(name);
    if (r === undefined) {
      throw new RpcError(
        'UNKNOWN_WORKER',
        `worker '${name}' is not in the RPC world (workers: ${[...this.byName.keys()].join(', ')})`,
      );
    }
    return r;
  }

  peerName(rank: number): string {
    return this.peers.get(rank)?.name ?? `rank${rank}`;
  }

  isPeerLost(rank: number): boolean {
    return this.peers.get(rank)?.lost ?? true;
  }

  private assertRunning(): void {
    if (this.state !== 'running' && this.state !== 'stopping') {
      throw new RpcError(
        'NOT_INITIALIZED',
        this.state === 'closed'
          ? 'RPC has been shut down on this worker; call initRpc again to join a new round'
          : 'RPC has not been initialized. Call initRpc first.',
      );
    }
  }

  // ---------------------------------------------------------------------------------------------- calls

  /** Runs the registered function `fn` on `to` and resolves with its result. */
  rpcAsync<T = unknown>(to: WorkerRef, fn: string, args: unknown[] = [], opts: CallOptions = {}): Promise<T> {
    try {
      const rank = this.resolveRank(to);
      return this.request(rank, MsgType.CALL, { f: fn, a: args }, opts.timeoutMs, `'${fn}'`) as Promise<T>;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Runs `fn` on `to`, which keeps the result; returns at once an RRef to it. */
  remote<T = unknown>(to: WorkerRef, fn: string, args: unknown[] = [], opts: CallOptions = {}): RRef<T> {
    return this.rrefs.remote<T>(this.resolveRank(to), fn, args, opts);
  }

  /** A local owner RRef holding `value`. */
  rref<T>(value: T): RRef<T> {
    this.assertRunning();
    return this.rrefs.createLocal(value);
  }

  /**
   * Sends a request and resolves with the decoded RET value. Rejects with TIMEOUT, PEER_LOST, SHUTDOWN, or the
   * remote error. `timeoutMs` 0 = none; undefined = the agent default.
   */
  request(rank: number, type: number, body: unknown, timeoutMs?: number, what = ''): Promise<unknown> {
    const peer = this.peers.get(rank);
    if (this.state !== 'running' && this.state !== 'stopping') {
      return Promise.reject(new RpcError('NOT_INITIALIZED', 'RPC has not been initialized or was shut down'));
    }
    if (!peer || peer.lost || !peer.conn || peer.conn.isClosed) {
      return Promise.reject(
        new RpcError('PEER_LOST', `worker '${this.peerName(rank)}' (rank ${rank}) has left the RPC group`, {
          worker: this.peerName(rank),
        }),
      );
    }
    let frame: { parts: Buffer[]; bytes: number };
    const id = this.allocRequestId();
    if (type === MsgType.CALL || type === MsgType.REMOTE) {
      for (const x of this.extensions) {
        const c = x.currentContextId?.();
        if (c !== undefined) body = { ...(body as object), c };
      }
    }
    try {
      const enc = encodeValue(body, this.encodeHook(rank));
      frame = encodeFrame(type, id, enc.body, enc.tensors);
    } catch (err) {
      return Promise.reject(
        err instanceof RpcError ? err : new RpcError('INVALID_ARGUMENT', (err as Error).message, { cause: err }),
      );
    }
    const tmo = timeoutMs ?? this.opts.rpcTimeoutMs;
    return new Promise((resolve, reject) => {
      const p: Pending = { resolve, reject, timer: null, peer: rank, what };
      if (tmo > 0) {
        p.timer = setTimeout(() => {
          if (this.pending.delete(id)) {
            p.reject(
              new RpcError(
                'TIMEOUT',
                `RPC ${what} to '${peer.name}' ran for more than the set timeout (${tmo} ms) and was marked as failed`,
                { worker: peer.name },
              ),
            );
          }
        }, tmo);
      }
      this.pending.set(id, p);
      peer.conn!.send(frame);
    });
  }

  private allocRequestId(): number {
    const id = this.nextRequestId;
    this.nextRequestId = this.nextRequestId >= 0xfffffffe ? 1 : this.nextRequestId + 1;
    return id;
  }

  /** Internal control messages: retried with exponential backoff (PyTorch: 5 tries, 1 s x 1.5^n). Idempotent on the receiver. */
  async requestWithRetries(rank: number, type: number, body: unknown, maxRetries = 5): Promise<unknown> {
    const backoff = new Backoff({ initialMs: 200, multiplier: 1.5, maxMs: 10_000, jitter: 0.5 });
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.request(rank, type, body, 10_000, `control ${type}`);
      } catch (err) {
        // Only non-terminal errors (TIMEOUT, RPC_TERMINAL) are worth another try.
        if (!(err instanceof RpcError) || err.terminal || attempt >= maxRetries) throw err;
        await new Promise((r) => setTimeout(r, backoff.next()));
      }
    }
  }

  private encodeHook(dest: number): EncodeHook {
    const hooks: EncodeHook[] = [this.rrefs.encodeHook(dest)];
    for (const x of this.extensions) {
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
    const ext = this.extensions.map((x) => x.decodeHook?.(src)).filter((h): h is DecodeHook => h !== undefined);
    const rrefHook = this.rrefs.decodeHook(src, confirmations);
    return (tag, data, tensors) => {
      if (tag === 'rref') return rrefHook(tag, data, tensors);
      for (const h of ext) {
        const r = h(tag, data, tensors);
        if (r !== undefined) return r;
      }
      throw new FrameError(`unknown object tag '${tag}'`);
    };
  }

  // ---------------------------------------------------------------------------------------------- incoming

  private onFrames(src: number, conn: Conn, raws: Buffer[]): void {
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
  private rejectBadFrame(conn: Conn, err: FrameError): void {
    this.logger.warn({ err: err.message, requestId: err.requestId }, 'rpc: rejected malformed frame');
    if (err.requestId === undefined) return;
    if (err.type !== undefined && isRequestType(err.type)) {
      this.reply(conn, err.requestId, MsgType.ERR, { code: 'PROTOCOL', message: err.message, worker: this.name });
    } else {
      const p = this.pending.get(err.requestId);
      if (p) {
        this.settle(err.requestId);
        p.reject(new RpcError('PROTOCOL', `malformed response: ${err.message}`));
      }
    }
  }

  private onFrame(src: number, conn: Conn, frame: Frame): void {
    const { type, requestId } = frame;
    if (type === MsgType.RET || type === MsgType.ERR) {
      const p = this.pending.get(requestId);
      if (!p || p.peer !== src) return; // late answer to a timed-out call, or not ours
      this.settle(requestId);
      let value: unknown;
      try {
        value = decodeValue(frame.body, frame.tensors, this.decodeHook(src, []));
      } catch (err) {
        p.reject(
          new RpcError('PROTOCOL', `malformed response from '${this.peerName(src)}': ${(err as Error).message}`),
        );
        return;
      }
      if (type === MsgType.RET) p.resolve((value as { v?: unknown } | undefined)?.v);
      else p.reject(this.toError(value, src));
      return;
    }
    if (!isKnownType(type) || !isRequestType(type)) {
      this.reply(conn, requestId, MsgType.ERR, {
        code: 'PROTOCOL',
        message: `unknown message type ${type}`,
        worker: this.name,
      });
      return;
    }
    if (this.state === 'starting') {
      // A peer that finished init first may call before our own init has resolved: serve it once we are running.
      void this.running.then(() => this.onFrame(src, conn, frame));
      return;
    }
    if (type === MsgType.BARRIER && this.handleBarrier(src, conn, requestId)) return;
    this.serverActiveCalls++;
    const confirmations: Promise<void>[] = [];
    let body: Record<string, unknown>;
    try {
      body = (decodeValue(frame.body, frame.tensors, this.decodeHook(src, confirmations)) ?? {}) as Record<
        string,
        unknown
      >;
    } catch (err) {
      this.serverActiveCalls--;
      this.reply(
        conn,
        requestId,
        MsgType.ERR,
        this.errorBody(err instanceof FrameError ? new RpcError('PROTOCOL', err.message) : err),
      );
      return;
    }
    // Handle and answer inside the caller's autograd context, so tensors in the answer get send nodes there.
    const work = async (): Promise<void> => {
      try {
        const v = await this.handleRequest(src, frame.type, body, confirmations);
        this.reply(conn, requestId, MsgType.RET, { v }, src);
      } catch (err) {
        this.reply(conn, requestId, MsgType.ERR, this.errorBody(err), src);
      } finally {
        this.serverActiveCalls--;
      }
    };
    const carriesContext = frame.type === MsgType.CALL || frame.type === MsgType.REMOTE;
    const ctx = carriesContext && typeof body.c === 'number' ? body.c : undefined;
    const ext = ctx === undefined ? undefined : this.extensions.find((x) => x.enter);
    void (ext ? ext.enter!(ctx, src, work) : work());
  }

  private settle(id: number): void {
    const p = this.pending.get(id);
    if (p?.timer) clearTimeout(p.timer);
    this.pending.delete(id);
  }

  private reply(conn: Conn, requestId: number, type: number, body: unknown, dest?: number): void {
    let enc: ReturnType<typeof encodeValue>;
    try {
      enc = encodeValue(body, dest === undefined ? undefined : this.encodeHook(dest));
    } catch (err) {
      enc = encodeValue(this.errorBody(err));
      type = MsgType.ERR;
    }
    conn.send(encodeFrame(type, requestId, enc.body, enc.tensors));
  }

  private errorBody(err: unknown): Record<string, unknown> {
    if (err instanceof RpcError) {
      if (err instanceof RemoteError) {
        return {
          code: err.code,
          type: err.remoteType,
          message: err.message,
          stack: err.remoteStack,
          worker: err.worker,
        };
      }
      return { code: err.code, message: err.message, worker: err.worker ?? this.name };
    }
    const e = err instanceof Error ? err : new Error(String(err));
    return {
      code: 'REMOTE_ERROR',
      type: e.constructor?.name && e.constructor.name !== 'Object' ? e.constructor.name : e.name,
      message: e.message,
      stack: e.stack ?? '',
      worker: this.name,
    };
  }

  private toError(body: unknown, src: number): Error {
    const b = (body ?? {}) as { code?: string; type?: string; message?: string; stack?: string; worker?: string };
    const worker = b.worker ?? this.peerName(src);
    if (b.code === 'REMOTE_ERROR') {
      return new RemoteError(worker, b.type ?? 'Error', b.message ?? '', b.stack ?? '');
    }
    return new RpcError((b.code ?? 'PROTOCOL') as RpcError['code'], b.message ?? 'remote failure', { worker });
  }

  private async handleRequest(
    src: number,
    type: number,
    body: Record<string, unknown>,
    confirmations: Promise<void>[],
  ): Promise<unknown> {
    switch (type) {
      case MsgType.CALL: {
        if (confirmations.length > 0) await Promise.all(confirmations);
        return this.runFunction(body.f, body.a);
      }
      case MsgType.REMOTE:
        return this.rrefs.handleRemote(src, body, confirmations, (f, a) => this.runFunction(f, a));
      case MsgType.FETCH:
        return this.rrefs.handleFetch(body);
      case MsgType.RREF_DELETE:
        return this.rrefs.handleDelete(body);
      case MsgType.RREF_FORK:
        return this.rrefs.handleFork(body, src);
      case MsgType.RREF_ACCEPT:
        return this.rrefs.handleAccept(body);
      case MsgType.BARRIER:
        throw new RpcError('PROTOCOL', `BARRIER sent to rank ${this.rank}, only rank 0 serves it`);
      default: {
        for (const x of this.extensions) {
          const r = x.handle?.(type, src, body);
          if (r) return r;
        }
        throw new RpcError('PROTOCOL', `message type ${type} is not handled by '${this.name}'`);
      }
    }
  }

  async runFunction(f: unknown, a: unknown): Promise<unknown> {
    if (typeof f !== 'string') throw new RpcError('PROTOCOL', `function name must be a string, got ${typeof f}`);
    const reg = this.lookup(f);
    if (!reg) {
      throw new RpcError(
        'UNKNOWN_FUNCTION',
        `function '${f}' is not registered on '${this.name}' (register it with registerFunction on every worker)`,
        { worker: this.name },
      );
    }
    let args = Array.isArray(a) ? a : [];
    if (reg.validate) {
      const r = reg.validate.safeParse(args);
      if (!r.success) {
        const detail = (r.error as { message?: string })?.message ?? String(r.error);
        throw new RpcError('INVALID_ARGUMENT', `arguments of '${f}' failed validation on '${this.name}': ${detail}`, {
          worker: this.name,
        });
      }
      args = r.data as unknown[];
    }
    return await (reg.fn as (...x: unknown[]) => unknown)(...args);
  }

  // ---------------------------------------------------------------------------------------------- bootstrap

  /** Starts the server, joins the world, connects to every peer. Rejects with BOOTSTRAP after initTimeoutMs. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new RpcError('ALREADY_INITIALIZED', 'RPC is already initialized');
    this.state = 'starting';
    const o = this.opts;
    const deadline = Date.now() + o.initTimeoutMs;
    try {
      const { server, port, hub } = await startServer(
        o.rank === 0 ? o.listenAddr : o.listenAddr,
        o.rank === 0 ? o.bootstrapPort : 0,
        (conn) => this.onIncoming(conn),
        o.tls,
        o.dataChannel,
      );
      this.server = server;
      this.port = port;
      this.dataHub = hub;
    } catch (err) {
      this.state = 'closed';
      throw new RpcError('BOOTSTRAP', `cannot listen for RPC: ${(err as Error).message}`, { cause: err });
    }
    const self: Member = { name: o.name, rank: o.rank, addr: o.advertiseAddr, port: this.port };
    try {
      await withDeadline(
        (async () => {
          if (o.rank === 0) {
            this.session = randomUUID();
            this.acceptJoin(self, null, 0);
            await this.tableReady;
          } else {
            await this.joinMaster(self, deadline);
            await this.connectLowerRanks();
          }
          await this.waitAllConnected();
        })(),
        deadline,
        () =>
          `RPC init of '${o.name}' (rank ${o.rank}) timed out after ${o.initTimeoutMs} ms: ` +
          `${this.connectedCount()}/${o.worldSize} workers connected (master ${o.masterAddr}:${o.bootstrapPort})`,
      );
    } catch (err) {
      await this.teardown();
      this.state = 'closed';
      throw err instanceof RpcError ? err : new RpcError('BOOTSTRAP', (err as Error).message, { cause: err });
    }
    this.state = 'running';
    this.resolveRunning();
    this.logger.info({ name: o.name, rank: o.rank, worldSize: o.worldSize, port: this.port }, 'rpc: ready');
  }

  private connectedCount(): number {
    let n = 0;
    for (const p of this.peers.values()) if (p.conn) n++;
    return n;
  }

  private setTable(members: Member[]): void {
    for (const m of members) {
      this.peers.set(m.rank, { ...m, conn: null, lost: false });
      this.byName.set(m.name, m.rank);
    }
    const self = this.peers.get(this.rank)!;
    const loop = new LoopbackConn((raw) => this.onFrames(this.rank, loop, [raw]));
    self.conn = loop;
    this.resolveTable();
  }

  private async joinMaster(self: Member, deadline: number): Promise<void> {
    const o = this.opts;
    const backoff = new Backoff({ initialMs: 50, multiplier: 2, maxMs: 1000, jitter: 0.2 });
    for (;;) {
      const conn = openStream(o.masterAddr, o.bootstrapPort, o.tls, o.dataChannel, this.dataHub);
      const result = await new Promise<{ ok: true; body: unknown } | { ok: false; err: Error; fatal: boolean }>(
        (resolve) => {
          conn.onClose = (err) => resolve({ ok: false, err: err ?? new Error('closed'), fatal: false });
          conn.onFrames = (raws) => {
            try {
              const f = decodeFrame(raws[0]!);
              const v = decodeValue(f.body, f.tensors);
              if (f.type !== MsgType.RET) {
                resolve({ ok: false, err: this.toError(v, 0), fatal: true });
                return;
              }
              // Bind synchronously: frames that came in the same segment (calls from rank 0) follow at once.
              const { members, session } = (v as { v: { members: Member[]; session: string } }).v;
              this.session = session;
              this.setTable(members);
              this.bindConn(0, conn);
              if (raws.length > 1) this.onFrames(0, conn, raws.slice(1));
              resolve({ ok: true, body: null });
            } catch (err) {
              resolve({ ok: false, err: err as Error, fatal: true });
            }
          };
          const enc = encodeValue({ ...self, worldSize: o.worldSize });
          conn.send(encodeFrame(MsgType.JOIN, 1, enc.body));
        },
      );
      if (result.ok) return;
      conn.close();
      if (result.fatal) {
        throw new RpcError('BOOTSTRAP', `rank 0 refused '${self.name}': ${result.err.message}`, { cause: result.err });
      }
      const delayMs = backoff.next();
      if (Date.now() + delayMs > deadline)
        throw new RpcError('BOOTSTRAP', `cannot reach rank 0: ${result.err.message}`);
      await new Promise((r) => setTimeout(r, delayMs));
    }
  }

  /** Rank 0: records one JOIN; when the world is complete answers all of them with the table. */
  private acceptJoin(m: Member, conn: StreamConn | null, requestId: number): void {
    const refuse = (msg: string): void => {
      if (conn) {
        this.reply(conn, requestId, MsgType.ERR, { code: 'BOOTSTRAP', message: msg, worker: this.name });
        setTimeout(() => conn.close(), 100).unref();
      }
    };
    if (this.joins.has(m.rank)) return refuse(`rank ${m.rank} has already joined`);
    for (const j of this.joins.values()) {
      if (j.member.name === m.name) return refuse(`worker name '${m.name}' is already taken by rank ${j.member.rank}`);
    }
    this.joins.set(m.rank, { member: m, conn: conn as StreamConn, requestId });
    if (conn) conn.onClose = () => this.joins.delete(m.rank);
    if (this.joins.size < this.worldSize) return;
    const members = [...this.joins.values()].map((j) => j.member).sort((a, b) => a.rank - b.rank);
    this.setTable(members);
    for (const j of this.joins.values()) {
      if (!j.conn) continue;
      this.reply(j.conn, j.requestId, MsgType.RET, { v: { members, session: this.session } });
      this.bindConn(j.member.rank, j.conn);
    }
    this.joins.clear();
  }

  private async connectLowerRanks(): Promise<void> {
    const waits: Promise<void>[] = [];
    for (let r = 1; r < this.rank; r++) {
      const peer = this.peers.get(r)!;
      const conn = openStream(peer.addr, peer.port, this.opts.tls, this.opts.dataChannel, this.dataHub);
      waits.push(
        new Promise<void>((resolve, reject) => {
          conn.onClose = (err) => reject(new RpcError('BOOTSTRAP', `cannot reach '${peer.name}': ${err?.message}`));
          conn.onFrames = (raws) => {
            try {
              const f = decodeFrame(raws[0]!);
              if (f.type !== MsgType.RET) {
                reject(this.toError(decodeValue(f.body, f.tensors), r));
                return;
              }
              this.bindConn(r, conn);
              if (raws.length > 1) this.onFrames(r, conn, raws.slice(1));
              resolve();
            } catch (err) {
              reject(err);
            }
          };
          const enc = encodeValue({ rank: this.rank, name: this.name, session: this.session });
          conn.send(encodeFrame(MsgType.HELLO, 1, enc.body));
        }),
      );
    }
    await Promise.all(waits);
  }

  private waitAllConnected(): Promise<void> {
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.connectedCount() === this.worldSize) {
          this.readyCheck = null;
          resolve();
        }
      };
      this.readyCheck = check;
      check();
    });
  }

  /** First frame on an incoming stream: JOIN (rank 0) or HELLO (from a higher rank). */
  private onIncoming(conn: StreamConn): void {
    let bound = false;
    conn.onProtocolError = (err) => this.logger.warn({ err: err.message }, 'rpc: protocol error on incoming stream');
    conn.onFrames = (raws) => {
      if (bound) return; // replaced by bindConn
      let f: Frame;
      let body: Record<string, unknown>;
      try {
        f = decodeFrame(raws[0]!);
        body = decodeValue(f.body, f.tensors) as Record<string, unknown>;
      } catch (err) {
        this.rejectBadFrame(conn, err as FrameError);
        conn.close();
        return;
      }
      bound = true;
      const m = body as unknown as Member & { worldSize?: number; session?: string };
      if (f.type === MsgType.JOIN && this.rank === 0 && this.state === 'starting') {
        if (m.worldSize !== this.worldSize) {
          this.reply(conn, f.requestId, MsgType.ERR, {
            code: 'BOOTSTRAP',
            message: `worldSize ${m.worldSize} does not match rank 0's ${this.worldSize}`,
          });
          return;
        }
        if (!Number.isInteger(m.rank) || m.rank < 1 || m.rank >= this.worldSize) {
          this.reply(conn, f.requestId, MsgType.ERR, {
            code: 'BOOTSTRAP',
            message: `rank ${m.rank} is outside 1..${this.worldSize - 1}`,
          });
          return;
        }
        this.acceptJoin({ name: m.name, rank: m.rank, addr: m.addr, port: m.port }, conn, f.requestId);
        return;
      }
      if (f.type === MsgType.HELLO) {
        void this.tableReady.then(() => {
          if (m.session !== this.session || !this.peers.has(m.rank) || m.rank <= this.rank) {
            this.reply(conn, f.requestId, MsgType.ERR, {
              code: 'BOOTSTRAP',
              message: `HELLO from rank ${m.rank} with session ${m.session} refused (this is session ${this.session})`,
            });
            return;
          }
          this.reply(conn, f.requestId, MsgType.RET, { v: true });
          this.bindConn(m.rank, conn);
        });
        return;
      }
      this.reply(conn, f.requestId, MsgType.ERR, {
        code: 'PROTOCOL',
        message: `unexpected first message type ${f.type} on a new stream`,
      });
      setTimeout(() => conn.close(), 100).unref();
    };
  }

  private bindConn(rank: number, conn: StreamConn): void {
    const peer = this.peers.get(rank)!;
    peer.conn = conn;
    conn.onFrames = (raws) => this.onFrames(rank, conn, raws);
    conn.onProtocolError = (err) => {
      this.logger.warn({ peer: peer.name, err: err.message }, 'rpc: protocol error, closing stream');
      if (err.requestId !== undefined) this.rejectBadFrame(conn, err);
    };
    conn.onClose = (err) => this.onPeerClosed(rank, err);
    this.readyCheck?.();
  }

  private onPeerClosed(rank: number, err?: Error): void {
    const peer = this.peers.get(rank);
    if (!peer || peer.lost) return;
    peer.lost = true;
    if (this.state === 'closed') return;
    if (this.state === 'running') {
      this.logger.warn({ peer: peer.name, rank, err: err?.message }, 'rpc: lost connection to peer');
    }
    const e = new RpcError(
      'PEER_LOST',
      `worker '${peer.name}' (rank ${rank}) left the RPC group: ${err?.message ?? 'closed'}`,
      {
        worker: peer.name,
        cause: err,
      },
    );
    for (const [id, p] of [...this.pending]) {
      if (p.peer !== rank) continue;
      this.settle(id);
      p.reject(e);
    }
    this.rrefs.onPeerLost(rank);
    for (const x of this.extensions) x.onPeerLost?.(rank);
    // A departed worker counts as arrived at the shutdown barrier.
    if (this.rank === 0) this.checkBarrier();
  }

  // ---------------------------------------------------------------------------------------------- shutdown

  /**
   * Graceful: waits (bounded by timeoutMs) until this worker's own calls are answered, releases its user RRefs,
   * then meets every worker at a barrier on rank 0 (each worker arrives only with no calls of its own in flight, so
   * when all have arrived no work is left anywhere), then closes. Non-graceful or on timeout: pending calls reject
   * with SHUTDOWN and connections close at once. Never hangs past timeoutMs.
   */
  async shutdown(opts: ShutdownOptions = {}): Promise<void> {
    if (this.state === 'closed') return;
    if (this.state !== 'running') throw new RpcError('NOT_INITIALIZED', 'RPC has not been initialized');
    const graceful = opts.graceful ?? true;
    const timeoutMs = opts.timeoutMs ?? 30_000;
    this.state = 'stopping';
    if (graceful) {
      const deadline = Date.now() + timeoutMs;
      try {
        await withDeadline(
          (async () => {
            await this.drainOwnCalls();
            await this.rrefs.releaseAll();
            await this.drainOwnCalls();
            await this.barrier();
          })(),
          deadline,
          () => `graceful shutdown of '${this.name}' exceeded ${timeoutMs} ms; closing anyway`,
        );
      } catch (err) {
        this.logger.warn({ err: (err as Error).message }, 'rpc: graceful shutdown incomplete');
      }
      this.rrefs.checkLeaks();
    }
    this.state = 'closed';
    await this.teardown();
  }

  private async drainOwnCalls(): Promise<void> {
    while (this.pending.size > 0) {
      const ps = [...this.pending.values()];
      await Promise.allSettled(
        ps.map(
          (p) =>
            new Promise<void>((r) => {
              const { resolve, reject } = p;
              p.resolve = (v) => (resolve(v), r());
              p.reject = (e) => (reject(e), r());
            }),
        ),
      );
    }
  }

  private async barrier(): Promise<void> {
    if (this.rank === 0) {
      await new Promise<void>((resolve) => {
        this.barrierWaiters.set(0, { conn: { send: () => resolve(), close() {}, isClosed: false }, requestId: 0 });
        this.checkBarrier();
      });
      return;
    }
    if (this.isPeerLost(0)) return;
    await this.request(0, MsgType.BARRIER, { rank: this.rank }, 0, 'shutdown barrier').catch(() => undefined);
  }

  /** Rank 0: answers all barrier waiters once every live worker has arrived. */
  private checkBarrier(): void {
    for (const [r, p] of this.peers) {
      if (!p.lost && !this.barrierWaiters.has(r)) return;
    }
    const ws = [...this.barrierWaiters.values()];
    this.barrierWaiters.clear();
    for (const w of ws) this.reply(w.conn, w.requestId, MsgType.RET, { v: true });
  }

  private async teardown(): Promise<void> {
    const e = new RpcError('SHUTDOWN', `RPC on '${this.name}' was shut down`);
    for (const [id, p] of [...this.pending]) {
      this.settle(id);
      p.reject(e);
    }
    for (const p of this.peers.values()) {
      p.lost = true;
      p.conn?.close();
    }
    for (const j of this.joins.values()) j.conn?.close();
    this.joins.clear();
    this.rrefs.clear();
    if (this.server) await stopServer(this.server, 500);
    this.server = null;
    this.dataHub = null;
  }

  /** Test hook: where this worker's data-channel listener is (null when the fast path is off). */
  dataListener(): { port: number; udsPath: string } | null {
    return this.dataHub ? { port: this.dataHub.port, udsPath: this.dataHub.udsPath } : null;
  }

  /** Test hook: the raw stream to a peer (to inject malformed data). */
  rawConnTo(rank: number): StreamConn | null {
    const c = this.peers.get(rank)?.conn;
    return c instanceof StreamConn ? c : null;
  }

  /** Rank 0 takes BARRIER before generic dispatch: it answers late, when every live worker has arrived. */
  private handleBarrier(src: number, conn: Conn, requestId: number): boolean {
    if (this.rank !== 0) return false;
    this.barrierWaiters.set(src, { conn, requestId });
    this.checkBarrier();
    return true;
  }
}

/** Bounds `p` by an absolute deadline; past it rejects with RpcError TIMEOUT carrying `message()`. */
function withDeadline<T>(p: Promise<T>, deadline: number, message: () => string): Promise<T> {
  const ms = Math.max(0, deadline - Date.now());
  return withTimeout(p, ms, 'rpc', () => new RpcError('TIMEOUT', message()));
}
