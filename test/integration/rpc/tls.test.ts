// Mutual TLS between workers, with certificates made by openssl in a temp dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RpcError } from '../../../rpc/index.js';
import { startWorld, stopWorld } from './helpers.js';
import { haveOpenssl, makeTestCa, makeTestCert } from '../../helpers/tls.js';

function makeCerts(dir: string, prefix: string): { caFile: string; certFile: string; keyFile: string } {
  const ca = makeTestCa(dir, `${prefix}-`);
  const leaf = makeTestCert(dir, ca, `${prefix}-leaf`, 'localhost');
  return { caFile: ca.cert, certFile: leaf.cert, keyFile: leaf.key };
}

test(
  'workers talk over mutual TLS, and a worker with a certificate from another CA cannot join',
  { skip: haveOpenssl() ? false : 'openssl not installed' },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'tensile-rpc-tls-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const tls = makeCerts(dir, 'a');
    const w = await startWorld(2, (a) => a.registerFunction('add', ((x: number, y: number) => x + y) as never), {
      tls,
    });
    t.after(() => stopWorld(w));
    assert.equal(await w[0]!.rpcAsync(1, 'add', [40, 2]), 42);
    assert.equal(await w[1]!.rpcAsync(0, 'add', [1, 2]), 3);
    // The raw-socket data channel is not encrypted, so with TLS it is off and everything stays on gRPC.
    assert.equal(w[0]!.dataListener(), null);
    assert.equal(w[0]!.rawConnTo(1)!.dataBytesOut, 0);

    // A world whose rank 1 holds a certificate of an unrelated CA never forms.
    const other = makeCerts(dir, 'b');
    const { createAgent } = await import('../../../rpc/index.js');
    const { freePort } = await import('../../../common/free-port.js');
    const port = await freePort();
    const a0 = createAgent({
      rank: 0,
      worldSize: 2,
      bootstrapPort: port,
      masterAddr: '127.0.0.1',
      tls,
      initTimeoutMs: 1500,
    });
    const a1 = createAgent({
      rank: 1,
      worldSize: 2,
      bootstrapPort: port,
      masterAddr: '127.0.0.1',
      tls: other,
      initTimeoutMs: 1500,
    });
    const results = await Promise.allSettled([a0.start(), a1.start()]);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.ok((r as PromiseRejectedResult).reason instanceof RpcError);
    }
  },
);
