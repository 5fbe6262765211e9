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
    nodeLost,
  };
}
