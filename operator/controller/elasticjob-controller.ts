// The ElasticJob controller: informers on ElasticJobs, Pods, Services and Nodes feed a de-duplicating work queue
// keyed by namespace/name; each reconcile re-reads the job from the API server, builds a snapshot from the
// informer caches, asks the pure planner what to do, then executes the plan (status first, then pods/services,
// then Events) and requeues after the plan's delay.
//
// Expectations: a pod the operator deleted is remembered by uid until the informer sees it go, so a stale cache
// never makes it count the same failure twice nor replace a pod that is already being replaced.
import type { V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import type { KubeClient, Logger } from '../api.js';
import { ApiConflictError, ApiNotFoundError, noopLogger } from '../api.js';
import {
  API_VERSION,
  KIND,
  LABELS,
  resolveSpec,
  validateElasticJob,
  type ElasticJob,
  type ElasticJobSpec,
  type ElasticJobStatus,
  type JobState,
  JOB_STATES,
  DEFAULT_TERMINATION_TAINTS,
  elasticJobStatusSchema,
} from '../v1alpha1/elasticjob-types.js';
import type { OperatorMetrics } from './metrics.js';
import { planReconcile, type Action, type JobSnapshot, type Plan } from './planner.js';
import { buildWorkerPod, buildWorkerService } from './pod-template.js';
import { toPodView, type NodeInfo } from './pod-view.js';
import { WorkQueue } from './work-queue.js';
import type { KubeApis } from '../kube/client-node.js';
import { Informer, type KObj } from '../kube/informer.js';
import { elasticJobSource, nodeSource, podSource, serviceSource } from '../kube/sources.js';
import { slimNode, slimPod, slimService } from '../kube/transforms.js';

export interface ControllerOptions {
  /** client-node's typed APIs and Watch, for the informers. */
  readonly apis: KubeApis;
  readonly client: KubeClient;
  /** Watch one namespace; undefined watches all. */
  readonly namespace?: string;
  readonly logger?: Logger;
  readonly metrics: OperatorMetrics;
  /** Identity recorded in Events (pod name in cluster). */
  readonly identity: string;
  readonly workers?: number;
  /** Every job is reconciled at least this often even without events. */
  readonly resyncMs?: number;
  readonly managedEtcd?: { readonly enabled: boolean; readonly image: string };
  readonly watchNodes?: boolean;
  /** Called after every reconcile with its duration (benchmarks). */
  readonly onReconciled?: (key: string, durationMs: number) => void;
}

type JobObj = KObj & {
  spec?: unknown;
  status?: ElasticJobStatus;
  metadata?: KObj['metadata'] & {
    generation?: number;
    deletionTimestamp?: string;
    ownerReferences?: Array<{ uid: string }>;
  };
};
type KubernetesObject = KObj & { metadata?: { ownerReferences?: Array<{ uid?: string }> } };

function keyOf(ns: string | undefined, name: string | undefined): string {
  return `${ns ?? ''}/${name ?? ''}`;
}

function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) => {
    if (val !== null && typeof val === 'object' && !Array.isArray(val)) {
      return Object.fromEntries(
        Object.entries(val as Record<string, unknown>)
          .filter(([, x]) => x !== undefined)
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      );
    }
    return val;
  });
}

export class ElasticJobController {
  private readonly queue = new WorkQueue();
  private readonly log: Logger;
  private jobs: Informer<JobObj> | undefined;
  private pods: Informer<V1Pod & KObj> | undefined;
  private services: Informer<V1Service & KObj> | undefined;
  private nodes: Informer<V1Node & KObj> | undefined;
  /** pod uids deleted by us, per job key, until the informer reports them gone. */
  private readonly handled = new Map<string, Set<string>>();
  /** pods that vanished without us deleting them, per job key, not yet written to status. */
  private readonly deletedExternally = new Map<string, number>();
  private readonly deletedNodes = new Set<string>();
  private readonly states = new Map<string, JobState>();
  private readonly etcdEndpoints = new Map<string, string>();
  /** Keys whose last reconcile hit a 409: the next one re-reads the job from the API server. */
  private readonly conflicted = new Set<string>();
  private running = false;
  private synced = false;
  private resyncTimer: NodeJS.Timeout | undefined;
  private workerLoops: Promise<void>[] = [];

  constructor(private readonly o: ControllerOptions) {
    this.log = (o.logger ?? noopLogger).child({ component: 'controller' });
  }

  get isSynced(): boolean {
    return this.synced;
  }

