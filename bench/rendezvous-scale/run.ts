// Rendezvous at scale: N simulated agents (etcd handlers, no workers) join one job (min = max = N) on one etcd.
// Figures per N: seconds from the last join (etcd acknowledging the last agent's join write) until every agent
// holds its rank, and etcd writes per agent for the round (counted by the backend). No peer is run here: torchrun's
// etcd backends cannot be driven at this scale without its agents: absolute figures (peer=- ratio=-, target on the
// value).
//
//   npm run bench -- rendezvous-scale [N ...]     (default: 10 100 1000)
import { randomUUID } from 'node:crypto';
import { type RendezvousHandler } from '../../rendezvous/api.js';
import { parseRdzvConf } from '../../rendezvous/config.js';
import { type EtcdConnection, createEtcdRendezvousHandler, openEtcdConnection } from '../../rendezvous/etcd-backend.js';
import type { KvStats } from '../../rendezvous/kv.js';
import { startEtcd } from '../../test/helpers/etcd.js';
import { withTimeout } from '../../common/timeout.js';
import { absoluteFigure } from '../lib/figures.js';

const TARGET_S = 3;
const AGENTS_PER_CONNECTION = 250;
const PER_SIZE_LIMIT_MS = 90_000;

type Stated = RendezvousHandler & { readonly stats: KvStats };

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return withTimeout(p, ms, what, () => new Error(`${what}: not within ${ms} ms`));
}

async function runSize(
  endpoint: string,
  n: number,
): Promise<{
  seconds: number;
  writesPerAgent: number;
  totalSeconds: number;
  firstSeconds: number;
}> {
  const runId = `scale-${n}-${randomUUID().slice(0, 6)}`;
  // A 10 s lease keeps N keepalive streams cheap on a shared 2-core machine; it does not change the round path.
  const { config, backendOptions } = parseRdzvConf(
    { lease_ttl: '10', join_timeout: '120' },
    { runId, minNodes: n, maxNodes: n, endpoint },
  );
  const conns: EtcdConnection[] = [];
  const handlers: Stated[] = [];
  try {
    for (let i = 0; i < n; i++) {
      if (i % AGENTS_PER_CONNECTION === 0) conns.push(await openEtcdConnection(backendOptions, config.readTimeoutMs));
      const self = {
        nodeId: `sim-${i}`,
        host: `sim-host-${i}`,
        addr: '127.0.0.1',
        masterPort: 20_000 + (i % 40_000),
        localWorldSize: 1,
      };
      handlers.push(
        await createEtcdRendezvousHandler({ config, self, backendOptions, connection: conns[conns.length - 1]! }),
      );
    }
    const before = handlers.map((h) => h.stats.writes);
    const startAt = performance.now();
    let firstDoneAt = 0;
    const rounds = await within(
      Promise.all(
        handlers.map((h) =>
          h.next().then((r) => {
            if (firstDoneAt === 0) firstDoneAt = performance.now();
            return r;
          }),
        ),
      ),
      PER_SIZE_LIMIT_MS,
      `${n} agents`,
    );
    const doneAt = performance.now();
    // "The last join" = when etcd acknowledged the last agent's join (its leased node-key put).
    const lastJoinAt = Math.max(...handlers.map((h) => h.stats.lastLeasedPutAtMs));
    const ranks = new Set(rounds.map((r) => r.groupRank));
    if (ranks.size !== n || rounds.some((r) => r.groupWorldSize !== n))
      throw new Error(`${n} agents: ranks are not 0..${n - 1}`);
    // The closer counts its transaction when etcd's reply arrives, which may come after the watch event.
    await new Promise((r) => setTimeout(r, 500));
    const writes = handlers.reduce((s, h, i) => s + h.stats.writes - before[i]!, 0);
    return {
      seconds: (doneAt - (lastJoinAt || doneAt)) / 1000,
      writesPerAgent: writes / n,
      totalSeconds: (doneAt - startAt) / 1000,
      firstSeconds: (firstDoneAt - (lastJoinAt || firstDoneAt)) / 1000,
    };
  } finally {
    // leave() revokes each lease, so no lease expiry load spills into the next size.
    await Promise.allSettled(handlers.map((h) => h.leave()));
    for (const c of conns) c.close();
  }
}

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((x) => Number.isInteger(x) && x > 0);
const etcd = await startEtcd({ extraArgs: ['--quota-backend-bytes', String(1024 * 1024 * 1024)] });
const overall = setTimeout(() => {
  console.error('rendezvous-scale: overall time limit reached');
  void etcd.stop().finally(() => process.exit(1));
}, 300_000);
try {
  for (const n of sizes.length > 0 ? sizes : [10, 100, 1000]) {
    const r = await runSize(etcd.endpoint, n);
    absoluteFigure(`rendezvous_scale_${n}_agents`, r.seconds, 's', { op: '<=', value: TARGET_S }, 3);
    absoluteFigure(`rendezvous_writes_per_agent_${n}`, r.writesPerAgent, 'writes', { op: '<=', value: 2 }, 3);
    console.log(
      `# ${n} agents: last join to first agent ranked ${r.firstSeconds.toFixed(3)} s; first next() to all ranks ${r.totalSeconds.toFixed(3)} s (includes the ${n} joins)`,
    );
  }
} finally {
  clearTimeout(overall);
  await etcd.stop();
}
