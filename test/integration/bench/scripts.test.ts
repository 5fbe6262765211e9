// scripts/run-bench.mjs and scripts/figures-table.mjs as a user runs them (no benchmark is run: they take minutes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const run = (script: string, ...args: string[]) =>
  spawnSync(process.execPath, [`scripts/${script}`, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });

test('npm run bench without a name lists every benchmark and exits 2', () => {
  const r = run('run-bench.mjs');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /run-bench: no benchmark named/);
  for (const name of ['allreduce', 'launch', 'rendezvous', 'rpc', 'train-step']) {
    assert.match(r.stderr, new RegExp(`^  ${name} +\\S`, 'm'), `${name} listed`);
  }
  assert.doesNotMatch(r.stderr, /^ {2}(lib|results) /m);
});

test('an unknown benchmark or a bad --save is named in the error', () => {
  const r = run('run-bench.mjs', 'nope');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown benchmark "nope"/);
  const s = run('run-bench.mjs', 'rpc', '--save', '../x');
  assert.equal(s.status, 2);
  assert.match(s.stderr, /--save "\.\.\/x": expected a machine name/);
});

test("the README's benchmark tables are what bench/results renders", () => {
  const r = run('figures-table.mjs', '--check');
  assert.equal(r.status, 0, r.stderr);
});
