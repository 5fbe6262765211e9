// What the operator keeps of each watched object in its informer caches (client-go's TransformFunc): only the
// fields the controller reads. A worker pod's spec (containers, env, volumes, affinity) and a real node's status
// (images, conditions) are most of their size; managedFields too on a real API server. Pure.
import type { V1Node, V1ObjectMeta, V1Pod, V1Service } from '@kubernetes/client-node';

function slimMeta(m: V1ObjectMeta | undefined): V1ObjectMeta {
  if (m === undefined) return {};
  const out: V1ObjectMeta = {};
  if (m.name !== undefined) out.name = m.name;
  if (m.namespace !== undefined) out.namespace = m.namespace;
  if (m.uid !== undefined) out.uid = m.uid;
  if (m.resourceVersion !== undefined) out.resourceVersion = m.resourceVersion;
  if (m.labels !== undefined) out.labels = m.labels;
  if (m.deletionTimestamp !== undefined && m.deletionTimestamp !== null) out.deletionTimestamp = m.deletionTimestamp;
  if (m.ownerReferences !== undefined) out.ownerReferences = m.ownerReferences;
  return out;
}

/** metadata, spec.nodeName and the status fields `toPodView` reads. */
export function slimPod(p: V1Pod): V1Pod {
  const s = p.status;
  return {
    metadata: slimMeta(p.metadata),
    ...(p.spec?.nodeName !== undefined ? { spec: { nodeName: p.spec.nodeName, containers: [] } } : {}),
    ...(s !== undefined
      ? {
          status: {
            ...(s.phase !== undefined ? { phase: s.phase } : {}),
            ...(s.reason !== undefined ? { reason: s.reason } : {}),
            ...(s.conditions !== undefined ? { conditions: s.conditions } : {}),
            ...(s.containerStatuses !== undefined ? { containerStatuses: s.containerStatuses } : {}),
          },
        }
      : {}),
  };
}

/** Services are only counted by name: metadata only. */
export function slimService(s: V1Service): V1Service {
  return { metadata: slimMeta(s.metadata) };
}

/** metadata and taints (node loss and termination-notice taints). */
export function slimNode(n: V1Node): V1Node {
  return {
    metadata: slimMeta(n.metadata),
    ...(n.spec?.taints !== undefined ? { spec: { taints: n.spec.taints } } : {}),
  };
}
