import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  kubectl,
  startKubelet,
  startTestApiServer,
  waitFor,
  type Kubelet,
  type KObject,
  type TestApiServer,
} from '../../k8s/index.js';

const POD = (label: string): string => `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: team
  labels: { app: web, rev: "${label}" }
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: tensile:test
      command: [sh, -c, "sleep 30"]
      env: [{ name: A, value: "1" }]
`;

describe('test API server with real kubectl on built-in kinds', () => {
  let server: TestApiServer;
  let kubelet: Kubelet;
  let dir: string;

  before(async () => {
    server = await startTestApiServer();
    kubelet = await startKubelet({ server, nodeName: 'worker-1' });
    dir = mkdtempSync(join(tmpdir(), 'tensile-kubectl-test-'));
  });
  after(async () => {
    await kubelet?.stop();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('creates namespaces and configmaps with the typed (protobuf) kubectl create commands', async () => {
    const ns = await kubectl(server, ['create', 'namespace', 'team']);
    assert.equal(ns.code, 0, ns.stderr);
    const cm = await kubectl(server, ['-n', 'team', 'create', 'configmap', 'cfg', '--from-literal=mode=fast']);
    assert.equal(cm.code, 0, cm.stderr);
    const got = await kubectl(server, ['-n', 'team', 'get', 'configmap', 'cfg', '-o', 'jsonpath={.data.mode}']);
    assert.equal(got.stdout, 'fast');
  });

  it('applies a pod, re-applies a label change as a strategic merge patch, and shows it in kubectl get', async () => {
    const p = join(dir, 'pod.yaml');
    writeFileSync(p, POD('1'));
    const c = await kubectl(server, ['apply', '-f', p]);
    assert.equal(c.code, 0, c.stderr);
    writeFileSync(p, POD('2'));
    const u = await kubectl(server, ['apply', '-f', p]);
    assert.equal(u.code, 0, u.stderr);
    assert.match(u.stdout, /pod\/web configured/);
    await waitFor(
      'web running',
      async () =>
        (await kubectl(server, ['-n', 'team', 'get', 'pod', 'web', '-o', 'jsonpath={.status.phase}'])).stdout ===
        'Running',
    );
    const table = await kubectl(server, ['-n', 'team', 'get', 'pods', '-l', 'rev=2', '-o', 'wide']);
    assert.equal(table.code, 0, table.stderr);
    const [header, row] = table.stdout.trim().split('\n');
    assert.deepEqual(header.split(/\s+/), ['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE', 'IP', 'NODE']);
    const cells = row.split(/\s+/);
    assert.deepEqual(
      [cells[0], cells[1], cells[2], cells[5], cells[6]],
      ['web', '1/1', 'Running', '127.0.0.1', 'worker-1'],
    );
  });

  it('drains a node by evicting its pods, which carry a DisruptionTarget condition', async () => {
    let evicted: KObject | undefined;
    const unwatch = server.state.watch(server.state.def('', 'pods'), { namespace: 'team' }, (ev) => {
      const conds = (ev.object.status as { conditions?: Array<{ type: string }> } | undefined)?.conditions ?? [];
      if (conds.some((c) => c.type === 'DisruptionTarget')) evicted = ev.object;
    });
    try {
      const r = await kubectl(server, ['drain', 'worker-1', '--force', '--grace-period=1', '--timeout=20s']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /pod\/web evicted/);
    } finally {
      unwatch();
    }
    assert.ok(evicted, 'the evicted pod was marked');
    const node = await kubectl(server, ['get', 'node', 'worker-1']);
    assert.match(node.stdout, /Ready,SchedulingDisabled/);
    const left = await kubectl(server, ['-n', 'team', 'get', 'pods', '-o', 'name']);
    assert.equal(left.stdout.trim(), '');
  });
});
