// Allreduce benchmark: tensile's TCP backend vs gloo (Debian PyTorch through torchrun), side by side in one run, world
// sizes 2 and 4, 4 KB to 64 MB, plus single-stream loopback TCP ceilings for Node and Python, and tensile's same-host
// Unix-socket transport against its own loopback TCP transport (busbw, 2 ranks, ≥ 1 MB).
// Usage: node --import tsx bench/allreduce/run.ts [--worlds 2,4] [--sizes 4096,...]
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SIZES_BYTES } from './sizes.js';
import { freePort } from '../../common/free-port.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const root = fileURLToPath(new URL('../../', import.meta.url));
const children = new Set<ChildProcess>();
const killAll = (): void => {
  for (const c of children)
    if (c.exitCode === null && c.pid)
      try {
        process.kill(-c.pid, 'SIGKILL');
      } catch {
        c.kill('SIGKILL');
      }
};
process.on('exit', killAll);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}
const worlds = arg('--worlds', '2,4').split(',').map(Number);
const sizes = arg('--sizes', SIZES_BYTES.join(',')).split(',').map(Number);

/** Runs a command (own process group), returns stdout; rejects on non-zero exit or after timeoutMs. */
function run(cmd: string, args: string[], env: Record<string, string>, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    children.add(c);
    let out = '';
    let err = '';
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => {
      try {
        process.kill(-c.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
      reject(new Error(`${cmd} ${args.join(' ')} timed out after ${timeoutMs} ms\n${err.slice(-2000)}`));
    }, timeoutMs);
    c.on('exit', (code) => {
      clearTimeout(timer);
      children.delete(c);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}\n${err.slice(-2000)}`));
    });
  });
}

interface Row {
  sizeBytes: number;
  medianMs: number;
}
const parseRows = (out: string): Map<number, Row> => {
  const m = new Map<number, Row>();
  for (const line of out.split('\n')) {
    const i = line.indexOf('{"sizeBytes"');
    if (i >= 0) {
      const r = JSON.parse(line.slice(i)) as Row;
      m.set(r.sizeBytes, r);
    }
  }
  return m;
};
const parseGbps = (out: string): number => (JSON.parse(out.slice(out.indexOf('{'))) as { gbps: number }).gbps;

/**
 * Runs the n tensile ranks under one shell in one session, as torchrun runs gloo's ranks: with Linux autogroup
 * scheduling (sched_autogroup_enabled=1) each session is its own scheduling group, and ranks in separate sessions
 * measured about 2× slower on this loaded machine than ranks sharing one, which made the comparison unfair.
 */
async function tensile(
  n: number,
  extraEnv: Record<string, string> = {},
  sizesBytes = sizes,
): Promise<Map<number, Row>> {
  const port = await freePort();
  const worker = `${here}tensile-worker.ts`;
  // Rank r's output goes to fd 1 for rank 0 and to stderr otherwise; the shell fails if any rank fails.
  const script = [
    'pids=""',
    `for r in $(seq 0 ${n - 1}); do`,
    `  if [ "$r" = 0 ]; then RANK=$r LOCAL_RANK=$r "$NODE" --import tsx "$WORKER" & else RANK=$r LOCAL_RANK=$r "$NODE" --import tsx "$WORKER" 1>&2 & fi`,
    '  pids="$pids $!"',
    'done',
    'rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc',
  ].join('\n');
  const out = await run(
    '/bin/sh',
    ['-c', script],
    {
      NODE: process.execPath,
      WORKER: worker,
      WORLD_SIZE: String(n),
      MASTER_ADDR: '127.0.0.1',
      MASTER_PORT: String(port),
      BENCH_SIZES: sizesBytes.join(','),
      // One BLAS thread per rank, as gloo gets OMP_NUM_THREADS=1 below (the reduction then uses BLAS saxpy).
      TENSILE_BLAS_THREADS: '1',
      ...extraEnv,
    },
    120_000,
  );
  return parseRows(out);
}

async function gloo(n: number): Promise<Map<number, Row>> {
  const out = await run(
    '/usr/bin/torchrun',
    ['--standalone', '--nproc_per_node', String(n), '-r', '1', '-t', '1', `${here}gloo_bench.py`],
    { BENCH_SIZES: sizes.join(','), OMP_NUM_THREADS: '1', PYTHONUNBUFFERED: '1' },
    150_000,
  );
  return parseRows(out);
}

const fmt = (v: number): string => (v >= 100 ? v.toFixed(1) : v >= 1 ? v.toFixed(3) : v.toPrecision(3));
const human = (b: number): string => (b >= 1 << 20 ? `${b >> 20}MB` : `${b >> 10}KB`);
function figure(name: string, t: number, p: number, unit: string, op: '>=' | '<=', target: number): void {
  const ratio = t / p;
  const met = op === '>=' ? ratio >= target : ratio <= target;
  console.log(
    `figure=${name} tensile=${fmt(t)} peer=${fmt(p)} unit=${unit} ratio=${ratio.toFixed(3)} target=${op}${target} met=${met ? 'yes' : 'no'}`,
  );
}

async function main(): Promise<void> {
  const started = Date.now();
  const nodeGbps = parseGbps(
    await run(process.execPath, ['--import', 'tsx', `${here}loopback-node.ts`, String(512 << 20)], {}, 60_000),
  );
  const pyGbps = parseGbps(await run('/usr/bin/python3', [`${here}loopback.py`, String(512 << 20)], {}, 60_000));
  figure('loopback_tcp_single_stream', nodeGbps, pyGbps, 'GB/s', '>=', 0.5);
  for (const n of worlds) {
    const t = await tensile(n);
    const g = await gloo(n);
    const factor = (2 * (n - 1)) / n;
    for (const s of sizes) {
      const tr = t.get(s);
      const gr = g.get(s);
      if (!tr || !gr) {
        console.log(`# n=${n} size=${s}: missing result (tensile ${!!tr}, gloo ${!!gr})`);
        continue;
      }
      const busbw = (ms: number): number => ((s / (ms / 1e3)) * factor) / 1e9;
      if (s < 1 << 20)
        figure(`allreduce_latency_n${n}_${human(s)}`, tr.medianMs, gr.medianMs, 'ms', '<=', s <= 4096 ? 0.5 : 1);
      figure(
        `allreduce_busbw_n${n}_${human(s)}`,
        busbw(tr.medianMs),
        busbw(gr.medianMs),
        'GB/s',
        '>=',
        s >= 1 << 20 ? 1.5 : 1,
      );
    }
    if (t.has(64 << 20)) {
      const b = (((64 << 20) / (t.get(64 << 20)!.medianMs / 1e3)) * factor) / 1e9;
      console.log(
        `# n=${n}: tensile 64MB busbw is ${((100 * b) / nodeGbps).toFixed(0)}% of the Node single-stream loopback ceiling`,
      );
    }
  }
  // Same-host transport: Unix domain sockets (default) vs loopback TCP (TENSILE_TCP_UDS=0), tensile against itself.
  const udsSizes = sizes.filter((s) => s >= 1 << 20);
  if (udsSizes.length > 0) {
    const uds = await tensile(2, {}, udsSizes);
    const tcp = await tensile(2, { TENSILE_TCP_UDS: '0' }, udsSizes);
    for (const s of udsSizes) {
      const u = uds.get(s);
      const t = tcp.get(s);
      if (u && t)
        figure(
          `same_host_uds_vs_tcp_busbw_n2_${human(s)}`,
          s / u.medianMs / 1e6,
          s / t.medianMs / 1e6,
          'GB/s',
          '>=',
          1,
        );
    }
  }
  console.log(
    `# total ${((Date.now() - started) / 1000).toFixed(0)} s; figures are medians, taken on a shared, loaded 2-core machine`,
  );
}

main().catch((e: unknown) => {
  console.error(String((e as Error)?.stack ?? e));
  process.exitCode = 1;
});
