// The operator's public face: `runOperator` (in process), `operatorMain` (`tensile operator`), the options schema,
// the ElasticJob types and the pure planner.
export * from './api.js';
export * from './v1alpha1/elasticjob-types.js';
export {
  OPERATOR_FLAGS,
  operatorOptionsSchema,
  parseOperatorOptions,
  type OperatorFlag,
  type OperatorOptions,
  type OperatorOptionsInput,
} from './config/operator-options.js';
export { planReconcile } from './controller/planner.js';
export type { Action, JobSnapshot, Plan, PodView } from './controller/planner.js';
export { KUBE_API_CALLS } from './kube/kube-client.js';
export { operatorMain } from './operator-cli.js';
export { runOperator, type OperatorHandle, type OperatorHooks } from './run-operator.js';
