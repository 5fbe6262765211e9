// The liveness port and its probe against real sockets: accepted, refused, and a port that answers nothing.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { openLivenessListener, probeLiveness } from '../../../rendezvous/liveness.js';

test('a listening agent is alive; once it stops listening the host refuses and the probe says so', async () => {
  const l = await openLivenessListener('127.0.0.1');
  try {
    assert.equal(await probeLiveness('127.0.0.1', l.port, 5_000), 'alive');
    assert.equal(await probeLiveness('127.0.0.1', l.port, 5_000), 'alive');
  } finally {
    await l.close();
  }
  assert.equal(await probeLiveness('127.0.0.1', l.port, 5_000), 'refused');
});

test('a port whose accept queue is full and never drained answers nothing: no-answer, not refused', async (t) => {
  // A stopped process listening with a backlog of 1: the kernel queues two connections, then drops further SYNs,
  // as a host that is cut off or overloaded would.
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const s = require('net').createServer();
       s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
         process.stdout.write(s.address().port + '\\n');
         process.kill(process.pid, 'SIGSTOP');
       });`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const held: Socket[] = [];
  t.after(() => {
    for (const s of held) s.destroy();
    child.kill('SIGKILL');
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('child did not print its port within 10 s')), 10_000);
    child.stdout.once('data', (d: Buffer) => {
      clearTimeout(timer);
      resolve(Number(d.toString().trim()));
    });
  });
  // Fill the queue: connections that complete are held open; stop once one gets no answer.
  let result = 'alive';
  for (let i = 0; i < 8 && result === 'alive'; i++) {
    result = await new Promise<string>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      s.on('error', () => resolve('error'));
      const timer = setTimeout(() => resolve('no-answer'), 500);
      s.once('connect', () => {
        clearTimeout(timer);
        held.push(s);
        resolve('alive');
      });
      held.push(s);
    });
  }
  assert.equal(result, 'no-answer', 'the accept queue filled up');
  assert.equal(await probeLiveness('127.0.0.1', port, 300), 'no-answer');
});
