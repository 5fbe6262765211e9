// Allreduce benchmark: tensile's tcp backend vs gloo (PyTorch through torchrun), side by side in one run, world sizes
// 2, 4 and 8, 4 KB to 64 MB. tensile runs on its default data plane (the native shared-memory plane when every rank
// is on this host and the addon is built) and, for the native-vs-JS comparison, again with
// TENSILE_COLLECTIVE_TRANSPORT=js. Also: single-stream loopback TCP ceilings for Node and Python, single-thread
// memcpy bandwidth (the ceiling of a shared-memory allreduce, which moves every byte through memory several times)
// and, on the JS plane, Unix-socket against loopback-TCP transport (busbw, 2 ranks, ≥ 1 MB).
//
// Net rows: the native socket plane across hosts, simulated on this machine with TENSILE_HOST_ID (all traffic on
// loopback, so these are not network figures): world 2 as 2 hosts × 1 rank (flat) and world 4 as 2 hosts × 2 ranks
// (hierarchical: shm within a host, sockets between the hosts' leaders), against gloo at the same world size and
// against tensile's JS path with the same simulated hosts (`net_vs_js`), and the hierarchical path against the flat
// socket ring (TENSILE_NET_HIERARCHY=0) where a host runs several ranks (`net_hier_vs_flat`).
//
// Usage: node --import tsx bench/allreduce/run.ts [--worlds 2,4,8] [--sizes 4096,...] [--no-js] [--no-uds]
//        [--net ab,aabb | --no-net]   (--net: one letter per rank naming its simulated host)
// Packed (a machine without Node.js, e.g. a 16-core GPU host with PyTorch): bench/packed.sh --pack here, then
// bench/packed.sh allreduce there; this file then runs as compiled JavaScript without tsx.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { figure } from '../lib/figures.js';
import { SIZES_BYTES } from './sizes.js';
import { freePort } from '../../common/free-port.js';

const here = fileURLToPath(new URL('.', import.meta.url));
// Compiled (packed mode): sibling .js files run with plain node; from source: .ts files through tsx.
const compiled = import.meta.url.endsWith('.js');
const ext = compiled ? 'js' : 'ts';
const nodeArgs = compiled ? [] : ['--import', 'tsx'];
const root = fileURLToPath(new URL(compiled ? '../../../' : '../../', import.meta.url));
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
const worlds = arg('--worlds', '2,4,8').split(',').map(Number);
const sizes = arg('--sizes', SIZES_BYTES.join(',')).split(',').map(Number);
const withJs = !process.argv.includes('--no-js');
const withUds = !process.argv.includes('--no-uds');
const netLayouts = process.argv.includes('--no-net') ? [] : arg('--net', 'ab,aabb').split(',');
for (const l of netLayouts)
  if (!/^[a-z]{2,64}$/.test(l) || new Set(l).size < 2)
    throw new Error(`--net ${l}: expected one lowercase letter per rank naming at least 2 simulated hosts, e.g. aabb`);
