// Live recovery's state transfer over a real TCP process group (three ranks in this process): a holder's model,
// optimizer and counters reach the ranks without state intact; a receiver refuses a model that does not fit and
// corrupt data, naming the tensor.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { initProcessGroup } from '../../../collective/index.js';
import type { HostBuffer, ProcessGroup } from '../../../collective/api.js';
import { ElasticState } from '../../../tensor/elastic-state.js';
import { Generator, Linear, ReLU, SGD, Sequential, crossEntropy, randn } from '../../../tensor/index.js';
import {
  StateTransferError,
  exchangeClaims,
  planStateAgreement,
  receiveState,
  sendState,
  stateFingerprint,
} from '../../../tensor/state-transfer.js';
import { freePort } from '../../../common/free-port.js';
import { tempDir } from './helpers.js';

async function world(t: TestContext, n: number): Promise<ProcessGroup[]> {
  const port = await freePort();
  const groups = await Promise.all(
    Array.from({ length: n }, (_, rank) =>
      initProcessGroup({
        backend: 'tcp',
        rank,
        worldSize: n,
        masterAddr: '127.0.0.1',
        masterPort: port,
        timeoutMs: 20_000,
      }),
    ),
  );
  t.after(() => groups.forEach((g) => g.abort('test over')));
  return groups;
}

function worker(dir: string, rank: number, worldSize: number, hidden = 5, seed = rank + 1) {
  const g = new Generator(seed);
  const model = new Sequential(
    new Linear(6, hidden, { generator: g }),
    new ReLU(),
    new Linear(hidden, 3, { generator: g }),
  );
  const opt = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
  const state = new ElasticState({ dir, rank, worldSize, batchSize: 6, handleSigterm: false })
    .track('model', model)
    .track('optimizer', opt);
  let best = 0;
  state.trackJson('best', { get: () => best, set: (v) => (best = Number(v)) });
  return {
    model,
    opt,
    state,
    setBest: (v: number) => (best = v),
    best: () => best,
    async train(steps: number): Promise<void> {
      const gen = new Generator(99);
      for (let s = 0; s < steps; s++) {
        opt.zeroGrad();
        const loss = crossEntropy(model.call(randn([4, 6], { generator: gen })), new Int32Array([0, 1, 2, 0]));
        await loss.backward();
        opt.step();
        await state.stepDone();
      }
    },
  };
}

