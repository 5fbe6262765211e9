import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parse } from 'yaml';
import { resolveSpec, validateElasticJob, formatIssues } from '../../../operator/v1alpha1/elasticjob-types.js';
import { generatedFiles } from '../../../operator/config/generated.js';

const root = new URL('../../../', import.meta.url);

function job(spec: Record<string, unknown>) {
  return { apiVersion: 'tensile.dev/v1alpha1', kind: 'ElasticJob', metadata: { name: 'j' }, spec };
}
const template = { spec: { containers: [{ name: 'worker', image: 'tensile/agent:0.1.0' }] } };

test('a valid ElasticJob passes validation and gets defaults in one place', () => {
  const r = validateElasticJob(
    job({
      rdzvEndpoint: 'etcd:2379',
      minReplicas: 1,
      maxReplicas: 3,
      replicaSpecs: { Worker: { replicas: 2, template } },
    }),
  );
  assert.equal(r.ok, true);
  if (!r.ok) return;
  const s = resolveSpec(r.job.spec);
  assert.deepEqual(
    {
      min: s.minReplicas,
      max: s.maxReplicas,
      replicas: s.replicas,
      restart: s.restartPolicy,
      clean: s.cleanPodPolicy,
      backoff: s.backoffLimit,
      codes: [...s.preemptionExitCodes],
    },
    { min: 1, max: 3, replicas: 2, restart: 'ExitCode', clean: 'Running', backoff: 3, codes: [137, 143] },
  );
});

test('min greater than max is rejected with a message naming both fields and values', () => {
  const r = validateElasticJob(
    job({ minReplicas: 4, maxReplicas: 2, replicaSpecs: { Worker: { replicas: 3, template } } }),
  );
  assert.equal(r.ok, false);
  if (r.ok) return;
  assert.match(formatIssues(r.issues), /spec\.minReplicas: 4 must be ≤ spec\.maxReplicas \(2\)/);
});

test('replicas outside [min, max] is rejected naming spec.replicaSpecs.Worker.replicas', () => {
  const r = validateElasticJob(
    job({ minReplicas: 2, maxReplicas: 4, replicaSpecs: { Worker: { replicas: 5, template } } }),
  );
  assert.equal(r.ok, false);
  if (r.ok) return;
  assert.match(formatIssues(r.issues), /spec\.replicaSpecs\.Worker\.replicas: 5 must be ≤ spec\.maxReplicas \(4\)/);
});

test('a missing template and an unknown restart policy are rejected with their field paths', () => {
  const r = validateElasticJob(job({ replicaSpecs: { Worker: { replicas: 1, restartPolicy: 'Sometimes' } } }));
  assert.equal(r.ok, false);
  if (r.ok) return;
  const paths = r.issues.map((i) => i.path);
  assert.ok(paths.includes('spec.replicaSpecs.Worker.template'), paths.join(','));
  assert.ok(paths.includes('spec.replicaSpecs.Worker.restartPolicy'), paths.join(','));
});

test('replicas default to max when only min and max are given', () => {
  const r = validateElasticJob(job({ minReplicas: 1, maxReplicas: 3, replicaSpecs: { Worker: { template } } }));
  assert.equal(r.ok, true);
  if (r.ok) assert.equal(resolveSpec(r.job.spec).replicas, 3);
});

test('the committed CRD, chart CRD and values schema equal what operator/gen-crd.ts generates', async () => {
  for (const f of await generatedFiles()) {
    assert.equal(
      readFileSync(new URL(f.path, root), 'utf8'),
      f.text,
      `${f.path} is stale: run node --import tsx operator/gen-crd.ts`,
    );
  }
});

test('the CRD has status and scale subresources and min/max/current/state printer columns', () => {
  const crd = parse(readFileSync(new URL('charts/tensile/crds/elasticjob.yaml', root), 'utf8'));
  const v = crd.spec.versions[0];
  assert.deepEqual(v.subresources.status, {});
  assert.equal(v.subresources.scale.specReplicasPath, '.spec.replicaSpecs.Worker.replicas');
  assert.equal(v.subresources.scale.statusReplicasPath, '.status.replicaStatuses.Worker.active');
  const cols = v.additionalPrinterColumns.map((c: { name: string }) => c.name);
  for (const c of ['Min', 'Max', 'Current', 'State', 'Age']) assert.ok(cols.includes(c), c);
  const spec = v.schema.openAPIV3Schema.properties.spec;
  assert.equal(
    spec.properties.replicaSpecs.properties.Worker.properties.template['x-kubernetes-preserve-unknown-fields'],
    undefined,
  );
  assert.equal(
    spec.properties.replicaSpecs.properties.Worker.properties.template.properties.spec[
      'x-kubernetes-preserve-unknown-fields'
    ],
    true,
  );
  assert.ok(JSON.stringify(spec).indexOf('$schema') < 0);
});
