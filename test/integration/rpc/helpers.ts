// Test helpers: several RPC agents in one process on loopback, torn down even when a test fails.
import { RpcAgent, createAgent, type InitRpcOptions } from '../../../rpc/index.js';
import { freePort } from '../../../common/free-port.js';

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
