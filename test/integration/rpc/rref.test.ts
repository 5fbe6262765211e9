// RRef scenarios from PyTorch's rpc_test.py on in-process worlds of three agents.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { RpcError, type RRef, type RpcAgent } from '../../../rpc/index.js';
import { startWorld, stopWorld, waitFor } from './helpers.js';

class Counter {
  n = 0;
  add(k: number): number {
    this.n += k;
    return this.n;
  }
}

let w: RpcAgent[] = [];
const seenConfirmed: boolean[] = [];

function setup(a: RpcAgent): void {
  a.registerFunction('add', ((x: number, y: number) => x + y) as never);
  a.registerFunction('counter', (() => new Counter()) as never);
  a.registerFunction('ones', ((n: number) => new Float32Array(n).fill(1)) as never);
  a.registerFunction('boom', (() => {
    throw new TypeError('bad remote value');
  }) as never);
  // Receives an RRef owned elsewhere: by the time it runs the owner has confirmed the fork (PyTorch #34497).
  a.registerFunction('fetchPlus', (async (r: RRef<Float32Array>, k: number) => {
    seenConfirmed.push(r.confirmedByOwner());
    const v = await r.toHere();
    return v.map((x) => x + k);
  }) as never);
  // Returns an RRef owned by a third worker (test_rpc_return_rref).
  a.registerFunction('makeOn', ((owner: number, n: number) => a.remote(owner, 'ones', [n])) as never);
  a.registerFunction('remoteFetchPlus', ((to: number, r: RRef<Float32Array>, k: number) =>
    a.remote(to, 'fetchPlus', [r, k])) as never);
}

before(async () => {
  w = await startWorld(3, setup);
});
after(() => stopWorld(w));

test('remote returns an RRef at once and toHere copies the value', async () => {
  const r = w[0]!.remote<number>('worker1', 'add', [3, 4]);
  assert.equal(r.isOwner(), false);
  assert.deepEqual(r.owner(), { name: 'worker1', id: 1 });
  assert.equal(r.ownerName(), 'worker1');
  assert.equal(await r.toHere(), 7);
  assert.equal(r.confirmedByOwner(), true);
  assert.throws(() => r.localValue(), /only the owner 'worker1' holds the value/);
  await r.release();
});

test('a local RRef gives its value without any RPC', async () => {
  const r = w[0]!.rref(35);
  assert.equal(r.isOwner(), true);
  assert.equal(r.localValue(), 35);
  assert.equal(await r.toHere(), 35);
});

test('proxies run methods on the owner, synchronously or as a new remote RRef', async () => {
  const c = w[0]!.remote<Counter>(2, 'counter');
  assert.equal(await c.rpcSync().add(5), 5);
  assert.equal(await c.rpcAsync().add(2), 7);
  const r = c.remote().add(1);
  assert.equal(r.ownerName(), 'worker2');
  assert.equal(await r.toHere(), 8);
  await Promise.all([c.release(), r.release()]);
});

test('an RRef forked to a third worker is confirmed before the function runs, and the owner sees every deletion', async () => {
  const r = w[0]!.remote<Float32Array>(1, 'ones', [4]);
  const child = w[0]!.remote<Float32Array>(2, 'fetchPlus', [r, 3]);
  assert.deepEqual([...(await child.toHere())], [4, 4, 4, 4]);
  assert.equal(seenConfirmed.at(-1), true);
  // worker2's fork was made inside the call and is garbage now; release the parent and the result explicitly.
  await r.release();
  await child.release();
  await waitFor(() => w[0]!.rrefs.stats().pendingChildren === 0, 5000, 'the child accept');
  assert.equal(w[2]!.rrefs.stats().owners, 0);
});

test('an RRef returned from a call and owned by a third worker can be fetched', async () => {
  const r = (await w[0]!.rpcAsync(1, 'makeOn', [2, 3])) as RRef<Float32Array>;
  assert.equal(r.ownerName(), 'worker2');
  assert.deepEqual([...(await r.toHere())], [1, 1, 1]);
  await r.release();
});

test('an RRef forwarded user to user to user keeps working (forward chain)', async () => {
  const r = w[0]!.remote<Float32Array>(2, 'ones', [2]);
  // worker0 -> worker1 (user) -> worker1 remote on worker0 fetchPlus(r) : the RRef hops through two users.
  const hop = (await w[0]!.rpcAsync(1, 'remoteFetchPlus', [0, r, 5])) as RRef<Float32Array>;
  assert.deepEqual([...(await hop.toHere())], [6, 6]);
  await hop.release();
  await r.release();
});

test('the owner outlives its users and forgets the value only when the last user is gone, in any order', async () => {
  const r = w[0]!.remote<Float32Array>(1, 'ones', [2]);
  await r.toHere();
  const id = r.rrefId;
  // Hand the RRef to worker2 twice (two forks); worker2 keeps them in a registry.
  const kept: RRef[] = [];
  w[2]!.registerFunction('keep', ((x: RRef) => void kept.push(x)) as never);
  await w[0]!.rpcAsync(2, 'keep', [r]);
  await w[0]!.rpcAsync(2, 'keep', [r]);
  await waitFor(() => w[1]!.rrefs.ownerForks(id).length === 3, 5000, 'three forks on the owner');
  await r.release(); // the creator goes first
  assert.equal(w[1]!.rrefs.ownerForks(id).length, 2);
  assert.deepEqual([...((await kept[1]!.toHere()) as Float32Array)], [1, 1], 'the value survives its creator');
  await kept[1]!.release();
  await kept[1]!.release(); // idempotent
  assert.equal(w[1]!.rrefs.ownerForks(id).length, 1);
  await kept[0]!.release();
  assert.equal(w[1]!.rrefs.ownerForks(id).length, 0);
  assert.equal(w[1]!.rrefs.hasOwner(id), false);
  await assert.rejects(kept[0]!.toHere(), /after release/);
});

test('a remote error is kept on the RRef and raised by toHere', async () => {
  const r = w[0]!.remote(1, 'boom');
  await assert.rejects(r.toHere(), (e: unknown) => {
    return e instanceof RpcError && e.code === 'REMOTE_ERROR' && /TypeError: bad remote value/.test(e.message);
  });
  await r.release();
});

test('a user RRef that is garbage collected is deleted on the owner (FinalizationRegistry)', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  let id = '';
  await (async () => {
    const r = w[0]!.remote<Float32Array>(1, 'ones', [1]);
    await r.toHere();
    id = r.rrefId;
  })();
  assert.equal(w[1]!.rrefs.hasOwner(id), true);
  await waitFor(
    () => {
      gc();
      return !w[1]!.rrefs.hasOwner(id);
    },
    10_000,
    'the owner to drop the collected RRef',
  );
});
