// The one loader of the NCCL backend's native side. It explains exactly what is missing: the addon not built,
// libnccl or the CUDA runtime not found (with every path tried), NCCL too old, no NVIDIA driver, a driver older than
// the CUDA runtime, or no visible CUDA device.
import { CollectiveError } from '../api.js';
import { loadAddon, type NativeAddon, type NativeNcclStatus } from './addon.js';

let cached: { addon: NativeAddon; status: NativeNcclStatus } | { reason: string } | undefined;

function probe(): { addon: NativeAddon; status: NativeNcclStatus } | { reason: string } {
  if (cached !== undefined) return cached;
  const a = loadAddon();
  if (!a.ok) {
    cached = { reason: a.reason };
    return cached;
  }
  const status = a.addon.ncclLoad();
  cached = status.ok ? { addon: a.addon, status } : { reason: `NCCL backend unavailable: ${status.reason}` };
  return cached;
}

/**
 * The addon with NCCL and the CUDA runtime loaded and at least one device visible. Loads once; cheap afterwards.
 * Throws CollectiveError('BACKEND_UNAVAILABLE') naming what is missing.
 */
export function loadNative(): { addon: NativeAddon; status: NativeNcclStatus } {
  const p = probe();
  if ('reason' in p) throw new CollectiveError('BACKEND_UNAVAILABLE', p.reason);
  return p;
}

/** Whether the NCCL backend can run here; `initProcessGroup({ backend: 'auto' })` falls back to tcp when not. */
export function ncclAvailability(): { ok: true } | { ok: false; reason: string } {
  const p = probe();
  return 'reason' in p ? { ok: false, reason: p.reason } : { ok: true };
}
