// The rendezvous subsystem's entry point: the contract, defaults and conf parsing, and lazy backend loading.
import type { BackendOptions, Logger, NodeDescriptor, RendezvousConfig, RendezvousHandler } from './api.js';
import { RendezvousConfigError } from './api.js';
import type { EmbeddedRendezvousState } from './embedded-backend.js';

export * from './api.js';
export { RDZV_DEFAULTS, parseRdzvConf, redactConf } from './config.js';
export { assignGroupRanks, decideJoining, decideRunning } from './policy.js';
export type { EmbeddedRendezvousState } from './embedded-backend.js';

export type RendezvousBackendName = 'embedded' | 'etcd';

export interface CreateRendezvousArgs {
  readonly config: RendezvousConfig;
  readonly self: NodeDescriptor;
  readonly backendOptions: BackendOptions;
  readonly logger?: Logger;
  /** embedded only: share one state between handlers (several nodes in one process). */
  readonly embeddedState?: EmbeddedRendezvousState;
}

/**
 * Creates and starts a handler for the named backend. The backend module is imported on demand, so etcd3 (and
 * gRPC) load only when 'etcd' is chosen. Throws RendezvousConfigError for an unknown backend or bad options and
 * RendezvousConnectionError when the backend cannot be reached within config.readTimeoutMs.
 */
export async function createRendezvousHandler(
  backend: RendezvousBackendName,
  args: CreateRendezvousArgs,
): Promise<RendezvousHandler> {
  switch (backend) {
    case 'embedded': {
      const { createEmbeddedRendezvousHandler } = await import('./embedded-backend.js');
      return createEmbeddedRendezvousHandler(args);
    }
    case 'etcd': {
      const { createEtcdRendezvousHandler } = await import('./etcd-backend.js');
      return createEtcdRendezvousHandler(args);
    }
    default:
      throw new RendezvousConfigError(`--rdzv-backend ${String(backend)}: expected "embedded" or "etcd"`);
  }
}

/** A fresh state for embedded handlers that should form one job in one process. */
export async function createEmbeddedState(): Promise<EmbeddedRendezvousState> {
  const { EmbeddedRendezvousState } = await import('./embedded-backend.js');
  return new EmbeddedRendezvousState();
}
