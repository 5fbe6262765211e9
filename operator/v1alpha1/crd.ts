// Builds the ElasticJob CustomResourceDefinition from the zod schemas in `elasticjob-types.ts`.
// `operator/gen-crd.ts` writes it to `operator/config/crd.yaml` and `charts/tensile/crds/elasticjob.yaml`;
// a unit test checks the committed files equal what this returns.
import { z } from 'zod';
import {
  GROUP,
  KIND,
  PLURAL,
  SHORT_NAMES,
  SINGULAR,
  VERSION,
  elasticJobSpecSchema,
  elasticJobStatusSchema,
} from './elasticjob-types.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

const INT32_MAX = 2147483647;

/**
 * Rewrites a JSON Schema (draft 2020-12, as zod emits it) into a Kubernetes structural schema: no `$schema`,
 * open objects become `x-kubernetes-preserve-unknown-fields`, records lose `propertyNames`, integers get a format.
 */
export function toStructural(node: Json): Json {
  if (Array.isArray(node)) return node.map(toStructural);
  if (node === null || typeof node !== 'object') return node;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === '$schema' || k === 'propertyNames') continue;
    if ((k === 'maximum' || k === 'minimum') && typeof v === 'number' && Math.abs(v) === Number.MAX_SAFE_INTEGER) {
      continue;
    }
    out[k] = toStructural(v);
  }
  const ap = out.additionalProperties;
  if (ap !== undefined && typeof ap === 'object' && ap !== null && !Array.isArray(ap) && Object.keys(ap).length === 0) {
    delete out.additionalProperties;
    out['x-kubernetes-preserve-unknown-fields'] = true;
    if (out.properties !== undefined && Object.keys(out.properties as JsonObject).length === 0) delete out.properties;
  }
  if (out.type === 'integer') {
    out.format = out.maximum === INT32_MAX ? 'int32' : 'int64';
  }
  return out;
}

function schemaOf(s: z.ZodType): JsonObject {
  return toStructural(z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' }) as Json) as JsonObject;
}

/** CEL rules for what OpenAPI cannot say; the operator checks the same rules (`crossFieldIssues`). */
const SPEC_VALIDATIONS: JsonObject[] = [
  {
    rule: '!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas',
    message: 'spec.minReplicas must be ≤ spec.maxReplicas',
    fieldPath: '.minReplicas',
  },
  {
    rule: '!has(self.replicaSpecs.Worker.replicas) || !has(self.minReplicas) || self.replicaSpecs.Worker.replicas >= self.minReplicas',
    message: 'spec.replicaSpecs.Worker.replicas must be ≥ spec.minReplicas',
    fieldPath: '.replicaSpecs.Worker.replicas',
  },
  {
    rule: '!has(self.replicaSpecs.Worker.replicas) || !has(self.maxReplicas) || self.replicaSpecs.Worker.replicas <= self.maxReplicas',
    message: 'spec.replicaSpecs.Worker.replicas must be ≤ spec.maxReplicas',
    fieldPath: '.replicaSpecs.Worker.replicas',
  },
];

/** The CRD object (apiextensions.k8s.io/v1). */
export function buildCrd(): JsonObject {
  const spec = schemaOf(elasticJobSpecSchema);
  spec['x-kubernetes-validations'] = SPEC_VALIDATIONS;
  const status = schemaOf(elasticJobStatusSchema);
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${PLURAL}.${GROUP}`,
      annotations: { 'helm.sh/resource-policy': 'keep' },
      labels: { 'app.kubernetes.io/name': 'tensile', 'app.kubernetes.io/component': 'crd' },
    },
    spec: {
      group: GROUP,
      scope: 'Namespaced',
      names: { kind: KIND, listKind: `${KIND}List`, plural: PLURAL, singular: SINGULAR, shortNames: [...SHORT_NAMES] },
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          schema: {
            openAPIV3Schema: {
              type: 'object',
              description: 'An elastic distributed training job: workers run `tensile run` and rendezvous on etcd.',
              required: ['spec'],
              properties: {
                apiVersion: { type: 'string' },
                kind: { type: 'string' },
                metadata: { type: 'object' },
                spec: spec,
                status: status,
              },
            },
          },
          subresources: {
            status: {},
            scale: {
              specReplicasPath: '.spec.replicaSpecs.Worker.replicas',
              statusReplicasPath: '.status.replicaStatuses.Worker.active',
              labelSelectorPath: '.status.replicaStatuses.Worker.selector',
            },
          },
          additionalPrinterColumns: [
            { name: 'Min', type: 'integer', jsonPath: '.spec.minReplicas' },
            { name: 'Max', type: 'integer', jsonPath: '.spec.maxReplicas' },
            { name: 'Desired', type: 'integer', jsonPath: '.spec.replicaSpecs.Worker.replicas' },
            { name: 'Current', type: 'integer', jsonPath: '.status.replicaStatuses.Worker.active' },
            { name: 'State', type: 'string', jsonPath: '.status.state' },
            { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
          ],
        },
      ],
    },
  };
}
