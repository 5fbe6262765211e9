// One rank of the tensile side of the allreduce benchmark. Env: RANK/WORLD_SIZE/MASTER_*, BENCH_SIZES (bytes, comma
// separated), BENCH_ITERS (optional, overrides the per-size count), TENSILE_COLLECTIVE_TRANSPORT (js | native; unset =
// native when possible). Rank 0 prints one JSON line per size: {"sizeBytes", "iters", "medianMs", "meanMs", "dataPlane"}.
import { initProcessGroup } from '../../collective/index.js';
import { itersFor } from './sizes.js';

async function main(): Promise<void> {
  const pg = await initProcessGroup({ backend: 'tcp', timeoutMs: 120_000 });
  const sizes = (process.env.BENCH_SIZES ?? '4096').split(',').map(Number);
  for (const sizeBytes of sizes) {
    const buf = new Float32Array(sizeBytes / 4).fill(1);
    const iters = process.env.BENCH_ITERS ? Number(process.env.BENCH_ITERS) : itersFor(sizeBytes);
    for (let i = 0; i < 2; i++) await pg.allreduce(buf, 'sum');
    await pg.barrier();
    const times: number[] = [];
    for (let i = 0; i < iters; i++) {
      const t0 = process.hrtime.bigint();
      await pg.allreduce(buf, 'sum');
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    times.sort((a, b) => a - b);
    const meanMs = times.reduce((a, b) => a + b, 0) / times.length;
    if (pg.rank === 0)
      process.stdout.write(
        JSON.stringify({ sizeBytes, iters, medianMs: times[times.length >> 1], meanMs, dataPlane: pg.dataPlane }) +
          '\n',
      );
  }
  await pg.destroy();
}

main().catch((e: unknown) => {
  process.stderr.write(`tensile-worker rank ${process.env.RANK}: ${String((e as Error)?.stack ?? e)}\n`);
  process.exitCode = 1;
});
