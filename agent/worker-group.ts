// One attempt's local workers: spawn, route output, observe exits as events, stop with SIGTERM → grace → SIGKILL.
//
// Each worker is a session leader (detached), so signals go to its whole process group and grandchildren die with
// it. Where util-linux's setpriv exists, workers also get a parent-death signal; the Reaper covers the rest.

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import type { WorkerExit } from './api.js';
import type { ReaperHandle } from './reaper.js';

export interface WorkerSpec {
  readonly localRank: number;
  readonly globalRank: number;
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /** `attempt_N/<local_rank>` directory for this worker's files, or null for none. */
  readonly logDir: string | null;
  readonly fileStdout: boolean;
  readonly fileStderr: boolean;
  readonly consoleStdout: boolean;
  readonly consoleStderr: boolean;
  readonly errorFile: string | null;
}

export type GroupOutcome =
  { readonly kind: 'succeeded' } | { readonly kind: 'failed'; readonly failures: readonly WorkerExit[] };

export interface ConsoleSink {
  line(stream: 'stdout' | 'stderr', prefix: string, text: string): void;
}

const STDERR_TAIL_LINES = 20;
const SETPRIV = '/usr/bin/setpriv';

/**
 * What the agent needs of one attempt's workers: the seam that lets the state machine run against a fake in unit
 * tests. `WorkerGroup` is the real one.
 */
export interface WorkerGroupHandle {
  /** Spawns every worker; spawn errors become worker failures, never exceptions. */
  start(): void;
  /** Resolves when every worker exited 0, or at the first failure (other workers may still run). */
  readonly outcome: Promise<GroupOutcome>;
  readonly pids: number[];
  readonly runningCount: number;
  /** Every exit observed so far, in order of observation. */
  readonly observedExits: readonly WorkerExit[];
  /** Sends a signal to every live worker's process group. */
  signal(sig: NodeJS.Signals): void;
  /** `sig` (default SIGTERM), SIGKILL after `graceMs`; resolves once every worker is reaped. Never rejects. */
  stop(graceMs: number, sig?: NodeJS.Signals): Promise<void>;
  /** Resolves once every worker has exited. */
  waitAll(): Promise<void>;
  /**
   * Live recovery: starts a new process for `spec.localRank`, whose previous process has exited. When the group's
   * outcome had settled as failed, `outcome` becomes a fresh promise for the group as it is now.
   */
  respawn(spec: WorkerSpec): void;
  /** Sends a signal to one worker's process group (no-op when it has exited). */
  signalWorker(localRank: number, sig: NodeJS.Signals): void;
  /** The pid of the local rank's current process, or null when it has exited. */
  pidOf(localRank: number): number | null;
  /** From now until it exits, copies the local rank's stderr lines into `path` too (stack dumps). */
  captureStderr(localRank: number, path: string): void;
  /**
   * Warm standby (optional: fakes may lack it): spawns a spare process for `slot`. It is no rank: its exit is no
   * worker exit (it goes to `onStandbyExit`), it is not counted as running, and it is killed by `stop()` and when the
   * group succeeds. A no-op once the group is stopping or has succeeded.
   */
  startStandby?(slot: number, spec: WorkerSpec, onStandbyExit: (slot: number, exit: WorkerExit) => void): void;
  /** The pid of the standby in `slot`, or null when there is none running. */
  standbyPid?(slot: number): number | null;
  /**
   * The standby in `slot` becomes `spec.localRank`'s current process (whose previous process has exited), like
   * respawn but without starting anything. Returns its pid, or null when that standby is not running.
   */
  promote?(slot: number, spec: WorkerSpec): number | null;
}

/** Builds the group of one attempt (the agent's default is `new WorkerGroup(...)`). */
export type WorkerGroupFactory = (
  specs: readonly WorkerSpec[],
  host: string,
  reaper: ReaperHandle | null,
  sink: ConsoleSink,
  onExit: (exit: WorkerExit) => void,
) => WorkerGroupHandle;

interface Running {
  /** Mutable: a promoted standby takes the spec of the rank it becomes. */
  spec: WorkerSpec;
  /** The standby slot while this process is a warm standby, else null. */
  standbySlot: number | null;
  onStandbyExit: ((slot: number, exit: WorkerExit) => void) | null;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly stderrTail: string[];
  readonly files: WriteStream[];
  capture: WriteStream | null;
  exited: boolean;
  exitPromise: Promise<void>;
}

