// The collections the operator's informers list and watch, on client-node: each list is a typed API call
// (CoreV1Api / CustomObjectsApi), each watch goes through client-node's `Watch` on the same collection path.
import type { KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION } from '../v1alpha1/elasticjob-types.js';
import { call, type KubeApis } from './client-node.js';
import type { ListWatchSource } from './informer.js';

type Lister = (labelSelector: string | undefined) => Promise<KubernetesListObject<KubernetesObject>>;

function source<T>(apis: KubeApis, path: string, lister: Lister): ListWatchSource<T> {
  return {
    path,
    async list(labelSelector) {
      const l = await call(`list ${path}`, () => lister(labelSelector));
      return { resourceVersion: l.metadata?.resourceVersion ?? '', items: l.items as T[] };
    },
    watch: (query, onEvent, signal) => apis.watch(path, query, onEvent, signal),
  };
}

const sel = (labelSelector: string | undefined) => (labelSelector !== undefined ? { labelSelector } : {});

/** ElasticJobs in `namespace`, or in all namespaces. */
export function elasticJobSource<T>(apis: KubeApis, namespace?: string): ListWatchSource<T> {
  const base = { group: GROUP, version: VERSION, plural: PLURAL };
  if (namespace === undefined) {
    return source(
      apis,
      `/apis/${GROUP}/${VERSION}/${PLURAL}`,
      (s) =>
        apis.custom.listClusterCustomObject({ ...base, ...sel(s) }) as Promise<KubernetesListObject<KubernetesObject>>,
    );
  }
  return source(
    apis,
    `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(namespace)}/${PLURAL}`,
    (s) =>
      apis.custom.listNamespacedCustomObject({ ...base, namespace, ...sel(s) }) as Promise<
        KubernetesListObject<KubernetesObject>
      >,
  );
}

export function podSource<T>(apis: KubeApis, namespace?: string): ListWatchSource<T> {
  if (namespace === undefined) {
    return source(apis, '/api/v1/pods', (s) => apis.core.listPodForAllNamespaces(sel(s)));
  }
  return source(apis, `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`, (s) =>
    apis.core.listNamespacedPod({ namespace, ...sel(s) }),
  );
}

export function serviceSource<T>(apis: KubeApis, namespace?: string): ListWatchSource<T> {
  if (namespace === undefined) {
    return source(apis, '/api/v1/services', (s) => apis.core.listServiceForAllNamespaces(sel(s)));
  }
  return source(apis, `/api/v1/namespaces/${encodeURIComponent(namespace)}/services`, (s) =>
    apis.core.listNamespacedService({ namespace, ...sel(s) }),
  );
}

export function nodeSource<T>(apis: KubeApis): ListWatchSource<T> {
  return source(apis, '/api/v1/nodes', (s) => apis.core.listNode(sel(s)));
}
