import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  Generator,
  TensorError,
  arange,
  concat,
  jsSgemm,
  matmul,
  randn,
  tensor,
  zeros,
} from '../../../tensor/index.js';

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-5): void {
  assert.equal(actual.length, expected.length, 'lengths differ');
  for (let i = 0; i < expected.length; i++) {
    assert.ok(
      Math.abs(actual[i]! - expected[i]!) <= tol * (1 + Math.abs(expected[i]!)),
      `element ${i}: ${actual[i]} vs ${expected[i]}`,
    );
  }
}

test('tensor() infers shapes from nested arrays and rejects ragged ones', () => {
  const t = tensor([
    [1, 2, 3],
    [4, 5, 6],
  ]);
  assert.deepEqual(t.shape, [2, 3]);
  assert.deepEqual(t.tolist(), [
    [1, 2, 3],
    [4, 5, 6],
  ]);
  assert.deepEqual(t.strides, [3, 1]);
  assert.throws(
    () => tensor([[1, 2], [3]]),
    (e: unknown) => e instanceof TensorError && e.code === 'INVALID_ARGUMENT',
  );
  assert.throws(() => tensor([1, 2, 3], [2, 2]), /3 values do not fill shape \[2,2\]/);
  assert.equal(tensor(5).item(), 5);
  assert.equal(tensor([1, 2], { requiresGrad: true }).requiresGrad, true);
  assert.deepEqual(tensor([1, 2], { requiresGrad: true }).shape, [2]);
});

test('elementwise ops broadcast like PyTorch', () => {
  const a = tensor([
    [1, 2, 3],
    [4, 5, 6],
  ]);
  assert.deepEqual(a.add(tensor([10, 20, 30])).toArray(), [11, 22, 33, 14, 25, 36]);
  assert.deepEqual(a.mul(tensor([[2], [3]])).toArray(), [2, 4, 6, 12, 15, 18]);
  assert.deepEqual(
    tensor([[1], [2]])
      .sub(tensor([1, 2, 3]))
      .toArray(),
    [0, -1, -2, 1, 0, -1],
  );
  assert.deepEqual(a.div(2).toArray(), [0.5, 1, 1.5, 2, 2.5, 3]);
  assert.deepEqual(tensor(12).div(a).toArray(), [12, 6, 4, 3, 2.4000000953674316, 2]);
  assert.deepEqual(
    tensor([1])
      .sub(tensor([1, 2]))
      .toArray(),
    [0, -1],
  );
  assert.deepEqual(a.add(tensor([[[1]], [[2]]])).shape, [2, 2, 3]);
  assert.throws(() => a.add(tensor([1, 2])), /shapes \[2,3\] and \[2\] cannot be broadcast/);
});

test('unary ops compute the expected values', () => {
  const x = tensor([-1, 0, 2]);
  assert.deepEqual(x.relu().toArray(), [0, 0, 2]);
  close(x.exp().toArray(), [Math.exp(-1), 1, Math.exp(2)]);
  close(x.sigmoid().toArray(), [1 / (1 + Math.E), 0.5, 1 / (1 + Math.exp(-2))]);
  close(x.tanh().toArray(), [Math.tanh(-1), 0, Math.tanh(2)]);
  close(x.pow(2).toArray(), [1, 0, 4]);
  close(tensor([4, 9]).sqrt().toArray(), [2, 3]);
  close(tensor([1, Math.E]).log().toArray(), [0, 1]);
  assert.deepEqual(x.neg().toArray(), [1, -0, -2]);
});

