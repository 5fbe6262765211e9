export { Module, type LoadStateDictOptions, type LoadStateDictResult } from './module.js';
export {
  Linear,
  Conv2d,
  ReLU,
  Sigmoid,
  Tanh,
  Identity,
  Flatten,
  Dropout,
  Sequential,
  uniformInit_,
  kaimingUniform_,
  type LinearOptions,
} from './layers.js';
export { crossEntropy, nllLoss, mseLoss, dropout, accuracy, type LossOptions } from './functional.js';
