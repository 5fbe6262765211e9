// A model split across two workers (pipeline / model parallel), trained with distributed autograd.
// Rank 1 holds stage 1 (Linear 2->16 + ReLU), rank 2 holds stage 2 (Linear 16->2); rank 0 drives: each batch is cut
// into micro-batches that run through both stages concurrently (stage 1 calls stage 2 itself), the loss is
// computed on rank 0, the backward flows back through rank 2 and rank 1, and a DistributedOptimizer steps both.
//
//   tensile run --standalone --nproc-per-node 3 examples/rpc/pipeline/main.ts
// Env: EPOCHS (default 5), MICRO_BATCHES (default 4), TARGET_ACCURACY (default 0.9).
import {
  DistributedOptimizer,
  distAutograd,
  getWorkerInfo,
  initRpc,
  registerFunction,
  rpcAsync,
  rpcSync,
  rref,
  shutdown,
  type RRef,
} from '../../../rpc/index.js';
import { Generator, Linear, ReLU, SGD, Sequential, concat, crossEntropy, type Tensor } from '../../../tensor/index.js';
import { accuracy, batch, blobs } from '../data.js';

const EPOCHS = Number(process.env.EPOCHS ?? 5);
const MICRO = Number(process.env.MICRO_BATCHES ?? 4);
const TARGET = Number(process.env.TARGET_ACCURACY ?? 0.9);
const BATCH = 32;

let stage: Sequential | null = null;
registerFunction('stage.init', (which: number) => {
  stage =
    which === 1
      ? new Sequential(new Linear(2, 16, { generator: new Generator(1) }), new ReLU())
      : new Sequential(new Linear(16, 2, { generator: new Generator(2) }));
  return stage.parameters().map((p) => rref(p));
});
registerFunction('stage2.forward', (h: Tensor) => stage!.forward(h));
// Stage 1 runs its part and hands the activation to stage 2 directly.
registerFunction('stage1.forward', async (x: Tensor) => rpcAsync<Tensor>(2, 'stage2.forward', [stage!.forward(x)]));

await initRpc();
if (getWorkerInfo().id !== 0) {
  await shutdown({ graceful: true, timeoutMs: 30 * 60_000 });
} else {
  const params = [
    ...(await rpcSync<RRef<Tensor>[]>(1, 'stage.init', [1])),
    ...(await rpcSync<RRef<Tensor>[]>(2, 'stage.init', [2])),
  ];
  const opt = await DistributedOptimizer.create(SGD, params, { lr: 0.05 });
  const train = blobs(512, 7);
  const test = blobs(256, 999);
  const forward = async (x: Tensor): Promise<Tensor> => {
    const n = x.shape[0]!;
    const step = Math.ceil(n / MICRO);
    const parts: Promise<Tensor>[] = [];
    for (let s = 0; s < n; s += step)
      parts.push(rpcAsync<Tensor>(1, 'stage1.forward', [batch(x, new Float32Array(n), s, Math.min(n, s + step)).x]));
    return concat(await Promise.all(parts), 0);
  };
  for (let epoch = 0; epoch < EPOCHS; epoch++) {
    let total = 0;
    for (let s = 0; s < 512; s += BATCH) {
      const b = batch(train.x, train.y, s, s + BATCH);
      total += await distAutograd.withContext(async (ctx) => {
        const loss = crossEntropy(await forward(b.x), b.y);
        await distAutograd.backward(ctx, [loss]);
        await opt.step(ctx);
        return loss.item();
      });
    }
    console.log(`pipeline: epoch ${epoch + 1} mean loss ${(total / (512 / BATCH)).toFixed(4)}`);
  }
  const acc = accuracy(await forward(test.x), test.y);
  console.log(`pipeline: test accuracy ${acc.toFixed(3)} (target ${TARGET})`);
  await Promise.all(params.map((r) => r.release()));
  await shutdown({ graceful: true, timeoutMs: 60_000 });
  if (acc < TARGET) process.exit(1);
}
