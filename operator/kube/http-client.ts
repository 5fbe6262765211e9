// A small Kubernetes REST client on node:http/https: kubeconfig or in-cluster credentials, JSON requests and
// streaming watches.
//
// Why not @kubernetes/client-node at run time: its 2.x line loads undici 8, which needs Node ≥ 22.19 and throws
// at import on Node 20 (tensile's floor). We still use its *types* (`import type`, erased at run time).
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ApiConflictError, ApiError, ApiNotFoundError, BadOptionsError } from '../api.js';

export interface KubeConnection {
  readonly server: URL;
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly token?: string;
  /** Re-read on every request (projected service-account tokens rotate). */
  readonly tokenFile?: string;
  readonly insecureSkipTlsVerify: boolean;
  /** The context's namespace, or the pod's namespace in cluster. */
  readonly namespace?: string;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

type Named<T> = { name: string } & T;
interface KubeconfigFile {
  'current-context'?: string;
  contexts?: Array<Named<{ context: { cluster: string; user: string; namespace?: string } }>>;
  clusters?: Array<
    Named<{
      cluster: {
        server: string;
        'certificate-authority-data'?: string;
        'certificate-authority'?: string;
        'insecure-skip-tls-verify'?: boolean;
      };
    }>
  >;
  users?: Array<
    Named<{
      user: {
        token?: string;
        tokenFile?: string;
        'client-certificate-data'?: string;
        'client-key-data'?: string;
        'client-certificate'?: string;
        'client-key'?: string;
      };
    }>
  >;
}

const b64 = (s: string | undefined) => (s !== undefined ? Buffer.from(s, 'base64') : undefined);
const file = (p: string | undefined) => (p !== undefined ? readFileSync(p) : undefined);

/** Reads a kubeconfig file (its current context). Throws BadOptionsError naming what is missing. */
export function connectionFromKubeconfig(path: string): KubeConnection {
  let cfg: KubeconfigFile;
  try {
    cfg = parseYaml(readFileSync(path, 'utf8')) as KubeconfigFile;
  } catch (err) {
    throw new BadOptionsError(`kubeconfig ${path}: cannot read: ${(err as Error).message}`);
  }
  const ctxName = cfg['current-context'];
  const ctx = cfg.contexts?.find((c) => c.name === ctxName)?.context;
  if (ctx === undefined) throw new BadOptionsError(`kubeconfig ${path}: current-context "${ctxName ?? ''}" not found`);
  const cluster = cfg.clusters?.find((c) => c.name === ctx.cluster)?.cluster;
  if (cluster === undefined) throw new BadOptionsError(`kubeconfig ${path}: cluster "${ctx.cluster}" not found`);
  const user = cfg.users?.find((u) => u.name === ctx.user)?.user ?? {};
  const ca = b64(cluster['certificate-authority-data']) ?? file(cluster['certificate-authority']);
  const cert = b64(user['client-certificate-data']) ?? file(user['client-certificate']);
  const key = b64(user['client-key-data']) ?? file(user['client-key']);
  return {
    server: new URL(cluster.server),
    ...(ca !== undefined ? { ca } : {}),
    ...(cert !== undefined ? { cert } : {}),
    ...(key !== undefined ? { key } : {}),
    ...(user.token !== undefined ? { token: user.token } : {}),
    ...(user.tokenFile !== undefined ? { tokenFile: user.tokenFile } : {}),
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    ...(ctx.namespace !== undefined ? { namespace: ctx.namespace } : {}),
  };
}

/** In-cluster credentials (service account), else $KUBECONFIG, else ~/.kube/config; or the given file. */
export function loadConnection(kubeconfig?: string): KubeConnection {
  if (kubeconfig !== undefined) return connectionFromKubeconfig(kubeconfig);
  const host = process.env.KUBERNETES_SERVICE_HOST;
  if (host !== undefined) {
    const port = process.env.KUBERNETES_SERVICE_PORT ?? '443';
    let namespace: string | undefined;
    try {
      namespace = readFileSync(join(SA_DIR, 'namespace'), 'utf8').trim();
    } catch {
      namespace = undefined;
    }
    return {
      server: new URL(`https://${host.includes(':') ? `[${host}]` : host}:${port}`),
      ca: readFileSync(join(SA_DIR, 'ca.crt')),
      tokenFile: join(SA_DIR, 'token'),
      insecureSkipTlsVerify: false,
      ...(namespace !== undefined ? { namespace } : {}),
    };
  }
  const env = process.env.KUBECONFIG?.split(':').find((p) => p !== '');
  return connectionFromKubeconfig(env ?? join(homedir(), '.kube', 'config'));
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface RequestOptions {
  readonly query?: Record<string, string | number | boolean | undefined>;
  readonly body?: unknown;
  readonly contentType?: string;
}

function errorFor(method: string, path: string, status: number, text: string): Error {
  let message = text;
  try {
    message = (JSON.parse(text) as { message?: string }).message ?? text;
  } catch {
    // not JSON: keep the text
  }
  const what = `${method} ${path}: ${message || `HTTP ${status}`}`;
  if (status === 409) return new ApiConflictError(what);
  if (status === 404) return new ApiNotFoundError(what);
  return new ApiError(what, status);
}

export class KubeHttp {
  private readonly agent: http.Agent;
  private readonly tls: boolean;

  constructor(readonly conn: KubeConnection) {
    this.tls = conn.server.protocol === 'https:';
    const opts = { keepAlive: true, maxSockets: 32 };
    this.agent = this.tls
      ? new https.Agent({
          ...opts,
          ...(conn.ca !== undefined ? { ca: conn.ca } : {}),
          ...(conn.cert !== undefined ? { cert: conn.cert } : {}),
          ...(conn.key !== undefined ? { key: conn.key } : {}),
          rejectUnauthorized: !conn.insecureSkipTlsVerify,
        })
      : new http.Agent(opts);
  }

  close(): void {
    this.agent.destroy();
  }

  private headers(contentType?: string): Record<string, string> {
    const h: Record<string, string> = { accept: 'application/json' };
    const token =
      this.conn.tokenFile !== undefined ? readFileSync(this.conn.tokenFile, 'utf8').trim() : this.conn.token;
    if (token !== undefined) h.authorization = `Bearer ${token}`;
    if (contentType !== undefined) h['content-type'] = contentType;
    return h;
  }

  private url(path: string, query?: RequestOptions['query']): URL {
    const base = this.conn.server.pathname.replace(/\/$/, '');
    const u = new URL(base + path, this.conn.server);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    return u;
  }

  private open(method: string, u: URL, contentType?: string): http.ClientRequest {
    return (this.tls ? https : http).request(u, { method, agent: this.agent, headers: this.headers(contentType) });
  }

  /** One JSON request. Throws ApiConflictError (409), ApiNotFoundError (404) or ApiError (others, 0 = no answer). */
  request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const u = this.url(path, opts.query);
    const body = opts.body !== undefined ? JSON.stringify(opts.body) : undefined;
    return new Promise<T>((resolve, reject) => {
      const req = this.open(method, u, body !== undefined ? (opts.contentType ?? 'application/json') : undefined);
      if (body !== undefined) req.setHeader('content-length', Buffer.byteLength(body));
      req.setTimeout(30_000, () => req.destroy(new Error('request timed out after 30000 ms')));
      req.on('error', (err) => reject(new ApiError(`${method} ${path}: ${err.message}`, 0, { cause: err })));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => reject(new ApiError(`${method} ${path}: ${err.message}`, 0, { cause: err })));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status < 200 || status >= 300) {
            reject(errorFor(method, path, status, text));
            return;
          }
          try {
            resolve((text === '' ? {} : JSON.parse(text)) as T);
          } catch (err) {
            reject(new ApiError(`${method} ${path}: bad JSON: ${(err as Error).message}`, status));
          }
        });
      });
      req.end(body);
    });
  }

  /**
   * Streams a watch. `onEvent` gets each event in order. Resolves when the server ends the stream (timeout) or
   * `signal` aborts; rejects on an HTTP error (410 Gone → ApiError with statusCode 410) or a broken connection.
   */
  watch(
    path: string,
    query: RequestOptions['query'],
    onEvent: (type: WatchEventType, obj: unknown) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const u = this.url(path, { ...query, watch: true });
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) {
        resolve();
        return;
      }
      const req = this.open('GET', u);
      const abort = () => {
        req.destroy();
        resolve();
      };
      signal.addEventListener('abort', abort, { once: true });
      const settle = (err?: Error) => {
        signal.removeEventListener('abort', abort);
        if (err !== undefined && !signal.aborted) reject(err);
        else resolve();
      };
      req.on('error', (err) => settle(new ApiError(`watch ${path}: ${err.message}`, 0, { cause: err })));
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => settle(errorFor('watch', path, status, Buffer.concat(chunks).toString('utf8'))));
          return;
        }
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line === '') continue;
            try {
              const ev = JSON.parse(line) as { type: WatchEventType; object: unknown };
              onEvent(ev.type, ev.object);
            } catch (err) {
              // Reject with the handler's own error (it may carry a 410), then drop the connection.
              settle(err as Error);
              req.destroy();
              return;
            }
          }
        });
        res.on('end', () => settle());
        res.on('error', (err) => settle(new ApiError(`watch ${path}: ${err.message}`, 0, { cause: err })));
      });
      req.end();
    });
  }
}
