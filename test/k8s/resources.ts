// The resource registry: built-in kinds served by the test API server and the ones CRDs add.
import type { KObject } from './api.js';
import type { Schema } from './schema.js';

export interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  format?: string;
  description?: string;
  priority?: number;
}

export interface ScaleSpec {
  specReplicasPath: string;
  statusReplicasPath: string;
  labelSelectorPath?: string;
}

export interface ResourceDef {
  group: string;
  /** Served versions; the first is the preferred and storage version. */
  versions: string[];
  plural: string;
  singular: string;
  kind: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  statusSubresource: boolean;
  scale?: ScaleSpec;
  extraSubresources: string[];
  /** Per served version, for custom resources. */
  schemas: Record<string, Schema | undefined>;
  columns: Record<string, PrinterColumn[] | undefined>;
  /** Set for custom resources: the CRD's name. */
  crd?: string;
}

export const resKey = (group: string, plural: string): string => `${group}/${plural}`;

function builtin(
  group: string,
  version: string,
  plural: string,
  kind: string,
  opts: Partial<Omit<ResourceDef, 'group' | 'versions' | 'plural' | 'kind'>> = {},
): ResourceDef {
  return {
    group,
    versions: [version],
    plural,
    kind,
    singular: kind.toLowerCase(),
    namespaced: true,
    shortNames: [],
    categories: [],
    statusSubresource: false,
    extraSubresources: [],
    schemas: {},
    columns: {},
    ...opts,
  };
}

export function builtinResources(): ResourceDef[] {
  const replicas: ScaleSpec = {
    specReplicasPath: '.spec.replicas',
    statusReplicasPath: '.status.replicas',
    labelSelectorPath: '.status.selector',
  };
  return [
    builtin('', 'v1', 'pods', 'Pod', {
      shortNames: ['po'],
      categories: ['all'],
      statusSubresource: true,
      extraSubresources: ['eviction', 'log', 'binding'],
    }),
    builtin('', 'v1', 'services', 'Service', { shortNames: ['svc'], categories: ['all'], statusSubresource: true }),
    builtin('', 'v1', 'endpoints', 'Endpoints', { shortNames: ['ep'] }),
    builtin('', 'v1', 'events', 'Event', { shortNames: ['ev'] }),
    builtin('', 'v1', 'configmaps', 'ConfigMap', { shortNames: ['cm'] }),
    builtin('', 'v1', 'persistentvolumeclaims', 'PersistentVolumeClaim', {
      shortNames: ['pvc'],
      statusSubresource: true,
    }),
    builtin('', 'v1', 'secrets', 'Secret'),
    builtin('', 'v1', 'serviceaccounts', 'ServiceAccount', { shortNames: ['sa'] }),
    builtin('', 'v1', 'namespaces', 'Namespace', { shortNames: ['ns'], namespaced: false, statusSubresource: true }),
    builtin('', 'v1', 'nodes', 'Node', { shortNames: ['no'], namespaced: false, statusSubresource: true }),
    builtin('apps', 'v1', 'statefulsets', 'StatefulSet', {
      shortNames: ['sts'],
      categories: ['all'],
      statusSubresource: true,
      scale: replicas,
    }),
    builtin('apps', 'v1', 'deployments', 'Deployment', {
      shortNames: ['deploy'],
      categories: ['all'],
      statusSubresource: true,
      scale: replicas,
    }),
    builtin('coordination.k8s.io', 'v1', 'leases', 'Lease'),
    builtin('events.k8s.io', 'v1', 'events', 'Event', { shortNames: ['ev'] }),
    builtin('policy', 'v1', 'poddisruptionbudgets', 'PodDisruptionBudget', {
      shortNames: ['pdb'],
      statusSubresource: true,
    }),
    builtin('autoscaling', 'v2', 'horizontalpodautoscalers', 'HorizontalPodAutoscaler', {
      shortNames: ['hpa'],
      statusSubresource: true,
    }),
    builtin('rbac.authorization.k8s.io', 'v1', 'roles', 'Role'),
    builtin('rbac.authorization.k8s.io', 'v1', 'rolebindings', 'RoleBinding'),
    builtin('rbac.authorization.k8s.io', 'v1', 'clusterroles', 'ClusterRole', { namespaced: false }),
    builtin('rbac.authorization.k8s.io', 'v1', 'clusterrolebindings', 'ClusterRoleBinding', { namespaced: false }),
    builtin('apiextensions.k8s.io', 'v1', 'customresourcedefinitions', 'CustomResourceDefinition', {
      shortNames: ['crd', 'crds'],
      namespaced: false,
      statusSubresource: true,
    }),
  ];
}

