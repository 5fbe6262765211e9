// RpcAgent: one worker's end of the RPC world. It owns the parts and their life cycle (new → starting → running
// → stopping → closed) and is the face users and extensions call; the work is done by
//   bootstrap.ts         joining the world and binding one stream per peer pair
//   dispatcher.ts        requests out, answers matched by id, incoming requests served (pending-calls.ts)
//   shutdown-barrier.ts  the barrier of a graceful shutdown, on rank 0
//   worker-table.ts      the members and their connections;  function-registry.ts  the served functions
// Several agents may live in one process (tests do that).

import type * as grpc from '@grpc/grpc-js';
import { withTimeout } from '../common/timeout.js';
import { Backoff, sleep } from '../common/backoff.js';
import {
  RpcError,
  type CallOptions,
  type Logger,
  type RegisterOptions,
  type RpcFunction,
  type ShutdownOptions,
  type WorkerInfo,
  type WorkerRef,
} from './api.js';
import type { AgentExtension, AgentHost } from './agent-extension.js';
import { Bootstrap } from './bootstrap.js';
import type { DataHub } from './data-channel.js';
import { Dispatcher, type AgentPhase } from './dispatcher.js';
import { FunctionRegistry } from './function-registry.js';
import { MsgType } from './frame.js';
import { startServer, stopServer, StreamConn } from './grpc-transport.js';
import type { ResolvedRpcOptions } from './options.js';
import { RRefContext, type RRef } from './rref.js';
import { ShutdownBarrier } from './shutdown-barrier.js';
import { WorkerTable } from './worker-table.js';

/** Retries of internal control messages (PyTorch: 5 tries, 1 s × 1.5^n): 200 ms × 1.5^n, ±50 %. */
const CONTROL_BACKOFF = { initialMs: 200, multiplier: 1.5, maxMs: 200 * 1.5 ** 5, jitter: 0.5 };
const CONTROL_TIMEOUT_MS = 10_000;

export class RpcAgent implements AgentHost {
  readonly name: string;
  readonly rank: number;
  readonly worldSize: number;
  readonly logger: Logger;
  readonly rrefs: RRefContext;
  private readonly extensions: AgentExtension[] = [];
  private readonly opts: ResolvedRpcOptions;
  private state: AgentPhase = 'new';
  private server: grpc.Server | null = null;
  private dataHub: DataHub | null = null;
  private port = 0;
  private readonly table: WorkerTable;
  private readonly registry: FunctionRegistry;
  private readonly dispatcher: Dispatcher;
  private readonly bootstrap: Bootstrap;
  private readonly barrier: ShutdownBarrier;
  private resolveRunning!: () => void;
  private readonly running = new Promise<void>((r) => (this.resolveRunning = r));

  constructor(opts: ResolvedRpcOptions) {
    this.opts = opts;
    this.name = opts.name;
    this.rank = opts.rank;
    this.worldSize = opts.worldSize;
    this.logger = opts.logger;
    this.rrefs = new RRefContext(this);
    this.table = new WorkerTable(opts.worldSize);
    this.registry = new FunctionRegistry(opts.name);
    this.dispatcher = new Dispatcher({
      name: opts.name,
      rank: opts.rank,
      logger: opts.logger,
      rpcTimeoutMs: opts.rpcTimeoutMs,
      table: this.table,
      registry: this.registry,
      rrefs: this.rrefs,
      extensions: this.extensions,
      phase: () => this.state,
      running: this.running,
      takeBarrier: (src, conn, requestId) => this.barrier.take(src, conn, requestId),
    });
    this.barrier = new ShutdownBarrier(opts.rank, this.table, this.dispatcher);
    this.bootstrap = new Bootstrap({
      opts,
      logger: opts.logger,
      table: this.table,
      dispatcher: this.dispatcher,
      phase: () => this.state,
      dataHub: () => this.dataHub,
      onPeerClosed: (rank, err) => this.onPeerClosed(rank, err),
    });
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
    return this.dispatcher.pending.size;
  }
  /** Server-side calls being handled right now (for shutdown accounting and metrics). */
  get serverActiveCalls(): number {
    return this.dispatcher.activeServerCalls;
  }

  /** Plugs an extension in (before start). Throws INVALID_ARGUMENT when its key is taken. */
  use(ext: AgentExtension): void {
    if (this.extensions.some((x) => x.key === ext.key)) {
      throw new RpcError('INVALID_ARGUMENT', `an extension with key '${ext.key}' is already installed`);
    }
    this.extensions.push(ext);
  }

  /** The installed extension of class `cls`, if any. */
  extension<T extends AgentExtension>(cls: abstract new (...args: never[]) => T): T | undefined {
    return this.extensions.find((x): x is T => x instanceof cls);
  }

  registerFunction(name: string, fn: RpcFunction, opts: RegisterOptions<unknown[]> = {}): void {
    this.registry.register(name, fn, opts);
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
    return this.table.info(this.resolveRank(worker));
  }

  getWorkerInfos(): WorkerInfo[] {
    return this.table.infos();
  }

  /** The rank of a worker; NOT_INITIALIZED before start or after shutdown, UNKNOWN_WORKER for a stranger. */
  resolveRank(worker: WorkerRef): number {
    this.assertActive();
    return this.table.resolve(worker);
  }

  peerName(rank: number): string {
    return this.table.name(rank);
  }

