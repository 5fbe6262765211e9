// DDP's overlap machinery without sockets: a fake two-rank process group whose peer holds identical gradients, so an
// allreduce doubles the buffer one macrotask after it is called (like socket I/O, it cannot progress while
// JavaScript runs synchronously).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ProcessGroup } from '../../../collective/api.js';
import { assignBucketsByArrival, DistributedDataParallel } from '../../../tensor/ddp.js';
import { Generator, Linear, ReLU, Sequential, crossEntropy, randn, tensor } from '../../../tensor/index.js';

interface FakeGroup {
  pg: ProcessGroup;
  /** Sizes (elements) of completed allreduces, with whether the caller's backward had returned yet. */
  completed: { numel: number; afterBackward: boolean }[];
  backwardDone: { value: boolean };
}

function fakeGroup(): FakeGroup {
  const completed: FakeGroup['completed'] = [];
  const backwardDone = { value: false };
  const pg = {
    rank: 0,
    worldSize: 2,
    allreduce<T extends Float32Array>(buf: T): Promise<T> {
      return new Promise((resolve) =>
        setImmediate(() => {
          for (let i = 0; i < buf.length; i++) buf[i] = buf[i]! * 2;
          completed.push({ numel: buf.length, afterBackward: backwardDone.value });
          resolve(buf);
        }),
      );
    },
    broadcast<T extends Float32Array>(buf: T): Promise<T> {
      return Promise.resolve(buf);
    },
  };
  return { pg: pg as unknown as ProcessGroup, completed, backwardDone };
}

function mlp(): Sequential {
  const g = new Generator(3);
  return new Sequential(
    new Linear(20, 16, { generator: g }),
    new ReLU(),
    new Linear(16, 12, { generator: g }),
    new ReLU(),
    new Linear(12, 4, { generator: g }),
  );
}

function batch(): { x: ReturnType<typeof randn>; y: number[] } {
  return { x: randn([8, 20], { generator: new Generator(9) }), y: [0, 1, 2, 3, 3, 2, 1, 0] };
}

describe('DistributedDataParallel overlap', () => {
  it('keeps parameters one node delivers together and closes a bucket before a unit that would overflow it', () => {
    // Arrival: params 5,4 (unit 0), 3,2 (unit 1), 1,0 (unit 2); 4-byte elements, first cap 50 B, cap 100 B.
    const numels = [20, 1, 6, 1, 3, 1];
    assert.deepEqual(assignBucketsByArrival([5, 4, 3, 2, 1, 0], [0, 0, 1, 1, 2, 2], numels, 100, 50), [
      [5, 4, 3, 2],
      [1, 0],
    ]);
    // A unit larger than the cap gets a bucket of its own, and the next unit starts a new one.
    assert.deepEqual(assignBucketsByArrival([0, 1, 2], [0, 1, 2], [30, 2, 2], 40, 40), [[0], [1, 2]]);
  });

  it('rebuilds buckets after the first pass so that a layer’s weight and bias share a bucket', async () => {
    const model = mlp();
    const { pg } = fakeGroup();
    // First cap fits the last Linear (52 floats) and the middle one (204) but not the first (336): 1.2 KB.
    const ddp = await DistributedDataParallel.create(model, pg, { firstBucketCapMb: 1200 / 2 ** 20, bucketCapMb: 25 });
    const before = ddp.bucketLayout.map((b) => b.names);
    const { x, y } = batch();
    await ddp.backward(crossEntropy(model.call(x), y));
    const after = ddp.bucketLayout.map((b) => b.names);
    assert.deepEqual(before, [['4.bias', '4.weight', '2.bias', '2.weight', '0.bias'], ['0.weight']]);
    assert.deepEqual(after, [
      ['4.weight', '4.bias', '2.weight', '2.bias'],
      ['0.weight', '0.bias'],
    ]);
  });

  it('lets an early bucket’s allreduce complete while backward is still running', async () => {
    const model = mlp();
    const fake = fakeGroup();
    const ddp = await DistributedDataParallel.create(model, fake.pg, {
      firstBucketCapMb: 1200 / 2 ** 20,
      bucketCapMb: 25,
    });
    const { x, y } = batch();
    await ddp.backward(crossEntropy(model.call(x), y)); // first pass rebuilds the buckets
    fake.completed.length = 0;
    for (const p of model.parameters()) p.grad = null;
    fake.backwardDone.value = false;
    await crossEntropy(model.call(x), y).backward();
    fake.backwardDone.value = true;
    await ddp.finishGradSync();
    assert.deepEqual(
      fake.completed.map((c) => [c.numel, c.afterBackward]),
      [
        [52 + 204, false],
        [336, true],
      ],
    );
  });

  it('averages to the single-process gradients', async () => {
    const single = mlp();
    const model = mlp();
    const ddp = await DistributedDataParallel.create(model, fakeGroup().pg, { firstBucketCapMb: 1200 / 2 ** 20 });
    const { x, y } = batch();
    for (let pass = 0; pass < 2; pass++) {
      for (const p of [...single.parameters(), ...model.parameters()]) p.grad = null;
      await crossEntropy(single.call(x), y).backward();
      await ddp.backward(crossEntropy(model.call(x), y));
      const a = single.parameters();
      const b = model.parameters();
      a.forEach((p, i) => assert.deepEqual(b[i]!.grad!.toArray(), p.grad!.toArray(), `pass ${pass} parameter ${i}`));
    }
  });

  it('with gradientAsBucketView leaves views of the buckets in .grad that still accumulate like copies', async () => {
    const single = mlp();
    const model = mlp();
    const ddp = await DistributedDataParallel.create(model, fakeGroup().pg, {
      firstBucketCapMb: 1200 / 2 ** 20,
      gradientAsBucketView: true,
    });
    const { x, y } = batch();
    for (let pass = 0; pass < 3; pass++) {
      // Pass 2 keeps the gradients of pass 1, so both sides accumulate into them.
      if (pass !== 2) for (const p of [...single.parameters(), ...model.parameters()]) p.grad = null;
      await crossEntropy(single.call(x), y).backward();
      await ddp.backward(crossEntropy(model.call(x), y));
      const a = single.parameters();
      const b = model.parameters();
      a.forEach((p, i) => assert.deepEqual(b[i]!.grad!.toArray(), p.grad!.toArray(), `pass ${pass} parameter ${i}`));
    }
    const [w0, b0] = model.parameters();
    assert.equal(w0!.grad!.data.buffer, b0!.grad!.data.buffer, 'weight and bias of one layer share the bucket');
  });

  it('does not yield during a backward pass whose hooks start no async work', async () => {
    const w = tensor([1, 2, 3], undefined, { requiresGrad: true });
    let ticked = false;
    setImmediate(() => (ticked = true));
    await w.mul(w).relu().sum().backward();
    assert.equal(ticked, false, 'a macrotask ran during a purely local backward');
    assert.deepEqual(w.grad?.toArray(), [2, 4, 6]);
  });
});
