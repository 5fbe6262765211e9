// Bootstrap of the RPC world, without an external store.
//
// Rank 0 serves gRPC at masterAddr:bootstrapPort; every other rank listens on a free port, opens its stream to
// rank 0 and sends JOIN {name, rank, addr, port}. When all worldSize ranks have joined, rank 0 answers every JOIN
// with the member table and a fresh session id. Rank i then opens one stream to each rank j in 1..i-1 (HELLO
// carrying the session); so every pair shares exactly one stream, opened by the higher rank. A HELLO with another
// session (a stale worker of an earlier round) is refused. Once bound, a stream's frames go to the dispatcher.

import { randomUUID } from 'node:crypto';
import { Backoff, sleep } from '../common/backoff.js';
import { RpcError, type Logger } from './api.js';
import { decodeValue, encodeValue } from './codec.js';
import type { DataHub } from './data-channel.js';
import type { AgentPhase, Dispatcher } from './dispatcher.js';
import { FrameError, MsgType, decodeFrame, encodeFrame, type Frame } from './frame.js';
import { openStream, type StreamConn } from './grpc-transport.js';
import { LoopbackConn } from './loopback-conn.js';
import type { ResolvedRpcOptions } from './options.js';
import type { Member, WorkerTable } from './worker-table.js';

export interface BootstrapDeps {
  readonly opts: ResolvedRpcOptions;
  readonly logger: Logger;
  readonly table: WorkerTable;
  readonly dispatcher: Dispatcher;
  phase(): AgentPhase;
  /** This worker's data-channel listener (null when the fast path is off). */
  dataHub(): DataHub | null;
  /** A bound peer's stream closed (err: why, when known). */
  onPeerClosed(rank: number, err?: Error): void;
}

/** Delays between attempts to reach rank 0 (it may start after us): 50 ms doubling to 1 s, ±20 % so that the
 * workers of a large world do not all knock at once. */
const JOIN_BACKOFF = { initialMs: 50, multiplier: 2, maxMs: 1000, jitter: 0.2 };

export class Bootstrap {
  private session = '';
  private readonly tableReady: Promise<void>;
  private resolveTable!: () => void;
  private readonly joins = new Map<number, { member: Member; conn: StreamConn | null; requestId: number }>();
  private readyCheck: (() => void) | null = null;

  constructor(private readonly d: BootstrapDeps) {
    this.tableReady = new Promise((r) => (this.resolveTable = r));
  }

  /**
   * Joins the world as `self` and resolves when a stream to every peer is bound. Rejects with BOOTSTRAP when rank 0
   * refuses or cannot be reached before `deadline` (epoch ms); the caller bounds the whole wait.
   */
  async join(self: Member, deadline: number): Promise<void> {
    if (self.rank === 0) {
      this.session = randomUUID();
      this.acceptJoin(self, null, 0);
      await this.tableReady;
    } else {
      await this.joinMaster(self, deadline);
      await this.connectLowerRanks();
    }
    await this.waitAllConnected();
  }

  /** Closes streams of JOINs not yet answered (teardown). */
  close(): void {
    for (const j of this.joins.values()) j.conn?.close();
    this.joins.clear();
  }

  /** First frame on an incoming stream: JOIN (rank 0) or HELLO (from a higher rank). The server calls this. */
  onIncoming(conn: StreamConn): void {
    const { dispatcher } = this.d;
    let bound = false;
    conn.onProtocolError = (err) => this.d.logger.warn({ err: err.message }, 'rpc: protocol error on incoming stream');
    conn.onFrames = (raws) => {
      if (bound) return; // replaced by bindConn
      let f: Frame;
      let body: Record<string, unknown>;
      try {
        f = decodeFrame(raws[0]!);
        body = decodeValue(f.body, f.tensors) as Record<string, unknown>;
      } catch (err) {
        dispatcher.rejectBadFrame(conn, err as FrameError);
        conn.close();
        return;
      }
      bound = true;
      const m = body as unknown as Member & { worldSize?: number; session?: string };
      if (f.type === MsgType.JOIN && this.d.opts.rank === 0 && this.d.phase() === 'starting') {
        this.onJoin(conn, f.requestId, m);
        return;
      }
      if (f.type === MsgType.HELLO) {
        void this.tableReady.then(() => this.onHello(conn, f.requestId, m));
        return;
      }
      dispatcher.reply(conn, f.requestId, MsgType.ERR, {
        code: 'PROTOCOL',
        message: `unexpected first message type ${f.type} on a new stream`,
      });
      setTimeout(() => conn.close(), 100).unref();
    };
  }

