// Turns a V1Pod (as the informer holds it) into the planner's PodView. Pure.
import type { V1Pod } from '@kubernetes/client-node';
import { LABELS } from '../v1alpha1/elasticjob-types.js';
import type { PodPhase, PodView } from './planner.js';

/** Pod `status.reason` values the kubelet or node lifecycle sets when it kills a pod from outside. */
const DISRUPTION_REASONS = new Set([
  'Evicted',
  'Preempting',
  'Shutdown',
  'NodeShutdown',
  'Terminated',
  'NodeLost',
  'DeadlineExceeded',
]);

/**
 * Container states that mean the worker can never start as specified: the image cannot be pulled (or its name is
 * invalid), the container cannot be created, or its command does not exist in the image. The kubelet retries
 * pulls forever; the operator counts each as a failure against backoffLimit (never as a preemption).
 */
const CANNOT_START_WAITING = new Set([
  'ErrImagePull',
  'ImagePullBackOff',
  'InvalidImageName',
  'ErrImageNeverPull',
  'CreateContainerConfigError',
  'CreateContainerError',
  'RunContainerError',
]);
const CANNOT_START_TERMINATED = new Set(['ContainerCannotRun', 'StartError', 'RunContainerError']);
/** 127: the shell's "command not found"; 128: what runtimes report when exec of the entrypoint fails. */
const CANNOT_START_EXIT_CODES = new Set([127, 128]);

type ContainerStatus = NonNullable<NonNullable<V1Pod['status']>['containerStatuses']>[number];

/** Why the worker container cannot start (`ImagePullBackOff: Back-off pulling image "x"`), or undefined. */
export function cannotStart(c: ContainerStatus | undefined): string | undefined {
  if (c === undefined) return undefined;
  const text = (reason: string, message: string | undefined) =>
    message !== undefined && message !== '' ? `${reason}: ${message}` : reason;
  const waiting = c.state?.waiting;
  if (waiting?.reason !== undefined && CANNOT_START_WAITING.has(waiting.reason)) {
    return text(waiting.reason, waiting.message);
  }
  // A container restarting in place shows the failed run in lastState; a running one is past starting.
  const t = c.state?.terminated ?? (c.state?.running === undefined ? c.lastState?.terminated : undefined);
  if (t === undefined) return undefined;
  if ((t.reason !== undefined && CANNOT_START_TERMINATED.has(t.reason)) || CANNOT_START_EXIT_CODES.has(t.exitCode)) {
    return text(`${t.reason ?? 'Error'} (exit code ${t.exitCode})`, t.message);
  }
  return undefined;
}

export interface NodeInfo {
  readonly exists: boolean;
  readonly taintKeys: readonly string[];
}

/**
 * @param nodeOf looks up the pod's node (undefined when unknown: treated as present and untainted).
 * @param handled whether the operator already deleted and counted this pod (expectations).
 */
export function toPodView(
  pod: V1Pod,
  opts: {
    readonly handled: boolean;
    readonly terminationTaints: readonly string[];
    readonly nodeOf?: (name: string) => NodeInfo | undefined;
  },
): PodView | undefined {
  const idx = Number(pod.metadata?.labels?.[LABELS.replicaIndex]);
  const name = pod.metadata?.name;
  if (name === undefined || !Number.isInteger(idx) || idx < 0) return undefined;
  const phase = (pod.status?.phase ?? 'Pending') as PodPhase;
  const statuses = pod.status?.containerStatuses ?? [];
  const worker = statuses.find((c) => c.name === 'worker') ?? statuses[0];
  const terminated = worker?.state?.terminated ?? worker?.lastState?.terminated;
  const disruptionCond = (pod.status?.conditions ?? []).find(
    (c) => c.type === 'DisruptionTarget' && c.status === 'True',
  );
  const reason = pod.status?.reason;
  let disruption: string | undefined;
  if (disruptionCond !== undefined) disruption = `DisruptionTarget: ${disruptionCond.reason ?? 'unknown'}`;
  else if (reason !== undefined && DISRUPTION_REASONS.has(reason)) disruption = reason;
  const startFailure = cannotStart(worker);
  const nodeName = pod.spec?.nodeName;
  const node = nodeName !== undefined && opts.nodeOf !== undefined ? opts.nodeOf(nodeName) : undefined;
  const nodeLost =
    node !== undefined && (!node.exists || node.taintKeys.some((k) => opts.terminationTaints.includes(k)));
  return {
    name,
    uid: pod.metadata?.uid ?? '',
    index: idx,
    phase: ['Pending', 'Running', 'Succeeded', 'Failed'].includes(phase) ? phase : 'Unknown',
    terminating: pod.metadata?.deletionTimestamp !== undefined && pod.metadata?.deletionTimestamp !== null,
    handled: opts.handled,
    ...(terminated?.exitCode !== undefined ? { exitCode: terminated.exitCode } : {}),
    restartCount: statuses.reduce((n, c) => n + (c.restartCount ?? 0), 0),
    ...(disruption !== undefined ? { disruption } : {}),
    ...(startFailure !== undefined ? { startFailure } : {}),
    nodeLost,
  };
}
