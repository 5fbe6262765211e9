import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CollectiveError, initProcessGroup, type ProcessGroup } from '../../../collective/index.js';
import { freePort } from '../../../common/free-port.js';

async function rejectsWith(p: Promise<unknown>, code: string, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof CollectiveError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    return true;
  });
}

describe('tcp backend argument checks (one rank, in process)', () => {
  it('refuses bad arguments with INVALID_ARGUMENT naming the value, and ops after destroy with CLOSED', async (t) => {
    const pg: ProcessGroup = await initProcessGroup({
      backend: 'tcp',
      rank: 0,
      worldSize: 1,
      masterAddr: '127.0.0.1',
      masterPort: await freePort(),
      timeoutMs: 5000,
    });
    t.after(() => pg.abort('test cleanup'));
    assert.equal(pg.backend, 'tcp');
    await rejectsWith(
      pg.allreduceInto(new Float32Array(3), new Float32Array(4)),
      'INVALID_ARGUMENT',
      /output.length 4 must equal input.length 3/,
    );
    await rejectsWith(
      pg.allreduceInto(new Float32Array(3), new Float64Array(3) as unknown as Float32Array),
      'INVALID_ARGUMENT',
      /Float32Array but output is Float64Array/,
    );
    await rejectsWith(pg.allreduce(new Uint8Array(3) as unknown as Float32Array), 'INVALID_ARGUMENT', /Uint8Array/);
    await rejectsWith(pg.allreduce(new Float32Array(3), 'median' as 'sum'), 'INVALID_ARGUMENT', /"median"/);
    await rejectsWith(pg.broadcast(new Float32Array(3), 1), 'INVALID_ARGUMENT', /root 1.*\[0, 1\)/);
    await rejectsWith(
      pg.allgather(new Float32Array(3), new Float32Array(4)),
      'INVALID_ARGUMENT',
      /output.length 4 must equal input.length 3 × worldSize 1/,
    );
    await rejectsWith(
      pg.reduceScatter(new Float32Array(3), new Float32Array(2)),
      'INVALID_ARGUMENT',
      /input.length 3 must equal output.length 2/,
    );
    await rejectsWith(pg.send(new Float32Array(1), 0), 'INVALID_ARGUMENT', /peer 0/);
    await rejectsWith(pg.allreduce(new Float32Array(1), 'sum', { timeoutMs: -1 }), 'INVALID_ARGUMENT', /timeoutMs -1/);
    await assert.rejects(pg.newGroup([0, 0]), /distinct/);
    const buf = new Float64Array([1.5, 2]);
    await pg.allreduce(buf, 'avg');
    assert.deepEqual([...buf], [1.5, 2], 'a world of one leaves the data as is');
    await pg.destroy();
    await rejectsWith(pg.allreduce(new Float32Array(1)), 'CLOSED', /destroyed/);
  });

  it('initProcessGroup refuses a bad RANK from the environment before touching the network', async () => {
    const saved = process.env.RANK;
    process.env.RANK = 'abc';
    try {
      await rejectsWith(
        initProcessGroup({ backend: 'tcp', worldSize: 2, masterAddr: '127.0.0.1', masterPort: 1 }),
        'INVALID_ARGUMENT',
        /RANK="abc"/,
      );
    } finally {
      if (saved === undefined) delete process.env.RANK;
      else process.env.RANK = saved;
    }
  });

  it("backend 'auto' falls back to tcp when NCCL cannot run here, and 'nccl' then fails with BACKEND_UNAVAILABLE", async (t) => {
    const spec = '../../../collective/native/loader.js';
    const loader = (await import(spec)) as { ncclAvailability(): { ok: boolean } };
    if (loader.ncclAvailability().ok) {
      t.skip('NCCL is available on this machine');
      return;
    }
    const base = { rank: 0, worldSize: 1, masterAddr: '127.0.0.1', timeoutMs: 5000 } as const;
    const pg = await initProcessGroup({ ...base, backend: 'auto', masterPort: await freePort() });
    t.after(() => pg.abort('test cleanup'));
    assert.equal(pg.backend, 'tcp');
    await pg.destroy();
    await assert.rejects(initProcessGroup({ ...base, backend: 'nccl', masterPort: await freePort() }), (e: unknown) => {
      assert.ok(e instanceof CollectiveError, String(e));
      assert.equal(e.code, 'BACKEND_UNAVAILABLE', e.message);
      return true;
    });
  });
});
