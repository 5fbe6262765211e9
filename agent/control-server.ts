// The agent's end of the agent ↔ worker control channel (common/control-protocol.ts): one Unix socket per local
// rank in a private temporary directory, hello/welcome, heartbeats, ready, rounds and dumps.
//
// Contract:
// - `start()` makes the directory and listens on every socket before any worker starts; `close()` ends every
//   connection, closes the sockets and removes the directory (idempotent, never throws).
// - A connection becomes a rank's current one with a valid `hello` for that rank; a later valid hello (a restarted
//   worker) replaces it. Anything else first, a malformed or over-long line, an `error`, or a connection closed in
//   the middle of a line: one warning naming the rank and the problem, an `error` reply where possible, the
//   connection is closed and that rank is non-live. Nothing a worker sends can throw out of this class.
// - A connection that says nothing for `helloTimeoutMs` is closed (bounded resources).
// - Listener callbacks run synchronously from socket events; they must not throw (errors are logged).

import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CONTROL_PROTOCOL_VERSION,
  ControlProtocolError,
  LineSplitter,
  decodeWorkerMessage,
  encodeControlMessage,
  type AgentMessage,
  type WorkerMessage,
} from '../common/control-protocol.js';
import type { Logger } from '../common/logger.js';

type Msg<T extends WorkerMessage['type']> = Extract<WorkerMessage, { type: T }>;

/** What the agent hears from its workers. Every callback is optional. */
export interface ControlListener {
  hello?(localRank: number, msg: Msg<'hello'>): void;
  heartbeat?(localRank: number, msg: Msg<'heartbeat'>, atMs: number): void;
  ready?(localRank: number, msg: Msg<'ready'>): void;
  peerLost?(localRank: number, msg: Msg<'peer-lost'>): void;
  /** The rank's current connection ended (worker exit, protocol error); `reason` says which. */
  disconnected?(localRank: number, reason: string): void;
}

export interface ControlServerOptions {
  readonly localRanks: readonly number[];
  /** Sent in `welcome`: how often workers send heartbeats. */
  readonly heartbeatIntervalMs: number;
  readonly logger: Logger;
  /** Where the private socket directory is made (default os.tmpdir(); keep it short: sun_path is 108 bytes). */
  readonly parentDir?: string;
  /** A connection without a hello is closed after this long. Default 10 s. */
  readonly helloTimeoutMs?: number;
}

interface Conn {
  readonly socket: Socket;
  /** Mutable: a promoted standby's connection moves to the rank it takes (adopt). */
  localRank: number;
  readonly splitter: LineSplitter;
  hello: Msg<'hello'> | null;
  closed: boolean;
  timer: NodeJS.Timeout | null;
}

export class ControlServer {
  private readonly servers = new Map<number, Server>();
  private readonly current = new Map<number, Conn>();
  private readonly conns = new Set<Conn>();
  private listener: ControlListener = {};
  private closed = false;

  private constructor(
    readonly dir: string,
    private readonly opts: ControlServerOptions,
  ) {}

  /** Makes the directory and listens on one socket per local rank. Throws when a socket cannot be bound. */
  static async start(opts: ControlServerOptions): Promise<ControlServer> {
    const dir = mkdtempSync(join(opts.parentDir ?? tmpdir(), 'tensile-ctl-'));
    const cs = new ControlServer(dir, opts);
    try {
      for (const r of opts.localRanks) await cs.listen(r);
    } catch (err) {
      await cs.close();
      throw err;
    }
    return cs;
  }

  /** The path a worker of this local rank gets in TENSILE_CONTROL. */
  socketPath(localRank: number): string {
    return join(this.dir, `${localRank}.sock`);
  }

  setListener(listener: ControlListener): void {
    this.listener = listener;
  }

  /** Whether the rank's current connection said hello with live: true and is still open. */
  isLive(localRank: number): boolean {
    const c = this.current.get(localRank);
    return c !== undefined && !c.closed && c.hello?.live === true;
  }

  /** Whether the rank has an open connection that said hello (live or not). */
  isConnected(localRank: number): boolean {
    const c = this.current.get(localRank);
    return c !== undefined && !c.closed && c.hello !== null;
  }

  /** Sends a message to the rank's current connection; false when there is none. Never throws. */
  send(localRank: number, msg: AgentMessage): boolean {
    const c = this.current.get(localRank);
    if (!c || c.closed || !c.hello) return false;
    try {
      c.socket.write(encodeControlMessage(msg));
      return true;
    } catch (err) {
      this.opts.logger.warn({ localRank, err: (err as Error).message }, 'control: cannot send');
      return false;
    }
  }

  /** A new process takes this rank: drop the old connection (its hello no longer speaks for the rank). */
  forget(localRank: number): void {
    const c = this.current.get(localRank);
    if (c) this.drop(c, null);
    this.current.delete(localRank);
  }

