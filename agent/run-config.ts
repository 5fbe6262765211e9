// `tensile run` options: the flag table (torchrun's names and defaults), and the one place that validates raw
// values into a readonly RunOptions. Every error quotes the value, where it came from, and what was expected.

import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { extname } from 'node:path';
import { z } from 'zod';
import { UsageError, type RunOptions, type RunnerKind, type StdMask, type StdSpec } from './api.js';
import { scanArgs, type FlagSpec } from './args.js';

export const RUN_FLAGS: readonly FlagSpec[] = [
  { name: 'nnodes', env: true, metavar: 'N|MIN:MAX', help: 'number of nodes, or the range MIN:MAX (default 1:1)' },
  {
    name: 'nproc-per-node',
    env: true,
    metavar: 'N|cpu|gpu|auto',
    help: 'workers per node: a number, cpu, gpu or auto (default 1)',
  },
  { name: 'standalone', boolean: true, env: true, help: 'single node, embedded rendezvous, random rdzv id' },
  {
    name: 'max-restarts',
    env: true,
    metavar: 'N',
    help: 'worker-group restarts on failure before giving up (default 0)',
  },
  {
    name: 'monitor-interval',
    env: true,
    metavar: 'SEC',
    help: 'accepted for torchrun compatibility; exits are events',
  },
  { name: 'start-method', env: true, metavar: 'M', help: 'accepted for torchrun compatibility (scripts use spawn)' },
  { name: 'role', env: true, metavar: 'NAME', help: 'worker role name (default "default")' },
  { name: 'rdzv-backend', env: true, metavar: 'NAME', help: 'embedded (single node) or etcd (multi-node)' },
  {
    name: 'rdzv-endpoint',
    env: true,
    metavar: 'HOST:PORT[,...]',
    help: 'rendezvous endpoint (etcd: default port 2379)',
  },
  { name: 'rdzv-id', env: true, metavar: 'ID', help: 'job id shared by all nodes (default "none")' },
  {
    name: 'rdzv-conf',
    env: true,
    metavar: 'K=V,...',
    help: 'rendezvous settings: join_timeout, last_call_timeout, ...',
  },
  {
    name: 'node-rank',
    env: true,
    metavar: 'N',
    help: 'accepted for torchrun compatibility (ranks come from rendezvous)',
  },
  { name: 'master-addr', env: true, metavar: 'ADDR', help: 'MASTER_ADDR for single-node runs (default 127.0.0.1)' },
  { name: 'master-port', env: true, metavar: 'PORT', help: 'MASTER_PORT for single-node runs (default: a free port)' },
  { name: 'local-addr', env: true, metavar: 'ADDR', help: "this node's address for the other nodes" },
  { name: 'log-dir', env: true, metavar: 'DIR', help: 'per-attempt, per-rank stdout/stderr/error.json files' },
  {
    name: 'redirects',
    short: 'r',
    env: true,
    metavar: 'STD',
    help: 'send worker output to files only: 0-3 or 0:1,1:2',
  },
  {
    name: 'tee',
    short: 't',
    env: true,
    metavar: 'STD',
    help: 'send worker output to files and the console: 0-3 or map',
  },
  { name: 'local-ranks-filter', env: true, metavar: 'R,...', help: 'show only these local ranks on the console' },
  { name: 'module', short: 'm', boolean: true, env: true, help: 'run the script as a Python module (python -m)' },
  { name: 'no-python', boolean: true, env: true, help: 'execute the script directly, whatever its extension' },
  {
    name: 'run-path',
    boolean: true,
    env: true,
    help: 'run the script file by its extension (Python with runpy semantics)',
  },
  {
    name: 'shutdown-timeout',
    env: true,
    metavar: 'SEC',
    help: 'grace between SIGTERM and SIGKILL when stopping workers (default 30)',
  },
  { name: 'metrics-port', env: true, metavar: 'PORT', help: 'serve /healthz and Prometheus /metrics on this port' },
  {
    name: 'log-format',
    env: true,
    metavar: 'pretty|json',
    help: 'agent log format (default: pretty on a TTY, else json)',
  },
  { name: 'log-level', env: true, metavar: 'LEVEL', help: 'debug, info, warn or error (default info)' },
  { name: 'checkpoint-dir', env: true, metavar: 'DIR', help: 'passed to workers as TENSILE_CHECKPOINT_DIR' },
  {
    name: 'recovery',
    env: true,
    metavar: 'live|restart',
    help: 'live: keep workers that support it running across round changes (default); restart: always restart',
  },
  {
    name: 'hang-timeout',
    env: true,
    metavar: 'SEC',
    help: 'a worker that sends heartbeats but no step progress this long is dumped and restarted (default max(10, 5x median step time))',
  },
  {
    name: 'standby-workers',
    env: true,
    metavar: 'N',
    help: 'live mode: keep N pre-started spare workers per node; a failed live worker is replaced by one (default 0)',
  },
  { name: 'no-status-line', boolean: true, help: 'no live status line on a TTY' },
  { name: 'help', short: 'h', boolean: true, help: 'show this help' },
];

