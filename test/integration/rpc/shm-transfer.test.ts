// Shared-memory transfers of large frames between workers of one host (rpc/shm-transfer.ts): used when both sides
// can, intact both ways, writable on arrival; the socket when the probe fails or it is turned off; forged records
// and stray bytes fail that peer stream with PEER_LOST and a protocol warning, never a crash; nothing left open.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { noopLogger } from '../../../common/logger.js';
import { loadAddon } from '../../../collective/native/addon.js';
import { RpcError, type RpcAgent } from '../../../rpc/index.js';
import { dataChannelTestHooks, type StreamConn } from '../../../rpc/grpc-transport.js';
import { SHM_MAGIC, SHM_RECORD_BYTES } from '../../../rpc/shm-transfer.js';
import { dataWorld, pattern, stopWorld, waitFor } from './helpers.js';

const loaded = loadAddon();
const skip = loaded.ok ? false : `the native addon does not load: ${loaded.reason}`;

const worlds: RpcAgent[][] = [];
after(async () => {
  for (const w of worlds) await stopWorld(w);
});

/** A world of two with the data channel up (and shared memory, unless `shm` is false). */
const world = (extra = {}, shm = true) => dataWorld(worlds, extra, shm);

/** Descriptors of this process that are shared-memory segments of RPC transfers. */
function segmentFds(): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith('/memfd:tensile-rpc')) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

test(
  'large tensors go through shared memory both ways, arrive intact and writable, small ones by socket',
  {
    skip,
  },
  async () => {
    const { a, b, ab, ba } = await world();
    const t = pattern(1 << 20, 0.5); // 4 MiB
    const r = (await a.rpcAsync(1, 'plus', [t, 1])) as Float32Array;
    for (const i of [0, 1, 999, 1000, 123_457, t.length - 1]) assert.equal(r[i], t[i]! + 1);
    r[0] = -1; // a received tensor is an ordinary writable array
    assert.equal(r[0], -1);
    const back = (await b.rpcAsync(0, 'echo', [t])) as Float32Array;
    assert.deepEqual(back, t);
    assert.deepEqual(await a.rpcAsync(1, 'echo', [new Float32Array([1, 2, 3])]), new Float32Array([1, 2, 3]));
    assert.deepEqual(ab.shmTransfers, { out: 2, in: 2 }, 'rank 0: its two requests out, two answers in');
    assert.deepEqual(ba.shmTransfers, { out: 2, in: 2 });
    assert.ok(ab.dataBytesOut < 64 * 1024, `only records and small frames on the socket, got ${ab.dataBytesOut} bytes`);
  },
);

test(
  'large and small calls in flight together are each answered with their own value, in order',
  {
    skip,
  },
  async () => {
    const { a, b } = await world();
    const seen: string[] = [];
    b.registerFunction('note', ((tag: string) => void seen.push(tag)) as never);
    const inputs = Array.from({ length: 16 }, (_, k) => pattern(65_536 + k * 4096, k)); // 256 KiB and up
    const [results] = await Promise.all([
      Promise.all(inputs.map((t) => a.rpcAsync(1, 'echo', [t]) as Promise<Float32Array>)),
      a.rpcAsync(1, 'note', ['large', pattern(1 << 20, 0)]),
      a.rpcAsync(1, 'note', ['small']),
      a.rpcAsync(1, 'note', ['large2', pattern(1 << 19, 0)]),
      a.rpcAsync(1, 'note', ['small2']),
    ]);
    for (let k = 0; k < inputs.length; k++) assert.deepEqual(results[k], inputs[k], `call ${k}`);
    assert.deepEqual(seen, ['large', 'small', 'large2', 'small2']);
    assert.ok(a.rawConnTo(1)!.shmTransfers.out >= 18);
  },
);

