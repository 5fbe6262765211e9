import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CollectiveError } from '../../../collective/api.js';
import { resolveWorkerConfig } from '../../../collective/index.js';
import { checkReduceOp, finishAvg, reduceInto, tcpDType } from '../../../collective/reduce-ops.js';

const env = { RANK: '1', WORLD_SIZE: '4', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500', LOCAL_RANK: '1' };

function invalid(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof CollectiveError, String(e));
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.equal(e.terminal, true);
    assert.match(e.message, re);
    return true;
  });
}

describe('worker environment', () => {
  it('reads rank, world size, master address and port, and local rank from the environment', () => {
    const c = resolveWorkerConfig({}, env);
    assert.deepEqual(
      {
        rank: c.rank,
        worldSize: c.worldSize,
        localRank: c.localRank,
        masterAddr: c.masterAddr,
        masterPort: c.masterPort,
        backend: c.backend,
      },
      { rank: 1, worldSize: 4, localRank: 1, masterAddr: '127.0.0.1', masterPort: 29500, backend: 'auto' },
    );
  });

  it('lets options override the environment and defaults LOCAL_RANK to 0', () => {
    const c = resolveWorkerConfig({ rank: 0, worldSize: 1, backend: 'tcp' }, { MASTER_ADDR: 'h', MASTER_PORT: '1' });
    assert.equal(c.rank, 0);
    assert.equal(c.localRank, 0);
    assert.equal(c.backend, 'tcp');
  });

  it('rejects a non-numeric RANK quoting the value', () =>
    invalid(() => resolveWorkerConfig({}, { ...env, RANK: 'abc' }), /RANK="abc".*integer/));
  it('rejects a rank not below the world size', () =>
    invalid(() => resolveWorkerConfig({}, { ...env, RANK: '4' }), /RANK 4.*WORLD_SIZE \(4\)/));
  it('rejects a missing WORLD_SIZE', () =>
    invalid(() => resolveWorkerConfig({}, { ...env, WORLD_SIZE: undefined }), /WORLD_SIZE is not set/));
  it('rejects a port out of range', () =>
    invalid(() => resolveWorkerConfig({}, { ...env, MASTER_PORT: '70000' }), /MASTER_PORT="70000".*65535/));
  it('rejects an empty MASTER_ADDR', () =>
    invalid(() => resolveWorkerConfig({}, { ...env, MASTER_ADDR: ' ' }), /MASTER_ADDR/));
  it('rejects an unknown backend', () =>
    invalid(() => resolveWorkerConfig({ backend: 'mpi' as unknown as 'tcp' }, env), /backend "mpi"/));
  it('rejects a non-positive timeout', () => invalid(() => resolveWorkerConfig({ timeoutMs: 0 }, env), /timeoutMs 0/));
  it('reads tuning knobs and rejects bad ones', () => {
    assert.equal(resolveWorkerConfig({}, { ...env, TENSILE_TCP_SEGMENT_BYTES: '65536' }).tuning.segmentBytes, 65536);
    invalid(
      () => resolveWorkerConfig({}, { ...env, TENSILE_TCP_PIPELINE_DEPTH: '0' }),
      /TENSILE_TCP_PIPELINE_DEPTH="0"/,
    );
  });
});

describe('reduction kernels', () => {
  it('apply sum, prod, min, max and avg element-wise', () => {
    const src = new Int32Array([4, -1, 7]);
    const cases: [string, number[]][] = [
      ['sum', [6, 2, 12]],
      ['prod', [8, -3, 35]],
      ['min', [2, -1, 5]],
      ['max', [4, 3, 7]],
    ];
    for (const [op, want] of cases) {
      const dst = new Int32Array([2, 3, 5]);
      reduceInto(dst, src, checkReduceOp(op, 'test'));
      assert.deepEqual([...dst], want, op);
    }
    const avg = new Int32Array([7, -7]);
    finishAvg(avg, 2);
    assert.deepEqual([...avg], [3, -3], 'int32 avg truncates toward zero');
    const favg = new Float64Array([7]);
    finishAvg(favg, 2);
    assert.deepEqual([...favg], [3.5]);
  });

  it('min and max propagate NaN', () => {
    const dst = new Float32Array([1, NaN]);
    reduceInto(dst, new Float32Array([NaN, 1]), 'max');
    assert.ok(Number.isNaN(dst[0]) && Number.isNaN(dst[1]));
  });

  it('rejects unknown ops and buffer types naming them', () => {
    invalid(() => checkReduceOp('median', 'allreduce'), /"median".*sum, prod, min, max, avg/);
    invalid(() => tcpDType(new Uint8Array(2) as unknown as Float32Array, undefined, 'allreduce'), /Uint8Array/);
    invalid(
      () => tcpDType(new Uint16Array(2), { dtype: 'float16' }, 'allreduce'),
      /only supported by the nccl backend/,
    );
    invalid(() => tcpDType(new Float32Array(2), { dtype: 'int32' }, 'allreduce'), /'int32' does not match the float32/);
  });
});
