// The operator's KubeClient on @kubernetes/client-node's typed APIs (CoreV1Api, AppsV1Api, CoordinationV1Api,
// CustomObjectsApi). Every call goes through `call()`, which turns client-node's ApiException into the operator's
// errors (409 → ApiConflictError, 404 → ApiNotFoundError, anything else → ApiError with the HTTP status).
//
// KUBE_API_CALLS lists every (group, resource, verbs) used here and by the informers; the chart's RBAC is tested
// against it, so add a line whenever a call is added.
import {
  PatchStrategy,
  setHeaderOptions,
  type CoreV1Event,
  type V1Lease,
  type V1Pod,
  type V1Service,
  type V1StatefulSet,
} from '@kubernetes/client-node';
import {
  ApiConflictError,
  ApiNotFoundError,
  type EventRecord,
  type InvolvedObject,
  type KubeApiCall,
  type KubeClient,
} from '../api.js';
import { GROUP, PLURAL, VERSION } from '../v1alpha1/elasticjob-types.js';
import { call, type KubeApis } from './client-node.js';

export const KUBE_API_CALLS: readonly KubeApiCall[] = [
  { group: GROUP, resource: PLURAL, verbs: ['get', 'list', 'watch', 'delete'] },
  { group: GROUP, resource: `${PLURAL}/status`, verbs: ['get', 'update', 'patch'] },
  { group: '', resource: 'pods', verbs: ['get', 'list', 'watch', 'create', 'delete'] },
  { group: '', resource: 'services', verbs: ['get', 'list', 'watch', 'create', 'delete'] },
  { group: '', resource: 'events', verbs: ['create', 'patch'] },
  { group: '', resource: 'nodes', verbs: ['get', 'list', 'watch'] },
  { group: 'apps', resource: 'statefulsets', verbs: ['get', 'create'] },
  { group: 'coordination.k8s.io', resource: 'leases', verbs: ['get', 'create', 'update'] },
];

export const MANAGED_ETCD_NAME = 'tensile-etcd';

const job = (namespace: string, name: string) => ({ group: GROUP, version: VERSION, plural: PLURAL, namespace, name });
/** client-node 1.x picks a patch's content type through a header middleware. */
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

async function ignoreConflict(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof ApiConflictError)) throw err;
  }
}

export class ClientNodeKubeClient implements KubeClient {
  private eventSeq = 0;

  constructor(readonly apis: KubeApis) {}

  getElasticJob(namespace: string, name: string): Promise<unknown> {
    return call(`get elasticjob ${namespace}/${name}`, () =>
      this.apis.custom.getNamespacedCustomObject(job(namespace, name)),
    );
  }

  replaceElasticJobStatus(namespace: string, name: string, body: object): Promise<unknown> {
    return call(`replace elasticjob ${namespace}/${name} status`, () =>
      this.apis.custom.replaceNamespacedCustomObjectStatus({ ...job(namespace, name), body }),
    );
  }

  /** JSON merge patch (RFC 7386) of the status subresource; not fenced by resourceVersion unless the patch sets it. */
  patchElasticJobStatus(namespace: string, name: string, patch: object): Promise<unknown> {
    return call(`patch elasticjob ${namespace}/${name} status`, () =>
      this.apis.custom.patchNamespacedCustomObjectStatus({ ...job(namespace, name), body: patch }, mergePatch),
    );
  }

  async deleteElasticJob(namespace: string, name: string): Promise<void> {
    await call(`delete elasticjob ${namespace}/${name}`, () =>
      this.apis.custom.deleteNamespacedCustomObject({ ...job(namespace, name), propagationPolicy: 'Background' }),
    );
  }

  createPod(namespace: string, pod: V1Pod): Promise<V1Pod> {
    return call(`create pod ${namespace}/${pod.metadata?.name ?? ''}`, () =>
      this.apis.core.createNamespacedPod({ namespace, body: pod }),
    );
  }

  async deletePod(namespace: string, name: string, uid?: string): Promise<void> {
    await call(`delete pod ${namespace}/${name}`, () =>
      this.apis.core.deleteNamespacedPod({
        namespace,
        name,
        body: uid !== undefined && uid !== '' ? { preconditions: { uid } } : {},
      }),
    );
  }

  createService(namespace: string, svc: V1Service): Promise<V1Service> {
    return call(`create service ${namespace}/${svc.metadata?.name ?? ''}`, () =>
      this.apis.core.createNamespacedService({ namespace, body: svc }),
    );
  }

  async deleteService(namespace: string, name: string): Promise<void> {
    await call(`delete service ${namespace}/${name}`, () =>
      this.apis.core.deleteNamespacedService({ namespace, name }),
    );
  }

