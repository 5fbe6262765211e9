import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { CoreV1Api, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import {
  kubectl,
  startKubelet,
  startTestApiServer,
  waitFor,
  type Kubelet,
  type KObject,
  type TestApiServer,
} from '../../k8s/index.js';

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

function pod(name: string, script: string, extra: Record<string, unknown> = {}): V1Pod {
  return {
    metadata: { name, labels: { test: 'kubelet' } },
    spec: {
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'main',
          image: 'tensile:test',
          command: ['sh', '-c', script],
          env: [
            { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            { name: 'POD_NS', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
            { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
            { name: 'GREETING', value: 'hello' },
          ],
        },
      ],
      ...extra,
    },
  };
}

describe('simulated kubelet: pods as local processes', () => {
  let server: TestApiServer;
  let core: CoreV1Api;
  let shimDir: string;
  const kubelets: Kubelet[] = [];

  before(async () => {
    server = await startTestApiServer();
    const kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    shimDir = mkdtempSync(join(tmpdir(), 'tensile-kubelet-shim-'));
    writeFileSync(join(shimDir, 'tensile'), '#!/bin/sh\necho "shim $GREETING $POD_NAME $POD_NS $POD_IP $*"\n');
    chmodSync(join(shimDir, 'tensile'), 0o755);
    kubelets.push(
      await startKubelet({
        server,
        nodeName: 'node-a',
        pathPrepend: shimDir,
        maxPods: 4,
        entrypoint: (image) => (image === 'tensile:entry' ? ['tensile', 'run'] : undefined),
      }),
    );
  });
  afterEach(async () => {
    await core.deleteCollectionNamespacedPod({ namespace: 'default', gracePeriodSeconds: 0 });
  });
  after(async () => {
    for (const k of kubelets) await k.stop();
    await server?.stop();
    if (shimDir) rmSync(shimDir, { recursive: true, force: true });
  });

  const read = (name: string): Promise<V1Pod> => core.readNamespacedPod({ namespace: 'default', name });
  const phase = async (name: string, want: string): Promise<V1Pod | undefined> => {
    const p = await read(name);
    return p.status?.phase === want ? p : undefined;
  };

  it('runs the command with the pod env and PATH shim and reports Succeeded with exit code 0', async () => {
    await core.createNamespacedPod({ namespace: 'default', body: pod('ok', 'tensile run --x') });
    const done = await waitFor('pod ok Succeeded', () => phase('ok', 'Succeeded'));
    assert.equal(done.spec?.nodeName, 'node-a');
    assert.equal(done.status?.podIP, '127.0.0.1');
    assert.equal(done.status?.containerStatuses?.[0].state?.terminated?.exitCode, 0);
    const logs = await kubectl(server, ['logs', 'ok']);
    assert.equal(logs.stdout.trim(), 'shim hello ok default 127.0.0.1 run --x');
  });

  it('runs the image entrypoint with the args of a container that has no command', async () => {
    const body = pod('entry', '');
    body.spec!.containers[0] = {
      ...body.spec!.containers[0],
      image: 'tensile:entry',
      command: undefined,
      args: ['--y'],
    };
    await core.createNamespacedPod({ namespace: 'default', body });
    await waitFor('pod entry Succeeded', () => phase('entry', 'Succeeded'));
    const logs = await kubectl(server, ['logs', 'entry']);
    assert.equal(logs.stdout.trim(), 'shim hello entry default 127.0.0.1 run --y');
  });

  it('reports Failed with the exit code of a failing command', async () => {
    await core.createNamespacedPod({ namespace: 'default', body: pod('bad', 'exit 3') });
    const failed = await waitFor('pod bad Failed', () => phase('bad', 'Failed'));
    const term = failed.status?.containerStatuses?.[0].state?.terminated;
    assert.equal(term?.exitCode, 3);
    assert.equal(term?.reason, 'Error');
  });

  it('restarts a failing container under restartPolicy OnFailure', async () => {
    await core.createNamespacedPod({
      namespace: 'default',
      body: pod('flaky', 'exit 1', { restartPolicy: 'OnFailure' }),
    });
    const p = await waitFor('two restarts', async () => {
      const r = await read('flaky');
      return (r.status?.containerStatuses?.[0].restartCount ?? 0) >= 2 ? r : undefined;
    });
    assert.equal(p.status?.phase, 'Running');
    assert.equal(p.status?.containerStatuses?.[0].lastState?.terminated?.exitCode, 1);
  });

  it('on delete sends SIGTERM, then SIGKILL when the grace period ends, and removes the pod', async () => {
    await core.createNamespacedPod({
      namespace: 'default',
      body: pod('stubborn', 'trap "" TERM; while true; do sleep 0.1; done'),
    });
    await core.createNamespacedPod({ namespace: 'default', body: pod('polite', 'sleep 30') });
    await waitFor(
      'both running',
      async () => (await phase('stubborn', 'Running')) && (await phase('polite', 'Running')),
    );
    const pids = kubelets[0].processes();
    const stubbornPid = pids.get('default/stubborn')!;
    const politePid = pids.get('default/polite')!;
    assert.ok(stubbornPid && politePid);
    const finals = new Map<string, KObject>();
    const unwatch = server.state.watch(server.state.def('', 'pods'), { namespace: 'default' }, (ev) => {
      if (ev.type === 'MODIFIED') finals.set(ev.object.metadata.name!, ev.object);
    });
    try {
      const r = await kubectl(server, ['delete', 'pod', 'stubborn', 'polite', '--timeout=20s']);
      assert.equal(r.code, 0, r.stderr);
    } finally {
      unwatch();
    }
    const code = (name: string): unknown =>
      ((finals.get(name)?.status as V1Pod['status'])?.containerStatuses ?? [])[0]?.state?.terminated?.exitCode;
    assert.equal(code('stubborn'), 137, 'ignoring SIGTERM ends in SIGKILL');
    assert.equal(code('polite'), 143, 'SIGTERM ends the polite one');
    assert.ok(!alive(stubbornPid) && !alive(politePid), 'no process is left behind');
    const left = await core.listNamespacedPod({ namespace: 'default' });
    assert.equal(left.items.length, 0);
  });

  it('shortens the wait for SIGKILL when a pod is deleted again with a shorter grace period', async () => {
    const body = pod('slow', 'trap "" TERM; while true; do sleep 0.1; done', { terminationGracePeriodSeconds: 600 });
    await core.createNamespacedPod({ namespace: 'default', body });
    await waitFor('slow running', () => phase('slow', 'Running'));
    const pid = kubelets[0].processes().get('default/slow')!;
    const first = await kubectl(server, ['delete', 'pod', 'slow', '--wait=false']);
    assert.equal(first.code, 0, first.stderr);
    const marked = await read('slow');
    assert.equal(marked.metadata?.deletionGracePeriodSeconds, 600);
    assert.ok(alive(pid), 'SIGTERM is ignored, so it keeps running during the long grace period');
    const second = await kubectl(server, ['delete', 'pod', 'slow', '--grace-period=1', '--timeout=20s']);
    assert.equal(second.code, 0, second.stderr);
    await waitFor('process killed', () => !alive(pid));
  });

  it('fails a pod that outlives its activeDeadlineSeconds with reason DeadlineExceeded', async () => {
    await core.createNamespacedPod({
      namespace: 'default',
      body: pod('late', 'sleep 30', { activeDeadlineSeconds: 1, restartPolicy: 'Always' }),
    });
    const failed = await waitFor('late Failed', () => phase('late', 'Failed'));
    assert.equal(failed.status?.reason, 'DeadlineExceeded');
    assert.equal(failed.status?.containerStatuses?.[0].state?.terminated?.exitCode, 143);
  });

  it('leaves pods Pending when no node has room and schedules them when room frees up', async () => {
    for (let i = 0; i < 5; i++)
      await core.createNamespacedPod({ namespace: 'default', body: pod(`fill-${i}`, 'sleep 30') });
    const pending = await waitFor('an unschedulable pod', async () => {
      const l = await core.listNamespacedPod({ namespace: 'default', fieldSelector: 'status.phase=Pending' });
      const p = l.items.find((x) =>
        x.status?.conditions?.some((c) => c.type === 'PodScheduled' && c.reason === 'Unschedulable'),
      );
      return p;
    });
    assert.equal(pending.spec?.nodeName, undefined);
    await waitFor('four running', async () => {
      const l = await core.listNamespacedPod({ namespace: 'default', fieldSelector: 'status.phase=Running' });
      return l.items.length === 4;
    });
    const victim = (await core.listNamespacedPod({ namespace: 'default', fieldSelector: 'spec.nodeName=node-a' }))
      .items[0];
    await core.deleteNamespacedPod({ namespace: 'default', name: victim.metadata!.name!, gracePeriodSeconds: 0 });
    await waitFor('the pending pod runs', () => phase(pending.metadata!.name!, 'Running'));
  });

  it('marks pods of a deleted node with DisruptionTarget, kills them, and runs again on a new node', async () => {
    await core.createNamespacedPod({ namespace: 'default', body: pod('doomed', 'sleep 30') });
    await waitFor('doomed running', () => phase('doomed', 'Running'));
    const pid = kubelets[0].processes().get('default/doomed')!;
    let deleted: KObject | undefined;
    const unwatch = server.state.watch(server.state.def('', 'pods'), { namespace: 'default' }, (ev) => {
      if (ev.type === 'DELETED' && ev.object.metadata.name === 'doomed') deleted = ev.object;
    });
    try {
      const r = await kubectl(server, ['delete', 'node', 'node-a']);
      assert.equal(r.code, 0, r.stderr);
      await waitFor('doomed deleted', () => deleted);
    } finally {
      unwatch();
    }
    const cond = ((deleted!.status as V1Pod['status'])?.conditions ?? []).find((c) => c.type === 'DisruptionTarget');
    assert.equal(cond?.status, 'True');
    assert.equal(cond?.reason, 'DeletionByPodGC');
    await waitFor('process killed', () => !alive(pid));
    await core.createNamespacedPod({ namespace: 'default', body: pod('later', 'sleep 30') });
    const stuck = await waitFor('later unschedulable', async () => {
      const p = await read('later');
      return p.status?.conditions?.some((c) => c.reason === 'Unschedulable') ? p : undefined;
    });
    assert.equal(stuck.status?.phase, 'Pending');
    kubelets.push(await startKubelet({ server, nodeName: 'node-b', pathPrepend: shimDir }));
    const running = await waitFor('later running on node-b', () => phase('later', 'Running'));
    assert.equal(running.spec?.nodeName, 'node-b');
  });

  it('evicts a pod through the eviction subresource with a DisruptionTarget condition', async () => {
    await core.createNamespacedPod({ namespace: 'default', body: pod('evictee', 'sleep 30') });
    await waitFor('evictee running', () => phase('evictee', 'Running'));
    await core.createNamespacedPodEviction({
      namespace: 'default',
      name: 'evictee',
      body: { metadata: { name: 'evictee', namespace: 'default' } },
    });
    const p = await read('evictee').catch(() => undefined);
    if (p)
      assert.ok(
        p.status?.conditions?.some((c) => c.type === 'DisruptionTarget' && c.reason === 'EvictionByEvictionAPI'),
      );
    await waitFor(
      'evictee gone',
      async () =>
        (await core.listNamespacedPod({ namespace: 'default', fieldSelector: 'metadata.name=evictee' })).items
          .length === 0,
    );
  });

  it('kills every process it started when the kubelet stops', async () => {
    const k = await startKubelet({ server, nodeName: 'node-c', pathPrepend: shimDir });
    kubelets.push(k);
    await core.createNamespacedPod({ namespace: 'default', body: pod('onc', 'sleep 30', { nodeName: 'node-c' }) });
    await waitFor('onc running', () => phase('onc', 'Running'));
    const pid = k.processes().get('default/onc')!;
    assert.ok(alive(pid));
    await k.stop();
    assert.ok(!alive(pid));
    const node = await core.readNode({ name: 'node-c' });
    assert.equal(node.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'False');
  });
});
