// bench/launch: tensile run vs torchrun (Debian PyTorch) on the same trivial Python worker, side by side.
//   launch → last worker started (nproc 1, 4, 8); worker failure → all workers running again (nproc 4);
//   agent resident memory with 8 workers running.
// Usage: npm run build && npm run bench -- launch [--repeats N]
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, figure, median, repeatsFromArgv, ROOT } from '../lib/figures.js';

const WORKER = join(ROOT, 'bench/launch/worker.py');
const PYTHON = '/usr/bin/python3';
const TORCHRUN = '/usr/bin/torchrun';
const REPEATS = repeatsFromArgv();

type Launcher = 'tensile' | 'torchrun';

function command(l: Launcher, nproc: number, maxRestarts: number): [string, string[]] {
  if (l === 'tensile') {
    return [
      process.execPath,
      [
        CLI,
        'run',
        '--standalone',
        '--nproc-per-node',
        String(nproc),
        '--max-restarts',
        String(maxRestarts),
        '--log-level',
        'warn',
        WORKER,
      ],
    ];
  }
  return [
    TORCHRUN,
    [
      '--standalone',
      '--nproc_per_node',
      String(nproc),
      '--max_restarts',
      String(maxRestarts),
      '--monitor_interval',
      '0.1',
      '-r',
      '1',
      '-t',
      '1',
      WORKER,
    ],
  ];
}

interface Run {
  t0: number;
  out: string;
  rssKb: number | null;
  code: number | null;
}

function rssKb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function reaperRssKb(agentPid: number): number {
  // tensile's orphan reaper is a detached /bin/sh started by the agent: count it as part of the agent.
  let total = 0;
  for (const d of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === agentPid && readFileSync(`/proc/${d}/cmdline`, 'utf8').startsWith('/bin/sh'))
        total += rssKb(Number(d));
    } catch {
      // raced with exit
    }
  }
  return total;
}

async function launch(l: Launcher, nproc: number, mode: 'exit' | 'fail' | 'sleep', maxRestarts = 0): Promise<Run> {
  const out = mkdtempSync(join(tmpdir(), `bench-launch-${l}-`));
  const [cmd, args] = command(l, nproc, maxRestarts);
  const t0 = Date.now() / 1000;
  const child = spawn(cmd, args, {
    env: {
      ...process.env,
      BENCH_OUT: out,
      BENCH_MODE: mode,
      PYTHON_EXEC: PYTHON,
      OMP_NUM_THREADS: '1',
      LOGLEVEL: 'WARNING',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  let rss: number | null = null;
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  if (mode === 'sleep') {
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && readdirSync(out).filter((f) => f.startsWith('start-0-')).length < nproc) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 500));
    rss = rssKb(child.pid as number) + (l === 'tensile' ? reaperRssKb(child.pid as number) : 0);
  }
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(killer);
  if (code !== 0) throw new Error(`${l} exited ${code}: ${stderr.slice(-2000)}`);
  return { t0, out, rssKb: rss, code };
}

function starts(out: string, restart: number): number[] {
  return readdirSync(out)
    .filter((f) => f.startsWith(`start-${restart}-`))
    .map((f) => Number(readFileSync(join(out, f), 'utf8')));
}

async function main(): Promise<void> {
  for (const [what, path] of [
    ['build (npm run build)', CLI],
    ['torchrun (apt-get install python3-torch)', TORCHRUN],
  ] as const) {
    if (!existsSync(path)) throw new Error(`bench/launch needs ${what}: ${path} is missing`);
  }
  const cleanup: string[] = [];
  try {
    for (const nproc of [1, 4, 8]) {
      const res: Record<Launcher, number[]> = { tensile: [], torchrun: [] };
      for (let i = 0; i < REPEATS; i++) {
        for (const l of ['torchrun', 'tensile'] as const) {
          const r = await launch(l, nproc, 'exit');
          cleanup.push(r.out);
          res[l].push(Math.max(...starts(r.out, 0)) - r.t0);
        }
      }
      figure(`launch_to_all_started_nproc${nproc}`, median(res.tensile), median(res.torchrun), 's', '<=', 0.5);
    }
    const rec: Record<Launcher, number[]> = { tensile: [], torchrun: [] };
    for (let i = 0; i < REPEATS; i++) {
      for (const l of ['torchrun', 'tensile'] as const) {
        const r = await launch(l, 4, 'fail', 1);
        cleanup.push(r.out);
        const failAt = Number(readFileSync(join(r.out, 'fail'), 'utf8'));
        rec[l].push(Math.max(...starts(r.out, 1)) - failAt);
      }
    }
    figure('failure_to_all_running_nproc4', median(rec.tensile), median(rec.torchrun), 's', '<=', 0.5);
    const mem: Record<Launcher, number> = { tensile: 0, torchrun: 0 };
    for (const l of ['torchrun', 'tensile'] as const) {
      const r = await launch(l, 8, 'sleep');
      cleanup.push(r.out);
      mem[l] = (r.rssKb ?? 0) / 1024;
    }
    figure('agent_rss_8_workers', mem.tensile, mem.torchrun, 'MB', '<=', 0.33, 1);
  } finally {
    for (const d of cleanup) rmSync(d, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  console.error(`bench/launch: ${err.message}`);
  process.exit(1);
});
