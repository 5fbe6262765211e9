import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Tensor, TensorError, backward, customFunction, isGradEnabled, noGrad, tensor } from '../../../tensor/index.js';
import { gradcheck } from './gradcheck.js';

test('gradients accumulate across backward passes and across paths that reuse a tensor', async () => {
  const x = tensor([1, 2, 3], undefined, { requiresGrad: true });
  const y = x.mul(x).add(x).sum(); // d/dx = 2x + 1
  await y.backward();
  assert.deepEqual(x.grad?.toArray(), [3, 5, 7]);
  await x.mul(2).sum().backward();
  assert.deepEqual(x.grad?.toArray(), [5, 7, 9]);
});

test('a second backward through a freed graph fails unless retainGraph was set', async () => {
  const x = tensor([1, 2], undefined, { requiresGrad: true });
  const y = x.exp().sum();
  await y.backward(undefined, { retainGraph: true });
  await y.backward();
  assert.ok(Math.abs(x.grad!.data[0]! - 2 * Math.E) < 1e-5);
  await assert.rejects(y.backward(), (e: unknown) => e instanceof TensorError && e.code === 'GRAPH_FREED');
});

test('backward of a non-scalar root needs an explicit gradient of the same shape', async () => {
  const x = tensor([1, 2], undefined, { requiresGrad: true });
  const y = x.mul(3);
  await assert.rejects(y.backward(), /gradient is only implied for single-element roots/);
  await assert.rejects(
    y.backward(tensor([1, 1, 1])),
    (e: unknown) => e instanceof TensorError && e.code === 'SHAPE_MISMATCH',
  );
  await y.backward(tensor([1, 10]));
  assert.deepEqual(x.grad?.toArray(), [3, 30]);
  await assert.rejects(tensor([1]).backward(), (e: unknown) => e instanceof TensorError && e.code === 'NO_GRAD');
});

test('noGrad stops graph recording and detach leaves the graph', () => {
  const x = tensor([1, 2], undefined, { requiresGrad: true });
  const y = noGrad(() => {
    assert.equal(isGradEnabled(), false);
    return x.mul(2);
  });
  assert.equal(isGradEnabled(), true);
  assert.equal(y.requiresGrad, false);
  assert.equal(y.gradFn, null);
  const z = x.mul(2);
  assert.equal(z.requiresGrad, true);
  assert.equal(z.gradFn?.name, 'MulBackward');
  assert.equal(z.gradFn?.inputs[0], x);
  assert.equal(z.detach().requiresGrad, false);
  assert.equal(z.detach().data, z.data);
});

test('an async node backward is awaited and its gradient flows on to the leaves', async () => {
  const order: string[] = [];
  const slowDouble = customFunction({
    name: 'SlowDouble',
    forward: ([a]) => a!.mul(2),
    backward: async (g) => {
      order.push('slow:start');
      await new Promise((r) => setTimeout(r, 5));
      order.push('slow:end');
      return [g.mul(2)];
    },
  });
  const x = tensor([1, 2], undefined, { requiresGrad: true });
  const y = slowDouble([x]).mul(x).sum(); // y = 2x², dy/dx = 4x
  assert.equal(y.gradFn?.inputs[0]?.gradFn?.inputs[0]?.gradFn?.name, 'SlowDouble');
  x.registerGradReadyHook(() => order.push('x ready'));
  await y.backward();
  assert.deepEqual(x.grad?.toArray(), [4, 8]);
  assert.deepEqual(order, ['slow:start', 'slow:end', 'x ready']);
});

test('grad-ready hooks fire once per pass, after all paths contributed, in reverse order of use', async () => {
  const w1 = tensor([1, 2], undefined, { requiresGrad: true });
  const w2 = tensor([3, 4], undefined, { requiresGrad: true });
  const fired: string[] = [];
  const remove = w1.registerGradReadyHook((t) => fired.push(`w1=${t.grad?.toArray()}`));
  w2.registerGradReadyHook((t) => fired.push(`w2=${t.grad?.toArray()}`));
  const h = w1.mul(w1); // w1 used twice
  const y = h.mul(w2).sum();
  await y.backward();
  assert.deepEqual(fired, ['w2=1,4', 'w1=6,16']);
  remove();
  await w1.mul(w2).sum().backward();
  assert.deepEqual(fired, ['w2=1,4', 'w1=6,16', 'w2=2,6']);
});

