import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DataLoader,
  DistributedSampler,
  Generator,
  TensorDataset,
  arange,
  torchRandperm,
} from '../../../tensor/index.js';

test('DistributedSampler without shuffle gives the same index sets as PyTorch, padded by wrapping', () => {
  // torch.utils.data.DistributedSampler(range(10), num_replicas=3, rank=r, shuffle=False)
  const sets = [0, 1, 2].map((rank) =>
    new DistributedSampler({ length: 10, numReplicas: 3, rank, shuffle: false }).indices(),
  );
  assert.deepEqual(sets, [
    [0, 3, 6, 9],
    [1, 4, 7, 0],
    [2, 5, 8, 1],
  ]);
  const dropped = [0, 1, 2].map((rank) =>
    new DistributedSampler({ length: 10, numReplicas: 3, rank, shuffle: false, dropLast: true }).indices(),
  );
  assert.deepEqual(dropped, [
    [0, 3, 6],
    [1, 4, 7],
    [2, 5, 8],
  ]);
  // More replicas than samples: padding repeats the data set.
  assert.deepEqual(new DistributedSampler({ length: 2, numReplicas: 5, rank: 4, shuffle: false }).indices(), [0]);
});

test('shuffled shards are disjoint, cover the data set, agree across ranks and change with the epoch', () => {
  const shards = (epoch: number) =>
    [0, 1, 2, 3].map((rank) => new DistributedSampler({ length: 40, numReplicas: 4, rank, seed: 7, epoch }).indices());
  const e0 = shards(0);
  assert.deepEqual(
    [...e0.flat()].sort((a, b) => a - b),
    Array.from({ length: 40 }, (_, i) => i),
  );
  assert.deepEqual(shards(0), e0);
  assert.notDeepEqual(shards(1), e0);
  const s = new DistributedSampler({ length: 40, numReplicas: 4, rank: 0, seed: 7 });
  s.setEpoch(1);
  assert.deepEqual(s.indices(), shards(1)[0]);
  assert.throws(() => new DistributedSampler({ length: 4, numReplicas: 2, rank: 2 }), /rank 2 must be in \[0, 1\]/);
});

test('DataLoader batches rows of a TensorDataset, shuffles reproducibly and honours dropLast', () => {
  const ds = new TensorDataset(arange(10).reshape([5, 2]), arange(5));
  const plain = [...new DataLoader(ds, { batchSize: 2 })];
  assert.equal(plain.length, 3);
  assert.deepEqual(plain[0]![0]!.tolist(), [
    [0, 1],
    [2, 3],
  ]);
  assert.deepEqual(plain[2]![1]!.toArray(), [4]);
  assert.equal(new DataLoader(ds, { batchSize: 2, dropLast: true }).length, 2);
  const a = [...new DataLoader(ds, { batchSize: 5, shuffle: true, generator: new Generator(1) })][0]![1]!.toArray();
  const b = [...new DataLoader(ds, { batchSize: 5, shuffle: true, generator: new Generator(1) })][0]![1]!.toArray();
  assert.deepEqual(a, b);
  assert.deepEqual([...a].sort(), [0, 1, 2, 3, 4]);
  const sampler = new DistributedSampler({ dataset: ds, numReplicas: 2, rank: 1, shuffle: false });
  const sharded = [...new DataLoader(ds, { batchSize: 8, sampler })];
  assert.deepEqual(sharded[0]![1]!.toArray(), [1, 3, 0]);
});

test('torchRandperm reproduces torch.randperm with a seeded CPU generator', () => {
  // Values printed by PyTorch 1.13: torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
  assert.deepEqual(torchRandperm(10, 0), [4, 1, 7, 5, 3, 9, 0, 8, 6, 2]);
  assert.deepEqual(torchRandperm(17, 42), [13, 4, 3, 15, 8, 16, 9, 11, 12, 10, 6, 2, 1, 7, 14, 0, 5]);
  assert.deepEqual(torchRandperm(1000, 7).slice(0, 10), [615, 284, 599, 580, 347, 92, 383, 891, 452, 41]);
});
