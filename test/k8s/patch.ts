/* eslint-disable @typescript-eslint/no-explicit-any -- patches operate on arbitrary JSON documents */
// JSON merge patch (RFC 7386), JSON patch (RFC 6902) and a strategic merge patch that is good enough
// for kubectl's client-side apply (merge keys for the list fields kubectl patches, `$patch`,
// `$setElementOrder`, `$deleteFromPrimitiveList`, `$retainKeys`).
import { badRequest } from './api.js';

const isObj = (v: unknown): v is Record<string, any> => v !== null && typeof v === 'object' && !Array.isArray(v);

export function mergePatch(target: any, patch: any): any {
  if (!isObj(patch)) return structuredClone(patch);
  const out: Record<string, any> = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function decodePointer(ptr: string): string[] {
  if (ptr === '') return [];
  if (!ptr.startsWith('/')) throw badRequest(`json patch: path "${ptr}" must start with "/"`);
  return ptr
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function parentOf(doc: any, segs: string[], path: string): any {
  let cur = doc;
  for (const s of segs.slice(0, -1)) {
    cur = Array.isArray(cur) ? cur[Number(s)] : isObj(cur) ? cur[s] : undefined;
    if (cur === undefined) throw new PatchError(`json patch: path "${path}" does not exist`);
  }
  return cur;
}

export class PatchError extends Error {
  readonly code = 'K8S_PATCH_ERROR' as const;
}

export function jsonPatch(doc: any, ops: unknown): any {
  if (!Array.isArray(ops)) throw badRequest('json patch: body must be an array of operations');
  let root = structuredClone(doc);
  const get = (path: string): any => {
    const segs = decodePointer(path);
    let cur = root;
    for (const s of segs) {
      cur = Array.isArray(cur) ? cur[Number(s)] : isObj(cur) ? cur[s] : undefined;
      if (cur === undefined) throw new PatchError(`json patch: path "${path}" does not exist`);
    }
    return cur;
  };
  const remove = (path: string): any => {
    const segs = decodePointer(path);
    const parent = parentOf(root, segs, path);
    const last = segs[segs.length - 1];
    if (Array.isArray(parent)) return parent.splice(Number(last), 1)[0];
    if (!isObj(parent) || !(last in parent)) throw new PatchError(`json patch: path "${path}" does not exist`);
    const v = parent[last];
    delete parent[last];
    return v;
  };
  const add = (path: string, value: any, replace: boolean): void => {
    const segs = decodePointer(path);
    if (segs.length === 0) {
      root = structuredClone(value);
      return;
    }
    const parent = parentOf(root, segs, path);
    const last = segs[segs.length - 1];
    if (Array.isArray(parent)) {
      const idx = last === '-' ? parent.length : Number(last);
      if (!Number.isInteger(idx) || idx < 0 || idx > parent.length)
        throw new PatchError(`json patch: index in "${path}" out of range`);
      if (replace) parent[idx] = structuredClone(value);
      else parent.splice(idx, 0, structuredClone(value));
    } else if (isObj(parent)) {
      if (replace && !(last in parent)) throw new PatchError(`json patch: path "${path}" does not exist`);
      parent[last] = structuredClone(value);
    } else throw new PatchError(`json patch: parent of "${path}" is not a container`);
  };
  for (const op of ops) {
    if (!isObj(op) || typeof op.op !== 'string' || typeof op.path !== 'string')
      throw badRequest(`json patch: bad operation ${JSON.stringify(op)}`);
    switch (op.op) {
      case 'add':
        add(op.path, op.value, false);
        break;
      case 'replace':
        add(op.path, op.value, true);
        break;
      case 'remove':
        remove(op.path);
        break;
      case 'move': {
        const v = remove(op.from);
        add(op.path, v, false);
        break;
      }
      case 'copy':
        add(op.path, get(op.from), false);
        break;
      case 'test':
        if (JSON.stringify(get(op.path)) !== JSON.stringify(op.value))
          throw new PatchError(`json patch: test failed at "${op.path}"`);
        break;
      default:
        throw badRequest(`json patch: unknown op "${String(op.op)}"`);
    }
  }
  return root;
}

/** Merge keys of the built-in list fields, by field name (what kubectl's SMP relies on). */
const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  env: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  volumeDevices: 'devicePath',
  imagePullSecrets: 'name',
  conditions: 'type',
  ownerReferences: 'uid',
  hostAliases: 'ip',
  topologySpreadConstraints: 'topologyKey',
  resourceClaims: 'name',
};
/** Lists of primitives merged as sets. */
const MERGE_PRIMITIVE = new Set(['finalizers']);

function mergeKeyFor(field: string, items: any[]): string | undefined {
  if (field === 'ports') {
    const sample = items.find(isObj);
    if (sample && 'containerPort' in sample) return 'containerPort';
    return 'port';
  }
  return MERGE_KEYS[field];
}

export function strategicMergePatch(target: any, patch: any): any {
  if (!isObj(patch)) return structuredClone(patch);
  if (patch.$patch === 'replace') {
    const { $patch: _p, ...rest } = patch;
    return structuredClone(rest);
  }
  if (patch.$patch === 'delete') return undefined;
  const out: Record<string, any> = isObj(target) ? { ...target } : {};
  const retain = Array.isArray(patch.$retainKeys) ? new Set<string>(patch.$retainKeys) : undefined;
  for (const [k, v] of Object.entries(patch)) {
    if (k === '$patch' || k === '$retainKeys') continue;
    if (k.startsWith('$setElementOrder/') || k.startsWith('$deleteFromPrimitiveList/')) continue;
    if (v === null) {
      delete out[k];
      continue;
    }
    if (Array.isArray(v)) {
      out[k] = mergeList(k, Array.isArray(out[k]) ? out[k] : [], v);
    } else if (isObj(v)) {
      const r = strategicMergePatch(out[k], v);
      if (r === undefined) delete out[k];
      else out[k] = r;
    } else out[k] = v;
  }
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$deleteFromPrimitiveList/') && Array.isArray(v)) {
      const field = k.slice('$deleteFromPrimitiveList/'.length);
      if (Array.isArray(out[field])) out[field] = out[field].filter((x: any) => !v.includes(x));
    }
  }
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$setElementOrder/') && Array.isArray(v)) {
      const field = k.slice('$setElementOrder/'.length);
      if (!(field in patch) && Array.isArray(out[field])) out[field] = reorder(field, out[field], v);
      else if (Array.isArray(out[field])) out[field] = reorder(field, out[field], v);
    }
  }
  if (retain) for (const k of Object.keys(out)) if (!retain.has(k)) delete out[k];
  return out;
}

