// Helpers for the training tests: free loopback ports, worker groups spawned with the torchrun worker environment,
// and cleanup that kills every child's process tree even when a test fails.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { freePort } from '../../../common/free-port.js';
import { withTimeout } from '../../../common/timeout.js';

export const ROOT = new URL('../../../', import.meta.url).pathname;

export function tempDir(t: TestContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `tensile-${prefix}-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface Proc {
  readonly child: ChildProcess;
  readonly exited: Promise<Exit>;
  output(): string;
}

function killTree(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL'); // the child leads its own process group (detached)
  } catch {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Spawns a command in its own process group; `t.after` kills the whole group. */
export function spawnProc(
  t: TestContext,
  cmd: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  opts: { cwd?: string } = {},
): Proc {
  const child = spawn(cmd, args, {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<Exit>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  t.after(() => killTree(child));
  return { child, exited, output: () => stdout + stderr };
}

/** A node process running a TypeScript file through tsx. */
export function spawnTs(t: TestContext, script: string, args: readonly string[], env: NodeJS.ProcessEnv): Proc {
  return spawnProc(t, process.execPath, ['--import', 'tsx', script, ...args], env);
}

/** Spawns `worldSize` workers of one group at once, with the torchrun worker environment (as the launcher does). */
export async function spawnGroup(
  t: TestContext,
  script: string,
  args: readonly string[],
  worldSize: number,
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<Proc[]> {
  const port = await freePort();
  return Array.from({ length: worldSize }, (_, rank) =>
    spawnTs(t, script, args, {
      RANK: String(rank),
      LOCAL_RANK: String(rank),
      WORLD_SIZE: String(worldSize),
      LOCAL_WORLD_SIZE: String(worldSize),
      MASTER_ADDR: '127.0.0.1',
      MASTER_PORT: String(port),
      OMP_NUM_THREADS: '1',
      ...extraEnv,
    }),
  );
}

/** Waits for a promise, failing with `what` after `ms`. */
export function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  return withTimeout(p, ms, what, () => new Error(`timed out after ${ms} ms waiting for ${what}`));
}

/** Waits until every process exits; throws with their output when one fails. */
export async function allSucceed(procs: readonly Proc[], ms: number, what: string): Promise<Exit[]> {
  const exits = await within(ms, what, Promise.all(procs.map((p) => p.exited)));
  exits.forEach((e, i) => {
    if (e.code !== 0) {
      throw new Error(
        `${what}: process ${i} exited ${e.code ?? e.signal}\n--- stdout\n${e.stdout}\n--- stderr\n${e.stderr}`,
      );
    }
  });
  return exits;
}
