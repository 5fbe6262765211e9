// Numerical gradient check: compares autograd gradients of sum(f(inputs) * w) (w fixed random weights) with
// central finite differences. Values are float32, so the tolerance is loose but still catches wrong formulas.
import assert from 'node:assert/strict';
import { Generator, Tensor, noGrad, randn } from '../../../tensor/index.js';

export async function gradcheck(
  f: (...xs: Tensor[]) => Tensor,
  inputs: Tensor[],
  { eps = 1e-2, atol = 2e-2, rtol = 2e-2, seed = 7 } = {},
): Promise<void> {
  for (const x of inputs) {
    x.requiresGrad = true;
    x.grad = null;
  }
  const out0 = f(...inputs);
  const w = randn(out0.shape, { generator: new Generator(seed) });
  const loss = out0.mul(w).sum();
  await loss.backward();
  const value = (): number =>
    noGrad(() => {
      const o = f(...inputs);
      let s = 0;
      for (let i = 0; i < o.numel; i++) s += o.data[i]! * w.data[i]!;
      return s;
    });
  inputs.forEach((x, xi) => {
    assert.ok(x.grad !== null, `input ${xi} got no gradient`);
    for (let i = 0; i < x.numel; i++) {
      const orig = x.data[i]!;
      x.data[i] = orig + eps;
      const up = value();
      x.data[i] = orig - eps;
      const down = value();
      x.data[i] = orig;
      const numeric = (up - down) / (2 * eps);
      const analytic = x.grad.data[i]!;
      assert.ok(
        Math.abs(numeric - analytic) <= atol + rtol * Math.abs(numeric),
        `input ${xi} element ${i}: autograd ${analytic}, finite difference ${numeric}`,
      );
    }
  });
}
