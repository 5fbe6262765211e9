// Real worker processes on loopback: a worker killed mid-call, RRefs of a dead owner, a new round with new members.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { RpcError, createAgent, type RpcAgent } from '../../../rpc/index.js';
import type { StreamConn } from '../../../rpc/grpc-transport.js';
import { freePort } from '../../../common/free-port.js';
import { withTimeout } from '../../../common/timeout.js';

const workerPath = fileURLToPath(new URL('./fixtures/worker.ts', import.meta.url));

/** `prefix`: a command the worker runs under (e.g. unshare into its own PID namespace). */
function spawnWorker(rank: number, worldSize: number, port: number, prefix: string[] = []): ChildProcess {
  const argv = [...prefix, process.execPath, '--import', 'tsx', workerPath];
  return spawn(argv[0]!, argv.slice(1), {
    env: {
      ...process.env,
      RANK: String(rank),
      WORLD_SIZE: String(worldSize),
      MASTER_ADDR: '127.0.0.1',
      TENSILE_RPC_PORT: String(port),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

function kill(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  return new Promise((r) => {
    c.once('exit', () => r());
    c.kill('SIGKILL');
  });
}

test('a worker killed mid-call fails the call fast, invalidates its RRefs, and a new round re-forms the world', async (t) => {
  const port = await freePort();
  const children = [spawnWorker(1, 3, port), spawnWorker(2, 3, port)];
  const agents: RpcAgent[] = [];
  t.after(async () => {
    await Promise.all(agents.map((a) => a.shutdown({ graceful: false }).catch(() => undefined)));
    await Promise.all(children.map(kill));
  });
  const a0 = createAgent({
    rank: 0,
    worldSize: 3,
    masterAddr: '127.0.0.1',
    bootstrapPort: port,
    initTimeoutMs: 20_000,
  });
  agents.push(a0);
  await a0.start();
  assert.equal(await a0.rpcAsync(1, 'add', [1, 2]), 3);
  const pid2 = (await a0.rpcAsync(2, 'pid')) as number;
  assert.equal(pid2, children[1]!.pid);

  // An RRef owned by worker2, and a long call in flight to it.
  const owned = a0.remote<Float32Array>(2, 'ones', [3]);
  assert.equal((await owned.toHere()).length, 3);
  const inFlight = a0.rpcAsync(2, 'sleep', [30_000], { timeoutMs: 60_000 });
  await new Promise((r) => setTimeout(r, 50));
  process.kill(pid2, 'SIGKILL');
  await assert.rejects(
    inFlight,
    (e: unknown) => e instanceof RpcError && e.code === 'PEER_LOST' && e.terminal && e.worker === 'worker2',
  );
  // Later calls fail at once, RRefs owned by the dead worker are invalid, the others still work.
  await assert.rejects(a0.rpcAsync(2, 'add', [1, 1]), (e: unknown) => (e as RpcError).code === 'PEER_LOST');
  await assert.rejects(owned.toHere(), (e: unknown) => {
    return (
      e instanceof RpcError &&
      e.code === 'RREF_INVALID' &&
      /owner 'worker2' \(rank 2\) left the RPC group/.test(e.message)
    );
  });
  assert.equal(await a0.rpcAsync(1, 'add', [2, 2]), 4);

  // Next round: the survivors form a world of two on a new port.
  const port2 = await freePort();
  assert.equal(await a0.rpcAsync(1, 'rejoin', [1, 2, port2]), true);
  await a0.shutdown({ graceful: false });
  const b0 = createAgent({
    rank: 0,
    worldSize: 2,
    masterAddr: '127.0.0.1',
    bootstrapPort: port2,
    initTimeoutMs: 20_000,
  });
  agents.push(b0);
  await b0.start();
  assert.deepEqual(
    b0.getWorkerInfos().map((i) => i.name),
    ['worker0', 'worker1'],
  );
  assert.equal(await b0.rpcAsync('worker1', 'add', [20, 22]), 42);
  await assert.rejects(
    b0.rpcAsync('worker2', 'add', [1, 1]),
    (e: unknown) => (e as RpcError).code === 'UNKNOWN_WORKER',
  );
});

/**
 * Rank 0 here and a worker process as rank 1 (under `prefix`), both torn down after the test; resolves once the
 * data channel to the worker satisfies `ready` (10 s at most).
 */
async function pairWithWorker(
  t: { after(fn: () => Promise<void>): void },
  ready: Parameters<StreamConn['waitData']>[0],
  prefix: string[] = [],
): Promise<{ a0: RpcAgent; conn: StreamConn; child: ChildProcess }> {
  const port = await freePort();
  const child = spawnWorker(1, 2, port, prefix);
  const agents: RpcAgent[] = [];
  t.after(async () => {
    await Promise.all(agents.map((a) => a.shutdown({ graceful: false }).catch(() => undefined)));
    await kill(child);
  });
  const a0 = createAgent({
    rank: 0,
    worldSize: 2,
    masterAddr: '127.0.0.1',
    bootstrapPort: port,
    initTimeoutMs: 20_000,
  });
  agents.push(a0);
  await a0.start();
  const conn = a0.rawConnTo(1)!;
  await withTimeout(
    conn.waitData(ready),
    10_000,
    'data channel',
    () => new Error('data channel to worker1 not up after 10 s'),
  );
  return { a0, conn, child };
}

test('tensors received through shared memory from a worker stay intact after it is SIGKILLed', async (t) => {
  const shmBefore = readdirSync('/dev/shm').length;
  const { a0, conn, child } = await pairWithWorker(t, (d) => d.shmIn);
  // The worker may send by socket until our hello reached it: ask until an answer came through shared memory.
  let got: Float32Array = new Float32Array(0);
  for (let i = 0; i < 100 && conn.shmTransfers.in === 0; i++) {
    got = (await a0.rpcAsync(1, 'ones', [1 << 20])) as Float32Array; // 4 MiB
    if (conn.shmTransfers.in === 0) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(conn.shmTransfers.in, 1, 'an answer came through shared memory');
  await kill(child);
  // The pages live as long as our mapping does: the dead sender's segment is still ours to read.
  assert.equal(got.length, 1 << 20);
  assert.equal(
    got.reduce((s, v) => s + v, 0),
    1 << 20,
  );
  assert.equal(readdirSync('/dev/shm').length, shmBefore, 'nothing was created in /dev/shm');
});

// A worker in a PID namespace of its own stands for one in another container: neither side can open the other's
// segments through /proc, so the probe fails both ways and large frames take the socket.
const canUnshare = process.getuid?.() === 0 && existsSync('/usr/bin/unshare');
test(
  'a worker in another PID namespace cannot share memory: large tensors take the socket and arrive intact',
  { skip: canUnshare ? false : 'needs root and /usr/bin/unshare (a PID namespace for the worker)' },
  async (t) => {
    const unshare = ['/usr/bin/unshare', '--pid', '--fork', '--mount-proc', '--kill-child'];
    const { a0, conn, child } = await pairWithWorker(t, (d) => d.send !== null && d.recv !== null, unshare);
    for (let i = 0; i < 5; i++) {
      const got = (await a0.rpcAsync(1, 'ones', [1 << 20])) as Float32Array;
      assert.equal(
        got.reduce((s, v) => s + v, 0),
        1 << 20,
      );
    }
    assert.notEqual(await a0.rpcAsync(1, 'pid'), child.pid, 'the worker sees itself under another pid');
    assert.deepEqual(conn.shmTransfers, { out: 0, in: 0 });
  },
);