for (const v of [...worlds, ...sizes])
  if (!Number.isSafeInteger(v) || v <= 0) throw new Error(`--worlds/--sizes: ${v}: expected positive integers`);

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
    c.on('error', (e) => {
      clearTimeout(timer);
      children.delete(c);
      reject(e);
    });
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
  dataPlane?: string;
}
const parseRows = (out: string): Map<number, Row> => {
  const m = new Map<number, Row>();
  // torchrun's tee may glue other ranks' output onto rank 0's line: take every flat {"sizeBytes"...} object.
  for (const hit of out.matchAll(/\{"sizeBytes"[^{}]*\}/g)) {
    const r = JSON.parse(hit[0]) as Row;
    m.set(r.sizeBytes, r);
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
  const worker = `${here}tensile-worker.${ext}`;
  // Rank r's output goes to fd 1 for rank 0 and to stderr otherwise; the shell fails if any rank fails.
  const script = [
    'pids=""',
    `for r in $(seq 0 ${n - 1}); do`,
    // BENCH_HOSTS (optional): one letter per rank, its simulated host (TENSILE_HOST_ID).
    '  if [ -n "$BENCH_HOSTS" ]; then export TENSILE_HOST_ID=$(printf %s "$BENCH_HOSTS" | cut -c$((r+1))); fi',
    `  if [ "$r" = 0 ]; then RANK=$r LOCAL_RANK=$r "$NODE" $NODE_ARGS "$WORKER" & else RANK=$r LOCAL_RANK=$r "$NODE" $NODE_ARGS "$WORKER" 1>&2 & fi`,
    '  pids="$pids $!"',
    'done',
    'rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc',
  ].join('\n');
  const out = await run(
    '/bin/sh',
    ['-c', script],
    {
      NODE: process.execPath,
      NODE_ARGS: nodeArgs.join(' '),
      WORKER: worker,
      WORLD_SIZE: String(n),
      MASTER_ADDR: '127.0.0.1',
      MASTER_PORT: String(port),
      BENCH_SIZES: sizesBytes.join(','),
      // One BLAS thread per rank, as gloo gets OMP_NUM_THREADS=1 below (the JS plane's sums then use BLAS saxpy).
      TENSILE_BLAS_THREADS: '1',
      ...extraEnv,
    },
    300_000,
  );
  return parseRows(out);
}

function torchrun(): { cmd: string; args: string[] } {
  for (const p of ['/usr/bin/torchrun', '/usr/local/bin/torchrun']) if (existsSync(p)) return { cmd: p, args: [] };
  return { cmd: 'python3', args: ['-m', 'torch.distributed.run'] };
}

async function gloo(n: number): Promise<Map<number, Row>> {
  const t = torchrun();
  const out = await run(
    t.cmd,
    [...t.args, '--standalone', '--nproc_per_node', String(n), '-r', '1', '-t', '1', `${here}gloo_bench.py`],
    { BENCH_SIZES: sizes.join(','), OMP_NUM_THREADS: '1', PYTHONUNBUFFERED: '1' },
    300_000,
  );
  return parseRows(out);
}

/** Single-thread memcpy bandwidth (GB/s, bytes copied per second) of 64 MB TypedArray.set (a libc memcpy). */
function memcpyGbps(): number {
  const bytes = 64 << 20;
  const a = new Uint8Array(bytes).fill(1);
  const b = new Uint8Array(bytes);
  b.set(a);
  const times: number[] = [];
  for (let i = 0; i < 9; i++) {
    const t0 = process.hrtime.bigint();
    b.set(a);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  times.sort((x, y) => x - y);
  return bytes / times[times.length >> 1]! / 1e9;
}

const human = (b: number): string => (b >= 1 << 20 ? `${b >> 20}MB` : `${b >> 10}KB`);
const digits = (v: number): number => (v < 0.01 ? 5 : v < 1 ? 4 : 3);

async function main(): Promise<void> {
  const started = Date.now();
  const nodeGbps = parseGbps(
    await run(process.execPath, [...nodeArgs, `${here}loopback-node.${ext}`, String(512 << 20)], {}, 60_000),
  );
  const pyGbps = parseGbps(await run('python3', [`${here}loopback.py`, String(512 << 20)], {}, 60_000));
  figure('loopback_tcp_single_stream', nodeGbps, pyGbps, 'GB/s', '>=', 0.5);
  const memcpy = memcpyGbps();
  console.log(
    `# single-thread memcpy: ${memcpy.toFixed(2)} GB/s (64 MB TypedArray.set); cores: ${availableParallelism()}`,
  );
  const glooRuns = new Map<number, Map<number, Row>>();
  const glooOf = async (n: number): Promise<Map<number, Row>> => {
    let g = glooRuns.get(n);
    if (!g) glooRuns.set(n, (g = await gloo(n)));
    return g;
  };
  for (const n of worlds) {
    const t = await tensile(n);
    const g = await glooOf(n);
    const js = withJs ? await tensile(n, { TENSILE_COLLECTIVE_TRANSPORT: 'js' }) : new Map<number, Row>();
    const plane = [...t.values()][0]?.dataPlane ?? '?';
    console.log(`# n=${n}: tensile data plane ${plane}${withJs ? '; native_vs_js figures compare it with js' : ''}`);
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
        figure(`allreduce_latency_n${n}_${human(s)}`, tr.medianMs, gr.medianMs, 'ms', '<=', s <= 4096 ? 0.5 : 1, 4);
      const bt = busbw(tr.medianMs);
      const bg = busbw(gr.medianMs);
      figure(
        `allreduce_busbw_n${n}_${human(s)}`,
        bt,
        bg,
        'GB/s',
        '>=',
        s >= 1 << 20 ? 1.5 : 1,
        digits(Math.min(bt, bg)),
      );
      const jr = js.get(s);
      if (jr && plane === 'shm') {
        const bj = busbw(jr.medianMs);
        figure(`allreduce_native_vs_js_busbw_n${n}_${human(s)}`, bt, bj, 'GB/s', '>=', 1, digits(Math.min(bt, bj)));
      }
    }
    const big = t.get(64 << 20);
    if (big) {
      const b = (((64 << 20) / (big.medianMs / 1e3)) * factor) / 1e9;
      console.log(
        `# n=${n}: tensile (${plane}) 64MB busbw ${b.toFixed(2)} GB/s is ${((100 * b) / memcpy).toFixed(0)}% of ` +
          `single-thread memcpy and ${((100 * b) / nodeGbps).toFixed(0)}% of Node's single-stream loopback TCP`,
      );
    }
  }
  for (const hosts of netLayouts) {
    const n = hosts.length;
    const perHost = [...new Set(hosts)].map((h) => [...hosts].filter((x) => x === h).length);
    const shape = perHost.every((c) => c === perHost[0]) ? `${perHost.length}x${perHost[0]}` : hosts;
    const t = await tensile(n, { BENCH_HOSTS: hosts, TENSILE_COLLECTIVE_TRANSPORT: 'native' });
    const g = await glooOf(n);
    // The JS path with every pair on loopback TCP (TENSILE_TCP_UDS=0: ranks of one simulated host would otherwise
    // use Unix sockets), as the socket plane's pairs are.
    const js = withJs
      ? await tensile(n, { BENCH_HOSTS: hosts, TENSILE_COLLECTIVE_TRANSPORT: 'js', TENSILE_TCP_UDS: '0' })
      : undefined;
    // Several ranks on a host: the hierarchical path against the flat socket ring over the same simulated hosts.
    const flat = perHost.some((c) => c > 1)
      ? await tensile(n, { BENCH_HOSTS: hosts, TENSILE_COLLECTIVE_TRANSPORT: 'native', TENSILE_NET_HIERARCHY: '0' })
      : undefined;
    console.log(
      `# net n=${n} hosts ${hosts} (${shape}): tensile data plane ${[...t.values()][0]?.dataPlane ?? '?'}, ` +
        `simulated hosts on loopback; gloo runs the same world size on loopback TCP`,
    );
    const factor = (2 * (n - 1)) / n;
    for (const s of sizes) {
      const tr = t.get(s);
      const gr = g.get(s);
      if (!tr || !gr) {
        console.log(`# net n=${n} size=${s}: missing result (tensile ${!!tr}, gloo ${!!gr})`);
        continue;
      }
      const busbw = (ms: number): number => ((s / (ms / 1e3)) * factor) / 1e9;
      if (s < 1 << 20)
        figure(
          `allreduce_net_latency_${shape}_${human(s)}`,
          tr.medianMs,
          gr.medianMs,
          'ms',
          '<=',
          s <= 4096 ? 0.5 : 1,
          4,
        );
      const bt = busbw(tr.medianMs);
      const bg = busbw(gr.medianMs);
      figure(
        `allreduce_net_busbw_${shape}_${human(s)}`,
        bt,
        bg,
        'GB/s',
        '>=',
        s >= 1 << 20 ? 1.5 : 1,
        digits(Math.min(bt, bg)),
      );
      const jr = js?.get(s);
      if (jr) {
        const bj = busbw(jr.medianMs);
        figure(`allreduce_net_vs_js_busbw_${shape}_${human(s)}`, bt, bj, 'GB/s', '>=', 1, digits(Math.min(bt, bj)));
      }
      const fr = flat?.get(s);
      if (fr) {
        const bf = busbw(fr.medianMs);
        figure(
          `allreduce_net_hier_vs_flat_busbw_${shape}_${human(s)}`,
          bt,
          bf,
          'GB/s',
          '>=',
          1,
          digits(Math.min(bt, bf)),
        );
      }
    }
  }
  // Same-host transport of the JS plane: Unix domain sockets (default) vs loopback TCP (TENSILE_TCP_UDS=0).
  const udsSizes = sizes.filter((s) => s >= 1 << 20);
  if (withUds && udsSizes.length > 0) {
    const uds = await tensile(2, { TENSILE_COLLECTIVE_TRANSPORT: 'js' }, udsSizes);
    const tcp = await tensile(2, { TENSILE_COLLECTIVE_TRANSPORT: 'js', TENSILE_TCP_UDS: '0' }, udsSizes);
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
    `# total ${((Date.now() - started) / 1000).toFixed(0)} s; figures are medians; ${availableParallelism()} cores, ` +
      `load average ${(await import('node:os'))
        .loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')} at the end`,
  );
}

main().catch((e: unknown) => {
  console.error(String((e as Error)?.stack ?? e));
  process.exitCode = 1;
});
