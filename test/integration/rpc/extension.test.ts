// The AgentExtension seam (rpc/agent-extension.ts): what distributed autograd uses, open to any extension. A
// tracing extension tags calls with a trace id that the callee sees, owns its own value tag and message type,
// and hears about lost peers; the agent knows none of it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { RpcError, type AgentExtension, type RpcAgent } from '../../../rpc/index.js';
import { DistAutograd } from '../../../rpc/dist-autograd.js';
import { startWorld, stopWorld, waitFor } from './helpers.js';

/** A made-up wire type for this extension's own requests (free in rpc/frame.ts's request range). */
const TRACE_DUMP = 40;

class Tracing implements AgentExtension {
  readonly key = 'trace';
  readonly als = new AsyncLocalStorage<string>();
  readonly seen: string[] = [];
  readonly lost: number[] = [];
  callMetadata(): string | undefined {
    return this.als.getStore();
  }
  enter<T>(metadata: unknown, _src: number, fn: () => Promise<T>): Promise<T> {
    return this.als.run(String(metadata), fn);
  }
  encodeHook() {
    return (v: object) => (v instanceof Date ? { tag: 'date', data: v.toISOString() } : undefined);
  }
  decodeHook() {
    return (tag: string, data: unknown) => (tag === 'date' ? new Date(String(data)) : undefined);
  }
  handle(type: number, src: number, body: unknown): Promise<unknown> | undefined {
    if (type !== TRACE_DUMP) return undefined;
    return Promise.resolve({ from: src, seen: this.seen, body });
  }
  onPeerLost(rank: number): void {
    this.lost.push(rank);
  }
}

let w: RpcAgent[] = [];
const tracing = new Map<RpcAgent, Tracing>();
const trace = (a: RpcAgent): Tracing => tracing.get(a)!;

before(async () => {
  w = await startWorld(3, (a) => {
    const t = new Tracing();
    tracing.set(a, t);
    a.use(t);
    a.registerFunction('record', (() => {
      const id = t.als.getStore() ?? '(none)';
      t.seen.push(id);
      return id;
    }) as never);
    a.registerFunction('relay', ((to: number) => a.rpcAsync(to, 'record')) as never);
    a.registerFunction('later', ((d: Date) => new Date(d.getTime() + 1000)) as never);
  });
});
after(() => stopWorld(w));

test("a call carries the caller's extension metadata, and the callee's onward calls carry it too", async () => {
  const [a0] = w as [RpcAgent];
  assert.equal(await trace(a0).als.run('t-1', () => a0.rpcAsync(1, 'record')), 't-1');
  assert.equal(await trace(a0).als.run('t-2', () => a0.rpcAsync(1, 'relay', [2])), 't-2');
  assert.equal(await a0.rpcAsync(1, 'record'), '(none)');
  assert.deepEqual(trace(w[1]!).seen, ['t-1', '(none)']);
  assert.deepEqual(trace(w[2]!).seen, ['t-2']);
  assert.equal(await trace(a0).als.run('t-3', () => a0.remote<string>(2, 'record').toHere()), 't-3');
});

test("an extension's value tags and message types travel without the agent knowing them", async () => {
  const [a0] = w as [RpcAgent];
  const d = (await a0.rpcAsync(1, 'later', [new Date(0)])) as Date;
  assert.ok(d instanceof Date);
  assert.equal(d.getTime(), 1000);
  const dump = (await a0.request(2, TRACE_DUMP, { q: 1 })) as { from: number; body: unknown };
  assert.equal(dump.from, 0);
  assert.deepEqual(dump.body, { q: 1 });
});

test('both built-in and added extensions are found by class; a second extension under a taken key is refused', () => {
  const a = w[0]!;
  assert.ok(a.extension(DistAutograd) instanceof DistAutograd);
  assert.equal(a.extension(Tracing), trace(a));
  assert.throws(
    () => a.use(new Tracing()),
    (e: unknown) =>
      e instanceof RpcError && e.code === 'INVALID_ARGUMENT' && /key 'trace' is already installed/.test(e.message),
  );
});

test('extensions hear about a lost peer', async () => {
  const a2 = w[2]!;
  await a2.shutdown({ graceful: false });
  await waitFor(() => trace(w[0]!).lost.includes(2) && trace(w[1]!).lost.includes(2), 10_000, 'peer 2 reported lost');
});