/** Builds the registry entry a CRD asks for; throws a list of problems when it is not acceptable. */
export function defFromCrd(crd: KObject): { def?: ResourceDef; problems: Array<{ field: string; message: string }> } {
  const problems: Array<{ field: string; message: string }> = [];
  const spec = (crd.spec ?? {}) as Record<string, unknown>;
  const names = (spec.names ?? {}) as Record<string, unknown>;
  const group = spec.group;
  if (typeof group !== 'string' || !group.includes('.'))
    problems.push({
      field: 'spec.group',
      message: `Invalid value: ${JSON.stringify(group)}: should be a domain with at least one dot`,
    });
  if (typeof names.plural !== 'string' || !names.plural)
    problems.push({ field: 'spec.names.plural', message: 'Required value' });
  if (typeof names.kind !== 'string' || !names.kind)
    problems.push({ field: 'spec.names.kind', message: 'Required value' });
  if (spec.scope !== 'Namespaced' && spec.scope !== 'Cluster')
    problems.push({
      field: 'spec.scope',
      message: `Unsupported value: ${JSON.stringify(spec.scope)}: supported values: "Cluster", "Namespaced"`,
    });
  const versions = Array.isArray(spec.versions) ? (spec.versions as Array<Record<string, unknown>>) : [];
  if (versions.length === 0)
    problems.push({
      field: 'spec.versions',
      message: 'Invalid value: null: must have exactly one version marked as storage version',
    });
  if (versions.length > 0 && versions.filter((v) => v.storage === true).length !== 1)
    problems.push({
      field: 'spec.versions',
      message: 'Invalid value: must have exactly one version marked as storage version',
    });
  if (typeof names.plural === 'string' && typeof group === 'string' && crd.metadata.name !== `${names.plural}.${group}`)
    problems.push({
      field: 'metadata.name',
      message: `Invalid value: "${crd.metadata.name}": must be spec.names.plural+"."+spec.group`,
    });
  if (problems.length > 0) return { problems };
  const served = versions.filter((v) => v.served !== false);
  const storage = versions.find((v) => v.storage === true)!;
  const ordered = [storage, ...served.filter((v) => v !== storage)].filter((v) => v.served !== false);
  const def: ResourceDef = {
    group: group as string,
    versions: ordered.map((v) => String(v.name)),
    plural: names.plural as string,
    singular: typeof names.singular === 'string' ? names.singular : (names.kind as string).toLowerCase(),
    kind: names.kind as string,
    namespaced: spec.scope === 'Namespaced',
    shortNames: Array.isArray(names.shortNames) ? (names.shortNames as string[]) : [],
    categories: Array.isArray(names.categories) ? (names.categories as string[]) : [],
    statusSubresource: false,
    extraSubresources: [],
    schemas: {},
    columns: {},
    crd: crd.metadata.name,
  };
  for (const v of versions) {
    const name = String(v.name);
    const sub = (v.subresources ?? {}) as Record<string, unknown>;
    if (v.storage === true) {
      def.statusSubresource = sub.status !== undefined;
      if (sub.scale && typeof sub.scale === 'object') def.scale = sub.scale as ScaleSpec;
    }
    def.schemas[name] = ((v.schema ?? {}) as Record<string, unknown>).openAPIV3Schema as Schema | undefined;
    def.columns[name] = v.additionalPrinterColumns as PrinterColumn[] | undefined;
  }
  return { def, problems };
}
