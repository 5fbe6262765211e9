// The real agent with the real main job (examples/train/train.ts, the live worker side): a killed worker and a hung
// worker are each recovered live; the survivor is never restarted, 0 steps are lost, training reaches its target.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { loadAddon } from '../../../collective/native/addon.js';
import { REPO_ROOT, runArgv, runTensile, scratchDirs } from '../../helpers/cli.js';

const TRAIN = join(REPO_ROOT, 'examples/train/train.ts');
const SMALL = ['--small', '--epochs', '2', '--train-size', '2000', '--test-size', '400', '--log-every', '10'];
const tmp = scratchDirs('train-live');

async function trainWithChaos(
  chaos: string,
  extra: string[] = [],
): Promise<{ stdout: string; stderr: string; logs: string }> {
  const dir = tmp();
  const res = await runTensile(
    runArgv({ standalone: true, nproc: 2, maxRestarts: 2, logDir: join(dir, 'logs') }, [
      ...extra,
      TRAIN,
      ...SMALL,
      '--checkpoint-dir',
      join(dir, 'ckpt'),
      '--step-delay-ms',
      '5',
      '--chaos',
      chaos,
    ]),
    { timeoutMs: 240_000 },
  );
  assert.equal(res.code, 0, res.stderr.slice(-4000));
  return { ...res, logs: join(dir, 'logs') };
}

describe('the main job under the real agent, live', () => {
  test('a worker that SIGKILLs itself is replaced alone; 0 steps lost; the target accuracy is reached', async () => {
    const { stdout, stderr } = await trainWithChaos('1:25:kill');
    assert.match(stderr, /rank 1 failed; restarting it alone, the others keep running \(restart 1\/2\)/);
    assert.match(stderr, /live recovery \(worker-failure: rank 1 failed\) took \d+\.\d+ s, 0 steps lost/);
    assert.match(stdout, /\[[^\]]+:0\] live recovery: round 1, world size 2, rank 0: .*own state kept, 0 steps lost/);
    assert.match(stdout, /live recoveries: 1, steps lost in all: 0/);
    assert.match(stdout, /target \d+%: reached/);
    assert.doesNotMatch(stderr, /restarting the group/);
  });

  test('a worker that hangs is dumped and replaced alone by the watchdog; 0 steps lost', async () => {
    const { stdout, stderr, logs } = await trainWithChaos('1:25:hang', ['--hang-timeout', '2']);
    assert.match(stderr, /worker hung: no step progress for \d+\.\d s; dumping its stacks and killing it/);
    // The busy loop answers no report; the native stack dumper's V8 interrupt still names the function and line.
    // Without the addon the agent says that the worker runs no dumper, and that is all.
    if (loadAddon().ok) assertJsStack(stderr, logs);
    else assert.match(stderr, /hung worker: no JavaScript stack from its stack dumper/);
    assert.match(stderr, /live recovery \(hang: rank 1 hung\) took \d+\.\d+ s, 0 steps lost/);
    assert.match(stdout, /live recoveries: 1, steps lost in all: 0/);
    assert.match(stdout, /target \d+%: reached/);
  });
});

/** The hung worker's js-stack-pid<pid>.txt, named in the agent's log, shows injectChaos at train.ts's busy loop. */
function assertJsStack(stderr: string, logs: string): void {
  const written = /hung worker JavaScript stack written to (\S+js-stack-pid\d+\.txt)/.exec(stderr);
  assert.ok(written, `the log names the JavaScript stack file: ${stderr.slice(-3000)}`);
  const file = written[1] as string;
  assert.ok(file.startsWith(logs), `${file} is under the log dir ${logs}`);
  const loopLine = readFileSync(TRAIN, 'utf8').split('\n').indexOf("    case 'hang':") + 2;
  assert.ok(loopLine > 1, "train.ts has the chaos hang's loop");
  assert.match(
    readFileSync(file, 'utf8'),
    new RegExp(`^ {4}at injectChaos \\(${TRAIN.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${loopLine}:\\d+\\)`, 'm'),
  );
}
