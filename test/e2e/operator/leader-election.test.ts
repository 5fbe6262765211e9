// The operator as the Helm chart deploys it: `helm template` (real helm) with two replicas, every manifest applied
// with kubectl, and the Deployment's pod template run by the simulated kubelet: container args and env (POD_NAME
// from the downward API) come from the rendered chart, not from a command line written here. Exactly one replica
// holds the Lease (under its pod name) and reconciles; when its pod is deleted the other takes over.
//
// What stands in for the cluster: a ReplicaSet stand-in below creates the Deployment's pods from its template (the
// test API server stores Deployments without running them); the "image" is a directory whose dist/agent/cli.js
// is the CLI's source (run through tsx) with node as the entrypoint, as in docker/operator.Dockerfile; KUBECONFIG
// stands in for the in-cluster service account. The pods share this host's network, so each gets its own free
// metrics port (in a cluster each pod has its own network namespace and they all use the chart's port).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { stringify } from 'yaml';
import { freePort } from '../../../common/free-port.js';
import { elasticJob } from '../../helpers/elastic-job.js';
import { helmTemplate, manifestOf, type Manifest } from '../../helpers/helm.js';
import { kubectl, waitFor } from '../../k8s/index.js';
import { REPO, jobPods, useOperatorCluster } from './harness.js';

// The "image", made before the cluster's kubelet starts in it; removed once the cluster has stopped (hooks registered
// later run later).
const imageRoot = mkdtempSync(join(tmpdir(), 'tensile-operator-image-'));
mkdirSync(join(imageRoot, 'dist/agent'), { recursive: true });
symlinkSync(join(REPO, 'agent/cli.ts'), join(imageRoot, 'dist/agent/cli.js'));
const tsx = join(REPO, 'node_modules/tsx/dist/esm/index.mjs');
const c = useOperatorCluster({
  kubelet: (server) => ({
    workDir: imageRoot,
    env: { KUBECONFIG: server.kubeconfigPath },
    entrypoint: (image) =>
      image.startsWith('registry.local/tensile-operator:') ? [process.execPath, '--import', tsx] : undefined,
  }),
});
after(() => rmSync(imageRoot, { recursive: true, force: true }));

interface PodTemplate {
  metadata: { labels: Record<string, string> };
  spec: { containers: Array<{ name: string; args: string[]; ports?: Array<{ containerPort: number }> }> };
}

/** The ReplicaSet stand-in: creates `replicas` pods from the Deployment's template, each with its own metrics port. */
async function runDeployment(d: Manifest): Promise<string[]> {
  const spec = d.spec as { replicas: number; template: PodTemplate };
  const names: string[] = [];
  for (let i = 0; i < spec.replicas; i += 1) {
    const port = await freePort();
    const template = structuredClone(spec.template);
    for (const c of template.spec.containers) {
      c.args = c.args.map((a) => (a.startsWith('--metrics-port=') ? `--metrics-port=${port}` : a));
      for (const p of c.ports ?? []) p.containerPort = port;
    }
    const name = `${d.metadata.name}-${i}`;
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { ...template.metadata, name, namespace: 'default' },
      spec: template.spec,
    };
    const r = await kubectl(c.server, ['apply', '-f', '-'], { stdin: stringify(pod) });
    assert.equal(r.code, 0, r.stderr);
    names.push(name);
  }
  return names;
}

async function holder(): Promise<string | undefined> {
  try {
    const l = await c.http.coordination.readNamespacedLease({ namespace: 'default', name: 'tensile-operator' });
    return l.spec?.holderIdentity || undefined;
  } catch {
    return undefined;
  }
}

const job = (name: string) =>
  stringify(
    elasticJob(name, {
      minReplicas: 1,
      maxReplicas: 1,
      replicas: 1,
      container: { image: 'x', command: ['sleep', '30'] },
    }),
  );

test(
  'the chart-deployed operator: two replicas elect one leader by pod name, the other takes over when its pod is deleted',
  { timeout: 180_000 },
  async () => {
    const manifests = await helmTemplate({
      image: { repository: 'registry.local/tensile-operator', tag: 'e2e' },
      replicas: 2,
      logLevel: 'warn',
      leaderElection: { leaseDurationSeconds: 3, renewDeadlineSeconds: 2, retryPeriodSeconds: 1 },
    });
    const applied = await kubectl(c.server, ['apply', '-f', '-'], {
      stdin: manifests.map((m) => stringify(m)).join('---\n'),
    });
    assert.equal(applied.code, 0, applied.stderr);
    const pods = await runDeployment(manifestOf(manifests, 'Deployment'));
    assert.equal(pods.length, 2);

    const first = await waitFor('a leader', holder, 90_000, 200);
    assert.ok(pods.includes(first), `the Lease holder ${first} is one of the pods ${pods.join(', ')} (POD_NAME)`);
    assert.equal((await kubectl(c.server, ['apply', '-f', '-'], { stdin: job('before') })).code, 0);
    await waitFor('pod of job "before"', async () => (await jobPods(c.http, 'before')).size === 1, 60_000, 200);

    await c.http.core.deleteNamespacedPod({ namespace: 'default', name: first, gracePeriodSeconds: 0 });
    const second = await waitFor(
      'a new leader',
      async () => {
        const h = await holder();
        return h !== undefined && h !== first ? h : undefined;
      },
      60_000,
      200,
    );
    assert.ok(pods.includes(second) && second !== first, `new holder ${second}`);
    assert.equal((await kubectl(c.server, ['apply', '-f', '-'], { stdin: job('after') })).code, 0);
    await waitFor(
      'pod of job "after" created by the new leader',
      async () => (await jobPods(c.http, 'after')).size === 1,
      60_000,
      200,
    );
  },
);
