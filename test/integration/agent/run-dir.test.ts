// Without --log-dir the agent works in a temporary directory; what workers wrote into the default checkpoint
// directory must outlive the run (issue 13, item 9).

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { runTensile } from '../../helpers/cli.js';

const FIX = join(import.meta.dirname, '../../fixtures/workers');
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'tensile-rundir-test-'));
  dirs.push(d);
  return d;
};

describe('tensile run without --log-dir', () => {
  test('keeps the default checkpoint directory the workers wrote into and says where', async () => {
    const scratch = tmp();
    const res = await runTensile(['run', '--standalone', '--nproc-per-node', '2', join(FIX, 'checkpoint-writer.mjs')], {
      env: { TMPDIR: scratch },
    });
    assert.equal(res.code, 0, res.stderr);
    const m = /tensile: checkpoints kept in (\S+)/.exec(res.stderr);
    assert.ok(m, `the agent names the kept directory:\n${res.stderr}`);
    const kept = m[1] as string;
    assert.ok(kept.startsWith(scratch), `${kept} is under the temporary directory ${scratch}`);
    assert.deepEqual(readdirSync(kept).sort(), ['rank-0.ckpt', 'rank-1.ckpt']);
    assert.equal(readFileSync(join(kept, 'rank-1.ckpt'), 'utf8'), 'state of rank 1\n');
    // The per-attempt folders (nothing the user asked for) are gone; the checkpoints are all that is left.
    const runDir = join(kept, '..');
    assert.deepEqual(readdirSync(runDir), ['checkpoints']);
    const lines = res.stderr.trim().split('\n');
    assert.match(lines[lines.length - 1] as string, /checkpoints kept in/, 'it is the last line');
  });

  test('removes the temporary directory when the workers wrote nothing into it', async () => {
    const scratch = tmp();
    const out = tmp();
    const res = await runTensile(['run', '--standalone', '--nproc-per-node', '2', join(FIX, 'env-dump.mjs')], {
      env: { TMPDIR: scratch, OUT_DIR: out },
    });
    assert.equal(res.code, 0, res.stderr);
    assert.doesNotMatch(res.stderr, /kept in/);
    assert.deepEqual(
      readdirSync(scratch).filter((n) => n.startsWith('tensile-')),
      [],
      'no run directory left behind',
    );
    assert.ok(existsSync(join(out, '0-0.json')));
  });
});
