// The directories of one `tensile run`: the run (log) directory and the default checkpoint directory, and what is
// kept of them at the end. Nothing the user asked for is deleted silently.

import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import type { RunOptions } from './api.js';

export interface RunDirs {
  /** --log-dir, or a private temporary directory when none was given. */
  readonly runDir: string;
  /** True when runDir is the temporary one this agent made (it removes it unless something worth keeping is in it). */
  readonly owned: boolean;
  readonly checkpointDir: string;
}

/** Makes the run directory (a temporary one without --log-dir) and names the checkpoint directory. */
export function prepareRunDirs(opts: Pick<RunOptions, 'logDir' | 'checkpointDir' | 'rdzvId'>): RunDirs {
  const owned = opts.logDir === null;
  const runDir = opts.logDir
    ? resolve(opts.logDir)
    : mkdtempSync(join(tmpdir(), `tensile-${opts.rdzvId.slice(0, 12)}-`));
  mkdirSync(runDir, { recursive: true });
  const checkpointDir = opts.checkpointDir ? resolve(opts.checkpointDir) : join(runDir, 'checkpoints');
  return { runDir, owned, checkpointDir };
}

/**
 * At the end of a run: a temporary run directory goes away after a successful run (or one that never started
 * workers), unless the workers wrote checkpoints into its default checkpoint directory: then only the per-attempt
 * folders go, and the returned line says where the checkpoints are. After a failure the logs are kept and named.
 * Returns the line to print last, or null.
 */
export function cleanUpRunDirs(dirs: RunDirs, succeeded: boolean, startedWorkers: boolean): string | null {
  if (!dirs.owned) return null;
  const checkpointsInside = !relative(dirs.runDir, dirs.checkpointDir).startsWith('..');
  const wroteCheckpoints = checkpointsInside && !isEmptyDir(dirs.checkpointDir);
  if (succeeded || (!startedWorkers && !wroteCheckpoints)) {
    if (!wroteCheckpoints) {
      rmSync(dirs.runDir, { recursive: true, force: true });
      return null;
    }
    for (const name of readdirSync(dirs.runDir)) {
      if (name.startsWith('attempt_')) rmSync(join(dirs.runDir, name), { recursive: true, force: true });
    }
    return `tensile: checkpoints kept in ${dirs.checkpointDir}`;
  }
  return `tensile: worker logs kept in ${dirs.runDir}`;
}

function isEmptyDir(dir: string): boolean {
  try {
    return readdirSync(dir).length === 0;
  } catch {
    return true;
  }
}