  /** Starts the informers, waits for their first list, then starts the workers. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const { apis, namespace } = this.o;
    const labelSelector = LABELS.jobName;
    const log = this.log;
    const byJob = (o: KObj) => {
      const job = o.metadata?.labels?.[LABELS.jobName];
      return job !== undefined ? keyOf(o.metadata?.namespace, job) : undefined;
    };
    this.jobs = new Informer<JobObj>(elasticJobSource(apis, namespace), { logger: log });
    this.pods = new Informer<V1Pod & KObj>(podSource(apis, namespace), {
      transform: (p) => slimPod(p) as V1Pod & KObj,
      labelSelector,
      logger: log,
      indexBy: byJob,
    });
    this.services = new Informer<V1Service & KObj>(serviceSource(apis, namespace), {
      transform: (s) => slimService(s) as V1Service & KObj,
      labelSelector,
      logger: log,
      indexBy: byJob,
    });
    this.jobs.on('add', (j) => this.enqueue(j));
    this.jobs.on('update', (j) => this.enqueue(j));
    this.jobs.on('delete', (j) => this.forgetJob(keyOf(j.metadata?.namespace, j.metadata?.name)));
    for (const inf of [this.pods, this.services] as Array<Informer<KObj>>) {
      inf.on('add', (o) => this.enqueueOwner(o));
      inf.on('update', (o) => this.enqueueOwner(o));
    }
    this.pods.on('delete', (p) => this.onPodDeleted(p));
    this.services.on('delete', (s) => this.enqueueOwner(s));
    await Promise.all([this.jobs.start(), this.pods.start(), this.services.start()]);
    if (this.o.watchNodes ?? true) {
      const nodes = new Informer<V1Node & KObj>(nodeSource(apis), {
        logger: log,
        transform: (n) => slimNode(n) as V1Node & KObj,
      });
      nodes.on('update', (n) => this.onNodeChanged(n, false));
      nodes.on('delete', (n) => this.onNodeChanged(n, true));
      nodes.on('add', (n) => this.deletedNodes.delete(n.metadata?.name ?? ''));
      // Node watching is best effort: without it, preemption is still detected from the pods themselves.
      try {
        await nodes.start();
        this.nodes = nodes;
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'cannot list nodes; node-loss detection is off');
      }
    }
    this.synced = true;
    for (const j of this.jobs.list()) this.enqueue(j);
    const resyncMs = this.o.resyncMs ?? 30_000;
    this.resyncTimer = setInterval(() => {
      for (const j of this.jobs?.list() ?? []) this.enqueue(j);
    }, resyncMs);
    this.resyncTimer.unref();
    const n = this.o.workers ?? 4;
    for (let i = 0; i < n; i += 1) this.workerLoops.push(this.workerLoop());
    this.log.info({ namespace: namespace ?? '(all)', workers: n }, 'controller started');
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.synced = false;
    if (this.resyncTimer !== undefined) clearInterval(this.resyncTimer);
    this.queue.shutDown();
    await Promise.all([this.jobs, this.pods, this.services, this.nodes].map((i) => i?.stop()));
    await Promise.all(this.workerLoops);
    this.workerLoops = [];
  }

  private enqueue(o: KubernetesObject): void {
    this.queue.add(keyOf(o.metadata?.namespace, o.metadata?.name));
  }

  private enqueueOwner(o: KubernetesObject): void {
    const job = o.metadata?.labels?.[LABELS.jobName];
    if (job !== undefined) this.queue.add(keyOf(o.metadata?.namespace, job));
  }

  private onPodDeleted(p: V1Pod): void {
    const job = p.metadata?.labels?.[LABELS.jobName];
    if (job === undefined) return;
    const key = keyOf(p.metadata?.namespace, job);
    const set = this.handled.get(key);
    const uid = p.metadata?.uid ?? '';
    if (set?.delete(uid) === true) {
      if (set.size === 0) this.handled.delete(key);
    } else if (this.states.has(key) && !['Succeeded', 'Failed', 'Suspended'].includes(this.states.get(key) ?? '')) {
      this.deletedExternally.set(key, (this.deletedExternally.get(key) ?? 0) + 1);
      this.o.metrics.preemptions.inc();
    }
    this.queue.add(key);
  }

  private onNodeChanged(n: V1Node, deleted: boolean): void {
    const name = n.metadata?.name ?? '';
    if (deleted) this.deletedNodes.add(name);
    for (const p of this.pods?.list() ?? []) {
      if (p.spec?.nodeName === name) this.enqueueOwner(p);
    }
  }

  private forgetJob(key: string): void {
    this.handled.delete(key);
    this.deletedExternally.delete(key);
    this.states.delete(key);
    this.updateStateGauge();
  }

  private nodeOf = (name: string): NodeInfo | undefined => {
    if (this.deletedNodes.has(name)) return { exists: false, taintKeys: [] };
    const node = this.nodes?.get(name, '');
    if (node === undefined) return undefined;
    return { exists: true, taintKeys: (node.spec?.taints ?? []).map((t) => t.key) };
  };

  private async workerLoop(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      const t0 = performance.now();
      try {
        const requeueAfterMs = await this.reconcile(key, this.conflicted.delete(key));
        this.queue.forget(key);
        if (requeueAfterMs !== undefined) this.queue.addAfter(key, requeueAfterMs);
      } catch (err) {
        this.o.metrics.reconcileErrors.inc();
        if (err instanceof ApiConflictError) {
          this.conflicted.add(key);
          this.log.debug({ key, err: err.message }, 'conflict; requeue');
        } else {
          this.log.warn({ key, err: (err as Error).message }, 'reconcile failed; retrying with backoff');
        }
        this.queue.addRateLimited(key);
      } finally {
        const ms = performance.now() - t0;
        this.o.metrics.reconcileSeconds.observe(ms / 1000);
        this.o.onReconciled?.(key, ms);
        this.queue.done(key);
      }
    }
  }

  /** Reconciles one job. Returns when to look again (ms), if the plan asks for it. Throws to retry with backoff. */
  async reconcile(key: string, fresh = false): Promise<number | undefined> {
    const slash = key.indexOf('/');
    const namespace = key.slice(0, slash);
    const name = key.slice(slash + 1);
    // Read from the informer cache, like controller-runtime: a stale copy is safe because the status write carries
    // its resourceVersion (409 → requeue), and deletions are fenced by the handled-pod expectations and uid
    // preconditions. Retries after a conflict (`fresh`) read from the API server instead.
    let raw: JobObj | undefined = fresh ? undefined : this.jobs?.get(name, namespace);
    if (raw === undefined) {
      try {
        raw = (await this.o.client.getElasticJob(namespace, name)) as JobObj;
      } catch (err) {
        if (err instanceof ApiNotFoundError) {
          this.forgetJob(key);
          return undefined;
        }
        throw err;
      }
    }
    if (raw.metadata?.deletionTimestamp !== undefined && raw.metadata?.deletionTimestamp !== null) return undefined;
    const uid = raw.metadata?.uid ?? '';
    const validated = validateElasticJob(raw);
    const spec = validated.ok ? resolveSpec(validated.job.spec) : { invalid: validated.issues };
    const parsedStatus = elasticJobStatusSchema.safeParse(raw.status ?? {});
    const status: ElasticJobStatus = parsedStatus.success ? parsedStatus.data : {};

    let rdzvEndpoint = '';
    if (validated.ok) {
      rdzvEndpoint = validated.job.spec.rdzvEndpoint ?? '';
      if (
        rdzvEndpoint === '' &&
        this.o.managedEtcd?.enabled === true &&
        status.state !== 'Succeeded' &&
        status.state !== 'Failed'
      ) {
        rdzvEndpoint =
          this.etcdEndpoints.get(namespace) ??
          (await this.o.client.ensureManagedEtcd(namespace, this.o.managedEtcd.image));
        this.etcdEndpoints.set(namespace, rdzvEndpoint);
      }
    }

    const planStart = performance.now();
    const handled = this.handled.get(key) ?? new Set<string>();
    const owned = (o: KubernetesObject) =>
      o.metadata?.labels?.[LABELS.jobName] === name && (o.metadata?.ownerReferences ?? []).some((r) => r.uid === uid);
    const terminationTaints = 'invalid' in spec ? DEFAULT_TERMINATION_TAINTS : spec.preemptionNodeTaints;
    const podList = (this.pods?.byIndex(key) ?? []).filter(owned);
    const podViews = podList.flatMap((p) => {
      const v = toPodView(p, { handled: handled.has(p.metadata?.uid ?? ''), terminationTaints, nodeOf: this.nodeOf });
      return v === undefined ? [] : [v];
    });
    const serviceNames = (this.services?.byIndex(key) ?? []).filter(owned).map((s) => s.metadata?.name ?? '');
    const external = this.deletedExternally.get(key) ?? 0;
    const snapshot: JobSnapshot = {
      nowMs: Date.now(),
      name,
      namespace,
      uid,
      generation: raw.metadata?.generation ?? 0,
      spec,
      status,
      pods: podViews,
      serviceNames,
      deletedExternally: external,
      rdzvEndpoint,
    };
    const plan = planReconcile(snapshot);
    this.o.metrics.planSeconds.observe((performance.now() - planStart) / 1000);
    await this.writeStatus(raw, status, plan);
    if (external > 0) {
      const left = (this.deletedExternally.get(key) ?? 0) - external;
      if (left > 0) this.deletedExternally.set(key, left);
      else this.deletedExternally.delete(key);
    }
    this.states.set(key, plan.status.state ?? 'Created');
    this.updateStateGauge();
    const job = { name, namespace, uid };
    // Actions touch distinct objects (one per index), so they run concurrently; the status is already written.
    await Promise.all(
      plan.actions.map((a) => this.execute(a, job, key, validated.ok ? validated.job : undefined, spec, rdzvEndpoint)),
    );
    for (const ev of plan.events) this.recordEvent(job, ev.type, ev.reason, ev.message);
    if (plan.events.length > 0) {
      this.log.info({ job: key, state: plan.status.state, events: plan.events.map((e) => e.reason) }, 'reconciled');
    }
    return plan.requeueAfterMs;
  }

