#!/usr/bin/env node
// Bundles the operator (operator/index.ts and everything it imports, @kubernetes/client-node included) into one
// ES module with esbuild, written over tsc's dist/operator/index.js: `tensile operator` (dist/agent/cli.js, what
// the image and the chart run) and the package's `./operator` export load the bundle. Run after tsc (`npm run
// build` does).
//
// Why: importing @kubernetes/client-node loads every generated API (65 classes, three layers each) and all 717
// models of its serializer, about 60 MB of resident memory, while the operator calls four APIs and about twenty
// methods. The bundle keeps only what the operator reaches:
// - esbuild's tree shaking drops the API classes the operator never names (and the rest of the unused exports);
// - the generated API classes it does use (gen/apis/*Api.js, gen/types/ObservableAPI.js, ObjectParamAPI.js) keep
//   only the methods whose names the operator's sources call (`.name(` anywhere under operator/, not tests), and
//   their `...WithHttpInfo` twins: every other method is cut from the source as it loads;
// - the serializer's typeMap (gen/models/ObjectSerializer.js) keeps only the models those methods (de)serialise,
//   closed over their attribute types, so a pod still deserialises with Dates where client-node puts them.
// A model the typeMap no longer holds would pass through as plain JSON; a method cut by mistake would fail with
// "is not a function". The operator end-to-end tests run against the bundle through scripts/operator-bundle-hook.mjs
// (see there) to catch both.
// The cut follows the generated code's fixed layout (4-space class members, each `name(...) {` ... `}`); a layout
// it does not recognise fails the build rather than producing a half-cut class.
//
// Usage: node scripts/bundle-operator.mjs [--out dist/operator/index.js] [--metafile FILE]
import { build } from 'esbuild';
import { readFileSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: { out: { type: 'string', default: 'dist/operator/index.js' }, metafile: { type: 'string' } },
});
const OUT = resolve(ROOT, values.out);
// esbuild reports real paths (node_modules may be a symbolic link).
const CLIENT = realpathSync(join(ROOT, 'node_modules/@kubernetes/client-node/dist'));
const GEN = join(CLIENT, 'gen');

