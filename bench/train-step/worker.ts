// tensile side of bench/train-step: the same MLP (784-512-256-10), batch, optimizer and thread count as
// torch_step.py. Modes: single (one process), ddp (DistributedDataParallel over the tcp process group), local
// (same processes, no communication: the compute-only baseline for the overlap figure). Rank 0 prints one JSON line.
import { initProcessGroup } from '../../collective/index.js';
import { DistributedDataParallel } from '../../tensor/ddp.js';
import { Generator, Linear, ReLU, SGD, Sequential, blasName, crossEntropy, randn } from '../../tensor/index.js';

const args = new Map<string, string>();
for (let i = 2; i + 1 < process.argv.length; i += 2)
  args.set(process.argv[i]!.replace(/^--/, ''), process.argv[i + 1]!);
const mode = args.get('mode') ?? 'single';
const steps = Number(args.get('steps') ?? 200);
const warmup = Number(args.get('warmup') ?? 20);
const batch = Number(args.get('batch') ?? 64);
if (!['single', 'ddp', 'local'].includes(mode)) throw new Error(`--mode ${mode}: expected single, ddp or local`);

const g = new Generator(0);
const model = new Sequential(
  new Linear(784, 512, { generator: g }),
  new ReLU(),
  new Linear(512, 256, { generator: g }),
  new ReLU(),
  new Linear(256, 10, { generator: g }),
);
// Keep the loop alive while joining (see docs/train.md, Limitations).
const keepAlive = setInterval(() => undefined, 1000);
const pg = mode === 'single' ? null : await initProcessGroup({ backend: 'tcp', timeoutMs: 60_000 });
clearInterval(keepAlive);
const ddp = mode === 'ddp' && pg !== null ? await DistributedDataParallel.create(model, pg) : null;
const opt = new SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
const x = randn([batch, 784], { generator: g });
const y = Array.from({ length: batch }, (_, i) => (i * 7) % 10);

async function step(): Promise<void> {
  opt.zeroGrad();
  const loss = crossEntropy(model.call(x), y);
  if (ddp !== null) await ddp.backward(loss);
  else await loss.backward();
  opt.step();
}

for (let i = 0; i < warmup; i++) await step();
await pg?.barrier();
const t0 = performance.now();
for (let i = 0; i < steps; i++) await step();
const dt = (performance.now() - t0) / 1000;
await pg?.barrier();
if ((pg?.rank ?? 0) === 0) {
  console.log(
    JSON.stringify({
      side: 'tensile',
      mode,
      msPerStep: (dt * 1000) / steps,
      stepsPerSec: steps / dt,
      blas: blasName(),
    }),
  );
}
await pg?.destroy();
