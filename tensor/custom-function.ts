// User-defined differentiable functions: the forward runs without recording, the output gets a node whose
// backward is the user's (possibly async) function. RPC uses it for distributed-autograd send/recv nodes.
import { TensorError, type CustomFunctionSpec } from './api.js';
import { FnNode, isGradEnabled, noGrad } from './autograd.js';
import { Tensor } from './tensor.js';

/** Returns `apply(inputs)`, which runs `spec.forward` and attaches `spec.backward` as the output's grad node. */
export function customFunction(spec: CustomFunctionSpec): (inputs: readonly Tensor[]) => Tensor {
  return (inputs) => {
    const out = noGrad(() => spec.forward(inputs));
    if (!(out instanceof Tensor)) {
      throw new TensorError('INVALID_ARGUMENT', `${spec.name}: forward must return a Tensor, got ${typeof out}`);
    }
    if (inputs.includes(out)) {
      throw new TensorError(
        'INVALID_ARGUMENT',
        `${spec.name}: forward must return a new tensor, not one of its inputs`,
      );
    }
    const needs = spec.outputRequiresGrad === true || inputs.some((t) => t.requiresGrad);
    if (isGradEnabled() && needs) {
      out._attachGradFn(new FnNode(spec.name, [...inputs], (g) => spec.backward(g), false));
    }
    return out;
  };
}