function reorder(field: string, items: any[], order: any[]): any[] {
  const key = mergeKeyFor(field, items);
  const id = (x: any): string => JSON.stringify(key && isObj(x) ? x[key] : x);
  const pos = new Map(order.map((o, i) => [id(o), i]));
  return [...items].sort((a, b) => (pos.get(id(a)) ?? order.length) - (pos.get(id(b)) ?? order.length));
}

function mergeList(field: string, current: any[], patch: any[]): any[] {
  if (MERGE_PRIMITIVE.has(field)) {
    const out = [...current];
    for (const p of patch) if (!out.includes(p)) out.push(p);
    return out;
  }
  const key = mergeKeyFor(field, [...patch, ...current]);
  if (!key || !patch.every(isObj)) return structuredClone(patch.filter((p) => !(isObj(p) && p.$patch)));
  if (patch.some((p) => p.$patch === 'replace')) return structuredClone(patch.filter((p) => p.$patch !== 'replace'));
  const out = current.map((c) => structuredClone(c));
  for (const p of patch) {
    const idx = out.findIndex((c) => isObj(c) && c[key] === p[key]);
    if (p.$patch === 'delete') {
      if (idx >= 0) out.splice(idx, 1);
    } else if (idx >= 0) out[idx] = strategicMergePatch(out[idx], p);
    else out.push(strategicMergePatch({}, p));
  }
  return out;
}
