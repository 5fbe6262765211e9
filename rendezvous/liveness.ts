// The agent's liveness port: a TCP listener that accepts (and at once closes) connections for as long as the agent
// process lives. The kernel answers a connection to a port nobody listens on with a reset, so a peer that connects
// and is refused knows the agent process is gone while its host is up: it need not wait for the agent's lease to
// expire (RendezvousHandler.probeMembers). A host that is down or cut off answers nothing; that is left to the lease.
import { type Server, type Socket, createServer, connect } from 'node:net';
import type { Logger } from '../common/logger.js';

export interface LivenessListener {
  /** The port it listens on (on the host it was opened for). */
  readonly port: number;
  /** Stops listening; later probes are refused. Idempotent. */
  close(): Promise<void>;
}

/**
 * Listens on an ephemeral port of `host` (the agent's address, which peers reach it by). Never keeps the process
 * alive (unref'd). Throws the listen error (e.g. EADDRNOTAVAIL when `host` is not an address of this machine).
 */
export async function openLivenessListener(host: string): Promise<LivenessListener> {
  const server: Server = createServer({ pauseOnConnect: true }, (socket: Socket) => {
    socket.on('error', () => {});
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', () => {});
  server.unref();
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  let closed: Promise<void> | null = null;
  return {
    port,
    close: () => {
      closed ??= new Promise<void>((resolve) => server.close(() => resolve()));
      return closed;
    },
  };
}

/**
 * What one connection attempt says about an agent process:
 * - `alive`: the connection was accepted (the process, or at least its kernel socket, is there; a stopped or busy
 *   process still counts: the kernel completes the handshake);
 * - `refused`: nothing listens on the port (ECONNREFUSED): the host answered, the agent process is gone;
 * - `no-answer`: nothing within the timeout (host down, partitioned, or overloaded): unknown;
 * - `unreachable`: any other error (no route, name not resolved, ...): unknown.
 */
export type LivenessProbe = 'alive' | 'refused' | 'no-answer' | 'unreachable';

/** Connects once to `host:port`, bounded by `timeoutMs`; never rejects. */
export function probeLiveness(host: string, port: number, timeoutMs: number): Promise<LivenessProbe> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const finish = (result: LivenessProbe): void => {
      clearTimeout(timer);
      socket.removeAllListeners('connect');
      socket.on('error', () => {});
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish('no-answer'), timeoutMs);
    socket.once('connect', () => finish('alive'));
    socket.once('error', (err: NodeJS.ErrnoException) =>
      finish(err.code === 'ECONNREFUSED' ? 'refused' : 'unreachable'),
    );
  });
}

/**
 * The handler's liveness port: on `addr` (the address peers reach this node by), else on every address when `addr`
 * is not bindable here; null (logged) when neither works: the node is then caught by its lease only.
 */
export async function openLivenessPort(addr: string, log: Pick<Logger, 'warn'>): Promise<LivenessListener | null> {
  try {
    return await openLivenessListener(addr);
  } catch (err) {
    try {
      const l = await openLivenessListener('::');
      log.warn(
        { err, addr, port: l.port },
        'rendezvous: cannot listen on the node address; liveness port listens on every address',
      );
      return l;
    } catch {
      log.warn({ err, addr }, 'rendezvous: no liveness port; a dead agent is caught by its lease only');
      return null;
    }
  }
}
