import { EmbeddedRendezvousState, createEmbeddedRendezvousHandler } from '../../../rendezvous/embedded-backend.js';
import { runRendezvousContract } from './contract.js';

runRendezvousContract(
  'embedded',
  async () => {
    const state = new EmbeddedRendezvousState();
    return {
      create: (config, self) => createEmbeddedRendezvousHandler({ config, self, embeddedState: state }),
      // Embedded members share this process: "dying" is a crash-like close() (its liveness port closes, its lease
      // stays until the TTL); a member cannot be stalled apart from the test.
      spawnMember: async (config, self) => {
        const h = await createEmbeddedRendezvousHandler({ config, self, embeddedState: state });
        const round = h.next();
        round.catch(() => {});
        return { nodeId: self.nodeId, round, kill: () => h.close(), stall: null };
      },
      dispose: async () => {},
    };
  },
  { leaseTtlMs: 1000 },
);
