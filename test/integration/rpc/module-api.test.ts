// The module-level API (one default agent per process), on a world of one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  RpcError,
  getWorkerInfo,
  initRpc,
  registerFunction,
  remote,
  rpcAsync,
  rpcSync,
  rref,
  shutdown,
} from '../../../rpc/index.js';
import { freePort } from '../../../common/free-port.js';

test('initRpc, calls to self, remote to self, double init and calls after shutdown', async (t) => {
  t.after(() => shutdown({ graceful: false }));
  await assert.rejects(rpcSync(0, 'twice', [1]), (e: unknown) => {
    return e instanceof RpcError && e.code === 'NOT_INITIALIZED' && /Call initRpc first/.test(e.message);
  });
  registerFunction('twice', (x: number) => 2 * x);
  const port = await freePort();
  await initRpc({ rank: 0, worldSize: 1, bootstrapPort: port, name: 'solo' });
  assert.deepEqual(getWorkerInfo(), { name: 'solo', id: 0 });
  assert.equal(await rpcSync('solo', 'twice', [21]), 42);
  assert.equal(await rpcAsync(0, 'twice', [2]), 4);
  const r = remote<number>('solo', 'twice', [5]);
  assert.equal(r.isOwner(), true, 'remote to self makes an owner RRef');
  assert.equal(await r.toHere(), 10);
  assert.equal(r.localValue(), 10);
  assert.equal(rref('here').localValue(), 'here');
  await assert.rejects(
    initRpc({ rank: 0, worldSize: 1, bootstrapPort: port }),
    (e: unknown) => (e as RpcError).code === 'ALREADY_INITIALIZED',
  );
  await shutdown();
  await assert.rejects(rpcSync(0, 'twice', [1]), (e: unknown) => (e as RpcError).code === 'NOT_INITIALIZED');
  // A new round may start after shutdown.
  await initRpc({ rank: 0, worldSize: 1, bootstrapPort: await freePort() });
  assert.equal(await rpcSync('worker0', 'twice', [3]), 6);
  await shutdown();
});
