// Entry point of tensile/collective: `initProcessGroup` reads the worker environment, starts (rank 0) or reaches the
// bootstrap store at MASTER_ADDR:MASTER_PORT and returns a ProcessGroup of the chosen backend, loaded lazily by name.
import { z } from 'zod';
import { noopLogger, type Logger } from '../common/logger.js';
import { CollectiveError, type Backend, type InitOptions, type ProcessGroup, type Store } from './api.js';
import { connectStore, createStoreServer, type StoreServer } from './store.js';
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
  };
}

type NcclModule = {
  createNcclGroup(o: {
    rank: number;
    worldSize: number;
    localRank: number;
    store: Store;
    timeoutMs: number;
    logger: Logger;
  }): Promise<ProcessGroup>;
};
type LoaderModule = { ncclAvailability(): { ok: true } | { ok: false; reason: string } };

// Variable specifiers keep the NCCL modules out of the static import graph (they load only when chosen).
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
 */
export async function initProcessGroup(opts: InitOptions = {}): Promise<ProcessGroup> {
  const cfg = resolveWorkerConfig(opts);
  const logger = opts.logger ?? noopLogger;
  const backend = await chooseBackend(cfg, logger);
  let server: StoreServer | null = null;
  if (cfg.rank === 0) server = await createStoreServer({ host: cfg.masterAddr, port: cfg.masterPort, logger });
  let store: Awaited<ReturnType<typeof connectStore>> | null = null;
  const cleanup = async (): Promise<void> => {
    await store?.close();
    await server?.close();
  };
  try {
    store = await connectStore({ host: cfg.masterAddr, port: cfg.masterPort, timeoutMs: cfg.timeoutMs, logger });
    if (backend === 'tcp') {
      const { createTcpGroup } = await import('./tcp-backend.js');
      return await createTcpGroup({ ...cfg, store, logger, onClose: cleanup });
    }
    let mod: NcclModule;
    try {
      mod = (await import(NCCL_BACKEND)) as NcclModule;
    } catch (err) {
      throw new CollectiveError('BACKEND_UNAVAILABLE', `backend 'nccl' cannot be loaded: ${String(err)}`, {
        cause: err,
      });
    }
    const group = await mod.createNcclGroup({ ...cfg, store, logger });
    return withCleanup(group, cleanup);
  } catch (err) {
    await cleanup();
    throw err;
  }
}

function withCleanup(g: ProcessGroup, cleanup: () => Promise<void>): ProcessGroup {
  let done: Promise<void> | null = null;
  const once = (): Promise<void> => (done ??= cleanup());
  return {
    get backend() {
      return g.backend;
    },
    rank: g.rank,
    worldSize: g.worldSize,
    timeoutMs: g.timeoutMs,
    allreduce: (...a) => g.allreduce(...a),
    allreduceInto: (...a) => g.allreduceInto(...a),
    broadcast: (...a) => g.broadcast(...a),
    reduce: (...a) => g.reduce(...a),
    allgather: (...a) => g.allgather(...a),
    reduceScatter: (...a) => g.reduceScatter(...a),
    send: (...a) => g.send(...a),
    recv: (...a) => g.recv(...a),
    barrier: (...a) => g.barrier(...a),
    newGroup: (...a) => g.newGroup(...a),
    destroy: async () => {
      await g.destroy();
      await once();
    },
    abort: (reason) => {
      g.abort(reason);
      void once().catch(() => {});
    },
  };
}
