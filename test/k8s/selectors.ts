// Label and field selectors as the real API server parses them.
import { badRequest, type KObject } from './api.js';

export type Matcher = (obj: KObject) => boolean;

function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((p) => p.trim()).filter((p) => p.length > 0);
}

/** Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`; throws 400 naming the bad requirement. */
export function parseLabelSelector(sel: string | null | undefined): Matcher {
  if (!sel) return () => true;
  const reqs: Array<(labels: Record<string, string>) => boolean> = [];
  for (const part of splitTopLevel(sel)) {
    let m: RegExpMatchArray | null;
    if ((m = part.match(/^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$/))) {
      const [, key, op, vals] = m;
      const set = new Set(vals.split(',').map((v) => v.trim()));
      reqs.push(op === 'in' ? (l) => key in l && set.has(l[key]) : (l) => !(key in l) || !set.has(l[key]));
    } else if ((m = part.match(/^([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)$/))) {
      const [, key, op, val] = m;
      reqs.push(op === '!=' ? (l) => l[key] !== val : (l) => l[key] === val);
    } else if ((m = part.match(/^!\s*([\w./-]+)$/))) {
      const key = m[1];
      reqs.push((l) => !(key in l));
    } else if ((m = part.match(/^([\w./-]+)$/))) {
      const key = m[1];
      reqs.push((l) => key in l);
    } else {
      throw badRequest(`unable to parse requirement: invalid label selector "${sel}": bad requirement "${part}"`);
    }
  }
  return (obj) => {
    const labels = obj.metadata.labels ?? {};
    return reqs.every((r) => r(labels));
  };
}

/** Reads a dotted path (`status.phase`) from an object. */
export function fieldValue(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const seg of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

/** Parses `metadata.name=x,status.phase!=Running`; any dotted path is accepted. */
export function parseFieldSelector(sel: string | null | undefined): Matcher {
  if (!sel) return () => true;
  const reqs: Matcher[] = [];
  for (const part of splitTopLevel(sel)) {
    const m = part.match(/^([\w.]+)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw badRequest(`invalid field selector "${sel}": bad requirement "${part}"`);
    const [, path, op, val] = m;
    const get = (o: KObject): string => {
      const v = fieldValue(o, path);
      return v === undefined || v === null ? '' : String(v);
    };
    reqs.push(op === '!=' ? (o) => get(o) !== val : (o) => get(o) === val);
  }
  return (obj) => reqs.every((r) => r(obj));
}
