// The Helm chart through real helm (v4, extracted from a devDependency): lint and template over a values matrix,
// the operator's args checked against the options schema, values.schema.json rejections, and the rendered
// manifests applied with real kubectl to the test API server.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { chartOperatorOptions, chartValuesSchema, type ChartValues } from '../../../operator/config/chart-values.js';
import { parseOperatorOptions } from '../../../operator/config/operator-options.js';
import { operatorArgvOptions } from '../../../operator/operator-cli.js';
import {
  CHART_DIR,
  helm,
  helmTemplate,
  helmTemplateRaw,
  manifestOf,
  operatorContainer,
  type Manifest,
} from '../../helpers/helm.js';
import { kubectl, startTestApiServer, type TestApiServer } from '../../k8s/index.js';

const DEFAULTS = parse(readFileSync(join(CHART_DIR, 'values.yaml'), 'utf8')) as ChartValues;

/** values.yaml with `over` merged in the way helm merges -f files (maps deep, everything else replaced). */
function merged(over: object): ChartValues {
  const merge = (a: unknown, b: unknown): unknown => {
    if (b === null || typeof b !== 'object' || Array.isArray(b) || a === null || typeof a !== 'object') return b;
    const out: Record<string, unknown> = { ...(a as Record<string, unknown>) };
    for (const [k, v] of Object.entries(b)) out[k] = merge(out[k], v);
    return out;
  };
  return chartValuesSchema.parse(merge(DEFAULTS, over));
}

interface Case {
  readonly name: string;
  readonly values: object;
  readonly namespace?: string;
  /** Extra checks on the rendered manifests. */
  readonly check?: (m: Manifest[]) => void;
}

const podSpec = (m: Manifest[]) =>
  (manifestOf(m, 'Deployment') as unknown as { spec: { template: { spec: Record<string, unknown> } } }).spec.template
    .spec;

const MATRIX: readonly Case[] = [
  {
    name: 'defaults',
    values: {},
    check: (m) => {
      assert.deepEqual(
        m.map((x) => x.kind).sort(),
        [
          'ClusterRole',
          'ClusterRoleBinding',
          'CustomResourceDefinition',
          'Deployment',
          'Role',
          'RoleBinding',
          'Service',
          'ServiceAccount',
        ].sort(),
      );
      assert.equal(operatorContainer(m).image, 'ghcr.io/tensile/operator:0.1.0');
      assert.equal((manifestOf(m, 'Deployment').spec as { replicas: number }).replicas, 2);
      assert.equal(
        operatorContainer(m).env?.some((e) => e.name === 'NODE_OPTIONS'),
        false,
        'empty nodeOptions: no NODE_OPTIONS',
      );
    },
  },
  {
    name: 'operator-managed etcd off, another etcd image',
    values: { managedEtcd: { enabled: false, image: 'registry.local/etcd:3.5' } },
    check: (m) => assert.ok(operatorContainer(m).args?.includes('--no-managed-etcd')),
  },
  {
    name: 'custom image',
    values: { image: { repository: 'registry.local/tensile-operator', tag: 'dev-1', pullPolicy: 'Never' } },
    check: (m) => {
      assert.equal(operatorContainer(m).image, 'registry.local/tensile-operator:dev-1');
      assert.equal(operatorContainer(m).imagePullPolicy, 'Never');
    },
  },
  {
    name: 'resources and Node heap flags',
    values: {
      resources: { requests: { cpu: '250m', memory: '200Mi' }, limits: { memory: '300Mi' } },
      nodeOptions: '--max-old-space-size=250',
    },
    check: (m) => {
      assert.deepEqual(operatorContainer(m).resources, {
        requests: { cpu: '250m', memory: '200Mi' },
        limits: { memory: '300Mi' },
      });
      assert.deepEqual(
        operatorContainer(m).env?.find((e) => e.name === 'NODE_OPTIONS'),
        { name: 'NODE_OPTIONS', value: '--max-old-space-size=250' },
      );
    },
  },
  {
    name: 'nodeSelector and tolerations',
    values: {
      nodeSelector: { 'node-role/infra': 'true' },
      tolerations: [{ key: 'infra', operator: 'Exists', effect: 'NoSchedule' }],
    },
    check: (m) => {
      assert.deepEqual(podSpec(m).nodeSelector, { 'node-role/infra': 'true' });
      assert.deepEqual(podSpec(m).tolerations, [{ key: 'infra', operator: 'Exists', effect: 'NoSchedule' }]);
    },
  },
  {
    name: 'leader election off (one replica)',
    values: { replicas: 1, leaderElection: { enabled: false } },
    check: (m) => assert.ok(operatorContainer(m).args?.includes('--no-leader-election')),
  },
  {
    name: 'leader election on with other timings, more workers, one watched namespace',
    namespace: 'ml-system',
    values: {
      replicas: 3,
      workers: 8,
      watchNamespace: 'ml',
      leaderElection: { enabled: true, leaseName: 'op-lease', leaseDurationSeconds: 30, renewDeadlineSeconds: 20 },
    },
    check: (m) => {
      const args = operatorContainer(m).args ?? [];
      assert.ok(args.includes('--lease-namespace=ml-system'));
      assert.ok(!args.includes('--no-leader-election'));
      // A single watched namespace gets a namespaced Role, no ClusterRole for jobs.
      assert.ok(!m.some((x) => x.kind === 'ClusterRole'));
    },
  },
];