export const RUN_USAGE =
  'usage: tensile run [options] <script|module|executable> [script args...]\n\n' +
  'Launches nproc-per-node workers with the torchrun environment, restarts them on failure, and follows the\n' +
  "rendezvous across nodes. `${local_rank}` in script arguments becomes each worker's local rank.";

export const DEFAULT_SHUTDOWN_GRACE_MS = 30_000;

type Raw = ReadonlyMap<string, string>;

function where(sources: Raw, name: string): string {
  return sources.get(name) ?? `--${name}`;
}

function intIn(value: string, label: string, min: number, max: number): number {
  const n = z.coerce
    .number()
    .int()
    .min(min)
    .max(max)
    .safeParse(value.trim() === '' ? 'x' : value);
  if (!n.success) throw new UsageError(`${label} '${value}': expected an integer from ${min} to ${max}`);
  return n.data;
}

function secondsToMs(value: string, label: string): number {
  const n = z.coerce
    .number()
    .nonnegative()
    .finite()
    .safeParse(value.trim() === '' ? 'x' : value);
  if (!n.success) throw new UsageError(`${label} '${value}': expected a number of seconds ≥ 0`);
  return Math.round(n.data * 1000);
}

export function parseNnodes(value: string, label = '--nnodes'): { min: number; max: number } {
  const m = /^\s*(\d+)\s*(?::\s*(\d+)\s*)?$/.exec(value);
  if (!m) throw new UsageError(`${label} '${value}': expected N or MIN:MAX with positive integers`);
  const min = Number(m[1]);
  const max = m[2] === undefined ? min : Number(m[2]);
  if (min < 1) throw new UsageError(`${label} '${value}': min (${min}) must be ≥ 1`);
  if (min > max) throw new UsageError(`${label} '${value}': min (${min}) must be ≤ max (${max})`);
  return { min, max };
}

/** Counts NVIDIA devices without loading CUDA: /dev/nvidia0, /dev/nvidia1, ... */
export function countGpus(devDir = '/dev'): number {
  try {
    return readdirSync(devDir).filter((n) => /^nvidia\d+$/.test(n)).length;
  } catch {
    return 0;
  }
}

export function parseNprocPerNode(value: string, label = '--nproc-per-node'): number {
  const v = value.trim().toLowerCase();
  if (v === 'cpu') return availableParallelism();
  if (v === 'gpu') {
    const gpus = countGpus();
    if (gpus === 0) throw new UsageError(`${label} 'gpu': no NVIDIA GPU found (/dev/nvidia*); use a number or 'cpu'`);
    return gpus;
  }
  if (v === 'auto') {
    const gpus = countGpus();
    return gpus > 0 ? gpus : availableParallelism();
  }
  if (!/^\d+$/.test(v))
    throw new UsageError(`${label} '${value}': expected a positive integer, 'cpu', 'gpu' or 'auto'`);
  const n = Number(v);
  if (n < 1) throw new UsageError(`${label} '${value}': must be ≥ 1 (a node needs at least one worker)`);
  if (n > 1024) throw new UsageError(`${label} '${value}': must be ≤ 1024`);
  return n;
}

export function parseStdSpec(value: string, label: string): StdSpec {
  const v = value.trim();
  if (/^[0-3]$/.test(v)) return { all: Number(v) as StdMask, perRank: {} };
  if (/^(\d+:[0-3])(,\d+:[0-3])*$/.test(v)) {
    const perRank: Record<number, StdMask> = {};
    for (const part of v.split(',')) {
      const [r, m] = part.split(':');
      perRank[Number(r)] = Number(m) as StdMask;
    }
    return { all: 0, perRank };
  }
  throw new UsageError(`${label} '${value}': expected 0-3 (none, stdout, stderr, both) or a map like 0:1,1:3`);
}

export function splitRdzvConf(value: string, label = '--rdzv-conf'): Record<string, string> {
  const out: Record<string, string> = {};
  if (value.trim() === '') return out;
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    const key = eq >= 0 ? part.slice(0, eq).trim() : part.trim();
    const val = eq >= 0 ? part.slice(eq + 1).trim() : '';
    if (key === '' || val === '')
      throw new UsageError(`${label} '${value}': '${part}' must be key=value with both non-empty`);
    out[key] = val;
  }
  return out;
}

