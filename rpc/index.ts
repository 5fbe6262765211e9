// Public face of tensile/rpc: module-level functions over one default agent per process (like
// torch.distributed.rpc), plus RpcAgent for several agents in one process.

import { RpcAgent } from './agent.js';
import { registerGlobalFunction } from './function-registry.js';
import {
  RpcError,
  type CallOptions,
  type InitRpcOptions,
  type RegisterOptions,
  type RpcFunction,
  type ShutdownOptions,
  type WorkerInfo,
  type WorkerRef,
} from './api.js';
import { resolveRpcOptions } from './options.js';
import type { RRef } from './rref.js';
import { DistAutograd, DistributedOptimizer as DistOpt } from './dist-autograd.js';
import type { Tensor } from '../tensor/index.js';

export * from './api.js';
export { RpcAgent } from './agent.js';
export type { AgentExtension, AgentHost } from './agent-extension.js';
export { RRef, type RRefProxy, type RRefRemoteProxy } from './rref.js';
export { resolveRpcOptions } from './options.js';
export { DistAutograd } from './dist-autograd.js';

let current: RpcAgent | null = null;

/**
 * Joins the RPC world: options default from the worker environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
 * Resolves when every worker is connected; rejects with BOOTSTRAP/TIMEOUT after initTimeoutMs. After shutdown()
 * it may be called again (a new rendezvous round, possibly another membership).
 */
export async function initRpc(opts: InitRpcOptions = {}): Promise<RpcAgent> {
  if (current) throw new RpcError('ALREADY_INITIALIZED', 'RPC is already initialized');
  const agent = createAgent(opts);
  current = agent;
  try {
    await agent.start();
  } catch (err) {
    current = null;
    throw err;
  }
  return agent;
}

/** A standalone agent (not the process default): call start() on it. Tests run several in one process. */
export function createAgent(opts: InitRpcOptions = {}): RpcAgent {
  const a = new RpcAgent(resolveRpcOptions(opts));
  a.use(new DistAutograd(a));
  return a;
}

function agent(): RpcAgent {
  if (!current || !current.isActive) {
    throw new RpcError('NOT_INITIALIZED', 'RPC has not been initialized. Call initRpc first.');
  }
  return current;
}

/** The default agent, or null before initRpc / after shutdown. */
export function currentAgent(): RpcAgent | null {
  return current;
}

/** Registers `fn` under `name` on this worker (every worker must register the functions it serves). */
export function registerFunction<A extends unknown[], R>(
  name: string,
  fn: (...args: A) => R,
  opts: RegisterOptions<A> = {},
): void {
  registerGlobalFunction(name, fn as unknown as RpcFunction, opts as RegisterOptions<unknown[]>);
}

/** Calls `fn` on `to` and resolves with its result (JavaScript cannot block: this is rpcAsync under another name). */
export function rpcSync<T = unknown>(
  to: WorkerRef,
  fn: string,
  args: unknown[] = [],
  opts: CallOptions = {},
): Promise<T> {
  return rpcAsync<T>(to, fn, args, opts);
}

export function rpcAsync<T = unknown>(
  to: WorkerRef,
  fn: string,
  args: unknown[] = [],
  opts: CallOptions = {},
): Promise<T> {
  try {
    return agent().rpcAsync<T>(to, fn, args, opts);
  } catch (err) {
    return Promise.reject(err);
  }
}

/** Runs `fn` on `to`, which keeps the result; returns at once an RRef to it. */
export function remote<T = unknown>(to: WorkerRef, fn: string, args: unknown[] = [], opts: CallOptions = {}): RRef<T> {
  const a = agent();
  return a.rrefs.remote<T>(a.resolveRank(to), fn, args, opts);
}

/** A local owner RRef holding `value` (PyTorch's RRef(value)). */
export function rref<T>(value: T): RRef<T> {
  return agent().rrefs.createLocal(value);
}

export function getWorkerInfo(worker?: WorkerRef): WorkerInfo {
  return agent().getWorkerInfo(worker);
}

export async function shutdown(opts: ShutdownOptions = {}): Promise<void> {
  const a = current;
  if (!a) return;
  try {
    await a.shutdown(opts);
  } finally {
    current = null;
  }
}

function autograd(): DistAutograd {
  const a = agent();
  const ad = a.extension(DistAutograd);
  if (!ad) throw new RpcError('NOT_INITIALIZED', `distributed autograd is not installed on '${a.name}'`);
  return ad;
}

/** Distributed autograd on the default agent (torch.distributed.autograd). */
export const distAutograd = {
  /** Runs fn with a fresh context id; the context is released on every worker it touched afterwards. */
  withContext<T>(fn: (contextId: number) => Promise<T> | T): Promise<T> {
    return autograd().withContext(fn);
  },
  backward(contextId: number, roots: Tensor[]): Promise<void> {
    return autograd().backward(contextId, roots);
  },
  getGradients(contextId: number): Map<Tensor, Tensor> {
    return autograd().getGradients(contextId);
  },
};

/** DistributedOptimizer on the default agent: `await DistributedOptimizer.create(SGD, paramRRefs, { lr })`. */
export const DistributedOptimizer = {
  create(
    optimizerClass: { name: string } | string,
    paramRRefs: RRef<Tensor>[],
    options: Record<string, number | boolean>,
  ): Promise<DistOpt> {
    return DistOpt.create(agent(), optimizerClass, paramRRefs, options);
  },
};
export type { DistributedOptimizer as DistributedOptimizerInstance } from './dist-autograd.js';
