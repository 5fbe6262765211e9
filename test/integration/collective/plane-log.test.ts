// The data plane choice is said once per world, by rank 0, with the reason when it is the JavaScript path; the other
// ranks say nothing. Two ranks in this process over a real store; no transport is needed on the JS path.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ProcessGroup } from '../../../collective/api.js';
import { openDataPlane } from '../../../collective/net-plane.js';
import { connectStore, createStoreServer, type StoreClient } from '../../../collective/store.js';
import type { TcpTransport } from '../../../collective/tcp-transport.js';
import { noopLogger, type Logger } from '../../../common/logger.js';

interface Said {
  readonly rank: number;
  readonly level: string;
  readonly fields: Record<string, unknown>;
  readonly msg: string;
}

function capture(rank: number, said: Said[]): Logger {
  const at =
    (level: string) =>
    (o: object | string, msg?: string): void =>
      void said.push({
        rank,
        level,
        fields: typeof o === 'string' ? {} : (o as Record<string, unknown>),
        msg: msg ?? String(o),
      });
  return { ...noopLogger, info: at('info'), warn: at('warn') };
}

test('the JavaScript path is reported once, by rank 0, naming why', async (t) => {
  const server = await createStoreServer({ host: '127.0.0.1', port: 0 });
  const stores: StoreClient[] = [];
  t.after(async () => {
    for (const s of stores) await s.close();
    await server.close();
  });
  for (let i = 0; i < 2; i++)
    stores.push(await connectStore({ host: '127.0.0.1', port: server.port, timeoutMs: 5000 }));
  const said: Said[] = [];
  const tcp = [0, 1].map((rank) => ({ rank, worldSize: 2 }) as unknown as ProcessGroup);
  const groups = await Promise.all(
    [0, 1].map((rank) =>
      openDataPlane(tcp[rank]!, null as unknown as TcpTransport, {
        rank,
        worldSize: 2,
        store: stores[rank]!,
        timeoutMs: 10_000,
        logger: capture(rank, said),
        prefix: 'test/plane-log',
        // Rank 1 refuses the native planes: every rank takes the JS path (the world decides as one).
        transport: rank === 1 ? 'js' : undefined,
      }),
    ),
  );
  assert.equal(groups[0], tcp[0], 'rank 0 keeps its TCP group');
  assert.equal(groups[1], tcp[1], 'rank 1 keeps its TCP group');
  const plane = said.filter((s) => s.msg.startsWith('collective: data plane'));
  assert.equal(plane.length, 1, JSON.stringify(said));
  assert.equal(plane[0]!.rank, 0);
  assert.equal(plane[0]!.msg, 'collective: data plane is the JS TCP transport');
  assert.match(String(plane[0]!.fields.reason), /rank 1: TENSILE_COLLECTIVE_TRANSPORT=js/);
});
