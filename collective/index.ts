// Entry point of tensile/collective: `initProcessGroup` reads the worker environment, starts (rank 0) or reaches the
// bootstrap store at MASTER_ADDR:MASTER_PORT and returns a ProcessGroup of the chosen backend, loaded lazily by name.
import { z } from 'zod';
import { noopLogger, type Logger } from '../common/logger.js';
import { CollectiveError, type Backend, type InitOptions, type ProcessGroup } from './api.js';
import { connectStore, createStoreServer, type StoreServer } from './store.js';
import { transportFromEnv, type ShmTuning, type TransportChoice } from './shm-plane.js';
import type { NetTuning } from './net-plane.js';
import type { TcpTuning } from './tcp-backend.js';

export * from './api.js';
export { connectStore, createStoreServer, type StoreClient, type StoreServer } from './store.js';

export const DEFAULT_TIMEOUT_MS = 300_000;

export interface WorkerConfig {
  readonly backend: Backend;
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly masterAddr: string;
  readonly masterPort: number;
  readonly timeoutMs: number;
  readonly tuning: Partial<TcpTuning>;
  /** TENSILE_TCP_UDS=0 turns off Unix domain sockets between ranks on one host. */
  readonly unixSockets: boolean;
  /** TENSILE_COLLECTIVE_TRANSPORT=js|native forces the tcp backend's data plane; unset = native when possible. */
  readonly transport: TransportChoice | undefined;
  /** TENSILE_SHM_SLOT_BYTES, TENSILE_SHM_SMALL_BYTES, TENSILE_SHM_SPIN (shm-plane.ts). */
  readonly shmTuning: Partial<ShmTuning>;
  /** TENSILE_NET_SMALL_BYTES, TENSILE_NET_SEGMENT_BYTES, TENSILE_NET_CHUNK_BYTES, TENSILE_NET_HIERARCHY=0|1 (net-plane.ts). */
  readonly netTuning: Partial<NetTuning>;
}

const intText = (name: string, min: number, max: number) =>
  z.string().transform((s, ctx) => {
    const v = /^\s*\d+\s*$/.test(s) ? Number(s) : NaN;
    if (!Number.isSafeInteger(v) || v < min || v > max) {
      ctx.addIssue({
        code: 'custom',
        message: `${name}=${JSON.stringify(s)}: expected an integer in [${min}, ${max}]`,
      });
      return z.NEVER;
    }
    return v;
  });

function pick(
  name: string,
  given: number | undefined,
  env: NodeJS.ProcessEnv,
  min: number,
  max: number,
  fallback?: number,
): number {
  if (given !== undefined) {
    if (!Number.isSafeInteger(given) || given < min || given > max)
      throw new CollectiveError('INVALID_ARGUMENT', `${name} ${given}: expected an integer in [${min}, ${max}]`);
    return given;
  }
  const raw = env[name];
  if (raw === undefined || raw === '') {
    if (fallback !== undefined) return fallback;
    throw new CollectiveError(
      'INVALID_ARGUMENT',
      `${name} is not set: initProcessGroup needs it in the environment or in its options`,
    );
  }
  const r = intText(name, min, max).safeParse(raw);
  if (!r.success) throw new CollectiveError('INVALID_ARGUMENT', r.error.issues.map((i) => i.message).join('; '));
  return r.data;
}

