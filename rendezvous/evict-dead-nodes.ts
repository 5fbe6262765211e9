// The executor behind RendezvousHandler.probeMembers: probe every other registered node's liveness port once,
// decide with policy.ts's decideEvictions, revoke the lease of each node found dead.
import type { Logger } from '../common/logger.js';
import type { JobView } from './job-view.js';
import type { RendezvousKv } from './kv.js';
import { probeLiveness } from './liveness.js';
import { decideEvictions } from './policy.js';

/**
 * Probes, in parallel, every node in `view` other than `selfNodeId` that advertises a liveness port and holds a
 * lease; revokes the lease of those whose host refused the connection. Resolves with the nodeIds revoked, within
 * about `timeoutMs` plus the revocations; never rejects (a failed revocation is logged and not reported).
 */
export async function evictDeadNodes(args: {
  readonly view: JobView;
  readonly kv: Pick<RendezvousKv, 'revokeLeaseOf'>;
  readonly selfNodeId: string;
  readonly timeoutMs: number;
  readonly runId: string;
  readonly log: Pick<Logger, 'warn'>;
}): Promise<string[]> {
  const { view, kv, selfNodeId, timeoutMs, runId, log } = args;
  const targets = [...view.nodes.values()].filter(
    (n) => n.doc.node.nodeId !== selfNodeId && n.doc.livenessPort !== undefined && n.lease !== undefined,
  );
  const probed = await Promise.all(
    targets.map(async (n) => ({
      nodeId: n.doc.node.nodeId,
      result: await probeLiveness(n.doc.node.addr, n.doc.livenessPort!, timeoutMs),
    })),
  );
  const evicted: string[] = [];
  for (const nodeId of decideEvictions(probed)) {
    const target = targets.find((n) => n.doc.node.nodeId === nodeId)!;
    try {
      await kv.revokeLeaseOf(target.lease!);
      evicted.push(nodeId);
      log.warn(
        { runId, nodeId, addr: target.doc.node.addr, port: target.doc.livenessPort },
        'rendezvous: evicted a node whose agent is gone (liveness port refused); revoked its lease',
      );
    } catch (err) {
      log.warn({ err, runId, nodeId }, "rendezvous: revoking a dead node's lease failed");
    }
  }
  return evicted;
}