  /**
   * A warm standby takes a rank: the connection that said hello on `fromRank`'s socket (a standby slot) becomes
   * `toRank`'s current one (the rank's old connection is dropped). False when `fromRank` has no open hello'd
   * connection. Later messages on it are reported for `toRank`.
   */
  adopt(fromRank: number, toRank: number): boolean {
    const c = this.current.get(fromRank);
    if (!c || c.closed || !c.hello) return false;
    this.forget(toRank);
    this.current.delete(fromRank);
    c.localRank = toRank;
    this.current.set(toRank, c);
    return true;
  }

  /** Ends every connection, closes the sockets, removes the directory. Idempotent, never throws. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const c of [...this.conns]) this.drop(c, null);
    await Promise.all([...this.servers.values()].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    rmSync(this.dir, { recursive: true, force: true });
  }

  private listen(localRank: number): Promise<void> {
    const server = createServer((socket) => this.accept(localRank, socket));
    this.servers.set(localRank, server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath(localRank), () => {
        server.off('error', reject);
        server.on('error', (err) => this.opts.logger.warn({ localRank, err: err.message }, 'control: socket error'));
        resolve();
      });
    });
  }

  private accept(localRank: number, socket: Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const conn: Conn = { socket, localRank, splitter: new LineSplitter(), hello: null, closed: false, timer: null };
    this.conns.add(conn);
    conn.timer = setTimeout(() => {
      if (!conn.hello) this.fail(conn, `no hello within ${this.opts.helloTimeoutMs ?? 10_000} ms`, false);
    }, this.opts.helloTimeoutMs ?? 10_000);
    conn.timer.unref();
    socket.on('data', (chunk: Buffer) => {
      if (conn.closed) return;
      let lines: string[];
      try {
        lines = conn.splitter.push(chunk);
      } catch (err) {
        this.fail(conn, (err as Error).message, true);
        return;
      }
      for (const line of lines) {
        if (conn.closed) return;
        this.onLine(conn, line);
      }
    });
    socket.on('error', () => {
      // 'close' follows and reports.
    });
    socket.on('close', () => {
      if (conn.closed) return;
      const pending = conn.splitter.pendingBytes;
      if (pending > 0) this.fail(conn, `connection closed in the middle of a message (${pending} bytes)`, false);
      else this.drop(conn, 'connection closed');
    });
  }

  private onLine(conn: Conn, line: string): void {
    let msg: WorkerMessage;
    try {
      msg = decodeWorkerMessage(line);
    } catch (err) {
      this.fail(conn, (err as Error).message, true);
      return;
    }
    if (conn.hello === null) {
      if (msg.type !== 'hello') {
        this.fail(conn, `expected hello first, got ${msg.type}`, true);
        return;
      }
      if (msg.localRank !== conn.localRank) {
        this.fail(conn, `hello for local rank ${msg.localRank} on the socket of local rank ${conn.localRank}`, true);
        return;
      }
      conn.hello = msg;
      if (conn.timer) clearTimeout(conn.timer);
      const previous = this.current.get(conn.localRank);
      if (previous && previous !== conn) this.drop(previous, 'replaced by a new connection');
      this.current.set(conn.localRank, conn);
      conn.socket.write(
        encodeControlMessage({
          type: 'welcome',
          version: CONTROL_PROTOCOL_VERSION,
          heartbeatIntervalMs: this.opts.heartbeatIntervalMs,
        }),
      );
      this.call(() => this.listener.hello?.(conn.localRank, msg as Msg<'hello'>));
      return;
    }
    switch (msg.type) {
      case 'hello':
        this.fail(conn, 'a second hello on one connection', true);
        return;
      case 'heartbeat':
        this.call(() => this.listener.heartbeat?.(conn.localRank, msg, Date.now()));
        return;
      case 'ready':
        this.call(() => this.listener.ready?.(conn.localRank, msg));
        return;
      case 'peer-lost':
        this.call(() => this.listener.peerLost?.(conn.localRank, msg));
        return;
      case 'error':
        this.fail(conn, `the worker reported a protocol error: ${msg.message}`, false);
        return;
    }
  }

  /** A protocol failure: one warning, an error reply where possible, the connection closed, the rank non-live. */
  private fail(conn: Conn, problem: string, reply: boolean): void {
    if (conn.closed) return;
    this.opts.logger.warn(
      { localRank: conn.localRank, problem },
      `control: local rank ${conn.localRank}: ${problem}; the worker is handled as non-live`,
    );
    if (reply) {
      try {
        conn.socket.write(encodeControlMessage({ type: 'error', message: problem.slice(0, 1000) }));
      } catch (err) {
        if (!(err instanceof ControlProtocolError)) throw err;
      }
    }
    this.drop(conn, problem);
  }

  private drop(conn: Conn, reason: string | null): void {
    if (conn.closed) return;
    conn.closed = true;
    if (conn.timer) clearTimeout(conn.timer);
    this.conns.delete(conn);
    conn.socket.end();
    conn.socket.destroySoon?.();
    setTimeout(() => conn.socket.destroy(), 1000).unref();
    if (this.current.get(conn.localRank) === conn && reason !== null) {
      this.call(() => this.listener.disconnected?.(conn.localRank, reason));
    }
  }

  private call(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.opts.logger.error({ err: (err as Error).message }, 'control: listener threw');
    }
  }
}
