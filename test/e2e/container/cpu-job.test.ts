// End to end from images: examples/k8s/cpu-job.yaml applied as it is written (the image name mapped to the local
// build of docker/Dockerfile.agent, the cluster's etcd DNS name to a test etcd, the run made small for CI) to the
// test API server with the operator running; the simulated kubelet runs every pod from the agent image with buildah
// (tini → tensile run → the demo trainer, as uid 65532, the checkpoint claim mounted at /ckpt). A pod is deleted
// mid-run while the node has no room (preemption → the job trains on at 2), capacity returns (back to 3), and the
// job trains to the end.
//
// Needs root, buildah and the images from scripts/images.sh; skips, saying which is missing, otherwise.
// TENSILE_REQUIRE_IMAGES=1 (CI, after scripts/images.sh) turns the skip into a failure.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseAllDocuments, stringify } from 'yaml';
import { startEtcd, type EtcdServer } from '../../helpers/etcd.js';
import { kubectl, waitFor, type Kubelet, type TestApiServer } from '../../k8s/index.js';
import { startKubelet } from '../../k8s/kubelet.js';
import { descendants } from '../../k8s/buildah.js';
import { runOperator, type OperatorHandle } from '../../../operator/index.js';
import type { KubeApis } from '../../../operator/kube/client-node.js';
import { AGENT_IMAGE, DRIVER, containerSkipReason } from './images.js';
import { REPO, clientFor, jobPods, jobView, removeDir, startClusterWithCrd } from '../operator/harness.js';

const CPU_JOB = join(REPO, 'examples/k8s/cpu-job.yaml');
const reason = containerSkipReason('container e2e');

interface HistoryEvent {
  type: string;
  timeMs: number;
  step: number;
  worldSize?: number;
  resumedStep?: number;
  resumedFrom?: string | null;
  round?: number;
  stepsLost?: number;
  restartCount?: number;
  reason?: string;
}

