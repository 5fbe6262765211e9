// Test helpers: several RPC agents in one process on loopback, torn down even when a test fails.
import { RpcAgent, createAgent, type InitRpcOptions } from '../../../rpc/index.js';
import type { StreamConn } from '../../../rpc/grpc-transport.js';
import { freePort } from '../../../common/free-port.js';
import { withTimeout } from '../../../common/timeout.js';

/**
 * Starts `n` agents (ranks 0..n-1) in this process. `setup(agent)` runs before start (register functions there).
 * Returns the agents; the caller registers `stopWorld` in an after hook.
 */
export async function startWorld(
  n: number,
  setup: (a: RpcAgent) => void = () => {},
  extra: Partial<InitRpcOptions> = {},
): Promise<RpcAgent[]> {
  const bootstrapPort = await freePort();
  const agents = Array.from({ length: n }, (_, rank) =>
    createAgent({ rank, worldSize: n, masterAddr: '127.0.0.1', bootstrapPort, initTimeoutMs: 10_000, ...extra }),
  );
  for (const a of agents) setup(a);
  await Promise.all(agents.map((a) => a.start()));
  return agents;
}

export async function stopWorld(agents: readonly RpcAgent[], graceful = false): Promise<void> {
  await Promise.all(agents.map((a) => a.shutdown({ graceful, timeoutMs: 5_000 }).catch(() => undefined)));
}

/** Resolves when `cond()` is true; rejects after `timeoutMs`. */
export async function waitFor(cond: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** echo, plus and sleep: what the data-channel and shared-memory tests call. */
export function dataSetup(a: RpcAgent): void {
  a.registerFunction('echo', ((t: Float32Array) => t) as never);
  a.registerFunction('plus', ((t: Float32Array, k: number) => t.map((v) => v + k)) as never);
  a.registerFunction('sleep', ((ms: number) => new Promise((r) => setTimeout(() => r(ms), ms))) as never);
}

/**
 * A world of two (dataSetup) whose data channel is up both ways, and shared memory too when `shm`; pushed onto
 * `worlds` for the caller's after hook. Rejects after 10 s.
 */
export async function dataWorld(
  worlds: RpcAgent[][],
  extra: Partial<InitRpcOptions> = {},
  shm = false,
): Promise<{ a: RpcAgent; b: RpcAgent; ab: StreamConn; ba: StreamConn }> {
  const w = await startWorld(2, dataSetup, { rpcTimeoutMs: 30_000, ...extra });
  worlds.push(w);
  const [a, b] = w as [RpcAgent, RpcAgent];
  const ab = a.rawConnTo(1)!;
  const ba = b.rawConnTo(0)!;
  const up = (s: { send: unknown; recv: unknown; shmOut: boolean; shmIn: boolean }): boolean =>
    s.send !== null && s.recv !== null && (!shm || (s.shmOut && s.shmIn));
  await withTimeout(
    Promise.all([ab.waitData(up), ba.waitData(up)]),
    10_000,
    'data channel',
    () => new Error(`data channel${shm ? ' and shared memory' : ''} not up after 10 s`),
  );
  return { a, b, ab, ba };
}

/** A float32 test pattern of `n` values (i % 1000 + seed). */
export function pattern(n: number, seed: number): Float32Array {
  const t = new Float32Array(n);
  for (let i = 0; i < n; i++) t[i] = (i % 1000) + seed;
  return t;
}
