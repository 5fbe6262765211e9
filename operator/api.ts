// The operator's contract: the narrow Kubernetes client the controller calls, the logger it is given, and its
// errors. The options `runOperator` takes are one zod schema in `config/operator-options.ts`.
//
// Layout: `v1alpha1/` (the ElasticJob schema and CRD builder), `config/` (the options schema, the chart values
// schema and the generated files), `controller/planner.ts` (pure: snapshot → plan), `controller/elasticjob-
// controller.ts` (informers, work queue, executor), `controller/leader-election.ts` (Lease loop), `kube/`
// (`client-node.ts`: the @kubernetes/client-node boundary; `kube-client.ts`: the only file that calls its REST
// APIs; the informer), `run-operator.ts`, `operator-cli.ts` (`tensile operator`), `leader-handover.ts`,
// `probe-server.ts`, `index.ts` (exports).
import type { V1Lease, V1Pod, V1Service } from '@kubernetes/client-node';

/** The tree's one logger contract (common/logger.ts); the operator never writes to the console itself. */
export { noopLogger, type Logger } from '../common/logger.js';

/**
 * The closed set of operator error codes (docs/errors.md). Bare words: the class names the subsystem.
 *   INVALID_ARGUMENT  bad flags, environment or kubeconfig: the operator cannot start (BadOptionsError)
 *   CONFLICT          an API write lost a resourceVersion race (409): re-read and reconcile again
 *   NOT_FOUND         the object is gone (404)
 *   API_ERROR         any other API failure (statusCode; 0 when no answer came)
 */
export type OperatorErrorCode = 'INVALID_ARGUMENT' | 'CONFLICT' | 'NOT_FOUND' | 'API_ERROR';

/** Only bad input is terminal; the reconcile loop retries everything else with backoff (work-queue.ts). */
export const OPERATOR_TERMINAL: Readonly<Record<OperatorErrorCode, boolean>> = {
  INVALID_ARGUMENT: true,
  CONFLICT: false,
  NOT_FOUND: false,
  API_ERROR: false,
};

/** Base of the operator's errors; `terminal` comes from OPERATOR_TERMINAL. */
export class OperatorError extends Error {
  readonly code: OperatorErrorCode;
  readonly terminal: boolean;
  constructor(code: OperatorErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OperatorError';
    this.code = code;
    this.terminal = OPERATOR_TERMINAL[code];
  }
}

/** An API call answered 409: someone else wrote the object first (resourceVersion fencing). */
export class ApiConflictError extends OperatorError {
  override readonly code = 'CONFLICT' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super('CONFLICT', message, options);
    this.name = 'ApiConflictError';
  }
}

export class ApiNotFoundError extends OperatorError {
  override readonly code = 'NOT_FOUND' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super('NOT_FOUND', message, options);
    this.name = 'ApiNotFoundError';
  }
}

/** Any other API failure (status code in `statusCode`, 0 when the request never got an answer). */
export class ApiError extends OperatorError {
  override readonly code = 'API_ERROR' as const;
  readonly statusCode: number;
  constructor(message: string, statusCode: number, options?: { cause?: unknown }) {
    super('API_ERROR', message, options);
    this.name = 'ApiError';
    this.statusCode = statusCode;
  }
}

export class BadOptionsError extends OperatorError {
  override readonly code = 'INVALID_ARGUMENT' as const;
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
    this.name = 'BadOptionsError';
  }
}

export interface EventRecord {
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  readonly message: string;
}

/** A reference to the object an Event is about. */
export interface InvolvedObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly name: string;
  readonly namespace: string;
  readonly uid?: string;
}

/**
 * Every Kubernetes API call the operator makes. `kube/kube-client.ts` implements it on @kubernetes/client-node;
 * `KUBE_API_CALLS` lists the (group, resource, verb) triples so a test checks the chart's RBAC covers them.
 * Methods throw ApiConflictError (409), ApiNotFoundError (404) or ApiError.
 */
export interface KubeClient {
  getElasticJob(namespace: string, name: string): Promise<unknown>;
  /** Replaces the status subresource; `resourceVersion` in the body fences the write (409 when stale). */
  replaceElasticJobStatus(namespace: string, name: string, body: object): Promise<unknown>;
  deleteElasticJob(namespace: string, name: string): Promise<void>;
  createPod(namespace: string, pod: V1Pod): Promise<V1Pod>;
  /** Deletes a pod; `uid` is a precondition so a same-named replacement is never deleted by mistake. */
  deletePod(namespace: string, name: string, uid?: string): Promise<void>;
  createService(namespace: string, svc: V1Service): Promise<V1Service>;
  deleteService(namespace: string, name: string): Promise<void>;
  createEvent(involved: InvolvedObject, event: EventRecord, reportingInstance: string): Promise<void>;
  ensureManagedEtcd(namespace: string, image: string): Promise<string>;
  readLease(namespace: string, name: string): Promise<V1Lease | undefined>;
  createLease(namespace: string, lease: V1Lease): Promise<V1Lease>;
  replaceLease(namespace: string, name: string, lease: V1Lease): Promise<V1Lease>;
}

export interface KubeApiCall {
  readonly group: string;
  readonly resource: string;
  readonly verbs: readonly string[];
}