test('the accumulate option receives leaf gradients instead of .grad', async () => {
  const x = tensor([1, 2], undefined, { requiresGrad: true });
  const got = new Map<Tensor, number[]>();
  await backward([x.mul(3).sum()], undefined, { accumulate: (leaf, g) => got.set(leaf, g.toArray()) });
  assert.equal(x.grad, null);
  assert.deepEqual(got.get(x), [3, 3]);
});

test('a custom function with outputRequiresGrad is reached by backward without local inputs', async () => {
  let called = 0;
  const recv = customFunction({
    name: 'Recv',
    forward: () => tensor([1, 2]),
    backward: async () => {
      called++;
      return [];
    },
    outputRequiresGrad: true,
  });
  const y = recv([]);
  assert.equal(y.requiresGrad, true);
  await y.mul(2).sum().backward();
  assert.equal(called, 1);
});

test('backward with several roots sums their contributions', async () => {
  const x = tensor([1, 2], undefined, { requiresGrad: true });
  await backward([x.mul(2).sum(), x.mul(x).sum()]);
  assert.deepEqual(x.grad?.toArray(), [4, 6]);
});

test('a node returning a gradient of the wrong shape is reported by name', async () => {
  const bad = customFunction({ name: 'Bad', forward: ([a]) => a!.mul(1), backward: () => [tensor([1, 2, 3])] });
  const x = tensor([1, 2], undefined, { requiresGrad: true });
  await assert.rejects(bad([x]).sum().backward(), /Bad: gradient for input 0 has shape \[3\], the input has \[2\]/);
});

test('gradcheck rejects a custom function whose backward is wrong', async () => {
  const wrong = customFunction({ name: 'WrongSquare', forward: ([a]) => a!.mul(a!), backward: (g) => [g] });
  await assert.rejects(
    gradcheck((a) => wrong([a]), [tensor([0.5, 1.5, -2])]),
    /autograd .* finite difference/,
  );
});

test('leaves never share a gradient buffer with each other or with the caller', async () => {
  const a = tensor([1, 2], undefined, { requiresGrad: true });
  const b = tensor([3, 4], undefined, { requiresGrad: true });
  await a.add(b).sum().backward();
  assert.notEqual(a.grad!.data, b.grad!.data);
  await a.add(b).sum().backward();
  assert.deepEqual(a.grad!.toArray(), [2, 2]);
  assert.deepEqual(b.grad!.toArray(), [2, 2]);
  const x = tensor([1, 2], undefined, { requiresGrad: true });
  const g = tensor([5, 6]);
  await x.add(1).backward(g);
  x.grad!.data[0] = 100;
  assert.deepEqual(g.toArray(), [5, 6]);
  const kept = tensor([7, 7]);
  const f = customFunction({ name: 'Keeps', forward: ([t]) => t!.mul(1), backward: () => [kept] });
  const z = tensor([0, 0], undefined, { requiresGrad: true });
  await f([z]).add(0).sum().backward();
  z.grad!.data[0] = -1;
  assert.deepEqual(kept.toArray(), [7, 7]);
});

test('in an MLP, parameter gradients become ready from the last layer to the first', async () => {
  const { Linear, ReLU, Sequential, crossEntropy, Generator, randn } = await import('../../../tensor/index.js');
  const g = new Generator(1);
  const model = new Sequential(
    new Linear(4, 8, { generator: g }),
    new ReLU(),
    new Linear(8, 8, { generator: g }),
    new ReLU(),
    new Linear(8, 3, { generator: g }),
  );
  const ready: string[] = [];
  for (const [name, p] of model.namedParameters()) p.registerGradReadyHook(() => ready.push(name));
  await crossEntropy(model.forward(randn([5, 4], { generator: g })), [0, 1, 2, 0, 1]).backward();
  const layerOrder = ready.map((n) => n.split('.')[0]).filter((l, i, all) => all.indexOf(l) === i);
  assert.deepEqual(layerOrder, ['4', '2', '0']);
  assert.equal(ready.length, 6);
});
