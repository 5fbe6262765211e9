// Values <-> (JSON body, tensor list). Pure.
//
// Plain JSON values pass through. Typed arrays become {"$a": index} with their bytes in the frame's tensor list.
// `undefined` becomes {"$u": 1}. Objects that a hook recognises (tensors, RRefs) become {"$x": tag, "v": data}
// and are rebuilt by the matching decode hook. Keys starting with '$' in user objects are escaped as '$$'.

import { FrameError, type RawTensor } from './frame.js';

export interface EncodeHook {
  /** Returns a tagged JSON replacement for `v`, or undefined when the hook does not handle it. */
  (v: object, addTensor: (t: RawTensor) => number): { tag: string; data: unknown } | undefined;
}
export interface DecodeHook {
  (tag: string, data: unknown, tensors: readonly RawTensor[]): unknown;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function isRaw(v: unknown): v is RawTensor {
  return v instanceof Float32Array || v instanceof Float64Array || v instanceof Int32Array || v instanceof Uint8Array;
}

export function encodeValue(value: unknown, hook?: EncodeHook): { body: Uint8Array; tensors: RawTensor[] } {
  const tensors: RawTensor[] = [];
  const addTensor = (t: RawTensor): number => tensors.push(t) - 1;
  const walk = (v: unknown): unknown => {
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
    if (typeof v === 'number') {
      if (Number.isFinite(v)) return v;
      return { $n: String(v) };
    }
    if (v === undefined) return { $u: 1 };
    if (typeof v === 'bigint' || typeof v === 'function' || typeof v === 'symbol') {
      throw new TypeError(`cannot send a value of type ${typeof v} over RPC`);
    }
    if (isRaw(v)) return { $a: addTensor(v) };
    if (hook) {
      const r = hook(v as object, addTensor);
      if (r) return { $x: r.tag, v: r.data };
    }
    if (Array.isArray(v)) return v.map(walk);
    if (v instanceof Error) return { $e: { name: v.name, message: v.message } };
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) out[k.startsWith('$') ? '$' + k : k] = walk(x);
    return out;
  };
  const json = JSON.stringify(walk(value));
  return { body: encoder.encode(json), tensors };
}

export function decodeValue(body: Uint8Array, tensors: readonly RawTensor[], hook?: DecodeHook): unknown {
  let parsed: unknown;
  try {
    parsed = body.byteLength === 0 ? undefined : JSON.parse(decoder.decode(body));
  } catch (err) {
    throw new FrameError(`malformed message body: ${(err as Error).message}`);
  }
  const walk = (v: unknown): unknown => {
    if (v === null || typeof v !== 'object') return v;
    if (Array.isArray(v)) return v.map(walk);
    const o = v as Record<string, unknown>;
    if ('$a' in o) {
      const i = o.$a;
      if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= tensors.length) {
        throw new FrameError(`message refers to tensor ${String(i)} but carries ${tensors.length}`);
      }
      return tensors[i];
    }
    if ('$u' in o) return undefined;
    if ('$n' in o) return Number(o.$n);
    if ('$e' in o) {
      const e = o.$e as { name?: string; message?: string };
      const err = new Error(String(e?.message ?? ''));
      err.name = String(e?.name ?? 'Error');
      return err;
    }
    if ('$x' in o) {
      if (!hook) throw new FrameError(`message carries a '${String(o.$x)}' object and no decoder is installed`);
      return hook(String(o.$x), o.v, tensors);
    }
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(o)) out[k.startsWith('$$') ? k.slice(1) : k] = walk(x);
    return out;
  };
  return walk(parsed);
}
