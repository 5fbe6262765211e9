// The reconcile planner: a pure function from a read-only snapshot of one ElasticJob (its spec, status, pods and
// services as the informers see them) to a plan: the actions to execute, the new status, the Events to record and
// when to look again. No I/O, no clocks (the snapshot carries `nowMs`), so it is tested table-driven.
//
// Rules (DESIGN §6, reference §4.4):
// - one Pod and one headless Service per index 0..replicas-1, stable names `<job>-worker-<i>`;
// - preemption (exit code in the preemption set, DisruptionTarget/eviction, node gone or tainted, pod deleted by
//   someone else) replaces the pod and never counts against backoffLimit; a real failure does, and so does a
//   worker that cannot start (image not pullable, command not in the image: `PodView.startFailure`);
// - the job keeps Running while running ≥ min; below min longer than belowMinTimeoutSeconds → Failed;
// - Succeeded when a worker succeeded and none is still active; Succeeded/Failed are final.
import type { EventRecord } from '../api.js';
import type {
  Condition,
  ConditionType,
  ElasticJobStatus,
  JobState,
  ResolvedSpec,
  SpecIssue,
} from '../v1alpha1/elasticjob-types.js';
import { LABELS, formatIssues } from '../v1alpha1/elasticjob-types.js';

export type PodPhase = 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';

/** What the planner needs to know about one worker pod. */
export interface PodView {
  readonly name: string;
  readonly uid: string;
  readonly index: number;
  readonly phase: PodPhase;
  /** deletionTimestamp is set: the pod is going away; its name is not free yet. */
  readonly terminating: boolean;
  /** The operator already deleted (and counted) this pod; the informer has not seen it go yet. */
  readonly handled: boolean;
  /** Exit code of the worker container when it terminated. */
  readonly exitCode?: number;
  /** Sum of container restartCount (in-place restarts under OnFailure/Always). */
  readonly restartCount: number;
  /** Why the pod was disrupted (DisruptionTarget reason, `Evicted`, ...), when it was. */
  readonly disruption?: string;
  /** Its node is gone or tainted as about to go away. */
  readonly nodeLost: boolean;
  /**
   * Why its worker container cannot start, e.g. `ImagePullBackOff: Back-off pulling image "x"` or
   * `StartError (exit code 127): exec: "trian": executable file not found`; set while pending or after exiting.
   */
  readonly startFailure?: string;
}

export interface JobSnapshot {
  readonly nowMs: number;
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  readonly generation: number;
  /** The resolved spec, or the validation issues that make it unusable. */
  readonly spec: ResolvedSpec | { readonly invalid: readonly SpecIssue[] };
  readonly status: ElasticJobStatus;
  readonly pods: readonly PodView[];
  readonly serviceNames: readonly string[];
  /** Pods that vanished since the last status write without the operator deleting them (preemptions). */
  readonly deletedExternally: number;
  /** The rendezvous endpoint workers get: spec.rdzvEndpoint, else the operator-managed etcd, else ''. */
  readonly rdzvEndpoint: string;
}

export type DeleteReason = 'scale-down' | 'preempted' | 'failed' | 'suspended' | 'finished';

export type Action =
  | { readonly type: 'createPod'; readonly index: number }
  | { readonly type: 'deletePod'; readonly name: string; readonly uid: string; readonly reason: DeleteReason }
  | { readonly type: 'createService'; readonly index: number }
  | { readonly type: 'deleteService'; readonly name: string }
  | { readonly type: 'deleteJob' };

export interface Plan {
  readonly actions: readonly Action[];
  readonly status: ElasticJobStatus;
  readonly events: readonly EventRecord[];
  /** Look at the job again after this long even if nothing changes (deadlines, TTL, below-min timeout). */
  readonly requeueAfterMs?: number;
}

export function workerName(job: string, index: number): string {
  return `${job}-worker-${index}`;
}

