// The RPC examples train to their stated accuracy at small size (3 worker processes each, spawned with the env).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../../common/free-port.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

async function runExample(
  path: string,
  t: { after(fn: () => unknown): void },
): Promise<{ codes: number[]; out: string }> {
  const port = await freePort();
  const children: ChildProcess[] = [];
  t.after(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  let out = '';
  const exits = [0, 1, 2].map((rank) => {
    const c = spawn(process.execPath, ['--import', 'tsx', path], {
      cwd: root,
      env: {
        ...process.env,
        RANK: String(rank),
        WORLD_SIZE: '3',
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: String(port),
        EPOCHS: '2',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(c);
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    return new Promise<number>((res) => c.once('exit', (code) => res(code ?? -1)));
  });
  const timer = setTimeout(() => children.forEach((c) => c.kill('SIGKILL')), 120_000);
  const codes = await Promise.all(exits);
  clearTimeout(timer);
  return { codes, out };
}

test('the parameter-server example trains two trainers to at least 90% test accuracy', async (t) => {
  const { codes, out } = await runExample('examples/rpc/parameter-server/main.ts', t);
  assert.deepEqual(codes, [0, 0, 0], out);
  const accs = [...out.matchAll(/test accuracy ([\d.]+)/g)].map((m) => Number(m[1]));
  assert.equal(accs.length, 2, out);
  for (const a of accs) assert.ok(a >= 0.9, `accuracy ${a}`);
});

test('the pipeline example trains a model split over two workers to at least 90% test accuracy', async (t) => {
  const { codes, out } = await runExample('examples/rpc/pipeline/main.ts', t);
  assert.deepEqual(codes, [0, 0, 0], out);
  const m = /pipeline: test accuracy ([\d.]+)/.exec(out);
  assert.ok(m, out);
  assert.ok(Number(m[1]) >= 0.9, `accuracy ${m[1]}`);
});
