// tensile RPC vs torch.distributed.rpc (Debian PyTorch 1.13, TensorPipe), 2 workers each on loopback, one run.
// Both worlds stay up for the whole run and each figure alternates tensile / torch phases (ROUNDS times, median
// reported), so that load from other processes on a shared machine hits both sides alike. The torch workers are
// stopped (SIGSTOP) during tensile's phases: idle, they busy-poll.
// Figures: no-op call latency, async throughput with many calls in flight, 16 MB tensor echo bandwidth,
// remote + toHere latency.   Usage: npm run bench -- rpc [--repeats N]   (N rounds per figure; env BENCH_ROUNDS)
// Packed, on a machine without Node.js: bench/packed.sh --pack here, then bench/packed.sh rpc there.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createAgent, type RpcAgent } from '../../rpc/index.js';
import { freePort } from '../../common/free-port.js';
import { figure, median, repeatsFromArgv } from '../lib/figures.js';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
// Packed (bench/packed.sh, a machine without Node.js's dev tools): this file and the worker run as bundled JavaScript.
const compiled = import.meta.url.endsWith('.js');
const workerArgs = compiled ? [here('./worker.js')] : ['--import', 'tsx', here('./worker.ts')];
/** The python3 with torch for the peer. */
const python = process.env.BENCH_PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
const env = (k: string, d: number): number => Number(process.env[k] ?? d);
const LAT_ITERS = env('BENCH_LAT_ITERS', 1000);
const THR_CALLS = env('BENCH_THR_CALLS', 10000);
const WINDOW = env('BENCH_WINDOW', 1000);
/** Echoes per bandwidth round (enough to span the collections that dropped frames cause, on both sides). */
const BW_ITERS = env('BENCH_BW_ITERS', 20);
/** Echoes before each bandwidth phase, on both sides (buffers, segments and connections warm). */
const BW_WARMUP = env('BENCH_BW_WARMUP', 5);
const MB = env('BENCH_MB', 16);
const ROUNDS = repeatsFromArgv(env('BENCH_ROUNDS', 3));
const WARMUP = env('BENCH_WARMUP', 1000);
/** remote + toHere calls of the warm-up, on both sides (the JIT needs a few thousand to settle on this path). */
const REM_WARMUP = env('BENCH_REM_WARMUP', 3000);
const children: ChildProcess[] = [];

function killAll(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
process.on('exit', killAll);
for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => (killAll(), process.exit(1)));
const hardStop = setTimeout(() => {
  console.error('bench/rpc: over 10 minutes, giving up');
  killAll();
  process.exit(1);
}, 600_000);

async function startTensile(): Promise<RpcAgent> {
  const port = await freePort();
  const e = { ...process.env, RANK: '1', WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', TENSILE_RPC_PORT: String(port) };
  children.push(spawn(process.execPath, workerArgs, { env: e, stdio: 'inherit' }));
  const a = createAgent({ rank: 0, worldSize: 2, masterAddr: '127.0.0.1', bootstrapPort: port, initTimeoutMs: 60_000 });
  await a.start();
  // The bulk data channel (rpc/data-channel.ts) comes up just after the streams, and shared memory for large frames
  // (rpc/shm-transfer.ts) just after it: wait for both in both directions (shared memory only where it can work).
  await Promise.race([
    a.rawConnTo(1)?.waitData((d) => d.send !== null && d.recv !== null && d.shmOut && d.shmIn),
    new Promise((r) => setTimeout(r, 5_000)),
  ]);
  // Warm-up (JIT, connections), the same amount as the torch side gets.
  for (let i = 0; i < WARMUP; i++) await a.rpcAsync(1, 'noop');
  for (let i = 0; i < REM_WARMUP; i++) {
    const rr = a.remote(1, 'noop');
    await rr.toHere();
    void rr.release();
  }
  return a;
}

const tensile = {
  async lat(a: RpcAgent): Promise<number> {
    const t0 = performance.now();
    for (let i = 0; i < LAT_ITERS; i++) await a.rpcAsync(1, 'noop');
    return ((performance.now() - t0) / LAT_ITERS) * 1000;
  },
  async thr(a: RpcAgent): Promise<number> {
    const t0 = performance.now();
    for (let done = 0; done < THR_CALLS;) {
      const n = Math.min(WINDOW, THR_CALLS - done);
      await Promise.all(Array.from({ length: n }, () => a.rpcAsync(1, 'noop')));
      done += n;
    }
    return THR_CALLS / ((performance.now() - t0) / 1000);
  },
  async bw(a: RpcAgent): Promise<number> {
    const t = new Float32Array((MB * 1024 * 1024) / 4).fill(1);
    for (let i = 0; i < BW_WARMUP; i++) await a.rpcAsync(1, 'echo', [t]);
    const t0 = performance.now();
    let r: Float32Array = t;
    for (let i = 0; i < BW_ITERS; i++) r = (await a.rpcAsync(1, 'echo', [t])) as Float32Array;
    if (r.length !== t.length) throw new Error('echo returned a wrong length');
    return (2 * t.byteLength * BW_ITERS) / ((performance.now() - t0) / 1000) / 1e9;
  },
  async rem(a: RpcAgent): Promise<number> {
    const n = Math.floor(LAT_ITERS / 2);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const rr = a.remote(1, 'noop');
      await rr.toHere();
      void rr.release(); // PyTorch deletes on GC, in the background, too
    }
    return ((performance.now() - t0) / n) * 1000;
  },
};

