// `/healthz` and Prometheus `/metrics` for the agent. prom-client is loaded only when --metrics-port is given,
// so a plain run does not pay for it. Recording never blocks: it only bumps in-memory counters.

import { createServer, type Server } from 'node:http';
import type { AgentState } from './api.js';
import type { RecoveryRecord } from './goodput.js';

export interface AgentMetrics {
  state(s: AgentState): void;
  workerStarted(n: number): void;
  workerFailed(): void;
  /** A warm standby took a failed live worker's rank (optional: older fakes lack it). */
  standbyPromoted?(): void;
  restart(kind: 'failure' | 'membership'): void;
  round(n: number, worldSize: number): void;
  workersRunning(n: number): void;
  /** A finished recovery: its time, steps lost, cause and path. */
  recovery(r: RecoveryRecord): void;
  /** Productive time over wall time so far, and the newest step the workers reported. */
  progress(goodputRatio: number, step: number | null): void;
  readonly port: number | null;
  close(): Promise<void>;
}

export const noMetrics: AgentMetrics = {
  state() {},
  workerStarted() {},
  workerFailed() {},
  restart() {},
  round() {},
  workersRunning() {},
  recovery() {},
  progress() {},
  port: null,
  async close() {},
};

const STATES: readonly AgentState[] = [
  'INIT',
  'RENDEZVOUS',
  'RUNNING',
  'RESTARTING',
  'STOPPING',
  'SUCCEEDED',
  'FAILED',
];

export async function startMetricsServer(port: number, host = '0.0.0.0'): Promise<AgentMetrics> {
  const prom = await import('prom-client');
  const registry = new prom.Registry();
  prom.collectDefaultMetrics({ register: registry, prefix: 'tensile_agent_' });
  const stateGauge = new prom.Gauge({
    name: 'tensile_agent_state',
    help: 'agent state (1 for the current state)',
    labelNames: ['state'],
    registers: [registry],
  });
  const starts = new prom.Counter({
    name: 'tensile_worker_starts_total',
    help: 'workers started',
    registers: [registry],
  });
  const promotions = new prom.Counter({
    name: 'tensile_standby_promotions_total',
    help: 'warm standby workers promoted into a failed live worker rank',
    registers: [registry],
  });
  const failures = new prom.Counter({
    name: 'tensile_worker_failures_total',
    help: 'workers that failed',
    registers: [registry],
  });
  const restarts = new prom.Counter({
    name: 'tensile_restarts_total',
    help: 'worker-group restarts',
    labelNames: ['kind'],
    registers: [registry],
  });
  const roundGauge = new prom.Gauge({ name: 'tensile_round', help: 'current rendezvous round', registers: [registry] });
  const worldGauge = new prom.Gauge({ name: 'tensile_world_size', help: 'current world size', registers: [registry] });
  const running = new prom.Gauge({
    name: 'tensile_workers_running',
    help: 'local workers running',
    registers: [registry],
  });
  const recoverySeconds = new prom.Histogram({
    name: 'tensile_recovery_seconds',
    help: 'time from a failure or round change to training again',
    labelNames: ['cause', 'path'],
    buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60],
    registers: [registry],
  });
  const lastRecovery = new prom.Gauge({
    name: 'tensile_last_recovery_seconds',
    help: 'time the most recent recovery took',
    labelNames: ['cause', 'path'],
    registers: [registry],
  });
  const stepsLost = new prom.Counter({
    name: 'tensile_steps_lost_total',
    help: 'training steps redone because of recoveries',
    registers: [registry],
  });
  const goodputGauge = new prom.Gauge({
    name: 'tensile_goodput_ratio',
    help: 'productive time / wall time (recoveries and redone steps are not productive)',
    registers: [registry],
  });
  const stepGauge = new prom.Gauge({
    name: 'tensile_training_step',
    help: 'newest step the local workers reported in heartbeats',
    registers: [registry],
  });
  let current: AgentState = 'INIT';

  const server: Server = createServer((req, res) => {
    if (req.url === '/healthz') {
      const ok = current !== 'FAILED';
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: ok ? 'ok' : 'failed', state: current }));
      return;
    }
    if (req.url === '/metrics') {
      registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(body);
        },
        (err: Error) => {
          res.writeHead(500);
          res.end(err.message);
        },
      );
      return;
    }
    res.writeHead(404);
    res.end('not found: try /healthz or /metrics\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  server.unref();
  const addr = server.address();
  return {
    state(s) {
      current = s;
      for (const name of STATES) stateGauge.set({ state: name }, name === s ? 1 : 0);
    },
    workerStarted: (n) => starts.inc(n),
    workerFailed: () => failures.inc(),
    standbyPromoted: () => promotions.inc(),
    restart: (kind) => restarts.inc({ kind }),
    round(n, w) {
      roundGauge.set(n);
      worldGauge.set(w);
    },
    workersRunning: (n) => running.set(n),
    recovery(r) {
      recoverySeconds.observe({ cause: r.cause, path: r.path }, r.recoveryMs / 1000);
      lastRecovery.set({ cause: r.cause, path: r.path }, r.recoveryMs / 1000);
      if (r.stepsLost) stepsLost.inc(r.stepsLost);
    },
    progress(ratio, step) {
      goodputGauge.set(ratio);
      if (step !== null) stepGauge.set(step);
    },
    port: typeof addr === 'object' && addr ? addr.port : port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