export function runnerFor(script: string, flags: { module: boolean; noPython: boolean }): RunnerKind {
  if (flags.module) return 'python-module';
  if (flags.noPython) return 'exec';
  switch (extname(script).toLowerCase()) {
    case '.py':
      return 'python';
    case '.js':
    case '.mjs':
    case '.cjs':
      return 'node';
    case '.ts':
    case '.mts':
    case '.cts':
      return 'node-ts';
    default:
      return 'exec';
  }
}

export interface ParsedRun {
  readonly help: boolean;
  readonly options: RunOptions | null;
  readonly notices: readonly string[];
}

/**
 * Parses `tensile run` argv and environment into RunOptions. Throws UsageError (exit code 2) on bad input.
 * `isTty` picks the default log format and the status line.
 */
export function parseRunArgs(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  isTty: boolean,
): ParsedRun {
  const { values, sources, positional } = scanArgs(argv, RUN_FLAGS, env);
  if (values.get('help') === 'true') return { help: true, options: null, notices: [] };
  const notices: string[] = [];
  const get = (name: string): string | undefined => values.get(name);
  const bool = (name: string): boolean => get(name) === 'true';

  const standalone = bool('standalone');
  const nnodes = parseNnodes(get('nnodes') ?? '1:1', where(sources, 'nnodes'));
  const nprocPerNode = parseNprocPerNode(get('nproc-per-node') ?? '1', where(sources, 'nproc-per-node'));
  const maxRestarts = intIn(get('max-restarts') ?? '0', where(sources, 'max-restarts'), 0, 1_000_000);
  if (get('monitor-interval') !== undefined)
    secondsToMs(get('monitor-interval') as string, where(sources, 'monitor-interval'));

  const role = get('role') ?? 'default';
  if (!/^[A-Za-z0-9_.-]{1,63}$/.test(role)) {
    throw new UsageError(`${where(sources, 'role')} '${role}': expected 1-63 letters, digits, '_', '.' or '-'`);
  }

  let rdzvBackend: RunOptions['rdzvBackend'];
  const backendRaw = (get('rdzv-backend') ?? (nnodes.max > 1 ? 'etcd' : 'embedded')).toLowerCase();
  if (standalone) {
    if (get('rdzv-backend') !== undefined && backendRaw !== 'embedded') {
      notices.push(
        `--standalone uses the embedded rendezvous; ignoring ${where(sources, 'rdzv-backend')} '${backendRaw}'`,
      );
    }
    rdzvBackend = 'embedded';
  } else if (backendRaw === 'embedded' || ((backendRaw === 'static' || backendRaw === 'c10d') && nnodes.max === 1)) {
    rdzvBackend = 'embedded';
  } else if (backendRaw === 'etcd' || backendRaw === 'etcd-v2' || backendRaw === 'etcd-v3') {
    rdzvBackend = 'etcd';
  } else {
    throw new UsageError(
      `${where(sources, 'rdzv-backend')} '${backendRaw}': expected 'etcd' (multi-node, etcd v3) or 'embedded' (single node)` +
        (backendRaw === 'c10d' || backendRaw === 'static'
          ? `; '${backendRaw}' only maps to embedded when --nnodes is 1`
          : ''),
    );
  }
  if (standalone && (nnodes.min !== 1 || nnodes.max !== 1)) {
    throw new UsageError(`--standalone with --nnodes '${get('nnodes')}': standalone runs exactly one node (1:1)`);
  }
  if (rdzvBackend === 'embedded' && nnodes.max > 1) {
    throw new UsageError(
      `--nnodes '${get('nnodes')}' with the embedded rendezvous: embedded is single-node; use --rdzv-backend etcd`,
    );
  }
  const rdzvEndpoint = get('rdzv-endpoint') ?? '';
  if (rdzvBackend === 'etcd' && rdzvEndpoint.trim() === '') {
    throw new UsageError(`--rdzv-backend etcd needs --rdzv-endpoint HOST:PORT (for example 127.0.0.1:2379)`);
  }
  const rdzvId = standalone ? randomUUID() : (get('rdzv-id') ?? 'none');
  if (!/^[A-Za-z0-9_.-]{1,128}$/.test(rdzvId)) {
    throw new UsageError(`${where(sources, 'rdzv-id')} '${rdzvId}': expected 1-128 letters, digits, '_', '.' or '-'`);
  }
  const rdzvConf = splitRdzvConf(get('rdzv-conf') ?? '', where(sources, 'rdzv-conf'));

  const masterPortRaw = get('master-port');
  const masterPort = masterPortRaw === undefined ? null : intIn(masterPortRaw, where(sources, 'master-port'), 1, 65535);
  const metricsPortRaw = get('metrics-port');
  const metricsPort =
    metricsPortRaw === undefined ? null : intIn(metricsPortRaw, where(sources, 'metrics-port'), 0, 65535);

  const redirects = parseStdSpec(get('redirects') ?? '0', where(sources, 'redirects'));
  const tee = parseStdSpec(get('tee') ?? '0', where(sources, 'tee'));
  let localRanksFilter: number[] | null = null;
  const filterRaw = get('local-ranks-filter');
  if (filterRaw !== undefined && filterRaw.trim() !== '') {
    localRanksFilter = filterRaw
      .split(',')
      .map((s) => intIn(s.trim(), `${where(sources, 'local-ranks-filter')} '${filterRaw}': rank`, 0, nprocPerNode - 1));
  }

  const module = bool('module');
  const noPython = bool('no-python');
  if (module && noPython) throw new UsageError(`-m/--module and --no-python cannot be used together`);
  const script = positional[0];
  if (script === undefined)
    throw new UsageError(`missing the training script: tensile run [options] <script> [args...]`);
  const scriptArgs = positional.slice(1);
  const runner = runnerFor(script, { module, noPython: noPython && !bool('run-path') });
  if (runner !== 'python-module') checkScript(script, runner);

  const logFormatRaw = get('log-format') ?? (isTty ? 'pretty' : 'json');
  if (logFormatRaw !== 'pretty' && logFormatRaw !== 'json') {
    throw new UsageError(`${where(sources, 'log-format')} '${logFormatRaw}': expected 'pretty' or 'json'`);
  }
  const logLevelRaw = (get('log-level') ?? env.LOGLEVEL ?? 'info').toLowerCase();
  const logLevel = logLevelRaw === 'warning' ? 'warn' : logLevelRaw;
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel)) {
    throw new UsageError(`${where(sources, 'log-level')} '${logLevelRaw}': expected debug, info, warn or error`);
  }
  const shutdownGraceMs =
    get('shutdown-timeout') !== undefined
      ? secondsToMs(get('shutdown-timeout') as string, where(sources, 'shutdown-timeout'))
      : env.TORCH_ELASTIC_SHUTDOWN_TIMEOUT !== undefined
        ? secondsToMs(env.TORCH_ELASTIC_SHUTDOWN_TIMEOUT, 'TORCH_ELASTIC_SHUTDOWN_TIMEOUT')
        : DEFAULT_SHUTDOWN_GRACE_MS;

  const recovery = (get('recovery') ?? 'live').toLowerCase();
  if (recovery !== 'live' && recovery !== 'restart') {
    throw new UsageError(`${where(sources, 'recovery')} '${get('recovery')}': expected 'live' or 'restart'`);
  }
  const hangTimeoutRaw = get('hang-timeout');
  const hangTimeoutMs =
    hangTimeoutRaw === undefined ? null : secondsToMs(hangTimeoutRaw, where(sources, 'hang-timeout'));
  if (hangTimeoutMs !== null && hangTimeoutMs <= 0) {
    throw new UsageError(
      `${where(sources, 'hang-timeout')} '${hangTimeoutRaw}': expected a positive number of seconds`,
    );
  }

  const standbyRaw = get('standby-workers') ?? '0';
  const standbyWorkers = /^\d+$/.test(standbyRaw.trim()) ? Number(standbyRaw) : NaN;
  if (!Number.isSafeInteger(standbyWorkers) || standbyWorkers > 64) {
    throw new UsageError(`${where(sources, 'standby-workers')} '${standbyRaw}': expected an integer from 0 to 64`);
  }

  const options: RunOptions = {
    nnodes,
    nprocPerNode,
    standalone,
    maxRestarts,
    role,
    rdzvBackend,
    rdzvEndpoint,
    rdzvId,
    rdzvConf,
    masterAddr: get('master-addr') ?? null,
    masterPort,
    localAddr: get('local-addr') ?? null,
    logDir: get('log-dir') ?? null,
    redirects,
    tee,
    localRanksFilter,
    runner,
    script,
    scriptArgs,
    shutdownGraceMs,
    metricsPort,
    logFormat: logFormatRaw,
    logLevel: logLevel as RunOptions['logLevel'],
    checkpointDir: get('checkpoint-dir') ?? null,
    statusLine: isTty && !bool('no-status-line'),
    recovery,
    hangTimeoutMs,
    standbyWorkers,
  };
  return { help: false, options, notices };
}

function checkScript(script: string, runner: RunnerKind): void {
  const looksLikePath = script.includes('/') || runner !== 'exec';
  if (!looksLikePath) return; // a bare executable name is looked up on PATH when spawned
  if (!existsSync(script)) throw new UsageError(`script '${script}' does not exist`);
  if (!statSync(script).isFile()) throw new UsageError(`script '${script}' is not a file`);
}
