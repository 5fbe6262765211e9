import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  Generator,
  Linear,
  ReLU,
  Sequential,
  Tanh,
  crossEntropy,
  linear,
  linearRelu,
  randn,
  relu,
  type Tensor,
} from '../../../tensor/index.js';
import { gradcheck } from './gradcheck.js';

const g = new Generator(5);
const r = (shape: number[]): Tensor => randn(shape, { generator: g });

async function gradsOf(f: (x: Tensor, w: Tensor, b: Tensor) => Tensor, seed: number): Promise<number[][]> {
  const gen = new Generator(seed);
  const x = randn([6, 5], { generator: gen, requiresGrad: true });
  const w = randn([4, 5], { generator: gen, requiresGrad: true });
  const b = randn([4], { generator: gen, requiresGrad: true });
  const out = f(x, w, b);
  await out
    .mul(randn(out.shape, { generator: gen }))
    .sum()
    .backward();
  return [out.toArray(), x.grad!.toArray(), w.grad!.toArray(), b.grad!.toArray()];
}

test('linearRelu gives the same values and gradients as relu(linear(...))', async () => {
  const fused = await gradsOf((x, w, b) => linearRelu(x, w, b), 11);
  const plain = await gradsOf((x, w, b) => relu(linear(x, w, b)), 11);
  assert.deepEqual(fused, plain);
  assert.ok(fused[0]!.some((v) => v === 0) && fused[0]!.some((v) => v > 0), 'the ReLU clamps some outputs, not all');
});

test('linearRelu gradients match finite differences, with and without a bias', async () => {
  // Inputs away from the kink: shift the bias so that few pre-activations sit near zero.
  await gradcheck((x, w, b) => linearRelu(x, w, b), [r([3, 4]), r([5, 4]), r([5])]);
  await gradcheck((x, w) => linearRelu(x, w), [r([2, 3, 4]), r([2, 4])]);
});

test('Sequential fuses Linear followed by ReLU without changing the loss or the gradients', async () => {
  const build = (): Sequential => {
    const gen = new Generator(1);
    return new Sequential(
      new Linear(8, 6, { generator: gen }),
      new ReLU(),
      new Linear(6, 5, { generator: gen }),
      new Tanh(),
      new Linear(5, 3, { generator: gen }),
      new ReLU(),
    );
  };
  const fusedModel = build();
  const x = randn([4, 8], { generator: new Generator(2) });
  const y = [0, 1, 2, 1];
  const out = fusedModel.call(x);
  assert.equal(out.gradFn?.name, 'LinearReluBackward');
  await crossEntropy(out, y).backward();
  // The unfused reference: the same modules called one by one.
  const plainModel = build();
  let h = x;
  for (let i = 0; i < plainModel.length; i++) h = plainModel.at(i).forward(h);
  assert.equal(h.gradFn?.name, 'ReluBackward');
  assert.deepEqual(out.toArray(), h.toArray());
  await crossEntropy(h, y).backward();
  const a = fusedModel.parameters();
  const b = plainModel.parameters();
  a.forEach((p, i) => assert.deepEqual(p.grad!.toArray(), b[i]!.grad!.toArray(), `parameter ${i}`));
});