test('matmul equals the naive product for 2-D, batched and broadcast right operands', () => {
  const g = new Generator(3);
  const naive = (a: Float32Array, b: Float32Array, m: number, k: number, n: number) => {
    const c = new Float64Array(m * n);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) c[i * n + j] += a[i * k + p]! * b[p * n + j]!;
    return c;
  };
  const a = randn([5, 7], { generator: g });
  const b = randn([7, 3], { generator: g });
  close(matmul(a, b).data, naive(a.data, b.data, 5, 7, 3), 1e-4);
  const ba = randn([2, 5, 7], { generator: g });
  const bb = randn([2, 7, 3], { generator: g });
  const out = matmul(ba, bb);
  assert.deepEqual(out.shape, [2, 5, 3]);
  close(out.data.subarray(15), naive(ba.data.subarray(35), bb.data.subarray(21), 5, 7, 3), 1e-4);
  close(matmul(ba, b).data.subarray(0, 15), naive(ba.data, b.data, 5, 7, 3), 1e-4);
  assert.throws(() => matmul(a, a), /inner dims 7 and 5 differ/);
});

test('the JS sgemm kernel handles every transpose combination, alpha, beta and leading dims', () => {
  const g = new Generator(9);
  const m = 37;
  const n = 45;
  const k = 300; // more than one KC slice
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const a = randn([m * k], { generator: g }).data;
      const b = randn([k * n], { generator: g }).data;
      const c0 = randn([m * n], { generator: g }).data;
      const A = (i: number, p: number) => (transA ? a[p * m + i]! : a[i * k + p]!);
      const B = (p: number, j: number) => (transB ? b[j * k + p]! : b[p * n + j]!);
      const want = new Float64Array(m * n);
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let p = 0; p < k; p++) s += A(i, p) * B(p, j);
          want[i * n + j] = 0.5 * s + 2 * c0[i * n + j]!;
        }
      }
      const c = Float32Array.from(c0);
      jsSgemm(transA, transB, m, n, k, 0.5, a, transA ? m : k, b, transB ? k : n, 2, c, n);
      close(c, want, 1e-4);
    }
  }
});

test('reductions along dims, keepdim, max with indices and argmax', () => {
  const a = tensor([
    [1, 5, 2],
    [7, 0, 3],
  ]);
  assert.equal(a.sum().item(), 18);
  assert.deepEqual(a.sum(0).toArray(), [8, 5, 5]);
  assert.deepEqual(a.sum(1, true).shape, [2, 1]);
  close(a.mean(1).toArray(), [8 / 3, 10 / 3]);
  const { values, indices } = a.max(1);
  assert.deepEqual(values.toArray(), [5, 7]);
  assert.deepEqual(indices.toArray(), [1, 0]);
  assert.deepEqual(a.argmax(0).toArray(), [1, 0, 1]);
  assert.equal(a.argmax().item(), 3);
  assert.equal(a.max().item(), 7);
  assert.throws(() => a.sum(2), /dim 2 is out of range for a 2-d tensor/);
});

test('reshape shares storage while transpose, slice and concat copy correct values', () => {
  const a = arange(6).reshape([2, 3]);
  const v = a.view([3, -1]);
  assert.deepEqual(v.shape, [3, 2]);
  assert.equal(v.data, a.data);
  assert.deepEqual(a.t().toArray(), [0, 3, 1, 4, 2, 5]);
  assert.deepEqual(a.slice(1, 1).toArray(), [1, 2, 4, 5]);
  assert.deepEqual(a.slice(0, -1).toArray(), [3, 4, 5]);
  assert.deepEqual(concat([a, zeros([1, 3])], 0).shape, [3, 3]);
  assert.deepEqual(concat([a, a], 1).toArray(), [0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5]);
  assert.deepEqual(arange(24).reshape([2, 3, 4]).permute([2, 0, 1]).shape, [4, 2, 3]);
  assert.throws(() => a.reshape([4, -1]), /cannot view \[2,3\]/);
});

test('softmax rows sum to one and logSoftmax is stable for large inputs', () => {
  const s = tensor([
    [1, 2, 3],
    [1000, 1000, 1000],
  ]).softmax(1);
  close(s.sum(1).toArray(), [1, 1]);
  close(s.slice(0, 1).toArray(), [1 / 3, 1 / 3, 1 / 3]);
  assert.ok(
    tensor([[1000, 0]])
      .logSoftmax(1)
      .toArray()
      .every(Number.isFinite),
  );
});
