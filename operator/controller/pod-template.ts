// Builds the Pod and headless Service for worker index i of an ElasticJob. Pure.
//
// Workers run `tensile run` (the image's entrypoint, or set here when the worker container has no command) and
// get the rendezvous settings as torchrun's PET_* environment variables, so an explicit flag in `args` still wins.
import type { V1Container, V1EnvVar, V1OwnerReference, V1Pod, V1Service } from '@kubernetes/client-node';
import type { ElasticJobSpec, ResolvedSpec } from '../v1alpha1/elasticjob-types.js';
import { API_VERSION, KIND, LABELS, MANAGED_BY } from '../v1alpha1/elasticjob-types.js';
import { workerName } from './planner.js';

export interface JobIdentity {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
}

export function ownerReference(job: JobIdentity): V1OwnerReference {
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    name: job.name,
    uid: job.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

export function workerLabels(job: string, index: number): Record<string, string> {
  return {
    [LABELS.jobName]: job,
    [LABELS.replicaType]: 'worker',
    [LABELS.replicaIndex]: String(index),
    [LABELS.managedBy]: MANAGED_BY,
  };
}

/** The PET_* variables `tensile run` (and torchrun) read. The rendezvous id is the job's uid: never shared. */
export function petEnv(job: JobIdentity, spec: ResolvedSpec, rdzvEndpoint: string, index: number): V1EnvVar[] {
  const env: V1EnvVar[] = [
    { name: 'PET_NNODES', value: `${spec.minReplicas}:${spec.maxReplicas}` },
    { name: 'PET_RDZV_BACKEND', value: 'etcd' },
    { name: 'PET_RDZV_ENDPOINT', value: rdzvEndpoint },
    { name: 'PET_RDZV_ID', value: job.uid !== '' ? job.uid : `${job.namespace}-${job.name}` },
    { name: 'TENSILE_JOB_NAME', value: job.name },
    { name: 'TENSILE_REPLICA_INDEX', value: String(index) },
    { name: 'PYTHONUNBUFFERED', value: '1' },
    // The address the agent gives the other nodes: without it, it is the pod's hostname, which other pods cannot
    // resolve (no headless Service). The pod IP through the downward API is reachable from every pod.
    { name: 'PET_LOCAL_ADDR', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
  ];
  if (spec.nprocPerNode !== undefined) env.push({ name: 'PET_NPROC_PER_NODE', value: String(spec.nprocPerNode) });
  if (spec.maxRestarts !== undefined) env.push({ name: 'PET_MAX_RESTARTS', value: String(spec.maxRestarts) });
  return env;
}

function withEnv(c: V1Container, env: V1EnvVar[], isWorker: boolean): V1Container {
  // User-set values for the same names win (they are the user's explicit choice).
  const user = c.env ?? [];
  const userNames = new Set(user.map((e) => e.name));
  const merged = [...env.filter((e) => !userNames.has(e.name)), ...user];
  const out: V1Container = { ...c, env: merged };
  if (isWorker && (c.command === undefined || c.command.length === 0)) out.command = ['tensile', 'run'];
  return out;
}

export function buildWorkerPod(
  job: JobIdentity,
  rawSpec: ElasticJobSpec,
  spec: ResolvedSpec,
  rdzvEndpoint: string,
  index: number,
): V1Pod {
  const template = rawSpec.replicaSpecs.Worker.template as { metadata?: V1Pod['metadata']; spec: V1Pod['spec'] };
  const name = workerName(job.name, index);
  const podSpec = { ...(template.spec ?? { containers: [] }) };
  const env = petEnv(job, spec, rdzvEndpoint, index);
  const containers = podSpec.containers ?? [];
  const workerIdx = Math.max(
    0,
    containers.findIndex((c) => c.name === 'worker'),
  );
  podSpec.containers = containers.map((c, i) => withEnv(c, env, i === workerIdx));
  podSpec.restartPolicy =
    spec.restartPolicy === 'OnFailure' || spec.restartPolicy === 'Always' ? spec.restartPolicy : 'Never';
  podSpec.hostname = name;
  podSpec.subdomain = name;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: job.namespace,
      labels: { ...(template.metadata?.labels ?? {}), ...workerLabels(job.name, index) },
      annotations: { ...(template.metadata?.annotations ?? {}) },
      ownerReferences: [ownerReference(job)],
    },
    spec: podSpec,
  };
}

/** A headless Service per worker so a replacement pod keeps its DNS name (`<job>-worker-<i>.<ns>.svc`). */
export function buildWorkerService(job: JobIdentity, index: number): V1Service {
  const name = workerName(job.name, index);
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name,
      namespace: job.namespace,
      labels: workerLabels(job.name, index),
      ownerReferences: [ownerReference(job)],
    },
    spec: {
      clusterIP: 'None',
      selector: { [LABELS.jobName]: job.name, [LABELS.replicaIndex]: String(index) },
      publishNotReadyAddresses: true,
    },
  };
}
