// Prometheus metrics of the operator, on a registry of its own (several operators may share a process in tests).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly jobsByState = new Gauge({
    name: 'tensile_operator_jobs',
    help: 'ElasticJobs by state',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });
  readonly podsCreated = new Counter({
    name: 'tensile_operator_pods_created_total',
    help: 'Worker pods created',
    registers: [this.registry],
  });
  readonly podsDeleted = new Counter({
    name: 'tensile_operator_pods_deleted_total',
    help: 'Worker pods deleted, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly preemptions = new Counter({
    name: 'tensile_operator_preemptions_total',
    help: 'Worker pods lost to preemption (never counted against backoffLimit)',
    registers: [this.registry],
  });
  readonly failures = new Counter({
    name: 'tensile_operator_worker_failures_total',
    help: 'Real worker failures (counted against backoffLimit)',
    registers: [this.registry],
  });
  readonly reconcileSeconds = new Histogram({
    name: 'tensile_operator_reconcile_duration_seconds',
    help: 'Time to reconcile one ElasticJob',
    buckets: [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly planSeconds = new Histogram({
    name: 'tensile_operator_plan_duration_seconds',
    help: 'Time to build the snapshot and plan one reconcile (the operator own work, without API round trips)',
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
    registers: [this.registry],
  });
  readonly statusWrites = new Counter({
    name: 'tensile_operator_status_writes_total',
    help: 'ElasticJob status updates written',
    registers: [this.registry],
  });
  readonly reconcileErrors = new Counter({
    name: 'tensile_operator_reconcile_errors_total',
    help: 'Reconciles that failed and were retried',
    registers: [this.registry],
  });
  readonly isLeader = new Gauge({
    name: 'tensile_operator_is_leader',
    help: '1 while this replica holds the leader Lease',
    registers: [this.registry],
  });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'tensile_operator_' });
  }
}