export class WorkerGroup implements WorkerGroupHandle {
  /** Every process this group started, replaced ones included. */
  private readonly workers: Running[] = [];
  /** The current process of each local rank. */
  private readonly current = new Map<number, Running>();
  /** Warm standbys by slot. */
  private readonly standbys = new Map<number, Running>();
  private readonly exits: WorkerExit[] = [];
  private stopping = false;
  private succeeded = false;
  private settle!: (outcome: GroupOutcome) => void;
  private settled = false;
  private outcomePromise: Promise<GroupOutcome>;
  private readonly usePdeathsig = existsSync(SETPRIV);

  constructor(
    private readonly specs: readonly WorkerSpec[],
    private readonly host: string,
    private readonly reaper: ReaperHandle | null,
    private readonly sink: ConsoleSink,
    private readonly onExit: (exit: WorkerExit) => void = () => {},
  ) {
    this.outcomePromise = new Promise((resolve) => (this.settle = resolve));
  }

  /** Resolves when every current worker exited 0, or at the first failure (other workers may still run). */
  get outcome(): Promise<GroupOutcome> {
    return this.outcomePromise;
  }

  /** Spawns every worker. Spawn errors (missing interpreter, EACCES) become worker failures, not exceptions. */
  start(): void {
    for (const spec of this.specs) this.spawnOne(spec, null, null);
  }

  respawn(spec: WorkerSpec): void {
    this.reopen(spec.localRank);
    this.spawnOne(spec, null, null);
    this.reevaluate();
  }

  startStandby(slot: number, spec: WorkerSpec, onStandbyExit: (slot: number, exit: WorkerExit) => void): void {
    if (this.stopping || (this.settled && this.succeeded)) return;
    const prev = this.standbys.get(slot);
    if (prev && !prev.exited) throw new Error(`standby slot ${slot} is still running (pid ${prev.pid})`);
    this.spawnOne(spec, slot, onStandbyExit);
  }

  standbyPid(slot: number): number | null {
    const w = this.standbys.get(slot);
    return w && !w.exited && w.pid > 0 ? w.pid : null;
  }

  promote(slot: number, spec: WorkerSpec): number | null {
    const w = this.standbys.get(slot);
    if (!w || w.exited || w.pid <= 0) return null;
    this.reopen(spec.localRank);
    this.standbys.delete(slot);
    // The process keeps its own log dir and error file (its environment names them).
    w.spec = { ...spec, logDir: w.spec.logDir, errorFile: w.spec.errorFile };
    w.standbySlot = null;
    w.onStandbyExit = null;
    this.current.set(spec.localRank, w);
    this.reevaluate();
    return w.pid;
  }

  /** Before a rank gets a new process: its previous one must have exited; a settled failure reopens the outcome. */
  private reopen(localRank: number): void {
    const prev = this.current.get(localRank);
    if (prev && !prev.exited) throw new Error(`local rank ${localRank} is still running (pid ${prev.pid})`);
    if (this.settled) {
      this.settled = false;
      this.outcomePromise = new Promise((resolve) => (this.settle = resolve));
    }
  }

  private reevaluate(): void {
    // Another rank may have failed meanwhile: the fresh outcome must say so at once.
    for (const w of this.current.values()) {
      const e = w.exited ? this.exits.findLast((x) => x.pid === w.pid) : undefined;
      if (e) this.evaluate(e);
    }
  }

  signalWorker(localRank: number, sig: NodeJS.Signals): void {
    const w = this.current.get(localRank);
    if (!w || w.exited || w.pid <= 0) return;
    try {
      process.kill(-w.pid, sig);
    } catch {
      // Already gone.
    }
  }

  pidOf(localRank: number): number | null {
    const w = this.current.get(localRank);
    return w && !w.exited && w.pid > 0 ? w.pid : null;
  }

  captureStderr(localRank: number, path: string): void {
    const w = this.current.get(localRank);
    if (!w || w.exited || w.capture) return;
    w.capture = createWriteStream(path);
    w.capture.on('error', () => {});
  }