/** Every `.name(` in the operator's TypeScript sources: the method names the operator may call. */
function calledNames() {
  const names = new Set();
  const walk = (dir) => {
    for (const e of readdirSync(dir)) {
      const p = join(dir, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith('.ts') && !p.endsWith('.d.ts'))
        for (const m of readFileSync(p, 'utf8').matchAll(/\.([A-Za-z_$][\w$]*)\s*\(/g)) names.add(m[1]);
    }
  };
  walk(join(ROOT, 'operator'));
  return names;
}

const called = calledNames();
const keepMethod = (name) =>
  name === 'constructor' || called.has(name) || (name.endsWith('WithHttpInfo') && called.has(name.slice(0, -12)));

const METHOD = /^ {4}(?:async )?([A-Za-z_$][\w$]*)\(.*\) \{$/;

/**
 * Cuts the methods `keepMethod` rejects out of every `export class` of a generated module. Returns the new text
 * and the names kept per class. Throws on a class member line it does not recognise.
 */
function cutMethods(text, file) {
  const lines = text.split('\n');
  const out = [];
  const kept = new Map();
  let cls;
  let pendingDoc = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (cls === undefined) {
      const c = /^export class (\w+)\b.*\{$/.exec(line);
      if (c !== null) {
        cls = c[1];
        kept.set(cls, []);
      }
      out.push(line);
      continue;
    }
    if (line === '}') {
      if (pendingDoc.length > 0) throw new Error(`${file}:${i + 1}: doc comment without a member`);
      cls = undefined;
      out.push(line);
      continue;
    }
    if (line === '    /**') {
      let j = i;
      while (j < lines.length && lines[j] !== '     */') j++;
      pendingDoc = lines.slice(i, j + 1);
      i = j;
      continue;
    }
    const m = METHOD.exec(line);
    if (m === null) throw new Error(`${file}:${i + 1}: unexpected class member line: ${line.slice(0, 80)}`);
    let end = i + 1;
    while (end < lines.length && lines[end] !== '    }') {
      if (/^ {0,4}\S/.test(lines[end])) throw new Error(`${file}:${end + 1}: method ${m[1]} has no end`);
      end++;
    }
    if (keepMethod(m[1])) {
      out.push(...pendingDoc, ...lines.slice(i, end + 1));
      kept.get(cls).push(m[1]);
    }
    pendingDoc = [];
    i = end;
  }
  return { text: out.join('\n'), kept };
}

const CUT = new Set(['types/ObservableAPI.js', 'types/ObjectParamAPI.js']);
const isCut = (rel) => CUT.has(rel) || /^apis\/\w+Api\.js$/.test(rel);
const genRel = (path) => relative(GEN, path).split(sep).join('/');

/** The methods kept per class, per generated module (for the checks below). */
const cutReport = new Map();

// All model classes, loaded here (the build process, not the operator) to close the typeMap over attribute types.
const models = await import(pathToFileURL(join(GEN, 'models/all.js')).href);
const modelNames = new Set(Object.keys(models).filter((k) => typeof models[k]?.getAttributeTypeMap === 'function'));

function closeTypes(roots) {
  const keep = new Set();
  const visit = (type) => {
    for (const name of type.match(/[A-Za-z_$][\w$]*/g) ?? []) {
      if (!modelNames.has(name) || keep.has(name)) continue;
      keep.add(name);
      for (const a of models[name].getAttributeTypeMap()) visit(a.type);
    }
  };
  for (const r of roots) visit(r);
  return keep;
}

const slimClientNode = {
  name: 'slim-client-node',
  setup(b) {
    b.onLoad({ filter: /[\\/]@kubernetes[\\/]client-node[\\/]dist[\\/]gen[\\/].*\.js$/ }, (args) => {
      const rel = genRel(args.path);
      if (isCut(rel)) {
        const { text, kept } = cutMethods(readFileSync(args.path, 'utf8'), rel);
        cutReport.set(rel, kept);
        return { contents: text, loader: 'js', resolveDir: dirname(args.path) };
      }
      if (rel === 'models/ObjectSerializer.js') {
        const keep = closeTypes(preRoots);
        const text = readFileSync(args.path, 'utf8');
        const start = text.indexOf('let typeMap = {\n');
        const end = text.indexOf('\n};\n', start);
        if (start < 0 || end < 0) throw new Error(`${rel}: no typeMap literal found`);
        const entries = text.slice(start + 'let typeMap = {\n'.length, end).split('\n');
        const kept = entries.filter((l) => {
          const m = /^ {4}"(\w+)": (\w+),?$/.exec(l);
          if (m === null) throw new Error(`${rel}: unexpected typeMap line: ${l}`);
          return keep.has(m[1]);
        });
        typeMapKept = kept.length;
        typeMapAll = entries.length;
        const body = kept.map((l) => l.replace(/,?$/, ',')).join('\n');
        return {
          contents: `${text.slice(0, start)}let typeMap = {\n${body}\n};\n${text.slice(end + 4)}`,
          loader: 'js',
          resolveDir: dirname(args.path),
        };
      }
      return undefined;
    });
  },
};

// Pre-pass: the model names the kept methods of the used API modules (de)serialise. Which API modules are used is
// known only after bundling, so this takes every API module's kept methods (cheap: string scan, no bundling).
const preRoots = new Set();
for (const f of readdirSync(join(GEN, 'apis'))) {
  if (!/^\w+Api\.js$/.test(f)) continue;
  const { text } = cutMethods(readFileSync(join(GEN, 'apis', f), 'utf8'), `apis/${f}`);
  for (const m of text.matchAll(/"([A-Za-z_$][\w$<>{}[\]:;| ]*)"/g)) preRoots.add(m[1]);
}
let typeMapKept = 0;
let typeMapAll = 0;

const result = await build({
  entryPoints: [join(ROOT, 'operator/index.ts')],
  outfile: OUT,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // pino runs its transports in worker threads that load files by path: it stays a package import.
  external: ['pino'],
  // Bundled CommonJS dependencies (prom-client, node-fetch, ...) call require().
  banner: {
    js: "import { createRequire as __tensileCreateRequire } from 'node:module';\nconst require = __tensileCreateRequire(import.meta.url);",
  },
  plugins: [slimClientNode],
  metafile: true,
  logLevel: 'warning',
  allowOverwrite: true,
});
if (values.metafile !== undefined) writeFileSync(values.metafile, JSON.stringify(result.metafile));
// tsc's source map described the file this one replaces.
rmSync(`${OUT}.map`, { force: true });

// Checks: the typeMap was rewritten, and each used API class kept some methods (none: the cut misread the layout).
const out = readFileSync(OUT, 'utf8');
const problems = [];
if (typeMapKept === 0) problems.push('the typeMap was not rewritten');
for (const cls of ['ObjectCoreV1Api', 'ObjectAppsV1Api', 'ObjectCoordinationV1Api', 'ObjectCustomObjectsApi']) {
  const kept = cutReport.get('types/ObjectParamAPI.js')?.get(cls) ?? [];
  if (kept.length < 2) problems.push(`${cls} kept no methods`);
}
if (problems.length > 0) {
  console.error(`bundle-operator: ${problems.join('; ')}`);
  process.exit(1);
}
console.error(
  `bundle-operator: ${relative(ROOT, OUT)} ${(out.length / 1e6).toFixed(1)} MB; client-node models in the typeMap ${typeMapKept}/${typeMapAll}`,
);
