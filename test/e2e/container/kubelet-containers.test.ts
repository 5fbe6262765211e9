// The simulated kubelet's container mode against the agent image from scripts/images.sh: statuses as the real
// kubelet reports them (exit codes, ErrImagePull, StartError/RunContainerError), the pod's env, user and volumes
// inside the container, SIGTERM then SIGKILL after the grace period, and no working container left behind.
// Needs root, buildah and the image; skips, saying which is missing, otherwise.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestApiServer, waitFor, type KObject, type Kubelet, type TestApiServer } from '../../k8s/index.js';
import { startKubelet } from '../../k8s/kubelet.js';
import { buildah } from '../../k8s/buildah.js';
import { AGENT_IMAGE, DRIVER, containerSkipReason } from './images.js';
import { removeDir } from '../operator/harness.js';

const NODE = 'node-c';
const reason = containerSkipReason('kubelet container-mode tests');

/** Working containers of this test's node, from buildah's own list. */
function ourContainers(): Promise<string[]> {
  return buildah(DRIVER).containers(`tensile-kubelet-${NODE}-`);
}

describe('kubelet container mode', { skip: reason ?? false }, () => {
  let server: TestApiServer;
  let kubelet: Kubelet;
  let volumeDir: string;
  let hostDir: string;
  const pods = (): ReturnType<TestApiServer['state']['def']> => server.state.def('', 'pods');

  before(async () => {
    volumeDir = mkdtempSync(join(tmpdir(), 'tensile-volumes-'));
    hostDir = mkdtempSync(join(tmpdir(), 'tensile-hostpath-'));
    chmodSync(hostDir, 0o777); // a hostPath keeps the host's permissions; the image's user is 65532
    server = await startTestApiServer({});
    kubelet = await startKubelet({
      server,
      nodeName: NODE,
      restartBackoffMs: 200,
      containers: { images: { 'example.com/agent:1': AGENT_IMAGE }, storageDriver: DRIVER, volumeDir },
    });
  });

  after(async () => {
    await kubelet?.stop();
    await server?.stop();
    removeDir(volumeDir);
    removeDir(hostDir);
  });

  function create(name: string, spec: Record<string, unknown>): void {
    server.state.create(pods(), 'default', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: 'default' },
      spec: { nodeName: NODE, restartPolicy: 'Never', ...spec },
    });
  }
  const pod = (name: string): KObject | undefined => server.state.tryGet(pods(), 'default', name);
  interface Terminated {
    exitCode: number;
    reason: string;
    message?: string;
  }
  interface ContainerStatus {
    imageID?: string;
    restartCount?: number;
    state?: { waiting?: { reason: string; message: string }; terminated?: Terminated };
    lastState?: { terminated?: Terminated };
  }
  const container = (name: string): ContainerStatus | undefined =>
    ((pod(name)?.status as { containerStatuses?: ContainerStatus[] } | undefined)?.containerStatuses ?? [])[0];

  test('a container exits with its own code; the image maps, the pod env, user and volumes apply', async () => {
    create('env', {
      volumes: [
        { name: 'scratch', emptyDir: {} },
        { name: 'host', hostPath: { path: hostDir } },
        { name: 'claim', persistentVolumeClaim: { claimName: 'data' } },
      ],
      containers: [
        {
          name: 'c',
          image: 'example.com/agent:1',
          command: ['sh', '-c', 'echo "$(id -u) $FOO $(pwd)" > /host/out; touch /scratch/x /claim/y; exit 7'],
          env: [{ name: 'FOO', value: 'bar' }],
          volumeMounts: [
            { name: 'scratch', mountPath: '/scratch' },
            { name: 'host', mountPath: '/host' },
            { name: 'claim', mountPath: '/claim' },
          ],
        },
      ],
    });
    const c = await waitFor('env terminated', () => container('env')?.state?.terminated, 60_000, 100);
    assert.equal(c.exitCode, 7);
    assert.equal(c.reason, 'Error');
    assert.equal((pod('env')!.status as { phase: string }).phase, 'Failed');
    assert.equal(readFileSync(join(hostDir, 'out'), 'utf8'), '65532 bar /workspace\n');
    assert.ok(existsSync(join(volumeDir, 'claims/default/data/y')), 'the claim is shared storage on the host');
    assert.match(String(container('env')!.imageID), /^sha256:[0-9a-f]{64}$/);
    await waitFor(
      'its working container removed',
      async () => !(await ourContainers()).some((n) => n.includes('-env-')),
      30_000,
    );
  });

  test('an image not in local storage leaves the pod Pending with ErrImagePull, then ImagePullBackOff', async () => {
    create('nopull', { containers: [{ name: 'c', image: 'example.com/missing:9', command: ['true'] }] });
    const w = await waitFor('ErrImagePull', () => container('nopull')?.state?.waiting, 30_000, 50);
    assert.equal(w.reason, 'ErrImagePull');
    assert.match(w.message, /example\.com\/missing:9/);
    await waitFor(
      'ImagePullBackOff',
      () => container('nopull')?.state?.waiting?.reason === 'ImagePullBackOff',
      30_000,
      50,
    );
    assert.equal((pod('nopull')!.status as { phase?: string }).phase ?? 'Pending', 'Pending');
  });

  test('a command that is not in the image: StartError (128), then RunContainerError while restarting', async () => {
    create('nocmd', { containers: [{ name: 'c', image: 'example.com/agent:1', command: ['no-such-binary'] }] });
    const t = await waitFor('nocmd terminated', () => container('nocmd')?.state?.terminated, 60_000, 100);
    assert.equal(t.exitCode, 128);
    assert.equal(t.reason, 'StartError');
    assert.match(t.message ?? '', /exec: "no-such-binary": executable file not found in \$PATH/);
    assert.equal((pod('nocmd')!.status as { phase: string }).phase, 'Failed');

    create('nocmd-again', {
      restartPolicy: 'OnFailure',
      containers: [{ name: 'c', image: 'example.com/agent:1', command: ['/opt/none'] }],
    });
    const w = await waitFor(
      'RunContainerError',
      () =>
        container('nocmd-again')?.state?.waiting?.reason === 'RunContainerError' ? container('nocmd-again') : undefined,
      60_000,
      50,
    );
    assert.equal(w.lastState?.terminated?.reason, 'StartError');
    assert.equal(w.lastState?.terminated?.exitCode, 128);
    await waitFor('a restart counted', () => (container('nocmd-again')?.restartCount ?? 0) >= 2, 60_000, 100);
    server.state.delete(pods(), 'default', 'nocmd-again');
    await waitFor('nocmd-again gone', () => pod('nocmd-again') === undefined, 30_000, 50);
  });

  test('delete: SIGTERM to the container, SIGKILL after the grace period, nothing left behind', async () => {
    const trapped = join(hostDir, 'term');
    const loop = 'while :; do sleep 0.1; done';
    const spec = (cmd: string, grace: number): Record<string, unknown> => ({
      terminationGracePeriodSeconds: grace,
      volumes: [{ name: 'host', hostPath: { path: hostDir } }],
      containers: [
        {
          name: 'c',
          image: 'example.com/agent:1',
          command: ['sh', '-c', cmd],
          volumeMounts: [{ name: 'host', mountPath: '/host' }],
        },
      ],
    });
    create('polite', spec(`trap 'echo term > /host/term; exit 0' TERM; ${loop}`, 30));
    create('stubborn', spec(`trap '' TERM; ${loop}`, 2));
    await waitFor('both running', () => kubelet.processes().size >= 2, 60_000, 100);
    // Give sh time to install its trap before the signal.
    await new Promise((r) => setTimeout(r, 1000));
    const t0 = Date.now();
    for (const n of ['polite', 'stubborn']) server.state.delete(pods(), 'default', n);
    await waitFor('polite gone', () => pod('polite') === undefined, 20_000, 50);
    assert.equal(readFileSync(trapped, 'utf8'), 'term\n');
    assert.ok(Date.now() - t0 < 20_000);
    await waitFor('stubborn gone', () => pod('stubborn') === undefined, 30_000, 50);
    assert.ok(Date.now() - t0 >= 2000, 'stubborn lasted its grace period');
    assert.equal(kubelet.processes().size, 0);
    // Only nopull's pod remains, and it never gets a working container.
    await waitFor('no working container left', async () => (await ourContainers()).length === 0, 30_000, 200);
  });
});
