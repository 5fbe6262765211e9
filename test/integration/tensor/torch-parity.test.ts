// tensile ↔ PyTorch: checkpoints both ways and nn/optim numbers, using Debian's PyTorch (/usr/bin/python3).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import {
  Adam,
  DistributedSampler,
  Generator,
  Linear,
  ReLU,
  SGD,
  Sequential,
  Tensor,
  arange,
  conv2d,
  crossEntropy,
  loadSafetensors,
  randn,
  saveSafetensors,
  tensor,
} from '../../../tensor/index.js';

const run = promisify(execFile);
const PYTHON = '/usr/bin/python3';
const HELPER = join(import.meta.dirname, 'torch_helper.py');
const dir = mkdtempSync(join(tmpdir(), 'tensile-torch-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function hasTorch(): Promise<boolean> {
  if (!existsSync(PYTHON)) return false;
  try {
    await run(PYTHON, ['-c', 'import torch'], { timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}
const torchMissing = (await hasTorch()) ? false : 'Debian python3-torch is not installed at /usr/bin/python3';

async function torchHelper(mode: string, input: string, output: string): Promise<void> {
  await run(PYTHON, [HELPER, mode, input, output], { timeout: 120_000, env: { ...process.env, OMP_NUM_THREADS: '1' } });
}

function assertClose(actual: Tensor, expected: Tensor, what: string, tol = 1e-4): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  for (let i = 0; i < expected.numel; i++) {
    const a = actual.data[i]!;
    const e = expected.data[i]!;
    assert.ok(Math.abs(a - e) <= tol * (1 + Math.abs(e)), `${what}[${i}]: tensile ${a}, PyTorch ${e}`);
  }
}

test('PyTorch reads a tensile checkpoint and tensile reads a PyTorch-written one', { skip: torchMissing }, async () => {
  const src = join(dir, 'tensile.safetensors');
  const back = join(dir, 'torch.safetensors');
  const g = new Generator(1);
  const mine = { 'fc.weight': randn([3, 4], { generator: g }), 'fc.bias': tensor([1, -2, 3]), scalar: tensor(2.5) };
  await saveSafetensors(src, mine, { epoch: '3' });
  await torchHelper('echo', src, back);
  const { tensors, metadata } = await loadSafetensors(back);
  assert.equal(metadata.seen, 'fc.bias,fc.weight,scalar');
  assert.deepEqual(JSON.parse(metadata['meta.in']!), { epoch: '3' });
  for (const [k, v] of Object.entries(mine)) assertClose(tensors[`${k}.x2`]!, v.mul(2), k, 0);
  assertClose(tensors['torch.arange']!, arange(6).reshape([2, 3]), 'torch.arange', 0);
  assert.deepEqual(tensors['torch.int64']!.toArray(), [-5, 7]);
  assert.deepEqual(tensors['torch.float64']!.toArray(), [0.25, 1e10]);
  // A PyTorch state dict loads into the tensile module of the same structure.
  const lin = new Linear(3, 2);
  lin.loadStateDict({ weight: tensors['linear.weight']!, bias: tensors['linear.bias']! });
  assert.deepEqual(lin.forward(tensor([[1, 1, 1]])).toArray(), [0.5, 0.5]);
});

test('MLP forward, backward, cross-entropy, SGD and Adam match PyTorch', { skip: torchMissing }, async () => {
  const g = new Generator(2024);
  const config = { lr: 0.1, momentum: 0.9, weightDecay: 1e-3, adamLr: 1e-2, steps: 5 };
  const n = 16;
  const model = new Sequential(new Linear(20, 32, { generator: g }), new ReLU(), new Linear(32, 5, { generator: g }));
  const x = randn([n, 20], { generator: g });
  const labels = Array.from({ length: n }, () => g.nextInt(5));
  const init = model.stateDict();
  const src = join(dir, 'parity-in.safetensors');
  const dst = join(dir, 'parity-out.safetensors');
  await saveSafetensors(
    src,
    { w1: init['0.weight']!, b1: init['0.bias']!, w2: init['2.weight']!, b2: init['2.bias']!, x, y: tensor(labels) },
    { config: JSON.stringify(config) },
  );
  await torchHelper('parity', src, dst);
  const want = (await loadSafetensors(dst)).tensors;

  const names = { w1: '0.weight', b1: '0.bias', w2: '2.weight', b2: '2.bias' } as const;
  const fresh = () => {
    const m = new Sequential(new Linear(20, 32), new ReLU(), new Linear(32, 5));
    m.loadStateDict(init);
    return m;
  };
  const m = fresh();
  const logits = m.forward(x);
  const loss = crossEntropy(logits, labels);
  await loss.backward();
  assertClose(logits, want.logits!, 'logits');
  assertClose(loss.reshape([1]), want.loss!, 'loss');
  const params = Object.fromEntries(m.namedParameters());
  for (const [short, long] of Object.entries(names))
    assertClose(params[long]!.grad!, want[`grad.${short}`]!, `grad.${short}`);

  for (const optName of ['sgd', 'adam'] as const) {
    const mm = fresh();
    const opt =
      optName === 'sgd'
        ? new SGD(mm.parameters(), { lr: config.lr, momentum: config.momentum, weightDecay: config.weightDecay })
        : new Adam(mm.parameters(), { lr: config.adamLr, weightDecay: config.weightDecay });
    const losses: number[] = [];
    for (let s = 0; s < config.steps; s++) {
      opt.zeroGrad();
      const l = crossEntropy(mm.forward(x), labels);
      losses.push(l.item());
      await l.backward();
      opt.step();
    }
    assertClose(tensor(losses), want[`${optName}.losses`]!, `${optName} losses`);
    const p = Object.fromEntries(mm.namedParameters());
    for (const [short, long] of Object.entries(names))
      assertClose(p[long]!, want[`${optName}.${short}`]!, `${optName}.${short}`);
  }
});

test(
  "DistributedSampler shards equal PyTorch's for the same seed and epoch, shuffled or not",
  { skip: torchMissing },
  async () => {
    const specs = [
      { length: 103, num_replicas: 4, rank: 1, seed: 0, epoch: 0 },
      { length: 103, num_replicas: 4, rank: 3, seed: 0, epoch: 5 },
      { length: 1000, num_replicas: 3, rank: 2, seed: 17, epoch: 2, drop_last: true },
      { length: 10, num_replicas: 3, rank: 0, shuffle: false },
      { length: 5, num_replicas: 8, rank: 7, seed: 1, epoch: 1 },
    ];
    const out = join(dir, 'sampler.json');
    await torchHelper('sampler', JSON.stringify(specs), out);
    const want = JSON.parse(readFileSync(out, 'utf8')) as number[][];
    specs.forEach((s, i) => {
      const mine = new DistributedSampler({
        length: s.length,
        numReplicas: s.num_replicas,
        rank: s.rank,
        seed: s.seed ?? 0,
        epoch: s.epoch ?? 0,
        shuffle: s.shuffle ?? true,
        dropLast: s.drop_last ?? false,
      });
      assert.deepEqual(mine.indices(), want[i], `spec ${JSON.stringify(s)}`);
    });
  },
);

test('conv2d forward and backward match PyTorch with stride and padding', { skip: torchMissing }, async () => {
  const g = new Generator(5);
  const x = randn([2, 3, 9, 8], { generator: g, requiresGrad: true });
  const w = randn([4, 3, 3, 2], { generator: g, requiresGrad: true });
  const b = randn([4], { generator: g, requiresGrad: true });
  const config = { stride: [2, 1], padding: [1, 0] };
  const y = conv2d(x, w, b, { stride: [2, 1], padding: [1, 0] });
  const gy = randn(y.shape, { generator: g });
  await y.backward(gy);
  const src = join(dir, 'conv-in.safetensors');
  const dst = join(dir, 'conv-out.safetensors');
  await saveSafetensors(src, { x, w, b, gy }, { config: JSON.stringify(config) });
  await torchHelper('conv', src, dst);
  const want = (await loadSafetensors(dst)).tensors;
  assertClose(y, want.y!, 'y');
  assertClose(x.grad!, want.gx!, 'grad x');
  assertClose(w.grad!, want.gw!, 'grad w');
  assertClose(b.grad!, want.gb!, 'grad b');
});
