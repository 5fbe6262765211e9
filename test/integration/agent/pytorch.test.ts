// Compatibility with PyTorch (Debian's python3-torch): unmodified torch.distributed scripts under `tensile run`.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { REPO_ROOT, runArgv, runTensile, scratchDirs, type CliResult, type RunFlags } from '../../helpers/cli.js';

const PYTHON = '/usr/bin/python3';
const hasTorch =
  existsSync(PYTHON) &&
  spawnSync(PYTHON, ['-c', 'import torch.distributed as d; assert d.is_gloo_available()']).status === 0;
const skip = hasTorch ? false : `PyTorch with gloo is not importable from ${PYTHON} (apt-get install python3-torch)`;
const tmp = scratchDirs('ddp');
const DDP = join(REPO_ROOT, 'examples/pytorch/ddp_snapshot.py');

/** `tensile run <flags> <tensileArgs> ddp_snapshot.py <script's flags>` with the system python; resolves when it exits. */
function runDdp(
  flags: RunFlags,
  tensileArgs: readonly string[],
  script: { epochs: number; failOnce?: number; hangOnce?: number; snapshot: string },
  timeoutMs = 180_000,
): Promise<CliResult> {
  const once = (flag: string, epoch?: number): string[] => (epoch === undefined ? [] : [flag, String(epoch)]);
  const args = [
    ...[DDP, '--epochs', String(script.epochs)],
    ...once('--fail-once', script.failOnce),
    ...once('--hang-once', script.hangOnce),
    ...['--snapshot', script.snapshot],
  ];
  return runTensile(runArgv(flags, [...tensileArgs, ...args]), { env: { PYTHON_EXEC: PYTHON }, timeoutMs });
}

describe('PyTorch scripts under tensile run', { skip }, () => {
  for (const nproc of [2, 4]) {
    test(`a gloo allreduce over env:// gives the right sum with ${nproc} workers`, async () => {
      const res = await runTensile(
        runArgv({ standalone: true, nproc }, [join(REPO_ROOT, 'examples/pytorch/allreduce.py')]),
        { env: { PYTHON_EXEC: PYTHON }, timeoutMs: 120_000 },
      );
      assert.equal(res.code, 0, res.stderr);
      const expected = (nproc * (nproc + 1)) / 2;
      for (let r = 0; r < nproc; r++) {
        assert.match(
          res.stdout,
          new RegExp(`:${r}\\] rank ${r}/${nproc} local_rank ${r} allreduce sum ${expected} expected ${expected}`),
        );
      }
    });
  }

  test('a DDP script that fails once resumes from its snapshot after the restart and finishes', async () => {
    const dir = tmp();
    const res = await runDdp({ standalone: true, nproc: 2, maxRestarts: 1 }, [], {
      epochs: 5,
      failOnce: 2,
      snapshot: join(dir, 'snap.pt'),
    });
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /epoch 1 loss [\d.]+ restart 0/);
    assert.doesNotMatch(
      res.stdout,
      /epoch 2 loss [\d.]+ restart 0/,
      'the failure stopped the first attempt at epoch 2',
    );
    assert.match(res.stdout, /rank 0: resumed from snapshot at epoch 2/);
    assert.match(res.stdout, /epoch 4 loss [\d.]+ restart 1/);
    assert.match(res.stdout, /done: final loss/);
    assert.match(res.stderr, /restarting the group \(restart 1\/1\)/);
  });

  test('a DDP script that hangs is caught by the watchdog through tensile_heartbeat.py: traceback dumped, group restarted', async () => {
    const dir = tmp();
    const logDir = join(dir, 'logs');
    const res = await runDdp({ standalone: true, nproc: 2, maxRestarts: 1, logDir }, ['--hang-timeout', '3'], {
      epochs: 4,
      hangOnce: 2,
      snapshot: join(dir, 'snap.pt'),
    });
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /rank 1 hangs at epoch 2/);
    assert.match(res.stderr, /worker hung: no step progress for \d+\.\d s; dumping its stacks and killing it/);
    assert.match(res.stdout, /rank 0: resumed from snapshot at epoch 2/);
    assert.match(res.stdout, /done: final loss/);
    const stacks = readdirSync(join(logDir, 'attempt_0'), { recursive: true })
      .map(String)
      .filter((f) => f.endsWith('stacks.txt'))
      .map((f) => readFileSync(join(logDir, 'attempt_0', f), 'utf8'))
      .join('\n');
    // faulthandler's dump: the thread's stack with the script's frames.
    assert.match(stacks, /File ".*ddp_snapshot\.py", line \d+ in main/);
  });

  test('the error file written by @record names the exception in the failure summary', async () => {
    const dir = tmp();
    const res = await runDdp({ nproc: 2 }, [], { epochs: 3, failOnce: 0, snapshot: join(dir, 's.pt') }, 120_000);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /rank\s+: 1 \(local_rank: 1\)/);
    assert.match(res.stderr, /RuntimeError: injected failure at epoch 0/);
  });
});
