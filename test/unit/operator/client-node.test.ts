// The operator's boundary with @kubernetes/client-node, against a scripted HTTP server on 127.0.0.1: kubeconfig
// loading, error translation, patch content types, and watches (events, server close, 410 Gone).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ApiException } from '@kubernetes/client-node';
import { ApiConflictError, ApiError, ApiNotFoundError, BadOptionsError } from '../../../operator/api.js';
import { ClientNodeKubeClient } from '../../../operator/kube/kube-client.js';
import {
  KubeApis,
  contextNamespace,
  loadKubeConfig,
  toOperatorError,
  type WatchEventType,
} from '../../../operator/kube/client-node.js';
import { Informer, type KObj } from '../../../operator/kube/informer.js';
import { podSource } from '../../../operator/kube/sources.js';

interface Seen {
  method: string;
  url: string;
  contentType: string | undefined;
  authorization: string | undefined;
  body: string;
}
type Route = (req: IncomingMessage, res: ServerResponse, body: string) => void;

const seen: Seen[] = [];
let route: Route = (_req, res) => res.writeHead(500).end();
let dir = '';
let kubeconfig = '';
const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    seen.push({
      method: req.method ?? '',
      url: req.url ?? '',
      contentType: req.headers['content-type'],
      authorization: req.headers.authorization,
      body,
    });
    route(req, res, body);
  });
});

before(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  dir = mkdtempSync(join(tmpdir(), 'tensile-kc-'));
  kubeconfig = join(dir, 'config');
  writeFileSync(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'current-context: t',
      'clusters: [{name: c, cluster: {server: "http://127.0.0.1:' +
        String(port) +
        '", insecure-skip-tls-verify: true}}]',
      'users: [{name: u, user: {token: secret-token}}]',
      'contexts: [{name: t, context: {cluster: c, user: u, namespace: ml}}]',
      '',
    ].join('\n'),
  );
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

const json = (res: ServerResponse, status: number, body: unknown) =>
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
const status = (code: number, message: string) => ({
  kind: 'Status',
  apiVersion: 'v1',
  status: 'Failure',
  code,
  message,
});

test('a kubeconfig that does not exist is a BadOptionsError naming the file', () => {
  assert.throws(
    () => loadKubeConfig(join(tmpdir(), 'no-such-kubeconfig-here')),
    (err: unknown) =>
      err instanceof BadOptionsError &&
      err.code === 'INVALID_ARGUMENT' &&
      err.terminal &&
      /no-such-kubeconfig-here/.test(err.message),
  );
});

test('a kubeconfig is read through client-node with its context namespace and bearer token', async () => {
  const kc = loadKubeConfig(kubeconfig);
  assert.equal(contextNamespace(kc), 'ml');
  const client = new ClientNodeKubeClient(new KubeApis(kc));
  route = (_req, res) =>
    json(res, 200, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'l' } });
  seen.length = 0;
  const lease = await client.readLease('ml', 'l');
  assert.equal(lease?.metadata?.name, 'l');
  assert.equal(seen[0]?.url, '/apis/coordination.k8s.io/v1/namespaces/ml/leases/l');
  assert.equal(seen[0]?.authorization, 'Bearer secret-token');
});

test('API failures become the operator errors: 409 conflict, 404 not found, others keep their status', async () => {
  const client = new ClientNodeKubeClient(new KubeApis(loadKubeConfig(kubeconfig)));
  const answers = [409, 404, 422, 410];
  route = (_req, res) => {
    const code = answers.shift() ?? 500;
    json(res, code, status(code, `scripted ${code}`));
  };
  await assert.rejects(
    client.createPod('ml', { metadata: { name: 'p' } }),
    (e: unknown) =>
      e instanceof ApiConflictError && e.code === 'CONFLICT' && !e.terminal && /scripted 409/.test(e.message),
  );
  await assert.rejects(
    client.getElasticJob('ml', 'j'),
    (e: unknown) => e instanceof ApiNotFoundError && e.code === 'NOT_FOUND' && !e.terminal,
  );
  await assert.rejects(
    client.replaceElasticJobStatus('ml', 'j', {}),
    (e: unknown) => e instanceof ApiError && e.statusCode === 422 && /scripted 422/.test(e.message),
  );
  await assert.rejects(
    client.deletePod('ml', 'p', 'uid-1'),
    (e: unknown) => e instanceof ApiError && e.statusCode === 410,
  );
  assert.equal(await client.readLease('ml', 'gone').catch(() => 'threw'), 'threw'); // 500: not swallowed
});

test('errors that are not HTTP answers become ApiError with status 0', () => {
  const e = toOperatorError(new Error('connect ECONNREFUSED 127.0.0.1:1'), 'get pods');
  assert.ok(e instanceof ApiError);
  assert.equal(e.statusCode, 0);
  assert.match(e.message, /get pods: connect ECONNREFUSED/);
  const ex = toOperatorError(new ApiException(404, 'nope', '{"message":"pods \\"x\\" not found"}', {}), 'get pod');
  assert.ok(ex instanceof ApiNotFoundError);
  assert.match(ex.message, /pods "x" not found/);
});

