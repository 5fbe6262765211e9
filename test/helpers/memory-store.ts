// An in-process Store for world-size-1 NCCL checks (the unique id only has to reach this same process): the GPU
// check and the fake-NCCL unit test.
import type { Store } from '../../collective/api.js';

export function memoryStore(): Store {
  const kv = new Map<string, Uint8Array>();
  const enc = (v: Uint8Array | string): Uint8Array => (typeof v === 'string' ? new TextEncoder().encode(v) : v);
  return {
    async set(k, v) {
      kv.set(k, enc(v));
    },
    async get(k) {
      const v = kv.get(k);
      if (v === undefined) throw new Error(`memoryStore: no key ${k}`);
      return v;
    },
    async wait(keys) {
      for (const k of keys) if (!kv.has(k)) throw new Error(`memoryStore: no key ${k}`);
    },
    async add(k, d) {
      const n = Number(new TextDecoder().decode(kv.get(k) ?? enc('0'))) + d;
      kv.set(k, enc(String(n)));
      return n;
    },
    async compareSet(k, expected, desired) {
      const cur = kv.get(k);
      const e = enc(expected);
      const matches = cur === undefined ? e.length === 0 : Buffer.from(cur).equals(Buffer.from(e));
      if (matches) kv.set(k, enc(desired));
      return kv.get(k) ?? new Uint8Array(0);
    },
    async delete(k) {
      return kv.delete(k);
    },
    async close() {},
  };
}
