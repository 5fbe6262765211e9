// No runtime import cycle in product code (issue 13 part 8): a module's static value imports never lead back to it.
// Type-only imports (`import type`, or `import { type A, type B }`) and dynamic `import()` do not count: they run
// nothing at load time.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const PRODUCT = ['agent', 'collective', 'common', 'examples', 'operator', 'rendezvous', 'rpc', 'tensor'];

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (name === 'node_modules' || name === 'build') continue;
    if (statSync(p).isDirectory()) sources(p, out);
    else if (p.endsWith('.ts') && !p.endsWith('.test.ts') && !p.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** The relative modules `src` imports for their values at load time, as repository paths. */
function valueImports(file: string, src: string): string[] {
  const out: string[] = [];
  const re = /^(import|export)\s+(type\s+)?([^;]*?)\s+from\s+'(\.[^']+)'/gms;
  for (const m of src.matchAll(re)) {
    if (m[2] !== undefined) continue;
    const names = /^\{([^}]*)\}$/.exec(m[3]!.trim());
    if (m[1] === 'import' && names) {
      const list = names[1]!
        .split(',')
        .map((n) => n.trim())
        .filter((n) => n !== '');
      if (list.length > 0 && list.every((n) => n.startsWith('type '))) continue;
    }
    out.push(relative(ROOT, normalize(join(dirname(file), m[4]!.replace(/\.js$/, '.ts')))));
  }
  for (const m of src.matchAll(/^import\s+'(\.[^']+)'/gm)) {
    out.push(relative(ROOT, normalize(join(dirname(file), m[1]!.replace(/\.js$/, '.ts')))));
  }
  return out;
}

function cycles(graph: Map<string, string[]>): string[][] {
  // Tarjan's strongly connected components; a component of more than one module is a cycle.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  let next = 0;
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const comp: string[] = [];
      for (;;) {
        const w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
        if (w === v) break;
      }
      if (comp.length > 1) found.push(comp.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

test('the cycle finder sees a value cycle and ignores type-only imports', () => {
  const a = join(ROOT, 'x/a.ts');
  const b = join(ROOT, 'x/b.ts');
  const graph = new Map([
    ['x/a.ts', valueImports(a, "import { B } from './b.js';\n")],
    ['x/b.ts', valueImports(b, "import { A } from './a.js';\n")],
  ]);
  assert.deepEqual(cycles(graph), [['x/a.ts', 'x/b.ts']]);
  graph.set('x/b.ts', valueImports(b, "import type { A } from './a.js';\nimport { type C } from './a.js';\n"));
  assert.deepEqual(cycles(graph), []);
});

test('product code has no runtime import cycle', () => {
  const graph = new Map<string, string[]>();
  for (const dir of PRODUCT) {
    for (const file of sources(join(ROOT, dir))) {
      graph.set(relative(ROOT, file), valueImports(file, readFileSync(file, 'utf8')));
    }
  }
  assert.ok(graph.size > 50, `only ${graph.size} modules found under ${PRODUCT.join(', ')}`);
  assert.deepEqual(cycles(graph), []);
});
