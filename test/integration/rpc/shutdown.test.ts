// Shutdown semantics (PyTorch rpc_test.py: uneven workload, outstanding RRefs, calls after shutdown).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noopLogger } from '../../../common/logger.js';
import { RpcError, type RpcAgent } from '../../../rpc/index.js';
import { startWorld, stopWorld } from './helpers.js';

function setup(a: RpcAgent): void {
  a.registerFunction('sleep', ((ms: number) => new Promise((r) => setTimeout(() => r(ms), ms))) as never);
  a.registerFunction('ones', ((n: number) => new Float32Array(n).fill(1)) as never);
}

test('graceful shutdown waits for a peer that still has heavy work in flight', async (t) => {
  const w = await startWorld(3, setup);
  t.after(() => stopWorld(w));
  const heavy = w[0]!.rpcAsync(2, 'sleep', [400]);
  // Everyone shuts down at once; worker2 must keep serving worker0's call until it is answered.
  await Promise.all(w.map((a) => a.shutdown({ graceful: true, timeoutMs: 10_000 })));
  assert.equal(await heavy, 400);
});

test('graceful shutdown with outstanding RRefs deletes every user fork on the owners', async (t) => {
  const leaks: string[] = [];
  const logger = {
    ...noopLogger,
    warn: (_o: object | string, m?: string) => void leaks.push(String(m)),
  };
  const w = await startWorld(3, setup, { logger });
  t.after(() => stopWorld(w));
  const refs = [w[0]!.remote(1, 'ones', [2]), w[2]!.remote(1, 'ones', [3]), w[1]!.remote(0, 'ones', [1])];
  await Promise.all(refs.map((r) => r.toHere()));
  assert.equal(w[1]!.rrefs.stats().owners, 2);
  await Promise.all(w.map((a) => a.shutdown({ graceful: true, timeoutMs: 10_000 })));
  // Every owner saw every delete before the world closed; otherwise the leak check after the barrier warns.
  assert.deepEqual(
    leaks.filter((m) => /leak|incomplete/.test(m)),
    [],
  );
});

test('after shutdown every call fails with NOT_INITIALIZED', async (t) => {
  const w = await startWorld(2, setup);
  t.after(() => stopWorld(w));
  await Promise.all(w.map((a) => a.shutdown()));
  await assert.rejects(w[0]!.rpcAsync(1, 'ones', [1]), (e: unknown) => {
    return e instanceof RpcError && e.code === 'NOT_INITIALIZED' && /shut down/.test(e.message);
  });
  assert.throws(
    () => w[0]!.remote(1, 'ones', [1]),
    (e: unknown) => (e as RpcError).code === 'NOT_INITIALIZED',
  );
});

test('non-graceful shutdown rejects pending calls at once and the peer sees PEER_LOST', async (t) => {
  const w = await startWorld(2, setup);
  t.after(() => stopWorld(w));
  const mine = assert.rejects(
    w[0]!.rpcAsync(1, 'sleep', [10_000]),
    (e: unknown) => (e as RpcError).code === 'SHUTDOWN',
  );
  const theirs = assert.rejects(
    w[1]!.rpcAsync(0, 'sleep', [10_000]),
    (e: unknown) => (e as RpcError).code === 'PEER_LOST',
  );
  await new Promise((r) => setTimeout(r, 20));
  await w[0]!.shutdown({ graceful: false });
  await mine;
  await theirs;
});

test('graceful shutdown is bounded when a peer never arrives at the barrier', async (t) => {
  const w = await startWorld(2, setup);
  t.after(() => stopWorld(w));
  // worker1 never shuts down; worker0 gives up after its timeout instead of hanging.
  const t0 = Date.now();
  await w[0]!.shutdown({ graceful: true, timeoutMs: 300 });
  assert.ok(Date.now() - t0 < 5_000, 'shutdown returned');
  await assert.rejects(w[0]!.rpcAsync(1, 'ones', [1]), (e: unknown) => (e as RpcError).code === 'NOT_INITIALIZED');
});
