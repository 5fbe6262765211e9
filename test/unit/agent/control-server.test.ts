// The agent's control server against real Unix sockets: a good worker, and every kind of bad input (each leaves
// the rank non-live with one clear warning, and the server keeps serving).

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { ControlServer } from '../../../agent/control-server.js';
import { MAX_CONTROL_LINE_BYTES, decodeAgentMessage } from '../../../common/control-protocol.js';
import { noopLogger, type Logger } from '../../../common/logger.js';

const servers: ControlServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

function recordingLogger(): { logger: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const logger: Logger = {
    ...noopLogger,
    warn: (obj, msg) => warnings.push(typeof obj === 'string' ? obj : (msg ?? JSON.stringify(obj))),
    child: () => logger,
  };
  return { logger, warnings };
}

async function start(helloTimeoutMs = 10_000): Promise<{ cs: ControlServer; warnings: string[] }> {
  const { logger, warnings } = recordingLogger();
  const cs = await ControlServer.start({ localRanks: [0, 1], heartbeatIntervalMs: 250, logger, helloTimeoutMs });
  servers.push(cs);
  return { cs, warnings };
}

/** A client that collects the lines it receives and knows when the agent closed it. */
function connect(path: string): { socket: Socket; lines: string[]; closed: Promise<void> } {
  const socket = createConnection(path);
  const lines: string[] = [];
  let buf = '';
  socket.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    lines.push(...parts.filter(Boolean));
  });
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  return { socket, lines, closed };
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const hello = (localRank: number, live = true): string =>
  JSON.stringify({ type: 'hello', version: 1, localRank, pid: process.pid, live }) + '\n';

