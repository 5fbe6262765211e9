// @kubernetes/client-node 2.0.1 depends on undici 8, which at load time uses two APIs that Node 20 lacks
// (zlib.createZstdDecompress, worker_threads.markAsUncloneable) and so throws on import, and
// Promise.withResolvers on every fetch. Import this module
// BEFORE '@kubernetes/client-node' (first import of the file) to stub them: zstd-encoded responses then fail
// (the test API server never sends them) and structured-clone marking becomes a no-op.
import wt from 'node:worker_threads';
import zlib from 'node:zlib';

const z = zlib as unknown as Record<string, unknown>;
if (typeof z.createZstdDecompress !== 'function')
  z.createZstdDecompress = (): never => {
    throw new Error('zstd decompression is not available on this Node.js version');
  };
const w = wt as unknown as Record<string, unknown>;
if (typeof w.markAsUncloneable !== 'function') w.markAsUncloneable = (): void => {};

const P = Promise as unknown as Record<string, unknown>;
if (typeof P.withResolvers !== 'function')
  P.withResolvers = function withResolvers<T>() {
    let resolve!: (v: T) => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };

export const node20CompatApplied = true;
