import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveRpcOptions, RpcError } from '../../../rpc/index.js';

test('options default from the worker environment and the bootstrap port is MASTER_PORT + 1', () => {
  const o = resolveRpcOptions({}, { RANK: '2', WORLD_SIZE: '4', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500' });
  assert.equal(o.name, 'worker2');
  assert.equal(o.rank, 2);
  assert.equal(o.worldSize, 4);
  assert.equal(o.bootstrapPort, 29501);
  assert.equal(o.advertiseAddr, '127.0.0.1');
  assert.equal(o.rpcTimeoutMs, 60_000);
});

test('TENSILE_RPC_PORT overrides the bootstrap port', () => {
  const o = resolveRpcOptions({}, { RANK: '0', WORLD_SIZE: '1', MASTER_PORT: '1000', TENSILE_RPC_PORT: '2000' });
  assert.equal(o.bootstrapPort, 2000);
});

test('bad options are refused with the value and the bound', () => {
  assert.throws(
    () => resolveRpcOptions({ rank: 3, worldSize: 2, bootstrapPort: 5 }, {}),
    (e: unknown) =>
      e instanceof RpcError && e.code === 'INVALID_ARGUMENT' && /rank must be < worldSize/.test(e.message),
  );
  assert.throws(
    () => resolveRpcOptions({ rank: 0, worldSize: 1, bootstrapPort: 5, name: 'bad name' }, {}),
    /name="bad name"/,
  );
  assert.throws(() => resolveRpcOptions({}, { WORLD_SIZE: '2', MASTER_PORT: '1' }), /rank is required/);
  assert.throws(() => resolveRpcOptions({}, { RANK: 'x' }), /RANK="x" is not an integer/);
  assert.throws(() => resolveRpcOptions({ rank: 0, worldSize: 1 }, {}), /no bootstrap port/);
});

test('the data channel is on over TCP with shared memory by default and the environment can change each', () => {
  const base = { RANK: '0', WORLD_SIZE: '1', MASTER_PORT: '29500' };
  assert.deepEqual(resolveRpcOptions({}, base).dataChannel, {
    enabled: true,
    unixSocket: undefined,
    sharedMemory: true,
  });
  assert.deepEqual(
    resolveRpcOptions({}, { ...base, TENSILE_RPC_DATA_CHANNEL: '0', TENSILE_RPC_DATA_UDS: '1', TENSILE_RPC_SHM: '0' })
      .dataChannel,
    { enabled: false, unixSocket: true, sharedMemory: false },
  );
  assert.equal(resolveRpcOptions({ dataChannel: { sharedMemory: false } }, base).dataChannel.sharedMemory, false);
  assert.throws(
    () => resolveRpcOptions({}, { ...base, TENSILE_RPC_SHM: 'yes' }),
    (e: unknown) => e instanceof RpcError && /TENSILE_RPC_SHM="yes" must be 0, 1, true or false/.test(e.message),
  );
  assert.throws(
    () => resolveRpcOptions({}, { ...base, TENSILE_RPC_DATA_CHANNEL: 'maybe' }),
    (e: unknown) =>
      e instanceof RpcError && /TENSILE_RPC_DATA_CHANNEL="maybe" must be 0, 1, true or false/.test(e.message),
  );
});
