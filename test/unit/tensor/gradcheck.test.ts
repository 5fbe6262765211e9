import { test } from 'node:test';
import {
  Generator,
  concat,
  conv2d,
  indexSelect,
  linear,
  matmul,
  rand,
  randn,
  stack,
  tensor,
  crossEntropy,
  mseLoss,
  nllLoss,
} from '../../../tensor/index.js';
import { gradcheck } from './gradcheck.js';

const g = new Generator(42);
const r = (shape: number[]) => randn(shape, { generator: g });
const pos = (shape: number[]) => rand(shape, { generator: g }).add(0.5);

test('add, sub, mul and div gradients match finite differences, with broadcasting', async () => {
  await gradcheck((a, b) => a.add(b), [r([2, 3]), r([3])]);
  await gradcheck((a, b) => a.sub(b), [r([2, 1, 3]), r([4, 1])]);
  await gradcheck((a, b) => a.mul(b), [r([2, 3]), r([2, 1])]);
  await gradcheck((a, b) => a.div(b), [r([3, 2]), pos([2])]);
  await gradcheck((a) => a.mul(3).add(1).sub(2).div(4), [r([5])]);
});

test('unary op gradients match finite differences', async () => {
  await gradcheck((a) => a.neg(), [r([4])]);
  await gradcheck((a) => a.exp(), [r([2, 3])]);
  await gradcheck((a) => a.log(), [pos([2, 3])]);
  await gradcheck((a) => a.sqrt(), [pos([6])]);
  await gradcheck((a) => a.pow(3), [r([6])]);
  await gradcheck((a) => a.pow(2), [r([6])]);
  await gradcheck((a) => a.sigmoid(), [r([2, 3])]);
  await gradcheck((a) => a.tanh(), [r([2, 3])]);
  // Keep values away from the kinks so finite differences are valid.
  await gradcheck((a) => a.relu(), [tensor([-1.5, -0.3, 0.4, 2.0])]);
  await gradcheck((a) => a.abs(), [tensor([-1.5, -0.3, 0.4, 2.0])]);
});

test('matmul, batched matmul and linear gradients match finite differences', async () => {
  await gradcheck((a, b) => matmul(a, b), [r([3, 4]), r([4, 2])]);
  await gradcheck((a, b) => matmul(a, b), [r([2, 3, 4]), r([4, 5])]);
  await gradcheck((a, b) => matmul(a, b), [r([2, 3, 4]), r([2, 4, 2])]);
  await gradcheck((x, w, b) => linear(x, w, b), [r([3, 4]), r([5, 4]), r([5])]);
  await gradcheck((x, w) => linear(x, w), [r([2, 2, 4]), r([3, 4])]);
});

test('reduction gradients match finite differences', async () => {
  await gradcheck((a) => a.sum(), [r([2, 3])]);
  await gradcheck((a) => a.sum(1), [r([2, 3, 2])]);
  await gradcheck((a) => a.sum([0, 2], true), [r([2, 3, 2])]);
  await gradcheck((a) => a.mean(0), [r([4, 3])]);
  await gradcheck(
    (a) => a.max(1).values,
    [
      tensor([
        [1, 5, 2],
        [7, 0, 3],
      ]),
    ],
  );
  await gradcheck((a) => a.max(), [tensor([1, 5, 2, 7, 0, 3])]);
});

test('softmax and logSoftmax gradients match finite differences along any dim', async () => {
  await gradcheck((a) => a.logSoftmax(1), [r([3, 4])]);
  await gradcheck((a) => a.logSoftmax(0), [r([3, 4])]);
  await gradcheck((a) => a.softmax(-1), [r([2, 2, 3])]);
});

test('shape op gradients match finite differences', async () => {
  await gradcheck((a) => a.reshape([3, -1]), [r([2, 3])]);
  await gradcheck((a) => a.transpose(0, 1), [r([2, 3])]);
  await gradcheck((a) => a.permute([2, 0, 1]), [r([2, 3, 4])]);
  await gradcheck((a) => a.slice(1, 1, 3), [r([2, 4])]);
  await gradcheck((a, b) => concat([a, b], 1), [r([2, 2]), r([2, 3])]);
  await gradcheck((a, b) => stack([a, b], 0), [r([2, 3]), r([2, 3])]);
  await gradcheck((a) => indexSelect(a, [2, 0, 2]), [r([3, 2])]);
  await gradcheck((a) => a.unsqueeze(1).squeeze(1).flatten(), [r([2, 3])]);
});

test('loss gradients match finite differences', async () => {
  await gradcheck((a) => crossEntropy(a, [1, 0, 3]), [r([3, 4])]);
  await gradcheck((a) => nllLoss(a.logSoftmax(1), [2, 2], { reduction: 'sum' }), [r([2, 3])]);
  await gradcheck((a) => crossEntropy(a, [1, 0], { reduction: 'none' }), [r([2, 3])]);
  await gradcheck((a, b) => mseLoss(a, b), [r([2, 3]), r([2, 3])]);
});

test('conv2d gradients match finite differences with stride, padding and bias', async () => {
  await gradcheck((x, w, b) => conv2d(x, w, b), [r([1, 2, 4, 4]), r([3, 2, 3, 3]), r([3])]);
  await gradcheck((x, w) => conv2d(x, w, null, { stride: 2, padding: 1 }), [r([2, 1, 5, 4]), r([2, 1, 3, 2])]);
  await gradcheck(
    (x, w, b) => conv2d(x, w, b, { stride: [1, 2], padding: [2, 0] }),
    [r([1, 2, 3, 5]), r([1, 2, 2, 3]), r([1])],
  );
});
