// The subset of kubectl JSONPath used by additionalPrinterColumns and scale paths:
// `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.type=="Ready")].status`.

function step(values: unknown[], seg: string): unknown[] {
  const out: unknown[] = [];
  for (const v of values) {
    if (v === null || typeof v !== 'object') continue;
    const r = (v as Record<string, unknown>)[seg];
    if (r !== undefined) out.push(r);
  }
  return out;
}

/** Evaluates a JSONPath; returns every match in order (empty when none). */
export function evalJsonPath(obj: unknown, path: string): unknown[] {
  let p = path.trim();
  if (p.startsWith('{') && p.endsWith('}')) p = p.slice(1, -1);
  if (p.startsWith('$')) p = p.slice(1);
  let values: unknown[] = [obj];
  const re = /\.([^.[\]]+)|\[\?\(@\.([\w.]+)\s*==\s*["']([^"']*)["']\)\]|\[(\*|-?\d+)\]/gy;
  let m: RegExpExecArray | null;
  let last = 0;
  while ((m = re.exec(p)) !== null) {
    last = re.lastIndex;
    if (m[1] !== undefined) values = step(values, m[1]);
    else if (m[2] !== undefined) {
      const [key, want] = [m[2], m[3]];
      const out: unknown[] = [];
      for (const v of values)
        if (Array.isArray(v))
          for (const item of v) {
            let cur: unknown = item;
            for (const s of key.split('.'))
              cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[s] : undefined;
            if (String(cur) === want) out.push(item);
          }
      values = out;
    } else if (m[4] !== undefined) {
      const out: unknown[] = [];
      for (const v of values)
        if (Array.isArray(v)) {
          if (m[4] === '*') out.push(...v);
          else {
            const i = Number(m[4]);
            const r = v[i < 0 ? v.length + i : i];
            if (r !== undefined) out.push(r);
          }
        }
      values = out;
    }
  }
  if (last !== p.length) return [];
  return values;
}

/** Sets `.a.b.c` on an object, creating intermediate objects. */
export function setDotted(obj: Record<string, unknown>, path: string, value: unknown): void {
  const segs = path.replace(/^\./, '').split('.');
  let cur = obj;
  for (const s of segs.slice(0, -1)) {
    if (cur[s] === null || typeof cur[s] !== 'object') cur[s] = {};
    cur = cur[s] as Record<string, unknown>;
  }
  cur[segs[segs.length - 1]] = value;
}
