// The only file that names Kubernetes REST paths. Requests go through `kube/http-client.ts`, which already
// answers with the operator's errors (409 → ApiConflictError, 404 → ApiNotFoundError, anything else → ApiError).
//
// KUBE_API_CALLS lists every (group, resource, verbs) used here and by the informers; the chart's RBAC is tested
// against it, so add a line whenever a call is added.
import type { CoreV1Event, V1Lease, V1Pod, V1Service, V1StatefulSet } from '@kubernetes/client-node';
import {
  ApiConflictError,
  ApiNotFoundError,
  type EventRecord,
  type InvolvedObject,
  type KubeApiCall,
  type KubeClient,
} from './api.js';
import { GROUP, PLURAL, VERSION } from './api/v1alpha1/elasticjob-types.js';
import type { KubeHttp } from './kube/http-client.js';

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

const jobs = (ns: string) => `/apis/${GROUP}/${VERSION}/namespaces/${enc(ns)}/${PLURAL}`;
const core = (ns: string, resource: string) => `/api/v1/namespaces/${enc(ns)}/${resource}`;
const enc = encodeURIComponent;

async function ignoreConflict(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof ApiConflictError)) throw err;
  }
}

export class HttpKubeClient implements KubeClient {
  private eventSeq = 0;

  constructor(readonly http: KubeHttp) {}

  getElasticJob(namespace: string, name: string): Promise<unknown> {
    return this.http.request('GET', `${jobs(namespace)}/${enc(name)}`);
  }

  replaceElasticJobStatus(namespace: string, name: string, body: object): Promise<unknown> {
    return this.http.request('PUT', `${jobs(namespace)}/${enc(name)}/status`, { body });
  }

  async deleteElasticJob(namespace: string, name: string): Promise<void> {
    await this.http.request('DELETE', `${jobs(namespace)}/${enc(name)}`, {
      body: { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Background' },
    });
  }

  createPod(namespace: string, pod: V1Pod): Promise<V1Pod> {
    return this.http.request('POST', core(namespace, 'pods'), { body: pod });
  }

  async deletePod(namespace: string, name: string, uid?: string): Promise<void> {
    await this.http.request('DELETE', `${core(namespace, 'pods')}/${enc(name)}`, {
      body: {
        kind: 'DeleteOptions',
        apiVersion: 'v1',
        ...(uid !== undefined && uid !== '' ? { preconditions: { uid } } : {}),
      },
    });
  }

  createService(namespace: string, svc: V1Service): Promise<V1Service> {
    return this.http.request('POST', core(namespace, 'services'), { body: svc });
  }

  async deleteService(namespace: string, name: string): Promise<void> {
    await this.http.request('DELETE', `${core(namespace, 'services')}/${enc(name)}`);
  }

  async createEvent(involved: InvolvedObject, event: EventRecord, reportingInstance: string): Promise<void> {
    const now = new Date().toISOString();
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
      firstTimestamp: now as unknown as Date,
      lastTimestamp: now as unknown as Date,
      count: 1,
    };
    await this.http.request('POST', core(involved.namespace, 'events'), { body });
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
    await ignoreConflict(this.http.request('POST', core(namespace, 'services'), { body: svc }));
    await ignoreConflict(
      this.http.request('POST', `/apis/apps/v1/namespaces/${enc(namespace)}/statefulsets`, { body: sts }),
    );
    return `${MANAGED_ETCD_NAME}.${namespace}.svc:2379`;
  }

  async readLease(namespace: string, name: string): Promise<V1Lease | undefined> {
    try {
      return await this.http.request<V1Lease>(
        'GET',
        `/apis/coordination.k8s.io/v1/namespaces/${enc(namespace)}/leases/${enc(name)}`,
      );
    } catch (err) {
      if (err instanceof ApiNotFoundError) return undefined;
      throw err;
    }
  }

  createLease(namespace: string, lease: V1Lease): Promise<V1Lease> {
    return this.http.request('POST', `/apis/coordination.k8s.io/v1/namespaces/${enc(namespace)}/leases`, {
      body: lease,
    });
  }

  replaceLease(namespace: string, name: string, lease: V1Lease): Promise<V1Lease> {
    return this.http.request('PUT', `/apis/coordination.k8s.io/v1/namespaces/${enc(namespace)}/leases/${enc(name)}`, {
      body: lease,
    });
  }
}