  isPeerLost(rank: number): boolean {
    return this.table.isLost(rank);
  }

  private assertActive(): void {
    if (!this.isActive) {
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
    this.assertActive();
    return this.rrefs.createLocal(value);
  }

  request(rank: number, type: number, body: unknown, timeoutMs?: number, what = ''): Promise<unknown> {
    return this.dispatcher.request(rank, type, body, timeoutMs, what);
  }

  async requestWithRetries(rank: number, type: number, body: unknown, maxRetries = 5): Promise<unknown> {
    let backoff: Backoff | undefined; // made on the first retry: RRef deletes take this path once per RRef
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.request(rank, type, body, CONTROL_TIMEOUT_MS, `control ${type}`);
      } catch (err) {
        // Only non-terminal errors (TIMEOUT, UNAVAILABLE) are worth another try.
        if (!(err instanceof RpcError) || err.terminal || attempt >= maxRetries) throw err;
        backoff ??= new Backoff(CONTROL_BACKOFF);
        await sleep(backoff.next());
      }
    }
  }

  // ---------------------------------------------------------------------------------------------- life cycle

  /** Starts the server, joins the world, connects to every peer. Rejects with BOOTSTRAP/TIMEOUT after initTimeoutMs. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new RpcError('ALREADY_INITIALIZED', 'RPC is already initialized');
    this.state = 'starting';
    const o = this.opts;
    const deadline = Date.now() + o.initTimeoutMs;
    try {
      const { server, port, hub } = await startServer(
        o.listenAddr,
        o.rank === 0 ? o.bootstrapPort : 0,
        (conn) => this.bootstrap.onIncoming(conn),
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
    try {
      await withTimeout(
        this.bootstrap.join({ name: o.name, rank: o.rank, addr: o.advertiseAddr, port: this.port }, deadline),
        Math.max(0, deadline - Date.now()),
        'RPC init',
        () =>
          new RpcError(
            'TIMEOUT',
            `RPC init of '${o.name}' (rank ${o.rank}) timed out after ${o.initTimeoutMs} ms: ` +
              `${this.table.connectedCount()}/${o.worldSize} workers connected (master ${o.masterAddr}:${o.bootstrapPort})`,
          ),
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

  /**
   * Graceful: waits (bounded by timeoutMs) until this worker's own calls are answered, releases its user RRefs,
   * then meets every worker at the shutdown barrier on rank 0, then closes. Non-graceful or on timeout: pending
   * calls reject with SHUTDOWN and connections close at once. Never hangs past timeoutMs.
   */
  async shutdown(opts: ShutdownOptions = {}): Promise<void> {
    if (this.state === 'closed') return;
    if (this.state !== 'running') throw new RpcError('NOT_INITIALIZED', 'RPC has not been initialized');
    const graceful = opts.graceful ?? true;
    const timeoutMs = opts.timeoutMs ?? 30_000;
    this.state = 'stopping';
    if (graceful) {
      const { pending } = this.dispatcher;
      try {
        await withTimeout(
          (async () => {
            await pending.drain();
            await this.rrefs.releaseAll();
            await pending.drain();
            await this.barrier.arrive();
          })(),
          timeoutMs,
          'graceful shutdown',
          () => new RpcError('TIMEOUT', `graceful shutdown of '${this.name}' exceeded ${timeoutMs} ms; closing anyway`),
        );
      } catch (err) {
        this.logger.warn({ err: (err as Error).message }, 'rpc: graceful shutdown incomplete');
      }
      this.rrefs.checkLeaks();
    }
    this.state = 'closed';
    await this.teardown();
  }

  private onPeerClosed(rank: number, err?: Error): void {
    const peer = this.table.get(rank);
    if (!peer || peer.lost) return;
    peer.lost = true;
    if (this.state === 'closed') return;
    if (this.state === 'running') {
      this.logger.warn({ peer: peer.name, rank, err: err?.message }, 'rpc: lost connection to peer');
    }
    const e = new RpcError(
      'PEER_LOST',
      `worker '${peer.name}' (rank ${rank}) left the RPC group: ${err?.message ?? 'closed'}`,
      { worker: peer.name, cause: err },
    );
    this.dispatcher.pending.rejectPeer(rank, e);
    this.rrefs.onPeerLost(rank);
    for (const x of this.extensions) x.onPeerLost?.(rank);
    // A departed worker counts as arrived at the shutdown barrier.
    this.barrier.check();
  }

  private async teardown(): Promise<void> {
    this.dispatcher.pending.rejectAll(new RpcError('SHUTDOWN', `RPC on '${this.name}' was shut down`));
    this.table.closeAll();
    this.bootstrap.close();
    this.rrefs.clear();
    if (this.server) await stopServer(this.server, 500);
    this.server = null;
    this.dataHub = null;
  }

  // ---------------------------------------------------------------------------------------------- test hooks

  /** Test hook: where this worker's data-channel listener is (null when the fast path is off). */
  dataListener(): { port: number; udsPath: string } | null {
    return this.dataHub ? { port: this.dataHub.port, udsPath: this.dataHub.udsPath } : null;
  }

  /** Test hook: the raw stream to a peer (to inject malformed data). */
  rawConnTo(rank: number): StreamConn | null {
    const c = this.table.get(rank)?.conn;
    return c instanceof StreamConn ? c : null;
  }
}