describe('helm lint and template over a values matrix', () => {
  for (const c of MATRIX) {
    test(`${c.name}: lints clean, renders, and the operator args give the options the chart table says`, async () => {
      const ns = c.namespace ?? 'default';
      const lint = await helm(['lint', CHART_DIR, '--namespace', ns, ...setArgs(c.values)]);
      assert.equal(lint.code, 0, `helm lint: ${lint.stdout}${lint.stderr}`);
      assert.match(lint.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
      const m = await helmTemplate(c.values, { namespace: ns });
      const container = operatorContainer(m);
      const args = container.args ?? [];
      assert.deepEqual(args.slice(0, 2), ['dist/agent/cli.js', 'operator']);
      assert.deepEqual(
        parseOperatorOptions(operatorArgvOptions(args.slice(2))),
        parseOperatorOptions(chartOperatorOptions(merged(c.values), ns)),
      );
      assert.ok(args.includes(`--log-level=${merged(c.values).logLevel}`));
      assert.deepEqual(
        container.env?.find((e) => e.name === 'POD_NAME'),
        { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
        'POD_NAME (the leader identity) comes from the downward API',
      );
      c.check?.(m);
    });
  }
});

/** `--set-json` flags for a values object (helm lint takes no stdin values file). */
function setArgs(values: object): string[] {
  return Object.entries(values).flatMap(([k, v]) => ['--set-json', `${k}=${JSON.stringify(v)}`]);
}

describe('invalid values fail with the schema message', () => {
  const cases: Array<[string, object, RegExp]> = [
    ['replicas below 1', { replicas: 0 }, /at '\/replicas': minimum: got 0, want 1/],
    [
      'an unknown pull policy',
      { image: { pullPolicy: 'Sometimes' } },
      /at '\/image\/pullPolicy': value must be one of/,
    ],
    ['a misspelt key', { replicaz: 2 }, /additional properties 'replicaz' not allowed/],
    [
      'a metrics port out of range',
      { metrics: { port: 70000 } },
      /at '\/metrics\/port': maximum: got 70,000, want 65,535/,
    ],
    ['workers as a string', { workers: 'four' }, /at '\/workers': got string, want integer/],
    [
      'a renew deadline not below the lease duration',
      { leaderElection: { leaseDurationSeconds: 10, renewDeadlineSeconds: 10 } },
      /leaderElection.renewDeadlineSeconds \(10\) must be < leaderElection.leaseDurationSeconds \(10\)/,
    ],
    [
      'two replicas without leader election',
      { replicas: 2, leaderElection: { enabled: false } },
      /replicas \(2\) > 1 needs leaderElection.enabled: true/,
    ],
  ];
  for (const [name, values, message] of cases) {
    test(`${name} is rejected by helm template`, async () => {
      const r = await helmTemplateRaw(values);
      assert.notEqual(r.code, 0, `rendered although invalid:\n${r.stdout.slice(0, 400)}`);
      assert.match(r.stderr, message);
    });
  }
});

describe('the rendered chart applied with kubectl', () => {
  let server: TestApiServer;
  before(async () => {
    server = await startTestApiServer();
  });
  after(async () => {
    await server?.stop();
  });

  test('every rendered manifest is accepted by the test API server and readable back', async () => {
    const ns = 'tensile-system';
    const m = await helmTemplate({}, { namespace: ns, release: 'tensile' });
    const create = await kubectl(server, ['create', 'namespace', ns]);
    assert.equal(create.code, 0, create.stderr);
    const r = await kubectl(server, ['apply', '-f', '-'], { stdin: m.map((x) => stringify(x)).join('---\n') });
    assert.equal(r.code, 0, r.stderr);
    for (const x of m) {
      const args = ['get', `${x.kind.toLowerCase()}/${x.metadata.name}`, '-o', 'json'];
      if (x.metadata.namespace !== undefined) args.push('-n', x.metadata.namespace);
      const got = await kubectl(server, args);
      assert.equal(got.code, 0, `${x.kind} ${x.metadata.name}: ${got.stderr}`);
      assert.equal((JSON.parse(got.stdout) as Manifest).kind, x.kind);
    }
    const d = await kubectl(server, ['get', 'deployment', 'tensile-operator', '-n', ns, '-o', 'json']);
    const dep = JSON.parse(d.stdout) as { spec: { template: { spec: { serviceAccountName: string } } } };
    assert.equal(dep.spec.template.spec.serviceAccountName, 'tensile-operator');
    // The CRD from crds/ is served at once: ElasticJobs can be listed.
    const jobs = await kubectl(server, ['get', 'elasticjobs', '-A']);
    assert.equal(jobs.code, 0, jobs.stderr);
  });
});
