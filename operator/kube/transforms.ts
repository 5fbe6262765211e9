// What the operator keeps of each watched object in its informer caches (client-go's TransformFunc): only the
// fields the controller reads. A worker pod's spec (containers, env, volumes, affinity) and a real node's status
// (images, conditions) are most of their size; managedFields too on a real API server. Pure.
import type {
  V1ContainerState,
  V1ContainerStatus,
  V1Node,
  V1ObjectMeta,
  V1Pod,
  V1PodCondition,
  V1Service,
} from '@kubernetes/client-node';

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

/** `toPodView` reads only the DisruptionTarget condition (its type, status and reason). */
const isDisruption = (c: V1PodCondition) => c.type === 'DisruptionTarget';
const slimCondition = (c: V1PodCondition): V1PodCondition => ({
  type: c.type,
  status: c.status,
  ...(c.reason !== undefined ? { reason: c.reason } : {}),
});

function slimState(st: V1ContainerState | undefined): V1ContainerState | undefined {
  if (st === undefined) return undefined;
  const out: V1ContainerState = {};
  if (st.running !== undefined) out.running = {};
  if (st.waiting !== undefined)
    out.waiting = {
      ...(st.waiting.reason !== undefined ? { reason: st.waiting.reason } : {}),
      ...(st.waiting.message !== undefined ? { message: st.waiting.message } : {}),
    };
  if (st.terminated !== undefined)
    out.terminated = {
      exitCode: st.terminated.exitCode,
      ...(st.terminated.reason !== undefined ? { reason: st.terminated.reason } : {}),
      ...(st.terminated.message !== undefined ? { message: st.terminated.message } : {}),
    };
  return out;
}

/**
 * A container status as `toPodView` reads it: name, restart count, and which state (waiting/terminated with
 * reason, message and exit code; running as a bare marker). image, imageID, containerID, times and the rest are
 * dropped (image and imageID stay as empty strings: the type requires them).
 */
function slimStatus(c: V1ContainerStatus): V1ContainerStatus {
  const state = slimState(c.state);
  const lastState = slimState(c.lastState);
  return {
    name: c.name,
    image: '',
    imageID: '',
    ready: c.ready,
    restartCount: c.restartCount,
    ...(state !== undefined ? { state } : {}),
    ...(lastState !== undefined ? { lastState } : {}),
  };
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
            ...(s.conditions !== undefined ? { conditions: s.conditions.filter(isDisruption).map(slimCondition) } : {}),
            ...(s.containerStatuses !== undefined ? { containerStatuses: s.containerStatuses.map(slimStatus) } : {}),
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
