// The operator's boundary with @kubernetes/client-node (1.4 on Node 20): credentials, the typed API clients,
// streaming watches, and the translation of client-node's errors into the operator's typed errors.
//
// - `loadKubeConfig` uses client-node's KubeConfig, so kubeconfig files, in-cluster service accounts, exec and
//   auth-provider plugins and token files all work as they do for kubectl.
// - `KubeApis` holds one instance of each typed API the operator calls plus client-node's `Watch`. client-node 1.4
//   builds a new http(s).Agent for every request (a new TCP + TLS connection per call); a request middleware swaps
//   it for one shared keep-alive agent with the same TLS options, so reconciles reuse connections.
// - `toOperatorError` is the only place that looks at client-node's ApiException: 409 → ApiConflictError,
//   404 → ApiNotFoundError, anything else (410, 422, ...) → ApiError with the HTTP status, 0 when there was none.
import http from 'node:http';
import https from 'node:https';
import {
  ApiException,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  ServerConfiguration,
  Watch,
  createConfiguration,
  type Middleware,
  type RequestContext,
  type ResponseContext,
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

type AgentWithOptions = (http.Agent | https.Agent) & { options?: Record<string, unknown> };

/**
 * Replaces the agent client-node made for a request with a shared keep-alive one built from the same options
 * (CA, client certificate and key, TLS verification). A new one is built when those options change (a rotated
 * client certificate from an exec plugin); proxy agents are left alone.
 */
export class KeepAliveAgents implements Middleware {
  private shared: { key: string; agent: http.Agent } | undefined;

  constructor(private readonly maxSockets = 32) {}

  pre(context: RequestContext): Promise<RequestContext> {
    const made = context.getAgent() as AgentWithOptions | undefined;
    const ctor: unknown = made?.constructor;
    if (made !== undefined && (ctor === http.Agent || ctor === https.Agent)) {
      const o = made.options ?? {};
      const tls = ctor === https.Agent;
      const key = [tls, o.ca, o.cert, o.key, o.pfx, o.passphrase, o.rejectUnauthorized, o.servername]
        .map((v) => String(v))
        .join('|');
      if (this.shared?.key !== key) {
        this.shared?.agent.destroy();
        const opts = { ...o, keepAlive: true, maxSockets: this.maxSockets };
        this.shared = { key, agent: tls ? new https.Agent(opts) : new http.Agent(opts) };
      }
      context.setAgent(this.shared.agent);
    }
    return Promise.resolve(context);
  }

  post(context: ResponseContext): Promise<ResponseContext> {
    return Promise.resolve(context);
  }

  close(): void {
    this.shared?.agent.destroy();
    this.shared = undefined;
  }
}

export class KubeApis {
  readonly core: CoreV1Api;
  readonly apps: AppsV1Api;
  readonly coordination: CoordinationV1Api;
  readonly custom: CustomObjectsApi;
  readonly watcher: Watch;
  private readonly agents = new KeepAliveAgents();

  constructor(readonly kc: KubeConfig) {
    const cluster = kc.getCurrentCluster();
    if (cluster === null)
      throw new BadOptionsError(`kubeconfig: current-context "${kc.getCurrentContext()}" names no cluster`);
    // What kc.makeApiClient does, plus the keep-alive middleware.
    const config = createConfiguration({
      baseServer: new ServerConfiguration(cluster.server, {}),
      authMethods: { default: kc },
      promiseMiddleware: [this.agents],
    });
    this.core = new CoreV1Api(config);
    this.apps = new AppsV1Api(config);
    this.coordination = new CoordinationV1Api(config);
    this.custom = new CustomObjectsApi(config);
    this.watcher = new Watch(kc);
  }

  /** Closes the shared keep-alive connections (watches close when their signal aborts). */
  close(): void {
    this.agents.close();
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
