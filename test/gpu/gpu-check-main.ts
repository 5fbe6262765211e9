// Driver of scripts/gpu-check.sh (runs compiled, with a carried node binary, on a GPU machine without Node.js):
// prints the machine's NCCL/CUDA facts, runs the world-size-1 correctness checks, measures per-call latency and
// throughput on device buffers, and prints figure lines against torch.distributed's numbers (--peer FILE, written by
// test/gpu/torch_peer.py in the same run). Exit status 1 when a check fails.
import { readFileSync } from 'node:fs';

import { createNcclGroup, type NcclProcessGroup } from '../../collective/nccl-backend.js';
import { loadNative, ncclAvailability } from '../../collective/native/loader.js';
import { memoryStore } from '../helpers/memory-store.js';
import { runContract } from '../integration/collective/contract.js';
import { checkDevice, checkHost } from './nccl-checks.js';

type Figures = Record<string, number>;

const LATENCY_SIZES: ReadonlyArray<[string, number]> = [
  ['4B', 4],
  ['64KiB', 64 * 1024],
  ['16MiB', 16 * 1024 * 1024],
];
const THROUGHPUT_BYTES = 256 * 1024 * 1024;

function nowUs(): number {
  return Number(process.hrtime.bigint()) / 1000;
}

/** Per-call µs with `iters` calls in flight at once (enqueue rate, like torch's async all_reduce loop + sync). */
async function pipelined(g: NcclProcessGroup, bytes: number, iters: number): Promise<number> {
  const buf = g.device.alloc(bytes);
  const count = bytes / 4;
  try {
    const run = async (n: number): Promise<void> => {
      const ps: Promise<void>[] = new Array(n);
      for (let i = 0; i < n; i++) ps[i] = g.device.allreduce(buf, buf, count, { dtype: 'float32' });
      await Promise.all(ps);
    };
    await run(100);
    const t0 = nowUs();
    await run(iters);
    return (nowUs() - t0) / iters;
  } finally {
    g.device.free(buf);
  }
}

/** Per-call µs when each call is awaited before the next (round trip through the worker thread and the promise). */
async function awaited(g: NcclProcessGroup, bytes: number, iters: number): Promise<number> {
  const buf = g.device.alloc(bytes);
  const count = bytes / 4;
  try {
    for (let i = 0; i < 50; i++) await g.device.allreduce(buf, buf, count, { dtype: 'float32' });
    const t0 = nowUs();
    for (let i = 0; i < iters; i++) await g.device.allreduce(buf, buf, count, { dtype: 'float32' });
    return (nowUs() - t0) / iters;
  } finally {
    g.device.free(buf);
  }
}

/** GB/s (algbw, 1e9 bytes/s) of an out-of-place op over `bytes`. */
async function throughput(
  g: NcclProcessGroup,
  op: 'allreduce' | 'allgather',
  bytes: number,
  iters: number,
): Promise<number> {
  const a = g.device.alloc(bytes);
  const b = g.device.alloc(bytes);
  const count = bytes / 4;
  try {
    const once = (): Promise<void> =>
      op === 'allreduce'
        ? g.device.allreduce(a, b, count, { dtype: 'float32' })
        : g.device.allgather(a, b, count, { dtype: 'float32' });
    for (let i = 0; i < 3; i++) await once();
    const t0 = nowUs();
    const ps: Promise<void>[] = [];
    for (let i = 0; i < iters; i++) ps.push(once());
    await Promise.all(ps);
    const sec = (nowUs() - t0) / 1e6;
    return (bytes * iters) / sec / 1e9;
  } finally {
    g.device.free(a);
    g.device.free(b);
  }
}

