import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  isAlive,
  runArgv,
  runTensile,
  scratchDirs,
  startTensile,
  waitFor,
  type TensileProcess,
} from '../../helpers/cli.js';

const FIX = join(import.meta.dirname, '../../fixtures/workers');
const procs: TensileProcess[] = [];
after(() => {
  for (const p of procs) p.kill('SIGKILL');
});
// Registered after the hook above, so it runs after it (node:test runs `after` hooks in order): the workers whose
// pids a dir holds are killed once their launchers are, then the dir is removed.
const tmp = scratchDirs('agent-test', (d) => {
  if (!existsSync(join(d, 'pids'))) return;
  for (const pid of readFileSync(join(d, 'pids'), 'utf8').split('\n').filter(Boolean).map(Number)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

const readEnv = (dir: string, rank: number, restart: number): Record<string, unknown> =>
  JSON.parse(readFileSync(join(dir, `${rank}-${restart}.json`), 'utf8')) as Record<string, unknown>;

describe('tensile run on one node', () => {
  test('gives each worker the torchrun environment and substitutes ${local_rank}', async () => {
    const out = tmp();
    const res = await runTensile(
      runArgv({ standalone: true, nproc: 3 }, [
        '--role',
        'trainer',
        join(FIX, 'env-dump.mjs'),
        '--shard=${local_rank}',
      ]),
      { env: { OUT_DIR: out, OMP_NUM_THREADS: undefined } },
    );
    assert.equal(res.code, 0, res.stderr);
    const ports = new Set<unknown>();
    for (let r = 0; r < 3; r++) {
      const env = readEnv(out, r, 0);
      assert.equal(env.RANK, String(r));
      assert.equal(env.LOCAL_RANK, String(r));
      assert.equal(env.GROUP_RANK, '0');
      assert.equal(env.ROLE_RANK, String(r));
      assert.equal(env.ROLE_NAME, 'trainer');
      assert.equal(env.LOCAL_WORLD_SIZE, '3');
      assert.equal(env.WORLD_SIZE, '3');
      assert.equal(env.GROUP_WORLD_SIZE, '1');
      assert.equal(env.ROLE_WORLD_SIZE, '3');
      assert.equal(env.MASTER_ADDR, '127.0.0.1');
      assert.match(String(env.MASTER_PORT), /^\d+$/);
      assert.equal(env.TORCHELASTIC_RESTART_COUNT, '0');
      assert.equal(env.TORCHELASTIC_MAX_RESTARTS, '0');
      assert.match(String(env.TORCHELASTIC_RUN_ID), /^[0-9a-f-]{36}$/);
      assert.equal(env.TORCHELASTIC_USE_AGENT_STORE, 'False');
      assert.match(String(env.TORCHELASTIC_ERROR_FILE), new RegExp(`attempt_0/${r}/error.json$`));
      assert.equal(env.OMP_NUM_THREADS, '1');
      assert.deepEqual(env.argv, [`--shard=${r}`]);
      ports.add(env.MASTER_PORT);
    }
    assert.equal(ports.size, 1, 'every worker sees the same MASTER_PORT');
    assert.match(res.stdout, /^\[[^\]:]+:0\] hello from rank 0$/m);
    assert.match(res.stdout, /^\[[^\]:]+:2\] hello from rank 2$/m);
    assert.match(res.stderr, /OMP_NUM_THREADS is not set; setting it to 1/);
  });

  test('takes flags from PET_ variables and lets explicit flags win', async () => {
    const out = tmp();
    const res = await runTensile(['run', '--nproc_per_node=2', join(FIX, 'env-dump.mjs')], {
      env: { OUT_DIR: out, PET_NPROC_PER_NODE: '4', PET_MAX_RESTARTS: '5', OMP_NUM_THREADS: '3' },
    });
    assert.equal(res.code, 0, res.stderr);
    assert.equal(readEnv(out, 1, 0).WORLD_SIZE, '2');
    assert.equal(readEnv(out, 1, 0).TORCHELASTIC_MAX_RESTARTS, '5');
    assert.equal(readEnv(out, 1, 0).OMP_NUM_THREADS, '3', 'a user-set OMP_NUM_THREADS is kept');
    assert.equal(existsSync(join(out, '2-0.json')), false);
  });

  test('restarts the whole group after a failure and increments TORCHELASTIC_RESTART_COUNT', async () => {
    const out = tmp();
    const res = await runTensile(
      ['run', '--standalone', '--nproc-per-node', '2', '--max-restarts', '2', join(FIX, 'env-dump.mjs')],
      { env: { OUT_DIR: out, FAIL_RANK: '1', FAIL_UNTIL_RESTART: '2' } },
    );
    assert.equal(res.code, 0, res.stderr);
    // Rank 1 fails on restarts 0 and 1 (rank 0 may be stopped before it writes); both run on restart 2.
    for (const restart of [0, 1, 2]) {
      assert.equal(readEnv(out, 1, restart).TORCHELASTIC_RESTART_COUNT, String(restart));
    }
    assert.equal(readEnv(out, 0, 2).TORCHELASTIC_RESTART_COUNT, '2');
    assert.equal(existsSync(join(out, '1-3.json')), false, 'no fourth attempt');
    assert.match(res.stderr, /restarting the group \(restart 1\/2\)/);
    assert.match(res.stderr, /restarting the group \(restart 2\/2\)/);
  });

  test('when restarts run out it exits 1 with a summary naming the root-cause rank, its error file and stderr', async () => {
    const out = tmp();
    const logDir = join(out, 'logs');
    const res = await runTensile(
      ['run', '--nproc-per-node', '2', '--max-restarts', '1', '--log-dir', logDir, join(FIX, 'env-dump.mjs')],
      { env: { OUT_DIR: out, FAIL_RANK: '1', FAIL_UNTIL_RESTART: '99', FAIL_CODE: '7', WRITE_ERROR_FILE: '1' } },
    );
    assert.equal(res.code, 1);
    assert.match(res.stderr, /FAILED: a worker failed after all 1 restart\(s\) were used/);
    assert.match(res.stderr, /Root Cause \(first observed failure\):[\s\S]*rank\s+: 1 \(local_rank: 1\)/);
    assert.match(res.stderr, /exitcode\s+: exit code 7/);
    assert.match(res.stderr, /message\s+: ValueError: bad batch/);
    assert.match(res.stderr, /\| about to fail on purpose/);
    assert.match(res.stderr, /error_file\s+: .*attempt_1\/1\/error.json/);
  });

  test('writes per-attempt, per-rank logs under --log-dir', async () => {
    const out = tmp();
    const logDir = join(out, 'logs');
    const res = await runTensile(
      runArgv({ nproc: 2, maxRestarts: 1, logDir }, ['-r', '3', join(FIX, 'env-dump.mjs')]),
      { env: { OUT_DIR: out, FAIL_RANK: '0' } },
    );
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(
      readdirSync(logDir).sort(),
      ['attempt_0', 'attempt_1', 'checkpoints'].filter((d) => existsSync(join(logDir, d))),
    );
    for (const attempt of ['attempt_0', 'attempt_1']) {
      assert.deepEqual(readdirSync(join(logDir, attempt)).sort(), ['0', '1']);
      assert.ok(existsSync(join(logDir, attempt, '1', 'stdout.log')));
    }
    // Attempt 0 was cut short by rank 0's failure; rank 0's own output and attempt 1 are complete.
    assert.match(readFileSync(join(logDir, 'attempt_0', '0', 'stderr.log'), 'utf8'), /about to fail on purpose/);
    assert.equal(readFileSync(join(logDir, 'attempt_1', '1', 'stdout.log'), 'utf8'), 'hello from rank 1\n');
    assert.match(readFileSync(join(logDir, 'attempt_1', '1', 'stderr.log'), 'utf8'), /stderr line from rank 1/);
    assert.doesNotMatch(res.stdout, /hello from rank/, '-r 3 redirects output to files only');
  });

  test('--local-ranks-filter shows only the chosen ranks on the console', async () => {
    const out = tmp();
    const res = await runTensile(
      ['run', '--nproc-per-node', '3', '--local-ranks-filter', '1', join(FIX, 'env-dump.mjs')],
      { env: { OUT_DIR: out } },
    );
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /hello from rank 1/);
    assert.doesNotMatch(res.stdout, /hello from rank [02]/);
    assert.equal(existsSync(join(out, '2-0.json')), true, 'filtered ranks still run');
  });

  test('forwards SIGTERM to workers, gives them the grace period and exits 143', async () => {
    const out = tmp();
    const p = startTensile(['run', '--nproc-per-node', '2', '--shutdown-timeout', '5', join(FIX, 'sleeper.mjs')], {
      env: { OUT_DIR: out, TERM_DELAY_MS: '300' },
      timeoutMs: 30_000,
    });
    procs.push(p);
    await waitFor(
      () => existsSync(join(out, 'pids')) && readFileSync(join(out, 'pids'), 'utf8').split('\n').length > 4,
      'workers to start',
    );
    p.kill('SIGTERM');
    const res = await p.result;
    assert.equal(res.code, 143, res.stderr);
    assert.ok(existsSync(join(out, '0.sigterm')) && existsSync(join(out, '1.sigterm')), 'both workers saw SIGTERM');
    for (const pid of readFileSync(join(out, 'pids'), 'utf8').split('\n').filter(Boolean).map(Number)) {
      assert.equal(isAlive(pid), false, `pid ${pid} is gone`);
    }
  });

  test('a worker that ignores SIGTERM is killed when the grace period ends', async () => {
    const out = tmp();
    const p = startTensile(['run', '--nproc-per-node', '1', '--shutdown-timeout', '0.5', join(FIX, 'sleeper.mjs')], {
      env: { OUT_DIR: out, IGNORE_TERM: '1' },
      timeoutMs: 30_000,
    });
    procs.push(p);
    await waitFor(() => existsSync(join(out, 'pids')), 'worker to start');
    p.kill('SIGINT');
    const res = await p.result;
    assert.equal(res.code, 130, res.stderr);
    const [pid] = readFileSync(join(out, 'pids'), 'utf8').split('\n').filter(Boolean).map(Number);
    assert.equal(isAlive(pid as number), false);
  });

  test('--metrics-port serves /healthz and Prometheus /metrics with worker starts and the state', async () => {
    const out = tmp();
    const p = startTensile(['run', '--nproc-per-node', '2', '--metrics-port', '0', join(FIX, 'sleeper.mjs')], {
      env: { OUT_DIR: out },
      timeoutMs: 30_000,
    });
    procs.push(p);
    await waitFor(() => /"port":\d+/.test(p.stderr()) && existsSync(join(out, 'pids')), 'metrics server and workers');
    const port = Number(/"port":(\d+)/.exec(p.stderr())?.[1]);
    await waitFor(
      async () =>
        (await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text())).includes('tensile_workers_running 2'),
      'two running workers in /metrics',
    );
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok', state: 'RUNNING' });
    const metrics = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
    assert.match(metrics, /^tensile_worker_starts_total 2$/m);
    assert.match(metrics, /^tensile_agent_state\{state="RUNNING"\} 1$/m);
    assert.match(metrics, /^tensile_agent_state\{state="FAILED"\} 0$/m);
    p.kill('SIGTERM');
    assert.equal((await p.result).code, 143);
  });

  test('when the agent is SIGKILLed its workers and their children die too', async () => {
    const out = tmp();
    const p = startTensile(['run', '--nproc-per-node', '2', join(FIX, 'sleeper.mjs')], {
      env: { OUT_DIR: out },
      timeoutMs: 30_000,
    });
    procs.push(p);
    await waitFor(
      () => existsSync(join(out, 'pids')) && readFileSync(join(out, 'pids'), 'utf8').split('\n').length > 4,
      'workers to start',
    );
    const pids = readFileSync(join(out, 'pids'), 'utf8').split('\n').filter(Boolean).map(Number);
    assert.equal(pids.length, 4);
    p.child.kill('SIGKILL');
    await p.result;
    await waitFor(() => pids.every((pid) => !isAlive(pid)), `pids ${pids.join(',')} to die`, 10_000);
  });
});