/** Validates options and environment once (pure; throws CollectiveError('INVALID_ARGUMENT') naming the bad value). */
export function resolveWorkerConfig(opts: InitOptions = {}, env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const backend = opts.backend ?? 'auto';
  if (!['auto', 'tcp', 'nccl'].includes(backend))
    throw new CollectiveError(
      'INVALID_ARGUMENT',
      `backend ${JSON.stringify(backend)}: expected 'auto', 'tcp' or 'nccl'`,
    );
  const worldSize = pick('WORLD_SIZE', opts.worldSize, env, 1, 65536);
  const rank = pick('RANK', opts.rank, env, 0, 65535);
  if (rank >= worldSize)
    throw new CollectiveError('INVALID_ARGUMENT', `RANK ${rank}: must be < WORLD_SIZE (${worldSize})`);
  const localRank = pick('LOCAL_RANK', opts.localRank, env, 0, 65535, 0);
  const masterPort = pick('MASTER_PORT', opts.masterPort, env, 1, 65535);
  const masterAddr = opts.masterAddr ?? env.MASTER_ADDR;
  if (masterAddr === undefined || masterAddr.trim() === '')
    throw new CollectiveError(
      'INVALID_ARGUMENT',
      `MASTER_ADDR ${JSON.stringify(masterAddr ?? null)}: expected a host name or address`,
    );
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0))
    throw new CollectiveError('INVALID_ARGUMENT', `timeoutMs ${timeoutMs}: expected a positive number of milliseconds`);
  const tuning: { -readonly [K in keyof TcpTuning]?: number } = {};
  const tun = (k: keyof TcpTuning, name: string, min: number, max: number): void => {
    if (env[name] !== undefined && env[name] !== '') tuning[k] = pick(name, undefined, env, min, max);
  };
  tun('smallBytes', 'TENSILE_TCP_SMALL_BYTES', 0, 2 ** 31);
  tun('segmentBytes', 'TENSILE_TCP_SEGMENT_BYTES', 1024, 2 ** 30);
  tun('pipelineDepth', 'TENSILE_TCP_PIPELINE_DEPTH', 1, 64);
  const unixSockets = env.TENSILE_TCP_UDS !== '0';
  const shmTuning: { -readonly [K in keyof ShmTuning]?: number } = {};
  const shm = (k: keyof ShmTuning, name: string, min: number, max: number): void => {
    if (env[name] !== undefined && env[name] !== '') shmTuning[k] = pick(name, undefined, env, min, max);
  };
  shm('slotBytes', 'TENSILE_SHM_SLOT_BYTES', 4096, 2 ** 30);
  shm('smallBytes', 'TENSILE_SHM_SMALL_BYTES', 0, 2 ** 30);
  shm('spin', 'TENSILE_SHM_SPIN', 0, 2 ** 30);
  const netTuning: { -readonly [K in keyof NetTuning]?: NetTuning[K] } = {};
  const has = (name: string): boolean => env[name] !== undefined && env[name] !== '';
  if (has('TENSILE_NET_SMALL_BYTES'))
    netTuning.smallBytes = pick('TENSILE_NET_SMALL_BYTES', undefined, env, 0, 2 ** 30);
  if (has('TENSILE_NET_SEGMENT_BYTES'))
    netTuning.segmentBytes = pick('TENSILE_NET_SEGMENT_BYTES', undefined, env, 4096, 2 ** 30);
  if (has('TENSILE_NET_CHUNK_BYTES'))
    netTuning.chunkBytes = pick('TENSILE_NET_CHUNK_BYTES', undefined, env, 4096, 2 ** 30);
  if (has('TENSILE_NET_HIERARCHY')) netTuning.hierarchical = pick('TENSILE_NET_HIERARCHY', undefined, env, 0, 1) === 1;
  return {
    backend,
    rank,
    worldSize,
    localRank,
    masterAddr: masterAddr.trim(),
    masterPort,
    timeoutMs,
    tuning,
    unixSockets,
    transport: transportFromEnv(env),
    shmTuning,
    netTuning,
  };
}

// Type-only: the NCCL backend and its loader load only when chosen (variable specifiers keep them out of the static
// import graph), but their types come from the modules themselves, never from a hand-written copy.
type NcclModule = typeof import('./nccl-backend.js');
type LoaderModule = typeof import('./native/loader.js');
const NCCL_BACKEND = './nccl-backend.js';
const NATIVE_LOADER = './native/loader.js';

async function chooseBackend(cfg: WorkerConfig, logger: Logger): Promise<'tcp' | 'nccl'> {
  if (cfg.backend !== 'auto') return cfg.backend;
  try {
    const loader = (await import(NATIVE_LOADER)) as LoaderModule;
    const a = loader.ncclAvailability();
    if (a.ok) return 'nccl';
    logger.info({ reason: a.reason }, 'collective: NCCL unavailable, using tcp');
  } catch (err) {
    logger.info({ err: String(err) }, 'collective: NCCL loader not loadable, using tcp');
  }
  return 'tcp';
}

/**
 * Joins the process group described by the options and the environment. Rank 0 serves the store. Rejects with
 * INVALID_ARGUMENT (bad env/options), TIMEOUT/STORE (store or mesh unreachable) or BACKEND_UNAVAILABLE.
 * Both backends take `onClose`, which closes the store (and rank 0's server) once the world group is destroyed or
 * aborted; a failed init closes them here.
 */
export async function initProcessGroup(opts: InitOptions = {}): Promise<ProcessGroup> {
  const cfg = resolveWorkerConfig(opts);
  const logger = opts.logger ?? noopLogger;
  const backend = await chooseBackend(cfg, logger);
  let server: StoreServer | null = null;
  if (cfg.rank === 0) server = await createStoreServer({ host: cfg.masterAddr, port: cfg.masterPort, logger });
  let store: Awaited<ReturnType<typeof connectStore>> | null = null;
  let closed: Promise<void> | null = null;
  const onClose = (): Promise<void> =>
    (closed ??= (async () => {
      await store?.close();
      await server?.close();
    })());
  try {
    store = await connectStore({ host: cfg.masterAddr, port: cfg.masterPort, timeoutMs: cfg.timeoutMs, logger });
    if (backend === 'tcp') {
      const { createTcpGroup } = await import('./tcp-backend.js');
      return await createTcpGroup({ ...cfg, store, logger, onClose });
    }
    let mod: NcclModule;
    try {
      mod = (await import(NCCL_BACKEND)) as NcclModule;
    } catch (err) {
      throw new CollectiveError('BACKEND_UNAVAILABLE', `backend 'nccl' cannot be loaded: ${String(err)}`, {
        cause: err,
      });
    }
    return await mod.createNcclGroup({ ...cfg, store, logger, onClose });
  } catch (err) {
    await onClose();
    throw err;
  }
}
