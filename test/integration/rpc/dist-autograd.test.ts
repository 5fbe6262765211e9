// Distributed autograd and DistributedOptimizer (PyTorch dist_autograd_test.py / dist_optimizer_test.py scenarios).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, tensor, customFunction, SGD, backward } from '../../../tensor/index.js';
import { RpcError, type RpcAgent, type RRef } from '../../../rpc/index.js';
import { DistAutograd, DistributedOptimizer } from '../../../rpc/dist-autograd.js';
import { startWorld, stopWorld } from './helpers.js';

/** The distributed autograd extension createAgent installed on `a`. */
const autogradOf = (a: RpcAgent): DistAutograd => a.extension(DistAutograd)!;

let w: RpcAgent[] = [];
const params: Tensor[] = [];

function close(a: Tensor | undefined, b: Tensor | null | undefined, what: string): void {
  assert.ok(a && b, `${what}: missing gradient`);
  assert.deepEqual(a.shape, b.shape, `${what}: shape`);
  for (let i = 0; i < a.data.length; i++) {
    assert.ok(Math.abs(a.data[i]! - b.data[i]!) < 1e-4, `${what}[${i}]: ${a.data[i]} vs ${b.data[i]}`);
  }
}

function setup(a: RpcAgent): void {
  a.registerFunction('mulAdd', ((x: Tensor, y: Tensor) => x.mul(y).add(1)) as never);
  a.registerFunction('square', ((x: Tensor) => x.mul(x)) as never);
  // worker -> next worker -> back to the caller: a cycle of three hops.
  a.registerFunction('chain', (async (x: Tensor, next: number, back: number) => {
    const y = (await a.rpcAsync(next, 'square', [x.mul(2)])) as Tensor;
    const z = (await a.rpcAsync(back, 'square', [y.add(1)])) as Tensor;
    return z.mul(3);
  }) as never);
  a.registerFunction('failBackward', ((x: Tensor) =>
    customFunction({
      name: 'Fails',
      forward: ([t]) => t!.clone(),
      backward: () => {
        throw new Error('Simulate error on backward pass');
      },
    })([x])) as never);
  // A parameter owned by this worker; the forward uses it, the trainer gets an RRef to it.
  a.registerFunction('paramRRef', (() => {
    const p = tensor([0.5, -1, 2], [3], { requiresGrad: true });
    params[a.rank] = p;
    return a.rref(p);
  }) as never);
  a.registerFunction('forwardWithParam', ((x: Tensor) => x.mul(params[a.rank]!)) as never);
  a.registerFunction('hasContext', ((id: number) => autogradOf(a).hasContext(id)) as never);
}

before(async () => {
  w = await startWorld(3, setup);
});
after(() => stopWorld(w));

test('gradients from distributed autograd equal those of the same computation done locally', async () => {
  const ad = autogradOf(w[0]!);
  const xs = [1, 2, 3];
  const ys = [0.5, -1, 4];
  const grads = await ad.withContext(async (ctx) => {
    const x = tensor(xs, [3], { requiresGrad: true });
    const y = tensor(ys, [3], { requiresGrad: true });
    const r = (await w[0]!.rpcAsync(1, 'mulAdd', [x, y])) as Tensor;
    const loss = r.mul(x).sum();
    await ad.backward(ctx, [loss]);
    const g = ad.getGradients(ctx);
    assert.equal(x.grad, null, 'leaf .grad is untouched: gradients live in the context');
    return [g.get(x), g.get(y)];
  });
  const x = tensor(xs, [3], { requiresGrad: true });
  const y = tensor(ys, [3], { requiresGrad: true });
  await backward([x.mul(y).add(1).mul(x).sum()]);
  close(grads[0], x.grad, 'dx');
  close(grads[1], y.grad, 'dy');
});

test('backward runs across three workers including a cycle back to the root', async () => {
  const ad = autogradOf(w[0]!);
  const xs = [0.5, -1.5];
  const got = await ad.withContext(async (ctx) => {
    const x = tensor(xs, [2], { requiresGrad: true });
    // worker0 -> worker1 (chain) -> worker2 (square) and -> worker0 (square): a cycle through the root.
    const z = (await w[0]!.rpcAsync(1, 'chain', [x, 2, 0])) as Tensor;
    await ad.backward(ctx, [z.sum()]);
    return ad.getGradients(ctx).get(x);
  });
  const x = tensor(xs, [2], { requiresGrad: true });
  const y = x.mul(2).mul(x.mul(2));
  const z = y.add(1).mul(y.add(1)).mul(3);
  await backward([z.sum()]);
  close(got, x.grad, 'dx through the cycle');
});