describe('tensile run rejects bad input with exit code 2', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['nproc 0', ['--nproc-per-node', '0', 'x.py'], /--nproc-per-node '0': must be ≥ 1/],
    [
      'nproc garbage',
      ['--nproc-per-node', 'many', 'x.py'],
      /--nproc-per-node 'many': expected a positive integer, 'cpu', 'gpu' or 'auto'/,
    ],
    ['nnodes min > max', ['--nnodes', '4:2', 'x.py'], /--nnodes '4:2': min \(4\) must be ≤ max \(2\)/],
    ['unknown flag', ['--frobnicate', 'x.py'], /unknown option '--frobnicate'/],
    ['missing script', ['--nproc-per-node', '2'], /missing the training script/],
    ['script that does not exist', ['/nonexistent/train.py'], /script '\/nonexistent\/train.py' does not exist/],
    ['bad redirects', ['-r', '7', 'x.py'], /--redirects '7': expected 0-3/],
    ['bad PET_ variable', ['x.py'], /PET_MAX_RESTARTS '-1': expected an integer from 0/],
    ['bad rdzv conf', ['--rdzv-conf', 'join_timeout', 'x.py'], /--rdzv-conf 'join_timeout'/],
    ['etcd without endpoint', ['--nnodes', '1:2', 'x.py'], /needs --rdzv-endpoint/],
    [
      'bad rdzv endpoint',
      ['--rdzv-backend', 'etcd', '--rdzv-endpoint', 'localhost:99999', '--nnodes', '1:2', join(FIX, 'env-dump.mjs')],
      /--rdzv-endpoint "localhost:99999": "localhost:99999" is not host:port/,
    ],
    ['-m with --no-python', ['-m', '--no-python', 'x'], /cannot be used together/],
  ];
  for (const [name, args, expected] of cases) {
    test(`${name} is a usage error that names the value`, async () => {
      const env = name === 'bad PET_ variable' ? { PET_MAX_RESTARTS: '-1' } : {};
      const res = await runTensile(['run', ...args], { env, timeoutMs: 20_000 });
      assert.equal(res.code, 2, res.stderr);
      assert.match(res.stderr, expected);
    });
  }

  for (const [flag, host, says] of [
    ['master-port', '127.0.0.1', 'already in use'],
    ['metrics-port', '0.0.0.0', 'cannot listen'],
  ] as const) {
    test(`a ${flag.replace('-', ' ')} already in use is a usage error`, async () => {
      const { createServer } = await import('node:net');
      const srv = createServer();
      await new Promise<void>((r) => srv.listen(0, host, () => r()));
      const port = (srv.address() as { port: number }).port;
      try {
        const res = await runTensile(['run', `--${flag}`, String(port), join(FIX, 'env-dump.mjs')], {
          env: { OUT_DIR: tmp() },
        });
        assert.equal(res.code, 2);
        assert.match(res.stderr, new RegExp(`--${flag} ${port}: ${says}`));
      } finally {
        srv.close();
      }
    });
  }
});
