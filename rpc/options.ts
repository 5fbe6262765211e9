// initRpc options: parsed once at the edge, defaults from the worker environment in one place.

import { hostname } from 'node:os';
import { z } from 'zod';
import { RpcError, noopLogger, type InitRpcOptions, type Logger, type TlsOptions } from './api.js';
import type { DataChannelOptions } from './data-channel.js';

export interface ResolvedRpcOptions {
  readonly name: string;
  readonly rank: number;
  readonly worldSize: number;
  readonly masterAddr: string;
  readonly bootstrapPort: number;
  readonly advertiseAddr: string;
  readonly listenAddr: string;
  readonly rpcTimeoutMs: number;
  readonly initTimeoutMs: number;
  readonly tls?: TlsOptions;
  readonly dataChannel: DataChannelOptions;
  readonly logger: Logger;
}

const NAME_RE = /^[A-Za-z0-9_:-]{1,127}$/;
const int = (what: string, min: number, max: number) =>
  z
    .number({ error: `${what} must be a number` })
    .int({ error: `${what} must be an integer` })
    .min(min, { error: `${what} must be >= ${min}` })
    .max(max, { error: `${what} must be <= ${max}` });

const schema = z
  .object({
    name: z.string().regex(NAME_RE, { error: 'name must match ^[A-Za-z0-9_:-]{1,127}$' }),
    rank: int('rank', 0, 65535),
    worldSize: int('worldSize', 1, 65536),
    masterAddr: z.string().min(1),
    bootstrapPort: int('bootstrapPort', 1, 65535),
    advertiseAddr: z.string().min(1),
    listenAddr: z.string().min(1),
    rpcTimeoutMs: int('rpcTimeoutMs', 0, 2 ** 31 - 1),
    initTimeoutMs: int('initTimeoutMs', 1, 2 ** 31 - 1),
    dataChannelEnabled: z.boolean({ error: 'dataChannel.enabled must be a boolean' }),
    dataChannelUnix: z.boolean({ error: 'dataChannel.unixSocket must be a boolean' }).optional(),
    dataChannelShm: z.boolean({ error: 'dataChannel.sharedMemory must be a boolean' }),
  })
  .refine((o) => o.rank < o.worldSize, { error: 'rank must be < worldSize' });

function envInt(env: NodeJS.ProcessEnv, key: string): number | undefined {
  const v = env[key];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new RpcError('INVALID_ARGUMENT', `${key}=${JSON.stringify(v)} is not an integer`);
  return n;
}

function envFlag(env: NodeJS.ProcessEnv, key: string): boolean | undefined {
  const v = env[key];
  if (v === undefined || v === '') return undefined;
  if (v === '0' || v === 'false') return false;
  if (v === '1' || v === 'true') return true;
  throw new RpcError('INVALID_ARGUMENT', `${key}=${JSON.stringify(v)} must be 0, 1, true or false`);
}

function isLoopback(addr: string): boolean {
  return addr === 'localhost' || addr === '::1' || addr.startsWith('127.');
}

/** Resolves options against the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, TENSILE_RPC_PORT). */
export function resolveRpcOptions(opts: InitRpcOptions = {}, env: NodeJS.ProcessEnv = process.env): ResolvedRpcOptions {
  const rank = opts.rank ?? envInt(env, 'RANK');
  const worldSize = opts.worldSize ?? envInt(env, 'WORLD_SIZE');
  if (rank === undefined) throw new RpcError('INVALID_ARGUMENT', 'rank is required (option rank or env RANK)');
  if (worldSize === undefined) {
    throw new RpcError('INVALID_ARGUMENT', 'worldSize is required (option worldSize or env WORLD_SIZE)');
  }
  const masterAddr = opts.masterAddr ?? env.MASTER_ADDR ?? '127.0.0.1';
  const masterPort = opts.masterPort ?? envInt(env, 'MASTER_PORT');
  const bootstrapPort =
    opts.bootstrapPort ?? envInt(env, 'TENSILE_RPC_PORT') ?? (masterPort === undefined ? undefined : masterPort + 1);
  if (bootstrapPort === undefined) {
    throw new RpcError(
      'INVALID_ARGUMENT',
      'no bootstrap port: set masterPort/MASTER_PORT (the RPC bootstrap uses MASTER_PORT + 1) or bootstrapPort/TENSILE_RPC_PORT',
    );
  }
  const loop = isLoopback(masterAddr);
  const raw = {
    name: opts.name ?? `worker${rank}`,
    rank,
    worldSize,
    masterAddr,
    bootstrapPort,
    advertiseAddr: opts.advertiseAddr ?? env.TENSILE_RPC_ADVERTISE_ADDR ?? (loop ? '127.0.0.1' : hostname()),
    listenAddr: loop ? (masterAddr === 'localhost' ? '127.0.0.1' : masterAddr) : '0.0.0.0',
    rpcTimeoutMs: opts.rpcTimeoutMs ?? 60_000,
    initTimeoutMs: opts.initTimeoutMs ?? 60_000,
    dataChannelEnabled: opts.dataChannel?.enabled ?? envFlag(env, 'TENSILE_RPC_DATA_CHANNEL') ?? true,
    dataChannelUnix: opts.dataChannel?.unixSocket ?? envFlag(env, 'TENSILE_RPC_DATA_UDS'),
    dataChannelShm: opts.dataChannel?.sharedMemory ?? envFlag(env, 'TENSILE_RPC_SHM') ?? true,
  };
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const key = issue.path.join('.');
    const val = key ? (raw as Record<string, unknown>)[key] : `rank ${rank}, worldSize ${worldSize}`;
    throw new RpcError('INVALID_ARGUMENT', `initRpc: ${key || 'options'}=${JSON.stringify(val)}: ${issue.message}`);
  }
  const { dataChannelEnabled, dataChannelUnix, dataChannelShm, ...rest } = parsed.data;
  return {
    ...rest,
    tls: opts.tls,
    dataChannel: { enabled: dataChannelEnabled, unixSocket: dataChannelUnix, sharedMemory: dataChannelShm },
    logger: opts.logger ?? noopLogger,
  };
}