  private spawnOne(
    spec: WorkerSpec,
    standbySlot: number | null,
    onStandbyExit: ((slot: number, exit: WorkerExit) => void) | null,
  ): void {
    {
      const usePdeathsig = this.usePdeathsig;
      if (spec.logDir) mkdirSync(spec.logDir, { recursive: true });
      const [cmd, ...args] = spec.argv as [string, ...string[]];
      const file = usePdeathsig ? SETPRIV : cmd;
      const argv = usePdeathsig ? ['--pdeathsig', 'KILL', '--', cmd, ...args] : args;
      const child = spawn(file, argv, {
        env: spec.env,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const running: Running = {
        spec,
        standbySlot,
        onStandbyExit,
        child,
        pid: child.pid ?? -1,
        stderrTail: [],
        files: [],
        capture: null,
        exited: false,
        exitPromise: Promise.resolve(),
      };
      if (child.pid !== undefined) this.reaper?.add(child.pid);
      this.routeOutput(running);
      running.exitPromise = new Promise<void>((resolve) => {
        let spawnError: Error | null = null;
        child.on('error', (err) => {
          spawnError = err;
          if (child.pid === undefined) {
            this.recordExit(running, null, null, `cannot start '${cmd}': ${err.message}`);
            resolve();
          }
        });
        // 'close' (not 'exit'): all output has been read, so the stderr tail is complete.
        child.on('close', (code, signal) => {
          // Log files are flushed before the exit counts, so a summary or a test never reads a short file.
          const flushed = running.files.map(
            (f) =>
              new Promise<void>((done) => (f.writableFinished || f.destroyed ? done() : f.once('close', () => done()))),
          );
          void Promise.all(flushed).then(() => {
            this.recordExit(running, code, signal, spawnError ? `cannot start '${cmd}': ${spawnError.message}` : null);
            resolve();
          });
        });
      });
      this.workers.push(running);
      if (standbySlot === null) this.current.set(spec.localRank, running);
      else this.standbys.set(standbySlot, running);
    }
  }

  get pids(): number[] {
    return [...this.current.values()].map((w) => w.pid).filter((p) => p > 0);
  }

  get runningCount(): number {
    return this.workers.filter((w) => !w.exited && w.standbySlot === null).length;
  }

  /** Sends a signal to every live worker's process group. */
  signal(sig: NodeJS.Signals): void {
    for (const w of this.workers) {
      if (w.exited || w.pid <= 0) continue;
      try {
        process.kill(-w.pid, sig);
      } catch {
        // Already gone: its 'close' event is on the way.
      }
    }
  }

  /**
   * Stops the group: `sig` (default SIGTERM) to every worker, then SIGKILL after `graceMs`, and resolves once every
   * worker has been reaped. Never rejects; bounded by graceMs plus the time the kernel takes to deliver SIGKILL.
   */
  async stop(graceMs: number, sig: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    this.stopping = true;
    this.signal(sig);
    const all = Promise.all(this.workers.map((w) => w.exitPromise));
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'grace'>((resolve) => {
      timer = setTimeout(() => resolve('grace'), graceMs);
    });
    const first = await Promise.race([all.then(() => 'done' as const), graceOver]);
    clearTimeout(timer);
    if (first === 'grace') {
      this.signal('SIGKILL');
      await all;
    }
    // Kill stragglers left in the groups (a worker's children that outlived it).
    for (const w of this.workers) {
      try {
        process.kill(-w.pid, 'SIGKILL');
      } catch {
        // No such group: good.
      }
    }
  }

  /** Waits until every worker has exited (used after success or after stop). */
  async waitAll(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.exitPromise));
  }

