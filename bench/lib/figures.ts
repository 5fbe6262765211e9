// Shared bits of the side-by-side benchmarks: the figure line format, medians, a throwaway etcd, waits.
import { fileURLToPath } from 'node:url';
import { startEtcd, type EtcdServer } from '../../test/helpers/etcd.js';

/** The repository root, and the built CLI the benchmarks launch (`npm run build` first). */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = `${ROOT}dist/agent/cli.js`;

/** `--repeats N` from the command line (default 3). */
export function repeatsFromArgv(fallback = 3): number {
  const i = process.argv.indexOf('--repeats');
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

export function figure(
  name: string,
  tensile: number,
  peer: number,
  unit: string,
  op: '<=' | '>=',
  target: number,
  digits = 3,
): void {
  // Equal values are a ratio of 1, zeros included (e.g. 0 steps lost on both sides).
  const ratio = tensile === peer ? 1 : tensile / peer;
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

export { freePort } from '../../common/free-port.js';

export async function until(check: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

export type BenchEtcd = Pick<EtcdServer, 'endpoint' | 'stop'>;

/** Debian's etcd on free loopback ports (the tests' harness); `--enable-v2` for torchrun's etcd-v2 backend. */
export function startBenchEtcd(enableV2: boolean): Promise<BenchEtcd> {
  return startEtcd({ extraArgs: enableV2 ? ['--enable-v2'] : [] });
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
