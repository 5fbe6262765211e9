// Parameter server over RPC (pytorch/examples distributed/rpc/parameter_server, in tensile).
// Rank 0 holds the model; every other rank is a trainer that runs the forward on the server through RPC, the
// backward through distributed autograd, and steps the server's parameters with a DistributedOptimizer.
//
//   tensile run --standalone --nproc-per-node 3 examples/rpc/parameter-server/main.ts
// Env: EPOCHS (default 5), TARGET_ACCURACY (default 0.9). Exits 1 when a trainer ends below the target.
import {
  DistributedOptimizer,
  distAutograd,
  getWorkerInfo,
  initRpc,
  registerFunction,
  rpcSync,
  rref,
  shutdown,
  type RRef,
} from '../../../rpc/index.js';
import { Generator, Linear, ReLU, SGD, Sequential, crossEntropy, type Tensor } from '../../../tensor/index.js';
import { accuracy, batch, blobs } from '../data.js';

const EPOCHS = Number(process.env.EPOCHS ?? 5);
const TARGET = Number(process.env.TARGET_ACCURACY ?? 0.9);
const BATCH = 32;

// Registered on every worker; only the server's model is ever used.
let model: Sequential | null = null;
const serverModel = (): Sequential =>
  (model ??= new Sequential(
    new Linear(2, 16, { generator: new Generator(1) }),
    new ReLU(),
    new Linear(16, 2, { generator: new Generator(2) }),
  ));
registerFunction('ps.forward', (x: Tensor) => serverModel().forward(x));
registerFunction('ps.parameterRRefs', () =>
  serverModel()
    .parameters()
    .map((p) => rref(p)),
);

await initRpc();
const me = getWorkerInfo();
if (me.id === 0) {
  serverModel();
  // Like PyTorch's example: the server just waits in shutdown until every trainer is done.
  await shutdown({ graceful: true, timeoutMs: 30 * 60_000 });
  console.log('parameter server: all trainers done');
} else {
  const paramRRefs = await rpcSync<RRef<Tensor>[]>(0, 'ps.parameterRRefs');
  const opt = await DistributedOptimizer.create(SGD, paramRRefs, { lr: 0.05 });
  const train = blobs(512, 100 + me.id);
  const test = blobs(256, 999);
  for (let epoch = 0; epoch < EPOCHS; epoch++) {
    let total = 0;
    for (let s = 0; s < 512; s += BATCH) {
      const b = batch(train.x, train.y, s, s + BATCH);
      total += await distAutograd.withContext(async (ctx) => {
        const out = await rpcSync<Tensor>(0, 'ps.forward', [b.x]);
        const loss = crossEntropy(out, b.y);
        await distAutograd.backward(ctx, [loss]);
        await opt.step(ctx);
        return loss.item();
      });
    }
    console.log(`trainer ${me.name}: epoch ${epoch + 1} mean loss ${(total / (512 / BATCH)).toFixed(4)}`);
  }
  const acc = accuracy(await rpcSync<Tensor>(0, 'ps.forward', [test.x]), test.y);
  console.log(`trainer ${me.name}: test accuracy ${acc.toFixed(3)} (target ${TARGET})`);
  await Promise.all(paramRRefs.map((r) => r.release()));
  await shutdown({ graceful: true, timeoutMs: 60_000 });
  if (acc < TARGET) process.exit(1);
}
