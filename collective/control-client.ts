// The worker's end of the agent ↔ worker control channel (common/control-protocol.ts): live recovery, the hang
// watchdog's heartbeats and diagnostic dumps.
//
// `connectControl()` connects to the Unix socket in TENSILE_CONTROL, sends `hello` and waits (bounded) for
// `welcome`. It never throws for a missing, unreachable or misbehaving agent: it returns a client whose `live` is
// false (every method a no-op) and says why in `reason`, so the worker runs on the restart path as before.
// Once live:
// - `heartbeat(step)` sends at most one heartbeat per `heartbeatIntervalMs` (the agent's choice); a step given
//   while throttled is sent when the interval ends (trailing edge), so the agent always learns the newest step.
// - `round` messages are delivered to `onRound` listeners at once (to abort pending collectives) and queued for
//   `nextRound()`; only the newest undelivered round is kept (an older one is obsolete once a newer exists).
// - `dump` writes a Node diagnostic report (stacks, heap summary, handles) into the given directory. It needs the
//   event loop: a worker stuck in synchronous code (a busy loop) answers neither `dump` nor report-on-signal
//   (Node 20 serves SIGUSR2 reports from a JavaScript signal handler too; checked). For that case a welcomed client
//   also installs the native stack dumper (collective/js-stacks.ts: a V8 interrupt from a native thread, asked by
//   the agent over an abstract socket); without the addon that one step is skipped (an info line says why).
// - A malformed message, an over-long line or a truncated one: the client sends one `error`, closes, logs the
//   problem (naming the field or the byte count) and becomes non-live (`live` false, `onLost` listeners called).
//   The agent closing the socket has the same effect.
// Nothing here blocks: writes go to the socket buffer and are never awaited on the training path.

import { createConnection, type Socket } from 'node:net';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  CONTROL_ENV,
  CONTROL_PROTOCOL_VERSION,
  ControlProtocolError,
  LineSplitter,
  decodeAgentMessage,
  encodeControlMessage,
  type AgentMessage,
  type RoundMessage,
  type WorkerMessage,
} from '../common/control-protocol.js';
import { noopLogger, type Logger } from '../common/logger.js';
import { installStackDumper, stackScopeOf } from './js-stacks.js';

export interface ControlClientOptions {
  /** Socket path; default TENSILE_CONTROL. Unset or empty: a non-live client. */
  readonly path?: string;
  /** Default LOCAL_RANK, else 0. */
  readonly localRank?: number;
  /** Whether this worker declares live recovery (hello.live). Default true. */
  readonly live?: boolean;
  /** Whether a welcomed client installs the native stack dumper (js-stacks.ts) for the hang watchdog. Default true. */
  readonly stackDumper?: boolean;
  /** Bound on connect + hello → welcome. Default 5000 ms. */
  readonly connectTimeoutMs?: number;
  readonly logger?: Logger;
  /** Default process.env (TENSILE_CONTROL, LOCAL_RANK). */
  readonly env?: NodeJS.ProcessEnv;
}

export type ReadyInfo = Omit<Extract<WorkerMessage, { type: 'ready' }>, 'type'>;

export interface ControlClient {
  /** True while connected to an agent that welcomed this worker as live. */
  readonly live: boolean;
  /** Why the client is not (or no longer) live; null while live. */
  readonly reason: string | null;
  /** The agent's heartbeat interval (0 when not live). */
  readonly heartbeatIntervalMs: number;
  /** Reports progress; throttled to one message per heartbeatIntervalMs (trailing edge). Never blocks. */
  heartbeat(step: number, epoch?: number): void;
  /** Tells the agent this worker runs in `info.round`. */
  ready(info: ReadyInfo): void;
  /** Tells the agent a collective failed because peers' connections broke (it probes its peer agents at once). */
  peerLost(ranks?: readonly number[]): void;
  /** Called for every round message as it arrives (before nextRound sees it). Returns an unsubscribe function. */
  onRound(fn: (round: RoundMessage) => void): () => void;
  /** Called once when a live client stops being live (agent gone or protocol error). */
  onLost(fn: (reason: string) => void): () => void;
  /**
   * The newest round not yet taken, waiting up to `timeoutMs` for one. Resolves null on timeout or when the
   * client is (or becomes) non-live. Older undelivered rounds are dropped.
   */
  nextRound(timeoutMs: number): Promise<RoundMessage | null>;
  /** A round received but not yet taken by nextRound, without waiting (and without taking it). */
  peekRound(): RoundMessage | null;
  /** Closes the connection (idempotent). */
  close(): void;
}

/** Parses TENSILE_CONTROL etc. once; returns null (with the reason) when live recovery is off. */
function socketPath(opts: ControlClientOptions, env: NodeJS.ProcessEnv): string | null {
  const p = opts.path ?? env[CONTROL_ENV];
  return p === undefined || p.trim() === '' ? null : p;
}

