// `helm upgrade` from the previous chart to this one, checked offline: both charts rendered with real helm, the CRD
// compared (helm installs crds/ on install only and never upgrades or deletes it, and the CRD carries
// helm.sh/resource-policy: keep; still, a version that stored objects must never disappear), the Deployment's
// immutable selector kept, and the upgrade applied over a running install on the test API server: ElasticJobs
// and their pods are still there afterwards.
//
// "Previous" is the chart as first committed (git archive of the commit that added charts/tensile/Chart.yaml);
// without git history (a shallow or exported tree) it is a copy of this chart, and the test says so.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { elasticJob } from '../../helpers/elastic-job.js';
import { CHART_DIR, REPO, helmTemplate, manifestOf, type Manifest } from '../../helpers/helm.js';
import { kubectl, startTestApiServer, type TestApiServer } from '../../k8s/index.js';

interface CrdVersion {
  name: string;
  served: boolean;
  storage: boolean;
}
interface Crd {
  metadata: { name: string; annotations?: Record<string, string> };
  spec: { group: string; scope: string; names: { kind: string; plural: string }; versions: CrdVersion[] };
}

/** What would break stored objects or clients when `next` replaces `prev`. Empty: a safe upgrade. */
function crdUpgradeProblems(prev: Crd, next: Crd): string[] {
  const problems: string[] = [];
  for (const k of ['group', 'scope'] as const) {
    if (prev.spec[k] !== next.spec[k]) problems.push(`spec.${k} changed: ${prev.spec[k]} → ${next.spec[k]}`);
  }
  if (prev.spec.names.kind !== next.spec.names.kind || prev.spec.names.plural !== next.spec.names.plural) {
    problems.push(`spec.names changed: ${prev.spec.names.plural} → ${next.spec.names.plural}`);
  }
  for (const v of prev.spec.versions) {
    const n = next.spec.versions.find((x) => x.name === v.name);
    if (n === undefined) problems.push(`version ${v.name} removed (objects stored as ${v.name} become unreadable)`);
    else if (v.served && !n.served) problems.push(`version ${v.name} no longer served`);
  }
  const storage = next.spec.versions.filter((v) => v.storage);
  if (storage.length !== 1) problems.push(`${storage.length} storage versions (exactly one is allowed)`);
  else if (!storage[0]!.served) problems.push(`storage version ${storage[0]!.name} is not served`);
  if (next.metadata.annotations?.['helm.sh/resource-policy'] !== 'keep') {
    problems.push('the CRD lacks helm.sh/resource-policy: keep (helm uninstall would delete every ElasticJob)');
  }
  return problems;
}

function git(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('git', args, { cwd: REPO, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : 1, stdout, stderr }),
    );
  });
}

let work: string;
let prevChart: string;
let prevSource: string;
let server: TestApiServer;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'tensile-chart-upgrade-'));
  prevChart = join(work, 'charts/tensile');
  const added = await git(['log', '--diff-filter=A', '--format=%H', '--', 'charts/tensile/Chart.yaml']);
  const rev = added.code === 0 ? added.stdout.trim().split('\n').pop() : undefined;
  const archive =
    rev !== undefined && rev !== ''
      ? await new Promise<number>((resolve) => {
          execFile('sh', ['-c', `git archive ${rev} charts/tensile | tar -x -C "${work}"`], { cwd: REPO }, (err) =>
            resolve(err === null ? 0 : 1),
          );
        })
      : 1;
  if (archive === 0) {
    prevSource = `git ${rev!.slice(0, 10)}`;
  } else {
    cpSync(CHART_DIR, prevChart, { recursive: true });
    prevSource = 'a copy of the current chart (no git history here)';
  }
  server = await startTestApiServer();
});