function figure(
  name: string,
  tensile: number,
  peer: number | undefined,
  unit: string,
  op: '<=' | '>=',
  target: number,
): void {
  const fmt = (x: number): string => (x >= 100 ? x.toFixed(1) : x.toFixed(2));
  if (peer === undefined || !(peer > 0)) {
    console.log(`figure=${name} tensile=${fmt(tensile)} peer=na unit=${unit} ratio=na target=${op}${target} met=no`);
    return;
  }
  const ratio = tensile / peer;
  const met = op === '<=' ? ratio <= target : ratio >= target;
  console.log(
    `figure=${name} tensile=${fmt(tensile)} peer=${fmt(peer)} unit=${unit} ratio=${ratio.toFixed(3)} target=${op}${target} met=${met ? 'yes' : 'no'}`,
  );
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const peerFile = args.includes('--peer') ? args[args.indexOf('--peer') + 1] : undefined;
  const avail = ncclAvailability();
  if (!avail.ok) {
    console.log(`SKIP no NVIDIA GPU: ${avail.reason}`);
    return 0;
  }
  const { status } = loadNative();
  console.log(
    `nccl=${status.ncclVersion} (${status.ncclPath}) cudart=${status.cudaRuntimeVersion} (${status.cudartPath}) ` +
      `driver=${status.cudaDriverVersion} devices=${status.deviceCount} node=${process.version}`,
  );
  const g = await createNcclGroup({ rank: 0, worldSize: 1, localRank: 0, store: memoryStore(), timeoutMs: 60_000 });
  let failed: number;
  try {
    const contract = await runContract(g);
    const contractFailures = contract.filter((c) => !c.ok).map((c) => `contract ${c.name}: ${c.detail ?? ''}`);
    console.log(
      `collective contract suite: ${contract.length - contractFailures.length} passed, ${contractFailures.length} failed`,
    );
    const host = await checkHost(g, [0, 1, 1001, 65537]);
    host.failures.unshift(...contractFailures);
    console.log(
      `check float16/bfloat16 host buffers: ${host.passed} passed, ${host.failures.length - contractFailures.length} failed`,
    );
    const dev = await checkDevice(g);
    console.log(`check device buffers: ${dev.passed} passed, ${dev.failures.length} failed`);
    const repeats = Number(process.env.TENSILE_GPU_CHECK_REPEAT ?? '0');
    for (let i = 0; i < repeats; i++) {
      const again = await checkDevice(g, i % 2 === 0 ? 4097 : 65537);
      console.log(`check device buffers, repeat ${i + 1}: ${again.passed} passed, ${again.failures.length} failed`);
      dev.failures.push(...again.failures.map((f) => `repeat ${i + 1}: ${f}`));
    }
    for (const f of [...host.failures, ...dev.failures].slice(0, 20)) console.log(`  FAIL ${f}`);
    failed = host.failures.length + dev.failures.length;

    const ours: Figures = {};
    for (const [label, bytes] of LATENCY_SIZES) {
      const big = bytes >= 1 << 20;
      ours[`allreduce_${label}_pipelined_us`] = await pipelined(g, bytes, big ? 200 : 3000);
      ours[`allreduce_${label}_awaited_us`] = await awaited(g, bytes, big ? 200 : 1000);
    }
    ours.allreduce_oop_256MiB_GBps = await throughput(g, 'allreduce', THROUGHPUT_BYTES, 20);
    ours.allgather_oop_256MiB_GBps = await throughput(g, 'allgather', THROUGHPUT_BYTES, 20);
    console.log(`tensile raw: ${JSON.stringify(ours)}`);
    let peer: Figures = {};
    if (peerFile !== undefined) {
      try {
        peer = JSON.parse(readFileSync(peerFile, 'utf8')) as Figures;
        console.log(`torch raw: ${JSON.stringify(peer)}`);
      } catch (err) {
        console.log(`torch peer figures unavailable (${String(err)})`);
      }
    }
    for (const [label] of LATENCY_SIZES) {
      for (const mode of ['pipelined', 'awaited']) {
        const k = `allreduce_${label}_${mode}_us`;
        figure(`nccl_${k}`, ours[k]!, peer[k], 'us', '<=', 1.2);
      }
    }
    figure(
      'nccl_allreduce_oop_256MiB_GBps',
      ours.allreduce_oop_256MiB_GBps,
      peer.allreduce_oop_256MiB_GBps,
      'GB/s',
      '>=',
      0.9,
    );
    figure(
      'nccl_allgather_oop_256MiB_GBps',
      ours.allgather_oop_256MiB_GBps,
      peer.allgather_oop_256MiB_GBps,
      'GB/s',
      '>=',
      0.9,
    );
  } finally {
    await g.destroy();
  }
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.log(`gpu-check failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  },
);