  async createEvent(involved: InvolvedObject, event: EventRecord, reportingInstance: string): Promise<void> {
    const now = new Date();
    this.eventSeq += 1;
    const body: CoreV1Event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: {
        name: `${involved.name}.${Date.now().toString(16)}${this.eventSeq.toString(16)}`,
        namespace: involved.namespace,
      },
      involvedObject: { ...involved },
      reason: event.reason,
      message: event.message,
      type: event.type,
      source: { component: 'tensile-operator' },
      reportingComponent: 'tensile.dev/operator',
      reportingInstance,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    await call(`create event ${involved.namespace}/${body.metadata.name ?? ''}`, () =>
      this.apis.core.createNamespacedEvent({ namespace: involved.namespace, body }),
    );
  }

  /**
   * Creates (if absent) a one-member etcd StatefulSet and its Service in `namespace`, kept off spot nodes by node
   * affinity. Returns the client endpoint `tensile-etcd.<ns>.svc:2379`.
   */
  async ensureManagedEtcd(namespace: string, image: string): Promise<string> {
    const labels = { 'app.kubernetes.io/name': MANAGED_ETCD_NAME, 'app.kubernetes.io/managed-by': 'tensile-operator' };
    const svc: V1Service = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: MANAGED_ETCD_NAME, namespace, labels },
      spec: { selector: labels, ports: [{ name: 'client', port: 2379, targetPort: 2379 }] },
    };
    const sts: V1StatefulSet = {
      apiVersion: 'apps/v1',
      kind: 'StatefulSet',
      metadata: { name: MANAGED_ETCD_NAME, namespace, labels },
      spec: {
        serviceName: MANAGED_ETCD_NAME,
        replicas: 1,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            affinity: {
              nodeAffinity: {
                requiredDuringSchedulingIgnoredDuringExecution: {
                  nodeSelectorTerms: [
                    {
                      matchExpressions: [
                        { key: 'kubernetes.azure.com/scalesetpriority', operator: 'NotIn', values: ['spot'] },
                        { key: 'eks.amazonaws.com/capacityType', operator: 'NotIn', values: ['SPOT'] },
                        { key: 'cloud.google.com/gke-spot', operator: 'NotIn', values: ['true'] },
                      ],
                    },
                  ],
                },
              },
            },
            securityContext: { runAsNonRoot: true, runAsUser: 65532, fsGroup: 65532 },
            containers: [
              {
                name: 'etcd',
                image,
                command: ['etcd'],
                args: [
                  '--name=etcd-0',
                  '--data-dir=/var/lib/etcd',
                  '--listen-client-urls=http://0.0.0.0:2379',
                  `--advertise-client-urls=http://${MANAGED_ETCD_NAME}.${namespace}.svc:2379`,
                  '--listen-peer-urls=http://0.0.0.0:2380',
                ],
                ports: [{ name: 'client', containerPort: 2379 }],
                readinessProbe: { httpGet: { path: '/health', port: 2379 }, periodSeconds: 5 },
                resources: { requests: { cpu: '100m', memory: '128Mi' } },
                volumeMounts: [{ name: 'data', mountPath: '/var/lib/etcd' }],
              },
            ],
            volumes: [{ name: 'data', emptyDir: {} }],
          },
        },
      },
    };
    const { core, apps } = this.apis;
    await ignoreConflict(call('create service', () => core.createNamespacedService({ namespace, body: svc })));
    await ignoreConflict(call('create statefulset', () => apps.createNamespacedStatefulSet({ namespace, body: sts })));
    return `${MANAGED_ETCD_NAME}.${namespace}.svc:2379`;
  }

  async readLease(namespace: string, name: string): Promise<V1Lease | undefined> {
    try {
      return await call(`read lease ${namespace}/${name}`, () =>
        this.apis.coordination.readNamespacedLease({ namespace, name }),
      );
    } catch (err) {
      if (err instanceof ApiNotFoundError) return undefined;
      throw err;
    }
  }

  createLease(namespace: string, lease: V1Lease): Promise<V1Lease> {
    return call(`create lease ${namespace}/${lease.metadata?.name ?? ''}`, () =>
      this.apis.coordination.createNamespacedLease({ namespace, body: lease }),
    );
  }

  replaceLease(namespace: string, name: string, lease: V1Lease): Promise<V1Lease> {
    return call(`replace lease ${namespace}/${name}`, () =>
      this.apis.coordination.replaceNamespacedLease({ namespace, name, body: lease }),
    );
  }
}
