// Shared bits of the side-by-side benchmarks: the figure line format, medians, a throwaway etcd, waits.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function figure(
  name: string,
  tensile: number,
  peer: number,
  unit: string,
  op: '<=' | '>=',
  target: number,
  digits = 3,
): void {
  const ratio = tensile / peer;
  const met = op === '<=' ? ratio <= target : ratio >= target;
  console.log(
    `figure=${name} tensile=${tensile.toFixed(digits)} peer=${peer.toFixed(digits)} unit=${unit} ratio=${ratio.toFixed(3)} target=${op}${target} met=${met ? 'yes' : 'no'}`,
  );
}

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

export async function until(check: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

export interface BenchEtcd {
  readonly endpoint: string;
  stop(): Promise<void>;
}

/** Debian's etcd on free loopback ports; `--enable-v2` for torchrun's etcd-v2 backend. */
export async function startBenchEtcd(enableV2: boolean): Promise<BenchEtcd> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-etcd-'));
  const [client, peer] = [await freePort(), await freePort()];
  const child: ChildProcess = spawn(
    '/usr/bin/etcd',
    [
      '--data-dir',
      dir,
      '--listen-client-urls',
      `http://127.0.0.1:${client}`,
      '--advertise-client-urls',
      `http://127.0.0.1:${client}`,
      '--listen-peer-urls',
      `http://127.0.0.1:${peer}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${peer}`,
      '--initial-cluster',
      `default=http://127.0.0.1:${peer}`,
      ...(enableV2 ? ['--enable-v2'] : []),
    ],
    { stdio: 'ignore' },
  );
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(client, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline) throw new Error('etcd did not start within 15 s');
    await sleep(50);
  }
  await sleep(300);
  return {
    endpoint: `127.0.0.1:${client}`,
    stop: async () => {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('close', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Kills a process and, when it leads one, its process group. */
export function killHard(pid: number): void {
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // not a group leader, or gone
    }
  }
}