test('a status merge patch is sent as application/merge-patch+json to the status subresource', async () => {
  const client = new ClientNodeKubeClient(new KubeApis(loadKubeConfig(kubeconfig)));
  route = (_req, res) => json(res, 200, { metadata: { name: 'j' }, status: { state: 'Running' } });
  seen.length = 0;
  await client.patchElasticJobStatus('ml', 'j', { status: { state: 'Running' } });
  assert.equal(seen[0]?.method, 'PATCH');
  assert.equal(seen[0]?.url, '/apis/tensile.dev/v1alpha1/namespaces/ml/elasticjobs/j/status');
  assert.equal(seen[0]?.contentType, 'application/merge-patch+json');
  assert.deepEqual(JSON.parse(seen[0]?.body ?? ''), { status: { state: 'Running' } });
});

test('a pod delete carries the uid precondition so a same-named replacement is never deleted', async () => {
  const client = new ClientNodeKubeClient(new KubeApis(loadKubeConfig(kubeconfig)));
  route = (_req, res) => json(res, 200, { kind: 'Status', status: 'Success' });
  seen.length = 0;
  await client.deletePod('ml', 'p', 'uid-7');
  assert.equal(seen[0]?.method, 'DELETE');
  assert.deepEqual(JSON.parse(seen[0]?.body ?? '{}').preconditions, { uid: 'uid-7' });
});

test('a watch delivers events in order, asks for bookmarks and resolves when the server ends it', async () => {
  const apis = new KubeApis(loadKubeConfig(kubeconfig));
  route = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write(`${JSON.stringify({ type: 'ADDED', object: { metadata: { name: 'a', resourceVersion: '2' } } })}\n`);
    res.end(`${JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '3' } } })}\n`);
  };
  seen.length = 0;
  const events: string[] = [];
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 10_000);
  await apis.watch(
    '/api/v1/pods',
    { resourceVersion: '1', allowWatchBookmarks: true },
    (type: WatchEventType, obj: unknown) => {
      events.push(`${type} ${(obj as KObj).metadata?.resourceVersion ?? ''}`);
    },
    ac.signal,
  );
  clearTimeout(timer);
  assert.deepEqual(events, ['ADDED 2', 'BOOKMARK 3']);
  const q = new URL(seen[0]?.url ?? '', 'http://x').searchParams;
  assert.equal(q.get('watch'), 'true');
  assert.equal(q.get('resourceVersion'), '1');
  assert.equal(q.get('allowWatchBookmarks'), 'true');
});

test('a watch answered 410 Gone rejects with ApiError status 410', async () => {
  const apis = new KubeApis(loadKubeConfig(kubeconfig));
  route = (_req, res) => json(res, 410, status(410, 'too old resource version'));
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 10_000);
  await assert.rejects(
    apis.watch('/api/v1/pods', { resourceVersion: '1' }, () => {}, ac.signal),
    (e: unknown) => e instanceof ApiError && e.statusCode === 410,
  );
  clearTimeout(timer);
});

test('an informer on client-node relists after an ERROR 410 event and sees deletes missed meanwhile', async (t) => {
  const apis = new KubeApis(loadKubeConfig(kubeconfig));
  const lists = [
    { rv: '10', names: ['a', 'b'] },
    { rv: '20', names: ['a'] },
  ];
  let watches = 0;
  route = (req, res) => {
    const u = new URL(req.url ?? '', 'http://x');
    if (u.searchParams.get('watch') !== 'true') {
      const l = lists.shift() ?? { rv: '30', names: ['a'] };
      json(res, 200, {
        kind: 'PodList',
        apiVersion: 'v1',
        metadata: { resourceVersion: l.rv },
        items: l.names.map((n) => ({ metadata: { name: n, namespace: 'ml', resourceVersion: '5' } })),
      });
      return;
    }
    watches += 1;
    res.writeHead(200, { 'content-type': 'application/json' });
    if (watches === 1) {
      res.end(`${JSON.stringify({ type: 'ERROR', object: status(410, 'too old resource version') })}\n`);
      return;
    }
    res.write('\n'); // later watches stay open until the informer stops
  };
  const inf = new Informer<KObj>(podSource(apis, 'ml'));
  const deleted: string[] = [];
  inf.on('delete', (o) => deleted.push(o.metadata?.name ?? ''));
  t.after(() => inf.stop());
  await inf.start();
  assert.equal(inf.size, 2);
  const deadline = Date.now() + 10_000;
  while (deleted.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(deleted, ['b']);
  assert.deepEqual(
    inf.list().map((o) => o.metadata?.name),
    ['a'],
  );
});

test('consecutive API calls reuse keep-alive connections instead of a new one per call', async () => {
  const apis = new KubeApis(loadKubeConfig(kubeconfig));
  const client = new ClientNodeKubeClient(apis);
  // Count the client sockets that carried these calls (by remote port), not every connection the server accepts:
  // a watch of an earlier test reconnecting meanwhile must not count.
  const sockets = new Set<number | undefined>();
  route = (req, res) => {
    sockets.add(req.socket.remotePort);
    json(res, 200, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'l' } });
  };
  for (let i = 0; i < 5; i += 1) await client.readLease('ml', 'l');
  apis.close();
  // One connection, or two: Node puts a socket back in the pool a tick after the response body ends, and under load
  // the next call can be issued in between. Without the shared agent every call opens its own (5 or more).
  assert.ok(sockets.size <= 2, `5 calls went over ${sockets.size} connections`);
});
