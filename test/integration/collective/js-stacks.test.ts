// The stack dumper (collective/js-stacks.ts, native src/stacks.cc) against real child processes: a child spinning in
// a busy loop gives its JavaScript stack, mapped back to the TypeScript source; an idle child, a child blocked in
// native code and a child without a dumper each say why there is none, within the bound; a child with the dumper
// running still exits by itself. Every child
// is killed in `after`, every wait bounded.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { loadAddon } from '../../../collective/native/addon.js';
import { JS_STACK_INTERRUPT_TIMEOUT_MS, requestJsStack } from '../../../collective/js-stacks.js';
import { withTimeout } from '../../../common/timeout.js';

const CHILD = fileURLToPath(new URL('./fixtures/js-stacks-child.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

interface Started {
  child: ChildProcess;
  pid: number;
  install: { ok: boolean; reason?: string; socket?: string };
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

/** Starts the fixture in `mode` and waits (bounded) for its first line. */
async function start(mode: string, scope?: string): Promise<Started> {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, mode, ...(scope === undefined ? [] : [scope])], {
    cwd: ROOT,
    env,
    stdio: ['pipe', 'pipe', 'pipe'], // stdin stays open and empty: the `blocked` child reads it
  });
  children.push(child);
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const first = new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) resolve(buf.slice(0, i));
    });
    child.once('exit', (code) => reject(new Error(`child (${mode}) exited ${code} before its first line: ${err}`)));
  });
  const line = await withTimeout(first, 60_000, `the ${mode} child's first line`);
  const parsed = JSON.parse(line) as { pid: number; install: Started['install'] };
  return { child, pid: parsed.pid, install: parsed.install, exited, stderr: () => err };
}

/** The 1-based line of the fixture holding `marker`. */
function lineOf(marker: string): number {
  const i = readFileSync(CHILD, 'utf8')
    .split('\n')
    .findIndex((l) => l.includes(marker));
  assert.ok(i >= 0, `marker ${marker} in ${CHILD}`);
  return i + 1;
}

const addon = loadAddon();

describe('the JavaScript stack of a worker', { skip: addon.ok ? false : addon.reason }, () => {
  test('a child stuck in a busy loop gives its stack: spinForever, its file and the loop line', async () => {
    const c = await start('busy');
    assert.equal(c.install.ok, true, c.install.reason);
    await new Promise((r) => setTimeout(r, 500)); // past the 50 ms timer: it spins now
    for (let i = 0; i < 2; i++) {
      const r = await requestJsStack(c.pid, 10_000);
      assert.ok(r.ok, r.ok ? '' : r.reason);
      const lines = r.text.split('\n');
      assert.match(lines[0] as string, new RegExp(`^JavaScript stack of pid ${c.pid} \\(main thread`));
      // The loop's line in the TypeScript source (tsx's inline source map), the generated position kept beside it.
      const spin = lineOf('for (;;)');
      assert.match(
        lines[1] as string,
        new RegExp(`^ {4}at spinForever \\(${escape(CHILD)}:${spin}:\\d+\\) \\[generated \\d+:\\d+\\]$`),
      );
      assert.match(lines[2] as string, /^ {4}at startSpinning \(.*js-stacks-child\.ts:\d+:\d+\)/);
      assert.doesNotMatch(r.text, /^source-map\t/m, 'the source-map lines are consumed');
    }
    assert.equal(c.child.exitCode, null, 'taking the stack did not disturb the child');
    c.child.kill('SIGKILL');
    await withTimeout(c.exited, 30_000, 'the busy child to die');
  });

  test('an idle child says at once that it is idle in the event loop; the child keeps running', async () => {
    const c = await start('idle');
    assert.equal(c.install.ok, true, c.install.reason);
    await new Promise((r) => setTimeout(r, 500)); // past the rest of its start-up JavaScript
    for (let i = 0; i < 2; i++) {
      const r = await requestJsStack(c.pid, 10_000);
      assert.equal(r.ok, false);
      assert.match(
        r.ok ? '' : r.reason,
        new RegExp(`^no JavaScript stack: pid ${c.pid}'s main thread is idle in the event loop \\(no JavaScript`),
      );
    }
    assert.equal(c.child.exitCode, null);
    c.child.kill('SIGTERM');
    assert.deepEqual(await withTimeout(c.exited, 30_000, 'the idle child to end'), { code: null, signal: 'SIGTERM' });
  });

  test('a child blocked in a system call (a synchronous read) gives no stack after the interrupt bound, and says why', async () => {
    const c = await start('blocked');
    assert.equal(c.install.ok, true, c.install.reason);
    await new Promise((r) => setTimeout(r, 500)); // past the 50 ms timer: it sleeps in read(2) now
    const t0 = Date.now();
    const r = await requestJsStack(c.pid, 10_000);
    const tookMs = Date.now() - t0;
    assert.equal(r.ok, false);
    assert.match(
      r.ok ? '' : r.reason,
      new RegExp(
        `^no JavaScript stack: pid ${c.pid}'s main thread reached no interrupt check and did not come back to the ` +
          `event loop within ${JS_STACK_INTERRUPT_TIMEOUT_MS} ms \\(it is blocked in a system call or native code\\)`,
      ),
    );
    assert.ok(tookMs >= JS_STACK_INTERRUPT_TIMEOUT_MS - 50, `the dumper waited for the interrupt (${tookMs} ms)`);
    assert.equal(c.child.exitCode, null);
    c.child.kill('SIGKILL');
    await withTimeout(c.exited, 30_000, 'the blocked child to die');
  });

  test("a dumper in a scope (an agent's) answers only requests in that scope", async () => {
    const c = await start('busy', 'tensile-ctl-Ab1.x_');
    assert.deepEqual(c.install, { ok: true, socket: `tensile-stacks.${c.pid}.tensile-ctl-Ab1.x_` });
    await new Promise((r) => setTimeout(r, 500));
    const mine = await requestJsStack(c.pid, 10_000, 'tensile-ctl-Ab1.x_');
    assert.ok(mine.ok, mine.ok ? '' : mine.reason);
    assert.match(mine.text, /^ {4}at spinForever \(/m);
    for (const other of [undefined, 'tensile-ctl-other']) {
      const r = await requestJsStack(c.pid, 10_000, other);
      assert.equal(r.ok, false);
      assert.match(r.ok ? '' : r.reason, new RegExp(`^pid ${c.pid} runs no stack dumper`));
    }
    c.child.kill('SIGKILL');
    await withTimeout(c.exited, 30_000, 'the scoped child to die');
  });

  test('a process without a dumper is named as such, at once', async () => {
    const c = await start('none');
    const r = await requestJsStack(c.pid, 10_000);
    assert.equal(r.ok, false);
    assert.match(r.ok ? '' : r.reason, new RegExp(`^pid ${c.pid} runs no stack dumper \\(@tensile-stacks\\.${c.pid}`));
    c.child.kill('SIGKILL');
    await withTimeout(c.exited, 30_000, 'the child without a dumper to die');
  });

  test('the dumper does not hold the process: an empty event loop and process.exit both end it cleanly', async () => {
    for (const mode of ['exit', 'process-exit']) {
      const c = await start(mode);
      assert.equal(c.install.ok, true, c.install.reason);
      const res = await withTimeout(c.exited, 30_000, `the ${mode} child to end by itself`);
      assert.deepEqual(res, { code: 0, signal: null }, `${mode}: ${c.stderr()}`);
    }
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
