// The container mechanism of the simulated kubelet's container mode: buildah (root, --isolation chroot, host
// network). Each call runs the buildah CLI and either returns its result or throws BuildahError naming the
// command and its stderr; nothing here knows about pods. Every call has a timeout.
import { execFile } from 'node:child_process';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';

export class BuildahError extends Error {
  readonly code = 'BUILDAH' as const;
  constructor(
    message: string,
    readonly args: readonly string[],
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'BuildahError';
  }
}

/** The parts of an OCI image config the kubelet needs. */
export interface ImageConfig {
  readonly id: string;
  readonly entrypoint: readonly string[];
  readonly cmd: readonly string[];
  readonly user: string;
  readonly workingDir: string;
  readonly env: Readonly<Record<string, string>>;
}

export interface Buildah {
  readonly storageDriver: string;
  /** The image's config, or undefined when the image is not in local storage (there is no registry to pull from). */
  inspectImage(image: string): Promise<ImageConfig | undefined>;
  /** Creates a working container `name` from a local image; returns its id. */
  from(image: string, name: string): Promise<string>;
  /** Mounts the container's root filesystem; returns the host path. */
  mount(container: string): Promise<string>;
  /** Removes a container (no error when it is gone). */
  rm(container: string): Promise<void>;
  /** Names of the working containers whose name starts with prefix. */
  containers(prefix: string): Promise<string[]>;
  /** argv (from 'buildah') for `buildah run` of `command` in container; the caller spawns it. */
  runArgv(container: string, run: RunSpec): string[];
}

export interface RunSpec {
  readonly command: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly user: string;
  readonly workingDir: string;
  /** host path → container path */
  readonly mounts: ReadonlyArray<{ readonly host: string; readonly container: string; readonly readOnly?: boolean }>;
}

const CALL_TIMEOUT_MS = 120_000;

export function buildah(storageDriver = 'overlay'): Buildah {
  const base = ['--storage-driver', storageDriver];
  const call = (args: string[]): Promise<string> =>
    new Promise((resolve, reject) => {
      execFile(
        'buildah',
        [...base, ...args],
        { timeout: CALL_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 },
        (err, stdout, stderr) => {
          if (err) reject(new BuildahError(`buildah ${args.join(' ')}: ${stderr.trim() || err.message}`, args, stderr));
          else resolve(stdout);
        },
      );
    });
  return {
    storageDriver,
    async inspectImage(image) {
      let out: string;
      try {
        out = await call(['inspect', '--type', 'image', image]);
      } catch (err) {
        if (err instanceof BuildahError && /image not known|not found|unknown/i.test(err.stderr)) return undefined;
        throw err;
      }
      const j = JSON.parse(out) as {
        FromImageID: string;
        OCIv1: {
          config?: {
            Entrypoint?: string[] | null;
            Cmd?: string[] | null;
            User?: string;
            WorkingDir?: string;
            Env?: string[] | null;
          };
        };
      };
      const cfg = j.OCIv1.config ?? {};
      const env: Record<string, string> = {};
      for (const kv of cfg.Env ?? []) {
        const eq = kv.indexOf('=');
        if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
      }
      return {
        id: `sha256:${j.FromImageID}`,
        entrypoint: cfg.Entrypoint ?? [],
        cmd: cfg.Cmd ?? [],
        user: cfg.User ?? '',
        workingDir: cfg.WorkingDir ?? '',
        env,
      };
    },
    async from(image, name) {
      return (await call(['from', '--pull=never', '--quiet', '--name', name, image])).trim();
    },
    async mount(container) {
      return (await call(['mount', container])).trim();
    },
    async rm(container) {
      try {
        await call(['rm', container]);
      } catch (err) {
        if (!(err instanceof BuildahError && /not known|no such|not found/i.test(err.stderr))) throw err;
      }
    },
    async containers(prefix) {
      // Listing races with another buildah removing a container ("container not known"): try again.
      for (let attempt = 1; ; attempt++) {
        try {
          const out = await call(['containers', '--format', '{{.ContainerName}}']);
          return out.split('\n').filter((n) => n !== '' && n.startsWith(prefix));
        } catch (err) {
          if (!(err instanceof BuildahError && /not known/.test(err.stderr)) || attempt >= 10) throw err;
          await new Promise((r) => setTimeout(r, 100 * attempt));
        }
      }
    },
    runArgv(container, run) {
      const argv = ['buildah', ...base, 'run', '--isolation', 'chroot', '--network', 'host'];
      if (run.user !== '') argv.push('--user', run.user);
      if (run.workingDir !== '') argv.push('--workingdir', run.workingDir);
      for (const [k, v] of Object.entries(run.env)) argv.push('--env', `${k}=${v}`);
      for (const m of run.mounts) argv.push('--volume', `${m.host}:${m.container}${m.readOnly ? ':ro' : ''}`);
      argv.push(container, '--', ...run.command);
      return argv;
    },
  };
}

