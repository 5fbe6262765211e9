// tensile/tensor: tensors, autograd, nn, losses, optimizers, data loading and safetensors checkpoints.
import { initBlas } from './sgemm.js';

export * from './api.js';
export {
  Tensor,
  tensor,
  scalar,
  zeros,
  ones,
  full,
  zerosLike,
  onesLike,
  randn,
  rand,
  uniform,
  arange,
} from './tensor.js';
export { backward, noGrad, isGradEnabled, setGradEnabled } from './autograd.js';
export * from './ops.js';
export { conv2d, type Conv2dOptions } from './conv.js';
export { Generator, Mt19937, defaultGenerator, manualSeed, randperm, torchRandperm } from './generator.js';
export { customFunction } from './custom-function.js';
export {
  saveSafetensors,
  loadSafetensors,
  encodeSafetensors,
  decodeSafetensors,
  type SafetensorsFile,
} from './safetensors.js';
export * as nn from './nn/index.js';
export * from './nn/index.js';
export { Optimizer, SGD, Adam, type SgdOptions, type AdamOptions, type OptimizerStateDict } from './optim.js';
export {
  TensorDataset,
  DataLoader,
  DistributedSampler,
  type Dataset,
  type Sampler,
  type DataLoaderOptions,
  type DistributedSamplerOptions,
} from './data.js';
export { initBlas, setBlas, blasName, jsSgemm, sgemm } from './sgemm.js';

// Pick up the native BLAS when the addon is built; the JS kernel serves until then and without it.
await initBlas();
