// `/healthz` and Prometheus `/metrics` for the agent. prom-client is loaded only when --metrics-port is given,
// so a plain run does not pay for it. Recording never blocks: it only bumps in-memory counters.

import { createServer, type Server } from 'node:http';
import type { AgentState } from './api.js';

export interface AgentMetrics {
  state(s: AgentState): void;
  workerStarted(n: number): void;
  workerFailed(): void;
  restart(kind: 'failure' | 'membership'): void;
  round(n: number, worldSize: number): void;
  workersRunning(n: number): void;
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
    restart: (kind) => restarts.inc({ kind }),
    round(n, w) {
      roundGauge.set(n);
      worldGauge.set(w);
    },
    workersRunning: (n) => running.set(n),
    port: typeof addr === 'object' && addr ? addr.port : port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
