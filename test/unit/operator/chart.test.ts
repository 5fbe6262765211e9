import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { chartValuesSchema } from '../../../operator/config/chart-values.js';
import { KUBE_API_CALLS } from '../../../operator/kube/kube-client.js';
import { validateElasticJob, formatIssues } from '../../../operator/v1alpha1/elasticjob-types.js';

const root = new URL('../../../', import.meta.url);
const read = (p: string) => readFileSync(new URL(p, root), 'utf8');

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

/** The plain-YAML rule blocks between `# BEGIN <name>` and `# END <name>` in the RBAC template. */
function ruleBlock(text: string, name: string): Rule[] {
  const m = new RegExp(`# BEGIN ${name}\\n([\\s\\S]*?)# END ${name}`).exec(text);
  assert.ok(m, `block ${name} not found in rbac.yaml`);
  return parse(m[1]!) as Rule[];
}

test('values.yaml parses against the chart values schema', () => {
  const r = chartValuesSchema.safeParse(parse(read('charts/tensile/values.yaml')));
  assert.ok(r.success, r.success ? '' : JSON.stringify(r.error.issues));
});

test('the chart RBAC grants every API call the operator makes, and nothing beyond them', () => {
  const rbac = read('charts/tensile/templates/rbac.yaml');
  const rules = [
    ...ruleBlock(rbac, 'operator-rules'),
    ...ruleBlock(rbac, 'cluster-rules'),
    ...ruleBlock(rbac, 'leader-rules'),
  ];
  const granted = new Set<string>();
  for (const r of rules)
    for (const g of r.apiGroups)
      for (const res of r.resources) for (const v of r.verbs) granted.add(`${g}|${res}|${v}`);
  const needed = new Set<string>();
  for (const c of KUBE_API_CALLS) for (const v of c.verbs) needed.add(`${c.group}|${c.resource}|${v}`);
  const missing = [...needed].filter((k) => !granted.has(k));
  const extra = [...granted].filter((k) => !needed.has(k));
  assert.deepEqual(missing, [], `RBAC misses: ${missing.join(', ')}`);
  assert.deepEqual(extra, [], `RBAC grants more than the operator uses: ${extra.join(', ')}`);
});

test('the chart deployment runs non-root with probes on the metrics port', () => {
  const d = read('charts/tensile/templates/deployment.yaml');
  for (const needle of [
    'runAsNonRoot: true',
    'path: /healthz',
    'path: /readyz',
    'allowPrivilegeEscalation: false',
    'drop: ["ALL"]',
  ]) {
    assert.ok(d.includes(needle), needle);
  }
});

test('every example ElasticJob under examples/k8s is valid', () => {
  const dir = new URL('examples/k8s/', root);
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length >= 3);
  for (const f of files) {
    for (const doc of parseAllDocuments(readFileSync(new URL(f, dir), 'utf8'))) {
      const obj = doc.toJS() as { kind?: string };
      if (obj?.kind !== 'ElasticJob') continue;
      const r = validateElasticJob(obj);
      assert.ok(r.ok, `${f}: ${r.ok ? '' : formatIssues(r.issues)}`);
    }
  }
});

test('the spot example tolerates spot taints and sets a termination grace period, the GPU one asks for nvidia.com/gpu', () => {
  const spot = read('examples/k8s/spot-job.yaml');
  assert.match(spot, /terminationGracePeriodSeconds: \d+/);
  assert.match(spot, /tolerations:/);
  assert.match(read('examples/k8s/gpu-job.yaml'), /nvidia\.com\/gpu: \d+/);
});
