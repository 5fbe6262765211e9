import { EmbeddedRendezvousState, createEmbeddedRendezvousHandler } from '../../../rendezvous/embedded-backend.js';
import { runRendezvousContract } from './contract.js';

runRendezvousContract(
  'embedded',
  async () => {
    const state = new EmbeddedRendezvousState();
    return {
      create: (config, self) => createEmbeddedRendezvousHandler({ config, self, embeddedState: state }),
      dispose: async () => {},
    };
  },
  { leaseTtlMs: 1000 },
);
