// Free ports by binding port 0 and closing: the port is free now, not reserved (another process may take it
// before the caller binds; callers that can should bind 0 themselves and read the port).

import { createServer } from 'node:net';

/** A TCP port free on `host` now. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Whether `port` can be bound on `host` now. */
export async function isPortFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/**
 * A free port whose successor is free too: workers' rank 0 binds MASTER_PORT (the store), and tensile's RPC layer
 * bootstraps on MASTER_PORT + 1 by default. Falls back to a single free port after `tries` attempts.
 */
export async function freePortPair(host = '0.0.0.0', tries = 20): Promise<number> {
  for (let i = 0; i < tries; i++) {
    const port = await freePort(host);
    if (port < 65535 && (await isPortFree(port + 1, host))) return port;
  }
  return freePort(host);
}