class NonLiveClient implements ControlClient {
  readonly live = false;
  readonly heartbeatIntervalMs = 0;
  constructor(readonly reason: string) {}
  heartbeat(): void {}
  ready(): void {}
  peerLost(): void {}
  onRound(): () => void {
    return () => undefined;
  }
  onLost(): () => void {
    return () => undefined;
  }
  nextRound(): Promise<RoundMessage | null> {
    return Promise.resolve(null);
  }
  peekRound(): RoundMessage | null {
    return null;
  }
  close(): void {}
}

/** A client that is not live: for workers without an agent (or with live recovery off). */
export function nonLiveControl(reason: string): ControlClient {
  return new NonLiveClient(reason);
}

class LiveClient implements ControlClient {
  live = true;
  reason: string | null = null;
  heartbeatIntervalMs = 0;
  private readonly splitter = new LineSplitter();
  private readonly roundListeners = new Set<(r: RoundMessage) => void>();
  private readonly lostListeners = new Set<(reason: string) => void>();
  private pendingRound: RoundMessage | null = null;
  private roundWaiters: ((r: RoundMessage | null) => void)[] = [];
  private lastBeatMs = -Infinity;
  private beatTimer: NodeJS.Timeout | null = null;
  private pendingBeat: { step: number; epoch?: number } | null = null;
  private welcomed: ((err: Error | null) => void) | null = null;

