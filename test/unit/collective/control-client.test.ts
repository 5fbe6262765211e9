// The worker's control client against a fake agent: a real Unix socket server in the test that plays the agent's
// side of common/control-protocol.ts line by line.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import {
  LineSplitter,
  MAX_CONTROL_LINE_BYTES,
  decodeWorkerMessage,
  encodeControlMessage,
  type RoundMessage,
  type WorkerMessage,
} from '../../../common/control-protocol.js';
import type { Logger } from '../../../common/logger.js';
import { connectControl } from '../../../collective/control-client.js';

interface FakeAgent {
  readonly path: string;
  /** The next connection the worker makes. */
  connection(): Promise<Socket>;
  /** Messages received from the worker on `sock`, decoded, in order. */
  received(sock: Socket): WorkerMessage[];
  /** Waits until `pred` holds for the received messages (bounded). */
  waitFor(sock: Socket, pred: (m: WorkerMessage[]) => boolean, what: string): Promise<WorkerMessage[]>;
  /** Whether the worker closed `sock`. */
  closed(sock: Socket): Promise<void>;
}

function fakeAgent(t: TestContext, onConnect?: (sock: Socket) => void): Promise<FakeAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-ctl-'));
  const path = join(dir, 'control.sock');
  const logs = new Map<Socket, WorkerMessage[]>();
  const waiting: ((s: Socket) => void)[] = [];
  const queued: Socket[] = [];
  const sockets: Socket[] = [];
  const server: Server = createServer((sock) => {
    sockets.push(sock);
    const msgs: WorkerMessage[] = [];
    logs.set(sock, msgs);
    const splitter = new LineSplitter();
    sock.on('data', (d) => {
      for (const line of splitter.push(d)) msgs.push(decodeWorkerMessage(line));
    });
    sock.on('error', () => undefined);
    onConnect?.(sock);
    const w = waiting.shift();
    if (w) w(sock);
    else queued.push(sock);
  });
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return new Promise((resolve) =>
    server.listen(path, () =>
      resolve({
        path,
        connection: () => {
          const s = queued.shift();
          return s ? Promise.resolve(s) : new Promise((r) => waiting.push(r));
        },
        received: (sock) => logs.get(sock) ?? [],
        waitFor: async (sock, pred, what) => {
          const deadline = Date.now() + 10_000;
          while (!pred(logs.get(sock) ?? [])) {
            if (Date.now() > deadline) throw new Error(`fake agent: timed out waiting for ${what}`);
            await new Promise((r) => setTimeout(r, 5));
          }
          return logs.get(sock)!;
        },
        closed: (sock) =>
          new Promise((r) => {
            if (sock.destroyed || sock.readableEnded) r();
            else sock.once('close', () => r());
          }),
      }),
    ),
  );
}

/** Answers a hello with a welcome (heartbeat interval `ms`). */
function welcomer(ms: number): (sock: Socket) => void {
  return (sock) => {
    const splitter = new LineSplitter();
    sock.on('data', (d) => {
      for (const line of splitter.push(d)) {
        if (decodeWorkerMessage(line).type === 'hello') {
          sock.write(encodeControlMessage({ type: 'welcome', version: 1, heartbeatIntervalMs: ms }));
        }
      }
    });
  };
}

function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const rec =
    (level: string) =>
    (obj: object | string, msg?: string): void => {
      lines.push(`${level} ${msg ?? ''} ${typeof obj === 'string' ? obj : JSON.stringify(obj)}`);
    };
  const logger: Logger & { lines: string[] } = {
    lines,
    trace: rec('trace'),
    debug: rec('debug'),
    info: rec('info'),
    warn: rec('warn'),
    error: rec('error'),
    child: () => logger,
  };
  return logger;
}

const round = (n: number, rank = 0): RoundMessage => ({
  type: 'round',
  round: n,
  rank,
  localRank: rank,
  worldSize: 2,
  localWorldSize: 2,
  groupRank: 0,
  groupWorldSize: 1,
  masterAddr: '127.0.0.1',
  masterPort: 29500 + n,
  restartCount: 0,
});