  private onJoin(conn: StreamConn, requestId: number, m: Member & { worldSize?: number }): void {
    const { worldSize } = this.d.opts;
    const refuse = (message: string): void =>
      this.d.dispatcher.reply(conn, requestId, MsgType.ERR, { code: 'BOOTSTRAP', message });
    if (m.worldSize !== worldSize) return refuse(`worldSize ${m.worldSize} does not match rank 0's ${worldSize}`);
    if (!Number.isInteger(m.rank) || m.rank < 1 || m.rank >= worldSize) {
      return refuse(`rank ${m.rank} is outside 1..${worldSize - 1}`);
    }
    this.acceptJoin({ name: m.name, rank: m.rank, addr: m.addr, port: m.port }, conn, requestId);
  }

  private onHello(conn: StreamConn, requestId: number, m: Member & { session?: string }): void {
    const { dispatcher, table } = this.d;
    if (m.session !== this.session || !table.has(m.rank) || m.rank <= this.d.opts.rank) {
      dispatcher.reply(conn, requestId, MsgType.ERR, {
        code: 'BOOTSTRAP',
        message: `HELLO from rank ${m.rank} with session ${m.session} refused (this is session ${this.session})`,
      });
      return;
    }
    dispatcher.reply(conn, requestId, MsgType.RET, { v: true });
    this.bindConn(m.rank, conn);
  }

  /** Rank 0: records one JOIN; when the world is complete answers all of them with the table. */
  private acceptJoin(m: Member, conn: StreamConn | null, requestId: number): void {
    const { dispatcher, opts } = this.d;
    const refuse = (msg: string): void => {
      if (conn) {
        dispatcher.reply(conn, requestId, MsgType.ERR, { code: 'BOOTSTRAP', message: msg, worker: opts.name });
        setTimeout(() => conn.close(), 100).unref();
      }
    };
    if (this.joins.has(m.rank)) return refuse(`rank ${m.rank} has already joined`);
    for (const j of this.joins.values()) {
      if (j.member.name === m.name) return refuse(`worker name '${m.name}' is already taken by rank ${j.member.rank}`);
    }
    this.joins.set(m.rank, { member: m, conn, requestId });
    if (conn) conn.onClose = () => this.joins.delete(m.rank);
    if (this.joins.size < opts.worldSize) return;
    const members = [...this.joins.values()].map((j) => j.member).sort((a, b) => a.rank - b.rank);
    this.setTable(members);
    for (const j of this.joins.values()) {
      if (!j.conn) continue;
      dispatcher.reply(j.conn, j.requestId, MsgType.RET, { v: { members, session: this.session } });
      this.bindConn(j.member.rank, j.conn);
    }
    this.joins.clear();
  }

  private setTable(members: Member[]): void {
    const { table, dispatcher, opts } = this.d;
    table.set(members);
    const self = table.get(opts.rank)!;
    const loop = new LoopbackConn((raw) => dispatcher.onFrames(opts.rank, loop, [raw]));
    self.conn = loop;
    this.resolveTable();
  }

