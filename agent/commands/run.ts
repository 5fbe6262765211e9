// `tensile run`: parse flags once, wire the logger, console, metrics and rendezvous, run the agent, map signals.

import { hostname } from 'node:os';
import { Writable } from 'node:stream';
import type { RendezvousHandler } from '../../rendezvous/api.js';
import { ElasticAgent } from '../agent.js';
import { formatHelp } from '../args.js';
import { AgentConsole } from '../console.js';
import { createAgentLogger } from '../logger.js';
import { noMetrics, startMetricsServer } from '../metrics.js';
import { parseRunArgs, RUN_FLAGS, RUN_USAGE } from '../run-config.js';
import { UsageError } from '../api.js';

/** Why `port` cannot be bound on `host` now, or null when it can. */
async function portBusy(port: number, host: string): Promise<string | null> {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) =>
      resolve(err.code === 'EADDRINUSE' ? 'already in use' : err.message),
    );
    srv.listen(port, host, () => srv.close(() => resolve(null)));
  });
}

const HANDLED_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];

export async function runCommand(argv: readonly string[]): Promise<number> {
  const parsed = parseRunArgs(argv, process.env, process.stderr.isTTY === true);
  if (parsed.help || !parsed.options) {
    process.stdout.write(formatHelp(RUN_USAGE, RUN_FLAGS));
    return 0;
  }
  const opts = parsed.options;
  const agentConsole = new AgentConsole(process.stdout, process.stderr, opts.statusLine);
  const logger = await createAgentLogger(
    opts.logFormat,
    opts.logLevel,
    opts.statusLine
      ? new Writable({
          write(chunk: Buffer | string, _enc, done) {
            agentConsole.message(chunk.toString());
            done();
          },
        })
      : null,
  );
  for (const n of parsed.notices) logger.warn(n);

  const { parseRdzvConf, createRendezvousHandler } = await import('../../rendezvous/index.js');
  // Validate --rdzv-conf and --rdzv-endpoint before anything starts, so a typo is a usage error (exit 2), not a failed job.
  let rdzv: ReturnType<typeof parseRdzvConf>;
  try {
    rdzv = parseRdzvConf(opts.rdzvConf, {
      runId: opts.rdzvId,
      minNodes: opts.nnodes.min,
      maxNodes: opts.nnodes.max,
      endpoint: opts.rdzvEndpoint,
    });
    if (opts.rdzvBackend === 'etcd') {
      const { parseEtcdEndpoint } = await import('../../rendezvous/etcd-backend.js');
      parseEtcdEndpoint(opts.rdzvEndpoint);
    }
  } catch (err) {
    throw new UsageError((err as Error).message);
  }

  if (opts.masterPort !== null && opts.nnodes.max === 1) {
    const busy = await portBusy(opts.masterPort, opts.masterAddr ?? '127.0.0.1');
    if (busy)
      throw new UsageError(`--master-port ${opts.masterPort}: ${busy}; the workers' rank 0 must be able to bind it`);
  }

  let metrics = noMetrics;
  if (opts.metricsPort !== null) {
    try {
      metrics = await startMetricsServer(opts.metricsPort);
    } catch (err) {
      throw new UsageError(`--metrics-port ${opts.metricsPort}: cannot listen (${(err as Error).message})`);
    }
    logger.info({ port: metrics.port }, 'serving /healthz and /metrics');
  }
  const agent = new ElasticAgent(opts, {
    logger,
    console: agentConsole,
    metrics,
    env: process.env,
    host: hostname(),
    rendezvous: (self): Promise<RendezvousHandler> =>
      createRendezvousHandler(opts.rdzvBackend, {
        config: rdzv.config,
        self,
        backendOptions: rdzv.backendOptions,
        logger: logger.child({ component: 'rendezvous' }),
      }),
  });
  const onSignal = (sig: NodeJS.Signals): void => {
    logger.warn({ signal: sig }, 'signal received; forwarding to workers');
    agent.requestStop(sig);
  };
  for (const sig of HANDLED_SIGNALS) process.on(sig, onSignal);
  try {
    const result = await agent.run();
    return result.exitCode;
  } finally {
    for (const sig of HANDLED_SIGNALS) process.off(sig, onSignal);
    agentConsole.close();
    await metrics.close();
  }
}
