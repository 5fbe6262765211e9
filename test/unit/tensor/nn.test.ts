import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  Adam,
  Conv2d,
  Flatten,
  Dropout,
  Generator,
  Linear,
  Module,
  ReLU,
  SGD,
  Sequential,
  Tensor,
  TensorError,
  crossEntropy,
  ones,
  tensor,
  zeros,
} from '../../../tensor/index.js';

class Net extends Module {
  fc1 = new Linear(4, 3, { generator: new Generator(1) });
  act = new ReLU();
  fc2 = new Linear(3, 2, { generator: new Generator(2) });
  constructor() {
    super();
    this.registerBuffer('steps', zeros([1]));
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(this.act.forward(this.fc1.forward(x)));
  }
}

test('modules name their parameters and buffers with dotted paths in registration order', () => {
  const net = new Net();
  assert.deepEqual(
    net.namedParameters().map(([n]) => n),
    ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias'],
  );
  assert.deepEqual(
    net.namedBuffers().map(([n]) => n),
    ['steps'],
  );
  assert.deepEqual(Object.keys(net.stateDict()), ['steps', 'fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']);
  const seq = new Sequential(new Linear(2, 3), new ReLU(), new Linear(3, 1));
  assert.deepEqual(Object.keys(seq.stateDict()), ['0.weight', '0.bias', '2.weight', '2.bias']);
  assert.equal(
    seq.parameters().every((p) => p.requiresGrad),
    true,
  );
});

test('Linear initialises within PyTorch default bounds and is reproducible with a seed', () => {
  const a = new Linear(100, 10, { generator: new Generator(5) });
  const b = new Linear(100, 10, { generator: new Generator(5) });
  assert.deepEqual(a.weight.toArray(), b.weight.toArray());
  assert.ok(a.weight.toArray().every((v) => Math.abs(v) <= 0.1));
  assert.ok(a.bias!.toArray().every((v) => Math.abs(v) <= 0.1));
  assert.ok(Math.max(...a.weight.toArray().map(Math.abs)) > 0.09);
  assert.deepEqual(a.forward(ones([7, 100])).shape, [7, 10]);
});

test('loadStateDict copies values in place and names missing, unexpected and mis-shaped keys', () => {
  const a = new Net();
  const b = new Net();
  b.fc1.weight.fill_(0.25);
  const w = a.fc1.weight;
  a.loadStateDict(b.stateDict());
  assert.equal(a.fc1.weight, w, 'parameters keep their identity');
  assert.deepEqual(a.fc1.weight.toArray(), b.fc1.weight.toArray());

  const sd = b.stateDict();
  delete sd['fc2.bias'];
  sd['extra'] = zeros([1]);
  sd['fc1.weight'] = zeros([4, 3]);
  assert.throws(
    () => a.loadStateDict(sd),
    (e: unknown) =>
      e instanceof TensorError &&
      e.code === 'STATE_DICT_MISMATCH' &&
      /"fc1.weight": shape \[4,3\] in the state dict, \[3,4\] in the model/.test(e.message) &&
      /missing keys: "fc2.bias"/.test(e.message) &&
      /unexpected keys: "extra"/.test(e.message),
  );
  assert.deepEqual(a.fc1.weight.toArray(), b.fc1.weight.toArray(), 'nothing copied on error');
  const res = a.loadStateDict({ 'fc1.bias': zeros([3]) }, { strict: false });
  assert.equal(res.missingKeys.length, 4);
});

test('Dropout zeroes and rescales in training mode and is the identity in eval mode', () => {
  const d = new Dropout(0.5, { generator: new Generator(3) });
  const x = ones([1000]);
  const y = d.forward(x).toArray();
  assert.ok(y.every((v) => v === 0 || v === 2));
  const zerosCount = y.filter((v) => v === 0).length;
  assert.ok(zerosCount > 400 && zerosCount < 600, `${zerosCount} zeros`);
  const seq = new Sequential(d);
  seq.eval();
  assert.equal(d.training, false);
  assert.equal(seq.forward(x), x);
});