export function workerSelector(job: string): string {
  return `${LABELS.jobName}=${job},${LABELS.replicaType}=worker`;
}

/** Index of a `<job>-worker-<i>` name, or undefined when the name is not one of this job's. */
export function indexOfName(job: string, name: string): number | undefined {
  const prefix = `${job}-worker-`;
  if (!name.startsWith(prefix)) return undefined;
  const rest = name.slice(prefix.length);
  return /^(0|[1-9][0-9]*)$/.test(rest) ? Number(rest) : undefined;
}

const FINAL: ReadonlySet<JobState | undefined> = new Set<JobState | undefined>(['Succeeded', 'Failed']);

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** Sets a condition, moving lastTransitionTime only when its status flips. Returns a new array. */
export function setCondition(
  conditions: readonly Condition[],
  type: ConditionType,
  status: 'True' | 'False',
  reason: string,
  message: string,
  nowIso: string,
): Condition[] {
  const old = conditions.find((c) => c.type === type);
  if (old === undefined && status === 'False') return [...conditions];
  if (old !== undefined && old.status === status && old.reason === reason && old.message === message) {
    return [...conditions];
  }
  const next: Condition = {
    type,
    status,
    reason,
    message,
    lastUpdateTime: nowIso,
    lastTransitionTime: old !== undefined && old.status === status ? (old.lastTransitionTime ?? nowIso) : nowIso,
  };
  return old === undefined ? [...conditions, next] : conditions.map((c) => (c.type === type ? next : c));
}

interface Builder {
  status: ElasticJobStatus;
  actions: Action[];
  events: EventRecord[];
  requeue: number[];
  nowIso: string;
}

function cond(b: Builder, type: ConditionType, on: boolean, reason: string, message: string): void {
  b.status = {
    ...b.status,
    conditions: setCondition(b.status.conditions ?? [], type, on ? 'True' : 'False', reason, message, b.nowIso),
  };
}

function event(b: Builder, type: 'Normal' | 'Warning', reason: string, message: string): void {
  b.events.push({ type, reason, message });
}

function finish(b: Builder, state: 'Succeeded' | 'Failed', reason: string, message: string): void {
  b.status = { ...b.status, state, completionTime: b.nowIso };
  cond(b, 'Running', false, reason, message);
  cond(b, 'Restarting', false, reason, message);
  cond(b, 'Scaling', false, reason, message);
  cond(b, state, true, reason, message);
  event(b, state === 'Failed' ? 'Warning' : 'Normal', reason, message);
}

function cleanup(s: JobSnapshot, spec: ResolvedSpec | undefined, b: Builder, reason: DeleteReason): void {
  const policy = reason === 'suspended' ? 'All' : (spec?.cleanPodPolicy ?? 'Running');
  if (policy === 'None') return;
  for (const p of s.pods) {
    if (p.terminating || p.handled) continue;
    if (policy === 'All' || p.phase === 'Running' || p.phase === 'Pending' || p.phase === 'Unknown') {
      b.actions.push({ type: 'deletePod', name: p.name, uid: p.uid, reason });
    }
  }
  for (const name of s.serviceNames) b.actions.push({ type: 'deleteService', name });
}

function finalize(s: JobSnapshot, spec: ResolvedSpec | undefined, b: Builder): void {
  cleanup(s, spec, b, 'finished');
  const ttl = spec?.ttlSecondsAfterFinished;
  const done = b.status.completionTime;
  if (ttl === undefined || done === undefined) return;
  const leftMs = Date.parse(done) + ttl * 1000 - s.nowMs;
  if (leftMs <= 0) {
    b.actions.push({ type: 'deleteJob' });
    event(b, 'Normal', 'TTLExpired', `deleting the job ${ttl}s after it finished`);
  } else {
    b.requeue.push(leftMs);
  }
}

function done(b: Builder): Plan {
  const positive = b.requeue.filter((ms) => ms > 0);
  return {
    actions: b.actions,
    status: b.status,
    events: b.events,
    ...(positive.length > 0 ? { requeueAfterMs: Math.min(...positive) } : {}),
  };
}

