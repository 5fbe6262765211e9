// Calls, remote errors, timeouts, nested RPC and malformed input on an in-process world of three agents.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { noopLogger } from '../../../common/logger.js';
import { z } from 'zod';
import { RemoteError, RpcError, type RpcAgent } from '../../../rpc/index.js';
import { MsgType, encodeFrame, decodeFrame } from '../../../rpc/frame.js';
import { openStream } from '../../../rpc/grpc-transport.js';
import { decodeValue } from '../../../rpc/codec.js';
import { startWorld, stopWorld } from './helpers.js';

class ValueTooBig extends Error {}
let w: RpcAgent[] = [];
const warnings: string[] = [];
const logger = {
  ...noopLogger,
  warn: (_o: object | string, msg?: string) => void warnings.push(String(msg)),
};

before(async () => {
  w = await startWorld(
    3,
    (a) => {
      a.registerFunction('add', ((x: number, y: number) => x + y) as never);
      a.registerFunction('whoami', (() => a.name) as never);
      a.registerFunction('sleep', ((ms: number) => new Promise((r) => setTimeout(() => r(ms), ms))) as never);
      a.registerFunction('boom', ((n: number) => {
        throw new ValueTooBig(`value ${n} is too big`);
      }) as never);
      a.registerFunction('typed', ((n: number, s: string) => s.repeat(n)) as never, {
        validate: z.tuple([z.number().int().min(1), z.string()]),
      });
      // Nested: the callee calls back into the caller (PyTorch test_nested_rpc).
      a.registerFunction('nested', (async (back: number, x: number) => {
        const y = (await a.rpcAsync(back, 'add', [x, 1])) as number;
        return y * 10;
      }) as never);
      a.registerFunction('scale', ((t: Float32Array, k: number) => t.map((v) => v * k)) as never);
    },
    { logger },
  );
});
after(() => stopWorld(w));

test('calls reach a worker by name, by rank and by WorkerInfo', async () => {
  assert.equal(await w[0]!.rpcAsync('worker1', 'whoami'), 'worker1');
  assert.equal(await w[0]!.rpcAsync(2, 'whoami'), 'worker2');
  assert.equal(await w[2]!.rpcAsync(w[2]!.getWorkerInfo('worker0'), 'add', [2, 3]), 5);
  assert.deepEqual(w[1]!.getWorkerInfo(), { name: 'worker1', id: 1 });
  assert.deepEqual(
    w[0]!.getWorkerInfos().map((i) => i.name),
    ['worker0', 'worker1', 'worker2'],
  );
});

test('a worker can call itself', async () => {
  assert.equal(await w[1]!.rpcAsync(1, 'add', [20, 22]), 42);
});

test('tensors travel as raw bytes and come back intact', async () => {
  const t = new Float32Array(5000).map((_, i) => i);
  const r = (await w[0]!.rpcAsync(1, 'scale', [t, 2])) as Float32Array;
  assert.ok(r instanceof Float32Array);
  assert.equal(r.length, 5000);
  assert.equal(r[4999], 9998);
});

test('a 16 MB tensor is streamed in chunks under the gRPC message limit', async () => {
  const t = new Float32Array(4 * 1024 * 1024).fill(0.5);
  const r = (await w[2]!.rpcAsync(0, 'scale', [t, 4])) as Float32Array;
  assert.equal(r.length, t.length);
  assert.equal(r[r.length - 1], 2);
});

test('nested RPC back into the caller completes (no worker thread is held)', async () => {
  assert.equal(await w[0]!.rpcAsync(1, 'nested', [0, 4]), 50);
});

test('many calls in flight are matched to their answers by request id', async () => {
  const rs = await Promise.all(Array.from({ length: 500 }, (_, i) => w[1]!.rpcAsync(2, 'add', [i, i])));
  assert.deepEqual(
    rs,
    Array.from({ length: 500 }, (_, i) => 2 * i),
  );
});

test('a remote exception arrives with its type, message and remote stack', async () => {
  await assert.rejects(w[0]!.rpcAsync(1, 'boom', [7]), (e: unknown) => {
    assert.ok(e instanceof RemoteError);
    assert.equal(e.code, 'REMOTE_ERROR');
    assert.equal(e.remoteType, 'ValueTooBig');
    assert.match(e.message, /On worker1: ValueTooBig: value 7 is too big/);
    assert.match(e.remoteStack, /calls\.test\.ts/);
    return true;
  });
});