/**
 * Resolves `command` as execve would inside `root` (a mounted container filesystem): a path with a slash is taken
 * as is (relative to workingDir), a bare name is searched in PATH. Symlinks are followed within root (an absolute
 * target means root + target). Returns the in-container path of an executable regular file, or undefined.
 */
export function resolveExecutable(
  root: string,
  command: string,
  pathVar: string,
  workingDir: string,
): string | undefined {
  const candidates = command.includes('/')
    ? [posix.resolve(workingDir || '/', command)]
    : pathVar
        .split(':')
        .filter((d) => d !== '')
        .map((d) => posix.join(d, command));
  for (const c of candidates) {
    const real = realpathIn(root, c);
    if (real === undefined) continue;
    try {
      const st = lstatSync(posix.join(root, real));
      if (st.isFile() && (st.mode & 0o111) !== 0) return c;
    } catch {
      /* not there */
    }
  }
  return undefined;
}

function realpathIn(root: string, path: string, hops = 0): string | undefined {
  if (hops > 40) return undefined;
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  let cur = '/';
  for (let i = 0; i < parts.length; i++) {
    const next = parts[i] === '..' ? posix.dirname(cur) : posix.join(cur, parts[i]!);
    let st;
    try {
      st = lstatSync(posix.join(root, next));
    } catch {
      return undefined;
    }
    if (st.isSymbolicLink()) {
      const target = readlinkSync(posix.join(root, next));
      const rest = parts.slice(i + 1).join('/');
      const abs = target.startsWith('/') ? target : posix.join(cur, target);
      return realpathIn(root, rest === '' ? abs : `${abs}/${rest}`, hops + 1);
    }
    cur = next;
  }
  return cur;
}

/** All descendants of pid (children first, breadth-first), from /proc. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(e));
      children.set(ppid, list);
    } catch {
      /* exited meanwhile */
    }
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const c of children.get(queue.shift()!) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/**
 * The container's first process under `buildah run` (pid): the first descendant in the container's root that is
 * not buildah's own chroot-exec (with chroot isolation there is no PID namespace, so this is how "PID 1" of the
 * container is found). buildah-chroot-exec does not forward signals: a SIGTERM to it kills the command at once.
 */
export function containerInit(pid: number): number | undefined {
  for (const d of descendants(pid)) {
    try {
      if (readlinkSync(`/proc/${d}/root`) === '/') continue;
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').startsWith('buildah-chroot-exec\0')) continue;
      return d;
    } catch {
      /* exited meanwhile */
    }
  }
  return undefined;
}

/** Go's names of signals, as `buildah run` prints "subprocess exited on <name>" (and exits 1). */
const GO_SIGNALS: Record<string, number> = {
  hangup: 1,
  interrupt: 2,
  quit: 3,
  'illegal instruction': 4,
  'trace/breakpoint trap': 5,
  aborted: 6,
  'bus error': 7,
  'floating point exception': 8,
  killed: 9,
  'user defined signal 1': 10,
  'segmentation fault': 11,
  'user defined signal 2': 12,
  'broken pipe': 13,
  'alarm clock': 14,
  terminated: 15,
};

/**
 * The container's exit code from `buildah run`'s: buildah exits 1 when the command died of a signal and says which
 * in its last lines; the kubelet reports 128 + the signal number then, as a runtime does. Also returns the output
 * without buildah's own trailing lines ("subprocess exited …", "Error: exit status …").
 */
export function containerExit(buildahCode: number, output: string): { exitCode: number; output: string } {
  const lines = output.split('\n');
  let exitCode = buildahCode;
  while (lines.length > 0) {
    const last = lines.at(-1)!;
    const m = /^subprocess exited on (.+)$/.exec(last);
    if (m && buildahCode === 1 && GO_SIGNALS[m[1]!] !== undefined) exitCode = 128 + GO_SIGNALS[m[1]!]!;
    if (last === '' || m || /^subprocess exited with status \d+$/.test(last) || /^Error: exit status \d+$/.test(last))
      lines.pop();
    else break;
  }
  return { exitCode, output: lines.length > 0 ? `${lines.join('\n')}\n` : '' };
}
