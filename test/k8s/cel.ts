/* eslint-disable @typescript-eslint/no-explicit-any -- evaluates expressions over arbitrary JSON */
// A small subset of CEL for CRD x-kubernetes-validations rules: literals, self, member access, indexing,
// ! && || ?:, comparisons, in, + - * / %, has(), size(), int(), string(), and the methods size, startsWith,
// endsWith, contains, matches, all, exists. Transition rules (oldSelf) are not evaluated.

type Node =
  | { k: 'lit'; v: any }
  | { k: 'id'; name: string }
  | { k: 'member'; obj: Node; name: string }
  | { k: 'index'; obj: Node; idx: Node }
  | { k: 'call'; name: string; target?: Node; args: Node[] }
  | { k: 'unary'; op: string; a: Node }
  | { k: 'bin'; op: string; a: Node; b: Node }
  | { k: 'cond'; c: Node; t: Node; f: Node }
  | { k: 'list'; items: Node[] };

export class CelError extends Error {
  readonly code = 'K8S_CEL_ERROR' as const;
}

function tokenize(src: string): string[] {
  const re =
    /\s*(\d+\.\d+|\d+|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[A-Za-z_][A-Za-z0-9_]*|\|\||&&|==|!=|<=|>=|[-+*/%<>!().,[\]?:])/y;
  const out: string[] = [];
  let pos = 0;
  while (pos < src.length) {
    if (/^\s*$/.test(src.slice(pos))) break;
    re.lastIndex = pos;
    const m = re.exec(src);
    if (!m) throw new CelError(`cannot parse rule at "${src.slice(pos)}"`);
    out.push(m[1]);
    pos = re.lastIndex;
  }
  return out;
}

export function parseCel(src: string): Node {
  const toks = tokenize(src);
  let i = 0;
  const peek = (): string | undefined => toks[i];
  const eat = (t?: string): string => {
    const v = toks[i];
    if (v === undefined || (t !== undefined && v !== t))
      throw new CelError(`expected "${t ?? 'token'}" in rule "${src}"`);
    i++;
    return v;
  };
  const expr = (): Node => {
    const c = or();
    if (peek() === '?') {
      eat('?');
      const t = expr();
      eat(':');
      return { k: 'cond', c, t, f: expr() };
    }
    return c;
  };
  const binLevel = (ops: string[], next: () => Node) => (): Node => {
    let a = next();
    while (peek() !== undefined && ops.includes(peek()!)) {
      const op = eat();
      a = { k: 'bin', op, a, b: next() };
    }
    return a;
  };
  const unary = (): Node => {
    if (peek() === '!' || peek() === '-') {
      const op = eat();
      return { k: 'unary', op, a: unary() };
    }
    return postfix();
  };
  const mul = binLevel(['*', '/', '%'], unary);
  const add = binLevel(['+', '-'], mul);
  const rel = binLevel(['==', '!=', '<', '<=', '>', '>=', 'in'], add);
  const and = binLevel(['&&'], rel);
  const or = binLevel(['||'], and);
  const args = (): Node[] => {
    eat('(');
    const out: Node[] = [];
    while (peek() !== ')') {
      out.push(expr());
      if (peek() === ',') eat(',');
    }
    eat(')');
    return out;
  };
  function postfix(): Node {
    let n = primary();
    for (;;) {
      if (peek() === '.') {
        eat('.');
        const name = eat();
        if (peek() === '(') n = { k: 'call', name, target: n, args: args() };
        else n = { k: 'member', obj: n, name };
      } else if (peek() === '[') {
        eat('[');
        const idx = expr();
        eat(']');
        n = { k: 'index', obj: n, idx };
      } else return n;
    }
  }
  function primary(): Node {
    const t = eat();
    if (t === '(') {
      const e = expr();
      eat(')');
      return e;
    }
    if (t === '[') {
      const items: Node[] = [];
      while (peek() !== ']') {
        items.push(expr());
        if (peek() === ',') eat(',');
      }
      eat(']');
      return { k: 'list', items };
    }
    if (/^\d/.test(t)) return { k: 'lit', v: Number(t) };
    if (t.startsWith('"') || t.startsWith("'"))
      return { k: 'lit', v: JSON.parse(t.startsWith("'") ? `"${t.slice(1, -1).replace(/"/g, '\\"')}"` : t) };
    if (t === 'true' || t === 'false') return { k: 'lit', v: t === 'true' };
    if (t === 'null') return { k: 'lit', v: null };
    if (/^[A-Za-z_]/.test(t)) {
      if (peek() === '(') return { k: 'call', name: t, args: args() };
      return { k: 'id', name: t };
    }
    throw new CelError(`unexpected "${t}" in rule "${src}"`);
  }
  const n = expr();
  if (i !== toks.length) throw new CelError(`unexpected "${toks[i]}" in rule "${src}"`);
  return n;
}

