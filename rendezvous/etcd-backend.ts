import type { RendezvousHandler } from './api.js';
import { RendezvousConfigError } from './api.js';
import type { CreateRendezvousArgs } from './index.js';

export async function createEtcdRendezvousHandler(_args: CreateRendezvousArgs): Promise<RendezvousHandler> {
  throw new RendezvousConfigError('etcd backend: not built yet');
}
