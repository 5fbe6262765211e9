// The orphan reaper: a tiny detached shell that holds the read end of a pipe from the agent. The agent tells it
// each worker process group it starts and ends; if the agent dies (even by SIGKILL) the pipe closes and the
// reaper SIGKILLs every group still listed, grandchildren included. A clean agent exit says `done` first.
//
// Why a shell and not a Node process: it costs about 1 MB instead of 40, and it needs no code of ours to load.

import { spawn, type ChildProcess } from 'node:child_process';

const SCRIPT = `
set -f
live=" "
while read -r cmd id; do
  case "$cmd" in
    add) live="$live$id " ;;
    del) live=$(printf '%s' "$live" | sed "s/ $id / /") ;;
    done) exit 0 ;;
  esac
done
for p in $live; do kill -9 "-$p" 2>/dev/null; done
`;

/** What the agent and its worker groups need of a reaper (the seam for unit tests). */
export interface ReaperHandle {
  add(pgid: number): void;
  remove(pgid: number): void;
  dispose(): void;
}

export class Reaper implements ReaperHandle {
  private readonly child: ChildProcess;
  private closed = false;

  constructor() {
    this.child = spawn('/bin/sh', ['-c', SCRIPT], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
    this.child.on('error', () => {
      this.closed = true;
    });
    this.child.stdin?.on('error', () => {
      this.closed = true;
    });
    this.child.unref();
    // The pipe must not keep the agent's event loop alive.
    (this.child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Registers a worker's process group (its pid, since workers are session leaders). */
  add(pgid: number): void {
    this.write(`add ${pgid}\n`);
  }

  /** Unregisters a group whose leader has been reaped, so a recycled pid is never killed. */
  remove(pgid: number): void {
    this.write(`del ${pgid}\n`);
  }

  /** Clean shutdown: the reaper exits without killing anything. */
  dispose(): void {
    this.write('done\n');
    this.closed = true;
    this.child.stdin?.end();
  }

  private write(line: string): void {
    if (this.closed || !this.child.stdin || this.child.stdin.destroyed) return;
    this.child.stdin.write(line);
  }
}