  private async joinMaster(self: Member, deadline: number): Promise<void> {
    const { opts: o, dispatcher } = this.d;
    const backoff = new Backoff(JOIN_BACKOFF);
    for (;;) {
      const conn = openStream(o.masterAddr, o.bootstrapPort, o.tls, o.dataChannel, this.d.dataHub());
      const result = await new Promise<{ ok: true } | { ok: false; err: Error; fatal: boolean }>((resolve) => {
        conn.onClose = (err) => resolve({ ok: false, err: err ?? new Error('closed'), fatal: false });
        conn.onFrames = (raws) => {
          try {
            const f = decodeFrame(raws[0]!);
            const v = decodeValue(f.body, f.tensors);
            if (f.type !== MsgType.RET) {
              resolve({ ok: false, err: dispatcher.toError(v, 0), fatal: true });
              return;
            }
            // Bind synchronously: frames that came in the same segment (calls from rank 0) follow at once.
            const { members, session } = (v as { v: { members: Member[]; session: string } }).v;
            this.session = session;
            this.setTable(members);
            this.bindConn(0, conn);
            if (raws.length > 1) dispatcher.onFrames(0, conn, raws.slice(1));
            resolve({ ok: true });
          } catch (err) {
            resolve({ ok: false, err: err as Error, fatal: true });
          }
        };
        const enc = encodeValue({ ...self, worldSize: o.worldSize });
        conn.send(encodeFrame(MsgType.JOIN, 1, enc.body));
      });
      if (result.ok) return;
      conn.close();
      if (result.fatal) {
        throw new RpcError('BOOTSTRAP', `rank 0 refused '${self.name}': ${result.err.message}`, { cause: result.err });
      }
      const delayMs = backoff.next();
      if (Date.now() + delayMs > deadline) {
        throw new RpcError('BOOTSTRAP', `cannot reach rank 0: ${result.err.message}`);
      }
      await sleep(delayMs);
    }
  }

  private async connectLowerRanks(): Promise<void> {
    const { opts, table, dispatcher } = this.d;
    const waits: Promise<void>[] = [];
    for (let r = 1; r < opts.rank; r++) {
      const peer = table.get(r)!;
      const conn = openStream(peer.addr, peer.port, opts.tls, opts.dataChannel, this.d.dataHub());
      waits.push(
        new Promise<void>((resolve, reject) => {
          conn.onClose = (err) => reject(new RpcError('BOOTSTRAP', `cannot reach '${peer.name}': ${err?.message}`));
          conn.onFrames = (raws) => {
            try {
              const f = decodeFrame(raws[0]!);
              if (f.type !== MsgType.RET) {
                reject(dispatcher.toError(decodeValue(f.body, f.tensors), r));
                return;
              }
              this.bindConn(r, conn);
              if (raws.length > 1) dispatcher.onFrames(r, conn, raws.slice(1));
              resolve();
            } catch (err) {
              reject(err as Error);
            }
          };
          const enc = encodeValue({ rank: opts.rank, name: opts.name, session: this.session });
          conn.send(encodeFrame(MsgType.HELLO, 1, enc.body));
        }),
      );
    }
    await Promise.all(waits);
  }

  private waitAllConnected(): Promise<void> {
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.d.table.connectedCount() === this.d.opts.worldSize) {
          this.readyCheck = null;
          resolve();
        }
      };
      this.readyCheck = check;
      check();
    });
  }

  private bindConn(rank: number, conn: StreamConn): void {
    const { table, dispatcher, logger } = this.d;
    const peer = table.get(rank)!;
    peer.conn = conn;
    conn.onFrames = (raws) => dispatcher.onFrames(rank, conn, raws);
    conn.onProtocolError = (err) => {
      logger.warn({ peer: peer.name, err: err.message }, 'rpc: protocol error, closing stream');
      if (err.requestId !== undefined) dispatcher.rejectBadFrame(conn, err);
    };
    conn.onClose = (err) => this.d.onPeerClosed(rank, err);
    conn.onLargeFramePath = (path, why) =>
      logger.info({ peer: peer.name, path, why }, `rpc: large frames go by ${path}`);
    this.readyCheck?.();
  }
}
