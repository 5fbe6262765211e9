// The operator's boundary with @kubernetes/client-node (1.4 on Node 20): credentials, the typed API clients,
// streaming watches, and the translation of client-node's errors into the operator's typed errors.
//
// - `loadKubeConfig` uses client-node's KubeConfig, so kubeconfig files, in-cluster service accounts, exec and
//   auth-provider plugins and token files all work as they do for kubectl.
// - `KubeApis` holds one instance of each typed API the operator calls plus client-node's `Watch`.
// - `toOperatorError` is the only place that looks at client-node's ApiException: 409 → ApiConflictError,
//   404 → ApiNotFoundError, anything else (410, 422, ...) → ApiError with the HTTP status, 0 when there was none.
import {
  ApiException,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  Watch,
} from '@kubernetes/client-node';
import { ApiConflictError, ApiError, ApiNotFoundError, BadOptionsError, OperatorError } from '../api.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

/**
 * A kubeconfig file when `path` is given; else in-cluster credentials when KUBERNETES_SERVICE_HOST is set; else
 * $KUBECONFIG, then ~/.kube/config (client-node's `loadFromDefault`). Throws BadOptionsError naming what is wrong.
 */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  const where = path !== undefined ? `kubeconfig ${path}` : 'default kubeconfig';
  try {
    if (path !== undefined) kc.loadFromFile(path);
    else if (process.env.KUBERNETES_SERVICE_HOST !== undefined) kc.loadFromCluster();
    else kc.loadFromDefault();
  } catch (err) {
    throw new BadOptionsError(`${where}: cannot read: ${(err as Error).message}`);
  }
  if (kc.getCurrentCluster() === null) {
    throw new BadOptionsError(`${where}: current-context "${kc.getCurrentContext()}" names no cluster`);
  }
  return kc;
}

/** The namespace of the kubeconfig's current context (in cluster: the pod's namespace), if it names one. */
export function contextNamespace(kc: KubeConfig): string | undefined {
  const ns = kc.getContextObject(kc.getCurrentContext())?.namespace;
  return ns !== undefined && ns !== '' ? ns : undefined;
}

function messageOf(body: unknown): string | undefined {
  if (typeof body === 'string') {
    try {
      return (JSON.parse(body) as { message?: string }).message ?? (body !== '' ? body : undefined);
    } catch {
      return body !== '' ? body : undefined;
    }
  }
  if (body !== null && typeof body === 'object') {
    const m = (body as { message?: unknown }).message;
    return typeof m === 'string' ? m : undefined;
  }
  return undefined;
}

/** Translates anything client-node (or the network under it) throws into the operator's errors. */
export function toOperatorError(err: unknown, what: string): OperatorError {
  if (err instanceof OperatorError) return err;
  let status = 0;
  let message: string | undefined;
  if (err instanceof ApiException) {
    status = err.code;
    message = messageOf(err.body);
  } else if (err !== null && typeof err === 'object') {
    // Watch errors carry `statusCode`; network errors (node-fetch FetchError) have none.
    const s = (err as { statusCode?: unknown }).statusCode;
    if (typeof s === 'number') status = s;
    message = (err as Error).message;
  } else {
    message = String(err);
  }
  const text = `${what}: ${message ?? `HTTP ${status}`}`;
  if (status === 409) return new ApiConflictError(text, { cause: err });
  if (status === 404) return new ApiNotFoundError(text, { cause: err });
  return new ApiError(text, status, { cause: err });
}

/** Runs one client-node call and rethrows its failure as an operator error. */
export async function call<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toOperatorError(err, what);
  }
}

export class KubeApis {
  readonly core: CoreV1Api;
  readonly apps: AppsV1Api;
  readonly coordination: CoordinationV1Api;
  readonly custom: CustomObjectsApi;
  readonly watcher: Watch;

  constructor(readonly kc: KubeConfig) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.apps = kc.makeApiClient(AppsV1Api);
    this.coordination = kc.makeApiClient(CoordinationV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.watcher = new Watch(kc);
  }

  /**
   * Streams one watch through client-node's Watch. `onEvent` gets each event in order; if it throws, the watch is
   * closed and the promise rejects with that error. Resolves when the server ends the stream or `signal` aborts;
   * rejects with an operator error on an HTTP error (410 Gone → ApiError with statusCode 410) or a broken stream.
   */
  watch(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    onEvent: (type: WatchEventType, obj: unknown) => void,
    signal: AbortSignal,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) {
        resolve();
        return;
      }
      let request: AbortController | undefined;
      let settled = false;
      const settle = (err?: unknown) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        request?.abort();
        if (err !== undefined && err !== null && !signal.aborted) reject(toOperatorError(err, `watch ${path}`));
        else resolve();
      };
      const onAbort = () => settle();
      signal.addEventListener('abort', onAbort, { once: true });
      const params: Record<string, string | number | boolean> = {};
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') params[k] = v;
      this.watcher
        .watch(
          path,
          params,
          (type: string, obj: unknown) => {
            if (settled) return;
            try {
              onEvent(type as WatchEventType, obj);
            } catch (err) {
              settle(err);
            }
          },
          (err: unknown) => settle(err),
        )
        .then(
          (ctrl) => {
            request = ctrl;
            if (settled) ctrl.abort();
          },
          (err: unknown) => settle(err),
        );
    });
  }
}
