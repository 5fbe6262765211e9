// tensile RPC vs torch.distributed.rpc (Debian PyTorch 1.13, TensorPipe), 2 workers on loopback, one run.
// Figures: no-op call latency, async throughput with many calls in flight, 16 MB tensor echo bandwidth,
// remote + toHere latency. Usage: node --import tsx bench/rpc/run.ts
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createAgent } from '../../rpc/index.js';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const LAT_ITERS = Number(process.env.BENCH_LAT_ITERS ?? 2000);
const THR_CALLS = Number(process.env.BENCH_THR_CALLS ?? 20000);
const WINDOW = Number(process.env.BENCH_WINDOW ?? 1000);
const BW_ITERS = Number(process.env.BENCH_BW_ITERS ?? 10);
const MB = Number(process.env.BENCH_MB ?? 16);
const children: ChildProcess[] = [];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

function killAll(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
process.on('exit', killAll);
for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => (killAll(), process.exit(1)));

async function benchTensile(): Promise<Record<string, number>> {
  const port = await freePort();
  const env = { ...process.env, RANK: '1', WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', TENSILE_RPC_PORT: String(port) };
  const child = spawn(process.execPath, ['--import', 'tsx', here('./worker.ts')], { env, stdio: 'inherit' });
  children.push(child);
  const a = createAgent({ rank: 0, worldSize: 2, masterAddr: '127.0.0.1', bootstrapPort: port, initTimeoutMs: 30_000 });
  await a.start();
  for (let i = 0; i < 200; i++) await a.rpcAsync(1, 'noop');
  let t0 = performance.now();
  for (let i = 0; i < LAT_ITERS; i++) await a.rpcAsync(1, 'noop');
  const latencyUs = ((performance.now() - t0) / LAT_ITERS) * 1000;

  t0 = performance.now();
  for (let done = 0; done < THR_CALLS; ) {
    const n = Math.min(WINDOW, THR_CALLS - done);
    await Promise.all(Array.from({ length: n }, () => a.rpcAsync(1, 'noop')));
    done += n;
  }
  const throughput = THR_CALLS / ((performance.now() - t0) / 1000);

  const t = new Float32Array((MB * 1024 * 1024) / 4).fill(1);
  await a.rpcAsync(1, 'echo', [t]);
  t0 = performance.now();
  let r: Float32Array = t;
  for (let i = 0; i < BW_ITERS; i++) r = (await a.rpcAsync(1, 'echo', [t])) as Float32Array;
  const dt = (performance.now() - t0) / 1000;
  if (r.length !== t.length) throw new Error('echo returned a wrong length');
  const bandwidthGbs = (2 * t.byteLength * BW_ITERS) / dt / 1e9;

  for (let i = 0; i < 50; i++) await a.remote(1, 'noop').toHere();
  t0 = performance.now();
  const n = Math.floor(LAT_ITERS / 2);
  for (let i = 0; i < n; i++) {
    const rr = a.remote(1, 'noop');
    await rr.toHere();
    void rr.release(); // PyTorch deletes on GC in the background too
  }
  const remoteUs = ((performance.now() - t0) / n) * 1000;
  await a.shutdown({ graceful: true, timeoutMs: 30_000 });
  await new Promise<void>((res) => (child.exitCode !== null ? res() : child.once('exit', () => res())));
  return { latency_us: latencyUs, throughput, bandwidth_gbs: bandwidthGbs, remote_us: remoteUs };
}

async function benchTorch(): Promise<Record<string, number> | null> {
  const port = await freePort();
  const env = { ...process.env, MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), OMP_NUM_THREADS: '1' };
  const out: string[] = [];
  const procs = [0, 1].map((rank) => {
    const c = spawn('/usr/bin/python3', [here('./torch_peer.py'), String(rank)], {
      env,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(c);
    c.stdout!.on('data', (d: Buffer) => out.push(d.toString()));
    return new Promise<number>((res) => c.once('exit', (code) => res(code ?? 1)));
  });
  const timer = setTimeout(killAll, 300_000);
  const codes = await Promise.all(procs);
  clearTimeout(timer);
  const line = out.join('').split('\n').find((l) => l.startsWith('{'));
  if (codes.some((c) => c !== 0) || !line) {
    console.error(`torch peer failed (exit codes ${codes.join(', ')})`);
    return null;
  }
  return JSON.parse(line) as Record<string, number>;
}

function figure(name: string, tv: number, pv: number | undefined, unit: string, op: '<=' | '>=', target: number): void {
  const ratio = pv ? tv / pv : NaN;
  const met = pv ? (op === '<=' ? ratio <= target : ratio >= target) : false;
  const f = (x: number): string => (Number.isFinite(x) ? (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(3)) : 'NaN');
  console.log(
    `figure=${name} tensile=${f(tv)} peer=${pv === undefined ? 'NaN' : f(pv)} unit=${unit} ratio=${f(ratio)} target=${op}${target} met=${met ? 'yes' : 'no'}`,
  );
}

const tn = await benchTensile();
const pt = await benchTorch();
figure('rpc_noop_latency', tn.latency_us!, pt?.latency_us, 'us', '<=', 0.5);
figure('rpc_async_throughput', tn.throughput!, pt?.throughput, 'calls/s', '>=', 2);
figure(`rpc_tensor_echo_${MB}mb_bandwidth`, tn.bandwidth_gbs!, pt?.bandwidth_gbs, 'GB/s', '>=', 1);
figure('rpc_remote_to_here_latency', tn.remote_us!, pt?.remote_us, 'us', '<=', 0.5);
killAll();