test('two backward passes in one context accumulate like local .grad', async () => {
  const ad = autogradOf(w[1]!);
  const g = await ad.withContext(async (ctx) => {
    const x = tensor([1, 2], [2], { requiresGrad: true });
    const r = (await w[1]!.rpcAsync(2, 'square', [x])) as Tensor;
    const loss = r.sum();
    await ad.backward(ctx, [loss]);
    await ad.backward(ctx, [loss]);
    return ad.getGradients(ctx).get(x)!;
  });
  assert.deepEqual([...g.data], [4, 8]); // 2 * (2x)
});

test('a context is released on every worker it touched, nested ones included', async () => {
  let id = 0;
  await autogradOf(w[0]!).withContext(async (ctx) => {
    id = ctx;
    await w[0]!.rpcAsync(1, 'chain', [tensor([1], [1], { requiresGrad: true }), 2, 0]);
    assert.equal(await w[0]!.rpcAsync(1, 'hasContext', [ctx]), true);
    assert.equal(await w[0]!.rpcAsync(2, 'hasContext', [ctx]), true, 'the nested worker knows the context');
  });
  for (const a of w) assert.equal(autogradOf(a).hasContext(id), false, `${a.name} released ${id}`);
});

test('an RPC whose result is unused fails backward with an error instead of hanging', async () => {
  const ad = autogradOf(w[0]!);
  await ad.withContext(async (ctx) => {
    const x = tensor([1, 2], [2], { requiresGrad: true });
    await w[0]!.rpcAsync(1, 'square', [x]); // result dropped
    const loss = x.mul(3).sum();
    await assert.rejects(ad.backward(ctx, [loss]), (e: unknown) => {
      return e instanceof RpcError && e.code === 'AUTOGRAD' && /got no gradient .*to 'worker1'/.test(e.message);
    });
  });
});

test('an error in a remote backward surfaces at the root with the worker that raised it', async () => {
  const ad = autogradOf(w[0]!);
  await ad.withContext(async (ctx) => {
    const x = tensor([1], [1], { requiresGrad: true });
    const r = (await w[0]!.rpcAsync(2, 'failBackward', [x])) as Tensor;
    await assert.rejects(ad.backward(ctx, [r.sum()]), /On worker2: Error: Simulate error on backward pass/);
  });
});

test('backward refuses roots that are not scalars or do not require grad', async () => {
  const ad = autogradOf(w[0]!);
  await ad.withContext(async (ctx) => {
    await assert.rejects(ad.backward(ctx, [tensor([1, 2], [2], { requiresGrad: true })]), /is not a scalar/);
    await assert.rejects(ad.backward(ctx, [tensor([1], [1])]), /requiresGrad not set/);
  });
  assert.throws(() => ad.getGradients(12345), /Could not find autograd context with id: 12345/);
});

test('DistributedOptimizer steps SGD on two owners like local SGD', async () => {
  const a0 = w[0]!;
  const r1 = (await a0.rpcAsync(1, 'paramRRef')) as RRef<Tensor>;
  const r2 = (await a0.rpcAsync(2, 'paramRRef')) as RRef<Tensor>;
  const opt = await DistributedOptimizer.create(a0, SGD, [r1, r2], { lr: 0.1 });
  const xs = [1, 2, 3];
  await autogradOf(a0).withContext(async (ctx) => {
    const x = tensor(xs, [3], { requiresGrad: true });
    const y1 = (await a0.rpcAsync(1, 'forwardWithParam', [x])) as Tensor;
    const y2 = (await a0.rpcAsync(2, 'forwardWithParam', [x])) as Tensor;
    await autogradOf(a0).backward(ctx, [y1.mul(y2).sum()]);
    await opt.step(ctx);
  });
  // Local reference: p1, p2 = [0.5,-1,2]; loss = sum(x*p1 * x*p2); dL/dp1 = x^2 * p2.
  const p1 = tensor([0.5, -1, 2], [3], { requiresGrad: true });
  const p2 = tensor([0.5, -1, 2], [3], { requiresGrad: true });
  const x = tensor(xs, [3]);
  await backward([x.mul(p1).mul(x.mul(p2)).sum()]);
  new SGD([p1, p2], { lr: 0.1 }).step();
  close(await r1.toHere(), p1, 'param on worker1');
  close(await r2.toHere(), p2, 'param on worker2');
  await assert.rejects(
    DistributedOptimizer.create(a0, 'Nope', [r1], { lr: 1 }),
    /Error creating optimizer: .*'Nope' is not known/,
  );
  await Promise.all([r1.release(), r2.release()]);
});
