// A rendezvous member in its own process (an agent without workers), for the contract suite's probe tests:
//   node --import tsx member-process.ts '<json: { endpoint, config, self }>'
// Joins the job on etcd, prints its first RoundInfo as one JSON line on stdout, then stays until killed.
import type { NodeDescriptor, RendezvousConfig } from '../../../rendezvous/api.js';
import { createEtcdRendezvousHandler } from '../../../rendezvous/etcd-backend.js';

const arg = JSON.parse(process.argv[2] ?? '{}') as {
  endpoint: string;
  config: RendezvousConfig;
  self: NodeDescriptor;
};
const handler = await createEtcdRendezvousHandler({
  config: arg.config,
  self: arg.self,
  backendOptions: { endpoint: arg.endpoint, conf: {} },
});
const round = await handler.next();
process.stdout.write(`${JSON.stringify(round)}\n`);
// Stay a member until the test kills this process; SIGTERM leaves cleanly.
const keep = setInterval(() => {}, 60_000);
process.once('SIGTERM', () => {
  clearInterval(keep);
  void handler.leave().finally(() => process.exit(0));
});