  private routeOutput(w: Running): void {
    const { spec } = w;
    const prefix = `[${this.host}:${spec.globalRank}]`;
    const streams: Array<['stdout' | 'stderr', NodeJS.ReadableStream | null, boolean, boolean]> = [
      ['stdout', w.child.stdout, spec.fileStdout, spec.consoleStdout],
      ['stderr', w.child.stderr, spec.fileStderr, spec.consoleStderr],
    ];
    for (const [name, stream, toFile, toConsole] of streams) {
      if (!stream) continue;
      let file: WriteStream | null = null;
      if (toFile && spec.logDir) {
        file = createWriteStream(join(spec.logDir, `${name}.log`));
        file.on('error', () => {});
        w.files.push(file);
      }
      let partial = '';
      stream.on('data', (chunk: Buffer) => {
        file?.write(chunk);
        if (!toConsole && name !== 'stderr') return;
        const text = partial + chunk.toString('utf8');
        const lines = text.split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) this.emitLine(w, name, prefix, line, toConsole);
      });
      stream.on('end', () => {
        if (partial !== '') this.emitLine(w, name, prefix, partial, toConsole);
        partial = '';
        file?.end();
      });
    }
  }

  private emitLine(w: Running, name: 'stdout' | 'stderr', prefix: string, line: string, toConsole: boolean): void {
    if (name === 'stderr') {
      w.capture?.write(`${line}\n`);
      w.stderrTail.push(line);
      if (w.stderrTail.length > STDERR_TAIL_LINES) w.stderrTail.shift();
    }
    if (toConsole) this.sink.line(name, prefix, line);
  }

  private recordExit(w: Running, code: number | null, signal: NodeJS.Signals | null, spawnError: string | null): void {
    if (w.exited) return;
    w.exited = true;
    w.capture?.end();
    if (w.pid > 0) this.reaper?.remove(w.pid);
    const fromFile = readErrorFile(w.spec.errorFile);
    const standbyExit = w.standbySlot;
    const exit: WorkerExit = {
      localRank: w.spec.localRank,
      globalRank: w.spec.globalRank,
      pid: w.pid,
      exitCode: spawnError ? 127 : code,
      signal,
      timestampMs: fromFile?.timestampMs ?? Date.now(),
      host: this.host,
      errorFile: fromFile ? w.spec.errorFile : null,
      errorMessage: spawnError ?? fromFile?.message ?? null,
      stderrTail: [...w.stderrTail],
      stoppedByAgent: this.stopping,
    };
    if (standbyExit !== null) {
      // A standby is no rank: its end is no worker exit and never a failure of the group.
      if (this.standbys.get(standbyExit) === w) this.standbys.delete(standbyExit);
      if (!this.stopping && !this.succeeded) w.onStandbyExit?.(standbyExit, exit);
      return;
    }
    this.exits.push(exit);
    this.onExit(exit);
    this.evaluate(exit);
  }

  /** SIGKILLs every standby (the group succeeded: nothing left to replace). */
  private killStandbys(): void {
    for (const w of this.standbys.values()) {
      if (w.exited || w.pid <= 0) continue;
      try {
        process.kill(-w.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }

  private evaluate(latest: WorkerExit): void {
    if (this.settled) return;
    const failed = latest.exitCode !== 0;
    if (failed && !latest.stoppedByAgent) {
      this.settled = true;
      this.settle({ kind: 'failed', failures: [latest] });
      return;
    }
    const currentExits = [...this.current.values()].map((w) =>
      w.exited ? this.exits.findLast((e) => e.pid === w.pid) : undefined,
    );
    if (currentExits.every((e) => e !== undefined && e.exitCode === 0)) {
      this.settled = true;
      this.succeeded = true;
      this.killStandbys();
      this.settle({ kind: 'succeeded' });
    }
  }

  /** Every exit observed so far, in order of observation. */
  get observedExits(): readonly WorkerExit[] {
    return this.exits;
  }
}

/** Reads a TORCHELASTIC_ERROR_FILE in PyTorch's format (or a plain {"message": "..."}). */
export function readErrorFile(path: string | null): { message: string; timestampMs: number | null } | null {
  if (!path || !existsSync(path)) return null;
  try {
    const raw = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    const outer = (raw as { message?: unknown }).message;
    let message: string;
    let ts: number | null = null;
    if (typeof outer === 'string') {
      message = outer;
    } else if (outer && typeof outer === 'object') {
      const inner = outer as { message?: unknown; extraInfo?: { timestamp?: unknown; py_callstack?: unknown } };
      message = typeof inner.message === 'string' ? inner.message : JSON.stringify(inner);
      const t = Number(inner.extraInfo?.timestamp);
      if (Number.isFinite(t) && t > 0) ts = t < 1e12 ? t * 1000 : t;
    } else {
      message = JSON.stringify(raw);
    }
    return { message, timestampMs: ts };
  } catch (err) {
    return { message: `unreadable error file ${path}: ${(err as Error).message}`, timestampMs: null };
  }
}