  constructor(
    private readonly socket: Socket,
    private readonly logger: Logger,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.lose(`control socket error: ${err.message}`, false));
    socket.on('close', () => {
      const truncated = this.splitter.pendingBytes;
      this.lose(
        truncated > 0
          ? `the agent closed the control socket in the middle of a message (${truncated} bytes unterminated)`
          : 'the agent closed the control socket',
        false,
      );
    });
  }

  /** Resolves when `welcome` arrives; rejects on a bad first message, a close, or the timeout. */
  waitWelcome(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.welcomed = null;
        reject(new ControlProtocolError(`no welcome from the agent within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.welcomed = (err) => {
        clearTimeout(timer);
        this.welcomed = null;
        if (err) reject(err);
        else resolve();
      };
    });
  }

  send(msg: WorkerMessage): void {
    if (!this.live) return;
    try {
      this.socket.write(encodeControlMessage(msg));
    } catch (err) {
      this.lose(`cannot send ${msg.type}: ${(err as Error).message}`, false);
    }
  }

  private onData(chunk: Buffer): void {
    let lines: string[];
    try {
      lines = this.splitter.push(chunk);
    } catch (err) {
      this.lose((err as Error).message, true);
      return;
    }
    for (const line of lines) {
      if (!this.live) return;
      let msg: AgentMessage;
      try {
        msg = decodeAgentMessage(line);
      } catch (err) {
        this.lose((err as Error).message, true);
        return;
      }
      this.handle(msg);
    }
  }

  private handle(msg: AgentMessage): void {
    if (this.welcomed !== null) {
      if (msg.type === 'welcome') {
        this.heartbeatIntervalMs = msg.heartbeatIntervalMs;
        this.welcomed(null);
      } else {
        this.lose(`agent message: expected welcome first, got ${msg.type}`, true);
      }
      return;
    }
    switch (msg.type) {
      case 'welcome':
        this.lose('agent message: a second welcome', true);
        return;
      case 'round':
        for (const fn of this.roundListeners) fn(msg);
        if (this.roundWaiters.length > 0) {
          const waiters = this.roundWaiters;
          this.roundWaiters = [];
          for (const w of waiters) w(msg);
        } else if (this.pendingRound === null || msg.round >= this.pendingRound.round) {
          this.pendingRound = msg;
        }
        return;
      case 'dump':
        this.dump(msg.dir);
        return;
      case 'error':
        this.lose(`the agent reported a protocol error: ${msg.message}`, false);
        return;
    }
  }

  /** Writes a diagnostic report into `dir` (synchronously: a stuck worker is about to be killed). */
  private dump(dir: string): void {
    try {
      mkdirSync(dir, { recursive: true });
      const file = join(dir, `report-pid${process.pid}-${Date.now()}.json`);
      process.report.writeReport(file);
      this.logger.warn({ file }, 'control: diagnostic report written on the agent’s request');
    } catch (err) {
      this.logger.error({ dir, err: (err as Error).message }, 'control: cannot write the diagnostic report');
    }
  }

  /** Becomes non-live once: optionally tells the agent why, closes, and wakes waiters. */
  lose(reason: string, tellAgent: boolean): void {
    if (!this.live) return;
    if (tellAgent) {
      try {
        this.socket.write(encodeControlMessage({ type: 'error', message: reason.slice(0, 1000) }));
      } catch {
        // The reason is logged below either way.
      }
      this.logger.error({ reason }, 'control: bad message from the agent; continuing without live recovery');
    } else {
      this.logger.warn({ reason }, 'control: connection to the agent lost; continuing without live recovery');
    }
    this.live = false;
    this.reason = reason;
    if (this.beatTimer !== null) clearTimeout(this.beatTimer);
    this.beatTimer = null;
    this.socket.end();
    this.socket.destroySoon();
    this.welcomed?.(new ControlProtocolError(reason));
    const waiters = this.roundWaiters;
    this.roundWaiters = [];
    for (const w of waiters) w(null);
    for (const fn of this.lostListeners) fn(reason);
  }

  heartbeat(step: number, epoch?: number): void {
    if (!this.live) return;
    const now = performance.now();
    if (now - this.lastBeatMs >= this.heartbeatIntervalMs) {
      this.lastBeatMs = now;
      this.pendingBeat = null;
      this.send(epoch === undefined ? { type: 'heartbeat', step } : { type: 'heartbeat', step, epoch });
      return;
    }
    this.pendingBeat = epoch === undefined ? { step } : { step, epoch };
    if (this.beatTimer === null) {
      this.beatTimer = setTimeout(
        () => {
          this.beatTimer = null;
          const b = this.pendingBeat;
          if (b !== null) this.heartbeat(b.step, b.epoch);
        },
        Math.max(1, this.heartbeatIntervalMs - (now - this.lastBeatMs)),
      );
      this.beatTimer.unref();
    }
  }

  ready(info: ReadyInfo): void {
    this.send({ type: 'ready', ...info });
  }

  peerLost(ranks?: readonly number[]): void {
    this.send(ranks === undefined ? { type: 'peer-lost' } : { type: 'peer-lost', ranks: [...ranks] });
  }

  onRound(fn: (round: RoundMessage) => void): () => void {
    this.roundListeners.add(fn);
    return () => this.roundListeners.delete(fn);
  }

  onLost(fn: (reason: string) => void): () => void {
    this.lostListeners.add(fn);
    return () => this.lostListeners.delete(fn);
  }

  peekRound(): RoundMessage | null {
    return this.pendingRound;
  }

  nextRound(timeoutMs: number): Promise<RoundMessage | null> {
    if (this.pendingRound !== null) {
      const r = this.pendingRound;
      this.pendingRound = null;
      return Promise.resolve(r);
    }
    if (!this.live) return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.roundWaiters = this.roundWaiters.filter((w) => w !== waiter);
        resolve(null);
      }, timeoutMs);
      const waiter = (r: RoundMessage | null): void => {
        clearTimeout(timer);
        resolve(r);
      };
      this.roundWaiters.push(waiter);
    });
  }

  close(): void {
    if (!this.live) return;
    this.live = false;
    this.reason = 'closed by the worker';
    if (this.beatTimer !== null) clearTimeout(this.beatTimer);
    this.beatTimer = null;
    this.socket.end();
    const waiters = this.roundWaiters;
    this.roundWaiters = [];
    for (const w of waiters) w(null);
  }
}

/**
 * Connects to the agent's control socket and completes hello → welcome. Never rejects: on any failure (no
 * TENSILE_CONTROL, socket unreachable, no or bad welcome within connectTimeoutMs) it returns a non-live client whose
 * `reason` says what went wrong (also logged as a warning when a socket was configured).
 */
export async function connectControl(opts: ControlClientOptions = {}): Promise<ControlClient> {
  const env = opts.env ?? process.env;
  const logger = opts.logger ?? noopLogger;
  const path = socketPath(opts, env);
  if (path === null) return new NonLiveClient(`${CONTROL_ENV} is not set`);
  const localRank = opts.localRank ?? Number(env.LOCAL_RANK ?? 0);
  if (!Number.isInteger(localRank) || localRank < 0) {
    const reason = `LOCAL_RANK ${JSON.stringify(env.LOCAL_RANK)}: expected an integer ≥ 0`;
    logger.warn({ reason }, 'control: not connecting');
    return new NonLiveClient(reason);
  }
  const timeoutMs = opts.connectTimeoutMs ?? 5000;
  const socket = createConnection({ path });
  const client = new LiveClient(socket, logger);
  try {
    const welcome = client.waitWelcome(timeoutMs);
    welcome.catch(() => undefined); // awaited below; a failed connect must not leave it unhandled
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
      socket.once('close', () => reject(new Error('closed before connecting')));
    });
    client.send({
      type: 'hello',
      version: CONTROL_PROTOCOL_VERSION,
      localRank,
      pid: process.pid,
      live: opts.live ?? true,
    });
    await welcome;
  } catch (err) {
    const reason = `control socket ${path}: ${(err as Error).message}`;
    client.lose(reason, false);
    socket.destroy();
    return new NonLiveClient(reason);
  }
  if (opts.stackDumper ?? true) {
    const dumper = installStackDumper({ scope: stackScopeOf(path) });
    if (dumper.ok) logger.debug({ socket: `@${dumper.socket}` }, 'control: JavaScript stack dumper listening');
    else
      logger.info(
        { reason: dumper.reason },
        'control: no JavaScript stack dumper; a busy loop will leave no stacks when the watchdog kills this worker',
      );
  }
  return client;
}
