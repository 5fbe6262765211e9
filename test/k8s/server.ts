// HTTP face of the test API server: routing, discovery, OpenAPI stubs, content negotiation, watch streams.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ApiError, badRequest, noopLogger, notFound, type KObject, type TestApiServerOptions } from './api.js';
import { decodeK8sProtobuf, PROTOBUF_MAGIC } from './protobuf.js';
import { jsonPatch, mergePatch, PatchError, strategicMergePatch } from './patch.js';
import type { ResourceDef } from './resources.js';
import { parseFieldSelector, parseLabelSelector } from './selectors.js';
import { ApiState, type DeleteOptions, type WatchEvent, type WriteOptions } from './state.js';
import { toTable } from './table.js';

/** A pod log source a kubelet registers; returns undefined when it does not run that pod. */
export type PodLogSource = (namespace: string, name: string) => string | undefined;

export interface TestApiServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** A kubeconfig file (context `tensile-test`, namespace `default`) for kubectl and client-node. */
  readonly kubeconfigPath: string;
  /** Directory holding the kubeconfig (and kubectl's cache when run through kubectl()). */
  readonly dir: string;
  /** The same kubeconfig as YAML text (for `KubeConfig.loadFromString`). */
  readonly kubeconfig: string;
  /** In-process access to the cluster state (used by the simulated kubelet and by tests). */
  readonly state: ApiState;
  /** Kubelets register here so that `kubectl logs` works. */
  readonly logSources: Set<PodLogSource>;
  /** Ends every watch, closes every connection, removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

const MAX_BODY_BYTES = 16 * 1024 * 1024;
const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > MAX_BODY_BYTES) {
        reject(new ApiError(413, 'RequestEntityTooLarge', `request body larger than ${MAX_BODY_BYTES} bytes`));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseBody(buf: Buffer, contentType: string): unknown {
  if (/protobuf/.test(contentType) || buf.subarray(0, 4).equals(PROTOBUF_MAGIC)) return decodeK8sProtobuf(buf);
  const text = buf.toString('utf8');
  if (text.trim() === '') return undefined;
  try {
    if (/yaml/.test(contentType)) return parseYaml(text);
    return JSON.parse(text);
  } catch (err) {
    throw badRequest(
      `the request body is not valid ${/yaml/.test(contentType) ? 'YAML' : 'JSON'}: ${(err as Error).message}`,
    );
  }
}

function send(res: ServerResponse, code: number, body: unknown): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function kubeconfigYaml(url: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: tensile-test',
    '  cluster:',
    `    server: ${url}`,
    // client-node refuses plain HTTP unless TLS verification is explicitly off.
    '    insecure-skip-tls-verify: true',
    'contexts:',
    '- name: tensile-test',
    '  context:',
    '    cluster: tensile-test',
    '    user: tensile-test',
    '    namespace: default',
    'current-context: tensile-test',
    'users:',
    '- name: tensile-test',
    '  user:',
    '    token: tensile-test-token',
    '',
  ].join('\n');
}

interface Route {
  group: string;
  version: string;
  def: ResourceDef;
  namespace?: string;
  name?: string;
  sub?: string;
}

/** Starts the server on 127.0.0.1. See index.ts for what it serves. */
export async function startTestApiServer(options: TestApiServerOptions = {}): Promise<TestApiServer> {
  const logger = options.logger ?? noopLogger;
  const bookmarkIntervalMs = options.bookmarkIntervalMs ?? 1000;
  const state = new ApiState({
    watchWindowEvents: options.watchWindowEvents ?? 10000,
    strictNamespaces: options.strictNamespaces ?? true,
    scheduler: options.scheduler ?? true,
    logger,
  });
  const logSources = new Set<PodLogSource>();
  const closers = new Set<() => void>();
  const sockets = new Set<Socket>();

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      const e =
        err instanceof ApiError
          ? err
          : err instanceof PatchError
            ? new ApiError(422, 'Invalid', err.message)
            : new ApiError(500, 'InternalError', `internal error: ${(err as Error)?.message ?? String(err)}`);
      if (e.httpStatus >= 500) logger.error({ err, url: req.url }, 'test-apiserver: internal error');
      send(res, e.httpStatus, e.toStatus());
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const q = url.searchParams;
    let segs: string[];
    try {
      segs = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    } catch {
      throw badRequest(`malformed URL path "${url.pathname}"`);
    }
    const method = req.method ?? 'GET';
    logger.debug({ method, url: req.url }, 'test-apiserver: request');
    if (segs.length === 0) return send(res, 200, { paths: ['/api', '/apis', '/openapi/v3', '/version', '/healthz'] });
    if (['healthz', 'readyz', 'livez'].includes(segs[0])) {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      return void res.end('ok');
    }
    if (segs[0] === 'version')
      return send(res, 200, {
        major: '1',
        minor: '32',
        gitVersion: 'v1.32.0-tensile-test',
        gitCommit: 'tensile',
        gitTreeState: 'clean',
        buildDate: '2026-01-01T00:00:00Z',
        goVersion: 'go1.23',
        compiler: 'gc',
        platform: 'linux/amd64',
      });
    if (segs[0] === 'openapi') return openapi(segs, res);
    if (segs[0] !== 'api' && segs[0] !== 'apis') throw notFound('paths', url.pathname);
    // Discovery.
    if (segs[0] === 'api' && segs.length === 1)
      return send(res, 200, {
        kind: 'APIVersions',
        versions: ['v1'],
        serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1' }],
      });
    if (segs[0] === 'apis' && segs.length === 1)
      return send(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: groups() });
    if (segs[0] === 'apis' && segs.length === 2) {
      const g = groups().find((x) => x.name === segs[1]);
      if (!g) throw notFound('groups', segs[1]);
      return send(res, 200, { kind: 'APIGroup', apiVersion: 'v1', ...g });
    }
    const group = segs[0] === 'api' ? '' : segs[1];
    const version = segs[0] === 'api' ? segs[1] : segs[2];
    const rest = segs.slice(segs[0] === 'api' ? 2 : 3);
    if (rest.length === 0) return send(res, 200, resourceList(group, version));
    const route = parseRoute(group, version, rest);
    return serve(route, method, q, req, res);
  }

  function parseRoute(group: string, version: string, rest: string[]): Route {
    let namespace: string | undefined;
    let r = rest;
    if (r[0] === 'namespaces' && r.length >= 3 && !(r.length === 3 && ['status', 'finalize'].includes(r[2]))) {
      namespace = r[1];
      r = r.slice(2);
    }
    const def = state.lookup(group, version, r[0]);
    if (!def || r.length > 3) throw notFound(r[0] ?? '', r[1] ?? '', group);
    if (namespace !== undefined && !def.namespaced) throw notFound(r[0], r[1] ?? '', group);
    const sub = r[2];
    if (
      sub &&
      !(sub === 'status' && def.statusSubresource) &&
      !(sub === 'scale' && def.scale) &&
      !def.extraSubresources.includes(sub) &&
      !(def.plural === 'namespaces' && sub === 'finalize')
    )
      throw notFound(`${def.plural}/${sub}`, r[1], group);
    return { group, version, def, namespace, name: r[1], sub };
  }

  const gv = (def: ResourceDef, version: string): string => (def.group ? `${def.group}/${version}` : version);
  const out = (def: ResourceDef, version: string, o: KObject): KObject => ({ ...o, apiVersion: gv(def, version) });

  async function serve(
    route: Route,
    method: string,
    q: URLSearchParams,
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<void> {
    const { def, version, namespace, name, sub } = route;
    const accept = String(req.headers.accept ?? '');
    const wantTable = /as=Table/.test(accept);
    const wo: WriteOptions = {
      dryRun: q.get('dryRun') === 'All',
      fieldValidation: q.get('fieldValidation') ?? undefined,
    };
    const bodyOf = async (): Promise<unknown> =>
      parseBody(await readBody(req), String(req.headers['content-type'] ?? ''));

    if (name === undefined) {
      if (method === 'GET') {
        const labels = parseLabelSelector(q.get('labelSelector'));
        const fields = parseFieldSelector(q.get('fieldSelector'));
        if (q.get('watch') === 'true' || q.get('watch') === '1')
          return watch(route, q, req, res, wantTable, labels, fields);
        let items = state.list(def, namespace, labels, fields);
        const rv = state.currentResourceVersion();
        const cont = q.get('continue');
        if (cont) {
          let after: string;
          try {
            after = Buffer.from(cont, 'base64url').toString('utf8');
          } catch {
            throw badRequest(`invalid continue token "${cont}"`);
          }
          items = items.filter((o) => `${o.metadata.namespace ?? ''}/${o.metadata.name}` > after);
        }
        const limit = Number(q.get('limit') ?? 0);
        let next: string | undefined;
        if (limit > 0 && items.length > limit) {
          items = items.slice(0, limit);
          const last = items[items.length - 1];
          next = Buffer.from(`${last.metadata.namespace ?? ''}/${last.metadata.name}`).toString('base64url');
        }
        if (wantTable) {
          const t = toTable(
            def,
            version,
            items.map((o) => out(def, version, o)),
            rv,
            q.get('includeObject') ?? 'Metadata',
          );
          if (next) t.metadata.continue = next;
          return send(res, 200, t);
        }
        return send(res, 200, {
          kind: `${def.kind}List`,
          apiVersion: gv(def, version),
          metadata: { resourceVersion: rv, ...(next ? { continue: next } : {}) },
          items: items.map((o) => out(def, version, o)),
        });
      }
      if (method === 'POST') return send(res, 201, out(def, version, state.create(def, namespace, await bodyOf(), wo)));
      if (method === 'DELETE') {
        const opts = deleteOptions(q, await bodyOf());
        const labels = parseLabelSelector(q.get('labelSelector'));
        const fields = parseFieldSelector(q.get('fieldSelector'));
        const items: KObject[] = [];
        for (const o of state.list(def, namespace, labels, fields)) {
          try {
            items.push(out(def, version, state.delete(def, o.metadata.namespace, o.metadata.name!, opts)));
          } catch (err) {
            if (!(err instanceof ApiError && err.httpStatus === 404)) throw err;
          }
        }
        return send(res, 200, { kind: `${def.kind}List`, apiVersion: gv(def, version), metadata: {}, items });
      }
      throw new ApiError(405, 'MethodNotAllowed', `method ${method} is not allowed on a collection of ${def.plural}`);
    }

    if (sub === 'scale') {
      if (method === 'GET') return send(res, 200, state.getScale(def, namespace, name));
      if (method === 'PUT') return send(res, 200, state.updateScale(def, namespace, name, await bodyOf(), wo));
      if (method === 'PATCH') {
        const cur = state.getScale(def, namespace, name);
        const patched = applyPatch(cur, await bodyOf(), String(req.headers['content-type'] ?? ''), false);
        if (patched.metadata?.resourceVersion === cur.metadata.resourceVersion) delete patched.metadata.resourceVersion;
        return send(res, 200, state.updateScale(def, namespace, name, patched, wo));
      }
    }
    if (sub === 'log' && method === 'GET') {
      for (const src of logSources) {
        const text = src(namespace ?? 'default', name);
        if (text !== undefined) {
          res.writeHead(200, { 'Content-Type': 'text/plain' });
          return void res.end(text);
        }
      }
      state.get(def, namespace, name);
      throw badRequest(`container logs for pod "${name}" are not available: no kubelet runs it`);
    }
    if (sub === 'eviction' && method === 'POST') {
      const body = ((await bodyOf()) ?? {}) as Record<string, unknown>;
      state.get(def, namespace, name);
      state.setPodCondition(namespace!, name, {
        type: 'DisruptionTarget',
        status: 'True',
        reason: 'EvictionByEvictionAPI',
        message: 'Eviction API: evicting',
      });
      state.delete(def, namespace, name, deleteOptions(new URLSearchParams(), body.deleteOptions));
      return send(res, 201, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 });
    }
    if (sub === 'binding' && method === 'POST') {
      const body = ((await bodyOf()) ?? {}) as Record<string, unknown>;
      const target = (body.target ?? {}) as Record<string, unknown>;
      if (typeof target.name !== 'string') throw badRequest('binding: target.name is required');
      state.bindPod(namespace!, name, target.name);
      return send(res, 201, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 });
    }
    if (sub === 'finalize' && method === 'PUT') {
      const body = (await bodyOf()) as KObject;
      return send(res, 200, state.update(def, undefined, name, body, '', wo));
    }
    const isStatus = sub === 'status';
    if (method === 'GET') {
      const o = out(def, version, state.get(def, namespace, name));
      if (wantTable)
        return send(
          res,
          200,
          toTable(def, version, [o], state.currentResourceVersion(), q.get('includeObject') ?? 'Metadata'),
        );
      return send(res, 200, o);
    }
    if (method === 'PUT')
      return send(
        res,
        200,
        out(def, version, state.update(def, namespace, name, await bodyOf(), isStatus ? 'status' : '', wo)),
      );
    if (method === 'PATCH') {
      const ct = String(req.headers['content-type'] ?? '');
      if (!/json-patch|merge-patch|apply-patch/.test(ct))
        throw new ApiError(415, 'UnsupportedMediaType', `unsupported patch content type "${ct}"`);
      const body = await bodyOf();
      const cur = state.tryGet(def, namespace, name);
      if (!cur) {
        if (/apply-patch/.test(ct) && !isStatus) {
          const b = (body ?? {}) as KObject;
          return send(
            res,
            201,
            out(def, version, state.create(def, namespace, { ...b, metadata: { ...(b.metadata ?? {}), name } }, wo)),
          );
        }
        throw notFound(def.plural, name, def.group);
      }
      if (/strategic-merge-patch/.test(ct) && def.crd)
        throw new ApiError(
          415,
          'UnsupportedMediaType',
          `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`,
        );
      const patched = applyPatch(out(def, version, cur), body, ct, true);
      // A resourceVersion the client put in the patch is a precondition; otherwise the current one applies.
      const patchRv = ((body as KObject | undefined)?.metadata as Record<string, unknown> | undefined)?.resourceVersion;
      if (patchRv === undefined && patched.metadata) patched.metadata.resourceVersion = cur.metadata.resourceVersion;
      return send(
        res,
        200,
        out(def, version, state.update(def, namespace, name, patched, isStatus ? 'status' : '', wo)),
      );
    }
    if (method === 'DELETE') {
      const o = state.delete(def, namespace, name, { ...deleteOptions(q, await bodyOf()), ...wo });
      return send(res, 200, out(def, version, o));
    }
    throw new ApiError(405, 'MethodNotAllowed', `method ${method} is not allowed on ${def.plural}/${name}`);
  }

  function applyPatch(cur: KObject, body: unknown, ct: string, strict: boolean): KObject {
    let r: unknown;
    if (/json-patch/.test(ct)) r = jsonPatch(cur, body);
    else if (/strategic-merge-patch/.test(ct)) r = strategicMergePatch(cur, body);
    else if (/merge-patch/.test(ct) || /apply-patch/.test(ct)) {
      if (body === null || typeof body !== 'object' || Array.isArray(body))
        throw badRequest('a merge patch must be a JSON object');
      r = mergePatch(cur, body);
    } else if (strict) throw new ApiError(415, 'UnsupportedMediaType', `unsupported patch content type "${ct}"`);
    else r = mergePatch(cur, body);
    if (r === null || typeof r !== 'object' || Array.isArray(r))
      throw badRequest('the patch did not produce an object');
    return r as KObject;
  }

  function deleteOptions(q: URLSearchParams, body: unknown): DeleteOptions {
    const b = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
    const grace = q.get('gracePeriodSeconds') ?? b.gracePeriodSeconds;
    const policy = q.get('propagationPolicy') ?? b.propagationPolicy;
    if (policy !== undefined && policy !== null && !['Background', 'Foreground', 'Orphan'].includes(String(policy)))
      throw badRequest(`propagationPolicy "${String(policy)}" must be Background, Foreground or Orphan`);
    const g = grace === undefined || grace === null ? undefined : Number(grace);
    if (g !== undefined && (!Number.isInteger(g) || g < 0))
      throw badRequest(`gracePeriodSeconds "${String(grace)}" must be a non-negative integer`);
    return {
      gracePeriodSeconds: g,
      propagationPolicy: (policy ?? undefined) as DeleteOptions['propagationPolicy'],
      preconditions: b.preconditions as DeleteOptions['preconditions'],
      dryRun: Array.isArray(b.dryRun) && b.dryRun.includes('All'),
    };
  }

  function watch(
    route: Route,
    q: URLSearchParams,
    req: IncomingMessage,
    res: ServerResponse,
    wantTable: boolean,
    labels: ReturnType<typeof parseLabelSelector>,
    fields: ReturnType<typeof parseFieldSelector>,
  ): void {
    const { def, version, namespace } = route;
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Transfer-Encoding': 'chunked',
      'Cache-Control': 'no-cache',
    });
    res.flushHeaders();
    let ended = false;
    const write = (ev: WatchEvent): void => {
      if (ended) return;
      let object = ev.object;
      if (ev.type !== 'ERROR' && ev.type !== 'BOOKMARK') {
        object = out(def, version, object);
        if (wantTable)
          object = toTable(
            def,
            version,
            [object],
            object.metadata.resourceVersion ?? '',
            q.get('includeObject') ?? 'Metadata',
          );
      }
      res.write(JSON.stringify({ type: ev.type, object }) + '\n');
    };
    let unsubscribe = (): void => {};
    const timers: NodeJS.Timeout[] = [];
    const end = (): void => {
      if (ended) return;
      ended = true;
      unsubscribe();
      for (const t of timers) clearTimeout(t);
      closers.delete(end);
      res.end();
    };
    closers.add(end);
    req.on('close', end);
    res.on('error', end);
    try {
      let expired = false;
      unsubscribe = state.watch(
        def,
        { namespace, labels, fields, resourceVersion: q.get('resourceVersion') ?? undefined },
        (ev) => {
          if (ev.type === 'ERROR') expired = true;
          write(ev);
        },
      );
      if (expired) return end();
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(500, 'InternalError', String(err));
      write({ type: 'ERROR', object: e.toStatus() });
      return end();
    }
    if (q.get('allowWatchBookmarks') === 'true') {
      const tick = (): void => {
        write({
          type: 'BOOKMARK',
          object: {
            kind: def.kind,
            apiVersion: gv(def, version),
            metadata: { resourceVersion: state.currentResourceVersion() },
          },
        });
        timers[0] = setTimeout(tick, bookmarkIntervalMs);
      };
      timers[0] = setTimeout(tick, bookmarkIntervalMs);
    }
    const timeoutS = Number(q.get('timeoutSeconds') ?? 0);
    if (timeoutS > 0) timers.push(setTimeout(end, timeoutS * 1000));
  }

  // ---- discovery and OpenAPI ---------------------------------------------------------------------

  function groups(): Array<{
    name: string;
    versions: Array<{ groupVersion: string; version: string }>;
    preferredVersion: { groupVersion: string; version: string };
  }> {
    const byGroup = new Map<string, string[]>();
    for (const d of state.defs.values()) {
      if (!d.group) continue;
      const vs = byGroup.get(d.group) ?? [];
      for (const v of d.versions) if (!vs.includes(v)) vs.push(v);
      byGroup.set(d.group, vs);
    }
    return [...byGroup].map(([name, vs]) => ({
      name,
      versions: vs.map((v) => ({ groupVersion: `${name}/${v}`, version: v })),
      preferredVersion: { groupVersion: `${name}/${vs[0]}`, version: vs[0] },
    }));
  }

  function resourceList(group: string, version: string): KObject {
    const defs = [...state.defs.values()].filter((d) => d.group === group && d.versions.includes(version));
    if (defs.length === 0) throw notFound('groupversion', `${group}/${version}`);
    const resources: unknown[] = [];
    for (const d of defs) {
      resources.push({
        name: d.plural,
        singularName: d.singular,
        namespaced: d.namespaced,
        kind: d.kind,
        verbs: VERBS,
        ...(d.shortNames.length ? { shortNames: d.shortNames } : {}),
        ...(d.categories.length ? { categories: d.categories } : {}),
      });
      if (d.statusSubresource)
        resources.push({
          name: `${d.plural}/status`,
          singularName: '',
          namespaced: d.namespaced,
          kind: d.kind,
          verbs: ['get', 'patch', 'update'],
        });
      if (d.scale)
        resources.push({
          name: `${d.plural}/scale`,
          singularName: '',
          namespaced: d.namespaced,
          group: 'autoscaling',
          version: 'v1',
          kind: 'Scale',
          verbs: ['get', 'patch', 'update'],
        });
      for (const s of d.extraSubresources)
        resources.push({
          name: `${d.plural}/${s}`,
          singularName: '',
          namespaced: d.namespaced,
          ...(s === 'eviction' ? { group: 'policy', version: 'v1' } : {}),
          kind: s === 'eviction' ? 'Eviction' : s === 'binding' ? 'Binding' : 'Pod',
          verbs: s === 'log' ? ['get'] : ['create'],
        });
    }
    return {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      metadata: {},
      groupVersion: group ? `${group}/${version}` : version,
      resources,
    } as unknown as KObject;
  }

  // kubectl (create/apply, --validate=strict by default) asks OpenAPI v3 whether each kind's PATCH takes
  // the fieldValidation parameter; answering yes makes it rely on server-side validation instead of
  // downloading full schemas. Strategic merge patches then fall back to kubectl's built-in types.
  function openapi(segs: string[], res: ServerResponse): void {
    if (segs[1] === 'v2' && segs.length === 2) {
      // An empty (zero-byte) protobuf OpenAPI v2 Document: kubectl versions that validate against v2 (before
      // 1.27) find no schema for any kind and skip client-side validation instead of failing.
      res.writeHead(200, {
        'Content-Type': 'application/com.github.proto-openapi.spec.v2@v1.0+protobuf',
        'Content-Length': 0,
      });
      return void res.end();
    }
    if (segs[1] === 'v3' && segs.length === 2) {
      const paths: Record<string, { serverRelativeURL: string }> = {};
      const gvs = new Set<string>();
      for (const d of state.defs.values())
        for (const v of d.versions) gvs.add(d.group ? `apis/${d.group}/${v}` : `api/${v}`);
      const hash = state.currentResourceVersion();
      for (const p of gvs) paths[p] = { serverRelativeURL: `/openapi/v3/${p}?hash=${hash}` };
      return send(res, 200, { paths });
    }
    if (segs[1] === 'v3') {
      const group = segs[2] === 'api' ? '' : segs[3];
      const version = segs[2] === 'api' ? segs[3] : segs[4];
      const defs = [...state.defs.values()].filter((d) => d.group === group && d.versions.includes(version));
      if (defs.length === 0) throw notFound('openapi', segs.join('/'));
      const paths: Record<string, unknown> = {};
      const prefix = group ? `/apis/${group}/${version}` : `/api/${version}`;
      for (const d of defs) {
        const p = d.namespaced ? `${prefix}/namespaces/{namespace}/${d.plural}/{name}` : `${prefix}/${d.plural}/{name}`;
        paths[p] = {
          patch: {
            'x-kubernetes-group-version-kind': { group: d.group, version, kind: d.kind },
            parameters: [
              { name: 'fieldValidation', in: 'query', schema: { type: 'string', uniqueItems: true } },
              { name: 'dryRun', in: 'query', schema: { type: 'string', uniqueItems: true } },
              { name: 'fieldManager', in: 'query', schema: { type: 'string', uniqueItems: true } },
            ],
            responses: { '200': { description: 'OK' } },
          },
        };
      }
      return send(res, 200, {
        openapi: '3.0.0',
        info: { title: 'Kubernetes', version: 'v1.32.0' },
        paths,
        components: { schemas: {} },
      });
    }
    throw notFound('openapi', segs.join('/'));
  }

  // ---- lifecycle ---------------------------------------------------------------------------------

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'tensile-k8s-'));
  const kubeconfig = kubeconfigYaml(url);
  const kubeconfigPath = join(dir, 'kubeconfig');
  writeFileSync(kubeconfigPath, kubeconfig);
  const gcTimer = setInterval(() => state.runControllers(), options.gcIntervalMs ?? 100);
  gcTimer.unref();
  let stopped: Promise<void> | undefined;
  logger.info({ url }, 'test-apiserver: listening');

  return {
    url,
    port,
    kubeconfigPath,
    dir,
    kubeconfig,
    state,
    logSources,
    stop(): Promise<void> {
      stopped ??= (async () => {
        clearInterval(gcTimer);
        for (const c of [...closers]) c();
        state.close();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const s of sockets) s.destroy();
        await closed;
        if (ownDir) rmSync(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}
