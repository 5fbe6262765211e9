// Contract of the in-repo Kubernetes test API server and simulated kubelet.
// See index.ts for the user-facing summary.

import type { Logger } from '../../common/logger.js';

/** A Kubernetes object as stored: arbitrary JSON with standard metadata. */
export interface KObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: OwnerReference[];
  [field: string]: unknown;
}

/** The tree's one logger contract (common/logger.ts); the server and kubelet never print on their own. */
export { noopLogger, type Logger } from '../../common/logger.js';

export interface TestApiServerOptions {
  /** TCP port on 127.0.0.1; 0 (default) picks a free one. */
  port?: number;
  /** Period of the owner-reference garbage-collector sweep (default 100 ms). */
  gcIntervalMs?: number;
  /** How many change events the watch cache keeps; older resourceVersions get 410 Gone (default 10000). */
  watchWindowEvents?: number;
  /** Period of BOOKMARK events on watches that asked for them (default 1000 ms). */
  bookmarkIntervalMs?: number;
  /** Bind unscheduled pods to Ready nodes with room (default true). */
  scheduler?: boolean;
  /** Reject objects in namespaces that do not exist, like the real server (default true). */
  strictNamespaces?: boolean;
  /** Directory for the kubeconfig; default a fresh temp dir removed by stop(). */
  dir?: string;
  logger?: Logger;
}

export interface StatusCause {
  reason: string;
  message: string;
  field: string;
}

/**
 * An error answered to a client as a `Status` object. `code` is the literal
 * error kind; `httpStatus` and `reason` follow the Kubernetes conventions.
 */
export class ApiError extends Error {
  readonly code = 'K8S_API_ERROR' as const;
  constructor(
    readonly httpStatus: number,
    readonly reason: string,
    message: string,
    readonly details: { name?: string; group?: string; kind?: string; causes?: StatusCause[] } = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  toStatus(): KObject {
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.reason,
      details: this.details,
      code: this.httpStatus,
    };
  }
}

export const badRequest = (msg: string): ApiError => new ApiError(400, 'BadRequest', msg);
export const notFound = (resource: string, name: string, group = ''): ApiError =>
  new ApiError(404, 'NotFound', `${resource}${group ? '.' + group : ''} "${name}" not found`, {
    name,
    group,
    kind: resource,
  });
export const conflict = (resource: string, name: string, group = ''): ApiError =>
  new ApiError(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${resource}${group ? '.' + group : ''} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
    { name, group, kind: resource },
  );
export const alreadyExists = (resource: string, name: string, group = ''): ApiError =>
  new ApiError(409, 'AlreadyExists', `${resource}${group ? '.' + group : ''} "${name}" already exists`, {
    name,
    group,
    kind: resource,
  });
export const invalid = (kind: string, name: string, group: string, causes: StatusCause[]): ApiError =>
  new ApiError(
    422,
    'Invalid',
    `${kind}${group ? '.' + group : ''} "${name}" is invalid: ${causes.map((c) => (c.field ? c.field + ': ' : '') + c.message).join(', ')}`,
    { name, group, kind, causes },
  );