test('SGD with momentum and weight decay follows the PyTorch update rule', () => {
  const p = tensor([1, -2], undefined, { requiresGrad: true });
  const opt = new SGD([p], { lr: 0.1, momentum: 0.9, weightDecay: 0.01 });
  p.grad = tensor([0.5, 0.5]);
  opt.step();
  // d = g + wd p = [0.51, 0.48]; buf = d; p -= lr * buf
  assert.ok(Math.abs(p.data[0]! - (1 - 0.051)) < 1e-6);
  const d1 = 0.5 + 0.01 * p.data[0]!;
  const buf = 0.9 * 0.51 + d1;
  const before = p.data[0]!;
  opt.step();
  assert.ok(Math.abs(p.data[0]! - (before - 0.1 * buf)) < 1e-6);
  opt.zeroGrad();
  assert.equal(p.grad, null);
});

test('Adam first step moves each weight by about lr against the gradient sign', () => {
  const p = tensor([1, -2, 3], undefined, { requiresGrad: true });
  const opt = new Adam([p], { lr: 0.01 });
  p.grad = tensor([0.3, -4, 0]);
  opt.step();
  assert.ok(Math.abs(p.data[0]! - 0.99) < 1e-5);
  assert.ok(Math.abs(p.data[1]! - -1.99) < 1e-5);
  assert.equal(p.data[2], 3);
});

test('optimizer state dicts restore momentum so training continues identically', () => {
  const run = (restoreAt: number | null): number[] => {
    const p = tensor([1, 2], undefined, { requiresGrad: true });
    let opt = new Adam([p], { lr: 0.1, weightDecay: 0.1 });
    for (let i = 0; i < 4; i++) {
      if (i === restoreAt) {
        const sd = opt.stateDict();
        opt = new Adam([p], { lr: 0.5 });
        opt.loadStateDict(sd);
      }
      p.grad = tensor([Math.sin(i), Math.cos(i)]);
      opt.step();
    }
    return p.toArray();
  };
  assert.deepEqual(run(2), run(null));
  const opt = new SGD([tensor([1])], { lr: 0.1 });
  assert.throws(
    () => opt.loadStateDict({ state: {}, paramGroups: [{ lr: 0.1, params: [0, 1] }] }),
    /saved for 2 parameters, this optimizer has 1/,
  );
});

test('a small MLP learns a separable problem with SGD and cross-entropy', async () => {
  const g = new Generator(11);
  const model = new Sequential(new Linear(2, 16, { generator: g }), new ReLU(), new Linear(16, 2, { generator: g }));
  const opt = new SGD(model.parameters(), { lr: 0.5, momentum: 0.9 });
  const xs: number[] = [];
  const ys: number[] = [];
  for (let i = 0; i < 64; i++) {
    const a = g.nextFloat() * 2 - 1;
    const b = g.nextFloat() * 2 - 1;
    xs.push(a, b);
    ys.push(a + b > 0 ? 1 : 0);
  }
  const x = tensor(xs, [64, 2]);
  let first = 0;
  let last = 0;
  for (let step = 0; step < 60; step++) {
    opt.zeroGrad();
    const loss = crossEntropy(model.forward(x), ys);
    if (step === 0) first = loss.item();
    last = loss.item();
    await loss.backward();
    opt.step();
  }
  assert.ok(last < first / 4, `loss ${first} → ${last}`);
});

test('a Conv2d layer produces the expected output shape and registers weight and bias', () => {
  const conv = new Conv2d(3, 8, 3, { padding: 1, stride: 2, generator: new Generator(1) });
  assert.deepEqual(
    conv.namedParameters().map(([n, p]) => `${n}:${p.shape}`),
    ['weight:8,3,3,3', 'bias:8'],
  );
  const net = new Sequential(conv, new ReLU(), new Flatten(), new Linear(8 * 4 * 4, 2));
  assert.deepEqual(net.forward(zeros([5, 3, 8, 8])).shape, [5, 2]);
  assert.throws(
    () => conv.forward(zeros([1, 2, 8, 8])),
    /expected \[N, C, H, W\] and \[O, C, kh, kw\] with the same C/,
  );
});
