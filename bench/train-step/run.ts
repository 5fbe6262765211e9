// bench/train-step: MLP training steps per second, tensile vs PyTorch CPU (Debian's torch 1.13, OpenBLAS), side by side.
//
// Same model (784-512-256-10), batch 64, SGD with momentum, cross-entropy, one thread each (OMP_NUM_THREADS=1,
// OPENBLAS_NUM_THREADS=1, torch.set_num_threads(1)). Figures (median of --repeats runs, sides interleaved):
//   train_step_single   steps/s, one process
//   train_step_ddp2     steps/s, DDP over 2 workers (PyTorch: torchrun + gloo; tensile: tcp process group)
//   ddp_overlap         DDP step time ÷ step time of the same 2 processes without communication (lower is better)
//
// Usage: npm run bench -- train-step [--repeats 3] [--steps 100]

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { freePort } from '../../common/free-port.js';
import { withTimeout } from '../../common/timeout.js';
import { figure } from '../lib/figures.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const PYTHON = '/usr/bin/python3';
const TORCHRUN = '/usr/bin/torchrun';
const RUN_TIMEOUT_MS = 180_000;

const argv = process.argv.slice(2);
const opt = (name: string, def: number): number => {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = Number(argv[i + 1]);
  if (!Number.isInteger(v) || v < 1) {
    console.error(`--${name} ${argv[i + 1]}: expected an integer ≥ 1`);
    process.exit(2);
  }
  return v;
};
const repeats = opt('repeats', 3);
const steps = opt('steps', 100);
const warmup = Math.max(5, Math.floor(steps / 10));

const THREAD_ENV = { OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1', MKL_NUM_THREADS: '1' };

interface Result {
  msPerStep: number;
  stepsPerSec: number;
}

const live = new Set<number>();
function killAll(): void {
  for (const pid of live) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}
process.on('exit', killAll);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

/** Runs commands as one group (own process groups), returns the first JSON line printed by any of them. */
async function runGroup(
  cmds: { cmd: string; args: string[]; env: NodeJS.ProcessEnv }[],
  what: string,
): Promise<Result> {
  let out = '';
  const exits = cmds.map(
    ({ cmd, args, env }) =>
      new Promise<number | null>((resolve) => {
        const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...THREAD_ENV, ...env }, detached: true });
        if (child.pid !== undefined) live.add(child.pid);
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (out += d.toString()));
        child.on('close', (code) => {
          if (child.pid !== undefined) live.delete(child.pid);
          resolve(code);
        });
      }),
  );
  const codes = await withTimeout(Promise.all(exits), RUN_TIMEOUT_MS, what, () => {
    killAll();
    return new Error(`${what}: timed out after ${RUN_TIMEOUT_MS} ms\n${out}`);
  });
  const line = out.split('\n').find((l) => /\{.*"msPerStep"/.test(l));
  if (codes.some((c) => c !== 0) || line === undefined)
    throw new Error(`${what} failed (exit ${codes.join(',')}):\n${out}`);
  return JSON.parse(line.slice(line.indexOf('{'))) as Result;
}

const stepArgs = ['--steps', String(steps), '--warmup', String(warmup), '--batch', '64'];

async function torchRun(mode: 'single' | 'ddp' | 'local'): Promise<Result> {
  const script = 'bench/train-step/torch_step.py';
  if (mode === 'single')
    return runGroup([{ cmd: PYTHON, args: [script, '--mode', mode, ...stepArgs], env: {} }], `pytorch ${mode}`);
  // Debian's torchrun 1.13 under Python 3.11 crashes with the default --redirects/--tee 0 (IntFlag iteration
  // no longer yields NONE); `-r 1 -t 1` avoids that code path.
  // `--standalone` always binds port 29400, which other jobs on a shared machine may hold: use a free port.
  const port = await freePort();
  const rdzv = [
    '--nnodes',
    '1',
    '--rdzv_backend',
    'c10d',
    '--rdzv_endpoint',
    `127.0.0.1:${port}`,
    '--rdzv_id',
    'bench',
  ];
  return runGroup(
    [
      {
        cmd: TORCHRUN,
        args: [...rdzv, '--nproc_per_node', '2', '-r', '1', '-t', '1', script, '--mode', mode, ...stepArgs],
        env: {},
      },
    ],
    `pytorch ${mode}`,
  );
}

async function tensileRun(mode: 'single' | 'ddp' | 'local'): Promise<Result> {
  const node = [process.execPath, '--import', 'tsx', 'bench/train-step/worker.ts', '--mode', mode, ...stepArgs];
  if (mode === 'single') return runGroup([{ cmd: node[0]!, args: node.slice(1), env: {} }], `tensile ${mode}`);
  const port = await freePort();
  const env = (rank: number): NodeJS.ProcessEnv => ({
    RANK: String(rank),
    LOCAL_RANK: String(rank),
    WORLD_SIZE: '2',
    MASTER_ADDR: '127.0.0.1',
    MASTER_PORT: String(port),
  });
  return runGroup(
    [0, 1].map((r) => ({ cmd: node[0]!, args: node.slice(1), env: env(r) })),
    `tensile ${mode}`,
  );
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main(): Promise<void> {
  for (const [what, path] of [
    ['PyTorch (apt-get install python3-torch)', PYTHON],
    ['torchrun (python3-torch)', TORCHRUN],
  ] as const) {
    if (!existsSync(path)) {
      console.error(`bench/train-step: ${what} not found at ${path}`);
      process.exit(2);
    }
  }
  const res: Record<string, number[]> = {};
  const add = (k: string, v: number): void => {
    (res[k] ??= []).push(v);
  };
  for (let r = 0; r < repeats; r++) {
    for (const mode of ['single', 'ddp', 'local'] as const) {
      // Alternate which side goes first so that drifting background load does not favour one.
      const order = r % 2 === 0 ? (['pytorch', 'tensile'] as const) : (['tensile', 'pytorch'] as const);
      for (const side of order) {
        const out = side === 'pytorch' ? await torchRun(mode) : await tensileRun(mode);
        add(`${side}:${mode}:sps`, out.stepsPerSec);
        add(`${side}:${mode}:ms`, out.msPerStep);
        console.error(`# run ${r + 1}/${repeats} ${side} ${mode}: ${out.msPerStep.toFixed(2)} ms/step`);
      }
    }
  }
  const m = (k: string): number => median(res[k]!);
  figure('train_step_single', m('tensile:single:sps'), m('pytorch:single:sps'), 'steps/s', '>=', 0.5);
  figure('train_step_ddp2', m('tensile:ddp:sps'), m('pytorch:ddp:sps'), 'steps/s', '>=', 0.5);
  figure(
    'ddp_overlap',
    m('tensile:ddp:ms') / m('tensile:local:ms'),
    m('pytorch:ddp:ms') / m('pytorch:local:ms'),
    'x',
    '<=',
    2,
  );
}

await main();