describe('the agent control server', () => {
  test('a live worker says hello, gets welcome, sends heartbeats and ready, receives a round', async () => {
    const { cs, warnings } = await start();
    const heard: string[] = [];
    cs.setListener({
      hello: (r, m) => heard.push(`hello ${r} live=${m.live}`),
      heartbeat: (r, m) => heard.push(`heartbeat ${r} step=${m.step}`),
      ready: (r, m) => heard.push(`ready ${r} round=${m.round} step=${m.step}`),
      disconnected: (r, why) => heard.push(`gone ${r} ${why}`),
    });
    const c = connect(cs.socketPath(1));
    c.socket.write(hello(1));
    await until(() => c.lines.length === 1, 'welcome');
    assert.deepEqual(decodeAgentMessage(c.lines[0] as string), {
      type: 'welcome',
      version: 1,
      heartbeatIntervalMs: 250,
    });
    assert.ok(cs.isLive(1));
    assert.ok(!cs.isLive(0), 'a rank nobody connected to is not live');
    c.socket.write(
      '{"type":"heartbeat","step":7}\n{"type":"ready","round":2,"step":7,"stateFrom":"self","recoveryMs":3}\n',
    );
    await until(() => heard.length === 3, 'heartbeat and ready');
    const round = {
      type: 'round' as const,
      round: 3,
      rank: 1,
      localRank: 1,
      worldSize: 2,
      localWorldSize: 2,
      groupRank: 0,
      groupWorldSize: 1,
      masterAddr: '127.0.0.1',
      masterPort: 29500,
      restartCount: 0,
    };
    assert.ok(cs.send(1, round));
    assert.ok(!cs.send(0, round), 'nothing to send to without a connection');
    await until(() => c.lines.length === 2, 'round');
    assert.deepEqual(decodeAgentMessage(c.lines[1] as string), round);
    c.socket.end();
    await until(() => heard.length === 4, 'disconnect');
    assert.deepEqual(heard, [
      'hello 1 live=true',
      'heartbeat 1 step=7',
      'ready 1 round=2 step=7',
      'gone 1 connection closed',
    ]);
    assert.ok(!cs.isLive(1));
    assert.deepEqual(warnings, []);
  });

  test('a worker that declares live: false is connected but not live', async () => {
    const { cs } = await start();
    const c = connect(cs.socketPath(0));
    c.socket.write(hello(0, false));
    await until(() => c.lines.length === 1, 'welcome');
    assert.ok(cs.isConnected(0));
    assert.ok(!cs.isLive(0));
    c.socket.destroy();
  });

  const bad: Array<[string, string | Buffer, RegExp]> = [
    ['not JSON', 'hello there\n', /local rank 0: worker message: not JSON/],
    ['binary junk', Buffer.from([0xff, 0x00, 0xfe, 0x0a]), /not JSON/],
    ['an unknown message type', '{"type":"launch-missiles"}\n', /worker message: type: Invalid discriminator/],
    ['a heartbeat before hello', '{"type":"heartbeat","step":1}\n', /expected hello first, got heartbeat/],
    ['a wrong protocol version', '{"type":"hello","version":9,"localRank":0,"pid":1,"live":true}\n', /version/],
    ['a hello with a negative pid', '{"type":"hello","version":1,"localRank":0,"pid":-4,"live":true}\n', /pid/],
    ['a hello for another rank', hello(1), /hello for local rank 1 on the socket of local rank 0/],
    ['a line over the limit', 'x'.repeat(MAX_CONTROL_LINE_BYTES + 10), /longer than 65536 bytes/],
    ['a second hello', hello(0) + hello(0), /a second hello on one connection/],
    ['a bad heartbeat after hello', hello(0) + '{"type":"heartbeat","step":-1}\n', /step: Too small/],
    [
      'an error from the worker',
      hello(0) + '{"type":"error","message":"confused"}\n',
      /reported a protocol error: confused/,
    ],
  ];
  for (const [what, input, expected] of bad) {
    test(`${what}: one clear warning, the connection closed, the rank non-live, the server still serves`, async () => {
      const { cs, warnings } = await start();
      const c = connect(cs.socketPath(0));
      c.socket.write(input);
      await c.closed;
      await until(() => warnings.length > 0, 'a warning');
      assert.equal(warnings.length, 1, warnings.join('\n'));
      assert.match(warnings[0] as string, expected);
      assert.match(warnings[0] as string, /the worker is handled as non-live/);
      assert.ok(!cs.isLive(0));
      // The same rank can still connect properly afterwards.
      const good = connect(cs.socketPath(0));
      good.socket.write(hello(0));
      await until(() => cs.isLive(0), 'a good hello after the bad one');
      good.socket.destroy();
    });
  }

  test('a message cut off by the connection closing is reported as truncated', async () => {
    const { cs, warnings } = await start();
    const c = connect(cs.socketPath(0));
    c.socket.write(hello(0));
    await until(() => cs.isLive(0), 'live');
    c.socket.end('{"type":"heartbeat","st');
    await until(() => warnings.length === 1, 'a warning');
    assert.match(warnings[0] as string, /connection closed in the middle of a message \(23 bytes\)/);
    assert.ok(!cs.isLive(0));
  });

  test('a connection that never says hello is closed after the hello timeout', async () => {
    const { cs, warnings } = await start(200);
    const c = connect(cs.socketPath(0));
    await c.closed;
    assert.match(warnings[0] as string, /no hello within 200 ms/);
  });

  test('a restarted worker replaces the old connection; close removes the socket directory', async () => {
    const { cs } = await start();
    const gone: string[] = [];
    cs.setListener({ disconnected: (r, why) => gone.push(`${r} ${why}`) });
    const a = connect(cs.socketPath(0));
    a.socket.write(hello(0));
    await until(() => cs.isLive(0), 'first live');
    const b = connect(cs.socketPath(0));
    b.socket.write(hello(0));
    await a.closed;
    assert.ok(cs.isLive(0));
    assert.deepEqual(gone, ['0 replaced by a new connection']);
    await cs.close();
    await b.closed;
    assert.ok(!existsSync(cs.dir));
    await cs.close();
  });
});
