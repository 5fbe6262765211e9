// Runs the `tensile` CLI from source as a child process, for integration tests. Every child is killed (with its
// process group) when the test ends or its timeout passes. Also: the argv of `tensile run` on one node (`runArgv`)
// and per-file scratch directories removed when the file's tests end (`scratchDirs`).

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = fileURLToPath(new URL('../../agent/cli.ts', import.meta.url));

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface TensileProcess {
  readonly child: ChildProcess;
  readonly result: Promise<CliResult>;
  stdout(): string;
  stderr(): string;
  kill(sig?: NodeJS.Signals): void;
}

/** Starts `tensile <args>`; the returned result settles when it exits or is killed at `timeoutMs`. */
export function startTensile(
  args: readonly string[],
  opts: { env?: Record<string, string | undefined>; timeoutMs?: number; cwd?: string; wrap?: readonly string[] } = {},
): TensileProcess {
  // `wrap` runs the CLI under another command, e.g. ['ip', 'netns', 'exec', 'ns1'] (which execs, keeping the pid).
  const argv = [process.execPath, '--import', 'tsx', CLI, ...args];
  const [cmd, ...rest] = [...(opts.wrap ?? []), ...argv] as [string, ...string[]];
  const child = spawn(cmd, rest, {
    cwd: opts.cwd ?? REPO_ROOT,
    // NODE_TEST_CONTEXT would make a node:test-aware child report to this runner instead of printing.
    env: { ...process.env, NODE_TEST_CONTEXT: undefined, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const timer = setTimeout(() => killTree(child, 'SIGKILL'), opts.timeoutMs ?? 60_000);
  const result = new Promise<CliResult>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: out, stderr: err });
    });
  });
  return {
    child,
    result,
    stdout: () => out,
    stderr: () => err,
    kill: (sig = 'SIGTERM') => {
      try {
        child.kill(sig);
      } catch {
        // gone
      }
    },
  };
}

export function runTensile(
  args: readonly string[],
  opts: { env?: Record<string, string | undefined>; timeoutMs?: number; cwd?: string } = {},
): Promise<CliResult> {
  return startTensile(args, opts).result;
}

/** The flags of `tensile run` that the tests vary; each optional one is passed only when given. */
export interface RunFlags {
  readonly nproc: number;
  readonly standalone?: boolean;
  readonly maxRestarts?: number;
  readonly logDir?: string;
}

/**
 * `run [--standalone] --nproc-per-node N [--max-restarts M] [--log-dir D] ...rest`: the argv of `tensile run` on one
 * node; `rest` holds further flags, then the script and its arguments.
 */
export function runArgv(f: RunFlags, rest: readonly string[]): string[] {
  return [
    'run',
    ...(f.standalone ? ['--standalone'] : []),
    ...['--nproc-per-node', String(f.nproc)],
    ...(f.maxRestarts === undefined ? [] : ['--max-restarts', String(f.maxRestarts)]),
    ...(f.logDir === undefined ? [] : ['--log-dir', f.logDir]),
    ...rest,
  ];
}

/**
 * Scratch directories for one test file: each call of the returned function makes one, `tensile-<prefix>-…` under
 * the OS temp dir; all are removed when the file's tests end, even when they fail (`cleanup(dir)` runs first on each,
 * e.g. to kill processes whose pids the workers left there). Call it at the top level of the file.
 */
export function scratchDirs(prefix: string, cleanup?: (dir: string) => void): () => string {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) {
      try {
        cleanup?.(d);
      } finally {
        rmSync(d, { recursive: true, force: true });
      }
    }
  });
  return () => {
    const d = mkdtempSync(join(tmpdir(), `tensile-${prefix}-`));
    dirs.push(d);
    return d;
  };
}

export function killTree(child: ChildProcess, sig: NodeJS.Signals = 'SIGKILL'): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    try {
      child.kill(sig);
    } catch {
      // gone
    }
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Waits until `check` holds, polling every 50 ms; throws with `what` after `timeoutMs`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