after(async () => {
  await server?.stop();
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

const crdOf = (m: Manifest[]) => manifestOf(m, 'CustomResourceDefinition') as unknown as Crd;

test('the CRD of this chart is a safe upgrade of the previous chart CRD', async (t) => {
  t.diagnostic(`previous chart: ${prevSource}`);
  const prev = await helmTemplate({}, { chartDir: prevChart });
  const next = await helmTemplate();
  assert.deepEqual(crdUpgradeProblems(crdOf(prev), crdOf(next)), []);
  // The CRD ships under crds/ (installed once, never templated, so `helm upgrade` leaves it alone).
  const crdFile = parse(readFileSync(join(CHART_DIR, 'crds/elasticjob.yaml'), 'utf8')) as Crd;
  assert.equal(crdFile.metadata.name, 'elasticjobs.tensile.dev');
  const version = (dir: string) =>
    (parse(readFileSync(join(dir, 'Chart.yaml'), 'utf8')) as { version: string }).version;
  t.diagnostic(`chart ${version(prevChart)} → ${version(CHART_DIR)}`);
});

test('the upgrade check rejects removing or unserving a stored version and dropping the keep policy', () => {
  const v = (name: string, served: boolean, storage: boolean): CrdVersion => ({ name, served, storage });
  const crd = (versions: CrdVersion[], keep = true): Crd => ({
    metadata: { name: 'elasticjobs.tensile.dev', annotations: keep ? { 'helm.sh/resource-policy': 'keep' } : {} },
    spec: { group: 'tensile.dev', scope: 'Namespaced', names: { kind: 'ElasticJob', plural: 'elasticjobs' }, versions },
  });
  const prev = crd([v('v1alpha1', true, true)]);
  assert.deepEqual(crdUpgradeProblems(prev, crd([v('v1alpha1', true, false), v('v1beta1', true, true)])), []);
  assert.deepEqual(crdUpgradeProblems(prev, crd([v('v1beta1', true, true)])), [
    'version v1alpha1 removed (objects stored as v1alpha1 become unreadable)',
  ]);
  assert.deepEqual(crdUpgradeProblems(prev, crd([v('v1alpha1', false, true)])), [
    'version v1alpha1 no longer served',
    'storage version v1alpha1 is not served',
  ]);
  assert.deepEqual(crdUpgradeProblems(prev, crd([v('v1alpha1', true, true), v('v1beta1', true, true)])), [
    '2 storage versions (exactly one is allowed)',
  ]);
  assert.deepEqual(crdUpgradeProblems(prev, crd([v('v1alpha1', true, true)], false)), [
    'the CRD lacks helm.sh/resource-policy: keep (helm uninstall would delete every ElasticJob)',
  ]);
});

test('upgrading a running install keeps the ElasticJobs, their pods, the Lease name and the Deployment selector', async () => {
  const ns = 'tensile-system';
  const prev = await helmTemplate({}, { chartDir: prevChart, namespace: ns });
  const next = await helmTemplate({}, { namespace: ns });
  const sel = (m: Manifest[]) => (manifestOf(m, 'Deployment').spec as { selector: unknown }).selector;
  assert.deepEqual(sel(next), sel(prev), 'Deployment spec.selector is immutable: changing it breaks helm upgrade');
  const leaseArg = (m: Manifest[]) =>
    (
      manifestOf(m, 'Deployment').spec as {
        template: { spec: { containers: Array<{ args: string[] }> } };
      }
    ).template.spec.containers[0]!.args.find((a) => a.startsWith('--lease-name='));
  assert.equal(leaseArg(next), leaseArg(prev), 'the new replicas contend for the Lease the old ones hold');

  assert.equal((await kubectl(server, ['create', 'namespace', ns])).code, 0);
  const applyAll = (m: Manifest[]) =>
    kubectl(server, ['apply', '-f', '-'], { stdin: m.map((x) => stringify(x)).join('---\n') });
  const install = await applyAll(prev);
  assert.equal(install.code, 0, install.stderr);
  const job = elasticJob('long-run', {
    rdzvEndpoint: 'etcd:2379',
    minReplicas: 1,
    maxReplicas: 1,
    replicas: 1,
    container: { image: 'x' },
  });
  assert.equal((await kubectl(server, ['apply', '-f', '-'], { stdin: stringify(job) })).code, 0);
  const uid = JSON.parse((await kubectl(server, ['get', 'elasticjob', 'long-run', '-o', 'json'])).stdout) as {
    metadata: { uid: string };
  };
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: 'long-run-worker-0',
      namespace: 'default',
      ownerReferences: [
        {
          apiVersion: 'tensile.dev/v1alpha1',
          kind: 'ElasticJob',
          name: 'long-run',
          uid: uid.metadata.uid,
          controller: true,
        },
      ],
    },
    spec: { containers: [{ name: 'worker', image: 'x' }] },
  };
  assert.equal((await kubectl(server, ['apply', '-f', '-'], { stdin: stringify(pod) })).code, 0);

  // helm upgrade: templates are applied, crds/ is not (the CRD stays as installed).
  const upgrade = await applyAll(next.filter((m) => m.kind !== 'CustomResourceDefinition'));
  assert.equal(upgrade.code, 0, upgrade.stderr);
  const after = JSON.parse((await kubectl(server, ['get', 'elasticjob', 'long-run', '-o', 'json'])).stdout) as {
    metadata: { uid: string };
  };
  assert.equal(after.metadata.uid, uid.metadata.uid);
  const p = await kubectl(server, ['get', 'pod', 'long-run-worker-0', '-o', 'jsonpath={.metadata.name}']);
  assert.equal(p.stdout, 'long-run-worker-0');
  // Rendering the new CRD over the installed one (what `kubectl apply -f crds/` would do by hand) is accepted too.
  const dir = mkdtempSync(join(tmpdir(), 'tensile-crd-'));
  try {
    writeFileSync(join(dir, 'crd.yaml'), stringify(crdOf(next)));
    const r = await kubectl(server, ['apply', '-f', join(dir, 'crd.yaml')]);
    assert.equal(r.code, 0, r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.equal((await kubectl(server, ['get', 'elasticjob', 'long-run'])).code, 0);
});
