import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Backoff, sleep } from '../../../common/backoff.js';
import { freePort, freePortPair, isPortFree } from '../../../common/free-port.js';
import { noopLogger } from '../../../common/logger.js';
import { TimeoutError, withTimeout } from '../../../common/timeout.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

describe('Backoff', () => {
  test('without jitter the delays grow by the multiplier up to the bound, and reset starts over', () => {
    const b = new Backoff({ initialMs: 100, multiplier: 2, maxMs: 700, jitter: 0 });
    assert.deepEqual(
      Array.from({ length: 6 }, () => b.next()),
      [100, 200, 400, 700, 700, 700],
    );
    b.reset();
    assert.equal(b.next(), 100);
  });

  test('jitter spreads each delay over [1 - jitter, 1 + jitter] of its base', () => {
    const table: Array<[random: number, expectedMs: number]> = [
      [0, 50],
      [0.5, 100],
      [1, 150],
    ];
    for (const [random, expectedMs] of table) {
      const b = new Backoff({ initialMs: 100, multiplier: 1.5, maxMs: 1000, jitter: 0.5 }, () => random);
      assert.equal(b.next(), expectedMs, `random ${random}`);
    }
  });

  test('bad options are refused with the values in the message', () => {
    assert.throws(() => new Backoff({ initialMs: 10, multiplier: 0.5, maxMs: 100, jitter: 0 }), /multiplier ≥ 1.*0\.5/);
    assert.throws(() => new Backoff({ initialMs: 200, multiplier: 2, maxMs: 100, jitter: 0 }), /maxMs ≥ initialMs/);
    assert.throws(
      () => new Backoff({ initialMs: 10, multiplier: 2, maxMs: 100, jitter: 2 }),
      /jitter 2 not in \[0, 1\]/,
    );
  });

  test('sleep rejects with the abort reason when its signal aborts first', async () => {
    const ac = new AbortController();
    const p = sleep(60_000, ac.signal);
    ac.abort(new Error('stopped'));
    await assert.rejects(p, /stopped/);
  });
});

describe('withTimeout', () => {
  test('passes the value through when the promise settles in time', async () => {
    assert.equal(await withTimeout(Promise.resolve(7), 1_000, 'seven'), 7);
    await assert.rejects(withTimeout(Promise.reject(new Error('own')), 1_000, 'x'), /own/);
  });

  test('rejects with a TimeoutError naming the wait, or with what onTimeout makes', async () => {
    const never = new Promise<never>(() => {});
    await assert.rejects(withTimeout(never, 10, 'the store'), (e: unknown) => {
      assert.ok(e instanceof TimeoutError);
      assert.equal(e.code, 'TIMEOUT');
      assert.equal(e.message, 'the store did not finish within 10 ms');
      return true;
    });
    class Mine extends Error {}
    await assert.rejects(
      withTimeout(never, 10, 'x', () => new Mine('mine')),
      (e: unknown) => e instanceof Mine,
    );
  });

  test('a pending wait keeps the process alive until it times out (no silent exit mid-await)', () => {
    const script = `
      import { withTimeout } from './common/timeout.ts';
      withTimeout(new Promise(() => {}), 50, 'nothing').catch((e) => { console.log(e.code); });
    `;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'TIMEOUT');
  });
});

describe('free ports', () => {
  test('freePort returns a port that can be bound, and isPortFree sees it taken while bound', async () => {
    const port = await freePort();
    assert.ok(port > 0 && port < 65536, String(port));
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(port, '127.0.0.1', () => r()));
    try {
      assert.equal(await isPortFree(port), false);
    } finally {
      await new Promise<void>((r) => srv.close(() => r()));
    }
    assert.equal(await isPortFree(port), true);
  });

  test('freePortPair returns a port whose successor is free too', async () => {
    const port = await freePortPair('127.0.0.1');
    assert.equal(await isPortFree(port, '127.0.0.1'), true);
    assert.equal(await isPortFree(port + 1, '127.0.0.1'), true);
  });
});

test('noopLogger drops everything and its child is itself', () => {
  noopLogger.info({ a: 1 }, 'x');
  noopLogger.error('y');
  assert.equal(noopLogger.child({ k: 1 }), noopLogger);
});
