// Spawns `worldSize` worker processes on loopback and collects their JSON stdout lines. Every child is killed by
// `kill()` (call it from t.after) and every wait is bounded.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../../common/free-port.js';
import { withTimeout } from '../../../common/timeout.js';

export const WORKER = fileURLToPath(new URL('./worker.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface Worker {
  readonly rank: number;
  readonly child: ChildProcess;
  readonly lines: Record<string, unknown>[];
  stderr: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first line satisfying `pred`, rejects after timeoutMs. */
  waitFor(pred: (l: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown>>;
}

export interface World {
  readonly workers: Worker[];
  kill(): void;
}

/** `rankEnv` adds variables per rank (e.g. TENSILE_HOST_ID to simulate several hosts on loopback). */
export async function spawnWorld(
  worldSize: number,
  mode: string,
  env: Record<string, string> = {},
  rankEnv: (rank: number) => Record<string, string> = () => ({}),
): Promise<World> {
  const port = await freePort();
  // The test runner marks its own children; our workers are plain programs, not test files.
  const baseEnv = { ...process.env };
  delete baseEnv.NODE_TEST_CONTEXT;
  const workers: Worker[] = [];
  for (let rank = 0; rank < worldSize; rank++) {
    const child = spawn(process.execPath, ['--import', 'tsx', WORKER, mode], {
      env: {
        ...baseEnv,
        RANK: String(rank),
        WORLD_SIZE: String(worldSize),
        LOCAL_RANK: String(rank),
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: String(port),
        ...env,
        ...rankEnv(rank),
      },
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: Record<string, unknown>[] = [];
    const listeners = new Set<() => void>();
    let buf = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          lines.push({ raw: line });
        }
        for (const l of listeners) l();
      }
    });
    const w: Worker = {
      rank,
      child,
      lines,
      stderr: '',
      exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
      waitFor: (pred, timeoutMs) =>
        new Promise((resolve, reject) => {
          const check = (): void => {
            const hit = lines.find(pred);
            if (hit) {
              clearTimeout(timer);
              listeners.delete(check);
              resolve(hit);
            }
          };
          const timer = setTimeout(() => {
            listeners.delete(check);
            reject(
              new Error(
                `rank ${rank}: no matching line within ${timeoutMs} ms; lines ${JSON.stringify(lines)}; stderr ${w.stderr.slice(-2000)}`,
              ),
            );
          }, timeoutMs);
          listeners.add(check);
          check();
        }),
    };
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      w.stderr += d;
    });
    workers.push(w);
  }
  return {
    workers,
    kill: () => {
      for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    },
  };
}

/** Waits for every worker to exit (bounded), returning exit codes. */
export async function allExited(world: World, timeoutMs: number): Promise<(number | null)[]> {
  const exits = Promise.all(world.workers.map((w) => w.exited));
  const r = await withTimeout(
    exits,
    timeoutMs,
    'workers',
    () => new Error(`workers did not exit within ${timeoutMs} ms`),
  );
  return r.map((x) => x.code);
}

/**
 * SIGKILLs rank 1 of a 3-rank world (in mode 'kill') and asserts the survivors' report: their op and a later one
 * rejected with PEER_LOST naming rank 1, then each exits with code 0 (no dangling handles).
 */
export async function killRank1ExpectPeerLost(world: World): Promise<void> {
  world.workers[1]!.child.kill('SIGKILL');
  const survivors = [world.workers[0]!, world.workers[2]!];
  const lines = await Promise.all(survivors.map((w) => w.waitFor((l) => 'code' in l || 'fatal' in l, 30_000)));
  for (const line of lines) {
    assert.equal(line.code, 'PEER_LOST', JSON.stringify(line));
    assert.equal(line.peerRank, 1, JSON.stringify(line));
    assert.match(String(line.message), /rank 1/);
    assert.equal(line.laterCode, 'PEER_LOST', 'a later op rejects at once too');
  }
  const codes = await allExited(world, 20_000);
  assert.deepEqual([codes[0], codes[2]], [0, 0], 'survivors exit with code 0 and no dangling handles');
}

/**
 * Three workers in `mode` (op timeout 20 s, `rankEnv` per rank), every one on `plane` (asserted, `why`); once rank 1
 * runs its collectives `beforeKill` looks at the world, then rank 1 is SIGKILLed and the others must reject with
 * PEER_LOST naming it (`killRank1ExpectPeerLost`). The workers are killed when the test ends.
 */
export async function killRank1OnPlane(
  t: { after(fn: () => void): void },
  o: {
    mode: string;
    plane: 'shm' | 'net';
    why: string;
    rankEnv?: (rank: number) => Record<string, string>;
    beforeKill?: (world: World) => void;
  },
): Promise<void> {
  const world = await spawnWorld(3, o.mode, { TEST_OP_TIMEOUT_MS: '20000' }, o.rankEnv);
  t.after(() => world.kill());
  const planes = await Promise.all(
    world.workers.map((w) => w.waitFor((l) => 'dataPlane' in l || 'fatal' in l, 60_000)),
  );
  assert.deepEqual(
    planes.map((l) => l.dataPlane),
    [o.plane, o.plane, o.plane],
    o.why,
  );
  await world.workers[1]!.waitFor((l) => l.progress === true || 'fatal' in l, 60_000);
  o.beforeKill?.(world);
  await killRank1ExpectPeerLost(world);
}
