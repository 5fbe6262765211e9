// The stack dumper's native binding in this process (src/stacks.cc): arguments are checked and named, a second
// install under another name is refused, close stops it (its socket goes away) and a new install works again. The
// test asks its own process, whose main thread runs the asking JavaScript too: the answer is either a stack (the
// interrupt came first) or "idle" (the wake-up did), never a timeout or a missing dumper.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { loadAddon } from '../../../collective/native/addon.js';
import { closeStackDumper, installStackDumper, requestJsStack } from '../../../collective/js-stacks.js';

const a = loadAddon();

describe('the stack dumper binding', { skip: a.ok ? false : a.reason }, () => {
  after(() => closeStackDumper());
  const addon = a.ok ? a.addon : undefined;

  test('bad arguments are refused, naming the value and the bound', () => {
    assert.throws(() => addon!.stacksInstall('x', 0, 1000), {
      name: 'RangeError',
      message: /^maxFrames 0\.0+: expected an integer in \[1, 1000\]$/,
    });
    assert.throws(() => addon!.stacksInstall('x', 64, 0.5), {
      name: 'RangeError',
      message: /^timeoutMs 0\.50+: expected an integer in \[1, 60000\]$/,
    });
    assert.throws(() => addon!.stacksInstall('', 64, 1000), { message: /^socket name "": expected 1 to 107 bytes$/ });
    assert.throws(() => addon!.stacksInstall('y'.repeat(108), 64, 1000), { message: /expected 1 to 107 bytes$/ });
    assert.throws(() => (addon!.stacksInstall as unknown as (n: number) => void)(1), { name: 'TypeError' });
  });

  test('install, a second install elsewhere refused, close, install again: each state answers as it should', async () => {
    const scope = `unit-${process.pid}`;
    const first = installStackDumper({ scope, interruptTimeoutMs: 5000 });
    assert.deepEqual(first, { ok: true, socket: `tensile-stacks.${process.pid}.${scope}` });
    assert.deepEqual(installStackDumper({ scope, interruptTimeoutMs: 5000 }), first, 'idempotent');
    const other = installStackDumper({ scope: `${scope}-b` });
    assert.equal(other.ok, false);
    assert.match(other.ok ? '' : other.reason, new RegExp(`already installed \\(as @tensile-stacks\\.${process.pid}`));

    assertAnswered(await requestJsStack(process.pid, 10_000, scope));

    closeStackDumper();
    closeStackDumper(); // idempotent
    const gone = await requestJsStack(process.pid, 10_000, scope);
    assert.match(gone.ok ? '' : gone.reason, new RegExp(`^pid ${process.pid} runs no stack dumper`));

    assert.equal(installStackDumper({ scope: `${scope}-b` }).ok, true, 'a new install after close');
    assertAnswered(await requestJsStack(process.pid, 10_000, `${scope}-b`));
  });
});

function assertAnswered(r: Awaited<ReturnType<typeof requestJsStack>>): void {
  if (r.ok) assert.match(r.text, new RegExp(`^JavaScript stack of pid ${process.pid} \\(main thread`));
  else assert.match(r.reason, new RegExp(`^no JavaScript stack: pid ${process.pid}'s main thread is idle`));
}