describe('examples/k8s/cpu-job.yaml from the agent image', { skip: reason ?? false }, () => {
  let server: TestApiServer;
  let kubelet: Kubelet;
  let op: OperatorHandle;
  let http: KubeApis;
  let etcd: EtcdServer;
  let volumeDir: string;

  before(async () => {
    volumeDir = mkdtempSync(join(tmpdir(), 'tensile-volumes-'));
    etcd = await startEtcd();
    server = await startClusterWithCrd();
    kubelet = await startKubelet({
      server,
      nodeName: 'node-a',
      containers: { images: { 'ghcr.io/tensile/agent:0.1.0': AGENT_IMAGE }, storageDriver: DRIVER, volumeDir },
    });
    http = clientFor(server);
    op = await runOperator({
      kubeconfig: server.kubeconfigPath,
      leaderElection: false,
      metricsPort: 0,
      metricsHost: '127.0.0.1',
    });
  });

  after(async () => {
    await op?.stop();
    http?.close();
    await kubelet?.stop();
    await server?.stop();
    await etcd?.stop();
    removeDir(volumeDir);
  });

  /** The demo's history, written by rank 0 into the checkpoint claim (the host side of /ckpt). */
  function history(): HistoryEvent[] {
    const f = join(volumeDir, 'claims/default/train-cpu-checkpoints/history.jsonl');
    if (!existsSync(f)) return [];
    return readFileSync(f, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as HistoryEvent);
  }

  /** The manifest as written, with only what this cluster needs changed. */
  function manifest(): string {
    interface Container {
      image?: string;
      args?: string[];
      env?: Array<{ name: string; value: string }>;
      resources?: unknown;
    }
    interface Doc {
      kind?: string;
      spec: {
        rdzvEndpoint?: string;
        nprocPerNode?: number;
        replicaSpecs: { Worker: { template: { spec: { containers: Container[] } } } };
      };
    }
    const docs = parseAllDocuments(readFileSync(CPU_JOB, 'utf8')).map((d) => d.toJS() as Doc);
    const job = docs.find((d) => d.kind === 'ElasticJob')!;
    assert.ok(
      docs.some((d) => d.kind === 'PersistentVolumeClaim'),
      'the manifest brings its checkpoint claim',
    );
    const c = job.spec.replicaSpecs.Worker.template.spec.containers[0]!;
    assert.equal(c.image, 'ghcr.io/tensile/agent:0.1.0');
    const [script, ...rest] = c.args ?? [];
    assert.equal(script, '/opt/tensile/dist/examples/train/train.js');
    const ckpt = rest.indexOf('--checkpoint-dir');
    assert.equal(rest[ckpt + 1], '/ckpt');
    job.spec.rdzvEndpoint = etcd.endpoint; // etcd.default.svc:2379 in a cluster
    job.spec.nprocPerNode = 1; // 2 cores in CI: one process per pod
    // The manifest's script and checkpoint directory; a CI-sized run that lasts long enough to be interrupted.
    c.args = [script, '--checkpoint-dir', '/ckpt', '--small', '--epochs', '8', '--step-delay-ms', '100'];
    c.env = [{ name: 'PET_RDZV_CONF', value: 'last_call_timeout=0.5' }];
    delete c.resources; // the test node has 2 CPUs; the scheduler counts pods only, but keep it honest
    return docs.map((d) => stringify(d)).join('---\n');
  }

  test('trains to the end with a pod preempted mid-run (3 → 2 → 3), losing no step', { timeout: 420_000 }, async () => {
    try {
      await run();
    } catch (err) {
      process.stdout.write(`${await diagnose()}\n`);
      throw err;
    }
  });

  /** The job's status, its pods' statuses and logs, and the demo's history, for a failure. */
  async function diagnose(): Promise<string> {
    const out: string[] = [`job: ${JSON.stringify(await jobView(http, 'train-cpu'))}`];
    for (const p of server.state.list(server.state.def('', 'pods'))) {
      out.push(`pod ${p.metadata.name}: ${JSON.stringify(p.status)}`);
      for (const f of server.logSources) {
        const log = f(p.metadata.namespace!, p.metadata.name!);
        if (log !== undefined) out.push(`log ${p.metadata.name}:\n${log.slice(-3000)}`);
      }
    }
    out.push(
      `history:\n${history()
        .map((e) => JSON.stringify(e))
        .join('\n')}`,
    );
    return out.join('\n');
  }

  async function run(): Promise<void> {
    const r = await kubectl(server, ['apply', '-f', '-'], { stdin: manifest() });
    assert.equal(r.code, 0, r.stderr);
    await waitFor(
      'training steps at world size 3',
      () => history().some((e) => e.type === 'step' && e.worldSize === 3 && e.step >= 10),
      180_000,
      250,
    );
    assert.equal((await jobView(http, 'train-cpu'))?.state, 'Running');

    // Each pod is tini (the container's first process) → the agent (tensile run) → its worker, as uid 65532.
    const pid = kubelet.processes().get('default/train-cpu-worker-2');
    assert.ok(pid, 'worker-2 runs');
    const tree = descendants(pid).map((p) => ({ pid: p, cmd: cmdline(p), uid: uidOf(p) }));
    // buildah run → buildah-chroot-runtime → buildah-chroot-exec (chrooted, not the container's) → the container.
    const inContainer = tree.filter((p) => root(p.pid) !== '/' && !p.cmd.startsWith('buildah-chroot-exec'));
    assert.match(inContainer[0]?.cmd ?? '', /^\/usr\/bin\/tini -s -- node \S+\/cli\.js run /, JSON.stringify(tree));
    assert.ok(
      inContainer.some((p) => /^node \/opt\/tensile\/dist\/agent\/cli\.js run /.test(p.cmd)),
      `the agent runs: ${JSON.stringify(tree)}`,
    );
    assert.ok(
      inContainer.some((p) => /train\.js/.test(p.cmd) && !/cli\.js/.test(p.cmd)),
      `a worker runs: ${JSON.stringify(tree)}`,
    );
    assert.deepEqual([...new Set(inContainer.map((p) => p.uid))], [65532]);

    // The deleted container's last status (the kubelet writes it just before the pod object goes).
    const deletedUid = server.state.get(server.state.def('', 'pods'), 'default', 'train-cpu-worker-2').metadata.uid!;
    const finals = new Map<string, { exitCode: number; reason: string }>();
    server.state.listeners.add((key, _type, obj) => {
      const st = obj.status as {
        containerStatuses?: Array<{ state?: { terminated?: { exitCode: number; reason: string } } }>;
      };
      const t = st?.containerStatuses?.[0]?.state?.terminated;
      if (key === '/pods' && t) finals.set(obj.metadata.uid!, t);
    });

    // Preempt worker-2 while the node has no room for a replacement: the survivors go on at 2.
    kubelet.setReady(false);
    const t0 = Date.now();
    const del = await kubectl(server, ['delete', 'pod', 'train-cpu-worker-2', '--wait=false']);
    assert.equal(del.code, 0, del.stderr);
    const round2 = await waitFor(
      'a round at world size 2',
      () => history().find((e) => e.type === 'round' && e.timeMs > t0 && e.worldSize === 2),
      120_000,
      250,
    );
    // Nothing is lost: the survivors either recover live (their state in memory, no step lost) or resume from
    // the newest checkpoint (written on SIGTERM at a step boundary).
    const saved = history().filter((e) => e.type === 'checkpoint' && e.timeMs <= round2.timeMs);
    const recovery = history().find((e) => e.type === 'recovery' && e.round === round2.round);
    if (round2.resumedFrom) assert.equal(round2.resumedStep, saved.at(-1)?.step, JSON.stringify(saved.slice(-3)));
    else {
      assert.equal(recovery?.stepsLost, 0, JSON.stringify(recovery));
      assert.ok((round2.resumedStep ?? 0) >= (saved.at(-1)?.step ?? 0));
    }
    // SIGTERM went tini → agent → workers and the container stopped by itself within its grace period (30 s), not
    // by the SIGKILL after it (137).
    const ended = await waitFor('the deleted pod terminated', () => finals.get(deletedUid), 60_000, 100);
    assert.notEqual(ended.exitCode, 137, JSON.stringify(ended));
    await waitFor('every process of the deleted pod gone', () => inContainer.every((p) => !alive(p.pid)), 60_000, 250);
    const mid = await waitFor(
      'the preemption in the job status',
      async () => {
        const v = await jobView(http, 'train-cpu');
        return v && v.preemptions === 1 ? v : undefined;
      },
      30_000,
      200,
    );
    assert.equal(mid.state, 'Running');
    assert.equal(mid.failures ?? 0, 0);
    await waitFor(
      'the replacement worker-2 pending (no room on the node)',
      async () => (await jobPods(http, 'train-cpu')).get('train-cpu-worker-2') === 'Pending',
      30_000,
      200,
    );

    // Capacity returns: the replacement runs from the image and the job is back at 3, then trains to the end.
    const t1 = Date.now();
    kubelet.setReady(true);
    await waitFor(
      'a round at world size 3 again',
      () => history().some((e) => e.type === 'round' && e.timeMs > t1 && e.worldSize === 3),
      180_000,
      250,
    );
    const done = await waitFor(
      'the job Succeeded',
      async () => {
        const v = await jobView(http, 'train-cpu');
        return v?.state === 'Succeeded' ? v : undefined;
      },
      300_000,
      500,
    );
    assert.equal(done.failures ?? 0, 0);
    const end = history().find((e) => e.type === 'done');
    assert.ok(end, 'the demo wrote its final result');
    assert.ok(existsSync(join(volumeDir, 'claims/default/train-cpu-checkpoints/report.html')));
    // Resizes are not failures: no round counts a restart.
    assert.deepEqual(
      history()
        .filter((e) => e.type === 'round')
        .map((e) => [e.worldSize, e.restartCount]),
      [...history().filter((e) => e.type === 'round')].map((e) => [e.worldSize, 0]),
    );
    process.stdout.write(
      `# cpu-job rounds and checkpoints on SIGTERM:\n${history()
        .filter((e) => ['round', 'recovery', 'done'].includes(e.type) || e.reason === 'preempted')
        .map((e) => `#   ${JSON.stringify(e)}`)
        .join('\n')}\n`,
    );
    const steps = history().filter((e) => e.type === 'step');
    assert.equal(steps.at(-1)?.worldSize, 3);
  }
});

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

function uidOf(pid: number): number {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : -1;
  } catch {
    return -1;
  }
}

function root(pid: number): string {
  try {
    return readlinkSync(`/proc/${pid}/root`);
  } catch {
    return '/';
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