test('an unknown function and failed validation give typed errors', async () => {
  await assert.rejects(w[0]!.rpcAsync(1, 'nope'), (e: unknown) => {
    return (
      e instanceof RpcError && e.code === 'UNKNOWN_FUNCTION' && /'nope' is not registered on 'worker1'/.test(e.message)
    );
  });
  await assert.rejects(w[0]!.rpcAsync(2, 'typed', [0, 'x']), (e: unknown) => {
    return (
      e instanceof RpcError && e.code === 'INVALID_ARGUMENT' && e.terminal && /arguments of 'typed'/.test(e.message)
    );
  });
  assert.equal(await w[0]!.rpcAsync(2, 'typed', [3, 'ab']), 'ababab');
});

test('a call past its timeout fails with TIMEOUT; timeout 0 means none', async () => {
  await assert.rejects(w[0]!.rpcAsync(1, 'sleep', [1000], { timeoutMs: 100 }), (e: unknown) => {
    return (
      e instanceof RpcError &&
      e.code === 'TIMEOUT' &&
      !e.terminal &&
      /ran for more than the set timeout \(100 ms\)/.test(e.message)
    );
  });
  assert.equal(await w[0]!.rpcAsync(1, 'sleep', [150], { timeoutMs: 0 }), 150);
});

test('unknown workers are refused before anything is sent', async () => {
  await assert.rejects(w[0]!.rpcAsync('worker9', 'add', [1, 2]), /worker 'worker9' is not in the RPC world/);
  await assert.rejects(w[0]!.rpcAsync(7, 'add', [1, 2]), (e: unknown) => (e as RpcError).code === 'UNKNOWN_WORKER');
});

test('an unknown message type gets a typed PROTOCOL error and the stream keeps working', async () => {
  await assert.rejects(w[0]!.request(1, 50, {}), (e: unknown) => {
    return e instanceof RpcError && e.code === 'PROTOCOL' && /unknown message type 50/.test(e.message);
  });
  assert.equal(await w[0]!.rpcAsync(1, 'add', [1, 1]), 2);
});

test('malformed and truncated frames are rejected without crashing the server', async (t) => {
  const port = (w[1] as unknown as { port: number }).port;
  const conn = openStream('127.0.0.1', port);
  t.after(() => conn.close());
  const replies: ReturnType<typeof decodeFrame>[] = [];
  let closed = false;
  conn.onFrames = (raws) => replies.push(...raws.map(decodeFrame));
  conn.onClose = () => (closed = true);
  // A CALL frame cut short: its header is readable, so the answer names request id 99.
  const full = Buffer.concat(
    encodeFrame(MsgType.CALL, 99, Buffer.from('{"f":"add","a":[1,2]}'), [new Float32Array(64)]).parts,
  );
  const seg = Buffer.alloc(5 + full.byteLength - 40);
  seg.writeUInt8(0x46, 0);
  seg.writeUInt32LE(full.byteLength - 40, 1);
  full.copy(seg, 5, 0, full.byteLength - 40);
  conn.sendRawSegment(seg);
  const deadline = Date.now() + 5000;
  while (replies.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.equal(replies.length, 1);
  assert.equal(replies[0]!.type, MsgType.ERR);
  assert.equal(replies[0]!.requestId, 99);
  const body = decodeValue(replies[0]!.body, replies[0]!.tensors) as { code: string; message: string };
  assert.equal(body.code, 'PROTOCOL');
  assert.match(body.message, /truncated/);
  // Garbage that cannot be framed at all closes that one connection.
  conn.sendRawSegment(Buffer.from('this is not a segment'));
  while (!closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.ok(closed, 'the malformed connection was closed');
  assert.ok(warnings.some((m) => /malformed|protocol/.test(m)));
  // The server and the world are unaffected.
  assert.equal(await w[0]!.rpcAsync(1, 'add', [2, 2]), 4);
  assert.equal(await w[2]!.rpcAsync(1, 'add', [3, 3]), 6);
});
