// The bulk data channel beside gRPC: large frames both ways, many at once, order with small frames, a broken or
// garbage-fed data connection (typed error, no crash, no hang), and the fallback to gRPC when it cannot be made.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { noopLogger } from '../../../common/logger.js';
import { connect } from 'node:net';
import { RpcError, type RpcAgent } from '../../../rpc/index.js';
import { dataChannelTestHooks } from '../../../rpc/grpc-transport.js';
import { HANDSHAKE_MAGIC } from '../../../rpc/data-channel.js';
import { freePort } from '../../../common/free-port.js';
import { dataSetup, dataWorld, pattern, startWorld, stopWorld, waitFor } from './helpers.js';
import { withTimeout } from '../../../common/timeout.js';

const worlds: RpcAgent[][] = [];
after(async () => {
  for (const w of worlds) await stopWorld(w);
});

/** A world of two whose streams have their data channel up in both directions. */
const world = (extra = {}) => dataWorld(worlds, extra);

test('large tensors travel over the data channel (TCP) in both directions and arrive intact', async () => {
  const { a, b, ab, ba } = await world({ dataChannel: { sharedMemory: false } }); // shm-transfer.test.ts has that
  assert.equal(ab.dataSockets.recv!.remoteAddress, '127.0.0.1');
  const t = pattern(1 << 20, 0.5); // 4 MiB
  const r = (await a.rpcAsync(1, 'plus', [t, 1])) as Float32Array;
  assert.equal(r.length, t.length);
  for (const i of [0, 1, 999, 1000, 123_457, t.length - 1]) assert.equal(r[i], t[i]! + 1);
  const back = (await b.rpcAsync(0, 'echo', [t])) as Float32Array;
  assert.deepEqual(back, t);
  assert.ok(ab.dataBytesOut >= 2 * t.byteLength, `rank 0 sent ${ab.dataBytesOut} bytes on the data channel`);
  assert.ok(ba.dataBytesOut >= 2 * t.byteLength, `rank 1 sent ${ba.dataBytesOut} bytes on the data channel`);
  assert.ok(ab.bytesOut < 64 * 1024, `only control segments went over gRPC, got ${ab.bytesOut} bytes`);
});

test('many concurrent large and small calls over a Unix socket are each answered with their own value', async () => {
  const { a, ab } = await world({ dataChannel: { unixSocket: true } });
  assert.equal(ab.dataSockets.recv!.remoteAddress, undefined, 'a Unix socket has no remote address');
  const inputs = Array.from({ length: 24 }, (_, k) => pattern(64 * 1024 + k * 1024, k));
  const small = Array.from({ length: 24 }, (_, k) => new Float32Array([k]));
  const results = await Promise.all([
    ...inputs.map((t) => a.rpcAsync(1, 'echo', [t]) as Promise<Float32Array>),
    ...small.map((t) => a.rpcAsync(1, 'echo', [t]) as Promise<Float32Array>),
  ]);
  for (let k = 0; k < inputs.length; k++) assert.deepEqual(results[k], inputs[k], `large call ${k}`);
  for (let k = 0; k < small.length; k++) assert.deepEqual(results[inputs.length + k], small[k], `small call ${k}`);
});

test('a small frame sent after a large one is delivered after it (stream order is kept)', async () => {
  const { a, b } = await world();
  const seen: string[] = [];
  b.registerFunction('note', ((tag: string) => void seen.push(tag)) as never);
  await Promise.all([
    a.rpcAsync(1, 'note', ['large', pattern(1 << 20, 0)]),
    a.rpcAsync(1, 'note', ['small']),
    a.rpcAsync(1, 'note', ['large2', pattern(1 << 19, 0)]),
    a.rpcAsync(1, 'note', ['small2']),
  ]);
  assert.deepEqual(seen, ['large', 'small', 'large2', 'small2']);
});

test('a data connection killed mid-transfer fails the calls with PEER_LOST and never hangs', async () => {
  const { a, ba } = await world({ dataChannel: { sharedMemory: false } });
  const big = pattern(16 << 20, 1); // 64 MiB: still in flight when the socket dies
  const call = a.rpcAsync(1, 'echo', [big]);
  setImmediate(() => ba.dataSockets.recv!.destroy());
  await assert.rejects(call, (e: RpcError) => e.code === 'PEER_LOST');
  await assert.rejects(a.rpcAsync(1, 'echo', [new Float32Array(4)]), (e: RpcError) => e.code === 'PEER_LOST');
});

test('garbage on an established data connection closes that peer stream with a typed error, no crash', async () => {
  const warnings: string[] = [];
  const logger = {
    ...noopLogger,
    warn: (_o: object | string, m?: string) => void warnings.push(String(m)),
  };
  const { a, ba } = await world({ logger });
  const pending = a.rpcAsync(1, 'sleep', [2_000]);
  // rank 1's send socket feeds rank 0's receive socket: bytes that are not a transfer header.
  ba.dataSockets.send!.write(Buffer.from('this is not a transfer header at all'));
  await assert.rejects(pending, (e: RpcError) => e.code === 'PEER_LOST');
  assert.ok(
    warnings.some((m) => m.includes('protocol error')),
    `warnings: ${warnings.join(' | ')}`,
  );
});

test('garbage and wrong tokens on the data port are dropped and the world keeps working', async () => {
  const { a, b } = await world();
  const { port } = b.dataListener()!;
  const wrongToken = Buffer.alloc(20, 0xab);
  wrongToken.writeUInt32LE(HANDSHAKE_MAGIC, 0);
  for (const bytes of [Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.alloc(64, 0x31), Buffer.alloc(20), wrongToken]) {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => undefined);
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    s.write(bytes);
    await withTimeout(closed, 5_000, 'socket drop', () => new Error('server did not drop the socket'));
  }
  const t = pattern(1 << 18, 2);
  assert.deepEqual(await a.rpcAsync(1, 'echo', [t]), t);
});

test('when the data port is unreachable every frame goes over gRPC and calls still work', async () => {
  dataChannelTestHooks.advertisedPort = await freePort(); // nothing listens there
  dataChannelTestHooks.noUds = true;
  let w: RpcAgent[];
  try {
    w = await startWorld(2, dataSetup);
  } finally {
    delete dataChannelTestHooks.advertisedPort;
    delete dataChannelTestHooks.noUds;
  }
  worlds.push(w);
  const [a, b] = w as [RpcAgent, RpcAgent];
  const t = pattern(1 << 20, 3);
  assert.deepEqual(await a.rpcAsync(1, 'echo', [t]), t);
  assert.deepEqual(await b.rpcAsync(0, 'echo', [t]), t);
  assert.equal(a.rawConnTo(1)!.dataBytesOut, 0);
  assert.equal(b.rawConnTo(0)!.dataBytesOut, 0);
  await waitFor(() => a.rawConnTo(1)!.dataSockets.recv === null, 1_000, 'no receive socket');
});

test('with the data channel turned off no data listener is started and large calls use gRPC', async () => {
  const w = await startWorld(2, dataSetup, { dataChannel: { enabled: false } });
  worlds.push(w);
  const [a, b] = w as [RpcAgent, RpcAgent];
  assert.equal(a.dataListener(), null);
  assert.equal(b.dataListener(), null);
  const t = pattern(1 << 19, 4);
  assert.deepEqual(await a.rpcAsync(1, 'echo', [t]), t);
  assert.equal(a.rawConnTo(1)!.dataBytesOut, 0);
});