  private async writeStatus(raw: JobObj, old: ElasticJobStatus, plan: Plan): Promise<void> {
    const strip = (s: ElasticJobStatus) => ({ ...s, lastReconcileTime: undefined });
    if (canonical(strip(old)) === canonical(strip(plan.status))) return;
    const status = JSON.parse(
      JSON.stringify({ ...plan.status, lastReconcileTime: new Date().toISOString() }),
    ) as ElasticJobStatus;
    this.o.metrics.statusWrites.inc();
    await this.o.client.replaceElasticJobStatus(raw.metadata?.namespace ?? '', raw.metadata?.name ?? '', {
      ...raw,
      status,
    });
  }

  private async execute(
    action: Action,
    job: { name: string; namespace: string; uid: string },
    key: string,
    parsed: ElasticJob | undefined,
    spec: JobSnapshot['spec'],
    rdzvEndpoint: string,
  ): Promise<void> {
    const { client, metrics } = this.o;
    const ignore = async (p: Promise<unknown>, kind: typeof ApiConflictError | typeof ApiNotFoundError) => {
      try {
        await p;
        return true;
      } catch (err) {
        if (err instanceof kind) return false;
        throw err;
      }
    };
    switch (action.type) {
      case 'createPod': {
        if (parsed === undefined || 'invalid' in spec) return;
        const pod = buildWorkerPod(job, parsed.spec as ElasticJobSpec, spec, rdzvEndpoint, action.index);
        if (await ignore(client.createPod(job.namespace, pod), ApiConflictError)) {
          metrics.podsCreated.inc();
          this.recordEvent(job, 'Normal', 'SuccessfulCreatePod', `created pod ${pod.metadata?.name}`);
        }
        return;
      }
      case 'deletePod': {
        let set = this.handled.get(key);
        if (set === undefined) {
          set = new Set();
          this.handled.set(key, set);
        }
        set.add(action.uid);
        if (action.reason === 'failed') metrics.failures.inc();
        if (action.reason === 'preempted') metrics.preemptions.inc();
        if (await ignore(client.deletePod(job.namespace, action.name, action.uid), ApiNotFoundError)) {
          metrics.podsDeleted.inc({ reason: action.reason });
          this.recordEvent(job, 'Normal', 'SuccessfulDeletePod', `deleted pod ${action.name} (${action.reason})`);
        }
        return;
      }
      case 'createService':
        await ignore(client.createService(job.namespace, buildWorkerService(job, action.index)), ApiConflictError);
        return;
      case 'deleteService':
        await ignore(client.deleteService(job.namespace, action.name), ApiNotFoundError);
        return;
      case 'deleteJob':
        await ignore(client.deleteElasticJob(job.namespace, job.name), ApiNotFoundError);
        return;
    }
  }

  /** Records an Event without waiting for it: Events are best effort and must not slow or stop reconciling. */
  private recordEvent(
    job: { name: string; namespace: string; uid: string },
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
  ): void {
    this.o.client
      .createEvent(
        { apiVersion: API_VERSION, kind: KIND, name: job.name, namespace: job.namespace, uid: job.uid },
        { type, reason, message },
        this.o.identity,
      )
      .catch((err: unknown) => this.log.debug({ err: (err as Error).message, reason }, 'could not record event'));
  }

  private updateStateGauge(): void {
    const counts = new Map<JobState, number>(JOB_STATES.map((s) => [s, 0]));
    for (const s of this.states.values()) counts.set(s, (counts.get(s) ?? 0) + 1);
    for (const [state, n] of counts) this.o.metrics.jobsByState.set({ state }, n);
  }
}
