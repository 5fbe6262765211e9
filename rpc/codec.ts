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

// The walks are module-level functions over a small context (not closures made per call): encode and decode run
// for every message, and closure creation showed up in CPU profiles of the no-op call path.

interface EncodeCtx {
  readonly tensors: RawTensor[];
  readonly hook: EncodeHook | undefined;
  readonly addTensor: (t: RawTensor) => number;
}

function encodeWalk(v: unknown, c: EncodeCtx): unknown {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') {
    if (Number.isFinite(v)) return v;
    return { $n: String(v) };
  }
  if (v === undefined) return { $u: 1 };
  if (typeof v === 'bigint' || typeof v === 'function' || typeof v === 'symbol') {
    throw new TypeError(`cannot send a value of type ${typeof v} over RPC`);
  }
  if (isRaw(v)) return { $a: c.addTensor(v) };
  if (c.hook) {
    const r = c.hook(v as object, c.addTensor);
    if (r) return { $x: r.tag, v: r.data };
  }
  if (Array.isArray(v)) {
    const out = new Array<unknown>(v.length);
    for (let i = 0; i < v.length; i++) out[i] = encodeWalk(v[i], c);
    return out;
  }
  if (v instanceof Error) return { $e: { name: v.name, message: v.message } };
  const out: Record<string, unknown> = {};
  for (const k in v as Record<string, unknown>) {
    if (!Object.hasOwn(v, k)) continue;
    out[k.charCodeAt(0) === 36 /* $ */ ? '$' + k : k] = encodeWalk((v as Record<string, unknown>)[k], c);
  }
  return out;
}

export function encodeValue(value: unknown, hook?: EncodeHook): { body: Uint8Array; tensors: RawTensor[] } {
  const tensors: RawTensor[] = [];
  const c: EncodeCtx = { tensors, hook, addTensor: (t) => tensors.push(t) - 1 };
  const json = JSON.stringify(encodeWalk(value, c));
  return { body: encoder.encode(json), tensors };
}

interface DecodeCtx {
  readonly tensors: readonly RawTensor[];
  readonly hook: DecodeHook | undefined;
}

function decodeWalk(v: unknown, c: DecodeCtx): unknown {
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = decodeWalk(v[i], c);
    return v;
  }
  const o = v as Record<string, unknown>;
  if ('$a' in o) {
    const i = o.$a;
    if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= c.tensors.length) {
      throw new FrameError(`message refers to tensor ${String(i)} but carries ${c.tensors.length}`);
    }
    return c.tensors[i];
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
    if (!c.hook) throw new FrameError(`message carries a '${String(o.$x)}' object and no decoder is installed`);
    return c.hook(String(o.$x), o.v, c.tensors);
  }
  const out: Record<string, unknown> = {};
  for (const k in o) out[k.startsWith('$$') ? k.slice(1) : k] = decodeWalk(o[k], c);
  return out;
}

export function decodeValue(body: Uint8Array, tensors: readonly RawTensor[], hook?: DecodeHook): unknown {
  let parsed: unknown;
  try {
    parsed = body.byteLength === 0 ? undefined : JSON.parse(decoder.decode(body));
  } catch (err) {
    throw new FrameError(`malformed message body: ${(err as Error).message}`);
  }
  return decodeWalk(parsed, { tensors, hook });
}
