// The only file that calls @kubernetes/client-node's REST APIs. Translates its ApiException into the operator's
// errors (409 → ApiConflictError, 404 → ApiNotFoundError, anything else → ApiError).
//
// KUBE_API_CALLS lists every (group, resource, verbs) used here and by the informers; the chart's RBAC is tested
// against it, so add a line whenever a call is added.
import {
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type CoreV1Event,
  type KubeConfig,
  type V1Lease,
  type V1Pod,
  type V1Service,
  type V1StatefulSet,
} from '@kubernetes/client-node';
import {
  ApiConflictError,
  ApiError,
  ApiNotFoundError,
  type EventRecord,
  type InvolvedObject,
  type KubeApiCall,
  type KubeClient,
} from './api.js';
import { GROUP, PLURAL, VERSION } from './api/v1alpha1/elasticjob-types.js';

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

function translate(err: unknown, what: string): Error {
  const code = typeof err === 'object' && err !== null && 'code' in err ? Number((err as { code: unknown }).code) : 0;
  const body = typeof err === 'object' && err !== null && 'body' in err ? (err as { body: unknown }).body : undefined;
  let detail = '';
  if (typeof body === 'string') {
    try {
      detail = String((JSON.parse(body) as { message?: string }).message ?? body);
    } catch {
      detail = body;
    }
  } else if (body !== null && typeof body === 'object' && 'message' in body) {
    detail = String((body as { message: unknown }).message);
  } else if (err instanceof Error) {
    detail = err.message;
  }
  const message = `${what}: ${detail || `HTTP ${code}`}`;
  if (code === 409) return new ApiConflictError(message, { cause: err });
  if (code === 404) return new ApiNotFoundError(message, { cause: err });
  return new ApiError(message, Number.isFinite(code) ? code : 0, { cause: err });
}

async function call<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw translate(err, what);
  }
}

export class ClientNodeKubeClient implements KubeClient {
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  private readonly apps: AppsV1Api;
  private readonly coordination: CoordinationV1Api;
  private eventSeq = 0;

  constructor(kc: KubeConfig) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.apps = kc.makeApiClient(AppsV1Api);
    this.coordination = kc.makeApiClient(CoordinationV1Api);
  }

  getElasticJob(namespace: string, name: string): Promise<unknown> {
    return call(`get elasticjob ${namespace}/${name}`, () =>
      this.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace, name }),
    );
  }

  replaceElasticJobStatus(namespace: string, name: string, body: object): Promise<unknown> {
    return call(`update elasticjob ${namespace}/${name} status`, () =>
      this.custom.replaceNamespacedCustomObjectStatus({ group: GROUP, version: VERSION, plural: PLURAL, namespace, name, body }),
    );
  }

  async deleteElasticJob(namespace: string, name: string): Promise<void> {
    await call(`delete elasticjob ${namespace}/${name}`, () =>
      this.custom.deleteNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        plural: PLURAL,
        namespace,
        name,
        propagationPolicy: 'Background',
      }),
    );
  }

  createPod(namespace: string, pod: V1Pod): Promise<V1Pod> {
    return call(`create pod ${namespace}/${pod.metadata?.name}`, () => this.core.createNamespacedPod({ namespace, body: pod }));
  }

  async deletePod(namespace: string, name: string, uid?: string): Promise<void> {
    await call(`delete pod ${namespace}/${name}`, () =>
      this.core.deleteNamespacedPod({
        namespace,
        name,
        ...(uid !== undefined && uid !== '' ? { body: { preconditions: { uid } } } : {}),
      }),
    );
  }

  createService(namespace: string, svc: V1Service): Promise<V1Service> {
    return call(`create service ${namespace}/${svc.metadata?.name}`, () => this.core.createNamespacedService({ namespace, body: svc }));
  }

  async deleteService(namespace: string, name: string): Promise<void> {
    await call(`delete service ${namespace}/${name}`, () => this.core.deleteNamespacedService({ namespace, name }));
  }

  async createEvent(involved: InvolvedObject, event: EventRecord, reportingInstance: string): Promise<void> {
    const now = new Date();
    this.eventSeq += 1;
    const body: CoreV1Event = {
      metadata: { name: `${involved.name}.${now.getTime().toString(16)}${this.eventSeq.toString(16)}`, namespace: involved.namespace },
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
    await call(`create event for ${involved.namespace}/${involved.name}`, () =>
      this.core.createNamespacedEvent({ namespace: involved.namespace, body }),
    );
  }

  /**
   * Creates (if absent) a one-member etcd StatefulSet and its Service in `namespace`, kept off spot nodes by node
   * affinity. Returns the client endpoint `tensile-etcd.<ns>.svc:2379`.
   */
  async ensureManagedEtcd(namespace: string, image: string): Promise<string> {
    const labels = { 'app.kubernetes.io/name': MANAGED_ETCD_NAME, 'app.kubernetes.io/managed-by': 'tensile-operator' };
    const svc: V1Service = {
      metadata: { name: MANAGED_ETCD_NAME, namespace, labels },
      spec: { selector: labels, ports: [{ name: 'client', port: 2379, targetPort: 2379 }] },
    };
    const sts: V1StatefulSet = {
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
    const steps: Array<[string, () => Promise<unknown>]> = [
      [`create service ${namespace}/${MANAGED_ETCD_NAME}`, () => this.core.createNamespacedService({ namespace, body: svc })],
      [`create statefulset ${namespace}/${MANAGED_ETCD_NAME}`, () => this.apps.createNamespacedStatefulSet({ namespace, body: sts })],
    ];
    for (const [what, fn] of steps) {
      try {
        await call(what, fn);
      } catch (err) {
        if (!(err instanceof ApiConflictError)) throw err;
      }
    }
    return `${MANAGED_ETCD_NAME}.${namespace}.svc:2379`;
  }

  async readLease(namespace: string, name: string): Promise<V1Lease | undefined> {
    try {
      return await call(`get lease ${namespace}/${name}`, () => this.coordination.readNamespacedLease({ namespace, name }));
    } catch (err) {
      if (err instanceof ApiNotFoundError) return undefined;
      throw err;
    }
  }

  createLease(namespace: string, lease: V1Lease): Promise<V1Lease> {
    return call(`create lease ${namespace}/${lease.metadata?.name}`, () => this.coordination.createNamespacedLease({ namespace, body: lease }));
  }

  replaceLease(namespace: string, name: string, lease: V1Lease): Promise<V1Lease> {
    return call(`update lease ${namespace}/${name}`, () => this.coordination.replaceNamespacedLease({ namespace, name, body: lease }));
  }
}