interface TorchPeer {
  run(cmd: string): Promise<number>;
  close(): Promise<void>;
}

async function startTorch(): Promise<TorchPeer | null> {
  const port = await freePort();
  const e = {
    ...process.env,
    MASTER_ADDR: '127.0.0.1',
    MASTER_PORT: String(port),
    OMP_NUM_THREADS: '1',
    BENCH_WARMUP: String(WARMUP),
    BENCH_REM_WARMUP: String(REM_WARMUP),
  };
  const procs = [0, 1].map((rank) => {
    const c = spawn(python, [here('./torch_peer.py'), String(rank)], {
      env: e,
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    children.push(c);
    return c;
  });
  const lines = createInterface({ input: procs[0]!.stdout! })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, number>> => {
    for (;;) {
      const r = await lines.next();
      if (r.done) throw new Error('torch peer exited');
      if (r.value.startsWith('{')) return JSON.parse(r.value) as Record<string, number>;
    }
  };
  try {
    await next();
  } catch (err) {
    console.error(`torch peer failed to start: ${(err as Error).message}`);
    return null;
  }
  // Idle TensorPipe workers busy-poll (measured: about 0.28 of a core each, here), which on a small machine would
  // tax tensile's phases: the peer is stopped while tensile measures. tensile's idle workers use no CPU.
  const signal = (s: NodeJS.Signals): void => {
    for (const c of procs) if (c.exitCode === null && c.signalCode === null) c.kill(s);
  };
  signal('SIGSTOP');
  return {
    async run(cmd) {
      signal('SIGCONT');
      try {
        procs[0]!.stdin!.write(cmd + '\n');
        return (await next()).value!;
      } finally {
        signal('SIGSTOP');
      }
    },
    async close() {
      signal('SIGCONT');
      procs[0]!.stdin!.end('quit\n');
      await Promise.all(procs.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
    },
  };
}

const agent = await startTensile();
const torch = await startTorch();
const plan = [
  { name: 'rpc_noop_latency', unit: 'us', op: '<=' as const, target: 0.5, t: tensile.lat, cmd: `lat ${LAT_ITERS}` },
  {
    name: 'rpc_async_throughput',
    unit: 'calls/s',
    op: '>=' as const,
    target: 2,
    t: tensile.thr,
    cmd: `thr ${THR_CALLS} ${WINDOW}`,
  },
  {
    name: `rpc_tensor_echo_${MB}mb_bandwidth`,
    unit: 'GB/s',
    op: '>=' as const,
    target: 1,
    t: tensile.bw,
    cmd: `bw ${BW_ITERS} ${MB} ${BW_WARMUP}`,
  },
  {
    name: 'rpc_remote_to_here_latency',
    unit: 'us',
    op: '<=' as const,
    target: 0.5,
    t: tensile.rem,
    cmd: `rem ${Math.floor(LAT_ITERS / 2)}`,
  },
];
for (const p of plan) {
  const tv: number[] = [];
  const pv: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate which side goes first, so a load spike does not always land on the same one.
    if (r % 2 === 0) tv.push(await p.t(agent));
    if (torch) pv.push(await torch.run(p.cmd));
    if (r % 2 === 1) tv.push(await p.t(agent));
  }
  figure(p.name, median(tv), torch ? median(pv) : undefined, p.unit, p.op, p.target);
}
const shm = agent.rawConnTo(1)?.shmTransfers ?? { out: 0, in: 0 };
console.log(
  `# tensile large frames: ${shm.out + shm.in > 0 ? `shared memory (${shm.out} out, ${shm.in} in)` : 'data-channel socket'}`,
);
await torch?.close();
await agent.shutdown({ graceful: true, timeoutMs: 30_000 });
clearTimeout(hardStop);
killAll();
