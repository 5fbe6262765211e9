#!/usr/bin/env node
// Runs one side-by-side benchmark: `npm run bench -- <name> [args...]` runs bench/<name>/run.ts with the tsx loader,
// from the repository root, passing the remaining arguments through, and exits with its status.
//
//   --save <machine>   also keep the figure lines of this run in bench/results/<machine>.txt, replacing that
//                      benchmark's previous section there (nothing is written when the benchmark fails);
//                      scripts/figures-table.mjs renders those files into README.md's table.
//
// Without a name, or with an unknown one, it lists the benchmarks and exits 2.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, hostname, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mergeSection } from '../bench/lib/results.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BENCH = join(ROOT, 'bench');
const RESULTS = join(BENCH, 'results');
/** Benchmarks that launch the built CLI (dist/agent/cli.js). */
const NEEDS_BUILD = new Set(['launch', 'rendezvous', 'node-loss', 'live-recovery']);

function benchmarks() {
  return readdirSync(BENCH, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(BENCH, d.name, 'run.ts')))
    .map((d) => d.name)
    .sort();
}

/** The first line of each benchmark's header comment, for the listing. */
function describe(name) {
  const first = readFileSync(join(BENCH, name, 'run.ts'), 'utf8').split('\n')[0] ?? '';
  return first
    .replace(/^\/\/\s*/, '')
    .replace(new RegExp(`^bench/${name}:?\\s*`), '')
    .replace(/^(.{97}).{4,}$/, '$1…');
}

function usage(problem) {
  const names = benchmarks();
  const width = Math.max(...names.map((n) => n.length));
  console.error(`run-bench: ${problem}`);
  console.error('usage: npm run bench -- <name> [--save <machine>] [args passed to the benchmark...]');
  console.error('benchmarks:');
  for (const n of names) console.error(`  ${n.padEnd(width)}  ${describe(n)}`);
  process.exit(2);
}

const args = process.argv.slice(2);
const name = args.shift();
if (name === undefined || name === '--help' || name === '-h') usage('no benchmark named');
if (!/^[a-z0-9-]+$/.test(name) || !benchmarks().includes(name)) {
  usage(`unknown benchmark ${JSON.stringify(name)}`);
}
let save;
const i = args.indexOf('--save');
if (i >= 0) {
  save = args[i + 1];
  if (save === undefined || !/^[A-Za-z0-9._-]+$/.test(save)) {
    usage(
      `--save ${save === undefined ? '(missing)' : JSON.stringify(save)}: expected a machine name ([A-Za-z0-9._-]+)`,
    );
  }
  args.splice(i, 2);
}
if (NEEDS_BUILD.has(name) && !existsSync(join(ROOT, 'dist/agent/cli.js'))) {
  console.error(`run-bench: bench/${name} launches dist/agent/cli.js, which is missing: run \`npm run build\` first`);
  process.exit(2);
}

const started = new Date();
const load = loadavg()[0];
const child = spawn(process.execPath, ['--import', 'tsx', join(BENCH, name, 'run.ts'), ...args], {
  cwd: ROOT,
  stdio: ['inherit', save ? 'pipe' : 'inherit', 'inherit'],
});
const lines = [];
if (save) {
  let rest = '';
  child.stdout.on('data', (chunk) => {
    process.stdout.write(chunk);
    const parts = (rest + chunk.toString()).split('\n');
    rest = parts.pop() ?? '';
    lines.push(...parts);
  });
  child.stdout.on('end', () => rest && lines.push(rest));
}
// The benchmark cleans up its own processes on SIGINT/SIGTERM: pass them on and wait for it.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
child.on('error', (err) => {
  console.error(`run-bench: cannot start bench/${name}: ${err.message}`);
  process.exit(1);
});
child.on('close', (code, signal) => {
  if (code !== 0) {
    console.error(`run-bench: bench/${name} ${signal ? `was killed by ${signal}` : `exited with ${code}`}`);
    if (save) console.error(`run-bench: nothing saved to bench/results/${save}.txt`);
    process.exit(code ?? 1);
  }
  if (save)
    saveFigures(
      save,
      name,
      lines.filter((l) => l.startsWith('figure=')),
    );
});

/** Keeps this run's figure lines as benchmark `bench`'s section of bench/results/<machine>.txt (results.mjs). */
function saveFigures(machine, bench, figures) {
  const path = join(RESULTS, `${machine}.txt`);
  if (figures.length === 0) {
    console.error(`run-bench: bench/${bench} printed no figure lines; nothing saved to ${path}`);
    process.exit(1);
  }
  mkdirSync(RESULTS, { recursive: true });
  const gib = (totalmem() / 2 ** 30).toFixed(0);
  const newHeader = [
    `# machine: ${machine} (${hostname()}), ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${gib} GiB`,
    '# Figure lines saved by `npm run bench -- <name> --save <machine>`; one section per benchmark.',
  ];
  const stamp = started.toISOString().replace(/\.\d+Z$/, 'Z');
  const argText = args.length > 0 ? ` args=${args.join(' ')}` : '';
  const sectionLine = `## ${bench} ${stamp} load=${load.toFixed(1)}${argText}`;
  const old = existsSync(path) ? readFileSync(path, 'utf8') : undefined;
  writeFileSync(path, mergeSection(old, bench, sectionLine, figures, newHeader));
  console.error(`run-bench: ${figures.length} figure lines saved to bench/results/${machine}.txt`);
}
