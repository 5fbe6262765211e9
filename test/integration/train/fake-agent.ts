// A test harness that plays the agent's side of live recovery on one node: it serves the control socket
// (common/control-protocol.ts), spawns workers with the torchrun environment of a round, kills or stops them, starts
// replacements and announces rounds, so the worker side can be tested without the real agent.
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import {
  LineSplitter,
  decodeWorkerMessage,
  encodeControlMessage,
  type RoundMessage,
  type WorkerMessage,
} from '../../../common/control-protocol.js';
import { freePort } from '../../../common/free-port.js';
import { spawnTs, tempDir, type Proc } from './helpers.js';

type Ready = Extract<WorkerMessage, { type: 'ready' }>;

export interface Worker {
  readonly rank: number;
  readonly proc: Proc;
  readonly pid: number;
  socket: Socket | null;
  /** A round announced before the worker connected: sent right after its welcome (as the agent does). */
  pendingRound: RoundMessage | null;
  readonly messages: WorkerMessage[];
  lastStep: number;
}

export interface RoundPlan {
  readonly round: number;
  readonly worldSize: number;
  readonly masterPort: number;
}

export class FakeAgent {
  readonly workers = new Map<number, Worker>();
  private readonly byPid = new Map<number, Worker>();
  private readonly server: Server;
  readonly socketPath: string;
  private changed: (() => void)[] = [];

  private constructor(
    private readonly t: TestContext,
    dir: string,
    private readonly script: string,
    private readonly args: readonly string[],
    private readonly env: NodeJS.ProcessEnv,
    private readonly heartbeatIntervalMs: number,
  ) {
    this.socketPath = join(dir, 'control.sock');
    this.server = createServer((sock) => this.accept(sock));
  }

  static async start(
    t: TestContext,
    script: string,
    args: readonly string[],
    env: NodeJS.ProcessEnv = {},
    heartbeatIntervalMs = 1,
  ): Promise<FakeAgent> {
    const agent = new FakeAgent(t, tempDir(t, 'fake-agent'), script, args, env, heartbeatIntervalMs);
    await new Promise<void>((resolve) => agent.server.listen(agent.socketPath, resolve));
    t.after(() => {
      for (const w of agent.workers.values()) w.socket?.destroy();
      agent.server.close();
    });
    return agent;
  }

  private notify(): void {
    const fns = this.changed;
    this.changed = [];
    for (const f of fns) f();
  }

  private accept(sock: Socket): void {
    const splitter = new LineSplitter();
    let worker: Worker | null = null;
    sock.on('error', () => undefined);
    sock.on('data', (d) => {
      for (const line of splitter.push(d)) {
        const msg = decodeWorkerMessage(line);
        if (msg.type === 'hello') {
          worker = this.byPid.get(msg.pid) ?? null;
          if (worker === null) throw new Error(`fake agent: hello from unknown pid ${msg.pid}`);
          worker.socket = sock;
          sock.write(
            encodeControlMessage({ type: 'welcome', version: 1, heartbeatIntervalMs: this.heartbeatIntervalMs }),
          );
          if (worker.pendingRound !== null) sock.write(encodeControlMessage(worker.pendingRound));
          worker.pendingRound = null;
        }
        if (worker === null) continue;
        worker.messages.push(msg);
        if (msg.type === 'heartbeat') worker.lastStep = Math.max(worker.lastStep, msg.step);
        if (msg.type === 'ready') worker.lastStep = Math.max(worker.lastStep, msg.step);
      }
      this.notify();
    });
  }

  /** Starts the worker of `rank` with the environment of `plan` (as the agent spawns one). */
  spawn(rank: number, plan: RoundPlan): Worker {
    const proc = spawnTs(this.t, this.script, this.args, {
      ...this.env,
      RANK: String(rank),
      LOCAL_RANK: String(rank),
      WORLD_SIZE: String(plan.worldSize),
      LOCAL_WORLD_SIZE: String(plan.worldSize),
      GROUP_RANK: '0',
      GROUP_WORLD_SIZE: '1',
      MASTER_ADDR: '127.0.0.1',
      MASTER_PORT: String(plan.masterPort),
      TENSILE_ROUND: String(plan.round),
      TORCHELASTIC_RESTART_COUNT: '0',
      TENSILE_CONTROL: this.socketPath,
      TENSILE_RECOVERY: 'live',
      OMP_NUM_THREADS: '1',
    });
    const w: Worker = {
      rank,
      proc,
      pid: proc.child.pid!,
      socket: null,
      pendingRound: null,
      messages: [],
      lastStep: 0,
    };
    this.workers.set(rank, w);
    this.byPid.set(w.pid, w);
    void proc.exited.then(() => this.notify());
    return w;
  }

  /** Announces `plan` to a running worker that keeps (or takes) `rank`. */
  announce(w: Worker, plan: RoundPlan, rank = w.rank): void {
    const msg: RoundMessage = {
      type: 'round',
      round: plan.round,
      rank,
      localRank: rank,
      worldSize: plan.worldSize,
      localWorldSize: plan.worldSize,
      groupRank: 0,
      groupWorldSize: 1,
      masterAddr: '127.0.0.1',
      masterPort: plan.masterPort,
      restartCount: 0,
    };
    if (w.socket === null) w.pendingRound = msg;
    else w.socket.write(encodeControlMessage(msg));
  }

  async nextPlan(round: number, worldSize: number): Promise<RoundPlan> {
    return { round, worldSize, masterPort: await freePort() };
  }

  /** Waits (bounded) until `pred` holds, re-checking on every message and exit; fails with workers' output. */
  async until(pred: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`fake agent: timed out after ${timeoutMs} ms waiting for ${what}\n${this.dump()}`);
      for (const w of this.workers.values()) {
        if (w.proc.child.exitCode !== null && w.proc.child.exitCode !== 0) {
          throw new Error(
            `fake agent: rank ${w.rank} exited ${w.proc.child.exitCode} while waiting for ${what}\n${this.dump()}`,
          );
        }
      }
      await new Promise<void>((r) => {
        const timer = setTimeout(r, Math.min(left, 200));
        this.changed.push(() => {
          clearTimeout(timer);
          r();
        });
      });
    }
  }

  /** Every worker's `ready` for `round`, once all have sent it. */
  async readyFor(round: number, ranks: readonly number[]): Promise<Map<number, Ready>> {
    const find = (w: Worker): Ready | undefined =>
      w.messages.find((m): m is Ready => m.type === 'ready' && m.round === round);
    await this.until(
      () => ranks.every((r) => find(this.workers.get(r)!) !== undefined),
      `ready for round ${round} from ranks ${ranks.join(', ')}`,
    );
    return new Map(ranks.map((r) => [r, find(this.workers.get(r)!)!]));
  }

  highestStep(): number {
    return Math.max(0, ...[...this.workers.values()].map((w) => w.lastStep));
  }

  dump(): string {
    return [...this.workers.values()]
      .map(
        (w) =>
          `--- rank ${w.rank} (pid ${w.pid}, exit ${w.proc.child.exitCode ?? w.proc.child.signalCode})\n${w.proc.output().slice(-3000)}`,
      )
      .join('\n');
  }
}
