// The operator's HTTP endpoints: /healthz (the process answers), /readyz (ready to lead or leading with synced
// caches) and Prometheus /metrics. Mechanism only: readiness is a callback the caller owns.
import { createServer, type Server } from 'node:http';
import type { OperatorMetrics } from './controller/metrics.js';

export interface ProbeServer {
  /** The port it listens on (the one asked for, or the one the OS chose for 0). */
  readonly port: number;
  /** Stops accepting connections and resolves when the open ones are closed. */
  close(): Promise<void>;
}

/** Listens on host:port; rejects when it cannot bind (EADDRINUSE, EACCES). */
export async function startProbeServer(opts: {
  readonly host: string;
  readonly port: number;
  readonly metrics: OperatorMetrics;
  /** Whether /readyz answers 200 (otherwise 503 "caches not synced"). */
  readonly isReady: () => boolean;
}): Promise<ProbeServer> {
  const { metrics } = opts;
  const server: Server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/healthz') {
      res.writeHead(200).end('ok');
    } else if (url === '/readyz') {
      const ready = opts.isReady();
      res.writeHead(ready ? 200 : 503).end(ready ? 'ok' : 'caches not synced');
    } else if (url === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    } else {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr !== null ? addr.port : opts.port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