describe('control client', () => {
  it('is not live, without connecting, when TENSILE_CONTROL is unset', async () => {
    const c = await connectControl({ env: {} });
    assert.equal(c.live, false);
    assert.match(c.reason!, /TENSILE_CONTROL is not set/);
    c.heartbeat(3);
    assert.equal(await c.nextRound(10), null);
  });

  it('falls back to non-live, naming the path, when the socket does not exist', async () => {
    const logger = recordingLogger();
    const c = await connectControl({ env: { TENSILE_CONTROL: '/nonexistent/tensile.sock' }, logger });
    assert.equal(c.live, false);
    assert.match(c.reason!, /\/nonexistent\/tensile\.sock/);
    assert.ok(logger.lines.some((l) => l.startsWith('warn')));
  });

  it('says hello with its local rank and pid, and is live after the welcome', async (t) => {
    const agent = await fakeAgent(t, welcomer(50));
    const c = await connectControl({ env: { TENSILE_CONTROL: agent.path, LOCAL_RANK: '3' } });
    t.after(() => c.close());
    assert.equal(c.live, true);
    assert.equal(c.heartbeatIntervalMs, 50);
    const sock = await agent.connection();
    const [hello] = await agent.waitFor(sock, (m) => m.length >= 1, 'hello');
    assert.deepEqual(hello, { type: 'hello', version: 1, localRank: 3, pid: process.pid, live: true });
  });

  it('throttles heartbeats to the agent’s interval and always sends the newest step last', async (t) => {
    const agent = await fakeAgent(t, welcomer(200));
    const c = await connectControl({ env: { TENSILE_CONTROL: agent.path } });
    t.after(() => c.close());
    const sock = await agent.connection();
    for (let step = 1; step <= 50; step++) c.heartbeat(step, 0);
    const msgs = await agent.waitFor(
      sock,
      (m) => m.some((x) => x.type === 'heartbeat' && x.step === 50),
      'the trailing heartbeat',
    );
    const beats = msgs.filter((m) => m.type === 'heartbeat');
    assert.deepEqual(beats, [
      { type: 'heartbeat', step: 1, epoch: 0 },
      { type: 'heartbeat', step: 50, epoch: 0 },
    ]);
  });

  it('delivers rounds to listeners at once and the newest one to nextRound', async (t) => {
    const agent = await fakeAgent(t, welcomer(100));
    const c = await connectControl({ env: { TENSILE_CONTROL: agent.path } });
    t.after(() => c.close());
    const sock = await agent.connection();
    const seen: number[] = [];
    c.onRound((r) => seen.push(r.round));
    const waiting = c.nextRound(10_000);
    sock.write(encodeControlMessage(round(4)));
    assert.equal((await waiting)!.round, 4);
    // Two rounds before anyone asks: the older one is obsolete.
    sock.write(encodeControlMessage(round(5)) + encodeControlMessage(round(6, 1)));
    await agent.waitFor(sock, () => seen.length === 3, 'round listeners');
    assert.deepEqual(seen, [4, 5, 6]);
    assert.equal(c.peekRound()!.round, 6);
    const r = await c.nextRound(1000);
    assert.deepEqual(r, round(6, 1));
    assert.equal(await c.nextRound(20), null, 'nothing left after the newest round was taken');
  });

  it('sends ready with the round, step, state source and recovery time', async (t) => {
    const agent = await fakeAgent(t, welcomer(100));
    const c = await connectControl({ env: { TENSILE_CONTROL: agent.path } });
    t.after(() => c.close());
    const sock = await agent.connection();
    c.ready({ round: 2, step: 60, stateFrom: 'peer', recoveryMs: 12.5 });
    const msgs = await agent.waitFor(sock, (m) => m.some((x) => x.type === 'ready'), 'ready');
    assert.deepEqual(msgs.at(-1), { type: 'ready', round: 2, step: 60, stateFrom: 'peer', recoveryMs: 12.5 });
  });

  it('reports lost peers to the agent', async (t) => {
    const agent = await fakeAgent(t, welcomer(100));
    const c = await connectControl({ env: { TENSILE_CONTROL: agent.path } });
    t.after(() => c.close());
    const sock = await agent.connection();
    c.peerLost([2]);
    c.peerLost();
    const msgs = await agent.waitFor(sock, (m) => m.filter((x) => x.type === 'peer-lost').length === 2, 'peer-lost');
    assert.deepEqual(
      msgs.filter((x) => x.type === 'peer-lost'),
      [{ type: 'peer-lost', ranks: [2] }, { type: 'peer-lost' }],
    );
  });

  it('writes a diagnostic report into the directory a dump names', async (t) => {
    const agent = await fakeAgent(t, welcomer(100));
    const c = await connectControl({ env: { TENSILE_CONTROL: agent.path } });
    t.after(() => c.close());
    const sock = await agent.connection();
    const dir = mkdtempSync(join(tmpdir(), 'tensile-dump-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const target = join(dir, 'attempt-0', 'dumps');
    sock.write(encodeControlMessage({ type: 'dump', dir: target }));
    const deadline = Date.now() + 10_000;
    while (!(existsSync(target) && readdirSync(target).length > 0)) {
      assert.ok(Date.now() < deadline, 'no report written within 10 s');
      await new Promise((r) => setTimeout(r, 10));
    }
    const [file] = readdirSync(target);
    const report = JSON.parse(readFileSync(join(target, file!), 'utf8')) as {
      header: { processId: number };
      javascriptStack: unknown;
    };
    assert.equal(report.header.processId, process.pid);
    assert.ok(report.javascriptStack !== undefined, 'the report holds the JavaScript stack');
  });

  for (const [what, bytes, expected] of [
    ['a message that is not JSON', '{"type":"round",\n', /not JSON/],
    ['a round with a bad field', JSON.stringify({ ...round(1), masterPort: 70000 }) + '\n', /masterPort/],
    ['an unknown message type', '{"type":"reboot"}\n', /type/],
    ['a line over the limit', 'x'.repeat(MAX_CONTROL_LINE_BYTES + 10), /longer than/],
  ] as const) {
    it(`answers ${what} with an error, closes, and becomes non-live`, async (t) => {
      const agent = await fakeAgent(t, welcomer(100));
      const logger = recordingLogger();
      const c = await connectControl({ env: { TENSILE_CONTROL: agent.path }, logger });
      t.after(() => c.close());
      const sock = await agent.connection();
      const lost: string[] = [];
      c.onLost((reason) => lost.push(reason));
      const waiting = c.nextRound(10_000);
      sock.write(bytes);
      assert.equal(await waiting, null, 'a waiting nextRound resolves null when the channel is lost');
      const msgs = await agent.waitFor(sock, (m) => m.some((x) => x.type === 'error'), 'the error message');
      const err = msgs.find((m) => m.type === 'error');
      assert.match(err!.type === 'error' ? err!.message : '', expected);
      await agent.closed(sock);
      assert.equal(c.live, false);
      assert.match(c.reason!, expected);
      assert.equal(lost.length, 1);
      assert.ok(
        logger.lines.some((l) => l.startsWith('error')),
        'the protocol error is logged',
      );
      c.heartbeat(5); // a no-op now, not a throw
    });
  }

  it('falls back to non-live when the first answer is not a welcome', async (t) => {
    const agent = await fakeAgent(t, (sock) => sock.write(encodeControlMessage(round(1))));
    const c = await connectControl({ env: { TENSILE_CONTROL: agent.path } });
    assert.equal(c.live, false);
    assert.match(c.reason!, /expected welcome first, got round/);
  });

  it('falls back to non-live when no welcome comes within the bound', async (t) => {
    const agent = await fakeAgent(t);
    const c = await connectControl({ env: { TENSILE_CONTROL: agent.path }, connectTimeoutMs: 100 });
    assert.equal(c.live, false);
    assert.match(c.reason!, /no welcome from the agent within 100 ms/);
  });

  it('notices the agent closing the socket mid-message as a truncation', async (t) => {
    const agent = await fakeAgent(t, welcomer(100));
    const c = await connectControl({ env: { TENSILE_CONTROL: agent.path } });
    const sock = await agent.connection();
    const lost = new Promise<string>((r) => c.onLost(r));
    sock.end('{"type":"round","rou');
    assert.match(await lost, /in the middle of a message \(20 bytes unterminated\)/);
    assert.equal(c.live, false);
  });
});