/** Decides what to do for one ElasticJob. Pure: same snapshot, same plan. */
export function planReconcile(s: JobSnapshot): Plan {
  const b: Builder = {
    status: { ...s.status, observedGeneration: s.generation },
    actions: [],
    events: [],
    requeue: [],
    nowIso: iso(s.nowMs),
  };
  if ('invalid' in s.spec) {
    if (!FINAL.has(s.status.state)) finish(b, 'Failed', 'InvalidSpec', formatIssues(s.spec.invalid));
    return done(b);
  }
  const spec = s.spec;
  if (FINAL.has(s.status.state)) {
    finalize(s, spec, b);
    return done(b);
  }
  if (s.rdzvEndpoint === '') {
    finish(b, 'Failed', 'InvalidSpec', 'spec.rdzvEndpoint: is empty and the operator-managed etcd is disabled');
    finalize(s, spec, b);
    return done(b);
  }
  b.status = { ...b.status, rdzvEndpoint: s.rdzvEndpoint };
  if (!(b.status.conditions ?? []).some((c) => c.type === 'Created')) {
    cond(
      b,
      'Created',
      true,
      'ElasticJobCreated',
      `job created with ${spec.replicas} workers in [${spec.minReplicas}, ${spec.maxReplicas}]`,
    );
    event(
      b,
      'Normal',
      'Created',
      `job created with ${spec.replicas} workers in [${spec.minReplicas}, ${spec.maxReplicas}]`,
    );
    b.status = { ...b.status, state: 'Created' };
  }

  if (spec.suspend) {
    if (s.status.state !== 'Suspended') event(b, 'Normal', 'Suspended', 'job suspended: deleting all workers');
    b.status = { ...b.status, state: 'Suspended', startTime: undefined, belowMinSince: undefined };
    cond(b, 'Suspended', true, 'Suspended', 'spec.suspend is true');
    cond(b, 'Running', false, 'Suspended', 'spec.suspend is true');
    cond(b, 'Restarting', false, 'Suspended', 'spec.suspend is true');
    cond(b, 'Scaling', false, 'Suspended', 'spec.suspend is true');
    cleanup(s, spec, b, 'suspended');
    b.status = {
      ...b.status,
      replicaStatuses: { Worker: { ...replicaStatus(s, 0, 0, 0), failed: b.status.failures ?? 0 } },
    };
    return done(b);
  }
  if (s.status.state === 'Suspended') {
    event(b, 'Normal', 'Resumed', 'job resumed');
    cond(b, 'Suspended', false, 'Resumed', 'spec.suspend is false');
  }
  if (b.status.startTime === undefined) b.status = { ...b.status, startTime: b.nowIso };

  let preemptions = (s.status.preemptions ?? 0) + s.deletedExternally;
  let failures = s.status.failures ?? 0;
  let restarts = (s.status.restarts ?? 0) + s.deletedExternally;
  if (s.deletedExternally > 0) {
    event(
      b,
      'Warning',
      'Preempted',
      `${s.deletedExternally} worker pod(s) deleted from outside: replacing (not counted against backoffLimit)`,
    );
  }
  let running = 0;
  let pending = 0;
  let succeeded = 0;
  let liveRestarts = 0;
  let failedForGood: { readonly reason: string; readonly message: string } | undefined;
  /** The last failure counted in this reconcile, quoted when it exhausts backoffLimit. */
  let lastFailure: string | undefined;
  const occupied = new Set<number>();

  for (const p of s.pods) {
    occupied.add(p.index);
    if (p.terminating || p.handled) continue;
    if (p.index >= spec.replicas && p.phase !== 'Succeeded') {
      b.actions.push({ type: 'deletePod', name: p.name, uid: p.uid, reason: 'scale-down' });
      event(b, 'Normal', 'ScaledDown', `deleting ${p.name}: index ${p.index} ≥ replicas (${spec.replicas})`);
      continue;
    }
    const preempted =
      p.disruption !== undefined ||
      p.nodeLost ||
      (p.exitCode !== undefined && spec.preemptionExitCodes.includes(p.exitCode));
    if (p.startFailure !== undefined && !preempted && p.phase !== 'Succeeded') {
      failures += 1;
      lastFailure = `${p.name} cannot start: ${p.startFailure}`;
      event(
        b,
        'Warning',
        'WorkerCannotStart',
        `${lastFailure}: failure ${failures} of backoffLimit ${spec.backoffLimit} (not a preemption)`,
      );
      if (spec.restartPolicy === 'Never') {
        failedForGood = { reason: 'WorkerCannotStart', message: `${lastFailure} (restartPolicy is Never)` };
      } else {
        restarts += 1;
        b.actions.push({ type: 'deletePod', name: p.name, uid: p.uid, reason: 'failed' });
      }
      continue;
    }
    if (p.phase === 'Failed') {
      if (preempted) {
        preemptions += 1;
        restarts += 1;
        b.actions.push({ type: 'deletePod', name: p.name, uid: p.uid, reason: 'preempted' });
        event(
          b,
          'Warning',
          'Preempted',
          `${p.name} preempted (${describe(p)}): replacing, not counted against backoffLimit`,
        );
      } else {
        failures += 1;
        lastFailure = `${p.name} failed (${describe(p)})`;
        event(
          b,
          'Warning',
          'WorkerFailed',
          `${p.name} failed (${describe(p)}): failure ${failures} of backoffLimit ${spec.backoffLimit}`,
        );
        if (spec.restartPolicy === 'Never') {
          failedForGood = {
            reason: 'WorkerFailed',
            message: `${p.name} failed (${describe(p)}) and restartPolicy is Never`,
          };
        } else {
          restarts += 1;
          b.actions.push({ type: 'deletePod', name: p.name, uid: p.uid, reason: 'failed' });
        }
      }
      continue;
    }
    if (p.nodeLost && (p.phase === 'Running' || p.phase === 'Pending')) {
      preemptions += 1;
      restarts += 1;
      b.actions.push({ type: 'deletePod', name: p.name, uid: p.uid, reason: 'preempted' });
      event(b, 'Warning', 'Preempted', `${p.name}: its node is going away: replacing it early`);
      continue;
    }
    liveRestarts += p.restartCount;
    if (p.phase === 'Succeeded') succeeded += 1;
    else if (p.phase === 'Running') running += 1;
    else pending += 1;
  }

  const prevActive = s.status.replicaStatuses?.Worker?.active ?? 0;
  b.status = {
    ...b.status,
    preemptions,
    failures,
    restarts,
    rounds: (s.status.rounds ?? 0) + (running !== prevActive && running > 0 ? 1 : 0),
    replicaStatuses: { Worker: { ...replicaStatus(s, running, pending, succeeded), failed: failures } },
  };

  const startedMs = Date.parse(b.status.startTime ?? b.nowIso);
  const countedFailures = failures + liveRestarts;
  if (failedForGood !== undefined) {
    finish(b, 'Failed', failedForGood.reason, failedForGood.message);
  } else if (countedFailures > spec.backoffLimit) {
    finish(
      b,
      'Failed',
      'BackoffLimitExceeded',
      `${countedFailures} worker failures > backoffLimit (${spec.backoffLimit})${lastFailure !== undefined ? `; last: ${lastFailure}` : ''}`,
    );
  } else if (spec.activeDeadlineSeconds !== undefined && s.nowMs - startedMs >= spec.activeDeadlineSeconds * 1000) {
    finish(
      b,
      'Failed',
      'DeadlineExceeded',
      `job active longer than activeDeadlineSeconds (${spec.activeDeadlineSeconds})`,
    );
  } else if (succeeded > 0 && running + pending === 0) {
    finish(b, 'Succeeded', 'ElasticJobSucceeded', `${succeeded} worker(s) completed`);
  }
  if (FINAL.has(b.status.state)) {
    // Keep the failed pod for its logs (cleanPodPolicy decides what goes).
    b.actions = b.actions.filter((a) => !(a.type === 'deletePod' && a.reason === 'failed'));
    b.status = { ...b.status, belowMinSince: undefined };
    finalize(s, spec, b);
    return done(b);
  }
  if (spec.activeDeadlineSeconds !== undefined) {
    b.requeue.push(startedMs + spec.activeDeadlineSeconds * 1000 - s.nowMs);
  }

  if (running < spec.minReplicas && succeeded === 0) {
    const since = b.status.belowMinSince ?? b.nowIso;
    const leftMs = Date.parse(since) + spec.belowMinTimeoutSeconds * 1000 - s.nowMs;
    b.status = { ...b.status, belowMinSince: since };
    if (leftMs <= 0) {
      finish(
        b,
        'Failed',
        'BelowMinReplicas',
        `${running} running worker(s) < minReplicas (${spec.minReplicas}) for more than ${spec.belowMinTimeoutSeconds}s`,
      );
      b.status = { ...b.status, belowMinSince: undefined };
      finalize(s, spec, b);
      return done(b);
    }
    b.requeue.push(leftMs);
  } else {
    b.status = { ...b.status, belowMinSince: undefined };
  }

  // Create what is missing, unless the job is completing (a worker succeeded: the others are finishing too).
  if (succeeded === 0) {
    for (let i = 0; i < spec.replicas; i += 1) {
      if (!occupied.has(i)) b.actions.push({ type: 'createPod', index: i });
    }
  }
  const services = new Set(s.serviceNames);
  for (let i = 0; i < spec.replicas; i += 1) {
    if (!services.has(workerName(s.name, i))) b.actions.push({ type: 'createService', index: i });
  }
  for (const name of s.serviceNames) {
    const i = indexOfName(s.name, name);
    if (i !== undefined && i >= spec.replicas) b.actions.push({ type: 'deleteService', name });
  }

  const prevState = s.status.state;
  const hadRun = prevState === 'Running' || prevState === 'Restarting';
  const state: JobState = running >= spec.minReplicas ? 'Running' : hadRun ? 'Restarting' : 'Created';
  b.status = { ...b.status, state };
  const sizeMsg = `${running} of ${spec.replicas} workers running (min ${spec.minReplicas}, max ${spec.maxReplicas})`;
  if (state === 'Running') {
    cond(b, 'Running', true, 'ElasticJobRunning', sizeMsg);
    cond(b, 'Restarting', false, 'ElasticJobRunning', sizeMsg);
  } else if (state === 'Restarting') {
    cond(b, 'Restarting', true, 'BelowMinReplicas', sizeMsg);
    cond(b, 'Running', false, 'BelowMinReplicas', sizeMsg);
  }
  if (state !== prevState && state !== 'Created') {
    event(b, state === 'Running' ? 'Normal' : 'Warning', state, sizeMsg);
  }
  const scaling = running !== spec.replicas;
  cond(
    b,
    'Scaling',
    scaling,
    scaling ? (running < spec.replicas ? 'ScalingUp' : 'ScalingDown') : 'AtDesiredSize',
    sizeMsg,
  );
  return done(b);
}

function replicaStatus(s: JobSnapshot, active: number, pending: number, succeeded: number) {
  return { active, pending, succeeded, selector: workerSelector(s.name) };
}

function describe(p: PodView): string {
  const parts: string[] = [];
  if (p.exitCode !== undefined) parts.push(`exit code ${p.exitCode}`);
  if (p.disruption !== undefined) parts.push(p.disruption);
  if (p.nodeLost) parts.push('node lost');
  return parts.length > 0 ? parts.join(', ') : 'no exit code';
}