/** Wraps a group so that the n-th broadcast this rank takes part in gets one element changed afterwards. */
function corruptingBroadcast(pg: ProcessGroup, nth: number): ProcessGroup {
  let count = 0;
  return new Proxy(pg, {
    get(target, prop, receiver) {
      if (prop === 'broadcast') {
        return async <T extends HostBuffer>(buf: T, root: number) => {
          await target.broadcast(buf, root);
          if (++count === nth) buf[0] = (buf[0] as number) + 1;
          return buf;
        };
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe('live state transfer', () => {
  it('copies model, optimizer, counters and JSON state from the holder to the ranks without state', async (t) => {
    const dir = tempDir(t, 'xfer');
    const pgs = await world(t, 3);
    const ws = pgs.map((_, r) => worker(dir, r, 3));
    await ws[1]!.train(5);
    ws[1]!.setBest(0.75);
    ws[1]!.state.samplesConsumed = 30;
    const before = ws[1]!.state.snapshot();
    const claims = await Promise.all(
      pgs.map((pg, r) =>
        exchangeClaims(
          pg,
          r === 1
            ? { hasState: true, step: ws[1]!.state.step, fingerprint: stateFingerprint(before) }
            : { hasState: false, step: 0, fingerprint: 0 },
        ),
      ),
    );
    const plan = planStateAgreement(claims[0]!);
    assert.deepEqual(plan, { kind: 'peer', source: 1, step: 5, receivers: [0, 2], divergent: [] });
    // Every rank makes the same sub-group with the source first, as LiveRecovery does.
    const subs = await Promise.all(pgs.map((pg) => pg.newGroup([1, 0, 2])));
    const [sent, got0, got2] = await Promise.all([
      sendState(subs[1]!, before),
      receiveState(subs[0]!, ws[0]!.state.snapshot(), 1),
      receiveState(subs[2]!, ws[2]!.state.snapshot(), 1),
    ]);
    assert.equal(got0.bytes, sent.bytes);
    assert.ok(sent.bytes > 0);
    for (const [r, got] of [
      [0, got0],
      [2, got2],
    ] as const) {
      ws[r]!.state.applySnapshot(got.tensors, got.state, 'rank 1');
      const after = ws[r]!.state.snapshot();
      assert.equal(stateFingerprint(after), stateFingerprint(before), `rank ${r} holds rank 1's state`);
      assert.equal(ws[r]!.state.step, 5);
      assert.equal(ws[r]!.state.samplesConsumed, 30);
      assert.equal(ws[r]!.best(), 0.75);
      assert.deepEqual(Object.keys(after.tensors).sort(), Object.keys(before.tensors).sort());
      assert.ok(
        Object.keys(after.tensors).some((k) => k.includes('momentum_buffer')),
        'the optimizer state travelled',
      );
    }
    // The receivers continue exactly like the source: one more step each, same parameters.
    await Promise.all(ws.map((w) => w.train(1).then(() => undefined)));
    const p1 = ws[1]!.model.parameters().map((p) => Array.from(p.data));
    for (const r of [0, 2])
      assert.deepEqual(
        ws[r]!.model.parameters().map((p) => Array.from(p.data)),
        p1,
      );
  });

  it('refuses a state whose tensors do not fit this worker’s model, naming the tensor', async (t) => {
    const dir = tempDir(t, 'xfer-mismatch');
    const pgs = await world(t, 2);
    const src = worker(dir, 0, 2, 5);
    const dst = worker(dir, 1, 2, 7); // another hidden width
    const [, err] = await Promise.all([
      sendState(pgs[0]!, src.state.snapshot()),
      receiveState(pgs[1]!, dst.state.snapshot(), 0).then(
        () => null,
        (e: unknown) => e,
      ),
    ]);
    assert.ok(err instanceof StateTransferError, `expected a StateTransferError, got ${String(err)}`);
    assert.equal(err.code, 'STATE_MISMATCH');
    assert.match(err.message, /state from rank 0: tensor model\/0\.weight: shape \[5,6\], this worker's is \[7,6\]/);
    assert.equal(err.tensorName, 'model/0.weight');
    // The group is still in step after a refusal: the whole payload was taken.
    const x = new Float32Array([1]);
    await Promise.all(pgs.map((pg) => pg.allreduce(x.slice())));
  });

  it('detects data corrupted in transit by its checksum, naming the tensor', async (t) => {
    const dir = tempDir(t, 'xfer-corrupt');
    const pgs = await world(t, 2);
    const src = worker(dir, 0, 2);
    await src.train(2);
    const dst = worker(dir, 1, 2);
    // Broadcasts: header, manifest, data: corrupt the first element of the data.
    const [, err] = await Promise.all([
      sendState(pgs[0]!, src.state.snapshot()),
      receiveState(corruptingBroadcast(pgs[1]!, 3), dst.state.snapshot(), 0).then(
        () => null,
        (e: unknown) => e,
      ),
    ]);
    assert.ok(err instanceof StateTransferError, `expected a StateTransferError, got ${String(err)}`);
    assert.equal(err.code, 'CORRUPT');
    const first = Object.keys(src.state.snapshot().tensors).sort()[0]!;
    assert.equal(err.tensorName, first);
    assert.match(err.message, new RegExp(`tensor ${first.replace(/[.]/g, '\\.')}: checksum [0-9a-f]+ does not match`));
    assert.equal(dst.state.step, 0, 'nothing was applied');
  });

  it('rejects a header that is not a state transfer', async (t) => {
    const pgs = await world(t, 2);
    const dir = tempDir(t, 'xfer-proto');
    const dst = worker(dir, 1, 2);
    const [, err] = await Promise.all([
      pgs[0]!.broadcast(new Float64Array([1, 2, 3, 4]), 0),
      receiveState(pgs[1]!, dst.state.snapshot(), 0).then(
        () => null,
        (e: unknown) => e,
      ),
    ]);
    assert.ok(err instanceof StateTransferError);
    assert.equal(err.code, 'PROTOCOL');
    assert.match(err.message, /state from rank 0: header 1\/2: expected magic/);
  });
});