test('when the probe does not open (another host, no permission) large frames take the socket', async () => {
  dataChannelTestHooks.badShmProbe = true;
  const infos: { o: Record<string, unknown>; m: string }[] = [];
  const logger = { ...noopLogger, info: (o: object | string, m?: string) => void infos.push({ o: o as never, m: m! }) };
  let w: { a: RpcAgent; ab: StreamConn };
  try {
    w = await world({ logger }, false);
  } finally {
    delete dataChannelTestHooks.badShmProbe;
  }
  const t = pattern(1 << 20, 3);
  assert.deepEqual(await w.a.rpcAsync(1, 'echo', [t]), t);
  assert.deepEqual(w.ab.shmTransfers, { out: 0, in: 0 });
  assert.ok(w.ab.dataBytesOut >= t.byteLength);
  // Each side says once which way its large frames go, and why not shared memory.
  const said = infos.filter((i) => i.m === 'rpc: large frames go by data socket');
  assert.equal(said.length, 2, JSON.stringify(infos.map((i) => i.m)));
  assert.match(String(said[0]!.o.why), /cannot open this host's shared memory/);
});

test('with sharedMemory off, large frames take the socket', async () => {
  const { a, ab } = await world({ dataChannel: { sharedMemory: false } }, false);
  const t = pattern(1 << 19, 4);
  assert.deepEqual(await a.rpcAsync(1, 'echo', [t]), t);
  assert.deepEqual(ab.shmTransfers, { out: 0, in: 0 });
});

function warningsLogger(): { logger: typeof noopLogger; warnings: string[] } {
  const warnings: string[] = [];
  return {
    logger: { ...noopLogger, warn: (_o: object | string, m?: string) => void warnings.push(String(m)) },
    warnings,
  };
}

test(
  'a forged record naming a descriptor that does not exist fails that peer stream with PEER_LOST',
  { skip },
  async () => {
    const { logger, warnings } = warningsLogger();
    const { a, ba } = await world({ logger });
    const pending = a.rpcAsync(1, 'sleep', [2_000]);
    const rec = Buffer.alloc(SHM_RECORD_BYTES);
    rec.writeUInt32LE(SHM_MAGIC, 0);
    rec.writeUInt32LE((ba as unknown as { nextTransferId: number }).nextTransferId, 4); // the next id rank 0 expects
    rec.writeUInt32LE(1 << 20, 8);
    rec.writeUInt32LE(process.pid, 12);
    rec.writeUInt32LE(999_999, 16);
    rec.writeUInt32LE((1 << 20) + 64, 28);
    ba.dataSockets.send!.write(rec);
    await assert.rejects(pending, (e: RpcError) => e.code === 'PEER_LOST');
    assert.ok(
      warnings.some((m) => m.includes('protocol error')),
      `warnings: ${warnings.join(' | ')}`,
    );
  },
);

test('bytes other than a hello from the receiving side fail that peer stream with PEER_LOST', { skip }, async () => {
  const { a, ab } = await world();
  const pending = a.rpcAsync(1, 'sleep', [2_000]);
  // rank 0's receive socket writes back towards rank 1's sender: only hello records may travel that way.
  ab.dataSockets.recv!.write(Buffer.from('not a hello record'));
  await assert.rejects(pending, (e: RpcError) => e.code === 'PEER_LOST');
});

test('after shutdown no segment descriptor is left open', { skip }, async () => {
  for (const w of worlds.splice(0)) await stopWorld(w); // the earlier tests' worlds hold segments of their own
  await waitFor(() => segmentFds() === 0, 5_000, 'earlier worlds to release their segments');
  const { a, b } = await world();
  const t = pattern(1 << 20, 5);
  for (let i = 0; i < 4; i++) await Promise.all([a.rpcAsync(1, 'echo', [t]), b.rpcAsync(0, 'echo', [t])]);
  assert.ok(segmentFds() > 0, 'segments are open while the world runs');
  await stopWorld(worlds.splice(0)[0]!, true);
  // A graceful close keeps the segments until the peer has closed its end (it may still have records to read).
  await waitFor(() => segmentFds() === 0, 5_000, 'segments to be closed after shutdown');
});