export function usesOldSelf(n: Node): boolean {
  return JSON.stringify(n).includes('"name":"oldSelf"');
}

const isObj = (v: unknown): v is Record<string, any> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Evaluates a parsed rule; throws CelError for missing keys and type errors like CEL does. */
export function evalCel(n: Node, env: Record<string, any>): any {
  const ev = (x: Node): any => evalCel(x, env);
  switch (n.k) {
    case 'lit':
      return n.v;
    case 'list':
      return n.items.map(ev);
    case 'id':
      if (!(n.name in env)) throw new CelError(`undeclared reference to '${n.name}'`);
      return env[n.name];
    case 'member': {
      const o = ev(n.obj);
      if (!isObj(o) || !(n.name in o)) throw new CelError(`no such key: ${n.name}`);
      return o[n.name];
    }
    case 'index': {
      const o = ev(n.obj);
      const k = ev(n.idx);
      if (Array.isArray(o) && typeof k === 'number' && k >= 0 && k < o.length) return o[k];
      if (isObj(o) && String(k) in o) return o[String(k)];
      throw new CelError(`no such key: ${String(k)}`);
    }
    case 'unary': {
      const a = ev(n.a);
      if (n.op === '!') {
        if (typeof a !== 'boolean') throw new CelError('no matching overload for !');
        return !a;
      }
      return -a;
    }
    case 'cond':
      return ev(n.c) ? ev(n.t) : ev(n.f);
    case 'bin': {
      if (n.op === '||' || n.op === '&&') {
        // CEL's commutative logic: an error on one side is absorbed when the other side decides.
        let a: any;
        let aErr: unknown;
        try {
          a = ev(n.a);
        } catch (e) {
          aErr = e;
        }
        if (n.op === '||' && a === true) return true;
        if (n.op === '&&' && a === false) return false;
        const b = ev(n.b);
        if (n.op === '||' && b === true) return true;
        if (n.op === '&&' && b === false) return false;
        if (aErr) throw aErr;
        return n.op === '&&';
      }
      const a = ev(n.a);
      const b = ev(n.b);
      switch (n.op) {
        case '==':
          return JSON.stringify(a) === JSON.stringify(b);
        case '!=':
          return JSON.stringify(a) !== JSON.stringify(b);
        case '<':
          return a < b;
        case '<=':
          return a <= b;
        case '>':
          return a > b;
        case '>=':
          return a >= b;
        case 'in':
          return Array.isArray(b) ? b.some((x) => JSON.stringify(x) === JSON.stringify(a)) : isObj(b) && String(a) in b;
        case '+':
          return Array.isArray(a) ? [...a, ...b] : a + b;
        case '-':
          return a - b;
        case '*':
          return a * b;
        case '/':
          if (b === 0) throw new CelError('division by zero');
          return Number.isInteger(a) && Number.isInteger(b) ? Math.trunc(a / b) : a / b;
        case '%':
          return a % b;
      }
      throw new CelError(`unknown operator ${n.op}`);
    }
    case 'call': {
      if (n.name === 'has' && !n.target) {
        const arg = n.args[0];
        if (arg?.k !== 'member') throw new CelError('has() needs a field selection');
        const o = ev(arg.obj);
        return isObj(o) && arg.name in o;
      }
      if ((n.name === 'all' || n.name === 'exists') && n.target && n.args[0]?.k === 'id') {
        const coll = ev(n.target);
        const items = Array.isArray(coll) ? coll : isObj(coll) ? Object.keys(coll) : [];
        const v = (n.args[0] as { name: string }).name;
        const test = (x: any): boolean => evalCel(n.args[1], { ...env, [v]: x }) === true;
        return n.name === 'all' ? items.every(test) : items.some(test);
      }
      const target = n.target ? ev(n.target) : undefined;
      const args = n.args.map(ev);
      const subject = n.target ? target : args[0];
      switch (n.name) {
        case 'size':
          if (typeof subject === 'string' || Array.isArray(subject)) return subject.length;
          if (isObj(subject)) return Object.keys(subject).length;
          throw new CelError('no matching overload for size');
        case 'int':
          return Math.trunc(Number(subject));
        case 'string':
          return String(subject);
        case 'startsWith':
          return String(target).startsWith(args[0]);
        case 'endsWith':
          return String(target).endsWith(args[0]);
        case 'contains':
          return String(target).includes(args[0]);
        case 'matches':
          return new RegExp(args[0]).test(String(target));
      }
      throw new CelError(`unknown function ${n.name}`);
    }
  }
}
