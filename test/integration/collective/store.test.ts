import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { CollectiveError } from '../../../collective/api.js';
import { connectStore, createStoreServer, type StoreClient, type StoreServer } from '../../../collective/store.js';
import { freePort } from '../../../common/free-port.js';
import { withTimeout } from '../../../common/timeout.js';

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

async function setup(
  t: { after(fn: () => Promise<void> | void): void },
  clients = 1,
): Promise<{ server: StoreServer; stores: StoreClient[] }> {
  const server = await createStoreServer({ host: '127.0.0.1', port: 0 });
  const stores: StoreClient[] = [];
  t.after(async () => {
    for (const s of stores) await s.close();
    await server.close();
  });
  for (let i = 0; i < clients; i++)
    stores.push(await connectStore({ host: '127.0.0.1', port: server.port, timeoutMs: 5000 }));
  return { server, stores };
}

async function rejectsWith(p: Promise<unknown>, code: string, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof CollectiveError, String(e));
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

describe('bootstrap store', () => {
  it('set then get returns the bytes, and get waits for a later set from another client', async (t) => {
    const {
      stores: [a, b],
    } = await setup(t, 2);
    await a!.set('k', 'v1');
    assert.equal(text(await b!.get('k')), 'v1');
    const waiting = b!.get('later', 3000);
    await a!.set('later', new Uint8Array([1, 2, 3]));
    assert.deepEqual([...(await waiting)], [1, 2, 3]);
  });

  it('get and wait reject with TIMEOUT naming the missing keys when nobody sets them', async (t) => {
    const {
      stores: [a],
    } = await setup(t);
    await rejectsWith(a!.get('never', 100), 'TIMEOUT', /never/);
    await a!.set('one', '1');
    await rejectsWith(a!.wait(['one', 'two'], 100), 'TIMEOUT', /two/);
  });

  it('wait resolves once every key exists', async (t) => {
    const {
      stores: [a, b],
    } = await setup(t, 2);
    const w = a!.wait(['x', 'y'], 3000);
    await b!.set('x', '1');
    await b!.set('y', '2');
    await w;
  });

  it('add is atomic across concurrent clients and treats a missing key as zero', async (t) => {
    const { stores } = await setup(t, 3);
    const results = await Promise.all(stores.flatMap((s) => [s.add('ctr', 1), s.add('ctr', 2)]));
    assert.deepEqual([...results].sort((x, y) => x - y).at(-1), 9);
    assert.equal(new Set(results).size, 6, 'every add saw a distinct value');
    assert.equal(text(await stores[0]!.get('ctr')), '9');
    await stores[0]!.set('word', 'abc');
    await rejectsWith(stores[0]!.add('word', 1), 'STORE', /not an integer/);
  });

  it('compareSet swaps only on a match and returns the value now stored', async (t) => {
    const {
      stores: [a],
    } = await setup(t);
    assert.equal(text(await a!.compareSet('c', '', 'first')), 'first');
    assert.equal(text(await a!.compareSet('c', 'wrong', 'second')), 'first');
    assert.equal(text(await a!.compareSet('c', 'first', 'second')), 'second');
    assert.equal(text(await a!.compareSet('absent', 'x', 'y')), 'x');
    await rejectsWith(a!.get('absent', 50), 'TIMEOUT');
  });

  it('delete reports whether the key existed', async (t) => {
    const {
      stores: [a],
    } = await setup(t);
    await a!.set('d', '1');
    assert.equal(await a!.delete('d'), true);
    assert.equal(await a!.delete('d'), false);
  });

  it('a garbage frame closes only that connection and the server keeps serving', async (t) => {
    const {
      server,
      stores: [a],
    } = await setup(t);
    // The server must close a connection that sends garbage (bounded: 5 s) and keep serving the others.
    const serverCloses = (bytes: Buffer, what: string): Promise<void> => {
      const s = connect({ host: '127.0.0.1', port: server.port }, () => s.write(bytes));
      s.on('error', () => {});
      const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
      return withTimeout(closed, 5000, what, () => {
        s.destroy();
        return new Error(`server did not close the ${what} connection within 5 s`);
      });
    };
    await serverCloses(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]), 'garbage');
    // A well-sized frame with an unknown op.
    await serverCloses(Buffer.from([0, 0, 0, 11, 99, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), 'unknown-op');
    await a!.set('still', 'ok');
    assert.equal(text(await a!.get('still')), 'ok');
  });

  it('connectStore retries until the server comes up', async (t) => {
    const port = await freePort();
    const pending = connectStore({ host: '127.0.0.1', port, timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 300));
    const server = await createStoreServer({ host: '127.0.0.1', port });
    const store = await pending;
    t.after(async () => {
      await store.close();
      await server.close();
    });
    await store.set('up', 'yes');
    assert.equal(text(await store.get('up')), 'yes');
  });

  it('connectStore rejects with TIMEOUT naming the address when nobody listens', async () => {
    const port = await freePort();
    await rejectsWith(
      connectStore({ host: '127.0.0.1', port, timeoutMs: 300 }),
      'TIMEOUT',
      new RegExp(`127\\.0\\.0\\.1:${port}`),
    );
  });

  it('a pending get rejects with STORE when the server goes away, and later calls reject too', async (t) => {
    const {
      server,
      stores: [a],
    } = await setup(t);
    const pending = a!.get('nothing', 5000);
    await server.close();
    await rejectsWith(pending, 'STORE');
    await rejectsWith(a!.set('x', 'y'), 'STORE');
  });

  it('bad client arguments are refused with INVALID_ARGUMENT naming the value', async () => {
    await rejectsWith(connectStore({ host: '127.0.0.1', port: 70000, timeoutMs: 100 }), 'INVALID_ARGUMENT', /70000/);
    await rejectsWith(connectStore({ host: '', port: 1234, timeoutMs: 100 }), 'INVALID_ARGUMENT', /host/);
  });
});
