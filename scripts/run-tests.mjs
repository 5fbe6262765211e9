#!/usr/bin/env node
// Runs the test suite with Node's built-in runner and the tsx loader.
// Usage: node scripts/run-tests.mjs [dir-or-file ...]   (default: test/ and *.test.ts beside code)
// Env: TEST_CONCURRENCY (files run at once, default 2), TEST_TIMEOUT_MS (per test, default 300000).
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const skipDirs = new Set(['node_modules', 'dist', '.git', 'build', '.carry']);

function collect(path, out) {
  const st = statSync(path);
  if (st.isFile()) {
    if (/\.test\.(ts|mts|js|mjs)$/.test(path)) out.push(path);
    return out;
  }
  for (const name of readdirSync(path).sort()) {
    if (skipDirs.has(name)) continue;
    collect(join(path, name), out);
  }
  return out;
}

const args = process.argv.slice(2);
const roots =
  args.length > 0 ? args : ['test', 'common', 'agent', 'rendezvous', 'collective', 'tensor', 'rpc', 'operator'];
const files = [];
for (const r of roots) {
  const p = join(root, r);
  try {
    collect(p, files);
  } catch (err) {
    if (args.length > 0) {
      console.error(`run-tests: ${r}: ${err.message}`);
      process.exit(2);
    }
  }
}
if (files.length === 0) {
  console.error(`run-tests: no test files under ${roots.join(', ')}`);
  process.exit(2);
}
const concurrency = process.env.TEST_CONCURRENCY ?? '2';
const timeout = process.env.TEST_TIMEOUT_MS ?? '300000';
const nodeArgs = [
  '--import',
  'tsx',
  '--test',
  `--test-concurrency=${concurrency}`,
  `--test-timeout=${timeout}`,
  ...files.map((f) => relative(root, f)),
];
const child = spawn(process.execPath, nodeArgs, { cwd: root, stdio: 'inherit' });
const forward = (sig) => child.kill(sig);
process.on('SIGINT', forward);
process.on('SIGTERM', forward);
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
